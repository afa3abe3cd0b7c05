# %% [markdown]
# # MMoE demo — multi-task ranking: Shared-Bottom vs MMoE (vs logistic regression)
#
# CPU, synthetic default, two tasks "click" and "next" (17 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/MMoE/demo.py"
#
# The paper's synthetic experiment (Shared-Bottom vs MMoE vs PLE at task correlations 1.0, 0.9, 0.5;
# loss curves into assets/MMoE/; 227 s of CPU, 24 min of wall time with 1 thread on a loaded 2-core
# machine):
#
#     OMP_NUM_THREADS=1 python "Classic Models/Ranking/MMoE/demo.py" --experiment correlation \
#         --runs 3 --epochs 8 --batch-size 128 --n-train 50000 --n-test 5000 --threads 1 \
#         --out assets/MMoE/results/correlation.json
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
from Datasets.mmoe_synthetic import make_mmoe_synthetic
from Datasets.multitask_ctr import FIELDS, TASKS, two_task_impressions
from Utils.baselines import logistic_regression
from Utils.evaluation import evaluate_ctr
from Utils.io import add_common_args, print_result
from Utils.plotting import plot_curves
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def load_model_module(folder: Path, name: str):
    """model.py files stand alone; load them by path (folder names have spaces)."""
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mmoe = load_model_module(HERE, "mmoe_model")
ple = load_model_module(HERE.parent / "PLE", "ple_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=5, batch_size=256,
                         lr=1e-3)
parser.add_argument("--experiment", default="ctr", choices=["ctr", "correlation"],
                    help="ctr: two-task split of --data; correlation: the paper's synthetic study")
parser.add_argument("--correlations", default="1.0,0.9,0.5",
                    help="correlation experiment: p values")
parser.add_argument("--runs", type=int, default=3, help="correlation experiment: repeats per p")
parser.add_argument("--n-train", type=int, default=50_000, help="correlation experiment: samples")
parser.add_argument("--n-test", type=int, default=5_000, help="correlation experiment: samples")
parser.add_argument("--plot-dir", default=str(ROOT / "assets" / "MMoE"),
                    help="correlation experiment: where the loss-curve PNGs go")
parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
args = parser.parse_args()
cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)


