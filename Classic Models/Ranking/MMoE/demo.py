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
# The headline table's means, sds and medians, recomputed from the stored per-run MSEs (a second):
#
#     python "Classic Models/Ranking/MMoE/demo.py" \
#         --summarize assets/MMoE/results/correlation_30runs.json \
#         --out assets/MMoE/results/correlation_30runs_summary.json
#
# What the gates learn: each task's average gate weight over the 8 experts, one MMoE trained per
# correlation 1.0 and 0.5 (run 0 of the study; 52 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/MMoE/demo.py" --epochs 16 --batch-size 128 --threads 1 \
#         --plot-gates assets/MMoE/gates_by_correlation.png \
#         --out assets/MMoE/results/gates_by_correlation.json
#
# Save the trained models, reload them (no training) and recommend for one synthetic user; the
# correlation study saves and reloads its models the same way (it has no users to recommend for):
#
#     python "Classic Models/Ranking/MMoE/demo.py" --save /tmp/mmoe.pt
#     python "Classic Models/Ranking/MMoE/demo.py" --load /tmp/mmoe.pt --recommend U00007
#
# Every flag: `--help`. The last line printed is `RESULT {json}` (`--summarize`, `--plot-gates`:
# the json written to `--out`).

# %%
import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from Datasets import DataError
from Datasets.BaseDatasets import TensorDictDataset
from Datasets.mmoe_synthetic import make_mmoe_synthetic
from Utils.demo_io import apply_saved_args, check_save_path, read_checkpoint, restore
from Utils.io import (
    ROOT,
    add_common_args,
    load_model_file,
    model_dir,
    positive_int,
    print_result,
    write_json_atomic,
)
from Utils.loops.behavior_demo import add_model_io_args, save_models
from Utils.loops.multitask_demo import run_two_task
from Utils.plotting import plot_curves
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

mmoe = load_model_file(model_dir("Ranking", "MMoE") / "model.py", "mmoe_model")
ple = load_model_file(model_dir("Ranking", "PLE") / "model.py", "ple_model")


