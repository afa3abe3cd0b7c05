"""Metrics, in one place, checked against scikit-learn in tests/test_metrics.py.

Top-K metrics for next-item recall take the 1-based rank of the single held-out target. Ranks are
computed pessimistically (see `Utils.evaluation.target_ranks`): the target's rank is 1 + the number of
*other* items scoring at least as high, so a constant score gives rank = catalogue size, never a
flattering number. Recall@K equals HR@K with one target per user.

AUC keeps the standard rule for ties (half credit), as `sklearn.metrics.roc_auc_score`.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = _np(ranks).astype(np.float64)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be 1-D (one target per row), got shape {ranks.shape}")
    if len(ranks) and np.nanmin(ranks) < 1:
        raise ValueError("ranks are 1-based: the best possible rank is 1")
    return ranks


# ---- single-target ranking metrics ---------------------------------------------------------------


def recall_at_k(ranks: ArrayLike, k: int) -> float:
    """Share of rows whose target is in the top k (= HR@k with one target)."""
    r = _check_ranks(ranks)
    return float(np.mean(r <= k)) if len(r) else 0.0


hit_rate_at_k = recall_at_k


def ndcg_at_k(ranks: ArrayLike, k: int) -> float:
    """Mean of 1 / log2(rank + 1) for targets within the top k (ideal DCG is 1 with one target)."""
    r = _check_ranks(ranks)
    if not len(r):
        return 0.0
    return float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))


def mrr(ranks: ArrayLike, k: int | None = None) -> float:
    """Mean reciprocal rank (optionally truncated at k)."""
    r = _check_ranks(ranks)
    if not len(r):
        return 0.0
    rr = 1.0 / r
    if k is not None:
        rr = np.where(r <= k, rr, 0.0)
    return float(np.mean(rr))


def ranking_metrics(ranks: ArrayLike, ks=(5, 10, 20, 50)) -> dict[str, float]:
    """{"Recall@k", "NDCG@k" for each k, "MRR"} from target ranks."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"Recall@{k}"] = recall_at_k(ranks, k)
        out[f"NDCG@{k}"] = ndcg_at_k(ranks, k)
    out["MRR"] = mrr(ranks)
    return out


# ---- list metrics (graded relevance, several positives) ------------------------------------------


def dcg_at_k(relevance: ArrayLike, k: int) -> np.ndarray:
    """Per-row DCG@k of relevance listed in ranked order: sum rel_i / log2(i + 1), i = 1..k."""
    rel = _np(relevance).astype(np.float64)
    rel = rel[:, :k] if rel.ndim == 2 else rel[None, :k]
    disc = 1.0 / np.log2(np.arange(2, rel.shape[1] + 2))
    return rel @ disc


def ndcg_at_k_lists(relevance: ArrayLike, k: int, ideal: ArrayLike | None = None) -> float:
    """Mean NDCG@k of ranked lists. relevance: (U, n) in the order shown; ideal: (U, m) all relevance
    labels of each user's candidates (default: the shown list itself). Rows with no relevant item
    score 0 (as scikit-learn's ndcg_score)."""
    rel = _np(relevance).astype(np.float64)
    ideal_rel = rel if ideal is None else _np(ideal).astype(np.float64)
    best = dcg_at_k(-np.sort(-ideal_rel, axis=1), k)
    got = dcg_at_k(rel, k)
    return float(np.mean(np.where(best > 0, got / np.where(best > 0, best, 1.0), 0.0)))


def recall_at_k_lists(relevance: ArrayLike, k: int, n_relevant: ArrayLike | None = None) -> float:
    """Mean share of each user's relevant items found in the top k of the shown list."""
    rel = _np(relevance) > 0
    total = rel.sum(axis=1) if n_relevant is None else _np(n_relevant)
    hit = rel[:, :k].sum(axis=1)
    return float(np.mean(np.where(total > 0, hit / np.maximum(total, 1), 0.0)))


# ---- classification metrics ----------------------------------------------------------------------


