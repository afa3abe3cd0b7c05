"""The funnel's parts: multi-channel recall with quotas, a feature ranker trained on the serving
distribution, a set-level re-ranker, per-stage metrics, and one request served end to end.

`Classic Models/pipeline_demo.py` wires these together; the stage models themselves are the repo's
`model.py` files, imported from their folders.

Notation: U users, N merged candidates, C recall channels, L history length, I items (+ padding 0).

Tie rules (every stage is deterministic for a fixed seed and thread count):
- channel lists: a higher score first; equal scores go to the more popular item, then the lower id
  (ItemCF's and popularity's many equal scores are broken this way; the neural channels use
  `torch.topk` on float32 scores, where exact ties do not occur in practice);
- merging: candidates are taken in order of rank / quota, equal keys in channel order;
- ranking: a stable sort on the ranker's score, so equal scores keep the merged order;
- re-ranking: DPP's greedy step takes the first of equal gains, i.e. the ranker's order.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from Utils.io import load_model_file

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "Classic Models"


def model_module(stage: str, name: str):
    """`Classic Models/<stage>/<name>/model.py` as a module (folder names hold spaces)."""
    import sys

    key = f"funnel_{stage}_{name}".replace("-", "_")
    return sys.modules.get(key) or load_model_file(MODELS / stage / name / "model.py", key)


# --------------------------------------------------------------------------------------------------
# Item side data
# --------------------------------------------------------------------------------------------------


def attach_titles(data, spec: str) -> None:
    """Beauty-style seqtxt: read `<Name>_item_titles.tsv` (item_id, asin, title) beside the sequence
    file into `data.items['title']` when present (the loader does not read it)."""
    if not spec.startswith("seqtxt:") or "title" in data.items:
        return
    path = Path(spec.split(":", 1)[1])
    tsv = path.with_name(path.stem + "_item_titles.tsv")
    if not tsv.is_file():
        return
    import pandas as pd

    t = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    by_id = dict(zip(t.iloc[:, 0].astype(int), t.iloc[:, 2], strict=False))
    data.items["title"] = [""] + [by_id.get(int(r), "") for r in data.item_raw[1:]]


def _codes(values: list[str]) -> np.ndarray:
    """Strings -> codes 1.. in sorted order ('' -> 0)."""
    uniq = sorted({v for v in values if v})
    index = {v: i + 1 for i, v in enumerate(uniq)}
    return np.array([index.get(v, 0) for v in values], dtype=np.int64)


TOKEN = re.compile(r"[a-z]+")
SIZE_WORDS = {"ml", "oz", "ounce", "ounces", "fl", "fluid", "pack", "count", "g", "gram", "grams"}


def title_tokens(data) -> list[set[str]]:
    """Lower-case word tokens of each title (numbers and size units dropped); [] without titles."""
    if "title" not in data.items:
        return [set() for _ in range(data.n_items + 1)]
    return [set(TOKEN.findall(str(t).lower())) - SIZE_WORDS for t in data.items["title"]]


@dataclass
class ItemSide:
    """Integer item fields the ranker reads, plus features for the re-ranker's similarity."""

    fields: np.ndarray  # (I+1, G) int64: id, category, brand, price bucket (0 = unknown)
    names: list[str]
    category: np.ndarray  # (I+1,) int64
    brand: np.ndarray  # (I+1,)
    price_bucket: np.ndarray  # (I+1,) 0 when the data has no prices
    tokens: list[set[str]]
    similarity: (
        torch.Tensor
    )  # (I+1, F) float: categories + title tokens (what near-duplicates share)


