"""Probe plots: line data and raster marks against `sim.data`, titles, minibatch items,
and the ProbeBrowser widget."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nengo
import numpy as np
import pytest
from nengo.exceptions import ValidationError

import nengo_dl_nb
from nengo_dl_nb.plots import (ProbeBrowser, is_spiking, plot_probe, plot_probes, probe_data,
                               probe_title)


@pytest.fixture(scope="module")
def model():
    "One spiking model, run twice: not minibatched and with minibatch_size=3."
    with nengo.Network(seed=0) as net:
        stim = nengo.Node([0.0, 0.0])
        ens = nengo.Ensemble(12, 2, label="a")
        rate = nengo.Ensemble(4, 1, neuron_type=nengo.LIFRate(), label="r")
        nengo.Connection(stim, ens)
        nengo.Connection(stim[0], rate)
        probes = dict(
            dec=nengo.Probe(ens, synapse=0.01),
            spk=nengo.Probe(ens.neurons, label="spikes"),
            part=nengo.Probe(ens.neurons[:5]),
            rate=nengo.Probe(rate.neurons),
            stim=nengo.Probe(stim, sample_every=0.005),
        )
    t = np.arange(1, 81)[None, :, None] * 0.001
    freqs = np.array([1.0, 3.0, 5.0])[:, None, None]
    inputs = np.concatenate([np.sin(2 * np.pi * freqs * t), np.cos(2 * np.pi * freqs * t)], -1)
    sim = nengo_dl_nb.Simulator(net, progress_bar=False)
    sim.run_steps(80, data={stim: inputs[:1]})
    msim = nengo_dl_nb.Simulator(net, minibatch_size=3, progress_bar=False)
    msim.run_steps(80, data={stim: inputs})
    yield sim, msim, probes
    sim.close()
    msim.close()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_titles_and_spiking(model):
    _, _, p = model
    assert probe_title(p["dec"]) == "a.decoded_output"
    assert probe_title(p["spk"]) == "spikes"
    assert probe_title(p["part"]) == "a.neurons[:5].output"
    assert probe_title(p["rate"]) == "r.neurons.output"
    assert probe_title(p["stim"]) == "Node.output"
    assert is_spiking(p["spk"]) and is_spiking(p["part"])
    assert not is_spiking(p["rate"]) and not is_spiking(p["dec"]) and not is_spiking(p["stim"])


def test_lines_equal_data(model):
    sim, _, p = model
    ax = plot_probe(sim, p["dec"])
    assert len(ax.lines) == 2
    for i, line in enumerate(ax.lines):
        np.testing.assert_array_equal(line.get_xdata(), sim.trange())
        np.testing.assert_array_equal(line.get_ydata(), sim.data[p["dec"]][:, i])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["[0]", "[1]"]
    assert ax.get_title() == "a.decoded_output"
    assert ax.figure in [plt.figure(n) for n in plt.get_fignums()]  # a pyplot figure


def test_legend_only_when_few(model):
    sim, _, p = model
    assert plot_probe(sim, p["rate"], max_legend=8).get_legend() is not None
    assert plot_probe(sim, p["rate"], max_legend=3).get_legend() is None


def test_sample_every(model):
    sim, _, p = model
    ax = plot_probe(sim, p["stim"])
    t = sim.trange(sample_every=0.005)
    assert len(t) == 16
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), t)
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), sim.data[p["stim"]][:, 1])


def test_raster_marks_are_spikes(model):
    sim, _, p = model
    for key, n in (("spk", 12), ("part", 5)):
        ax = plot_probe(sim, p[key])
        assert not ax.lines
        marks = ax.collections[0].get_offsets()
        steps, neurons = np.nonzero(sim.data[p[key]])
        assert len(steps) > 0
        np.testing.assert_allclose(marks[:, 0], sim.trange()[steps])
        np.testing.assert_array_equal(marks[:, 1], neurons)
        assert sorted(ax.get_ylim()) == [-0.5, n - 0.5]


def test_minibatch_items(model):
    _, msim, p = model
    for item in range(3):
        ax = plot_probe(msim, p["dec"], item=item)
        np.testing.assert_array_equal(ax.lines[1].get_ydata(), msim.data[p["dec"]][item, :, 1])
        assert ax.get_title() == f"a.decoded_output (item {item})"
        marks = plot_probe(msim, p["spk"], item=item).collections[0].get_offsets()
        steps, neurons = np.nonzero(msim.data[p["spk"]][item])
        np.testing.assert_allclose(marks[:, 0], msim.trange()[steps])
        np.testing.assert_array_equal(marks[:, 1], neurons)
    # the items differ, so the plots do
    assert not np.array_equal(plot_probe(msim, p["dec"], item=0).lines[0].get_ydata(),
                              plot_probe(msim, p["dec"], item=2).lines[0].get_ydata())


def test_bad_item_or_probe(model):
    sim, msim, p = model
    with pytest.raises(ValidationError, match="item"):
        plot_probe(sim, p["dec"], item=1)
    with pytest.raises(ValidationError, match="item"):
        plot_probe(msim, p["dec"], item=3)
    with pytest.raises(ValidationError, match="item"):
        probe_data(msim, p["dec"], item=-1)
    with nengo.Network():
        other = nengo.Probe(nengo.Node([1]))
    with pytest.raises(ValidationError, match="not a probe"):
        plot_probe(sim, other)


def test_plot_into_given_axis(model):
    sim, _, p = model
    fig, (ax0, ax1) = plt.subplots(2)
    assert plot_probe(sim, p["dec"], ax=ax1) is ax1
    assert not ax0.lines and len(ax1.lines) == 2


def test_plot_probes(model):
    sim, msim, p = model
    fig = plot_probes(sim)
    assert [a.get_title() for a in fig.axes] == [probe_title(q) for q in sim.model.probes]
    fig = plot_probes(msim, [p["stim"], p["dec"]], item=1)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[1].lines[0].get_ydata(),
                                  msim.data[p["dec"]][1, :, 0])
    with pytest.raises(ValidationError, match="no probes"):
        plot_probes(sim, [])


def test_browser_switching(model):
    _, msim, p = model
    figures_before = plt.get_fignums()
    browser = ProbeBrowser(msim)
    assert browser.probe is msim.model.probes[0] and browser.item == 0
    assert len(browser.probe_selector.options) == len(msim.model.probes)
    assert browser.item_selector.max == 2 and not browser.item_selector.disabled
    assert browser.output in browser.widget.children
    first = browser.output.outputs
    assert browser.figure.axes[0].get_title() == "a.decoded_output (item 0)"

    browser.probe_selector.value = p["stim"]
    assert browser.output.outputs != first
    assert browser.figure.axes[0].get_title() == "Node.output (item 0)"
    browser.probe_selector.value = p["dec"]
    fig = browser.figure
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), msim.data[p["dec"]][0, :, 0])
    png0 = browser.output.outputs[0]["data"]["image/png"]

    browser.item_selector.value = 2
    assert browser.figure is not fig
    np.testing.assert_array_equal(browser.figure.axes[0].lines[0].get_ydata(),
                                  msim.data[p["dec"]][2, :, 0])
    assert len(browser.output.outputs) == 1
    assert browser.output.outputs[0]["data"]["image/png"] != png0

    fig = browser.show(p["spk"], item=1)
    assert browser.probe is p["spk"] and browser.item == 1 and fig is browser.figure
    marks = fig.axes[0].collections[0].get_offsets()
    steps, neurons = np.nonzero(msim.data[p["spk"]][1])
    np.testing.assert_array_equal(marks[:, 1], neurons)
    assert fig.axes[0].get_title() == "spikes (item 1)"
    assert plt.get_fignums() == figures_before  # the browser's figures stay out of pyplot


def test_browser_errors_and_single_item(model):
    sim, msim, p = model
    browser = ProbeBrowser(sim, probes=[p["dec"], p["stim"]])
    assert browser.item_selector.disabled
    assert [v for _, v in browser.probe_selector.options] == [p["dec"], p["stim"]]
    with pytest.raises(ValidationError, match="not one of"):
        browser.show(p["spk"])
    with pytest.raises(ValidationError, match="item"):
        browser.show(item=1)
    assert browser.probe is p["dec"]  # nothing half-applied
    with pytest.raises(ValidationError, match="no probes"):
        ProbeBrowser(sim, probes=[])


def test_browser_refresh_after_run():
    with nengo.Network(seed=1) as net:
        node = nengo.Node(lambda t: t)
        probe = nengo.Probe(node)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(10)
        browser = ProbeBrowser(sim)
        assert len(browser.figure.axes[0].lines[0].get_ydata()) == 10
        sim.run_steps(5)
        fig = browser.refresh()
        np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), sim.data[probe][:, 0])
        assert len(sim.data[probe]) == 15
