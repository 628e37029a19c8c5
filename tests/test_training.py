"""Deep learning: train, loss, run_batch, parameters in and out, gradients.

Truths used: nengo.Simulator outputs (rate networks, frozen parameters), numerical
gradients (check_gradients), hand-computed objective values, the untouched parameters.
"""
import numpy as np
import nengo
import pytest
import tensorflow as tf
from nengo.exceptions import SimulationError, ValidationError

import nengo_dl_nb
from nengo_dl_nb import objectives


def regression_net(neuron_type=None, seed=0, dtype=tf.float32, function=lambda x: 0,
                   **settings):
    "inp -> ens -> out (a Node), no synapses: one step maps x to a decoded f(x)."
    neuron_type = nengo.LIFRate() if neuron_type is None else neuron_type
    with nengo.Network(seed=seed) as net:
        nengo_dl_nb.configure_settings(dtype=dtype, **settings)
        inp = nengo.Node([0.0])
        ens = nengo.Ensemble(40, 1, neuron_type=neuron_type)
        out = nengo.Node(size_in=1)
        nengo.Connection(inp, ens, synapse=None)
        conn = nengo.Connection(ens, out, function=function, synapse=None)
        p = nengo.Probe(out)
    return net, inp, ens, conn, p


def square_data(n=64, steps=1, seed=0):
    x = np.random.RandomState(seed).uniform(-1, 1, (n, 1, 1))
    return np.tile(x, (1, steps, 1)), np.tile(x ** 2, (1, steps, 1))


def test_train_lowers_loss_and_sim_data_shows_trained_weights():
    net, inp, ens, conn, p = regression_net()
    x, y = square_data()
    with nengo_dl_nb.Simulator(net, minibatch_size=16, progress_bar=False) as sim:
        built = sim.data[conn].weights.copy()
        before = sim.loss({inp: x, p: y})
        # mse by hand: the decoders start at zero, so the output is 0
        assert np.isclose(before, np.mean(y ** 2), rtol=1e-5)
        history = sim.train({inp: x, p: y}, tf.keras.optimizers.Adam(1e-3), n_epochs=30,
                            progress_bar=False)
        after = sim.loss({inp: x, p: y})
        assert after < 0.1 * before
        assert sim.training_step == 30 * 4
        assert len(history["loss"]) == 30 and history["loss"][-1] < history["loss"][0]
        assert not np.allclose(sim.data[conn].weights, built)
        # the simulator's own state and time are untouched by training
        assert sim.n_steps == 0


def test_train_then_freeze_matches_nengo_simulator():
    net, inp, ens, conn, p = regression_net(dtype=tf.float64)
    x, y = square_data(32)
    with nengo_dl_nb.Simulator(net, minibatch_size=8, progress_bar=False) as sim:
        sim.train({inp: x, p: y}, tf.keras.optimizers.Adam(1e-3), n_epochs=5, progress_bar=False)
        trained = sim.run_batch({inp: x[:8]}, {p: None})[p][0]
        sim.freeze_params(net)
    outputs = []
    for xi in x[:8, 0, 0]:
        inp.output = [xi]
        with nengo.Simulator(net, progress_bar=False) as ref:
            ref.step()
        outputs.append(ref.data[p][0])
    np.testing.assert_allclose(trained[:, 0], np.array(outputs), rtol=1e-7, atol=1e-9)


def test_spiking_lif_trains_as_lifrate():
    "In training mode LIF is LIFRate: outputs equal a LIFRate copy of the network in nengo."
    net, inp, ens, conn, p = regression_net(nengo.LIF(), dtype=tf.float64)
    with net:
        pn = nengo.Probe(ens.neurons)
    x, _ = square_data(4, steps=3)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        rates = sim.run_batch({inp: x}, {pn: None}, training=True)[pn][0]
        spikes = sim.run_batch({inp: x}, {pn: None}, training=False)[pn][0]
    ens.neuron_type = nengo.LIFRate()
    ref = []
    for xi in x[:, 0, 0]:
        inp.output = [xi]
        with nengo.Simulator(net, progress_bar=False) as s:
            s.run_steps(3)
        ref.append(s.data[pn])
    np.testing.assert_allclose(rates, np.array(ref), rtol=1e-7, atol=1e-9)
    assert rates.max() > 0 and set(np.unique(spikes)) <= {0.0, 1000.0}  # spikes: 1/dt


