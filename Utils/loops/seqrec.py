"""The training and evaluation loop shared by the demos of the next-item sequence models (SASRec,
HSTU, GRU4Rec): one training row per user, every position predicts the next item (SASRec, HSTU), or
the rows cut into GRU4Rec's session-parallel mini-batches (`session_parallel_batches`).

The demos keep what is theirs (flags of the model, the model, its loss); this module holds what
they share: the common flags, length-bucketed batches, validation with the wall time until a
target NDCG@10, the test by full ranking beside popularity, one user's top-10, the curve and the
`RESULT` line; and what a user does with a trained model: `--save` / `--load` (weights + config +
id maps, in the `Utils.demo_io` format), `--recommend USER`, `--export-vectors PATH` (for faiss)
and, for SASRec, `--export-onnx PATH` (history -> scores and user vector, checked against PyTorch with onnxruntime).

Speed: users of similar length share a batch and each batch (training) or evaluation chunk is cut
to its longest real history, so the model never runs on columns that are padding for every row.
Positions count from the newest item in both models, so the cut changes no output (their tests
check this).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from Datasets import DataError

from ..demo_io import check_save_path, user_row, write_checkpoint
from ..evaluation import Timer, evaluate_full_ranking, popularity_metrics
from ..io import positive_float, positive_int, print_result, save_checkpoint
from ..plotting import plot_curves
from ..training import count_params, fit
from .recall_io import add_recall_io_args, export_vectors

KS = (5, 10, 20, 50, 200)  # the HSTU paper's columns include Recall@200 / NDCG@200


def add_seqrec_args(parser: argparse.ArgumentParser, *, onnx: bool = False, batching: bool = True,
                    ddp: bool = True) -> argparse.ArgumentParser:
    """Flags every sequence demo has (the model-specific ones stay in the demo), with --save,
    --load, --overwrite, --recommend, --export-vectors (Utils.loops.recall_io) and, with onnx=True,
    --export-onnx. batching=False / ddp=False leave out --batching / --ddp (a demo with batches of
    its own, GRU4Rec's session-parallel ones, which carry a hidden state from step to step)."""
    parser.add_argument("--dim", type=positive_int, default=64)
    parser.add_argument("--dropout", type=float, default=0.5, help="in [0, 1)")
    parser.add_argument("--max-len", type=positive_int, default=50)
    parser.add_argument("--patience", type=positive_int, default=5,
                        help="validation checks without improvement")
    parser.add_argument("--eval-every", type=positive_int, default=1)
    if batching:
        parser.add_argument("--batching", default="random", choices=["length", "random"],
                            help="random: uniformly shuffled users, full width (RecTools' and most "
                                 "trainers' order; chosen on validation NDCG@10, see the SASRec lab log); "
                                 "length: users of similar history length share a batch, each cut to its "
                                 "longest row (faster, lower validation)")
    parser.add_argument("--select-metric", default="NDCG@10", choices=["NDCG@10", "Recall@10"],
                        help="validation metric for early stopping and the best epoch (eSASRec's "
                             "benchmark: Recall@10)")
    parser.add_argument("--time-budget", type=positive_float, default=None,
                        help="stop after this many train s")
    parser.add_argument("--target-ndcg", type=float, default=None,
                        help="record the wall time until validation NDCG@10 first reaches this value")
    parser.add_argument("--plot", default=None, help="save the training curve (PNG) here")
    if ddp:
        parser.add_argument("--ddp", action="store_true",
                            help="data-parallel training across the processes torchrun starts "
                                 "(torchrun --nproc_per_node N demo.py ... --ddp; gloo on CPU, nccl on GPU)")
    parser.add_argument("--refit-from", default=None, metavar="RESULT_JSON",
                        help="the refit protocol: retrain on train + validation for the best epoch "
                             "count of this earlier run (same flags, trained on train and stopped on "
                             "validation), then test once")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="write the training state here after every epoch (atomically), so an "
                             "interrupted run can go on with --resume; an existing file is never "
                             "overwritten without --resume")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --checkpoint from its next epoch (same flags; "
                             "--epochs, --time-budget and --patience may change); it ends as the "
                             "uninterrupted run would have")
    add_recall_io_args(parser)
    if onnx:
        parser.add_argument("--export-onnx", default=None, metavar="PATH",
                            help="write the scoring path (left-padded history (B, max_len) -> "
                                 "scores (B, N+1) and user vector (B, D)) as ONNX, checked against "
                                 "PyTorch with onnxruntime when it is installed")
    return parser


