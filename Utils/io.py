"""Command-line flags shared by every demo, the final `RESULT {json}` line, and checkpoints."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from types import ModuleType

import torch


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int = 10, batch_size: int = 256,
                    lr: float = 1e-3, data: str = "synthetic") -> argparse.ArgumentParser:
    """The DESIGN.md flags: --data, --epochs, --batch-size, --lr, --seed, --device, --out."""
    parser.add_argument("--data", default=data,
                        help="synthetic | amazon2018:PATH | seqtxt:PATH | movielens:PATH | libfm:PATH")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda[:N]")
    parser.add_argument("--out", default=None, help="also write the RESULT json to this file")
    return parser


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _clean(x.tolist())
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            return _clean(x.item())
        except (ValueError, TypeError):
            pass
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    return x


def print_result(*, model: str, data: str, protocol: str, metrics: dict, baseline: dict | None,
                 train_seconds: float, eval_seconds: float, epochs: int, params: int,
                 out: str | None = None, **extra) -> dict:
    """Print the final `RESULT {json}` line (and write it to `out` when given). Returns the dict."""
    res = {
        "model": model, "data": data, "protocol": protocol, "metrics": metrics,
        "baseline": baseline, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "epochs": epochs, "params": params, **extra,
    }
    res = _clean(res)
    line = json.dumps(res, sort_keys=False)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2) + "\n")
    print("RESULT " + line, flush=True)
    return res


def parse_result_line(text: str) -> dict:
    """The last `RESULT {json}` line of a demo's output."""
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise ValueError("no 'RESULT {json}' line in the output")
    return json.loads(lines[-1][len("RESULT "):])


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None, overwrite: bool = False,
                    **state) -> Path:
    """Save model (+ optimizer) state and extra fields. Refuses to overwrite unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), **state}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None,
                    map_location="cpu") -> dict:
    """Load a checkpoint written by save_checkpoint into model (+ optimizer); returns extra fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    model.load_state_dict(payload.pop("model"))
    opt_state = payload.pop("optimizer", None)
    if optimizer is not None and opt_state is not None:
        optimizer.load_state_dict(opt_state)
    return payload


def load_model_file(path: str | Path, name: str) -> ModuleType:
    """Import a stand-alone model file by its path, as module `name` (registered in sys.modules,
    which dataclasses need while the file runs). Model folders have spaces in their names, so the
    files cannot be imported as packages; each demo loads its own `model.py` this way."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
