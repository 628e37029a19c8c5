"""Native learning rule builders (PES, BCM, Oja, Voja, RLS) against nengo.Simulator."""
import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.builder.learning_rules import SimBCM, SimOja, SimPES, SimRLS, SimVoja

import nengo_dl_nb
from nengo_dl_nb import learning_rule_builders as lrb
from conftest import run_both

# PES runs as SimPESFactors + OuterInc where its delta is not probed (factor_pes_deltas)
RULE_OPS = {"pes": (SimPES, lrb.SimPESFactors), "bcm": SimBCM, "oja": SimOja, "voja": SimVoja, "rls": SimRLS}


def stim_fn(t):
    return [np.sin(8 * t), np.cos(5 * t)]


def learning_net(rule, neuron_type=None, seed=3, stim=stim_fn):
    """A small network learning with `rule`; returns (net, probes, stim node).

    Each network holds two learning connections of the rule (with different rates) so
    that merged groups with per-op constants are exercised."""
    neuron_type = nengo.LIF() if neuron_type is None else neuron_type
    with nengo.Network(seed=seed) as net:
        net.config[nengo.Ensemble].neuron_type = neuron_type
        u = nengo.Node(stim)
        a = nengo.Ensemble(40, 2, max_rates=nengo.dists.Uniform(100, 200))
        nengo.Connection(u, a)
        probes = []
        if rule in ("pes", "rls"):
            for i, rate in enumerate([1e-3, 3e-3] if rule == "rls" else [3e-4, 1e-3]):
                b = nengo.Ensemble(30, 2)
                rule_type = nengo.PES(rate) if rule == "pes" else nengo.RLS(rate)
                conn = nengo.Connection(a, b, function=lambda x: [0, 0],
                                        learning_rule_type=rule_type)
                err = nengo.Node(size_in=2)
                nengo.Connection(b, err)
                nengo.Connection(u, err, transform=-1)
                nengo.Connection(err, conn.learning_rule)
                probes += [nengo.Probe(b, synapse=0.02), nengo.Probe(conn, "weights")]
            # PES on a neuron -> neuron connection (error projected through encoders)
            if rule == "pes":
                c = nengo.Ensemble(25, 2)
                conn = nengo.Connection(a.neurons, c.neurons, transform=np.zeros((25, 40)),
                                        learning_rule_type=nengo.PES(1e-4))
                nengo.Connection(u, conn.learning_rule, transform=-1)
                probes += [nengo.Probe(c, synapse=0.02), nengo.Probe(conn, "weights")]
        elif rule in ("bcm", "oja"):
            for rate in [1e-9, 3e-9] if rule == "bcm" else [1e-6, 4e-6]:
                b = nengo.Ensemble(30, 2)
                rng = np.random.RandomState(len(probes))
                rule_type = (nengo.BCM(rate) if rule == "bcm"
                             else nengo.Oja(rate, beta=0.5 + len(probes)))
                conn = nengo.Connection(a.neurons, b.neurons,
                                        transform=rng.uniform(-2e-3, 2e-3, (30, 40)),
                                        learning_rule_type=rule_type)
                probes += [nengo.Probe(b, synapse=0.02), nengo.Probe(conn, "weights")]
        elif rule == "voja":
            learn = nengo.Node(lambda t: 1.0 if t < 0.2 else 0.0)
            for rate in [1e-2, 5e-2]:
                b = nengo.Ensemble(30, 2, radius=1.5)
                conn = nengo.Connection(a, b, learning_rule_type=nengo.Voja(rate))
                nengo.Connection(learn, conn.learning_rule, synapse=None)
                probes += [nengo.Probe(b, synapse=0.02),
                           nengo.Probe(conn.learning_rule, "scaled_encoders")]
    return net, probes, u


RULES = list(RULE_OPS)


def native_groups(sim, rule):
    "The op builders the simulation built for `rule`'s operator."
    return [b for ops, b in sim.runner.timestep.op_builds.items()
            if isinstance(ops[0], RULE_OPS[rule])]


@pytest.mark.parametrize("rule", RULES)
def test_float64_matches_nengo(rule):
    net, probes, _ = learning_net(rule)
    ref, sim = run_both(net, 300, dtype=tf.float64)
    groups = native_groups(sim, rule)
    # the two learning connections of one shape merged into one native group (PES's
    # neuron -> neuron connection has another shape: a group of its own)
    assert sorted(len(g.ops) for g in groups) == ([1, 2] if rule == "pes" else [2])
    assert all(isinstance(g, lrb.LearningRuleBuilder) for g in groups)
    for p in probes:
        assert np.ptp(ref.data[p]) > 0, p
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8, rtol=1e-8,
                                   err_msg=str(p))
    # the weights really moved (the rule did something to compare)
    w = ref.data[probes[1]]
    assert np.max(np.abs(w[-1] - w[0])) > 1e-6


