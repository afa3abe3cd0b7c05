"""The training and evaluation loop shared by the demos of the next-item sequence models (SASRec,
HSTU): one training row per user, every position predicts the next item.

The demos keep what is theirs (flags of the model, the model, its loss); this module holds what
they share: the common flags, length-bucketed batches, validation with the wall time until a
target NDCG@10, the test by full ranking beside popularity, one user's top-10, the curve and the
`RESULT` line.

Speed: users of similar length share a batch and each batch (training) or evaluation chunk is cut
to its longest real history, so the model never runs on columns that are padding for every row.
Positions count from the newest item in both models, so the cut changes no output (their tests
check this).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from .evaluation import Timer, evaluate_full_ranking, popularity_metrics
from .io import print_result
from .plotting import plot_curves
from .training import count_params, fit

KS = (5, 10, 20, 50, 200)  # the HSTU paper's columns include Recall@200 / NDCG@200


def add_seqrec_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags every sequence demo has (the model-specific ones stay in the demo)."""
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5,
                        help="validation checks without improvement")
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop after this many train s")
    parser.add_argument("--target-ndcg", type=float, default=None,
                        help="record the wall time until validation NDCG@10 first reaches this value")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--plot", default=None, help="save the training curve (PNG) here")
    return parser


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


def describe(data, i: int) -> str:
    """Title/category when the data has them; the keyword tokens of seqtxt Beauty otherwise."""
    text = data.item_text(i)
    if "keywords" in data.items and data.items["keywords"].iloc[i]:
        text += " " + " ".join(data.items["keywords"].iloc[i][:4])
    return text


def train_and_report(*, name: str, model: torch.nn.Module, train_step: Callable,
                     score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     optimizer: torch.optim.Optimizer, data, split, sequences: torch.Tensor,
                     train_set, gen: torch.Generator, args, device, **extra) -> dict:
    """Train with early stopping on validation NDCG@10, test by full ranking beside popularity,
    show one user, plot the curve and print the RESULT line (returned as a dict).

    score(history (b, w), history_ts (b, w)) -> (b, n_items + 1): the model's scores of all items
    for left-padded histories already on `device`. `extra` goes into the RESULT line."""
    lengths = (sequences != 0).sum(1)  # (U,) real items per training row
    eval_rows = {stage: rows_by_length(split, stage) for stage in ("valid", "test")}

    def score_fn(batch):
        h = batch["history"]  # (b, max_len), left-padded
        width = max(1, int((h != 0).sum(1).max()))  # cut columns that are padding for every row
        return score(h[:, -width:], batch["history_ts"][:, -width:])

    t_start = time.perf_counter()
    reached: dict = {}
    n_evals = [0]  # validation checks so far (one per epoch with --eval-every 1)

    def evaluate():
        metrics = evaluate_full_ranking(score_fn, split, "valid", max_len=args.max_len, ks=KS,
                                        device=device, users=eval_rows["valid"])
        if args.target_ndcg is not None and not reached and metrics["NDCG@10"] >= args.target_ndcg:
            reached["wall_seconds"] = time.perf_counter() - t_start  # training + validation so far
            reached["epoch"] = n_evals[0] + 1
        metrics["wall_seconds"] = time.perf_counter() - t_start
        n_evals[0] += 1
        return metrics

    history = fit(
        model, train_step,
        lambda epoch: length_bucketed_batches(train_set, lengths, args.batch_size, gen),
        optimizer, args.epochs, evaluate, metric="NDCG@10", patience=args.patience,
        eval_every=args.eval_every, n_batches=train_set.num_batches(args.batch_size), desc=name,
        time_budget=args.time_budget,
    )
    wall = time.perf_counter() - t_start
    print(f"trained {len(history.epochs)} epochs: {history.train_seconds:.1f}s training, "
          f"{wall:.1f}s wall with validation; best validation epoch {history.best_epoch}")
    if args.target_ndcg is not None:
        print(f"validation NDCG@10 >= {args.target_ndcg}: "
              + (f"reached after {reached['wall_seconds']:.0f}s wall (epoch {reached['epoch']})"
                 if reached else "not reached"))

    # test: full ranking beside popularity (same split, same protocol)
    model.eval()
    cpu0 = time.process_time()
    with Timer() as t_eval:
        test_metrics = evaluate_full_ranking(score_fn, split, "test", max_len=args.max_len, ks=KS,
                                             device=device, users=eval_rows["test"])
    valid_best = {k: v for k, v in history.epochs[history.best_epoch - 1].items()
                  if "@" in k or k == "MRR"}
    pop = popularity_metrics(split, "test", ks=KS)
    eval_cpu = time.process_time() - cpu0  # CPU time: comparable across machine loads
    print(f"one full-ranking evaluation of {split.n_users:,} users x {split.n_items:,} items: "
          f"{t_eval.seconds:.2f}s wall, {eval_cpu:.2f}s CPU")
    print("test      ", {k: round(v, 4) for k, v in test_metrics.items()})
    print("popularity", {k: round(v, 4) for k, v in pop.items()})

    # one user: history and top-10 recommendations (seen items excluded)
    row = int(np.argmax(np.diff(split.train_offsets) >= 5))  # a user with some history
    hist_items, hist_ts = split.history("test", args.max_len)
    with torch.no_grad():
        scores = score(torch.from_numpy(hist_items[row : row + 1]).to(device),
                       torch.from_numpy(hist_ts[row : row + 1]).to(device))[0].cpu()
    offsets, seen = split.seen("test")
    scores[torch.from_numpy(seen[offsets[row] : offsets[row + 1]])] = -torch.inf
    top = torch.topk(scores, 10).indices.tolist()
    held_out = int(split.test_items[row])
    print(f"user {split.users[row]}: last items of the history")
    for i in [int(x) for x in hist_items[row] if x][-8:]:
        print("   ", describe(data, i))
    print(f"held-out next item: {describe(data, held_out)}")
    print("top-10 recommendations:")
    for r, i in enumerate(top, 1):
        print(f"  {r:2d}. {describe(data, i)}" + ("  <- held-out item" if i == held_out else ""))

    title = f"{name} ({args.loss})"
    if args.plot:
        xs, ys = history.curve("NDCG@10")
        curves = {"validation NDCG@10": (xs, ys)}
        if args.target_ndcg is not None:
            curves[f"target {args.target_ndcg}"] = (xs, [args.target_ndcg] * len(xs))
        print("curve saved to", plot_curves(curves, args.plot, ylabel="NDCG@10",
                                            title=f"{title} on {data.name}"))

    # the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
    return print_result(
        model=title, data=args.data,
        protocol="leave-one-out, full ranking over all items, seen items excluded",
        metrics=test_metrics, baseline={"name": "popularity", "metrics": pop},
        train_seconds=history.train_seconds, eval_seconds=t_eval.seconds,
        epochs=len(history.epochs), params=count_params(model), valid_metrics=valid_best,
        best_epoch=history.best_epoch, eval_cpu_seconds=eval_cpu, wall_seconds=wall,
        target_ndcg=args.target_ndcg, time_to_target_seconds=reached.get("wall_seconds"),
        time_to_target_epoch=reached.get("epoch"),
        curve=[{k: v for k, v in e.items() if k in ("epoch", "loss", "NDCG@10", "wall_seconds")}
               for e in history.epochs],
        **extra, config=vars(args), out=args.out,
    )
