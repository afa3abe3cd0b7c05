# %% [markdown]
# # DIN demo — behaviour-sequence CTR: base model (sum pooling) vs DIN vs logistic regression
#
# CPU, synthetic default (23 s of CPU time with 1 thread; base model + DIN + logistic regression):
#
#     python "Classic Models/Ranking/DIN/demo.py"
#
# Amazon Beauty, built the way the DIN paper built its Amazon set (see `Datasets/behavior_ctr.py`;
# about 1 min of CPU and wall time with 1 thread):
#
#     OMP_NUM_THREADS=1 python "Classic Models/Ranking/DIN/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --epochs 4 \
#         --out assets/DIN/results/beauty.json
#
# The note's figure (the same synthetic run, then a heatmap of the activation weights of one user for
# two candidates; about 35 s of CPU time):
#
#     python "Classic Models/Ranking/DIN/demo.py" --threads 1 \
#         --plot-internals assets/DIN/attention_two_candidates.png
#
# Save both trained models, then reload them (no training) to evaluate and recommend for one user
# (`--recommend` takes a raw user id as in the data file; on the synthetic data e.g. U00007):
#
#     python "Classic Models/Ranking/DIN/demo.py" --save /tmp/din.pt
#     python "Classic Models/Ranking/DIN/demo.py" --load /tmp/din.pt --recommend U00007
#
# Every flag: `--help`. The last line printed is `RESULT {json}`.

# %%
import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from Datasets import DataError
from Utils.demo_io import apply_saved_args, read_checkpoint, restore
from Utils.io import add_common_args, load_model_file, model_dir, print_result
from Utils.loops.behavior_demo import (
    add_behavior_args,
    auc_by_positive_count,
    check_saved_items,
    ctr_metrics,
    load_behavior_ctr,
    logistic_baseline,
    non_negative_float,
    pick_user_and_candidates,
    print_by_positive_count,
    recommend,
    save_models,
    show_user,
)
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

din = load_model_file(model_dir("Ranking", "DIN") / "model.py", "din_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=4, batch_size=256,
                         lr=1e-3)
parser.add_argument("--mba-lambda", type=non_negative_float, default=0.0,
                    help="mini-batch aware L2 strength, Eq. (6)-(7); 0 = off")
parser.add_argument("--activation", default="dice", choices=["dice", "prelu"])
parser.add_argument("--attention-init-bias", type=float, default=1.0,
                    help="initial bias of the activation unit's output (1 = start as sum pooling)")
parser.add_argument("--plot-internals", default=None, metavar="PATH",
                    help="write a heatmap of DIN's activation weights over one test user's "
                         "behaviours for two candidates of different categories (PNG)")
args = add_behavior_args(parser).parse_args()
cpu_setup(args.threads)
saved = read_checkpoint(args.load, demo="DIN") if args.load else None
if saved:
    apply_saved_args(args, saved)  # the same rows as the run that saved the models
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: (behaviours, candidate, click) rows, and the ranking stage's baseline
# Synthetic default: impressions whose clicks were planted by the generator (interest x category,
# price tier, similarity of the candidate to the last behaviours). Real data: the DIN paper's
# recipe — the next item is the positive, an item the user never touched is the negative, the
# earlier items (with their attributes) are the behaviours; leave-one-out: valid = second-to-last,
# test = last item. Baseline: logistic regression on the candidate's fields.

# %%
bctr = load_behavior_ctr(args, demo="the DIN demo")
fields, vocab, split = bctr.fields, bctr.vocab, bctr.split
if args.plot_internals and fields.shape[1] < 2:
    raise DataError(f"--plot-internals picks candidates by category: {bctr.data.name} has no item "
                    "category or attribute field; expected data with item attributes")
if saved:
    check_saved_items(saved, bctr, args.load)
train, valid, test = bctr.sets["train"], bctr.sets["valid"], bctr.sets["test"]
lr_result = logistic_baseline(bctr, args.seed)

# %% [markdown]
# ## Train the base model (sum pooling) and DIN with the same settings
# (`--load PATH`: no training; both models come from the file `--save PATH` wrote.)

# %%
def train_model(pooling):
    set_seed(args.seed)
    freqs = None
    if args.mba_lambda > 0:  # n_j of Eq. (6): occurrences of each id in the training sequences
        seen = fields[torch.as_tensor(split.train_items)]  # (N, G)
        freqs = [torch.bincount(seen[:, g], minlength=v).float() for g, v in enumerate(vocab)]
    config = din.DINConfig(item_vocab_sizes=vocab, dim=args.dim, pooling=pooling,
                           activation=args.activation, mba_lambda=args.mba_lambda,
                           attention_init_bias=args.attention_init_bias, id_frequencies=freqs)
    model = din.DIN.from_config(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)

    def step(b):
        target, history = fields[b["target"]].to(device), fields[b["history"]].to(device)
        return model.loss(model(target, history), b["label"].to(device), target=target,
                          history=history)

    hist = fit(model, step, lambda e: train.batches(args.batch_size, generator=gen), opt,
               args.epochs, evaluate=lambda: ctr_metrics(model, valid, fields, device),
               metric="AUC", patience=2, n_batches=train.num_batches(args.batch_size),
               desc=pooling)
    return model, hist


