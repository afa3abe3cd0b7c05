"""Shared test helpers: the real-data folder and importing model files from folders with spaces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from Utils.io import load_model_file

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


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny test models: one intra-op thread avoids spin-waiting on a shared, loaded CPU; seeded."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # tests that draw without a generator stay order-independent
    yield
    torch.set_num_threads(n)
