"""The price of a constraint (Geyik et al., KDD 2019): a quota sweep of constrained re-ranking on
the same candidate lists as the DPP/MMR and calibration trade-offs, plus the pieces the
Constrained demo shares with it.

The lists come from `rerank_tradeoff.first_stage` with the same arguments (first-stage ranker,
top-50 test lists), so the initial ranking's NDCG@10 equals the one stored with those curves.
Business framing: items are split into the popular head (the `head_fraction` most interacted items
in training) and the long tail (group 1); the quota q asks every prefix of the top 10 to hold at
least floor(q k) long-tail items and at most ceil(q k) (p = (1 - q, q)). Per quota and algorithm:
NDCG@10, Recall@10, Tail@10 (the long-tail share of the top 10), Satisfied@10 (share of lists whose
every prefix meets the floors), Feasible (share of lists with enough long-tail candidates),
Gini@10 (of the items' exposure: how often each catalogue item is shown in a top 10) and
Exposure@10 (the long tail's mean share of the position-weighted exposure, the note's Eq. (4)).
Then the amortised exposure re-ranker (`ExposureReranker`): per minimum share m, its bonus is
fitted on a random half of the lists and the other half is re-ranked and measured.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.constrained_tradeoff        # synthetic
    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.constrained_tradeoff --replot \
        assets/Constrained/results/tradeoff_synthetic.json
    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.constrained_tradeoff \
        --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --seed S          # S = 0, 1, 2
    .venv/bin/python -m Utils.loops.constrained_tradeoff --summary \
        assets/Constrained/results/tradeoff_beauty.json assets/Constrained/results/tradeoff_beauty_seed*.json

Writes assets/Constrained/tradeoff_<data>.png and assets/Constrained/results/tradeoff_<data>.json
(seed 0; another seed writes tradeoff_<data>_seed<S>.json and no figure). `--summary` prints each
quota's mean ± sd over the runs given (the first-stage ranker is what the seed changes) and writes
tradeoff_<data>_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets import DataError
from Datasets import rerank_lists as RL
from Utils.io import (
    ROOT,
    add_common_args,
    load_model_file,
    model_dir,
    positive_int,
    write_json_atomic,
)
from Utils.loops.rerank_eval import fraction_list_arg, initial_positions, rerank_metrics
from Utils.loops.rerank_tradeoff import (
    first_stage,
    mean_sd,
    metric_line,
    pm_line,
    read_runs,
    write_seeds_summary,
)
from Utils.training import cpu_setup, set_seed

MODEL_DIR = model_dir("Re-ranking", "Constrained")
ALGORITHMS = ("det_greedy", "det_cons", "det_relaxed")


def tail_groups(data, head_fraction: float = 0.1) -> np.ndarray:
    """(n_items+1,) int64 group per item: 0 = head (the `head_fraction` of items with the most
    training interactions), 1 = long tail; row 0 (padding) is 0. Training part of the
    leave-one-out split only, so the held-out items do not decide their own group."""
    split = Datasets.leave_one_out(data)
    counts = np.bincount(split.train_items, minlength=split.n_items + 1)[1:]
    n_head = max(1, int(round(head_fraction * len(counts))))
    head = np.argsort(-counts, kind="stable")[:n_head] + 1
    groups = np.ones(split.n_items + 1, dtype=np.int64)
    groups[head] = 0
    groups[0] = 0
    return groups


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = every item shown equally often, -> 1 = a few
    items take all the exposure)."""
    x = np.sort(np.asarray(exposure, dtype=float))
    n, total = len(x), x.sum()
    if total <= 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def rerank_constrained(con, lists: dict, item_group: np.ndarray, *, quota: float, algorithm: str,
                       k: int, chunk: int, device="cpu"):
    """(positions (U, k), feasible (U,), satisfied (U,)) of `ConstrainedReranker` on every list,
    p = (1 - quota, quota), relevance = the ranker's scores; `chunk` lists at a time."""
    model = con.ConstrainedReranker(algorithm=algorithm, max_length=k)
    scores = torch.from_numpy(lists["init_scores"]).double()
    groups = torch.from_numpy(item_group[lists["items"]])
    p = torch.tensor([1.0 - quota, quota], dtype=torch.float64)
    outs = [model(scores=scores[s : s + chunk].to(device), groups=groups[s : s + chunk].to(device),
                  proportions=p) for s in range(0, len(scores), chunk)]
    return tuple(torch.cat([o[i] for o in outs]).cpu().numpy() for i in range(3))


