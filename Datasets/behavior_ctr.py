"""Behaviour-sequence CTR samples built the way the DIN paper built its Amazon set.

DIN (Zhou et al., KDD 2018, §6.1) and its official `build_dataset.py`: for every user with reviews
e_1..e_n in time order, predict whether the user reviews the k-th item from the k-1 items before it;
the positive is the real k-th item, the negative an item drawn uniformly from the items the user
never reviewed, with the same behaviour sequence. Here the time split follows the repository's
leave-one-out protocol (`Datasets.leave_one_out`): the prefixes ending inside the training part give
the training samples, the validation item and the test item each give one positive and one negative
per user (so GAUC here is the share of users whose positive outranks their negative, ties half).

Everything is vectorised: no Python loop per user or sample.

    split = Datasets.leave_one_out(data)
    fields = item_field_table(data, n_attributes=3)       # (n_items+1, G): item id + attribute ids
    ctr = build_behavior_ctr(split, max_len=20, seed=0)   # {"train", "valid", "test"} -> datasets
    batch = next(ctr["train"].batches(256))  # user, history (b, L), target (b,), label (b,)
    history_fields = fields[batch["history"]]             # (b, L, G) — 0 rows stay 0
"""

from __future__ import annotations

import numpy as np
import torch

from .BaseDatasets import LOOSplit, RecData, TensorDictDataset


def has_item_attributes(data: RecData) -> bool:
    """True when the items carry attribute ids, a category or a brand (`RecData.item_attributes`)."""
    return any(c in data.items for c in ("attributes", "category", "brand"))


def item_field_table(data: RecData, n_attributes: int = 3) -> torch.Tensor:
    """(n_items+1, G) int64, G <= 1 + n_attributes: column 0 = item id, then the item's first
    attribute ids (categories/brand for seqtxt, category+brand codes for Amazon 2018), 0 =
    padding/missing; attribute slots that no item fills are dropped. Interactions alone (no
    attributes, category or brand): the item id is the only field.
    Row 0 is all zeros, so indexing it with a padded history keeps padding at 0."""
    if n_attributes < 0:
        raise ValueError(f"n_attributes must be >= 0, got {n_attributes}")
    ids = np.arange(data.n_items + 1, dtype=np.int64)[:, None]
    if n_attributes == 0 or not has_item_attributes(data):
        return torch.from_numpy(ids)
    attrs = data.item_attributes(max_per_item=n_attributes)  # (n_items+1, <=A)
    attrs = attrs[:, attrs.any(axis=0)]  # drop slots no item fills (fewer attributes than asked)
    table = np.concatenate([ids, attrs], axis=1)
    table[0] = 0
    return torch.from_numpy(table)


def _all_items_csr(split: LOOSplit) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys row * (n_items+1) + item over each user's whole sequence (train+valid+test)."""
    o = split.train_offsets
    rows = np.concatenate([np.repeat(np.arange(split.n_users), np.diff(o)),
                           np.arange(split.n_users), np.arange(split.n_users)])
    items = np.concatenate([split.train_items, split.valid_items, split.test_items])
    return np.unique(rows * (split.n_items + 1) + items), rows


def sample_negatives(split: LOOSplit, rows: np.ndarray, seed: int = 0,
                     max_rounds: int = 100) -> np.ndarray:
    """One uniform item per sample that user `rows[s]` never interacted with (official DIN rule).

    Vectorised rejection sampling: draw for all samples, redraw only the clashes."""
    rng = np.random.default_rng(seed)
    keys, _ = _all_items_csr(split)
    n1 = split.n_items + 1
    neg = rng.integers(1, n1, size=len(rows))
    for _ in range(max_rounds):
        k = rows * n1 + neg
        pos = np.searchsorted(keys, k).clip(max=len(keys) - 1)
        clash = keys[pos] == k
        if not clash.any():
            return neg.astype(np.int64)
        neg[clash] = rng.integers(1, n1, size=int(clash.sum()))
    raise RuntimeError("could not sample unseen negatives; does a user have the whole catalogue?")


def _pair(user, row, history, positive, negative) -> TensorDictDataset:
    """Interleave positives and negatives sharing a history: rows 2s (label 1), 2s+1 (label 0)."""
    S = len(positive)
    target = np.stack([positive, negative], 1).reshape(-1)  # (2S,)
    label = np.tile(np.array([1.0, 0.0], dtype=np.float32), S)
    rep = np.repeat(np.arange(S), 2)
    return TensorDictDataset({
        "user": torch.as_tensor(user[rep]),
        "row": torch.as_tensor(row[rep]),
        "history": torch.as_tensor(history[rep]),
        "target": torch.as_tensor(target),
        "label": torch.as_tensor(label),
    })


def build_behavior_ctr(split: LOOSplit, max_len: int = 20, seed: int = 0,
                       max_per_user: int | None = None,
                       users: np.ndarray | None = None) -> dict[str, TensorDictDataset]:
    """DIN-style positive/negative samples for the train, valid and test stages.

    Args:
        split: a leave-one-out split; train samples use only its training part.
        max_len: behaviours kept per sample (the most recent ones), left-padded with 0.
        seed: negative sampling seed (train, valid and test use seed, seed+1, seed+2).
        max_per_user: cap on training prefixes per user (random subset), None = all of them.
        users: optional subset of split rows (0..U-1) to keep, e.g. a random sample of users.
    Returns:
        {"train", "valid", "test"}: datasets with user (N,), row (N,), history (N, L) item ids,
        target (N,) item id, label (N,) float in {0, 1}; each positive is followed by its negative.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    ex = split.next_item_examples(max_len, max_per_user=max_per_user, seed=seed)
    ex = {k: v.numpy() for k, v in ex.items()}
    keep_rows = None if users is None else np.zeros(split.n_users, dtype=bool)
    if keep_rows is not None:
        keep_rows[users] = True
        sel = keep_rows[ex["row"]]
        ex = {k: v[sel] for k, v in ex.items()}
    out = {"train": _pair(ex["user"], ex["row"], ex["history"], ex["target"],
                          sample_negatives(split, ex["row"], seed))}
    for offset, stage in enumerate(("valid", "test"), start=1):
        rows = np.arange(split.n_users) if users is None else np.sort(np.asarray(users))
        hist, _ = split.history(stage, max_len)
        out[stage] = _pair(split.users[rows], rows, hist[rows], split.targets(stage)[rows],
                           sample_negatives(split, rows, seed + offset))
    return out
