# %% [markdown]
# # GRU4Rec — demo
#
# Train GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018) the way the official code
# does — session-parallel mini-batches, one step per update, the other slots' next items plus extra
# popularity-sampled items as negatives, a ranking loss (BPR-max, TOP1-max) or cross-entropy, Adagrad —
# with each user's training sequence as one session; evaluate it by full ranking (leave-one-out, seen
# items excluded) beside popularity; print one user's history and top recommendations.
#
# CPU command (synthetic default, 5 epochs, about 25 s of CPU time with one thread; it beats
# popularity several times over):
#
#     .venv/bin/python "Classic Models/Recall/GRU4Rec/demo.py" --threads 1
#
# The note's figure (the same run, then the first steps of an epoch's session-parallel mini-batches,
# and BPR-max's weights over one step's negatives):
#
#     .venv/bin/python "Classic Models/Recall/GRU4Rec/demo.py" --threads 1 --loss bpr_max \
#         --plot-sessions assets/GRU4Rec/sessions_synthetic.png
#
# Keep the trained model, then serve it without training (one user's top-10, vectors for faiss):
#
#     .venv/bin/python "Classic Models/Recall/GRU4Rec/demo.py" --threads 1 --save /tmp/gru4rec.pt
#     .venv/bin/python "Classic Models/Recall/GRU4Rec/demo.py" --threads 1 --load /tmp/gru4rec.pt \
#         --recommend U00042 --export-vectors /tmp/gru4rec.npz
#
# Beauty, the note's Results (the recall ledger's `gru4rec` row, one thread):
#
#     python -m Utils.tools.ledger run --only gru4rec --data beauty --seeds 0 --protocol train-only

# %%
import argparse

import numpy as np
import torch

import Datasets
from Utils.demo_io import load_weights, read_checkpoint
from Utils.io import add_common_args, load_model_file, model_dir, positive_int
from Utils.loops.seqrec import (
    add_seqrec_args,
    padded_sequence_batches,
    refit_setup,
    session_parallel_batches,
    session_parallel_steps,
    side_inputs_note,
    train_and_report,
)
from Utils.training import AdagradMomentum, cpu_setup, pick_device, set_seed

gru = load_model_file(model_dir("Recall", "GRU4Rec") / "model.py", "gru4rec_model")

# %%
# the official PyTorch class's defaults (gru4rec_pytorch.py, GRU4Rec.__init__): batch 64, learning
# rate 0.05 (Adagrad), 100 units, no dropout, 2048 extra negatives with alpha 0.5; 5 epochs (its
# default is 10; its README: "5 gets you similar performance in most cases")
parser = add_common_args(argparse.ArgumentParser(description="GRU4Rec demo"), epochs=5, lr=0.05,
                         batch_size=64)
parser.add_argument("--loss", default="bpr_max", choices=list(gru.LOSSES),
                    help="bpr_max / top1_max: the CIKM 2018 ranking-max losses; ce: cross-entropy over "
                         "the positive and the negatives; bpr / top1: the ICLR 2016 losses")
parser.add_argument("--embedding", default="shared", choices=list(gru.EMBEDDINGS),
                    help="input vectors: shared with the output table W_y (official constrained_embedding), "
                         "a separate table, or one-hot (the ICLR paper)")
parser.add_argument("--layers", type=positive_int, default=1, help="stacked GRU layers of --dim units")
parser.add_argument("--cell", default="paper", choices=list(gru.CELLS),
                    help="paper: the GRU of Eq. (1)-(4); official: the official PyTorch code's "
                         "torch.nn.GRUCell and its initialisation (for comparison; not with onehot)")
parser.add_argument("--final-act", default="elu", choices=list(gru.FINAL_ACTS),
                    help="activation of the scores before a ranking loss (ce reads raw scores)")
parser.add_argument("--final-act-param", type=float, default=0.5,
                    help="ELU's alpha / leaky ReLU's slope (official elu_param=0.5)")
parser.add_argument("--bpreg", type=float, default=1.0, help="BPR-max score regularisation λ")
parser.add_argument("--n-sample", type=int, default=2048,
                    help="extra negatives per step, shared by the batch (0: the other slots' items only)")
