"""The small first-stage ranker whose top-N lists the re-rankers (MMR, DPP, PRM) re-rank.

- `HistoryScorer`: score(u, i) = <W mean(E_in[history]), E_out[i]>, a quickly trained item-embedding ranker.
- `train_scorer`: full-softmax next-item training on every training prefix (about a minute on Beauty
  with one thread, seconds on the synthetic default).
- `candidate_lists`: its top-N per user for the 'valid' or 'test' step, seen items excluded; label 1 on
  the held-out target when retrieved. `prefix_lists`: the same at random training prefixes (PRM's
  training lists). `similarity_features`: the item vectors a diversifier compares.

Item categories, click simulation and the other list-side data stay in `Datasets.rerank_lists`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from Datasets.BaseDatasets import DataError
from Datasets.rerank_lists import category_features, has_categories  # noqa: F401
from Utils.evaluation import csr_mask

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
