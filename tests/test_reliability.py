"""Bad input, interrupts and long runs: a clear nengo exception naming the object, and a
simulator that afterwards runs exactly like a fresh one (nothing half-applied)."""
import os
import signal
import subprocess
import sys
import time
import zipfile

import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import SimulationError, ValidationError

import nengo_dl_nb

HERE = os.path.dirname(os.path.abspath(__file__))


def noisy_net(seed=0):
    "An input process with a random stream (so a half-applied run would show) into LIF neurons."
    with nengo.Network(seed=seed) as net:
        noise = nengo.Node(nengo.processes.WhiteNoise(seed=seed + 3), size_out=1, label="noise")
        stim = nengo.Node(np.sin, label="stim")
        ens = nengo.Ensemble(30, 1)
        nengo.Connection(noise, ens)
        nengo.Connection(stim, ens)
        probe = nengo.Probe(ens.neurons)
    return net, noise, stim, probe


def fresh_run(net, probe, n, **kwargs):
    with nengo_dl_nb.Simulator(net, progress_bar=False, **kwargs) as sim:
        sim.run_steps(n)
        return sim.data[probe].copy()


# -- data ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    (np.nan, "non-finite"), (np.inf, "non-finite"), (None, "must be numbers"),
    ("x", "must be numbers")])
def test_bad_values_in_data_are_refused_before_anything_runs(bad, message):
    net, noise, stim, probe = noisy_net()
    expected = fresh_run(net, probe, 8)
    values = np.zeros((1, 4, 1), dtype=object if bad is None or isinstance(bad, str) else float)
    values[0, 2, 0] = bad
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match=f"data for .*stim.*{message}"):
            sim.run_steps(4, data={stim: values})
        assert sim.n_steps == 0
        sim.run_steps(8)  # as a fresh simulator: no stream advanced, no state changed
        np.testing.assert_array_equal(sim.data[probe], expected)


@pytest.mark.parametrize("data", [[1, 2, 3], 5, np.zeros((1, 4, 1))])
def test_data_that_is_not_a_dict(data):
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="Must be a dict mapping input Nodes"):
            sim.run_steps(4, data=data)


def test_ragged_data_names_the_node():
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="stim.*not a regular array"):
            sim.run_steps(2, data={stim: [[[0.0], [1.0]], [[0.0]]]})


def test_bad_data_in_training_is_refused():
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="stim.*non-finite"):
            sim.loss({stim: np.full((2, 3, 1), np.nan), probe: np.zeros((2, 3, 30))})


# -- counts and settings ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [np.nan, np.inf, None, 1.5, -1, "3"])
def test_bad_step_counts(n):
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="n_steps"):
            sim.run_steps(n)
        assert sim.n_steps == 0


@pytest.mark.parametrize("t", [np.nan, np.inf, None, -0.1, "1"])
def test_bad_run_times(t):
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="time_in_seconds"):
            sim.run(t)


@pytest.mark.parametrize("kwargs, attr", [
    ({"minibatch_size": 1.5}, "minibatch_size"), ({"minibatch_size": 0}, "minibatch_size"),
    ({"unroll_simulation": 2.5}, "unroll_simulation"), ({"dt": 0}, "dt"),
    ({"dt": -0.001}, "dt"), ({"dt": np.nan}, "dt")])
def test_bad_simulator_arguments(kwargs, attr):
    net, noise, stim, probe = noisy_net()
    with pytest.raises(ValidationError, match=attr):
        nengo_dl_nb.Simulator(net, progress_bar=False, **kwargs)


def test_whole_number_floats_are_counts():
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=2.0, progress_bar=False) as sim:
        sim.run_steps(3.0)
        assert sim.data[probe].shape == (2, 3, 30)


