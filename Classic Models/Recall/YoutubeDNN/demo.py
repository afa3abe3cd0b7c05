# %% [markdown]
# # YoutubeDNN candidate generation — demo
#
# Train the deep candidate generation model of Covington et al. (RecSys 2016) on next-item examples,
# evaluate it by full ranking (leave-one-out, seen items excluded) beside popularity, then serve it:
# exact top-K versus faiss indexes over the item vectors (recall of each ANN and query latency).
#
# CPU command (synthetic default; 19 s wall, 12 s of it training, on one thread of a shared 2-core
# machine at load average 2; 143 s wall when the machine was heavily loaded):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/YoutubeDNN/demo.py" --threads 1
#
# The note's figure (adds a twin trained without the log-Q correction, about twice the time):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/YoutubeDNN/demo.py" --threads 1 \
#         --plot-logq assets/YoutubeDNN/logq_popularity_synthetic.png \
#         --out assets/YoutubeDNN/results/synthetic.json
#
# Beauty (the note's Results; 17 epochs, 204 s of training, a few minutes wall on one thread of the
# same loaded machine):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/YoutubeDNN/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --epochs 40 \
#         --time-budget 1500 --out assets/YoutubeDNN/results/beauty.json
#
# Keep the model, reuse it without training, show one user's top 10, export the vectors for faiss
# and the serving user tower as ONNX (checked against PyTorch with onnxruntime; needs onnx,
# onnxscript and onnxruntime):
#
#     .venv/bin/python "Classic Models/Recall/YoutubeDNN/demo.py" --threads 1 --save /tmp/ytd.pt \
#         --export-vectors /tmp/ytd.npz --export-onnx /tmp/ytd_user_tower.onnx
#     .venv/bin/python "Classic Models/Recall/YoutubeDNN/demo.py" --threads 1 --load /tmp/ytd.pt \
#         --recommend U00001
#
# As a notebook: `jupytext --to ipynb demo.py`, then run it (the defaults; 117 s wall executed by
# nbconvert on the same 2-core machine under a load of about 9).

# %%
import argparse
import importlib.util
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import Datasets
from Utils import distributed
from Utils.demo_io import item_label, load_weights, show_recommendations, user_row
from Utils.evaluation import Timer, evaluate_full_ranking, popularity_metrics
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
    widths_arg,
)
from Utils.metrics import ranking_metrics
from Utils.mips import MipsHNSW
from Utils.retrieval import FaissIndex, recall_vs_exact, topk
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

ytd = load_model_file(model_dir("Recall", "YoutubeDNN") / "model.py", "youtubednn_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description="YoutubeDNN candidate generation demo"),
                         epochs=30, lr=1e-3, batch_size=256)
add_recall_io_args(parser)
parser.add_argument("--save-vectors", dest="export_vectors", help=argparse.SUPPRESS)  # older name
parser.add_argument("--export-onnx", default=None, metavar="PATH",
                    help="write the user tower (history ids [+ user features] -> u) as ONNX here")
parser.add_argument("--dim", type=positive_int, default=64)
parser.add_argument("--hidden", type=widths_arg, default="256,128",
                    help="tower widths below the D-wide top layer")
parser.add_argument("--dropout", type=float, default=0.0)
parser.add_argument("--weight-decay", type=float, default=0.0)
parser.add_argument("--max-len", type=positive_int, default=50, help="history items fed to the model")
parser.add_argument("--max-per-user", type=positive_int, default=50,
                    help="cap on training examples per user (paper: heavy users must not dominate)")
parser.add_argument("--negatives", type=positive_int, default=1024, help="M items sampled per batch")
parser.add_argument("--neg-alpha", type=float, default=0.75,
                    help="sampling distribution Q ~ (count + 1)^alpha (0 = uniform)")
parser.add_argument("--negatives-from", choices=["sampled", "batch"], default="sampled",
                    help="sampled: --negatives items drawn from Q per batch (the paper); batch: the other "
                         "examples' targets (in-batch negatives, log-Q by each target's share of the "
                         "training targets, Yi et al. 2019)")
parser.add_argument("--no-logq", action="store_true", help="ablation: drop the log-Q correction")
parser.add_argument("--no-age", action="store_true", help="ablation: drop the example-age feature")
parser.add_argument("--linear-top", action="store_true", help="make the tower's top layer linear")
parser.add_argument("--keywords", action="store_true",
                    help="seqtxt: add the items' keyword tokens as one more bag (like the search bag)")
