"""Single steps: `sim.step()` goes through its own traced function (no loop, no history
buffers, inputs as scalars or one vector); it must give what a run gives, and what
`nengo.Simulator` gives stepping the same model."""
import nengo
import numpy as np
import pytest
import tensorflow as tf

import nengo_dl_nb
from nengo_dl_nb.runner import DirectCall


def make_net(n_inputs=1, size=1, process=False, sample_every=None):
    with nengo.Network(seed=3) as net:
        ens = nengo.Ensemble(40, n_inputs * size)
        for i in range(n_inputs):
            if process:
                node = nengo.Node(nengo.processes.WhiteSignal(1.0, high=5, seed=i), size_out=size)
            else:
                node = nengo.Node(lambda t, i=i: np.sin(3 * t + i) * np.ones(size)
                                  if size > 1 else np.sin(3 * t + i))
            nengo.Connection(node, ens[i * size:(i + 1) * size])
        net.const = nengo.Node([0.25] * size)
        nengo.Connection(net.const, ens[:size])
        net.p = nengo.Probe(ens, synapse=0.01, sample_every=sample_every)
        net.p_spikes = nengo.Probe(ens.neurons)
    return net


@pytest.mark.parametrize("n_inputs, size, process", [
    (1, 1, False),   # one scalar input (the common case)
    (3, 2, False),   # several nodes, each a vector, still scalars in
    (2, 9, False),   # 18 values: one vector in
    (2, 1, True),    # processes step in Python
])
def test_steps_equal_run(n_inputs, size, process):
    net = make_net(n_inputs, size, process)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as run:
        run.run_steps(25)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as stepped:
        for _ in range(25):
            stepped.step()
        assert stepped.n_steps == 25
        np.testing.assert_allclose(stepped.data[net.p], run.data[net.p], atol=1e-6)
        np.testing.assert_array_equal(stepped.data[net.p_spikes], run.data[net.p_spikes])
    with nengo.Simulator(net, progress_bar=False) as ref:
        for _ in range(25):
            ref.step()
    np.testing.assert_allclose(stepped.data[net.p], ref.data[net.p], atol=1e-4)


