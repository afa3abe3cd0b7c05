# %% [markdown]
# # ESMM demo — post-click conversion rate over the entire impression space (and ESCM²)
#
# CPU, synthetic conversion world (impression -> click -> conversion with the conversion truth
# planted, `Datasets/conversion_ctr.py`): ESMM against the naive CVR model trained on clicked
# impressions only (the paper's BASE), each trained until its validation CTCVR AUC stops rising
# (patience 3, at most 30 epochs), about 20 s with 1 thread:
#
#     python "Classic Models/Ranking/ESMM/demo.py" --threads 1
#
# The same with ESCM²'s counterfactual regulariser (inverse propensity, or doubly robust):
#
#     python "Classic Models/Ranking/ESMM/demo.py" --method escm2-dr --threads 1
#
# The study behind the note's table: naive, ESMM, ESCM²-IPS and ESCM²-DR on seeds 0-4, every AUC
# per task, mean ± sd; seed 0's predictions binned against the planted CVR for the figure (about
# 2.5 min with 1 thread):
#
#     python "Classic Models/Ranking/ESMM/demo.py" --study 5 --threads 1 \
#         --plot assets/ESMM/calibration.png --out assets/ESMM/results/study.json
#
# Save, reload (no training) and recommend for one synthetic user by pCTCVR:
#
#     python "Classic Models/Ranking/ESMM/demo.py" --save /tmp/esmm.pt
#     python "Classic Models/Ranking/ESMM/demo.py" --load /tmp/esmm.pt --recommend U00007
#
# Every flag: `--help`. The last line printed is `RESULT {json}`.

# %%
import argparse
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets import DataError
from Datasets.BaseDatasets import TensorDictDataset
from Datasets.conversion_ctr import FIELDS, conversion_impressions, model_inputs
from Utils.demo_io import (
    apply_saved_args,
    read_checkpoint,
    restore,
    show_recommendations,
)
from Utils.io import add_common_args, load_model_file, model_dir, positive_int, print_result
from Utils.loops.behavior_demo import add_model_io_args, check_before_training, save_models
from Utils.loops.multitask_demo import candidate_impressions
from Utils.metrics import auc
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

esmm = load_model_file(model_dir("Ranking", "ESMM") / "model.py", "esmm_model")
METHODS = ("naive", "esmm", "escm2-ips", "escm2-dr")
OBSERVABLE = ("AUC_CTCVR", "AUC_CTR", "AUC_CVR_clicked")  # what a click + conversion log computes
NAMES = {"naive": "naive CVR (clicked only, the paper's BASE)", "esmm": "ESMM",
         "escm2-ips": "ESCM²-IPS", "escm2-dr": "ESCM²-DR"}

# %%
parser = add_common_args(argparse.ArgumentParser(description=__doc__), epochs=30, batch_size=256,
                         lr=1e-3)
parser.add_argument("--method", default="esmm", choices=METHODS,
                    help="naive: CVR loss on clicked impressions, separate embeddings (BASE); "
                         "esmm: CTR + CTCVR losses over all impressions; escm2-ips / escm2-dr: "
                         "ESMM + ESCM²'s counterfactual CVR risk")
parser.add_argument("--dim", type=positive_int, default=16, help="embedding dim per field")
parser.add_argument("--patience", type=positive_int, default=3,
                    help="stop after this many epochs without a gain in --select-metric on the "
                         "validation impressions (--epochs is the most it trains)")
parser.add_argument("--select-metric", default="AUC_CTCVR", choices=OBSERVABLE,
                    help="the validation number that chooses each method's epoch: one a click and "
                         "conversion log can compute (AUC_CTCVR over every impression, the "
                         "default; AUC_CTR; AUC_CVR_clicked)")
parser.add_argument("--separate-embeddings", action="store_true",
                    help="one embedding table per tower (the paper's ESMM-NS ablation); the "
                         "naive model always has its own")
parser.add_argument("--study", type=positive_int, default=None, metavar="SEEDS",
                    help="train all four methods on seeds 0..SEEDS-1; mean ± sd per metric")
parser.add_argument("--plot", default=None, metavar="PNG",
                    help="with --study: seed 0's mean predicted CVR per planted-CVR bin, clicked "
                         "and non-clicked impressions apart, one panel per method")
add_model_io_args(parser, recommend="score every item USER has not touched by pCTCVR and print "
                  "the top-10 (a raw synthetic user id, e.g. U00007)")
args = parser.parse_args()
if args.study and (args.save or args.load or args.recommend):
    raise ValueError("--save, --load and --recommend apply to a single run, not to --study")
if args.plot and not args.study:
    raise ValueError("--plot draws the study's seed 0: use it with --study SEEDS")
