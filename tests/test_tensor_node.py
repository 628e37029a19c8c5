"""TensorNodes, tensor_layer, and the keep_history / session_config settings."""
import numpy as np
import nengo
import pytest
import tensorflow as tf
from nengo.exceptions import SimulationError, ValidationError

import nengo_dl_nb
from nengo_dl_nb import TensorNode, tensor_layer


@pytest.mark.parametrize("minibatch_size, unroll", [(1, 1), (3, 2), (2, 5)])
def test_tensor_node_computes_its_function(minibatch_size, unroll):
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(lambda t: [np.sin(t), np.cos(t)])
        tn = TensorNode(lambda t, x: tf.reduce_sum(x, axis=1, keepdims=True) * t, size_in=2)
        nengo.Connection(stim, tn, synapse=None)
        clock = TensorNode(lambda t: tf.reshape(tf.stack([t, 2 * t]), (1, 2)))
        p, p_clock = nengo.Probe(tn), nengo.Probe(clock)
    with nengo_dl_nb.Simulator(net, minibatch_size=minibatch_size, unroll_simulation=unroll,
                               progress_bar=False) as sim:
        sim.run_steps(7)
        t = sim.trange()
        out = sim.data[p].reshape(minibatch_size, 7, 1)
        clk = sim.data[p_clock].reshape(minibatch_size, 7, 2)
    for b in range(minibatch_size):  # by hand: (sin t + cos t) * t, and (t, 2t)
        np.testing.assert_allclose(out[b, :, 0], (np.sin(t) + np.cos(t)) * t, rtol=1e-5)
        np.testing.assert_allclose(clk[b], np.stack([t, 2 * t], axis=1), rtol=1e-6)


def test_tensor_node_sees_each_minibatch_item():
    with nengo.Network() as net:
        inp = nengo.Node([0.0, 0.0])
        tn = TensorNode(lambda t, x: x[:, ::-1] * 3, size_in=2)
        nengo.Connection(inp, tn, synapse=None)
        p = nengo.Probe(tn)
    x = np.random.RandomState(0).randn(4, 3, 2)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.run_steps(3, data={inp: x})
        np.testing.assert_allclose(sim.data[p], 3 * x[:, :, ::-1], rtol=1e-6)


def test_size_out_inference_and_errors():
    with nengo.Network():
        assert TensorNode(lambda t, x: tf.concat([x, x], axis=1), size_in=3).size_out == 6
        assert TensorNode(tf.keras.layers.Dense(4), size_in=2).size_out == 4
        assert TensorNode(lambda t, x: x, size_in=2, size_out=2).size_out == 2
        with pytest.raises(ValidationError, match="callable"):
            TensorNode(np.ones(3))
        with pytest.raises(ValidationError, match="size_out"):
            TensorNode(tf.keras.layers.Dense(4))  # a layer needs an input
        with pytest.raises(ValidationError, match="returned shape"):
            TensorNode(lambda t, x: tf.zeros((1, 2, 2)), size_in=1)
        tn = TensorNode(lambda t: tf.ones((1, 1)))
        with pytest.raises(ValidationError, match="tensor_func"):
            tn.output = lambda t: t


def test_nengo_simulator_refuses_tensor_nodes():
    with nengo.Network() as net:
        tn = TensorNode(lambda t: tf.ones((1, 1)), label="tf code")
        nengo.Probe(tn)
    with nengo.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(SimulationError, match="only run in nengo_dl_nb.Simulator"):
            sim.step()


