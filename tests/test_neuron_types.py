"""Native builders for more Nengo neuron types, against Nengo's own step functions."""
import nengo
import numpy as np
import pytest
import tensorflow as tf

import nengo_dl_nb
from nengo_dl_nb.builder import builder_implementing
from nengo_dl_nb.neuron_builders import (AdaptiveLIFBuilder, GenericNeuronBuilder, IzhikevichBuilder,
                                         LIFBuilder, PoissonSpikingBuilder, SimNeuronsBuilder,
                                         StochasticSpikingBuilder)

DT = 0.001

# (neuron type, scale of the random currents)
DETERMINISTIC = [
    (nengo.LIF(), 1), (nengo.LIF(tau_rc=0.05, tau_ref=0.001, min_voltage=-1, amplitude=0.5), 1),
    # voltages starting above threshold: the spike time's log, not its series
    (nengo.LIF(initial_state={"voltage": nengo.dists.Uniform(0.5, 1.5)}), 1),
    # a time constant shorter than the step: the series would need too many terms
    (nengo.LIF(tau_rc=0.0008, tau_ref=0.001), 1),
    (nengo.LIFRate(amplitude=2), 1), (nengo.RectifiedLinear(amplitude=0.3), 1),
    (nengo.SpikingRectifiedLinear(amplitude=2), 1), (nengo.Sigmoid(tau_ref=0.01), 1),
    (nengo.Tanh(), 1), (nengo.Tanh(tau_ref=0.01), 1),
    (nengo.AdaptiveLIFRate(), 5),
    (nengo.AdaptiveLIFRate(tau_n=0.1, inc_n=0.1, tau_rc=0.05, tau_ref=0.001, amplitude=0.5), 5),
    (nengo.AdaptiveLIF(), 5),
    (nengo.AdaptiveLIF(tau_n=0.1, inc_n=0.1, tau_rc=0.05, min_voltage=-1, amplitude=2), 5),
    (nengo.Izhikevich(), 3),
    (nengo.Izhikevich(tau_recovery=0.1, coupling=0.26, reset_voltage=-55, reset_recovery=4), 3),
    (nengo.RegularSpiking(nengo.LIFRate()), 5),
    (nengo.RegularSpiking(nengo.Tanh(), amplitude=0.5), 2),
    (nengo.RegularSpiking(nengo.AdaptiveLIFRate(inc_n=0.1)), 5),
]


def nengo_reference(neuron_type, currents, state):
    "Nengo's own step (base type, then the wrapper, for rates-to-spikes types)."
    state = {k: np.array(v, dtype=np.float64) for k, v in state.items()}
    expected = np.zeros_like(currents)
    if isinstance(neuron_type, nengo.neurons.RatesToSpikesNeuronType):
        base = neuron_type.base_type
        rates = np.zeros(currents.shape[1])
        for J, out in zip(currents, expected):
            base.step(DT, J, rates, **{k: state[k] for k in base.state})
            neuron_type.step(DT, rates, out, **{k: state[k] for k in neuron_type.state})
    else:
        for J, out in zip(currents, expected):
            neuron_type.step(DT, J, out, **state)
    return expected


def state_names(neuron_type):
    names = list(neuron_type.state)
    if isinstance(neuron_type, nengo.neurons.RatesToSpikesNeuronType):
        names += list(neuron_type.base_type.state)
    return names


