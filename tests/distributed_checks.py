"""Run by tests/test_distribute.py in a fresh process: `python distributed_checks.py R`
splits the CPU into R logical devices (which must happen before TensorFlow starts), runs
the same models with and without a MirroredStrategy over them, and prints one JSON line:
{check: largest absolute difference from the single-device simulator, or an error message}."""
import contextlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPLICAS = int(sys.argv[1])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

import nengo  # noqa: E402
from nengo.exceptions import ValidationError  # noqa: E402

import nengo_dl_nb  # noqa: E402

STRATEGY = tf.distribute.MirroredStrategy(
    [d.name for d in tf.config.list_logical_devices("CPU")])
MB = 8
results = {"replicas": STRATEGY.num_replicas_in_sync}


def diff(a, b):
    "Largest difference relative to the largest magnitude (or absolute, below 1)."
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(a))))


def sims(net, **kwargs):
    "A single-device simulator and a distributed one of `net`."
    return (nengo_dl_nb.Simulator(net, minibatch_size=MB, progress_bar=False, **kwargs),
            nengo_dl_nb.Simulator(net, minibatch_size=MB, progress_bar=False,
                                  strategy=STRATEGY, **kwargs))


def spiking_net():
    "Spiking neurons, a noise process, a learning rule (per-item weights), synapses."
    with nengo.Network(seed=0) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        stim = nengo.Node(np.zeros(2))
        noise = nengo.Node(nengo.processes.WhiteSignal(1, 5, seed=1), size_out=2)
        ens = nengo.Ensemble(30, 2, neuron_type=nengo.LIF())
        out = nengo.Node(size_in=2)
        nengo.Connection(stim, ens)
        nengo.Connection(noise, ens, transform=0.3)
        conn = nengo.Connection(ens, out, synapse=0.01, learning_rule_type=nengo.PES(1e-3))
        nengo.Connection(out, conn.learning_rule)
        nengo.Connection(stim, conn.learning_rule, transform=-1)
        probes = [nengo.Probe(out), nengo.Probe(ens.neurons), nengo.Probe(conn, "weights")]
    return net, stim, conn, probes


def check_run():
    net, stim, conn, probes = spiking_net()
    x = np.random.RandomState(0).uniform(-1, 1, (MB, 30, 2))
    one, many = sims(net)
    with one, many:
        for sim in (one, many):
            sim.run_steps(30, data={stim: x})
            sim.run_steps(11)  # the noise process continues, the stimulus node is zero
            sim.step()  # single steps too
            sim.step()
        results["run_steps"] = max(diff(one.data[p], many.data[p]) for p in probes)
        results["run_steps_shape"] = list(many.data[probes[0]].shape)
        results["per_item_weights_differ"] = bool(
            np.ptp(many.data[probes[2]][:, -1], axis=0).max() > 0)
        results["state"] = max(diff(v.numpy(), many.runner.state_vars[k].numpy())
                               for k, v in one.runner.state_vars.items())
        results["signals"] = diff(one.signals[one.model.sig[conn]["weights"]],
                                  many.signals[many.model.sig[conn]["weights"]])
        # state written whole is read back whole (the replicas' slices in order)
        k, view = next(iter(many.runner.state_vars.items()))
        value = np.random.RandomState(1).randn(*view.shape)
        view.assign(value)
        results["state_roundtrip"] = diff(view.numpy(), value)


def regression_net():
    with nengo.Network(seed=0) as net:
        nengo_dl_nb.configure_settings(dtype=tf.float64)
        inp = nengo.Node(np.zeros(1))
        ens = nengo.Ensemble(40, 1, neuron_type=nengo.LIF())
        out = nengo.Node(size_in=1)
        nengo.Connection(inp, ens, synapse=None)
        nengo.Connection(ens, out, function=lambda x: 0, synapse=None)
        p = nengo.Probe(out)
    return net, inp, p


