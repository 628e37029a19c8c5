"""Run by tests/test_compile_cache.py in a fresh process: build models, step and run them,
save every probe's output, and print one JSON line saying what the process saw.

    python tests/compile_cache_child.py OUT.npz MODEL SEED [SEED ...]

MODEL is `small` (`benchmarks.small(50)`), `integrator` (16 x 32 neurons), `nodes` (a
Python Node between two ensembles: its step runs as compiled parts with Python between
them) or `cubes` (the same with another function in the Node). Each seed is one model built in this process, in order: 10 single steps
(`sim.step()`), then a run of 200 steps. The environment chooses the compile cache
(`NENGO_DL_NB_XLA_CACHE`). The report says, per model, whether its run function came from
the trace cache (`run_loaded`: untraced), or, for `nodes`, every compiled part of its step
(`parts_loaded`).
"""
import json
import os
import sys
import time

import nengo_dl_nb  # first: starts TensorFlow, with the compile cache flag

import nengo
import numpy as np
from nengo_dl_nb import benchmarks


def nodes(fn=lambda t, x: x ** 2):
    "Node(sin) -> Ensemble -> Python Node (`fn`, default x ** 2) -> Ensemble -> Probe."
    with nengo.Network(seed=0) as net:
        stim = nengo.Node(lambda t: np.sin(10 * t))
        a = nengo.Ensemble(30, 1)
        square = nengo.Node(fn, size_in=1)
        b = nengo.Ensemble(30, 1)
        nengo.Connection(stim, a)
        nengo.Connection(a, square)
        nengo.Connection(square, b)
        net.p = nengo.Probe(b, synapse=0.01)
    return net


def cubes():
    "`nodes` with x ** 3 in the Python Node."
    return nodes(lambda t, x: x ** 3)


MODELS = {"small": lambda: benchmarks.small(50), "integrator": lambda: benchmarks.integrator(16, 32),
          "nodes": nodes, "cubes": cubes}


def compiled_names(runner):
    "The canonical names of the compiled functions the runner called."
    if runner.uses_python:
        return [call._direct[2] for call in runner.segment_calls()[0]]
    return [runner.step_call()._direct[2], runner.run_call()._direct[2]]


def main(out, model, seeds):
    arrays, report = {}, {"cache": nengo_dl_nb.XLA_CACHE_DIR,
                          "tf_xla_flags": os.environ.get("TF_XLA_FLAGS"),
                          "xla_flags": os.environ.get("XLA_FLAGS"), "models": []}
    for seed in seeds:
        net = MODELS[model]()
        net.seed = seed
        start = time.perf_counter()
        with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
            built = time.perf_counter()
            sim.step()
            first_step = time.perf_counter()
            for _ in range(9):
                sim.step()
            sim.run_steps(200)
            ran = time.perf_counter()
            arrays[f"seed{seed}"] = sim.data[net.p]
            report["models"].append({
                "seed": seed, "build": built - start, "first_step": first_step - built,
                "run": ran - first_step, "names": compiled_names(sim.runner),
                "run_loaded": (not sim.runner.uses_python
                               and sim.runner.run_call().concrete is None),
                "parts_loaded": (sim.runner.uses_python and all(
                    call.concrete is None for call in sim.runner.segment_calls()[0]))})
    np.savez(out, **arrays)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
