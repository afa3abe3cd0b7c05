# %% [markdown]
# # MMoE demo — multi-task ranking: Shared-Bottom vs MMoE (vs logistic regression)
#
# CPU, synthetic default, two tasks "click" and "next" (17 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/MMoE/demo.py"
#
# The paper's synthetic experiment (Shared-Bottom vs MMoE vs PLE at task correlations 1.0, 0.9, 0.5;
# loss curves into assets/MMoE/; 41 min with 1 thread; `--runs 3 --epochs 8` takes a tenth of it):
#
#     OMP_NUM_THREADS=1 python "Classic Models/Ranking/MMoE/demo.py" --experiment correlation \
#         --runs 30 --epochs 16 --batch-size 128 --n-train 50000 --n-test 5000 --threads 1 \
#         --out assets/MMoE/results/correlation_30runs.json
#
# Every flag: `--help`. The last line printed is `RESULT {json}`.

# %%
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from Datasets.BaseDatasets import TensorDictDataset
from Datasets.mmoe_synthetic import make_mmoe_synthetic
from Utils.io import add_common_args, load_model_file, print_result
from Utils.multitask_demo import run_two_task
from Utils.plotting import plot_curves
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


mmoe = load_model_file(HERE / "model.py", "mmoe_model")
ple = load_model_file(HERE.parent / "PLE" / "model.py", "ple_model")

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
def run_ctr():
    results, seconds, lr_metrics = run_two_task({
        "Shared-Bottom": lambda common: mmoe.SharedBottom(**common, bottom_hidden=(128,),
                                                          tower_hidden=(32,)),
        "MMoE": lambda common: mmoe.MMoE(**common, n_experts=8, expert_hidden=(32,),
                                         tower_hidden=(32,)),
    }, show="MMoE", args=args, device=device)
    model, h, m = results["MMoE"]
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


def paired_gains(by_run: dict, p: float, pairs) -> dict[str, dict]:
    """Per run, the final test MSE of model a minus that of model b (the runs share their tasks
    and data, so the difference is paired): mean, standard error, the mean as a share of a's mean
    MSE, and on how many runs b is lower."""
    out = {}
    for a, b in pairs:
        d = by_run[(p, a)] - by_run[(p, b)]  # (runs,)
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
        out[f"{a} - {b}"] = {"mean": float(d.mean()), "se": se,
                             "relative": float(d.mean() / by_run[(p, a)].mean()),
                             "wins": int((d > 0).sum())}
    return out


def run_correlation():
    kinds = ("Shared-Bottom", "MMoE", "PLE")
    correlations = [float(p) for p in args.correlations.split(",")]
    curves, finals, params, by_run = {}, {}, {}, {}
    paired_all = {}
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
            by_run[(p, kind)] = arr[:, -1]
            print(f"p={p:.1f} {kind:>13s}: final test MSE {finals[(p, kind)][0]:.4f} "
                  f"± {finals[(p, kind)][1]:.4f} over {args.runs} runs", flush=True)
        paired = paired_gains(by_run, p, (("Shared-Bottom", "MMoE"), ("MMoE", "PLE")))
        for name, g in paired.items():
            se = "-" if g["se"] is None else f"{g['se']:.4f}"
            print(f"p={p:.1f} {name}: {g['mean']:+.4f} ± {se} (s.e.), "
                  f"{g['relative']:.0%} of the first, lower on {g['wins']}/{args.runs} runs",
                  flush=True)
        paired_all.update({f"{k}_corr{p:.1f}": v for k, v in paired.items()})
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
        paired_gain=paired_all,
        final_by_run={f"{kind}_corr{p:.1f}": by_run[(p, kind)].tolist() for p, kind in keys},
        threads=torch.get_num_threads(),
    )


# %%
if args.experiment == "correlation":
    run_correlation()
else:
    run_ctr()