# -- parameter files -------------------------------------------------------------------------
def broken_files(folder, good):
    data = open(good, "rb").read()
    files = {"truncated": data[: len(data) // 2], "random": os.urandom(300), "empty": b""}
    paths = {}
    for name, content in files.items():
        paths[name] = os.path.join(folder, f"{name}.npz")
        with open(paths[name], "wb") as f:
            f.write(content)
    crc = bytearray(data)  # a stored member with one payload byte changed: a bad CRC
    with zipfile.ZipFile(good) as z:
        info = z.infolist()[0]
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    crc[offset] ^= 0xFF
    paths["bad crc"] = os.path.join(folder, "crc.npz")
    with open(paths["bad crc"], "wb") as f:
        f.write(bytes(crc))
    return paths


def test_broken_parameter_files(tmp_path):
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.save_params(tmp_path / "good")
        before = [v.numpy().copy() for v in sim.runner.param_vars.values()]
        for name, path in broken_files(str(tmp_path), str(tmp_path / "good.npz")).items():
            with pytest.raises(SimulationError, match=f"{path}.*not a parameter file|{path}"):
                sim.load_params(path)
            for v, old in zip(sim.runner.param_vars.values(), before):
                np.testing.assert_array_equal(v.numpy(), old)


def test_non_numeric_local_values_change_nothing(tmp_path):
    net, noise, stim, probe = noisy_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(5)
        sim.save_params(tmp_path / "p", include_local=True)
        with np.load(tmp_path / "p.npz") as saved:
            arrays = dict(saved)
        local = next(name for name in arrays if name.startswith("local/"))
        arrays[local] = np.full(arrays[local].shape, "x")  # right name and shape, not numbers
        np.savez(tmp_path / "bad.npz", **arrays)
        params = [v.numpy().copy() for v in sim.runner.param_vars.values()]
        state = {k: v.numpy().copy() for k, v in sim.runner.state_vars.items()}
        with pytest.raises(SimulationError, match="not numbers"):
            sim.load_params(tmp_path / "bad", include_local=True)
        for v, old in zip(sim.runner.param_vars.values(), params):
            np.testing.assert_array_equal(v.numpy(), old)
        for k, v in sim.runner.state_vars.items():
            np.testing.assert_array_equal(v.numpy(), state[k])


# -- interrupts and errors inside the simulation ---------------------------------------------
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_interrupts_inside_a_node_come_out_as_themselves(error):
    calls = []

    def node_fn(t, x):
        calls.append(t)
        if len(calls) == 3:
            raise error()
        return x

    with nengo.Network(seed=0) as net:
        stim = nengo.Node(np.sin)
        node = nengo.Node(node_fn, size_in=1, size_out=1)
        nengo.Connection(stim, node, synapse=None)
        probe = nengo.Probe(node)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(error):
            sim.run_steps(5)
        assert sim.n_steps == 0
        sim.run_steps(5)  # usable afterwards
        np.testing.assert_allclose(sim.data[probe][:, 0], np.sin(0.001 * np.arange(1, 6)),
                                   atol=1e-6)


@pytest.mark.parametrize("single_steps", [False, True])
def test_failed_run_with_python_nodes_keeps_no_state(single_steps):
    """A Node with an input that raises mid-run (or mid-step) leaves the state (neurons,
    synapses) as before the run: continuing gives exactly a fresh simulator's output."""
    fail_at = []

    def model():
        def watch(t, x):
            if fail_at and round(t / 0.001) == fail_at[0]:
                fail_at.clear()
                raise RuntimeError("once")
            return x

        with nengo.Network(seed=3) as net:
            stim = nengo.Node(lambda t: np.sin(10 * t))
            ens = nengo.Ensemble(20, 1)
            node = nengo.Node(watch, size_in=1, size_out=1)
            nengo.Connection(stim, ens)
            nengo.Connection(ens, node, synapse=0.01)
            probe = nengo.Probe(ens, synapse=0.005)
            node_probe = nengo.Probe(node)
        return net, probe, node_probe

    net, probe, node_probe = model()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(3)
        fail_at.append(7)
        with pytest.raises(RuntimeError, match="once"):
            if single_steps:
                for _ in range(10):
                    sim.step()
            else:
                sim.run_steps(10)
        if single_steps:  # steps 4 to 6 were committed one by one; step 7 failed
            assert sim.n_steps == 6
            sim.run_steps(4)
        else:
            assert sim.n_steps == 3
            sim.run_steps(7)
        ours = sim.data[probe], sim.data[node_probe]
    net, probe, node_probe = model()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as fresh:
        fresh.run_steps(10)
        np.testing.assert_array_equal(ours[0], fresh.data[probe])
        np.testing.assert_array_equal(ours[1], fresh.data[node_probe])


def test_failed_run_leaves_input_streams_as_they_were():
    "A run that fails does not consume the random stream of an input process."
    calls = []

    def sometimes_fails(t, x):
        calls.append(t)
        if len(calls) == 2:
            raise RuntimeError("once")
        return x

    def model():
        with nengo.Network(seed=2) as net:
            noise = nengo.Node(nengo.processes.WhiteNoise(seed=5), size_out=1)
            node = nengo.Node(sometimes_fails, size_in=1, size_out=1)
            nengo.Connection(noise, node, synapse=None)
            probe = nengo.Probe(node)
        return net, probe

    calls.clear()
    net, probe = model()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(RuntimeError, match="once"):
            sim.run_steps(6)
        sim.run_steps(6)
        retried = sim.data[probe].copy()
    calls.append("skip")  # the next model's function never fails
    net, probe = model()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(6)
        np.testing.assert_array_equal(retried, sim.data[probe])


def test_sigint_during_long_runs_commits_whole_chunks():
    """A real Ctrl-C (SIGINT) at a random moment of a long run: what was committed agrees
    (steps, time, probe rows), and continuing gives exactly the uninterrupted run."""
    rng = np.random.RandomState(0)
    results = []
    for attempt in range(4):
        child = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "interrupt_child.py"), "400000", str(attempt)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.2, 2.0))
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        import json
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        assert r["interrupted"], r  # the run was still going when the signal arrived
        assert r["rows"] == [r["steps_done"]] * 2 and r["time_ok"], r
        assert r["continues_exactly"], r
    assert len({r["steps_done"] for r in results}) > 1  # interrupted at different places


