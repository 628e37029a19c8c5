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
        assert len(sim.runner.function_vars) == 4  # two kernels, two biases
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
        frozen = [v.numpy() for v in sim.runner.frozen_function_vars]
        assert len(frozen) == 2 and len(sim.runner.function_vars) == 2
        sim.train({inp: x, p: y}, tf.keras.optimizers.Adam(0.01), n_epochs=2,
                  progress_bar=False)
        for v, old in zip(sim.runner.frozen_function_vars, frozen):
            np.testing.assert_array_equal(v.numpy(), old)


def test_tensor_layer_with_neurons_and_callable():
    with nengo.Network() as net:
        inp = nengo.Node([-1.0, 2.0, 0.5])
        relu = tensor_layer(inp, nengo.RectifiedLinear(), transform=2 * np.eye(3),
                            gain=nengo.dists.Choice([1]), bias=nengo.dists.Choice([0]))
        scaled = tensor_layer(relu, lambda x, k: k * x, k=3.0)
        p = nengo.Probe(scaled)
        with pytest.raises(ValidationError, match="shape_in"):
            tensor_layer(inp, tf.keras.layers.Dense, shape_in=(2, 2), units=1)
    assert isinstance(relu, nengo.ensemble.Neurons)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(2)
    # gain 1, bias 0 (given in layer_args): rates are max(2x, 0); then times 3
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


# -- size_out inference ------------------------------------------------------------------

def test_size_out_inference_accepts_any_minibatch_size():
    rows = np.arange(6.0).reshape(3, 2)
    with nengo.Network() as net:
        tn = TensorNode(lambda t: tf.constant(rows, tf.float32) * t, label="three rows")
        p = nengo.Probe(tn)
    assert tn.size_out == 2
    with nengo_dl_nb.Simulator(net, minibatch_size=3, progress_bar=False) as sim:
        sim.run_steps(4)
        t = sim.trange()
    for b in range(3):  # item b gets row b, times t
        np.testing.assert_allclose(sim.data[p][b], t[:, None] * rows[b], rtol=1e-6)
    # a simulator of another minibatch size cannot take 3 rows: a clear error naming the node
    with pytest.raises(ValidationError, match="three rows.*minibatch"):
        nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False)


def test_function_returning_none_is_a_validation_error():
    with nengo.Network() as net:
        with pytest.raises(ValidationError, match="forgot.*None"):
            TensorNode(lambda t: None, label="forgot")  # found when inferring size_out
        inp = nengo.Node([1.0])
        tn = TensorNode(lambda t, x: None, size_in=1, size_out=1, label="forgot too")
        nengo.Connection(inp, tn)
    with pytest.raises(ValidationError, match="forgot too.*None"):  # found when building
        nengo_dl_nb.Simulator(net, progress_bar=False)


# -- pre_build / post_build --------------------------------------------------------------

W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
B = np.array([0.5, -1.0])


class Pretrained:
    "Builds a Keras Dense layer in pre_build, loads known weights into it in post_build."

    def __init__(self):
        self.events = []

    def pre_build(self, shape_in, shape_out):
        self.events.append(("pre_build", shape_in, shape_out))
        self.layer = tf.keras.layers.Dense(2)

    def post_build(self, rng):
        self.events.append(("post_build", type(rng)))
        self.layer.set_weights([W, B])

    def __call__(self, t, x):
        if not self.events or self.events[-1] != "call":
            self.events.append("call")
        return self.layer(x)


def pretrained_net(size_out=None):
    func = Pretrained()
    with nengo.Network(seed=0) as net:
        inp = nengo.Node([1.0, -1.0, 2.0])
        tn = TensorNode(func, size_in=3, size_out=size_out, label="pretrained")
        nengo.Connection(inp, tn, synapse=None)
        p = nengo.Probe(tn)
    return net, func, inp, p