def keras_stack(conv=False):
    with nengo.Network(seed=0) as net:
        nengo_dl_nb.configure_settings(trainable=None)  # lets objects be configured one by one
        inp = nengo.Node(np.zeros(16))
        if conv:
            x = tensor_layer(inp, tf.keras.layers.Conv2D, shape_in=(4, 4, 1), filters=4,
                             kernel_size=3, activation="relu")
        else:
            x = tensor_layer(inp, tf.keras.layers.Dense, units=16, activation="relu")
        x = tensor_layer(x, nengo.RectifiedLinear())
        out = tensor_layer(x, tf.keras.layers.Dense, units=2)
        p = nengo.Probe(out)
    rng = np.random.RandomState(1)
    data_x = rng.randn(32, 1, 16)
    data_y = np.stack([data_x[..., :8].sum(-1), data_x[..., 8:].mean(-1)], axis=-1)
    return net, inp, p, data_x, data_y


@pytest.mark.parametrize("conv", [False, True])
def test_keras_stack_trains(conv, tmp_path):
    net, inp, p, x, y = keras_stack(conv)
    data = {inp: x, p: y}
    with nengo_dl_nb.Simulator(net, minibatch_size=8, progress_bar=False) as sim:
        assert len(sim.tensor_graph.function_vars) == 4  # two kernels, two biases
        before = sim.loss(data)
        sim.train(data, tf.keras.optimizers.Adam(0.01), n_epochs=25, progress_bar=False)
        after = sim.loss(data)
        assert after < 0.5 * before
        sim.save_params(tmp_path / "keras")
        sim.reset()  # back to the initial weights
        assert np.isclose(sim.loss(data), before, rtol=1e-6)
        sim.load_params(tmp_path / "keras")
        assert np.isclose(sim.loss(data), after, rtol=1e-6)


def test_untrainable_tensor_node_keeps_its_weights():
    net, inp, p, x, y = keras_stack()
    first = net.nodes[1]
    net.config[first].trainable = False
    with nengo_dl_nb.Simulator(net, minibatch_size=8, progress_bar=False) as sim:
        frozen = [v.numpy() for v in sim.tensor_graph.frozen_function_vars]
        assert len(frozen) == 2 and len(sim.tensor_graph.function_vars) == 2
        sim.train({inp: x, p: y}, tf.keras.optimizers.Adam(0.01), n_epochs=2,
                  progress_bar=False)
        for v, old in zip(sim.tensor_graph.frozen_function_vars, frozen):
            np.testing.assert_array_equal(v.numpy(), old)


def test_tensor_layer_with_neurons_and_callable():
    with nengo.Network() as net:
        inp = nengo.Node([-1.0, 2.0, 0.5])
        relu = tensor_layer(inp, nengo.RectifiedLinear(), transform=2 * np.eye(3))
        scaled = tensor_layer(relu, lambda x, k: k * x, k=3.0)
        p = nengo.Probe(scaled)
        with pytest.raises(ValidationError, match="shape_in"):
            tensor_layer(inp, tf.keras.layers.Dense, shape_in=(2, 2), units=1)
    assert isinstance(relu, nengo.ensemble.Neurons)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(2)
    # gain 1, bias 0: rates are max(2x, 0); then times 3
    np.testing.assert_allclose(sim.data[p][-1], 3 * np.maximum(2 * np.array([-1, 2, 0.5]), 0),
                               rtol=1e-6)


def test_keep_history_keeps_only_the_last_sample():
    with nengo.Network() as net:
        nengo_dl_nb.configure_settings(keep_history=True)
        stim = nengo.Node(lambda t: t)
        p_all, p_last = nengo.Probe(stim), nengo.Probe(stim)
    net.config[p_last].keep_history = False
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(10)
        sim.run_steps(5)
        assert sim.data[p_all].shape == (15, 1)
        np.testing.assert_allclose(sim.data[p_last], [[0.015]], rtol=1e-6)


def test_session_config():
    with nengo.Network() as net:
        nengo_dl_nb.configure_settings(session_config={"allow_soft_placement": True})
        nengo.Node([1.0])
    with nengo_dl_nb.Simulator(net, progress_bar=False):
        pass
    with net:
        nengo_dl_nb.configure_settings(session_config={"no_such_option": 1})
    with pytest.raises(ValidationError, match="no_such_option"):
        nengo_dl_nb.Simulator(net, progress_bar=False)
