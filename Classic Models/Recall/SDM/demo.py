# %% [markdown]
# # SDM demo: sessions -> short-term + long-term -> gated user vector -> next-item recall
#
# Run on a CPU (synthetic default; 78 s wall with one thread on a shared 2-core machine that other
# jobs kept at load ~9.5, 58 s of it training):
#
#     .venv/bin/python "Classic Models/Recall/SDM/demo.py" --threads 1
#
# Keep the model, reuse it without training, show one user's session and top 10, export the vectors:
#
#     .venv/bin/python "Classic Models/Recall/SDM/demo.py" --threads 1 --save /tmp/sdm.pt \
#         --export-vectors /tmp/sdm.npz
#     .venv/bin/python "Classic Models/Recall/SDM/demo.py" --threads 1 --load /tmp/sdm.pt \
#         --recommend U00001
#
# Amazon Beauty (no clock in the file: the last `--short-len` actions form the session; 11 minutes
# wall with one thread on the same loaded machine, early stopping after 8 epochs):
#
#     NUM_THREADS=1 python "Classic Models/Recall/SDM/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --epochs 40 --short-len 5
#
# The note's gate figure (the synthetic run above, plus a PNG of 1 - G per user):
#
#     NUM_THREADS=1 python "Classic Models/Recall/SDM/demo.py" --plot-gate assets/SDM/gate_synthetic.png
#
# Protocol: leave-one-out, full ranking over all items, seen items excluded, against popularity on
# the same split. The last line is `RESULT {json}`.

# %%
import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets.sessions import (
    MAX_SESSION_LEN,
    SESSION_GAP_SECONDS,
    split_latest_session,
    trim_left_padding,
)
from Utils.demo_io import load_weights, user_row
from Utils.evaluation import evaluate_full_ranking, popularity_metrics
from Utils.io import (
    add_common_args,
    load_model_file,
    model_dir,
    positive_float,
    positive_int,
    print_result,
)
from Utils.loops.recall_io import (
    add_recall_io_args,
    check_recall_io_args,
    export_vectors,
    open_recall_checkpoint,
    save_recall_checkpoint,
)
from Utils.retrieval import topk
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

sdm = load_model_file(model_dir("Recall", "SDM") / "model.py", "sdm_model")

# %%
parser = add_common_args(
    argparse.ArgumentParser(description="SDM (Lv et al., CIKM 2019) on a recall split"),
    epochs=6,
    batch_size=256,
    lr=1e-3,
)
add_recall_io_args(parser)
parser.add_argument("--dim", type=positive_int, default=64, help="paper/official: 64")
parser.add_argument("--heads", type=positive_int, default=4, help="official run flag: 4")
parser.add_argument("--dropout", type=float, default=0.2, help="official default: 0.2")
parser.add_argument(
    "--max-len", type=positive_int, default=50, help="history window (session + long-term)"
)
parser.add_argument(
    "--short-len",
    type=positive_int,
    default=5,
    help="no-clock fallback: the last N actions form the session (data without timestamps)",
)
parser.add_argument(
    "--num-sampled", type=positive_int, default=2000, help="official default: 2000"
)
parser.add_argument(
    "--sampler",
    choices=["uniform", "unigram"],
    default="uniform",
    help="negatives: uniform, or training counts^0.75 (both with the log-Q correction)",
)
parser.add_argument("--weight-decay", type=float, default=0.0)
parser.add_argument(
    "--patience", type=positive_int, default=3, help="early stop on validation NDCG@10"
)
parser.add_argument(
    "--time-budget", type=positive_float, default=None, help="stop training after N seconds"
)
parser.add_argument(
    "--max-attributes", type=positive_int, default=6, help="attribute ids kept per item"
)
parser.add_argument(
    "--force-gate",
    type=float,
    default=None,
    help="ablation: fix G (1 = session only, 0 = long-term only) in training and evaluation",
)
parser.add_argument(
    "--plot-gate",
    default=None,
    help="save a figure of the gate G of Eq. (21) per test user here (PNG)",
)
args = parser.parse_args()
# flags that shape the model or its inputs: stored by --save, restored by --load
MODEL_FLAGS = ["dim", "heads", "dropout", "max_len", "short_len", "max_attributes", "force_gate"]
if args.force_gate is not None and not 0.0 <= args.force_gate <= 1.0:
    raise ValueError(f"--force-gate {args.force_gate}: expected a number in [0, 1]")
