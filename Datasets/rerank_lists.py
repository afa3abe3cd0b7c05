"""The list side of re-ranking (MMR, DPP, Calibration, Constrained, PRM): categories, clicks, text.

The candidate lists themselves come from a first-stage ranker, which lives with the other training
loops: `Utils.loops.first_stage` (`train_scorer`, `candidate_lists`, `prefix_lists`). This module holds
what describes the items of a list and its clicks:

- `has_categories`, `item_categories` / `item_category_sets` / `category_features`: category codes for
  coverage, ILD and the 'category' similarity (synthetic: the category; seqtxt: attribute ids, the
  first attribute as "the" category).
- `simulate_clicks`: synthetic only. A planted click model with a **within-list effect**: an item's
  click probability drops with the number of its near-duplicates (same variant group) in the same
  list and with the share of the list taken by its category (redundancy). The pointwise ranker
  cannot see it; a list-aware re-ranker can.
- `describe_item`, `minmax_scores`: printing and per-list score scaling.
"""

from __future__ import annotations

import numpy as np
import torch


def has_categories(data) -> bool:
    """True when the items have a category, attribute ids (seqtxt side file) or a brand: what
    ILD, coverage and the 'category' similarity need. Interaction-only data has none."""
    if "attributes" in data.items:
        return any(isinstance(a, list) and a for a in data.items["attributes"])
    return any(c in data.items for c in ("category", "brand"))


def item_categories(data) -> np.ndarray:
    """(n_items+1,) int64 category code per item (0 = padding/unknown): the `category` column
    when the source has one, else the first attribute id (seqtxt)."""
    if "category" in data.items:
        return data.item_feature("category")
    attrs = data.item_attributes(1)
    return attrs[:, 0].astype(np.int64)


def item_category_sets(data, max_per_item: int = 8) -> np.ndarray:
    """Categories for ILD: (n_items+1,) codes, or (n_items+1, A) attribute sets for seqtxt."""
    if "category" in data.items:
        return data.item_feature("category")
    return data.item_attributes(max_per_item)


def category_features(data, max_per_item: int = 8) -> torch.Tensor:
    """(n_items+1, C) float multi-hot category/attribute vectors (row 0 zero): item features for a
    similarity kernel that matches what ILD measures."""
    cats = item_category_sets(data, max_per_item)
    cats = cats[:, None] if cats.ndim == 1 else cats
    out = torch.zeros(cats.shape[0], int(cats.max()) + 1)
    c = torch.from_numpy(cats)
    out.scatter_(1, c, 1.0)
    out[:, 0] = 0.0
    return out


def simulate_clicks(
    data,
    lists: dict[str, np.ndarray],
    *,
    seed: int = 0,
    group_penalty: float = 2.0,
    crowd_penalty: float = 4.0,
    shift: float = -1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic only: click labels with a planted within-list (redundancy) effect.

    logit(u, i | list) = click_logit(u, i, recent history)     (the synthetic CTR ground truth)
                         - group_penalty * #(other items of i's variant group in the list)
                         - crowd_penalty * (share of the other list items in i's category)
                         + shift
    Order-free on purpose: labels stay valid for any permutation of the list, so NDCG of a re-ranked
    list is measured against the same clicks. Returns (clicks (U, N) float32, probabilities (U, N)).
    """
    from .synthetic import click_logit

    if "truth" not in data.extra:
        raise ValueError(
            "simulate_clicks needs the synthetic world's ground truth (data.extra['truth'])"
        )
    t = data.extra["truth"]
    items, users, hist = lists["items"], lists["user"], lists["history"]
    U, N = items.shape
    base = click_logit(data, np.repeat(users, N), items.ravel(), np.repeat(hist[:, -5:], N, axis=0))
    base = base.reshape(U, N)
    group = t["item_group"][items]  # (U, N)
    cat = t["item_category"][items]
    same_group = (group[:, :, None] == group[:, None, :]).sum(-1) - 1  # (U, N) others in the group
    same_cat = ((cat[:, :, None] == cat[:, None, :]).sum(-1) - 1) / max(N - 1, 1)
    logit = base - group_penalty * same_group - crowd_penalty * same_cat + shift
    prob = 1.0 / (1.0 + np.exp(-logit))
    clicks = (np.random.default_rng(seed).random((U, N)) < prob).astype(np.float32)
    return clicks, prob.astype(np.float32)


def describe_item(data, i: int, width: int = 60) -> str:
    """`data.item_text(i)` (title or Beauty keyword tokens, category or attributes), cut to width."""
    return data.item_text(int(i))[:width]


def minmax_scores(scores: torch.Tensor) -> torch.Tensor:
    """Per-list min-max of (U, N) ranker scores to [0, 1], so a re-ranker's knob (lambda, theta)
    means the same for every list and data set."""
    lo, hi = scores.min(1, keepdim=True).values, scores.max(1, keepdim=True).values
    return (scores - lo) / (hi - lo).clamp_min(1e-12)
