"""The ranking stage's baselines (stage 2 of the funnel): what its ranker must beat, a one-line rule,
logistic regression and a gradient-boosted tree ranker, on the same merged candidates, the same
impressions and the same features as DIN.

- **rule**: sort the candidates by the count of training transitions from the user's last item to the
  candidate (no model; equal counts keep the merged order);
- **LR**: logistic regression on DIN's own inputs, one-hot: the candidate's item fields (id, category,
  brand, price bucket, ...) and the history x candidate context codes (`FeatureBuilder.context`);
  what it cannot read is DIN's attention over the history's item fields;
- **GBDT**: scikit-learn's `HistGradientBoostingClassifier` on the same codes (fields of up to 255
  values as categories, context codes as ordered numbers; the item id, with thousands of values, is
  left out: a tree ranker reads an id through its statistics, and the popularity code is one).

Both learners train on DIN's impressions (the merged validation lists, the validation item as the
click, `n_neg` uniformly drawn non-clicks) and pick their one setting (LR's C, GBDT's learning rate)
on the NDCG@10 of the same held-out users DIN stops on. Nothing here reads a test item.

`ranking_baselines` fits the three and scores them on the test users' candidates, each against
DIN paired over users; `print_baselines` prints that comparison.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from .ranking import FeatureBuilder, feature_builder, ranker_data
from .report import ndcg_per_user, paired

LR_C = (0.1, 1.0, 10.0)
GBDT_LR = (0.05, 0.1)


def rule_scores(transitions: sp.csr_matrix, history: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """(b, N) training transition counts last item -> candidate (history left-padded, 0 = pad)."""
    last = history[:, -1]
    rows = np.repeat(np.arange(len(last)), cands.shape[1])
    vals = np.asarray(transitions[last][rows, cands.ravel()]).reshape(cands.shape).astype(np.float64)
    return np.where(cands > 0, vals, -np.inf)


def order_by(cands: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Candidates sorted by score, highest first; equal scores keep the merged order."""
    return np.take_along_axis(cands, np.argsort(-scores, axis=1, kind="stable"), 1)


class TabularRanker:
    """LR or GBDT over a FeatureBuilder's codes; `score(history, cands) -> (b, N)`."""

    def __init__(self, fb: FeatureBuilder, kind: str, setting: float, seed: int = 0):
        if kind not in ("lr", "gbdt"):
            raise ValueError(f"kind must be 'lr' or 'gbdt', got {kind!r}")
        self.fb, self.kind, self.setting, self.seed = fb, kind, setting, seed
        fields = fb.item_fields()
        self.fields = fields
        # GBDT: the fields of < 255 values (column 0, the item id, never), each as a category
        self.cols = (
            [j for j in range(1, fields.shape[1]) if fields[:, j].max() < 255]
            if kind == "gbdt"
            else list(range(fields.shape[1]))
        )
        self.model = None
        self.encoder = None

    def _raw(self, history: np.ndarray, items: np.ndarray, asof=None) -> np.ndarray:
        """(b, P) candidate ids -> (b * P, G + F) integer codes: item fields, then context."""
        ctx = self.fb.context(history, items, None, asof)
        f = self.fields[items][..., self.cols]
        return np.concatenate([f, ctx], axis=-1).reshape(-1, f.shape[-1] + ctx.shape[-1])

    def fit(self, imps: dict) -> TabularRanker:
        h, items = imps["history"], imps["items"]
        x = self._raw(h, items, imps.get("asof"))
        y = np.tile(np.r_[1, np.zeros(items.shape[1] - 1, dtype=int)], len(items))
        if self.kind == "lr":
            from sklearn.linear_model import LogisticRegression
            from sklearn.preprocessing import OneHotEncoder

            self.encoder = OneHotEncoder(handle_unknown="ignore").fit(x)
            self.model = LogisticRegression(C=self.setting, max_iter=500)
            self.model.fit(self.encoder.transform(x), y)
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            cat = np.zeros(x.shape[1], dtype=bool)
            cat[: len(self.cols)] = True  # item fields are categories, context codes are ordered
            self.model = HistGradientBoostingClassifier(
                learning_rate=self.setting, max_iter=300, categorical_features=cat,
                early_stopping=True, validation_fraction=0.1, n_iter_no_change=20,
                random_state=self.seed,
            )
            self.model.fit(x, y)
        return self

    def score(self, history: np.ndarray, cands: np.ndarray, chunk: int = 512) -> np.ndarray:
        out = []
        for s in range(0, len(cands), chunk):
            x = self._raw(history[s : s + chunk], cands[s : s + chunk])
            x = self.encoder.transform(x) if self.kind == "lr" else x
            p = self.model.decision_function(x) if self.kind == "lr" else self.model.predict_proba(x)[:, 1]
            out.append(p.reshape(-1, cands.shape[1]))
        sc = np.concatenate(out) if out else np.zeros(cands.shape)
        return np.where(cands > 0, sc, -np.inf)


