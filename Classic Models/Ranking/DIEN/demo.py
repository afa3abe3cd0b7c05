# %% [markdown]
# # DIEN demo — behaviour-sequence CTR with interest evolution (AUGRU + auxiliary loss)
#
# CPU, synthetic default (43 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/DIEN/demo.py"
#
# Amazon Beauty, the same DIN-paper style samples and split as the DIN demo (same seed, so the DIN
# and base-model numbers in the DIN note are on identical rows; about 3 min of CPU time and 3 to 4
# min of wall time with 1 thread):
#
#     OMP_NUM_THREADS=1 python "Classic Models/Ranking/DIEN/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --epochs 4 \
#         --out assets/DIEN/results/beauty.json
#
# The note's figure (the same synthetic run, then the attention and the AUGRU update gate through
# time for one user and two candidates; about 80 s of CPU time):
#
#     python "Classic Models/Ranking/DIEN/demo.py" --threads 1 \
#         --plot-internals assets/DIEN/attention_and_update_gate.png
#
# Save the trained model, then reload it (no training) to evaluate and recommend for one user
# (`--recommend` takes a raw user id as in the data file; on the synthetic data e.g. U00007):
#
#     python "Classic Models/Ranking/DIEN/demo.py" --save /tmp/dien.pt
#     python "Classic Models/Ranking/DIEN/demo.py" --load /tmp/dien.pt --recommend U00007
#
# Every flag: `--help`. The last line printed is `RESULT {json}`.

# %%
import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
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
    step_negatives,
)
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

dien = load_model_file(model_dir("Ranking", "DIEN") / "model.py", "dien_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=3, batch_size=256,
                         lr=1e-3)
parser.add_argument("--aux-weight", type=non_negative_float, default=1.0,
                    help="alpha of Eq. (7); 0 switches the auxiliary loss off")
parser.add_argument("--evolution", default="augru", choices=["augru", "agru", "aigru", "gru"])
parser.add_argument("--activation", default="dice", choices=["dice", "prelu"],
                    help="MLP activation (official DIEN: Dice)")
parser.add_argument("--aux-negatives", default="uniform", choices=["uniform", "popularity"],
                    help="the auxiliary loss's non-clicked item per step: uniform over items (the "
                         "paper's wording) or in proportion to training clicks (official code)")
parser.add_argument("--plot-internals", default=None, metavar="PATH",
                    help="plot, for one test user and two candidates, the attention a_t and the "
                         "AUGRU update gate through time (PNG)")
args = add_behavior_args(parser).parse_args()
cpu_setup(args.threads)
saved = read_checkpoint(args.load, demo="DIEN") if args.load else None
if saved:
    apply_saved_args(args, saved)  # the same rows as the run that saved the model
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: (behaviours, candidate, click) rows, and the ranking stage's baseline
# The same rows as the DIN demo (`Utils.loops.behavior_demo`): on the synthetic default, impressions with
# planted clicks; on real data, the DIN paper's recipe (next item = positive, a never-touched item =
# negative, earlier items with their attributes = behaviours; leave-one-out). Baseline: logistic
# regression on the candidate's fields.

# %%
bctr = load_behavior_ctr(args, demo="the DIEN demo")
fields, split = bctr.fields, bctr.split
if args.plot_internals and fields.shape[1] < 2:
    raise DataError(f"--plot-internals picks candidates by category: {bctr.data.name} has no item "
                    "category or attribute field; expected data with item attributes")
if saved:
    check_saved_items(saved, bctr, args.load)
train, valid, test = bctr.sets["train"], bctr.sets["valid"], bctr.sets["test"]
lr_result = logistic_baseline(bctr, args.seed)

# %% [markdown]
# ## Train DIEN: target loss + alpha * auxiliary loss (next behaviour vs a sampled item)
# (`--load PATH`: no training; the model comes from the file `--save PATH` wrote.)

# %%
set_seed(args.seed)
if saved:
    model = restore(dien.DIEN, saved["models"]["model"], device, args.load)
    print(f"loaded DIEN from {args.load} (no training)")
else:
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


if saved:
    run, train_seconds = saved["extra"]["runs"]["DIEN"], 0.0  # epochs and best validation metrics