def item_side(data) -> ItemSide:
    """Categories, brands and price buckets where the data has them. Beauty (seqtxt) has no brand
    or price column: its attribute ids stand in for the category and the title's first word for the
    brand (e.g. 'OPI', 'Maybelline')."""
    from Datasets.rerank_lists import category_features, item_categories

    n1 = data.n_items + 1
    category = item_categories(data)
    tokens = title_tokens(data)
    if "brand" in data.items and (data.items["brand"].astype(str).str.len() > 0).any():
        brand = data.item_feature("brand")
    elif "title" in data.items:
        brand = _codes(
            [str(t).split()[0].lower() if str(t).split() else "" for t in data.items["title"]]
        )
    else:
        brand = np.zeros(n1, dtype=np.int64)
    price = (
        data.item_feature("price_bucket") if "price" in data.items else np.zeros(n1, dtype=np.int64)
    )
    cols, names = [np.arange(n1)], ["item"]
    for name, col in (("category", category), ("brand", brand), ("price_bucket", price)):
        if col.max() > 0:
            cols.append(col)
            names.append(name)
    if "attributes" in data.items:  # a second attribute id (Beauty: brand or sub-category ids)
        attrs = data.item_attributes(2)
        if attrs.shape[1] > 1:
            cols.append(attrs[:, 1])
            names.append("attribute2")
    fields = np.stack(cols, axis=1).astype(np.int64)
    fields[0] = 0
    df: dict[str, int] = {}
    for ts in tokens[1:]:
        for tk in ts:
            df[tk] = df.get(tk, 0) + 1
    # words shared by 2+ items, the 2,000 most frequent: (I+1, F) stays small on real catalogues
    common = sorted((t for t, c in df.items() if c >= 2), key=lambda t: (-df[t], t))[:2000]
    vocab = {t: j for j, t in enumerate(sorted(common))}
    tok = torch.zeros(n1, max(1, len(vocab)))
    for i, ts in enumerate(tokens):
        if i and ts:
            tok[i, [vocab[t] for t in ts if t in vocab]] = 1.0
    sim = torch.cat(
        [
            torch.nn.functional.normalize(category_features(data), dim=1),
            torch.nn.functional.normalize(tok, dim=1),
        ],
        dim=1,
    )
    return ItemSide(fields, names, category, brand, price, tokens, sim)


# --------------------------------------------------------------------------------------------------
# Recall channels
# --------------------------------------------------------------------------------------------------


def popularity_key(split) -> np.ndarray:
    """(I+1,) float64 in (0, 1): larger = more popular, then lower id; the tie-break of every
    count-based channel. Row 0 = -inf."""
    counts = split.item_counts().astype(np.float64)
    order = np.lexsort((np.arange(len(counts)), -counts))  # popular first, then lower id
    key = np.empty(len(counts))
    key[order] = 1.0 - (np.arange(len(counts)) + 1.0) / (len(counts) + 1.0)
    key[0] = -np.inf
    return key


def exclude_mask(offsets, items, rows, n1) -> np.ndarray:
    """(b, I+1) bool: True at the items each row has seen (CSR `offsets`, `items`)."""
    mask = np.zeros((len(rows), n1), dtype=bool)
    lens = offsets[rows + 1] - offsets[rows]
    r = np.repeat(np.arange(len(rows)), lens)
    idx = (
        np.concatenate([items[offsets[u] : offsets[u + 1]] for u in rows])
        if len(rows)
        else np.zeros(0, int)
    )
    mask[r, idx] = True
    mask[:, 0] = True
    return mask


def top_n_dense(scores: np.ndarray, n: int) -> np.ndarray:
    """(b, I+1) float64 scores (excluded = -inf) -> (b, n) ids, highest first (ties already broken
    by the caller's key)."""
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    sc = np.take_along_axis(scores, part, 1)
    order = np.argsort(-sc, axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


class ItemCF:
    """Item-to-item co-occurrence (Sarwar et al., WWW 2001; Linden et al., IEEE Internet Computing
    2003): sim(i, j) = co-occurrences within `window` steps of one training sequence, divided by
    sqrt(count_i count_j); a user's score for j = sum over the last `last` history items h of
    decay^age * sim(h, j)."""

    def __init__(self, split, window: int = 3, last: int = 5, decay: float = 0.7):
        o, items = split.train_offsets, split.train_items
        n1 = split.n_items + 1
        user = np.repeat(np.arange(split.n_users), np.diff(o))
        rows, cols, vals = [], [], []
        for d in range(1, window + 1):
            same = user[d:] == user[:-d]
            a, b = items[:-d][same], items[d:][same]
            rows += [a, b]
            cols += [b, a]
            vals += [np.full(len(a), 1.0 / d)] * 2
        co = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n1, n1)
        )
        cnt = np.maximum(split.item_counts().astype(np.float64), 1.0)
        inv = sp.diags(1.0 / np.sqrt(cnt))
        self.sim = (inv @ co @ inv).tocsr()  # (I+1, I+1)
        self.last, self.decay = last, decay
        # directed one-step transitions: a cross feature of the ranker (how often j followed h)
        same = user[1:] == user[:-1]
        self.transitions = sp.csr_matrix(
            (np.ones(int(same.sum())), (items[:-1][same], items[1:][same])), shape=(n1, n1)
        )

    def scores(self, history: np.ndarray) -> np.ndarray:
        """history (b, L) left-padded -> (b, I+1) float64 scores."""
        b, L = history.shape
        h = history[:, -self.last :]
        w = self.decay ** np.arange(h.shape[1] - 1, -1, -1, dtype=np.float64)[None, :].repeat(b, 0)
        w[h == 0] = 0.0
        rows = np.repeat(np.arange(b), h.shape[1])
        q = sp.csr_matrix((w.ravel(), (rows, h.ravel())), shape=(b, self.sim.shape[0]))
        return np.asarray((q @ self.sim).todense())


