"""The synthetic default: a small beauty-shop world with structure the models must find.

Deterministic from a seed, built in a second or two, and written in the Amazon Review 2018 schema
(`reviews.json.gz` + `meta.json.gz`), so it is read through the same loader as the real data.

What is planted (the ground truth is kept in `truth` for tests and notes):
- **Items**: categories, brands (each brand has a price tier), prices, titles "Brand Adjective Noun
  Size", Zipf popularity within each category.
- **Near-duplicates (redundancy)**: items come in variant groups of one to three (same brand and product
  line, different size). A list holding two variants of one product is redundant for a user.
- **Multi-interest users**: each user has 2-4 interest categories with Dirichlet weights and a
  preferred price tier.
- **Sequential transitions**: every item has a successor (shampoo -> conditioner style, same or paired
  category); the next action follows the previous item's successor with probability `p_follow`.
- **Sessions**: 1-6 actions a few minutes apart, sessions days apart (SDM's session rule applies).
- **Click labels for ranking** (`ctr_impressions`): a planted logistic model with feature interactions
  (user interest x category, user price tier x item price tier) and similarity between the target and
  the recent behaviour (same category as the last items, successor of the last item).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATEGORIES = ["Skin Care", "Hair Care", "Makeup", "Fragrance", "Nail Care", "Bath & Body",
              "Tools & Accessories", "Men's Grooming", "Oral Care", "Sun Care", "Vitamins", "Baby Care"]
NOUNS = {
    "Skin Care": ["Moisturizer", "Serum", "Cleanser", "Toner", "Eye Cream", "Face Mask"],
    "Hair Care": ["Shampoo", "Conditioner", "Hair Oil", "Hair Mask", "Dry Shampoo", "Styling Gel"],
    "Makeup": ["Lipstick", "Mascara", "Foundation", "Eyeliner", "Blush", "Concealer"],
    "Fragrance": ["Eau de Parfum", "Eau de Toilette", "Body Mist", "Perfume Oil", "Cologne", "Roll-On"],
    "Nail Care": ["Nail Polish", "Top Coat", "Base Coat", "Cuticle Oil", "Nail File", "Remover"],
    "Bath & Body": ["Body Wash", "Body Lotion", "Bath Salt", "Scrub", "Hand Cream", "Soap Bar"],
    "Tools & Accessories": ["Brush Set", "Sponge", "Hair Dryer", "Curling Iron", "Tweezers", "Mirror"],
    "Men's Grooming": ["Beard Oil", "Shaving Cream", "Aftershave", "Razor", "Beard Balm", "Face Wash"],
    "Oral Care": ["Toothpaste", "Mouthwash", "Floss", "Toothbrush", "Whitening Strips", "Tongue Scraper"],
    "Sun Care": ["Sunscreen", "After-Sun Gel", "Tanning Oil", "SPF Lip Balm", "Sun Spray", "Bronzer"],
    "Vitamins": ["Biotin", "Collagen", "Multivitamin", "Vitamin C", "Zinc", "Omega-3"],
    "Baby Care": ["Baby Lotion", "Baby Shampoo", "Diaper Cream", "Baby Oil", "Baby Wipes", "Baby Powder"],
}
ADJECTIVES = ["Hydrating", "Daily", "Ultra", "Gentle", "Radiant", "Pure", "Intense", "Natural",
              "Classic", "Fresh", "Repair", "Silk"]
BRAND_STEMS = ["Luma", "Vera", "Nord", "Kiko", "Aster", "Belle", "Orla", "Zen", "Mira", "Halo",
               "Fern", "Ivo", "Juno", "Sol", "Tess", "Una", "Wren", "Yara"]
SIZES = ["30 ml", "50 ml", "100 ml"]
TIER_PRICE = np.array([6.0, 14.0, 35.0])  # median price of budget / mid / premium brands


@dataclass
class SyntheticConfig:
    n_users: int = 2000
    n_items: int = 1200  # split evenly over the categories
    brands_per_category: int = 6
    min_len: int = 6  # actions per user: min_len + Geometric, capped at max_len
    max_len: int = 40
    mean_extra_len: float = 10.0
    p_follow: float = 0.5  # next action = successor of the previous item
    p_stay: float = 0.6  # otherwise: same category as the previous item (else a fresh interest)
    zipf: float = 1.1  # popularity exponent within a category
    start_time: int = 1_500_000_000  # unix seconds of the first action


def generate(seed: int = 0, config: SyntheticConfig | None = None) -> dict:
    """Generate the world. Returns reviews (list of dicts), meta (list of dicts) and `truth`."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(seed)
    C = len(CATEGORIES)
    per_cat = cfg.n_items // C
    n_items = per_cat * C

    # ---- brands: each category has its own brands with a price tier --------------------------
    n_brands = C * cfg.brands_per_category
    brand_cat = np.repeat(np.arange(C), cfg.brands_per_category)
    brand_tier = rng.integers(0, 3, n_brands)
    brand_names = [f"{BRAND_STEMS[b % len(BRAND_STEMS)]} {CATEGORIES[c].split()[0].rstrip(chr(39) + 's')}"
                   for b, c in enumerate(brand_cat)]

    # ---- items in variant groups (near-duplicates) ---------------------------------------------
    item_cat = np.repeat(np.arange(C), per_cat)
    item_brand = np.empty(n_items, dtype=np.int64)
    item_group = np.empty(n_items, dtype=np.int64)
    titles, sizes = [], []
    g = 0
    i = 0
    while i < n_items:
        c = item_cat[i]
        size = min(int(rng.integers(1, 4)), per_cat - (i - c * per_cat))  # variants, not past category
        size = max(1, min(size, int(np.sum(item_cat[i:] == c))))
        b = c * cfg.brands_per_category + int(rng.integers(cfg.brands_per_category))
        noun = NOUNS[CATEGORIES[c]][int(rng.integers(6))]
        adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
        for v in range(size):
            item_brand[i + v] = b
            item_group[i + v] = g
            titles.append(f"{brand_names[b]} {adj} {noun} {SIZES[v]}")
            sizes.append(v)
        i += size
        g += 1
    item_tier = brand_tier[item_brand]
    price = np.round(TIER_PRICE[item_tier] * np.exp(rng.normal(0, 0.25, n_items))
                     * (1 + 0.4 * np.asarray(sizes)), 2)

    # popularity: Zipf within category over a random order
    pop = np.empty(n_items)
    for c in range(C):
        idx = np.nonzero(item_cat == c)[0]
        ranks = rng.permutation(len(idx)) + 1
        pop[idx] = ranks ** (-cfg.zipf)
    # successor: a popular-ish item of the same category (70%) or of the paired category (30%)
    paired = (np.arange(C) + C // 2) % C
    succ = np.empty(n_items, dtype=np.int64)
    for it in range(n_items):
        c = item_cat[it] if rng.random() < 0.7 else paired[item_cat[it]]
        idx = np.nonzero((item_cat == c) & (item_group != item_group[it]))[0]
        p = pop[idx] / pop[idx].sum()
        succ[it] = idx[rng.choice(len(idx), p=p)]

    # ---- users ------------------------------------------------------------------------------------
    n_int = rng.integers(2, 5, cfg.n_users)
    interests = np.zeros((cfg.n_users, C))
    for u in range(cfg.n_users):
        cats = rng.choice(C, n_int[u], replace=False)
        interests[u, cats] = rng.dirichlet(np.ones(n_int[u]) * 2.0)
    user_tier = rng.integers(0, 3, cfg.n_users)
    # within-category choice: popularity x price-tier affinity
    tier_aff = np.exp(-1.2 * np.abs(user_tier[:, None] - item_tier[None, :]))  # (U, N)

    lengths = np.minimum(cfg.min_len + rng.geometric(1 / cfg.mean_extra_len, cfg.n_users) - 1,
                         cfg.max_len)
    cat_items = [np.nonzero(item_cat == c)[0] for c in range(C)]

    def pick_in_cat(u: int, c: int) -> int:
        idx = cat_items[c]
        w = pop[idx] * tier_aff[u, idx]
        return int(idx[rng.choice(len(idx), p=w / w.sum())])

    reviews = []
    seqs = []
    for u in range(cfg.n_users):
        t = cfg.start_time + int(rng.integers(0, 200 * 86400))
        seq = []
        prev = -1
        left_in_session = int(rng.integers(1, 7))
        for _ in range(lengths[u]):
            r = rng.random()
            if prev >= 0 and r < cfg.p_follow:
                nxt = int(succ[prev])
            elif prev >= 0 and r < cfg.p_follow + (1 - cfg.p_follow) * cfg.p_stay \
                    and interests[u, item_cat[prev]] > 0:
                nxt = pick_in_cat(u, int(item_cat[prev]))
            else:
                nxt = pick_in_cat(u, int(rng.choice(C, p=interests[u])))
            tries = 0
            while nxt in seq and tries < 5:  # mostly new items, as in review data
                nxt = pick_in_cat(u, int(item_cat[nxt]))
                tries += 1
            if nxt in seq:
                continue
            seq.append(nxt)
            match = interests[u, item_cat[nxt]] > 0 and item_tier[nxt] == user_tier[u]
            rating = float(np.clip(round(3.5 + 1.0 * match + rng.normal(0, 0.7)), 1, 5))
            reviews.append({
                "overall": rating, "verified": True, "reviewerID": f"U{u:05d}",
                "asin": f"S{nxt:06d}", "unixReviewTime": int(t),
                "reviewText": f"synthetic review of {titles[nxt]}", "summary": "synthetic",
            })
            prev = nxt
            left_in_session -= 1
            if left_in_session == 0:
                t += int(rng.integers(1, 11)) * 86400 + int(rng.integers(0, 3600))
                left_in_session = int(rng.integers(1, 7))
            else:
                t += int(rng.integers(30, 8 * 60))  # under 10 minutes: same session
        seqs.append(seq)

    meta = [{
        "asin": f"S{i:06d}", "title": titles[i], "brand": brand_names[item_brand[i]],
        "category": ["Beauty", CATEGORIES[item_cat[i]], NOUNS[CATEGORIES[item_cat[i]]][0]],
        "price": f"${price[i]:.2f}", "main_cat": "Beauty",
    } for i in range(n_items)]
    truth = {
        "item_category": item_cat, "item_brand": item_brand, "item_group": item_group,
        "item_tier": item_tier, "successor": succ, "popularity": pop, "user_interests": interests,
        "user_tier": user_tier, "categories": CATEGORIES,
        "asin": np.array([f"S{i:06d}" for i in range(n_items)]),
        "reviewer": np.array([f"U{u:05d}" for u in range(cfg.n_users)]),
    }
    return {"reviews": reviews, "meta": meta, "truth": truth}


def write_amazon2018(world: dict, folder: str | Path) -> tuple[Path, Path]:
    """Write the world as `reviews.json.gz` and `meta.json.gz` (Amazon 2018 schema)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rp, mp = folder / "reviews.json.gz", folder / "meta.json.gz"
    for path, rows in ((rp, world["reviews"]), (mp, world["meta"])):
        tmp = path.with_suffix(".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)  # atomic: a half-written cache is never read
    return rp, mp


def cache_dir() -> Path:
    """Data/synthetic under the repo when writable, else a temp folder."""
    root = Path(__file__).resolve().parent.parent / "Data" / "synthetic"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write_test"
        probe.write_text("ok")
        probe.unlink()
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / "recsys_notes_synthetic"


_TRUTH: dict[tuple, dict] = {}


def load_synthetic(seed: int = 0, config: SyntheticConfig | None = None):
    """Generate (or reuse the cached files of) the synthetic world and read it through the Amazon
    2018 loader. The ground truth, re-indexed to the loaded item/user ids, is in `data.extra['truth']`."""
    from .amazon2018 import load_amazon2018

    cfg = config or SyntheticConfig()
    key = (seed, tuple(sorted(vars(cfg).items())))
    # a stable digest of the config: the built-in hash() of strings changes with every process
    # (PYTHONHASHSEED), which made each run write a new cache folder and never reuse one
    digest = hashlib.sha1(repr(key[1]).encode()).hexdigest()[:10]
    tag = f"seed{seed}_u{cfg.n_users}_i{cfg.n_items}_{digest}"
    folder = cache_dir() / tag
    world = _TRUTH.get(key)
    if world is None or not (folder / "meta.json.gz").is_file():
        world = generate(seed, cfg)
        _TRUTH[key] = {"truth": world["truth"]}
        if not (folder / "meta.json.gz").is_file():
            write_amazon2018(world, folder)
    data = load_amazon2018(str(folder / "reviews.json.gz"), str(folder / "meta.json.gz"),
                           name=f"synthetic:{seed}")
    truth = _TRUTH[key]["truth"]
    # re-index ground truth to loaded ids: item id -> generator index
    gen_item = np.array([int(a[1:]) for a in data.item_raw[1:]])
    gen_user = np.array([int(r[1:]) for r in data.user_raw[1:]])
    t = {"categories": truth["categories"]}
    for k in ("item_category", "item_brand", "item_group", "item_tier", "popularity"):
        t[k] = np.concatenate([[-1], truth[k][gen_item]])
    inv = np.full(len(truth["asin"]), 0, dtype=np.int64)
    inv[gen_item] = np.arange(1, len(gen_item) + 1)
    t["successor"] = np.concatenate([[0], inv[truth["successor"][gen_item]]])
    t["user_interests"] = np.concatenate([np.zeros((1, len(truth["categories"]))),
                                          truth["user_interests"][gen_user]])
    t["user_tier"] = np.concatenate([[-1], truth["user_tier"][gen_user]])
    data.extra["truth"] = t
    return data


# --------------------------------------------------------------------------------------------------
# Ranking impressions with planted click labels
# --------------------------------------------------------------------------------------------------


def click_logit(data, users: np.ndarray, items: np.ndarray, last_items: np.ndarray) -> np.ndarray:
    """The planted click model (ground truth): interest x category, price-tier match, and
    similarity of the target to the recent behaviour. All arrays (S,); last_items (S, R) 0-padded."""
    t = data.extra["truth"]
    cat = t["item_category"][items]
    interest = t["user_interests"][users, cat]  # (S,)
    tier_match = (t["user_tier"][users] == t["item_tier"][items]).astype(float)
    valid = last_items > 0
    same_cat = ((t["item_category"][last_items] == cat[:, None]) & valid).mean(axis=1)
    follows = (t["successor"][last_items[:, -1]] == items) & valid[:, -1]
    return -2.2 + 4.0 * interest + 1.2 * tier_match + 1.5 * same_cat + 2.0 * follows


def ctr_impressions(data, split, stage: str = "train", n_candidates: int = 4, max_len: int = 20,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Impressions for CTR models on the synthetic world, labels drawn from `click_logit`.

    For each next-item example of `stage` ('train': every training prefix; 'valid'/'test': the held-out
    step), the impression list holds the true next item plus `n_candidates - 1` items sampled by
    popularity; each gets a Bernoulli click. Returns flat arrays: user, item, history (S, max_len),
    label, plus item fields category / brand / price_bucket for convenience.
    """
    if "truth" not in data.extra:
        raise ValueError("ctr_impressions needs the synthetic world's ground truth (data.extra['truth'])")
    rng = np.random.default_rng(seed + {"train": 0, "valid": 1, "test": 2}[stage])
    if stage == "train":
        ex = split.next_item_examples(max_len)
        users, hist, pos = ex["user"].numpy(), ex["history"].numpy(), ex["target"].numpy()
    else:
        hist, _ = split.history(stage, max_len)
        users, pos = split.users, split.targets(stage)
    counts = split.item_counts().astype(float) + 1.0
    counts[0] = 0.0
    neg = rng.choice(len(counts), size=(len(users), n_candidates - 1), p=counts / counts.sum())
    items = np.concatenate([pos[:, None], neg], axis=1).reshape(-1)
    users_r = np.repeat(users, n_candidates)
    hist_r = np.repeat(hist, n_candidates, axis=0)
    logit = click_logit(data, users_r, items, hist_r[:, -3:])
    label = (rng.random(len(items)) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return {
        "user": users_r, "item": items, "history": hist_r, "label": label,
        "category": data.item_feature("category")[items], "brand": data.item_feature("brand")[items],
        "price_bucket": data.item_feature("price_bucket")[items],
    }