parser.add_argument("--sample-alpha", type=float, default=0.5,
                    help="extra negatives drawn ∝ support^alpha (0 uniform, 1 popularity)")
parser.add_argument("--logq", type=float, default=0.0, help="ce: weight of the log-Q correction in [0, 1]")
parser.add_argument("--embed-dropout", type=float, default=0.0, help="dropout on the input item vectors")
parser.add_argument("--steps", type=positive_int, default=1,
                    help="session-parallel steps per update (1: the official code; T > 1 back-propagates "
                         "through T steps)")
parser.add_argument("--optimizer", default="adagrad", choices=["adagrad", "adam"],
                    help="adagrad: the official code's (with --lr 0.05); adam")
parser.add_argument("--momentum", type=float, default=0.0,
                    help="adagrad: heavy-ball momentum as the official IndexedAdagradM (its paramfiles: "
                         "0 to 0.4); 0 = torch's Adagrad")
parser.add_argument("--batching", default="session", choices=["session", "padded"],
                    help="session: session-parallel mini-batches (the papers'); padded: batches of whole "
                         "left-padded sessions, each read from zero and back-propagated through (the usual "
                         "third-party way, for comparison)")
parser.add_argument("--plot-sessions", default=None, metavar="PATH",
                    help="after training, save the first steps of the session-parallel mini-batches and "
                         "BPR-max's weights over one step's negatives")
parser = add_seqrec_args(parser, batching=False, ddp=False)  # --dropout: on each layer's output
parser.set_defaults(dim=100, dropout=0.0)  # official: layers=[100], dropout_p_hidden=0.0
args = parser.parse_args()
for name, low, high in [("--dropout", 0.0, 1.0), ("--embed-dropout", 0.0, 1.0)]:
    value = getattr(args, name[2:].replace("-", "_"))
    if not low <= value < high:
        parser.error(f"{name} must be in [0, 1), got {value}")
if args.cell == "official" and args.embedding == "onehot":
    parser.error("--cell official is torch.nn.GRUCell over item vectors; with --embedding onehot the "
                 "official code writes Eq. (3) out, which is --cell paper")
if args.n_sample < 0:
    parser.error(f"--n-sample must be >= 0, got {args.n_sample}")
for name in ("sample_alpha", "logq"):
    if not 0.0 <= getattr(args, name) <= 1.0:
        parser.error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
if not args.bpreg >= 0:
    parser.error(f"--bpreg must be >= 0, got {args.bpreg}")
if not 0.0 <= args.momentum < 1.0 or (args.momentum > 0 and args.optimizer != "adagrad"):
    parser.error(f"--momentum must be in [0, 1) and goes with --optimizer adagrad, got {args.momentum} "
                 f"with {args.optimizer}")

cpu_setup(args.threads)
torch.sparse.check_sparse_tensor_invariants.disable()  # the sparse gradients are torch's own: no checks
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: leave-one-out split; each user's training items (the last max_len + 1) are one session

# %%
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the GRU4Rec demo")
side_inputs_note(data, "GRU4Rec")
loaded = read_checkpoint(args.load, demo="GRU4Rec", data=data) if args.load else None
if loaded is not None:  # --load: the saved config decides the model
    saved_config = loaded["models"]["model"]["config"]
    args.loss = saved_config["loss"]
split = refit_setup(args, Datasets.leave_one_out(data))  # --refit-from: train + validation
print(split)
sequences = torch.from_numpy(split.train_sequences(args.max_len))  # (U, L+1), left-padded
train_set = Datasets.TensorDictDataset({"seq": sequences})
lengths = (sequences != 0).sum(1)
print(f"{int((lengths >= 2).sum()):,} sessions (users with 2+ training items), "
      f"{int((lengths - 1).clamp(min=0).sum()):,} next-item targets per epoch, "
      f"{args.batch_size} session-parallel slots")

# %% [markdown]
# ## Model and training

