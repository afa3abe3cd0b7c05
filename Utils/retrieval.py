"""Serving-side retrieval: exact chunked top-K and an approximate (faiss) index over item vectors.

Item vectors are (n_items+1, D) with row 0 = padding; returned ids are item ids (1-based), never 0.
Exact top-K scores users in chunks, so users x items is never held at once: memory is
chunk_size x n_items floats (1,024 x 1,000,000 x 4 B = 4 GB would be too much, so the chunk is sized
from a byte budget).
"""

from __future__ import annotations

import numpy as np
import torch

from .evaluation import csr_mask


def _chunk_rows(n_items: int, budget_bytes: int) -> int:
    return max(1, budget_bytes // (4 * max(1, n_items)))


@torch.no_grad()
def topk(user_vectors: torch.Tensor, item_vectors: torch.Tensor, k: int,
         exclude: tuple[np.ndarray, np.ndarray] | None = None, exclude_rows: np.ndarray | None = None,
         memory_budget_mb: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k items by dot product for each user.

    user_vectors: (U, D); item_vectors: (n_items+1, D) (row 0 = padding, never returned).
    exclude: optional CSR (offsets, items) of items to skip per user (e.g. seen items); exclude_rows
    maps each user vector to its CSR row (default: row i for user i).
    Returns (ids (U, k) int64, scores (U, k) float32).
    """
    U = user_vectors.shape[0]
    n1 = item_vectors.shape[0]
    if k > n1 - 1:
        raise ValueError(f"k={k} exceeds the catalogue size {n1 - 1}")
    rows = np.arange(U) if exclude_rows is None else np.asarray(exclude_rows)
    step = _chunk_rows(n1, memory_budget_mb * 2**20)
    ids_out, sc_out = [], []
    items_t = item_vectors.T.contiguous()  # (D, N+1)
    for s in range(0, U, step):
        scores = user_vectors[s : s + step] @ items_t  # (b, D) @ (D, N+1) -> (b, N+1)
        scores[:, 0] = -torch.inf
        if exclude is not None:
            scores.masked_fill_(csr_mask(exclude[0], exclude[1], rows[s : s + step], n1, scores.device),
                                -torch.inf)
        sc, ids = scores.topk(k, dim=1)
        ids_out.append(ids)
        sc_out.append(sc)
    return torch.cat(ids_out), torch.cat(sc_out)


class FaissIndex:
    """Approximate inner-product search with faiss (HNSW or IVF), or exact (`flat`).

    >>> index = FaissIndex(item_vectors, kind="hnsw")
    >>> ids, scores = index.search(user_vectors, k=50)
    """

    def __init__(self, item_vectors: torch.Tensor | np.ndarray, kind: str = "hnsw", nlist: int = 256,
                 nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, threads: int | None = None):
        try:
            import faiss
        except ImportError as e:  # pragma: no cover - faiss-cpu is in requirements.txt
            raise ImportError("FaissIndex needs faiss-cpu: pip install faiss-cpu") from e
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        vec = item_vectors.detach().cpu().numpy() if isinstance(item_vectors, torch.Tensor) else item_vectors
        vec = np.ascontiguousarray(vec[1:], dtype=np.float32)  # drop padding row 0
        n, d = vec.shape
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = max(1, min(nlist, n // 39))  # faiss wants >= 39 training points per list
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vec)
            index.nprobe = min(nprobe, nlist)
            self._quantizer = quantizer  # keep alive
        else:
            raise ValueError(f"kind must be 'flat', 'hnsw' or 'ivf', got {kind!r}")
        index.add(vec)
        self.index, self.kind, self.n_items = index, kind, n

    def search(self, queries: torch.Tensor | np.ndarray, k: int,
               exclude: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item ids (1-based) and scores. With `exclude` (CSR per query row), over-fetches and
        filters; rows that run short are padded with id 0 and score -inf."""
        q = queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else queries
        q = np.ascontiguousarray(q, dtype=np.float32)
        extra = 0
        if exclude is not None:
            extra = int(np.diff(exclude[0]).max(initial=0))
        kk = min(self.n_items, k + extra)
        scores, ids = self.index.search(q, kk)
        ids = np.where(ids >= 0, ids + 1, 0)
        if exclude is None:
            return ids[:, :k], scores[:, :k]
        bad = csr_mask(exclude[0], exclude[1], np.arange(len(q)), self.n_items + 1).numpy()
        drop = np.take_along_axis(bad, ids, axis=1) | (ids == 0)
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # keep rank order of the survivors
        out_ids = np.take_along_axis(ids, order, axis=1)
        out_sc = np.take_along_axis(scores, order, axis=1)
        gone = np.take_along_axis(drop, order, axis=1)
        return np.where(gone, 0, out_ids), np.where(gone, -np.inf, out_sc)


def recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of the exact top-k that the approximate search also returned."""
    hit = (exact_ids[:, :, None] == approx_ids[:, None, :]).any(axis=2)  # (U, k)
    return float(hit.mean())