parser.add_argument("--patience", type=positive_int, default=3)
parser.add_argument("--eval-every", type=positive_int, default=1)
parser.add_argument("--time-budget", type=positive_float, default=None,
                    help="stop training after N seconds")
parser.add_argument("--ddp", action="store_true",
                    help="data-parallel training across the processes torchrun starts "
                         "(torchrun --nproc_per_node N demo.py ... --ddp; gloo on CPU, nccl on GPU)")
parser.add_argument("--plot-logq", default=None,
                    help="train a twin without the log-Q correction and plot the popularity of what each\n"
                         "                    retrieves (PNG path)")
args = parser.parse_args()
# flags that shape the model or its inputs: stored by --save, restored by --load
MODEL_FLAGS = ["dim", "hidden", "dropout", "max_len", "no_age", "linear_top", "keywords"]
check_recall_io_args(args)
if args.export_onnx:
    if Path(args.export_onnx).suffix != ".onnx":
        raise ValueError(f"--export-onnx {args.export_onnx}: expected a file name ending in .onnx")
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"--export-onnx needs the packages {' and '.join(missing)} "
                         f"(pip install {' '.join(missing)})")

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)
device, ddp = distributed.setup(args, device)  # --ddp under torchrun: one shard of each batch per process

# %% [markdown]
# ## Data: leave-one-out split, next-item training examples, bags of ids per item

# %%
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the YoutubeDNN demo")
split = Datasets.leave_one_out(data)
print(split)
N = split.n_items
ckpt = open_recall_checkpoint(args.load, data, model="YoutubeDNN", args=args) if args.load else None
rec_row = user_row(split, data, args.recommend) if args.recommend else None  # checked before training

# Each bag is an (N+1, A) table of ids per item; a user's bag is the ids of all history items.
bag_tables: dict[str, np.ndarray] = {}
if "attributes" in data.items:  # seqtxt: category + brand attribute ids
    attrs = data.item_attributes(8)
    bag_tables["attributes"] = attrs[:, : max(1, int((attrs > 0).sum(1).max()))]
for name in ("category", "brand"):
    if name in data.items:
        bag_tables[name] = data.item_feature(name)[:, None]
if args.keywords and "keywords" in data.items:
    vocab: dict[str, int] = {}
    rows = [[vocab.setdefault(t, len(vocab) + 1) for t in toks] for toks in data.items["keywords"]]
    width = max(1, max(len(r) for r in rows))
    kw = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        kw[i, : len(r)] = r
    bag_tables["keywords"] = kw
bag_tables_t = {k: torch.from_numpy(v) for k, v in bag_tables.items()}
bag_sizes = {k: int(v.max()) + 1 for k, v in bag_tables.items()}

user_table = None
if data.users is not None and len(data.users.columns):  # categorical user features, 0 = unknown
    cols = []
    for c in data.users.columns:
        codes, _ = pd.factorize(data.users[c].iloc[1:].astype(str), sort=True)
        cols.append(np.concatenate([[0], codes + 1]).astype(np.int64))  # row 0 = padding user
    user_table = torch.from_numpy(np.stack(cols, axis=1))
user_sizes = tuple(int(user_table[:, f].max()) + 1 for f in range(user_table.shape[1])) if (
    user_table is not None) else ()
absent = [] if bag_tables else ["item attributes, category and brand (the tower averages the watch "
                                  "history ids alone)"]
if user_table is None:
    absent.append("user features (the user vector comes from behaviour only)")
if absent:
    print(f"side inputs absent in {data.name}: " + "; ".join(absent))

examples = split.next_item_examples(args.max_len, max_per_user=args.max_per_user, seed=args.seed)
# Example age in [0, 1]: how long before the end of the training window the example happened.
# With timestamps it is wall-clock time (the paper); with positions only, the steps before the end
# of the user's own training sequence. Serving and evaluation use 0 (the end of the window).
if data.has_timestamps:
    t_end, t_start = split.train_timestamps.max(), split.train_timestamps.min()
    age = (t_end - examples["target_ts"].numpy()) / max(1, t_end - t_start)
else:
    last_pos = np.diff(split.train_offsets)[examples["row"].numpy()] - 1
    steps = last_pos - examples["target_ts"].numpy()
    age = steps / max(1, steps.max())
