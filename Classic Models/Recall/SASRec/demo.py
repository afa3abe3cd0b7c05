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
# The note's figure (the same run, then the last block's attention over one user's history):
#
#     .venv/bin/python "Classic Models/Recall/SASRec/demo.py" --threads 1 \
#         --plot-attention assets/SASRec/attention_synthetic.png
#
# Keep the trained model, then serve it without training: one user's top-10, the user and item
# vectors for faiss, and the scoring path as ONNX (checked against PyTorch with onnxruntime):
#
#     .venv/bin/python "Classic Models/Recall/SASRec/demo.py" --threads 1 --save /tmp/sasrec.pt
#     .venv/bin/python "Classic Models/Recall/SASRec/demo.py" --threads 1 --load /tmp/sasrec.pt \
#         --recommend U00042 --export-vectors /tmp/sasrec.npz --export-onnx /tmp/sasrec.onnx
#
# A long run keeps its training state after every epoch with `--checkpoint PATH`; after an
# interruption, the same command with `--resume` goes on from the last finished epoch and ends as
# the uninterrupted run would have (the recall ledger runs Sports this way):
#
#     .venv/bin/python "Classic Models/Recall/SASRec/demo.py" --threads 1 --checkpoint /tmp/sasrec.state.pt
#     .venv/bin/python "Classic Models/Recall/SASRec/demo.py" --threads 1 --checkpoint /tmp/sasrec.state.pt --resume
#
# Beauty, the note's Results (5-7 min per seed on one thread of a shared 2-core machine):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/SASRec/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --loss ce --seed 0 \
#         --batch-size 32 --epochs 200 --patience 3 --time-budget 900 --target-ndcg 0.0512 \
#         --out assets/SASRec/results/beauty_ce_batch32_seed0.json

# %%
import argparse
import json
from pathlib import Path

import numpy as np
import torch

import Datasets
from Utils.demo_io import load_weights, read_checkpoint
from Utils.io import add_common_args, load_model_file, model_dir, positive_int
from Utils.loops.seqrec import (
    add_seqrec_args,
    ddp_setup,
    describe,
    refit_setup,
    side_inputs_note,
    train_and_report,
)
from Utils.training import cpu_setup, pick_device, set_seed

sas = load_model_file(model_dir("Recall", "SASRec") / "model.py", "sasrec_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description="SASRec demo"), epochs=8, lr=1e-3,
                         batch_size=128)
parser.add_argument("--loss", default="ce", choices=list(sas.LOSSES),
                    help="bce: the paper's BCE, one negative; ce: full softmax; sampled_ce: sampled "
                         "softmax over --negatives uniform negatives; gbce: gSASRec's gBCE")
parser.add_argument("--blocks", type=positive_int, default=2)
parser.add_argument("--heads", type=positive_int, default=2)
parser.add_argument("--negatives", type=positive_int, default=256,
                    help="S for --loss sampled_ce and gbce")
parser.add_argument("--shared-negatives", action="store_true",
                    help="sampled_ce: one draw of S negatives for the whole batch (default: per position)")
parser.add_argument("--logq", action="store_true",
                    help="sampled_ce, inbatch: log-Q correction (inbatch: Q = the items' target frequency)")
parser.add_argument("--gbce-t", type=float, default=0.75, help="gbce: calibration t in [0, 1]")
parser.add_argument("--adam-beta2", type=float, default=0.999,
                    help="Adam's beta2 (RecTools / eSASRec: 0.98)")
parser.add_argument("--ffn-dim", type=positive_int, default=None,
                    help="point-wise FFN width; default: dim, the paper's square W1, W2 (RecBole: 256)")
parser.add_argument("--block", default="pre_ln", choices=list(sas.BLOCKS),
                    help="pre_ln: the paper's sub-layer wrapper; sasrec: the official code's block "
                         "(queries normalised, residuals from the normalised tensor; RecTools)")
parser.add_argument("--init", default="normal", choices=list(sas.INITS),
                    help="normal: N(0, 0.02); xavier: Xavier-normal for every matrix (RecTools)")
parser.add_argument("--no-embed-scale", action="store_true",
                    help="no sqrt(dim) factor on the item embeddings (RecTools)")
parser.add_argument("--item-dropout", type=float, default=0.0,
                    help="dropout on the item table at each training step, inputs and scored items "
                         "(RecTools: the model's dropout)")
parser.add_argument("--plot-attention", default=None, metavar="PATH",
                    help="after training, save the last block's attention over one user's history")
args = add_seqrec_args(parser, onnx=True).parse_args()
if not 0.0 < args.adam_beta2 < 1.0:
    parser.error(f"--adam-beta2 must be in (0, 1), got {args.adam_beta2}")
if not 0.0 <= args.item_dropout < 1.0:
    parser.error(f"--item-dropout must be in [0, 1), got {args.item_dropout}")

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)
device, ddp = ddp_setup(args, device)  # --ddp under torchrun: one shard per process

# %% [markdown]
# ## Data: leave-one-out split; one training row per user (the last max_len + 1 training items)