def check_output_flags(args) -> None:
    """Fail before training, not after: --save over an existing file, export paths with the wrong
    suffix, --export-onnx without its packages, --checkpoint / --resume that cannot work."""
    check_save_path(args.save, args.overwrite)
    ckpt = getattr(args, "checkpoint", None)
    if getattr(args, "resume", False) and not (ckpt and Path(ckpt).is_file()):
        raise ValueError(f"--resume needs an existing --checkpoint file, got {ckpt!r}")
    if ckpt and (args.load or getattr(args, "ddp", False)):
        raise ValueError(f"--checkpoint keeps the state of a training run; expected no "
                         f"{'--load (a trained model)' if args.load else '--ddp'} beside it")
    if ckpt and Path(ckpt).exists() and not args.resume:
        raise FileExistsError(f"--checkpoint {ckpt} exists (an earlier run's training state); pass "
                              f"--resume to continue it, or remove it to start again")
    if args.export_vectors and not str(args.export_vectors).endswith(".npz"):
        raise ValueError(f"--export-vectors {args.export_vectors}: expected a file name ending in .npz")
    path = getattr(args, "export_onnx", None)
    if path:
        if not str(path).endswith(".onnx"):
            raise ValueError(f"--export-onnx {path}: expected a file name ending in .onnx")
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401  (torch's exporter needs it)
        except ImportError as e:
            raise DataError(f"--export-onnx needs the packages onnx and onnxscript "
                            f"(pip install onnx onnxscript onnxruntime): {e}") from None


def side_inputs_note(data, name: str) -> None:
    """Say once what the model reads: item ids and order only; titles/categories only label output."""
    has = [c for c in ("title", "category", "attributes", "keywords") if c in data.items.columns]
    shown = f"{', '.join(has)} only label the printed items" if has else (
        "this data has no titles, categories or attributes: items are shown by their raw id")
    print(f"side inputs: {name} reads item ids and their order only (no side features); {shown}")


# -- save --------------------------------------------------------------------------------------------


def save_model(path, *, name: str, model: torch.nn.Module, data, args, overwrite: bool,
               saved_args: tuple[str, ...] = (), **state) -> Path:
    """--save (`Utils.demo_io.write_checkpoint`): weights + config (`model.cfg`) + raw id maps + the
    flags that shape the inputs, atomically; refuses to overwrite unless asked. `--load` reads it with
    `Utils.demo_io.read_checkpoint(path, demo=name, data=data)`."""
    return write_checkpoint(
        path, demo=name, models={"model": (model, dataclasses.asdict(model.cfg))},
        args={"data": str(args.data), **{k: getattr(args, k) for k in saved_args}},
        ids={"item": data.item_raw, "user": data.user_raw}, overwrite=overwrite, **state)


# -- exports ----------------------------------------------------------------------------------------


@torch.no_grad()
def all_user_vectors(user_vector: Callable, split, max_len: int, device, chunk: int = 1024
                     ) -> torch.Tensor:
    """(U, D) the vector of every user of the split after its whole history (train + valid), the
    state that scores the test item."""
    hist, ts = split.history("test", max_len)
    out = []
    for s in range(0, len(hist), chunk):
        h = torch.from_numpy(hist[s : s + chunk]).to(device)
        t = torch.from_numpy(ts[s : s + chunk]).to(device)
        width = max(1, int((h != 0).sum(1).max()))
        out.append(user_vector(h[:, -width:], t[:, -width:]).float().cpu())
    return torch.cat(out)


class _Scoring(torch.nn.Module):
    """The serving path as one module: history -> (scores over all items, user vector)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        user = self.model.user_embedding(history)  # (B, D)
        scores = user @ self.model.item_embeddings().T  # (B, D) @ (D, N+1)
        scores[:, 0] = float("-inf")
        return scores, user


def export_onnx(model: torch.nn.Module, path, *, max_len: int, histories: np.ndarray) -> dict:
    """Write `model`'s scoring path as ONNX (input `history`: (B, max_len) int64, left-padded;
    outputs `scores` (B, N+1), column 0 = -inf, and `user_vector` (B, D)); atomically, as one
    self-contained file (weights inside, no external-data file beside it: protobuf's 2 GB limit
    applies, far above these models). Then run it
    with onnxruntime (when installed) on `histories` and return the largest absolute difference to
    PyTorch (finite scores and user vectors)."""
    import copy

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _Scoring(copy.deepcopy(model).cpu().eval()).eval()
    example = torch.from_numpy(np.ascontiguousarray(histories[:4])).long()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(tmp), input_names=["history"],
                              output_names=["scores", "user_vector"],
                              dynamic_shapes={"history": {0: torch.export.Dim("batch")}},
                              dynamo=True, verbose=False, external_data=False)  # one movable file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    report = {"path": str(path), "input": f"history (B, {max_len}) int64, left-padded"}
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"ONNX written to {path}; onnxruntime is not installed, so it was not checked")
        return report
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, user = session.run(None, {"history": np.ascontiguousarray(histories).astype(np.int64)})
    with torch.no_grad():
        ref_scores, ref_user = (t.numpy() for t in module(torch.from_numpy(histories).long()))
    finite = np.isfinite(ref_scores)
    if not np.array_equal(finite, np.isfinite(scores)):
        raise RuntimeError("ONNX scores are not finite where PyTorch's are")
    report.update(users_checked=int(len(histories)),
                  max_abs_diff_scores=float(np.abs(scores[finite] - ref_scores[finite]).max()),
                  max_abs_diff_user_vector=float(np.abs(user - ref_user).max()))
    print(f"ONNX written to {path}; onnxruntime vs PyTorch on {len(histories)} users: max |diff| "
          f"{report['max_abs_diff_scores']:.2e} (scores), {report['max_abs_diff_user_vector']:.2e} "
          "(user vectors)")
    return report


def ddp_setup(args, device):
    """--ddp: Utils.distributed.setup (join torchrun's group; rank 0 alone writes)."""
    from .. import distributed

    return distributed.setup(args, device)


def _targets_in(batch: dict) -> int:
    """Positions of a training batch with a next item to predict (as the models' losses count them)."""
    seq = batch["seq"]
    return int(((seq[:, 1:] != 0) & (seq[:, :-1] != 0)).sum())


# -- resuming an interrupted run (--checkpoint / --resume) -------------------------------------------

# flags that may differ between an interrupted run and its continuation: where things are written,
# the threads and device, and how long training goes on
RESUME_FREE = {"checkpoint", "resume", "epochs", "time_budget", "patience", "plot", "out", "save",
               "overwrite", "recommend", "export_vectors", "export_onnx", "threads", "device",
               "plot_attention", "plot_sessions", "refit_source"}


def run_flags(args) -> dict:
    """The flags that define a training run (what a --resume must match)."""
    return {k: v for k, v in vars(args).items() if k not in RESUME_FREE}


def read_training_state(path, *, name: str, args, split) -> dict:
    """The snapshot a --checkpoint run wrote after its last finished epoch, checked against this run:
    the same model, flags and data. Every problem is a one-line error that says what was expected."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, foreign or non-torch file
        raise DataError(f"--resume {path}: not a training state written by --checkpoint "
                        f"({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("kind") != "training_state":
        raise DataError(f"--resume {path}: not a training state written by --checkpoint "
                        f"(a --save file? it serves with --load)")
    if state.get("model_name") != name:
        raise DataError(f"--resume {path}: the state of a {state.get('model_name')} run; expected one "
                        f"written by the {name} demo")
    theirs, ours = state["flags"], run_flags(args)
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if differ:
        shown = ", ".join(f"--{k.replace('_', '-')} {theirs.get(k)!r} there, {ours.get(k)!r} here"
                          for k in differ)
        raise ValueError(f"--resume {path}: the run was started with other flags ({shown}); resume it "
                         f"with the same flags")
    if (state["n_users"], state["n_items"]) != (split.n_users, split.n_items):
        raise DataError(f"--resume {path}: started on {state['n_users']:,} users x {state['n_items']:,} "
                        f"items, this data has {split.n_users:,} x {split.n_items:,}; expected the same data")
    return state


# flags that may differ between a run and its refit (they do not change what is trained)
REFIT_FREE = {"epochs", "patience", "eval_every", "time_budget", "target_ndcg", "plot", "out", "ddp",
              "refit_from", "save", "load", "overwrite", "recommend", "export_vectors", "export_onnx",
              "threads", "device", "debug", "plot_attention", "plot_sessions", "refit_source", "checkpoint",
              "resume"}


# flags added after some stored runs were made, with the value those runs used
FLAG_DEFAULTS = {"select_metric": "NDCG@10", "block": "pre_ln", "init": "normal",
                 "no_embed_scale": False, "item_dropout": 0.0, "batching": "length"}


def refit_setup(args, split):
    """--refit-from RUN: check that RUN (a RESULT json) was trained with the same flags on train
    only, set args.epochs to its best validation epoch, and return the refit split (training part =
    every interaction but the test item; no validation stage). Without the flag: `split` as is."""
    if not args.refit_from:
        return split
    if args.load:
        raise ValueError("--refit-from trains a new model; it cannot be combined with --load")
    path = Path(args.refit_from)
    try:
        source = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--refit-from {path}: cannot read a RESULT json ({e})") from None
    if source.get("refit_from") or not source.get("best_epoch"):
        raise ValueError(f"--refit-from {path}: expected a run trained on train and stopped on "
                         f"validation (with a best_epoch), got "
                         f"{'a refit run' if source.get('refit_from') else 'no best_epoch'}")
    theirs, ours = source.get("config", {}), vars(args)
    # a flag added after RUN was made is absent from its config: its default is what RUN ran with
    theirs = {**{k: v for k, v in FLAG_DEFAULTS.items() if k not in theirs and k in ours}, **theirs}
    differ = sorted(k for k in set(theirs) | set(ours)
                    if k not in REFIT_FREE and theirs.get(k) != ours.get(k))
    if differ:
        shown = ", ".join(f"--{k.replace('_', '-')} {theirs.get(k)!r} there, {ours.get(k)!r} here"
                          for k in differ)
        raise ValueError(f"--refit-from {path}: the run was trained with other flags ({shown}); "
                         f"refit with the same flags")
    args.epochs = int(source["best_epoch"])
    args.refit_source = {"path": str(path), "best_epoch": args.epochs,
                         "valid_metrics": source.get("valid_metrics", {}),
                         "train_only_metrics": source.get("metrics", {})}
    print(f"refit protocol: train on train + validation for {args.epochs} epochs (the best "
          f"validation epoch of {path}), no validation, then test once")
    return split.refit_split()


def rows_by_length(split, stage: str) -> np.ndarray:
    """Split rows ordered by history length, so each evaluation chunk holds users of similar length
    and can be cut short (the metrics are means: the order changes nothing else)."""
    offsets, _ = split.seen(stage)
    return np.argsort(np.diff(offsets), kind="stable")


def length_bucketed_batches(train_set, lengths: torch.Tensor, batch_size: int,
                            gen: torch.Generator):
    """One epoch of batches: users of similar length together (random order within a length),
    each batch cut to its longest row (at least 2 columns: an input and a target), batch order
    shuffled."""
    key = lengths.double() + torch.rand(len(lengths), generator=gen, dtype=torch.double)
    chunks = torch.argsort(key).split(batch_size)
    for i in torch.randperm(len(chunks), generator=gen).tolist():
        batch = train_set[chunks[i]]
        width = max(2, int(lengths[chunks[i]].max()))
        yield {k: v[:, -width:] for k, v in batch.items()}


def random_batches(train_set, batch_size: int, gen: torch.Generator):
    """One epoch of batches of uniformly shuffled users, at the full window width."""
    order = torch.randperm(len(train_set), generator=gen)
    for rows in order.split(batch_size):
        yield train_set[rows]


def session_parallel_batches(sequences: torch.Tensor, batch_size: int, gen: torch.Generator, *,
                             steps: int = 1):
    """GRU4Rec's session-parallel mini-batches (Hidasi et al., ICLR 2016, Section 3.1.1) over the rows
    of `sequences` (U, L + 1), left-padded: every row with at least two items is one session, taken in
    an order drawn from `gen`. Each of `batch_size` slots reads one session, one item per step; when
    its session has no next item left, the next session takes the slot at the following step and
    `resets` is True there (the model restarts that slot's hidden state from zero before reading the
    item). When the sessions run out, a slot stays empty (item 0) until every slot has finished.

    Yields dicts of (B, steps) tensors, B = min(batch_size, sessions): "items" the slots' current
    items, "targets" their next items (0 in an empty slot), "resets" bool, "rows" the row of
    `sequences` each slot reads (-1: empty). The official code yields one step at a time (steps=1)."""
    seq = sequences.numpy() if isinstance(sequences, torch.Tensor) else np.asarray(sequences)
    lengths = (seq != 0).sum(1)
    rows = np.flatnonzero(lengths >= 2)
    rows = rows[torch.randperm(len(rows), generator=gen).numpy()]  # the session order of this epoch
    if len(rows) == 0:
        return
    real = seq[rows] != 0
    flat = seq[rows][real]  # (I,) every session's items, one session after the other
    offsets = np.concatenate([[0], np.cumsum(lengths[rows])])  # session s is flat[offsets[s]:offsets[s+1]]
    B = min(batch_size, len(rows))
    session = np.arange(B)  # the session each slot reads
    pos = offsets[session].copy()  # the slot's current item in flat
    end = offsets[session + 1].copy()
    reset = np.ones(B, dtype=bool)  # a slot's first step of a new session
    active = np.ones(B, dtype=bool)
    following = B  # the next session to hand out
    while active.any():
        items = np.zeros((B, steps), dtype=np.int64)
        targets = np.zeros((B, steps), dtype=np.int64)
        resets = np.zeros((B, steps), dtype=bool)
        where = np.full((B, steps), -1, dtype=np.int64)
        for t in range(steps):
            if not active.any():
                break
            items[active, t] = flat[pos[active]]
            targets[active, t] = flat[pos[active] + 1]
            resets[:, t] = reset & active
            where[active, t] = rows[session[active]]
            reset[:] = False
            pos[active] += 1
            done = np.flatnonzero(active & (pos + 1 >= end))  # no next item left in the session
            fresh = done[: max(0, min(len(done), len(rows) - following))]
            new = np.arange(following, following + len(fresh))
            following += len(fresh)
            session[fresh], pos[fresh], end[fresh] = new, offsets[new], offsets[new + 1]
            reset[fresh] = True
            active[done[len(fresh):]] = False  # no session left for these slots
        yield {"items": torch.from_numpy(items), "targets": torch.from_numpy(targets),
               "resets": torch.from_numpy(resets), "rows": torch.from_numpy(where)}


def padded_sequence_batches(sequences: torch.Tensor, batch_size: int, gen: torch.Generator):
    """The usual third-party alternative to session-parallel mini-batches: each batch holds
    `batch_size` whole sessions (the rows of `sequences` (U, L + 1), left-padded, with at least two
    items, in an order drawn from `gen`), cut to the longest of them; the model reads each one from a
    zero state and back-propagates through all its steps. Yields the same keys as
    `session_parallel_batches`: "items" (B, T) the inputs, "targets" (B, T) the next items (0 where
    the input is padding), "resets" True at the first column (the state carried from the previous
    batch is dropped there), "rows"."""
    seq = sequences if isinstance(sequences, torch.Tensor) else torch.as_tensor(np.asarray(sequences))
    lengths = (seq != 0).sum(1)
    rows = torch.nonzero(lengths >= 2).flatten()
    rows = rows[torch.randperm(len(rows), generator=gen)]
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        width = int(lengths[r].max())
        chunk = seq[r][:, -width:]  # (B, width): left-padded, the longest row fills it
        items, targets = chunk[:, :-1], chunk[:, 1:].clone()
        targets[items == 0] = 0
        resets = torch.zeros_like(items, dtype=torch.bool)
        resets[:, 0] = True
        yield {"items": items, "targets": targets, "resets": resets,
               "rows": r.unsqueeze(1).expand_as(items)}


def session_parallel_steps(sequences: torch.Tensor, batch_size: int, steps: int = 1) -> int:
    """About how many batches `session_parallel_batches` yields per epoch (for a progress bar): the
    next-item targets over the slots, rounded up (a lower bound: slots sit empty at the end)."""
    lengths = (sequences != 0).sum(1)
    transitions = int((lengths - 1).clamp(min=0).sum())
    return max(1, -(-transitions // (batch_size * steps)))


def describe(data, i: int) -> str:
    """Title/category when the data has them; the keyword tokens of seqtxt Beauty otherwise."""
    text = data.item_text(i)
    if "keywords" in data.items and data.items["keywords"].iloc[i]:
        text += " " + " ".join(data.items["keywords"].iloc[i][:4])
    return text


def train_and_report(*, name: str, model: torch.nn.Module, train_step: Callable,
                     score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     optimizer: torch.optim.Optimizer, data, split, sequences: torch.Tensor,
                     train_set, gen: torch.Generator, args, device,
                     user_vector: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     loaded: dict | None = None, saved_args: tuple[str, ...] = (),
                     ddp=None, batches: Callable | None = None, n_batches: int | None = None,
                     **extra) -> dict:
    """Train with early stopping on validation NDCG@10 (or take the weights of `loaded`, a
    `Utils.demo_io.read_checkpoint` payload, and skip training), test by full ranking beside popularity, show one
    user (`--recommend USER`, or one with some history), save / export what the flags ask for, plot
    the curve and print the RESULT line (returned as a dict).

    score(history (b, w), history_ts (b, w)) -> (b, n_items + 1): the model's scores of all items
    for left-padded histories already on `device`; user_vector(history, history_ts) -> (b, D) the
    vector those scores come from (for --export-vectors). `saved_args`: the flags a --save file
    keeps besides the model config. `ddp`: the Dist of `ddp_setup` (training and validation sharded
    across the processes; rank 0 alone tests and reports, the others return {} after training).
    `batches(epoch)`: the training batches of an epoch when the demo makes its own (GRU4Rec's
    session-parallel ones; `n_batches` about how many, for the progress bar); by default the rows of
    `train_set`, length-bucketed or shuffled (--batching). `extra` goes into the RESULT line."""
    check_output_flags(args)  # before any training: nothing is written when a flag is wrong
    show_row = user_row(split, data, args.recommend) if args.recommend else None
    lengths = (sequences != 0).sum(1)  # (U,) real items per training row
    refit = getattr(split, "refit", False)  # the refit protocol (refit_setup): no validation
    eval_rows = {stage: rows_by_length(split, stage) for stage in ("test",) + (() if refit else ("valid",))}

    def score_fn(batch):
        h = batch["history"]  # (b, max_len), left-padded
        width = max(1, int((h != 0).sum(1).max()))  # cut columns that are padding for every row
        return score(h[:, -width:], batch["history_ts"][:, -width:])

    t_start = time.perf_counter()
    reached: dict = {}
    n_evals = [0]  # validation checks so far (one per epoch with --eval-every 1)
    ckpt = getattr(args, "checkpoint", None)
    resume = (read_training_state(ckpt, name=name, args=args, split=split)
              if getattr(args, "resume", False) else None)
    resumed_at = []  # epochs after which this run was interrupted and resumed
    if resume is not None:  # the clocks, the target record and the batch order go on where they stopped
        t_start -= resume["wall_seconds"]
        reached.update(resume["reached"])
        n_evals[0], resumed_at = resume["n_evals"], resume["resumed_at"] + [resume["epoch"]]
        gen.set_state(resume["gen"])
        print(f"resumed {ckpt}: {resume['epoch']} epochs done ({resume['wall_seconds']:.0f}s wall), "
              f"going on from epoch {resume['epoch'] + 1}")

    def keep(snapshot: dict) -> None:  # after every epoch: the state to go on from, atomically
        save_checkpoint(ckpt, model, optimizer, overwrite=True, kind="training_state", model_name=name,
                        flags=run_flags(args), n_users=split.n_users, n_items=split.n_items,
                        gen=gen.get_state(), wall_seconds=time.perf_counter() - t_start,
                        reached=dict(reached), n_evals=n_evals[0], resumed_at=resumed_at,
                        **{k: v for k, v in snapshot.items() if k not in ("model", "optimizer")})

    def evaluate():
        if ddp is None:
            metrics = evaluate_full_ranking(score_fn, split, "valid", max_len=args.max_len, ks=KS,
                                            device=device, users=eval_rows["valid"])
        else:  # each rank ranks its shard of the users; the ranks are gathered back into one order
            from .. import distributed
            from ..metrics import ranking_metrics

            metrics = ranking_metrics(distributed.sharded_ranks(
                lambda rows: evaluate_full_ranking(score_fn, split, "valid", max_len=args.max_len, ks=KS,
                                                   device=device, users=rows, return_ranks=True)[1],
                eval_rows["valid"], ddp), KS)
        if args.target_ndcg is not None and not reached and metrics["NDCG@10"] >= args.target_ndcg:
            reached["wall_seconds"] = time.perf_counter() - t_start  # training + validation so far
            reached["epoch"] = n_evals[0] + 1
        metrics["wall_seconds"] = time.perf_counter() - t_start
        n_evals[0] += 1
        return metrics

    if loaded is None:
        after_backward = None
        if ddp is not None:
            from .. import distributed

            train_step, after_backward, n_steps = distributed.training_hooks(
                model, train_step, _targets_in, ddp, check_every_step=args.debug)
        cpu_fit = time.process_time()
        history = fit(
            model, train_step,
            batches or (lambda epoch: (random_batches(train_set, args.batch_size, gen)
                                       if getattr(args, "batching", "random") == "random"
                                       else length_bucketed_batches(train_set, lengths, args.batch_size, gen))),
            optimizer, args.epochs, None if refit else evaluate,
            metric=getattr(args, "select_metric", "NDCG@10"),
            patience=args.patience,
            eval_every=args.eval_every, n_batches=n_batches or train_set.num_batches(args.batch_size),
            desc=name,
            time_budget=args.time_budget, after_backward=after_backward,
            on_epoch_end=keep if ckpt else None, resume=resume,
        )
        wall = time.perf_counter() - t_start
        if ddp is not None:
            from .. import distributed

            if args.debug:  # the check of the last step, and the report the test reads
                distributed.report_sync(model, ddp, n_steps())
            if not ddp.is_main:
                distributed.leave(ddp)  # rank 0 tests and reports; this process ends here
        if refit:
            history.best_epoch = len(history.epochs)  # the last epoch: nothing to choose from
        print(f"trained {len(history.epochs)} epochs: {history.train_seconds:.1f}s training, "
              f"{wall:.1f}s wall with validation; best validation epoch {history.best_epoch}")
        if args.target_ndcg is not None and not refit:
            print(f"validation NDCG@10 >= {args.target_ndcg}: "
                  + (f"reached after {reached['wall_seconds']:.0f}s wall (epoch {reached['epoch']})"
                     if reached else "not reached"))
        valid_best = ({k: v for k, v in history.epochs[history.best_epoch - 1].items()
                       if "@" in k or k == "MRR"}
                      if not refit else args.refit_source["valid_metrics"])
        run = {"epochs": len(history.epochs), "best_epoch": history.best_epoch,
               "train_seconds": history.train_seconds,
               # CPU seconds of this process's fit (training + validation; a resumed run: this piece)
               "fit_cpu_seconds": time.process_time() - cpu_fit,
               "train_cpu_seconds": history.train_cpu_seconds,  # the training steps alone
               "curve": [{k: v for k, v in e.items() if k in ("epoch", "loss", "NDCG@10", "Recall@10", "wall_seconds",
                                                              "train_seconds", "train_cpu_seconds")}
                         for e in history.epochs]}
    else:  # --load: the saved weights, no training
        history, wall = None, 0.0
        saved = loaded["extra"]
        valid_best = saved.get("valid_metrics", {})
        run = {"epochs": saved.get("epochs", 0), "best_epoch": saved.get("best_epoch"),
               "train_seconds": 0.0, "curve": saved.get("curve", [])}
        print(f"loaded {args.load}: trained {run['epochs']} epochs by the run that saved it "
              f"(best validation epoch {run['best_epoch']}); no training here")

    # test: full ranking beside popularity (same split, same protocol)
    model.eval()
    cpu0 = time.process_time()
    with Timer() as t_eval:
        test_metrics = evaluate_full_ranking(score_fn, split, "test", max_len=args.max_len, ks=KS,
                                             device=device, users=eval_rows["test"])
    pop = popularity_metrics(split, "test", ks=KS)
    eval_cpu = time.process_time() - cpu0  # CPU time: comparable across machine loads
    print(f"one full-ranking evaluation of {split.n_users:,} users x {split.n_items:,} items: "
          f"{t_eval.seconds:.2f}s wall, {eval_cpu:.2f}s CPU")
    print("test      ", {k: round(v, 4) for k, v in test_metrics.items()})
    print("popularity", {k: round(v, 4) for k, v in pop.items()})

    # one user: history and top-10 recommendations (seen items excluded)
    row = show_row if show_row is not None else int(np.argmax(np.diff(split.train_offsets) >= 5))
    hist_items, hist_ts = split.history("test", args.max_len)
    with torch.no_grad():
        scores = score(torch.from_numpy(hist_items[row : row + 1]).to(device),
                       torch.from_numpy(hist_ts[row : row + 1]).to(device))[0].cpu()
    offsets, seen = split.seen("test")
    scores[torch.from_numpy(seen[offsets[row] : offsets[row + 1]])] = -torch.inf
    top = torch.topk(scores, 10).indices.tolist()
    held_out = int(split.test_items[row])
    print(f"user {data.user_raw[split.users[row]]}: last items of the history")
    for i in [int(x) for x in hist_items[row] if x][-8:]:
        print("   ", describe(data, i))
    print(f"held-out next item: {describe(data, held_out)}")
    print("top-10 recommendations:")
    for r, i in enumerate(top, 1):
        print(f"  {r:2d}. {describe(data, i)}" + ("  <- held-out item" if i == held_out else ""))

    outputs: dict = {}
    if args.export_vectors:
        if user_vector is None:
            raise ValueError(f"{name}: --export-vectors is not available for this model")
        users = all_user_vectors(user_vector, split, args.max_len, device)
        export_vectors(args.export_vectors, item_vectors=model.item_embeddings(), data=data,
                       user_vectors=users, user_ids=np.asarray(split.users))
        print(f"vectors written to {args.export_vectors}: {data.n_items:,} items and "
              f"{len(users):,} users, dimension {users.shape[1]} (inner product = the model's ranking)")
        outputs["export_vectors"] = str(args.export_vectors)
    if getattr(args, "export_onnx", None):
        outputs["onnx"] = export_onnx(model, args.export_onnx, max_len=args.max_len,
                                      histories=hist_items[:256])
    title = f"{name} ({args.loss})"
    if args.plot and history is not None:
        xs, ys = history.curve("NDCG@10")
        curves = {"validation NDCG@10": (xs, ys)}
        if args.target_ndcg is not None:
            curves[f"target {args.target_ndcg}"] = (xs, [args.target_ndcg] * len(xs))
        print("curve saved to", plot_curves(curves, args.plot, ylabel="NDCG@10",
                                            title=f"{title} on {data.name}"))

    if args.save:
        save_model(args.save, name=name, model=model, data=data, args=args, overwrite=args.overwrite,
                   saved_args=saved_args, valid_metrics=valid_best, test_metrics=test_metrics,
                   **{k: v for k, v in run.items() if k != "train_seconds"})
        print(f"saved to {args.save} (weights, config, id maps); reuse with --load {args.save}")
        outputs["saved"] = str(args.save)

    # the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
    protocol = "leave-one-out, full ranking over all items, seen items excluded"
    protocol += (f"; refit on train + validation for {run['epochs']} epochs (chosen on validation "
                 f"by {args.refit_source['path']})" if refit
                 else "; trained on train, stopped on validation")
    return print_result(
        model=title, data=args.data, protocol=protocol,
        protocol_name="refit" if refit else "train-only",
        metrics=test_metrics, baseline={"name": "popularity", "metrics": pop},
        train_seconds=run["train_seconds"], fit_cpu_seconds=run.get("fit_cpu_seconds"),
        train_cpu_seconds=run.get("train_cpu_seconds"),
        eval_seconds=t_eval.seconds,
        epochs=run["epochs"], params=count_params(model), valid_metrics=valid_best,
        best_epoch=run["best_epoch"], eval_cpu_seconds=eval_cpu, wall_seconds=wall,
        target_ndcg=args.target_ndcg, time_to_target_seconds=reached.get("wall_seconds"),
        time_to_target_epoch=reached.get("epoch"), curve=run["curve"],
        **({"resumed_after_epochs": resumed_at} if resumed_at else {}),
        **({"loaded_from": str(args.load)} if loaded is not None else {}), **outputs,
        **({"refit_from": args.refit_source} if refit else {}),
        **extra, config={k: v for k, v in vars(args).items() if k != "refit_source"}, out=args.out,
    )
