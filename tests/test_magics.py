"""The %%nengo_dl cell magic, driven through a real IPython shell: options, namespaces,
networks, plots, and how errors in the user's cell are shown."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import nengo_dl_nb

MODEL = """
stim = nengo.Node([0.5, -0.25])
ens = nengo.Ensemble(10, 2)
nengo.Connection(stim, ens)
p = nengo.Probe(ens, synapse=0.01)
p_spikes = nengo.Probe(ens.neurons)
"""


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext nengo_dl_nb.magics", store_history=False)
    shell.run_line_magic("colors", "nocolor")  # plain text, so the output can be searched
    shell.run_cell("import nengo\nimport numpy as np")
    yield shell
    for value in list(shell.user_ns.values()):
        if isinstance(value, nengo_dl_nb.Simulator) and not value.closed:
            value.close()


def run(shell, cell):
    "Run `cell`; return (ExecutionResult, captured output)."
    with capture_output() as cap:
        result = shell.run_cell(cell)
    return result, cap


def test_steps(shell):
    result, _ = run(shell, "%%nengo_dl -n 50 --no-plot\n" + MODEL)
    assert result.success
    ns = shell.user_ns
    sim = ns["sim"]
    assert isinstance(sim, nengo_dl_nb.Simulator) and not sim.closed
    assert sim.n_steps == 50 and sim.dt == 0.001
    assert sim.data[ns["p"]].shape == (50, 2)
    assert sim.data[ns["p_spikes"]].shape == (50, 10)
    assert ns["ens"] in ns["net"].ensembles  # the body ran inside `with net:`
    assert sim.model.toplevel is ns["net"]


def test_time_dt_seed(shell):
    result, _ = run(shell, "%%nengo_dl -t 0.1 --dt 0.002 --seed 7 --no-plot\n" + MODEL)
    assert result.success
    sim = shell.user_ns["sim"]
    assert sim.n_steps == 50 and sim.dt == 0.002 and sim.seed == 7


def test_default_time(shell):
    result, _ = run(shell, "%%nengo_dl --no-plot\nnode = nengo.Node(1)\npn = nengo.Probe(node)")
    assert result.success
    sim = shell.user_ns["sim"]
    assert sim.n_steps == 1000 and sim.data[shell.user_ns["pn"]].shape == (1000, 1)


def test_sim_name_minibatch_unroll(shell):
    shell.user_ns.pop("msim", None)
    result, _ = run(shell, "%%nengo_dl -n 10 -b 3 -u 4 --sim msim --no-plot\n" + MODEL)
    assert result.success
    sim = shell.user_ns["msim"]
    assert sim.minibatch_size == 3 and sim.unroll == 4 and sim.n_steps == 10
    assert sim.data[shell.user_ns["p"]].shape == (3, 10, 2)
    result, _ = run(shell, "%%nengo_dl -n 5 --minibatch-size 2 --unroll 2 --sim msim --no-plot\n"
                    + MODEL)
    assert shell.user_ns["msim"] is not sim and sim.closed  # the old one was closed
    assert shell.user_ns["msim"].data[shell.user_ns["p"]].shape == (2, 5, 2)


def test_existing_net(shell):
    shell.run_cell("net2 = nengo.Network(seed=3)\nwith net2:\n    a2 = nengo.Ensemble(5, 1)")
    result, _ = run(shell, "%%nengo_dl --net net2 -n 5 --sim sim2 --no-plot\n"
                    "b2 = nengo.Ensemble(5, 1)\nnengo.Connection(a2, b2)\npb = nengo.Probe(b2)")
    assert result.success
    ns = shell.user_ns
    assert ns["b2"] in ns["net2"].ensembles and ns["a2"] in ns["net2"].ensembles
    assert ns["sim2"].model.toplevel is ns["net2"]
    assert ns["sim2"].data[ns["pb"]].shape == (5, 1)


def test_net_created_by_cell(shell):
    shell.user_ns.pop("made", None)
    result, _ = run(shell, "%%nengo_dl --net made -n 4 --sim sim3 --no-plot\n"
                    "made = nengo.Network(seed=1)\nwith made:\n"
                    "    pm = nengo.Probe(nengo.Node([1, 2]))\n")
    assert result.success
    ns = shell.user_ns
    assert ns["sim3"].model.toplevel is ns["made"]
    assert ns["sim3"].data[ns["pm"]].tolist() == [[1, 2]] * 4


def test_net_not_created(shell):
    shell.user_ns.pop("missing", None)
    shell.user_ns.pop("sim4", None)
    result, cap = run(shell, "%%nengo_dl --net missing -n 4 --sim sim4\nx = 1\n")
    assert not result.success and "sim4" not in shell.user_ns
    assert "UsageError" in cap.stderr and "missing" in cap.stderr


def test_help(shell):
    for cell in ("%nengo_dl --help", "%%nengo_dl -h\nran_help = 1\n",
                 "%%nengo_dl -n 5 --help\nran_help = 1\n"):
        shell.user_ns.pop("ran_help", None)
        result, cap = run(shell, cell)
        assert result.success, cell
        for option in ("--help", "--time", "--steps", "--dt", "--seed", "--minibatch-size",
                       "--unroll", "--sim", "--net", "--no-plot", "--probes"):
            assert option in cap.stdout, (cell, option)
        assert "ran_help" not in shell.user_ns  # help runs nothing


def test_line_magic_without_help(shell):
    result, cap = run(shell, "%nengo_dl -n 5")
    assert not result.success and "UsageError" in cap.stderr and "%%nengo_dl" in cap.stderr


def test_user_error_shows_user_line(shell):
    shell.user_ns.pop("sim5", None)
    result, cap = run(shell, "%%nengo_dl -n 10 --sim sim5\n"
                      "a = nengo.Ensemble(10, 1)\nnengo.Connection(a, undefined_thing)\n")
    assert not result.success and isinstance(result.error_in_exec, NameError)
    out = cap.stdout + cap.stderr
    assert "nengo.Connection(a, undefined_thing)" in out
    assert "line 3" in out  # counted as in the cell, the %%nengo_dl line being line 1
    assert "NameError" in out and "undefined_thing" in out
    assert "magics.py" not in out and "run_body" not in out and "exec(" not in out
    assert "sim5" not in shell.user_ns


def test_user_error_in_nested_call(shell):
    result, cap = run(shell, "%%nengo_dl -n 10 --sim sim5\n"
                      "def f():\n    raise ValueError('bad model')\nf()\n")
    out = cap.stdout + cap.stderr
    assert not result.success
    assert "raise ValueError('bad model')" in out and "----> 4 f()" in out
    assert "magics.py" not in out


def test_user_error_chained(shell):
    # nengo raises ValidationError chained onto itself; neither part shows the magic
    result, cap = run(shell, "%%nengo_dl -n 10 --sim sim5\n"
                      "a = nengo.Ensemble(10, 1)\nnengo.Connection(a, a, transform=[[1, 2]])\n")
    out = cap.stdout + cap.stderr
    assert not result.success and "ValidationError" in out
    assert "transform=[[1, 2]]" in out and "magics.py" not in out


def test_syntax_error(shell):
    result, cap = run(shell, "%%nengo_dl -n 10 --sim sim5\na = nengo.Ensemble(10, 1)\nb = (\n")
    out = cap.stdout + cap.stderr
    assert not result.success and "SyntaxError" in out and "b = (" in out
    assert "magics.py" not in out and "sim5" not in shell.user_ns


@pytest.mark.parametrize("options, message", [
    ("-n 10 -t 1", "not both"),
    ("-n -5", "--steps"),
    ("-t -1", "--time"),
    ("-n abc", "invalid int"),
    ("--dt 0", "--dt"),
    ("-b 0", "--minibatch-size"),
    ("--unroll 0", "--unroll"),
    ("--sim 1abc", "--sim"),
    ("--net class", "--net"),
    ("--bogus", "unrecognized"),
    ("-p nope", "nope"),
    ("-p ens", "not a Probe"),
])
def test_bad_options(shell, options, message):
    shell.user_ns.pop("sim6", None)
    extra = "" if "--sim" in options else " --sim sim6"
    result, cap = run(shell, f"%%nengo_dl {options}{extra}\n" + MODEL)
    assert not result.success
    assert "UsageError" in cap.stderr and message in cap.stderr, cap.stderr
    assert "Traceback" not in cap.stdout + cap.stderr
    assert "sim6" not in shell.user_ns


def test_plots(shell):
    result, cap = run(shell, "%%nengo_dl -n 20\n" + MODEL)
    assert result.success
    figures = [o for o in cap.outputs if "Figure" in o.data.get("text/plain", "")]
    assert len(figures) == 1 and "with 2 Axes" in figures[0].data["text/plain"]
    assert plt.get_fignums() == []  # shown once, then closed

    result, cap = run(shell, "%%nengo_dl -n 20 -p p_spikes\n" + MODEL)
    figures = [o for o in cap.outputs if "Figure" in o.data.get("text/plain", "")]
    assert len(figures) == 1 and "with 1 Axes" in figures[0].data["text/plain"]

    result, cap = run(shell, "%%nengo_dl -n 20 --no-plot\n" + MODEL)
    assert not cap.outputs

    result, cap = run(shell, "%%nengo_dl -n 20\nnengo.Ensemble(5, 1)\n")  # no probes
    assert result.success and not cap.outputs


def test_ipython_syntax_in_body(shell):
    result, _ = run(shell, "%%nengo_dl -n 3 --no-plot\nx_val = %time 1 + 1\n"
                    "pq = nengo.Probe(nengo.Node(x_val))\n")
    assert result.success
    assert shell.user_ns["sim"].data[shell.user_ns["pq"]].tolist() == [[2], [2], [2]]
