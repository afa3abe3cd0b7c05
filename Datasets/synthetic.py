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


# --------------------------------------------------------------------------------------------------
# At scale: the same world with a million items, built by vectorised blocks
# --------------------------------------------------------------------------------------------------
# `generate` above walks every user and every action in Python: right for 1,200 items and 2,000 users
# (a second), hopeless for 1,000,000 items and 10,000,000 actions. `scaled_items` and
# `scaled_user_blocks` plant the same structure with numpy: the item world (categories, brands with
# price tiers, variant groups, titles, prices, Zipf popularity within category, successors) at once;
# then, per block of `USER_BLOCK` users, multi-interest users with a price tier and their sequences,
# step by step for all users of the block together (successor with p_follow, same category with
# p_stay, else a fresh interest; picks within a category by popularity x price-tier affinity; mostly
# new items; sessions). Working memory is the item world plus one block; only the finished
# interactions accumulate. The random streams differ from `generate`'s, so `synthetic:scale=N` is its
# own world per seed. `load_synthetic_scaled` builds RecData; `write_scaled_reviews` writes the files.

USER_BLOCK = 65_536  # users simulated together; fixed, so a seed gives the same world on every machine


def parse_scale(text: str) -> int:
    """'1m' -> 1_000_000, '200k' -> 200_000, '50000' -> 50_000 (the number of items)."""
    from .BaseDatasets import DataError

    t = str(text).strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        n = int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise DataError(f"synthetic scale must be an item count like 1m, 200k or 50000, got {text!r}") from None
    if n < 1_200:
        raise DataError(f"synthetic scale must be at least 1200 items (100 per category), got {text!r}")
    return n


def parse_synthetic_arg(arg: str) -> tuple[int, int | None]:
    """The part after 'synthetic:' -> (seed, n_items or None). Accepts '', '3', 'scale=1m',
    'scale=1m,seed=3' and '3,scale=1m'."""
    from .BaseDatasets import DataError

    seed, scale = 0, None
    for tok in [t.strip() for t in arg.split(",") if t.strip()]:
        key, eq, val = tok.partition("=")
        key = key.strip().lower()
        if eq and key == "scale":
            scale = parse_scale(val)
        elif eq and key == "seed" or not eq:
            try:
                seed = int(val if eq else tok)
            except ValueError:
                raise DataError(f"'synthetic:SEED' needs an integer seed, got {(val if eq else tok)!r}") from None
        else:
            raise DataError(f"synthetic: unknown option {key!r}; expected 'synthetic', 'synthetic:SEED' or "
                            f"'synthetic:scale=1m[,seed=SEED]'")
    return seed, scale


