"""The funnel's item side data, read by every stage: titles (`attach_titles`, beside a Beauty-style
sequence file), title word tokens (`title_tokens`), and `ItemSide` / `item_side`: the integer fields
the ranker reads (id, category, brand, price bucket) and the features of the re-ranker's similarity
(categories and title words, what near-duplicates share)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def attach_titles(data, spec: str) -> None:
    """Beauty-style seqtxt: read `<Name>_item_titles.tsv` (item_id, asin, title) beside the sequence
    file into `data.items['title']` when present (the loader does not read it)."""
    if not spec.startswith("seqtxt:") or "title" in data.items:
        return
    path = Path(spec.split(":", 1)[1])
    tsv = path.with_name(path.stem + "_item_titles.tsv")
    if not tsv.is_file():
        return
    import pandas as pd

    t = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    by_id = dict(zip(t.iloc[:, 0].astype(int), t.iloc[:, 2], strict=False))
    data.items["title"] = [""] + [by_id.get(int(r), "") for r in data.item_raw[1:]]


def _codes(values: list[str]) -> np.ndarray:
    """Strings -> codes 1.. in sorted order ('' -> 0)."""
    uniq = sorted({v for v in values if v})
    index = {v: i + 1 for i, v in enumerate(uniq)}
    return np.array([index.get(v, 0) for v in values], dtype=np.int64)


TOKEN = re.compile(r"[a-z]+")
SIZE_WORDS = {"ml", "oz", "ounce", "ounces", "fl", "fluid", "pack", "count", "g", "gram", "grams"}


def title_tokens(data) -> list[set[str]]:
    """Lower-case word tokens of each title (numbers and size units dropped); [] without titles."""
    if "title" not in data.items:
        return [set() for _ in range(data.n_items + 1)]
    return [set(TOKEN.findall(str(t).lower())) - SIZE_WORDS for t in data.items["title"]]


@dataclass
class ItemSide:
    """Integer item fields the ranker reads, plus features for the re-ranker's similarity."""

    fields: np.ndarray  # (I+1, G) int64: id, category, brand, price bucket (0 = unknown)
    names: list[str]
    category: np.ndarray  # (I+1,) int64
    brand: np.ndarray  # (I+1,)
    price_bucket: np.ndarray  # (I+1,) 0 when the data has no prices
    tokens: list[set[str]]
    similarity: (
        torch.Tensor
    )  # (I+1, F) float: categories + title tokens (what near-duplicates share)


def item_side(data) -> ItemSide:
    """Categories, brands and price buckets where the data has them. Beauty (seqtxt) has no brand
    or price column: its attribute ids stand in for the category and the title's first word for the
    brand (e.g. 'OPI', 'Maybelline')."""
    from Datasets.rerank_lists import category_features, item_categories

    n1 = data.n_items + 1
    category = item_categories(data)
    tokens = title_tokens(data)
    if "brand" in data.items and (data.items["brand"].astype(str).str.len() > 0).any():
        brand = data.item_feature("brand")
    elif "title" in data.items:
        brand = _codes(
            [str(t).split()[0].lower() if str(t).split() else "" for t in data.items["title"]]
        )
    else:
        brand = np.zeros(n1, dtype=np.int64)
    price = (
        data.item_feature("price_bucket") if "price" in data.items else np.zeros(n1, dtype=np.int64)
    )
    cols, names = [np.arange(n1)], ["item"]
    for name, col in (("category", category), ("brand", brand), ("price_bucket", price)):
        if col.max() > 0:
            cols.append(col)
            names.append(name)
    if "attributes" in data.items:  # a second attribute id (Beauty: brand or sub-category ids)
        attrs = data.item_attributes(2)
        if attrs.shape[1] > 1:
            cols.append(attrs[:, 1])
            names.append("attribute2")
    fields = np.stack(cols, axis=1).astype(np.int64)
    fields[0] = 0
    df: dict[str, int] = {}
    for ts in tokens[1:]:
        for tk in ts:
            df[tk] = df.get(tk, 0) + 1
    # words shared by 2+ items, the 2,000 most frequent: (I+1, F) stays small on real catalogues
    common = sorted((t for t, c in df.items() if c >= 2), key=lambda t: (-df[t], t))[:2000]
    vocab = {t: j for j, t in enumerate(sorted(common))}
    tok = torch.zeros(n1, max(1, len(vocab)))
    for i, ts in enumerate(tokens):
        if i and ts:
            tok[i, [vocab[t] for t in ts if t in vocab]] = 1.0
    sim = torch.cat(
        [
            torch.nn.functional.normalize(category_features(data), dim=1),
            torch.nn.functional.normalize(tok, dim=1),
        ],
        dim=1,
    )
    return ItemSide(fields, names, category, brand, price, tokens, sim)
