"""Evaluation of re-ranked candidate lists: relevance (NDCG@K, Recall@K) and diversity (ILD@K,
category coverage@K), for the initial ranking and for any re-ranker, with the same code.

A re-ranker returns positions into each candidate list, (U, k) int64 with -1 for "nothing" (e.g. a
DPP that stopped early). `take_positions` maps them to item ids and labels; `rerank_metrics`
computes the metric dict named as in DESIGN.md ("NDCG@10", "Recall@10", "ILD@10", "Coverage@10").

Also what the three re-ranking demos (MMR, DPP, PRM) offer a user besides the metrics, in one place:

    add_rerank_io_args(parser)     # --save PATH --load PATH --overwrite --recommend USER
    check_output_paths(args)       # --save / --out unwritable: fail before training, not after
    (the checkpoint format, --save path check and user lookup: Utils.demo_io)
    fraction_arg / fraction_list_arg  # argparse types for lambda, theta and their sweeps
    side_inputs(data, similarity)  # says once what interaction-only data lacks and what is used
    save_rerank(path, ...)         # the first-stage ranker (+ PRM's weights), settings, item ids
    load_rerank(path, data=...)    # the ranker back (and the payload), checked against the data
    show_reranked_list(...)        # a user's initial top-k beside the re-ranked top-k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from Datasets import DataError

from .. import metrics as M
from ..demo_io import add_io_args, check_ids, check_save_path, read_checkpoint, write_checkpoint


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def take_positions(positions, items, labels) -> tuple[np.ndarray, np.ndarray]:
    """positions (U, k) into lists (U, N); -1 -> item 0 (padding) and label 0."""
    pos, items, labels = _np(positions).astype(np.int64), _np(items), _np(labels)
    safe = np.clip(pos, 0, items.shape[1] - 1)
    got_items = np.where(pos >= 0, np.take_along_axis(items, safe, axis=1), 0)
    got_labels = np.where(pos >= 0, np.take_along_axis(labels, safe, axis=1), 0.0)
    return got_items, got_labels


def rerank_metrics(
    positions, items, labels, *, k: int = 10, categories=None, category_sets=None, n_relevant=None
) -> dict[str, float]:
    """Metrics of the re-ranked top k.

    positions: (U, >=k) positions into the candidate lists (the initial ranking is arange(N)).
    items, labels: (U, N) candidate item ids and 0/1 (or graded) labels.
    categories: (n_items+1,) codes for coverage.
    category_sets: (n_items+1,) or (n_items+1, A) categories/attribute sets for ILD.
    n_relevant: (U,) relevant items per user for Recall (default: the positives in the list; pass
        ones for a held-out target that may be missing from the list).
    """
    top_items, top_labels = take_positions(_np(positions)[:, :k], items, labels)
    all_labels = _np(labels)
    # ideal DCG from every label of the candidate list, so a re-ranker cannot game it
    out = {
        f"NDCG@{k}": M.ndcg_at_k_lists(top_labels, k, ideal=all_labels),
        f"Recall@{k}": M.recall_at_k_lists(
            top_labels, k, n_relevant=all_labels.sum(1) if n_relevant is None else n_relevant
        ),
    }
    if category_sets is not None:
        out[f"ILD@{k}"] = M.ild(top_items, categories=category_sets, k=k)
    if categories is not None:
        out[f"Coverage@{k}"] = M.category_coverage(top_items, categories, k=k)
    return out


def initial_positions(n_lists: int, k: int) -> np.ndarray:
    """The unmodified initial ranking: positions 0..k-1 for every list."""
    return np.tile(np.arange(k), (n_lists, 1))


def heldout_list_evaluator(lists: dict, data, k: int):
    """evaluate(positions) -> metrics for candidate lists whose label is one held-out item per user
    (`Utils.loops.first_stage.candidate_lists`): Recall counts a target missing from the list as
    missed; ILD and coverage use the data's item categories / attribute sets."""
    from Datasets import rerank_lists as RL

    cats = cat_sets = None  # interaction-only data: no ILD / coverage (see side_inputs)
    if RL.has_categories(data):
        cats, cat_sets = RL.item_categories(data), RL.item_category_sets(data)
    ones = np.ones(len(lists["items"]))

    def evaluate(positions) -> dict[str, float]:
        return rerank_metrics(positions, lists["items"], lists["labels"], k=k, categories=cats,
                              category_sets=cat_sets, n_relevant=ones)

    return evaluate


def side_inputs(data, similarity: str | None = None) -> str | None:
    """The similarity kind to use on this data, saying once what interaction-only data lacks.

    Without item categories/attributes (e.g. a seqtxt file with no `*_item2attributes.json` beside
    it) the default 'mixed' similarity becomes the ranker's item embeddings alone, and ILD@k and
    Coverage@k are not reported (they measure categories). An explicit 'category' is a DataError.
    """
    from Datasets import rerank_lists as RL

    if RL.has_categories(data):
        return similarity
    if similarity == "category":
        raise DataError(f"--similarity category: {data.name} has no item categories, attributes or "
                        "brands; expected --similarity embedding (the ranker's item embeddings)")
    print(f"[side inputs] {data.name} has item ids only (no categories, attributes or brands): "
          + ("item similarity = the first-stage ranker's item embeddings; " if similarity else "")
          + "ILD and Coverage are not reported")
    return "embedding" if similarity else None


