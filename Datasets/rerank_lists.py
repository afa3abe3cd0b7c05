"""Candidate lists for re-ranking models (MMR, DPP, PRM): the output of a first-stage ranker.

A re-ranker needs, per user, the list a ranker would show: N candidates in the ranker's order with
its scores, labels, and item categories for diversity metrics. This module builds those lists from a
leave-one-out split, vectorised (one matmul + top-k per chunk of users):

- `train_scorer`: a quickly trained item-embedding ranker (the mean of the history's item
  embeddings, then a linear layer, dotted with output item embeddings; full-softmax next-item loss
  on the training prefixes). About a minute on Beauty with one thread, a few seconds on the
  synthetic default.
- `candidate_lists`: top-N of that scorer for each user's `stage` ('valid' or 'test'), seen items
  excluded; label 1 on the held-out target when it is among the N (lists without it keep all
  zeros, so list metrics over all users equal the full-ranking metrics of the re-ranked top).
- `prefix_lists`: the same at random training prefixes, to train a learned re-ranker (PRM) without
  touching the valid/test targets.
- `item_categories` / `item_category_sets`: category codes for coverage and ILD (synthetic: the
  category; seqtxt: attribute ids, first attribute as "the" category).
- `simulate_clicks`: synthetic only. A planted click model with a **within-list effect**: an item's
  click probability drops with the number of its near-duplicates (same variant group) in the same
  list and with the share of the list taken by its category (redundancy). The pointwise ranker
  cannot see it; a list-aware re-ranker can.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from Utils.evaluation import csr_mask

from .BaseDatasets import DataError

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


class HistoryScorer(nn.Module):
    """score(u, i) = <W mean(E_in[history]), E_out[i]>: a small, fast first-stage ranker."""

    def __init__(self, n_items: int, dim: int = 64):
        super().__init__()
        self.item_in = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.item_out = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.proj = nn.Linear(dim, dim)
        nn.init.normal_(self.item_in.weight, std=0.05)
        nn.init.normal_(self.item_out.weight, std=0.05)
        with torch.no_grad():
            self.item_in.weight[0].zero_()
            self.item_out.weight[0].zero_()

    def user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """history (B, L) int64, 0 = padding -> (B, D)."""
        mask = (history > 0).unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.item_in(history) * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, D)
        return self.proj(pooled)

    def item_vectors(self) -> torch.Tensor:
        return self.item_out.weight  # (n_items + 1, D)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, n_items + 1) scores, padding column = -inf."""
        scores = self.user_vectors(history) @ self.item_vectors().T  # (B, D) @ (D, N+1)
        scores[:, 0] = -torch.inf
        return scores


def train_scorer(
    split,
    *,
    dim: int = 64,
    max_len: int = 20,
    epochs: int = 3,
    batch_size: int = 512,
    lr: float = 3e-3,
    seed: int = 0,
    max_per_user: int | None = None,
    progress: bool = True,
) -> HistoryScorer:
    """Train `HistoryScorer` with full-softmax cross-entropy on every training prefix."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    ex = split.next_item_examples(max_len, max_per_user=max_per_user, seed=seed)
    hist, target = ex["history"], ex["target"]
    model = HistoryScorer(split.n_items, dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(target), generator=gen)
        steps = range(0, len(order), batch_size)
        bar = (
            tqdm(
                steps,
                desc=f"ranker {epoch + 1}/{epochs}",
                leave=False,
                disable=not progress,
                mininterval=1.0,
            )
            if tqdm
            else steps
        )
        for s in bar:
            idx = order[s : s + batch_size]
            loss = nn.functional.cross_entropy(model(hist[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def _top_n(
    scorer: HistoryScorer, history: np.ndarray, seen: torch.Tensor | None, n: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-n items per history row: ids (U, n), scores (U, n), user vectors (U, D)."""
    ids, scs, uvs = [], [], []
    items_t = scorer.item_vectors().T  # (D, N+1)
    for s in range(0, len(history), chunk):
        h = torch.from_numpy(history[s : s + chunk])
        u = scorer.user_vectors(h)  # (b, D)
        scores = u @ items_t  # (b, D) @ (D, N+1)
        scores[:, 0] = -torch.inf
        if seen is not None:
            scores.masked_fill_(seen[s : s + chunk], -torch.inf)
        sc, top = scores.topk(n, dim=1)
        ids.append(top)
        scs.append(sc)
        uvs.append(u)
    return torch.cat(ids).numpy(), torch.cat(scs).numpy(), torch.cat(uvs).numpy()


