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
# The note's figure (the same run, then the last layer's pointwise attention over one user's
# history):
#
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --threads 1 \
#         --plot-attention assets/HSTU/attention_synthetic.png
#
# Keep the trained model, then serve it without training (one user's top-10, vectors for faiss):
#
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --threads 1 --save /tmp/hstu.pt
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --threads 1 --load /tmp/hstu.pt \
#         --recommend U00042 --export-vectors /tmp/hstu.npz
#
# A long run keeps its training state after every epoch with `--checkpoint PATH`; after an
# interruption, the same command with `--resume` goes on from the last finished epoch and ends as
# the uninterrupted run would have (the recall ledger runs Sports this way):
#
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --threads 1 --checkpoint /tmp/hstu.state.pt
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --threads 1 --checkpoint /tmp/hstu.state.pt --resume
#
# Beauty, the note's Results (about 20 min per seed on one thread of a shared 2-core machine):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/HSTU/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --loss ce \
#         --temperature 0.1 --epochs 200 --patience 3 --time-budget 1500 --target-ndcg 0.0512 \
#         --out assets/HSTU/results/beauty_ce_t01_budget1500.json

# %%
import argparse
import json
from pathlib import Path

import numpy as np
import torch

import Datasets
from Utils.demo_io import load_weights, read_checkpoint
from Utils.io import add_common_args, load_model_file, model_dir, positive_float, positive_int
from Utils.loops.seqrec import (
    add_seqrec_args,
    ddp_setup,
    describe,
    refit_setup,
    side_inputs_note,
    train_and_report,
)
from Utils.training import cpu_setup, pick_device, set_seed

hstu = load_model_file(model_dir("Recall", "HSTU") / "model.py", "hstu_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description="HSTU demo"), epochs=8, lr=1e-3,
                         batch_size=128)
parser.add_argument("--loss", default="sampled_softmax", choices=["sampled_softmax", "ce"],
                    help="sampled_softmax: the official objective; ce: full softmax over all items")
parser.add_argument("--blocks", type=positive_int, default=4, help="official amzn-books config: 4")
parser.add_argument("--heads", type=positive_int, default=4, help="official amzn-books config: 4")
parser.add_argument("--qk-dim", type=positive_int, default=16)
parser.add_argument("--v-dim", type=positive_int, default=16)
parser.add_argument("--negatives", type=positive_int, default=512, help="S for --loss sampled_softmax")
parser.add_argument("--temperature", type=positive_float, default=0.05)
parser.add_argument("--plot-attention", default=None, metavar="PATH",
                    help="after training, save the last layer's attention over one user's history")
args = add_seqrec_args(parser).parse_args()

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)
device, ddp = ddp_setup(args, device)  # --ddp under torchrun: one shard per process

# %% [markdown]
# ## Data: leave-one-out split; one training row per user (the last max_len + 1 training items)

# %%
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the HSTU demo")
side_inputs_note(data, "HSTU")
loaded = read_checkpoint(args.load, demo="HSTU", data=data) if args.load else None
if loaded is not None:  # --load: the saved config decides the model and its input length
    saved_config = loaded["models"]["model"]["config"]
    args.max_len, args.loss = saved_config["max_len"], saved_config["loss"]
split = refit_setup(args, Datasets.leave_one_out(data))  # --refit-from: train + validation
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
config = hstu.HSTUConfig(**saved_config) if loaded is not None else hstu.HSTUConfig(
    n_items=split.n_items, max_len=args.max_len, dim=args.dim, n_blocks=args.blocks,
    n_heads=args.heads, qk_dim=args.qk_dim, v_dim=args.v_dim, dropout=args.dropout,
    loss=args.loss, n_negatives=args.negatives, temperature=args.temperature,
)
model = hstu.HSTU(config).to(device)
if loaded is not None:
    load_weights(model, loaded["models"]["model"]["state"], args.load)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
gen = torch.Generator().manual_seed(args.seed)
print(model)


def train_step(batch):
    seq = batch["seq"].to(device)
    ts = batch["ts"][:, :-1].to(device) if use_time else None
    return model.loss(seq[:, :-1], seq[:, 1:], timestamps=ts)  # inputs s_1..s_L, targets s_2..s_{L+1}


