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
# history, and the weight against the number of items over every test user):
#
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --threads 1 \
#         --plot-attention assets/HSTU/attention_synthetic.png
#
# The note's numeric toy of the intensity argument (softmax against pointwise attention over one
# and ten matching items; prints and exits, no data, no training):
#
#     .venv/bin/python "Classic Models/Recall/HSTU/demo.py" --intensity-toy
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
import torch.nn.functional as F

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
parser.add_argument("--intensity-toy", action="store_true",
                    help="print the note's numeric toy (softmax vs pointwise attention over 1 and 10 "
                         "matching items) and exit: no data, no training")
args = add_seqrec_args(parser).parse_args()


# %% [markdown]
# ## The intensity argument in numbers (`--intensity-toy`, the note's Idea)
# One query q and three histories: item a once; item a ten times; item a and nine unrelated items b.
# Item a matches the query (q·k_a = 2), b does not (q·k_b = 0); their values are v_a = (1, 0) and
# v_b = (0, 1). Softmax attention returns a weighted average of the values; Eq. (2) weighs each
# value by SiLU(q·k) / n on its own (n = 10 here, the longest history), so ten a's give ten times one.

# %%
def intensity_toy(n: int = 10) -> None:
    """Print softmax and pointwise (SiLU / n) attention over three toy histories."""
    key_logit = {"a": 2.0, "b": 0.0}  # q·k of each item
    value = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    histories = {"[a]": ["a"], "[a x 10]": ["a"] * 10, "[a, b x 9]": ["a"] + ["b"] * 9}

    def pair(w: torch.Tensor, hist: list[str]) -> str:  # the weight of one a and of one b
        return ", ".join(f"{float(w[hist.index(i)]):.3f}" if i in hist else "-" for i in "ab")

    def vec(x: torch.Tensor) -> str:
        return f"({float(x[0]):.3f}, {float(x[1]):.3f})"

    print(f"HSTU intensity toy: q·k_a = {key_logit['a']}, v_a = (1, 0); q·k_b = {key_logit['b']}, "
          f"v_b = (0, 1); n = {n}")
    print(f"{'history':<12} {'softmax weight a, b':<21} {'softmax output':<17} "
          f"{'SiLU(q·k)/n a, b':<18} pointwise output")
    out = {}
    for name, hist in histories.items():
        logits = torch.tensor([key_logit[i] for i in hist])  # (L,)
        values = torch.stack([value[i] for i in hist])  # (L, 2)
        soft = torch.softmax(logits, dim=0)  # (L,) sums to 1
        point = F.silu(logits) / n  # (L,) Eq. (2): each weight on its own
        out[name] = (soft @ values, point @ values)  # (L,) @ (L, 2) -> (2,)
        print(f"{name:<12} {pair(soft, hist):<21} {vec(out[name][0]):<17} "
              f"{pair(point, hist):<18} {vec(out[name][1])}")
    soft_ratio, point_ratio = (float(out["[a x 10]"][k][0] / out["[a]"][k][0]) for k in (0, 1))
    print(f"ten a's against one a: softmax output x {soft_ratio:.2f}, pointwise output x {point_ratio:.2f}")


if args.intensity_toy:
    intensity_toy()
    raise SystemExit(0)

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
# "intensity" that softmax would normalise away. The right panel measures that over every test user:
# the weight a query puts on the earlier items of its own category, and on the other items, against
# how many of them it has read. `--plot-attention PATH` saves both (the note's figure).
#
# Which user: the rule is in `pick_plot_user()` — among the histories that fit a plot (8-14 items),
# the one holding the most items of its last item's category (a repeated interest), the first on
# ties; without categories in the data, the first history of 8-14 items.

# %%
def item_categories(data) -> np.ndarray | None:
    """(N + 1,) int64 category code per item (0 = unknown / padding), or None without categories."""
    return data.item_feature("category") if "category" in data.items else None


def pick_plot_user(hist_items: np.ndarray, cats: np.ndarray | None) -> int:
    """Row of the history to plot: 8-14 items; the most items of the last item's category."""
    lengths = (hist_items != 0).sum(1)
    fits = (lengths >= 8) & (lengths <= 14)
    if cats is None:
        return int(np.argmax(fits))
    last_cat = cats[hist_items[:, -1]]  # (U,) left-padded: column -1 is the newest item
    repeats = ((cats[hist_items] == last_cat[:, None]) & (hist_items != 0)).sum(1)  # (U,)
    return int(np.argmax(np.where(fits, repeats, -1)))  # argmax: the first on ties


