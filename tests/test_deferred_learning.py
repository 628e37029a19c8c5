"""PES weights updated a block of rows a step in a run (`LearnedDotInc`), against
nengo.Simulator and against the same model with the whole update every step."""
import nengo
import numpy as np
import pytest
import tensorflow as tf

import nengo_dl_nb
from nengo_dl_nb.learning_rule_builders import LearnedDotInc, OuterInc

DT = 0.001


def pes_net(dims=8, n=120, rate=3e-3, defer=1, probe_weights=False, seed=2, stim=None):
    """An ensemble learning to pass `stim` through to a node with PES (`dims` error rows);
    `defer` is the `defer_learning` setting. Returns (net, probes, stim node, conn)."""
    stim = stim or (lambda t: np.sin(np.arange(1, dims + 1) * 7 * t + np.arange(dims)))
    with nengo.Network(seed=seed) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64, defer_learning=defer)
        u = nengo.Node(stim, size_out=dims)
        a = nengo.Ensemble(n, dims, max_rates=nengo.dists.Uniform(200, 400))
        b = nengo.Node(size_in=dims)
        nengo.Connection(u, a)
        conn = nengo.Connection(a, b, function=lambda x: np.zeros(dims),
                                learning_rule_type=nengo.PES(rate))
        err = nengo.Node(size_in=dims)
        nengo.Connection(b, err)
        nengo.Connection(u, err, transform=-1)
        nengo.Connection(err, conn.learning_rule)
        probes = [nengo.Probe(b), nengo.Probe(a.neurons)]
        if probe_weights:
            probes.append(nengo.Probe(conn, "weights"))
    return net, probes, u, conn


def kinds(sim):
    return {type(op) for group in sim.layout.plan for op in group}


def weights(sim, conn):
    "The current weights of `conn` in `sim` (either simulator), a copy."
    return np.array(sim.signals[sim.model.sig[conn]["weights"]])


def reference(net, conn, steps):
    "nengo.Simulator's probe data and final weights of `conn` after `steps`."
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(steps)
        return ref.data, weights(ref, conn)


@pytest.mark.parametrize("dims", [8, 4, 6])  # K = 8, 4, 2 (gcd with 8)
def test_deferred_pes_matches_nengo(dims):
    net, probes, _, conn = pes_net(dims=dims)
    steps = 60
    ref_data, ref_w = reference(net, conn, steps)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert LearnedDotInc in kinds(sim) and OuterInc not in kinds(sim)
        sim.run_steps(steps)
        np.testing.assert_allclose(sim.data[probes[1]], ref_data[probes[1]], atol=1e-8)
        np.testing.assert_allclose(sim.data[probes[0]], ref_data[probes[0]], atol=1e-8)
        assert np.abs(ref_data[probes[0]][-1]).max() > 1e-3  # it learned something
        np.testing.assert_allclose(weights(sim, conn), ref_w, atol=1e-10)


@pytest.mark.parametrize("jit_compile", [None, False])
def test_deferred_pes_across_calls_and_single_steps(jit_compile):
    """Runs of lengths that are not multiples of K, single steps in between: the weights are
    whole between calls and the output is nengo's (a loop XLA does not compile updates
    the weights whole)."""
    net, probes, _, conn = pes_net()
    with net:
        nengo_dl_nb.configure_settings(jit_compile=jit_compile)
    lengths = [1, 5, 0, 13, 3, 8, 17]
    n = sum(lengths) + len(lengths)
    ref_data, ref_w = reference(net, conn, n)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert LearnedDotInc in kinds(sim)
        for k in lengths:
            if k:
                sim.run_steps(k)
            sim.step()
        assert sim.n_steps == n
        np.testing.assert_allclose(sim.data[probes[0]], ref_data[probes[0]], atol=1e-8)
        np.testing.assert_allclose(weights(sim, conn), ref_w, atol=1e-10)
        assert np.abs(ref_w).max() > 1e-4  # (it learned)


