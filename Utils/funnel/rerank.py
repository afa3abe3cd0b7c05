"""Stage 3 of the funnel, re-ranking: the final k chosen from the ranker's top, by one of five rules.

`build_reranker(args, data)` loads the chosen re-ranker's `model.py` from its folder and
wraps it as a `ListReranker`: one call `pick(items, scores, valid, history) -> positions` whatever
the rule reads. Each sees the ranker's top `--rerank-depth` candidates with their scores min-max
scaled per list:

- `dpp` / `mmr` (diversity): similarity = shared categories and title words, so near-duplicates repel;
- `calibration` (Steck 2018): the list's category mix follows the user's history mix, weight
  `--cal-lambda`; items with no category get one shared "unknown" category;
- `constrained` (Geyik et al. 2019): every prefix holds between floor(q k') and ceil(q k') long-tail
  items, q = `--tail-quota`; the long tail is the items outside the `--head-fraction` most
  interacted in training (training part only);
- `none`: the ranker's order (what the re-ranking stage is measured against).

`compare_rerankers` runs all five on the same ranked lists and measures what each buys and costs:
NDCG, Recall, ILD, Coverage, near-duplicates, miscalibration C_KL, long-tail share, exposure Gini
and milliseconds per 1,000 users. `near_duplicate_rate` and `list_metrics` measure each stage's
top k.

Tie rule: DPP's greedy step takes the first of equal gains, i.e. the ranker's order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from Datasets.rerank_lists import item_categories, item_category_sets, minmax_scores
from Utils.loops.calibration_tradeoff import category_ids
from Utils.loops.constrained_tradeoff import tail_groups
from Utils.loops.rerank_eval import rerank_metrics

from .recall import model_module

RERANKERS = ("dpp", "mmr", "calibration", "constrained", "none")


@dataclass
class ListReranker:
    """One re-ranking rule behind one call. `model` is the rule's model-file object (None for
    "none"); `module` its model file (for the calibration helpers); the arrays are per item id."""

    name: str
    k: int
    model: object = None
    module: object = None
    similarity: torch.Tensor | None = None  # (I+1, F) dpp / mmr
    category_ids: np.ndarray | None = None  # (I+1, A) calibration; 0 = none
    n_categories: int = 0
    item_group: np.ndarray | None = None  # (I+1,) constrained: 0 = head, 1 = long tail
    proportions: torch.Tensor | None = None  # (2,) constrained: (1 - q, q)
    stats: dict = field(default_factory=dict)  # feasible / satisfied shares of the last call

    def pick(self, items: np.ndarray, scores: torch.Tensor, valid: torch.Tensor,
             history: np.ndarray) -> np.ndarray:
        """items (B, D) ids (0 = none), scores (B, D) float64 on [0, 1], valid (B, D) bool,
        history (B, L) ids oldest first (0 = padding) -> positions (B, k) into items, -1 = none."""
        B = len(items)
        if self.name == "none":
            order = torch.argsort(~valid, dim=1, stable=True)[:, : self.k]  # valid first, in order
            return torch.where(torch.gather(valid, 1, order), order, -1).numpy()
        it = torch.from_numpy(items)
        if self.name in ("dpp", "mmr"):
            return self.model(scores=scores.float(), item_vectors=self.similarity[it],
                              valid=valid).numpy()
        if self.name == "constrained":
            out = self.model(scores=scores, groups=torch.from_numpy(self.item_group[items]),
                             proportions=self.proportions, valid=valid)
            self.stats.setdefault("feasible", []).append(out.feasible.numpy())
            self.stats.setdefault("satisfied", []).append(out.satisfied.numpy())
            return out.positions.numpy()
        # calibration: a user with no history has no target mix: the ranker's order
        cal = self.module
        q_items = cal.category_distribution(torch.from_numpy(self.category_ids[items]),
                                            self.n_categories).double()
        q_hist = cal.category_distribution(torch.from_numpy(self.category_ids[history]),
                                           self.n_categories).double()
        has = torch.from_numpy((history > 0).any(1))
        pos = np.empty((B, self.k), dtype=np.int64)
        if bool(has.any()):
            pos[has.numpy()] = self.model(scores=scores[has], item_categories=q_items[has],
                                          history_categories=q_hist[has],
                                          valid=valid[has]).numpy()
        if not bool(has.all()):
            none = ListReranker("none", self.k)
            pos[~has.numpy()] = none.pick(items[~has.numpy()], scores[~has], valid[~has],
                                          history[~has.numpy()])
        return pos


def build_reranker(args, data, name: str | None = None, side=None) -> ListReranker:
    """The re-ranker `name` (default `args.rerank`) with its knobs from `args`: --theta (DPP),
    --lam (MMR), --cal-lambda (calibration), --tail-quota / --head-fraction / --constrained-algorithm
    (constrained); the list length is --k. `side`: the funnel's `ItemSide` (DPP / MMR similarity),
    built from `data` when not given."""
    name = name or args.rerank
    k = args.k
    if name == "none":
        return ListReranker(name, k)
    if name in ("dpp", "mmr"):
        from .items import item_side

        sim = (side or item_side(data)).similarity
        if name == "dpp":
            mod = model_module("Re-ranking", "DPP")
            return ListReranker(name, k, mod.DPPReranker(theta=args.theta, max_length=k), mod,
                                similarity=sim)
        mod = model_module("Re-ranking", "MMR")
        return ListReranker(name, k, mod.MMRReranker(lam=args.lam, max_length=k), mod,
                            similarity=sim)
    if name == "calibration":
        mod = model_module("Re-ranking", "Calibration")
        ids, n, _ = category_ids(data)
        none = (ids == 0).all(1)
        none[0] = False  # the padding item stays without a category
        if none.any():  # one shared "unknown" category, so every real item has a mix
            n += 1
            ids = ids.copy()
            ids[none, 0] = n
        return ListReranker(name, k, mod.CalibratedReranker(lam=args.cal_lambda, max_length=k),
                            mod, category_ids=ids, n_categories=n)
    if name == "constrained":
        mod = model_module("Re-ranking", "Constrained")
        q = args.tail_quota
        return ListReranker(
            name, k, mod.ConstrainedReranker(algorithm=args.constrained_algorithm, max_length=k),
            mod, item_group=tail_groups(data, args.head_fraction),
            proportions=torch.tensor([1.0 - q, q], dtype=torch.float64),
        )
    raise ValueError(f"--rerank {name!r}: expected one of {', '.join(RERANKERS)}")


def rerank_lists(reranker: ListReranker, ranked, ranked_scores, depth, history, chunk=128):
    """The final k of every user (B, k) item ids (0 = none): `reranker` picks from the first
    `depth` of `ranked` (B, >= depth) by `ranked_scores`, `chunk` users at a time."""
    items = ranked[:, :depth]
    out = []
    for s in range(0, len(items), chunk):
        it = items[s : s + chunk]
        sc = torch.from_numpy(ranked_scores[s : s + chunk, :depth]).double()
        valid = torch.from_numpy(it > 0)
        sc = torch.where(
            valid, sc, sc[valid].min() if valid.any() else torch.zeros((), dtype=sc.dtype)
        )
        out.append(reranker.pick(it, minmax_scores(sc), valid, history[s : s + chunk]))
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


def compare_rerankers(args, data, side, ranked, ranked_scores, hist, targets) -> tuple:
    """All five re-rankers on the same ranked lists: ({name: final (U, k) ids}, {name: metrics}).
    Metrics of each final top k, the held-out test item as label: NDCG, Recall, ILD, Coverage,
    NearDup (a near-duplicate pair in the list), C_KL (miscalibration against the user's history
    mix, Steck's Eq. (3)-(4), alpha 0.01), Tail (long-tail share), Satisfied (every prefix holds
    floor(q k') long-tail items, q = --tail-quota), Gini (of the catalogue's exposure in the
    top k) and ms_per_1000_users (the re-ranking call alone)."""
    from Utils.loops import calibration_tradeoff as CT
    from Utils.loops import constrained_tradeoff as KT

    k, U = args.k, len(targets)
    cal = build_reranker(args, data, "calibration")
    con = build_reranker(args, data, "constrained")
    finals, table = {}, {}
    positions = np.tile(np.arange(k), (U, 1))
    for name in RERANKERS:
        reranker = {"calibration": cal, "constrained": con}.get(name) or build_reranker(
            args, data, name, side
        )
        t0 = time.perf_counter()
        final = rerank_lists(reranker, ranked, ranked_scores, args.rerank_depth, hist)
        ms = 1000 * 1000 * (time.perf_counter() - t0) / max(U, 1)
        lists = {"items": final, "labels": (final == targets[:, None]).astype(np.float32),
                 "history": hist}
        row = KT.list_evaluator(lists, data, con.module, con.item_group, k=k)(
            positions, args.tail_quota
        )
        kl = CT.miscalibration_at_k(cal.module, lists, positions, cal.category_ids,
                                    cal.n_categories, alpha=0.01, half_life=None, k=k, chunk=512)
        row[f"C_KL@{k}"] = float(kl.mean())
        row[f"NearDup@{k}"] = near_duplicate_rate(final, side.tokens, k)
        row["ms_per_1000_users"] = ms
        finals[name], table[name] = final, row
    return finals, table


def print_rerankers(table: dict, chosen: str, k: int) -> None:
    cols = [f"NDCG@{k}", f"Recall@{k}", f"ILD@{k}", f"NearDup@{k}", f"C_KL@{k}", f"Tail@{k}",
            f"Satisfied@{k}", f"Gini@{k}", "ms_per_1000_users"]
    print(f"\nre-rankers on the same ranked lists (final top {k}; * = the funnel's --rerank):")
    print("  " + " " * 13 + " ".join(f"{c[:12]:>12s}" for c in cols))
    for name, row in table.items():
        mark = "*" if name == chosen else " "
        print(f"  {mark}{name:12s}" + " ".join(f"{row.get(c, float('nan')):12.4f}" for c in cols))
