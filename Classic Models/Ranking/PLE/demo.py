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
# What the gates learn: per extraction level, how much weight each task's gate puts on its own
# experts vs the shared ones (and the shared gate on each group), one PLE trained per correlation
# 1.0 and 0.5 of the MMoE paper's synthetic study (run 0 of that study's data and settings;
# 74 s of CPU time with 1 thread):
#
#     python "Classic Models/Ranking/PLE/demo.py" --epochs 16 --batch-size 128 --threads 1 \
#         --plot-gates assets/PLE/gate_usage.png --out assets/PLE/results/gate_usage.json
#
# Save the trained models, reload them (no training) and recommend for one synthetic user:
#
#     python "Classic Models/Ranking/PLE/demo.py" --save /tmp/ple.pt
#     python "Classic Models/Ranking/PLE/demo.py" --load /tmp/ple.pt --recommend U00007
#
# Every flag: `--help`. The last line printed is `RESULT {json}` (`--plot-gates`: the json written
# to `--out`).

# %%
import argparse
from pathlib import Path

import torch

from Utils.io import (
    add_common_args,
    load_model_file,
    model_dir,
    positive_int,
    print_result,
    write_json_atomic,
)
from Utils.loops.behavior_demo import add_model_io_args
from Utils.loops.multitask_demo import run_two_task
from Utils.training import count_params, cpu_setup, pick_device, set_seed

ple = load_model_file(model_dir("Ranking", "PLE") / "model.py", "ple_model")
mmoe = load_model_file(model_dir("Ranking", "MMoE") / "model.py", "mmoe_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=5, batch_size=256,
                         lr=1e-3)
parser.add_argument("--levels", type=positive_int, default=2,
                    help="PLE extraction levels (1 = CGC)")
parser.add_argument("--plot-gates", default=None, metavar="PNG",
                    help="train one PLE per correlation (1.0, 0.5) on the MMoE paper's synthetic "
                         "tasks and plot the gate weight on own vs shared experts per level; "
                         "--out gets the numbers")
parser.add_argument("--n-train", type=positive_int, default=50_000,
                    help="--plot-gates: training samples")
parser.add_argument("--n-test", type=positive_int, default=5_000, help="--plot-gates: test samples")
add_model_io_args(parser, recommend="print the top-10 for this raw user id (the default two-task "
                  "run only: --plot-gates trains on synthetic regression data without users)")
args = parser.parse_args()
if args.plot_gates and (args.save or args.load or args.recommend):
    raise ValueError("--save, --load and --recommend apply to the two-task run, not to --plot-gates")
cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)


# %% [markdown]
# ## A two-task split of the synthetic default
# Task "click" is the generator's planted click; task "next" is whether the candidate is the item
# the user really took next. Both share the user's interests, but they are not the same task.

# %%
def run_ctr():
    results, seconds, lr_metrics = run_two_task({
        "MMoE": lambda common: mmoe.MMoE(**common, n_experts=8, expert_hidden=(32,),
                                         tower_hidden=(32,)),
        "PLE": lambda common: ple.PLE(**common, n_levels=args.levels, n_task_experts=2,
                                      n_shared_experts=4, expert_hidden=(32,), tower_hidden=(32,)),
    }, show="PLE", args=args, device=device)
    model, epochs, m = results["PLE"]
    print_result(
        model="PLE", data=args.data,
        protocol="two-task split of the synthetic impressions (click = planted click, next = the "
                 "true next item); leave-one-out, test = last step; metrics per task",
        metrics=m, baseline={"name": "logistic regression per task", "metrics": lr_metrics},
        train_seconds=seconds["PLE"], eval_seconds=0.0, epochs=epochs,
        params=count_params(model), out=args.out, levels=model.config.n_levels,
        mmoe={"metrics": results["MMoE"][2], "params": count_params(results["MMoE"][0]),
              "train_seconds": seconds["MMoE"]},
        threads=torch.get_num_threads(), loaded_from=args.load,
    )


# %% [markdown]
# ## `--plot-gates`: how much each gate keeps private and how much it shares
# The MMoE paper's two synthetic regression tasks (Datasets/mmoe_synthetic.py) at correlation 1.0
# and 0.5, with the PLE of the MMoE demo's study (2 levels, 2 task + 4 shared experts of 16 units).
# Each gate's weights (Eqs. (3)/(5)) are summed over expert groups — task 1's experts, task 2's
# experts, the shared experts — and averaged over the test inputs. A task gate can only reach its
# own and the shared experts (the other task's cell is structurally 0, left blank); the level-1
# shared gate reaches all three groups.