# %%
config = gru.GRU4RecConfig(**saved_config) if loaded is not None else gru.GRU4RecConfig(
    n_items=split.n_items, dim=args.dim, n_layers=args.layers, embedding=args.embedding,
    loss=args.loss, final_act=args.final_act, final_act_param=args.final_act_param,
    bpreg=args.bpreg, n_sample=args.n_sample, sample_alpha=args.sample_alpha, logq=args.logq,
    dropout_embed=args.embed_dropout, dropout_hidden=args.dropout, cell=args.cell,
    sparse=args.optimizer == "adagrad",  # Adagrad updates only the item rows a step reads (official)
)
model = gru.GRU4Rec(config).to(device)
if loaded is not None:
    load_weights(model, loaded["models"]["model"]["state"], args.load)
else:  # supp_i: extra negatives ∝ supp^alpha, log-Q (the official code counts the training data)
    model.set_item_counts(torch.from_numpy(split.item_counts()))
if args.optimizer == "adam":
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
elif args.momentum > 0:  # the official IndexedAdagradM: momentum, eps under the root, sparse rows
    optimizer = AdagradMomentum(model.parameters(), lr=args.lr, momentum=args.momentum, eps=1e-6)
else:
    optimizer = torch.optim.Adagrad(model.parameters(), lr=args.lr, eps=1e-6)
gen = torch.Generator().manual_seed(args.seed)
print(model)

# the slots' hidden state, carried from one step to the next, and a store of extra negatives drawn
# 500 steps at a time (the official code's sample cache: one multinomial draw instead of one per step)
state = {"hidden": None, "negatives": None, "next": 0}


def next_negatives(steps: int):
    if model.cfg.n_sample == 0:
        return None
    if state["negatives"] is None or state["next"] + steps > len(state["negatives"]):
        state["negatives"], state["next"] = model.sample_negatives(max(500, steps), device), 0
    state["next"] += steps
    return state["negatives"][state["next"] - steps : state["next"]]  # (T, S)


def train_step(batch):
    items, targets = batch["items"].to(device), batch["targets"].to(device)
    resets = batch["resets"].to(device)  # every slot resets at an epoch's first step
    hidden = state["hidden"]
    if hidden is None or hidden.shape[1] != len(items):
        hidden = model.initial_hidden(len(items), device)
    # session-parallel: the row sum over the slots, empty ones included (the official L / batch_size);
    # whole padded sessions: the mean over the real targets
    loss, state["hidden"] = model.loss(items, targets, hidden=hidden, resets=resets,
                                       negatives=next_negatives(items.shape[1]), return_hidden=True,
                                       reduction="row" if args.batching == "padded" else "slot")
    return loss


def epoch_batches(epoch: int):
    """One epoch of session-parallel batches; the store of negatives starts afresh each epoch, so a
    run resumed after an epoch (--checkpoint / --resume) draws what the uninterrupted run draws."""
    state["negatives"] = None
    if args.batching == "padded":
        return padded_sequence_batches(sequences, args.batch_size, gen)
    return session_parallel_batches(sequences, args.batch_size, gen, steps=args.steps)


# %% [markdown]
# ## Train with early stopping on validation NDCG@10, then the test by full ranking beside popularity
# (`Utils.loops.seqrec.train_and_report` with GRU4Rec's own batches: `session_parallel_batches`)

