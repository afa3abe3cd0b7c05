"""DPP speed: fast greedy MAP (incremental Cholesky, O(N k^2)) against the naive greedy that
computes log-determinants explicitly (O(N k^4) with batched slogdet), per list, for N candidates
and k picks.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.dpp_speed \
        --out assets/DPP/results/speed.json

Prints a markdown table (ms per list; median of --repeats runs) and writes it as json with --out.
Both methods must return the same list; the script checks that on every case.
"""

import argparse
import statistics
import time

import torch

from Utils.io import load_model_file, model_dir, positive_int, write_json_atomic


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and dispatch caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="100,500,1000")
    p.add_argument("--ks", default="10,50")
    p.add_argument("--dim", type=positive_int, default=64, help="item feature dimension")
    p.add_argument("--batch", type=positive_int, default=64, help="lists per batched fast-greedy call")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        sizes = [positive_int(x) for x in args.sizes.split(",")]
        ks = [positive_int(x) for x in args.ks.split(",")]
    except argparse.ArgumentTypeError as e:
        p.error(f"--sizes/--ks: {e}")
    if max(ks) > min(sizes):
        p.error(f"--ks {args.ks}: every k must be <= the smallest list size in --sizes {args.sizes}")
    torch.set_flush_denormal(True)
    dpp = load_model_file(model_dir("Re-ranking", "DPP") / "model.py", "dpp_model")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in sizes:
        feats = torch.randn(args.batch, n, args.dim, generator=gen, dtype=torch.float64)
        scores = torch.rand(args.batch, n, generator=gen, dtype=torch.float64)
        L = dpp.build_kernel(
            scores=scores, similarity=dpp.similarity_matrix(feats, ridge=1e-3), theta=0.7
        )  # (batch, n, n)
        for k in ks:
            one = L[:1]
            fast = dpp.greedy_map(one, max_length=k).selected[0]
            naive = dpp.naive_greedy_map(one[0], max_length=k)
            same = bool(torch.equal(fast[fast >= 0], naive))
            t_fast = timed(lambda one=one, k=k: dpp.greedy_map(one, max_length=k), args.repeats)
            t_batch = (
                timed(lambda k=k, L=L: dpp.greedy_map(L, max_length=k), args.repeats) / args.batch
            )
            t_naive = timed(
                lambda one=one, k=k: dpp.naive_greedy_map(one[0], max_length=k),
                max(1, args.repeats // 3 if n * k >= 50_000 else args.repeats),
            )
            rows.append(
                {
                    "N": n,
                    "k": k,
                    "fast_ms": 1e3 * t_fast,
                    "fast_batched_ms": 1e3 * t_batch,
                    "naive_ms": 1e3 * t_naive,
                    "speedup": t_naive / t_fast,
                    "same_list": same,
                }
            )
            r = rows[-1]
            print(
                f"N={n:5d} k={k:3d}  fast {r['fast_ms']:8.2f} ms  "
                f"batched {r['fast_batched_ms']:7.3f} "
                f"ms/list  naive {r['naive_ms']:9.1f} ms  x{r['speedup']:.0f}  same={same}",
                flush=True,
            )
    print(
        f"\n| N | k | fast greedy (ms/list) | fast, batched x{args.batch} (ms/list) "
        "| naive log-det greedy (ms/list) | speed-up | same list |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['N']} | {r['k']} | {r['fast_ms']:.2f} | {r['fast_batched_ms']:.3f} | "
            f"{r['naive_ms']:.1f} | {r['speedup']:.0f}x | {r['same_list']} |"
        )
    if args.out:
        write_json_atomic(
            args.out,
            {"threads": torch.get_num_threads(), "dim": args.dim, "batch": args.batch, "rows": rows},
        )


if __name__ == "__main__":
    main()