def auc(y: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC via the rank-sum (Mann-Whitney) statistic with average ranks for ties (half credit)."""
    y = _np(y).astype(np.float64).ravel()
    s = _np(score).astype(np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average rank of each tie block
    starts = np.concatenate([[0], np.nonzero(np.diff(s_sorted))[0] + 1])
    ends = np.concatenate([starts[1:], [len(s)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of the block
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(users: ArrayLike, y: ArrayLike, score: ArrayLike) -> float:
    """Per-user AUC weighted by the user's impressions; users with one class only are skipped
    (DIN paper, Eq. 10)."""
    users, y, s = _np(users).ravel(), _np(y).ravel(), _np(score).ravel()
    order = np.argsort(users, kind="stable")
    users, y, s = users[order], y[order], s[order]
    bounds = np.concatenate([[0], np.nonzero(np.diff(users))[0] + 1, [len(users)]])
    pos_per = np.add.reduceat(y > 0.5, bounds[:-1]) if len(users) else np.zeros(0)
    n_per = np.diff(bounds)
    mixed = np.nonzero((pos_per > 0) & (pos_per < n_per))[0]
    if len(mixed) == 0:
        raise ValueError("GAUC needs at least one user with both positive and negative labels")
    total, weight = 0.0, 0.0
    for g in mixed:  # one AUC per user: a loop over users, each vectorised inside
        a, b = bounds[g], bounds[g + 1]
        total += (b - a) * auc(y[a:b], s[a:b])
        weight += b - a
    return float(total / weight)


def log_loss(y: ArrayLike, p: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities p (clipped to [eps, 1 - eps])."""
    y = _np(y).astype(np.float64).ravel()
    p = np.clip(_np(p).astype(np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ---- diversity -----------------------------------------------------------------------------------


def ild(lists: ArrayLike, item_vectors: ArrayLike | None = None, categories: ArrayLike | None = None,
        k: int | None = None) -> float:
    """Intra-list diversity: mean pairwise dissimilarity within each list's top k.

    With `item_vectors` (n_items+1, D): 1 - cosine similarity. With `categories` (n_items+1,) or
    (n_items+1, A) attribute sets: 1 - Jaccard (a single category: 1 when the categories differ).
    Lists: (U, n) item ids; padding (0) entries are ignored.
    """
    L = _np(lists).astype(np.int64)
    L = L[:, :k] if k else L
    mask = L > 0
    if item_vectors is not None:
        V = _np(item_vectors).astype(np.float64)
        V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
        E = V[L]  # (U, n, D)
        sim = np.einsum("und,umd->unm", E, E)
    elif categories is not None:
        C = _np(categories)
        if C.ndim == 1:
            c = C[L]
            sim = (c[:, :, None] == c[:, None, :]).astype(np.float64)
        else:
            A = C[L]  # (U, n, A) attribute ids, 0 = none
            onehot_max = int(C.max()) + 1
            M = np.zeros(A.shape[:2] + (onehot_max,), dtype=np.float64)
            u_idx, n_idx, a_idx = np.nonzero(A > 0)
            M[u_idx, n_idx, A[u_idx, n_idx, a_idx]] = 1.0
            inter = np.einsum("una,uma->unm", M, M)
            size = M.sum(-1)
            union = size[:, :, None] + size[:, None, :] - inter
            sim = np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)
    else:
        raise ValueError("ild needs item_vectors or categories")
    pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(L.shape[1], dtype=bool)[None]
    n_pairs = pair.sum(axis=(1, 2))
    div = ((1.0 - sim) * pair).sum(axis=(1, 2)) / np.maximum(n_pairs, 1)
    return float(np.mean(div[n_pairs > 0])) if (n_pairs > 0).any() else 0.0


def category_coverage(lists: ArrayLike, categories: ArrayLike, k: int | None = None,
                      n_categories: int | None = None) -> float:
    """Mean number of distinct categories in each list's top k, divided by min(k, n_categories)."""
    L = _np(lists).astype(np.int64)
    L = L[:, :k] if k else L
    C = _np(categories)
    c = C[L] if C.ndim == 1 else C[L][..., 0]
    c = np.where(L > 0, c, -1)
    s = np.sort(c, axis=1)
    distinct = ((np.diff(s, axis=1) != 0) & (s[:, 1:] >= 0)).sum(axis=1) + (s[:, 0] >= 0)
    n_cat = n_categories if n_categories is not None else int(np.unique(C[C > 0]).size)
    return float(np.mean(distinct / max(1, min(L.shape[1], n_cat))))


def catalogue_coverage(lists: ArrayLike, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    L = _np(lists)
    return float(np.unique(L[L > 0]).size / n_items)
