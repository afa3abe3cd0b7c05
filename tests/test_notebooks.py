"""Every demo executes as a notebook, as a reader would open it.

jupytext turns the demo's `# %%` cells into a notebook; nbclient runs it in a fresh Jupyter kernel whose
working directory is a temporary folder outside the repository. So the run has no `__file__`, the
kernel's own argv (`-f kernel.json`) in place of flags, and a working directory that does not hold the
repo: the demo must find its model files through `Utils.io.model_dir` and run its defaults.

The fast suite executes the three quickest demos (measured with `--threads 1` on the synthetic
default); `pytest -m notebooks tests/test_notebooks.py` executes all 23 demos and the pipeline.
`make notebooks` writes the same notebooks next to each demo for a reader (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

from Utils.io import parse_result_line  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMOS = sorted(ROOT.glob("Classic Models/*/*/demo.py")) + [ROOT / "Classic Models" / "pipeline_demo.py"]
# The three quickest demos on the synthetic default (CPU seconds of `demo.py --threads 1`, measured
# 2026-11-30 on the 2-core machine: DPP 6.4, MMR 6.7, DeepFM 9.5; the next are DCNv2 11.2, SASRec 12.7).
FAST = ["Classic Models/Re-ranking/DPP/demo.py", "Classic Models/Re-ranking/MMR/demo.py",
        "Classic Models/Ranking/DeepFM/demo.py"]


def _id(demo: Path) -> str:
    return "pipeline" if demo.name == "pipeline_demo.py" else demo.parent.name


def execute_as_notebook(demo: Path, workdir: Path, timeout: int = 600):
    """Convert `demo` with jupytext and execute it in a fresh kernel started in `workdir`.

    Returns the executed notebook; a failing cell raises nbclient's CellExecutionError (its message
    holds the cell's traceback)."""
    copy = workdir / demo.name
    shutil.copyfile(demo, copy)  # a copy outside the repo: nothing can be found beside the file
    nb = jupytext.read(copy)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute(cwd=str(workdir), env=env)
    return nb


def stream_text(nb) -> str:
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def check_demo(demo: Path, tmp_path: Path) -> None:
    nb = execute_as_notebook(demo, tmp_path)
    result = parse_result_line(stream_text(nb))  # the demo ran to its end and printed RESULT {json}
    assert result["metrics"], f"{_id(demo)}: RESULT without metrics"


def test_every_demo_is_listed():
    assert len(DEMOS) == 24 and all(p.is_file() for p in DEMOS)
    assert all((ROOT / f).is_file() for f in FAST)


@pytest.mark.parametrize("demo", FAST, ids=lambda f: Path(f).parent.name)
def test_fast_demos_execute_as_notebooks(demo, tmp_path):
    check_demo(ROOT / demo, tmp_path)


@pytest.mark.notebooks
@pytest.mark.parametrize("demo", DEMOS, ids=_id)
def test_every_demo_executes_as_a_notebook(demo, tmp_path):
    check_demo(demo, tmp_path)

