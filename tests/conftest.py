"""Shared test helpers: the real-data folder and importing model files from folders with spaces."""

from __future__ import annotations

import io
import json
import runpy
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from Utils.io import INPUT_ERRORS, load_model_file, model_dir

ROOT = Path(__file__).resolve().parent.parent
SHARED = (ROOT.parent / "shared" / "data").resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test with a printed reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (see ../shared/data/README.md)")
    return p


def load_module(relpath: str, name: str | None = None):
    """Import a module by path relative to the repo root (model folders contain spaces)."""
    path = ROOT / relpath
    name = name or "m_" + "_".join(path.with_suffix("").parts[-2:]).replace(" ", "_").replace("-", "_")
    if name in sys.modules:
        return sys.modules[name]
    return load_model_file(path, name)


def model_module(stage: str, name: str):
    """`Classic Models/<stage>/<name>/model.py` as a module (registered as `<name>_model`)."""
    return load_module(f"Classic Models/{stage}/{name}/model.py", f"{name.lower()}_model")


def run_demo_in_process(stage: str, name: str, argv: list[str]) -> tuple[int, str, str, dict]:
    """Run `Classic Models/<stage>/<name>/demo.py` in this process with `argv` (no `import torch` per
    case, as a subprocess would pay). An input error the installed excepthook would print in a
    script is printed the same way here.

    Returns (exit status, stdout, stderr, the demo's globals ({} when it stopped early))."""
    path = model_dir(stage, name) / "demo.py"
    saved_argv, saved_hook = sys.argv, sys.excepthook
    sys.argv = [str(path), *argv]
    out, err = io.StringIO(), io.StringIO()
    code, namespace = 0, {}
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                namespace = runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except INPUT_ERRORS as e:
                print(f"error: {e}", file=sys.stderr)
                code = 2
    finally:
        sys.argv, sys.excepthook = saved_argv, saved_hook
    return code, out.getvalue(), err.getvalue(), namespace


def result_of(stdout: str) -> dict:
    """The demo's last `RESULT {json}` line."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, stdout[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny test models: one intra-op thread avoids spin-waiting on a shared, loaded CPU; seeded."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # tests that draw without a generator stay order-independent
    yield
    torch.set_num_threads(n)