def correlation_list(text: str) -> str:
    """argparse type: comma-separated task correlations p, each in [-1, 1]."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers in [-1, 1], "
                                         "e.g. 1.0,0.9,0.5") from None
    if not all(-1.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every correlation must lie in [-1, 1]")
    return text

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=5, batch_size=256,
                         lr=1e-3)
parser.add_argument("--experiment", default="ctr", choices=["ctr", "correlation"],
                    help="ctr: two-task split of --data; correlation: the paper's synthetic study")
parser.add_argument("--correlations", type=correlation_list, default="1.0,0.9,0.5",
                    help="correlation experiment: p values")
parser.add_argument("--runs", type=positive_int, default=3,
                    help="correlation experiment: repeats per p")
parser.add_argument("--n-train", type=positive_int, default=50_000,
                    help="correlation experiment: samples")
parser.add_argument("--n-test", type=positive_int, default=5_000,
                    help="correlation experiment: samples")
parser.add_argument("--plot-dir", default=str(ROOT / "assets" / "MMoE"),
                    help="correlation experiment: where the loss-curve PNGs go")
parser.add_argument("--summarize", default=None, metavar="RESULT_JSON",
                    help="recompute mean, sd and median per model and correlation from a stored "
                         "correlation RESULT json (its final_by_run); write them to --out")
parser.add_argument("--plot-gates", default=None, metavar="PNG",
                    help="train one MMoE per correlation (1.0, 0.5) on the synthetic study and plot "
                         "each task's average gate weight per expert; --out gets the matrices")
add_model_io_args(parser, recommend="print the top-10 for this raw user id (the default two-task "
                  "run only: the correlation study's regression data has no users)")
args = parser.parse_args()
if (args.summarize or args.plot_gates) and (args.save or args.load or args.recommend):
    raise ValueError("--save, --load and --recommend apply to the two-task run and the correlation "
                     "study, not to --summarize or --plot-gates")
if args.experiment == "correlation" and args.recommend is not None:
    raise ValueError("--recommend needs users: the correlation study's synthetic regression data "
                     "has none; use it with the default two-task run (--experiment ctr)")
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
    model, epochs, m = results["MMoE"]
    print_result(
        model="MMoE", data=args.data,
        protocol="two-task split of the synthetic impressions (click = planted click, next = the "
                 "true next item); leave-one-out, test = last step; metrics per task",
        metrics=m, baseline={"name": "logistic regression per task", "metrics": lr_metrics},
        train_seconds=seconds["MMoE"], eval_seconds=0.0, epochs=epochs,
        params=count_params(model), out=args.out, loaded_from=args.load,
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


def train_regressor(kind: str, p: float, r: int):
    """Run r of the study at correlation p: its own pair of tasks (task_seed), training and test
    inputs and initialisation, the same for every model kind. Returns (model, test MSE per epoch,
    test set)."""
    task_seed = 1000 + r
    tr = make_mmoe_synthetic(args.n_train, p, seed=2 * r, task_seed=task_seed)
    te = make_mmoe_synthetic(args.n_test, p, seed=2 * r + 1, task_seed=task_seed)
    set_seed(args.seed + r)
    model = build_regressor(kind, tr.x.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    ds = TensorDictDataset({"x": tr.x, "y": tr.y})
    gen = torch.Generator().manual_seed(args.seed + r)
    curve = []

    def evaluate():
        model.eval()
        with torch.no_grad():
            out = model(dense=te.x.to(device))
            per_task = ((out - te.y.to(device)) ** 2).mean(0)  # (2,)
        curve.append(float(per_task.sum()))
        return {"mse": float(per_task.sum()), "mse_task1": float(per_task[0]),
                "mse_task2": float(per_task[1])}

    fit(model, lambda b: model.loss(model(dense=b["x"].to(device)), b["y"].to(device)),
        lambda e: ds.batches(args.batch_size, generator=gen), opt, args.epochs,
        evaluate=evaluate, metric="mse", higher_is_better=False, patience=args.epochs,
        progress=False)
    return model, curve, te


def summarize(final_by_run: dict[str, list[float]]) -> dict:
    """Mean, sd (ddof = 1) and median of the final test MSE per "<model>_corr<p>" key, and the
    median of the paired per-run differences Shared-Bottom - MMoE and MMoE - PLE."""
    f = {k: np.asarray(v) for k, v in final_by_run.items()}
    correlations = sorted({float(k.rsplit("_corr", 1)[1]) for k in f}, reverse=True)
    out = {"correlations": correlations, "runs": {k: len(v) for k, v in f.items()},
           "mean": {k: round(float(v.mean()), 6) for k, v in f.items()},
           "sd": {k: round(float(v.std(ddof=1)), 6) if len(v) > 1 else None for k, v in f.items()},
           "median": {k: round(float(np.median(v)), 6) for k, v in f.items()},
           "median_gain": {}}
    for key in f:
        if key.startswith("MMoE_"):
            corr = key[len("MMoE_"):]
            for a, b in (("Shared-Bottom", "MMoE"), ("MMoE", "PLE")):
                if f"{a}_{corr}" in f and f"{b}_{corr}" in f:
                    d = f[f"{a}_{corr}"] - f[f"{b}_{corr}"]  # (runs,)
                    out["median_gain"][f"{a} - {b}_{corr}"] = round(float(np.median(d)), 6)
    return out


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


STUDY_ARGS = ("seed", "correlations", "runs", "n_train", "n_test", "epochs", "batch_size", "lr")


def test_mse(model, te) -> float:
    """Test MSE summed over the two tasks (what evaluate() in train_regressor records)."""
    model.eval()
    with torch.no_grad():
        return float(((model(dense=te.x.to(device)) - te.y.to(device)) ** 2).mean(0).sum())


def load_regressor(saved: dict, kind: str, p: float, r: int):
    """A model of the study from a --save file, and the best (restored) epoch's test MSE that its
    saved curve promises."""
    entry = saved["extra"]["studies"][f"{kind}_corr{p:.1f}_run{r}"]
    model = restore(type(build_regressor(kind, 100)), entry, device, args.load)
    return model, entry["curve"]


def run_correlation():
    kinds = ("Shared-Bottom", "MMoE", "PLE")
    saved = read_checkpoint(args.load, demo="MMoE correlation study") if args.load else None
    if saved:
        apply_saved_args(args, saved, names=STUDY_ARGS)
    check_save_path(args.save, args.overwrite)
    correlations = [float(p) for p in args.correlations.split(",")]
    curves, finals, params, by_run = {}, {}, {}, {}
    paired_all, studies, reload_gap = {}, {}, 0.0
    t_start = time.perf_counter()
    for p in correlations:
        for kind in kinds:
            per_run = []
            for r in range(args.runs):
                if saved:  # no training: the stored curve, checked against the loaded weights
                    model, curve = load_regressor(saved, kind, p, r)
                    te = make_mmoe_synthetic(args.n_test, p, seed=2 * r + 1, task_seed=1000 + r)
                    reload_gap = max(reload_gap, abs(test_mse(model, te) - min(curve)))
                else:
                    model, curve, _ = train_regressor(kind, p, r)
                studies[f"{kind}_corr{p:.1f}_run{r}"] = {
                    "config": dataclasses.asdict(model.config), "state": model.state_dict(),
                    "curve": curve}
                params[kind] = count_params(model)
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
    train_seconds = 0.0 if saved else time.perf_counter() - t_start
    if saved:
        print(f"loaded {len(studies)} models from {args.load}: their test MSE equals the best epoch "
              f"of the saved curves (largest difference {reload_gap:.2e})")
    if args.save:
        first = next(v for k, v in studies.items() if k.startswith("MMoE_"))
        holder = mmoe.MMoE(**first["config"])  # the file's "model": the first MMoE of the study
        holder.load_state_dict(first["state"])
        save_models(args, args.save, "MMoE correlation study",
                    {"MMoE": (holder, first["config"])}, names=STUDY_ARGS, studies=studies)
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
        summary=summarize({f"{kind}_corr{p:.1f}": by_run[(p, kind)] for p, kind in keys}),
        threads=torch.get_num_threads(), loaded_from=args.load,
    )


# %% [markdown]
# ## `--summarize`: the headline numbers from a stored run
# Mean ± sd and median of the final test MSE per model and correlation, and the median paired gain,
# from the per-run MSEs a correlation run stores. (The run's own `std` is the population sd.)

# %%
def run_summarize(path: str) -> None:
    try:
        stored = json.loads(Path(path).read_text())
        out = {"data": stored["data"], "protocol": stored["protocol"], "source": path,
               **summarize(stored["final_by_run"])}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError,
            AttributeError, ValueError) as e:
        raise DataError(f"--summarize {path}: expected a correlation RESULT json with "
                        f"'final_by_run' ({type(e).__name__}: {e})") from None
    for key in out["mean"]:
        sd = "-" if out["sd"][key] is None else f"{out['sd'][key]:.4f}"
        print(f"{key:>24s}: mean {out['mean'][key]:.4f} ± {sd} (sd), "
              f"median {out['median'][key]:.4f} over {out['runs'][key]} runs")
    for key, g in out["median_gain"].items():
        print(f"{key:>30s}: median per-run gain {g:+.4f}")
    write_json(out, args.out)


# %% [markdown]
# ## `--plot-gates`: what each task's gate learns
# One MMoE per correlation (run 0 of the study, same data and settings). For every task, the gate
# weights g^k(x) of Eq. (7) averaged over the test inputs: a (tasks x experts) matrix whose rows
# sum to 1. Related tasks can share experts; less related ones should spread apart. "overlap" is
# sum_i min(g^1_i, g^2_i): 1 when both tasks use the experts in the same proportions, 0 when they
# use disjoint experts.

# %%
def mean_gate_weights(model, x: torch.Tensor) -> torch.Tensor:
    """Each task's gate weights averaged over the rows of x (B, X): (K, E), rows sum to 1."""
    model.eval()
    with torch.no_grad():
        return model.gate_weights(dense=x.to(device)).mean(0).cpu()  # (B, K, E) -> (K, E)


