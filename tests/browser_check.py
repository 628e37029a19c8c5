"""Open the getting-started notebook in JupyterLab in a headless Chromium, run it, check the
page, and save a screenshot of the `%%nengo_dl` cell: its progress widgets at 100% and its
probe plot.

    python tests/browser_check.py --out screenshots/getting_started.png

What it does: copies `nbs/70_getting_started.ipynb` into a temporary directory, serves
JupyterLab there on 127.0.0.1 (a free port, a random token, no browser, its own settings
and workspace directories), opens the notebook in Chromium driven by Selenium (Debian's
`chromium` and `chromedriver`; nothing is downloaded), runs all cells with JupyterLab's
`notebook:run-all-cells` command, waits until every code cell has run and the kernel is
idle, and then checks in the DOM that

* no cell shows an error output,
* every widget output has rendered (no "Loading widget...", no text repr in its place),
* the `%%nengo_dl` cell shows progress widgets, each with its bar at 100% (the widget's
  value equals its max) and marked finished,
* and the same cell shows the probe plot as a loaded `<img>`.

It saves the screenshot (`--out`) and a JSON file of what it found (the same path with
`.json`), prints one line per check, and exits 0 only if all checks pass (1 if a check
fails, 2 if something else goes wrong, such as the time limit `--timeout`). The server is
shut down (kernels included) on success and on failure.
"""

import argparse
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "nbs" / "70_getting_started.ipynb"
DEFAULT_OUT = ROOT / "screenshots" / "getting_started.png"
MAGIC = "%%nengo_dl"

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--hide-scrollbars",
    "--force-device-scale-factor=1",
]

# JupyterLab user settings for the run: keep every cell in the DOM (no windowing), start the
# notebook's kernel without asking, and fetch nothing from the internet.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none",
                                               "autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}


class CheckFailed(Exception):
    "A check on the page did not pass."


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self):
        return self.end - time.monotonic()

    def wait_for(self, what, predicate, poll=0.25):
        "Poll `predicate` until it returns something truthy; that value. TimeoutError past the deadline."
        while True:
            value = predicate()
            if value:
                return value
            if self.left() <= 0:
                raise TimeoutError(f"time limit ({self.seconds:.0f} s) reached waiting for {what}")
            time.sleep(poll)


