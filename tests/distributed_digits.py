"""Distributed training of the digits classifier, an example of `Simulator(strategy=...)`.

    python tests/distributed_digits.py digits --epochs 4               # one process, one device
    python tests/distributed_digits.py launch --workers 2 --epochs 4   # two workers on localhost
    python tests/distributed_digits.py throughput --replicas 2         # item-steps/s, 2 logical CPUs

`digits` trains (as a worker of the cluster in `TF_CONFIG`, if set) and prints the test
accuracy, the loss of each epoch and a checksum of the trained parameters as one JSON line;
`launch` runs `digits` as K workers of a localhost cluster, one process each, on free ports.
The distributed runner itself is `nengo_dl_nb.distribute`; tests/test_distribute.py runs this.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf
from nengo.exceptions import SimulationError


def free_ports(n):
    "`n` free TCP ports on localhost."
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    "The `TF_CONFIG` value of worker `index` of a cluster of localhost workers on `ports`."
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": int(index)}})

def launch(args, workers=2, timeout=600, env=None):
    """Run `python tests/distributed_digits.py *args` as `workers` workers of a localhost
    cluster (each with its `TF_CONFIG`); returns each worker's last output line, parsed as
    JSON. A worker that fails raises a SimulationError with its output."""
    ports = free_ports(int(workers))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
    procs = []
    for i in range(int(workers)):
        worker_env = dict(os.environ if env is None else env)
        worker_env["TF_CONFIG"] = tf_config(ports, i)
        worker_env["PYTHONPATH"] = os.pathsep.join(
            [root] + [p for p in [worker_env.get("PYTHONPATH")] if p])
        procs.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *map(str, args)],
            env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=timeout)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if proc.returncode or not lines:
                raise SimulationError(f"Worker {i} of {workers} failed (exit code "
                                      f"{proc.returncode}):\n{out}\n{err[-3000:]}")
            results.append(json.loads(lines[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results

def digits_data():
    "The digits tutorial's split: (x_train, y_train, x_test, y_test), pixels / 4."
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.data.astype(np.float64) / 4
    return tuple(train_test_split(x, digits.target, test_size=0.25, random_state=0,
                                  stratify=digits.target)[i] for i in (0, 2, 1, 3))


def digits_network():
    "pixels (64) -> 256 LIF neurons -> 10 outputs; returns (net, input node, output probe)."
    import nengo
    from nengo_dl_nb.config import configure_settings
    from nengo_dl_nb.dists import Glorot
    with nengo.Network(seed=0) as net:
        configure_settings(lif_smoothing=0.01, dtype=tf.float64)
        net.config[nengo.Ensemble].neuron_type = nengo.LIF(amplitude=0.01)
        net.config[nengo.Ensemble].gain = nengo.dists.Choice([1])
        net.config[nengo.Ensemble].bias = nengo.dists.Choice([0])
        net.config[nengo.Connection].synapse = None
        inp = nengo.Node(np.zeros(64))
        hidden = nengo.Ensemble(256, 1)
        nengo.Connection(inp, hidden.neurons, transform=Glorot())
        out = nengo.Node(size_in=10)
        nengo.Connection(hidden.neurons, out, transform=Glorot())
        out_p = nengo.Probe(out)
    return net, inp, out_p


def digits_run(strategy=None, n_epochs=4, minibatch_size=50, learning_rate=1e-3):
    """Train the digits classifier for `n_epochs` (with `strategy`, if given); returns
    {'accuracy', 'loss' (per epoch), 'checksum' (sum of |parameters|), 'replicas',
    'seconds' (training time)}."""
    import time
    from nengo_dl_nb.simulator import Simulator
    x_train, y_train, x_test, y_test = digits_data()
    n_train = len(x_train) // minibatch_size * minibatch_size
    n_test = len(x_test) // minibatch_size * minibatch_size
    one_hot = np.eye(10)
    net, inp, out_p = digits_network()

    def crossentropy(outputs, targets):
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            labels=targets[:, -1], logits=outputs[:, -1]))
    scope = strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope()
    with scope:
        optimizer = tf.keras.optimizers.Adam(learning_rate)
    with Simulator(net, minibatch_size=minibatch_size, progress_bar=False,
                   strategy=strategy) as sim:
        start = time.perf_counter()
        history = sim.train({inp: x_train[:n_train, None], out_p: one_hot[y_train[:n_train]][:, None]},
                            optimizer, n_epochs=n_epochs, objective={out_p: crossentropy},
                            progress_bar=False)
        seconds = time.perf_counter() - start
        out = sim.run_batch({inp: x_test[:n_test, None]}, {out_p: None}, training=True,
                            combine=np.concatenate)[out_p]
        accuracy = float(np.mean(np.argmax(out[:, -1], axis=-1) == y_test[:n_test]))
        checksum = float(sum(np.abs(v.numpy()).sum()
                             for v in sim.runner.param_vars.values()))
    return {"accuracy": accuracy, "loss": history["loss"], "checksum": checksum,
            "replicas": 1 if strategy is None else strategy.num_replicas_in_sync,
            "seconds": seconds}

def throughput(strategy=None, minibatch_size=64, n_steps=100, repeats=3):
    "{'run': item-steps/s of `run_steps`, 'train': item-steps/s of training} (float32)."
    import time
    import nengo
    from nengo_dl_nb.simulator import Simulator
    net, inp, out_p = digits_network()
    with net:  # the usual precision for speed
        net.config[nengo.Network].dtype = tf.float32
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 4, (minibatch_size, n_steps, 64))
    y = np.eye(10)[rng.randint(10, size=minibatch_size)][:, None].repeat(n_steps, axis=1)
    scope = strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope()
    with scope:
        optimizer = tf.keras.optimizers.SGD(1e-3)
    rates = {}
    with Simulator(net, minibatch_size=minibatch_size, progress_bar=False,
                   strategy=strategy) as sim:
        for name, call in (("run", lambda: sim.run_steps(n_steps, data={inp: x},
                                                         progress_bar=False)),
                           ("train", lambda: sim.train({inp: x, out_p: y}, optimizer,
                                                       progress_bar=False))):
            call()  # traces and compiles
            best = np.inf
            for _ in range(int(repeats)):
                start = time.perf_counter()
                call()
                best = min(best, time.perf_counter() - start)
            rates[name] = minibatch_size * n_steps / best
    return rates


def logical_cpus(n):
    """Split the CPU into `n` logical devices (before TensorFlow starts); their names."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * int(n))
    return [d.name for d in tf.config.list_logical_devices("CPU")]

