"""Stage 2 of the funnel, ranking: DIN orders the merged candidates, trained on the serving
distribution.

Impressions (`impressions`, `ranker_data`) come from the merged candidate lists of each user's
validation step, plus, with `--rank-steps`, earlier training steps (`earlier_steps`,
`earlier_stage`) whose count features are taken as of the step (`as_of_counts`). `FeatureBuilder`
turns a (history, candidate) pair into DIN's context codes, `Ranker` wraps DIN
(`Ranking/DIN/model.py`), `train_ranker` / `fit_ranker` train it with early stopping on held-out
users, `rank_lists` orders the candidates and `rank_ablation` retrains it with and without feature
groups.

Tie rule: a stable sort on the ranker's score, so equal scores keep the merged order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from .items import ItemSide
from .recall import merge, model_module, retrieve
from .report import ndcg_per_user, paired

# --------------------------------------------------------------------------------------------------
# Ranker features
# --------------------------------------------------------------------------------------------------


RANK_BUCKETS = 12  # recall-rank buckets 1 + floor(log2 rank), 0 = not retrieved


def log_bucket(x: np.ndarray, cap: int) -> np.ndarray:
    """0 -> 0, x >= 1 -> 1 + floor(log2 x), capped at cap."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 1, np.minimum(1 + np.floor(np.log2(np.maximum(x, 1))), cap), 0).astype(
        np.int64
    )


@dataclass
class FeatureBuilder:
    """Context fields of a (user, candidate) pair for DIN, all small integer codes:

    history x item (cross) features -- same_category / same_brand: how many of the last L
    behaviours share the candidate's category / brand; price_gap: the candidate's price bucket minus
    the median of the history's (data with prices); follows_last: log count of training
    transitions last item -> candidate; same_category_as_last;
    user / item features -- history_length (log bucket), popularity (log bucket of training count);
    recall features (only with `recall_features`): the candidate's rank bucket in each channel.
    `drop` removes named groups for the ablation ('side' = brand/price fields and their crosses).
    """

    side: ItemSide
    item_counts: np.ndarray
    transitions: sp.csr_matrix
    L: int = 20
    recall_features: bool = False
    n_channels: int = 0
    drop: tuple[str, ...] = ()
    names: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def __post_init__(self):
        specs = [
            ("same_category", 7),
            ("same_brand", 6),
            ("price_gap", 10),
            ("follows_last", 8),
            ("same_category_as_last", 3),
            ("history_length", 8),
            ("popularity", 16),
        ]
        if self.side.price_bucket.max() == 0:
            specs = [s for s in specs if s[0] != "price_gap"]
        if self.side.brand.max() == 0:
            specs = [s for s in specs if s[0] != "same_brand"]
        if "side" in self.drop:
            specs = [s for s in specs if s[0] not in ("same_brand", "price_gap")]
        if "cooccurrence" in self.drop:
            specs = [s for s in specs if s[0] != "follows_last"]
        if self.recall_features:
            specs += [(f"rank_{c}", RANK_BUCKETS) for c in range(self.n_channels)]
        self.names = [s[0] for s in specs]
        self.sizes = [s[1] for s in specs]
        keep = [
            j
            for j, nm in enumerate(self.side.names)
            if not ("side" in self.drop and nm in ("brand", "price_bucket"))
        ]
        self.item_cols = keep

    def item_fields(self) -> np.ndarray:
        return self.side.fields[:, self.item_cols]

    def context(
        self,
        history: np.ndarray,
        cands: np.ndarray,
        channel_ranks: np.ndarray | None = None,
        asof: tuple[sp.csr_matrix, sp.csr_matrix] | None = None,
    ) -> np.ndarray:
        """history (b, L0) left-padded, cands (b, N) -> (b, N, F) int64 codes.

        `asof` = (later_transitions, later_counts), (b, I+1) each (`as_of_counts`): for an impression
        cut from inside a training sequence, the part of the training counts that lies at or after its
        target, subtracted so that the count features read only what was known at that step."""
        h = history[:, -self.L :]
        real = h > 0
        cat, brand, price = self.side.category, self.side.brand, self.side.price_bucket
        feats = {}
        hc, cc = cat[h], cat[cands]
        feats["same_category"] = np.minimum(
            ((hc[:, None, :] == cc[:, :, None]) & real[:, None, :] & (cc[:, :, None] > 0)).sum(-1),
            6,
        )
        if "same_brand" in self.names:
            hb, cb = brand[h], brand[cands]
            feats["same_brand"] = np.minimum(
                ((hb[:, None, :] == cb[:, :, None]) & real[:, None, :] & (cb[:, :, None] > 0)).sum(
                    -1
                ),
                5,
            )
        if "price_gap" in self.names:
            hp = np.where(real, price[h], 0).astype(np.float64)
            hp[hp == 0] = np.nan
            with np.errstate(all="ignore"):
                med = np.nanmedian(hp, axis=1)  # (b,) NaN when no priced behaviour
            cp = price[cands]
            gap = np.clip(np.round(cp - med[:, None]), -4, 4) + 5
            feats["price_gap"] = np.where(np.isnan(gap) | (cp == 0), 0, gap).astype(np.int64)
        if "follows_last" in self.names:
            last = h[:, -1]
            tr = self.transitions[last]  # (b, I+1) sparse
            rows = np.repeat(np.arange(len(last)), cands.shape[1])
            vals = np.asarray(tr[rows, cands.ravel()]).reshape(cands.shape)
            if asof is not None:
                vals = vals - np.asarray(asof[0][rows, cands.ravel()]).reshape(cands.shape)
            feats["follows_last"] = log_bucket(vals, 7)
        lc = cat[h[:, -1]]
        feats["same_category_as_last"] = np.where(
            (lc[:, None] > 0) & (cc > 0), 1 + (lc[:, None] == cc), 0
        )
        feats["history_length"] = np.repeat(log_bucket(real.sum(1), 7)[:, None], cands.shape[1], 1)
        counts = self.item_counts[cands]
        if asof is not None:
            rows = np.repeat(np.arange(len(cands)), cands.shape[1])
            counts = counts - np.asarray(asof[1][rows, cands.ravel()]).reshape(cands.shape)
        feats["popularity"] = log_bucket(counts, 15)
        if self.recall_features:
            for c in range(self.n_channels):
                feats[f"rank_{c}"] = log_bucket(channel_ranks[..., c], RANK_BUCKETS - 1)
        return np.stack([feats[n] for n in self.names], axis=-1).astype(np.int64)


