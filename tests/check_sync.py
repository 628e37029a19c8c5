"""Sync checks: the exported modules, the clean notebooks and README.md all follow from nbs/.

Run after the tests (it rewrites generated files, then asks git whether anything changed):
    python tests/check_sync.py          # check (exit 1 on a difference)
    python tests/check_sync.py --write  # only regenerate README.md
"""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def render_readme(nb_path):
    "README.md from index.ipynb: markdown cells as they are, code cells as Python blocks."
    cells = json.loads(nb_path.read_text())["cells"]
    parts = ["<!-- generated from nbs/index.ipynb by tests/check_sync.py: edit the notebook -->"]
    for cell in cells:
        source = "".join(cell["source"]).strip()
        if not source or source.startswith("#|"):
            continue
        if cell["cell_type"] == "markdown":
            parts.append(source)
        else:
            parts.append(f"```python\n{source}\n```")
    return "\n\n".join(parts) + "\n"


def main(argv):
    readme = ROOT / "README.md"
    readme.write_text(render_readme(ROOT / "nbs" / "index.ipynb"))
    if "--write" in argv:
        return 0
    for cmd in (["nbdev_export"], ["nbdev_clean"]):
        subprocess.run(cmd, cwd=ROOT, check=True)
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in readme.read_text().splitlines()
                   if line.startswith("pip install") and "pytest" in line)
    if command not in ci:
        print(".ci/run does not run the README's test command:\n  " + command)
        return 1
    changed = subprocess.run(["git", "status", "--porcelain", "--", "nbs", "nengo_dl_nb",
                              "README.md"], cwd=ROOT, capture_output=True, text=True).stdout
    if changed.strip():
        print("Generated files differ from what is committed:\n" + changed)
        print(subprocess.run(["git", "diff", "--stat"], cwd=ROOT, capture_output=True,
                             text=True).stdout)
        return 1
    print("sync checks: nbdev_export, nbdev_clean and README.md change nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
