"""Stage 1 of the funnel, recall: the channels and their merge into N candidates.

Every channel retrieves from the whole catalogue, seen items excluded (`retrieve`): SASRec (exact
top-N over its item vectors), YoutubeDNN (its item tower in a faiss index), ItemCF (item-to-item
co-occurrence), CoVisit (directed co-visitation counts) and popularity. `merge` takes N distinct
candidates from their lists with per-channel quotas; `channel_stats` and `compare_channels` measure
each channel alone, the union and the merged order. `build_channels` trains the neural channels
(early stopping on validation NDCG@10) and builds the others; `recall_stage` runs every channel for
every user at one step. `model_module` loads a stage model's `model.py` from its folder (the ranking
and re-ranking stages load theirs through it too).

Tie rules:
- channel lists: a higher score first; equal scores go to the more popular item, then the lower id
  (ItemCF's and popularity's many equal scores are broken this way; the neural channels use
  `torch.topk` on float32 scores, where exact ties do not occur in practice);
- merging: candidates are taken in order of rank / quota, equal keys in channel order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

import Datasets
from Utils.io import load_model_file
from Utils.retrieval import FaissIndex
from Utils.training import fit

from .report import ndcg_per_user, timed

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "Classic Models"


def model_module(stage: str, name: str):
    """`Classic Models/<stage>/<name>/model.py` as a module (folder names hold spaces)."""
    import sys

    key = f"funnel_{stage}_{name}".replace("-", "_")
    return sys.modules.get(key) or load_model_file(MODELS / stage / name / "model.py", key)


CHANNELS = ("sasrec", "youtubednn", "itemcf", "covisit", "popular")  # what build_channels builds


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


def directed_pairs(split, window: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(earlier items, later items, 1/d) for d = 1..window: every pair of one training sequence d steps
    apart, the earlier item first."""
    o, items = split.train_offsets, split.train_items
    user = np.repeat(np.arange(split.n_users), np.diff(o))
    out = []
    for d in range(1, window + 1):
        same = user[d:] == user[:-d]
        out.append((items[:-d][same], items[d:][same], 1.0 / d))
    return out


def decayed_query(history: np.ndarray, last: int, decay: float, n1: int) -> sp.csr_matrix:
    """(b, I+1) sparse weights of each row's last `last` history items: decay^age (0 at padding)."""
    b = len(history)
    h = history[:, -last:]
    w = decay ** np.arange(h.shape[1] - 1, -1, -1, dtype=np.float64)[None, :].repeat(b, 0)
    w[h == 0] = 0.0
    rows = np.repeat(np.arange(b), h.shape[1])
    return sp.csr_matrix((w.ravel(), (rows, h.ravel())), shape=(b, n1))


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
        for a, b, wd in directed_pairs(split, window):  # both directions: co-occurrence is symmetric
            rows += [a, b]
            cols += [b, a]
            vals += [np.full(len(a), wd)] * 2
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
        q = decayed_query(history, self.last, self.decay, self.sim.shape[0])
        return np.asarray((q @ self.sim).todense())


class CoVisit:
    """Directed co-visitation, the "item-to-item" recall of production systems (Linden et al., 2003;
    YouTube 2010's related videos): w(i -> j) = sum over training sequences of 1/d for each time j
    follows i within `window` steps (d = 1, 2, ...). Unlike ItemCF it is directed (what comes *after*
    i, not what sits beside it) and unnormalised (counts, so popular successors rank first). A user's
    score for j = sum over the last `last` history items h of decay^age * w(h -> j). Counts come from
    the training part only."""

    def __init__(self, split, window: int = 2, last: int = 3, decay: float = 0.5):
        n1 = split.n_items + 1
        pairs = directed_pairs(split, window)
        self.w = sp.csr_matrix(
            (
                np.concatenate([np.full(len(a), wd) for a, _, wd in pairs]),
                (np.concatenate([a for a, _, _ in pairs]), np.concatenate([b for _, b, _ in pairs])),
            ),
            shape=(n1, n1),
        )
        self.last, self.decay = last, decay

    def scores(self, history: np.ndarray) -> np.ndarray:
        """history (b, L) left-padded -> (b, I+1) float64 scores."""
        q = decayed_query(history, self.last, self.decay, self.w.shape[0])
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
# The demo's recall stage: train the channels, retrieve, compare
# --------------------------------------------------------------------------------------------------


def train_sasrec(args, split):
    mod = model_module("Recall", "SASRec")
    L = args.max_len
    # sampled softmax over 256 shared negatives: the full softmax costs 50x more per step on
    # Beauty's 12,101 items, and SASRec+SS is the strongest published SASRec on this split
    model = mod.SASRec(
        mod.SASRecConfig(
            n_items=split.n_items,
            max_len=L,
            dim=args.dim,
            n_blocks=2,
            n_heads=2,
            dropout=0.2,
            loss="sampled_ce",
            n_negatives=256,
        )
    )
    data = Datasets.TensorDictDataset({"seq": torch.from_numpy(split.train_sequences(L))})

    def step(b):
        return model.loss(b["seq"][:, :-1], b["seq"][:, 1:])

    def user_vec(h):
        return model.user_embedding(h[:, -L:])

    return model, step, data, user_vec, model.item_embeddings