class CoVisit:
    """Directed co-visitation, the "item-to-item" recall of production systems (Linden et al., 2003;
    YouTube 2010's related videos): w(i -> j) = sum over training sequences of 1/d for each time j
    follows i within `window` steps (d = 1, 2, ...). Unlike ItemCF it is directed (what comes *after*
    i, not what sits beside it) and unnormalised (counts, so popular successors rank first). A user's
    score for j = sum over the last `last` history items h of decay^age * w(h -> j). Counts come from
    the training part only."""

    def __init__(self, split, window: int = 2, last: int = 3, decay: float = 0.5):
        o, items = split.train_offsets, split.train_items
        n1 = split.n_items + 1
        user = np.repeat(np.arange(split.n_users), np.diff(o))
        rows, cols, vals = [], [], []
        for d in range(1, window + 1):
            same = user[d:] == user[:-d]
            rows.append(items[:-d][same])
            cols.append(items[d:][same])
            vals.append(np.full(int(same.sum()), 1.0 / d))
        self.w = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n1, n1)
        )
        self.last, self.decay = last, decay

    def scores(self, history: np.ndarray) -> np.ndarray:
        """history (b, L) left-padded -> (b, I+1) float64 scores."""
        b = len(history)
        h = history[:, -self.last :]
        w = self.decay ** np.arange(h.shape[1] - 1, -1, -1, dtype=np.float64)[None, :].repeat(b, 0)
        w[h == 0] = 0.0
        q = sp.csr_matrix(
            (w.ravel(), (np.repeat(np.arange(b), h.shape[1]), h.ravel())), shape=(b, self.w.shape[0])
        )
        return np.asarray((q @ self.w).todense())


@dataclass
class Channel:
    """One recall channel: `scores(history (b, L)) -> (b, I+1)` (exact) or a faiss index over item
    vectors plus a user tower."""

    name: str
    kind: str  # "dense" (numpy scores with the popularity tie-break) or "faiss"
    score_fn: object = None  # history (b, L) np -> (b, I+1) float64
    user_fn: object = None  # history (b, L) np -> (b, D) float32 (faiss channels)
    index: object = None


def retrieve(
    channel: Channel,
    history: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray],
    rows: np.ndarray,
    n: int,
    pop_key: np.ndarray,
    chunk: int = 512,
) -> np.ndarray:
    """(len(rows), n) item ids from one channel, seen items excluded."""
    out = []
    n1 = len(pop_key)
    for s in range(0, len(rows), chunk):
        r = rows[s : s + chunk]
        h = history[s : s + chunk]
        if channel.kind == "faiss":
            uv = channel.user_fn(h)
            offsets = np.concatenate([[0], np.cumsum(seen[0][r + 1] - seen[0][r])])
            items = np.concatenate([seen[1][seen[0][u] : seen[0][u + 1]] for u in r])
            ids, _ = channel.index.search(uv, n, exclude=(offsets, items))
            if (ids == 0).any():  # ran short after filtering: top up with popular items
                ids = _top_up(ids, pop_key, exclude_mask(seen[0], seen[1], r, n1))
            out.append(ids)
        else:
            sc = channel.score_fn(h).astype(np.float64)
            sc = sc + 1e-9 * pop_key[None, :] * (np.abs(sc).max(1, keepdims=True) + 1.0)
            sc[exclude_mask(seen[0], seen[1], r, n1)] = -np.inf
            out.append(top_n_dense(sc, n))
    return np.concatenate(out)


def _top_up(ids: np.ndarray, pop_key: np.ndarray, seen: np.ndarray) -> np.ndarray:
    ids = ids.copy()
    for r in np.nonzero((ids == 0).any(1))[0]:
        have = set(ids[r][ids[r] > 0])
        fill = [i for i in np.argsort(-pop_key) if i > 0 and i not in have and not seen[r, i]]
        gaps = np.nonzero(ids[r] == 0)[0]
        ids[r, gaps] = fill[: len(gaps)]
    return ids


