"""SoftLIFRate: the neuron type, the `soft_lif_rate` TensorFlow function and its gradient,
and the native builder against Nengo's own `step` and `nengo.Simulator`."""
import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import ValidationError

import nengo_dl_nb
from nengo_dl_nb.builder import builder_implementing
from nengo_dl_nb.neuron_builders import (
    GenericNeuronBuilder,
    SimNeuronsBuilder,
    SoftLIFRateBuilder,
    soft_lif_rate,
)
from nengo_dl_nb.neurons import SoftLIFRate

DT = 0.001


def numpy_rates(neuron_type, J):
    out = np.zeros_like(J)
    neuron_type.step(DT, J, out)
    return out


def neuron_groups(sim):
    return [b for b in sim.runner.timestep.op_builds.values()
            if isinstance(b, SimNeuronsBuilder)]


def assert_native(sim):
    "Every neuron group is native, and the whole loop compiles with XLA."
    groups = neuron_groups(sim)
    assert groups and not any(isinstance(b.built_neurons, GenericNeuronBuilder) for b in groups)
    assert sim.runner.jit_compile and not sim.runner.uses_python


def driven_net(types, currents, dtype):
    "One ensemble per neuron type, all driven (gain 1, bias 0) by the same random currents."
    n = currents.shape[1]
    with nengo.Network(seed=0) as net:
        nengo_dl_nb.configure_settings(dtype=dtype)
        drive = nengo.Node(lambda t: currents[int(round(t / DT)) - 1])
        ens = [nengo.Ensemble(n, 1, neuron_type=t, gain=np.ones(n), bias=np.zeros(n))
               for t in types]
        for e in ens:
            nengo.Connection(drive, e.neurons, synapse=None)
        probes = [nengo.Probe(e.neurons) for e in ens]
    return net, probes


# -- the neuron type ---------------------------------------------------------------------------

def test_registered():
    assert builder_implementing(SoftLIFRate()) is SoftLIFRateBuilder