examples["example_age"] = torch.from_numpy(age.astype(np.float32))
train_set = Datasets.TensorDictDataset(examples)
n_all = int(np.clip(np.diff(split.train_offsets) - 1, 0, None).sum())
print(f"{len(train_set):,} next-item examples (of {n_all:,} before the cap of {args.max_per_user}"
      f" per user), bags {bag_sizes}, user features {user_sizes}")

# Sampling distribution Q for the sampled softmax: smoothed unigram counts to the power alpha.
counts = torch.from_numpy(split.item_counts()).double()
q = (counts + 1.0) ** args.neg_alpha
q[0] = 0.0
q = (q / q.sum()).float()
log_expected = torch.log(args.negatives * q.clamp(min=1e-30))  # log of each item's expected count
# --negatives-from batch: item j enters a batch as another example's target with probability p_j, its
# share of the training targets; the in-batch logits are corrected by log p_j
target_counts = torch.bincount(examples["target"], minlength=N + 1).clamp(min=1).double()
log_p_target = (target_counts / len(examples["target"])).log().float()


def user_inputs(history, users=None, example_age=None):
    history = history.to(device)
    bags = {k: t.to(device)[history].flatten(1) for k, t in bag_tables_t.items()}  # (B, L*A)
    feats = user_table.to(device)[users] if user_table is not None else None
    return dict(history=history, bags=bags, user_features=feats, example_age=example_age)


# %% [markdown]
# ## Model and training (sampled softmax with log-Q correction)

# %%
config = ytd.YoutubeDNNConfig(
    n_items=N, dim=args.dim, bag_sizes=bag_sizes, user_feature_sizes=user_sizes,
    use_example_age=not args.no_age, hidden=args.hidden, dropout=args.dropout,
    final_relu=not args.linear_top,
)
model = ytd.YoutubeDNN(config=config).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
gen = torch.Generator().manual_seed(args.seed)
q_dev, log_expected_dev, log_p_target_dev = q.to(device), log_expected.to(device), log_p_target.to(device)
print(model)


def sampled_loss(m, batch, no_logq):
    """Sampled softmax of model `m` on one batch; `no_logq` drops the log-Q correction (ablation)."""
    u = m.user_tower(**user_inputs(batch["history"], batch["user"], batch["example_age"].to(device)))
    target = batch["target"].to(device)
    if args.negatives_from == "batch":  # the other examples' targets, accidental hits masked
        lq_t = torch.zeros_like(target, dtype=u.dtype) if no_logq else log_p_target_dev[target]
        return m.inbatch_loss(user_vec=u, target=target, log_q_target=lq_t)
    neg = torch.multinomial(q, args.negatives, replacement=True, generator=gen).to(device)
    if no_logq:
        lq_t, lq_n = torch.zeros_like(target, dtype=u.dtype), torch.zeros(len(neg), device=device)
    else:
        lq_t, lq_n = log_expected_dev[target], log_expected_dev[neg]
    return m.loss(user_vec=u, target=target, negatives=neg, log_q_target=lq_t, log_q_negatives=lq_n)


def scorer(m):
    def score(batch):
        u = m.user_tower(**user_inputs(batch["history"], batch["user"]))  # example age 0
        return u @ m.item_tower().T  # (b, D) @ (D, N+1)
    return score


def train_step(batch):
    return sampled_loss(model, batch, args.no_logq)


score_fn = scorer(model)


def evaluate():
    if ddp is None:
        return evaluate_full_ranking(score_fn, split, "valid", max_len=args.max_len, device=device)
    # --ddp: each process ranks its shard of the users; the ranks gathered give the single-process metrics
    return ranking_metrics(distributed.sharded_ranks(
        lambda rows: evaluate_full_ranking(score_fn, split, "valid", max_len=args.max_len, device=device,
                                           users=rows, return_ranks=True)[1],
        np.arange(split.n_users), ddp))


if ckpt is not None:  # --load: the saved weights, no training
    if ckpt["models"]["model"]["config"] != asdict(config):
        raise Datasets.DataError(f"--load {args.load}: the checkpoint's model config {ckpt['config']} does "
                                 f"not fit this data ({asdict(config)}); expected the data it was trained on")
    load_weights(model, ckpt["models"]["model"]["state"], args.load)
    epochs_run, best_epoch, train_seconds, samples_per_s = ckpt["extra"]["epochs"], ckpt["extra"]["best_epoch"], 0.0, None
    print(f"loaded {args.load}: trained {epochs_run} epochs, best validation epoch {best_epoch}; "
          "training skipped")