def main(argv=None):
    """`python tests/distributed_digits.py digits [--epochs N]`: train the digits classifier
    (as a worker of the cluster in `TF_CONFIG`, if set) and print the result as JSON;
    `... launch --workers K [--epochs N]`: run `digits` as K localhost workers;
    `... throughput [--replicas R]`: measure `throughput` on R logical CPU devices."""
    import argparse
    parser = argparse.ArgumentParser(prog="python tests/distributed_digits.py")
    parser.add_argument("command", choices=["digits", "launch", "throughput"])
    parser.add_argument("--replicas", type=int, default=0,
                        help="throughput: a MirroredStrategy over this many logical CPU "
                             "devices (0: no strategy)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatch-size", type=int, default=None,
                        help="default: 50 for digits, 64 for throughput")
    args = parser.parse_args(argv)
    if args.command == "launch":
        for result in launch(["digits", "--epochs", args.epochs, "--minibatch-size",
                              args.minibatch_size or 50], workers=args.workers):
            print(json.dumps(result))
        return
    if args.command == "throughput":
        strategy = (tf.distribute.MirroredStrategy(logical_cpus(args.replicas))
                    if args.replicas else None)
        result = throughput(strategy, minibatch_size=args.minibatch_size or 64)
        print(json.dumps({"replicas": args.replicas, **result}))
        return
    # the strategy comes first: it must be made before TensorFlow starts its runtime
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if os.environ.get("TF_CONFIG")
                else None)
    result = digits_run(strategy, n_epochs=args.epochs, minibatch_size=args.minibatch_size or 50)
    if strategy is not None:
        result["worker"] = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    print(json.dumps(result), flush=True)

if __name__ == "__main__":
    main()
