"""Planners: every plan respects dependencies and gives nengo.Simulator's outputs.
(Neuron builders against Nengo's own step functions: test_neuron_types.py.)"""
import nengo
import numpy as np
import pytest
import tensorflow as tf

import nengo_dl_nb
from nengo_dl_nb.graph_optimizer import check_plan, greedy_planner, noop_planner


def random_network(seed):
    rng = np.random.RandomState(seed)
    with nengo.Network(seed=seed) as net:
        nodes = [nengo.Node(lambda t, k=k: np.sin((k + 1) * t)) for k in range(2)]
        ens = [nengo.Ensemble(rng.randint(5, 20), rng.randint(1, 3),
                              neuron_type=[nengo.LIF(), nengo.LIFRate(), nengo.RectifiedLinear()][
                                  rng.randint(3)]) for _ in range(rng.randint(3, 7))]
        for e in ens:
            nengo.Connection(nodes[rng.randint(2)], e[0])
        for _ in range(len(ens) + 2):
            a, b = ens[rng.randint(len(ens))], ens[rng.randint(len(ens))]
            if rng.rand() < 0.3:
                nengo.Connection(a.neurons, b.neurons,
                                 transform=rng.randn(b.n_neurons, a.n_neurons) * 1e-3)
            else:
                nengo.Connection(a[0], b[b.dimensions - 1], synapse=rng.choice([None, 0.005, 0.02]))
        probes = [nengo.Probe(e, synapse=0.01) for e in ens]
    return net, probes


@pytest.mark.parametrize("seed", range(4))
def test_plans_respect_dependencies_and_agree(seed):
    net, probes = random_network(seed)
    with net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(50)
    results = []
    for planner in (greedy_planner, noop_planner):
        with net:
            nengo_dl_nb.configure_settings(planner=planner)
        with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
            check_plan(sim.layout.plan, sim.layout.operators)
            sim.run_steps(50)
            results.append([sim.data[p] for p in probes])
    for values in results:
        for p, v in zip(probes, values):
            np.testing.assert_allclose(v, ref.data[p], atol=1e-8)


@pytest.mark.parametrize("minibatch_size", [1, 3])
def test_dotinc_group_shapes_agree_with_nengo(minibatch_size):
    """Merged DotInc groups take four forms (broadcast product when each matrix has one
    column, product summed along X when it has one row, batched dot otherwise, one
    matrix product for a group of one), with fixed and per-item (PES) matrices; each
    must give nengo.Simulator's outputs, in float64 to 1e-8, in every minibatch item.
    The batched dot of per-item matrices is a matmul (no Einsum, slow to lower to XLA);
    shared matrices keep the einsum."""
    from nengo_dl_nb.op_builders import DotIncBuilder
    with nengo.Network(seed=4) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        stim = nengo.Node(lambda t: [np.sin(5 * t), np.cos(3 * t)])
        ones = [nengo.Ensemble(12, 1) for _ in range(3)]      # encoders (12, 1), decoders (1, 12)
        twos = [nengo.Ensemble(10, 2) for _ in range(3)]      # encoders (10, 2), decoders (2, 10)
        lone = nengo.Ensemble(9, 3)                           # a group of one
        for e in ones:
            nengo.Connection(stim[0], e)
        for e in twos:
            nengo.Connection(stim, e)
        nengo.Connection(stim, lone[:2])
        out1 = nengo.Node(size_in=1)
        out2 = nengo.Node(size_in=2)
        for e in ones:
            conn = nengo.Connection(e, out1, learning_rule_type=nengo.PES(1e-3))
            nengo.Connection(out1, conn.learning_rule, transform=-1)  # error = output
        for e in twos:
            conn = nengo.Connection(e, out2, function=lambda x: x ** 2,
                                    learning_rule_type=nengo.PES(1e-4))
            nengo.Connection(out2, conn.learning_rule, transform=-1)
        nengo.Connection(lone, out2, function=lambda x: x[:2] * x[2])
        probes = [nengo.Probe(out1, synapse=0.01), nengo.Probe(out2, synapse=0.01)]
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(60)
    with nengo_dl_nb.Simulator(net, minibatch_size=minibatch_size, progress_bar=False) as sim:
        shapes = set()
        for op_build in sim.runner.timestep.op_builds.values():
            if isinstance(op_build, DotIncBuilder) and op_build.dense:
                shapes.add(("m1" if op_build.m == 1 else "n1" if op_build.n == 1 else
                            "one" if op_build.g == 1 else "dot", op_build.A.minibatched))
        assert {("m1", False), ("n1", True), ("dot", False), ("dot", True)} <= shapes, shapes
        sim.run_steps(60)
        for p in probes:
            items = np.reshape(sim.data[p], (minibatch_size,) + ref.data[p].shape)
            for item in items:
                np.testing.assert_allclose(item, ref.data[p], atol=1e-8)
        graph = sim.runner.step_call().concrete.graph
        types = {op.type for op in graph.get_operations()}
        assert "BatchMatMulV2" in types and "Einsum" in types


def test_int_constant_is_shared_within_a_graph_and_free_of_control_deps():
    from nengo_dl_nb.signals import columns, int_constant, reshape

    v = tf.Variable(np.arange(12, dtype=np.float32).reshape(2, 6))
    seen = {}

    @tf.function(autograph=False)
    def f():
        x = v.read_value()
        seen["a"] = int_constant((0, 2))
        with tf.control_dependencies([x]):
            seen["b"] = int_constant((0, 2))  # the same constant, made without the dependency
            seen["c"] = int_constant((3, 2))  # new: made here, without the dependency
        return columns(x, 2, 5), reshape(x, (3, 4)), reshape(x, (-1, 6))

    cols, r, same = f()
    assert seen["a"] is seen["b"] and seen["c"] is not seen["a"]
    assert not seen["c"].op.control_inputs  # made inside the block, still free of it
    np.testing.assert_array_equal(cols.numpy(), v.numpy()[:, 2:5])
    np.testing.assert_array_equal(r.numpy(), v.numpy().reshape(3, 4))
    np.testing.assert_array_equal(same.numpy(), v.numpy())
    graph = f.get_concrete_function().graph
    assert [op.type for op in graph.get_operations()].count("Reshape") == 1  # (-1, 6): no-op
    g2 = {}

    @tf.function(autograph=False)
    def h():
        g2["a"] = int_constant((0, 2))
        return g2["a"]

    np.testing.assert_array_equal(h().numpy(), [0, 2])
    assert g2["a"] is not seen["a"]  # one set of constants per traced graph
    np.testing.assert_array_equal(int_constant((4, 5)).numpy(), [4, 5])  # eagerly: a tensor