def log(msg):
    print(f"[browser_check] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_dirs(tmp, notebook, tf_log_level="3"):
    "The server's root (with a copy of `notebook`, kernelspec added) and its private Jupyter dirs."
    root = tmp / "root"
    root.mkdir()
    nb = json.loads(notebook.read_text())
    nb.setdefault("metadata", {})["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"}
    (root / notebook.name).write_text(json.dumps(nb, indent=1))
    settings = tmp / "lab-settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ,
               TF_CPP_MIN_LOG_LEVEL=str(tf_log_level),
               JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    # the kernel imports nengo_dl_nb from this checkout even where it is not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return root, env


class LabServer:
    "JupyterLab on 127.0.0.1, in its own process group, shut down by `stop` whatever happens."

    def __init__(self, root, env, log_path):
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_file = open(log_path, "w")
        self.log_path = log_path
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
               "--LabApp.expose_app_in_browser=True",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path, method="GET", timeout=5):
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status

    def wait_up(self, deadline):
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                return self.api("/api/status") == 200
            except (OSError, urllib.error.URLError):
                return False
        deadline.wait_for("JupyterLab to start", up)

    def log_tail(self, n=40):
        self.log_file.flush()
        return "\n".join(pathlib.Path(self.log_path).read_text().splitlines()[-n:])

    def stop(self):
        "Ask the server to shut down (it stops its kernels); terminate, then kill, if it does not."
        if self.proc.poll() is None:
            try:
                self.api("/api/shutdown", method="POST")
            except (OSError, urllib.error.URLError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                    try:
                        os.killpg(self.proc.pid, sig)
                        self.proc.wait(timeout=wait)
                        break
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        continue
        # anything left in the server's process group (a kernel that outlived it)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log_file.close()


def start_browser(chromium, chromedriver, profile, width, height):
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


# --- JavaScript run in the page ---------------------------------------------------------------

JS_ERRORS_OF = """// error outputs, from the notebook's model (JupyterLab draws them as stderr text)
const errorsOf = panel => panel.content.widgets.filter(c => c.model.type === 'code').flatMap(c => {
  const outs = c.model.outputs, found = [];
  for (let i = 0; i < outs.length; i++) {
    const o = outs.get(i).toJSON();
    if (o.output_type === 'error') found.push(`${o.ename}: ${o.evalue}`.slice(0, 400));
  }
  return found;
});
"""

JS_NOTEBOOK_STATE = """
const path = arguments[0];
const panel = window.jupyterapp ? Array.from(window.jupyterapp.shell.widgets('main')).find(
  w => w.context && w.context.path === path) : null;
if (!panel || !panel.content || !panel.sessionContext) return {ready: false, why: 'no notebook panel yet'};
const ctx = panel.sessionContext;
const kernel = ctx.session && ctx.session.kernel;
const cells = Array.from(panel.node.querySelectorAll('.jp-Notebook .jp-CodeCell'));
const prompts = cells.map(c => {
  const p = c.querySelector('.jp-InputArea-prompt');
  return p ? p.textContent.trim() : '';
});
const current = window.jupyterapp.shell.currentWidget === panel;
%ERRORS_OF%
const errors = errorsOf(panel).length;
return {ready: panel.context.isReady && !!kernel, path: panel.context.path, current: current,
        errors: errors,
        kernel: kernel ? kernel.name : null, status: ctx.kernelDisplayStatus,
        n_code_cells: cells.length, prompts: prompts};
"""

JS_RUN_ALL = """
// what the Run menu's "Run All Cells" does, on the current (focused) notebook
window.__runAll = 'started';
window.jupyterapp.commands.execute('notebook:run-all-cells').then(
  () => { window.__runAll = 'ok'; }, e => { window.__runAll = 'error: ' + e; });
return window.jupyterapp.shell.currentWidget ? window.jupyterapp.shell.currentWidget.id : null;
"""

JS_INSPECT = """
const magic = arguments[1];
const path = arguments[0];
const panel = window.jupyterapp ? Array.from(window.jupyterapp.shell.widgets('main')).find(
  w => w.context && w.context.path === path) : null;
const cells = Array.from(panel.node.querySelectorAll('.jp-Notebook .jp-CodeCell'));
const text = el => (el.textContent || '').trim();
const source = c => {
  const ed = c.querySelector('.jp-InputArea-editor');
  return ed ? ed.textContent : '';
};
const outputsOf = c => Array.from(c.querySelectorAll('.jp-OutputArea-output'));
%ERRORS_OF%
const errors = errorsOf(panel);
const all = cells.flatMap(outputsOf);
// a rendered widget output holds the widget's view (class jupyter-widgets) itself
const widgetOutputs = all.filter(o => o.querySelector(':scope > .jupyter-widgets'));
const unrendered = all.filter(o => /Loading widget|Error displaying widget|IntProgress\\(|HBox\\(children/.test(text(o)))
  .map(o => text(o).slice(0, 200));
const emptyWidgets = widgetOutputs.filter(o => {
  const r = o.getBoundingClientRect(); return r.width === 0 || r.height === 0; }).length;
const magicIndex = cells.findIndex(c => source(c).trimStart().startsWith(magic));
let bars = [], images = [], labels = [];
if (magicIndex >= 0) {
  const cell = cells[magicIndex];
  bars = Array.from(cell.querySelectorAll('.widget-hprogress, .widget-vprogress, .widget-progress')).map(w => {
    const bar = w.querySelector('.progress-bar');
    const label = w.querySelector('.widget-label');
    const style = bar ? bar.style.width : null;
    const track = w.querySelector('.progress');
    const shown = bar && track && track.getBoundingClientRect().width > 0
      ? bar.getBoundingClientRect().width / track.getBoundingClientRect().width : null;
    return {description: label ? text(label) : '', width: style, filled: shown,
            success: !!(bar && bar.classList.contains('progress-bar-success'))};
  });
  labels = Array.from(cell.querySelectorAll('.widget-html-content')).map(text);
  images = Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).map(img => ({
    complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
    shownWidth: img.getBoundingClientRect().width, src: (img.src || '').slice(0, 30)}));
}
return {n_code_cells: cells.length, errors: errors, n_widget_outputs: widgetOutputs.length,
        unrendered: unrendered, empty_widget_outputs: emptyWidgets,
        magic_cell: magicIndex, progress_bars: bars, progress_labels: labels, images: images};
"""

# both scripts read the error outputs the same way
JS_NOTEBOOK_STATE, JS_INSPECT = (js.replace("%ERRORS_OF%\n", JS_ERRORS_OF)
                                 for js in (JS_NOTEBOOK_STATE, JS_INSPECT))

JS_SCROLL_TO_MAGIC = """
const magic = arguments[1];
const path = arguments[0];
const panel = window.jupyterapp ? Array.from(window.jupyterapp.shell.widgets('main')).find(
  w => w.context && w.context.path === path) : null;
const cells = Array.from(panel.node.querySelectorAll('.jp-Notebook .jp-CodeCell'));
const cell = cells.find(c => {
  const ed = c.querySelector('.jp-InputArea-editor');
  return ed && ed.textContent.trimStart().startsWith(magic);
});
window.jupyterapp.shell.collapseLeft();   // more room for the notebook in the picture
cell.scrollIntoView({block: 'start'});
const scroller = cell.closest('.jp-WindowedPanel-outer') || cell.parentElement;
scroller.scrollTop = Math.max(0, scroller.scrollTop - 60);
const r = cell.getBoundingClientRect();
return {top: r.top, bottom: r.bottom, viewport: window.innerHeight};
"""


def check_page(found):
    "The list of (name, passed, detail) for what the page showed."
    bars = found["progress_bars"]
    full = [b for b in bars if b["width"] == "100%" and b["filled"] is not None
            and b["filled"] > 0.99 and b["success"]]
    images = [i for i in found["images"] if i["complete"] and i["naturalWidth"] >= 100
              and i["naturalHeight"] >= 100 and i["shownWidth"] > 0]
    finished = [lab for lab in found["progress_labels"] if "finished" in lab]
    return [
        ("no error outputs", not found["errors"], found["errors"] or "none"),
        ("widgets rendered (no 'Loading widget...' or text repr)",
         found["n_widget_outputs"] > 0 and not found["unrendered"]
         and found["empty_widget_outputs"] == 0,
         f"{found['n_widget_outputs']} widget outputs, {found['empty_widget_outputs']} empty, "
         f"unrendered: {found['unrendered'] or 'none'}"),
        (f"{MAGIC} cell found", found["magic_cell"] >= 0, f"code cell {found['magic_cell']}"),
        ("progress widgets at 100% (value == max) and finished",
         bool(bars) and len(full) == len(bars) and len(finished) >= len(bars),
         f"{len(full)}/{len(bars)} bars full: "
         + "; ".join(f"{b['description']} {b['width']}" for b in bars)
         + f" | labels: {found['progress_labels']}"),
        ("probe plot shown as an <img>", bool(images),
         ", ".join(f"{i['naturalWidth']}x{i['naturalHeight']} png" for i in images) or "none"),
    ]


def run(args):
    deadline = Deadline(args.timeout)
    out = pathlib.Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    report_path = out.with_suffix(".json")
    for p in (out, report_path):
        p.unlink(missing_ok=True)
    for exe in (args.chromium, args.chromedriver):
        if not shutil.which(exe):
            raise RuntimeError(f"{exe} not found (Debian: apt-get install -y chromium chromium-driver)")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nengo_dl_nb_browser_"))
    server = driver = None
    t0 = time.monotonic()
    timings = {}
    try:
        root, env = prepare_dirs(tmp, pathlib.Path(args.notebook), args.tf_log_level)
        server = LabServer(root, env, tmp / "jupyterlab.log")
        log(f"JupyterLab starting on {server.base} (root {root})")
        server.wait_up(deadline)
        timings["server_up"] = time.monotonic() - t0
        log(f"JupyterLab up after {timings['server_up']:.1f} s")

        (tmp / "chromium-profile").mkdir()
        driver = start_browser(args.chromium, args.chromedriver, tmp / "chromium-profile",
                               args.width, args.height)
        name = pathlib.Path(args.notebook).name
        driver.get(f"{server.base}/lab/tree/{name}?reset&token={server.token}")

        def opened():
            st = driver.execute_script(JS_NOTEBOOK_STATE, name)
            return st if st.get("ready") and st.get("status") == "idle" else None
        state = deadline.wait_for("the notebook to open and its kernel to be idle", opened)
        timings["notebook_open"] = time.monotonic() - t0
        log(f"opened {state['path']} ({state['n_code_cells']} code cells), kernel "
            f"{state['kernel']} idle after {timings['notebook_open']:.1f} s")

        # click the first cell, as a user would, so the notebook has the focus (JupyterLab's
        # commands act on the focused notebook; a headless window starts without focus)
        from selenium.webdriver.common.by import By
        driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook .jp-Cell").click()
        deadline.wait_for("the notebook to take the focus",
                          lambda: driver.execute_script(JS_NOTEBOOK_STATE, name).get("current"))
        driver.execute_script(JS_RUN_ALL)
        log("running all cells (Run > Run All Cells)")

        last = {}

        def all_ran():
            st = driver.execute_script(JS_NOTEBOOK_STATE, name)
            run_all = driver.execute_script("return window.__runAll;")
            last.update(kernel=st.get("status"), prompts=" ".join(st.get("prompts", [])),
                        run_all=run_all, error_outputs=st.get("errors"))
            if st.get("status") in ("dead", "unknown") or str(run_all).startswith("error"):
                raise RuntimeError(f"running the notebook failed: kernel {st.get('status')}, "
                                   f"run-all-cells {run_all}")
            # every code cell shows an execution count, or the run stopped at an error;
            # and the kernel is idle
            ran = all(p.startswith("[") and p[1:-2].strip().isdigit() for p in st["prompts"])
            stopped = run_all == "ok" and st["errors"] and "[*]:" not in st["prompts"]
            return st if (ran or stopped) and st["status"] == "idle" else None
        try:
            state = deadline.wait_for("all cells to run and the kernel to be idle", all_ran,
                                      poll=0.5)
        except TimeoutError as e:
            raise TimeoutError(f"{e} (last seen: {last})") from None
        timings["cells_ran"] = time.monotonic() - t0
        log(f"{'all ' if not state['errors'] else 'stopped at an error: '}"
            f"{sum(p[1:-2].isdigit() for p in state['prompts'])} of {state['n_code_cells']} "
            f"code cells ran, after {timings['cells_ran']:.1f} s")

        # widgets and images render asynchronously: give the page up to 30 s to show them
        settle = Deadline(max(1.0, min(30.0, deadline.left())))

        def settled():
            found = driver.execute_script(JS_INSPECT, name, MAGIC)
            checks = check_page(found)
            return (found, checks) if found["errors"] or all(ok for _, ok, _ in checks) else None
        try:
            found, checks = settle.wait_for("the page to show every output", settled)
        except TimeoutError:
            found = driver.execute_script(JS_INSPECT, name, MAGIC)
            checks = check_page(found)

        for _ in range(2):   # again once the notebook has reflowed into the wider panel
            driver.execute_script(JS_SCROLL_TO_MAGIC, name, MAGIC)
            time.sleep(0.5)
        driver.save_screenshot(str(out))
        timings["total"] = time.monotonic() - t0
        log(f"screenshot saved to {out}")

        passed = all(ok for _, ok, _ in checks)
        report = {"passed": passed, "screenshot": str(out), "url": f"{server.base}/lab",
                  "checks": [{"name": n, "passed": ok, "detail": d} for n, ok, d in checks],
                  "page": found, "timings_s": {k: round(v, 1) for k, v in timings.items()}}
        report_path.write_text(json.dumps(report, indent=1))
        for n, ok, d in checks:
            log(f"{'PASS' if ok else 'FAIL'}: {n}: {d}")
        if not passed:
            raise CheckFailed(f"some checks failed; see {report_path} and {out}")
        log(f"all checks passed in {timings['total']:.1f} s; report {report_path}")
    except Exception as e:
        if server is not None and not isinstance(e, CheckFailed):
            log("JupyterLab log (last lines):\n" + server.log_tail())
        if driver is not None and not out.exists():
            try:
                driver.save_screenshot(str(out.with_name(out.stem + "_failed.png")))
                log(f"screenshot of the failure: {out.with_name(out.stem + '_failed.png')}")
            except Exception:
                pass
        raise
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        if server is not None:
            server.stop()
            log(f"JupyterLab stopped (exit code {server.proc.returncode})")
        shutil.rmtree(tmp, ignore_errors=True)


def exit_code(run, args, log):
    "Run the check `run(args)`: 0 when it passed, 1 when a check failed, 2 on any other error."
    try:
        run(args)
    except CheckFailed as e:
        log(f"FAILED: {e}")
        return 1
    except Exception as e:
        log(f"ERROR: {type(e).__name__}: {e}")
        return 2
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT),
                    help="screenshot path (PNG); the report goes beside it as .json "
                         f"(default {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--notebook", default=str(NOTEBOOK), help="notebook to open and run")
    ap.add_argument("--timeout", type=float, default=300,
                    help="time limit in seconds for the whole check (default 300)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--chromedriver",
                    default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    ap.add_argument("--tf-log-level", default="3",
                    help="TF_CPP_MIN_LOG_LEVEL for the kernel (default 3: on a machine without "
                         "a GPU, TensorFlow's C++ logs a cuInit error on stderr, which the "
                         "notebook would show under the progress bar; Python errors still show)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1400)
    return exit_code(run, ap.parse_args(argv), log)


if __name__ == "__main__":
    sys.exit(main())