def list_evaluator(lists: dict, data, con, item_group: np.ndarray, *, k: int):
    """evaluate(positions, quota) -> NDCG@k, Recall@k, ILD@k, Coverage@k (`rerank_metrics`, the
    held-out item as label), Tail@k, Satisfied@k (every prefix meets floor(quota k')), and
    Gini@k of the catalogue's exposure. Data without categories: no ILD@k / Coverage@k."""
    cats = cat_sets = None
    if RL.has_categories(data):
        cats, cat_sets = RL.item_categories(data), RL.item_category_sets(data)
    ones = np.ones(len(lists["items"]))
    groups = torch.from_numpy(item_group[lists["items"]])
    n_items = len(item_group) - 1

    def evaluate(positions, quota: float) -> dict[str, float]:
        positions = np.asarray(positions)[:, :k]
        m = rerank_metrics(positions, lists["items"], lists["labels"], k=k, categories=cats,
                           category_sets=cat_sets, n_relevant=ones)
        pos = torch.as_tensor(positions, dtype=torch.long)
        p = torch.tensor([1.0 - quota, quota], dtype=torch.float64)
        min_ok, _, _ = con.constraint_check(groups, pos, p)
        shown = np.take_along_axis(lists["items"], np.clip(positions, 0, None), 1)[positions >= 0]
        tail = item_group[shown]
        exposure = np.bincount(shown, minlength=n_items + 1)[1:]
        share = con.exposure_shares(groups, pos, 2)[:, 1].mean()  # Eq. (4), long tail
        return {**m, f"Tail@{k}": float(tail.mean()), f"Satisfied@{k}": float(min_ok.double().mean()),
                f"Gini@{k}": gini(exposure), f"Exposure@{k}": float(share)}

    return evaluate


