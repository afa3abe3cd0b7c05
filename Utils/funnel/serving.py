"""Serving the funnel: one request through every stage, and what the candidate count costs.

`Funnel.recommend(history)` runs recall, merge, ranking and re-ranking for one user as a server
would, timing each stage; `serve_requests` reports the p50 / p95 over many requests (`percentiles`)
and checks a served list against the batch pipeline's. `candidate_sweep` runs the batch funnel at
several candidate counts N (`--sweep-n`): the recall ceiling, NDCG@k after ranking and after
re-ranking, and the ranking time.
"""

from __future__ import annotations

import time

import numpy as np

from .ranking import rank_lists
from .recall import merge, ranks_in, retrieve
from .report import ndcg_per_user, timed
from .rerank import rerank_lists


class Funnel:
    """The trained stages behind one call: `recommend(history) -> final k item ids`."""

    def __init__(self, args, channels, ranker, reranker, pop_key):
        self.args, self.channels, self.ranker, self.reranker = args, channels, ranker, reranker
        self.pop_key = pop_key

    def recommend(self, history: np.ndarray, timings: dict | None = None) -> np.ndarray:
        """history: (L,) item ids, oldest first (0 = padding). Seen items are never returned."""
        a = self.args
        t = time.perf_counter
        h = np.zeros((1, a.max_len), dtype=np.int64)
        real = history[history > 0][-a.max_len :]
        h[0, a.max_len - len(real) :] = real
        seen_items = np.unique(history[history > 0])
        seen = (np.array([0, len(seen_items)]), seen_items)
        t0 = t()
        lists = [
            retrieve(ch, h, seen, np.array([0]), a.n_candidates, self.pop_key)
            for ch in self.channels.values()
        ]
        t1 = t()
        cands = merge(lists, a.quota_list, a.n_candidates)
        ranks = np.stack([ranks_in(cands, lst) for lst in lists], -1)
        t2 = t()
        ranked, scores = rank_lists(self.ranker, h, cands, ranks)
        t3 = t()
        final = rerank_lists(self.reranker, ranked, scores, a.rerank_depth, h)[0]
        t4 = t()
        if timings is not None:
            for key, v in (
                ("recall", t1 - t0),
                ("merge", t2 - t1),
                ("rank", t3 - t2),
                ("rerank", t4 - t3),
                ("total", t4 - t0),
            ):
                timings.setdefault(key, []).append(1000 * v)
        return final


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}


def serve_requests(funnel: Funnel, n: int, hist: np.ndarray, final: np.ndarray, seed: int) -> dict:
    """`n` single requests of random users (rows of `hist`) through `funnel`: {stage: p50 / p95 ms}
    and whether a served list equals the batch pipeline's (`final`)."""
    U = len(hist)
    rng = np.random.default_rng(seed)
    tm: dict[str, list] = {}
    for r in rng.integers(0, U, n):
        funnel.recommend(hist[r], tm)
    serving = {k_: percentiles(v) for k_, v in tm.items()}
    print(f"\nserving {n} single requests (ms):")
    for k_, v in serving.items():
        print(f"  {k_:8s} p50 {v['p50_ms']:7.2f}   p95 {v['p95_ms']:7.2f}")
    # the served list equals the batch pipeline's list
    r0 = int(rng.integers(0, U))
    serving["matches_batch"] = bool(np.array_equal(funnel.recommend(hist[r0]), final[r0]))
    return serving


def candidate_sweep(args, lists, ranker, reranker, hist, targets) -> dict:
    """The candidate-count trade-off: for each N of `--sweep-n`, the first N of each channel's list
    (`lists`, retrieved to the largest N) merged, ranked and re-ranked: {N: ceiling, NDCG@k after
    ranking and re-ranking, ranking seconds per 1,000 users}."""
    U = len(targets)
    sweep = {}
    for n in args.sweep:
        ln = {c: v[:, :n] for c, v in lists.items()}
        cn = merge(list(ln.values()), args.quota_list, n)
        rn = np.stack([ranks_in(cn, v) for v in ln.values()], -1)
        (rk, rs), t_rank = timed(rank_lists, ranker, hist, cn, rn)
        fn_ = rerank_lists(reranker, rk, rs, min(args.rerank_depth, n), hist)
        sweep[str(n)] = {
            "ceiling": float((cn == targets[:, None]).any(1).mean()),
            f"rank/NDCG@{args.k}": float(ndcg_per_user(rk, targets, args.k).mean()),
            f"rerank/NDCG@{args.k}": float(ndcg_per_user(fn_, targets, args.k).mean()),
            "rank_s_per_1000_users": 1000 * t_rank / U,
        }
        print(
            f"  N={n:4d}: ceiling {sweep[str(n)]['ceiling']:.4f}  rank NDCG@{args.k} "
            f"{sweep[str(n)][f'rank/NDCG@{args.k}']:.4f}  final {sweep[str(n)][f'rerank/NDCG@{args.k}']:.4f}"
        )
    return sweep
