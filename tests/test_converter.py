"""Keras -> Nengo conversion (nbs/21_converter.ipynb).

The truths: the Keras model's own outputs on random inputs (through `verify()` and directly),
and nengo.Simulator running the converted network."""
import keras
import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import ValidationError

import nengo_dl_nb
from nengo_dl_nb import Converter
from nengo_dl_nb.converter import keras_outputs

L = tf.keras.layers


def sequential(input_shape, *layers, seed=0):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential([tf.keras.Input(input_shape)] + list(layers))


def normal_bias():
    return tf.keras.initializers.RandomNormal(seed=1)


# (id, input shape, layer factory): one random small model per native layer type
NATIVE = [
    ("dense-relu", (4,), lambda: L.Dense(5, activation="relu", bias_initializer=normal_bias())),
    ("dense-linear", (4,), lambda: L.Dense(3, bias_initializer=normal_bias())),
    ("dense-sequence", (3, 4), lambda: L.Dense(2, activation="relu",
                                                bias_initializer=normal_bias())),
    ("dense-sigmoid", (4,), lambda: L.Dense(3, activation=tf.nn.sigmoid)),
    ("dense-tanh", (4,), lambda: L.Dense(3, activation="tanh")),
    ("conv2d-last", (6, 5, 3), lambda: L.Conv2D(4, 3, activation="relu",
                                                 bias_initializer=normal_bias())),
    ("conv2d-first", (3, 6, 5), lambda: L.Conv2D(4, 3, data_format="channels_first",
                                                  activation="relu",
                                                  bias_initializer=normal_bias())),
    ("conv2d-last-same-strided", (7, 6, 2), lambda: L.Conv2D(
        3, (3, 2), strides=(2, 1), padding="same", bias_initializer=normal_bias())),
    ("conv2d-first-same-strided", (2, 7, 6), lambda: L.Conv2D(
        3, (3, 2), strides=(2, 1), padding="same", data_format="channels_first",
        bias_initializer=normal_bias())),
    ("conv2d-groups", (5, 5, 4), lambda: L.Conv2D(6, 3, groups=2, activation="relu")),
    ("conv1d-last", (7, 3), lambda: L.Conv1D(4, 3, strides=2, padding="same",
                                              activation="relu", bias_initializer=normal_bias())),
    ("conv1d-first", (3, 7), lambda: L.Conv1D(4, 2, data_format="channels_first",
                                               bias_initializer=normal_bias())),
    ("activation-relu", (6,), lambda: L.Activation("relu")),
    ("activation-sigmoid", (6,), lambda: L.Activation("sigmoid")),
    ("activation-tanh", (6,), lambda: L.Activation(tf.nn.tanh)),
    ("activation-linear", (6,), lambda: L.Activation("linear")),
    ("relu-layer", (2, 3), lambda: L.ReLU()),
    ("relu-layer-leaky", (2, 3), lambda: L.ReLU(negative_slope=0.3)),
    ("leaky-relu", (2, 3), lambda: L.LeakyReLU(0.1)),
    ("avgpool2d-last", (6, 5, 2), lambda: L.AveragePooling2D(2)),
    ("avgpool2d-first", (2, 6, 5), lambda: L.AveragePooling2D(2, data_format="channels_first")),
    ("avgpool2d-last-same", (5, 7, 2), lambda: L.AveragePooling2D((2, 3), strides=(2, 2),
                                                                   padding="same")),
    ("avgpool2d-first-same", (2, 5, 7), lambda: L.AveragePooling2D(
        3, strides=2, padding="same", data_format="channels_first")),
    ("avgpool1d", (7, 2), lambda: L.AveragePooling1D(3, strides=2, padding="same")),
    ("avgpool1d-first", (2, 7), lambda: L.AveragePooling1D(2, data_format="channels_first")),
    ("globalavg2d-last", (4, 3, 2), lambda: L.GlobalAveragePooling2D()),
    ("globalavg2d-first", (2, 4, 3), lambda: L.GlobalAveragePooling2D(
        data_format="channels_first", keepdims=True)),
    ("globalavg1d", (5, 3), lambda: L.GlobalAveragePooling1D()),
    ("flatten-last", (2, 3, 2), lambda: L.Flatten()),
    ("flatten-first", (2, 3, 2), lambda: L.Flatten(data_format="channels_first")),
    ("reshape", (2, 6), lambda: L.Reshape((4, 3))),
    ("permute", (2, 3, 4), lambda: L.Permute((3, 1, 2))),
    ("zeropad2d-last", (3, 4, 2), lambda: L.ZeroPadding2D(((2, 1), (0, 3)))),
    ("zeropad2d-first", (2, 3, 4), lambda: L.ZeroPadding2D(1, data_format="channels_first")),
    ("zeropad1d", (3, 2), lambda: L.ZeroPadding1D((1, 2))),
    ("dropout", (5,), lambda: L.Dropout(0.5)),
    ("spatial-dropout", (3, 3, 2), lambda: L.SpatialDropout2D(0.5)),
    ("gaussian-noise", (5,), lambda: L.GaussianNoise(1.0)),
]


