"""Evaluation helpers that return the metric dict.

Recall protocol (DESIGN.md): leave-one-out, **full ranking over all items**, items already in the user's
history excluded by default, pessimistic ties. Users are scored in chunks, so users x items is never
materialised at once.

A target the user has already interacted with is excluded together with the rest of the history when
`exclude_seen=True`: it then cannot be recommended and counts as a miss (rank = n_items + 1). This is
the honest reading of "seen items are not recommended" (no peeking at the target to spare it).

Two scoring paths, both exact:

- `evaluate_full_ranking(score_fn, ...)`: any model; `score_fn` returns a (b, N+1) block of scores for a
  batch of b users, so memory is b x N floats (1,024 x 18,358 x 4 B = 75 MB on Sports). Seen items are
  taken back from the count as (user, item) pairs (`sparse_target_ranks`): no copy of the block and no
  (b, N+1) mask.
- `evaluate_embeddings(user_fn, item_vectors, ...)`: dot-product models (two towers, SASRec's last state
  against the item table). Above `ITEM_CHUNK` items the catalogue is scanned in chunks too, so memory is
  b x ITEM_CHUNK floats whatever the catalogue size (1,024 x 65,536 x 4 B = 256 MB for 1M items, where
  one user batch against the whole catalogue would be 4 GB). `topk_chunked` gives the top-K lists the
  same way, each chunk's top-K merged into the running top-K.

A rank needs only a count (the items scoring at least the target's score), never a sort: the chunked
path counts chunk by chunk. The target's own float32 score is only known in the chunk that holds it, so
every chunk first compares against a float64 estimate of it with a proven error bound; the few scores
inside that bound are kept and compared exactly at the end (`dot_ranks`). Counting runs in numpy on CPU:
its comparison and row count are several times faster than torch's on one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from Datasets.BaseDatasets import _left_pad_windows

from . import metrics as M

# Items per chunk of the dot-product paths: a (1,024, 65,536) float32 block is 256 MB. Catalogues up to
# this size are scored in one block per user batch, as `evaluate_full_ranking` does.
ITEM_CHUNK = 65_536


def csr_mask(offsets: np.ndarray, items: np.ndarray, rows: np.ndarray, n_cols: int,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """(len(rows), n_cols) bool mask with True at each row's CSR items. Vectorised."""
    rows = np.asarray(rows)
    starts, ends = offsets[rows], offsets[rows + 1]
    lens = ends - starts
    flat_pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
    r = np.repeat(np.arange(len(rows)), lens)
    mask = torch.zeros(len(rows), n_cols, dtype=torch.bool, device=device)
    if len(r):
        mask[torch.from_numpy(r).to(device), torch.from_numpy(items[flat_pos]).to(device)] = True
    return mask