if saved:
    model = restore(din.DIN, saved["models"]["model"], device, args.load)
    base = restore(din.DIN, saved["models"]["base"], device, args.load)
    train_seconds = base_seconds = 0.0
    runs = saved["extra"]["runs"]  # epochs and best validation metrics of the run that saved them
    print(f"loaded DIN and the base model from {args.load} (no training)")
else:
    t0 = time.perf_counter()
    base, base_hist = train_model("sum")
    base_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, hist = train_model("attention")
    train_seconds = time.perf_counter() - t0
    runs = {name: {"epochs": len(h.epochs), "valid": h.epochs[h.best_epoch - 1]}
            for name, h in (("DIN", hist), ("base", base_hist))}
if args.save:
    save_models(args, args.save, "DIN", {"model": (model, asdict(model.config)),
                                         "base": (base, asdict(base.config))},
                runs=runs, ids={"item": bctr.data.item_raw}, fields=fields,
                vocab=vocab)

t0 = time.perf_counter()
base_test, din_test = ctr_metrics(base, test, fields, device), ctr_metrics(model, test, fields,
                                                                            device)
eval_seconds = time.perf_counter() - t0
for name, m in [("logistic regression", lr_result["metrics"]), ("base (sum pooling)", base_test),
                ("DIN", din_test)]:
    print(f"{name:>22s}  " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
by_count = {name: {stage: auc_by_positive_count(m, bctr, stage, device)
                    for stage in ("valid", "test")}
            for name, m in (("base", base), ("DIN", model))}
for name, stages in by_count.items():
    for stage, buckets in stages.items():
        print_by_positive_count(name, stage, buckets)

# %% [markdown]
# ## One user: history, DIN's activation weights, and the top candidates

# %%
show_user(model, bctr, args.max_len,
          weights=lambda cand, hist: model.activation_weights(cand, hist)[0],
          what="activation weights for the top candidate (not normalised; padding = 0):")
if args.recommend is not None:  # `--recommend USER`: every item the user has not touched
    recommend(model, bctr, args.recommend, args.max_len, device)

# %% [markdown]
# ## `--plot-internals PATH`: the same behaviours, weighted for two different candidates
# One test user whose last behaviours hold two categories; for each category, its most popular item
# the user never touched is a candidate. Each heatmap row is Eq. (3)'s a(e_j, v_A) for one candidate
# over the user's last behaviours: the candidate turns up the behaviours of its own category.

# %%
def item_label(i: int) -> str:
    """'title [category]' on the synthetic data, the data set's own description otherwise."""
    return bctr.data.item_text(i).replace(" [", "\n[")


if args.plot_internals:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, cands = pick_user_and_candidates(bctr, args.max_len)
    model.eval()
    with torch.no_grad():
        w = model.activation_weights(fields[torch.as_tensor(cands)].to(device),
                                     fields[history].unsqueeze(0).expand(2, -1, -1).to(device))
    shown = torch.nonzero(history > 0).flatten()[-12:]  # the last 12 behaviours, oldest first
    w = w[:, shown].cpu().numpy()  # (2 candidates, 12 behaviours)
    fig, ax = plt.subplots(figsize=(12, 4.6), dpi=120)
    im = ax.imshow(w, cmap="viridis", aspect="auto")
    for r in range(w.shape[0]):
        for c in range(w.shape[1]):
            ax.text(c, r, f"{w[r, c]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if w[r, c] < (w.max() + w.min()) / 2 else "black")
    ax.set_xticks(range(len(shown)), [item_label(int(history[j])) for j in shown], rotation=40,
                  ha="right", fontsize=7)
    ax.set_yticks(range(2), [f"candidate:\n{item_label(int(c))}" for c in cands], fontsize=8)
    ax.set_xlabel("the user's last behaviours, oldest left")
    ax.set_title("DIN activation weights a(e_j, v_A) of Eq. (3) for one user and two candidates")
    fig.colorbar(im, ax=ax, label="weight (not normalised)")
    fig.tight_layout()
    Path(args.plot_internals).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot_internals)
    plt.close(fig)
    print("wrote", args.plot_internals)

# %%
print_result(
    model="DIN", data=args.data, protocol=bctr.protocol, metrics=din_test,
    baseline={"name": "logistic regression (candidate fields)", "metrics": lr_result["metrics"]},
    train_seconds=train_seconds, eval_seconds=eval_seconds, epochs=runs["DIN"]["epochs"],
    params=count_params(model), out=args.out,
    base_model={"name": "Embedding&MLP base model (sum pooling)", "metrics": base_test,
                "train_seconds": base_seconds, "epochs": runs["base"]["epochs"]},
    valid_metrics={"DIN": runs["DIN"]["valid"], "base": runs["base"]["valid"]},
    auc_by_positive_count=by_count,
    n_users=bctr.n_users, rows={k: len(v) for k, v in bctr.sets.items()}, max_len=args.max_len,
    dim=model.config.dim, threads=torch.get_num_threads(), loaded_from=args.load,
)