def merge(lists: list[np.ndarray], quotas: list[float], n: int) -> np.ndarray:
    """Merge C channel lists (each (U, n_c), best first) into (U, n) distinct candidates.

    Channel c's item at rank r gets the key r / quota_c; candidates are taken by increasing key
    (equal keys in channel order), a repeated item keeps its first place, and the first n survive.
    With no overlap channel c fills about quota_c * n places; an item two channels agree on frees a
    place for the next key."""
    U = lists[0].shape[0]
    ids = np.concatenate(lists, axis=1)  # (U, M)
    key = np.concatenate(
        [np.arange(lst.shape[1]) / q for lst, q in zip(lists, quotas, strict=True)]
    )
    order = np.argsort(key, kind="stable")
    ids = ids[:, order]
    # first occurrence of each id per row
    srt = np.argsort(ids, axis=1, kind="stable")
    s_ids = np.take_along_axis(ids, srt, 1)
    dup_sorted = np.zeros_like(s_ids, dtype=bool)
    dup_sorted[:, 1:] = s_ids[:, 1:] == s_ids[:, :-1]
    dup = np.empty_like(dup_sorted)
    np.put_along_axis(dup, srt, dup_sorted, 1)
    keep = ~dup & (ids > 0)
    pos = np.cumsum(keep, axis=1) - 1
    out = np.zeros((U, n), dtype=np.int64)
    rr, cc = np.nonzero(keep & (pos < n))
    out[rr, pos[rr, cc]] = ids[rr, cc]
    return out


def ranks_in(cands: np.ndarray, lst: np.ndarray) -> np.ndarray:
    """(U, N) 1-based rank of each candidate in one channel's list (U, n_c); 0 = not in it."""
    U, n_c = lst.shape
    big = np.int64(lst.max(initial=0) + cands.max(initial=0) + 2)
    keys = (np.arange(U)[:, None] * big + lst).ravel()
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    q = (np.arange(U)[:, None] * big + cands).ravel()
    pos = np.clip(np.searchsorted(sk, q), 0, len(sk) - 1)
    found = sk[pos] == q
    rank = (order[pos] % n_c) + 1
    return np.where(found, rank, 0).reshape(cands.shape)


def channel_stats(
    lists: dict[str, np.ndarray], merged: np.ndarray, targets: np.ndarray, k: int = 10
) -> dict:
    """Each channel's Recall@N and NDCG@k alone, the union's Recall@N (the ceiling), overlaps."""
    out = {}
    for name, lst in lists.items():
        hit = lst == targets[:, None]
        pos = np.where(hit.any(1), hit.argmax(1) + 1, 10**9)
        out[f"{name}/Recall@{lst.shape[1]}"] = float(hit.any(1).mean())
        out[f"{name}/NDCG@{k}"] = float(np.where(pos <= k, 1.0 / np.log2(pos + 1), 0.0).mean())
    out[f"union/Recall@{merged.shape[1]}"] = float((merged == targets[:, None]).any(1).mean())
    names = list(lists)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            A, B = lists[names[a]], lists[names[b]]
            inter = (ranks_in(A, B) > 0).sum(1)
            out[f"overlap/{names[a]}&{names[b]}"] = float((inter / A.shape[1]).mean())
    return out


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
# Metrics
# --------------------------------------------------------------------------------------------------


def ndcg_per_user(lists: np.ndarray, targets: np.ndarray, k: int = 10) -> np.ndarray:
    """(U,) NDCG@k of one held-out target per user (a miss = 0)."""
    hit = lists[:, :k] == targets[:, None]
    pos = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    return np.where(pos > 0, 1.0 / np.log2(np.maximum(pos, 1) + 1.0), 0.0)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of a - b and its standard error (paired over users)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return {
        "diff": float(d.mean()),
        "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0,
    }


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


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# Seeds and the candidate-count figure
# --------------------------------------------------------------------------------------------------