def fit_tabular(kind: str, fb: FeatureBuilder, imps: dict, held_hist: np.ndarray,
                held_cands: np.ndarray, held_targets: np.ndarray, seed: int = 0
                ) -> tuple[TabularRanker, dict]:
    """Fit `kind` for each of its settings and keep the one with the best held-out NDCG@10 (the
    validation items of users no impression came from). Returns (ranker, {setting: NDCG@10})."""
    tried, best = {}, None
    for setting in LR_C if kind == "lr" else GBDT_LR:
        r = TabularRanker(fb, kind, setting, seed).fit(imps)
        nd = float(ndcg_per_user(order_by(held_cands, r.score(held_hist, held_cands)), held_targets).mean())
        tried[setting] = nd
        if best is None or nd > tried[best.setting]:
            best = r
    return best, tried


def ranking_baselines(args, side, split, models, valid, early, hist, cands, rank_ndcg, targets):
    """The rule, LR and GBDT on the test users' merged candidates, each against DIN paired over
    users: {name: {NDCG@k, din_minus (diff, se), ...}} and their ordered lists."""
    v_hist, _, v_cands, v_ranks, _ = valid
    imps, ev = ranker_data(args, split, valid, early)
    fb = feature_builder(side, split, models, v_ranks.shape[-1])
    out, lists = {}, {}
    t0 = time.perf_counter()
    lists["rule"] = order_by(cands, rule_scores(models["itemcf"].transitions, hist, cands))
    out["rule"] = {"seconds": time.perf_counter() - t0}
    for kind in ("lr", "gbdt"):
        t0 = time.perf_counter()
        r, tried = fit_tabular(
            kind, fb, imps, v_hist[ev], v_cands[ev], split.valid_items[ev], seed=args.seed
        )
        lists[kind] = order_by(cands, r.score(hist, cands))
        out[kind] = {
            "seconds": time.perf_counter() - t0,
            "setting": r.setting,
            "valid_NDCG@10_by_setting": {str(k): v for k, v in tried.items()},
        }
    for name, lst in lists.items():
        nd = ndcg_per_user(lst, targets, args.k)
        d = paired(rank_ndcg, nd)
        out[name].update(
            {
                f"NDCG@{args.k}": float(nd.mean()),
                "din_minus": d,
                "din_wins": bool(d["diff"] > 2 * d["se"]),
            }
        )
    return out, lists


def print_baselines(baselines: dict, rank_ndcg: np.ndarray, k: int) -> None:
    """`ranking_baselines`' comparison, one line per baseline."""
    print(f"ranking baselines on the same candidates (DIN {rank_ndcg.mean():.4f}; DIN minus "
          "baseline, paired over users):")
    for name, b in baselines.items():
        d = b["din_minus"]
        print(
            f"  {name:5s} NDCG@{k} {b[f'NDCG@{k}']:.4f}   DIN {d['diff']:+.4f} ± {d['se']:.4f}"
            f"   {'DIN wins (> 2 se)' if b['din_wins'] else 'DIN does NOT win by 2 se'}"
        )
