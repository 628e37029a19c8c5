import io
import subprocess
import sys

import pytest
from nengo.exceptions import ValidationError
from nengo.utils.progress import NoProgressBar, TerminalProgressBar

from nengo_dl_nb import progress
from nengo_dl_nb.progress import (NengoBarAdapter, MessageBar, NullProgressBar, ProgressBar, SubProgressBar,
                                  TrainingDashboard, make_progress_bar,
                                  make_training_dashboard)


class FakeClock:
    "A clock the test advances by hand."

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(progress, "_clock", c)
    return c


def segments(buf):
    return buf.getvalue().split("\r")


def test_text_bar_output(clock):
    buf = io.StringIO()
    bar = ProgressBar("Simulating", "Simulation", max_value=10, vars=["loss"],
                      backend="text", stream=buf)
    bar.start()
    assert segments(buf)[-1].startswith("Simulating: [")
    assert "0/10" in segments(buf)[-1]
    clock.t += 1.0
    bar.step(increment=4, loss=0.123)
    line = segments(buf)[-1]
    assert "4/10" in line and "(40%)" in line
    assert "4 steps/s" in line            # 4 steps in 1 s
    assert "ETA 1.5s" in line             # 6 steps left at 4 steps/s
    assert "loss=0.123" in line
    assert "\n" not in buf.getvalue()     # still on one line
    clock.t += 1.0
    bar.step(increment=6, loss=0.05)
    bar.finish()
    out = buf.getvalue()
    assert out.endswith("\n") and out.count("\n") == 1
    final = segments(buf)[-1]
    assert final == "Simulation finished in 2.0s (10 steps, 5 steps/s) loss=0.05\n"
    assert bar.success and bar.finished and bar.max_steps == 10


def test_text_bar_overwrites_longer_line(clock):
    buf = io.StringIO()
    bar = ProgressBar("Simulating", max_value=10, backend="text", stream=buf, min_interval=0)
    bar.start()
    clock.t += 1
    bar.step(loss="a very long value indeed")
    clock.t += 1
    bar.step(loss="x")
    a, b = segments(buf)[-2:]
    assert len(b) >= len(a)                # padded to cover the longer line


def test_text_bar_failure_and_context_manager(clock):
    buf = io.StringIO()
    with pytest.raises(RuntimeError):
        with ProgressBar("Simulating", "Simulation", 10, backend="text", stream=buf) as bar:
            clock.t += 2
            bar.step(3)
            raise RuntimeError("boom")
    assert not bar.success
    assert segments(buf)[-1] == "Simulation failed after 2.0s (3/10 steps, 1.5 steps/s)\n"


def test_text_bar_default_stream_is_stderr(capsys):
    with ProgressBar("Simulating", "Simulation", 2, backend="text") as bar:
        bar.step()
        bar.step()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Simulation finished" in captured.err and captured.err.endswith("\n")


def test_unknown_max_and_max_steps_alias(clock):
    buf = io.StringIO()
    bar = ProgressBar("Optimizing", "Optimization", max_value=None, backend="text",
                      stream=buf, min_interval=0)
    bar.start()
    clock.t += 1
    bar.step(5)
    assert "Optimizing: 5 steps 5 steps/s elapsed 1.0s" in segments(buf)[-1]
    bar.max_steps = 20
    assert bar.max_value == 20
    bar.step(5)
    assert "10/20" in segments(buf)[-1]


def test_step_before_start_starts(clock):
    buf = io.StringIO()
    bar = ProgressBar("Simulating", max_value=3, backend="text", stream=buf)
    bar.step()
    assert bar.started and bar.value == 1


def test_null_progress_bar_prints_nothing(capsys):
    with NullProgressBar("Simulating", "Simulation", 10, vars=["loss"]) as bar:
        for _ in range(10):
            bar.step(loss=1.0)
        with bar.sub("inner", max_value=3) as sub:
            sub.step()
    bar.finish()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert bar.widget is None and bar.n_draws == 0
    assert isinstance(bar, ProgressBar)


def test_sub_progress_bar_text(clock):
    buf = io.StringIO()
    bar = ProgressBar("Building", "Build", max_value=1, backend="text", stream=buf,
                      min_interval=0)
    bar.start()
    sub = bar.sub("optimizing graph", max_value=4)
    assert isinstance(sub, SubProgressBar)
    sub.start()
    clock.t += 1
    sub.step(2)
    assert segments(buf)[-1].startswith("Building: optimizing graph: [")
    assert "2/4" in segments(buf)[-1]
    sub.step(2)
    sub.finish()
    assert "\n" not in buf.getvalue()      # a sub-bar starts no new line
    assert segments(buf)[-1].startswith("Building: [")   # the parent drew itself again
    bar.step()
    bar.finish()
    assert buf.getvalue().count("\n") == 1


def test_message_bar(clock):
    buf = io.StringIO()
    bar = MessageBar("Compiling", "Compilation", backend="text", stream=buf)
    bar.start()
    assert segments(buf)[-1] == "Compiling... 0.0s"
    clock.t += 3.0
    bar.finish()
    assert segments(buf)[-1] == "Compilation finished in 3.0s\n"