def test_pre_build_and_post_build_load_weights():
    net, func, inp, p = pretrained_net()
    assert func.events == [("pre_build", (1, 3), None), "call"]  # size_out inference
    expected = np.array([1.0, -1.0, 2.0]) @ W + B  # by hand: [8.5, 9]
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        # the builder calls pre_build again with the simulator's shapes, then the function,
        # then post_build (with the simulator's seeded RandomState) once variables exist
        assert func.events[2:5] == [("pre_build", (2, 3), (2, 2)), "call",
                                    ("post_build", np.random.RandomState)]
        sim.run_steps(3)
        np.testing.assert_allclose(sim.data[p], np.broadcast_to(expected, (2, 3, 2)),
                                   rtol=1e-6)
        x = np.random.RandomState(0).randn(4, 1, 3)
        sim.train({inp: x, p: np.zeros((4, 1, 2))}, tf.keras.optimizers.SGD(0.01),
                  n_epochs=2, progress_bar=False)
        trained = func.layer.get_weights()[0]
        assert not np.allclose(trained, W)
        sim.soft_reset()  # keeps trained weights
        np.testing.assert_allclose(func.layer.get_weights()[0], trained)
        sim.reset(seed=5)  # back to the built state: the weights post_build loaded
        np.testing.assert_allclose(func.layer.get_weights()[0], W)
        sim.run_steps(1)
        np.testing.assert_allclose(sim.data[p][:, -1], np.broadcast_to(expected, (2, 2)),
                                   rtol=1e-6)
    assert sum(e[0] == "post_build" for e in func.events if isinstance(e, tuple)) == 1


def test_pre_build_with_explicit_size_out_comes_before_any_call():
    net, func, inp, p = pretrained_net(size_out=2)
    assert func.events == []
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert func.events[0] == ("pre_build", (1, 3), (1, 2))
        sim.run_steps(1)
    np.testing.assert_allclose(sim.data[p][-1], np.array([1.0, -1.0, 2.0]) @ W + B, rtol=1e-6)


def test_post_build_with_a_session_argument_is_refused():
    class SessionStyle(Pretrained):
        def post_build(self, sess, rng):
            self.layer.set_weights([W, B])

    with nengo.Network() as net:
        inp = nengo.Node([1.0, -1.0, 2.0])
        nengo.Connection(inp, TensorNode(SessionStyle(), size_in=3, label="tf1 style"))
    with pytest.raises(ValidationError, match="tf1 style.*post_build.*rng"):
        nengo_dl_nb.Simulator(net, progress_bar=False)


# -- random numbers ----------------------------------------------------------------------

def noise_net():
    with nengo.Network() as net:
        tn = TensorNode(lambda t: tf.random.get_global_generator().normal((2, 3)),
                        label="noise")
        p = nengo.Probe(tn)
    return net, p


def test_random_numbers_follow_the_simulator_seed():
    net, p = noise_net()
    runs = []
    for _ in range(2):
        with nengo_dl_nb.Simulator(net, seed=3, minibatch_size=2, progress_bar=False) as sim:
            sim.run_steps(5)
            runs.append(sim.data[p].copy())
            if len(runs) == 2:
                sim.reset(seed=4)
                sim.run_steps(5)
                other = sim.data[p].copy()
                sim.reset(seed=3)
                sim.run_steps(3)
                sim.run_steps(2)  # a run in two parts draws the same numbers
                again = sim.data[p].copy()
                sim.reset()
                sim.step()
                single = sim.data[p].copy()
    np.testing.assert_array_equal(runs[0], runs[1])  # same seed, two simulators
    assert np.std(runs[0]) > 0.5 and not np.allclose(runs[0][:, 0], runs[0][:, 1])
    assert not np.allclose(other, runs[0])  # reset(seed=other) changes them
    np.testing.assert_array_equal(again, runs[0])  # back to the first seed: the same again
    assert single.shape == (2, 1, 3) and np.all(np.isfinite(single))


def test_stateful_random_ops_warn_that_the_seed_cannot_reach_them():
    with nengo.Network() as net:
        nengo.Probe(TensorNode(lambda t: tf.random.uniform((1, 2)), label="stateful"))
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.warns(UserWarning, match="stateful.*get_global_generator"):
            sim.run_steps(2)


# -- tensor_layer --------------------------------------------------------------------------

