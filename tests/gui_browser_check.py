"""Run a nengo_gui model in a headless Chromium with each backend, press play, move a slider
and check that the decoded value follows; record play -> running and the speed.

    python tests/gui_browser_check.py --out screenshots/gui.png

For each backend (`--backends`, default `nengo nengo_dl_nb`) it starts nengo_gui's own
command, `nengo --no-browser -P PORT --auto-shutdown 0 -b BACKEND MODEL.py`, in a temporary
directory holding a copy of the model and its `.cfg` (default: nengo_gui's tutorial
07-multiple-dimensions, a 3-D slider on `stim`, value plots of `a` and `b`), with this
checkout first on PYTHONPATH, so `-b nengo_dl_nb` is this checkout's simulator. Then, in
Chromium driven by Selenium (Debian's `chromium` and `chromedriver`), it

* opens the page the server printed (its token included) and waits for the play button;
* clicks play, and times it to the status "running" (the pause icon) and to the first
  simulated time the page receives (build and first step);
* at real time (where nengo_gui starts), drags the first handle of the slider up, waits
  until the first value plot (`a`, fed by the slider) holds data from 0.5 s of simulated
  time after the move, and reads the slider's value and the plot's latest value; then
  drags it down and does the same. Passes if each time the plotted value's first
  dimension is within 0.25 of the slider's, and the two slider values differ by at
  least 0.5;
* drags the speed slider to its right end (full speed), waits until the server reports
  that it no longer slows the simulation down, and reads the simulated time the page
  shows over `--seconds` of wall time, three times (median);
* presses reset (nengo_gui drops its simulator) and play again, and times this second
  start to the first simulated time, as the first.

It saves a screenshot per backend (`--out`, with the backend in the name) and a JSON
report beside `--out` (`.json`), prints one line per check, and exits 0 only if every
check passes for every backend (1 if one fails, 2 if something else goes wrong). The
servers are stopped whatever happens.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from browser_check import CheckFailed, Deadline, exit_code, free_port, start_browser  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "screenshots" / "gui.png"
DEFAULT_MODEL = "07-multiple-dimensions"


def log(msg):
    print(f"[gui_browser_check] {msg}", flush=True)


def model_path(model):
    "A model file, or one of nengo_gui's tutorials by name."
    if os.path.isfile(model):
        return pathlib.Path(model).resolve()
    import nengo_gui
    path = pathlib.Path(nengo_gui.__file__).parent / "examples" / "tutorial" / f"{model}.py"
    if not path.exists():
        raise RuntimeError(f"no model file {model!r} and no nengo_gui tutorial of that name")
    return path


class GuiServer:
    "`nengo ... -b BACKEND MODEL.py` on localhost, in its own process group."

    def __init__(self, model, backend, tmp, tf_log_level="3"):
        self.port = free_port()
        self.log_path = tmp / f"nengo_gui_{backend}.log"
        self.log_file = open(self.log_path, "w")
        nengo = pathlib.Path(sys.executable).with_name("nengo")
        cmd = [str(nengo)] if nengo.exists() else [sys.executable, "-m", "nengo_gui.main"]
        cmd += ["--no-browser", "-P", str(self.port), "--auto-shutdown", "0", "-b", backend,
                model.name]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL=str(tf_log_level))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=model.parent, env=env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log_text(self):
        self.log_file.flush()
        return self.log_path.read_text()

    def wait_url(self, deadline):
        def url():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nengo exited with code {self.proc.returncode}:\n"
                                   + self.log_text()[-3000:])
            m = re.search(r"(https?://\S+:%d\S*)" % self.port, self.log_text())
            return m.group(1) if m else None
        return deadline.wait_for("the nengo_gui server to start", url)

    def stop(self):
        for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log_file.close()


# --- JavaScript run in the page ---------------------------------------------------------------

JS_STATE = """
if (typeof Nengo === 'undefined' || typeof sim === 'undefined' || !sim || !sim.pause_button_icon)
  return {ready: false};
