# %% [markdown]
# # PLE demo — multi-task ranking: MMoE vs PLE (vs logistic regression)
#
# CPU, synthetic default, two tasks "click" and "next" (27 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/PLE/demo.py"
#
# PLE also takes part in the MMoE paper's synthetic correlation study, run from the MMoE demo:
# `python "Classic Models/Ranking/MMoE/demo.py" --experiment correlation` (see the MMoE note).
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
from Datasets.multitask_ctr import FIELDS, TASKS, two_task_impressions
from Utils.baselines import logistic_regression
from Utils.evaluation import evaluate_ctr
from Utils.io import add_common_args, print_result
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent


def load_model_module(folder: Path, name: str):
    """model.py files stand alone; load them by path (folder names have spaces)."""
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ple = load_model_module(HERE, "ple_model")
mmoe = load_model_module(HERE.parent / "MMoE", "mmoe_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=5, batch_size=256,
                         lr=1e-3)
parser.add_argument("--levels", type=int, default=2, help="PLE extraction levels (1 = CGC)")
parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
args = parser.parse_args()
cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)


# %% [markdown]
# ## A two-task split of the synthetic default
# Task "click" is the generator's planted click; task "next" is whether the candidate is the item
# the user really took next. Both share the user's interests, but they are not the same task.

# %%
def predict(model, ds, batch_size=4096):
    model.eval()
    with torch.no_grad():
        out = [model.predict(model(b["sparse"].to(device))).cpu()
               for b in ds.batches(batch_size, shuffle=False)]
    return torch.cat(out).numpy()  # (S, K)


def task_metrics(model, ds):
    p, y, users = predict(model, ds), ds.tensors["labels"].numpy(), ds.tensors["user"].numpy()
    out = {}
    for k, task in enumerate(TASKS):
        for name, value in evaluate_ctr(y[:, k], p[:, k], users).items():
            out[f"{name}_{task}"] = value
    out["AUC_mean"] = float(np.mean([out[f"AUC_{t}"] for t in TASKS]))
    return out


def train_ctr(kind, sets, dims):
    set_seed(args.seed)
    common = dict(task_types=("binary", "binary"), sparse_vocab_sizes=tuple(dims), dim=16)
    if kind == "MMoE":
        model = mmoe.MMoE(**common, n_experts=8, expert_hidden=(32,), tower_hidden=(32,))
    else:
        model = ple.PLE(**common, n_levels=args.levels, n_task_experts=2, n_shared_experts=4,
                        expert_hidden=(32,), tower_hidden=(32,))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    train = sets["train"]

    def step(b):
        return model.loss(model(b["sparse"].to(device)), b["labels"].to(device))

    hist = fit(model, step, lambda e: train.batches(args.batch_size, generator=gen), opt,
               args.epochs, evaluate=lambda: task_metrics(model, sets["valid"]), metric="AUC_mean",
               patience=2, n_batches=train.num_batches(args.batch_size), desc=kind)
    return model, hist


def run_ctr():
    data = Datasets.load(args.data, verbose=True)
    split = Datasets.leave_one_out(data)
    sets, dims = two_task_impressions(data, split, seed=args.seed)
    print(split, {k: len(v) for k, v in sets.items()}, "fields:", dict(zip(FIELDS, dims)))
    # Baseline of the ranking stage: one logistic regression per task on the same fields.
    lr_metrics = {}
    for k, task in enumerate(TASKS):
        parts = [CTRDataset(sparse=sets[s].tensors["sparse"],
                            labels=sets[s].tensors["labels"][:, k], users=sets[s].tensors["user"])
                 for s in ("train", "valid", "test")]
        res = logistic_regression(*parts, field_dims=dims, seed=args.seed)
        lr_metrics.update({f"{n}_{task}": v for n, v in res["metrics"].items()})
    lr_metrics["AUC_mean"] = float(np.mean([lr_metrics[f"AUC_{t}"] for t in TASKS]))
    results, seconds = {}, {}
    for kind in ("MMoE", "PLE"):
        t0 = time.perf_counter()
        model, hist = train_ctr(kind, sets, dims)
        seconds[kind] = time.perf_counter() - t0
        results[kind] = (model, hist, task_metrics(model, sets["test"]))
    for name, m in [("logistic regression", lr_metrics)] + [(k, v[2]) for k, v in results.items()]:
        print(f"{name:>20s}  " + "  ".join(f"{k} {m[k]:.4f}" for k in
                                           ("AUC_click", "AUC_next", "GAUC_click", "GAUC_next")))

    # One user: history and the top candidates by p(click) * p(next)
    model = results["PLE"][0]
    test = sets["test"]
    row = 0
    user = int(test.tensors["user"][row])
    hist_items, _ = split.history("test", 20)
    urow = int(np.searchsorted(split.users, user))
    print(f"\nuser {user} — last behaviours (oldest first):")
    for i in hist_items[urow][hist_items[urow] > 0][-6:]:
        print("   ", data.item_text(int(i)))
    cand = np.argsort(-split.item_counts())[:200]
    cand = np.unique(np.append(cand, split.targets("test")[urow]))
    base = test.tensors["sparse"][row]
    sparse = base.repeat(len(cand), 1)
    cat = data.item_feature("category")
    sparse[:, 1] = torch.as_tensor(cand)
    sparse[:, 2] = torch.as_tensor(cat[cand])
    sparse[:, 3] = torch.as_tensor(data.item_feature("brand")[cand])
    sparse[:, 4] = torch.as_tensor(data.item_feature("price_bucket")[cand])
    p = predict(model, TensorDictDataset({"sparse": sparse}))
    order = np.argsort(-(p[:, 0] * p[:, 1]))[:5]
    print(f"top 5 of {len(cand)} candidates by p(click) x p(next):")
    for j in order:
        mark = "  <- held-out next item" if cand[j] == split.targets("test")[urow] else ""
        print(f"    click {p[j, 0]:.3f}  next {p[j, 1]:.3f}  {data.item_text(int(cand[j]))}{mark}")

    m, h = results["PLE"][2], results["PLE"][1]
    print_result(
        model="PLE", data=args.data,
        protocol="two-task split of the synthetic impressions (click = planted click, next = the "
                 "true next item); leave-one-out, test = last step; metrics per task",
        metrics=m, baseline={"name": "logistic regression per task", "metrics": lr_metrics},
        train_seconds=seconds["PLE"], eval_seconds=0.0, epochs=len(h.epochs),
        params=count_params(model), out=args.out, levels=args.levels,
        mmoe={"metrics": results["MMoE"][2], "params": count_params(results["MMoE"][0]),
              "train_seconds": seconds["MMoE"]},
        threads=torch.get_num_threads(),
    )


# %%
run_ctr()
