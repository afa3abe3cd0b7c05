"""A synthetic shop where each stage of the funnel has its own signal to find (opt-in; the repo's
default world `Datasets/synthetic.py` is untouched).

    data = load_funnel_world(seed=0)            # the `--data funnel[:SEED]` of pipeline_demo.py
    data.extra["truth"]["item_group"]            # planted ground truth, re-indexed to loaded ids

What is planted, and which stage can see it:
- **Successors (recall, sequence model)**: every product line has a successor line (shampoo ->
  conditioner); with probability `p_follow` the next purchase is a variant of the previous line's
  successor. A sequence model learns item -> next item; co-occurrence (ItemCF) sees it too.
- **Brand loyalty and price sensitivity (ranking, features)**: each user has one favourite brand per
  interest category and a preferred price level; within a category the choice is weighted by
  `exp(brand_loyalty * [favourite brand] - price_sensitivity * |log price - log preferred|)`,
  also for the variant (size) of a successor line. A ranker that reads the candidate's brand and price
  next to the user's history (same-brand count, price gap) sees this directly; an id-only retrieval model
  must learn it from co-occurrence.
- **Near-duplicates (re-ranking)**: product lines come in one to three sizes that share brand, title
  and behaviour, so retrieval and ranking put several sizes of one product in the same top 10,
  while a user buys one of them; the final list needs a set-level look.

Built in seconds, written in the Amazon Review 2018 schema and read through the Amazon loader, as
the default world is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .synthetic import (
    ADJECTIVES,
    BRAND_STEMS,
    CATEGORIES,
    NOUNS,
    SIZES,
    TIER_PRICE,
    cache_dir,
    write_amazon2018,
)


@dataclass
class FunnelWorldConfig:
    n_users: int = 2000
    n_items: int = 1200  # split evenly over the categories
    brands_per_category: int = 6
    min_len: int = 6  # actions per user: min_len + Geometric, capped at max_len
    max_len: int = 40
    mean_extra_len: float = 8.0
    p_follow: float = 0.45  # next purchase = a variant of the previous line's successor line
    p_stay: float = 0.5  # otherwise: same category as the previous item (else a fresh interest)
    zipf: float = 0.9  # popularity exponent of product lines within a category
    brand_loyalty: float = 2.0  # log-weight of the user's favourite brand in a category
    price_sensitivity: float = 2.5  # log-weight per unit of |log price - log preferred price|
    start_time: int = 1_500_000_000


def generate_funnel_world(seed: int = 0, config: FunnelWorldConfig | None = None) -> dict:
    """Generate the world. Returns reviews, meta (Amazon 2018 dicts) and `truth`."""
    cfg = config or FunnelWorldConfig()
    rng = np.random.default_rng(seed)
    C = len(CATEGORIES)
    per_cat = cfg.n_items // C
    n_items = per_cat * C
    B = cfg.brands_per_category

    n_brands = C * B
    brand_cat = np.repeat(np.arange(C), B)
    brand_tier = rng.integers(0, 3, n_brands)
    brand_names = [
        f"{BRAND_STEMS[b % len(BRAND_STEMS)]} {CATEGORIES[c].split()[0].rstrip(chr(39) + 's')}"
        for b, c in enumerate(brand_cat)
    ]

    # ---- product lines (groups) of 1-3 sizes: the near-duplicates ------------------------------
    item_cat = np.repeat(np.arange(C), per_cat)
    item_brand = np.empty(n_items, dtype=np.int64)
    item_group = np.empty(n_items, dtype=np.int64)
    item_size = np.empty(n_items, dtype=np.int64)
    titles = []
    g, i = 0, 0
    while i < n_items:
        c = item_cat[i]
        size = max(1, min(int(rng.integers(1, 4)), int(np.sum(item_cat[i:] == c))))
        b = c * B + int(rng.integers(B))
        noun = NOUNS[CATEGORIES[c]][int(rng.integers(6))]
        adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
        for v in range(size):
            item_brand[i + v], item_group[i + v], item_size[i + v] = b, g, v
            titles.append(f"{brand_names[b]} {adj} {noun} {SIZES[v]}")
        i += size
        g += 1
    n_groups = g
    group_cat = np.array([item_cat[item_group == k][0] for k in range(n_groups)])
    price = np.round(
        TIER_PRICE[brand_tier[item_brand]]
        * np.exp(rng.normal(0, 0.3, n_items))
        * (1 + 0.6 * item_size),
        2,
    )
    log_price = np.log(price)

    # line popularity (Zipf within a category) shared by its sizes
    group_pop = np.empty(n_groups)
    for c in range(C):
        idx = np.nonzero(group_cat == c)[0]
        group_pop[idx] = (rng.permutation(len(idx)) + 1.0) ** (-cfg.zipf)
    paired = (np.arange(C) + C // 2) % C
    succ_group = np.empty(n_groups, dtype=np.int64)
    for k in range(n_groups):
        c = group_cat[k] if rng.random() < 0.7 else paired[group_cat[k]]
        idx = np.nonzero((group_cat == c) & (np.arange(n_groups) != k))[0]
        p = group_pop[idx] / group_pop[idx].sum()
        succ_group[k] = idx[rng.choice(len(idx), p=p)]

    # ---- users: interests, a favourite brand per interest, a preferred price -------------------
    n_int = rng.integers(2, 5, cfg.n_users)
    interests = np.zeros((cfg.n_users, C))
    fav_brand = np.full((cfg.n_users, C), -1, dtype=np.int64)
    for u in range(cfg.n_users):
        cats = rng.choice(C, n_int[u], replace=False)
        interests[u, cats] = rng.dirichlet(np.ones(n_int[u]) * 2.0)
        fav_brand[u, cats] = cats * B + rng.integers(0, B, len(cats))
    pref_log_price = rng.uniform(log_price.min(), np.quantile(log_price, 0.9), cfg.n_users)

    cat_items = [np.nonzero(item_cat == c)[0] for c in range(C)]
    group_items = [np.nonzero(item_group == k)[0] for k in range(n_groups)]

    def affinity(u: int, idx: np.ndarray) -> np.ndarray:
        return np.exp(
            cfg.brand_loyalty * (item_brand[idx] == fav_brand[u, item_cat[idx]])
            - cfg.price_sensitivity * np.abs(log_price[idx] - pref_log_price[u])
        )

    def pick(u: int, idx: np.ndarray, with_pop: bool) -> int:
        w = affinity(u, idx) * (group_pop[item_group[idx]] if with_pop else 1.0)
        return int(idx[rng.choice(len(idx), p=w / w.sum())])

    lengths = np.minimum(
        cfg.min_len + rng.geometric(1 / cfg.mean_extra_len, cfg.n_users) - 1, cfg.max_len
    )
    reviews = []
    for u in range(cfg.n_users):
        t = cfg.start_time + int(rng.integers(0, 200 * 86400))
        seq: list[int] = []
        bought_groups: set[int] = set()
        prev = -1
        for _ in range(lengths[u]):
            r = rng.random()
            if prev >= 0 and r < cfg.p_follow:
                nxt = pick(u, group_items[succ_group[item_group[prev]]], with_pop=False)
            elif (
                prev >= 0
                and r < cfg.p_follow + (1 - cfg.p_follow) * cfg.p_stay
                and interests[u, item_cat[prev]] > 0
            ):
                nxt = pick(u, cat_items[item_cat[prev]], with_pop=True)
            else:
                nxt = pick(u, cat_items[int(rng.choice(C, p=interests[u]))], with_pop=True)
            if item_group[nxt] in bought_groups:  # one size of a product per user
                continue
            seq.append(nxt)
            bought_groups.add(int(item_group[nxt]))
            reviews.append(
                {
                    "overall": 5.0,
                    "verified": True,
                    "reviewerID": f"U{u:05d}",
                    "asin": f"F{nxt:06d}",
                    "unixReviewTime": int(t),
                    "reviewText": f"synthetic review of {titles[nxt]}",
                    "summary": "synthetic",
                }
            )
            prev = nxt
            t += int(rng.integers(1, 11)) * 86400
    meta = [
        {
            "asin": f"F{i:06d}",
            "title": titles[i],
            "brand": brand_names[item_brand[i]],
            "category": ["Beauty", CATEGORIES[item_cat[i]], NOUNS[CATEGORIES[item_cat[i]]][0]],
            "price": f"${price[i]:.2f}",
            "main_cat": "Beauty",
        }
        for i in range(n_items)
    ]
    truth = {
        "item_category": item_cat,
        "item_brand": item_brand,
        "item_group": item_group,
        "successor_group": succ_group[item_group],
        "user_fav_brand": fav_brand,
        "user_log_price": pref_log_price,
        "user_interests": interests,
    }
    return {"reviews": reviews, "meta": meta, "truth": truth}


def load_funnel_world(seed: int = 0, config: FunnelWorldConfig | None = None):
    """Generate (or reuse the cached files of) the funnel world; read it through the Amazon 2018
    loader. Ground truth re-indexed to loaded ids is in `data.extra['truth']` (row 0 = padding)."""
    from .amazon2018 import load_amazon2018

    cfg = config or FunnelWorldConfig()
    digest = hashlib.sha1(repr(sorted(vars(cfg).items())).encode()).hexdigest()[:10]
    folder = cache_dir() / f"funnel_seed{seed}_u{cfg.n_users}_i{cfg.n_items}_{digest}"
    world = generate_funnel_world(seed, cfg)  # seconds; also gives the truth arrays
    if not (folder / "meta.json.gz").is_file():
        write_amazon2018(world, folder)
    data = load_amazon2018(
        str(folder / "reviews.json.gz"), str(folder / "meta.json.gz"), name=f"funnel:{seed}"
    )
    truth = world["truth"]
    gen_item = np.array([int(a[1:]) for a in data.item_raw[1:]])
    gen_user = np.array([int(r[1:]) for r in data.user_raw[1:]])
    t = {
        k: np.concatenate([[-1], truth[k][gen_item]])
        for k in ("item_category", "item_brand", "item_group", "successor_group")
    }
    t["user_fav_brand"] = np.concatenate(
        [np.full((1, truth["user_fav_brand"].shape[1]), -1), truth["user_fav_brand"][gen_user]]
    )
    t["user_log_price"] = np.concatenate([[0.0], truth["user_log_price"][gen_user]])
    data.extra["truth"] = t
    return data
