# %% [markdown]
# # DIEN demo — behaviour-sequence CTR with interest evolution (AUGRU + auxiliary loss)
#
# CPU, synthetic default (43 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/DIEN/demo.py"
#
# Amazon Beauty, the same DIN-paper style samples and split as the DIN demo (same seed, so the DIN
# and base-model numbers in the DIN note are on identical rows; 206 s of CPU time, 13 min of wall
# time with 1 thread on a loaded, shared 2-core machine):
#
#     OMP_NUM_THREADS=1 python "Classic Models/Ranking/DIEN/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --epochs 4 \
#         --out assets/DIEN/results/beauty.json
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
    step_negatives,
)
from Utils.io import add_common_args, load_model_file, print_result
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent


dien = load_model_file(HERE / "model.py", "dien_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=3, batch_size=256,
                         lr=1e-3)
parser.add_argument("--aux-weight", type=float, default=1.0,
                    help="alpha of Eq. (6); 0 switches the auxiliary loss off")
parser.add_argument("--evolution", default="augru", choices=["augru", "agru", "aigru", "gru"])
parser.add_argument("--activation", default="dice", choices=["dice", "prelu"],
                    help="MLP activation (official DIEN: Dice)")
parser.add_argument("--aux-negatives", default="uniform", choices=["uniform", "popularity"],
                    help="the auxiliary loss's non-clicked item per step: uniform over items (the "
                         "paper's wording) or in proportion to training clicks (official code)")
args = add_behavior_args(parser).parse_args()
cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: (behaviours, candidate, click) rows, and the ranking stage's baseline
# The same rows as the DIN demo (`Utils.behavior_demo`): on the synthetic default, impressions with
# planted clicks; on real data, the DIN paper's recipe (next item = positive, a never-touched item =
# negative, earlier items with their attributes = behaviours; leave-one-out). Baseline: logistic
# regression on the candidate's fields.

# %%
bctr = load_behavior_ctr(args)
fields, split = bctr.fields, bctr.split
train, valid, test = bctr.sets["train"], bctr.sets["valid"], bctr.sets["test"]
lr_result = logistic_baseline(bctr, args.seed)

# %% [markdown]
# ## Train DIEN: target loss + alpha * auxiliary loss (next behaviour vs a sampled item)

# %%
set_seed(args.seed)
model = dien.DIEN(item_vocab_sizes=bctr.vocab, dim=args.dim, evolution=args.evolution,
                  aux_weight=args.aux_weight, activation=args.activation).to(device)
opt = torch.optim.Adam(model.parameters(), lr=args.lr)
gen = torch.Generator().manual_seed(args.seed)
neg_gen = torch.Generator().manual_seed(args.seed + 7)
# --aux-negatives popularity: draw from every training click (the official iterator's way)
click_pool = None if args.aux_negatives == "uniform" else torch.as_tensor(split.train_items)


def step(b):
    history = b["history"]
    neg_items = step_negatives(history, split.n_items, neg_gen, clicks=click_pool)
    logits, aux = model(fields[b["target"]].to(device), fields[history].to(device),
                        neg_history=fields[neg_items].to(device), return_aux=True)
    return model.loss(logits, b["label"].to(device), aux)


t0 = time.perf_counter()
hist = fit(model, step, lambda e: train.batches(args.batch_size, generator=gen), opt, args.epochs,
           evaluate=lambda: ctr_metrics(model, valid, fields, device), metric="AUC", patience=2,
           n_batches=train.num_batches(args.batch_size), desc="DIEN")
train_seconds = time.perf_counter() - t0
t0 = time.perf_counter()
dien_test = ctr_metrics(model, test, fields, device)
eval_seconds = time.perf_counter() - t0
for name, m in [("logistic regression", lr_result["metrics"]), ("DIEN", dien_test)]:
    print(f"{name:>22s}  " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
by_count = {stage: auc_by_positive_count(model, bctr, stage, device) for stage in ("valid", "test")}
for stage, buckets in by_count.items():
    print_by_positive_count("DIEN", stage, buckets)

# %% [markdown]
# ## One user: history, DIEN's attention over the evolving interests, and the top candidates

# %%
def attention(cand, hist):
    """a_t of Eq. (7) for one candidate (1, G) over one history (1, L, G): (L,)."""
    mask = hist[:, :, 0] != 0
    interests = model.extract_interests(model.embed_items(hist), mask)
    return model.attention_scores(interests, model.embed_items(cand), mask)[0]


show_user(model, bctr, args.max_len, weights=attention,
          what="AUGRU attention a_t for the top candidate (softmax over real steps, Eq. 7):")

# %%
print_result(
    model="DIEN", data=args.data, protocol=bctr.protocol, metrics=dien_test,
    baseline={"name": "logistic regression (candidate fields)", "metrics": lr_result["metrics"]},
    train_seconds=train_seconds, eval_seconds=eval_seconds, epochs=len(hist.epochs),
    params=count_params(model), out=args.out,
    valid_metrics=hist.epochs[hist.best_epoch - 1],
    auc_by_positive_count=by_count,
    n_users=bctr.n_users, rows={k: len(v) for k, v in bctr.sets.items()}, max_len=args.max_len,
    dim=args.dim, evolution=args.evolution, aux_weight=args.aux_weight,
    activation=args.activation, aux_negatives=args.aux_negatives, threads=torch.get_num_threads(),
)