def test_widget_bar_updates_during_run(clock):
    bar = ProgressBar("Simulating", "Simulation", max_value=10, vars=["loss"],
                      backend="widget")
    box = bar.widget
    progress_w, label = box.children
    bar.start()
    assert (progress_w.value, progress_w.max, progress_w.description) == (0, 10, "Simulating")
    clock.t += 1.0
    bar.step(increment=3, loss=0.5)
    assert (progress_w.value, progress_w.max, progress_w.description) == (3, 10, "Simulating")
    assert "3/10" in label.value and "loss=0.5" in label.value and "ETA" in label.value
    assert progress_w.bar_style == ""
    clock.t += 1.0
    bar.step(increment=4, loss=0.25)
    assert progress_w.value == 7 and "loss=0.25" in label.value
    bar.finish()
    assert progress_w.value == progress_w.max == 10
    assert progress_w.description == "Simulation" and progress_w.bar_style == "success"
    assert "finished in" in label.value


def test_widget_bar_failure_and_reuse(clock):
    bar = ProgressBar("Simulating", "Simulation", max_value=10, backend="widget")
    progress_w, label = bar.widget.children
    bar.start()
    clock.t += 1
    bar.step(4)
    bar.finish(success=False)
    assert progress_w.bar_style == "danger" and progress_w.value == 4
    # an existing bar is reused for the next stage, with the same widget
    same = make_progress_bar(bar, "Training", "Training", 5, vars=["loss"])
    assert same is bar and same.widget.children[0] is progress_w
    same.start()
    assert (progress_w.value, progress_w.max, progress_w.description) == (0, 5, "Training")
    assert progress_w.bar_style == ""


def test_widget_sub_bar(clock):
    bar = ProgressBar("Building", "Build", max_value=2, backend="widget", min_interval=0)
    progress_w, label = bar.widget.children
    bar.start()
    with bar.sub("optimizing graph", max_value=8) as sub:
        clock.t += 1
        sub.step(2)
        assert (progress_w.value, progress_w.max) == (2, 8)
        assert progress_w.description == "Building" and "optimizing graph" in label.value
    assert (progress_w.value, progress_w.max) == (0, 2)   # back to the parent


def test_widget_message_bar(clock):
    bar = MessageBar("Compiling", "Compilation", backend="widget")
    progress_w, label = bar.widget.children
    bar.start()
    assert progress_w.value == 0 and progress_w.description == "Compiling"
    clock.t += 2
    bar.finish()
    assert progress_w.value == progress_w.max and progress_w.bar_style == "success"
    assert "finished in 2.0s" in label.value


def test_widget_unknown_length_counting_nothing(clock):
    # building: a stage of unknown length whose sub-stages count, the bar itself nothing;
    # its label reads like a message bar's (no "0 steps"), as the text bar's line does
    bar = ProgressBar("Building", "Build", max_value=None, backend="widget")
    progress_w, label = bar.widget.children
    bar.start()
    clock.t += 1.5
    bar.sub("building network").step()  # a refresh while running (the sub-bar counts)
    assert "steps" not in label.value
    bar.finish()
    assert progress_w.value == progress_w.max and "finished in 1.5s" in label.value
    assert "steps" not in label.value


def test_throttling(clock):
    buf = io.StringIO()
    bar = ProgressBar("Simulating", "Simulation", max_value=10_000, backend="text",
                      stream=buf, min_interval=0.1)
    bar.start()
    for i in range(10_000):
        clock.t += 1e-4                    # 10,000 steps over 1 s
        bar.step()
    bar.finish()
    # start, about one redraw per 0.1 s, and the final draw
    assert 10 <= bar.n_draws <= 13
    assert bar._get_view().n_writes == bar.n_draws
    assert len([seg for seg in segments(buf) if seg.strip()]) == bar.n_draws


def test_throttling_real_clock():
    buf = io.StringIO()
    bar = ProgressBar("Simulating", "Simulation", max_value=50_000, backend="text",
                      stream=buf)
    with bar:
        for _ in range(50_000):
            bar.step()
    assert bar.n_draws < 50                # 50,000 fast steps, few redraws
    assert buf.getvalue().endswith("\n")


def test_make_progress_bar():
    assert type(make_progress_bar(False, "Simulating")) is NullProgressBar
    assert type(make_progress_bar(None, "Simulating")) is NullProgressBar
    bar = make_progress_bar(True, "Simulating", "Simulation", 10, ["loss"])
    assert type(bar) is ProgressBar and bar.backend == "text"   # no kernel here
    assert (bar.present, bar.past, bar.max_steps, bar.var_names) == (
        "Simulating", "Simulation", 10, ["loss"])
    assert make_progress_bar("widget", "Simulating").backend == "widget"
    assert type(make_progress_bar(NoProgressBar(), "x")) is NullProgressBar
    assert type(make_progress_bar(TerminalProgressBar(), "x")) is NengoBarAdapter
    with pytest.raises(ValidationError):
        make_progress_bar(3, "Simulating")
    with pytest.raises(ValidationError):
        ProgressBar(backend="svg")


