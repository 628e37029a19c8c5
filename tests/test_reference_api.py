"""Behaviours the reference API (and nengo.Simulator, for running models) documents, checked
the way programs written for them use them."""
import subprocess
import sys

import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import SimulationError, ValidationError

import nengo_dl_nb


def simple_net(seed=0):
    with nengo.Network(seed=seed) as net:
        stim = nengo.Node(np.sin, label="stim")
        ens = nengo.Ensemble(20, 1)
        nengo.Connection(stim, ens)
        probe = nengo.Probe(ens, synapse=0.01)
    return net, stim, ens, probe


# -- a quiet start --------------------------------------------------------------------------
def test_import_prints_nothing():
    result = subprocess.run([sys.executable, "-c", "import nengo_dl_nb"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_startup_filter_keeps_real_messages():
    from nengo_dl_nb import startup_messages
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR\nI0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n"
             "I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
             "E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)")
    assert startup_messages(noise) == []
    real = "W0000 00:00:1.0 1 op.cc:1] something a user must see"
    assert startup_messages(noise + "\n" + real) == [real]
    # with a CUDA driver present, a failing cuInit is a real error
    assert len(startup_messages("E0000 cuda_platform.cc:52] failed call to cuInit: x")) == 1


# -- sim.data keeps the minibatch axis whenever minibatch_size is given -----------------------
@pytest.mark.parametrize("minibatch_size, shape", [(None, (5, 1)), (1, (1, 5, 1)), (3, (3, 5, 1))])
def test_data_shape_follows_minibatch_size(minibatch_size, shape):
    net, stim, ens, probe = simple_net()
    with nengo_dl_nb.Simulator(net, minibatch_size=minibatch_size, progress_bar=False) as sim:
        sim.run_steps(5)
        assert sim.data[probe].shape == shape
        with nengo.Simulator(net, progress_bar=False) as ref:
            ref.run_steps(5)
        first_item = sim.data[probe] if minibatch_size is None else sim.data[probe][0]
        np.testing.assert_allclose(first_item, ref.data[probe], atol=2e-4)


# -- node outputs are fixed when the simulator is built ---------------------------------------
def test_node_output_changed_after_build_changes_nothing():
    sims = []
    for make in (nengo.Simulator, nengo_dl_nb.Simulator):
        net, stim, ens, probe = simple_net()
        with make(net, progress_bar=False) as sim:
            stim.output = lambda t: 100.0  # after the build: neither simulator sees it
            sim.run_steps(20)
            sim.step()
        sims.append(sim.data[probe])
    ref, ours = sims
    assert np.max(np.abs(ref)) < 1.5
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_output_swapped_only_during_the_build_is_used():
    """nengo_gui replaces a slider's output with its own process while the model builds, then
    puts the original back: the simulation must run what was built."""
    net, stim, ens, probe = simple_net()
    original = stim.output
    stim.output = nengo.processes.Piecewise({0: 0.5})
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        stim.output = original
        sim.run_steps(10)
        for _ in range(5):
            sim.step()
    stim.output = nengo.processes.Piecewise({0: 0.5})
    with nengo.Simulator(net, progress_bar=False) as ref:
        stim.output = original
        ref.run_steps(15)
    np.testing.assert_allclose(sim.data[probe], ref.data[probe], atol=2e-4)


def test_process_assigned_after_build_does_not_crash():
    net, stim, ens, probe = simple_net()
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        stim.output = nengo.processes.Piecewise({0: 1.0})
        sim.run_steps(3)
        sim.step()
        sim.reset()
        sim.step()
    assert sim.n_steps == 1


# -- node functions get nengo's t --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_node_functions_get_float64_time(dtype):
    def record(seen):
        def fn(t, *x):
            seen.append(t)
            return 1.0 if t > 0.001 else 0.0
        return fn

    times = {}
    for name in ("nengo", "ours"):
        seen_in, seen_mid = [], []
        with nengo.Network(seed=1) as net:
            nengo_dl_nb.configure_settings(dtype=dtype)
            a = nengo.Node(record(seen_in))  # no input: computed before the loop
            b = nengo.Node(record(seen_mid), size_in=1, size_out=1)  # input: inside the loop
            nengo.Connection(a, b, synapse=None)
            p = nengo.Probe(b)
        seen_in.clear()
        seen_mid.clear()
        make = nengo.Simulator if name == "nengo" else nengo_dl_nb.Simulator
        with make(net, progress_bar=False) as sim:
            sim.run_steps(4)
            sim.step()
            out = sim.data[p][:, 0].tolist()
        times[name] = (seen_in, seen_mid, out)
    assert times["ours"][0] == times["nengo"][0] == [n * 0.001 for n in range(1, 6)]
    assert times["ours"][1] == times["nengo"][1]
    assert times["ours"][2] == times["nengo"][2] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert all(type(t) is float for t in times["ours"][0] + times["ours"][1])


# -- check_gradients ---------------------------------------------------------------------------
def smooth_net(dtype):
    with nengo.Network(seed=3) as net:
        nengo_dl_nb.configure_settings(dtype=dtype)
        inp = nengo.Node(lambda t: np.sin(10 * t) * np.ones(2))
        a = nengo.Ensemble(8, 2, neuron_type=nengo.LIFRate())
        b = nengo.Ensemble(8, 2, neuron_type=nengo.RectifiedLinear())
        c = nengo.Ensemble(8, 2, neuron_type=nengo_dl_nb.SoftLIFRate(sigma=0.5))
        nengo.Connection(inp, a, synapse=None)
        nengo.Connection(a, b, synapse=0.005)
        nengo.Connection(b, c, synapse=None)
        nengo.Probe(c, synapse=0.01)
    return net


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_check_gradients_passes_correct_gradients_at_default_tolerances(dtype):
    with nengo_dl_nb.Simulator(smooth_net(dtype), minibatch_size=2, progress_bar=False) as sim:
        sim.check_gradients(max_elements=24)


def test_check_gradients_flags_non_finite_gradients():
    with nengo.Network(seed=2) as net:
        inp = nengo.Node([0.0])
        ens = nengo.Ensemble(5, 1, neuron_type=nengo.RectifiedLinear())
        node = nengo_dl_nb.TensorNode(lambda t, x: 1 / (x - x), size_in=1, size_out=1)
        nengo.Connection(inp, ens, synapse=None)
        nengo.Connection(ens, node, synapse=None)
        nengo.Probe(node)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(SimulationError, match="not finite"):
            sim.check_gradients()


def test_check_gradients_inference_only_is_a_validation_error():
    net = smooth_net(tf.float32)
    with net:
        nengo_dl_nb.configure_settings(inference_only=True)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="inference_only"):
            sim.check_gradients()