def check_train():
    net, inp, p = regression_net()
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (2 * MB, 3, 1))
    data = {inp: x, p: x ** 2}
    one, many = sims(net)
    with one, many:
        # one step on the full minibatch, plain gradient descent
        for sim, scope in ((one, None), (many, STRATEGY)):
            if scope is None:
                opt = tf.keras.optimizers.SGD(0.05)
            else:
                with scope.scope():
                    opt = tf.keras.optimizers.SGD(0.05)
            sim.history = sim.train({inp: x[:MB], p: x[:MB] ** 2}, opt, n_epochs=1,
                                    shuffle=False, progress_bar=False)
        tg1, tg2 = one.runner, many.runner
        results["train_step_params"] = max(diff(v.numpy(), tg2.param_vars[k].numpy())
                                           for k, v in tg1.param_vars.items())
        results["train_step_changed"] = max(  # the step did change the parameters
            float(np.max(np.abs(v.numpy() - tg1.layout.initial_value(k))))
            for k, v in tg1.param_vars.items())
        results["train_step_loss"] = diff(one.history["loss"], many.history["loss"])
        # an epoch of Adam over two shuffled minibatches, in truncated blocks
        for sim, scope in ((one, None), (many, STRATEGY)):
            with (scope.scope() if scope else contextlib.nullcontext()):
                opt = tf.keras.optimizers.Adam(1e-2)
            sim.train(data, opt, n_epochs=2, truncation=2, progress_bar=False)
        results["train_adam_params"] = max(diff(v.numpy(), tg2.param_vars[k].numpy())
                                           for k, v in tg1.param_vars.items())
        # targets that are the output gradient (objective None: a sum over items)
        for sim, scope in ((one, None), (many, STRATEGY)):
            with (scope.scope() if scope else contextlib.nullcontext()):
                opt = tf.keras.optimizers.SGD(1e-3)
            sim.train(data, opt, objective={p: None}, shuffle=False, progress_bar=False)
        results["train_gradient_targets_params"] = max(
            diff(v.numpy(), tg2.param_vars[k].numpy()) for k, v in tg1.param_vars.items())
        # loss and run_batch (rates in training mode, spikes otherwise)
        results["loss"] = max(diff(one.loss(data, training=t), many.loss(data, training=t))
                              for t in (False, True))
        results["run_batch"] = max(diff(one.run_batch(data, {p: None}, training=t)[p],
                                        many.run_batch(data, {p: None}, training=t)[p])
                                   for t in (False, True))
        # errors
        try:
            many.train(data, tf.keras.optimizers.SGD(0.1), progress_bar=False)
            results["optimizer_error"] = None
        except ValidationError as e:
            results["optimizer_error"] = str(e)


def check_tensor_node():
    "Keras weights inside a TensorNode are mirrored and trained like the rest."
    def net():  # a network for each simulator: the Keras layer is built by its simulator
        with nengo.Network(seed=0) as net:
            nengo_dl_nb.configure_settings(dtype=tf.float64)
            net.inp = nengo.Node(np.zeros(3))
            layer = nengo_dl_nb.tensor_layer(
                net.inp, tf.keras.layers.Dense, units=2, dtype="float64",
                kernel_initializer=tf.keras.initializers.GlorotUniform(seed=1))
            net.p = nengo.Probe(layer)
        return net
    x = np.random.RandomState(0).randn(MB, 2, 3)
    net1 = net()
    with STRATEGY.scope():  # Keras layers create their weights as the network is made
        net2 = net()
    many = nengo_dl_nb.Simulator(net2, minibatch_size=MB, progress_bar=False,
                                 strategy=STRATEGY)
    one = nengo_dl_nb.Simulator(net1, minibatch_size=MB, progress_bar=False)
    with one, many:
        for sim, scope in ((one, None), (many, STRATEGY)):
            inp, p = sim.model.toplevel.inp, sim.model.toplevel.p
            with (scope.scope() if scope else contextlib.nullcontext()):
                opt = tf.keras.optimizers.SGD(0.1)
            sim.train({inp: x, p: np.ones((MB, 2, 2))}, opt, shuffle=False, progress_bar=False)
            sim.run_steps(2, data={inp: x})
        results["tensor_node_run"] = diff(one.data[net1.p], many.data[net2.p])
        results["tensor_node_weights"] = max(
            diff(a.numpy(), b.numpy()) for a, b in zip(one.runner.function_vars,
                                                      many.runner.function_vars))


def check_errors():
    net, inp, p = regression_net()
    if REPLICAS > 1:
        try:
            nengo_dl_nb.Simulator(net, minibatch_size=REPLICAS + 1, strategy=STRATEGY,
                                  progress_bar=False)
            results["minibatch_error"] = None
        except ValidationError as e:
            results["minibatch_error"] = str(e)


if __name__ == "__main__":
    checks = sys.argv[2].split(",") if len(sys.argv) > 2 else ["run", "train", "tensor_node",
                                                               "errors"]
    for name in checks:
        globals()[f"check_{name}"]()
    print(json.dumps(results))
