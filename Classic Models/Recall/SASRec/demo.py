# %% [markdown]
# # SASRec — demo
#
# Train SASRec (Kang & McAuley, ICDM 2018) the way the paper does — every position of each user's
# training sequence predicts the next item, in one pass — with the paper's BCE loss (one sampled
# negative per position) or a softmax cross-entropy; evaluate it by full ranking (leave-one-out,
# seen items excluded) beside popularity; print one user's history and top recommendations.
#
# CPU command (synthetic default, 10 s wall with one thread on a shared 2-core machine; it beats
# popularity several times over):
#
#     .venv/bin/python "Classic Models/Recall/SASRec/demo.py" --threads 1
#
# Beauty, the note's Results (about 20-30 min on one thread of a loaded 2-core machine):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/SASRec/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --loss ce \
#         --epochs 200 --patience 3 --time-budget 1500 --target-ndcg 0.0512 \
#         --plot assets/SASRec/beauty_ce_curve.png --out assets/SASRec/results/beauty_ce.json

# %%
import argparse
from pathlib import Path

import torch

import Datasets
from Utils.io import add_common_args, load_model_file
from Utils.seqrec import add_seqrec_args, train_and_report
from Utils.training import cpu_setup, pick_device, set_seed

HERE = Path(__file__).resolve().parent


sas = load_model_file(HERE / "model.py", "sasrec_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description="SASRec demo"), epochs=8, lr=1e-3,
                         batch_size=128)
parser.add_argument("--loss", default="ce", choices=["bce", "ce", "sampled_ce"],
                    help="bce: the paper's Eq. (8); ce: full softmax; sampled_ce: sampled softmax")
parser.add_argument("--blocks", type=int, default=2)
parser.add_argument("--heads", type=int, default=2)
parser.add_argument("--negatives", type=int, default=256, help="S for --loss sampled_ce")
parser.add_argument("--ffn-dim", type=int, default=0,
                    help="point-wise FFN width; 0 = dim, the paper's square W1, W2 (RecBole: 256)")
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
train_set = Datasets.TensorDictDataset({"seq": sequences})
n_positions = int(((sequences[:, 1:] != 0) & (sequences[:, :-1] != 0)).sum())
print(f"{len(train_set):,} user sequences, {n_positions:,} next-item targets per epoch")

# %% [markdown]
# ## Model and training

# %%
config = sas.SASRecConfig(
    n_items=split.n_items, max_len=args.max_len, dim=args.dim, n_blocks=args.blocks,
    n_heads=args.heads, dropout=args.dropout, loss=args.loss, n_negatives=args.negatives,
    ffn_dim=args.ffn_dim,
)
model = sas.SASRec(config).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
gen = torch.Generator().manual_seed(args.seed)
print(model)


def train_step(batch):
    seq = batch["seq"].to(device)
    return model.loss(seq[:, :-1], seq[:, 1:])  # inputs s_1..s_L, targets s_2..s_{L+1}


# %% [markdown]
# ## Train with early stopping on validation NDCG@10, then the test by full ranking beside popularity
# (`Utils.seqrec.train_and_report`: length-bucketed batches, evaluation chunks cut to their longest
# history, one user's top-10, the curve and the RESULT line — the last line printed)

# %%
train_and_report(
    name="SASRec", model=model, train_step=train_step,
    score=lambda history, history_ts: model.score(history),  # SASRec uses no timestamps
    optimizer=optimizer, data=data, split=split, sequences=sequences, train_set=train_set,
    gen=gen, args=args, device=device,
)
