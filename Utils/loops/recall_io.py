"""What every recall demo offers a user besides training: save / load, recommend for one raw user id,
export the vectors for a vector index.

    add_recall_io_args(parser)       # --save PATH --load PATH --overwrite --recommend USER --export-vectors PATH
    user_row(split, data, raw_id)    # the split row of a raw user id, or a one-line DataError
    show_recommendations(...)        # a user's history and top-k, with titles/categories when the data has them
    export_vectors(path, ...)        # .npz: item_ids, item_vectors, user_ids, user_vectors (raw ids)

Weights, config and id maps go through `Utils.io.save_checkpoint` / `load_checkpoint` (atomic, never
overwrite unless asked).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from Datasets import DataError


def add_recall_io_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--save", default=None, help="save weights + config + id maps here after training")
    parser.add_argument("--load", default=None, help="load a --save file and skip training")
    parser.add_argument("--overwrite", action="store_true", help="let --save replace an existing file")
    parser.add_argument("--recommend", default=None, metavar="USER",
                        help="print the top-10 for this raw user id (as in the data file)")
    parser.add_argument("--export-vectors", default=None, metavar="PATH",
                        help="write item and user vectors with their raw ids to this .npz (for faiss)")
    return parser


def check_save_path(path: str | None, overwrite: bool) -> None:
    """Fail before training, not after, when --save would overwrite a file."""
    if path and Path(path).exists() and not overwrite:
        raise FileExistsError(f"--save {path}: the file exists; pass --overwrite to replace it")


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


def export_vectors(path: str | Path, *, item_vectors: torch.Tensor, data, user_vectors: torch.Tensor,
                   user_ids: np.ndarray) -> Path:
    """Write `item_ids` (raw), `item_vectors` (N, D), `user_ids` (raw), `user_vectors` (U, D) to an .npz.

    `item_vectors` has the padding row 0 (N + 1 rows, as the models return it); it is dropped here.
    `user_ids` are the contiguous ids of the rows of `user_vectors`. A user with several vectors (MIND)
    passes (U, K, D).
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--export-vectors {path}: expected a file name ending in .npz")
    items = item_vectors.detach().float().cpu().numpy()
    if items.shape[0] != data.n_items + 1:
        raise ValueError(f"item_vectors has {items.shape[0]} rows; expected n_items + 1 = {data.n_items + 1}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, item_ids=np.asarray(data.item_raw[1:]).astype(str), item_vectors=items[1:],
             user_ids=np.asarray(data.user_raw)[np.asarray(user_ids)].astype(str),
             user_vectors=user_vectors.detach().float().cpu().numpy())
    os.replace(tmp, path)
    return path


# ---- Checks before training, checkpoints tied to their data (YoutubeDNN, MIND, SDM demos) ----------


def check_recall_io_args(args: argparse.Namespace) -> None:
    """Fail before any data is read or any step trained when an input/output flag cannot be honoured:
    --save onto an existing file (without --overwrite), --save with --load, an --export-vectors name
    without .npz, a --load file that does not exist."""
    check_save_path(args.save, args.overwrite)
    if args.save and args.load:
        raise ValueError("--save and --load together: --load skips training, so there is nothing new to "
                         "save; expected one of them")
    if args.export_vectors and Path(args.export_vectors).suffix != ".npz":
        raise ValueError(f"--export-vectors {args.export_vectors}: expected a file name ending in .npz")
    if args.load and not Path(args.load).is_file():
        raise FileNotFoundError(f"--load {args.load}: no such file; expected a file written by --save")


def widths_arg(text: str) -> tuple[int, ...]:
    """argparse type for layer widths: '256,128' -> (256, 128); '' -> () (no hidden layer)."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated whole numbers >= 1, "
                                         "e.g. 256,128")
    return tuple(int(p) for p in parts)


def recall_checkpoint_state(data, *, model: str, config, args: argparse.Namespace, keys: list[str],
                            **extra) -> dict:
    """What `save_checkpoint` stores beside the weights: the model's config, the demo flags in `keys`
    that shape the model or its inputs, and the raw-id maps (so a load on other data is refused)."""
    from dataclasses import asdict

    return {"model_name": model, "config": asdict(config), "data": args.data,
            "args": {k: getattr(args, k) for k in keys},
            "user_raw": np.asarray(data.user_raw).astype(str), "item_raw": np.asarray(data.item_raw).astype(str),
            **extra}


def open_recall_checkpoint(path: str, data, *, model: str, args: argparse.Namespace) -> dict:
    """Read a `--save` file for `model`, check that it was trained on this data (same raw user and item
    ids), and set the stored model flags on `args` (printing any that differ from the command line).
    Returns the stored dict (weights under "model", the config under "config")."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: pickle, zip and torch errors alike
        raise DataError(f"--load {path}: not a checkpoint written by --save ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    if not isinstance(payload, dict) or "model" not in payload or payload.get("model_name") != model:
        found = payload.get("model_name", "unknown") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(f"--load {path}: a checkpoint of {found}; expected one written by the {model} "
                        "demo's --save")
    for kind, raw in (("user", data.user_raw), ("item", data.item_raw)):
        stored = payload[f"{kind}_raw"]
        if len(stored) != len(raw) or not np.array_equal(stored, np.asarray(raw).astype(str)):
            raise DataError(f"--load {path}: trained on {payload.get('data')!r} with {len(stored) - 1} "
                            f"{kind}s, but --data {args.data!r} has {len(raw) - 1} {kind}s with other ids; "
                            "expected the data the checkpoint was trained on")
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in payload["args"].items() if getattr(args, k) != v]
    for k, v in payload["args"].items():
        setattr(args, k, v)
    if changed:
        print(f"--load {path}: model flags taken from the checkpoint: {', '.join(changed)}")
    return payload
