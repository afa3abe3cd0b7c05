"""The demos' save / load and what they show a user, for every family (recall, ranking, re-ranking):
one checkpoint format, the --save path check, user lookup by raw id and the recommendation display.

    add_io_args(parser, ...)              # --save PATH --load PATH --overwrite --recommend USER
    check_save_path(path, overwrite)      # --save onto an existing file: an error before training
    write_checkpoint(path, demo=..., models=..., args=..., ids=..., **extra)   # what --save writes
    read_checkpoint(path, demo=...)       # what --load reads: the dict below, checked
    check_ids(payload, path, item=..., user=...)   # the file was saved on the same raw ids
    apply_saved_args(args, payload, ...)  # a --load run takes the saving run's flags back
    restore(cls, entry, device, path)     # cls(**config) with the saved weights
    load_weights(model, state, path)      # load_state_dict, a mismatch as one line
    user_row(split, data, raw_id)         # the split row of a raw user id, or a one-line DataError
    item_label(data, item)                # 'raw id  title [category]'
    show_recommendations(...)             # a user's history and top-k

The checkpoint (one format for every demo; `torch.load(weights_only=True)` reads it: plain types
and tensors only):

    {"format": "demo-checkpoint", "version": 1,
     "demo": "SASRec",                     # the demo that wrote it; --load checks it
     "models": {"model": {"class": "SASRec", "config": {...}, "state": {...}},   # the main model
                "base": {...}, ...},       # further named models (DIN's base, PRM's ranker, ...)
     "args": {"data": ..., "seed": ..., ...},  # the flags that rebuild the data and model inputs
     "ids": {"item": [...], "user": [...]},    # raw id maps (strings) the weights index
     "extra": {...}}                       # what a family needs besides (epochs, curves, tables)

Files written before this format (each family had its own) are not read: --load says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from Datasets import DataError

FORMAT = "demo-checkpoint"
VERSION = 1


# ---- flags and the --save path ------------------------------------------------------------------


def add_io_args(parser: argparse.ArgumentParser, *,
                save: str = "after training, save weights + config + id maps here",
                load: str = "skip training: load a --save file, then evaluate (and recommend)",
                recommend: str = "print the top-10 for this raw user id (as in the data file)"
                ) -> argparse.ArgumentParser:
    """--save, --load, --overwrite, --recommend USER (the help texts say what a family saves)."""
    parser.add_argument("--save", default=None, metavar="PATH", help=save)
    parser.add_argument("--load", default=None, metavar="PATH", help=load)
    parser.add_argument("--overwrite", action="store_true", help="let --save replace an existing file")
    parser.add_argument("--recommend", default=None, metavar="USER", help=recommend)
    return parser


def check_save_path(path: str | None, overwrite: bool) -> None:
    """Fail before training, not after, when --save would overwrite a file."""
    if path and Path(path).exists() and not overwrite:
        raise FileExistsError(f"--save {path}: the file exists; pass --overwrite to replace it")


# ---- the checkpoint -----------------------------------------------------------------------------


def _plain(x):
    """numpy arrays and scalars as lists and Python numbers (what weights_only loading reads)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def checkpoint_payload(*, demo: str, models: dict, args: dict | None = None,
                       ids: dict | None = None, **extra) -> dict:
    """The dict `write_checkpoint` saves. `models` maps a name (the main model first, usually
    "model") to (module, config dict); `ids` maps a kind ("item", "user", a field name) to its raw
    ids (row = id); `extra` is whatever else the demo needs to use the weights again."""
    return {
        "format": FORMAT, "version": VERSION, "demo": demo,
        "models": {name: {"class": type(module).__name__, "config": _plain(dict(config)),
                          "state": module.state_dict()}
                   for name, (module, config) in models.items()},
        "args": _plain(dict(args or {})),
        "ids": {k: [str(x) for x in np.asarray(v)] for k, v in (ids or {}).items()},
        "extra": _plain(extra),
    }