def test_steps_mix_with_runs_minibatch_and_sampling():
    net = make_net(sample_every=0.003)
    with nengo_dl_nb.Simulator(net, progress_bar=False, minibatch_size=3) as run:
        run.run_steps(20)
    with nengo_dl_nb.Simulator(net, progress_bar=False, minibatch_size=3) as mixed:
        mixed.step()
        mixed.run_steps(7)
        for _ in range(5):
            mixed.step()
            assert mixed.data[net.p].shape == (3, mixed.n_steps // 3, 1)
        mixed.run_steps(1)  # a run of one step takes the single-step function too
        mixed.run_steps(6)
        for p in (net.p, net.p_spikes):
            np.testing.assert_allclose(mixed.data[p], run.data[p], atol=1e-6)
        # every item is the same input: the items agree
        np.testing.assert_allclose(mixed.data[net.p][0], mixed.data[net.p][2])


def test_step_keep_history_false():
    net = make_net()
    with net:
        nengo_dl_nb.configure_settings(keep_history=False)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        for _ in range(10):
            sim.step()
        last = sim.data[net.p]
    ref = make_net()
    with nengo_dl_nb.Simulator(ref, progress_bar=False) as full:
        full.run_steps(10)
    assert last.shape == (1, 1)
    np.testing.assert_allclose(last, full.data[ref.p][-1:], atol=1e-6)


def test_step_with_data_and_errors():
    net = make_net()
    stim = [n for n in net.nodes if n is not net.const][0]
    with nengo_dl_nb.Simulator(net, progress_bar=False) as fed:
        fed.step(data={stim: np.full((1, 1), 0.5)})  # data: the general path
        fed.step()
        assert fed.n_steps == 2
    with nengo.Network() as bad:
        node = nengo.Node(lambda t: 1 / 0 if t > 0.0015 else 0.0)
        nengo.Probe(node)
    with nengo_dl_nb.Simulator(bad, progress_bar=False) as sim:
        sim.step()
        with pytest.raises(ZeroDivisionError):
            sim.step()
    with nengo.Network() as nan:
        nengo.Probe(nengo.Node(lambda t: np.nan))
    with nengo_dl_nb.Simulator(nan, progress_bar=False) as sim:
        with pytest.raises(nengo.exceptions.SimulationError, match="non-finite"):
            sim.step()


def test_data_read_between_steps_is_whole():
    net = make_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        seen = []
        for _ in range(12):
            sim.step()
            seen.append(sim.data[net.p][-1].copy())
        np.testing.assert_array_equal(np.array(seen), sim.data[net.p])
        assert len(sim._probe_data[net.p]) <= 2  # kept as one chunk (+ the newest)


def test_direct_call_matches_public_call():
    fn = tf.function(lambda a, b: (a * b, a - b), autograph=False)
    call = DirectCall(fn, tf.TensorSpec((3,), tf.float64), tf.TensorSpec((), tf.float64))
    a, b = np.array([1.0, 2.0, 3.0]), 0.5
    fast = call(call.tensor(a, tf.float64), call.tensor(b, tf.float64))
    public = fn(tf.constant(a), tf.constant(b, tf.float64))
    for x, y in zip(fast, public):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_identical_step_graphs_share_one_compiled_function():
    """A second simulator of the same structure (here another seed: other encoders, gains,
    decoders, all in variables) runs the first one's compiled step function with its own
    variables; stepping both in turn, each gives what its own run gives (its own run
    function is not shared) and what nengo.Simulator gives. Another structure does not share."""
    def net_with_seed(seed):
        net = make_net(n_inputs=2)
        net.seed = seed
        return net
    nets = [net_with_seed(3), net_with_seed(11)]
    sims = [nengo_dl_nb.Simulator(net, progress_bar=False) for net in nets]
    try:
        calls = [sim.runner.step_call() for sim in sims]
        assert calls[1].concrete is calls[0].concrete
        for _ in range(30):  # in turn: each step must read and write its own state
            for sim in sims:
                sim.step()
        for net, sim in zip(nets, sims):
            with nengo_dl_nb.Simulator(net, progress_bar=False) as run:
                run.run_steps(30)
            np.testing.assert_allclose(sim.data[net.p], run.data[net.p], atol=1e-6)
            np.testing.assert_array_equal(sim.data[net.p_spikes], run.data[net.p_spikes])
            with nengo.Simulator(net, progress_bar=False) as ref:
                ref.run_steps(30)
            np.testing.assert_allclose(sim.data[net.p], ref.data[net.p], atol=1e-4)
        assert not np.allclose(sims[0].data[nets[0].p], sims[1].data[nets[1].p], atol=1e-3)
        with nengo_dl_nb.Simulator(make_net(n_inputs=3), progress_bar=False) as other:
            assert other.runner.step_call().concrete is not calls[0].concrete
    finally:
        for sim in sims:
            sim.close()


def nengo_calls(make_net, n_steps):
    """`(net, seen, expected, data)`: a net made by `make_net(seen)`, set to float64 for
    ours, the calls its Nodes made in `n_steps` of `nengo.Simulator` and its probe `p`'s
    data there; `seen` is emptied, for our simulator's calls."""
    seen = []
    net = make_net(seen)
    seen.clear()  # (nengo calls each function once when the Node is made)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(n_steps)
    expected = list(seen)
    seen.clear()
    with net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
    return net, seen, expected, ref.data[net.p]


def assert_same_calls(seen, expected, n_calls):
    """Our Nodes' calls `(name, t, x)` against nengo's: nengo's own order of Nodes that do not
    depend on each other varies from build to build, so what must hold is a step's calls
    all before the next step's, each Node called once a step, seeing nengo's values."""
    assert [t for _, t, _ in seen] == [t for _, t, _ in expected] and len(seen) == n_calls
    ours = {(name, t): x for name, t, x in seen}
    theirs = {(name, t): x for name, t, x in expected}
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert np.allclose(ours[key], theirs[key], atol=1e-8), key


def sinks_net(seen):
    """Python Nodes that write nothing (a GUI's plots) around a Node that writes: the sinks
    read the input, an ensemble's filtered value, and what the writing Node fed on."""
    def sink(name):
        return lambda t, x: seen.append((name, round(t, 6), np.array(x, dtype=np.float64)))

    with nengo.Network(seed=1) as net:
        stim = nengo.Node(lambda t: np.sin(8 * t))
        a = nengo.Ensemble(30, 1)
        nengo.Connection(stim, a)
        square = nengo.Node(lambda t, x: x ** 2, size_in=1)
        nengo.Connection(a, square, synapse=0.005)
        b = nengo.Ensemble(30, 1)
        nengo.Connection(square, b)
        for name, pre, synapse in (("input", stim, None), ("a", a, 0.01), ("b", b, 0.02),
                                   ("square", square, None)):
            node = nengo.Node(sink(name), size_in=1, label=name)
            nengo.Connection(pre, node, synapse=synapse)
        net.p = nengo.Probe(b, synapse=0.01)
    return net


@pytest.mark.parametrize("single_steps", [False, True])
def test_sink_nodes_ride_along_with_the_compiled_parts(single_steps):
    """Python Nodes that write nothing end no compiled part: the model above is stepped in
    two compiled calls (around the Node that writes), not one per Python group, and every
    Node is still called once a step, at nengo's times, with nengo's values."""
    net, seen, expected, ref_data = nengo_calls(sinks_net, 30)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        if single_steps:
            for _ in range(30):
                sim.step()
        else:
            sim.run_steps(30)
        calls = sim.runner.segment_calls()[0]
        assert len(calls) == 2  # one Node writes: two compiled parts, whatever the sinks
        assert sum(len(s.sinks) for s in sim.runner.timestep.segments) >= 1
        data = sim.data[net.p]
    assert_same_calls(seen, expected, 4 * 30)
    assert np.allclose(data, ref_data, atol=1e-8)


def reading_net(seen, fail_at=None):
    """Python Nodes that only read (one the input, one an ensemble's filtered value); the
    second raises once at step `fail_at[0]`, if given."""
    def sink(name):
        def function(t, x):
            if name == "a" and fail_at and round(t / 0.001) == fail_at[0]:
                fail_at.clear()
                raise RuntimeError("once")
            seen.append((name, round(t, 6), np.array(x, dtype=np.float64)))
        return function

    with nengo.Network(seed=2) as net:
        stim = nengo.Node(lambda t: np.sin(6 * t))
        a = nengo.Ensemble(25, 1)
        nengo.Connection(stim, a)
        for name, pre, synapse in (("input", stim, None), ("a", a, 0.01)):
            nengo.Connection(pre, nengo.Node(sink(name), size_in=1, label=name), synapse=synapse)
        net.p = nengo.Probe(a, synapse=0.01)
    return net


def test_runs_of_a_model_whose_python_nodes_only_read_are_compiled_loops():
    """Where every Python Node only reads, a run is one compiled loop and the Nodes are
    called after it, step by step: each once a step, at nengo's times, with nengo's values."""
    net, seen, expected, ref_data = nengo_calls(reading_net, 40)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(25)
        sim.step()
        sim.run_steps(14)
        assert ("sink run", False) in sim.runner._run_fns  # (runs went through the loop)
        data = sim.data[net.p]
    assert_same_calls(seen, expected, 2 * 40)
    assert np.allclose(data, ref_data, atol=1e-8)


def test_failed_loop_of_reading_nodes_keeps_no_state():
    """A reading Node that raises in the middle of a run's loop leaves the state as before
    the run: going on gives exactly what a simulator that never failed gives."""
    fail_at = [12]
    net = reading_net([], fail_at)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(5)
        with pytest.raises(RuntimeError, match="once"):
            sim.run_steps(10)
        assert sim.n_steps == 5
        sim.run_steps(10)
        ours = sim.data[net.p]
    net = reading_net([])
    with nengo_dl_nb.Simulator(net, progress_bar=False) as fresh:
        fresh.run_steps(15)
        assert ("sink run", False) in fresh.runner._run_fns
        assert np.array_equal(ours, fresh.data[net.p])


@pytest.mark.parametrize("with_sink", [False, True])
def test_inputs_that_hold_change_and_come_back(with_sink):
    """A step reuses the input tensor it made last while the input's values are the same
    (a GUI slider at rest): an input that holds for a while, changes, comes back to an
    earlier value, and flips the sign of zero must give nengo's outputs at every step."""
    pattern = [0.5] * 6 + [-0.3] * 3 + [0.5] * 4 + [0.0] * 3 + [-0.0] * 3 + [0.7, 0.5] * 3
    seen = []

    def make():
        with nengo.Network(seed=5) as net:
            stim = nengo.Node(lambda t: pattern[min(int(round(t / 0.001)) - 1, len(pattern) - 1)])
            ens = nengo.Ensemble(30, 1)
            nengo.Connection(stim, ens)
            if with_sink:
                nengo.Connection(ens, nengo.Node(lambda t, x: seen.append(float(x[0])),
                                                 size_in=1), synapse=0.005)
            net.p_in = nengo.Probe(stim)
            net.p = nengo.Probe(ens, synapse=0.01)
        return net

    net = make()
    seen.clear()  # (nengo calls the sink once when the Node is made, to learn its output)
    with nengo.Simulator(net, progress_bar=False) as ref:
        for _ in pattern:
            ref.step()
    ref_seen, seen[:] = list(seen), []
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        for _ in pattern:
            sim.step()
        assert sim.runner.uses_python == with_sink
        np.testing.assert_array_equal(sim.data[net.p_in][:, 0], np.float32(pattern))
        assert np.signbit(sim.data[net.p_in][16:19]).all()  # -0.0 fed as -0.0
        np.testing.assert_allclose(sim.data[net.p], ref.data[net.p], atol=1e-5)
    np.testing.assert_allclose(seen, ref_seen, atol=1e-5)