def test_lif_smoothing_uses_softlif():
    net, inp, ens, conn, p = regression_net(nengo.LIF(), dtype=tf.float64, lif_smoothing=0.1)
    net2, inp2, *_, p2 = regression_net(nengo_dl_nb.SoftLIFRate(sigma=0.1), dtype=tf.float64)
    x, _ = square_data(4)
    with net:
        pn = nengo.Probe(ens.neurons)
    with net2:
        pn2 = nengo.Probe(net2.ensembles[0].neurons)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        smooth = sim.run_batch({inp: x}, {pn: None}, training=True)[pn][0]
    with nengo_dl_nb.Simulator(net2, minibatch_size=4, progress_bar=False) as sim:
        soft = sim.run_batch({inp2: x}, {pn2: None})[pn2][0]
    assert soft.max() > 0
    np.testing.assert_allclose(smooth, soft, rtol=1e-10)


def test_save_load_round_trip_and_failed_load_changes_nothing(tmp_path):
    net, inp, ens, conn, p = regression_net()
    x, y = square_data(16)
    with nengo_dl_nb.Simulator(net, minibatch_size=16, progress_bar=False) as sim:
        sim.train({inp: x, p: y}, tf.keras.optimizers.SGD(1e-4), n_epochs=2, progress_bar=False)
        sim.save_params(tmp_path / "params")
        trained = sim.run_batch({inp: x}, {p: None})[p]
    with nengo_dl_nb.Simulator(net, minibatch_size=16, progress_bar=False) as sim2:
        before = sim2.run_batch({inp: x}, {p: None})[p]
        with pytest.raises(SimulationError, match="does not exist"):
            sim2.load_params(tmp_path / "missing")
        np.testing.assert_array_equal(sim2.run_batch({inp: x}, {p: None})[p], before)
        sim2.load_params(tmp_path / "params")
        np.testing.assert_array_equal(sim2.run_batch({inp: x}, {p: None})[p], trained)

    other, inp3, *_ = regression_net()
    with other:
        nengo.Ensemble(7, 1)  # another model: more parameters
    with nengo_dl_nb.Simulator(other, progress_bar=False) as sim3:
        params = [v.numpy() for v in sim3.runner.param_vars.values()]
        with pytest.raises(SimulationError, match="not saved from this model"):
            sim3.load_params(tmp_path / "params")
        for v, old in zip(sim3.runner.param_vars.values(), params):
            np.testing.assert_array_equal(v.numpy(), old)


def test_include_local_saves_state(tmp_path):
    net, inp, ens, conn, p = regression_net(nengo.LIF())
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(7)
        sim.save_params(tmp_path / "p.npz", include_local=True)
        state = {k: v.numpy() for k, v in sim.runner.state_vars.items()}
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim2:
        sim2.load_params(tmp_path / "p.npz", include_local=True)
        for k, v in sim2.runner.state_vars.items():
            np.testing.assert_array_equal(v.numpy(), state[k])


def test_trainable_config():
    with nengo.Network(seed=1) as net:
        nengo_dl_nb.configure_settings(trainable=None)
        inp = nengo.Node([0.5])
        a = nengo.Ensemble(20, 1)
        b = nengo.Ensemble(20, 1)
        c1 = nengo.Connection(inp, a, synapse=None)
        c2 = nengo.Connection(a, b, synapse=None)
        p = nengo.Probe(b, synapse=None)
    net.config[a].trainable = False
    net.config[c2].trainable = False
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        before = {o: sim._live_params(o) for o in (a, b, c1, c2)}
        sim.train({inp: np.full((1, 3, 1), 0.5), p: np.zeros((1, 3, 1))},
                  tf.keras.optimizers.SGD(1e-3), n_epochs=3, progress_bar=False)
        after = {o: sim._live_params(o) for o in (a, b, c1, c2)}
    for obj in (a, c2):  # configured not trainable
        for name in before[obj]:
            np.testing.assert_array_equal(after[obj][name], before[obj][name])
    # trainable ones change (the probe's own readout does not train, so the change reaching
    # b through it is small at this learning rate: compared exactly)
    assert np.any(after[b]["bias"] != before[b]["bias"])
    assert np.any(after[b]["encoders"] != before[b]["encoders"])


def test_learning_rule_weights_are_not_trainable():
    with nengo.Network(seed=2) as net:
        inp = nengo.Node([0.3])
        a = nengo.Ensemble(20, 1, neuron_type=nengo.LIFRate())
        b = nengo.Node(size_in=1)
        nengo.Connection(inp, a)
        conn = nengo.Connection(a, b, learning_rule_type=nengo.PES())
        nengo.Connection(b, conn.learning_rule)
        nengo.Probe(b)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        keys = sim.layout.keys
        weights, encoders = sim.model.sig[conn]["weights"].base, sim.model.sig[a]["encoders"].base
        assert keys[weights].minibatched and not keys[weights].trainable  # state, per item
        assert keys[encoders].trainable and encoders not in sim.layout.frozen