def write_checkpoint(path: str | Path, *, demo: str, models: dict, args: dict | None = None,
                     ids: dict | None = None, overwrite: bool = False, **extra) -> Path:
    """Write --save (`checkpoint_payload`) atomically: a temporary file, then rename; an existing
    file only with overwrite=True."""
    import os

    path = Path(path)
    check_save_path(str(path), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = checkpoint_payload(demo=demo, models=models, args=args, ids=ids, **extra)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _names(demo) -> str:
    names = [demo] if isinstance(demo, str) else list(demo)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def read_checkpoint(path: str | Path, demo: str | tuple[str, ...], *, data=None,
                    flag: str = "--load") -> dict:
    """The payload of a file `write_checkpoint` wrote for `demo` (a name, or a tuple of the names
    whose files this demo accepts), or a one-line error saying what was wrong and what was
    expected: no file, not a checkpoint, another format version, another demo's file; with `data`,
    also one saved on other raw item / user ids (`check_ids`)."""
    p = Path(path)
    wanted = f"a file written by the {_names(demo)} demo's --save"
    if not p.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file; expected a file written by --save")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, foreign or non-torch file: pickle, zip and torch errors
        first = str(e).splitlines()[0][:120] if str(e) else "unreadable"
        raise DataError(f"{flag} {path}: not a checkpoint written by --save "
                        f"({type(e).__name__}: {first}); expected {wanted}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{flag} {path}: not a checkpoint written by a demo's --save (no "
                        f"'format': {FORMAT!r} tag; files from before that format are not read); "
                        f"expected {wanted}")
    if payload.get("version") != VERSION:
        raise DataError(f"{flag} {path}: checkpoint format version {payload.get('version')!r}; "
                        f"expected version {VERSION}")
    names = (demo,) if isinstance(demo, str) else tuple(demo)
    if payload.get("demo") not in names:
        raise DataError(f"{flag} {path}: written by the {payload.get('demo')} demo's --save; "
                        f"expected {wanted}")
    if data is not None:
        check_ids(payload, path, data_name=data.name, item=data.item_raw, user=data.user_raw)
    return payload


def check_ids(payload: dict, path, *, data_name: str, **ids) -> None:
    """DataError unless the checkpoint's raw id maps equal `ids` (kind -> raw ids of the data now
    loaded, e.g. item=data.item_raw, user=data.user_raw); kinds the file lacks are not compared."""
    saved = payload.get("ids", {})
    for kind, raw in ids.items():
        if kind not in saved:
            continue
        here = [str(x) for x in np.asarray(raw)]
        if saved[kind] != here:
            raise DataError(
                f"--load {path}: trained on other data ({payload.get('args', {}).get('data', '?')}: "
                f"{len(saved[kind]) - 1:,} {kind}s) than {data_name} ({len(here) - 1:,} {kind}s, "
                "other ids); expected the --data of the run that saved it")


def apply_saved_args(args, payload: dict, names=None, *,
                     label: str | None = "--load: using the saved run's", only_unset: bool = False) -> None:
    """A --load run takes the saving run's flags back (`names`, default all saved but --data, which
    the user names); with only_unset, only flags left unset (None). Prints those that changed after
    `label` (label None: silent)."""
    saved = {k: v for k, v in payload.get("args", {}).items()
             if (names is None or k in names) and k != "data"}
    if only_unset:
        saved = {k: v for k, v in saved.items() if getattr(args, k, None) is None}
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in saved.items() if getattr(args, k, None) != v]
    for k, v in saved.items():
        setattr(args, k, v)
    if changed and label:
        print(f"{label} {', '.join(changed)}")


def load_weights(model: torch.nn.Module, state: dict, path,
                 what: str = "the weights do not fit the saved config") -> torch.nn.Module:
    """model.load_state_dict(state); a mismatch is one line `--load PATH: <what> (first line)`."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise DataError(f"--load {path}: {what} ({detail})") from None
    return model


def restore(cls, entry: dict, device, path) -> torch.nn.Module:
    """Build `cls(**entry["config"])` (an entry of payload["models"]) and load its weights."""
    model = cls(**entry["config"])
    return load_weights(model, entry["state"], path).to(device)


# ---- users and items ----------------------------------------------------------------------------


def user_row(split, data, raw_id: str) -> int:
    """Row of `split.users` for the raw user id `raw_id` (a string as in the data file)."""
    raw = np.asarray(data.user_raw[1:]).astype(str)
    hits = np.flatnonzero(raw == str(raw_id))
    if len(hits) == 0:
        example = ", ".join(raw[:3])
        raise DataError(f"--recommend {raw_id}: no such user in {data.name}; expected a raw user id as in "
                        f"the data file (e.g. {example})")
    uid = int(hits[0]) + 1
    rows = np.flatnonzero(np.asarray(split.users) == uid)
    if len(rows) == 0:
        raise DataError(f"--recommend {raw_id}: the user has fewer than 3 interactions, so the split "
                        "dropped them; expected a user with a history")
    return int(rows[0])


def item_label(data, item: int, width: int = 60) -> str:
    """'raw id  title [category]' for printing, with whatever the item table has."""
    items = data.items
    parts = [str(data.item_raw[item])]
    for col in ("title", "category"):
        if col in items.columns:
            value = items.at[item, col]
            if isinstance(value, str) and value:
                parts.append(value[:width] if col == "title" else f"[{value}]")
    return "  ".join(parts)


def show_recommendations(data, history: list[int], top_items: list[int], scores: list[float] | None = None,
                         *, raw_user: str, k: int = 10, last: int = 5) -> None:
    """Print a user's last `last` history items and the top-k recommendations."""
    print(f"user {raw_user}: last {min(last, len(history))} of {len(history)} history items")
    for it in history[-last:]:
        print(f"    {item_label(data, it)}")
    print(f"top-{k} recommendations:")
    for r, it in enumerate(top_items[:k], 1):
        score = f"  ({scores[r - 1]:.3f})" if scores is not None else ""
        print(f"  {r:2d}. {item_label(data, it)}{score}")
