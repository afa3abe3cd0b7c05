# %% [markdown]
# # BERT4Rec — demo
#
# Train BERT4Rec (Sun et al., CIKM 2019) the way the paper does — a bidirectional Transformer over
# each user's training sequence, a share ρ of its items hidden behind [MASK] and predicted with a
# softmax over all items (the Cloze task), fresh masks every epoch — then serve it by appending
# [MASK] after the history; evaluate by full ranking (leave-one-out, seen items excluded) beside
# popularity; print one user's history and top recommendations.
#
# CPU command (synthetic default, 10 epochs, about 25 s of CPU time with one thread; NDCG@10 about
# 2.4 times popularity's):
#
#     .venv/bin/python "Classic Models/Recall/BERT4Rec/demo.py" --threads 1
#
# The note's figure (the same run, then the last layer's attention over one user's history with
# [MASK] appended — both directions):
#
#     .venv/bin/python "Classic Models/Recall/BERT4Rec/demo.py" --threads 1 \
#         --plot-attention assets/BERT4Rec/attention_synthetic.png
#
# Keep the trained model, then serve it without training (one user's top-10, vectors for faiss):
#
#     .venv/bin/python "Classic Models/Recall/BERT4Rec/demo.py" --threads 1 --save /tmp/bert4rec.pt
#     .venv/bin/python "Classic Models/Recall/BERT4Rec/demo.py" --threads 1 --load /tmp/bert4rec.pt \
#         --recommend U00042 --export-vectors /tmp/bert4rec.npz
#
# Beauty, the note's Results (time-budgeted and resumable: the same command with --resume goes on
# after an interruption; the lab log, assets/BERT4Rec/results/README.md, has the exact run):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/BERT4Rec/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --seed 0 \
#         --mask-prob 0.6 --dropout 0.5 --attention-dropout 0.2 --batch-size 256 --lr 1e-3 \
#         --epochs 1000 --patience 10 --eval-every 2 --time-budget 1500 \
#         --checkpoint /tmp/bert4rec_beauty.state.pt --out assets/BERT4Rec/results/beauty_seed0.json

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
    describe,
    refit_setup,
    side_inputs_note,
    train_and_report,
)
from Utils.training import cpu_setup, pick_device, set_seed

b4r = load_model_file(model_dir("Recall", "BERT4Rec") / "model.py", "bert4rec_model")

# %%
# defaults for the synthetic default (small, dense data: more steps per epoch, a lower ρ); the paper's
# Beauty setting (official run_beauty.sh, bert_config_beauty_64.json) is the header's Beauty command:
# 2 layers, 2 heads, d = 64, FFN 4d, max length 50, ρ = 0.6, batch 256, dropout 0.5 / 0.2 (hidden /
# attention), weight decay 0.01 — with learning rate 1e-3 instead of its 1e-4 (it trains 400,000 steps)
parser = add_common_args(argparse.ArgumentParser(description="BERT4Rec demo"), epochs=10, lr=2e-3,
                         batch_size=32)
parser.add_argument("--blocks", type=positive_int, default=2, help="Transformer layers L")
parser.add_argument("--heads", type=positive_int, default=2, help="attention heads h")
parser.add_argument("--ffn-dim", type=positive_int, default=None, help="FFN width; default 4 * dim")
parser.add_argument("--attention-dropout", type=float, default=0.1,
                    help="dropout on the attention weights, in [0, 1)")
parser.add_argument("--mask-prob", type=float, default=0.3,
                    help="ρ: share of a row's items hidden behind [MASK], in (0, 1] (paper: 0.6 on Beauty)")
parser.add_argument("--mask-last-prob", type=float, default=1 / 11,
                    help="share of rows that mask only their last item, in [0, 1] (official: 1/11)")
parser.add_argument("--max-predictions", type=positive_int, default=30,
                    help="at most this many masks per row (official max_predictions_per_seq)")