else:
    step, after_backward = train_step, None
    if ddp is not None:  # each process: its rows of every global batch; gradients summed before each step
        step, after_backward, n_steps = distributed.training_hooks(
            model, train_step, lambda batch: len(batch["target"]), ddp, check_every_step=args.debug)
    history = fit(
        model, step, lambda epoch: train_set.batches(args.batch_size, generator=gen), optimizer,
        args.epochs, evaluate, metric="NDCG@10", patience=args.patience, eval_every=args.eval_every,
        n_batches=train_set.num_batches(args.batch_size), desc="YoutubeDNN",
        time_budget=args.time_budget, after_backward=after_backward,
    )
    if ddp is not None:
        if args.debug:
            distributed.report_sync(model, ddp, n_steps())
        if not ddp.is_main:
            distributed.leave(ddp)  # rank 0 tests, serves and reports; this process ends here
        ddp = None  # on its own from here: evaluate() is single-process again
    epochs_run, best_epoch, train_seconds = len(history.epochs), history.best_epoch, history.train_seconds
    samples_per_s = len(train_set) * epochs_run / max(train_seconds, 1e-9)
    print(f"trained {epochs_run} epochs in {train_seconds:.1f}s "
          f"({samples_per_s:,.0f} samples/s), best validation epoch {best_epoch}")

# %% [markdown]
# ## Test: full ranking beside popularity (same split, same protocol)

# %%
model.eval()
with Timer() as t_eval:
    test_metrics = evaluate_full_ranking(score_fn, split, "test", max_len=args.max_len, device=device)
valid_metrics = evaluate()
pop = popularity_metrics(split, "test")
print("test      ", {k: round(v, 4) for k, v in test_metrics.items()})
print("popularity", {k: round(v, 4) for k, v in pop.items()})

# %% [markdown]
# ## Serving: item vectors in a faiss index; ANN recall against exact top-K, query latency

# %%
K = min(50, N)
with torch.no_grad():
    hist_t, _ = split.history("test", args.max_len)
    user_rows = torch.from_numpy(split.users)
    user_vecs = torch.cat([model.user_tower(**user_inputs(torch.from_numpy(hist_t[s:s + 4096]),
                                                          user_rows[s:s + 4096]))
                           for s in range(0, len(hist_t), 4096)]).cpu()
    item_vecs = model.item_tower().detach().cpu()
with Timer() as t_exact:
    exact_ids, _ = topk(user_vecs, item_vecs, K)
indexes = {  # HNSW on raw inner products, HNSW in L2 after the MIPS reduction, IVF (exact within lists)
    "hnsw-ip-ef128": lambda: FaissIndex(item_vecs, kind="hnsw", ef_search=128, threads=args.threads),
    "hnsw-ip-ef512": lambda: FaissIndex(item_vecs, kind="hnsw", ef_search=512, threads=args.threads),
    "hnsw-mips-ef512": lambda: MipsHNSW(item_vecs, ef_search=512, threads=args.threads),
    "ivf-ip-nprobe16": lambda: FaissIndex(item_vecs, kind="ivf", nprobe=16, threads=args.threads),
}
ann = {"k": K, "queries": len(user_vecs), "exact_ms_per_query": 1000 * t_exact.seconds / len(user_vecs)}
for name, build in indexes.items():
    with Timer() as t_build:
        index = build()
    with Timer() as t_ann:
        ann_ids, _ = index.search(user_vecs, K)
    ann[name] = {"recall_vs_exact": recall_vs_exact(ann_ids, exact_ids.numpy()),
                 "ms_per_query": 1000 * t_ann.seconds / len(user_vecs), "build_seconds": t_build.seconds}
    print(f"{name:16s}: recall@{K} vs exact top-{K} {ann[name]['recall_vs_exact']:.4f}, "
          f"{ann[name]['ms_per_query']:.3f} ms per query (exact: {ann['exact_ms_per_query']:.3f} ms), "
          f"built in {t_build.seconds:.2f}s; batched over {len(user_vecs):,} users")

# %% [markdown]
# ## One user: history and top recommendations (seen items excluded; `--recommend USER` picks the user)