def train_youtubednn(args, split):
    mod = model_module("Recall", "YoutubeDNN")
    model = mod.YoutubeDNN(
        config=mod.YoutubeDNNConfig(n_items=split.n_items, dim=args.dim, use_example_age=False)
    )
    data = Datasets.RecallDataset(split, max_len=args.max_len, max_per_user=50, seed=args.seed)
    counts = torch.from_numpy(split.item_counts()).double() + 1.0
    counts[0] = 0.0
    q = (counts / counts.sum()).float()  # sampling distribution Q (popularity)
    n_neg = 512

    def step(b):
        neg = torch.multinomial(q, n_neg, replacement=True)  # (M,) shared by the batch
        t = b["target"]
        u = model.user_tower(history=b["history"])
        return model.loss(
            user_vec=u,
            target=t,
            negatives=neg,
            log_q_target=torch.log(q[t] * n_neg),
            log_q_negatives=torch.log(q[neg] * n_neg),
        )

    def user_vec(h):
        return model.user_tower(history=h)

    return model, step, data, user_vec, model.item_tower


def build_channels(args, split, pop_key):
    """Train the neural channels (early stopping on validation NDCG@10) and build the others."""
    from Utils.evaluation import evaluate_full_ranking

    channels, models, timings, epochs = {}, {}, {}, {}
    for name in args.channel_list:
        t0 = time.perf_counter()
        if name in ("sasrec", "youtubednn"):
            model, step, data, user_vec, item_vecs = (
                train_sasrec if name == "sasrec" else train_youtubednn
            )(args, split)
            opt = torch.optim.Adam(model.parameters(), lr=args.lr)
            g = torch.Generator().manual_seed(args.seed)

            def evaluate(model=model, user_vec=user_vec, item_vecs=item_vecs):
                with torch.no_grad():
                    iv = item_vecs()
                    return evaluate_full_ranking(
                        lambda b: user_vec(b["history"]) @ iv.T,
                        split,
                        "valid",
                        max_len=args.max_len,
                        ks=(10,),
                    )

            hist = fit(
                model,
                step,
                lambda e, data=data, g=g: data.batches(args.batch_size, generator=g),
                opt,
                args.epochs,
                evaluate,
                metric="NDCG@10",
                patience=args.patience,
                progress=not args.quiet,
                desc=f"recall/{name}",
                n_batches=data.num_batches(args.batch_size),
                time_budget=args.time_budget,
            )
            model.eval()
            epochs[name] = len(hist.epochs)
            models[name] = model
            with torch.no_grad():
                iv = item_vecs().detach().clone()
            if name == "sasrec":

                def score_fn(h, user_vec=user_vec, iv=iv):
                    with torch.no_grad():
                        return (user_vec(torch.from_numpy(h)) @ iv.T).numpy()

                channels[name] = Channel(name, "dense", score_fn=score_fn)
            else:

                def user_fn(h, user_vec=user_vec):
                    with torch.no_grad():
                        return user_vec(torch.from_numpy(h)).numpy()

                channels[name] = Channel(
                    name,
                    "faiss",
                    user_fn=user_fn,
                    index=FaissIndex(iv, kind=args.index, threads=args.threads),
                )
        elif name == "itemcf":
            icf = ItemCF(split)
            channels[name] = Channel(name, "dense", score_fn=icf.scores)
            models[name] = icf
        elif name == "covisit":
            cv = CoVisit(split)
            channels[name] = Channel(name, "dense", score_fn=cv.scores)
            models[name] = cv
        else:
            channels[name] = Channel(
                name, "dense", score_fn=lambda h: np.zeros((len(h), len(pop_key)))
            )
        timings[f"train_{name}_s"] = time.perf_counter() - t0
    if "itemcf" not in models:
        models["itemcf"] = ItemCF(split)  # its transition counts are a ranker feature
    return channels, models, timings, epochs


def recall_stage(args, channels, split, stage, pop_key, n):
    """Every channel's top n for every user at `stage`, and the merged n candidates."""
    hist, _ = split.history(stage, args.max_len)
    seen = split.seen(stage)
    rows = np.arange(split.n_users)
    lists, secs = {}, {}
    for name, ch in channels.items():
        lists[name], secs[name] = timed(retrieve, ch, hist, seen, rows, n, pop_key)
    merged, secs["merge"] = timed(merge, [lists[c] for c in channels], args.quota_list, n)
    ranks = np.stack([ranks_in(merged, lists[c]) for c in channels], axis=-1)  # (U, N, C)
    return hist, lists, merged, ranks, secs


def compare_channels(args, lists, cands, targets, valid_lists, valid_targets):
    """Each channel alone and the merged candidates on the test items, and the best single channel,
    chosen on the validation step (never on test); prints the comparison. Returns (channel_stats,
    {channel: per-user NDCG@k}, {channel: validation NDCG@k}, the best channel, the merged order's
    per-user NDCG@k)."""
    stats = channel_stats(lists, cands, targets, args.k)
    ch_ndcg = {c: ndcg_per_user(lists[c], targets, args.k) for c in lists}
    # the best single channel is chosen on the validation step, never on test
    valid_ndcg = {
        c: float(ndcg_per_user(valid_lists[c], valid_targets, args.k).mean()) for c in lists
    }
    best = max(valid_ndcg, key=valid_ndcg.get)
    merged_ndcg = ndcg_per_user(cands, targets, args.k)
    print("\nrecall channels (test):")
    for key, v in stats.items():
        print(f"  {key:32s} {v:.4f}")
    print(
        f"  merged order NDCG@{args.k}            {merged_ndcg.mean():.4f}   best channel: {best} "
        f"(chosen on validation NDCG@{args.k}: "
        + ", ".join(f"{c} {v:.4f}" for c, v in valid_ndcg.items())
        + ")"
    )
    return stats, ch_ndcg, valid_ndcg, best, merged_ndcg
