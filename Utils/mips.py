"""Approximate maximum-inner-product search (MIPS) with faiss through the reduction to L2.

Recall models (YoutubeDNN, MIND) score items by the *inner product* u . v, and their item vectors have
different norms. A graph index built directly on inner products can then be weak, inner product not
being a metric (on Beauty, a YoutubeDNN model's HNSW-IP index found only 56% of the exact top-50; this
index found 99%).

The classic fix (Bachrach et al., RecSys 2014) appends one coordinate so that inner-product order
becomes Euclidean order: with phi = max_j |v_j|,

    v'_j = [v_j, sqrt(phi^2 - |v_j|^2)],   u' = [u, 0]   =>   |u' - v'_j|^2 = |u|^2 + phi^2 - 2 u . v_j,

so the nearest v'_j in L2 are exactly the items with the largest u . v_j, and HNSW works in a true metric.

It is no universal fix. When item norms span orders of magnitude (PureSVD vectors at a million items,
whose norms follow popularity), the appended coordinate is nearly phi for almost every item, all items
crowd onto one sphere with the queries far outside it, and HNSW in L2 found under half of the exact
top-50 where HNSW on raw inner products found 0.89-0.95 (`python -m Utils.tools.ann_scale`; the
serving part of the YoutubeDNN note). Measure on your own vectors.

>>> index = MipsHNSW(item_vectors)            # (n_items+1, D), row 0 = padding
>>> ids, scores = index.search(user_vectors, k=50)

`MipsIndex` puts the same reduction under three faiss indexes (exact flat, HNSW, IVF-PQ with an exact
re-rank), the set that `python -m Utils.tools.ann_scale` compares at a million items.
"""

from __future__ import annotations

import numpy as np
import torch