def test_neurons_module_stands_alone():
    """`neurons` (the neuron type and its NumPy math) loads on its own, without TensorFlow
    or the rest of the package: the builders import it, never the reverse."""
    import subprocess
    import sys

    import nengo_dl_nb.neurons
    code = (
        "import importlib.util, sys, numpy\n"
        "sys.modules['tensorflow'] = None  # importing TensorFlow now fails\n"
        f"spec = importlib.util.spec_from_file_location('standalone', {nengo_dl_nb.neurons.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "out = numpy.zeros(2)\n"
        "module.SoftLIFRate().step(0.001, numpy.array([0.0, 3.0]), out)\n"
        "assert 0 < out[0] < out[1]\n"
        "assert not any(name.startswith('nengo_dl_nb') for name in sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("sigma", [0, -1, -0.5])
def test_sigma_must_be_positive(sigma):
    with pytest.raises(ValidationError, match="sigma"):
        SoftLIFRate(sigma=sigma)
    neurons = SoftLIFRate()
    with pytest.raises(ValidationError, match="sigma"):
        neurons.sigma = sigma


def test_other_parameters_validated():
    with pytest.raises(ValidationError, match="tau_rc"):
        SoftLIFRate(tau_rc=0)
    with pytest.raises(ValidationError, match="tau_ref"):
        SoftLIFRate(tau_ref=-0.001)
    with pytest.raises(ValidationError, match="amplitude"):
        SoftLIFRate(amplitude=0)


def test_rates_and_gain_bias_are_lifrate():
    soft, lif = SoftLIFRate(sigma=2.0, tau_rc=0.03), nengo.LIFRate(tau_rc=0.03)
    max_rates, intercepts = np.array([100.0, 250.0, 300.0]), np.array([-0.5, 0.0, 0.7])
    gain, bias = soft.gain_bias(max_rates, intercepts)
    np.testing.assert_array_equal(np.array(lif.gain_bias(max_rates, intercepts)), [gain, bias])
    x = np.linspace(-1, 1, 21)
    np.testing.assert_array_equal(soft.rates(x, gain, bias), lif.rates(x, gain, bias))
    # ... while step is the smoothed rate: above LIFRate near and below the threshold
    J = np.array([-1.0, 0.5, 1.0, 1.01, 1.5])
    assert np.all(numpy_rates(soft, J) > numpy_rates(lif, J))


def test_numpy_step_extremes():
    J = np.array([-np.inf, -1e300, -1e4, -100.0, 1.0, 1e4, 1e300])
    with np.errstate(divide="raise", over="raise", invalid="raise"):  # (underflow is fine)
        rates = numpy_rates(SoftLIFRate(sigma=0.5), J)
    assert rates[0] == 0 and np.all(rates[1:] > 0) and np.all(np.diff(rates) > 0)
    np.testing.assert_allclose(rates[-1], 1 / 0.002)


# -- soft_lif_rate -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_matches_numpy_step(dtype):
    rng = np.random.RandomState(0)
    J = np.concatenate([rng.uniform(-60, 60, 500), rng.uniform(0.5, 1.5, 500), [1.0]])
    J = J.astype(dtype.as_numpy_dtype)
    for params in [{}, dict(sigma=0.05, tau_rc=0.05, tau_ref=0.001, amplitude=0.3)]:
        ours = soft_lif_rate(tf.constant(J), **params).numpy()
        assert ours.dtype == dtype.as_numpy_dtype
        expected = numpy_rates(SoftLIFRate(**params), J.astype(np.float64))
        tol = dict(rtol=1e-6, atol=0) if dtype == tf.float32 else dict(rtol=1e-12, atol=0)
        np.testing.assert_allclose(ours, expected, **tol)


def test_approaches_lifrate():
    J = np.concatenate([np.linspace(-5, 0.95, 50), np.linspace(1.05, 20, 50)])
    lif = numpy_rates(nengo.LIFRate(), J)
    errors = [np.abs(soft_lif_rate(tf.constant(J), sigma=sigma).numpy() - lif).max()
              for sigma in [1.0, 0.1, 0.01, 1e-3, 1e-4]]
    assert np.all(np.diff(errors) < 0), errors
    assert errors[-1] < 0.1  # Hz, with rates up to ~250 Hz
    np.testing.assert_allclose(numpy_rates(SoftLIFRate(sigma=1e-4), J), lif, atol=0.1)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_gradient_finite_everywhere(dtype):
    J = tf.constant(np.concatenate([np.linspace(-50, 50, 2001), [1.0, -1e4, -1e30, 1e30]]), dtype)
    for sigma in [1.0, 0.01, 5.0]:
        with tf.GradientTape() as tape:
            tape.watch(J)
            rate = soft_lif_rate(J, sigma=sigma)
        grad = tape.gradient(rate, J).numpy()
        assert np.all(np.isfinite(rate.numpy())) and np.all(np.isfinite(grad)), sigma
        assert np.all(rate.numpy() >= 0) and np.all(grad >= 0)
        assert np.all(grad[:2002] > 0)  # strictly increasing over [-50, 50], threshold included


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_gradient_at_infinities(dtype):
    J = tf.constant([-np.inf, np.inf], dtype)
    params = [tf.constant(v, dtype) for v in (1.0, 0.02, 0.002, 1.0)]
    with tf.GradientTape() as tape:
        tape.watch([J] + params)
        rate = soft_lif_rate(J, *params)
    grads = tape.gradient(rate, [J] + params)
    np.testing.assert_allclose(rate.numpy(), [0, 500], rtol=1e-6)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def numerical_gradient(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_gradient_matches_central_difference():
    J = tf.constant([-45.0, -30.0, -3.0, 0.0, 0.9, 0.99, 1.0, 1.01, 1.1, 2.0, 20.0, 45.0],
                    tf.float64)
    params = dict(sigma=0.3, tau_rc=0.03, tau_ref=0.003, amplitude=0.7)
    tensors = {k: tf.constant(v, tf.float64) for k, v in params.items()}
    with tf.GradientTape() as tape:
        tape.watch([J] + list(tensors.values()))
        rate = soft_lif_rate(J, **tensors)
    grads = tape.gradient(rate, [J] + list(tensors.values()))
    h = 1e-6
    np.testing.assert_allclose(
        grads[0], numerical_gradient(lambda j: soft_lif_rate(j, **params), J, h), rtol=1e-6)
    for (name, value), grad in zip(params.items(), grads[1:]):
        def f(v, name=name):
            return tf.reduce_sum(soft_lif_rate(J, **{**params, name: v}))
        np.testing.assert_allclose(grad, numerical_gradient(f, value, h * value), rtol=1e-6,
                                   err_msg=name)


def test_parameter_gradients_broadcast():
    "Per-neuron parameters (as variables) get gradients of their own shape."
    J = tf.constant(np.random.RandomState(1).uniform(-3, 5, (4, 6)), tf.float64)
    sigma = tf.Variable(np.linspace(0.1, 1, 6)[None], dtype=tf.float64)
    amplitude = tf.Variable(0.5, dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(soft_lif_rate(J, sigma, amplitude=amplitude) ** 2)
    d_sigma, d_amplitude = tape.gradient(loss, [sigma, amplitude])
    assert d_sigma.shape == (1, 6) and d_amplitude.shape == ()
    h = 1e-6
    for i in range(6):
        bump = np.zeros((1, 6))
        bump[0, i] = h
        def f(s):
            return tf.reduce_sum(soft_lif_rate(J, s, amplitude=0.5) ** 2)
        num = (f(sigma + bump) - f(sigma - bump)) / (2 * h)
        np.testing.assert_allclose(d_sigma[0, i], num, rtol=1e-5)


def test_compiles_with_xla():
    @tf.function(jit_compile=True)
    def rate_and_grad(J):
        with tf.GradientTape() as tape:
            tape.watch(J)
            rate = soft_lif_rate(J, sigma=0.5)
        return rate, tape.gradient(rate, J)

    J = tf.constant(np.linspace(-100, 100, 101), tf.float32)
    rate, grad = rate_and_grad(J)
    np.testing.assert_allclose(rate, soft_lif_rate(J, sigma=0.5), rtol=1e-6)
    assert np.all(np.isfinite(grad.numpy())) and np.all(grad.numpy() > 0)


# -- the builder -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("neuron_type", [
    SoftLIFRate(), SoftLIFRate(sigma=0.05, tau_rc=0.05, tau_ref=0.001, amplitude=0.5)])
def test_builder_matches_step(neuron_type, dtype):
    steps, n = 100, 50
    currents = np.random.RandomState(0).uniform(-20, 20, size=(steps, n))
    net, (p,) = driven_net([neuron_type], currents, dtype)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert_native(sim)
        sim.run_steps(steps)
    if dtype == tf.float64:
        expected = numpy_rates(neuron_type, currents)
        np.testing.assert_allclose(sim.data[p], expected, rtol=1e-10, atol=1e-10)
    else:  # the same currents in float32, against the float64 step
        expected = numpy_rates(neuron_type, currents.astype(np.float32).astype(np.float64))
        np.testing.assert_allclose(sim.data[p], expected, rtol=2e-6, atol=1e-6)


def test_parameters_differ_per_ensemble():
    "Three SoftLIFRate ensembles with different parameters merge into one group and match."
    steps, n = 50, 10
    types = [SoftLIFRate(sigma=0.2 * (i + 1), tau_rc=0.02 + 0.01 * i, tau_ref=0.001 * (i + 1),
                         amplitude=1 - 0.2 * i) for i in range(3)]
    currents = np.random.RandomState(1).uniform(-5, 10, size=(steps, n))
    net, probes = driven_net(types + [nengo.LIFRate()], currents, tf.float64)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert_native(sim)
        groups = {type(b.ops[0].neurons): b for b in neuron_groups(sim)}
        assert len(groups[SoftLIFRate].ops) == 3  # one merged group, without the LIFRate
        assert isinstance(groups[SoftLIFRate].built_neurons, SoftLIFRateBuilder)
        assert len(groups[nengo.LIFRate].ops) == 1
        sim.run_steps(steps)
    for t, p in zip(types + [nengo.LIFRate()], probes):
        np.testing.assert_allclose(sim.data[p], numpy_rates(t, currents), rtol=1e-10, atol=1e-10)


def test_not_mergeable_with_other_types():
    from nengo.builder.neurons import SimNeurons
    from nengo.builder.signal import Signal

    def op(t):
        return SimNeurons(t, Signal(np.zeros(2)), Signal(np.zeros(2)))

    soft = op(SoftLIFRate())
    assert SimNeuronsBuilder.mergeable(op(SoftLIFRate(sigma=0.3)), soft)
    for other in (nengo.LIFRate(), nengo.LIF(), nengo.RectifiedLinear()):
        assert not SimNeuronsBuilder.mergeable(op(other), soft)
        assert not SimNeuronsBuilder.mergeable(soft, op(other))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_network_matches_nengo(dtype, both):
    "A recurrent network of SoftLIFRate ensembles: probes match nengo.Simulator."
    with nengo.Network(seed=3) as net:
        stim = nengo.Node(lambda t: [np.sin(6 * t), np.cos(4 * t)])
        a = nengo.Ensemble(60, 2, neuron_type=SoftLIFRate(sigma=0.5))
        b = nengo.Ensemble(40, 1, neuron_type=SoftLIFRate(sigma=2.0, tau_rc=0.03, amplitude=0.5))
        c = nengo.Ensemble(30, 1, neuron_type=nengo.LIFRate())
        nengo.Connection(stim, a)
        nengo.Connection(a, b, function=lambda x: x[0] * x[1], synapse=0.005)
        nengo.Connection(b, b, synapse=0.05)
        nengo.Connection(b, c, synapse=0.01)
        probes = [nengo.Probe(a, synapse=0.01), nengo.Probe(b, synapse=0.01),
                  nengo.Probe(c, synapse=0.01), nengo.Probe(a.neurons), nengo.Probe(b.neurons)]
    ref, sim = both(net, 300, dtype=dtype)
    assert_native(sim)
    for p in probes:
        if dtype == tf.float64:
            np.testing.assert_allclose(sim.data[p], ref.data[p], rtol=1e-9, atol=1e-9)
        else:
            scale = np.abs(ref.data[p]).max()
            np.testing.assert_allclose(sim.data[p], ref.data[p], rtol=1e-4, atol=1e-5 * scale)
    assert np.abs(ref.data[probes[0]]).max() > 0.5  # the network does something