parser.add_argument("--weight-decay", type=float, default=0.01,
                    help="AdamW weight decay on the weight matrices and embeddings, >= 0 (paper: 0.01)")
parser.add_argument("--plot-attention", default=None, metavar="PATH",
                    help="after training, save the last layer's attention over one user's history "
                         "with [MASK] appended")
parser = add_seqrec_args(parser, ddp=False)
parser.set_defaults(dropout=0.2)  # the paper's Beauty run: --dropout 0.5
args = parser.parse_args()
args.loss = "cloze"  # one objective: the run's title and RESULT line name it
for name, low, high, closed in [("dropout", 0.0, 1.0, False), ("attention_dropout", 0.0, 1.0, False),
                                ("mask_last_prob", 0.0, 1.0, True)]:
    value = getattr(args, name)
    if not (low <= value <= high if closed else low <= value < high):
        parser.error(f"--{name.replace('_', '-')} must be in [{low}, {high}{']' if closed else ')'}, "
                     f"got {value}")
if not 0.0 < args.mask_prob <= 1.0:
    parser.error(f"--mask-prob must be in (0, 1], got {args.mask_prob}")
if not args.weight_decay >= 0.0:
    parser.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
if args.max_len < 2:
    parser.error(f"--max-len must be >= 2 (the history and [MASK]), got {args.max_len}")

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: leave-one-out split; one training row per user (its last max_len training items)

# %%
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the BERT4Rec demo")
side_inputs_note(data, "BERT4Rec")
loaded = read_checkpoint(args.load, demo="BERT4Rec", data=data) if args.load else None
if loaded is not None:  # --load: the saved config decides the model and its input length
    saved_config = loaded["models"]["model"]["config"]
    args.max_len = saved_config["max_len"]
split = refit_setup(args, Datasets.leave_one_out(data))  # --refit-from: train + validation
print(split)
sequences = torch.from_numpy(split.train_sequences(args.max_len))[:, 1:]  # (U, max_len), left-padded
train_set = Datasets.TensorDictDataset({"seq": sequences})
n_real = int((sequences != 0).sum())
print(f"{len(train_set):,} user sequences, {n_real:,} training items; about "
      f"{args.mask_prob:.0%} of each row masked afresh every epoch")

# %% [markdown]
# ## Model and training

# %%
config = b4r.BERT4RecConfig(**saved_config) if loaded is not None else b4r.BERT4RecConfig(
    n_items=split.n_items, max_len=args.max_len, dim=args.dim, n_blocks=args.blocks,
    n_heads=args.heads, ffn_dim=args.ffn_dim or 0, dropout=args.dropout,
    attention_dropout=args.attention_dropout, mask_prob=args.mask_prob,
    max_predictions=args.max_predictions, mask_last_prob=args.mask_last_prob,
)
model = b4r.BERT4Rec(config).to(device)
if loaded is not None:
    load_weights(model, loaded["models"]["model"]["state"], args.load)
# decoupled weight decay on weight matrices and embeddings, none on biases and LayerNorms (BERT's
# AdamWeightDecayOptimizer, which the official code trains with)
decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "bias" not in n]
no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "bias" not in n)]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
gen = torch.Generator().manual_seed(args.seed)
print(model)


def train_step(batch):
    seq = batch["seq"]  # (b, max_len), left-padded, on the CPU
    width = max(1, int((seq != 0).sum(1).max()))  # cut columns that are padding for every row
    history, targets = model.mask_items(seq[:, -width:], generator=gen)  # the Cloze task, fresh masks
    return model.loss(history.to(device), targets.to(device))


# %% [markdown]
# ## Train with early stopping on validation NDCG@10, then the test by full ranking beside popularity
# (`Utils.loops.seqrec.train_and_report`; scores come from the [MASK] appended after each history)

