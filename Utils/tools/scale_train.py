"""SASRec and YoutubeDNN trained on the million-item world (`synthetic:scale=1m`), each with two ways of
making negatives at a million classes: a sampled softmax with log-Q correction, and in-batch negatives
with log-Q correction. One run per process, so each peak RSS is that run's alone.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.scale_train --all --time-budget 600 --eval-users 10000 \
        --out-dir assets/Scale/results

runs the four runs one after the other (`train_1m_<model>_<scheme>.json`); one run alone:

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.scale_train --model sasrec --scheme inbatch \
        --time-budget 600 --eval-users 10000 --out assets/Scale/results/train_1m_sasrec_inbatch.json

Schemes (the models' own losses; nothing here computes a softmax):

- SASRec `sampled`: `loss="sampled_ce"`, `shared_negatives=True`, `logq=True`: S uniform negatives per
  batch, shared by every position, logits corrected by log(S/N). `inbatch`: `loss="inbatch"`,
  `logq=True`: the other positions' targets, each logit corrected by log p_j (p_j = item j's share of
  the training targets). The full softmax (`loss="ce"`) would build a (positions x 1M) logits block.
- YoutubeDNN `sampled`: `YoutubeDNN.loss`, M negatives per batch drawn from Q ~ (count + 1)^0.75 (the
  demo's sampler), log-Q corrected. `inbatch`: `YoutubeDNN.inbatch_loss`, the batch's other targets,
  log p_j corrected, accidental hits masked.

Training examples are cut one batch at a time: SASRec reads one row per user (690,000 x 51 int64,
282 MB); YoutubeDNN keeps only the positions of its 8.1M (history, target) examples
(`LOOSplit.next_item_index`, 65 MB) and gathers each batch's histories (`next_item_batch`), where the
materialised examples would take about 6.7 GB.

Embedding tables are updated row-sparsely: each step the rows the batch touches (history, targets,
negatives) are copied into a small table that the model trains in place of the full one (ids renumbered),
and Adam updates those rows only, with its moments kept for every row ("lazy" Adam, as
`torch.optim.SparseAdam`). A dense Adam step over a 1M x 64 table takes about 1.2 s on one thread of
this machine; the rows of one batch take milliseconds. The other weights use ordinary Adam.

No validation during training (one validation pass over 690,000 users x 1M items would take longer than
the training): each run trains for `--time-budget` seconds (checked every step) and is tested once, on a
fixed sample of users (`--eval-users`, drawn with seed 0), by full ranking over every item with seen
items excluded, in item chunks (`Utils.evaluation.evaluate_embeddings`), beside popularity on the same
users. Peak RSS is the process maximum (`resource.getrusage`), read after loading, after training, after
the test and after the popularity baseline. `--no-logq` drops the log-Q correction (ablation).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

KS = (10, 50)
RUNS = [("sasrec", "sampled"), ("sasrec", "inbatch"), ("youtubednn", "sampled"), ("youtubednn", "inbatch")]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kilobytes


class RowSparseTables:
    """Train embedding tables row-sparsely: `swap(ids)` puts, in each table's place, a small table of the
    rows in `ids` (row 0 = padding first) and returns the renumbering; after backward, `step()` applies
    Adam to those rows of the full tables (moments kept for every row; rows not in the batch untouched,
    as torch.optim.SparseAdam) and puts the full tables back."""

    def __init__(self, modules: list[nn.Embedding], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.modules = modules
        self.full = [m.weight.detach() for m in modules]
        self.m = [torch.zeros_like(w) for w in self.full]
        self.v = [torch.zeros_like(w) for w in self.full]
        self.lr, (self.b1, self.b2), self.eps, self.t = lr, betas, eps, 0
        self.rows: torch.Tensor | None = None
        self.local: list[nn.Parameter] = []

    def swap(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: any int64 tensor of the global ids the step will read. Returns the sorted unique rows
        (rows[0] = 0); global id g becomes local id searchsorted(rows, g)."""
        rows = torch.unique(torch.cat([ids.reshape(-1), ids.new_zeros(1)]))  # sorted: rows[0] = 0
        self.rows = rows
        self.local = []
        for mod, full in zip(self.modules, self.full, strict=True):
            p = nn.Parameter(full[rows].clone())
            mod.weight = p
            self.local.append(p)
        return rows

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        rows = self.rows[1:]  # never row 0 (padding)
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, full, m, v in zip(self.local, self.full, self.m, self.v, strict=True):
            g = p.grad[1:] if p.grad is not None else torch.zeros_like(p[1:])
            m_r = m[rows].mul_(self.b1).add_(g, alpha=1 - self.b1)
            v_r = v[rows].mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            m[rows], v[rows] = m_r, v_r
            full[rows] = p[1:] - self.lr * (m_r / c1) / ((v_r / c2).sqrt() + self.eps)
        self.restore()

    def restore(self) -> None:
        for mod, full in zip(self.modules, self.full, strict=True):
            mod.weight = nn.Parameter(full, requires_grad=False)