# -- long runs of single steps ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_single_steps_do_not_grow_memory(dtype):
    """Each step hands its input values to TensorFlow as NumPy arrays, which it does not keep
    (a NumPy float64 scalar is a Python float, which it keeps)."""
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    with nengo.Network(seed=0) as net:
        nengo_dl_nb.configure_settings(keep_history=False, dtype=dtype)
        stim = nengo.Node(lambda t: np.sin(t) + 1e-3 * t)  # a new value every step
        ens = nengo.Ensemble(10, 1)
        nengo.Connection(stim, ens)
        nengo.Probe(ens, synapse=0.01)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        for _ in range(5000):
            sim.step()
        start = rss_mb()
        for _ in range(20000):
            sim.step()
        grown = rss_mb() - start
    assert grown < 4, f"{grown:.1f} MB over 20,000 steps"  # 0.8 KB a step would be 15 MB


# -- many models in one process (a test suite) -----------------------------------------------
def test_closed_simulators_leave_no_traced_graphs():
    """A test suite builds hundreds of models in one process: once a simulator is closed and
    dropped, none of the graphs traced for it may stay alive (each is megabytes). Models of
    different structures, run in loops, stepped (with a Python Node) and trained."""
    import gc
    import weakref

    from tensorflow.python.framework.func_graph import FuncGraph

    def graphs():
        gc.collect()
        return {id(g): weakref.ref(g) for g in gc.get_objects() if isinstance(g, FuncGraph)}

    def use(k):
        with nengo.Network(seed=k) as net:
            stim = nengo.Node(lambda t: np.ones(k) * t)
            ens = nengo.Ensemble(10 + k, k)
            out = nengo.Node(size_in=k)
            nengo.Connection(stim, ens)
            nengo.Connection(ens, out)
            probe = nengo.Probe(out)
        with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
            sim.run_steps(5)
            sim.step()
            sim.compile(optimizer=tf.optimizers.SGD(0.01), loss="mse")
            sim.fit({stim: np.zeros((2, 3, k))}, {probe: np.zeros((2, 3, k))}, epochs=1,
                    verbose=0)

    from nengo_dl_nb.runner import _shared_steps

    use(1)  # whatever TensorFlow itself keeps once per process
    before = graphs()
    for k in (2, 3):
        use(k)
    # the single-step functions remembered for reuse by later models of the same
    # structure (a bounded number) are the only graphs left
    shared = {id(call.concrete.graph) for call in _shared_steps.values()}
    alive = [ref() for key, ref in graphs().items()
             if key not in before and key not in shared and ref() is not None]
    assert not alive, [g.name for g in alive]