def candidate_lists(
    split,
    scorer: HistoryScorer,
    *,
    stage: str = "test",
    n_candidates: int = 50,
    max_len: int = 20,
    exclude_seen: bool = True,
) -> dict[str, np.ndarray]:
    """Top-N lists for each user of the split at `stage`.

    Returns numpy arrays: user (U,), row (U,), history (U, max_len), items (U, N) in the ranker's
    order, init_scores (U, N), labels (U, N) float (1 = held-out target), target (U,), and
    user_vectors (U, D) of the ranker (a personalised vector for PRM).
    """
    if not 1 <= n_candidates <= split.n_items:
        raise ValueError(
            f"n_candidates (--candidates) = {n_candidates}: expected 1..{split.n_items}, the "
            f"number of items in the catalogue"
        )
    hist, _ = split.history(stage, max_len)
    rows = np.arange(split.n_users)
    seen = None
    if exclude_seen:
        offsets, items = split.seen(stage)
        seen = csr_mask(offsets, items, rows, split.n_items + 1)
    ids, scores, uvec = _top_n(scorer, hist, seen, n_candidates)
    _check_enough_unseen(scores, n_candidates)
    target = split.targets(stage)
    return {
        "user": split.users.copy(),
        "row": rows,
        "history": hist,
        "items": ids,
        "init_scores": scores,
        "labels": (ids == target[:, None]).astype(np.float32),
        "target": target,
        "user_vectors": uvec,
    }


def _check_enough_unseen(scores: np.ndarray, n_candidates: int) -> None:
    """A list padded with already-seen items (score -inf) would reach the re-rankers as NaN."""
    finite = np.isfinite(scores).all(axis=1)
    if not finite.all():
        fewest = int(np.isfinite(scores).sum(axis=1).min())
        raise ValueError(
            f"n_candidates (--candidates) = {n_candidates}: {int((~finite).sum())} users have only "
            f"{fewest} unseen items left in the catalogue; expected --candidates <= {fewest}"
        )