def assert_native(sim):
    "Every neuron group is built natively, and the whole loop runs under XLA."
    builds = sim.runner.timestep.op_builds.values()
    neurons = [b for b in builds if isinstance(b, SimNeuronsBuilder)]
    assert neurons and not any(isinstance(b.built_neurons, GenericNeuronBuilder) for b in neurons)
    assert sim.runner.jit_compile and not sim.runner.uses_python


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("neuron_type, scale", DETERMINISTIC)
def test_matches_nengo_step(neuron_type, scale, dtype):
    """Random currents through a Node into the neurons: our output against Nengo's `step`."""
    n, steps = 20, 200
    currents = scale * np.random.RandomState(0).uniform(-2, 6, size=(steps, n))
    with nengo.Network(seed=0) as net:
        nengo_dl_nb.configure_settings(dtype=dtype)
        drive = nengo.Node(lambda t: currents[int(round(t / DT)) - 1])
        ens = nengo.Ensemble(n, 1, neuron_type=neuron_type, gain=np.ones(n), bias=np.zeros(n))
        nengo.Connection(drive, ens.neurons, synapse=None)
        p = nengo.Probe(ens.neurons)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert_native(sim)
        state = {k: sim.signals[sim.model.sig[ens.neurons][k]] for k in state_names(neuron_type)}
        sim.run_steps(steps)
    expected = nengo_reference(neuron_type, currents, state)
    if neuron_type.spiking:
        assert expected.sum() > 0  # the currents make spikes
    if neuron_type.spiking and dtype == tf.float32:
        # float32 spike times may shift by a step; compare spike counts
        amplitude = getattr(neuron_type, "amplitude", 1)
        np.testing.assert_allclose(sim.data[p].sum(0), expected.sum(0), atol=2 * amplitude / DT)
    elif dtype == tf.float32:
        np.testing.assert_allclose(sim.data[p], expected, rtol=1e-5, atol=1e-3)
    else:
        np.testing.assert_allclose(sim.data[p], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make_type", [
    lambda i: nengo.AdaptiveLIF(tau_n=0.1 * (i + 1), inc_n=0.05 * (i + 1), tau_rc=0.02 + 0.01 * i),
    lambda i: nengo.AdaptiveLIFRate(tau_n=0.1 * (i + 1), inc_n=0.05 * (i + 1)),
    lambda i: nengo.Izhikevich(tau_recovery=0.02 + 0.08 * i, reset_voltage=-65 + 10 * i),
    lambda i: nengo.Tanh(tau_ref=0.0025 * (i + 1)),
    lambda i: nengo.RegularSpiking(nengo.LIFRate(), amplitude=1 + i),
])
def test_parameters_differ_per_ensemble(make_type):
    """Three ensembles with different parameters merge into one group and still match."""
    n, steps, scale = 10, 100, 5
    types = [make_type(i) for i in range(3)]
    currents = scale * np.random.RandomState(1).uniform(-1, 6, size=(steps, n))
    with nengo.Network(seed=1) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        drive = nengo.Node(lambda t: currents[int(round(t / DT)) - 1])
        ens = [nengo.Ensemble(n, 1, neuron_type=t, gain=np.ones(n), bias=np.zeros(n))
               for t in types]
        for e in ens:
            nengo.Connection(drive, e.neurons, synapse=None)
        probes = [nengo.Probe(e.neurons) for e in ens]
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert_native(sim)
        wrapper = [b for b in sim.runner.timestep.op_builds.values()
                   if isinstance(b, SimNeuronsBuilder) and type(b.ops[0].neurons) is type(types[0])]
        assert len(wrapper) == 1 and len(wrapper[0].ops) == 3  # one merged group
        states = [{k: sim.signals[sim.model.sig[e.neurons][k]] for k in state_names(t)}
                  for e, t in zip(ens, types)]
        sim.run_steps(steps)
    for t, state, p in zip(types, states, probes):
        np.testing.assert_allclose(sim.data[p], nengo_reference(t, currents, state),
                                   rtol=1e-9, atol=1e-9)


# -- users' subclasses of native types -------------------------------------------------------

def neuron_groups(sim):
    "`{neuron type class: [(builder of the group, its neuron types' classes)]}`"
    groups = {}
    for b in sim.runner.timestep.op_builds.values():
        if isinstance(b, SimNeuronsBuilder):
            classes = sorted({type(op.neurons).__name__ for op in b.ops})
            for op in b.ops:
                groups.setdefault(type(op.neurons), []).append((type(b.built_neurons), classes))
    return groups


def subclass_net(neuron_types):
    "A recurrent network with one ensemble (decoded and spike probes) per neuron type."
    with nengo.Network(seed=4) as net:
        stim = nengo.Node(lambda t: [np.sin(6 * t), np.cos(4 * t)])
        probes = []
        prev = stim
        for t in neuron_types:
            ens = nengo.Ensemble(40, 2, neuron_type=t)
            nengo.Connection(prev, ens, synapse=0.005)
            probes += [nengo.Probe(ens, synapse=0.01), nengo.Probe(ens.neurons)]
            prev = ens
        nengo.Connection(prev, prev, synapse=0.05, transform=0.5)
    return net, probes


@pytest.mark.parametrize("base, builder", [
    (nengo.LIF, LIFBuilder), (nengo.AdaptiveLIF, AdaptiveLIFBuilder),
    (nengo.Izhikevich, IzhikevichBuilder)])
def test_subclass_runs_natively(base, builder, both):
    """A user's subclass of a native type that adds no behaviour is built by the base type's
    builder (merged with the base type's ensembles), compiles with XLA, and matches Nengo."""
    MyType = type(f"My{base.__name__}", (base,), {"__doc__": "No new behaviour."})
    net, probes = subclass_net([MyType(), base(), MyType()])
    ref, sim = both(net, 300, dtype=tf.float64)
    groups = neuron_groups(sim)
    assert groups[MyType] == [(builder, sorted([base.__name__, MyType.__name__]))] * 2
    assert groups[base] == groups[MyType][:1]  # one group: the base type and the subclass
    assert sim.runner.jit_compile and not sim.runner.uses_python
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], rtol=1e-8, atol=1e-8)
    assert ref.data[probes[1]].sum() > 0  # the subclass spikes


