"""Command-line flags shared by every demo, one-line input errors, the final `RESULT {json}` line
(written atomically), checkpoints, and locating model files without `__file__`."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import types
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import torch

from .atomic import write_json_atomic  # noqa: F401  (re-exported: torch-free home in Utils.atomic)

ROOT = Path(__file__).resolve().parent.parent  # the repository (Utils/ is installed with `-e .`)


def model_dir(stage: str, name: str) -> Path:
    """`Classic Models/<stage>/<name>/`: where a demo finds its own model.py without `__file__`
    (a notebook kernel has none)."""
    path = ROOT / "Classic Models" / stage / name
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    return path


def in_notebook() -> bool:
    """True inside a Jupyter kernel, whose own arguments (`-f kernel.json`) are not the demo's flags.

    The running shell decides, not an import: a test process that merely imported ipykernel (to
    start a kernel elsewhere) is not a notebook.
    """
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected a whole number >= 1")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate, a temperature)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected a finite number > 0") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected a finite number > 0")
    return value


def device_arg(text: str) -> str:
    """argparse type: auto | cpu | cuda | cuda:N | mps, and available on this machine."""
    if text in ("auto", "cpu"):
        return text
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available here; expected auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text}: only {torch.cuda.device_count()} CUDA device(s); expected cuda:0..")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"{text}: MPS is not available here; expected auto or cpu")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; expected auto, cpu, cuda, cuda:N or mps")
    return text


# Exceptions that mean "the input was wrong" (DataError is a ValueError): one line, exit status 2.
INPUT_ERRORS = (ValueError, OSError)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: <message>` on stderr and exit (status 2: bad input or flags)."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def install_error_hook(debug: bool = False) -> None:
    """Outside a notebook, an uncaught input error (`DataError`, `ValueError`, `OSError`) prints one
    line `error: ...` and exits with status 2; with `--debug` the full traceback is kept."""
    if debug or in_notebook():
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, INPUT_ERRORS):
            sys.stdout.flush()
            print(f"error: {value}", file=sys.stderr, flush=True)
            os._exit(2)  # SystemExit cannot be raised from an excepthook
        previous(kind, value, tb)

    sys.excepthook = hook


def _one_line_error(self, message: str) -> NoReturn:
    fail(f"{message} (see --help)")


def _parse_demo_args(self, args=None, namespace=None):
    """parse_args for demos: a notebook kernel's own argv is ignored (defaults run), and input errors
    become one line unless --debug."""
    if args is None and in_notebook():
        args = []
    ns = argparse.ArgumentParser.parse_args(self, args, namespace)
    install_error_hook(getattr(ns, "debug", False))
    return ns


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int | None = 10, batch_size: int = 256,
                    lr: float = 1e-3, data: str = "synthetic") -> argparse.ArgumentParser:
    """The flags every demo shares (DESIGN.md): --data, --epochs, --batch-size, --lr, --seed, --device,
    --threads, --out, --debug. Values are checked at parse time (epochs and batch size >= 1, a finite
    positive learning rate, an available device); a bad flag is one line `error: ...` and exit 2; in a
    notebook the kernel's arguments are ignored."""
    for container in [parser, *parser._action_groups]:  # a demo may still redefine a common flag
        container.conflict_handler = "resolve"
    parser.error = types.MethodType(_one_line_error, parser)
    parser.parse_args = types.MethodType(_parse_demo_args, parser)
    parser.add_argument("--data", default=data,
                        help="synthetic | amazon2018:PATH | seqtxt:PATH | movielens:PATH | libfm:PATH")
    parser.add_argument("--epochs", type=positive_int, default=epochs, help="training epochs (>= 1)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--lr", type=positive_float, default=lr, help="learning rate (> 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=device_arg, default="auto",
                        help="auto (cuda if available) | cpu | cuda[:N] | mps")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default=None,
                        help="also write the RESULT json here (atomically: a temporary file, then rename)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
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


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (getrusage; Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def print_result(*, model: str, data: str, protocol: str, metrics: dict, baseline: dict | None,
                 train_seconds: float, eval_seconds: float, epochs: int, params: int,
                 out: str | None = None, **extra) -> dict:
    """Print the final `RESULT {json}` line (and write it to `out` when given). Returns the dict."""
    res = {
        "model": model, "data": data, "protocol": protocol, "metrics": metrics,
        "baseline": baseline, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "epochs": epochs, "params": params, "peak_rss_mb": peak_rss_mb(), **extra,
    }
    res = _clean(res)
    line = json.dumps(res, sort_keys=False)
    if out:
        write_json_atomic(out, res)
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