const comps = Nengo.Component.components;
const values = comps.filter(c => c instanceof Nengo.Value).map(c => {
  const ds = c.data_store, n = ds.times.length;
  return {label: c.label.textContent, n: n, t: n ? ds.times[n - 1] : null,
          last: n ? ds.data.map(d => d[d.length - 1]) : null};
});
const sliders = comps.filter(c => c instanceof Nengo.Slider).map(c => ({
  label: c.label.textContent, values: c.sliders.map(s => s.value)}));
return {ready: true, icon: sim.pause_button_icon.className, time: sim.time, rate: sim.rate,
        values: values, sliders: sliders};
"""

JS_SLIDER_HANDLE = """
const s = Nengo.Component.components.filter(c => c instanceof Nengo.Slider)[0];
return s ? [s.sliders[arguments[0]].handle, s.sliders[arguments[0]].guideline.clientHeight] : null;
"""


def drag(driver, element, dx, dy):
    "Drag `element` by (dx, dy) pixels in small moves, as a hand does (interact.js needs moves)."
    from selenium.webdriver.common.action_chains import ActionChains
    steps = 10
    chain = ActionChains(driver).click_and_hold(element)
    for _ in range(steps):
        chain = chain.move_by_offset(dx / steps, dy / steps)
    chain.release().perform()


def check_backend(driver, server, backend, args, out):
    deadline = Deadline(args.timeout)
    url = server.wait_url(deadline)
    log(f"{backend}: server at {url.split('?')[0]}")
    driver.get(url)
    driver.set_script_timeout(120)  # a page starved of CPU on a loaded machine answers late
    state = lambda: driver.execute_script(JS_STATE)  # noqa: E731
    deadline.wait_for("the page and its play button", lambda: state().get("ready"))
    st = deadline.wait_for("the page's plots", lambda: (lambda s: s if s["values"] and s["sliders"]
                                                         else None)(state()))
    log(f"{backend}: page up: sliders {[s['label'] for s in st['sliders']]}, value plots "
        f"{[v['label'] for v in st['values']]}")

    from selenium.webdriver.common.by import By
    t0 = time.monotonic()
    driver.find_element(By.ID, "pause_button").click()
    running = deadline.wait_for("status running",
                                lambda: "glyphicon-pause" in state()["icon"] and time.monotonic(),
                                poll=0.02)
    first = deadline.wait_for("the first simulated time",
                              lambda: (state()["time"] or 0) > 0 and time.monotonic(), poll=0.02)
    to_running, to_first_step = running - t0, first - t0
    log(f"{backend}: play -> running {to_running:.2f} s, -> first data {to_first_step:.2f} s")

    # the slider, at real time (before full speed: at full speed a browser on a loaded
    # machine can fall behind the data its plots receive, by hundreds of simulated seconds,
    # and would show values from before the move)
    seen = []
    handle, height = driver.execute_script(JS_SLIDER_HANDLE, 0)
    for dy in (-0.35 * height, 0.7 * height):   # up to about +0.7, then down to about -0.7
        drag(driver, handle, 0, dy)
        t_move = state()["time"]

        def settled():
            # the plot holds data from at least 0.5 s of simulated time after the move, and
            # its value is near the slider's (the page may also be between two messages,
            # its plot's data store empty for a moment)
            s = state()
            if not (s and s.get("values") and s["values"][0]["last"]
                    and s["values"][0]["t"] > t_move + 0.5):
                return None
            near = abs(s["values"][0]["last"][0] - s["sliders"][0]["values"][0]) < 0.25
            return s if near else None

        try:
            st = Deadline(min(60, deadline.left())).wait_for(
                "the plotted value to follow the slider", settled, poll=0.1)
        except TimeoutError:  # it does not follow: reported by the checks below
            st = deadline.wait_for("a plotted value", lambda: (
                lambda s: s if s and s.get("values") and s["values"][0]["last"] else None)(
                state()), poll=0.1)
        slider = st["sliders"][0]["values"][0]
        plotted = st["values"][0]["last"][0]
        seen.append({"slider": slider, "plotted": plotted, "plot": st["values"][0]["label"],
                     "at": st["values"][0]["t"], "moved_at": t_move})
        log(f"{backend}: slider {st['sliders'][0]['label']}[0] at {slider:+.2f} (t = "
            f"{t_move:.2f}): {st['values'][0]['label']}[0] = {plotted:+.2f} (t = "
            f"{st['values'][0]['t']:.2f})")

    # full speed: the speed slider (next to the play button) dragged to its right end; the
    # page sends the new speed with its next message, and the server's SimControl then
    # reports that it no longer holds the simulation back (rate_proportion 1)
    time.sleep(1.0)
    full = lambda: driver.execute_script(  # noqa: E731
        "return [sim.speed_throttle_handle.style.left, sim.speed_throttle_changed, "
        "sim.rate_proportion];")
    at_full = lambda f: f[0] == "110px" and not f[1] and f[2] > 0.99  # noqa: E731
    for attempt in range(4):
        if attempt < 3:
            drag(driver, driver.find_element(By.CSS_SELECTOR, "#speed_throttle .btn"), 200, 0)
        else:  # a page starved of CPU can miss the drags: what the drag handler does, in JS
            log(f"{backend}: the speed slider missed three drags ({full()}); set from JS")
            driver.execute_script(
                "sim.speed_throttle_set = true; sim.speed_throttle_handle.style.left = '110px';"
                "sim.speed_throttle_changed = true;")
        try:
            Deadline(5 if attempt < 3 else 20).wait_for(
                "the speed slider to take effect", lambda: at_full(full()), poll=0.05)
            break
        except TimeoutError:
            continue
    else:
        raise RuntimeError(f"the speed slider did not reach full speed: {full()}")
    time.sleep(1.0)
    speeds = []
    for _ in range(3):
        w0, s0 = time.monotonic(), state()["time"]
        time.sleep(args.seconds)
        w1, s1 = time.monotonic(), state()["time"]
        speeds.append((s1 - s0) / (w1 - w0))
    speed = statistics.median(speeds)
    log(f"{backend}: full speed {speed:.2f} simulated s per wall s ({', '.join(f'{s:.2f}' for s in speeds)})")

    # a second start in the same server: reset (nengo_gui drops its simulator; the page
    # shows time 0, paused) and play again, timed as the first (the build, with what the
    # first start left: modules imported, caches warm)
    # paused first: at full speed a page starved of CPU lags behind the data it receives and
    # would show times from before the reset long after it; and a press it misses is pressed
    # again (as the speed slider's drags above)
    driver.find_element(By.ID, "pause_button").click()
    deadline.wait_for("the pause", lambda: "glyphicon-play" in state()["icon"], poll=0.05)
    for attempt in range(3):
        driver.find_element(By.ID, "reset_button").click()
        try:
            Deadline(min(60, deadline.left())).wait_for(
                "the reset", lambda: (lambda s: s["time"] == 0 and "glyphicon-play" in s["icon"])(
                    state()), poll=0.05)
            break
        except TimeoutError:
            log(f"{backend}: the reset did not show within 60 s (time {state()['time']}); "
                "pressing it again")
    else:
        raise TimeoutError("the reset did not take effect after three presses")
    time.sleep(0.5)  # (a message sent before the reset arriving late would show t > 0)
    deadline.wait_for("the reset to hold", lambda: state()["time"] == 0, poll=0.05)
    t0 = time.monotonic()
    driver.find_element(By.ID, "pause_button").click()
    again = deadline.wait_for("the first simulated time after the reset",
                              lambda: (state()["time"] or 0) > 0 and time.monotonic(), poll=0.02)
    to_first_again = again - t0
    log(f"{backend}: second start (reset, play) -> first data {to_first_again:.2f} s")

    shot = out.with_name(f"{out.stem}_{backend}{out.suffix}")
    driver.save_screenshot(str(shot))
    checks = [
        ("the slider moved", abs(seen[0]["slider"] - seen[1]["slider"]) >= 0.5,
         f"{seen[0]['slider']:+.2f} then {seen[1]['slider']:+.2f}"),
        ("the decoded value follows the slider",
         all(abs(s["slider"] - s["plotted"]) < 0.25 for s in seen),
         "; ".join(f"slider {s['slider']:+.2f}, {s['plot']} {s['plotted']:+.2f}" for s in seen)),
        ("it runs", speed > 0, f"{speed:.2f} simulated s per wall s"),
    ]
    return {"backend": backend, "play_to_running_s": round(to_running, 2),
            "play_to_first_step_s": round(to_first_step, 2),
            "second_start_to_first_step_s": round(to_first_again, 2),
            "sim_s_per_wall_s": round(speed, 3), "speeds": [round(s, 3) for s in speeds],
            "slider": seen, "screenshot": str(shot),
            "checks": [{"name": n, "passed": ok, "detail": d} for n, ok, d in checks]}


def run(args):
    out = pathlib.Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    for exe in (args.chromium, args.chromedriver):
        if not shutil.which(exe):
            raise RuntimeError(f"{exe} not found (Debian: apt-get install -y chromium chromium-driver)")
    src = model_path(args.model)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nengo_dl_nb_gui_"))
    driver, results = None, []
    try:
        model = tmp / src.name
        shutil.copy(src, model)
        if src.with_name(src.name + ".cfg").exists():
            shutil.copy(src.with_name(src.name + ".cfg"), model.with_name(model.name + ".cfg"))
        (tmp / "chromium-profile").mkdir()
        driver = start_browser(args.chromium, args.chromedriver, tmp / "chromium-profile",
                               args.width, args.height)
        for backend in args.backends:
            server = GuiServer(model, backend, tmp, args.tf_log_level)
            try:
                results.append(check_backend(driver, server, backend, args, out))
            except Exception:
                log(f"{backend}: nengo_gui log (last lines):\n{server.log_text()[-3000:]}")
                try:
                    driver.save_screenshot(str(out.with_name(f"{out.stem}_{backend}_failed.png")))
                except Exception:
                    pass
                raise
            finally:
                server.stop()
                log(f"{backend}: server stopped (exit code {server.proc.returncode})")
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    passed = all(c["passed"] for r in results for c in r["checks"])
    report = {"passed": passed, "model": str(src), "results": results}
    if len(results) == 2 and results[0]["backend"] == "nengo":
        ref, ours = results
        report["ratios"] = {
            "play_to_first_step": round(ours["play_to_first_step_s"] / ref["play_to_first_step_s"], 2),
            "second_start": round(ours["second_start_to_first_step_s"]
                                  / ref["second_start_to_first_step_s"], 2),
            "sim_s_per_wall_s": round(ours["sim_s_per_wall_s"] / ref["sim_s_per_wall_s"], 3)}
        log(f"ours / nengo: play -> first step {report['ratios']['play_to_first_step']}x, "
            f"second start {report['ratios']['second_start']}x, speed {report['ratios']['sim_s_per_wall_s']}x")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    for r in results:
        for c in r["checks"]:
            log(f"{'PASS' if c['passed'] else 'FAIL'}: {r['backend']}: {c['name']}: {c['detail']}")
    if not passed:
        raise CheckFailed(f"some checks failed; see {out.with_suffix('.json')}")
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT),
                    help="screenshot path (PNG; one per backend, the backend in the name); "
                         "the report goes beside it as .json")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help="model file (its .cfg beside it) or nengo_gui tutorial name; its first "
                         "slider must feed its first value plot")
    ap.add_argument("--backends", nargs="+", default=["nengo", "nengo_dl_nb"])
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="wall seconds of each of the three speed readings")
    ap.add_argument("--timeout", type=float, default=300,
                    help="time limit in seconds for each backend (default 300)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    ap.add_argument("--tf-log-level", default="3")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    return exit_code(run, ap.parse_args(argv), log)


if __name__ == "__main__":
    sys.exit(main())