# %% [markdown]
# ## Part 1 (default): a two-task split of the synthetic default
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
    if kind == "Shared-Bottom":
        model = mmoe.SharedBottom(**common, bottom_hidden=(128,), tower_hidden=(32,))
    elif kind == "MMoE":
        model = mmoe.MMoE(**common, n_experts=8, expert_hidden=(32,), tower_hidden=(32,))
    else:
        model = ple.PLE(**common, n_levels=2, n_task_experts=2, n_shared_experts=4,
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
    for kind in ("Shared-Bottom", "MMoE"):
        t0 = time.perf_counter()
        model, hist = train_ctr(kind, sets, dims)
        seconds[kind] = time.perf_counter() - t0
        results[kind] = (model, hist, task_metrics(model, sets["test"]))
    for name, m in [("logistic regression", lr_metrics)] + [(k, v[2]) for k, v in results.items()]:
        print(f"{name:>20s}  " + "  ".join(f"{k} {m[k]:.4f}" for k in
                                           ("AUC_click", "AUC_next", "GAUC_click", "GAUC_next")))

    # One user: history and the top candidates by p(click) * p(next)
    model = results["MMoE"][0]
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

    m, h = results["MMoE"][2], results["MMoE"][1]
    print_result(
        model="MMoE", data=args.data,
        protocol="two-task split of the synthetic impressions (click = planted click, next = the "
                 "true next item); leave-one-out, test = last step; metrics per task",
        metrics=m, baseline={"name": "logistic regression per task", "metrics": lr_metrics},
        train_seconds=seconds["MMoE"], eval_seconds=0.0, epochs=len(h.epochs),
        params=count_params(model), out=args.out,
        shared_bottom={"metrics": results["Shared-Bottom"][2],
                       "params": count_params(results["Shared-Bottom"][0]),
                       "train_seconds": seconds["Shared-Bottom"]},
        threads=torch.get_num_threads(),
    )


# %% [markdown]
# ## Part 2 (`--experiment correlation`): the paper's synthetic study
# Two regression tasks whose weight vectors have cosine p (Datasets/mmoe_synthetic.py). Same tasks
# for train and test (task_seed), fresh inputs for test. Models of about equal size, trained with
# Adam; the curve is the test MSE summed over the two tasks, averaged over runs.

# %%
def build_regressor(kind: str, d: int):
    common = dict(task_types=("regression", "regression"), dense_dim=d)
    if kind == "Shared-Bottom":
        return mmoe.SharedBottom(**common, bottom_hidden=(126,), tower_hidden=(8,))
    if kind == "MMoE":
        return mmoe.MMoE(**common, n_experts=8, expert_hidden=(16,), tower_hidden=(8,))
    return ple.PLE(**common, n_levels=2, n_task_experts=2, n_shared_experts=4,
                   expert_hidden=(16,), tower_hidden=(8,))


def run_correlation():
    kinds = ("Shared-Bottom", "MMoE", "PLE")
    correlations = [float(p) for p in args.correlations.split(",")]
    curves, finals, params = {}, {}, {}
    t_start = time.perf_counter()
    for p in correlations:
        for kind in kinds:
            per_run = []
            for r in range(args.runs):
                task_seed = 1000 + r
                tr = make_mmoe_synthetic(args.n_train, p, seed=2 * r, task_seed=task_seed)
                te = make_mmoe_synthetic(args.n_test, p, seed=2 * r + 1, task_seed=task_seed)
                set_seed(args.seed + r)
                model = build_regressor(kind, tr.x.shape[1]).to(device)
                params[kind] = count_params(model)
                opt = torch.optim.Adam(model.parameters(), lr=args.lr)
                ds = TensorDictDataset({"x": tr.x, "y": tr.y})
                gen = torch.Generator().manual_seed(args.seed + r)
                curve = []

                def test_mse(model=model, te=te):
                    model.eval()
                    with torch.no_grad():
                        out = model(dense=te.x.to(device))
                        per_task = ((out - te.y.to(device)) ** 2).mean(0)  # (2,)
                    return {"mse": float(per_task.sum()), "mse_task1": float(per_task[0]),
                            "mse_task2": float(per_task[1])}

                def evaluate(curve=curve, test_mse=test_mse):
                    m = test_mse()
                    curve.append(m["mse"])
                    return m

                fit(model, lambda b, model=model: model.loss(model(dense=b["x"].to(device)),
                                                             b["y"].to(device)),
                    lambda e, ds=ds, gen=gen: ds.batches(args.batch_size, generator=gen), opt,
                    args.epochs, evaluate=evaluate, metric="mse", higher_is_better=False,
                    patience=args.epochs, progress=False)
                per_run.append(curve)
            arr = np.array(per_run)  # (runs, epochs)
            curves[(p, kind)] = arr.mean(0)
            finals[(p, kind)] = (float(arr[:, -1].mean()), float(arr[:, -1].std()))
            print(f"p={p:.1f} {kind:>13s}: final test MSE {finals[(p, kind)][0]:.4f} "
                  f"± {finals[(p, kind)][1]:.4f} over {args.runs} runs", flush=True)
    train_seconds = time.perf_counter() - t_start
    out_dir = Path(args.plot_dir)
    for p in correlations:
        plot_curves({kind: (list(range(1, args.epochs + 1)), curves[(p, kind)].tolist())
                     for kind in kinds},
                    out_dir / f"synthetic_loss_corr_{p:.1f}.png", xlabel="epoch",
                    ylabel="test MSE (task 1 + task 2)",
                    title=f"MMoE synthetic data, correlation {p:.1f} (mean of {args.runs} runs)")
    keys = [(p, kind) for p in correlations for kind in kinds]
    metrics = {f"MSE_{kind}_corr{p:.1f}": finals[(p, kind)][0] for p, kind in keys}
    print_result(
        model="MMoE", data="mmoe-synthetic (Ma et al. 2018 generator, d=100, c=1, m=10)",
        protocol=f"{args.n_train} train / {args.n_test} test samples per run, same tasks; test MSE "
                 f"summed over 2 tasks after {args.epochs} epochs, mean over {args.runs} runs",
        metrics=metrics, baseline={"name": "Shared-Bottom", "metrics": {
            k: v for k, v in metrics.items() if "Shared-Bottom" in k}},
        train_seconds=train_seconds, eval_seconds=0.0, epochs=args.epochs, params=params["MMoE"],
        out=args.out, params_by_model=params,
        std={f"MSE_{kind}_corr{p:.1f}": finals[(p, kind)][1] for p, kind in keys},
        curves={f"{kind}_corr{p:.1f}": curves[(p, kind)].tolist() for p in correlations
                for kind in kinds},
        threads=torch.get_num_threads(),
    )


# %%
if args.experiment == "correlation":
    run_correlation()
else:
    run_ctr()