def run_plot_gates(path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    correlations = (1.0, 0.5)
    mats, out = {}, {"data": "synthetic (Ma et al. 2018 generator, d=100, c=1, m=10), run 0",
                     "protocol": f"one MMoE per correlation, {args.n_train} training samples, "
                                 f"{args.epochs} epochs, batch {args.batch_size}; gate weights "
                                 f"averaged over {args.n_test} test inputs",
                     "gates": {}, "overlap": {}, "test_mse": {}}
    for p in correlations:
        model, curve, te = train_regressor("MMoE", p, 0)
        g = mean_gate_weights(model, te.x)  # (K, E)
        mats[p] = g.numpy()
        key = f"corr{p:.1f}"
        out["gates"][key] = [[round(float(v), 4) for v in row] for row in g]
        out["overlap"][key] = round(float(torch.minimum(g[0], g[1]).sum()), 4)
        out["test_mse"][key] = round(curve[-1], 6)
        print(f"p={p:.1f}: test MSE {curve[-1]:.4f}; mean gate weights (task x expert):")
        for k, row in enumerate(g):
            print(f"    task {k + 1}: " + " ".join(f"{v:.2f}" for v in row))
        print(f"    overlap sum_i min(g1_i, g2_i) = {out['overlap'][key]:.2f}")
    fig, axes = plt.subplots(1, len(correlations), figsize=(11, 2.6), dpi=120,
                             layout="constrained")
    for ax, p in zip(axes, correlations):
        m = mats[p]
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=max(float(v.max()) for v in mats.values()))
        for k in range(m.shape[0]):
            for i in range(m.shape[1]):
                ax.text(i, k, f"{m[k, i]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[k, i] < 0.5 * im.get_clim()[1] else "black")
        ax.set_xticks(range(m.shape[1]), [f"f{i + 1}" for i in range(m.shape[1])])
        ax.set_yticks(range(m.shape[0]), [f"task {k + 1}" for k in range(m.shape[0])])
        ax.set_xlabel("expert")
        ax.set_title(f"correlation p = {p:.1f}: overlap {out['overlap'][f'corr{p:.1f}']:.2f}",
                     fontsize=9)
    fig.colorbar(im, ax=axes, label="mean gate weight")
    fig.suptitle("MMoE: each task's average gate weight per expert (rows sum to 1)", fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    write_json(out, args.out)


def write_json(obj: dict, out: str | None) -> None:
    if out:
        write_json_atomic(out, obj)
        print(f"wrote {out}")


# %%
if args.summarize:
    run_summarize(args.summarize)
elif args.plot_gates:
    run_plot_gates(args.plot_gates)
elif args.experiment == "correlation":
    run_correlation()
else:
    run_ctr()
