"""Full-ranking evaluation at scale: `Utils.evaluation` against a bare matmul + top-k of the same
shapes, timed in one process.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.scale_eval --threads 1 \
        --out assets/Scale/results/scale_eval.json

Two shapes, random vectors (D = 64; the time does not depend on what the vectors mean):

- **sports**: every user of the Sports split (35,598 users x 18,357 items, from ../shared/data when
  present, else `synthetic:scale=20k`). `evaluate_embeddings` (one score block per batch of 1,024 users,
  seen items excluded, pessimistic ranks, metrics) against `U_b @ V.T` + `topk(50)` per batch; the
  chunked path (`item_chunk` 4,096) must give the same ranks. The evaluation as it was before the chunked
  paths (`target_ranks` with a dense `csr_mask`) is timed as well.
- **1m**: 10,000 users of `synthetic:scale=1m` x 999,996 items. `evaluate_embeddings` (items in chunks of
  65,536, `dot_ranks`), `topk_chunked` (K = 50, seen excluded) and the bare matmul + top-k, whose
  score block is 256 users x 1M items (1 GB; 1,024 users would be 4 GB).

Peak resident memory (`resource.getrusage`, the process maximum so far) is read after each step, the
bare baseline last so that it does not hide the others. Wall and CPU seconds are both printed: on a
shared machine wall time includes waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from Datasets import leave_one_out, load
from Utils.evaluation import ITEM_CHUNK, csr_mask, evaluate_embeddings, target_ranks, topk_chunked
from Utils.io import positive_int, write_json_atomic
from Utils.metrics import ranking_metrics

ROOT = Path(__file__).resolve().parents[2]
SPORTS = ROOT.parent / "shared" / "data" / "amazon-sports" / "Sports_and_Outdoors.txt"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - t, 2), round(time.process_time() - c, 2)


def bare(user_vecs: torch.Tensor, item_vecs: torch.Tensor, k: int, users_per_block: int) -> None:
    """The floor: one matmul and one top-k per block of users, nothing excluded, nothing merged."""
    for s in range(0, len(user_vecs), users_per_block):
        (user_vecs[s : s + users_per_block] @ item_vecs.T).topk(k, dim=1)  # (b, D) @ (D, N+1)


def legacy_ranks(table_fn, split, stage: str) -> np.ndarray:
    """The evaluation before the chunked paths: a copy of each score block and a dense seen mask."""
    offsets, seen = split.seen(stage)
    targets = torch.from_numpy(split.targets(stage))
    out = []
    for s in range(0, split.n_users, 1024):
        rows = np.arange(s, min(s + 1024, split.n_users))
        scores = table_fn(rows)
        out.append(target_ranks(scores, targets[rows], csr_mask(offsets, seen, rows, split.n_items + 1)))
    return torch.cat(out).numpy()


def sports_shape(args, gen) -> dict:
    spec = f"seqtxt:{SPORTS}" if SPORTS.is_file() else "synthetic:scale=20k"
    split = leave_one_out(load(spec))
    U = torch.randn(split.n_users, args.dim, generator=gen)
    V = torch.randn(split.n_items + 1, args.dim, generator=gen)
    print(f"[sports] {split}  D={args.dim}")

    def user_fn(b):
        return U[b["row"]]

    def ours():
        return evaluate_embeddings(user_fn, V, split, "test", return_ranks=True)

    def chunked():
        return evaluate_embeddings(user_fn, V, split, "test", item_chunk=4096, return_ranks=True)

    (m_ours, r_ours), t_ours, c_ours = timed(ours)
    (_, r_chunked), t_chunked, c_chunked = timed(chunked)
    r_legacy, t_legacy, c_legacy = timed(lambda: legacy_ranks(lambda rows: U[rows] @ V.T, split, "test"))
    _, t_bare, c_bare = timed(lambda: bare(U, V, args.k, 1024))
    same_legacy = bool(np.array_equal(r_ours, r_legacy))
    n_diff = int((r_ours != r_chunked).sum())
    out = {
        "data": spec.split(":")[0] if spec.startswith("synthetic") else "Sports_and_Outdoors (seqtxt)",
        "users": split.n_users, "items": split.n_items, "dim": args.dim,
        "evaluate_embeddings_seconds": t_ours, "evaluate_embeddings_cpu_seconds": c_ours,
        "item_chunked_4096_seconds": t_chunked, "item_chunked_4096_cpu_seconds": c_chunked,
        "before_chunked_paths_seconds": t_legacy, "before_chunked_paths_cpu_seconds": c_legacy,
        "bare_matmul_topk_seconds": t_bare, "bare_matmul_topk_cpu_seconds": c_bare,
        "ratio_ours_to_bare_wall": round(t_ours / t_bare, 2), "ratio_ours_to_bare_cpu": round(c_ours / c_bare, 2),
        "ranks_equal_before_and_now": same_legacy, "ranks_differing_item_chunked": n_diff,
        "Recall@10_random_vectors": m_ours["Recall@10"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(f"[sports] evaluate_embeddings {t_ours:.2f} s (cpu {c_ours:.2f}) | item-chunked {t_chunked:.2f} s "
          f"| before {t_legacy:.2f} s | bare matmul+topk{args.k} {t_bare:.2f} s (cpu {c_bare:.2f}) | "
          f"ratio {t_ours / t_bare:.2f} wall, {c_ours / c_bare:.2f} cpu | ranks equal to before: {same_legacy}, "
          f"differing when item-chunked: {n_diff}")
    return out


def million_shape(args, gen) -> dict:
    rss0 = peak_rss_mb()
    data, t_build, c_build = timed(lambda: load(f"synthetic:scale={args.scale}"))
    split = leave_one_out(data)
    del data
    rss_data = peak_rss_mb()
    rows = np.arange(min(args.users, split.n_users))
    U = torch.randn(split.n_users, args.dim, generator=gen)
    V = torch.randn(split.n_items + 1, args.dim, generator=gen)
    print(f"[1m] {split}; {len(rows):,} users evaluated; world built in {t_build:.1f} s; "
          f"peak RSS {rss_data:.0f} MB")

    def user_fn(b):
        return U[b["row"]]

    (metrics, ranks), t_eval, c_eval = timed(
        lambda: evaluate_embeddings(user_fn, V, split, "test", users=rows, return_ranks=True))
    rss_eval = peak_rss_mb()
    offsets, seen = split.seen("test")
    (ids, _), t_topk, c_topk = timed(lambda: topk_chunked(U[rows], V, args.k, exclude=(offsets, seen),
                                                           rows=rows))
    rss_topk = peak_rss_mb()
    # the ranks agree with the lists: a target ranked r <= K sits at position r (no ties among floats)
    targets = split.targets("test")[rows]
    pos = np.array([np.nonzero(ids[i].numpy() == targets[i])[0][:1].tolist() or [-1] for i in range(len(rows))])[:, 0]
    agree = bool(np.all(np.where(ranks <= args.k, pos + 1 == ranks, pos == -1)))
    _, t_bare, c_bare = timed(lambda: bare(U[rows], V, args.k, args.bare_users))
    rss_bare = peak_rss_mb()
    out = {
        "data": f"synthetic:scale={args.scale}", "users": len(rows), "items": split.n_items, "dim": args.dim,
        "k": args.k, "item_chunk": ITEM_CHUNK, "user_batch": 1024, "bare_users_per_block": args.bare_users,
        "build_world_seconds": t_build, "peak_rss_mb_after_world": round(rss_data, 1),
        "evaluate_embeddings_seconds": t_eval, "evaluate_embeddings_cpu_seconds": c_eval,
        "topk_chunked_seconds": t_topk, "topk_chunked_cpu_seconds": c_topk,
        "bare_matmul_topk_seconds": t_bare, "bare_matmul_topk_cpu_seconds": c_bare,
        "ratio_eval_to_bare_wall": round(t_eval / t_bare, 2), "ratio_eval_to_bare_cpu": round(c_eval / c_bare, 2),
        "ratio_topk_to_bare_wall": round(t_topk / t_bare, 2), "ratio_topk_to_bare_cpu": round(c_topk / c_bare, 2),
        "peak_rss_mb_after_eval": round(rss_eval, 1), "peak_rss_mb_after_topk": round(rss_topk, 1),
        "peak_rss_mb_after_bare": round(rss_bare, 1), "peak_rss_mb_at_start": round(rss0, 1),
        "ranks_agree_with_topk_lists": agree, "Recall@50_random_vectors": metrics["Recall@50"],
        "metrics_random_vectors": ranking_metrics(ranks, (10, 50)),
    }
    print(f"[1m] evaluate_embeddings {t_eval:.1f} s (cpu {c_eval:.1f}), peak RSS {rss_eval:.0f} MB | "
          f"topk_chunked K={args.k} {t_topk:.1f} s (cpu {c_topk:.1f}), peak RSS {rss_topk:.0f} MB | "
          f"bare matmul+topk {t_bare:.1f} s (cpu {c_bare:.1f}), peak RSS {rss_bare:.0f} MB | "
          f"ranks agree with the top-{args.k} lists: {agree}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="sports,1m", help="comma list of sports, 1m")
    p.add_argument("--scale", default="1m", help="synthetic scale of the large shape")
    p.add_argument("--users", type=positive_int, default=10_000, help="users evaluated at the large shape")
    p.add_argument("--dim", type=positive_int, default=64)
    p.add_argument("--k", type=positive_int, default=50)
    p.add_argument("--bare-users", type=positive_int, default=256, help="users per bare score block at 1m")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not shapes or set(shapes) - {"sports", "1m"}:
        p.error(f"--shapes {args.shapes!r}: expected a comma list of sports, 1m")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(args.seed)
    result = {"benchmark": "full-ranking evaluation at scale", "threads": args.threads,
              "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    if "sports" in shapes:
        result["sports"] = sports_shape(args, gen)
    if "1m" in shapes:
        result["1m"] = million_shape(args, gen)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