def summarize_seeds(out_path: str | Path, run_paths: list[str | Path]) -> dict:
    """Mean ± sd over seeds (Utils.tools.seed_summary's schema) plus the ranking stage's lift over the
    best single channel per seed, with its mean and standard error over seeds (sd / sqrt(n))."""
    import json

    from Utils.io import write_json_atomic
    from Utils.tools.seed_summary import build

    out_path = Path(out_path)
    summary = build(out_path, [Path(p) for p in run_paths])
    runs = [json.loads(Path(p).read_text()) for p in run_paths]
    diffs = [r["metrics"]["rank/NDCG@10"] - r["metrics"]["recall/NDCG@10"] for r in runs]
    n = len(diffs)
    mean = float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    summary["lift_over_seeds"] = {
        "per_seed": diffs,
        "best_channel": [r["best_channel"] for r in runs],
        "diff": mean,
        "se": se,
        "n": n,
    }
    write_json_atomic(out_path, summary)
    m, sd = summary["metrics"], summary["sd"]
    print(f"{summary['data']}: {n} seeds")
    for key in (
        "recall/Recall@200",
        "recall/NDCG@10",
        "rank/NDCG@10",
        "rerank/NDCG@10",
        "rerank/ILD@10",
    ):
        if key in m:
            print(f"  {key:22s} {m[key]:.4f} ± {sd[key]:.4f}")
    print(
        f"  lift rank - best channel: {mean:+.4f} ± {se:.4f} (se over seeds); per seed "
        + ", ".join(f"{d:+.4f}" for d in diffs)
    )
    return summary