# %%
result = train_and_report(
    name="GRU4Rec", model=model, train_step=train_step,
    score=lambda history, history_ts: model.score(history),  # GRU4Rec uses no timestamps
    optimizer=optimizer, data=data, split=split, sequences=sequences, train_set=train_set,
    gen=gen, args=args, device=device, loaded=loaded,
    user_vector=lambda history, history_ts: model.user_embedding(history),
    batches=epoch_batches,
    n_batches=(-(-int((lengths >= 2).sum()) // args.batch_size) if args.batching == "padded"
               else session_parallel_steps(sequences, args.batch_size, args.steps)),
)


# %% [markdown]
# ## What the model computes: session-parallel mini-batches, and BPR-max's weights over negatives
# Left: the first steps of an epoch — each slot (row) reads one session, one item per step; where a
# session ends, the next one takes the slot and its hidden state restarts from zero (outlined cells).
# Right: one step of the trained model, one row's negatives (the other slots' next items and the
# extra samples) sorted by score: BPR-max weighs them by a softmax over their scores, so a few
# high-scoring negatives carry the loss, where BPR gives every negative the same 1 / N_S.
# `--plot-sessions PATH` saves it (the note's figure).

# %%
def plot_sessions(path: str, n_slots: int = 6, n_steps: int = 14) -> dict:
    """The two panels described above; returns the numbers it drew (printed below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    g = torch.Generator().manual_seed(args.seed)
    steps = []
    for batch in session_parallel_batches(sequences, n_slots, g, steps=1):
        steps.append(batch)
        if len(steps) == n_steps:
            break
    items = torch.cat([b["items"] for b in steps], 1).numpy()  # (slots, steps)
    resets = torch.cat([b["resets"] for b in steps], 1).numpy()
    rows = torch.cat([b["rows"] for b in steps], 1).numpy()
    model.eval()

    # one training step of the trained model, BPR-max's view of one row
    batch = next(session_parallel_batches(sequences, args.batch_size, g, steps=1))
    with torch.no_grad():
        h = model.encode(batch["items"].to(device))[0][:, 0]  # (B, D), each slot's first item
        negatives = model.sample_negatives(1, device)[0] if model.cfg.n_sample else None
        cols = batch["targets"][:, 0].to(device)
        if negatives is not None:
            cols = torch.cat([cols, negatives])
        r = h @ model.item_embedding.weight[cols].T + model.item_bias[cols, 0]  # (B, B + S)
        a = gru.final_activation(r, model.cfg.final_act, model.cfg.final_act_param)
        row = 0
        neg = torch.ones(len(cols), dtype=torch.bool, device=device)
        neg[row] = False
        weights = torch.softmax(a[row][neg], 0).sort(descending=True).values.cpu().numpy()
    n_neg = len(weights)
    top10 = float(weights[:10].sum())

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2), dpi=120,
                                   gridspec_kw={"width_ratios": [1.35, 1]})
    colours = plt.cm.Pastel1.colors
    for s in range(items.shape[0]):
        for t in range(items.shape[1]):
            if items[s, t] == 0:
                continue
            ax1.add_patch(Rectangle((t, s), 1, 1, facecolor=colours[int(rows[s, t]) % len(colours)],
                                    edgecolor="black" if resets[s, t] else "white",
                                    linewidth=2.0 if resets[s, t] else 0.5))
            ax1.text(t + 0.5, s + 0.5, str(int(items[s, t])), ha="center", va="center", fontsize=7)
    ax1.set_xlim(0, items.shape[1])
    ax1.set_ylim(items.shape[0], 0)
    ax1.set_xticks(np.arange(items.shape[1]) + 0.5, range(1, items.shape[1] + 1), fontsize=7)
    ax1.set_yticks(np.arange(items.shape[0]) + 0.5, [f"slot {s + 1}" for s in range(items.shape[0])],
                   fontsize=7)
    ax1.set_xlabel("step (one mini-batch per step)")
    ax1.set_title("session-parallel mini-batches: the item each slot reads at each step (its target\n"
                  "is the next cell); colour = session; outlined = a new session, h restarts from zero",
                  fontsize=8)
    ranks = np.arange(1, n_neg + 1)
    ax2.plot(ranks, np.cumsum(weights), label="BPR-max: $\\sum$ of the softmax weights $s_j$")
    ax2.plot(ranks, ranks / n_neg, "--", label=f"BPR: k / $N_S$ (every negative 1 / {n_neg})")
    ax2.set_xscale("log")
    ax2.set_xlabel("the k highest-scoring negatives of one row")
    ax2.set_ylabel("share of the loss weight they carry")
    ax2.set_title(f"one step of the trained model, one row, {n_neg} negatives: the top 10 carry\n"
                  f"{top10:.1%} of BPR-max's weight, {10 / n_neg:.1%} of BPR's", fontsize=8)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return {"negatives": n_neg, "top10_weight": top10, "top1_weight": float(weights[0])}


if args.plot_sessions:
    import json

    shown = plot_sessions(args.plot_sessions)
    print(f"BPR-max weights over one row's {shown['negatives']} negatives: the highest-scoring one "
          f"{shown['top1_weight']:.4f}, the top 10 together {shown['top10_weight']:.4f} (BPR: "
          f"{1 / shown['negatives']:.5f} each, {10 / shown['negatives']:.4f} for 10)")
    print("figure saved to", args.plot_sessions)
    print("RESULT " + json.dumps(result))  # the RESULT line stays the last line printed