def test_objective_none_means_output_gradient():
    "With objective None the data is dloss/doutput: one SGD step moves weights by -lr * grad."
    net, inp, ens, conn, p = regression_net(dtype=tf.float64)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        w0 = sim.data[conn].weights.copy()
        out = sim.run_batch({inp: np.full((1, 1, 1), 0.2)}, {p: None})[p]
        sim.train({inp: np.full((1, 1, 1), 0.2), p: np.full((1, 1, 1), 2.0)},
                  tf.keras.optimizers.SGD(0.5), objective={p: None}, progress_bar=False)
        w1 = sim.data[conn].weights
    # d(output)/d(weights) = the ensemble's activities at x=0.2
    acts = nengo.builder.ensemble.get_activities(sim.data[ens], ens, np.array([[0.2]]))
    np.testing.assert_allclose(w1 - w0, -0.5 * 2.0 * acts, rtol=1e-6)
    assert out.shape == (1, 1, 1, 1) and np.all(out == 0)  # decoders start at zero


def test_mse_nan_targets_are_ignored_in_training():
    net, inp, ens, conn, p = regression_net()
    x, y = square_data(8)
    y_nan = y.copy()
    y_nan[::2] = np.nan
    with nengo_dl_nb.Simulator(net, minibatch_size=8, progress_bar=False) as sim:
        loss = sim.loss({inp: x, p: y_nan})
        assert np.isclose(loss, np.sum(y[1::2] ** 2) / y.size, rtol=1e-5)
        sim.train({inp: x, p: y_nan}, tf.keras.optimizers.Adam(1e-3), n_epochs=2,
                  progress_bar=False)
        assert np.all(np.isfinite(sim.data[conn].weights))


def test_truncation_and_run_batch_match_a_plain_run():
    with nengo.Network(seed=3) as net:
        inp = nengo.Node([0.0])
        a = nengo.Ensemble(30, 1, neuron_type=nengo.LIFRate())
        nengo.Connection(inp, a)
        p = nengo.Probe(a, synapse=0.01)
    x = np.random.RandomState(1).uniform(-1, 1, (4, 10, 1))
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        whole = sim.run_batch({inp: x}, {p: None})[p]  # (2 minibatches, 2, 10, 1)
        blocks = sim.run_batch({inp: x}, {p: None}, truncation=4,
                               combine=list)[p]  # 2 minibatches x 3 blocks (4, 4, 2 steps)
        assert whole.shape == (2, 2, 10, 1)
        joined = np.concatenate([np.concatenate(list(blocks[i * 3:(i + 1) * 3]), axis=1)
                                 for i in range(2)])
        np.testing.assert_allclose(joined, whole.reshape(4, 10, 1), rtol=1e-6)
        sim.run_steps(10, data={inp: x[:2]})
        np.testing.assert_allclose(sim.data[p], whole[0], rtol=1e-6)
        # truncated training runs
        sim.train({inp: x, p: np.zeros((4, 10, 1))}, tf.keras.optimizers.SGD(1e-5),
                  truncation=3, progress_bar=False)
        assert sim.training_step == 2 * 4


def test_run_batch_isolate_state_false_continues():
    net, inp, ens, conn, p = regression_net(nengo.LIF())
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_batch(5, {p: None}, isolate_state=False)
        assert sim.n_steps == 5


