"""Impression -> click -> conversion on the synthetic default, with the conversion truth planted.

The post-click conversion rate (CVR) is p(conversion | click, x). A log only shows conversions of
clicked impressions, so a CVR model is usually trained on clicked impressions and then used on every
impression (sample selection bias, ESMM paper §2.1). Public CVR data cannot show how wrong that is:
nobody knows whether an impression that was not clicked would have converted. Here it is planted.

For each impression of `Datasets.synthetic.ctr_impressions` (a user's true next item plus items drawn
by popularity, at every training prefix; the held-out step for valid and test):

- **click** y ~ Bernoulli(o(x)), o(x) = sigmoid(`click_logit` + `CLICK_SHIFT`): the synthetic
  world's planted click model (interest x category, price-tier match, same category as the last
  items, successor of the last item), shifted so that about 11% of impressions are clicked;
- **potential conversion** r ~ Bernoulli(cvr(x)), drawn for *every* impression, clicked or not:
  whether the impression would convert if it were clicked. `conversion_logit` plants cvr(x):
  a price-tier match, a hidden per-item quality and the user's interest raise it, and the two
  browsing signals that raise clicks (same category as the last items, successor of the last item)
  lower it, so the truth on clicked impressions differs from the truth on the others;
- **conversion** z = y * r: what a log records (a conversion is only seen after a click);
- **dwell**: seconds on the item page after a click (0 without one), longer when r = 1. A
  *post-click* signal that logs carry and that must never be a model input: it is known only after
  the click, so at serving time it does not exist (and it gives the label away).

Model inputs are the sparse fields `FIELDS` only, code 0 = padding/unknown (the same fields as
`Datasets.multitask_ctr`): user, item, category, brand, price bucket, last behaviour item, last
behaviour category. `model_inputs(batch)` is the one function that picks them, and
`tests/test_esmm.py` checks that no label, truth or post-click column reaches it.

Each dataset also holds the truth for evaluation: `ctr_truth` o(x), `cvr_truth` cvr(x) and the
potential label r, so a CVR model can be scored on the **entire space** (every impression) against
what would have happened, not only on the clicked impressions a log can score.
"""

from __future__ import annotations

import numpy as np
import torch

from .BaseDatasets import DataError, LOOSplit, RecData, TensorDictDataset

FIELDS = ("user", "item", "category", "brand", "price_bucket", "last_item", "last_category")
INPUTS = ("sparse",)  # the only tensors a model may read; everything else is a label or the truth
LABELS = ("click", "conversion")  # what a log records: y, and z = y * r
TRUTH = ("ctr_truth", "cvr_truth", "potential")  # planted o(x), cvr(x), r: evaluation only
POST_CLICK = ("dwell",)  # known only after a click: never an input
# The synthetic world's click model clicks 37% of impressions; shifted by -2.5 it clicks about 11%,
# closer to a feed, so that clicked impressions are a small, selected part of the space.
CLICK_SHIFT = -2.5


def model_inputs(batch: dict) -> torch.Tensor:
    """The model's input: the sparse fields (B, F) int64, nothing else of the batch."""
    return batch["sparse"]


def item_quality(data: RecData, seed: int = 7) -> np.ndarray:
    """(n_items+1,) a hidden per-item quality ~ N(0, 1) (0 for padding): it moves conversions only,
    and no feature carries it but the item id. Fixed per item for a given seed."""
    q = np.random.default_rng([seed, data.n_items]).standard_normal(data.n_items + 1)
    q[0] = 0.0
    return q


