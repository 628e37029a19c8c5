"""Keras-style methods on Simulator (nbs/20_keras.ipynb): compile, fit, evaluate, predict.

The truths: the reference API (`train`, `loss`, `run_batch`) on the same data, values computed
by hand from outputs, and Keras' own callbacks doing what they do with a Keras model."""
import glob
import os

import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import ValidationError

import nengo_dl_nb


def make_net(n_inputs=1, seed=0):
    "Input(s) -> 12 rectified-linear neurons -> a 3-d output Node, probed."
    with nengo.Network(seed=seed) as net:
        nodes = [nengo.Node(np.zeros(2), label=f"in{i}") for i in range(n_inputs)]
        hidden = nengo.Ensemble(12, 1, neuron_type=nengo.RectifiedLinear(),
                                gain=nengo.dists.Choice([1]), bias=nengo.dists.Choice([0.2]))
        for node in nodes:
            nengo.Connection(node, hidden.neurons, transform=nengo_dl_nb.dists.Glorot(),
                             synapse=None)
        out = nengo.Node(size_in=3, label="out")
        nengo.Connection(hidden.neurons, out, transform=nengo_dl_nb.dists.Glorot(),
                         synapse=None)
        probe = nengo.Probe(out, label="out")
    return net, nodes, probe


def data(n=8, steps=1, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, steps, 2)
    y = np.tanh(x @ rng.randn(2, 3))
    return x, y


def mse(outputs, targets):
    return tf.reduce_mean(tf.square(outputs - targets))


def mae(outputs, targets):
    return tf.reduce_mean(tf.abs(outputs - targets))


def params(sim):
    return nengo_dl_nb.keras.SimulatorModel(sim).get_weights()


def test_fit_matches_train():
    x, y = data(8, 2)
    net, (inp,), probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim_fit, \
            nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim_train:
        sim_fit.compile(tf.keras.optimizers.SGD(0.1), loss="mse")
        history = sim_fit.fit(x, y, epochs=3, shuffle=False)
        losses = sim_train.train({inp: x, probe: y}, tf.keras.optimizers.SGD(0.1), n_epochs=3,
                                 objective={probe: mse},
                                 shuffle=False)["loss"]
        assert np.allclose(history.history["loss"], losses, rtol=1e-5)
        for a, b in zip(params(sim_fit), params(sim_train)):
            assert np.allclose(a, b, rtol=1e-5, atol=1e-7)
        assert sim_fit.training_step == sim_train.training_step == 6


def test_evaluate_matches_loss_and_predict_matches_run_batch():
    x, y = data(8, 3)
    net, (inp,), probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile("sgd", loss={probe: "mae"})
        logs = sim.evaluate({"in0": x}, {"out": y})
        expected = sim.loss({inp: x, probe: y}, objective={probe: mae})
        assert np.isclose(logs["loss"], expected, rtol=1e-6)
        predicted = sim.predict(x)
        reference = sim.run_batch({inp: x}, {probe: None}, combine=np.concatenate)[probe]
        assert predicted[probe].shape == (8, 3, 3)
        assert np.allclose(predicted[probe], reference)
        assert sim.n_steps == 0  # the simulator itself did not advance


def test_ragged_batches_and_static_inputs():
    rng = np.random.RandomState(1)
    x = rng.rand(7, 2)  # 7 items, minibatch 4, the same value at every step
    y = rng.rand(7, 3)
    net, (inp,), probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        out = sim.predict(x, n_steps=2)[probe]
        assert out.shape == (7, 2, 3)
        for i in range(7):  # each item on its own (in a minibatch of copies)
            single = sim.predict_on_batch(np.repeat(x[i:i + 1], 4, axis=0), n_steps=2)[probe]
            assert np.allclose(out[i], single[0], atol=1e-6)
        sim.compile("sgd", loss="mse", metrics=["mae"])
        logs = sim.evaluate(x, y, n_steps=2)
        assert np.isclose(logs["loss"], np.mean((out - y[:, None]) ** 2), rtol=1e-5)
        assert np.isclose(logs["mae"], np.mean(np.abs(out - y[:, None])), rtol=1e-5)
        history = sim.fit(x, y, n_steps=2, epochs=1)
        assert len(history.history["loss"]) == 1