@pytest.mark.parametrize("dtype, settings, tolerances", [
    (tf.float64, {}, {}),  # check_gradients' defaults: atol 1e-5, rtol 1e-3
    # float32 numerical derivatives are good to about 1e-3 (rounding over a step of 5e-4);
    # SoftLIF smoothing keeps LIF's threshold from putting a kink inside the step
    (tf.float32, {"lif_smoothing": 0.2}, {"atol": 3e-3, "rtol": 1e-2}),
])
def test_check_gradients_every_differentiable_builder(dtype, settings, tolerances):
    with nengo.Network(seed=4) as net:
        nengo_dl_nb.configure_settings(dtype=dtype, **settings)
        inp = nengo.Node(lambda t: np.sin(10 * t) * np.ones(2))
        types = [nengo.LIF(), nengo.LIFRate(), nengo.RectifiedLinear(), nengo.Sigmoid(),
                 nengo.Tanh(), nengo.SpikingRectifiedLinear(), nengo.AdaptiveLIF(),
                 nengo.RegularSpiking(nengo.LIFRate()), nengo_dl_nb.SoftLIFRate(0.5)]
        ens = [nengo.Ensemble(6, 2, neuron_type=t) for t in types]
        out = nengo.Node(size_in=2)
        for e, syn in zip(ens, [None, 0.005, nengo.Alpha(0.003), nengo.LinearFilter([1], [0.01, 1]),
                                None, 0.005, None, 0.005, None]):
            nengo.Connection(inp, e, synapse=None)
            nengo.Connection(e, out, synapse=syn)
        nengo.Connection(ens[0].neurons, ens[1].neurons,
                         transform=nengo.Sparse((6, 6), indices=[[0, 1], [2, 3], [5, 5]]))
        nengo.Connection(ens[1].neurons, ens[2].neurons, transform=np.arange(6) / 10)
        conv = nengo.Convolution(2, (3, 2), kernel_size=(2,), strides=(1,))
        post = nengo.Ensemble(conv.output_shape.size, 1, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(ens[2].neurons, post.neurons, transform=conv)
        nengo.Probe(out, synapse=0.01)
        nengo.Probe(post.neurons)
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        sim.check_gradients(n_steps=4, max_elements=40, **tolerances)


def test_check_gradients_float32_smooth_network():
    with nengo.Network(seed=5) as net:
        nengo_dl_nb.configure_settings(lif_smoothing=0.5)
        inp = nengo.Node(np.sin)
        a = nengo.Ensemble(10, 1, neuron_type=nengo.LIF())
        b = nengo.Ensemble(10, 1, neuron_type=nengo.Sigmoid())
        nengo.Connection(inp, a)
        nengo.Connection(a, b, synapse=0.005)
        nengo.Probe(b, synapse=0.01)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.check_gradients(atol=1e-3, rtol=1e-2)


def test_check_gradients_detects_a_wrong_gradient(monkeypatch):
    from nengo_dl_nb.neuron_builders import LIFRateBuilder
    net, inp, ens, conn, p = regression_net(dtype=tf.float64, function=lambda x: x)

    true_rates = LIFRateBuilder.rates

    def rates_with_wrong_gradient(self, J):  # same values, half the gradient
        good = true_rates(self, J)
        return tf.stop_gradient(good) + 0.5 * (good - tf.stop_gradient(good))
    monkeypatch.setattr(LIFRateBuilder, "rates", rates_with_wrong_gradient)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(SimulationError, match="Gradient check failed"):
            sim.check_gradients()


def test_non_differentiable_elements_are_named():
    with nengo.Network(seed=6) as net:
        inp = nengo.Node([0.5])
        a = nengo.Ensemble(10, 1)
        f = nengo.Node(lambda t, x: x ** 2, size_in=1, label="squarer")
        nengo.Connection(inp, a)
        nengo.Connection(a, f)
        p = nengo.Probe(f)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(SimulationError, match="lambda.*TensorFlow cannot differentiate"):
            sim.train({inp: np.zeros((1, 2, 1)), p: np.zeros((1, 2, 1))},
                      tf.keras.optimizers.SGD(0.1), progress_bar=False)

    with nengo.Network(seed=7) as net:
        inp = nengo.Node([0.5])
        a = nengo.Ensemble(10, 1, neuron_type=nengo.Izhikevich())
        nengo.Connection(inp, a)
        p = nengo.Probe(a)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(SimulationError, match="Izhikevich neurons have no differentiable"):
            sim.train({inp: np.zeros((1, 2, 1)), p: np.zeros((1, 2, 1))},
                      tf.keras.optimizers.SGD(0.1), progress_bar=False)


def test_python_node_off_the_path_does_not_block_training():
    net, inp, ens, conn, p = regression_net()
    with net:
        monitor = nengo.Node(lambda t, x: None, size_in=1)
        nengo.Connection(ens, monitor)
    x, y = square_data(4)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.train({inp: x, p: y}, tf.keras.optimizers.SGD(1e-5), progress_bar=False)


def test_bad_input_errors():
    net, inp, ens, conn, p = regression_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        opt = tf.keras.optimizers.SGD(0.1)
        with pytest.raises(ValidationError, match="multiple of minibatch_size"):
            sim.train({inp: np.zeros((6, 1, 1)), p: np.zeros((6, 1, 1))}, opt)
        with pytest.raises(ValidationError, match="same batch size"):
            sim.train({inp: np.zeros((4, 1, 1)), p: np.zeros((4, 2, 1))}, opt)
        with pytest.raises(ValidationError, match="expected"):
            sim.train({inp: np.zeros((4, 1, 2)), p: np.zeros((4, 1, 1))}, opt)
        with pytest.raises(ValidationError, match="Keras optimizer"):
            sim.train({inp: np.zeros((4, 1, 1)), p: np.zeros((4, 1, 1))}, "adam")
        with pytest.raises(ValidationError, match="needs targets"):
            sim.train({inp: np.zeros((4, 1, 1))}, opt, objective={p: objectives.mse})
        with pytest.raises(ValidationError, match="no meaning"):
            sim.run_batch(1, {p: None}, extra_fetches=[tf.constant(1)])
    with net:
        nengo_dl_nb.configure_settings(inference_only=True)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="inference_only"):
            sim.train({inp: np.zeros((1, 1, 1)), p: np.zeros((1, 1, 1))},
                      tf.keras.optimizers.SGD(0.1))