@pytest.mark.parametrize("rule", RULES)
def test_float32_close_to_nengo(rule):
    # rate neurons: no spike-timing flips, so float32 rounding stays small
    net, probes, _ = learning_net(rule, neuron_type=nengo.LIFRate())
    ref, sim = run_both(net, 300)
    for p in probes:
        scale = np.max(np.abs(ref.data[p]))
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=2e-4 * scale, rtol=1e-3,
                                   err_msg=str(p))


@pytest.mark.parametrize("rule", RULES)
def test_compiles_with_xla(rule):
    net, probes, _ = learning_net(rule)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert not sim.runner.uses_python
        assert sim.runner.jit_compile
        sim.run_steps(20)
        assert np.all(np.isfinite(sim.data[probes[0]]))


@pytest.mark.parametrize("rule", ["pes", "voja", "rls"])
def test_minibatch_items_learn_independently(rule):
    n = 200
    t = np.arange(1, n + 1)[:, None] * 0.001
    inputs = [np.hstack([np.sin(8 * t), np.cos(5 * t)]),
              np.hstack([0.5 * np.cos(3 * t), -np.sin(6 * t)])]
    net, probes, u = learning_net(rule, neuron_type=nengo.LIFRate(), stim=[0, 0])
    with net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        sim.run_steps(n, data={u: np.stack(inputs)})
        batched = [sim.data[p] for p in probes]
    for i, x in enumerate(inputs):
        with nengo_dl_nb.Simulator(net, progress_bar=False) as single:
            single.run_steps(n, data={u: x[None]})
            for p, b in zip(probes, batched):
                np.testing.assert_allclose(b[i], single.data[p], atol=1e-10, err_msg=str(p))
    # the two items saw different inputs, so they learned different weights
    w = probes[1]
    assert np.max(np.abs(batched[1][0, -1] - batched[1][1, -1])) > 1e-6, w


def test_different_shapes_do_not_merge():
    with nengo.Network(seed=0) as net:
        a = nengo.Ensemble(20, 1)
        errs = []
        for n in (10, 15):
            b = nengo.Ensemble(n, 1)
            conn = nengo.Connection(a, b, learning_rule_type=nengo.PES())
            err = nengo.Node(size_in=1)
            nengo.Connection(err, conn.learning_rule)
            errs.append(err)
        conn = nengo.Connection(a.neurons, b.neurons, transform=np.zeros((15, 20)),
                                learning_rule_type=nengo.PES())
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        groups = native_groups(sim, "pes")
        # decoded (1 x 20) PES ops merge; the neuron (15 x 20) one is its own group
        assert sorted(len(g.ops) for g in groups) == [1, 2]


def rules_at_depths_net(rule, seed):
    """Six ensembles joined at random (some `synapse=None`, so operators of one class sit at
    different depths of a timestep) and three learning connections of `rule` between random
    pairs of them; returns the network and probes of the learned quantities and outputs."""
    rng = np.random.RandomState(seed)
    with nengo.Network(seed=seed) as net:
        u = nengo.Node(stim_fn)
        ens = [nengo.Ensemble(20, 2) for _ in range(6)]
        nengo.Connection(u, ens[0])
        for i in range(1, 6):
            nengo.Connection(ens[rng.randint(i)], ens[i], synapse=[None, 0.005][rng.randint(2)])
        probes = []
        for _ in range(3):
            i, j = rng.randint(6, size=2)
            synapse = [None, 0.005][rng.randint(2)]
            if rule == "voja":
                conn = nengo.Connection(ens[i], ens[j], learning_rule_type=nengo.Voja(
                    1e-3, post_synapse=synapse))
                probes.append(nengo.Probe(conn.learning_rule, "scaled_encoders"))
            else:
                rule_type = (nengo.BCM(1e-9, pre_synapse=synapse) if rule == "bcm"
                             else nengo.Oja(1e-6, post_synapse=synapse))
                conn = nengo.Connection(ens[i].neurons, ens[j].neurons, learning_rule_type=rule_type,
                                        transform=rng.uniform(-1e-3, 1e-3, (20, 20)))
                probes.append(nengo.Probe(conn, "weights"))
        probes += [nengo.Probe(e, synapse=0.01) for e in ens]
    return net, probes


# seeds whose three operators are independent of one another; at voja's seed the planner's
# old fallback split them [2, 1] (BCM's and Oja's seeds merged before too)
@pytest.mark.parametrize("rule, seed", [("bcm", 0), ("oja", 0), ("voja", 13)])
def test_rules_at_different_depths_merge_and_match_nengo(rule, seed):
    net, probes = rules_at_depths_net(rule, seed)
    ref, sim = run_both(net, 200, dtype=tf.float64)
    groups = native_groups(sim, rule)
    assert [len(g.ops) for g in groups] == [3]
    for p in probes:
        assert np.ptp(ref.data[p]) > 0, p
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8, rtol=1e-8, err_msg=str(p))


def _graph_op_types(fn):
    "Every op type in the traced `fn` (a tf.function with an input signature), loop bodies too."
    graph_def = fn.get_concrete_function().graph.as_graph_def()
    return ({n.op for n in graph_def.node}
            | {n.op for f in graph_def.library.function for n in f.node_def})