# %%
result = train_and_report(
    name="BERT4Rec", model=model, train_step=train_step,
    score=lambda history, history_ts: model.score(history),  # BERT4Rec uses no timestamps
    optimizer=optimizer, data=data, split=split, sequences=sequences, train_set=train_set,
    gen=gen, args=args, device=device, loaded=loaded,
    user_vector=lambda history, history_ts: model.user_embedding(history),
)


# %% [markdown]
# ## What the model computes: the last layer's attention, in both directions
# The serving input — one user's history, then [MASK] — and the last layer's softmax weights of
# Eq. (2), averaged over the heads: row t is the query, column j the key. Unlike SASRec's, the upper
# triangle is filled (an early item reads later ones); the bottom row is the [MASK] whose output
# scores every item. `--plot-attention PATH` saves it (the note's figure).

# %%
def plot_attention(weights: np.ndarray, labels: list[str], path: str, title: str) -> dict:
    """Heatmap of the full (L, L) weights, and the [MASK] row as bars; returns the numbers drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    L = len(labels)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6 + 0.9 * L, 2.5 + 0.45 * L), dpi=120,
                                 gridspec_kw={"width_ratios": [1.4, 1]})
    im = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=float(weights.max()))
    fig.colorbar(im, ax=ax, label="attention weight", fraction=0.046)
    for r in range(L):
        for c in range(L):
            ax.text(c, r, f"{weights[r, c]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if weights[r, c] < 0.6 * weights.max() else "black")
    ax.add_patch(Rectangle((-0.5, L - 1.5), L, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(L), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(L), labels, fontsize=7)
    ax.set_xlabel("key j (items before AND after the query are read)")
    ax.set_ylabel("query t")
    ax.set_title(title, fontsize=8)
    row = weights[-1]
    bx.barh(range(L), row, color=["tab:red" if t == L - 1 else "tab:blue" for t in range(L)])
    bx.set_yticks(range(L), labels, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlabel("weight of the [MASK] query (red row at left) on each key")
    bx.set_title("what the served [MASK] reads: its output is scored against every item", fontsize=8)
    upper = float(np.triu(weights[:-1, :-1], 1).sum(1).mean())  # history queries: weight on later items
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {"mask_row": row.tolist(), "history_weight_on_later_items": upper}


def short_label(t: int, text: str) -> str:
    """'3. Yara Baby Classic Baby Sham… [Baby Care]': position, cut title, whole category."""
    title, _, category = text.partition(" [")
    title = title if len(title) <= 26 else title[:25] + "…"
    return f"{t + 1}. {title}" + (f" [{category}" if category else "")


if args.plot_attention:
    hist_items, _ = split.history("test", args.max_len)  # (U, max_len), what the test scores read
    lengths = (hist_items != 0).sum(1)
    row = int(np.argmax((lengths >= 8) & (lengths <= 12)))  # a whole history that fits a plot
    items = [int(i) for i in hist_items[row] if i]
    model.eval()
    weights = model.attention_weights(torch.tensor([items], device=device))  # (1, H, L+1, L+1)
    weights = weights.mean(1)[0].cpu().numpy()  # (L+1, L+1), averaged over heads
    labels = [short_label(t, describe(data, i)) for t, i in enumerate(items)] + ["[MASK] (served)"]
    shown = plot_attention(weights, labels, args.plot_attention,
                           f"BERT4Rec, last layer, softmax attention (rows sum to 1), user {split.users[row]}")
    print(f"user {split.users[row]}: attention of the appended [MASK] over its history:")
    for t, i in enumerate(items):
        print(f"  {weights[-1, t]:.2f}  {describe(data, i)}")
    print(f"  {weights[-1, -1]:.2f}  [MASK] itself")
    print(f"the history's queries put {shown['history_weight_on_later_items']:.2f} of their weight on "
          "later items (a causal model: 0)")
    print("attention plot saved to", args.plot_attention)
    print("RESULT " + json.dumps(result))  # the RESULT line stays the last line printed
