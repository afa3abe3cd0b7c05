# %% [markdown]
# # DIN demo — behaviour-sequence CTR: base model (sum pooling) vs DIN vs logistic regression
#
# CPU, synthetic default (23 s of CPU time with 1 thread; base model + DIN + logistic regression):
#
#     python "Classic Models/Ranking/DIN/demo.py"
#
# Amazon Beauty, built the way the DIN paper built its Amazon set (see `Datasets/behavior_ctr.py`;
# 66 s of CPU time, 7 min of wall time with 1 thread on a loaded, shared 2-core machine):
#
#     OMP_NUM_THREADS=1 python "Classic Models/Ranking/DIN/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --epochs 4 \
#         --out assets/DIN/results/beauty.json
#
# Every flag: `--help`. The last line printed is `RESULT {json}`.

# %%
import argparse
import time
from pathlib import Path

import torch

from Utils.behavior_demo import (
    add_behavior_args,
    auc_by_positive_count,
    ctr_metrics,
    load_behavior_ctr,
    logistic_baseline,
    print_by_positive_count,
    show_user,
)
from Utils.io import add_common_args, load_model_file, print_result
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent


din = load_model_file(HERE / "model.py", "din_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=4, batch_size=256,
                         lr=1e-3)
parser.add_argument("--mba-lambda", type=float, default=0.0,
                    help="mini-batch aware L2 strength, Eq. (6)-(7); 0 = off")
parser.add_argument("--activation", default="dice", choices=["dice", "prelu"])
parser.add_argument("--attention-init-bias", type=float, default=1.0,
                    help="initial bias of the activation unit's output (1 = start as sum pooling)")
args = add_behavior_args(parser).parse_args()
cpu_setup(args.threads)
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
bctr = load_behavior_ctr(args)
fields, vocab, split = bctr.fields, bctr.vocab, bctr.split
train, valid, test = bctr.sets["train"], bctr.sets["valid"], bctr.sets["test"]
lr_result = logistic_baseline(bctr, args.seed)

# %% [markdown]
# ## Train the base model (sum pooling) and DIN with the same settings

# %%
def train_model(pooling):
    set_seed(args.seed)
    freqs = None
    if args.mba_lambda > 0:  # n_j of Eq. (6): occurrences of each id in the training sequences
        seen = fields[torch.as_tensor(split.train_items)]  # (N, G)
        freqs = [torch.bincount(seen[:, g], minlength=v).float() for g, v in enumerate(vocab)]
    model = din.DIN(item_vocab_sizes=vocab, dim=args.dim, pooling=pooling,
                    activation=args.activation, mba_lambda=args.mba_lambda,
                    attention_init_bias=args.attention_init_bias,
                    id_frequencies=freqs).to(device)
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


t0 = time.perf_counter()
base, base_hist = train_model("sum")
base_seconds = time.perf_counter() - t0
t0 = time.perf_counter()
model, hist = train_model("attention")
train_seconds = time.perf_counter() - t0

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

# %%
print_result(
    model="DIN", data=args.data, protocol=bctr.protocol, metrics=din_test,
    baseline={"name": "logistic regression (candidate fields)", "metrics": lr_result["metrics"]},
    train_seconds=train_seconds, eval_seconds=eval_seconds, epochs=len(hist.epochs),
    params=count_params(model), out=args.out,
    base_model={"name": "Embedding&MLP base model (sum pooling)", "metrics": base_test,
                "train_seconds": base_seconds, "epochs": len(base_hist.epochs)},
    valid_metrics={"DIN": hist.epochs[hist.best_epoch - 1],
                   "base": base_hist.epochs[base_hist.best_epoch - 1]},
    auc_by_positive_count=by_count,
    n_users=bctr.n_users, rows={k: len(v) for k, v in bctr.sets.items()}, max_len=args.max_len,
    dim=args.dim, threads=torch.get_num_threads(),
)
