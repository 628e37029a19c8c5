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
    assert not sim.tensor_graph.uses_python
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
