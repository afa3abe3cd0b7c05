"""A two-task CTR split of the synthetic default, for multi-task rankers (MMoE, PLE).

Each impression of `Datasets.synthetic.ctr_impressions` (the user's true next item plus popularity-
sampled items, clicks drawn from the planted click model) gets two binary labels:

- task 0 "click": the planted click (interest x category, price tier, similarity to recent
  behaviour);
- task 1 "next":  the candidate is the item the user really interacted with next (a conversion-like
  task driven by the sequential transitions and the user's interests).

The two tasks are related (they share the user's interests) but not the same, which is the setting
multi-task models are built for. Features are plain sparse fields, code 0 = padding/unknown:
user, item, category, brand, price bucket, last behaviour item, last behaviour category.
"""

from __future__ import annotations

import numpy as np
import torch

from .BaseDatasets import DataError, LOOSplit, RecData, TensorDictDataset

TASKS = ("click", "next")
FIELDS = ("user", "item", "category", "brand", "price_bucket", "last_item", "last_category")


def two_task_impressions(data: RecData, split: LOOSplit, n_candidates: int = 4, max_len: int = 20,
                         seed: int = 0) -> tuple[dict[str, TensorDictDataset], list[int]]:
    """Returns ({"train", "valid", "test"} -> dataset with sparse (S, 7) int64, labels (S, 2) float,
    user (S,)), field_dims (vocabulary size per field, code 0 included)."""
    if "truth" not in data.extra:
        raise DataError(f"{data.name}: the two-task split needs --data synthetic (its click task "
                        "is the generator's planted click model, which other data does not have)")
    from .synthetic import ctr_impressions

    category = data.item_feature("category")
    out = {}
    for stage in ("train", "valid", "test"):
        imp = ctr_impressions(data, split, stage, n_candidates=n_candidates, max_len=max_len,
                              seed=seed)
        last = imp["history"][:, -1]  # (S,) most recent behaviour, 0 if none
        is_next = np.tile(np.eye(1, n_candidates, dtype=np.float32)[0], len(last) // n_candidates)
        sparse = np.stack([imp["user"], imp["item"], imp["category"], imp["brand"],
                           imp["price_bucket"], last, category[last]], axis=1)
        out[stage] = TensorDictDataset({
            "sparse": torch.as_tensor(sparse, dtype=torch.long),
            "labels": torch.as_tensor(np.stack([imp["label"], is_next], 1), dtype=torch.float32),
            "user": torch.as_tensor(imp["user"], dtype=torch.long),
        })
    dims = [data.n_users + 1, data.n_items + 1, int(category.max()) + 1,
            data.feature_size("brand"), data.feature_size("price_bucket"), data.n_items + 1,
            int(category.max()) + 1]
    return out, dims
