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
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets.BaseDatasets import CTRDataset, TensorDictDataset
from Datasets.behavior_ctr import build_behavior_ctr, item_field_table
from Utils.baselines import logistic_regression
from Utils.evaluation import evaluate_ctr
from Utils.io import add_common_args, print_result
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent


def load_model_module():
    """model.py stands alone; load it by path (the folder name has a space)."""
    spec = importlib.util.spec_from_file_location("dien_model", HERE / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dien = load_model_module()

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=3, batch_size=256,
                         lr=1e-3)
parser.add_argument("--max-len", type=int, default=20, help="behaviours kept per sample")
parser.add_argument("--dim", type=int, default=16, help="embedding dim per item field")
parser.add_argument("--n-attributes", type=int, default=3,
                    help="attribute/category fields per item, beside the item id")
parser.add_argument("--aux-weight", type=float, default=1.0,
                    help="alpha of Eq. (6); 0 switches the auxiliary loss off")
parser.add_argument("--evolution", default="augru", choices=["augru", "agru", "aigru", "gru"])
parser.add_argument("--max-users", type=int, default=None,
                    help="keep a random subset of users (seeded) to shorten real-data runs")
parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
args = parser.parse_args()
cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: (behaviours, candidate, click) rows
# Synthetic default: impressions whose clicks were planted by the generator (interest x category,
# price tier, similarity of the candidate to the last behaviours). Real data: the DIN paper's
# recipe — the next item is the positive, an item the user never touched is the negative, the
# earlier items (with their attributes) are the behaviours; leave-one-out: valid = second-to-last,
# test = last item.

# %%
data = Datasets.load(args.data, verbose=True)
split = Datasets.leave_one_out(data)
print(split)
fields = item_field_table(data, n_attributes=args.n_attributes)  # (n_items+1, G)
vocab = tuple(int(v) + 1 for v in fields.max(0).values)
keep_users = None
if args.max_users is not None and args.max_users < split.n_users:
    keep_users = np.sort(np.random.default_rng(args.seed).choice(split.n_users, args.max_users,
                                                                 replace=False))
    print(f"subsampled {args.max_users:,} of {split.n_users:,} users (seed {args.seed})")

if "truth" in data.extra:  # the synthetic world knows the true click model
    from Datasets.synthetic import ctr_impressions

    sets = {}
    for stage in ("train", "valid", "test"):
        imp = ctr_impressions(data, split, stage, max_len=args.max_len, seed=args.seed)
        sets[stage] = TensorDictDataset({k: torch.as_tensor(imp[k]) for k in ("user", "history",
                                                                              "label")}
                                        | {"target": torch.as_tensor(imp["item"])})
    protocol = ("synthetic impressions with planted clicks (true next item + 3 popularity-sampled "
                "items per step), leave-one-out: test = last step")
else:
    sets = build_behavior_ctr(split, max_len=args.max_len, seed=args.seed, users=keep_users)
    protocol = ("DIN-paper behaviour CTR: next item = positive, one never-seen uniform item = "
                "negative, earlier items (+ attributes) = behaviours; leave-one-out, test = last "
                "item; GAUC = per-user AUC weighted by impressions")
for k, v in sets.items():
    print(f"{k}: {len(v):,} rows, positive rate {v.tensors['label'].float().mean():.3f}")
train, valid, test = sets["train"], sets["valid"], sets["test"]

# %% [markdown]
# ## Baseline of the ranking stage: logistic regression on the candidate's fields

# %%
def as_ctr(ds):
    return CTRDataset(sparse=fields[ds.tensors["target"]], labels=ds.tensors["label"],
                      users=ds.tensors["user"])


lr_result = logistic_regression(as_ctr(train), as_ctr(valid), as_ctr(test), field_dims=list(vocab),
                                seed=args.seed)
print("logistic regression, test:", {k: round(v, 4) for k, v in lr_result["metrics"].items()})

# %% [markdown]
# ## Train DIEN: target loss + alpha * auxiliary loss (next behaviour vs a sampled item)

# %%
def predict(model, ds, batch_size=4096):
    model.eval()
    out = []
    with torch.no_grad():
        for b in ds.batches(batch_size, shuffle=False):
            logits = model(fields[b["target"]].to(device), fields[b["history"]].to(device))
            out.append(torch.sigmoid(logits).cpu())
    return torch.cat(out).numpy()


