"""Convolution transforms against nengo.Simulator."""
import nengo
import numpy as np
import pytest
import tensorflow as tf

import nengo_dl_nb
from conftest import run_both


def conv_net(transform, size_in, seed=0):
    with nengo.Network(seed=seed) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        rng = np.random.RandomState(seed)
        stim = nengo.Node(rng.uniform(-1, 1, size=size_in))
        out = nengo.Node(size_in=transform.size_out)
        nengo.Connection(stim, out, transform=transform, synapse=None)
        ens = nengo.Ensemble(20, 1)
        nengo.Connection(out[:1], ens)  # something downstream, so groups mix with others
        p = nengo.Probe(out)
    return net, p


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("padding, strides", [("same", (1, 1)), ("valid", (2, 1)),
                                              ("same", (2, 3))])
@pytest.mark.parametrize("groups", [1, 2])
def test_convolution_2d(channels_last, padding, strides, groups):
    shape = (7, 6, 4) if channels_last else (4, 7, 6)
    conv = nengo.Convolution(6, shape, kernel_size=(3, 2), strides=strides, padding=padding,
                             channels_last=channels_last, groups=groups)
    net, p = conv_net(conv, int(np.prod(shape)))
    ref, sim = run_both(net, 3)
    assert not sim.runner.uses_python
    np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_convolution_1d_and_minibatch(padding):
    conv = nengo.Convolution(3, (10, 2), kernel_size=(3,), strides=(2,), padding=padding)
    net, p = conv_net(conv, 20)
    stim = net.nodes[0]
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(2)
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        data = np.stack([np.tile(stim.output, (2, 1)), -np.tile(stim.output, (2, 1))])
        sim.run_steps(2, data={stim: data})
    np.testing.assert_allclose(sim.data[p][0], ref.data[p], atol=1e-10)
    np.testing.assert_allclose(sim.data[p][1], -ref.data[p], atol=1e-10)  # linear in X


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("padding, strides", [("same", (1, 1)), ("valid", (2, 2)),
                                              ("same", (2, 1))])
def test_convolution_transpose(channels_last, padding, strides):
    shape = (4, 5, 3) if channels_last else (3, 4, 5)
    conv = nengo.ConvolutionTranspose(2, shape, kernel_size=(3, 3), strides=strides,
                                      padding=padding, channels_last=channels_last)
    net, p = conv_net(conv, int(np.prod(shape)))
    ref, sim = run_both(net, 2)
    np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10, rtol=1e-10)


# -- merged groups ---------------------------------------------------------------------------

def conv_groups(sim):
    "(operator class, number of operators) of every convolution group of the plan."
    from nengo.builder.transforms import ConvInc, ConvTransposeInc
    return sorted((type(g[0]).__name__, len(g)) for g in sim.layout.plan
                  if isinstance(g[0], (ConvInc, ConvTransposeInc)))


def merged_net(transforms, seed=0, **settings):
    """Each transform on a connection of its own (own random input, own kernel, own output),
    float64; returns the network and the output probes."""
    with nengo.Network(seed=seed) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64, **settings)
        rng = np.random.RandomState(seed)
        probes = []
        for transform in transforms:
            stim = nengo.Node(rng.uniform(-1, 1, size=transform.size_in))
            out = nengo.Node(size_in=transform.size_out)
            nengo.Connection(stim, out, transform=transform, synapse=None)
            probes.append(nengo.Probe(out))
        ens = nengo.Ensemble(20, 1)
        nengo.Connection(out[:1], ens)  # something downstream, so groups mix with others
    return net, probes


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("padding, strides", [("same", (1, 1)), ("valid", (2, 1)),
                                              ("same", (2, 3))])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("jit_compile", [None, False])
