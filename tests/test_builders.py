"""Native builders against Nengo's own step functions on random inputs."""
import nengo
import numpy as np
import pytest
import tensorflow as tf

import nengo_dl_nb
from nengo_dl_nb.graph_optimizer import check_plan, greedy_planner, noop_planner


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("neuron_type", [
    nengo.LIF(), nengo.LIF(tau_rc=0.05, tau_ref=0.001, min_voltage=-1, amplitude=0.5),
    nengo.LIFRate(amplitude=2), nengo.RectifiedLinear(amplitude=0.3),
    nengo.SpikingRectifiedLinear(amplitude=2), nengo.Sigmoid(tau_ref=0.01)])
def test_neurons_match_nengo_step(neuron_type, dtype):
    """Drive a population with random currents through a Node and compare the neuron
    output with Nengo's own `step` applied to the same currents."""
    n, steps, dt = 20, 100, 0.001
    rng = np.random.RandomState(0)
    currents = rng.uniform(-2, 6, size=(steps, n))
    with nengo.Network(seed=0) as net:
        nengo_dl_nb.configure_settings(dtype=dtype)
        drive = nengo.Node(lambda t: currents[int(round(t / dt)) - 1])
        ens = nengo.Ensemble(n, 1, neuron_type=neuron_type, gain=np.ones(n), bias=np.zeros(n))
        nengo.Connection(drive, ens.neurons, synapse=None)
        p = nengo.Probe(ens.neurons)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        state = {k: np.array(sim.signals[sim.model.sig[ens.neurons][k]], dtype=np.float64)
                 for k in neuron_type.state}
        sim.run_steps(steps)
    expected = np.zeros((steps, n))
    for i in range(steps):
        neuron_type.step(dt, currents[i], expected[i], **state)
    tol = dict(rtol=1e-5, atol=1e-3) if dtype == tf.float32 else dict(rtol=1e-10, atol=1e-10)
    if neuron_type.spiking and dtype == tf.float32:
        # float32 spike times may shift by a step; compare spike counts
        np.testing.assert_allclose(sim.data[p].sum(0), expected.sum(0),
                                   atol=2 * neuron_type.amplitude / dt)
    else:
        np.testing.assert_allclose(sim.data[p], expected, **tol)


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
