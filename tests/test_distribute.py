"""Distributed simulation (`Simulator(..., strategy=...)`).

Truth: the single-device simulator, run on the same model in the same process. Logical
CPU devices must be configured before TensorFlow starts, so the comparisons run in fresh
processes (tests/distributed_checks.py); the two-worker run starts two processes joined
by MultiWorkerMirroredStrategy on localhost ports."""
import json
import os
import subprocess
import sys

import nengo
import numpy as np
import pytest
import tensorflow as tf
from nengo.exceptions import ValidationError

import nengo_dl_nb
import distributed_digits  # tests/distributed_digits.py: the digits workers and launcher

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOL = 1e-12  # float64 rounding (sums over a different number of items per matmul)


def run_python(args, timeout=600):
    "Run `python *args` in a fresh process with this checkout first on the path."
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_replicas_match_one_device(replicas):
    # the TensorNode check (Keras weights mirrored) at 2 replicas only: it is the slowest
    checks = {1: "run,train", 2: "run,train,tensor_node,errors", 4: "run,train,errors"}[replicas]
    r, = run_python([os.path.join(HERE, "distributed_checks.py"), str(replicas), checks])
    assert r["replicas"] == replicas
    # run_steps (spiking neurons, a noise process, PES), the state, sim.signals
    assert r["run_steps_shape"] == [8, 43, 2]
    for name in ("run_steps", "state", "signals", "state_roundtrip"):
        assert r[name] < TOL, (name, r[name])
    # online learning kept a weight matrix per item (they differ between items)
    assert r["per_item_weights_differ"]
    # one training step on the full minibatch, an Adam epoch in truncated blocks
    assert r["train_step_changed"] > 1e-3
    for name in ("train_step_params", "train_step_loss", "train_adam_params",
                 "train_gradient_targets_params", "loss",
                 "run_batch"):
        assert r[name] < TOL, (name, r[name])
    assert "created outside the simulator's strategy" in r["optimizer_error"]
    if replicas == 2:
        assert r["tensor_node_run"] < TOL and r["tensor_node_weights"] < TOL
    if replicas > 1:
        assert f"must be a multiple of the number of replicas of the strategy ({replicas})" \
            in r["minibatch_error"]


def test_bad_strategy_arguments():
    with nengo.Network() as net:
        nengo.Ensemble(10, 1)
    with pytest.raises(ValidationError, match="Must be a tf.distribute.Strategy"):
        nengo_dl_nb.Simulator(net, strategy="/cpu:0", progress_bar=False)
    with pytest.raises(ValidationError, match="a device or a strategy, not both"):
        nengo_dl_nb.Simulator(net, device="/cpu:0", progress_bar=False,
                              strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))


def test_tf_config():
    ports = distributed_digits.free_ports(2)
    assert len(set(ports)) == 2
    config = json.loads(distributed_digits.tf_config(ports, 1))
    assert config == {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                      "task": {"type": "worker", "index": 1}}


def test_two_workers_train_digits_like_one():
    "The documented command: two localhost workers reach the parameters of one worker."
    script = os.path.join(HERE, "distributed_digits.py")
    one, = run_python([script, "digits", "--epochs", "2"])
    workers = run_python([script, "launch", "--workers", "2", "--epochs", "2"])
    assert one["replicas"] == 1 and [w["replicas"] for w in workers] == [2, 2]
    assert [w["worker"] for w in workers] == [0, 1]
    for w in workers:
        assert w["accuracy"] == one["accuracy"]
        assert np.allclose(w["loss"], one["loss"], rtol=TOL, atol=0)
        assert np.isclose(w["checksum"], one["checksum"], rtol=TOL, atol=0)
    assert one["accuracy"] > 0.85  # it did learn (2 epochs)