class Ranker:
    """DIN (Ranking/DIN/model.py) over item fields + context fields; `score` returns (b, N)."""

    def __init__(self, fb: FeatureBuilder, dim: int = 16, seed: int = 0):
        mod = model_module("Ranking", "DIN")
        torch.manual_seed(seed)
        fields = fb.item_fields()
        self.fb = fb
        self.fields = torch.from_numpy(fields)
        self.model = mod.DIN(
            item_vocab_sizes=tuple(int(fields[:, g].max()) + 1 for g in range(fields.shape[1])),
            context_vocab_sizes=tuple(fb.sizes),
            dim=dim,
        )

    def logits(
        self, history: torch.Tensor, target: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """history (b, L) ids, target (b,) ids, context (b, F) codes -> (b,) logits."""
        return self.model(self.fields[target], self.fields[history[:, -self.fb.L :]], context)

    @torch.no_grad()
    def score(
        self,
        history: np.ndarray,
        cands: np.ndarray,
        channel_ranks: np.ndarray | None = None,
        chunk: int = 256,
    ) -> np.ndarray:
        self.model.eval()
        out = []
        for s in range(0, len(cands), chunk):
            h, c = history[s : s + chunk], cands[s : s + chunk]
            cr = None if channel_ranks is None else channel_ranks[s : s + chunk]
            ctx = self.fb.context(h, c, cr)
            b, n = c.shape
            hh = torch.from_numpy(h[:, -self.fb.L :]).repeat_interleave(n, 0)
            lg = self.logits(
                hh, torch.from_numpy(c.reshape(-1)), torch.from_numpy(ctx.reshape(b * n, -1))
            )
            out.append(lg.reshape(b, n).numpy())
        sc = np.concatenate(out) if out else np.zeros(cands.shape, np.float32)
        return np.where(cands > 0, sc, -np.inf)


def impressions(
    history: np.ndarray,
    cands: np.ndarray,
    targets: np.ndarray,
    n_neg: int,
    seed: int,
    channel_ranks: np.ndarray | None = None,
) -> dict:
    """Training impressions from merged candidate lists: the target (when retrieved) is the click,
    `n_neg` other candidates drawn uniformly from the list are the non-clicks. Rows with a missed
    target are dropped: a ranker never sees them."""
    rng = np.random.default_rng(seed)
    hit = cands == targets[:, None]
    keep = hit.any(1)
    c, h, t = cands[keep], history[keep], targets[keep]
    key = rng.random(c.shape)
    key[c == t[:, None]] = 2.0
    key[c == 0] = 3.0
    neg_pos = np.argsort(key, axis=1)[:, :n_neg]
    items = np.concatenate([t[:, None], np.take_along_axis(c, neg_pos, 1)], axis=1)  # (S, 1+n_neg)
    out = {"rows": np.nonzero(keep)[0], "history": h, "items": items}
    if channel_ranks is not None:
        cr = channel_ranks[keep]
        pos_idx = np.concatenate([(c == t[:, None]).argmax(1)[:, None], neg_pos], axis=1)
        out["channel_ranks"] = np.take_along_axis(cr, pos_idx[..., None], 1)
    return out


def earlier_steps(split, max_len: int, steps: int) -> dict:
    """The last `steps` training targets of every user (positions with at least one item before
    them), as ranking steps: history (R, max_len) left-padded, target (R,), the user row (R,), the
    prefix's seen items as CSR (offsets (R+1,), items) and `as_of_counts`."""
    o, items = split.train_offsets, split.train_items
    lens = np.diff(o)
    idx = np.arange(len(items))
    pos = idx - np.repeat(o[:-1], lens)
    from_end = np.repeat(o[1:], lens) - idx  # 1 at each user's last training item
    g = np.nonzero((pos >= 1) & (from_end <= steps))[0]
    b = split.next_item_batch(g, max_len)
    row = b["row"].numpy()
    starts = o[row]
    n_seen = g - starts
    seen_off = np.concatenate([[0], np.cumsum(n_seen)]).astype(np.int64)
    seen_items = items[_ranges(starts, n_seen)]
    return {
        "history": b["history"].numpy(),
        "target": items[g],
        "row": row,
        "seen": (seen_off, seen_items),
        "asof": as_of_counts(split, g, row),
    }


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated arange(starts[i], starts[i] + lens[i]) for every i, without a Python loop."""
    lens = np.asarray(lens, dtype=np.int64)
    first = np.cumsum(lens) - lens
    return np.arange(int(lens.sum())) - np.repeat(first, lens) + np.repeat(starts, lens)


def as_of_counts(split, g: np.ndarray, row: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """For ranking steps cut at training positions g (the target's index in `train_items`) of users
    `row`: (later_transitions, later_counts), (R, I+1) sparse each. later_transitions[r, j] = how many
    of the training transitions last_item -> j of that user happen at or after the step (the step's
    own transition included); later_counts[r, j] = how many times j occurs in that user's training
    sequence at or after the step. Subtracted from the training counts, they leave what was known
    when the step happened, as at serving time."""
    items = split.train_items
    n1 = split.n_items + 1
    end = split.train_offsets[row + 1]
    R = len(g)
    # transitions (s, s+1) for s = g-1 .. end-2 whose source is the step's last item a[g-1]
    n = end - g
    s = _ranges(g - 1, n)
    r = np.repeat(np.arange(R), n)
    hit = items[s] == np.repeat(items[g - 1], n)
    trans = sp.csr_matrix((np.ones(int(hit.sum())), (r[hit], items[s[hit] + 1])), shape=(R, n1))
    s2 = _ranges(g, n)
    counts = sp.csr_matrix((np.ones(len(s2)), (r, items[s2])), shape=(R, n1))
    return trans, counts


def stack_impressions(parts: list[dict]) -> dict:
    """Impressions of several steps as one set (rows renumbered; `asof` zero where a part has none)."""
    n1 = next((p["asof"][0].shape[1] for p in parts if "asof" in p), None)
    out = {
        "history": np.concatenate([p["history"] for p in parts]),
        "items": np.concatenate([p["items"] for p in parts]),
    }
    if n1 is not None:
        zeros = [sp.csr_matrix((len(p["items"]), n1)) for p in parts]
        out["asof"] = tuple(
            sp.vstack([p["asof"][j] if "asof" in p else zeros[i] for i, p in enumerate(parts)]).tocsr()
            for j in range(2)
        )
    return out


def train_ranker(
    ranker: Ranker,
    imps: dict,
    eval_fn,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    patience: int = 2,
    progress: bool = False,
):
    """BCE (DIN's Eq. 2) on the impressions; early stopping on `eval_fn()` (held-out NDCG@10)."""
    from Utils.training import fit

    h, items = imps["history"], imps["items"]
    S, P = items.shape
    ctx = ranker.fb.context(h, items, imps.get("channel_ranks"), imps.get("asof"))  # (S, P, F)
    data = {
        "history": torch.from_numpy(np.repeat(h[:, -ranker.fb.L :], P, axis=0)),
        "target": torch.from_numpy(items.reshape(-1)),
        "context": torch.from_numpy(ctx.reshape(S * P, -1)),
        "label": torch.from_numpy(np.tile(np.r_[1.0, np.zeros(P - 1)], S).astype(np.float32)),
    }
    from Datasets import TensorDictDataset

    ds = TensorDictDataset(data)
    opt = torch.optim.Adam(ranker.model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)

    def step(b):
        return ranker.model.loss(ranker.logits(b["history"], b["target"], b["context"]), b["label"])

    drop = len(ds) > batch_size
    return fit(
        ranker.model,
        step,
        lambda e: ds.batches(batch_size, generator=g, drop_last=drop),
        opt,
        epochs,
        eval_fn,
        metric="NDCG@10",
        patience=patience,
        progress=progress,
        desc="rank/din",
        n_batches=ds.num_batches(batch_size, drop_last=drop),
    )


# --------------------------------------------------------------------------------------------------
# The demo's ranking stage: data, training, ranked lists, ablation
# --------------------------------------------------------------------------------------------------


def earlier_stage(args, channels, split, pop_key):
    """The merged candidates of each user's last `--rank-steps` training steps (prefix histories):
    more impressions for the ranker. The recall models trained on these steps, so their lists are
    in-sample (easier than at serving); the ranker reads no recall rank or score by default, only
    which items were retrieved, and its count features are taken as of each step."""
    st = earlier_steps(split, args.max_len, args.rank_steps)
    rows = np.arange(len(st["target"]))
    lists = [
        retrieve(ch, st["history"], st["seen"], rows, args.n_candidates, pop_key)
        for ch in channels.values()
    ]
    st["cands"] = merge(lists, args.quota_list, args.n_candidates)
    return st


def ranker_data(args, split, valid, early=None, recall_features=False):
    """The rankers' training impressions and the held-out users they stop on: the merged validation
    lists of 90% of the users (the validation item is the click) plus, with `early` and without
    recall features, the same users' earlier training steps. Every ranker (DIN and its baselines)
    trains and chooses on exactly these; the held-out 10% give none."""
    v_hist, _, v_cands, v_ranks, _ = valid
    held = np.random.default_rng(args.seed).random(split.n_users) < 0.1  # users for early stopping
    targets = split.valid_items
    train_rows = np.nonzero(~held)[0]
    imps = impressions(
        v_hist[train_rows],
        v_cands[train_rows],
        targets[train_rows],
        args.rank_negatives,
        args.seed,
        v_ranks[train_rows] if recall_features else None,
    )
    if early is not None and not recall_features:
        mine = ~held[early["row"]]
        e = impressions(
            early["history"][mine], early["cands"][mine], early["target"][mine],
            args.rank_negatives, args.seed + 1,
        )
        rows = np.nonzero(mine)[0][e["rows"]]
        e["asof"] = tuple(m[rows] for m in early["asof"])
        imps = stack_impressions([imps, e])
    return imps, np.nonzero(held)[0][:1000]


def feature_builder(side, split, models, n_channels, recall_features=False, drop=()):
    return FeatureBuilder(
        side=side,
        item_counts=split.item_counts(),
        transitions=models["itemcf"].transitions,
        recall_features=recall_features,
        n_channels=n_channels,
        drop=drop,
    )


def fit_ranker(args, side, split, models, valid, early=None, recall_features=False, drop=()):
    v_hist, _, v_cands, v_ranks, _ = valid
    fb = feature_builder(side, split, models, v_ranks.shape[-1], recall_features, drop)
    ranker = Ranker(fb, seed=args.seed)
    targets = split.valid_items
    imps, ev = ranker_data(args, split, valid, early, recall_features)

    def evaluate():
        sc = ranker.score(v_hist[ev], v_cands[ev], v_ranks[ev] if recall_features else None)
        order = np.argsort(-sc, axis=1, kind="stable")
        return {
            "NDCG@10": float(
                ndcg_per_user(np.take_along_axis(v_cands[ev], order, 1), targets[ev]).mean()
            )
        }

    hist = train_ranker(
        ranker,
        imps,
        evaluate,
        epochs=args.rank_epochs,
        lr=args.rank_lr,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
    )
    return ranker, hist, len(imps["items"])


def rank_lists(ranker, hist, cands, ranks):
    scores = ranker.score(hist, cands, ranks if ranker.fb.recall_features else None)
    order = np.argsort(-scores, axis=1, kind="stable")  # ties keep the merged order
    return np.take_along_axis(cands, order, 1), np.take_along_axis(scores, order, 1)


def rank_ablation(
    args, side, split, models, valid, early, hist, cands, cranks, targets, rank_ndcg, best_ndcg,
    rank_valid,
):
    """Rankers trained with / without recall ranks and without feature groups, each scored on the
    same test users (`--ablation-users` of them, or all) against the best channel (`best_ndcg`, its
    per-user NDCG@k) and the default ranker (`rank_ndcg`), paired over users. What decides a feature
    group is each variant's validation NDCG@10 on the held-out users (`rank_valid` for the default)."""
    variants = {
        "default": (args.recall_features, ()),
        "with recall ranks": (True, ()),
        "without recall ranks": (False, ()),
        "without brand/price": (args.recall_features, ("side",)),
        "without co-occurrence": (args.recall_features, ("cooccurrence",)),
    }
    U = split.n_users
    sub = np.arange(U)
    if 0 < args.ablation_users < U:  # a random subset of test users, the same for every variant
        sub = np.sort(
            np.random.default_rng(args.seed).choice(U, args.ablation_users, replace=False)
        )
    ablation = {"users": len(sub)}
    for vname, (rf, drop) in variants.items():
        if vname == "default" or (rf == args.recall_features and not drop):
            nd, v_nd = rank_ndcg[sub], rank_valid
        else:
            r2, h2, _ = fit_ranker(
                args, side, split, models, valid, early, recall_features=rf, drop=drop
            )
            nd = ndcg_per_user(
                rank_lists(r2, hist[sub], cands[sub], cranks[sub])[0], targets[sub], args.k
            )
            v_nd = h2.best_metric
        ablation[vname] = {
            "valid_NDCG@10": float(v_nd),
            f"NDCG@{args.k}": float(nd.mean()),
            "vs_best_channel": paired(nd, best_ndcg[sub]),
            "vs_default": paired(nd, rank_ndcg[sub]),
        }
        print(f"  ablation {vname:24s} validation NDCG@10 {v_nd:.4f}   test NDCG@{args.k} {nd.mean():.4f}")
    return ablation