def scaled_config(n_items: int) -> SyntheticConfig:
    """The default world's knobs at `n_items` items: about 10 interactions per item (0.69 users per
    item x 14.5 actions per user) and one brand per ~2,000 items, so brands stay informative."""
    return SyntheticConfig(n_users=int(round(0.69 * n_items)), n_items=n_items,
                           brands_per_category=max(6, n_items // (len(CATEGORIES) * 2_000)))


def _stacked_cdf(weights: np.ndarray) -> np.ndarray:
    """(G, size) non-negative weights -> one flat array where group g's cdf runs over (g, g + 1]."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    return (cdf + np.arange(len(cdf))[:, None]).ravel()


def _sample_grouped(rng, flat_cdf: np.ndarray, group: np.ndarray, size: int) -> np.ndarray:
    """Index within its group of one draw per entry of `group` (one searchsorted for all groups)."""
    pos = np.searchsorted(flat_cdf, group + rng.random(len(group)), side="right")
    return np.minimum(pos - group * size, size - 1)


def scaled_items(seed: int, cfg: SyntheticConfig) -> dict:
    """The item world at scale, vectorised: arrays over items 0..n_items-1 and brands."""
    rng = np.random.default_rng([seed, 0])
    C = len(CATEGORIES)
    per_cat = cfg.n_items // C
    n_items = per_cat * C
    bpc = cfg.brands_per_category
    brand_cat = np.repeat(np.arange(C), bpc)
    brand_tier = rng.integers(0, 3, C * bpc)
    brand_names = [f"{BRAND_STEMS[b % len(BRAND_STEMS)]} {CATEGORIES[c].split()[0].rstrip(chr(39) + 's')}"
                   + (f" {b % bpc // len(BRAND_STEMS) + 1}" if bpc > len(BRAND_STEMS) else "")
                   for b, c in enumerate(brand_cat)]
    # variant groups of 1-3 items, never across a category boundary (per_cat items each)
    sizes = rng.integers(1, 4, per_cat * C)
    item_group = np.empty(n_items, dtype=np.int64)
    variant = np.empty(n_items, dtype=np.int64)
    n_groups = 0
    for c in range(C):
        ends = np.cumsum(sizes[c * per_cat:(c + 1) * per_cat])
        ends = ends[ends < per_cat]
        starts = np.concatenate([[0], ends])
        g_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, per_cat)))
        item_group[c * per_cat:(c + 1) * per_cat] = n_groups + g_of
        variant[c * per_cat:(c + 1) * per_cat] = np.arange(per_cat) - starts[g_of]
        n_groups += len(starts)
    item_cat = np.repeat(np.arange(C), per_cat)
    group_cat = np.zeros(n_groups, dtype=np.int64)
    group_cat[item_group] = item_cat
    group_brand = group_cat * bpc + rng.integers(0, bpc, n_groups)
    group_noun = rng.integers(0, 6, n_groups)
    group_adj = rng.integers(0, len(ADJECTIVES), n_groups)
    item_brand = group_brand[item_group]
    item_tier = brand_tier[item_brand]
    price = np.round(TIER_PRICE[item_tier] * np.exp(rng.normal(0, 0.25, n_items)) * (1 + 0.4 * variant), 2)
    pop = np.empty(n_items)
    for c in range(C):
        pop[c * per_cat:(c + 1) * per_cat] = (rng.permutation(per_cat) + 1.0) ** (-cfg.zipf)
    # successor: by popularity in the same category (70%) or the paired one (30%), another group
    paired = (np.arange(C) + C // 2) % C
    pop_cdf = _stacked_cdf(pop.reshape(C, per_cat))
    succ_cat = np.where(rng.random(n_items) < 0.7, item_cat, paired[item_cat])
    succ = succ_cat * per_cat + _sample_grouped(rng, pop_cdf, succ_cat, per_cat)
    clash = np.nonzero(item_group[succ] == item_group)[0]
    while len(clash):
        succ[clash] = succ_cat[clash] * per_cat + _sample_grouped(rng, pop_cdf, succ_cat[clash], per_cat)
        clash = clash[item_group[succ[clash]] == item_group[clash]]
    # within-category choice: popularity x price-tier affinity, one cdf per (user tier, category)
    aff = np.exp(-1.2 * np.abs(np.arange(3)[:, None] - item_tier[None, :]))  # (3, N)
    pick_cdf = _stacked_cdf((aff * pop[None, :]).reshape(3 * C, per_cat))  # row: tier * C + category
    nouns = np.array([[NOUNS[c][k] for k in range(6)] for c in CATEGORIES], dtype=object)
    titles = [f"{brand_names[b]} {ADJECTIVES[a]} {n} {SIZES[v]}" for b, a, n, v in
              zip(item_brand.tolist(), group_adj[item_group].tolist(),
                  nouns[item_cat, group_noun[item_group]].tolist(), variant.tolist())]
    return {"n_items": n_items, "per_cat": per_cat, "item_category": item_cat, "item_brand": item_brand,
            "item_group": item_group, "item_tier": item_tier, "price": price, "popularity": pop,
            "successor": succ, "pick_cdf": pick_cdf, "titles": titles, "brand_names": brand_names}


def scaled_user_blocks(seed: int, cfg: SyntheticConfig, world: dict):
    """Yield, per block of `USER_BLOCK` users, the planted users and their actions in time order:
    dict of user (S,) 0-based, item (S,) 0-based, timestamp, rating, and the block's user_interests
    (b, C), user_tier (b,)."""
    C = len(CATEGORIES)
    per_cat, item_cat, succ = world["per_cat"], world["item_category"], world["successor"]
    item_tier, pick_cdf = world["item_tier"], world["pick_cdf"]
    for b0 in range(0, cfg.n_users, USER_BLOCK):
        rng = np.random.default_rng([seed, 1, b0 // USER_BLOCK])
        b = min(USER_BLOCK, cfg.n_users - b0)
        n_int = rng.integers(2, 5, b)
        cats = np.argsort(rng.random((b, C)), axis=1)[:, :4]  # 4 distinct categories, keep n_int
        w = rng.gamma(2.0, size=(b, 4)) * (np.arange(4)[None, :] < n_int[:, None])
        interests = np.zeros((b, C))
        np.put_along_axis(interests, cats, w / w.sum(1, keepdims=True), axis=1)
        user_tier = rng.integers(0, 3, b)
        lengths = np.minimum(cfg.min_len + rng.geometric(1 / cfg.mean_extra_len, b) - 1, cfg.max_len)
        interest_cdf = np.cumsum(interests, axis=1)

        def pick(users: np.ndarray, cat: np.ndarray, rng=rng, user_tier=user_tier) -> np.ndarray:
            """One item per user within `cat`, by popularity x the user's price-tier affinity."""
            return cat * per_cat + _sample_grouped(rng, pick_cdf, user_tier[users] * C + cat, per_cat)

        L = cfg.max_len
        seq = np.full((b, L), -1, dtype=np.int64)
        ts = np.zeros((b, L), dtype=np.int64)
        rating = np.zeros((b, L), dtype=np.float32)
        count = np.zeros(b, dtype=np.int64)
        prev = np.full(b, -1, dtype=np.int64)
        t = cfg.start_time + rng.integers(0, 200 * 86400, b)
        left = rng.integers(1, 7, b)
        for step in range(L):
            act = np.nonzero(step < lengths)[0]
            r = rng.random(len(act))
            p = prev[act]
            has_prev = p >= 0
            follow = has_prev & (r < cfg.p_follow)
            stay = (has_prev & ~follow & (r < cfg.p_follow + (1 - cfg.p_follow) * cfg.p_stay)
                    & (interests[act, item_cat[np.maximum(p, 0)]] > 0))
            fresh = ~follow & ~stay
            nxt = np.empty(len(act), dtype=np.int64)
            nxt[follow] = succ[p[follow]]
            nxt[stay] = pick(act[stay], item_cat[p[stay]])
            fc = (interest_cdf[act[fresh]] < rng.random(fresh.sum())[:, None]).sum(1)
            nxt[fresh] = pick(act[fresh], np.minimum(fc, C - 1))
            dup = (seq[act] == nxt[:, None]).any(1)
            for _ in range(5):  # mostly new items, as in review data: up to 5 redraws in the category
                d = np.nonzero(dup)[0]
                if not len(d):
                    break
                nxt[d] = pick(act[d], item_cat[nxt[d]])
                dup[d] = (seq[act[d]] == nxt[d, None]).any(1)
            keep = ~dup  # a step whose item is still a repeat is skipped, as in `generate`
            u, it = act[keep], nxt[keep]
            seq[u, count[u]] = it
            ts[u, count[u]] = t[u]
            match = (interests[u, item_cat[it]] > 0) & (item_tier[it] == user_tier[u])
            rating[u, count[u]] = np.clip(np.round(3.5 + 1.0 * match + rng.normal(0, 0.7, len(u))), 1, 5)
            count[u] += 1
            prev[u] = it
            left[u] -= 1
            new_session = u[left[u] == 0]
            same = u[left[u] != 0]
            t[new_session] += (rng.integers(1, 11, len(new_session)) * 86400
                               + rng.integers(0, 3600, len(new_session)))
            left[new_session] = rng.integers(1, 7, len(new_session))
            t[same] += rng.integers(30, 8 * 60, len(same))  # under 10 minutes: same session
        valid = np.arange(L)[None, :] < count[:, None]
        yield {"user": np.repeat(np.arange(b0, b0 + b), count), "item": seq[valid], "timestamp": ts[valid],
               "rating": rating[valid], "user_interests": interests, "user_tier": user_tier}


def load_synthetic_scaled(seed: int = 0, n_items: int = 1_000_000, config: SyntheticConfig | None = None):
    """The synthetic world at `n_items` items (`synthetic:scale=1m`), straight into RecData.

    About 10 interactions per item: 1,000,000 items, 690,000 users and about 10 million interactions
    for `scale=1m`. Built in memory, not through the JSON files (writing and parsing 10 million lines
    would take minutes; `write_scaled_reviews` writes the same world in the Amazon 2018 schema, and a
    test reads it back through the loader). Ids: item i of the generator is id i + 1 (every item is in
    the catalogue, bought or not), user u is id u + 1; raw ids are asins 'S0000001' and 'U0000001'.
    The ground truth, indexed by those ids (0 = padding), is in `data.extra['truth']`.
    """
    import pandas as pd

    from .BaseDatasets import LoadReport, RecData

    cfg = config or scaled_config(n_items)
    world = scaled_items(seed, cfg)
    parts = {k: [] for k in ("user", "item", "timestamp", "rating")}
    interests, tiers = [], []
    for blk in scaled_user_blocks(seed, cfg, world):
        for k in parts:
            parts[k].append(blk[k])
        interests.append(blk["user_interests"])
        tiers.append(blk["user_tier"])
    inter = pd.DataFrame({"user": np.concatenate(parts["user"]) + 1, "item": np.concatenate(parts["item"]) + 1,
                          "timestamp": np.concatenate(parts["timestamp"]),
                          "rating": np.concatenate(parts["rating"])})
    del parts
    n, C = world["n_items"], len(CATEGORIES)
    cat_lists = [["Beauty", c, NOUNS[c][0]] for c in CATEGORIES]  # shared per category: 8 B a row
    items = pd.DataFrame({
        "title": [""] + world.pop("titles"),
        "brand": [""] + [world["brand_names"][b] for b in world["item_brand"].tolist()],
        "category": [""] + [CATEGORIES[c] for c in world["item_category"].tolist()],
        "categories": [[]] + [cat_lists[c] for c in world["item_category"].tolist()],
        "price": np.concatenate([[np.nan], world["price"]]),
    }, index=pd.RangeIndex(n + 1, name="item"))
    n_users = cfg.n_users
    width_i, width_u = max(6, len(str(n))), max(5, len(str(n_users)))
    item_raw = np.array(["<pad>"] + [f"S{i:0{width_i}d}" for i in range(n)], dtype=object)
    user_raw = np.array(["<pad>"] + [f"U{u:0{width_u}d}" for u in range(n_users)], dtype=object)
    name = f"synthetic:scale={n},seed={seed}"
    report = LoadReport(source=name, lines=len(inter), kept=len(inter))
    data = RecData(name, inter, items, user_raw, item_raw, report=report)
    pad = {"item_category": -1, "item_brand": -1, "item_group": -1, "item_tier": -1, "popularity": -1}
    truth = {k: np.concatenate([[v], world[k]]) for k, v in pad.items()}
    truth["successor"] = np.concatenate([[0], world["successor"] + 1])
    truth["user_interests"] = np.concatenate([np.zeros((1, C))] + interests)
    truth["user_tier"] = np.concatenate([[-1]] + tiers)
    truth["categories"] = CATEGORIES
    data.extra["truth"] = truth
    return data


def write_scaled_reviews(folder: str | Path, seed: int = 0, n_items: int = 1_000_000,
                         config: SyntheticConfig | None = None, with_meta: bool = True) -> Path:
    """Write the `scale` world as `reviews.json.gz` (+ `meta.json.gz`) in the Amazon 2018 schema, one
    block of users at a time (memory: the item world plus one block, whatever the number of lines).
    Returns the reviews path. The file for the streaming-loader benchmark comes from here."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config or scaled_config(n_items)
    world = scaled_items(seed, cfg)
    n = world["n_items"]
    width_i, width_u = max(6, len(str(n))), max(5, len(str(cfg.n_users)))
    titles = world["titles"]
    rp = folder / "reviews.json.gz"
    tmp = rp.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
        for blk in scaled_user_blocks(seed, cfg, world):
            f.writelines(
                f'{{"overall": {r:.1f}, "verified": true, "reviewerID": "U{u:0{width_u}d}", '
                f'"asin": "S{i:0{width_i}d}", "unixReviewTime": {t}, '
                f'"reviewText": {json.dumps("synthetic review of " + titles[i])}, "summary": "synthetic"}}\n'
                for u, i, t, r in zip(blk["user"].tolist(), blk["item"].tolist(), blk["timestamp"].tolist(),
                                      blk["rating"].tolist()))
    os.replace(tmp, rp)
    if with_meta:
        mp = folder / "meta.json.gz"
        tmp = mp.with_suffix(".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
            f.writelines(json.dumps({
                "asin": f"S{i:0{width_i}d}", "title": titles[i], "brand": world["brand_names"][b],
                "category": ["Beauty", CATEGORIES[c], NOUNS[CATEGORIES[c]][0]], "price": f"${p:.2f}",
                "main_cat": "Beauty"}) + "\n"
                for i, (b, c, p) in enumerate(zip(world["item_brand"].tolist(), world["item_category"].tolist(),
                                                  world["price"].tolist())))
        os.replace(tmp, mp)
    return rp
