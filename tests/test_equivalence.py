"""Our outputs against nengo.Simulator's on the same networks and seeds."""
import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.transforms import Sparse

import nengo_dl_nb
from conftest import run_both


def feedforward_net(neuron_type, seed=0, synapse=0.005):
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(lambda t: [np.sin(6 * t), np.cos(4 * t)])
        a = nengo.Ensemble(40, 2, neuron_type=neuron_type)
        b = nengo.Ensemble(30, 1, neuron_type=neuron_type)
        nengo.Connection(stim, a, synapse=None)
        nengo.Connection(a, b, function=lambda x: x[0] * x[1], synapse=synapse)
        probes = [nengo.Probe(a, synapse=0.01), nengo.Probe(b, synapse=0.01),
                  nengo.Probe(a.neurons), nengo.Probe(b.neurons, "voltage")
                  if neuron_type.spiking and hasattr(neuron_type, "tau_rc") else
                  nengo.Probe(b.neurons)]
    return net, probes


@pytest.mark.parametrize("neuron_type", [nengo.LIF(), nengo.LIFRate(), nengo.RectifiedLinear(),
                                         nengo.SpikingRectifiedLinear(), nengo.Sigmoid()])
def test_feedforward_float64_exact(neuron_type):
    net, probes = feedforward_net(neuron_type)
    ref, sim = run_both(net, 300, dtype=tf.float64)
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8, rtol=1e-8, err_msg=str(p))


@pytest.mark.parametrize("neuron_type", [nengo.LIF(), nengo.LIFRate(), nengo.RectifiedLinear()])
def test_feedforward_float32(neuron_type):
    net, probes = feedforward_net(neuron_type)
    ref, sim = run_both(net, 300)
    # decoded, filtered outputs agree to float32 precision over a short run
    for p in probes[:2]:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=2e-4, rtol=1e-3)


def test_synapses():
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(lambda t: np.sin(10 * t))
        out = []
        for synapse in [None, 0.01, nengo.Alpha(0.02), nengo.LinearFilter([1], [0.02, 1]),
                        nengo.LinearFilter([0.1, 1], [0.01, 0.3, 1]),  # passthrough-free, 2 states
                        nengo.LinearFilter([1, 2], [1, 3]),  # direct passthrough (General)
                        nengo.LinearFilter([3], [1], analog=False)]:  # no state (NoX)
            node = nengo.Node(size_in=1)
            nengo.Connection(stim, node, synapse=synapse)
            out.append(nengo.Probe(node))
    ref, sim = run_both(net, 200, dtype=tf.float64)
    for p in out:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10, err_msg=str(p))


def test_neuron_to_neuron_weights_and_recurrence():
    with nengo.Network(seed=2) as net:
        stim = nengo.Node(lambda t: np.sin(5 * t))
        a = nengo.Ensemble(30, 1)
        b = nengo.Ensemble(20, 1)
        c = nengo.Ensemble(25, 1)
        rng = np.random.RandomState(0)
        nengo.Connection(stim, a)
        nengo.Connection(a.neurons, b.neurons, transform=rng.randn(20, 30) * 1e-3)
        dense = rng.randn(25, 20) * 1e-3
        idx = np.array([(i, j) for i in range(25) for j in range(20) if (i + j) % 3 == 0])
        nengo.Connection(b.neurons, c.neurons,
                         transform=Sparse((25, 20), indices=idx, init=dense[idx[:, 0], idx[:, 1]]))
        nengo.Connection(c, c, synapse=0.05)  # recurrent
        nengo.Connection(a, c[0], transform=0.5)
        probes = [nengo.Probe(x.neurons) for x in (a, b, c)] + [nengo.Probe(c, synapse=0.02)]
    ref, sim = run_both(net, 300, dtype=tf.float64)
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8, err_msg=str(p))


def test_slices_and_node_functions():
    with nengo.Network(seed=3) as net:
        stim = nengo.Node([0.3, -0.2, 0.5])
        a = nengo.Ensemble(50, 3)
        f = nengo.Node(lambda t, x: x * np.cos(t), size_in=2)
        nengo.Connection(stim, a)
        nengo.Connection(a[[0, 2]], f, synapse=0.01)
        nengo.Connection(f, a[1], transform=[[0.5, -0.5]])
        probes = [nengo.Probe(f), nengo.Probe(a, synapse=0.01)]
    ref, sim = run_both(net, 200, dtype=tf.float64)
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8)


def test_minibatch_items_match_single_runs():
    net, probes = feedforward_net(nengo.LIF())
    stim = net.nodes[0]
    n = 150
    rng = np.random.RandomState(4)
    data = rng.uniform(-1, 1, size=(3, n, 2))
    with net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
    with nengo_dl_nb.Simulator(net, minibatch_size=3, progress_bar=False) as sim:
        sim.run_steps(n, data={stim: data})
        batched = [sim.data[p] for p in probes]
    for i in range(3):
        with nengo_dl_nb.Simulator(net, progress_bar=False) as single:
            single.run_steps(n, data={stim: data[i:i + 1]})
            for p, values in zip(probes, batched):
                assert values.shape[0] == 3
                np.testing.assert_allclose(values[i], single.data[p], atol=1e-10)


@pytest.mark.parametrize("jit", [False, None])
@pytest.mark.parametrize("n_steps", [21, 20])
def test_unroll_gives_identical_outputs(n_steps, jit):
    """Unrolling changes how many steps one loop iteration holds, never the result.
    Without XLA the operations are the same op by op, so outputs are bit-identical; XLA
    may fuse differently for different unrolls, so there we compare in float64 to 1e-12."""
    net, probes = feedforward_net(nengo.LIF())
    with net:
        nengo_dl_nb.configure_settings(jit_compile=jit,
                                       dtype=tf.float32 if jit is False else tf.float64)
    outputs = {}
    for unroll in (1, 3, 7):
        with nengo_dl_nb.Simulator(net, unroll_simulation=unroll, progress_bar=False) as sim:
            sim.run_steps(n_steps)
            sim.run_steps(5)  # a second, shorter run continues exactly
            assert sim.n_steps == n_steps + 5
            outputs[unroll] = [sim.data[p] for p in probes]
    for unroll in (3, 7):
        for a, b in zip(outputs[1], outputs[unroll]):
            assert a.shape[0] == n_steps + 5
            if jit is False:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