cpu_setup(args.threads)
device = pick_device(args.device)


# %% [markdown]
# ## Data: impression -> click -> conversion, truth planted
# Every impression has a click y; a conversion z is seen only after a click. The world also knows
# r, whether each impression *would* convert if clicked, and cvr(x) = p(r = 1 | x): a CVR model can
# be scored on the entire space, which no log allows. The model reads the sparse fields only.

# %%
def load_world(seed: int):
    data = Datasets.load(args.data, verbose=seed == args.seed, expect="interactions",
                         demo="the ESMM demo")
    split = Datasets.leave_one_out(data)
    sets, dims = conversion_impressions(data, split, seed=seed)
    return data, split, sets, dims


def describe(sets: dict) -> dict:
    """Counts and planted CVR of the training impressions; printed, and returned for the json."""
    t = {k: v.numpy() for k, v in sets["train"].tensors.items()}
    c = t["click"] > 0
    print(f"train: {len(c):,} impressions, {int(c.sum()):,} clicks (CTR {c.mean():.3f}), "
          f"{int(t['conversion'].sum()):,} conversions (CVR on clicks {t['conversion'][c].mean():.3f}); "
          f"planted CVR on clicked {t['cvr_truth'][c].mean():.3f}, on non-clicked "
          f"{t['cvr_truth'][~c].mean():.3f}")
    return {"train_impressions": int(len(c)), "train_clicks": int(c.sum()),
            "train_conversions": int(t["conversion"].sum()),
            "train_planted_cvr_clicked": float(t["cvr_truth"][c].mean()),
            "train_planted_cvr_nonclicked": float(t["cvr_truth"][~c].mean())}


# %% [markdown]
# ## Training and the metrics of each task
# Every method trains the same towers with Adam; its epoch is chosen on the validation impressions
# by `--select-metric`, a number a log can compute (never the planted truth), with `--patience`
# and at most `--epochs` epochs; the best epoch's weights are kept. AUCs are named by task and
# by the impressions they are computed on: CTR on all, CVR on the clicked ones (what a log can
# score, the paper's CVR AUC), CVR on the entire space against r (only a planted world can), and
# CTCVR on all. Bias: mean predicted minus planted CVR.

# %%
def build(method: str, dims: list[int], separate: bool = False):
    return esmm.ESMM(sparse_vocab_sizes=tuple(dims), dim=args.dim, tower_hidden=(64, 32),
                     method=method, share_embeddings=method != "naive" and not separate)


def train(method: str, sets: dict, dims: list[int], seed: int, separate: bool = False):
    set_seed(seed)
    model = build(method, dims, separate).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(seed)
    tr = sets["train"]

    def step(b):
        return model.loss(model(model_inputs(b).to(device)), b["click"].to(device),
                          b["conversion"].to(device))

    hist = fit(model, step, lambda e: tr.batches(args.batch_size, generator=gen), opt, args.epochs,
               lambda: metrics(model, sets["valid"], observable_only=True),
               metric=args.select_metric, patience=args.patience,
               n_batches=tr.num_batches(args.batch_size), desc=NAMES[method].split(" (")[0],
               progress=not args.study)
    return model, hist.train_seconds, {"epoch": hist.best_epoch,
                                       f"valid_{args.select_metric}": hist.best_metric}


def predict(model, ds) -> np.ndarray:
    """(S, 3) [pCTR, pCVR, pCTCVR] of every impression of ds."""
    out = [model.predict(model_inputs(b).to(device)).cpu()
           for b in ds.batches(8192, shuffle=False)]
    return torch.cat(out).numpy()


def metrics(model, ds, *, observable_only: bool = False) -> dict[str, float]:
    """Every AUC by task, and the bias against the planted CVR; `observable_only`: just the AUCs a
    click and conversion log can compute (OBSERVABLE), which is what chooses the epoch."""
    p, t = predict(model, ds), {k: v.numpy() for k, v in ds.tensors.items()}
    c = t["click"] > 0
    out = {"AUC_CTR": auc(t["click"], p[:, 0]),  # every impression
           "AUC_CVR_clicked": auc(t["conversion"][c], p[c, 1])}  # a log can score this one
    if not observable_only:  # would it convert if clicked: every row; only a planted world knows
        out["AUC_CVR_entire"] = auc(t["potential"], p[:, 1])
    out["AUC_CTCVR"] = auc(t["conversion"], p[:, 2])  # every impression
    if not observable_only:
        out["CVR_bias_entire"] = float((p[:, 1] - t["cvr_truth"]).mean())
        out["CVR_bias_nonclicked"] = float((p[~c, 1] - t["cvr_truth"][~c]).mean())
    return out


