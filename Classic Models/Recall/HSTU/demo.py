# %% [markdown]
# # HSTU — demo
#
# Train HSTU (Zhai et al., ICML 2024) as a generative sequential recommender: every position of each
# user's training sequence predicts the next item (autoregressive), with the official sampled
# softmax over L2-normalised embeddings (temperature 0.05) or a full softmax; evaluate it by full
# ranking (leave-one-out, seen items excluded) beside popularity; print one user's history and top
# recommendations. Timestamps feed the relative attention bias when the data has them.
#
# CPU command (synthetic default, 13 s wall with one thread on a shared 2-core machine; it beats
# popularity several times over):
#
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --threads 1
#
# Beauty, the note's Results (about 18 min on one thread of a shared 2-core machine):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/HSTU/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --loss ce \
#         --temperature 0.1 --epochs 200 --patience 3 --time-budget 900 --target-ndcg 0.0512 \
#         --plot assets/HSTU/beauty_ce_t01_curve.png --out assets/HSTU/results/beauty_ce_t01.json

# %%
import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Utils.evaluation import Timer, evaluate_full_ranking, popularity_metrics
from Utils.io import add_common_args, print_result
from Utils.plotting import plot_curves
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent


def load_model_module():
    spec = importlib.util.spec_from_file_location("hstu_model", HERE / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hstu = load_model_module()

# %%
parser = add_common_args(argparse.ArgumentParser(description="HSTU demo"), epochs=8, lr=1e-3,
                         batch_size=128)
parser.add_argument("--loss", default="sampled_softmax", choices=["sampled_softmax", "ce"],
                    help="sampled_softmax: the official objective; ce: full softmax over all items")
parser.add_argument("--dim", type=int, default=64)
parser.add_argument("--blocks", type=int, default=4, help="official amzn-books config: 4")
parser.add_argument("--heads", type=int, default=4, help="official amzn-books config: 4")
parser.add_argument("--qk-dim", type=int, default=16)
parser.add_argument("--v-dim", type=int, default=16)
parser.add_argument("--dropout", type=float, default=0.5)
parser.add_argument("--max-len", type=int, default=50)
parser.add_argument("--negatives", type=int, default=512, help="S for --loss sampled_softmax")
parser.add_argument("--temperature", type=float, default=0.05)
parser.add_argument("--patience", type=int, default=5, help="validation checks without improvement")
parser.add_argument("--eval-every", type=int, default=1)
parser.add_argument("--time-budget", type=float, default=None, help="stop after this many train s")
parser.add_argument("--target-ndcg", type=float, default=None,
                    help="record the wall time until validation NDCG@10 first reaches this value")
parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
parser.add_argument("--plot", default=None, help="save the training curve (PNG) here")
args = parser.parse_args()

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)
KS = (5, 10, 20, 50, 200)

# %% [markdown]
# ## Data: leave-one-out split; one training row per user (the last max_len + 1 training items)

# %%
data = Datasets.load(args.data, verbose=True)
split = Datasets.leave_one_out(data)
print(split)
sequences = torch.from_numpy(split.train_sequences(args.max_len))  # (U, L+1), left-padded
seq_ts = torch.from_numpy(split.train_sequence_timestamps(args.max_len))  # (U, L+1) same windows
use_time = bool(data.has_timestamps)  # seqtxt has positions only: the bias is positional
print(f"timestamps in the relative attention bias: {use_time}")
train_set = Datasets.TensorDictDataset({"seq": sequences, "ts": seq_ts})
n_positions = int(((sequences[:, 1:] != 0) & (sequences[:, :-1] != 0)).sum())
print(f"{len(train_set):,} user sequences, {n_positions:,} next-item targets per epoch")

# %% [markdown]
# ## Model and training

# %%
config = hstu.HSTUConfig(
    n_items=split.n_items, max_len=args.max_len, dim=args.dim, n_blocks=args.blocks,
    n_heads=args.heads, qk_dim=args.qk_dim, v_dim=args.v_dim, dropout=args.dropout,
    loss=args.loss, n_negatives=args.negatives, temperature=args.temperature,
)
model = hstu.HSTU(config).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
gen = torch.Generator().manual_seed(args.seed)
print(model)


def train_step(batch):
    seq = batch["seq"].to(device)
    ts = batch["ts"][:, :-1].to(device) if use_time else None
    return model.loss(seq[:, :-1], seq[:, 1:], ts)  # inputs s_1..s_L, targets s_2..s_{L+1}


def score_fn(batch):
    h = batch["history"]  # (b, max_len), left-padded
    width = max(1, int((h != 0).sum(1).max()))  # cut columns that are padding for every row
    ts = batch["history_ts"][:, -width:] if use_time else None
    return model.score(h[:, -width:], ts)


def rows_by_length(stage):
    """Split rows ordered by history length, so each evaluation chunk holds users of similar length
    and score_fn can cut it short (the metrics are means: the order changes nothing else)."""
    offsets, _ = split.seen(stage)
    return np.argsort(np.diff(offsets), kind="stable")


EVAL_ROWS = {stage: rows_by_length(stage) for stage in ("valid", "test")}


lengths = (sequences != 0).sum(1)  # (U,) real items per training row


