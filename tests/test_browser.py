"""The headless-browser check: JupyterLab runs the getting-started notebook in Chromium and
the screenshot shows the progress widgets at 100% and the probe plot (tests/browser_check.py)."""

import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason=f"needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}; Debian: "
           "apt-get install -y chromium chromium-driver, which .ci/run does)")


def png_size(path):
    "(width, height) from a PNG's IHDR chunk; AssertionError if the file is not a PNG."
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_getting_started_in_jupyterlab(tmp_path):
    out = tmp_path / "getting_started.png"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "browser_check.py"), "--out", str(out),
         "--timeout", "300", "--chromium", CHROMIUM, "--chromedriver", CHROMEDRIVER],
        cwd=ROOT, capture_output=True, text=True, timeout=420,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.monotonic() - t0
    print(proc.stdout[-4000:], proc.stderr[-4000:], f"wall time {wall:.1f} s", sep="\n")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    assert out.exists()
    width, height = png_size(out)
    assert width >= 800 and height >= 600, (width, height)
    assert out.stat().st_size > 30_000   # a page with a plot, not a blank image

    report = json.loads(out.with_suffix(".json").read_text())
    assert report["passed"]
    assert report["checks"] and all(c["passed"] for c in report["checks"]), report["checks"]
    page = report["page"]
    assert not page["errors"] and not page["unrendered"]
    bars = page["progress_bars"]
    assert bars and all(b["width"] == "100%" and b["success"] for b in bars), bars
    assert any(i["naturalWidth"] >= 100 and i["naturalHeight"] >= 100 for i in page["images"])


def test_gui_slider_in_headless_chromium(tmp_path):
    # nengo_gui (`nengo -b BACKEND model.py`) with each simulator: play, full speed, a slider
    # dragged up and down, and the decoded value of `a` follows it (tests/gui_browser_check.py)
    pytest.importorskip("nengo_gui")
    out = tmp_path / "gui.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "gui_browser_check.py"), "--out", str(out),
         "--seconds", "1", "--timeout", "240", "--chromium", CHROMIUM,
         "--chromedriver", CHROMEDRIVER],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["passed"] and [r["backend"] for r in report["results"]] == ["nengo", "nengo_dl_nb"]
    for r in report["results"]:
        assert all(c["passed"] for c in r["checks"]), r["checks"]
        up, down = r["slider"]
        assert up["slider"] > 0.5 and down["slider"] < -0.5
        assert abs(up["plotted"] - up["slider"]) < 0.25 and abs(down["plotted"] - down["slider"]) < 0.25
        assert r["play_to_first_step_s"] > 0 and r["sim_s_per_wall_s"] > 0
        width, height = png_size(pathlib.Path(r["screenshot"]))
        assert width >= 800 and height >= 600