def plot_sweep(result_path: str | Path, png: str | Path) -> Path:
    """The candidate-count trade-off of a run with --sweep-n: ceiling and NDCG@10 against N."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(Path(result_path).read_text())
    sweep = res["sweep"]
    ns = sorted(int(n) for n in sweep)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].plot(ns, [sweep[str(n)]["ceiling"] for n in ns], "o-", color="tab:gray")
    ax[0].set(
        xscale="log", xlabel="N candidates", ylabel="Recall@N of the union", title="recall ceiling"
    )
    for key, label, c in (
        ("rank/NDCG@10", "after ranking", "tab:blue"),
        ("rerank/NDCG@10", "after re-ranking", "tab:orange"),
    ):
        ax[1].plot(ns, [sweep[str(n)][key] for n in ns], "o-", label=label, color=c)
    ax[1].axhline(
        res["metrics"]["recall/NDCG@10"],
        ls="--",
        color="tab:gray",
        label=f"best channel ({res['best_channel']})",
    )
    ax[1].set(xscale="log", xlabel="N candidates", ylabel="NDCG@10", title="final accuracy")
    ax[1].legend(fontsize=8)
    for a in ax:
        a.minorticks_off()
        a.set_xticks(ns)
        a.set_xticklabels([str(n) for n in ns])
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _ms(d: dict, key: str, sd: dict | None = None, f: str = "{:.4f}") -> str:
    v = d.get(key)
    if v is None:
        return ""
    s = sd.get(key) if sd else None
    return f.format(v) + (" ± " + f.format(s) if s is not None and len(sd) else "")


def tables(path: str | Path) -> None:
    """Print the funnel page's Markdown tables from a run or a seed summary json."""
    import json

    r = json.loads(Path(path).read_text())
    m, sd = r["metrics"], r.get("sd", {})
    n = next(k for k in m if k.startswith("recall/Recall@")).split("@")[1]
    seeds = f"{r['n']} seeds, mean ± sd" if "n" in r else "one run"
    print(f"\n{r['data']} ({seeds}); {Path(path).name}\n")
    print(f"| after stage | Recall@{n} | NDCG@10 | Recall@10 | ILD@10 | Coverage@10 | NearDup@10 |")
    print("|---|---|---|---|---|---|---|")
    pm = r["baseline"]["metrics"]
    print(
        f"| popularity (baseline) | {pm[f'Recall@{n}']:.4f} | {pm['NDCG@10']:.4f} | {pm['Recall@10']:.4f} | | | |"
    )
    best = r.get("best_channel") or ", ".join(
        sorted(set(r.get("lift_over_seeds", {}).get("best_channel", [])))
    )
    print(
        f"| recall: best channel alone | | {_ms(m, 'recall/NDCG@10', sd)} | | {_ms(m, 'recall/ILD@10', sd)} "
        f"| {_ms(m, 'recall/Coverage@10', sd)} | {_ms(m, 'recall/NearDup@10', sd)} |"
    )
    print(
        f"| recall: {len(r['channels']) and 'merged'} (union of channels) | {_ms(m, f'recall/Recall@{n}', sd)} "
        f"| {_ms(m, 'recall/merged_NDCG@10', sd)} | | | | |"
    )
    print(
        f"| ranking (DIN) | | {_ms(m, 'rank/NDCG@10', sd)} | {_ms(m, 'rank/Recall@10', sd)} "
        f"| {_ms(m, 'rank/ILD@10', sd)} | {_ms(m, 'rank/Coverage@10', sd)} | {_ms(m, 'rank/NearDup@10', sd)} |"
    )
    print(
        f"| re-ranking (DPP) | | {_ms(m, 'rerank/NDCG@10', sd)} | {_ms(m, 'rerank/Recall@10', sd)} "
        f"| {_ms(m, 'rerank/ILD@10', sd)} | {_ms(m, 'rerank/Coverage@10', sd)} | {_ms(m, 'rerank/NearDup@10', sd)} |"
    )
    print(f"\nbest channel: {best}")
    if "lift_over_seeds" in r:
        lo = r["lift_over_seeds"]
        print(
            f"lift: {lo['diff']:+.4f} ± {lo['se']:.4f} (se over {lo['n']} seeds); per seed "
            + ", ".join(f"{d:+.4f}" for d in lo["per_seed"])
        )
    print(f"lift paired over users: {r['lift']['diff']:+.4f} ± {r['lift']['se']:.4f}")
    ch, chsd = r["channels"], r.get("channels_sd", {})
    print("\n| channel | Recall@" + n + " alone | NDCG@10 alone |\n|---|---|---|")
    for c in [
        k.split("/")[0] for k in ch if k.endswith(f"/Recall@{n}") and not k.startswith("union")
    ]:
        print(f"| {c} | {_ms(ch, f'{c}/Recall@{n}', chsd)} | {_ms(ch, f'{c}/NDCG@10', chsd)} |")
    print(f"| union (merged, quotas) | {_ms(ch, f'union/Recall@{n}', chsd)} | |")
    print(
        "overlaps: "
        + ", ".join(f"{k[8:]} {v:.2f}" for k, v in ch.items() if k.startswith("overlap/"))
    )
    ab, absd = r.get("ablation") or {}, r.get("ablation_sd") or {}
    if ab:
        print(
            "\n| ranker | NDCG@10 | vs best channel (paired over users) | vs default |\n|---|---|---|---|"
        )
        for name, v in ab.items():
            if not isinstance(v, dict):
                continue
            s_ = absd.get(name, {})
            print(
                f"| {name} | {_ms(v, 'NDCG@10', s_)} | {v['vs_best_channel']['diff']:+.4f} ± "
                f"{v['vs_best_channel']['se']:.4f} | {v['vs_default']['diff']:+.4f} ± {v['vs_default']['se']:.4f} |"
            )
        print(f"(ablation on {ab.get('users')} test users)")
    fo = r.get("found") or {}
    if fo:
        print("\nfound:", json.dumps({k: round(v, 4) for k, v in fo.items()}))
    c = r.get("cost") or {}
    print(
        "\ncost ms per 1,000 users:", {k: round(v, 1) for k, v in c.items() if isinstance(v, float)}
    )
    print("timings s:", {k: round(v, 1) for k, v in (r.get("timings") or {}).items()})
    if r.get("serving"):
        print(
            "serving ms:",
            {
                k: (round(v["p50_ms"], 2), round(v["p95_ms"], 2))
                for k, v in r["serving"].items()
                if isinstance(v, dict)
            },
        )
    if r.get("sweep"):
        print(
            "\n| N | ceiling | rank NDCG@10 | final NDCG@10 | ranking ms per 1,000 users |\n|---|---|---|---|---|"
        )
        for k, v in sorted(r["sweep"].items(), key=lambda kv: int(kv[0])):
            print(
                f"| {k} | {v['ceiling']:.4f} | {v['rank/NDCG@10']:.4f} | {v['rerank/NDCG@10']:.4f} "
                f"| {1000 * v['rank_s_per_1000_users']:.0f} |"
            )


def main(argv: list[str] | None = None) -> int:
    """python -m Utils.loops.funnel summarize OUT.json RUN.json ... | tables RESULT.json
    | plot RESULT.json OUT.png"""
    import argparse
    import sys

    p = argparse.ArgumentParser(description="funnel seed summaries and the candidate-count figure")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summarize")
    s.add_argument("out")
    s.add_argument("runs", nargs="+")
    t = sub.add_parser("tables")
    t.add_argument("result")
    f = sub.add_parser("plot")
    f.add_argument("result")
    f.add_argument("png")
    args = p.parse_args(argv)
    try:
        if args.cmd == "summarize":
            summarize_seeds(args.out, args.runs)
        elif args.cmd == "tables":
            tables(args.result)
        else:
            print(plot_sweep(args.result, args.png))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