def test_training_dashboard_widget(clock):
    dash = TrainingDashboard(2, 3, backend="widget")
    bar_box, image, summary = dash.widget.children
    dash.start()
    losses = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]
    for i, loss in enumerate(losses):
        clock.t += 1.0                     # slower than both throttles: every update draws
        dash.update(i // 3, i % 3, loss)
        if i == 1:                         # in the middle of the first epoch
            assert bar_box.children[0].value == 2 and bar_box.children[0].max == 6
            assert "loss=0.8" in bar_box.children[1].value
            assert image.value[:4] == b"\x89PNG"
            mid_png = image.value
        if i % 3 == 2:
            dash.end_epoch(i // 3, sum(losses[i - 2:i + 1]) / 3)
    assert image.value != mid_png           # the curve was redrawn
    assert dash.history["loss"] == losses
    assert dash.history["epoch"] == [0, 0, 0, 1, 1, 1]
    assert dash.history["batch"] == [0, 1, 2, 0, 1, 2]
    assert dash.history["epoch_loss"] == pytest.approx([0.8, 0.4])
    summary_dict = dash.finish(examples_per_second=123.0)
    assert summary_dict["final_loss"] == pytest.approx(0.4)
    assert summary_dict["epochs"] == 2 and summary_dict["examples_per_second"] == 123.0
    assert summary_dict["time"] == pytest.approx(6.0)
    assert "final loss 0.4" in summary.value and "123 examples/s" in summary.value
    assert bar_box.children[0].bar_style == "success"


def test_training_dashboard_plot_throttle(clock):
    dash = TrainingDashboard(1, 1000, backend="widget", min_interval=0.5)
    for i in range(1000):
        clock.t += 1e-3                    # 1000 batches in 1 s
        dash.update(0, i, 1.0 / (i + 1))
    assert dash.n_plots <= 3               # at most every 0.5 s
    dash.end_epoch(0, 0.1)
    dash.finish()
    assert dash.n_plots <= 4


def test_training_dashboard_text(clock):
    buf = io.StringIO()
    with TrainingDashboard(2, 2, backend="text", stream=buf) as dash:
        for epoch in range(2):
            for batch in range(2):
                clock.t += 0.5
                dash.update(epoch, batch, 0.5 / (epoch + 1))
            dash.end_epoch(epoch, 0.5 / (epoch + 1))
    assert dash.widget is None
    lines = [seg.rstrip("\n") for seg in segments(buf) if seg.endswith("\n")]
    assert lines[0] == "Epoch 1/2: mean loss 0.5 (1.0s)"
    assert lines[1] == "Epoch 2/2: mean loss 0.25 (2.0s)"
    assert lines[-1] == "Training summary: 2 epochs, final loss 0.25, 2.0s"


def test_make_training_dashboard():
    assert make_training_dashboard(False, 2, 3) is None
    assert make_training_dashboard(NullProgressBar(), 2, 3) is None
    assert make_training_dashboard(True, 2, 3).backend == "text"
    bar = ProgressBar(backend="widget")
    assert make_training_dashboard(bar, 2, 3).backend == "widget"


def test_no_ipython_import_at_module_level():
    # nengo may import IPython itself; our module must add neither IPython nor ipywidgets
    code = ("import sys, nengo\n"
            "mods = lambda: {m for m in sys.modules if m.startswith(('IPython', 'ipywidgets'))}\n"
            "before = mods()\n"
            "import nengo_dl_nb.progress as p\n"
            "b = p.make_progress_bar(True, 'x', max_value=2); b.start(); b.step(); b.finish()\n"
            "assert mods() == before, sorted(mods() - before)\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_notebook_detection(monkeypatch):
    import IPython

    class Shell:
        def __init__(self, config):
            self.config = config

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert not progress.in_notebook() and progress.choose_backend() == "text"
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell({}))   # terminal IPython
    assert not progress.in_notebook()
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell({"IPKernelApp": {}}))
    assert progress.in_notebook() and progress.choose_backend() == "widget"
    assert make_progress_bar(True, "Simulating").backend == "widget"


def test_nengo_bars_are_driven_as_nengo_does():
    "A Nengo ProgressBar gets update(progress) per step, one Progress per stage, then close()."
    from nengo.utils.progress import ProgressBar as NengoBar

    class Recorder(NengoBar):
        def __init__(self):
            super().__init__()
            self.updates, self.closed = [], False

        def update(self, progress):
            self.updates.append((progress, progress.n_steps, progress.max_steps))

        def close(self):
            self.closed = True

    rec = Recorder()
    with make_progress_bar(rec, "Simulating", "Simulation", 3) as bar:
        with bar.sub("stage", max_value=2) as sub:
            sub.step()
            sub.step()
        bar.step(increment=3)
    assert rec.closed
    stages = {id(p) for p, _, _ in rec.updates}
    assert len(stages) == 2  # the bar's own Progress and the sub-stage's
    assert rec.updates[-1][1:] == (3, 3)
    assert [(n, m) for p, n, m in rec.updates if m == 2] == [(0, 2), (1, 2), (2, 2), (2, 2)]
