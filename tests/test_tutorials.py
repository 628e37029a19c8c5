"""The getting-started tutorial, executed in a real Jupyter kernel: its outputs include a
widget view (progress bars, ProbeBrowser) and a PNG plot."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def execute(name, timeout=300):
    "Execute nbs/`name` in a fresh python3 kernel (failing if it cannot start); the notebook."
    nb = nbformat.read(ROOT / "nbs" / name, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "nbs")}})
    client.execute()
    return nb


def output_mime_types(nb):
    return [mime for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) for mime in out.get("data", {})]


def test_getting_started_shows_widgets_and_plots():
    nb = execute("70_getting_started.ipynb")
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    mimes = output_mime_types(nb)
    assert WIDGET_VIEW in mimes
    assert "image/png" in mimes