def test_regularize_objective_trains_weights_down():
    net, inp, ens, conn, p = regression_net()
    with net:
        pn = nengo.Probe(ens.neurons)
    x, y = square_data(4)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        reg = objectives.Regularize(order=2, weight=1.0)
        before = sim.loss({inp: x}, objective={pn: reg})
        # by hand: the mean over batch and time of the 2-norm of each step's activities
        acts = sim.run_batch({inp: x}, {pn: None})[pn][0]
        assert np.isclose(before, np.mean(np.linalg.norm(acts, axis=-1)), rtol=1e-5)
        sim.train({inp: x}, tf.keras.optimizers.Adam(0.01), objective={pn: reg}, n_epochs=5,
                  progress_bar=False)
        assert sim.loss({inp: x}, objective={pn: reg}) < before


def test_get_nengo_params_rebuilds_the_same_ensemble():
    net, inp, ens, conn, p = regression_net(dtype=tf.float64)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        params = sim.get_nengo_params([ens, conn])
        with pytest.raises(ValidationError, match="unique label"):
            sim.get_nengo_params([ens, conn], as_dict=True)
    with nengo.Network(seed=9) as net2:
        e2 = nengo.Ensemble(40, 1, **params[0])
    with nengo.Simulator(net2, progress_bar=False) as ref:
        np.testing.assert_allclose(ref.data[e2].scaled_encoders, sim.data[ens].scaled_encoders)
        np.testing.assert_allclose(ref.data[e2].bias, sim.data[ens].bias)


def test_summaries_write_tensorboard_events(tmp_path):
    net, inp, ens, conn, p = regression_net()
    x, y = square_data(4)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, tensorboard=str(tmp_path),
                               progress_bar=False) as sim:
        sim.train({inp: x, p: y}, tf.keras.optimizers.SGD(1e-5), n_epochs=2,
                  summaries=["loss", conn, ens], progress_bar=False)
    tags = {}
    for f in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(value.metadata.plugin_data.plugin_name)
    assert tags["loss"][0] == "scalars" and len(tags["loss"]) == 2  # one per training step
    assert any("weights" in t and kinds[0] == "histograms" for t, kinds in tags.items())
    assert any("encoders" in t for t in tags) and any("bias" in t for t in tags)


def test_tuple_objectives_and_callback():
    "A tuple key passes lists of outputs and targets; run_batch calls back per minibatch."
    net, inp, ens, conn, p = regression_net(function=lambda x: x)
    with net:
        p2 = nengo.Probe(ens, synapse=None)
    x, y = square_data(8)
    seen = []

    def both(outputs, targets):
        assert isinstance(outputs, list) and len(outputs) == 2 and len(targets) == 2
        return tf.reduce_mean((outputs[0] - targets[0]) ** 2) + tf.reduce_mean(
            (outputs[1] - targets[1]) ** 2)

    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        data = {inp: x, p: y, p2: x}
        total = sim.loss(data, objective={(p, p2): both})
        separate = sim.loss(data)  # default: mse on each probe with targets, summed
        assert np.isclose(total, separate, rtol=1e-5)
        # rates of ~200 Hz over 40 neurons make the output very sensitive to the weights
        sim.train(data, tf.keras.optimizers.SGD(2e-8), objective={(p, p2): both},
                  n_epochs=3, progress_bar=False)
        assert sim.loss(data, objective={(p, p2): both}) < total
        out = sim.run_batch({inp: x}, {(p, p2): None, p: lambda o: tf.reduce_max(o)},
                            callback=lambda values, feeds: seen.append(sorted(map(str, values))))
    assert len(seen) == 2  # two minibatches
    assert isinstance(out[(p, p2)], tuple) and out[(p, p2)][0].shape == (2, 4, 1, 1)
    assert out[p].shape == (2,)