# %%
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the SASRec demo")
side_inputs_note(data, "SASRec")
loaded = read_checkpoint(args.load, demo="SASRec", data=data) if args.load else None
if loaded is not None:  # --load: the saved config decides the model and its input length
    saved_config = loaded["models"]["model"]["config"]
    args.max_len, args.loss = saved_config["max_len"], saved_config["loss"]
split = refit_setup(args, Datasets.leave_one_out(data))  # --refit-from: train + validation
print(split)
sequences = torch.from_numpy(split.train_sequences(args.max_len))  # (U, L+1), left-padded
train_set = Datasets.TensorDictDataset({"seq": sequences})
n_positions = int(((sequences[:, 1:] != 0) & (sequences[:, :-1] != 0)).sum())
print(f"{len(train_set):,} user sequences, {n_positions:,} next-item targets per epoch")

# %% [markdown]
# ## Model and training

# %%
config = sas.SASRecConfig(**saved_config) if loaded is not None else sas.SASRecConfig(
    n_items=split.n_items, max_len=args.max_len, dim=args.dim, n_blocks=args.blocks,
    n_heads=args.heads, dropout=args.dropout, loss=args.loss, n_negatives=args.negatives,
    shared_negatives=args.shared_negatives, logq=args.logq, gbce_t=args.gbce_t,
    ffn_dim=args.ffn_dim or 0,  # 0: the config's default, dim
    block=args.block, init=args.init, scale_embeddings=not args.no_embed_scale,
    item_dropout=args.item_dropout,
)
model = sas.SASRec(config).to(device)
if loaded is not None:
    load_weights(model, loaded["models"]["model"]["state"], args.load)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, args.adam_beta2))
gen = torch.Generator().manual_seed(args.seed)
print(model)


# --loss inbatch --logq: log p_j, item j's share of the training targets (how often it is a batch's positive)
log_q = None
if args.loss == "inbatch" and args.logq:
    targets = sequences[:, 1:][(sequences[:, 1:] != 0) & (sequences[:, :-1] != 0)]
    counts = torch.bincount(targets, minlength=split.n_items + 1).clamp(min=1).double()
    log_q = (counts / counts.sum()).log().float().to(device)


def train_step(batch):
    seq = batch["seq"].to(device)
    return model.loss(seq[:, :-1], seq[:, 1:], log_q=log_q)  # inputs s_1..s_L, targets s_2..s_{L+1}


# %% [markdown]
# ## Train with early stopping on validation NDCG@10, then the test by full ranking beside popularity
# (`Utils.loops.seqrec.train_and_report`: length-bucketed batches, evaluation chunks cut to their longest
# history, one user's top-10, the curve and the RESULT line — the last line printed)

# %%
result = train_and_report(
    name="SASRec", model=model, train_step=train_step,
    score=lambda history, history_ts: model.score(history),  # SASRec uses no timestamps
    optimizer=optimizer, data=data, split=split, sequences=sequences, train_set=train_set,
    gen=gen, args=args, device=device, loaded=loaded, ddp=ddp,
    user_vector=lambda history, history_ts: model.user_embedding(history),
)


# %% [markdown]
# ## What the model computes: the last block's attention over one user's history
# Row t is the state after reading item t (the query), column j an earlier item (the key): the
# softmax weights of Eq. (2), averaged over the heads; each row sums to 1, the upper triangle is
# masked (causality). `--plot-attention PATH` saves it (the note's figure).

# %%
def plot_attention(weights: np.ndarray, labels: list[str], path: str, title: str) -> None:
    """Heatmap of a causal (L, L) weight matrix; masked cells (future keys) left blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = len(labels)
    shown = np.where(np.tril(np.ones((L, L), dtype=bool)), weights, np.nan)
    fig, ax = plt.subplots(figsize=(3 + 0.55 * L, 2 + 0.45 * L), dpi=120)
    im = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=float(np.nanmax(shown)))
    fig.colorbar(im, ax=ax, label="attention weight")
    for r in range(L):
        for c in range(r + 1):
            ax.text(c, r, f"{shown[r, c]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if shown[r, c] < 0.6 * np.nanmax(shown) else "black")
    ax.set_xticks(range(L), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(L), labels, fontsize=7)
    ax.set_xlabel("key: earlier item j")
    ax.set_ylabel("query: state after item t")
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
    hist_items, _ = split.history("test", args.max_len)  # (U, max_len), what the test scores read
    lengths = (hist_items != 0).sum(1)
    row = int(np.argmax((lengths >= 8) & (lengths <= 14)))  # a whole history that fits a plot
    items = [int(i) for i in hist_items[row] if i]
    model.eval()
    weights = model.attention_weights(torch.tensor([items], device=device))  # (1, H, L, L)
    weights = weights.mean(1)[0].cpu().numpy()  # (L, L), averaged over heads
    labels = [short_label(t, describe(data, i)) for t, i in enumerate(items)]
    plot_attention(weights, labels, args.plot_attention,
                   f"SASRec, last block, softmax attention (rows sum to 1), user {split.users[row]}")
    print(f"user {split.users[row]}: attention of the last state over its history:")
    for t, i in enumerate(items):
        print(f"  {weights[-1, t]:.2f}  {describe(data, i)}")
    print("attention plot saved to", args.plot_attention)
    print("RESULT " + json.dumps(result))  # the RESULT line stays the last line printed