class ShiftedLIF(nengo.LIF):
    "LIF driven by `J + 0.5`: its own `step`, which no TensorFlow builder implements."

    def step(self, dt, J, output, voltage, refractory_time):
        super().step(dt, J + 0.5, output, voltage, refractory_time)


def test_subclass_with_its_own_step_runs_in_python(both):
    """A subclass that overrides `step` runs that `step` (in Python), not the base type's
    native builder; the plain `LIF` ensemble beside it stays native, in a group of its own."""
    net, probes = subclass_net([ShiftedLIF(), nengo.LIF()])
    ref, sim = both(net, 300, dtype=tf.float64)
    groups = neuron_groups(sim)
    assert groups[ShiftedLIF] == [(GenericNeuronBuilder, ["ShiftedLIF"])]
    assert groups[nengo.LIF] == [(LIFBuilder, ["LIF"])]
    assert sim.runner.uses_python and not sim.runner.jit_compile
    for p in probes:
        np.testing.assert_allclose(sim.data[p], ref.data[p], rtol=1e-8, atol=1e-8)
    # the override matters: as plain LIF, the same ensemble fires less
    lif_net, lif_probes = subclass_net([nengo.LIF(), nengo.LIF()])
    with nengo.Simulator(lif_net, progress_bar=False) as lif_ref:
        lif_ref.run_steps(300)
    assert ref.data[probes[1]].sum() > lif_ref.data[lif_probes[1]].sum() > 0
    assert builder_implementing(ShiftedLIF()) is GenericNeuronBuilder
    assert builder_implementing(nengo.LIF()) is LIFBuilder


# -- random spiking types --------------------------------------------------------------------

def test_random_types_are_native():
    "The statistics tests below exercise our builders, not the generic Python fallback."
    assert builder_implementing(nengo.PoissonSpiking(nengo.LIFRate())) is PoissonSpikingBuilder
    assert (builder_implementing(nengo.StochasticSpiking(nengo.LIFRate()))
            is StochasticSpikingBuilder)


def random_net(wrapper, base, J, n_per_value, dtype=tf.float32):
    with nengo.Network(seed=2) as net:
        nengo_dl_nb.configure_settings(dtype=dtype)
        n = len(J) * n_per_value
        ens = nengo.Ensemble(n, 1, neuron_type=wrapper(base, amplitude=0.5),
                             gain=np.ones(n), bias=np.repeat(J, n_per_value))
        p = nengo.Probe(ens.neurons)
    return net, p


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("wrapper", [nengo.PoissonSpiking, nengo.StochasticSpiking])
@pytest.mark.parametrize("base", [nengo.LIFRate(), nengo.Tanh(), nengo.RectifiedLinear()])
def test_random_spiking_rates(wrapper, base, dtype):
    """Mean spike counts match the base type's rate (Nengo's `step`) within a few standard
    errors; negative rates (Tanh) give negative spikes."""
    J = np.array([-1.5, 0.0, 1.2, 2.0, 8.0]) if not isinstance(base, nengo.RectifiedLinear) \
        else np.array([-5.0, 0.0, 10.0, 100.0, 900.0])
    n_per_value, steps = 100, 500
    net, p = random_net(wrapper, base, J, n_per_value, dtype)
    rates = np.zeros(len(J))
    base.step(DT, J.copy(), rates)  # Nengo's rates for these currents
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=3) as sim:
        assert_native(sim)
        sim.run_steps(steps)
    counts = sim.data[p].astype(np.float64) * DT / 0.5  # spikes per step (amplitude 0.5)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)
    counts = np.round(counts)
    per_value = counts.reshape(steps, len(J), n_per_value)
    expected = rates * DT  # expected (signed) spikes per step
    # Poisson: variance = mean; stochastic rounding: at most that (frac * (1 - frac))
    se = np.sqrt(np.abs(expected) / (steps * n_per_value))
    np.testing.assert_array_less(np.abs(per_value.mean((0, 2)) - expected), 4 * se + 1e-12)
    if wrapper is nengo.StochasticSpiking:
        # integer part always fires: counts are floor or ceil of the expected count
        lo, hi = np.floor(np.abs(expected)), np.ceil(np.abs(expected))
        assert np.all((np.abs(per_value) >= lo[:, None]) & (np.abs(per_value) <= hi[:, None]))
    else:
        var = per_value.var((0, 2))
        np.testing.assert_allclose(var[np.abs(expected) > 0.01], np.abs(expected[np.abs(expected) > 0.01]),
                                   rtol=0.15)