@pytest.mark.parametrize("shape, make", [n[1:] for n in NATIVE], ids=[n[0] for n in NATIVE])
def test_native_layer_verifies(shape, make):
    model = sequential(shape, make())
    converter = Converter(model, allow_fallback=False)
    assert not any(isinstance(n, nengo_dl_nb.TensorNode) for n in converter.net.all_nodes)
    assert converter.verify()
    # inputs of both signs and larger than 1 as well
    x = np.random.RandomState(5).uniform(-2, 2, size=(3,) + shape).astype(np.float32)
    assert converter.verify(inputs=[x])


@pytest.mark.parametrize("axis, shape", [(-1, (3, 4, 2)), (1, (2, 3, 4)), (2, (3, 4, 2))])
def test_batch_normalization_folds(axis, shape):
    bn = L.BatchNormalization(axis=axis)
    model = sequential(shape, bn)
    rng = np.random.RandomState(2)
    for var in (bn.gamma, bn.beta, bn.moving_mean):
        var.assign(rng.randn(*var.shape))
    bn.moving_variance.assign(rng.rand(*bn.moving_variance.shape) + 0.5)
    assert Converter(model, allow_fallback=False).verify()


@pytest.mark.parametrize("merge, shapes", [
    (L.Add, [(2, 3), (2, 3), (2, 3)]), (L.Subtract, [(4,), (4,)]), (L.Average, [(4,), (4,)]),
    (lambda: L.Concatenate(), [(2, 3), (2, 1)]),
    (lambda: L.Concatenate(axis=1), [(2, 3), (1, 3)]),
    (lambda: L.Concatenate(axis=-2), [(2, 2, 3), (2, 1, 3)])])
def test_merge_layers(merge, shapes):
    tf.keras.utils.set_random_seed(0)
    inputs = [tf.keras.Input(s) for s in shapes]
    hidden = [L.Dense(s[-1], activation="relu")(i) for s, i in zip(shapes, inputs)]
    model = tf.keras.Model(inputs, merge()(hidden))
    converter = Converter(model, allow_fallback=False)
    assert len(converter.inputs) == len(shapes)
    assert converter.verify()


def cnn(data_format="channels_last", shape=(8, 8, 1)):
    return sequential(
        shape,
        L.Conv2D(4, 3, activation="relu", data_format=data_format,
                 bias_initializer=normal_bias()),
        L.AveragePooling2D(2, data_format=data_format),
        L.Conv2D(6, 2, padding="same", data_format=data_format, bias_initializer=normal_bias()),
        L.BatchNormalization(axis=-1 if data_format == "channels_last" else 1),
        L.Activation("relu"),
        L.Flatten(data_format=data_format),
        L.Dropout(0.2),
        L.Dense(5, bias_initializer=normal_bias()))


@pytest.mark.parametrize("data_format, shape", [("channels_last", (8, 8, 1)),
                                                ("channels_first", (1, 8, 8))])
def test_cnn_in_nengo_core(data_format, shape):
    "nengo.Simulator, knowing nothing of Keras or of us, reproduces Keras on the converted net."
    model = cnn(data_format, shape)
    converter = Converter(model, allow_fallback=False)
    x = np.random.RandomState(0).rand(*shape).astype(np.float32)
    inp, probe = converter.inputs[model.inputs[0]], converter.outputs[model.outputs[0]]
    inp.output = x.ravel()
    with nengo.Simulator(converter.net, progress_bar=False) as sim:
        sim.step()
    assert np.allclose(sim.data[probe][0], np.asarray(keras_outputs(model, x[None]))[0],
                       atol=1e-5, rtol=1e-4)
    assert converter.verify()


def test_maps_by_tensor_layer_and_name():
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((3,), name="pixels")
    hidden = L.Dense(4, activation="relu", name="hidden")(inp)
    out = L.Dense(2, name="logits")(hidden)
    model = tf.keras.Model(inp, out)
    converter = Converter(model)
    node = converter.inputs[inp]
    assert node is converter.inputs["pixels"] and node.size_out == 3
    assert converter.layers[hidden] is converter.layers["hidden"]
    assert converter.layers[model.get_layer("hidden")] is converter.layers[hidden]
    assert isinstance(converter.layers[hidden], nengo.ensemble.Neurons)
    probe = converter.outputs[out]
    assert probe is converter.outputs["logits"] and probe.label == "logits"
    assert list(converter.outputs) == [out]
    with pytest.raises(KeyError):
        converter.layers["nothing"]


