"""Evaluation helpers that return the metric dict.

Recall protocol (DESIGN.md): leave-one-out, **full ranking over all items**, items already in the user's
history excluded by default, pessimistic ties. Users are scored in chunks, so users x items is never
materialised at once.

A target the user has already interacted with is excluded together with the rest of the history when
`exclude_seen=True`: it then cannot be recommended and counts as a miss (rank = n_items + 1). This is
the honest reading of "seen items are not recommended" (no peeking at the target to spare it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from . import metrics as M


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
    if target.shape != (b,):
        raise ValueError(f"target must have shape ({b},), got {tuple(target.shape)}")
    if (target < 1).any() or (target >= n1).any():
        bad = target[(target < 1) | (target >= n1)][:5].tolist()
        raise ValueError(f"target item ids must lie in 1..{n1 - 1} (the catalogue), got e.g. {bad}")
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
    hist, hist_ts = split.history(stage, max_len)
    targets = split.targets(stage)
    offsets, seen_items = split.seen(stage)
    rows_all = np.arange(split.n_users) if users is None else np.asarray(users)
    ranks = []
    for s in range(0, len(rows_all), batch_size):
        rows = rows_all[s : s + batch_size]
        batch = {
            "user": torch.from_numpy(split.users[rows]).to(device),
            "row": torch.from_numpy(rows).to(device),
            "history": torch.from_numpy(hist[rows]).to(device),
            "history_ts": torch.from_numpy(hist_ts[rows]).to(device),
        }
        scores = score_fn(batch).float()
        if scores.shape != (len(rows), split.n_items + 1):
            raise ValueError(f"score_fn must return ({len(rows)}, n_items + 1 = {split.n_items + 1}) "
                             f"scores, got {tuple(scores.shape)}")
        excl = csr_mask(offsets, seen_items, rows, split.n_items + 1, scores.device) if exclude_seen else None
        ranks.append(target_ranks(scores, torch.from_numpy(targets[rows]), excl).cpu())
    r = torch.cat(ranks).numpy() if ranks else np.zeros(0)
    out = M.ranking_metrics(r, ks)
    return (out, r) if return_ranks else out


def evaluate_embeddings(user_fn: Callable[[dict], torch.Tensor], item_vectors: torch.Tensor, split,
                        stage: str = "valid", **kw):
    """Full ranking by dot product: user_fn(batch) -> (b, D); item_vectors (n_items+1, D)."""
    def score(batch):
        return user_fn(batch) @ item_vectors.to(batch["history"].device).T  # (b, D) @ (D, N+1)
    return evaluate_full_ranking(score, split, stage, **kw)


def popularity_metrics(split, stage: str = "test", ks=(5, 10, 20, 50), exclude_seen: bool = True,
                       batch_size: int = 2048) -> dict[str, float]:
    """The popularity baseline: every user gets the training interaction counts as scores."""
    counts = torch.from_numpy(split.item_counts()).float()

    def score(batch):
        return counts.expand(len(batch["user"]), -1)

    return evaluate_full_ranking(score, split, stage, ks=ks, exclude_seen=exclude_seen,
                                 batch_size=batch_size, max_len=1)


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
