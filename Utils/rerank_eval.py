"""Evaluation of re-ranked candidate lists: relevance (NDCG@K, Recall@K) and diversity (ILD@K,
category coverage@K), for the initial ranking and for any re-ranker, with the same code.

A re-ranker returns positions into each candidate list, (U, k) int64 with -1 for "nothing" (e.g. a
DPP that stopped early). `take_positions` maps them to item ids and labels; `rerank_metrics`
computes the metric dict named as in DESIGN.md ("NDCG@10", "Recall@10", "ILD@10", "Coverage@10").
"""

from __future__ import annotations

import numpy as np
import torch

from . import metrics as M


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
    (`Datasets.rerank_lists.candidate_lists`): Recall counts a target missing from the list as
    missed; ILD and coverage use the data's item categories / attribute sets."""
    from Datasets import rerank_lists as RL

    cats, cat_sets = RL.item_categories(data), RL.item_category_sets(data)
    ones = np.ones(len(lists["items"]))

    def evaluate(positions) -> dict[str, float]:
        return rerank_metrics(positions, lists["items"], lists["labels"], k=k, categories=cats,
                              category_sets=cat_sets, n_relevant=ones)

    return evaluate


def show_reranked_list(data, lists: dict, positions, k: int, label: str) -> None:
    """The first user whose held-out item is in the list: history, the initial top k and the
    re-ranked top k side by side ("-" where a re-ranker stopped early)."""
    from Datasets import rerank_lists as RL

    u = int(np.argmax(lists["labels"].sum(1) > 0))
    print(f"\nuser {lists['user'][u]} — last items of the history:")
    for i in [i for i in lists["history"][u] if i > 0][-5:]:
        print("   ", RL.describe_item(data, int(i)))
    print(f"held-out item: {RL.describe_item(data, int(lists['target'][u]))}")
    print(f"\ninitial top-{k}  |  {label}")
    for r in range(k):
        a = RL.describe_item(data, int(lists["items"][u, r]))
        p = int(positions[u, r])
        b = RL.describe_item(data, int(lists["items"][u, p])) if p >= 0 else "-"
        print(f"  {r + 1:2d}. {a[:55]:55s} | {b[:55]}")