def test_fallbacks_run_keras_layers():
    tf.keras.utils.set_random_seed(0)
    a, b = tf.keras.Input((4,)), tf.keras.Input((4,))
    x = L.Multiply()([a, b])                       # no native form
    x = L.Dense(6, activation="elu")(x)            # no neuron type for elu
    x = L.Reshape((3, 2))(x)
    x = L.MaxPooling1D(2, padding="same")(x)       # max pooling, not converted to average
    x = L.Flatten()(x)
    x = L.ReLU(max_value=0.5)(x)                   # a capped ReLU
    out = L.Dense(3, activation="softmax")(x)
    model = tf.keras.Model([a, b], out)
    converter = Converter(model)
    labels = sorted(n.label for n in converter.net.all_nodes
                    if isinstance(n, nengo_dl_nb.TensorNode))
    assert len(labels) == 5 and labels[0].startswith("dense")
    assert converter.verify()
    with pytest.raises(ValidationError, match="multiply"):
        Converter(model, allow_fallback=False)


@pytest.mark.parametrize("layer, message", [
    (lambda: L.MaxPooling2D(2), "max_pooling2d.*max_to_avg_pool"),
    (lambda: L.Conv2D(2, 2, dilation_rate=2), "conv2d.*dilation"),
    (lambda: L.Activation("softmax"), "activation"),
    (lambda: L.ReLU(max_value=6.0), "re_lu.*max_value"),
])
def test_unsupported_layers_are_errors_naming_them(layer, message):
    with pytest.raises(ValidationError, match=message):
        Converter(sequential((4, 4, 2), layer()), allow_fallback=False)


def test_channels_first_fallback_layer_verifies():
    """A layer run as a TensorNode (Keras code) whose eager CPU kernel exists only with
    oneDNN (a channels-first Conv2DTranspose): it builds, and verify matches Keras, on any
    processor (where oneDNN is off, both go through XLA)."""
    model = sequential((2, 6, 5), L.Conv2DTranspose(3, 3, data_format="channels_first",
                                                    bias_initializer=normal_bias()))
    converter = Converter(model)
    assert any(isinstance(n, nengo_dl_nb.TensorNode) for n in converter.net.all_nodes)
    assert converter.verify()
    x = np.random.RandomState(3).uniform(-1, 1, size=(2, 2, 6, 5)).astype(np.float32)
    assert converter.verify(inputs=[x])


def test_max_to_avg_pool():
    model = sequential((6, 6, 2), L.Conv2D(3, 2, activation="relu"), L.MaxPooling2D(2))
    averaged = tf.keras.Sequential([tf.keras.Input((6, 6, 2)), model.layers[0],
                                    L.AveragePooling2D(2)])
    converter = Converter(model, allow_fallback=False, max_to_avg_pool=True)
    x = np.random.RandomState(0).rand(2, 6, 6, 2).astype(np.float32)
    assert converter.verify  # converted, natively
    with nengo_dl_nb.Simulator(converter.net, minibatch_size=2, progress_bar=False) as sim:
        out = sim.predict(x.reshape(2, -1))[converter.outputs[model.outputs[0]]][:, 0]
    assert np.allclose(out, averaged(x).numpy().reshape(2, -1), atol=1e-5)
    assert not np.allclose(out, model(x).numpy().reshape(2, -1), atol=1e-3)


def test_swap_activations_and_scale_firing_rates():
    model = sequential((5,), L.Dense(16, activation="relu", bias_initializer=normal_bias()),
                       L.Dense(8, activation="relu"), L.Dense(2))
    converter = Converter(model, swap_activations={"relu": nengo.SpikingRectifiedLinear()},
                          scale_firing_rates={model.layers[0]: 50, model.layers[1].name: 200})
    first = converter.layers[model.layers[0]].ensemble
    second = converter.layers[model.layers[1]].ensemble
    assert isinstance(first.neuron_type, nengo.SpikingRectifiedLinear)
    assert np.isclose(first.neuron_type.amplitude, 1 / 50)
    assert np.isclose(second.neuron_type.amplitude, 1 / 200)
    assert converter.verify(training=True)  # the rate approximation is exact for rectifiers
    with pytest.raises(ValidationError, match="spikes"):
        converter.verify()
    # a neuron type as the key, and an unscaled rate conversion, verified without training
    rate = Converter(model, swap_activations={nengo.RectifiedLinear(): nengo.RectifiedLinear(
        amplitude=2)})
    assert rate.layers[model.layers[0]].ensemble.neuron_type.amplitude == 2
    with pytest.raises(ValidationError, match="swap_activations"):
        Converter(model, swap_activations={"softmax": nengo.LIF()})