def test_deferred_pes_minibatch_items_learn_on_their_own():
    """Each minibatch item its own input, error and weights: every item equals nengo's run of
    the same model with that item's input."""
    dims, steps, mb = 8, 40, 3
    rng = np.random.RandomState(5)
    values = rng.uniform(-1, 1, (mb, steps, dims))
    net, probes, u, conn = pes_net(dims=dims)
    with nengo_dl_nb.Simulator(net, minibatch_size=mb, progress_bar=False) as sim:
        assert LearnedDotInc in kinds(sim)
        sim.run_steps(steps, data={u: values})
        ours = sim.data[probes[0]]
        ours_w = weights(sim, conn)
    for i in range(mb):
        net_i, probes_i, _, conn_i = pes_net(
            dims=dims, stim=lambda t, i=i: values[i, int(round(t / DT)) - 1])
        ref_data, ref_w = reference(net_i, conn_i, steps)
        np.testing.assert_allclose(ours[i], ref_data[probes_i[0]], atol=1e-8)
        np.testing.assert_allclose(ours_w[i], ref_w, atol=1e-10)
    assert not np.allclose(ours[0], ours[1])


def test_deferred_pes_only_where_it_applies():
    "A probed weight matrix, a small one (default size), `defer_learning=False`: the whole update."
    for options in (dict(probe_weights=True), dict(defer=True), dict(defer=False)):
        net, *_ = pes_net(**options)
        with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
            assert OuterInc in kinds(sim) and LearnedDotInc not in kinds(sim), options
    net, *_ = pes_net(dims=8, n=8192, defer=True)  # 65,536 weights: the default (2**22 over
    for mb, deferred in ((1, False), (63, False), (64, True)):  # the minibatch) from mb 64
        with nengo_dl_nb.Simulator(net, minibatch_size=mb, progress_bar=False) as sim:
            assert (LearnedDotInc in kinds(sim)) is deferred, mb


@pytest.mark.parametrize("value", [0, -3, 2.5, "yes"])
def test_defer_learning_setting_rejects_bad_values(value):
    net, *_ = pes_net(defer=value)
    with pytest.raises(nengo.exceptions.ConfigError, match="defer_learning"):
        nengo_dl_nb.Simulator(net, progress_bar=False)


def test_deferred_pes_soft_reset_and_reload(tmp_path):
    "After a reset the run starts again from the built weights; saved state reloads exactly."
    net, probes, _, conn = pes_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(21)
        first = sim.data[probes[0]].copy()
        w = weights(sim, conn).copy()
        sim.save_params(str(tmp_path / "p"), include_local=True)
        sim.soft_reset(include_probes=True)
        sim.run_steps(21)
        np.testing.assert_array_equal(sim.data[probes[0]], first)
        sim.run_steps(11)
        sim.load_params(str(tmp_path / "p"), include_local=True)
        np.testing.assert_array_equal(weights(sim, conn), w)


def test_deferred_pes_gradients_match_the_whole_update():
    """Training through a run with deferred updates gives the gradients of the same run with
    the whole update every step (float64)."""
    results = []
    for defer in (1, False):
        net, probes, u, conn = pes_net(dims=4, n=60, defer=defer)
        with net:
            nengo_dl_nb.configure_settings(trainable=None)
        with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
            x = np.random.RandomState(0).uniform(-1, 1, (2, 19, 4))
            y = np.zeros((2, 19, 4))
            ens = net.all_ensembles[0]
            initial = sim.get_nengo_params(ens)["bias"]
            sim.compile(optimizer=tf.optimizers.SGD(100.0), loss={probes[0]: "mse"})
            sim.fit({u: x}, {probes[0]: y}, epochs=2, verbose=0)
            params = sim.get_nengo_params(ens)
            results.append([params["bias"] - initial, params["encoders"], weights(sim, conn)])
    assert np.abs(results[0][0]).max() > 1e-4  # (it trained: the biases' changes)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-12)
