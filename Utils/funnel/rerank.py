"""Stage 3 of the funnel, re-ranking: the final k chosen from the ranker's top as a set.

`build_reranker` loads DPP (`Re-ranking/DPP/model.py`) or MMR from its folder; `rerank_lists` picks
the final k from the ranker's top `--rerank-depth`, trading relevance (the ranker's scores, min-max
scaled) for diversity (similarity = shared categories and title words, so near-duplicates repel).
`near_duplicate_rate` and `list_metrics` measure each stage's top k (NDCG, Recall, ILD, Coverage,
near-duplicates).

Tie rule: DPP's greedy step takes the first of equal gains, i.e. the ranker's order.
"""

from __future__ import annotations

import numpy as np
import torch

from Datasets.rerank_lists import item_categories, item_category_sets, minmax_scores
from Utils.loops.rerank_eval import rerank_metrics

from .recall import model_module


def build_reranker(args):
    if args.rerank == "dpp":
        mod = model_module("Re-ranking", "DPP")
        return mod.DPPReranker(theta=args.theta, max_length=args.k)
    mod = model_module("Re-ranking", "MMR")
    return mod.MMRReranker(lam=args.lam, max_length=args.k)


def rerank_lists(reranker, side, ranked, ranked_scores, depth, chunk=128):
    items = ranked[:, :depth]
    out = []
    for s in range(0, len(items), chunk):
        it = torch.from_numpy(items[s : s + chunk])
        sc = torch.from_numpy(ranked_scores[s : s + chunk, :depth]).double()
        valid = it > 0
        sc = torch.where(
            valid, sc, sc[valid].min() if valid.any() else torch.zeros((), dtype=sc.dtype)
        )
        pos = reranker(
            scores=minmax_scores(sc).float(), item_vectors=side.similarity[it], valid=valid
        ).numpy()
        out.append(pos)
    pos = np.concatenate(out)
    return np.where(pos >= 0, np.take_along_axis(items, np.clip(pos, 0, None), 1), 0)


def near_duplicate_rate(
    lists: np.ndarray, tokens: list[set[str]], k: int = 10, threshold: float = 0.6
) -> float:
    """Share of lists holding at least one near-duplicate pair among their first k items: two items
    whose title-token Jaccard is >= threshold (sizes, counts and shades of one product)."""
    bad = 0
    for row in lists[:, :k]:
        row = [i for i in row if i > 0]
        found = False
        for a in range(len(row)):
            ta = tokens[row[a]]
            if not ta:
                continue
            for b in range(a + 1, len(row)):
                tb = tokens[row[b]]
                if tb and len(ta & tb) / len(ta | tb) >= threshold:
                    found = True
                    break
            if found:
                break
        bad += found
    return bad / max(len(lists), 1)


def list_metrics(data, side, targets, k, rank_ndcg, best_top, ranked, final):
    """The top k of each stage (the best channel's list, the ranked list, the re-ranked list) on the
    test items: (rerank_metrics after ranking, after re-ranking, of the best channel, {stage:
    near-duplicate rate})."""
    U = len(targets)
    cats, cat_sets = item_categories(data), item_category_sets(data)
    labels = (ranked == targets[:, None]).astype(np.float32)
    ones = np.ones(U)
    initial = np.tile(np.arange(k), (U, 1))
    after_rank = rerank_metrics(
        initial, ranked, labels, k=k, categories=cats, category_sets=cat_sets, n_relevant=ones
    )
    fl = (final == targets[:, None]).astype(np.float32)
    after_rerank = rerank_metrics(
        initial,
        np.where(final > 0, final, 0),
        fl,
        k=k,
        categories=cats,
        category_sets=cat_sets,
        n_relevant=ones,
    )
    assert abs(after_rank[f"NDCG@{k}"] - rank_ndcg.mean()) < 1e-9
    dup = {
        stage: near_duplicate_rate(x, side.tokens, k)
        for stage, x in (("recall", best_top), ("rank", ranked), ("rerank", final))
    }
    cov_best = rerank_metrics(
        initial,
        best_top,
        (best_top == targets[:, None]).astype(np.float32),
        k=k,
        categories=cats,
        category_sets=cat_sets,
        n_relevant=ones,
    )
    return after_rank, after_rerank, cov_best, dup