def length_bucketed_batches(epoch):
    """Users of similar length share a batch, and each batch is cut to its longest row: the model
    never runs on columns that are padding for everyone (positions count from the newest item, so
    the cut changes nothing, as tests/test_sasrec.py checks). Batch order is shuffled each epoch."""
    key = lengths.double() + torch.rand(len(lengths), generator=gen, dtype=torch.double)
    chunks = torch.argsort(key).split(args.batch_size)  # random order within one length
    for i in torch.randperm(len(chunks), generator=gen).tolist():
        batch = train_set[chunks[i]]
        width = max(2, int(lengths[chunks[i]].max()))  # every real item of the batch
        yield {k: v[:, -width:] for k, v in batch.items()}


t_start = time.perf_counter()
reached = {}


def evaluate():
    metrics = evaluate_full_ranking(score_fn, split, "valid", max_len=args.max_len, ks=KS,
                                    device=device, users=EVAL_ROWS["valid"])
    if args.target_ndcg is not None and not reached and metrics["NDCG@10"] >= args.target_ndcg:
        reached["wall_seconds"] = time.perf_counter() - t_start  # training + validation so far
        reached["epoch"] = n_evals[0] + 1
    metrics["wall_seconds"] = time.perf_counter() - t_start
    n_evals[0] += 1
    return metrics


n_evals = [0]  # validation checks so far (one per epoch with --eval-every 1)
history = fit(
    model, train_step, length_bucketed_batches, optimizer,
    args.epochs, evaluate, metric="NDCG@10", patience=args.patience, eval_every=args.eval_every,
    n_batches=train_set.num_batches(args.batch_size), desc="HSTU", time_budget=args.time_budget,
)
wall = time.perf_counter() - t_start
print(f"trained {len(history.epochs)} epochs: {history.train_seconds:.1f}s training, "
      f"{wall:.1f}s wall with validation; best validation epoch {history.best_epoch}")
if args.target_ndcg is not None:
    print(f"validation NDCG@10 >= {args.target_ndcg}: "
          + (f"reached after {reached['wall_seconds']:.0f}s wall (epoch {reached['epoch']})"
             if reached else "not reached"))

# %% [markdown]
# ## Test: full ranking beside popularity (same split, same protocol)

# %%
model.eval()
cpu0 = time.process_time()
with Timer() as t_eval:
    test_metrics = evaluate_full_ranking(score_fn, split, "test", max_len=args.max_len, ks=KS,
                                         device=device, users=EVAL_ROWS["test"])
valid_best = {k: v for k, v in history.epochs[history.best_epoch - 1].items()
              if "@" in k or k == "MRR"}
pop = popularity_metrics(split, "test", ks=KS)
eval_cpu = time.process_time() - cpu0  # CPU time: comparable across machine loads
print(f"one full-ranking evaluation of {split.n_users:,} users x {split.n_items:,} items: "
      f"{t_eval.seconds:.2f}s wall, {eval_cpu:.2f}s CPU")
print("test      ", {k: round(v, 4) for k, v in test_metrics.items()})
print("popularity", {k: round(v, 4) for k, v in pop.items()})

# %% [markdown]
# ## One user: history and top-10 recommendations (seen items excluded)

# %%
row = int(np.argmax(np.diff(split.train_offsets) >= 5))  # a user with some history
hist_items, _ = split.history("test", args.max_len)
h = torch.from_numpy(hist_items[row : row + 1]).to(device)
hist_ts = split.history("test", args.max_len)[1]
h_ts = torch.from_numpy(hist_ts[row : row + 1]).to(device) if use_time else None
with torch.no_grad():
    scores = model.score(h, h_ts)[0].cpu()
offsets, seen = split.seen("test")
scores[torch.from_numpy(seen[offsets[row] : offsets[row + 1]])] = -torch.inf
top = torch.topk(scores, 10).indices.tolist()


def describe(i: int) -> str:
    """Title/category when the data has them; the keyword tokens of seqtxt Beauty otherwise."""
    text = data.item_text(i)
    if "keywords" in data.items and data.items["keywords"].iloc[i]:
        text += " " + " ".join(data.items["keywords"].iloc[i][:4])
    return text


print(f"user {split.users[row]}: last items of the history")
for i in [int(x) for x in hist_items[row] if x][-8:]:
    print("   ", describe(i))
print(f"held-out next item: {describe(int(split.test_items[row]))}")
print("top-10 recommendations:")
for r, i in enumerate(top, 1):
    hit = "  <- held-out item" if i == int(split.test_items[row]) else ""
    print(f"  {r:2d}. {describe(i)}{hit}")

# %%
if args.plot:
    xs, ys = history.curve("NDCG@10")
    curves = {"validation NDCG@10": (xs, ys)}
    if args.target_ndcg is not None:
        curves[f"target {args.target_ndcg}"] = (xs, [args.target_ndcg] * len(xs))
    print("curve saved to", plot_curves(curves, args.plot, ylabel="NDCG@10",
                                        title=f"HSTU ({args.loss}) on {data.name}"))

# the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
print_result(
    model=f"HSTU ({args.loss})", data=args.data,
    protocol="leave-one-out, full ranking over all items, seen items excluded",
    metrics=test_metrics, baseline={"name": "popularity", "metrics": pop},
    train_seconds=history.train_seconds, eval_seconds=t_eval.seconds, epochs=len(history.epochs),
    params=count_params(model), valid_metrics=valid_best, best_epoch=history.best_epoch,
    eval_cpu_seconds=eval_cpu, wall_seconds=wall, target_ndcg=args.target_ndcg,
    time_to_target_seconds=reached.get("wall_seconds"), time_to_target_epoch=reached.get("epoch"),
    curve=[{k: v for k, v in e.items() if k in ("epoch", "loss", "NDCG@10", "wall_seconds")}
           for e in history.epochs],
    config=vars(args), out=args.out,
)