else:
    t0 = time.perf_counter()
    hist = fit(model, step, lambda e: train.batches(args.batch_size, generator=gen), opt,
               args.epochs, evaluate=lambda: ctr_metrics(model, valid, fields, device),
               metric="AUC", patience=2, n_batches=train.num_batches(args.batch_size),
               desc="DIEN")
    train_seconds = time.perf_counter() - t0
    run = {"epochs": len(hist.epochs), "valid": hist.epochs[hist.best_epoch - 1]}
if args.save:
    save_models(args, args.save, "DIEN", {"model": (model, asdict(model.config))},
                runs={"DIEN": run}, ids={"item": bctr.data.item_raw},
                fields=fields, vocab=bctr.vocab)
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
    """a_t of Eq. (8) for one candidate (1, G) over one history (1, L, G): (L,)."""
    mask = hist[:, :, 0] != 0
    interests = model.extract_interests(model.embed_items(hist), mask)
    return model.attention_scores(interests, model.embed_items(cand), mask)[0]


show_user(model, bctr, args.max_len, weights=attention,
          what="AUGRU attention a_t for the top candidate (softmax over real steps, Eq. 8):")
if args.recommend is not None:  # `--recommend USER`: every item the user has not touched
    recommend(model, bctr, args.recommend, args.max_len, device)

# %% [markdown]
# ## `--plot-internals PATH`: attention and the AUGRU update gate through time, one user
# One test user whose last behaviours hold two categories; for each category, its most popular item
# the user never touched is a candidate. Top: the attention a_t of Eq. (8) over the behaviours
# (sums to 1 per candidate). Bottom: the AUGRU's update gate u~'_t = a_t u'_t of Eq. (11), averaged
# over its H dimensions: how far each step moves the evolving interest h'_t towards its proposal.

# %%
if args.plot_internals:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, cands = pick_user_and_candidates(bctr, args.max_len)
    model.eval()
    with torch.no_grad():
        scores, gates = model.evolution_trace(
            fields[torch.as_tensor(cands)].to(device),
            fields[history].unsqueeze(0).expand(2, -1, -1).to(device))  # (2, T), (2, T, H)
    real = torch.nonzero(history > 0).flatten()  # the user's behaviours, oldest first
    steps = np.arange(len(real))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), dpi=120, sharex=True)
    for k, (c, colour) in enumerate(zip(cands, ("tab:red", "tab:blue"))):
        name = bctr.data.item_text(int(c))
        top.plot(steps, scores[k, real].cpu().numpy(), "o-", color=colour, label=name)
        bottom.plot(steps, gates[k, real].mean(-1).cpu().numpy(), "o-", color=colour, label=name)
    top.set_ylabel("attention a_t, Eq. (8)")
    top.set_title("DIEN, one user, two candidates: attention over the behaviours (top) and the "
                  "AUGRU update gate (bottom)", fontsize=10)
    top.legend(title="candidate", fontsize=8)
    bottom.set_ylabel("update gate u~'_t = a_t u'_t\n(mean over H), Eq. (11)")
    bottom.set_xticks(steps, [bctr.data.item_text(int(history[j])).replace(" [", "\n[")
                              for j in real], rotation=40, ha="right", fontsize=7)
    bottom.set_xlabel("the user's behaviours, oldest left")
    fig.tight_layout()
    Path(args.plot_internals).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot_internals)
    plt.close(fig)
    print("wrote", args.plot_internals)

# %%
print_result(
    model="DIEN", data=args.data, protocol=bctr.protocol, metrics=dien_test,
    baseline={"name": "logistic regression (candidate fields)", "metrics": lr_result["metrics"]},
    train_seconds=train_seconds, eval_seconds=eval_seconds, epochs=run["epochs"],
    params=count_params(model), out=args.out,
    valid_metrics=run["valid"],
    auc_by_positive_count=by_count,
    n_users=bctr.n_users, rows={k: len(v) for k, v in bctr.sets.items()}, max_len=args.max_len,
    dim=model.config.dim, evolution=model.config.evolution, aux_weight=model.config.aux_weight,
    activation=model.config.activation, aux_negatives=args.aux_negatives,
    threads=torch.get_num_threads(),
    loaded_from=args.load,
)