def csr_pairs(offsets: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(local row, item) of each row's CSR items, sorted, duplicates and padding (item 0) removed: the
    sparse form of `csr_mask`, which a (b, N+1) mask would hold as b x N bytes."""
    rows = np.asarray(rows)
    starts, ends = offsets[rows], offsets[rows + 1]
    lens = ends - starts
    flat_pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
    r = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
    it = np.asarray(items[flat_pos], dtype=np.int64)
    if not len(it):
        return r, it
    width = int(it.max()) + 1
    key = np.unique(r * width + it)  # sorted by (row, item), repeats collapsed
    r, it = key // width, key % width
    keep = it > 0
    return r[keep], it[keep]


def _count_at_least(scores: torch.Tensor, threshold: torch.Tensor, strict: bool = False) -> torch.Tensor:
    """(b,) int64: per row, how many scores are >= threshold (> when strict). threshold (b,) or (b, 1).

    On CPU the comparison and the row count run in numpy on the same memory (no copy): about 8x faster
    than torch's bool comparison + sum on one thread, with the same integers."""
    threshold = threshold.reshape(-1, 1)
    if scores.device.type == "cpu":
        s, t = scores.numpy(), threshold.numpy()
        hit = np.greater(s, t) if strict else np.greater_equal(s, t)
        return torch.from_numpy(np.count_nonzero(hit, axis=1).astype(np.int64))
    hit = scores > threshold if strict else scores >= threshold
    return hit.sum(dim=1)


def _above_and_band(scores: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Per row of scores (b, c): how many lie above hi[row], and (row, col) of those in [lo, hi].

    hi >= lo, so "at least lo" minus "above hi" counts the band per row; only the rows with a band
    (few entries) are scanned for positions (numpy on CPU, as in `_count_at_least`)."""
    if scores.device.type == "cpu":
        s = scores.numpy()
        gt = np.greater(s, hi.numpy()[:, None])
        ge = np.greater_equal(s, lo.numpy()[:, None])
        above = np.count_nonzero(gt, axis=1)
        rows = np.flatnonzero(np.count_nonzero(ge, axis=1) - above)
        r, c = np.nonzero(ge[rows] & ~gt[rows])
        return (torch.from_numpy(above.astype(np.int64)), torch.from_numpy(rows[r].astype(np.int64)),
                torch.from_numpy(c.astype(np.int64)))
    gt = scores > hi[:, None]
    band = (scores >= lo[:, None]) & ~gt
    r, c = torch.nonzero(band, as_tuple=True)
    return gt.sum(dim=1), r, c


def _check_targets(target: torch.Tensor, b: int, n1: int) -> None:
    if target.shape != (b,):
        raise ValueError(f"target must have shape ({b},), got {tuple(target.shape)}")
    if (target < 1).any() or (target >= n1).any():
        bad = target[(target < 1) | (target >= n1)][:5].tolist()
        raise ValueError(f"target item ids must lie in 1..{n1 - 1} (the catalogue), got e.g. {bad}")


def target_ranks(scores: torch.Tensor, target: torch.Tensor,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
    """1-based pessimistic rank of each row's target among items 1..n (column 0 = padding ignored).

    rank = 1 + #{other eligible items j : score_j >= score_target}. An excluded or non-finite target
    gets rank n + 1 (a miss). scores: (b, n+1) float; target: (b,) int64; exclude: (b, n+1) bool.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, n_items + 1), got shape {tuple(scores.shape)}")
    b, n1 = scores.shape
    target = target.to(scores.device).long()
    _check_targets(target, b, n1)
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN: the model diverged or a score function is broken")
    masked = scores.clone()
    masked[:, 0] = -torch.inf  # padding is never a candidate
    if exclude is not None:
        masked.masked_fill_(exclude.to(scores.device), -torch.inf)
    t_score = masked.gather(1, target[:, None])  # (b, 1); -inf when the target is excluded
    ahead = (masked >= t_score).sum(dim=1)  # includes the target itself: 1 + others at least as high
    ok = torch.isfinite(t_score.squeeze(1))
    return torch.where(ok, ahead, torch.full_like(ahead, n1)).float()


def sparse_target_ranks(scores: torch.Tensor, target: torch.Tensor,
                        exclude: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """`target_ranks` with the exclusions as (local row, item) pairs (`csr_pairs`), same numbers.

    No copy of the scores and no (b, n+1) mask: count every column at least as high as the target, then
    take back padding and the excluded items that were counted (a handful per row)."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, n_items + 1), got shape {tuple(scores.shape)}")
    b, n1 = scores.shape
    target = target.to(scores.device).long()
    _check_targets(target, b, n1)
    # NaN anywhere makes the sum NaN (one cheap pass); only then look closer (inf - inf is NaN too)
    if torch.isnan(scores.sum()) and torch.isnan(scores).any():
        raise ValueError("scores contain NaN: the model diverged or a score function is broken")
    t_score = scores.gather(1, target[:, None]).squeeze(1)  # (b,)
    ahead = _count_at_least(scores, t_score).to(scores.device)  # every column, target included
    ahead -= (scores[:, 0] >= t_score).long()  # padding is never a candidate
    ok = torch.isfinite(t_score)
    if exclude is not None and len(exclude[0]):
        r = torch.from_numpy(exclude[0]).to(scores.device)
        it = torch.from_numpy(exclude[1]).to(scores.device)
        counted = scores[r, it] >= t_score[r]  # excluded items that were counted above
        ahead -= torch.bincount(r[counted], minlength=b)
        ok[r[it == target[r]]] = False  # an excluded target is a miss
    return torch.where(ok, ahead, torch.full_like(ahead, n1)).float()


def _tolerance_factor(device: torch.device) -> float:
    """Bound on |float32 matmul - exact| / sum_k |u_k v_k| per coordinate of the dot product (times D).

    IEEE float32 accumulation of D products errs by at most D * 2^-24 of sum |u_k v_k| in any order;
    TF32 (CUDA) or bfloat16 ("medium" precision) round the inputs to 10 or 7 mantissa bits first."""
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return 2.0 ** -6
    if tf32 or precision == "high":
        return 2.0 ** -9
    return 0.0  # exact-input case: the D * 2^-24 term below is all


@torch.no_grad()
def dot_ranks(user_vectors: torch.Tensor, item_vectors: torch.Tensor, target: torch.Tensor,
              exclude: tuple[np.ndarray, np.ndarray] | None = None,
              item_chunk: int = ITEM_CHUNK, check_items: bool = True) -> torch.Tensor:
    """Pessimistic 1-based ranks of each target by u . v over items 1..N, scanning the catalogue in
    chunks of `item_chunk` items: memory is b x item_chunk floats, never b x N.

    Equal to `target_ranks(u @ V.T, target, mask)` whenever the chunked matmul gives each score the same
    float32 value as one big matmul. Per chunk: items scoring above `hi` (a float64 estimate of the
    target's score plus a proven bound on float32 matmul error) are counted; items within the bound are
    kept (few) and compared with the target's exact float32 score, read in the chunk that holds it.

    user_vectors: (b, D); item_vectors: (N+1, D), row 0 = padding; target: (b,) int64;
    exclude: (local row, item) pairs from `csr_pairs`; check_items=False skips the finiteness check of
    the item vectors (done once by `evaluate_embeddings`). Returns (b,) float ranks (N + 1 = miss).
    """
    u = user_vectors.float()
    V = item_vectors.to(u.device, torch.float32)
    b, n1 = len(u), len(V)
    target = target.to(u.device).long()
    _check_targets(target, b, n1)
    if not (torch.isfinite(u).all() and (not check_items or torch.isfinite(V).all())):
        raise ValueError("scores contain NaN: user or item vectors are not finite (the model diverged?)")
    if item_chunk < 1:
        raise ValueError(f"item_chunk must be >= 1, got {item_chunk}")
    D = u.shape[1]
    prod = u.double() * V[target].double()  # (b, D); products of float32 values are exact in float64
    t_est = prod.sum(1)
    bound = prod.abs().sum(1) * ((D + 2) * 2.0 ** -24 + D * _tolerance_factor(u.device)) + 1e-30
    # float32 thresholds rounded outwards, so "above hi32" implies "above the target" for sure
    lo = torch.nextafter((t_est - bound).float(), torch.tensor(-torch.inf, device=u.device))
    hi = torch.nextafter((t_est + bound).float(), torch.tensor(torch.inf, device=u.device))
    above = torch.zeros(b, dtype=torch.long, device=u.device)
    t_exact = torch.full((b,), torch.nan, device=u.device)
    band_rows, band_vals = [], []
    if exclude is not None and len(exclude[0]):
        ex_r = torch.from_numpy(exclude[0]).to(u.device)
        ex_i = torch.from_numpy(exclude[1]).to(u.device)
    else:
        ex_r = ex_i = torch.zeros(0, dtype=torch.long, device=u.device)
    for a in range(0, n1, item_chunk):
        e = min(a + item_chunk, n1)
        S = u @ V[a:e].T  # (b, D) @ (D, c) -> (b, c)
        if a == 0:
            S[:, 0] = -torch.inf  # padding is never a candidate
        sel = (ex_i >= a) & (ex_i < e)
        S[ex_r[sel], ex_i[sel] - a] = -torch.inf  # seen items
        in_chunk = torch.nonzero((target >= a) & (target < e)).squeeze(1)
        t_exact[in_chunk] = S[in_chunk, target[in_chunk] - a]
        n_hi, r_idx, c_idx = _above_and_band(S, lo, hi)
        above += n_hi.to(u.device)
        r_idx, c_idx = r_idx.to(u.device), c_idx.to(u.device)
        band_rows.append(r_idx)
        band_vals.append(S[r_idx, c_idx])
        del S
    ok = torch.isfinite(t_exact)  # -inf: the target is a seen item (a miss)
    if ((t_exact[ok] < lo[ok]) | (t_exact[ok] > hi[ok])).any():
        raise RuntimeError("a float32 matmul score fell outside its proven error bound; this path "
                           "assumes IEEE float32 (or TF32/bfloat16 when torch is set so) matmuls")
    br, bv = torch.cat(band_rows), torch.cat(band_vals)
    keep = bv >= t_exact[br]  # the exact comparison, target included (it lies in its own band)
    ranks = above + torch.bincount(br[keep], minlength=b)
    return torch.where(ok, ranks, torch.full_like(ranks, n1)).float()


@torch.no_grad()
def topk_chunked(user_vectors: torch.Tensor, item_vectors: torch.Tensor, k: int,
                 exclude: tuple[np.ndarray, np.ndarray] | None = None, rows: np.ndarray | None = None,
                 user_chunk: int = 1024, item_chunk: int = ITEM_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k items by u . v, users in chunks of `user_chunk`, items in chunks of `item_chunk`.

    Each item chunk's top-k is merged into the running top-k (the top-k of a union is inside the union
    of the top-ks), so the result is the top-k of the whole row; only the order among equal scores may
    differ from one `torch.topk` over the row. Memory: user_chunk x item_chunk floats.

    user_vectors: (U, D); item_vectors: (N+1, D), row 0 = padding, never returned; exclude: optional
    CSR (offsets, items) of items to skip; rows: each user's CSR row (default i).
    Returns (ids (U, k) int64, scores (U, k) float32); a row with fewer than k eligible items ends in
    id 0 with score -inf.
    """
    U, n1 = user_vectors.shape[0], item_vectors.shape[0]
    if not 1 <= k <= n1 - 1:
        raise ValueError(f"k must lie in 1..{n1 - 1} (the catalogue size), got {k}")
    device = user_vectors.device
    V = item_vectors.to(device, torch.float32)
    rows_all = np.arange(U) if rows is None else np.asarray(rows)
    ids_out, sc_out = [], []
    for s in range(0, U, user_chunk):
        u = user_vectors[s : s + user_chunk].float()
        b = len(u)
        best_s = torch.full((b, k), -torch.inf, device=device)
        best_i = torch.zeros((b, k), dtype=torch.long, device=device)
        if exclude is not None:
            ex_r, ex_i = (torch.from_numpy(x).to(device)
                          for x in csr_pairs(exclude[0], exclude[1], rows_all[s : s + b]))
        for a in range(0, n1, item_chunk):
            e = min(a + item_chunk, n1)
            S = u @ V[a:e].T  # (b, D) @ (D, c) -> (b, c)
            if a == 0:
                S[:, 0] = -torch.inf
            if exclude is not None:
                sel = (ex_i >= a) & (ex_i < e)
                S[ex_r[sel], ex_i[sel] - a] = -torch.inf
            sc, ix = S.topk(min(k, e - a), dim=1)  # (b, k) of this chunk
            cand_s = torch.cat([best_s, sc], dim=1)  # (b, 2k): running + chunk
            cand_i = torch.cat([best_i, ix + a], dim=1)
            best_s, pos = cand_s.topk(k, dim=1)
            best_i = cand_i.gather(1, pos)
            del S
        ids_out.append(torch.where(torch.isneginf(best_s), 0, best_i))
        sc_out.append(best_s)
    return torch.cat(ids_out), torch.cat(sc_out)


def _user_batches(split, stage: str, max_len: int, users, batch_size: int, device, exclude_seen: bool):
    """(rows, batch dict on device, targets, seen pairs or None) per batch of split rows.

    With `users`, only their history windows are cut (690,000 users x 50 x 2 int64 would be 550 MB
    for an evaluation of 10,000 of them)."""
    targets = split.targets(stage)
    offsets, seen_items = split.seen(stage)
    if users is None:
        rows_all = np.arange(split.n_users)
        hist, hist_ts = split.history(stage, max_len)
    else:
        rows_all = np.asarray(users)
        h_off, h_items, h_ts = split._full(stage)  # the CSR that LOOSplit.history windows
    for s in range(0, len(rows_all), batch_size):
        rows = rows_all[s : s + batch_size]
        if users is None:
            h, h_t = hist[rows], hist_ts[rows]
        else:
            h = _left_pad_windows(h_items, h_off[rows], h_off[rows + 1], max_len)
            h_t = _left_pad_windows(h_ts, h_off[rows], h_off[rows + 1], max_len)
        batch = {
            "user": torch.from_numpy(split.users[rows]).to(device),
            "row": torch.from_numpy(rows).to(device),
            "history": torch.from_numpy(h).to(device),
            "history_ts": torch.from_numpy(h_t).to(device),
        }
        pairs = csr_pairs(offsets, seen_items, rows) if exclude_seen else None
        yield rows, batch, torch.from_numpy(targets[rows]), pairs


@torch.no_grad()
def evaluate_full_ranking(
    score_fn: Callable[[dict], torch.Tensor],
    split,
    stage: str = "valid",
    max_len: int = 50,
    ks=(5, 10, 20, 50),
    exclude_seen: bool = True,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    users: np.ndarray | None = None,
    return_ranks: bool = False,
):
    """Full-ranking metrics for `stage` ('valid' or 'test') of a LOOSplit.

    score_fn(batch) -> (b, n_items+1) scores, where batch holds tensors on `device`:
    `user (b,)`, `row (b,)` (row in the split), `history (b, max_len)` left-padded, `history_ts`.
    `users` optionally restricts evaluation to some split rows. Returns the metric dict (and the
    ranks when return_ranks).
    """
    ranks = []
    for rows, batch, target, pairs in _user_batches(split, stage, max_len, users, batch_size, device,
                                                    exclude_seen):
        scores = score_fn(batch).float()
        if scores.shape != (len(rows), split.n_items + 1):
            raise ValueError(f"score_fn must return ({len(rows)}, n_items + 1 = {split.n_items + 1}) "
                             f"scores, got {tuple(scores.shape)}")
        ranks.append(sparse_target_ranks(scores, target, pairs).cpu())
    r = torch.cat(ranks).numpy() if ranks else np.zeros(0)
    out = M.ranking_metrics(r, ks)
    return (out, r) if return_ranks else out


@torch.no_grad()
def evaluate_embeddings(user_fn: Callable[[dict], torch.Tensor], item_vectors: torch.Tensor, split,
                        stage: str = "valid", item_chunk: int | None = None, max_len: int = 50,
                        ks=(5, 10, 20, 50), exclude_seen: bool = True, batch_size: int = 1024,
                        device: torch.device | str = "cpu", users: np.ndarray | None = None,
                        return_ranks: bool = False):
    """Full ranking by dot product: user_fn(batch) -> (b, D); item_vectors (n_items+1, D).

    Catalogues up to `ITEM_CHUNK` items (or `item_chunk`, when given) are scored in one block per user
    batch through `evaluate_full_ranking`; larger ones chunk by chunk (`dot_ranks`), same ranks.
    """
    item_vectors = item_vectors.to(device)
    n1 = item_vectors.shape[0]
    if n1 != split.n_items + 1:
        raise ValueError(f"item_vectors must be (n_items + 1 = {split.n_items + 1}, D), got "
                         f"{tuple(item_vectors.shape)}")
    chunk = ITEM_CHUNK if item_chunk is None else item_chunk
    if n1 <= chunk:
        def score(batch):
            return user_fn(batch) @ item_vectors.T  # (b, D) @ (D, N+1)
        return evaluate_full_ranking(score, split, stage, max_len=max_len, ks=ks, exclude_seen=exclude_seen,
                                     batch_size=batch_size, device=device, users=users,
                                     return_ranks=return_ranks)
    if not torch.isfinite(item_vectors).all():
        raise ValueError("scores contain NaN: item vectors are not finite (the model diverged?)")
    ranks = []
    for _rows, batch, target, pairs in _user_batches(split, stage, max_len, users, batch_size, device,
                                                     exclude_seen):
        ranks.append(dot_ranks(user_fn(batch), item_vectors, target, pairs, item_chunk=chunk,
                               check_items=False).cpu())
    r = torch.cat(ranks).numpy() if ranks else np.zeros(0)
    out = M.ranking_metrics(r, ks)
    return (out, r) if return_ranks else out


def popularity_metrics(split, stage: str = "test", ks=(5, 10, 20, 50), exclude_seen: bool = True,
                       batch_size: int = 2048, users: np.ndarray | None = None) -> dict[str, float]:
    """The popularity baseline: every user gets the training interaction counts as scores.

    Written as a dot product (user vector [1], item "vectors" [count]), so a catalogue of millions
    is scanned in item chunks like any embedding model; `users` restricts it to some split rows."""
    counts = torch.from_numpy(split.item_counts()).float()[:, None]  # (N+1, 1), exact integers

    def user_fn(batch):
        return torch.ones(len(batch["row"]), 1)

    return evaluate_embeddings(user_fn, counts, split, stage, ks=ks, exclude_seen=exclude_seen,
                               batch_size=batch_size, max_len=1, users=users)


def evaluate_ctr(labels, probs, users=None) -> dict[str, float]:
    """{"AUC", "LogLoss"} (+ "GAUC" when users are given) of predicted click probabilities."""
    out = {"AUC": M.auc(labels, probs), "LogLoss": M.log_loss(labels, probs)}
    if users is not None:
        out["GAUC"] = M.gauc(users, labels, probs)
    return out


class Timer:
    """`with Timer() as t: ...; t.seconds`"""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