def test_spiking_network_approaches_keras():
    model = sequential((5,), L.Dense(8, activation="relu"), L.Dense(2))
    converter = Converter(model, swap_activations={tf.nn.relu: nengo.SpikingRectifiedLinear()},
                          scale_firing_rates=1000, synapse=0.01)
    conns = [c for c in converter.net.all_connections
             if isinstance(c.pre_obj, nengo.ensemble.Neurons)]
    assert conns and all(c.synapse == nengo.Lowpass(0.01) for c in conns)
    with pytest.raises(ValidationError, match="synapse"):
        converter.verify(training=True)
    x = np.random.RandomState(0).rand(4, 5).astype(np.float32)
    with nengo_dl_nb.Simulator(converter.net, minibatch_size=4, progress_bar=False) as sim:
        out = sim.predict(x, n_steps=200)[converter.outputs[model.outputs[0]]]
    keras_out = model(x).numpy()
    assert np.abs(out[:, -50:].mean(axis=1) - keras_out).max() < 0.03 * np.ptp(keras_out)


def test_shared_weights():
    tf.keras.utils.set_random_seed(0)
    a, b = tf.keras.Input((3,)), tf.keras.Input((3,))
    shared = L.Dense(4, activation="relu")
    model = tf.keras.Model([a, b], L.Add()([shared(a), shared(b)]))
    # default: TensorNodes sharing the Keras layer's variables
    fallback = Converter(model)
    assert sum(isinstance(n, nengo_dl_nb.TensorNode) for n in fallback.net.all_nodes) == 2
    assert fallback.verify()
    split = Converter(model, split_shared_weights=True, allow_fallback=False)
    assert len(split.net.all_ensembles) == 2 and split.verify()
    with pytest.raises(ValidationError, match="split_shared_weights"):
        Converter(model, allow_fallback=False)


def test_fine_tuning_trains_weights_not_structure():
    model = sequential((4, 4, 1), L.Conv2D(2, 2, activation="relu"), L.AveragePooling2D(3),
                       L.Flatten(), L.Dense(2))
    converter = Converter(model, allow_fallback=False)
    pooling = [c for c in converter.net.all_connections
               if isinstance(c.transform, nengo.Sparse)]
    dense = [c for c in converter.net.all_connections if isinstance(c.transform, nengo.Dense)
             and c.transform.shape == (2, 2)]
    assert len(pooling) == 1 and len(dense) == 1
    rng = np.random.RandomState(0)
    x, y = rng.rand(8, 16), rng.rand(8, 2)
    with nengo_dl_nb.Simulator(converter.net, minibatch_size=4, progress_bar=False) as sim:
        before = dict(zip(pooling + dense, sim.data.get_params(
            *[(c, "weights") for c in pooling + dense])))
        sim.compile(tf.keras.optimizers.Adam(0.05), loss="mse")
        sim.fit(x, y, epochs=3)
        after = dict(zip(pooling + dense, sim.data.get_params(
            *[(c, "weights") for c in pooling + dense])))
    assert np.array_equal(before[pooling[0]], after[pooling[0]])
    assert not np.allclose(before[dense[0]], after[dense[0]])


def test_inference_only():
    model = sequential((3,), L.Dense(4, activation="relu"))
    converter = Converter(model, inference_only=True)
    assert nengo_dl_nb.get_setting(converter.net, "inference_only")
    assert converter.verify()
    with nengo_dl_nb.Simulator(converter.net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="inference_only"):
            sim.train({converter.inputs[model.inputs[0]]: np.zeros((1, 1, 3)),
                       converter.outputs[model.outputs[0]]: np.zeros((1, 1, 4))},
                      tf.keras.optimizers.SGD(0.1))


def test_keras_3_package_models():
    "`import keras` (Keras 3 on the TensorFlow backend) models convert like tf.keras ones."
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    assert Converter(model, allow_fallback=False).verify()
    inp = keras.Input((4,))
    functional = keras.Model(inp, keras.layers.Dense(2, activation="sigmoid")(inp))
    assert Converter(functional, allow_fallback=False).verify()


def test_nested_model_falls_back():
    inner = sequential((4,), L.Dense(3, activation="relu"))
    outer = sequential((4,), inner, L.Dense(2))
    converter = Converter(outer)
    assert any(isinstance(n, nengo_dl_nb.TensorNode) for n in converter.net.all_nodes)
    assert converter.verify()


def test_bad_models():
    class Subclassed(tf.keras.Model):
        def call(self, x):
            return x * 2
    with pytest.raises(ValidationError, match="functional"):
        Converter(Subclassed())
    with pytest.raises(ValidationError, match="functional"):
        Converter(tf.keras.Sequential([L.Dense(2)]))  # no input shape: never built
    with pytest.raises(ValidationError, match="Keras 3 model"):
        Converter(L.Dense(2))