def calibration(model, ds, bins: int = 8) -> dict:
    """Mean predicted CVR per planted-CVR quantile bin, clicked and non-clicked impressions apart."""
    p, t = predict(model, ds)[:, 1], {k: v.numpy() for k, v in ds.tensors.items()}
    edges = np.quantile(t["cvr_truth"], np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, t["cvr_truth"], side="right") - 1, 0, bins - 1)
    out = {}
    for name, rows in (("clicked", t["click"] > 0), ("non-clicked", t["click"] == 0)):
        cells = [(which == b) & rows for b in range(bins)]
        out[name] = {"planted": [float(t["cvr_truth"][m].mean()) if m.any() else None for m in cells],
                     "predicted": [float(p[m].mean()) if m.any() else None for m in cells],
                     "n": [int(m.sum()) for m in cells]}
    return out


def show(name: str, m: dict) -> None:
    print(f"{name:>44s}  " + "  ".join(f"{k} {v:+.4f}" if "bias" in k else f"{k} {v:.4f}"
                                       for k, v in m.items()))


# %% [markdown]
# ## A single run (default): `--method` against the naive CVR model

# %%
def run_single() -> None:
    saved = read_checkpoint(args.load, demo="ESMM") if args.load else None
    if saved:
        apply_saved_args(args, saved,
                         names=("seed", "method", "dim", "separate_embeddings", "epochs"))
    data, split, sets, dims = load_world(args.seed)
    check_before_training(args, split, data)
    if saved and list(saved["extra"]["dims"]) != list(dims):
        raise DataError(f"--load {args.load}: saved for field sizes {list(saved['extra']['dims'])}, "
                        f"but {data.name} gives {list(dims)}; expected the --data of the run that "
                        f"saved it ({saved['args'].get('data', '?')})")
    world = describe(sets)
    methods = [args.method] + (["naive"] if args.method != "naive" else [])
    models, seconds, results, chosen = {}, {}, {}, {}
    for method in methods:
        if saved:
            models[method] = restore(esmm.ESMM, saved["models"][method], device, args.load)
            seconds[method], chosen[method] = 0.0, saved["extra"].get("chosen", {}).get(method)
        else:
            models[method], seconds[method], chosen[method] = train(
                method, sets, dims, args.seed, args.separate_embeddings)
            print(f"{NAMES[method]}: epoch {chosen[method]['epoch']} chosen on validation "
                  f"{args.select_metric} {chosen[method]['valid_' + args.select_metric]:.4f}")
        results[method] = metrics(models[method], sets["test"])
    if saved:
        print(f"loaded {', '.join(methods)} from {args.load} (no training)")
    if args.save:
        save_models(args, args.save, "ESMM", {k: (v, vars(v.config)) for k, v in models.items()},
                    names=("data", "seed", "method", "dim", "separate_embeddings", "epochs"),
                    dims=list(dims), ids={"user": data.user_raw, "item": data.item_raw},
                    chosen=chosen)
    print("test impressions:")
    for method in methods[::-1]:
        show(NAMES[method], results[method])
    if args.recommend is not None:
        recommend(models[args.method], data, split, args.recommend)
    main = models[args.method]
    print_result(
        model=NAMES[args.method], data=f"synthetic conversion world ({args.data})",
        protocol="impressions of the synthetic default (next item + 3 popular items per step), "
                 "clicks ~11%, conversions planted; leave-one-out, test = last step; AUC per task: "
                 "CTR and CTCVR on all impressions, CVR on clicked ones and on the entire space "
                 "(against whether each impression would convert if clicked)",
        metrics=results[args.method],
        baseline=None if args.method == "naive" else {"name": NAMES["naive"],
                                                      "metrics": results["naive"]},
        train_seconds=seconds[args.method], eval_seconds=0.0,
        epochs=(chosen[args.method] or {}).get("epoch"), params=count_params(main), out=args.out,
        threads=torch.get_num_threads(), loaded_from=args.load, world=world,
        chosen_on_validation=chosen, select_metric=args.select_metric, patience=args.patience,
        max_epochs=args.epochs)


def recommend(model, data, split, raw_user: str, k: int = 10) -> None:
    """Score every item the user has not touched before the test step, with the user's last
    behaviour as context; rank by pCTCVR (expected conversions per impression)."""
    history, cand, sparse = candidate_impressions(data, split, raw_user)  # (C, 7) as FIELDS
    p = predict(model, TensorDictDataset({"sparse": sparse}))
    order = np.argsort(-p[:, 2])[:k]
    print(f"\n--recommend {raw_user}: {len(cand):,} candidates ({', '.join(FIELDS)} as inputs), "
          "ranked by pCTCVR = pCTR x pCVR")
    show_recommendations(data, [int(i) for i in history], [int(cand[j]) for j in order],
                         [float(p[j, 2]) for j in order], raw_user=raw_user, k=k)
    for j in order[:3]:
        print(f"    item {data.item_raw[cand[j]]}: pCTR {p[j, 0]:.3f}  pCVR {p[j, 1]:.3f}")


