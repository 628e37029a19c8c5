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
            check_plan(sim.tensor_graph.plan, sim.tensor_graph.operators)
            sim.run_steps(50)
            results.append([sim.data[p] for p in probes])
    for values in results:
        for p, v in zip(probes, values):
            np.testing.assert_allclose(v, ref.data[p], atol=1e-8)
