import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nengo
import numpy as np
import pytest

import nengo_dl_nb
from nengo_dl_nb import benchmarks

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*max_rates"),
    pytest.mark.filterwarnings("ignore:.*encountered in log1p"),
]


def _run(net, steps, sim_cls, **kwargs):
    with sim_cls(net, progress_bar=False, **kwargs) as sim:
        sim.run_steps(steps)
        return sim.data[net.p]


@pytest.mark.parametrize("name, kwargs", [
    ("integrator", dict(dimensions=2, neurons_per_d=8)),
    ("cconv", dict(dimensions=2, neurons_per_d=8)),
    ("pes", dict(dimensions=2, neurons_per_d=8)),
    ("pes_ensemble", dict(dimensions=2, neurons_per_d=8)),
    ("basal_ganglia", dict(dimensions=2, neurons_per_d=8)),
    ("random_network", dict(dimensions=2, neurons_per_d=4, n_ensembles=4,
                            connections_per_ensemble=2)),
])
def test_network_matches_nengo(name, kwargs):
    net = benchmarks.make_network(name, neuron_type=nengo.RectifiedLinear(), **kwargs)
    assert isinstance(net, nengo.Network) and isinstance(net.p, nengo.Probe)
    ref = _run(net, 30, nengo.Simulator)
    ours = _run(net, 30, nengo_dl_nb.Simulator)
    assert ours.shape == ref.shape
    scale = max(np.max(np.abs(ref)), 1e-3)
    assert np.allclose(ours, ref, atol=1e-4 * scale + 1e-6, rtol=1e-3), np.max(np.abs(ours - ref))


def test_lif_network_runs_in_both():
    net = benchmarks.integrator(2, 8)  # default LIF
    ref = _run(net, 20, nengo.Simulator)
    ours = _run(net, 20, nengo_dl_nb.Simulator)
    assert ours.shape == ref.shape and np.all(np.isfinite(ours))


def test_mnist_transforms_match_nengo():
    net = benchmarks.mnist(use_tensor_layer=False, n_filters=2, n_hidden=8)
    ref = _run(net, 5, nengo.Simulator)
    ours = _run(net, 5, nengo_dl_nb.Simulator)
    assert ours.shape == ref.shape == (5, 10)
    assert np.allclose(ours, ref, atol=1e-3 * max(np.max(np.abs(ref)), 1e-3), rtol=1e-3)


def test_mnist_tensor_layer_runs():
    net = benchmarks.mnist(use_tensor_layer=True, n_filters=2, n_hidden=8)
    out = _run(net, 5, nengo_dl_nb.Simulator, minibatch_size=2)
    assert out.shape == (2, 5, 10) and np.all(np.isfinite(out))


def test_spaun_missing_is_clear():
    with pytest.raises(ImportError, match="spaun2.0"):
        benchmarks.spaun(16)


def test_make_network_rejects_unknown_kwargs():
    with pytest.raises(TypeError, match="n_ensembles"):
        benchmarks.make_network("integrator", 2, 4, n_ensembles=3)


def test_run_profile_run_and_train(tmp_path):
    r = benchmarks.run_profile(benchmarks.integrator(2, 4), n_steps=10, reps=2,
                               logdir=str(tmp_path / "trace"))
    assert len(r["times"]) == 2 and r["steps_per_s"] > 0 and r["build"] > 0
    assert r["logdir"] == str(tmp_path / "trace") and any(os.scandir(r["logdir"]))
    net = benchmarks.pes(2, 4)
    with nengo_dl_nb.Simulator(net, minibatch_size=2, progress_bar=False) as sim:
        r = benchmarks.run_profile(sim, train=True, n_steps=5, do_profile=False)
        assert r["logdir"] is None and r["build"] is None and len(r["times"]) == 1
        assert not sim.closed  # a Simulator passed in stays open


def test_split_commands():
    argv = "build --benchmark integrator --dimensions 8 profile --reps 3 matmulvsreduce".split()
    assert benchmarks.split_commands(argv) == [
        ["build", "--benchmark", "integrator", "--dimensions", "8"],
        ["profile", "--reps", "3"], ["matmul-vs-reduce"]]


