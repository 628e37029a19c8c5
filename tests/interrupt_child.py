"""Run by tests/test_reliability.py in a child process: a long `run_steps` that the parent
interrupts with a real SIGINT. Prints `READY` when the run starts, then one JSON line: the
consistency of what was committed when the interrupt arrived, and whether continuing from
there gives what an uninterrupted run gives.

    python tests/interrupt_child.py N_STEPS SEED
"""
import json
import sys

import nengo_dl_nb  # first: a quiet TensorFlow start

import nengo
import numpy as np


def model(seed):
    with nengo.Network(seed=seed) as net:
        noise = nengo.Node(nengo.processes.WhiteNoise(seed=seed + 1), size_out=2)
        ens = nengo.Ensemble(40, 2)
        nengo.Connection(noise, ens)
        probes = [nengo.Probe(ens, synapse=0.01), nengo.Probe(ens.neurons[:3])]
    return net, probes


def main(n_steps, seed):
    net, probes = model(seed)
    with nengo_dl_nb.Simulator(net, progress_bar=False) as sim:
        sim.run_steps(2)  # built and compiled before the parent is told to interrupt
        print("READY", flush=True)
        interrupted = False
        try:
            sim.run_steps(n_steps - 2)
        except KeyboardInterrupt:
            interrupted = True
        done = sim.n_steps
        rows = [len(sim.data[p]) for p in probes]
        time_ok = bool(np.isclose(sim.time, done * sim.dt))
        sim.run_steps(n_steps - done)  # continue to the end
        interrupted_run = [sim.data[p].copy() for p in probes]
    with nengo_dl_nb.Simulator(net, progress_bar=False) as ref:  # the same, uninterrupted
        ref.run_steps(n_steps)
        whole_run = [ref.data[p].copy() for p in probes]
    print(json.dumps({
        "interrupted": interrupted, "steps_done": done, "rows": rows, "time_ok": time_ok,
        "continues_exactly": all(np.array_equal(a, b) for a, b in
                                 zip(interrupted_run, whole_run))}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