def show_reranked_list(data, lists: dict, positions, k: int, label: str, *, u: int | None = None,
                       labels=None) -> None:
    """User `u` (default: the first whose held-out item is in the list): history, the initial top k
    and the re-ranked top k side by side ("-" where a re-ranker stopped early); with `labels`
    (U, N), each item's label in brackets."""
    from Datasets import rerank_lists as RL

    if u is None:
        u = int(np.argmax(lists["labels"].sum(1) > 0))
    raw_user = data.user_raw[int(lists["user"][u])]
    print(f"\nuser {raw_user} — last items of the history:")
    for i in [i for i in lists["history"][u] if i > 0][-5:]:
        print("   ", RL.describe_item(data, int(i)))
    print(f"held-out item: {RL.describe_item(data, int(lists['target'][u]))}")

    def cell(p: int) -> str:
        if p < 0:
            return "-"
        text = RL.describe_item(data, int(lists["items"][u, p]))[:50]
        return text if labels is None else f"{text} ({labels[u, p]:g})"

    width = 55 if labels is None else 58
    print(f"\ninitial top-{k}  |  {label}")
    for r in range(k):
        print(f"  {r + 1:2d}. {cell(r):{width}s} | {cell(int(positions[u, r]))}")


# --------------------------------------------------------------------------------------------------
# --save / --load / --recommend, shared by the MMR, DPP, PRM and Calibration demos
# --------------------------------------------------------------------------------------------------


def add_rerank_io_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags recall demos have too (same names, same meaning)."""
    return add_io_args(parser, save="save the first-stage ranker (+ PRM's weights), settings and item ids",
                       load="load a --save file and skip training (same data expected)",
                       recommend="print this raw user's initial and re-ranked top-k (id as in the data file)")


def check_output_paths(args) -> None:
    """Fail before training, not after, when --save or --out cannot be written: a folder where the
    file should be, a file where a folder should be, or --save over a file without --overwrite."""
    for flag, path in (("--save", getattr(args, "save", None)), ("--out", args.out)):
        if not path:
            continue
        p = Path(path)
        if p.is_dir():
            raise ValueError(f"{flag} {path}: is a folder; expected a file name")
        parent = p.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ValueError(f"{flag} {path}: {parent} is a file; expected a folder there")
    check_save_path(getattr(args, "save", None), args.overwrite)


RERANK_DEMOS = ("MMR", "DPP", "PRM", "Calibration")  # their files hold the same first-stage ranker


def save_rerank(path: str, *, scorer, data, reranker: str, settings: dict, overwrite: bool = False,
                model: torch.nn.Module | None = None, epochs: int = 0, **extra) -> Path:
    """Write (`Utils.demo_io.write_checkpoint`) the first-stage ranker as model "ranker" (and a
    learned re-ranker as "model", first), the settings that built the lists, and the raw item ids
    the weights index. `extra`: what else the demo reads back (PRM: its best epoch)."""
    models = {"ranker": (scorer, {"dim": int(scorer.item_in.embedding_dim)})}
    if model is not None:
        from dataclasses import asdict

        models = {"model": (model, asdict(model.config))} | models
    return write_checkpoint(path, demo=reranker, models=models, args={"data": data.name, **settings},
                            ids={"item": data.item_raw}, overwrite=overwrite, epochs=epochs, **extra)


def load_rerank(path: str, *, data, reranker: str):
    """(first-stage ranker, payload) from a `save_rerank` file; payload["models"]["model"] holds
    PRM's weights and config for a PRM file. An MMR, DPP or Calibration demo reads any re-ranking demo's file
    (it needs the ranker only); PRM needs a PRM file. A file for other data (other item ids) is a
    DataError."""
    from Utils.loops import first_stage as FS

    payload = read_checkpoint(path, demo=RERANK_DEMOS)
    if reranker == "PRM" and payload["demo"] != "PRM":
        raise DataError(f"--load {path}: holds a {payload['demo']} demo's ranker but no PRM "
                        "weights; expected a file written by the PRM demo's --save")
    check_ids(payload, path, data_name=data.name, item=data.item_raw)
    ranker = payload["models"]["ranker"]
    scorer = FS.HistoryScorer(data.n_items, ranker["config"]["dim"])
    scorer.load_state_dict(ranker["state"])
    scorer.eval()
    print(f"loaded {path}: {payload['demo']} demo, trained on {payload['args']['data']}; "
          "training skipped")
    return scorer, payload


def fraction_arg(*, open_top: bool = False):
    """argparse type: a number in [0, 1] (MMR's lambda), or [0, 1) with open_top (DPP's theta)."""
    top = "1)" if open_top else "1]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected one in [0, {top}") from None
        if not (0.0 <= value < 1.0 if open_top else 0.0 <= value <= 1.0):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected a number in [0, {top}")
        return value

    return parse


def fraction_list_arg(*, open_top: bool = False):
    """argparse type: comma-separated numbers for a sweep, each as `fraction_arg`; '' = no sweep."""
    one = fraction_arg(open_top=open_top)

    def parse(text: str) -> list[float]:
        return [one(x.strip()) for x in text.split(",") if x.strip()]

    return parse