def test_training_metrics_and_validation():
    # with a zero learning rate, the training-mode metrics of an epoch are the evaluation's
    x, y = data(8, 1, seed=2)
    labels = np.argmax(y, axis=-1)[:, :, None]
    net, (inp,), probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile(tf.keras.optimizers.SGD(0.0),
                    loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
        history = sim.fit(x, labels, epochs=1, validation_data=(x, labels)).history
        out = sim.predict(x)[probe]
        accuracy = np.mean(np.argmax(out, axis=-1) == labels[..., 0])
        assert np.isclose(history["accuracy"][0], accuracy)
        assert np.isclose(history["val_accuracy"][0], accuracy)
        assert np.isclose(history["loss"][0], history["val_loss"][0], rtol=1e-5)
        logits = out[:, 0]
        ce = np.mean(np.log(np.exp(logits).sum(-1)) - logits[np.arange(8), labels[:, 0, 0]])
        assert np.isclose(history["val_loss"][0], ce, rtol=1e-5)


def test_several_probes_losses_weights_metrics():
    x, y = data(4, 1)
    net, (inp,), probe = make_net()
    with net:
        neurons_p = nengo.Probe(net.ensembles[0].neurons, label="rates")
    rates = np.ones((4, 1, 12))
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile("sgd", loss={"out": "mse", neurons_p: "mae"},
                    loss_weights={"out": 1.0, "rates": 0.5}, metrics={"out": ["mae"]})
        logs = sim.evaluate(x, {probe: y, "rates": rates})
        out = sim.predict(x)
        mse = np.mean((out[probe] - y) ** 2)
        mae_rates = np.mean(np.abs(out[neurons_p] - rates))
        assert np.isclose(logs["out_loss"], mse, rtol=1e-5)
        assert np.isclose(logs["rates_loss"], mae_rates, rtol=1e-5)
        assert np.isclose(logs["loss"], mse + 0.5 * mae_rates, rtol=1e-5)
        assert np.isclose(logs["out_mae"], np.mean(np.abs(out[probe] - y)), rtol=1e-5)
        history = sim.fit(x, {probe: y, neurons_p: rates}, epochs=2)
        assert sorted(history.history) == ["loss", "out_loss", "out_mae", "rates_loss"]


def test_callbacks(tmp_path):
    x, y = data(8, 1)
    net, _, probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile(tf.keras.optimizers.Adam(0.01), loss="mse")
        stop = tf.keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=1)
        board = tf.keras.callbacks.TensorBoard(log_dir=str(tmp_path / "logs"))
        path = str(tmp_path / "best.weights.h5")
        checkpoint = tf.keras.callbacks.ModelCheckpoint(path, monitor="loss",
                                                        save_weights_only=True)
        history = sim.fit(x, y, epochs=20, callbacks=[stop, board, checkpoint])
        assert len(history.history["loss"]) == 2 and stop.stopped_epoch == 1
        assert glob.glob(str(tmp_path / "logs" / "train" / "events.out.tfevents.*"))
        assert os.path.exists(path)
        trained = sim.predict(x)[probe]
        sim.soft_reset(include_trainable=True)
        assert not np.allclose(sim.predict(x)[probe], trained)
        nengo_dl_nb.keras.SimulatorModel(sim).load_weights(path)
        assert np.allclose(sim.predict(x)[probe], trained)


def test_early_stopping_restores_best_weights():
    x, y = data(8, 1)
    net, _, probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile(tf.keras.optimizers.SGD(0.05), loss="mse")
        first = None

        class Remember(tf.keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                nonlocal first
                if epoch == 0:
                    first = sim.predict(x)[probe]
        stop = tf.keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=2,
                                                restore_best_weights=True)
        sim.fit(x, y, epochs=5, callbacks=[Remember(), stop])
        assert stop.stopped_epoch == 2
        assert np.allclose(sim.predict(x)[probe], first)


def test_params_saved_and_loaded(tmp_path):
    x, y = data(8, 1)
    net, _, probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile(tf.keras.optimizers.Adam(0.05), loss="mse")
        sim.fit(x, y, epochs=3)
        trained = sim.predict(x)[probe]
        sim.save_params(str(tmp_path / "p"))
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        assert not np.allclose(sim.predict(x)[probe], trained)
        sim.load_params(str(tmp_path / "p"))
        assert np.allclose(sim.predict(x)[probe], trained)


def test_fit_lowers_the_loss_with_two_inputs():
    rng = np.random.RandomState(3)
    x = {"in0": rng.rand(16, 1, 2), "in1": rng.rand(16, 1, 2)}
    y = {"out": np.tanh(x["in0"] - x["in1"] @ [[0.5, 1], [1, 0]])[..., [0, 1, 0]]}
    net, _, probe = make_net(n_inputs=2)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile(tf.keras.optimizers.Adam(0.02), loss="mse")
        before = sim.evaluate(x, y)["loss"]
        sim.fit(x, y, epochs=30, progress_bar=False)
        assert sim.evaluate(x, y)["loss"] < 0.3 * before


def test_errors():
    x, y = data(8, 1)
    net, _, probe = make_net(n_inputs=2)
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="compile"):
            sim.fit({"in0": x, "in1": x}, y)
        sim.compile("sgd", loss="mse")
        with pytest.raises(ValidationError, match="2 input Nodes"):
            sim.predict(x)
        with pytest.raises(ValidationError, match="minibatch_size"):
            sim.fit({"in0": x, "in1": x}, y, batch_size=8)
        with pytest.raises(ValidationError, match="nope"):
            sim.evaluate({"in0": x, "in1": x}, {"nope": y})
        with pytest.raises(ValidationError, match="size_out"):
            sim.predict({"in0": x[..., :1], "in1": x})
        with pytest.raises(ValidationError, match="Unknown optimizer"):
            sim.compile("not-an-optimizer")


def test_progress_dashboard_in_text(capsys):
    x, y = data(8, 1)
    net, _, probe = make_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        sim.compile("sgd", loss="mse")
        sim.fit(x, y, epochs=2, progress_bar="text")
        sim.predict(x, progress_bar="text")
    err = capsys.readouterr()
    text = err.out + err.err
    assert "Epoch 2/2" in text and "Training summary" in text and "Predict" in text