def test_cli_build_profile_chain(capsys, tmp_path):
    results = benchmarks.main(
        ["build", "--benchmark", "random_network", "--dimensions", "2", "--neurons_per_d", "4",
         "--neuron_type", "LIF", "--kwarg", "n_ensembles=3", "--kwarg", "connections_per_ensemble=1",
         "profile", "--n_steps", "10", "--reps", "2", "--logdir", str(tmp_path),
         "profile", "--n_steps", "10", "--time-only", "--train"])
    out = capsys.readouterr().out
    assert "built random_network: 3 ensembles" in out
    assert f"profiler trace written to {tmp_path}" in out
    assert "training 10 steps" in out
    net, run, train = results
    assert isinstance(net, nengo.Network) and len(run["times"]) == 2 and train["logdir"] is None


def test_cli_errors():
    with pytest.raises(SystemExit):
        benchmarks.main(["profile"])  # nothing built
    with pytest.raises(SystemExit):
        benchmarks.main(["build", "--benchmark", "nope"])


def test_matmul_vs_reduce(capsys):
    rows = benchmarks.matmul_vs_reduce(shapes=((2, 3, 4),), reps=2)
    assert rows[0]["faster"] in ("matmul", "reduce")
    assert "2 x 3 x 4" in capsys.readouterr().out