def test_tensor_layer_distribution_transform_takes_size_in_from_shape_in():
    dist = nengo.dists.Uniform(-1, 1)
    with nengo.Network(seed=0) as net:
        inp = nengo.Node([1.0, 2.0, -1.0, 0.5])
        node, conn = tensor_layer(inp, lambda x: 2 * x, shape_in=(3, 2), transform=dist,
                                  return_conn=True)
        neurons, nconn = tensor_layer(inp, nengo.RectifiedLinear(), shape_in=(5,),
                                      transform=dist, return_conn=True,
                                      gain=nengo.dists.Choice([1]), bias=nengo.dists.Choice([0]))
        p, pn = nengo.Probe(node), nengo.Probe(neurons)
    assert node.size_in == 6 and conn.transform.shape == (6, 4)
    assert neurons.ensemble.n_neurons == 5 and nconn.transform.shape == (5, 4)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(1)
        x = np.array([1.0, 2.0, -1.0, 0.5])
        np.testing.assert_allclose(sim.data[p][-1], 2 * sim.data[conn].weights @ x, rtol=1e-5)
        np.testing.assert_allclose(sim.data[pn][-1],
                                   np.maximum(sim.data[nconn].weights @ x, 0), rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Specifying the gains:nengo.exceptions.NengoWarning")  # the layer_args case
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_tensor_layer_neurons_use_the_network_defaults():
    with nengo.Network(seed=0) as net:
        net.config[nengo.Ensemble].max_rates = nengo.dists.Choice([100])
        net.config[nengo.Ensemble].intercepts = nengo.dists.Choice([0])
        inp = nengo.Node([0.5, 1.0, -0.5])
        lif = tensor_layer(inp, nengo.LIF())
        fixed = tensor_layer(inp, nengo.LIF(), gain=nengo.dists.Choice([1]),
                             bias=nengo.dists.Choice([0]))  # layer_args win
    gain, bias = nengo.LIF().gain_bias(np.array([100.0]), np.array([0.0]))  # 2.033, 1
    assert np.isclose(gain[0], 2.033, atol=1e-3) and np.isclose(bias[0], 1)
    with nengo.Simulator(net, progress_bar=False) as ref:  # no TensorNode: nengo builds it
        pass
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        for s in (ref, sim):
            np.testing.assert_allclose(s.data[lif.ensemble].gain, np.full(3, gain[0]))
            np.testing.assert_allclose(s.data[lif.ensemble].bias, np.full(3, bias[0]))
            np.testing.assert_allclose(s.data[fixed.ensemble].gain, np.ones(3))
            np.testing.assert_allclose(s.data[fixed.ensemble].bias, np.zeros(3))


# -- training TensorNode weights -------------------------------------------------------------

@pytest.mark.parametrize("how", ["configure_settings", "network"])
def test_tensor_node_weights_train_whatever_the_trainable_settings(how):
    with nengo.Network(seed=0) as net:
        if how == "configure_settings":
            nengo_dl_nb.configure_settings(trainable=False)
        else:
            nengo_dl_nb.configure_settings(trainable=None)
        with nengo.Network() as sub:
            inp = nengo.Node(np.zeros(3))
            ens = nengo.Ensemble(5, 1)
            conn = nengo.Connection(inp, ens, transform=[[0.5, -0.5, 0.25]])
            dense = tensor_layer(inp, tf.keras.layers.Dense, units=2)
            p = nengo.Probe(dense)
        nengo.Probe(ens)
    if how == "network":
        net.config[sub].trainable = False
    rng = np.random.RandomState(1)
    x = rng.randn(16, 1, 3)
    y = x @ np.array([[1.0, 0.0], [0.0, -1.0], [0.5, 0.5]])
    with nengo_dl_nb.Simulator(net, minibatch_size=8, progress_bar=False) as sim:
        kernel = sim.runner.function_vars[0]
        before_kernel, before = kernel.numpy().copy(), sim.loss({inp: x, p: y})
        encoders, weights = sim.data[ens].encoders.copy(), sim.data[conn].weights.copy()
        sim.train({inp: x, p: y}, tf.keras.optimizers.Adam(0.05), n_epochs=20,
                  progress_bar=False)
        assert sim.loss({inp: x, p: y}) < 0.5 * before
        assert not np.allclose(kernel.numpy(), before_kernel)
        # the ensemble and the connection keep their (configured untrainable) parameters,
        # read back in float32 once training has run
        np.testing.assert_allclose(sim.data[ens].encoders, encoders, rtol=1e-6)
        np.testing.assert_allclose(sim.data[conn].weights, weights, rtol=1e-6)