def test_pes_keeps_no_delta_matrix_and_scatters_nothing():
    # the PES delta (a matrix the size of the weights) is not simulator state; its factors
    # are; and the merged Copy group that adds into repeated positions (the error node's
    # inputs) writes slices, not a scatter over the state
    from nengo_dl_nb.benchmarks import pes_ensemble
    net = pes_ensemble(2, 8)
    with nengo_dl_nb.Simulator(net, progress_bar=False, minibatch_size=2) as sim:
        delta = sim.model.sig[net.conn.learning_rule]["delta"]
        assert delta.base not in sim.runner.layout.keys
        kinds = {type(op).__name__ for op in sim.runner.layout.operators}
        assert {"SimPESFactors", "OuterInc"} <= kinds and "SimPES" not in kinds
        types = _graph_op_types(sim.runner.run_function())
        assert not {t for t in types if "Scatter" in t}, types


def test_pes_with_probed_delta_matches_nengo():
    # a probed delta keeps nengo's own operators (the probe reads the matrix)
    net, probes, _ = learning_net("pes")
    with net:
        conn = [c for c in net.all_connections if c.learning_rule_type is not None][0]
        p_delta = nengo.Probe(conn.learning_rule, "delta")
    ref, sim = run_both(net, 100, dtype=tf.float64)
    assert isinstance(native_groups(sim, "pes")[0].ops[0], SimPES)
    for p in probes + [p_delta]:
        np.testing.assert_allclose(sim.data[p][0] if sim.data[p].ndim > ref.data[p].ndim
                                   else sim.data[p], ref.data[p], atol=1e-8)


def test_large_learned_weights_keep_their_shape_in_the_loop():
    # a large matrix alone in its segment is carried as (minibatch, rows, columns): XLA
    # updates it several times faster than as a flat (minibatch, rows * columns) row
    from nengo_dl_nb.benchmarks import pes_ensemble
    with nengo_dl_nb.Simulator(pes_ensemble(2, 512), progress_bar=False,
                               minibatch_size=2) as sim:
        shapes = [tuple(s.shape) for s in sim.runner.read_state()]
        assert (2, 2, 1024) in shapes, shapes


def test_learned_weights_in_their_own_array_match_nengo(tmp_path):
    # the learned matrix lives in a state array (and variable) of its own, in its own shape:
    # runs of every kind, single steps, a reset, sim.data and saved state still agree with
    # nengo (float64)
    from nengo_dl_nb.benchmarks import pes_ensemble
    net = pes_ensemble(2, 512)
    with net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        pw = nengo.Probe(net.conn, "weights", sample_every=0.01)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(60)
        learned = ref.signals[ref.model.sig[net.conn]["weights"]].copy()
    with nengo_dl_nb.Simulator(net, progress_bar=False, minibatch_size=2) as sim:
        key = sim.runner.layout[sim.model.sig[net.conn]["weights"]].key
        assert key.alone and tuple(sim.runner.state_vars[key].shape) == (2, 2, 1024)
        for _ in range(3):
            sim.step()
        sim.run_steps(7)
        sim.run_steps(50)
        np.testing.assert_allclose(sim.data[net.p][0], ref.data[net.p], atol=1e-8)
        np.testing.assert_allclose(sim.data[net.p][1], ref.data[net.p], atol=1e-8)
        np.testing.assert_allclose(sim.data[pw][1], ref.data[pw], rtol=1e-7, atol=1e-14)
        weights = sim.model.sig[net.conn]["weights"]
        assert sim.signals[weights].shape == (2, 2, 1024)  # per item (minibatched)
        np.testing.assert_allclose(sim.signals[weights][1], learned, rtol=1e-7, atol=1e-14)
        assert np.abs(learned).max() > 1e-7  # it learned something
        sim.save_params(tmp_path / "state", include_local=True)
        sim.soft_reset()
        np.testing.assert_array_equal(sim.signals[weights], 0)  # the initial weights again
        sim.load_params(tmp_path / "state", include_local=True)
        np.testing.assert_allclose(sim.signals[weights][0], learned, rtol=1e-7, atol=1e-14)


def test_shaped_weights_with_a_python_node_match_nengo():
    # the step cut around a Python node passes the shaped segment between its parts
    from nengo_dl_nb.benchmarks import pes_ensemble
    net = pes_ensemble(2, 512)
    with net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        python = nengo.Node(lambda t, x: 2 * x, size_in=2)
        nengo.Connection(net.post, python)
        p = nengo.Probe(python)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(50)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        for _ in range(50):
            sim.step()
        assert (1, 2, 1024) in [tuple(s.shape) for s in sim.runner.read_state()]
    np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8)
    np.testing.assert_allclose(sim.data[net.p], ref.data[net.p], atol=1e-8)
    assert np.abs(ref.data[net.p]).max() > 1e-6  # it learned something