# %% [markdown]
# ## Train with early stopping on validation NDCG@10, then the test by full ranking beside popularity
# (`Utils.loops.seqrec.train_and_report`: length-bucketed batches, evaluation chunks cut to their longest
# history, one user's top-10, the curve and the RESULT line — the last line printed)

# %%
result = train_and_report(
    name="HSTU", model=model, train_step=train_step,
    score=lambda history, history_ts: model.score(history, history_ts if use_time else None),
    optimizer=optimizer, data=data, split=split, sequences=sequences, train_set=train_set,
    gen=gen, args=args, device=device, loaded=loaded, ddp=ddp,
    user_vector=lambda history, history_ts: model.user_embedding(
        history, history_ts if use_time else None),
)


# %% [markdown]
# ## What the model computes: the last layer's pointwise attention over one user's history
# Row t is the state after reading item t (the query), column j an earlier item (the key). HSTU has
# no softmax: the plotted weight is Eq. (2)'s SiLU(q_t·k_j + rab^{p,t}) / n (n = max_len), averaged
# over the heads. It can be negative, and a row's sum (printed beside it) is not 1: its size is the
# "intensity" that softmax would normalise away. `--plot-attention PATH` saves it (the note's figure).

# %%
def plot_pointwise_attention(weights: np.ndarray, labels: list[str], path: str, title: str) -> None:
    """Heatmap of a causal (L, L) weight matrix that may be negative (diverging colours, 0 = white);
    masked cells (future keys) left blank; each row's sum written beside its label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = len(labels)
    shown = np.where(np.tril(np.ones((L, L), dtype=bool)), weights, np.nan)
    top = float(np.nanmax(np.abs(shown)))
    fig, ax = plt.subplots(figsize=(3.5 + 0.6 * L, 2 + 0.45 * L), dpi=120)
    im = ax.imshow(shown, cmap="RdBu_r", vmin=-top, vmax=top)
    fig.colorbar(im, ax=ax, label="weight SiLU(q·k + rab) / n")
    for r in range(L):
        for c in range(r + 1):
            ax.text(c, r, f"{shown[r, c] * 1e3:.1f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(shown[r, c]) > 0.6 * top else "black")
    rows = [f"{lab}  (sum {np.nansum(shown[r]) * 1e3:.1f})" for r, lab in enumerate(labels)]
    ax.set_xticks(range(L), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(L), rows, fontsize=7)
    ax.set_xlabel("key: earlier item j   (cell values × 1e-3)")
    ax.set_ylabel("query: state after item t   (row sum × 1e-3)")
    ax.set_title(title, fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def short_label(t: int, text: str) -> str:
    """'3. Yara Baby Classic Baby Sham… [Baby Care]': position, cut title, whole category."""
    title, _, category = text.partition(" [")
    title = title if len(title) <= 26 else title[:25] + "…"
    return f"{t + 1}. {title}" + (f" [{category}" if category else "")


if args.plot_attention:
    hist_items, hist_ts = split.history("test", args.max_len)  # what the test scores read
    lengths = (hist_items != 0).sum(1)
    row = int(np.argmax((lengths >= 8) & (lengths <= 14)))  # a whole history that fits a plot
    real = hist_items[row] != 0
    items = torch.from_numpy(hist_items[row][real]).unsqueeze(0).to(device)  # (1, L)
    ts = torch.from_numpy(hist_ts[row][real]).unsqueeze(0).to(device) if use_time else None
    model.eval()
    weights = model.attention_weights(items, ts).mean(1)[0].cpu().numpy()  # (L, L), head mean
    labels = [short_label(t, describe(data, int(i))) for t, i in enumerate(items[0].tolist())]
    plot_pointwise_attention(
        weights, labels, args.plot_attention,
        f"HSTU, last layer, pointwise SiLU attention (no softmax), user {split.users[row]}")
    print(f"user {split.users[row]}: weights of the last state over its history "
          f"(sum {weights[-1].sum():.4f}, not 1):")
    for t, i in enumerate(items[0].tolist()):
        print(f"  {weights[-1, t]:+.4f}  {describe(data, i)}")
    print("attention plot saved to", args.plot_attention)
    print("RESULT " + json.dumps(result))  # the RESULT line stays the last line printed
