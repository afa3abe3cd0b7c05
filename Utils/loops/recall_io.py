"""What the recall demos add to the demos' save / load (`Utils.demo_io`): the --export-vectors flag
and file, the checks before training, and the recall checkpoint's fields.

    add_recall_io_args(parser)       # --save PATH --load PATH --overwrite --recommend USER --export-vectors PATH
    export_vectors(path, ...)        # .npz: item_ids, item_vectors, user_ids, user_vectors (raw ids)
    save_recall_checkpoint(...)      # --save of the YoutubeDNN, MIND and SDM demos (Utils.demo_io format)
    open_recall_checkpoint(...)      # --load of those demos: checked against the data, flags restored

User lookup (`user_row`), item labels and the recommendation display live in `Utils.demo_io`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from ..demo_io import (
    add_io_args,
    apply_saved_args,
    check_save_path,
    read_checkpoint,
    write_checkpoint,
)


def add_recall_io_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_io_args(parser, save="save weights + config + id maps here after training",
                load="load a --save file and skip training",
                recommend="print the top-10 for this raw user id (as in the data file)")
    parser.add_argument("--export-vectors", default=None, metavar="PATH",
                        help="write item and user vectors with their raw ids to this .npz (for faiss)")
    return parser


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


def save_recall_checkpoint(path: str, model: torch.nn.Module, data, *, name: str, config,
                           args: argparse.Namespace, keys: list[str], **extra) -> None:
    """--save: the weights, the model's config, the demo flags in `keys` that shape the model or its
    inputs, and the raw-id maps (so a load on other data is refused), in the `Utils.demo_io` format."""
    from dataclasses import asdict

    write_checkpoint(path, demo=name, models={"model": (model, asdict(config))},
                     args={"data": args.data, **{k: getattr(args, k) for k in keys}},
                     ids={"user": data.user_raw, "item": data.item_raw}, overwrite=args.overwrite,
                     **extra)


def open_recall_checkpoint(path: str, data, *, model: str, args: argparse.Namespace) -> dict:
    """Read a `--save` file of the `model` demo, check that it was trained on this data (same raw user
    and item ids), and set the stored model flags on `args` (printing any that differ from the command
    line). Returns the payload (`Utils.demo_io.read_checkpoint`)."""
    payload = read_checkpoint(path, demo=model, data=data)
    apply_saved_args(args, payload, label=f"--load {path}: model flags taken from the checkpoint:")
    return payload