# -- deprecated arguments of the reference -----------------------------------------------------
def test_simulator_dtype_argument_is_deprecated_but_works():
    net, stim, ens, probe = simple_net()
    with pytest.warns(DeprecationWarning, match="configure_settings"):
        sim = nengo_dl_nb.Simulator(net, 0.001, 0, None, tf.float64, progress_bar=False)
    with sim:
        sim.run_steps(3)
        assert sim.runner.dtype == tf.float64
        assert sim.data[probe].dtype == np.float64


def test_string_objective_is_deprecated_but_works():
    with nengo.Network(seed=0) as net:
        x = nengo.Node([0.0])
        ens = nengo.Ensemble(10, 1, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(x, ens, synapse=None)
        p = nengo.Probe(ens)
    data = {x: np.linspace(-1, 1, 4)[:, None, None], p: np.ones((4, 1, 1))}
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        with pytest.warns(DeprecationWarning, match="objectives.mse"):
            by_name = sim.loss(data, objective={p: "mse"})
        assert by_name == sim.loss(data, objective={p: nengo_dl_nb.obj.mse})
        with pytest.warns(DeprecationWarning):
            sim.train(data, tf.keras.optimizers.SGD(1e-3), objective={p: "mse"},
                      progress_bar=False)
        with pytest.raises(ValidationError, match="Unknown objective"):
            sim.loss(data, objective={p: "hinge"})


def test_obj_is_the_objectives_module():
    assert nengo_dl_nb.obj.mse is nengo_dl_nb.objectives.mse
    assert nengo_dl_nb.obj.Regularize is nengo_dl_nb.objectives.Regularize


# -- what trains --------------------------------------------------------------------------------
def test_probe_readout_is_not_trained():
    with nengo.Network(seed=4) as net:
        x = nengo.Node([0.0])
        ens = nengo.Ensemble(30, 1, neuron_type=nengo.RectifiedLinear())
        nengo.Connection(x, ens, synapse=None)
        p = nengo.Probe(ens)
    inputs = np.linspace(-1, 1, 8)[:, None, None]
    data = {x: inputs, p: inputs ** 2}
    with nengo_dl_nb.Simulator(net, minibatch_size=8, progress_bar=False) as sim:
        conn = next(obj for obj in sim.model.params if isinstance(obj, nengo.Connection)
                    and obj.post_obj is p)
        decoders = sim.signals[sim.model.sig[conn]["weights"]].copy()
        encoders = sim.signals[sim.model.sig[ens]["encoders"]].copy()
        sim.train(data, tf.keras.optimizers.SGD(0.01, momentum=0.9), n_epochs=20,
                  progress_bar=False)
        np.testing.assert_array_equal(sim.signals[sim.model.sig[conn]["weights"]], decoders)
        assert np.any(sim.signals[sim.model.sig[ens]["encoders"]] != encoders)
        assert np.isfinite(sim.loss(data))


def test_frozen_objects_stay_put_under_weight_decay():
    with nengo.Network(seed=5) as net:
        nengo_dl_nb.configure_settings(trainable=None)
        x = nengo.Node([0.0])
        a = nengo.Ensemble(10, 1, neuron_type=nengo.RectifiedLinear())
        out = nengo.Node(size_in=1)
        c1 = nengo.Connection(x, a, synapse=None, transform=[[1.0]])
        c2 = nengo.Connection(a, out, synapse=None)
        p = nengo.Probe(out)
    net.config[a].trainable = False
    net.config[a.neurons].trainable = False
    net.config[c1].trainable = False
    data = {x: np.ones((2, 1, 1)), p: np.zeros((2, 1, 1))}
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        before = {o: sim._live_params(o) for o in (a, c1, c2)}
        sim.train(data, tf.keras.optimizers.AdamW(0.01, weight_decay=0.5), n_epochs=3,
                  progress_bar=False)
        after = {o: sim._live_params(o) for o in (a, c1, c2)}
    for obj in (a, c1):
        for name in before[obj]:
            np.testing.assert_array_equal(after[obj][name], before[obj][name])
    assert np.any(after[c2]["weights"] != before[c2]["weights"])


def test_python_node_between_some_parameters_and_the_objective():
    """Parameters that reach the objective only through a Python Node stay as they are (with
    a warning naming the Node); the others train."""
    with nengo.Network(seed=6) as net:
        x = nengo.Node([0.0])
        a = nengo.Ensemble(10, 1, neuron_type=nengo.RectifiedLinear())
        b = nengo.Ensemble(10, 1, neuron_type=nengo.RectifiedLinear())
        square = nengo.Node(lambda t, v: v ** 2, size_in=1, label="square")
        out = nengo.Node(size_in=1)
        c_xa = nengo.Connection(x, a, synapse=None, transform=[[1.0]])
        nengo.Connection(a, square, synapse=None)
        c_sb = nengo.Connection(square, b, synapse=None, transform=[[1.0]])
        c_xb = nengo.Connection(x, b, synapse=None, transform=[[0.5]])
        c_out = nengo.Connection(b, out, synapse=None)
        p = nengo.Probe(out)
    inputs = np.linspace(-1, 1, 4)[:, None, None]
    data = {x: inputs, p: np.zeros_like(inputs)}
    with nengo_dl_nb.Simulator(net, minibatch_size=4, progress_bar=False) as sim:
        before = {o: sim._live_params(o) for o in (a, c_xa, c_sb, c_xb, c_out)}
        with pytest.warns(UserWarning, match="square.*left unchanged"):
            sim.train(data, tf.keras.optimizers.SGD(0.05), n_epochs=2, progress_bar=False)
        after = {o: sim._live_params(o) for o in (a, c_xa, c_sb, c_xb, c_out)}
    for name in before[a]:  # behind the Python node
        np.testing.assert_array_equal(after[a][name], before[a][name])
    np.testing.assert_array_equal(after[c_xa]["weights"], before[c_xa]["weights"])
    for obj in (c_out,):  # reachable
        assert np.any(after[obj]["weights"] != before[obj]["weights"])


def test_get_nengo_params_of_a_direct_ensemble_is_an_error():
    with nengo.Network() as net:
        ens = nengo.Ensemble(1, 1, neuron_type=nengo.Direct())
        other = nengo.Ensemble(5, 1)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        with pytest.raises(ValidationError, match="Direct mode"):
            sim.get_nengo_params(ens)
        sim.freeze_params(net)  # nothing to freeze in it, no error
        assert "gain" in sim.get_nengo_params(other)