# %%
row = rec_row if args.recommend else int(np.argmax(np.diff(split.train_offsets) >= 5))
offs, seen = split.seen("test")
ids, scores = topk(user_vecs[row:row + 1], item_vecs, 10, exclude=(offs, seen), exclude_rows=[row])
show_recommendations(data, seen[offs[row]:offs[row + 1]].tolist(), ids[0].tolist(), scores[0].tolist(),
                     raw_user=str(data.user_raw[split.users[row]]), last=8)
test_item = int(split.test_items[row])
print(f"held-out test item: {item_label(data, test_item)}"
      + ("  (in the top-10)" if test_item in ids[0].tolist() else ""))

# %% [markdown]
# ## What the log-Q correction does (`--plot-logq PATH`)
#
# A twin model, identical but trained without the correction, is compared with the model above. Items
# are cut into ten bins of equal size by training popularity. Left: the share of the top-10 lists
# (seen items excluded) that falls in each bin, beside the share of the held-out test items. Right:
# Recall@10 of the users whose test item lies in that bin. Without the correction an item that Q draws
# often is pushed down as a negative far more often than its true share, so retrieval drifts to the
# tail.

# %%
logq_ablation = None
if args.plot_logq:
    from Utils.plotting import plt  # matplotlib with the Agg backend

    twin = ytd.YoutubeDNN(config=config).to(device)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    # as many epochs as the model above up to its best one, no early stopping: equal training
    fit(twin, lambda batch: sampled_loss(twin, batch, not args.no_logq),
        lambda epoch: train_set.batches(args.batch_size, generator=gen), twin_opt, best_epoch,
        n_batches=train_set.num_batches(args.batch_size), desc="twin")
    twin.eval()
    n_bins = 10
    item_bin = np.zeros(N + 1, dtype=np.int64)  # popularity bin of each item, 0 = rarest tenth
    order = np.argsort(split.item_counts()[1:], kind="stable") + 1
    item_bin[order] = np.arange(N) * n_bins // N
    offs, seen = split.seen("test")
    test_bin = item_bin[split.test_items]
    profiles, recalls = {}, {}
    for name, m in [("with log-Q", model), ("without log-Q", twin)]:
        if args.no_logq:
            name = {"with log-Q": "without log-Q", "without log-Q": "with log-Q"}[name]
        with torch.no_grad():
            uv = torch.cat([m.user_tower(**user_inputs(torch.from_numpy(hist_t[s:s + 4096]),
                                                       user_rows[s:s + 4096]))
                            for s in range(0, len(hist_t), 4096)]).cpu()
            top10, _ = topk(uv, m.item_tower().detach().cpu(), 10, exclude=(offs, seen))
        top10 = top10.numpy()
        profiles[name] = np.bincount(item_bin[top10].ravel(), minlength=n_bins) / top10.size
        hit = (top10 == split.test_items[:, None]).any(1)
        recalls[name] = np.array([hit[test_bin == b].mean() for b in range(n_bins)])
        print(f"{name:14s}: share of top-10 per popularity bin (rarest first) "
              f"{np.round(profiles[name], 3).tolist()}; Recall@10 per bin "
              f"{np.round(recalls[name], 3).tolist()}, overall {hit.mean():.4f}")
    truth = np.bincount(test_bin, minlength=n_bins) / len(test_bin)
    print(f"{'test items':14s}: share per popularity bin {np.round(truth, 3).tolist()}")
    logq_ablation = {"bins": "ten equal-size item bins by training count, rarest first",
                     "twin_epochs": best_epoch, "test_item_share": truth.tolist(),
                     **{f"top10_share_{k.replace(' ', '_')}": v.tolist() for k, v in profiles.items()},
                     **{f"recall10_{k.replace(' ', '_')}": v.tolist() for k, v in recalls.items()}}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), dpi=120)
    x = np.arange(n_bins)
    ax1.bar(x - 0.27, truth, 0.27, label="held-out test items", color="0.6")
    for off, name, col in [(0, "with log-Q", "C0"), (0.27, "without log-Q", "C3")]:
        ax1.bar(x + off, profiles[name], 0.27, label=f"top-10, {name}", color=col)
        ax2.plot(x, recalls[name], "o-", label=name, color=col)
    for ax in (ax1, ax2):
        ax.set_xticks(x, [f"{b + 1}" for b in x])
        ax.set_xlabel("item popularity bin (tenths of the catalogue; 1 = rarest, 10 = most popular)",
                      fontsize=8)
    ax1.set_ylabel("share")
    ax1.set_title("Where the retrieved items come from", fontsize=9)
    ax2.set_ylabel("Recall@10 (users whose test item is in the bin)", fontsize=8)
    ax2.set_title("Who gets a hit", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle("YoutubeDNN sampled softmax: with and without the log-Q correction "
                 f"({args.data}, test split)", fontsize=9)
    fig.tight_layout()
    Path(args.plot_logq).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot_logq)
    print(f"saved {args.plot_logq}")