def exposure_sweep(con, lists: dict, data, item_group: np.ndarray, *, targets, k: int,
                   seed: int) -> list[dict]:
    """Amortised exposure (`ExposureReranker`, the note's Eq. (3)-(6)): for each minimum long-tail
    exposure share m, fit the bonus on a random half of the users' lists (scores and groups only,
    no labels) and re-rank the other half; that half's metrics before and after, with its mean
    long-tail exposure share (`Exposure@k`) and the bonus."""
    U = len(lists["items"])
    perm = np.random.default_rng(seed).permutation(U)
    fit_rows, test_rows = perm[: U // 2], perm[U // 2 :]
    scores = RL.minmax_scores(torch.from_numpy(lists["init_scores"]).double())
    groups = torch.from_numpy(item_group[lists["items"]])
    held = {key: lists[key][test_rows] for key in ("items", "labels")}
    evaluate = list_evaluator(held, data, con, item_group, k=k)
    g_test, s_test = groups[test_rows], scores[test_rows]

    def with_exposure(positions) -> dict:
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        share = con.exposure_shares(g_test, pos, 2).mean(0)
        row = evaluate(positions, 0.0)
        assert abs(row[f"Exposure@{k}"] - float(share[1])) < 1e-9
        return {key: v for key, v in row.items() if key != f"Satisfied@{k}"}

    initial = with_exposure(initial_positions(len(test_rows), k))
    out = []
    for m in targets:
        model = con.ExposureReranker(max_length=k)
        t = time.perf_counter()
        fit = model.fit(scores=scores[fit_rows], groups=groups[fit_rows],
                        min_share=torch.tensor([0.0, m], dtype=torch.float64))
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        pos = model(scores=s_test, groups=g_test).numpy()
        out.append({"min_share": m, "bonus": float(fit.bonus[1]), "met_on_fit": fit.met,
                    "share_on_fit": float(fit.shares[1]), "initial": initial,
                    "exposure": {**with_exposure(pos), "seconds": time.perf_counter() - t,
                                 "fit_seconds": fit_s}})
    return out


def plot(result: dict, tag: str, k: int = 10, path: Path | None = None) -> Path:
    """Two panels against the quota q: NDCG@k of each algorithm (and of the initial ranking), and
    the share of lists meeting every prefix floor before (initial ranking) and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path or ROOT / "assets" / "Constrained" / f"tradeoff_{tag}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    rows = result["sweep"]
    qs = [r["quota"] for r in rows]
    for ax, metric, title in ((axes[0], f"NDCG@{k}", "relevance"),
                              (axes[1], f"Satisfied@{k}", "lists meeting every prefix floor")):
        ax.plot(qs, [r["initial"][metric] for r in rows], "s--", color="tab:green",
                label="initial ranking")
        for name, marker in zip(ALGORITHMS, "o^v"):
            ax.plot(qs, [r[name][metric] for r in rows], marker + "-", ms=5, label=name)
        ax.set_xlabel("long-tail quota q (floor(q k) long-tail items in every prefix k)")
        ax.set_ylabel(f"{metric} ({title})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{tag}: the price of a long-tail quota, {result['n_lists']:,} lists, top {k}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def summarize(paths: list[str]) -> dict:
    """Mean ± sd over runs of the same sweep with different seeds: per quota, the initial ranking
    and each algorithm, every metric; the exposure sweep likewise; printed, and written beside the
    first run as tradeoff_<data>_seeds.json."""
    runs = read_runs(paths)
    quotas = [[r["quota"] for r in run["sweep"]] for run in runs]
    if any(q != quotas[0] for q in quotas):
        raise DataError("--summary: the runs differ in their quotas; expected one sweep per seed")
    sweep = []
    for i, q in enumerate(quotas[0]):
        row = {"quota": q, "feasible": float(np.mean([run["sweep"][i]["feasible"] for run in runs]))}
        for name in ("initial", *ALGORITHMS):
            row[name], row[name + "_sd"] = mean_sd([run["sweep"][i][name] for run in runs])
        sweep.append(row)
    exposure = []
    for i, first in enumerate(runs[0].get("exposure", [])):
        rows = [run["exposure"][i] for run in runs]
        row = {"min_share": first["min_share"]}
        for name in ("initial", "exposure"):
            row[name], row[name + "_sd"] = mean_sd([r[name] for r in rows])
        row["bonus"] = [r["bonus"] for r in rows]
        row["met_on_fit"] = all(r["met_on_fit"] for r in rows)
        exposure.append(row)
    out = {"data": runs[0]["data"], "n_lists": runs[0]["n_lists"], "n": len(runs),
           "seeds": [run.get("seed", 0) for run in runs], "head_fraction": runs[0]["head_fraction"],
           "runs": [str(p) for p in paths], "sweep": sweep, "exposure": exposure}
    print(f"{out['data']}: mean ± sd over {len(runs)} seeds {out['seeds']}")
    for r in sweep:
        print(f"q={r['quota']:<5} feasible={r['feasible']:.4f}")
        for name in ("initial", *ALGORITHMS):
            print(f"   {name:<11} " + pm_line(r[name], r[name + "_sd"]))
    for r in exposure:
        print(f"m={r['min_share']:<5} bonus per seed {[round(b, 4) for b in r['bonus']]}, met on "
              f"the fitted halves: {r['met_on_fit']}; held-out halves:")
        for name in ("initial", "exposure"):
            print(f"   {name:<11} " + pm_line(r[name], r[name + "_sd"]))
    write_seeds_summary(paths[0], out)
    return out


def _print_run(saved: dict) -> None:
    print(f"{saved['data']}, {saved['n_lists']:,} lists, head fraction {saved['head_fraction']}")
    for r in saved["sweep"]:
        print(f"q={r['quota']:<5} feasible={r['feasible']:.4f}  initial   "
              + metric_line(r["initial"]))
        for name in ALGORITHMS:
            print(f"q={r['quota']:<5} {name:<11} " + metric_line(r[name]))
    for r in saved.get("exposure", []):
        print(f"m={r['min_share']:<5} bonus={r['bonus']:.4f} share on the fitted half "
              f"{r['share_on_fit']:.4f} (met {r['met_on_fit']}); held-out half:")
        print("   initial   " + metric_line(r["initial"]))
        print("   exposure  " + metric_line(r["exposure"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, epochs=3, batch_size=512, lr=3e-3)  # of the first-stage ranker
    p.add_argument("--replot", default=None, help="redraw from a saved tradeoff json and exit")
    p.add_argument("--summary", nargs="+", default=None, metavar="JSON",
                   help="mean ± sd over these runs' sweeps (one per seed), printed and saved")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="where the figure goes (default assets/Constrained/tradeoff_<data>.png)")
    p.add_argument("--candidates", type=positive_int, default=50)
    p.add_argument("--k", type=positive_int, default=10)
    p.add_argument("--similarity", choices=["category", "embedding", "mixed"], default="mixed",
                   help="as in rerank_tradeoff (the same first stage; unused by the quota)")
    p.add_argument("--head-fraction", type=float, default=0.1,
                   help="share of the catalogue (most interacted items) that is the head")
    p.add_argument("--quotas", type=fraction_list_arg(), default="0,0.1,0.2,0.3,0.4,0.5,0.6")
    p.add_argument("--exposure", type=fraction_list_arg(), default="0.1,0.2,0.3",
                   help="minimum long-tail exposure shares m of the amortised exposure sweep")
    p.add_argument("--chunk", type=positive_int, default=512)
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates "
                f"{args.candidates}")
    if not 0 < args.head_fraction < 1:
        p.error(f"--head-fraction {args.head_fraction}: expected a number in (0, 1)")
    if args.summary:
        summarize(args.summary)
        return
    if args.replot:
        try:
            saved = json.loads(Path(args.replot).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"--replot {args.replot}: {e}; expected a tradeoff json that this "
                            "module wrote (assets/Constrained/results/tradeoff_<data>.json)") from None
        _print_run(saved)
        tag = Path(args.replot).stem.removeprefix("tradeoff_")
        print(f"wrote {plot(saved, tag, args.k, path=args.plot)}")
        return
    cpu_setup(args.threads)
    set_seed(args.seed)
    con = load_model_file(MODEL_DIR / "model.py", "constrained_model")
    t0 = time.perf_counter()
    data, lists, _ = first_stage(args, demo="the constrained trade-off")
    item_group = tail_groups(data, args.head_fraction)
    U = len(lists["items"])
    evaluate = list_evaluator(lists, data, con, item_group, k=args.k)
    cand_tail = float(item_group[lists["items"]].mean())
    print(f"{U:,} lists; long-tail share of the candidates {cand_tail:.4f}, of the catalogue "
          f"{float(item_group[1:].mean()):.4f}", flush=True)
    sweep = []
    for q in args.quotas:
        row = {"quota": q, "initial": evaluate(initial_positions(U, args.k), q)}
        for name in ALGORITHMS:
            t = time.perf_counter()
            pos, feasible, _ = rerank_constrained(con, lists, item_group, quota=q, algorithm=name,
                                                  k=args.k, chunk=args.chunk)
            row[name] = {**evaluate(pos, q), "seconds": time.perf_counter() - t}
            row["feasible"] = float(feasible.mean())
        sweep.append(row)
    exposure = exposure_sweep(con, lists, data, item_group, targets=args.exposure, k=args.k,
                              seed=args.seed)
    tag = "beauty" if "Beauty" in args.data else args.data.split(":")[0]
    result = {"data": args.data, "n_lists": U, "head_fraction": args.head_fraction,
              "candidate_tail_share": cand_tail, "catalogue_tail_share": float(item_group[1:].mean()),
              "sweep": sweep, "exposure": exposure}
    result["seed"] = args.seed
    _print_run(result)
    suffix = "" if args.seed == 0 else f"_seed{args.seed}"
    png = plot(result, tag, args.k, path=args.plot) if args.seed == 0 or args.plot else "no figure"
    out = ROOT / "assets" / "Constrained" / "results" / f"tradeoff_{tag}{suffix}.json"
    write_json_atomic(out, {**result, "wall_seconds": time.perf_counter() - t0})
    print(f"wrote {png} and {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
