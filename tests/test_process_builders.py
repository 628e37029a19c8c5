"""Native process builders: Triangle synapses (exact against nengo.Simulator), noise
processes (statistics, reproducibility, minibatch streams) and XLA compilation."""

import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.dists import Exponential, Gaussian, Uniform
from nengo.processes import BrownNoise, FilteredNoise, WhiteNoise
from nengo.synapses import Triangle

import nengo_dl_nb
from nengo_dl_nb.process_builders import (NoiseBuilder, TriangleBuilder)

DT = 0.001


def process_builders(sim):
    "The builders of the SimProcess groups of `sim`, as a list of (builder, n_ops)."
    return [(b.built_process, len(ops)) for ops, b in sim.runner.timestep.op_builds.items()
            if hasattr(b, "built_process")]


def builder_types(sim):
    return sorted(type(b).__name__ for b, _ in process_builders(sim))


# -- Triangle -------------------------------------------------------------------------------

def triangle_net(dtype):
    with nengo.Network(seed=1) as net:
        nengo_dl_nb.configure_settings(dtype=dtype)
        u = nengo.Node(lambda t: [np.sin(20 * t), np.cos(7 * t) + t])
        a, b, c = (nengo.Node(size_in=2) for _ in range(3))
        nengo.Connection(u, a, synapse=Triangle(0.01))
        nengo.Connection(u, b, synapse=Triangle(0.01))  # merges with the one above
        nengo.Connection(a, c, synapse=Triangle(0.003))
        probes = [nengo.Probe(x) for x in (a, b, c)]
        probes.append(nengo.Probe(u, synapse=Triangle(0.02)))
    return net, probes


@pytest.mark.parametrize("dtype, tol", [(tf.float64, 1e-10), (tf.float32, 2e-6)])
def test_triangle_matches_nengo(dtype, tol, both):
    net, probes = triangle_net(dtype)
    ref, sim = both(net, 300)
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], rtol=tol, atol=tol)
    assert set(builder_types(sim)) == {"TriangleBuilder"}
    groups = sorted(n for b, n in process_builders(sim))
    assert groups == [1, 1, 2]  # the two Triangle(0.01) synapses are one group
    assert sim.runner.jit_compile and not sim.runner.uses_python


def test_triangles_at_different_depths_one_group(both):
    # three Triangle probe filters, none depending on another, on branches of different depth
    # (e0 -> e1, and e4 -> e2 -> e3 through a Voja rule); the planner used to run the first
    # two as soon as they were the largest ready group, leaving the third alone: [2, 1]
    with nengo.Network(seed=0) as net:
        e = [nengo.Ensemble(20, 2) for _ in range(8)]
        nengo.Connection(e[0], e[1], synapse=None)
        nengo.Connection(e[2], e[3], synapse=None)
        nengo.Connection(e[4], e[2], learning_rule_type=nengo.Voja(1e-3))
        probes = [nengo.Probe(x, synapse=Triangle(0.01)) for x in (e[0], e[5], e[3])]
    ref, sim = both(net, 100, dtype=tf.float64)
    assert [n for b, n in process_builders(sim) if isinstance(b, TriangleBuilder)] == [3]
    for p in probes:
        assert np.ptp(ref.data[p]) > 0
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8, rtol=1e-8)


def test_triangle_continues_and_resets():
    net, probes = triangle_net(tf.float64)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(120)
    with nengo_dl_nb.Simulator(net, progress_bar=False, unroll_simulation=4) as sim:
        sim.run_steps(50)
        sim.run_steps(70)
        for p in probes:
            np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10)
        sim.reset()
        sim.run_steps(120)
        for p in probes:
            np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10)


def test_lowpass_bilinear_matches_nengo(both):
    # discretizing with the bilinear method adds a passthrough D: the General form
    with nengo.Network(seed=2) as net:
        u = nengo.Node(lambda t: np.sin(30 * t))
        a = nengo.Node(size_in=1)
        nengo.Connection(u, a, synapse=nengo.Lowpass(0.005, method="bilinear"))
        p = nengo.Probe(a)
    ref, sim = both(net, 100, dtype=tf.float64)
    np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10)
    assert builder_types(sim) == ["LinearFilterBuilder"]


class PlainLowpass(nengo.Lowpass):
    "Lowpass under another name: no new behaviour."


class DoubledLowpass(nengo.Lowpass):
    "Lowpass with twice the gain: its own `make_step`, which no TensorFlow builder implements."

    def make_step(self, shape_in, shape_out, dt, rng, state):
        step = super().make_step(shape_in, shape_out, dt, rng, state)
        return lambda t, signal: 2 * step(t, signal)


def filtered_net(synapses):
    "One input through each synapse, into a node of its own (probed)."
    with nengo.Network(seed=2) as net:
        u = nengo.Node(lambda t: [np.sin(30 * t), np.cos(11 * t)])
        probes = []
        for synapse in synapses:
            a = nengo.Node(size_in=2)
            nengo.Connection(u, a, synapse=synapse)
            probes.append(nengo.Probe(a))
    return net, probes


