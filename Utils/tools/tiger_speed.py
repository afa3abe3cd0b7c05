"""TIGER training speed on CPU: steps per second before and after, side by side in one process.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.tiger_speed --threads 1 \
        --out assets/TIGER/results/speed_cpu.json

One training step = the paper-size model (4 + 4 layers, d 128, 6 x 64 heads, MLP 1024, codes
3 x 256 + 64), a batch of 256 (history -> next item) examples drawn the way the TIGER demo draws
them (examples of similar history length together, the padding they share trimmed), forward,
backward, gradient clipping and AdamW. The semantic IDs are random codes of the paper's sizes: the
step's cost does not depend on which codes the items have. Histories come from Beauty when
../shared/data is there, else from the synthetic default.

Variants (same initial weights, same batches, same order):
  before   fp32; F.dropout and F.scaled_dot_product_attention (`cheap_cpu_dropout=False`); AdamW
  bf16     before + bf16 autocast (this CPU's AMX / AVX-512 BF16 run bf16 matmuls)
  dropout  before + cheap dropout masks and the attention written out (`cheap_cpu_dropout=True`)
  after    bf16 autocast + cheap dropout + fused AdamW: what the demo runs on CPU
  compile  after + torch.compile of every block (only with --compile: minutes of compiling)
Rounds interleave the variants (before, bf16, ..., before, bf16, ...), so load from other processes
falls on all of them alike; steps/s is the median over rounds, in process CPU time (the machine may be
shared) and in wall time.

Also printed: the step's FLOPs (torch.utils.flop_counter, forward + backward) and the share of this
CPU's matmul peak they reach (a 2048^3 GEMM timed here, fp32 and bf16); the encoder tokens that
padding would add without the demo's length grouping; and the loss check: every variant's loss on the
same weights with dropout off (difference to fp32), and with --check-steps N, N training steps of
`before` and `after` from the same initial weights (mean loss of the last half of the steps).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import time
from pathlib import Path

import torch

from Utils.io import load_model_file, model_dir, positive_int, write_json_atomic

VARIANTS = {  # name: (bf16 autocast, cheap_cpu_dropout, fused AdamW, torch.compile)
    "before": (False, False, False, False),
    "bf16": (True, False, False, False),
    "dropout": (False, True, False, False),
    "after": (True, True, True, False),
    "compile": (True, True, True, True),
}
SHARED_BEAUTY = Path(__file__).resolve().parents[3] / "shared" / "data" / "amazon-beauty" / "Beauty.txt"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n^3 GEMM in `dtype`, in process CPU time (one thread: a core's peak)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    a @ b  # warm-up: oneDNN / MKL pick and cache their kernels
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n**3 / best / 1e9


def demo_batches(data_spec: str, n_batches: int, batch_size: int, max_history: int, seed: int):
    """Batches of (user, history, target) as the TIGER demo draws them, and padding statistics."""
    import Datasets

    data = Datasets.load(data_spec)
    split = Datasets.leave_one_out(data)
    train = Datasets.RecallDataset(split, max_len=max_history)
    g = torch.Generator().manual_seed(seed)
    hist = train.tensors["history"]
    hist_len = (hist != 0).sum(1)
    order = torch.argsort(hist_len.double() + torch.rand(len(train), generator=g).double())
    n_full = len(train) // batch_size
    chunks = order[: n_full * batch_size].view(n_full, batch_size)
    picked = torch.randperm(n_full, generator=g)[:n_batches]
    batches = []
    for i in picked.tolist():
        b = train[chunks[i]]
        h = b["history"]
        batches.append((b["user"], h[:, -max(int((h != 0).sum(1).max()), 1):], b["target"]))
    # encoder tokens (1 user token + 4 per history item) per example, over one epoch of batches
    T = 4
    random_rows = torch.randperm(len(train), generator=g)[: n_full * batch_size].view(n_full, -1)
    real = float((1 + T * hist_len.double()).mean())
    padded_full = 1 + T * max_history
    random_trim = float((1 + T * hist_len[random_rows].max(1).values.double()).mean())
    grouped_trim = float((1 + T * hist_len[chunks].max(1).values.double()).mean())
    padding = {"real_tokens_per_example": real,
               "computed_tokens_per_example": {"padded_to_max_history": padded_full,
                                               "random_batches_trimmed": random_trim,
                                               "length_grouped_trimmed (demo)": grouped_trim}}
    return data, batches, padding


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="default: shared Beauty when present, else synthetic")
    p.add_argument("--batches", type=positive_int, default=6, help="distinct batches, cycled")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--rounds", type=positive_int, default=3, help="timed rounds per variant")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    p.add_argument("--check-steps", type=int, default=0,
                   help="train this many steps with before and after and compare their losses")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the numbers as json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    spec = args.data or (f"seqtxt:{SHARED_BEAUTY}" if SHARED_BEAUTY.is_file() else "synthetic")
    here = model_dir("Recall", "TIGER")
    tg = load_model_file(here / "model.py", "tiger_model_speed")
    rq = load_model_file(here / "rqvae.py", "tiger_rqvae_speed")

    data, batches, padding = demo_batches(spec, args.batches, args.batch_size, 20, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    sids = rq.deduplicate(torch.randint(0, 256, (data.n_items, 3), generator=g))
    dedup = max(64, int(sids[:, -1].max()) + 1)
    cfg = dict(code_sizes=(256, 256, 256, dedup), max_history=20)
    torch.manual_seed(args.seed)
    init = tg.TIGER(tg.TIGERConfig(**cfg)).state_dict()
    widths = [b[1].shape[1] for b in batches]
    print(f"data {spec}: {len(batches)} batches of {args.batch_size}, history widths {widths} items "
          f"(encoder tokens 1 + 4 x width); {args.threads} thread(s); {cpu_name()}; torch "
          f"{torch.__version__}; bf16 matmuls supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")

    def make(name: str) -> dict:
        bf16, cheap, fused, compiled = VARIANTS[name]
        model = tg.TIGER(tg.TIGERConfig(**cfg, cheap_cpu_dropout=cheap))
        model.load_state_dict(copy.deepcopy(init))
        model.set_catalogue(sids)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01,
                                **({"fused": True} if fused else {}))
        if compiled:
            for block in [*model.encoder, *model.decoder]:
                block.compile(dynamic=True)
        return {"model": model, "opt": opt, "bf16": bf16, "cpu": [], "wall": [], "loss": []}

    def step(v: dict, batch) -> float:
        user, history, target = batch
        with torch.autocast("cpu", dtype=torch.bfloat16) if v["bf16"] else contextlib.nullcontext():
            loss = v["model"].loss(user=user, history=history, target=target)
        v["opt"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(v["model"].parameters(), 1.0)
        v["opt"].step()
        return loss.item()

    names = [n for n in VARIANTS if n != "compile" or args.compile]
    runs = {n: make(n) for n in names}
    warmup = {}
    for n, v in runs.items():  # first steps: allocator, oneDNN kernels, compilation
        t = time.perf_counter()
        for b in batches if n == "compile" else batches[:1]:
            step(v, b)
        warmup[n] = time.perf_counter() - t
    for r in range(args.rounds):
        for v in runs.values():
            c, t = time.process_time(), time.perf_counter()
            for b in batches:
                v["loss"].append(step(v, b))
            v["cpu"].append((time.process_time() - c) / len(batches))
            v["wall"].append((time.perf_counter() - t) / len(batches))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {v['cpu'][-1]:.3f}" for n, v in runs.items()) + " CPU s/step", flush=True)

    # FLOPs of one step (forward + backward) per batch, counted once in fp32
    from torch.utils.flop_counter import FlopCounterMode

    counter_model = make("before")["model"]
    flops = []
    for user, history, target in batches:
        with FlopCounterMode(display=False) as fc:
            counter_model.loss(user=user, history=history, target=target).backward()
        flops.append(fc.get_total_flops())
    gflop = statistics.mean(flops) / 1e9
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}

    # loss agreement with dropout off: same weights, same batches
    with torch.no_grad():
        ref_model = make("before")["model"].eval()
        ref = statistics.mean(ref_model.loss(user=u, history=h, target=t).item() for u, h, t in batches)
        eval_loss = {}
        for n in names:
            m = make(n)
            m["model"].eval()
            with torch.autocast("cpu", dtype=torch.bfloat16) if m["bf16"] else contextlib.nullcontext():
                eval_loss[n] = statistics.mean(m["model"].loss(user=u, history=h, target=t).item()
                                               for u, h, t in batches)

    rows = []
    base_cpu = statistics.median(runs["before"]["cpu"])
    base_wall = statistics.median(runs["before"]["wall"])
    print(f"\none step: {gflop:.1f} GFLOP (forward + backward, mean of the batches); matmul peak of "
          f"this CPU on {args.threads} thread(s): fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} "
          "GFLOP/s (2048^3 GEMM)")
    print("| variant | steps/s (CPU time) | speed-up | steps/s (wall) | speed-up (wall) | GFLOP/s | "
          "share of matmul peak | loss, dropout off (before: "
          f"{ref:.4f}) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, v in runs.items():
        cpu, wall = statistics.median(v["cpu"]), statistics.median(v["wall"])
        dt = "bf16" if v["bf16"] else "fp32"
        row = {"variant": n, "bf16": v["bf16"], "cheap_cpu_dropout": VARIANTS[n][1],
               "fused_adamw": VARIANTS[n][2], "compile": VARIANTS[n][3],
               "cpu_seconds_per_step": cpu, "wall_seconds_per_step": wall,
               "steps_per_second_cpu": 1 / cpu, "steps_per_second_wall": 1 / wall,
               "speedup_cpu": base_cpu / cpu, "speedup_wall": base_wall / wall,
               "gflop_per_second": gflop / cpu, "peak_dtype": dt,
               "share_of_matmul_peak": gflop / cpu / peak[dt], "eval_loss": eval_loss[n],
               "eval_loss_minus_before": eval_loss[n] - ref, "warmup_seconds": warmup[n],
               "rounds_cpu_seconds_per_step": v["cpu"]}
        rows.append(row)
        print(f"| {n} | {1 / cpu:.3f} | {base_cpu / cpu:.2f}x | {1 / wall:.3f} | {base_wall / wall:.2f}x "
              f"| {gflop / cpu:.0f} | {row['share_of_matmul_peak']:.1%} of {dt} | "
              f"{eval_loss[n]:.4f} ({eval_loss[n] - ref:+.4f}) |")
    print(f"padding: {padding['real_tokens_per_example']:.1f} real encoder tokens per example; "
          "computed per example: " + ", ".join(
              f"{k} {val:.1f}" for k, val in padding["computed_tokens_per_example"].items()))

    check = None
    if args.check_steps > 0:  # the same training steps in both configurations, from the same init
        g = torch.Generator().manual_seed(args.seed + 1)
        order = torch.randint(len(batches), (args.check_steps,), generator=g).tolist()
        curves = {}
        for n in ("before", "after"):
            torch.manual_seed(args.seed)  # the same dropout stream where the code allows it
            v = make(n)
            curves[n] = [step(v, batches[i]) for i in order]
        half = args.check_steps // 2
        means = {n: statistics.mean(c[half:]) for n, c in curves.items()}
        check = {"steps": args.check_steps, "mean_loss_last_half": means,
                 "difference": means["after"] - means["before"],
                 "relative_difference": (means["after"] - means["before"]) / means["before"],
                 "curves": curves}
        print(f"training check, {args.check_steps} steps from the same weights: mean loss of the last "
              f"{args.check_steps - half} steps before {means['before']:.4f}, after "
              f"{means['after']:.4f} ({check['relative_difference']:+.2%})")
    after = next(r for r in rows if r["variant"] == "after")
    print(f"after / before: {after['speedup_cpu']:.2f}x steps per second (CPU time), "
          f"{after['speedup_wall']:.2f}x (wall)")
    if args.out:
        write_json_atomic(args.out, {
            "tool": "Utils.tools.tiger_speed", "data": spec, "batch_size": args.batch_size,
            "history_widths": widths, "threads": args.threads, "cpu": cpu_name(),
            "torch": torch.__version__, "rounds": args.rounds, "gflop_per_step": gflop,
            "matmul_peak_gflops": peak, "eval_loss_before": ref, "variants": rows,
            "padding": padding, "training_check": check, "warmup_seconds": warmup})
        print("written to", args.out)


if __name__ == "__main__":
    main()