# %%
def gate_usage(gates: list[dict], n_task_experts: int) -> list[list[float]]:
    """Rows (level j, gate): mean weight on [task 1's, ..., task K's, shared] experts; each row sums
    to 1. A task gate's cells for the other tasks' experts are NaN (it cannot select them)."""
    rows = []
    for level in gates:
        K = len(level["task"])
        for k, w in enumerate(level["task"]):  # (B, m_k + m_s): own experts first, then shared
            row = [float("nan")] * K + [float(w[:, n_task_experts:].sum(-1).mean())]
            row[k] = float(w[:, :n_task_experts].sum(-1).mean())
            rows.append(row)
        if level["shared"] is not None:  # (B, K*m_k + m_s): task 1's, ..., task K's, shared
            w = level["shared"]
            rows.append([float(w[:, k * n_task_experts:(k + 1) * n_task_experts].sum(-1).mean())
                         for k in range(K)] + [float(w[:, K * n_task_experts:].sum(-1).mean())])
    return rows


def run_plot_gates(path: str) -> None:

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from Datasets.BaseDatasets import TensorDictDataset
    from Datasets.mmoe_synthetic import make_mmoe_synthetic
    from Utils.training import fit

    m_k, correlations = 2, (1.0, 0.5)
    out = {"data": "synthetic (Ma et al. 2018 generator, d=100, c=1, m=10), run 0",
           "protocol": f"one PLE (2 levels, 2 task + 4 shared experts) per correlation, "
                       f"{args.n_train} training samples, {args.epochs} epochs, batch "
                       f"{args.batch_size}; gate weights averaged over {args.n_test} test inputs",
           "rows": [], "usage": {}, "test_mse": {}}
    for p in correlations:
        tr = make_mmoe_synthetic(args.n_train, p, seed=0, task_seed=1000)  # the study's run 0
        te = make_mmoe_synthetic(args.n_test, p, seed=1, task_seed=1000)
        set_seed(args.seed)
        model = ple.PLE(task_types=("regression", "regression"), dense_dim=tr.x.shape[1],
                        n_levels=2, n_task_experts=m_k, n_shared_experts=4, expert_hidden=(16,),
                        tower_hidden=(8,)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        ds = TensorDictDataset({"x": tr.x, "y": tr.y})
        gen = torch.Generator().manual_seed(args.seed)

        def evaluate(model=model, te=te):
            model.eval()
            with torch.no_grad():
                mse = ((model(dense=te.x.to(device)) - te.y.to(device)) ** 2).mean(0).sum()
            return {"mse": float(mse)}

        fit(model, lambda b, model=model: model.loss(model(dense=b["x"].to(device)),
                                                     b["y"].to(device)),
            lambda e, ds=ds, gen=gen: ds.batches(args.batch_size, generator=gen), opt,
            args.epochs, evaluate=evaluate, metric="mse", higher_is_better=False,
            patience=args.epochs, progress=False)
        model.eval()
        with torch.no_grad():
            _, gates = model(dense=te.x.to(device), return_gates=True)
        usage = gate_usage(gates, m_k)
        labels = ["level 1, task 1 gate", "level 1, task 2 gate", "level 1, shared gate",
                  "level 2, task 1 gate", "level 2, task 2 gate"]
        out["rows"] = labels
        key = f"corr{p:.1f}"
        out["usage"][key] = [[None if np.isnan(v) else round(v, 4) for v in row] for row in usage]
        out["test_mse"][key] = round(evaluate()["mse"], 6)
        print(f"p={p:.1f}: test MSE {out['test_mse'][key]:.4f}; weight on "
              "[task 1's, task 2's, shared] experts:")
        for name, row in zip(labels, usage):
            print(f"    {name:>22s}: " + "  ".join("  -  " if np.isnan(v) else f"{v:.2f}"
                                                     for v in row))
    fig, axes = plt.subplots(1, len(correlations), figsize=(8, 3.2), dpi=120,
                             layout="constrained")
    cols = ["task 1's\nexperts", "task 2's\nexperts", "shared\nexperts"]
    for ax, p in zip(axes, correlations):
        m = np.array([[np.nan if v is None else v for v in row]
                      for row in out["usage"][f"corr{p:.1f}"]])
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                if not np.isnan(m[r, c]):
                    ax.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if m[r, c] < 0.5 else "black")
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_yticks(range(len(out["rows"])), out["rows"] if ax is axes[0] else [], fontsize=8)
        ax.set_title(f"correlation p = {p:.1f}", fontsize=9)
    fig.colorbar(im, ax=axes, label="mean gate weight on the group")
    fig.suptitle("PLE: where each gate's weight goes, per extraction level (rows sum to 1; "
                 "blank = not selectable)", fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    if args.out:
        write_json_atomic(args.out, out)
        print(f"wrote {args.out}")


# %%
if args.plot_gates:
    run_plot_gates(args.plot_gates)
else:
    run_ctr()