def local(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The local ids (positions in `rows`, the sorted rows of a `RowSparseTables.swap`) of global ids."""
    return torch.searchsorted(rows, ids.contiguous())


def build_sasrec(args, split):
    from Utils.io import load_model_file, model_dir

    sas = load_model_file(model_dir("Recall", "SASRec") / "model.py", "sasrec_model")
    cfg = sas.SASRecConfig(n_items=split.n_items, max_len=args.max_len, dim=args.dim, n_blocks=2, n_heads=2,
                           dropout=args.dropout, loss="sampled_ce" if args.scheme == "sampled" else "inbatch",
                           n_negatives=args.negatives, shared_negatives=True, logq=not args.no_logq)
    model = sas.SASRec(cfg)
    sequences = torch.from_numpy(split.train_sequences(args.max_len))  # (U, L+1), left-padded
    lengths = (sequences != 0).sum(1)
    inputs, targets = sequences[:, :-1], sequences[:, 1:]
    is_target = (targets != 0) & (inputs != 0)
    n_examples = int(is_target.sum())
    counts = torch.bincount(targets[is_target], minlength=split.n_items + 1).clamp(min=1).double()
    log_q = (counts / counts.sum()).log().float()  # log p_j, the share of the training targets
    gen = torch.Generator().manual_seed(args.seed)
    N = split.n_items

    def batches():
        while True:  # epochs of length-bucketed batches (Utils.loops.seqrec's order)
            key = lengths.double() + torch.rand(len(lengths), generator=gen, dtype=torch.double)
            chunks = torch.argsort(key).split(args.batch_size)
            for i in torch.randperm(len(chunks), generator=gen).tolist():
                idx = chunks[i]
                width = max(2, int(lengths[idx].max()))
                yield sequences[idx][:, -width:]

    def step(seq, tables: RowSparseTables):
        neg = torch.randint(1, N + 1, (args.negatives,), generator=gen) if args.scheme == "sampled" else None
        rows = tables.swap(seq if neg is None else torch.cat([seq.reshape(-1), neg]))
        seq_l = local(rows, seq)
        lq = None
        if args.scheme == "inbatch" and not args.no_logq:  # the model reads log_q[pos], pos in local ids
            lq = torch.zeros(N + 1)
            lq[: len(rows)] = log_q[rows]
        loss = model.loss(seq_l[:, :-1], seq_l[:, 1:], negatives=None if neg is None else local(rows, neg),
                          log_q=lq)
        n = int(((seq[:, 1:] != 0) & (seq[:, :-1] != 0)).sum())
        return loss, n

    def user_fn(batch):
        h = batch["history"]
        width = max(1, int((h != 0).sum(1).max()))
        return model.user_embedding(h[:, -width:])

    return model, [model.item_embedding], batches(), step, user_fn, model.item_embeddings, n_examples, {
        "config": {k: v for k, v in vars(cfg).items()}, "train_sequences": len(sequences)}


def build_youtubednn(args, split):
    from Utils.io import load_model_file, model_dir

    ytd = load_model_file(model_dir("Recall", "YoutubeDNN") / "model.py", "youtubednn_model")
    cfg = ytd.YoutubeDNNConfig(n_items=split.n_items, dim=args.dim, hidden=(256, 128), use_example_age=True)
    model = ytd.YoutubeDNN(config=cfg)
    g = split.next_item_index(max_per_user=args.max_per_user, seed=args.seed)  # (S,) positions, no histories
    counts = torch.from_numpy(split.item_counts()).double()
    q = (counts + 1.0) ** args.neg_alpha  # the demo's sampler: smoothed unigram^alpha
    q[0] = 0.0
    q = q / q.sum()
    cdf = torch.cumsum(q, 0).float()
    log_expected = torch.log(args.negatives * q.clamp(min=1e-30)).float()
    if args.no_logq:
        log_expected = torch.zeros_like(log_expected)
    t_counts = torch.bincount(torch.from_numpy(split.train_items[g]), minlength=split.n_items + 1)
    log_p = (t_counts.clamp(min=1).double() / len(g)).log().float()  # batch-sampling probability of j
    if args.no_logq:
        log_p = torch.zeros_like(log_p)
    t_end, t_start = int(split.train_timestamps.max()), int(split.train_timestamps.min())
    gen = torch.Generator().manual_seed(args.seed)
    N = split.n_items

    def batches():
        while True:
            order = torch.randperm(len(g), generator=gen).numpy()
            for s in range(0, len(order), args.batch_size):
                yield split.next_item_batch(g[order[s : s + args.batch_size]], args.max_len)

    def step(batch, tables: RowSparseTables):
        hist, target = batch["history"], batch["target"]
        age = ((t_end - batch["target_ts"]).float() / max(1, t_end - t_start))
        if args.scheme == "sampled":
            neg = torch.searchsorted(cdf, torch.rand(args.negatives, generator=gen)).clamp(1, N)
            rows = tables.swap(torch.cat([hist.reshape(-1), target, neg]))
            u = model.user_tower(history=local(rows, hist), example_age=age)
            loss = model.loss(user_vec=u, target=local(rows, target), negatives=local(rows, neg),
                              log_q_target=log_expected[target], log_q_negatives=log_expected[neg])
        else:
            rows = tables.swap(torch.cat([hist.reshape(-1), target]))
            u = model.user_tower(history=local(rows, hist), example_age=age)
            loss = model.inbatch_loss(user_vec=u, target=local(rows, target), log_q_target=log_p[target])
        return loss, len(target)

    def user_fn(batch):
        return model.user_tower(history=batch["history"])  # example age 0, as at serving

    return model, [model.history_embedding, model.item_embedding], batches(), step, user_fn, \
        model.item_tower, len(g), {"config": {k: v for k, v in vars(cfg).items()}}


def run(args) -> dict:
    from Datasets import leave_one_out, load
    from Utils.evaluation import evaluate_embeddings, popularity_metrics
    from Utils.io import write_json_atomic
    from Utils.training import cpu_setup

    cpu_setup(args.threads)
    torch.manual_seed(args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    spec = f"synthetic:scale={args.scale}"
    split = leave_one_out(load(spec))
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_load = peak_rss_mb()
    print(f"{split}; loaded in {load_s:.1f} s (cpu {load_cpu:.1f}), peak RSS {rss_load:.0f} MB", flush=True)
    eval_rows = np.sort(np.random.default_rng(0).choice(split.n_users, min(args.eval_users, split.n_users),
                                                        replace=False))
    build = build_sasrec if args.model == "sasrec" else build_youtubednn
    model, tables_mods, batches, step, user_fn, item_vectors, n_examples, info = build(args, split)
    tables = RowSparseTables(tables_mods, args.lr)
    table_params = {id(m.weight) for m in tables_mods}
    dense = [p for p in model.parameters() if id(p) not in table_params]
    opt = torch.optim.Adam(dense, lr=args.lr)
    rss_built = peak_rss_mb()
    print(f"{args.model}/{args.scheme}: {n_examples:,} training examples per epoch; "
          f"{sum(p.numel() for p in dense):,} dense weights + {sum(t.numel() for t in tables.full):,} "
          f"row-sparse embedding weights; peak RSS {rss_built:.0f} MB", flush=True)
    model.train()
    steps, seen, losses = 0, 0, []
    t_train, c_train = time.perf_counter(), time.process_time()
    next_print = 60.0
    while True:
        elapsed = time.perf_counter() - t_train
        if elapsed >= args.time_budget or (args.max_steps and steps >= args.max_steps):
            break
        batch = next(batches)
        loss, n = step(batch, tables)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss {loss.item()} at step {steps + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tables.step()
        steps, seen = steps + 1, seen + n
        losses.append(loss.item())
        if elapsed >= next_print:
            print(f"  {elapsed:6.0f} s: step {steps:,}, {seen:,} examples, loss (last 100) "
                  f"{np.mean(losses[-100:]):.4f}, peak RSS {peak_rss_mb():.0f} MB", flush=True)
            next_print += 60.0
    train_s, train_cpu = time.perf_counter() - t_train, time.process_time() - c_train
    rss_train = peak_rss_mb()
    tables.restore()
    model.eval()
    t_e, c_e = time.perf_counter(), time.process_time()
    with torch.no_grad():
        metrics = evaluate_embeddings(user_fn, item_vectors().detach(), split, "test", max_len=args.max_len,
                                      ks=KS, users=eval_rows)
    eval_s, eval_cpu = time.perf_counter() - t_e, time.process_time() - c_e
    rss_test = peak_rss_mb()
    if args.popularity_from and Path(args.popularity_from).is_file():
        prev = json.loads(Path(args.popularity_from).read_text())
        if prev["eval_users"] != len(eval_rows) or prev["data"] != spec:
            raise ValueError(f"--popularity-from {args.popularity_from}: other users or data")
        pop, pop_from = prev["baseline"]["metrics"], args.popularity_from
    else:
        pop, pop_from = popularity_metrics(split, "test", ks=KS, users=eval_rows), None
    rss_eval = peak_rss_mb()
    print("test      ", {k: round(v, 4) for k, v in metrics.items()})
    print("popularity", {k: round(v, 4) for k, v in pop.items()})
    epoch_fraction = seen / n_examples
    res = {
        "model": {"sasrec": "SASRec", "youtubednn": "YoutubeDNN"}[args.model], "scheme": args.scheme,
        "logq": not args.no_logq,
        "data": spec, "users": split.n_users, "items": split.n_items,
        "protocol": ("leave-one-out, test split, full ranking over every item (item-chunked), seen items "
                     f"excluded, on {len(eval_rows):,} users drawn with seed 0; no validation: trained for "
                     "the time budget"),
        "metrics": metrics, "baseline": {"name": "popularity", "metrics": pop, "copied_from": pop_from},
        "eval_users": len(eval_rows), "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
        "steps": steps, "examples_seen": seen, "examples_per_epoch": n_examples,
        "epochs_done": round(epoch_fraction, 3),
        "examples_per_second": round(seen / train_s, 1), "examples_per_cpu_second": round(seen / train_cpu, 1),
        "loss_first_100": round(float(np.mean(losses[:100])), 4) if losses else None,
        "loss_last_100": round(float(np.mean(losses[-100:])), 4) if losses else None,
        "eval_seconds": round(eval_s, 1), "eval_cpu_seconds": round(eval_cpu, 1),
        "load_seconds": round(load_s, 1), "load_cpu_seconds": round(load_cpu, 1),
        "peak_rss_mb_after_load": rss_load, "peak_rss_mb_after_build": rss_built,
        "peak_rss_mb_after_train": rss_train, "peak_rss_mb_after_test": rss_test, "peak_rss_mb": rss_eval,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "flags": {k: v for k, v in vars(args).items() if k not in ("out", "all", "out_dir")}, **info,
    }
    print(f"trained {train_s:.0f} s ({train_cpu:.0f} s CPU): {steps:,} steps, {seen:,} examples "
          f"({epoch_fraction:.2f} epochs), {seen / train_s:,.0f} examples/s; test {eval_s:.0f} s; "
          f"peak RSS {rss_eval:.0f} MB")
    if args.out:
        write_json_atomic(args.out, res)
        print(f"wrote {args.out}")
    print("RESULT " + json.dumps(res))
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["sasrec", "youtubednn"], default="sasrec")
    p.add_argument("--scheme", choices=["sampled", "inbatch"], default="inbatch")
    p.add_argument("--all", action="store_true", help="the four runs, one process each, one at a time")
    p.add_argument("--out-dir", default="assets/Scale/results", help="--all: train_1m_<model>_<scheme>.json here")
    p.add_argument("--scale", default="1m")
    p.add_argument("--time-budget", type=float, default=600.0, help="training seconds per run")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no cap)")
    p.add_argument("--eval-users", type=int, default=10000)
    p.add_argument("--popularity-from", default=None,
                   help="take the popularity baseline from this earlier run's json (same users, same data)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 128 user sequences (SASRec), 1024 examples (YoutubeDNN)")
    p.add_argument("--negatives", type=int, default=1024, help="sampled: negatives per batch")
    p.add_argument("--neg-alpha", type=float, default=0.75, help="YoutubeDNN sampled: Q ~ (count + 1)^alpha")
    p.add_argument("--no-logq", action="store_true", help="ablation: no log-Q correction (either scheme)")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--max-per-user", type=int, default=50, help="YoutubeDNN: examples per user (demo default)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2, help="SASRec")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 128 if args.model == "sasrec" else 1024
    if not args.all:
        return run(args)
    pop_from = None
    for model, scheme in RUNS:
        out = Path(args.out_dir) / f"train_{args.scale}_{model}_{scheme}.json"
        cmd = [sys.executable, "-m", "Utils.tools.scale_train", "--model", model, "--scheme", scheme,
               "--scale", args.scale, "--time-budget", str(args.time_budget), "--eval-users", str(args.eval_users),
               "--negatives", str(args.negatives), "--threads", str(args.threads), "--seed", str(args.seed),
               "--max-steps", str(args.max_steps), "--out", str(out)]
        if pop_from:
            cmd += ["--popularity-from", str(pop_from)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
        pop_from = out
    return None


if __name__ == "__main__":
    main()
