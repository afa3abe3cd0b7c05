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
from pathlib import Path

import torch

import Datasets
from Utils.io import add_common_args, load_model_file
from Utils.seqrec import add_seqrec_args, train_and_report
from Utils.training import cpu_setup, pick_device, set_seed

HERE = Path(__file__).resolve().parent


hstu = load_model_file(HERE / "model.py", "hstu_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description="HSTU demo"), epochs=8, lr=1e-3,
                         batch_size=128)
parser.add_argument("--loss", default="sampled_softmax", choices=["sampled_softmax", "ce"],
                    help="sampled_softmax: the official objective; ce: full softmax over all items")
parser.add_argument("--blocks", type=int, default=4, help="official amzn-books config: 4")
parser.add_argument("--heads", type=int, default=4, help="official amzn-books config: 4")
parser.add_argument("--qk-dim", type=int, default=16)
parser.add_argument("--v-dim", type=int, default=16)
parser.add_argument("--negatives", type=int, default=512, help="S for --loss sampled_softmax")
parser.add_argument("--temperature", type=float, default=0.05)
args = add_seqrec_args(parser).parse_args()

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)

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


# %% [markdown]
# ## Train with early stopping on validation NDCG@10, then the test by full ranking beside popularity
# (`Utils.seqrec.train_and_report`: length-bucketed batches, evaluation chunks cut to their longest
# history, one user's top-10, the curve and the RESULT line — the last line printed)

# %%
train_and_report(
    name="HSTU", model=model, train_step=train_step,
    score=lambda history, history_ts: model.score(history, history_ts if use_time else None),
    optimizer=optimizer, data=data, split=split, sequences=sequences, train_set=train_set,
    gen=gen, args=args, device=device,
)