def prefix_lists(
    split,
    scorer: HistoryScorer,
    *,
    per_user: int = 3,
    n_candidates: int = 50,
    max_len: int = 20,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Lists at random training prefixes (at most `per_user` per user): same keys as
    `candidate_lists`; the label marks the next training item. Items of the prefix are excluded."""
    ex = split.next_item_examples(max_len, max_per_user=per_user, seed=seed)
    hist = ex["history"].numpy()
    n1 = split.n_items + 1
    seen = torch.zeros(len(hist), n1, dtype=torch.bool)
    seen.scatter_(1, torch.from_numpy(hist), True)  # NOTE: only the last max_len items are known
    seen[:, 0] = False
    ids, scores, uvec = _top_n(scorer, hist, seen, n_candidates)
    _check_enough_unseen(scores, n_candidates)
    target = ex["target"].numpy()
    return {
        "user": ex["user"].numpy(),
        "row": ex["row"].numpy(),
        "history": hist,
        "items": ids,
        "init_scores": scores,
        "labels": (ids == target[:, None]).astype(np.float32),
        "target": target,
        "user_vectors": uvec,
    }


def has_categories(data) -> bool:
    """True when the items have a category, attribute ids (seqtxt side file) or a brand: what
    ILD, coverage and the 'category' similarity need. Interaction-only data has none."""
    if "attributes" in data.items:
        return any(isinstance(a, list) and a for a in data.items["attributes"])
    return any(c in data.items for c in ("category", "brand"))


def item_categories(data) -> np.ndarray:
    """(n_items+1,) int64 category code per item (0 = padding/unknown): the `category` column
    when the source has one, else the first attribute id (seqtxt)."""
    if "category" in data.items:
        return data.item_feature("category")
    attrs = data.item_attributes(1)
    return attrs[:, 0].astype(np.int64)


def item_category_sets(data, max_per_item: int = 8) -> np.ndarray:
    """Categories for ILD: (n_items+1,) codes, or (n_items+1, A) attribute sets for seqtxt."""
    if "category" in data.items:
        return data.item_feature("category")
    return data.item_attributes(max_per_item)


def category_features(data, max_per_item: int = 8) -> torch.Tensor:
    """(n_items+1, C) float multi-hot category/attribute vectors (row 0 zero): item features for a
    similarity kernel that matches what ILD measures."""
    cats = item_category_sets(data, max_per_item)
    cats = cats[:, None] if cats.ndim == 1 else cats
    out = torch.zeros(cats.shape[0], int(cats.max()) + 1)
    c = torch.from_numpy(cats)
    out.scatter_(1, c, 1.0)
    out[:, 0] = 0.0
    return out


def simulate_clicks(
    data,
    lists: dict[str, np.ndarray],
    *,
    seed: int = 0,
    group_penalty: float = 2.0,
    crowd_penalty: float = 4.0,
    shift: float = -1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic only: click labels with a planted within-list (redundancy) effect.

    logit(u, i | list) = click_logit(u, i, recent history)     (the synthetic CTR ground truth)
                         - group_penalty * #(other items of i's variant group in the list)
                         - crowd_penalty * (share of the other list items in i's category)
                         + shift
    Order-free on purpose: labels stay valid for any permutation of the list, so NDCG of a re-ranked
    list is measured against the same clicks. Returns (clicks (U, N) float32, probabilities (U, N)).
    """
    from .synthetic import click_logit

    if "truth" not in data.extra:
        raise ValueError(
            "simulate_clicks needs the synthetic world's ground truth (data.extra['truth'])"
        )
    t = data.extra["truth"]
    items, users, hist = lists["items"], lists["user"], lists["history"]
    U, N = items.shape
    base = click_logit(data, np.repeat(users, N), items.ravel(), np.repeat(hist[:, -5:], N, axis=0))
    base = base.reshape(U, N)
    group = t["item_group"][items]  # (U, N)
    cat = t["item_category"][items]
    same_group = (group[:, :, None] == group[:, None, :]).sum(-1) - 1  # (U, N) others in the group
    same_cat = ((cat[:, :, None] == cat[:, None, :]).sum(-1) - 1) / max(N - 1, 1)
    logit = base - group_penalty * same_group - crowd_penalty * same_cat + shift
    prob = 1.0 / (1.0 + np.exp(-logit))
    clicks = (np.random.default_rng(seed).random((U, N)) < prob).astype(np.float32)
    return clicks, prob.astype(np.float32)


def describe_item(data, i: int, width: int = 60) -> str:
    """`data.item_text(i)` (title or Beauty keyword tokens, category or attributes), cut to width."""
    return data.item_text(int(i))[:width]


def similarity_features(kind: str, data, scorer: HistoryScorer) -> torch.Tensor:
    """(n_items+1, F) float32 item features whose cosine is the re-rankers' item similarity:
    'category' (multi-hot categories/attributes, what ILD measures), 'embedding' (the ranker's
    output item embeddings) or 'mixed' (both, normalised and concatenated: cosine = their mean)."""
    if kind not in ("category", "embedding", "mixed"):
        raise ValueError(f"similarity kind must be 'category', 'embedding' or 'mixed', got {kind!r}")
    emb = nn.functional.normalize(scorer.item_vectors().detach().float(), dim=1)
    if kind == "embedding":
        return emb
    if not has_categories(data):
        raise DataError(
            f"--similarity {kind}: {data.name} has no item categories, attributes or brands; "
            "expected --similarity embedding (the ranker's item embeddings)"
        )
    cat = nn.functional.normalize(category_features(data), dim=1)
    return cat if kind == "category" else torch.cat([cat, emb], dim=1)


def minmax_scores(scores: torch.Tensor) -> torch.Tensor:
    """Per-list min-max of (U, N) ranker scores to [0, 1], so a re-ranker's knob (lambda, theta)
    means the same for every list and data set."""
    lo, hi = scores.min(1, keepdim=True).values, scores.max(1, keepdim=True).values
    return (scores - lo) / (hi - lo).clamp_min(1e-12)