def weight_by_count(hist_items: np.ndarray, hist_ts: np.ndarray, cats: np.ndarray | None,
                    batch: int = 256) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Over every query position of every history: the summed last-layer weight (head mean) on the
    earlier items (j < t) of the query's own category and on the other earlier items, each against
    how many such items there are. Returns {line: (count, mean summed weight, rows)} for the counts
    seen in at least 100 rows."""
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, np.ndarray] = {}
    model.eval()
    for s in range(0, len(hist_items), batch):
        items = torch.from_numpy(hist_items[s:s + batch]).to(device)  # (b, L)
        ts = torch.from_numpy(hist_ts[s:s + batch]).to(device) if use_time else None
        with torch.no_grad():
            w = model.attention_weights(items, ts).mean(1).cpu().numpy()  # (b, L, L), head mean
        h = hist_items[s:s + batch]
        real = h != 0  # (b, L)
        earlier = np.tril(np.ones(w.shape[1:], dtype=bool), k=-1)[None] & real[:, None, :]  # (b, L, L)
        if cats is None:
            groups = {"earlier items": earlier}
        else:
            c = cats[h]  # (b, L)
            same = (c[:, :, None] == c[:, None, :]) & earlier
            groups = {"earlier items of the query's category": same,
                      "earlier items of other categories": earlier & ~same}
        for name, m in groups.items():
            count = m.sum(-1)[real]  # (queries,)
            mass = (w * m).sum(-1)[real]
            sums[name] = sums.get(name, 0) + np.bincount(count, mass, minlength=w.shape[1] + 1)
            rows[name] = rows.get(name, 0) + np.bincount(count, minlength=w.shape[1] + 1)
    out = {}
    for name in sums:
        k = np.nonzero(rows[name] >= 100)[0]
        k = k[k > 0]
        out[name] = (k, sums[name][k] / rows[name][k], rows[name][k])
    return out


def plot_pointwise_attention(weights: np.ndarray, labels: list[str], lines: dict, path: str,
                             title: str) -> None:
    """Left: heatmap of a causal (L, L) weight matrix that may be negative (diverging colours,
    0 = white), masked cells (future keys) blank, each row's sum beside its label. Right: `lines`,
    the mean summed weight against the number of items it falls on (from `weight_by_count`)."""
    from Utils.plotting import plt  # matplotlib with the Agg backend

    L = len(labels)
    shown = np.where(np.tril(np.ones((L, L), dtype=bool)), weights, np.nan)
    top = float(np.nanmax(np.abs(shown)))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8.5 + 0.6 * L, 2.6 + 0.45 * L), dpi=110,
                                  gridspec_kw={"width_ratios": [2.2 + 0.6 * L, 5.5]})
    im = ax.imshow(shown * 1e3, cmap="RdBu_r", vmin=-top * 1e3, vmax=top * 1e3)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02,
                 label="weight SiLU(q·k + rab) / n   (× 1e-3)")
    for r in range(L):
        for c in range(r + 1):
            ax.text(c, r, f"{shown[r, c] * 1e3:.1f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(shown[r, c]) > 0.6 * top else "black")
    rows = [f"{lab}  (sum {np.nansum(shown[r]) * 1e3:.1f})" for r, lab in enumerate(labels)]
    ax.set_xticks(range(L), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(L), rows, fontsize=7)
    ax.set_xlabel("key: earlier item j")
    ax.set_ylabel("query: state after item t   (row sum × 1e-3)")
    ax.set_title(title, fontsize=9)
    for (name, (k, mean, _)), style in zip(lines.items(), ("o-", "s--")):
        ax2.plot(k, mean * 1e3, style, ms=3, label=name)
    ax2.axhline(0, color="grey", lw=0.6)
    ax2.set_xlabel("how many such items come before the query")
    ax2.set_ylabel("their summed weight (× 1e-3), mean over queries")
    ax2.set_title("all test users, every query: the summed weight grows with\n"
                  "the number of items (a softmax row sums to 1 at any count)", fontsize=9)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
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
    cats = item_categories(data)
    row = pick_plot_user(hist_items, cats)
    real = hist_items[row] != 0
    items = torch.from_numpy(hist_items[row][real]).unsqueeze(0).to(device)  # (1, L)
    ts = torch.from_numpy(hist_ts[row][real]).unsqueeze(0).to(device) if use_time else None
    model.eval()
    with torch.no_grad():
        weights = model.attention_weights(items, ts).mean(1)[0].cpu().numpy()  # (L, L), head mean
    labels = [short_label(t, describe(data, int(i))) for t, i in enumerate(items[0].tolist())]
    lines = weight_by_count(hist_items, hist_ts, cats)
    title = f"HSTU, last layer, pointwise SiLU attention (no softmax), user {split.users[row]}"
    if cats is not None:
        own = int((cats[items[0].cpu().numpy()] == cats[int(items[0, -1])]).sum())
        category = describe(data, int(items[0, -1])).rpartition(" [")[2].rstrip("]")
        title += f"\n{own} of its {int(real.sum())} items share the last item's category ({category})"
        print(f"user {split.users[row]}: {own} of its {int(real.sum())} items share the last item's "
              f"category ({category})")
    plot_pointwise_attention(weights, labels, lines, args.plot_attention, title)
    print(f"user {split.users[row]}: row sums (x 1e-3, not 1): "
          + " ".join(f"{v * 1e3:.1f}" for v in weights.sum(1)))
    print(f"user {split.users[row]}: weights of the last state over its history:")
    for t, i in enumerate(items[0].tolist()):
        print(f"  {weights[-1, t]:+.4f}  {describe(data, i)}")
    for name, (k, mean, n_rows) in lines.items():
        if not len(k):
            print(f"all test users, {name}: no count seen in 100 queries or more")
            continue
        per_item = float((mean * n_rows).sum() / (k * n_rows).sum())
        print(f"all test users, {name}: summed weight (x 1e-3) by count "
              + " ".join(f"{c}:{m * 1e3:.2f}" for c, m in zip(k[:10], mean[:10]))
              + f"; {per_item * 1e3:.2f}e-3 per item on average")
    print("attention plot saved to", args.plot_attention)
    print("RESULT " + json.dumps(result))  # the RESULT line stays the last line printed