@pytest.mark.parametrize("wrapper", [nengo.PoissonSpiking, nengo.StochasticSpiking])
def test_random_spiking_reset_and_seeds(wrapper):
    """`reset` replays the spikes, `reset(seed=...)` changes them; minibatch items and
    successive steps draw different spikes; unrolled steps draw the same as single steps."""
    net, p = random_net(wrapper, nengo.LIFRate(), np.array([2.0, 5.0]), 50)
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=5, minibatch_size=2) as sim:
        assert_native(sim)
        sim.run_steps(40)
        first = sim.data[p].copy()
        sim.reset()
        sim.run_steps(40)
        np.testing.assert_array_equal(sim.data[p], first)
        sim.reset(seed=6)
        sim.run_steps(40)
        assert not np.array_equal(sim.data[p], first)
        sim.reset(seed=5)
        sim.run_steps(20)
        sim.run_steps(20)  # continuing a run continues the stream
        np.testing.assert_array_equal(sim.data[p], first)
    assert not np.array_equal(first[0], first[1])  # minibatch items differ
    assert not np.array_equal(first[0, :20], first[0, 20:])  # so do steps
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=5, minibatch_size=2,
                               unroll_simulation=4) as sim:
        sim.run_steps(40)
        np.testing.assert_array_equal(sim.data[p], first)


def test_random_spiking_mixed_signs_in_one_group():
    """StochasticSpiking around Tanh (signed) and LIFRate (unsigned) merge into one group."""
    J = np.array([-1.0, 0.5, 3.0])
    with nengo.Network(seed=3) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        a = nengo.Ensemble(3, 1, neuron_type=nengo.StochasticSpiking(nengo.Tanh()),
                           gain=np.ones(3), bias=J)
        b = nengo.Ensemble(3, 1, neuron_type=nengo.StochasticSpiking(nengo.LIFRate()),
                           gain=np.ones(3), bias=J + 1)
        pa, pb = nengo.Probe(a.neurons), nengo.Probe(b.neurons)
    steps = 4000
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        assert_native(sim)
        groups = [b_ for b_ in sim.runner.timestep.op_builds.values()
                  if isinstance(b_, SimNeuronsBuilder)
                  and isinstance(b_.ops[0].neurons, nengo.StochasticSpiking)]
        assert len(groups) == 1 and len(groups[0].ops) == 2
        sim.run_steps(steps)
    for probe, base, bias in [(pa, nengo.Tanh(), J), (pb, nengo.LIFRate(), J + 1)]:
        rates = np.zeros(3)
        base.step(DT, bias.copy(), rates)
        counts = sim.data[probe] * DT
        se = np.sqrt(np.abs(rates * DT) / steps)
        np.testing.assert_array_less(np.abs(counts.mean(0) - rates * DT), 4 * se + 1e-12)
        assert np.all(np.sign(counts) * np.sign(rates) >= 0)


def test_neuron_parameters_are_constants_of_the_compiled_step():
    # parameters made outside the traced step would enter it as arguments, which XLA
    # cannot fold (a division by tau_rc stays a division); they are graph constants
    with nengo.Network(seed=0) as net:
        ens = nengo.Ensemble(10, 1, neuron_type=nengo.LIF(tau_rc=0.0321, tau_ref=0.0023))
        nengo.Probe(ens)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        concrete = sim.runner.run_function().get_concrete_function()
        captured = [t.numpy() for t in concrete.captured_inputs
                    if t.dtype.is_floating and t.shape.num_elements() == 1]
        assert not any(np.isclose(v, [0.0321, 0.0023]).any() for v in captured), captured


@pytest.mark.parametrize("dtype, terms", [(tf.float32, 3), (tf.float64, 6)])
def test_lif_spike_time_series_where_its_bound_holds(dtype, terms):
    """A LIF group takes the spike time's log as a series only where every voltage starts
    at or below threshold and tau_rc is long enough against dt; the series and the log
    both match nengo's step (`test_matches_nengo_step` runs each case)."""
    hot = nengo.LIF(initial_state={"voltage": nengo.dists.Uniform(0.5, 1.5)})
    for neuron_types, expected in [([nengo.LIF()], terms), ([nengo.LIF(), hot], None),
                                   ([nengo.LIF(tau_rc=0.0008)], None)]:
        with nengo.Network(seed=0) as net:
            nengo_dl_nb.configure_settings(dtype=dtype)
            for neuron_type in neuron_types:
                nengo.Ensemble(10, 1, neuron_type=neuron_type)
        with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
            groups = [b.built_neurons for b in sim.runner.timestep.op_builds.values()
                      if isinstance(b, SimNeuronsBuilder)]
        assert len(groups) == 1 and len(groups[0].ops) == len(neuron_types)  # (merged)
        assert groups[0].log_terms == expected