def conversion_logit(data: RecData, users: np.ndarray, items: np.ndarray, last_items: np.ndarray,
                     quality: np.ndarray) -> np.ndarray:
    """The planted post-click conversion model (ground truth), logit of cvr(x): a price-tier match,
    the item's hidden quality and the user's interest in the category raise it; clicks made while
    browsing (same category as the last items, successor of the last item) convert less. All
    arrays (S,); last_items (S, R)."""
    t = data.extra["truth"]
    cat = t["item_category"][items]
    interest = t["user_interests"][users, cat]  # (S,) the click model's interest, a smaller weight
    tier_match = (t["user_tier"][users] == t["item_tier"][items]).astype(float)
    valid = last_items > 0
    same_cat = ((t["item_category"][last_items] == cat[:, None]) & valid).mean(axis=1)
    follows = (t["successor"][last_items[:, -1]] == items) & valid[:, -1]
    return -2.2 + 2.0 * tier_match + 1.0 * quality[items] + 1.0 * interest - 2.0 * same_cat \
        - 1.5 * follows


def conversion_impressions(data: RecData, split: LOOSplit, n_candidates: int = 4, max_len: int = 20,
                           seed: int = 0, conversion_seed: int | None = None
                           ) -> tuple[dict[str, TensorDictDataset], list[int]]:
    """Returns ({"train", "valid", "test"} -> dataset, field_dims (vocabulary size per field, code 0
    included)). Each dataset holds sparse (S, 7) int64 (the inputs), click (S,), conversion (S,)
    float in {0, 1}, user (S,), and for evaluation ctr_truth (S,), cvr_truth (S,), potential (S,)
    and the post-click dwell (S,) seconds.

    `seed` draws the impressions and clicks; `conversion_seed` (default: seed) draws the potential
    conversions and dwell times, so two worlds can differ in their conversions only."""
    if "truth" not in data.extra:
        raise DataError(f"{data.name}: the conversion world needs --data synthetic (its clicks and "
                        "conversions are planted on the synthetic world's ground truth, which other "
                        "data does not have)")
    from .synthetic import click_logit, ctr_impressions

    conversion_seed = seed if conversion_seed is None else conversion_seed
    quality = item_quality(data)
    category = data.item_feature("category")
    out = {}
    for k, stage in enumerate(("train", "valid", "test")):
        imp = ctr_impressions(data, split, stage, n_candidates=n_candidates, max_len=max_len,
                              seed=seed)
        last3 = imp["history"][:, -3:]  # (S, 3) the click model's recent behaviour
        logit = click_logit(data, imp["user"], imp["item"], last3) + CLICK_SHIFT  # (S,)
        o = 1 / (1 + np.exp(-logit))  # o(x): the click propensity
        cvr = 1 / (1 + np.exp(-conversion_logit(data, imp["user"], imp["item"], last3, quality)))
        rng = np.random.default_rng([conversion_seed, 11, k])
        potential = (rng.random(len(cvr)) < cvr).astype(np.float32)  # r: would convert if clicked
        click = (np.random.default_rng([seed, 13, k]).random(len(o)) < o).astype(np.float32)  # y
        conversion = click * potential  # z = y * r: only clicked impressions can convert
        dwell = click * rng.gamma(2.0, 20.0 + 60.0 * potential)  # post-click seconds, 0 if no click
        last = imp["history"][:, -1]  # (S,) most recent behaviour, 0 if none
        sparse = np.stack([imp["user"], imp["item"], imp["category"], imp["brand"],
                           imp["price_bucket"], last, category[last]], axis=1)  # (S, 7) as FIELDS
        out[stage] = TensorDictDataset({
            "sparse": torch.as_tensor(sparse, dtype=torch.long),
            "click": torch.as_tensor(click, dtype=torch.float32),
            "conversion": torch.as_tensor(conversion, dtype=torch.float32),
            "user": torch.as_tensor(imp["user"], dtype=torch.long),
            "ctr_truth": torch.as_tensor(o, dtype=torch.float32),
            "cvr_truth": torch.as_tensor(cvr, dtype=torch.float32),
            "potential": torch.as_tensor(potential, dtype=torch.float32),
            "dwell": torch.as_tensor(dwell, dtype=torch.float32),
        })
    dims = [data.n_users + 1, data.n_items + 1, int(category.max()) + 1,
            data.feature_size("brand"), data.feature_size("price_bucket"), data.n_items + 1,
            int(category.max()) + 1]
    return out, dims