def ctr_metrics(model, ds):
    return evaluate_ctr(ds.tensors["label"].numpy(), predict(model, ds), ds.tensors["user"].numpy())


set_seed(args.seed)
model = dien.DIEN(item_vocab_sizes=vocab, dim=args.dim, evolution=args.evolution,
                  aux_weight=args.aux_weight).to(device)
opt = torch.optim.Adam(model.parameters(), lr=args.lr)
gen = torch.Generator().manual_seed(args.seed)
neg_gen = torch.Generator().manual_seed(args.seed + 7)


def step(b):
    history = b["history"]
    # one uniformly sampled item per behaviour step: the "non-clicked" item of Eq. (5)
    neg_items = torch.randint(1, split.n_items + 1, history.shape, generator=neg_gen)
    neg_items = torch.where(history > 0, neg_items, 0)
    logits, aux = model(fields[b["target"]].to(device), fields[history].to(device),
                        neg_history=fields[neg_items].to(device), return_aux=True)
    return model.loss(logits, b["label"].to(device), aux)


t0 = time.perf_counter()
hist = fit(model, step, lambda e: train.batches(args.batch_size, generator=gen), opt, args.epochs,
           evaluate=lambda: ctr_metrics(model, valid), metric="AUC", patience=2,
           n_batches=train.num_batches(args.batch_size), desc="DIEN")
train_seconds = time.perf_counter() - t0
t0 = time.perf_counter()
dien_test = ctr_metrics(model, test)
eval_seconds = time.perf_counter() - t0
for name, m in [("logistic regression", lr_result["metrics"]), ("DIEN", dien_test)]:
    print(f"{name:>22s}  " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))

# %% [markdown]
# ## One user: history, DIEN's attention over the evolving interests, and the top candidates

# %%
def describe(i: int) -> str:
    """Title/category when the source has them; seqtxt items add their first keyword tokens."""
    text = data.item_text(i)
    if "keywords" in data.items and isinstance(data.items["keywords"].iloc[i], list):
        text += " | " + " ".join(k.lstrip("\u2581") for k in data.items["keywords"].iloc[i][:4])
    return text


row = int(test.tensors["row"][0]) if "row" in test.tensors else 0
hist_items, _ = split.history("test", args.max_len)
history = torch.as_tensor(hist_items[row])  # (L,)
print(f"\nuser {split.users[row]} — last behaviours (oldest first):")
for i in history[history > 0].tolist()[-8:]:
    print("   ", describe(i))
popular = np.argsort(-split.item_counts())[:200]
candidates = torch.as_tensor(np.unique(np.append(popular, split.targets("test")[row])))
cand_fields = fields[candidates]  # (C, G)
hist_fields = fields[history].unsqueeze(0).expand(len(candidates), -1, -1)  # (C, L, G)
model.eval()
with torch.no_grad():
    scores = torch.sigmoid(model(cand_fields, hist_fields))
    top = torch.topk(scores, 5).indices
    mask = hist_fields[:1, :, 0] != 0
    interests = model.extract_interests(model.embed_items(hist_fields[:1]), mask)
    weights = model.attention_scores(interests, model.embed_items(cand_fields[top[:1]]), mask)[0]
held_out = int(split.targets("test")[row])
print(f"top 5 of {len(candidates)} candidates (200 most popular + the held-out item "
      f"'{describe(held_out)}'):")
for j in top.tolist():
    mark = "  <- held-out next item" if int(candidates[j]) == held_out else ""
    print(f"    p={scores[j]:.3f}  {describe(int(candidates[j]))}{mark}")
print("AUGRU attention a_t for the top candidate (softmax over real steps, Eq. 7):",
      [round(w, 2) for w in weights[history > 0].tolist()[-8:]])

# %%
print_result(
    model="DIEN", data=args.data, protocol=protocol, metrics=dien_test,
    baseline={"name": "logistic regression (candidate fields)", "metrics": lr_result["metrics"]},
    train_seconds=train_seconds, eval_seconds=eval_seconds, epochs=len(hist.epochs),
    params=count_params(model), out=args.out,
    valid_metrics=hist.epochs[hist.best_epoch - 1],
    n_users=int(split.n_users if keep_users is None else len(keep_users)),
    rows={k: len(v) for k, v in sets.items()}, max_len=args.max_len, dim=args.dim,
    evolution=args.evolution, aux_weight=args.aux_weight, threads=torch.get_num_threads(),
)
