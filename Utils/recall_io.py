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