class MipsHNSW:
    """HNSW (L2) over MIPS-augmented item vectors; returns 1-based item ids and inner-product scores."""

    def __init__(self, item_vectors: torch.Tensor | np.ndarray, hnsw_m: int = 32, ef_search: int = 128,
                 ef_construction: int = 200, threads: int | None = None):
        try:
            import faiss
        except ImportError as e:  # pragma: no cover - faiss-cpu is in requirements.txt
            raise ImportError("MipsHNSW needs faiss-cpu: pip install faiss-cpu") from e
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        vec = item_vectors.detach().cpu().numpy() if isinstance(item_vectors, torch.Tensor) else item_vectors
        vec = np.ascontiguousarray(vec[1:], dtype=np.float32)  # drop padding row 0
        if vec.ndim != 2 or len(vec) == 0:
            raise ValueError(f"item_vectors must be (n_items + 1, D) with n_items >= 1, got {vec.shape}")
        norms2 = (vec.astype(np.float64) ** 2).sum(1)
        extra = np.sqrt(np.maximum(norms2.max() - norms2, 0.0)).astype(np.float32)[:, None]
        index = faiss.IndexHNSWFlat(vec.shape[1] + 1, hnsw_m)  # L2 metric
        index.hnsw.efConstruction = ef_construction
        index.add(np.ascontiguousarray(np.hstack([vec, extra])))
        index.hnsw.efSearch = ef_search
        self.index, self.vectors, self.n_items = index, vec, len(vec)

    def search(self, queries: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (U, k) int64, 1-based, and their inner products (U, k) float32."""
        q = queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else queries
        q = np.ascontiguousarray(q, dtype=np.float32)
        k = min(k, self.n_items)
        _, idx = self.index.search(np.hstack([q, np.zeros((len(q), 1), dtype=np.float32)]), k)
        safe = np.where(idx >= 0, idx, 0)
        scores = np.einsum("ud,ukd->uk", q, self.vectors[safe]).astype(np.float32)  # exact u . v
        return np.where(idx >= 0, idx + 1, 0), np.where(idx >= 0, scores, -np.inf).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Several faiss index families over the same reduction (the serving benchmark at a million items)
# --------------------------------------------------------------------------------------------------


def mips_augment(item_vectors: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(augmented (N, D+1) float32, raw (N, D) float32) of `item_vectors` (N+1, D), padding row dropped:
    v'_j = [v_j, sqrt(phi^2 - |v_j|^2)]; a query becomes [u, 0] (`mips_query`)."""
    vec = item_vectors.detach().cpu().numpy() if isinstance(item_vectors, torch.Tensor) else item_vectors
    vec = np.ascontiguousarray(vec[1:], dtype=np.float32)
    if vec.ndim != 2 or len(vec) == 0:
        raise ValueError(f"item_vectors must be (n_items + 1, D) with n_items >= 1, got {vec.shape}")
    norms2 = (vec.astype(np.float64) ** 2).sum(1)
    extra = np.sqrt(np.maximum(norms2.max() - norms2, 0.0)).astype(np.float32)[:, None]
    return np.ascontiguousarray(np.hstack([vec, extra])), vec


def mips_query(queries: torch.Tensor | np.ndarray, width: int) -> np.ndarray:
    """[u, 0, ...] padded with zeros to `width` coordinates, float32, C-contiguous."""
    q = queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else np.asarray(queries)
    out = np.zeros((len(q), width), dtype=np.float32)
    out[:, : q.shape[1]] = q
    return out


class MipsIndex:
    """Maximum inner product search through the MIPS->L2 reduction, with one of three faiss indexes:

    - `flat`: exact L2 scan of the augmented vectors (the reference; latency grows with N);
    - `hnsw`: HNSW graph (`hnsw_m` links per node, `ef_construction`; `ef_search` at query time);
    - `ivfpq`: inverted file of `nlist` k-means cells, vectors stored as `pq_m` bytes of product
      quantisation (8 bits per sub-vector; the augmented vector is padded with zeros to a multiple of
      `pq_m`, which changes no distance); `nprobe` cells are scanned per query and the best
      `rerank * k` codes are re-scored with the exact inner product (`rerank=1`: PQ order only);
    - `hnsw_ip`: for comparison, HNSW on the raw vectors with faiss's inner-product metric (no
      reduction). Which graph wins depends on the item norms: see the serving part of the YoutubeDNN note.

    Search returns 1-based item ids and exact inner products, like `MipsHNSW`; search-time knobs are
    attributes (`ef_search`, `nprobe`, `rerank`) to sweep without rebuilding.
    """

    KINDS = ("flat", "hnsw", "ivfpq", "hnsw_ip")

    def __init__(self, item_vectors: torch.Tensor | np.ndarray, kind: str = "hnsw", *, hnsw_m: int = 32,
                 ef_construction: int = 200, ef_search: int = 128, nlist: int = 1024, pq_m: int = 16,
                 nprobe: int = 16, rerank: int = 1, train_size: int = 100_000, seed: int = 0,
                 threads: int | None = None):
        try:
            import faiss
        except ImportError as e:  # pragma: no cover - faiss-cpu is in requirements.txt
            raise ImportError("MipsIndex needs faiss-cpu: pip install faiss-cpu") from e
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        aug, self.vectors = mips_augment(item_vectors)
        n, d = aug.shape
        if kind == "hnsw_ip":
            aug, d = self.vectors, d - 1  # raw vectors, inner-product metric
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
        elif kind == "ivfpq":
            width = -(-d // pq_m) * pq_m  # pad to a multiple of pq_m
            aug = np.ascontiguousarray(np.hstack([aug, np.zeros((n, width - d), dtype=np.float32)]))
            d = width
            nlist = max(1, min(nlist, n // 39))  # faiss wants >= 39 training points per cell
            self._quantizer = faiss.IndexFlatL2(d)
            index = faiss.IndexIVFPQ(self._quantizer, d, nlist, pq_m, 8)
            rng = np.random.default_rng(seed)
            sample = aug[np.sort(rng.choice(n, min(n, max(train_size, 39 * nlist)), replace=False))]
            index.train(sample)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m)  # L2 metric
            index.hnsw.efConstruction = ef_construction
        else:
            index = faiss.IndexFlatL2(d)
        index.add(aug)
        self.index, self.kind, self.n_items, self.width = index, kind, n, d
        self.ef_search, self.nprobe, self.rerank = ef_search, nprobe, rerank

    def memory_bytes(self) -> int:
        """Size of the serialised index (vectors or codes, graph links, centroids)."""
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def search(self, queries: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (U, k) int64, 1-based (0 where fewer were found), and their inner products."""
        q = mips_query(queries, self.width)
        k = min(k, self.n_items)
        fetch = k
        if self.kind in ("hnsw", "hnsw_ip"):
            self.index.hnsw.efSearch = max(self.ef_search, k)
        elif self.kind == "ivfpq":
            self.index.nprobe = self.nprobe
            fetch = min(self.n_items, k * max(1, self.rerank))
        _, idx = self.index.search(q, fetch)
        safe = np.where(idx >= 0, idx, 0)
        raw = q[:, : self.vectors.shape[1]]
        scores = np.einsum("ud,ukd->uk", raw, self.vectors[safe]).astype(np.float32)  # exact u . v
        scores = np.where(idx >= 0, scores, -np.inf).astype(np.float32)
        if fetch > k:  # re-rank the candidates by the exact inner product
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            idx, scores = np.take_along_axis(idx, order, 1), np.take_along_axis(scores, order, 1)
        return np.where(idx >= 0, idx + 1, 0), scores