def test_cli_compare_fresh_processes(capsys):
    results = benchmarks.main(["compare", "integrator", "--dimensions", "2", "--neurons-per-d", "4",
                               "--n-steps", "20", "--minibatch-size", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    (res,) = results
    assert set(res["integrator"]) == {"nengo", "ours"}
    for sim in ("nengo", "ours"):
        assert {"build", "rate", "item_rate", "py_peak_mb", "rss_mb"} <= set(res["integrator"][sim])
    assert "item-steps/s mb=2" in out and "ratio" in out and out.count("integrator") == 2


def test_compare_networks_in_process(capsys):
    res = benchmarks.compare_networks(["integrator"], 2, 4, n_steps=10, minibatch_size=2,
                                      repeats=1, fresh_process=False)
    assert set(res) == {"integrator"}
    assert capsys.readouterr().out.count("ratio") == 1


def test_history_memory_keeps_one_sample(capsys):
    rows = benchmarks.main(["history", "--n-steps", "600", "--every", "200"])[0]
    assert [steps for steps, _ in rows] == [200, 400, 600]
    assert all(mb > 0 for _, mb in rows)  # resident memory read (Linux)
    out = capsys.readouterr().out
    assert out.count("probe data (1, 1)") == 3 and "growth after the first 200" in out


def test_history_memory_of_single_steps_in_both_simulators(capsys):
    rows = benchmarks.main(["history", "--step", "--n-steps", "300", "--every", "100"])[0]
    assert set(rows) == {"nengo", "ours"}
    assert all([steps for steps, _ in r] == [100, 200, 300] for r in rows.values())
    out = capsys.readouterr().out
    assert out.count("single steps") >= 8 and "nengo growth" in out and "ours growth" in out


def test_lif_update_matches_nengo_lif_step():
    # the function build_floor compiles is nengo's LIF update: same spikes, voltages and
    # refractory times as nengo.LIF.step over steps that spike, rest and stay refractory
    fn, spec, _, voltage, refractory = benchmarks._lif_update(6)
    J = np.array([[0.5, 1.2, 2.0, 5.0, 20.0, 60.0]], np.float32)
    lif = nengo.LIF()
    ref_v, ref_r = np.zeros(6), np.zeros(6)
    out = np.zeros(6)
    n_spikes = 0
    for _ in range(40):
        lif.step(0.001, J[0].astype(np.float64), out, ref_v, ref_r)
        spikes = fn(J).numpy()[0]
        np.testing.assert_array_equal(spikes > 0, out > 0)
        np.testing.assert_allclose(voltage.numpy()[0], ref_v, atol=1e-5)
        np.testing.assert_allclose(refractory.numpy()[0], ref_r, atol=1e-5)
        n_spikes += int(np.sum(out > 0))
    assert n_spikes > 10


def test_build_floor_reports_every_part(capsys):
    med = benchmarks.build_floor(repeats=1)
    assert set(med) == {"nengo", "ours", "two_ops", "lif"}
    assert len(med["ours"]) == 3 and len(med["lif"]) == 2
    assert all(t > 0 for v in med.values() for t in v)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 9 and lines[0].startswith("nengo.Simulator")
    total = float(lines[5].split()[-3])
    assert total == pytest.approx(sum(med["ours"]), abs=2e-3)


def test_compile_cache_command_line():
    """`compile-cache --models=small` parses as one command (`small` alone would start the
    `small` command), and the child command takes its model the same way."""
    from nengo_dl_nb.benchmarks import _parser, split_commands
    argv = ["compile-cache", "--models=small", "--repeats", "1"]
    assert split_commands(argv) == [argv]
    args = _parser().parse_args(argv)
    assert args.command == "compile-cache" and args.models == ("small",) and args.repeats == 1
    assert _parser().parse_args(["compile-cache"]).models == ("small", "integrator")
    assert _parser().parse_args(["_cache_child", "--model=integrator"]).model == "integrator"
    with pytest.raises(SystemExit):
        _parser().parse_args(["compile-cache", "--models=large"])


def test_small_sink_nodes_see_what_nengo_gives_them():
    # K sink Nodes reading the decoded value: the same calls, with the same values, in both
    def recorded(net):
        seen = {s: [] for s in net.sinks}
        for s in net.sinks:
            s.output = lambda t, x, log=seen[s]: log.append((t, float(x[0])))
        return seen
    runs = []
    for sim_cls in (nengo.Simulator, nengo_dl_nb.Simulator):
        net = benchmarks.small(n_neurons=20, nodes=3)
        assert len(net.sinks) == 3 and all(s.size_in == 1 for s in net.sinks)
        seen = recorded(net)
        with sim_cls(net, progress_bar=False) as sim:
            sim.run_steps(5)
            sim.step()
            runs.append((seen, sim.data[net.p]))
    (ref_seen, ref_p), (ours_seen, ours_p) = runs
    for ref, ours in zip(ref_seen.values(), ours_seen.values()):
        assert [t for t, _ in ours] == pytest.approx([t for t, _ in ref]) and len(ref) == 6
        assert [x for _, x in ours] == pytest.approx([x for _, x in ref], abs=1e-5)
    assert np.allclose(ours_p, ref_p, atol=1e-5)


def test_cli_small_nodes(capsys):
    (res,) = benchmarks.main(["small", "--nodes", "0", "2", "--repeats", "1",
                              "--run-time", "0.02", "--no-floor"])
    assert res["floor"] is None and [t["nodes"] for t in res["tables"]] == [0, 2]
    for t in res["tables"]:
        assert set(t) == {"nengo", "ours", "ratios", "nodes"} and len(t["ratios"]) == 4
        assert all(r > 0 for r in t["ratios"][2:])
    out = capsys.readouterr().out
    assert "0 sink Python Nodes" in out and "2 sink Python Nodes" in out
    assert "run(0.02) steps/s" in out
    summary = out.strip().splitlines()[-3:]  # the ratios of both tables, one line per K
    assert summary[0].split()[:2] == ["sink", "Nodes"]
    assert [line.split()[0] for line in summary[1:]] == ["0", "2"]


def test_gui_model_path():
    pytest.importorskip("nengo_gui")
    path = benchmarks.gui_model_path("07")
    assert path.endswith("07-multiple-dimensions.py") and os.path.isfile(path + ".cfg")
    assert benchmarks.gui_model_path(path) == path
    with pytest.raises(ValueError, match="tutorials"):
        benchmarks.gui_model_path("no-such-model")


@pytest.mark.parametrize("backend", ["nengo", "nengo_dl_nb"])
def test_headless_page_runs_the_gui_structure(backend):
    # nengo_gui's own page: its components add their Nodes for the build and take them out,
    # the runner thread steps, the plots get a row per step, and the slider steers the model
    pytest.importorskip("nengo_gui")
    path = benchmarks.gui_model_path("07")
    with benchmarks.HeadlessPage(path, backend) as gp:
        assert gp.page.settings.backend == backend
        assert (len(gp.sliders), len(gp.values), len(gp.rasters)) == (1, 2, 2)
        gp.play()
        sim = gp.page.sim
        assert isinstance(sim, nengo_dl_nb.Simulator if backend != "nengo" else nengo.Simulator)
        built = [o for o in sim.model.params if isinstance(o, nengo.Node)]
        assert len(built) == 6  # stim, 2 value plots, 2 rasters, the control Node
        assert len(gp.page.model.nodes) == 1 and len(gp.page.model.connections) == 2
        gp.run_for(0.05)
        t, *a = gp.value(gp.values[0])
        assert t > 0 and len(a) == 3
        moved = gp.sliders_move_values(levels=(0.6, -0.6), settle=0.3)
        assert moved > 0.8
        t, *a = gp.value(gp.values[0])  # `a` follows the slider, at -0.6 in all dimensions
        assert np.allclose(a, -0.6, atol=0.25), a
        gp.reset()
        assert gp.page.sim is None and sim.closed
        gp.play()  # a new simulator, from the start
        assert gp.page.sim is not sim and gp.page.sim.n_steps >= 1


def test_cli_gui(capsys):
    pytest.importorskip("nengo_gui")
    (res,) = benchmarks.main(["gui", "07", "--seconds", "0.2", "--repeats", "2"])
    r = res["07-multiple-dimensions"]
    for sim in ("nengo", "ours"):
        assert r[sim]["speed"] > 0 and r[sim]["build"] > 0 and r[sim]["rebuild"] > 0
        assert r[sim]["slider_moved"] > 0.3 and r[sim]["values"] == 2
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("nengo_gui 07-multiple-dimensions: 1 slider(s), 2 value plot(s)")
    assert lines[2].startswith("nengo.Simulator") and lines[3].startswith("nengo_dl_nb.Simulator")
    assert lines[2].split()[-2] == lines[3].split()[-2] == "yes"
    assert lines[4].startswith("ratio")


def test_cli_gui_without_such_model():
    pytest.importorskip("nengo_gui")
    with pytest.raises(ValueError, match="tutorials"):
        benchmarks.main(["gui", "no-such-model"])


def test_limit_loop_lif_is_nengos_lif():
    # the hand-written loop does the neuron update nengo does (to float32 rounding)
    rng = np.random.RandomState(0)
    J = rng.uniform(-1, 4, 1000)
    v, ref = rng.uniform(0, 1, 1000), rng.uniform(-0.002, 0.002, 1000)
    out, v_ref, ref_ref = np.zeros(1000), v.copy(), ref.copy()
    nengo.LIF().step(0.001, J, out, v_ref, ref_ref)
    spikes, v_ours, ref_ours = benchmarks._limit_lif(
        *(np.float32(x) for x in (J, v, ref)))
    assert out.any() and not out.all()
    np.testing.assert_array_equal(spikes.numpy() > 0, out > 0)  # the same neurons spike
    np.testing.assert_allclose(spikes.numpy(), out, rtol=1e-6)
    np.testing.assert_allclose(v_ours.numpy(), v_ref, atol=1e-6)
    np.testing.assert_allclose(ref_ours.numpy(), ref_ref, atol=1e-6)


def test_limit_command_and_kernel_times(tmp_path):
    rows = benchmarks.main(["limit", "--dimensions", "2", "--neurons-per-d", "8",
                            "--minibatch-sizes", "1", "3", "--n-steps", "20",
                            "--repeats", "1"])[0]
    assert [(r["network"], r["minibatch_size"]) for r in rows] == [
        ("integrator", 1), ("integrator", 3), ("pes_ensemble", 1), ("pes_ensemble", 3)]
    assert all(r["nengo"] > 0 and r["ours"] > 0 and r["loop"] > 0
               and r["loop_default_order"] > 0 for r in rows)
    # the limit is the faster loop: this process's kernel order, or XLA's own in a child
    assert all(r["limit"] == max(r["loop"], r["loop_default_order"]) for r in rows)
    with pytest.raises(SystemExit, match="no hand-written loop"):
        benchmarks.main(["limit", "cconv"])
    result = benchmarks.run_profile(benchmarks.integrator(2, 8), n_steps=20,
                                    logdir=str(tmp_path))
    kernels = benchmarks.kernel_times(result["logdir"])
    assert kernels and all(ms >= 0 and calls > 0 for _, ms, calls in kernels)