def test_lowpass_subclass_runs_natively(both):
    """A user's subclass of Lowpass with no new behaviour is a native linear filter (merged
    with a plain Lowpass), compiles with XLA, and matches Nengo."""
    net, probes = filtered_net([PlainLowpass(0.005), nengo.Lowpass(0.01)])
    ref, sim = both(net, 200, dtype=tf.float64)
    assert [(type(b).__name__, n) for b, n in process_builders(sim)] == [("LinearFilterBuilder", 2)]
    assert sim.runner.jit_compile and not sim.runner.uses_python
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], rtol=1e-10, atol=1e-10)


def test_lowpass_subclass_with_its_own_make_step_runs_in_python(both):
    """A subclass that overrides `make_step` runs that step (in Python), not the native
    filter; the plain Lowpass beside it stays native, in a group of its own."""
    net, (doubled, plain) = filtered_net([DoubledLowpass(0.005), nengo.Lowpass(0.005)])
    ref, sim = both(net, 200, dtype=tf.float64)
    assert builder_types(sim) == ["GenericProcessBuilder", "LinearFilterBuilder"]
    assert sim.runner.uses_python and not sim.runner.jit_compile
    for p in (doubled, plain):
        np.testing.assert_allclose(sim.data[p], ref.data[p], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sim.data[doubled], 2 * sim.data[plain], rtol=1e-10, atol=1e-12)


# -- noise ------------------------------------------------------------------------------

def noise_net(noise, n=200, seed=3, dtype=None):
    "An ensemble with `noise` and no input: its neuron input is bias + noise."
    with nengo.Network(seed=seed) as net:
        if dtype is not None:
            nengo_dl_nb.configure_settings(dtype=dtype)
        ens = nengo.Ensemble(n, 1, noise=noise)
        p = nengo.Probe(ens.neurons, "input")
    return net, ens, p


def noise_of(sim, ens, p):
    return sim.data[p] - sim.data[ens].bias


@pytest.mark.parametrize("dist, mean, std", [
    (Gaussian(0.3, 2.0), 0.3, 2.0),
    (Uniform(-1.0, 3.0), 1.0, 4.0 / np.sqrt(12)),
])
def test_white_noise_statistics(dist, mean, std):
    net, ens, p = noise_net(WhiteNoise(dist=dist))
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(500)
        ours = noise_of(sim, ens, p)
        assert builder_types(sim) == ["NoiseBuilder"]
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(500)
        theirs = noise_of(ref, ens, p)
    scale = 1 / np.sqrt(DT)
    for x in (ours, theirs):
        assert abs(x.mean() - mean * scale) < 0.02 * std * scale
        assert abs(x.std() - std * scale) < 0.02 * std * scale
        # white: successive steps and neighbouring neurons uncorrelated
        z = x - x.mean()
        assert abs(np.mean(z[1:] * z[:-1]) / z.var()) < 0.02
        assert abs(np.mean(z[:, 1:] * z[:, :-1]) / z.var()) < 0.02
    assert np.allclose(ours.std(), theirs.std(), rtol=0.03)
    if isinstance(dist, Uniform):
        assert ours.min() >= -1 * scale - 1e-3 and ours.max() <= 3 * scale + 1e-3


def test_white_noise_unscaled():
    net, ens, p = noise_net(WhiteNoise(dist=Gaussian(0, 0.5), scale=False))
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(200)
        assert abs(noise_of(sim, ens, p).std() - 0.5) < 0.02


def test_filtered_noise_statistics():
    tau = 0.01
    net, ens, p = noise_net(FilteredNoise(synapse=nengo.Lowpass(tau)), n=400)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(1000)
        ours = noise_of(sim, ens, p)[300:]  # past the transient
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(1000)
        theirs = noise_of(ref, ens, p)[300:]
    # discrete OneX filter x' = a x + b w, w ~ N(0, 1/dt): var = b^2 / dt / (1 - a^2)
    a = np.exp(-DT / tau)
    b = 1 - a
    var = b ** 2 / DT / (1 - a ** 2)
    for x in (ours, theirs):
        assert abs(x.var() / var - 1) < 0.06
        z = x - x.mean(axis=0)
        for lag in (1, 10):  # autocorrelation a^lag
            r = np.mean(z[lag:] * z[:-lag]) / np.mean(z * z)
            assert abs(r - a ** lag) < 0.04
    assert abs(ours.var() / theirs.var() - 1) < 0.08


def test_brown_noise_statistics():
    net, ens, p = noise_net(BrownNoise(), n=1000)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(400)
        x = noise_of(sim, ens, p)
    # the integral of unit white noise: variance t
    for step in (99, 399):
        t = (step + 1) * DT
        assert abs(x[step].var() / t - 1) < 0.12
    increments = np.diff(x, axis=0)
    assert abs(increments.std() / np.sqrt(DT) - 1) < 0.02