check_recall_io_args(args)

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: load, split, and cut each history into the latest session and what came before

# %%
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the SDM demo")
split = Datasets.leave_one_out(data)
print(data)
print(split)
ckpt = open_recall_checkpoint(args.load, data, model="SDM", args=args) if args.load else None
rec_row = user_row(split, data, args.recommend) if args.recommend else None  # checked before training

use_clock = data.has_timestamps
session_rule = (
    f"time rule: gap < {SESSION_GAP_SECONDS} s stays in a session, "
    f"at most {MAX_SESSION_LEN} actions"
    if use_clock
    else f"no clock in the data: fallback, the last {args.short_len} actions form the session"
)
print("session rule:", session_rule)


def to_sessions(
    history: torch.Tensor, history_ts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) left-padded history -> (short (B, S), long (B, T)), both left-padded."""
    if use_clock:
        short, long = split_latest_session(history, history_ts)
    else:
        short, long = split_latest_session(history, last_n=args.short_len)
    return trim_left_padding(short), trim_left_padding(long)


def item_side_features(data) -> dict[str, torch.Tensor]:
    """Every item feature type the source has, as (n_items + 1, A) int64 code tables."""
    feats = {}
    if "attributes" in data.items:  # seqtxt: category + brand ids in one list per item
        feats["attribute"] = torch.from_numpy(data.item_attributes(args.max_attributes))
    for name in ("category", "brand"):
        if name in data.items and data.feature_size(name) > 2:
            feats[name] = torch.from_numpy(data.item_feature(name))[:, None]
    if "price" in data.items and np.isfinite(data.items["price"].to_numpy(dtype=float)).any():
        feats["price_bucket"] = torch.from_numpy(data.item_feature("price_bucket"))[:, None]
    return feats


examples = split.next_item_examples(args.max_len)
train_short, train_long = to_sessions(examples["history"], examples["history_ts"])
train = Datasets.TensorDictDataset(
    {
        "user": examples["user"],
        "short": train_short,
        "long": train_long,
        "target": examples["target"],
    }
)
short_lens = (train_short != 0).sum(1).float()
long_lens = (train_long != 0).sum(1).float()
print(
    f"{len(train):,} next-item examples; session length mean {short_lens.mean():.2f}, "
    f"long-term length mean {long_lens.mean():.2f} "
    f"(empty for {(long_lens == 0).float().mean():.0%})"
)

# %% [markdown]
# ## Baseline: popularity on the same split

# %%
pop_valid = popularity_metrics(split, "valid")
pop_test = popularity_metrics(split, "test")
print("popularity, test:", {k: round(v, 4) for k, v in pop_test.items() if "@10" in k})

# %% [markdown]
# ## Model and the paper's objective (sampled softmax on the next item)

# %%
features = item_side_features(data)
if not features:
    print(f"side inputs absent in {data.name}: no item attributes, category, brand or price; SDM uses "
          "the item id as its only item feature type (F = 1 in Eqs. (4) and (19))")
config = sdm.SDMConfig(
    n_items=data.n_items,
    profile_sizes={"user": data.n_users + 1},  # no profile fields here: the user id is the profile
    dim=args.dim,
    num_heads=args.heads,
    dropout=args.dropout,
)
model = sdm.SDM(config, item_features=features).to(device)
print(f"item feature types F: {model.feature_names}; parameters: {count_params(model):,}")

counts = torch.from_numpy(split.item_counts()).double()
if args.sampler == "uniform":
    q = torch.ones(data.n_items + 1, dtype=torch.float64)
else:
    q = (counts + 1.0) ** 0.75
q[0] = 0.0
q = (q / q.sum()).float().to(device)
log_q = torch.log(q.clamp(min=1e-12))
num_sampled = min(args.num_sampled, data.n_items)
gen = torch.Generator(device="cpu").manual_seed(args.seed)


def train_step(batch: dict) -> torch.Tensor:
    batch = {k: v.to(device) for k, v in batch.items()}
    short, long = trim_left_padding(batch["short"]), trim_left_padding(batch["long"])
    o = model(profile={"user": batch["user"]}, short=short, long=long, force_gate=args.force_gate)
    negatives = torch.multinomial(q.cpu(), num_sampled, replacement=True, generator=gen).to(device)
    return model.loss(
        o,
        batch["target"],
        negatives,
        negative_log_q=log_q[negatives],
        target_log_q=log_q[batch["target"]],
    )


@torch.no_grad()
def user_vectors(batch: dict) -> torch.Tensor:
    short, long = to_sessions(batch["history"], batch["history_ts"])
    return model(
        profile={"user": batch["user"]}, short=short, long=long, force_gate=args.force_gate
    )


def score_fn(batch: dict) -> torch.Tensor:
    return model.score(user_vectors(batch))


def evaluate(stage: str = "valid") -> dict:
    model.eval()
    return evaluate_full_ranking(score_fn, split, stage, max_len=args.max_len, device=device)


optimizer = torch.optim.Adam(
    model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=device.type == "cpu"
)
batch_gen = torch.Generator().manual_seed(args.seed)

# %% [markdown]
# ## Train (early stopping on validation NDCG@10; test is touched once, at the end), or `--load`

# %%
if ckpt is not None:  # --load: the saved weights, no training
    if ckpt["models"]["model"]["config"] != asdict(config) or ckpt["extra"]["features"] != model.feature_names:
        raise Datasets.DataError(
            f"--load {args.load}: the checkpoint's model ({ckpt['config']}, item features "
            f"{ckpt['features']}) does not fit this data; expected the data it was trained on"
        )
    load_weights(model, ckpt["models"]["model"]["state"], args.load)
    epochs_run, best_epoch, train_seconds = ckpt["extra"]["epochs"], ckpt["extra"]["best_epoch"], 0.0
    samples_per_second = None
    print(
        f"loaded {args.load}: trained {epochs_run} epochs, best validation epoch {best_epoch}; "
        "training skipped"
    )
else:
    history = fit(
        model,
        train_step,
        lambda epoch: train.batches(args.batch_size, generator=batch_gen),
        optimizer,
        args.epochs,
        evaluate=evaluate,
        metric="NDCG@10",
        patience=args.patience,
        n_batches=train.num_batches(args.batch_size),
        desc="SDM",
        time_budget=args.time_budget,
    )
    epochs_run, best_epoch = len(history.epochs), history.best_epoch
    train_seconds = history.train_seconds
    samples_per_second = len(train) * epochs_run / max(train_seconds, 1e-9)
    print(
        f"trained {epochs_run} epochs in {train_seconds:.1f} s ({samples_per_second:,.0f} "
        f"samples/s); best validation NDCG@10 {history.best_metric:.4f} at epoch {best_epoch}"
    )

# %%
t1 = time.perf_counter()
valid_metrics = evaluate("valid")
test_metrics = evaluate("test")
eval_seconds = time.perf_counter() - t1
print("SDM, test:       ", {k: round(v, 4) for k, v in test_metrics.items()})
print("popularity, test:", {k: round(v, 4) for k, v in pop_test.items()})

# %% [markdown]
# ## How much does the gate take from the session? (mean G: 1 = only short-term)

# %%
hist_all, hist_ts_all = split.history("test", args.max_len)
model.eval()


@torch.no_grad()
def encode_rows(rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    """For split rows `rows` (one chunk): user vectors o (R, D), gates G (R, D), and the latest
    session (R, S) and long-term part (R, T) they were computed from."""
    h = torch.from_numpy(hist_all[rows]).to(device)
    short, long = to_sessions(h, torch.from_numpy(hist_ts_all[rows]).to(device))
    user_ids = torch.from_numpy(split.users[rows]).to(device)
    o, G = model(
        profile={"user": user_ids},
        short=short,
        long=long,
        force_gate=args.force_gate,
        return_gate=True,
    )
    return o, G, short, long


rows = np.arange(min(split.n_users, 4096))
h = torch.from_numpy(hist_all[rows]).to(device)
o, G, short, long = encode_rows(rows)
has_long = (long != 0).any(1)
gate_mean = G.mean().item()
gate_with = G[has_long].mean().item() if has_long.any() else float("nan")
gate_without = G[~has_long].mean().item() if (~has_long).any() else float("nan")
print(
    f"mean gate G: {gate_mean:.3f} overall; {gate_with:.3f} for users with long-term "
    f"behaviour, {gate_without:.3f} without"
)


# %% [markdown]
# ## The gate per user (figure): what each user takes from the long-term vector, 1 - G


# %%
def plot_gate(G: torch.Tensor, long_len: torch.Tensor, short_len: torch.Tensor, path: str) -> None:
    """What the gate takes from the long-term vector, 1 - G (log scale: G is often near 1).
    Left: each user's mean over the D dimensions against the number of long-term actions.
    Right: per dimension, for 16 users spread over the long-term lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    G, long_len, short_len = G.cpu().numpy(), long_len.cpu().numpy(), short_len.cpu().numpy()
    take = np.clip(1.0 - G, 1e-6, 1.0)  # (B, D) weight of p in o = (1 - G) p + G s
    mean_take = take.mean(1)  # (B,)
    fig, (ax0, ax1) = plt.subplots(
        1, 2, figsize=(12, 4.8), dpi=120, gridspec_kw={"width_ratios": [1, 1.3]}
    )
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(long_len))
    sc = ax0.scatter(long_len + jitter, mean_take, c=short_len, s=6, alpha=0.5, cmap="viridis")
    fig.colorbar(sc, ax=ax0, label="session length (actions)")
    for n in np.unique(long_len):
        ax0.plot(n, np.median(mean_take[long_len == n]), "r_", ms=12, mew=2)
    ax0.set_yscale("log")
    ax0.set_xlabel("long-term actions before the session")
    ax0.set_ylabel("mean of 1 - G over the dimensions")
    ax0.set_title("share of the user vector taken from the long-term p\n(red: median per length)")
    ax0.grid(alpha=0.3)
    order = np.argsort(long_len, kind="stable")
    pick = order[np.linspace(0, len(order) - 1, 16).astype(int)]  # spread over the lengths
    im = ax1.imshow(take[pick], aspect="auto", cmap="magma", norm=LogNorm(1e-6, 1.0))
    fig.colorbar(im, ax=ax1, label="1 - G (per dimension)")
    ax1.set_yticks(
        range(len(pick)),
        [f"long {long_len[i]}, session {short_len[i]}" for i in pick],
        fontsize=7,
    )
    ax1.set_xlabel("dimension of the user vector")
    ax1.set_title("1 - G per dimension, 16 users")
    fig.suptitle(
        f"SDM gate, Eq. (21), on {data.name} ({len(mean_take):,} test users; "
        f"mean G = {G.mean():.3f})"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print("gate figure saved to", path)


if args.plot_gate:
    plot_gate(G, (long != 0).sum(1), (short != 0).sum(1), args.plot_gate)

# %% [markdown]
# ## One user: history, session split, top-10 recommendations (exact top-K serving)


# %%
def describe(i: int) -> str:
    """The item's text; Beauty has no titles, so its first keyword tokens are shown too."""
    text = data.item_text(i)
    if "keywords" in data.items and isinstance(data.items["keywords"].iloc[i], list):
        words = "".join(data.items["keywords"].iloc[i][:4]).replace("\u2581", " ").strip()
        text += f"  ({words})" if words else ""
    return text


if args.recommend:  # --recommend USER: that user's row of the split
    r_row = rec_row
    o_r, G_r, short_r, long_r = encode_rows(np.array([rec_row]))
else:  # the first user with a long-term part
    lengths = (h != 0).sum(1)
    r = int(torch.argmax(((lengths >= 6) & has_long).int()))
    r_row = int(rows[r])
    o_r, G_r, short_r, long_r = o[r : r + 1], G[r : r + 1], short[r : r + 1], long[r : r + 1]
offsets, seen = split.seen("test")
ids, scores = topk(
    o_r.cpu(),
    model.item_tower().detach().cpu(),
    10,
    exclude=(offsets, seen),
    exclude_rows=[r_row],
)
target = int(split.targets("test")[r_row])
print(f"user {data.user_raw[split.users[r_row]]}")
print("  long-term behaviour (oldest first, the last 8):")
for i in long_r[0][long_r[0] != 0].tolist()[-8:]:
    print("    ", describe(i))
print("  latest session:")
for i in short_r[0][short_r[0] != 0].tolist():
    print("    ", describe(i))
print(f"  gate G mean for this user: {G_r[0].mean().item():.3f}")
print("  top-10 recommendations (seen items excluded):")
for rank, (i, sc) in enumerate(zip(ids[0].tolist(), scores[0].tolist()), 1):
    mark = "  <- the held-out next item" if i == target else ""
    print(f"    {rank:2d}. {describe(i)}  ({sc:.3f}){mark}")
print("  held-out next item:", describe(target))

# %% [markdown]
# ## Save, export (`--save`, `--export-vectors`): written last, after every step succeeded

# %%
if args.export_vectors:
    all_rows = np.arange(split.n_users)
    user_vecs = torch.cat([encode_rows(all_rows[s : s + 4096])[0] for s in range(0, len(all_rows), 4096)])
    export_vectors(
        args.export_vectors,
        item_vectors=model.item_tower(),
        data=data,
        user_vectors=user_vecs,
        user_ids=split.users,
    )
    print(f"vectors written to {args.export_vectors}: {data.n_items} items, {len(user_vecs)} users")
if args.save:
    save_recall_checkpoint(
        args.save,
        model,
        data,
        name="SDM",
        config=config,
        args=args,
        keys=MODEL_FLAGS,
        epochs=epochs_run,
        best_epoch=best_epoch,
        features=model.feature_names,
    )
    print(f"saved {args.save} (weights, config, id maps); reuse with --load {args.save}")

# %%
beats = test_metrics["NDCG@10"] > pop_test["NDCG@10"]
print(f"SDM beats popularity on test NDCG@10: {beats}")
print_result(
    model="SDM",
    data=args.data,
    protocol=(
        f"leave-one-out, full ranking over {split.n_items} items, seen items excluded, test split; "
        f"sessions: {session_rule}"
    ),
    metrics=test_metrics,
    baseline={"name": "popularity", "metrics": pop_test},
    train_seconds=train_seconds,
    eval_seconds=eval_seconds,
    epochs=epochs_run,
    params=count_params(model),
    out=args.out,
    valid_metrics=valid_metrics,
    baseline_valid_metrics=pop_valid,
    best_epoch=best_epoch,
    loaded_from=args.load,
    samples_per_second=samples_per_second,
    mean_gate=gate_mean,
    mean_gate_with_long_term=gate_with,
    mean_gate_without_long_term=gate_without,
    config={k: v for k, v in vars(args).items() if k not in ("out",)},
    threads=torch.get_num_threads(),
)
