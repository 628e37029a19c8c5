"""Simulator behaviour: state across runs, resets, data feeding, probes, errors."""
import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import ReadonlyError, SimulatorClosed, ValidationError

import nengo_dl_nb


def stim_fn(t):
    return np.sin(5 * t)


@pytest.fixture(scope="module")
def net():
    with nengo.Network(seed=0) as net:
        net.stim = nengo.Node(stim_fn)
        net.ens = nengo.Ensemble(30, 1)
        net.noise = nengo.Node(nengo.processes.WhiteNoise(seed=None), size_out=1)
        nengo.Connection(net.stim, net.ens)
        nengo.Connection(net.noise, net.ens, transform=0.1)
        net.p = nengo.Probe(net.ens, synapse=0.01)
        net.p_sampled = nengo.Probe(net.ens, synapse=0.01, sample_every=0.003)
    return net


def test_runs_continue_and_time_advances(net):
    with nengo_dl_nb.Simulator(net, progress_bar=False) as whole:
        whole.run_steps(30)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as parts:
        parts.run_steps(10)
        parts.step()
        parts.run(0.019)
        assert parts.n_steps == 30 and np.isclose(parts.time, 0.03)
        np.testing.assert_array_equal(parts.data[net.p], whole.data[net.p])
        np.testing.assert_allclose(parts.trange(), np.arange(1, 31) * 0.001)


def test_sample_every_matches_nengo(net):
    with nengo.Simulator(net, progress_bar=False, seed=3) as ref:
        ref.run_steps(20)
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=3) as sim:
        sim.run_steps(7)
        sim.run_steps(13)
    assert sim.data[net.p_sampled].shape == ref.data[net.p_sampled].shape == (6, 1)
    np.testing.assert_allclose(sim.trange(sample_every=0.003), ref.trange(sample_every=0.003))


def test_reset_reproduces_random_streams(net):
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=5) as sim:
        sim.run_steps(50)
        first = sim.data[net.p].copy()
        sim.reset()
        assert sim.n_steps == 0 and sim.data[net.p].shape == (0, 1)
        sim.run_steps(50)
        np.testing.assert_array_equal(sim.data[net.p], first)
        sim.reset(seed=6)
        sim.run_steps(50)
        assert not np.allclose(sim.data[net.p], first)


def test_soft_reset(net):
    with nengo_dl_nb.Simulator(net, progress_bar=False, seed=5) as sim:
        sim.run_steps(20)
        first = sim.data[net.p].copy()
        sim.soft_reset()
        assert sim.data[net.p].shape == (20, 1)  # probes kept
        sim.run_steps(20)
        np.testing.assert_array_equal(sim.data[net.p][20:], first)
        sim.soft_reset(include_probes=True)
        assert sim.data[net.p].shape == (0, 1)


def test_data_overrides_node_and_minibatch_shapes(net):
    data = np.linspace(-1, 1, 2 * 40).reshape(2, 40, 1)
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        sim.run_steps(40, data={net.stim: data})
        assert sim.data[net.p].shape == (2, 40, 1)
        assert sim.data[net.p_sampled].shape == (2, 13, 1)
    with nengo.Network() as check:
        stim = nengo.Node(size_in=0, output=[0.0])
        p = nengo.Probe(stim)
    with nengo_dl_nb.Simulator(check, minibatch_size=2, progress_bar=False) as sim:
        sim.run_steps(40, data={stim: data})
        np.testing.assert_allclose(sim.data[p], data)


def test_short_runs_shared_and_per_item_inputs():
    # a node's computed values (the same for every item) travel as one item's, `data` as
    # given, in one simulator; each short run keeps only its own steps' probe values (the
    # run's history buffers are padded to `chunk_size` rows)
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(stim_fn)
        ens = nengo.Ensemble(20, 1)
        nengo.Connection(stim, ens)
        p = nengo.Probe(ens, synapse=0.01)
        p_stim = nengo.Probe(stim)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(20)
    data = np.linspace(-1, 1, 3 * 5).reshape(3, 5, 1)
    with nengo_dl_nb.Simulator(net, minibatch_size=3, progress_bar=False) as sim:
        for _ in range(4):
            sim.run_steps(5)
        for chunk in sim._probe_data[p]:
            root = chunk
            while root.base is not None:
                root = root.base
            assert root.shape[0] == 5  # the run's 5 steps, not the padded buffer
        for item in range(3):
            np.testing.assert_allclose(sim.data[p][item], ref.data[p], atol=1e-5)
        sim.run_steps(5, data={stim: data})
        np.testing.assert_allclose(sim.data[p_stim][:, 20:], data, atol=1e-7)
        sim.run_steps(5)  # computed again: the node's own values at steps 26-30
        np.testing.assert_allclose(sim.data[p_stim][:, 25:, 0],
                                   np.broadcast_to(stim_fn(np.arange(26, 31) * 0.001), (3, 5)),
                                   atol=1e-7)