# %% [markdown]
# ## Save, export (`--save`, `--export-vectors`, `--export-onnx`): written last, after every step succeeded
#
# The ONNX file is the serving user tower: history ids (B, L) int64, 0 = padding [+ user features
# (B, F)] -> u (B, D), the item bags looked up inside, example age 0. Ranking is then u . v_j with the
# item vectors of `--export-vectors` (`item_vectors`, one row per `item_ids`).


# %%
class ServingUserTower(torch.nn.Module):
    """The user tower as served: item bags looked up from the history inside the graph."""

    def __init__(self, model, bag_tables: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self.bag_names = list(bag_tables)
        for name, table in bag_tables.items():
            self.register_buffer(f"bag_{name}", table)

    def forward(self, history, user_features=None):
        bags = {n: getattr(self, f"bag_{n}")[history].flatten(1) for n in self.bag_names}  # (B, L*A)
        return self.model.user_tower(history=history, bags=bags, user_features=user_features)


def export_onnx(path: str) -> float:
    """Write the serving user tower as ONNX; returns its max abs difference to PyTorch (onnxruntime)."""
    tower = ServingUserTower(model, bag_tables_t).cpu().eval()
    n = min(len(hist_t), 64)
    inputs = (torch.from_numpy(hist_t[:n]),) + ((user_table[split.users[:n]],) if user_table is not None
                                                 else ())
    names = ["history", "user_features"][:len(inputs)]
    batch = torch.export.Dim("batch")
    shapes = ({0: batch, 1: torch.export.Dim("length")},) + (({0: batch},) if len(inputs) > 1 else ())
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):  # the exporter's progress notes
        logging.getLogger(name).setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(tower, inputs, str(tmp), input_names=names, output_names=["user_vector"],
                          dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)
        expected = tower(*inputs).numpy()
    tmp.replace(path)
    if importlib.util.find_spec("onnxruntime") is None:
        return float("nan")
    import onnxruntime as ort

    got = ort.InferenceSession(path).run(None, {k: v.numpy() for k, v in zip(names, inputs)})[0]
    return float(np.abs(got - expected).max())


onnx_max_abs_diff = None
if args.export_onnx:
    model.cpu()
    onnx_max_abs_diff = export_onnx(args.export_onnx)
    model.to(device)
    print(f"ONNX user tower written to {args.export_onnx}; onnxruntime vs PyTorch on {min(len(hist_t), 64)} "
          f"users: max abs diff {onnx_max_abs_diff:.2e}")
if args.export_vectors:
    export_vectors(args.export_vectors, item_vectors=item_vecs, data=data, user_vectors=user_vecs,
                   user_ids=split.users)
    print(f"vectors written to {args.export_vectors}: {N} items, {len(user_vecs)} users, D = {config.dim}")
if args.save:
    save_recall_checkpoint(args.save, model, data, name="YoutubeDNN", config=config, args=args,
                           keys=MODEL_FLAGS, epochs=epochs_run, best_epoch=best_epoch)
    print(f"saved {args.save} (weights, config, id maps); reuse with --load {args.save}")

# %%
# the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
print_result(
    model="YoutubeDNN", data=args.data,
    protocol=f"leave-one-out, full ranking over {N} items, seen items excluded, test split",
    metrics=test_metrics, baseline={"name": "popularity", "metrics": pop},
    train_seconds=train_seconds, eval_seconds=t_eval.seconds, epochs=epochs_run,
    params=count_params(model), out=args.out, valid_metrics=valid_metrics,
    best_epoch=best_epoch, samples_per_second=samples_per_s, train_examples=len(train_set),
    ann=ann, logq_ablation=logq_ablation, onnx_max_abs_diff=onnx_max_abs_diff, loaded_from=args.load,
    config={k: v for k, v in vars(args).items() if k != "out"},
    threads=torch.get_num_threads(),
)