# %% [markdown]
# ## `--study SEEDS`: every method on every seed
# Each seed draws its own impressions, clicks and conversions (the world's users and items stay)
# and its own initialisation; the four methods share them, so differences are paired by seed.

# %%
def run_study(n_seeds: int) -> None:
    per_seed = {m: [] for m in METHODS}
    seconds = {m: 0.0 for m in METHODS}
    curves, world = None, None
    t0 = time.perf_counter()
    for seed in range(n_seeds):
        _, _, sets, dims = load_world(seed)
        describe(sets)
        for method in METHODS:
            model, secs, chosen = train(method, sets, dims, seed)
            seconds[method] += secs
            per_seed[method].append({**metrics(model, sets["test"]), **chosen})
            show(f"seed {seed} {NAMES[method].split(' (')[0]}", per_seed[method][-1])
            if seed == 0 and args.plot:
                curves = curves or {}
                curves[method] = calibration(model, sets["test"])
        if seed == 0:
            t = {k: v.numpy() for k, v in sets["test"].tensors.items()}
            c = t["click"] > 0
            world = {"test_impressions": int(len(c)), "test_clicks": int(c.sum()),
                     "test_conversions": int(t["conversion"].sum()),
                     "planted_cvr_clicked": float(t["cvr_truth"][c].mean()),
                     "planted_cvr_nonclicked": float(t["cvr_truth"][~c].mean()),
                     "AUC_CVR_entire_of_planted_cvr": auc(t["potential"], t["cvr_truth"]),
                     "AUC_CVR_clicked_of_planted_cvr": auc(t["conversion"][c], t["cvr_truth"][c])}
    keys = list(per_seed["esmm"][0])
    mean = {m: {k: float(np.mean([r[k] for r in rs])) for k in keys} for m, rs in per_seed.items()}
    sd = {m: {k: float(np.std([r[k] for r in rs], ddof=1)) if len(rs) > 1 else None for k in keys}
          for m, rs in per_seed.items()}
    print(f"\nmean ± sd over {n_seeds} seeds (test impressions):")
    for m in METHODS:
        print(f"{NAMES[m]:>44s}  " + "  ".join(
            f"{k} {mean[m][k]:.4f} ± {sd[m][k] or 0:.4f}" for k in keys))
    if args.plot:
        plot_calibration(curves, args.plot)
    print_result(
        model="ESMM", data="synthetic conversion world (synthetic default; Datasets/conversion_ctr.py)",
        protocol=f"{n_seeds} seeds (impressions, clicks, conversions, initialisation); "
                 f"each method's epoch chosen on validation {args.select_metric} (patience "
                 f"{args.patience}, at most {args.epochs}), Adam lr {args.lr}, batch "
                 f"{args.batch_size}, dim {args.dim}, "
                 "towers (64, 32); test = the held-out step; AUC per task: CTR and CTCVR on all "
                 "impressions, CVR on clicked ones and on the entire space (against whether each "
                 "impression would convert if clicked); bias = mean pCVR - planted CVR",
        metrics=mean["esmm"], baseline={"name": NAMES["naive"], "metrics": mean["naive"]},
        train_seconds=time.perf_counter() - t0, eval_seconds=0.0, epochs=mean["esmm"]["epoch"],
        params=count_params(build("esmm", dims)), out=args.out, threads=torch.get_num_threads(),
        n=n_seeds, mean=mean, sd=sd, per_seed=per_seed,
        train_seconds_by_method=seconds, world_seed0=world, calibration_seed0=curves)


def plot_calibration(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.2), dpi=120,
                             sharey=True, layout="constrained")
    top = max(max(v for v in c[s]["planted"] + c[s]["predicted"] if v is not None)
              for c in curves.values() for s in ("clicked", "non-clicked"))
    for ax, (method, c) in zip(axes, curves.items()):
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="truth")
        for name, style in (("clicked", "o-"), ("non-clicked", "s-")):
            pts = [(a, b) for a, b in zip(c[name]["planted"], c[name]["predicted"]) if a is not None]
            ax.plot(*zip(*pts), style, ms=3, label=f"{name} impressions")
        ax.set_title(NAMES[method].split(" (")[0], fontsize=9)
        ax.set_xlabel("planted CVR (bin mean)")
    axes[0].set_ylabel("predicted pCVR (bin mean)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Predicted against planted post-click CVR, test impressions of seed 0", fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


# %%
if args.study:
    run_study(args.study)
else:
    run_single()
