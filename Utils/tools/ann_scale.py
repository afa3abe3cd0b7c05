"""ANN serving at a million items: faiss flat, HNSW and IVF-PQ over the MIPS->L2 reduction
(`Utils.mips.MipsIndex`), and HNSW on raw inner products for comparison: recall@K against the exact
top-K, p50/p95 latency of one query, build time and index size.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.ann_scale --threads 1 \
        --out assets/Scale/results/ann_scale.json --plot assets/Scale/ann_recall_latency.png

The vectors: by default a rank-64 PureSVD (truncated SVD of the binary user x item matrix of the
training interactions, item vectors V sqrt(S), user vectors U sqrt(S)) fitted to `synthetic:scale=1m`:
1M learned item vectors whose norms grow with popularity, as a trained two-tower model's do.
`--vectors PATH.npz` reads the file a recall demo writes with `--export-vectors` instead (e.g. a
YoutubeDNN trained on `synthetic:scale=1m`). `--model-eval-users N` also evaluates the fitted PureSVD
on N test users with the item-chunked full ranking (seen items excluded), against popularity.

Recall@K: the share of the exact top-K (by inner product, over every item) that the index returns.
Latency: wall time of one `search` call with one query, over `--latency-queries` queries, one thread.
Index memory: the serialised size of the faiss index (vectors or codes, graph links, centroids); the
process's peak RSS (`resource.getrusage`) after each build is stored too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from Utils.evaluation import evaluate_embeddings, popularity_metrics, topk_chunked
from Utils.io import positive_int, write_json_atomic
from Utils.mips import MipsIndex
from Utils.retrieval import recall_vs_exact


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def pure_svd(args) -> tuple[torch.Tensor, torch.Tensor, dict, object]:
    """(item vectors (N+1, D) with a zero padding row, user vectors (U, D), info, split).

    Items never bought in training have no signal: their SVD rows are exactly zero, hundreds of
    thousands of identical points that no index could tell apart (a trained embedding would sit near
    its random initialisation instead). They get a random vector of norm about `--cold-noise` times
    the median norm of the bought items."""
    import scipy.sparse as sp
    from sklearn.utils.extmath import randomized_svd

    from Datasets import leave_one_out, load

    t = time.perf_counter()
    data = load(f"synthetic:scale={args.scale}")
    build_s = time.perf_counter() - t
    split = leave_one_out(data)
    del data
    rows = np.repeat(np.arange(split.n_users), np.diff(split.train_offsets))
    X = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, split.train_items)),
                      shape=(split.n_users, split.n_items + 1))
    X.data[:] = 1.0  # a repeated (user, item) counts once
    t = time.perf_counter()
    U, S, Vt = randomized_svd(X, n_components=args.dim, n_iter=4, random_state=args.seed)
    svd_s = time.perf_counter() - t
    print(f"[model] PureSVD rank {args.dim} of {X.shape[0]:,} x {X.shape[1]:,} ({X.nnz:,} ones) in {svd_s:.0f} s",
          flush=True)
    root = np.sqrt(S).astype(np.float32)
    items = np.ascontiguousarray((Vt.T * root).astype(np.float32))
    bought = split.item_counts() > 0
    median = float(np.median(np.linalg.norm(items[bought], axis=1)))
    cold = np.flatnonzero(~bought[1:]) + 1
    rng = np.random.default_rng(args.seed + 2)
    items[cold] = rng.standard_normal((len(cold), args.dim)).astype(np.float32) * (args.cold_noise * median
                                                                                    / np.sqrt(args.dim))
    items[0] = 0.0  # padding
    users = torch.from_numpy(np.ascontiguousarray((U * root).astype(np.float32)))
    info = {"vectors": f"PureSVD rank {args.dim} on the training interactions of synthetic:scale={args.scale}",
            "world_build_seconds": round(build_s, 1), "svd_seconds": round(svd_s, 1),
            "train_interactions": int(X.nnz), "users": split.n_users, "items": split.n_items,
            "items_never_bought": int(len(cold)), "median_norm_bought": round(median, 4),
            "cold_noise": args.cold_noise}
    split.cold_items = cold  # the unit profile leaves these alone
    return torch.from_numpy(items), users, info, split


def model_eval(items, users, split, args) -> dict:
    """Full-ranking quality of the vectors on `--model-eval-users` test users, against popularity."""
    rng = np.random.default_rng(args.seed)
    rows_eval = np.sort(rng.choice(split.n_users, min(args.model_eval_users, split.n_users), replace=False))
    t = time.perf_counter()
    m = evaluate_embeddings(lambda b: users[b["row"]], items, split, "test", users=rows_eval, ks=(10, 50))
    seconds = round(time.perf_counter() - t, 1)
    pop = popularity_metrics(split, "test", ks=(10, 50), users=rows_eval, batch_size=1024)
    print(f"[model] {len(rows_eval):,} test users, seen items excluded: Recall@50 {m['Recall@50']:.4f}, "
          f"popularity {pop['Recall@50']:.4f} ({seconds} s)", flush=True)
    return {"users": len(rows_eval), "seconds": seconds, "model": m, "popularity": pop}


def from_npz(path: str) -> tuple[torch.Tensor, torch.Tensor, dict, None]:
    z = np.load(path)
    items = np.concatenate([np.zeros((1, z["item_vectors"].shape[1]), np.float32), z["item_vectors"]])
    users = z["user_vectors"]
    if users.ndim == 3:  # several vectors per user (MIND): serve the first interest's
        users = users[:, 0]
    return (torch.from_numpy(items.astype(np.float32)), torch.from_numpy(users.astype(np.float32)),
            {"vectors": f"--export-vectors file {path}", "items": len(items) - 1, "users": len(users)}, None)


def latencies_ms(index: MipsIndex, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(len(queries))
    index.search(queries[:1], k)  # warm-up
    for i in range(len(queries)):
        t = time.perf_counter()
        index.search(queries[i : i + 1], k)
        out[i] = (time.perf_counter() - t) * 1000
    return out


def run_index(name: str, build, sweep: list[dict], items, queries, exact: dict, args) -> dict:
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    index = build()
    build_s = time.perf_counter() - t
    entry = {"index": name, "build_seconds": round(build_s, 1), "memory_mb": round(index.memory_bytes() / 2**20, 1),
             "peak_rss_mb_before": rss0, "peak_rss_mb_after_build": peak_rss_mb(), "settings": []}
    if hasattr(index.index, "invlists"):  # IVF: how evenly k-means filled the cells
        sizes = np.array([index.index.invlists.list_size(i) for i in range(index.index.nlist)])
        entry["cell_sizes_min_median_max"] = [int(sizes.min()), float(np.median(sizes)), int(sizes.max())]
    print(f"[{name}] built in {build_s:.1f} s, index {entry['memory_mb']} MB, peak RSS {entry['peak_rss_mb_after_build']} MB"
          + (f", cell sizes min/median/max {entry['cell_sizes_min_median_max']}" if "cell_sizes_min_median_max" in entry
             else ""), flush=True)
    for knobs in sweep:
        for key, value in knobs.items():
            setattr(index, key, value)
        ids, _ = index.search(queries, max(args.ks))
        lat = latencies_ms(index, queries[: args.latency_queries], max(args.ks))
        row = {**knobs, **{f"recall@{k}": round(recall_vs_exact(ids[:, :k], exact[k]), 4) for k in args.ks},
               "p50_ms": round(float(np.percentile(lat, 50)), 3), "p95_ms": round(float(np.percentile(lat, 95)), 3),
               "items_returned_per_query": round(float((ids > 0).sum(1).mean()), 1)}
        entry["settings"].append(row)
        print(f"[{name}] {knobs} " + " ".join(f"recall@{k} {row[f'recall@{k}']:.4f}" for k in args.ks)
              + f"  p50 {row['p50_ms']:.3f} ms  p95 {row['p95_ms']:.3f} ms", flush=True)
    del index
    return entry


COLORS = (("flat", "C0"), ("HNSW after", "C1"), ("HNSW on raw", "C2"), ("IVF-PQ", "C3"), ("", "C7"))


def plot(result: dict, path: str, k: int) -> None:
    """Recall@k against p50 latency, one panel per norm profile, one curve per index (IVF-PQ: one per
    re-rank depth), each point labelled with its search-time knob."""
    from Utils.plotting import plt  # the Agg backend is set there

    profiles = list(result["profiles"])
    fig, axes = plt.subplots(1, len(profiles), figsize=(6.5 * len(profiles), 4.6), dpi=120, squeeze=False)
    for ax, profile in zip(axes[0], profiles):
        for entry in result["profiles"][profile]["indexes"]:
            groups: dict = {}
            for st in entry["settings"]:
                groups.setdefault(st.get("rerank", 1), []).append(st)
            for rerank, settings in groups.items():
                label = entry["index"] + (f" + exact re-rank of the best {rerank}K" if rerank > 1 else "")
                xs, ys = [st["p50_ms"] for st in settings], [st[f"recall@{k}"] for st in settings]
                family = next(c for key, c in COLORS if key in entry["index"]) if rerank == 1 else "C4"
                ax.plot(xs, ys, "s" if len(xs) == 1 else "o-", label=label, color=family)
                for st, x, y in zip(settings, xs, ys):
                    knob = next((f"{name}={st[key]}" for key, name in (("ef_search", "ef"), ("nprobe", "nprobe"))
                                 if key in st), "")
                    if knob:
                        ax.annotate(knob, (x, y), textcoords="offset points", xytext=(4, -9), fontsize=6)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("p50 latency of one query, ms (log scale; one thread)")
        ax.set_ylabel(f"recall@{k} against the exact top-{k}")
        norms = "norms as fitted" if profile == "fitted" else "bought items scaled to norm 1"
        ax.set_title(f"{result['vectors']['items']:,} PureSVD item vectors, {norms}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="1m")
    p.add_argument("--vectors", default=None, help="an --export-vectors .npz instead of PureSVD")
    p.add_argument("--dim", type=positive_int, default=64)
    p.add_argument("--queries", type=positive_int, default=1000, help="users whose top-K are searched")
    p.add_argument("--latency-queries", type=positive_int, default=300)
    p.add_argument("--ks", default="10,50")
    p.add_argument("--hnsw-m", type=positive_int, default=16)
    p.add_argument("--ef-construction", type=positive_int, default=80)
    p.add_argument("--ef-search", default="64,128,256,512,1024", help="values below max K act as max K")
    p.add_argument("--nlist", type=positive_int, default=1024)
    p.add_argument("--pq-m", type=positive_int, default=16)
    p.add_argument("--nprobe", default="1,4,16,64")
    p.add_argument("--rerank", default="1,10")
    p.add_argument("--indexes", default="flat,hnsw,hnsw_ip,ivfpq")
    p.add_argument("--model-eval-users", type=int, default=2000)
    p.add_argument("--cold-noise", type=float, default=0.01, help="norm of never-bought items' random vectors, "
                   "relative to the median norm of the bought items")
    p.add_argument("--profiles", default="fitted,unit",
                   help="item norms as fitted, and/or those of the bought items scaled to 1")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--update", action="store_true",
                   help="keep the other entries of an existing --out json; replace the ones measured now")
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    try:
        args.ks = [positive_int(x) for x in args.ks.split(",")]
        efs = [positive_int(x) for x in args.ef_search.split(",")]
        nprobes = [positive_int(x) for x in args.nprobe.split(",")]
        reranks = [positive_int(x) for x in args.rerank.split(",")]
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    profiles = [x.strip() for x in args.profiles.split(",") if x.strip()]
    if not profiles or set(profiles) - {"fitted", "unit"}:
        p.error(f"--profiles {args.profiles!r}: expected a comma list of fitted, unit")
    kinds = [x.strip() for x in args.indexes.split(",") if x.strip()]
    if not kinds or set(kinds) - set(MipsIndex.KINDS):
        p.error(f"--indexes {args.indexes!r}: expected a comma list of {', '.join(MipsIndex.KINDS)}")
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    items0, users, info, split = from_npz(args.vectors) if args.vectors else pure_svd(args)
    rng = np.random.default_rng(args.seed + 1)
    queries = users[np.sort(rng.choice(len(users), min(args.queries, len(users)), replace=False))].numpy()
    result = {"benchmark": "MIPS serving at scale", "threads": args.threads, "cpu_count": os.cpu_count(),
              "faiss": faiss.__version__, "vectors": info, "queries": len(queries),
              "latency_queries": args.latency_queries, "ks": args.ks,
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "profiles": {}}
    print(f"[data] {info}", flush=True)
    for profile in profiles:
        items = items0
        if profile == "unit":  # a cosine model: bought items scaled to norm 1, the rest left small
            items = torch.nn.functional.normalize(items0, dim=1)
            if split is not None:
                cold = torch.from_numpy(split.cold_items)
                items[cold] = items0[cold]
            items[0] = 0.0
        print(f"[{profile}] item norms {'as fitted' if profile == 'fitted' else 'of bought items scaled to 1'}",
              flush=True)
        out = {}
        if split is not None and args.model_eval_users:
            out["model_eval"] = model_eval(items, users, split, args)
        t = time.perf_counter()
        exact_ids, _ = topk_chunked(torch.from_numpy(queries), items, max(args.ks))
        exact = {k: exact_ids[:, :k].numpy() for k in args.ks}
        out["exact_topk_seconds"] = round(time.perf_counter() - t, 1)
        norms = items[1:].norm(dim=1)
        out["item_norm_quantiles_10_50_90_99_100"] = [
            round(float(x), 4) for x in torch.quantile(norms[::20], torch.tensor([0.1, 0.5, 0.9, 0.99, 1.0]))]
        out["indexes"] = []
        if "flat" in kinds:
            out["indexes"].append(run_index("flat (exact, L2 after the reduction)",
                                            lambda items=items: MipsIndex(items, "flat"), [{}], items, queries, exact, args))
        if "hnsw" in kinds:
            out["indexes"].append(run_index(
                f"HNSW after the reduction, M={args.hnsw_m}, efConstruction={args.ef_construction}",
                lambda items=items: MipsIndex(items, "hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction),
                [{"ef_search": e} for e in efs], items, queries, exact, args))
        if "hnsw_ip" in kinds and profile == "fitted":  # with unit norms IP order is L2 order already
            out["indexes"].append(run_index(
                f"HNSW on raw inner products, M={args.hnsw_m}, efConstruction={args.ef_construction}",
                lambda items=items: MipsIndex(items, "hnsw_ip", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction),
                [{"ef_search": e} for e in efs], items, queries, exact, args))
        if "ivfpq" in kinds:
            out["indexes"].append(run_index(
                f"IVF-PQ after the reduction, nlist={args.nlist}, {args.pq_m} B/vector",
                lambda items=items: MipsIndex(items, "ivfpq", nlist=args.nlist, pq_m=args.pq_m, seed=args.seed),
                [{"rerank": r, "nprobe": n} for r in reranks for n in nprobes], items, queries, exact, args))
        if args.update and args.out and os.path.exists(args.out):
            old = json.load(open(args.out))
            merged = old.get("profiles", {}).get(profile, {})
            names = {e["index"] for e in out["indexes"]}
            out["indexes"] = [e for e in merged.get("indexes", []) if e["index"] not in names] + out["indexes"]
            out = {**merged, **out}
            result = {**old, **{k: v for k, v in result.items() if k != "profiles"},
                      "profiles": {**old.get("profiles", {}), **result["profiles"]}}
        result["profiles"][profile] = out
        if args.out:  # after each profile, so a long run leaves what it has measured
            write_json_atomic(args.out, {**result, "peak_rss_mb": peak_rss_mb()})
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["peak_rss_mb"] = peak_rss_mb()
    if args.out:
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    if args.plot:
        plot(result, args.plot, max(args.ks))
        print(f"wrote {args.plot}")
    return result


if __name__ == "__main__":
    main()