def test_noise_reset_reproducible_and_seeds():
    net, ens, p = noise_net(WhiteNoise(), n=20)
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=10) as sim:
        sim.run_steps(30)
        first = sim.data[p].copy()
        sim.reset()
        sim.run_steps(10)
        sim.run_steps(20)  # two runs: the stream continues
        np.testing.assert_array_equal(sim.data[p], first)
        sim.reset(seed=11)
        sim.run_steps(30)
        other = sim.data[p].copy()
        assert not np.allclose(other, first)
        sim.reset(seed=10)
        sim.run_steps(30)
        np.testing.assert_array_equal(sim.data[p], first)
        sim.soft_reset()
        sim.run_steps(30)
        np.testing.assert_array_equal(sim.data[p][-30:], first)
        assert sim.runner.run_function().experimental_get_tracing_count() <= 2
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=10) as sim2:
        sim2.run_steps(30)
        np.testing.assert_array_equal(sim2.data[p], first)


def test_seeded_noise_ignores_simulator_seed():
    net, ens, p = noise_net(WhiteNoise(seed=5), n=10)
    results = []
    for seed in (1, 2):
        with nengo_dl_nb.Simulator(net, progress_bar=False, seed=seed) as sim:
            sim.run_steps(20)
            results.append(noise_of(sim, ens, p))
    np.testing.assert_allclose(results[0], results[1], atol=1e-4)


def test_minibatch_items_differ():
    net, ens, p = noise_net(FilteredNoise(), n=20)
    with nengo_dl_nb.Simulator(net, progress_bar=False, minibatch_size=4) as sim:
        sim.run_steps(50)
        x = sim.data[p]
    assert x.shape == (4, 50, 20)
    for i in range(4):
        for j in range(i):
            assert not np.allclose(x[i], x[j])


def test_noise_groups_merge_and_compile():
    with nengo.Network(seed=4) as net:
        ens = [nengo.Ensemble(10, 1, noise=WhiteNoise(dist=Gaussian(0, s))) for s in (1, 2, 3)]
        seeded = nengo.Ensemble(10, 1, noise=WhiteNoise(seed=7))
        filtered = [nengo.Ensemble(5, 1, noise=FilteredNoise(synapse=nengo.Lowpass(tau)))
                    for tau in (0.005, 0.02)]
        brown = nengo.Ensemble(5, 1, noise=BrownNoise())
        for e in ens + [seeded] + filtered + [brown]:
            nengo.Connection(e, e)
        probes = [nengo.Probe(e.neurons, "input") for e in ens + [seeded] + filtered + [brown]]
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        groups = [(type(b).__name__, n) for b, n in process_builders(sim)
                  if isinstance(b, NoiseBuilder)]
        # white (3 unseeded + 1 seeded) in one group; all OneX filters (Lowpass, Brown) in one
        assert sorted(groups) == [("NoiseBuilder", 3), ("NoiseBuilder", 4)]
        assert sim.runner.jit_compile and not sim.runner.uses_python
        sim.run_steps(200)
        stds = [(sim.data[p] - sim.data[e].bias).std() * np.sqrt(DT)
                for p, e in zip(probes[:3], ens)]
        np.testing.assert_allclose(stds, [1, 2, 3], rtol=0.1)


def test_unsupported_noise_runs_generic():
    net, ens, p = noise_net(WhiteNoise(dist=Exponential(0.5), scale=False), n=10)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert builder_types(sim) == ["GenericProcessBuilder"]
        assert sim.runner.uses_python and not sim.runner.jit_compile
        sim.run_steps(20)
        x = noise_of(sim, ens, p)
        assert np.all(x > -1e-5) and abs(x.mean() - 0.5) < 0.15


def test_noise_float64():
    net, ens, p = noise_net(WhiteNoise(), n=50, dtype=tf.float64)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(100)
        assert sim.data[p].dtype == np.float64
        assert abs(noise_of(sim, ens, p).std() * np.sqrt(DT) - 1) < 0.05


# -- functions of time as ensemble noise ----------------------------------------------------

def test_time_tables_match_nengo(both):
    from nengo.processes import Piecewise, PresentInput
    with nengo.Network(seed=5) as net:
        a = nengo.Ensemble(3, 1, noise=PresentInput(np.arange(9.0).reshape(3, 3), 0.004))
        b = nengo.Ensemble(2, 1, noise=Piecewise({0.003: [1, 2], 0.011: [-1, 0.5]}))
        c = nengo.Ensemble(2, 1, noise=Piecewise({0: [1, 2], 0.02: [0, 1]},
                                                 interpolation="linear"))
        probes = [nengo.Probe(e.neurons, "input") for e in (a, b, c)]
    ref, sim = both(net, 40, dtype=tf.float64)
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10)
    assert builder_types(sim) == ["GenericProcessBuilder", "PiecewiseBuilder",
                                  "PresentInputBuilder"]