def test_merged_convolutions_match_nengo(channels_last, padding, strides, groups, jit_compile):
    shape = (7, 6, 4) if channels_last else (4, 7, 6)
    convs = [nengo.Convolution(6, shape, kernel_size=(3, 2), strides=strides, padding=padding,
                               channels_last=channels_last, groups=groups) for _ in range(3)]
    net, probes = merged_net(convs, jit_compile=jit_compile)
    ref, sim = run_both(net, 3)
    assert conv_groups(sim) == [("ConvInc", 3)]  # one group, one convolution
    assert sim.runner.jit_compile is (jit_compile is None)
    kernels = [ref.data[c].weights for c in net.all_connections if c.transform in convs]
    assert not np.allclose(kernels[0], kernels[1])  # different kernels in one group
    for p in probes:
        assert np.ptp(ref.data[p]) > 0
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("channels_last", [True, False])
def test_merged_convolutions_1d_and_minibatch(channels_last):
    shape = (10, 2) if channels_last else (2, 10)
    convs = [nengo.Convolution(3, shape, kernel_size=(3,), strides=(2,), padding="same",
                               channels_last=channels_last) for _ in range(2)]
    net, probes = merged_net(convs)
    stims = [n for n in net.nodes if n.size_in == 0]
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(2)
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        data = {s: np.stack([np.tile(s.output, (2, 1)), -np.tile(s.output, (2, 1))])
                for s in stims}
        sim.run_steps(2, data=data)
        assert conv_groups(sim) == [("ConvInc", 2)]
    for p in probes:
        np.testing.assert_allclose(sim.data[p][0], ref.data[p], atol=1e-10)
        np.testing.assert_allclose(sim.data[p][1], -ref.data[p], atol=1e-10)  # linear in X


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("padding, strides, output_shape", [
    ("same", (1, 1), None), ("valid", (2, 2), None), ("same", (2, 1), None),
    ("valid", (2, 3), (10, 17)),  # larger than the smallest valid output: extra trailing rows
    ("same", (3, 2), (11, 9))])
@pytest.mark.parametrize("jit_compile", [None, False])
def test_merged_convolution_transpose_match_nengo(channels_last, padding, strides,
                                                  output_shape, jit_compile):
    shape = (4, 5, 3) if channels_last else (3, 4, 5)
    if output_shape is not None:
        output_shape = output_shape + (2,) if channels_last else (2,) + output_shape
    convs = [nengo.ConvolutionTranspose(2, shape, output_shape=output_shape, kernel_size=(3, 3),
                                        strides=strides, padding=padding,
                                        channels_last=channels_last) for _ in range(2)]
    net, probes = merged_net(convs, jit_compile=jit_compile)
    ref, sim = run_both(net, 2)
    assert conv_groups(sim) == [("ConvTransposeInc", 2)]
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10, rtol=1e-10)


def test_merged_convolution_transpose_1d():
    convs = [nengo.ConvolutionTranspose(3, (5, 2), kernel_size=(3,), strides=(2,),
                                        padding="same") for _ in range(3)]
    net, probes = merged_net(convs)
    ref, sim = run_both(net, 2)
    assert conv_groups(sim) == [("ConvTransposeInc", 3)]
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10, rtol=1e-10)


def test_only_equal_convolutions_merge():
    base = dict(n_filters=4, input_shape=(6, 6, 2), kernel_size=(3, 3))
    convs = [nengo.Convolution(**base), nengo.Convolution(**base),
             nengo.Convolution(**base, strides=(2, 2)), nengo.Convolution(**base, padding="same"),
             nengo.Convolution(**dict(base, n_filters=2)), nengo.Convolution(**base, groups=2),
             nengo.ConvolutionTranspose(**base), nengo.ConvolutionTranspose(**base)]
    net, probes = merged_net(convs)
    ref, sim = run_both(net, 2)
    assert conv_groups(sim) == [("ConvInc", 1)] * 4 + [("ConvInc", 2), ("ConvTransposeInc", 2)]
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("jit_compile", [None, False])
def test_merged_convolution_gradients(jit_compile):
    # merged groups (and a grouped convolution) train, in XLA and outside it: analytic
    # against numerical gradients
    with nengo.Network(seed=3) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64, jit_compile=jit_compile)
        inp = nengo.Node(lambda t: np.sin(10 * t) * np.ones(2))
        pre = [nengo.Ensemble(12, 2, neuron_type=nengo.RectifiedLinear()) for _ in range(4)]
        probes = []
        for i, e in enumerate(pre):
            nengo.Connection(inp, e, synapse=None)
            conv = (nengo.Convolution(2, (3, 4), kernel_size=(2,), strides=(1,), groups=2) if i < 2 else
                    nengo.ConvolutionTranspose(2, (3, 4), kernel_size=(2,), strides=(2,)))
            post = nengo.Ensemble(conv.size_out, 1, neuron_type=nengo.RectifiedLinear())
            nengo.Connection(e.neurons, post.neurons, transform=conv)
            probes.append(nengo.Probe(post.neurons))
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        assert conv_groups(sim) == [("ConvInc", 2), ("ConvTransposeInc", 2)]
        sim.check_gradients(n_steps=3, max_elements=40)