def test_bad_input_errors(net):
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match=r"shape \(1, 5, 2\).*expected \(1, 5, 1\)"):
            sim.run_steps(5, data={net.stim: np.zeros((1, 5, 2))})
        with pytest.raises(ValidationError, match="not an input Node"):
            sim.run_steps(5, data={net.ens: np.zeros((1, 5, 1))})
        with pytest.raises(ValidationError, match="integer >= 0"):
            sim.run_steps(-1)
        with pytest.raises(ReadonlyError):
            sim.dt = 0.002
        assert sim.n_steps == 0  # nothing half-applied
    with pytest.raises(SimulatorClosed):
        sim.run_steps(1)
    with pytest.raises(SimulatorClosed):
        sim.reset()
    assert sim.data[net.p].shape == (0, 1)  # data still readable after close


def test_python_errors_surface_unchanged():
    with nengo.Network() as net:
        node = nengo.Node(lambda t, x: np.nan * x, size_in=1)
        nengo.Connection(nengo.Node([1.0]), node)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(nengo.exceptions.SimulationError, match="non-finite"):
            sim.run_steps(2)


def test_signals_and_params_readable(net):
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        built = sim.data[net.ens]
        assert built.encoders.shape == (30, 1)
        sim.step()
        step_sig = sim.model.step
        assert sim.signals[step_sig] == 1


class Clip(nengo.Process):
    "A process with no TensorFlow builder: clips its input."

    def make_step(self, shape_in, shape_out, dt, rng, state):
        return lambda t, x: np.clip(x, -0.5, 0.5)


class HalfWaveSquare(nengo.RectifiedLinear):
    "A neuron type with no TensorFlow builder: max(J, 0) ** 2."

    def step(self, dt, J, output):
        output[...] = np.maximum(J, 0) ** 2


def test_generic_operator_fallback():
    """Operators with no TensorFlow builder (a custom process and a custom neuron type)
    run through their own make_step and match nengo.Simulator."""
    with nengo.Network(seed=1) as net:
        stim = nengo.Node(lambda t: np.sin(8 * t))
        a = nengo.Ensemble(30, 1, neuron_type=HalfWaveSquare())
        clip = nengo.Node(Clip(), size_in=1)
        nengo.Connection(stim, a)
        nengo.Connection(a, clip)
        p = nengo.Probe(clip, synapse=0.02)
        nengo_dl_nb.configure_settings(dtype=tf.float64)
    with nengo.Simulator(net, progress_bar=False) as ref:
        ref.run_steps(200)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(200)
        assert sim.runner.uses_python and not sim.runner.jit_compile
    np.testing.assert_allclose(sim.data[p], ref.data[p], atol=1e-8)


def test_tensorboard_graph_written(tmp_path):
    with nengo.Network() as net:
        nengo.Probe(nengo.Node([1.0]))
    with nengo_dl_nb.Simulator(net, tensorboard=str(tmp_path), progress_bar=False) as sim:
        sim.run_steps(3)
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_pickle_round_trip(net):
    import pickle
    with nengo_dl_nb.Simulator(net, minibatch_size=2, seed=4, progress_bar=False) as sim:
        sim.run_steps(30)
        copy, p = pickle.loads(pickle.dumps((sim, net.p)))  # together, as identities matter
        sim.run_steps(20)
    with copy:
        assert copy.n_steps == 30 and copy.seed == 4 and copy.minibatch_size == 2
        np.testing.assert_array_equal(copy.data[p], sim.data[net.p][:, :30])
        copy.run_steps(20)
        # the white noise process keeps its stream: the continuation is identical
        np.testing.assert_allclose(copy.data[p], sim.data[net.p], atol=1e-6)
    assert pickle.loads(pickle.dumps(copy)).closed


def test_two_simulators_in_two_threads_get_their_own_node_errors():
    """Each runner keeps the errors of the Python functions it runs: stepping two simulators
    from two threads, every caller gets its own Node's exception, never the other's."""
    import threading

    class ErrorA(Exception):
        pass

    class ErrorB(Exception):
        pass

    def failing_net(error):
        def fail(t, x):
            raise error(f"{error.__name__} at {t}")
        with nengo.Network(seed=0) as net:
            stim = nengo.Node(np.sin)
            node = nengo.Node(fail, size_in=1, size_out=1)
            nengo.Connection(stim, node, synapse=None)
            nengo.Probe(node)
        return net

    sims = {error: nengo_dl_nb.Simulator(failing_net(error), progress_bar=False)
            for error in (ErrorA, ErrorB)}
    caught = {ErrorA: [], ErrorB: []}
    start = threading.Barrier(2)

    def stepper(error):
        start.wait()
        for _ in range(40):
            try:
                sims[error].step() if _ % 2 else sims[error].run_steps(3, progress_bar=False)
            except Exception as e:  # noqa: BLE001 (every exception is checked below)
                caught[error].append(e)

    threads = [threading.Thread(target=stepper, args=(e,)) for e in (ErrorA, ErrorB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sim in sims.values():
        sim.close()
    for error, errors in caught.items():
        assert len(errors) == 40
        assert all(type(e) is error for e in errors), {type(e).__name__ for e in errors}
