"""Relevance-calibration trade-off of calibrated re-ranking (Steck 2018): a lambda sweep on the same
candidate lists as the DPP-vs-MMR curves (`Utils.loops.rerank_tradeoff`), plus the pieces the
Calibration demo shares with it.

The lists come from `rerank_tradeoff.first_stage` with the same arguments (first-stage ranker,
top-50 test lists), so the initial ranking's metrics equal the ones stored with the DPP trade-off.
Each item's categories are its category (synthetic) or its S3-Rec attribute ids (Beauty), q(g|i)
uniform over them; p(g|u) is the mix of the user's last 20 training items (the ranker's history).
Per lambda: NDCG@10, Recall@10, ILD@10, Coverage@10 and the miscalibration C_KL@10 (mean over
lists, Eq. (3)-(4) with alpha = 0.01). DPP (theta = 0.95) and MMR (lambda = 0.9), the two
diversifiers at their demo defaults, are measured on the same lists for comparison.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.calibration_tradeoff        # synthetic, ~20 s
    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.calibration_tradeoff \
        --data seqtxt:../shared/data/amazon-beauty/Beauty.txt
    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.calibration_tradeoff --greedy-check 300

Writes assets/Calibration/tradeoff_<data>.png and assets/Calibration/results/tradeoff_<data>.json;
`--replot JSON` prints a stored run and redraws its figure without training. `--greedy-check N`
compares the greedy with brute force on N small random lists (the submodularity argument, measured)
and writes assets/Calibration/results/greedy_vs_bruteforce.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

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
    mmr_positions,
    pm_line,
    read_runs,
    write_seeds_summary,
)
from Utils.training import cpu_setup, set_seed

MODEL_DIR = model_dir("Re-ranking", "Calibration")
KL = "C_KL@{k}"


# --------------------------------------------------------------------------------------------------
# Categories of the items and the calibration inputs of a chunk of lists (shared with the demo)
# --------------------------------------------------------------------------------------------------


def category_ids(data) -> tuple[np.ndarray, int, list[str]]:
    """(n_items+1, A) int64 category ids per item (0 = none; row 0 is the padding item), the number
    of categories and a display name per id (synthetic: the category's name; seqtxt: `attr <id>`).
    """
    sets = RL.item_category_sets(data)
    ids = (sets[:, None] if sets.ndim == 1 else sets).astype(np.int64)
    n = int(ids.max())
    names = [f"attr {g}" for g in range(n + 1)]
    if "category" in data.items:
        raw = data.items["category"].astype(str).to_numpy()
        for item, code in enumerate(ids[:, 0]):
            if item > 0 and code > 0:
                names[code] = raw[item]
    names[0] = "none"
    return ids, n, names


def calibration_inputs(cal, lists: dict, ids: np.ndarray, n_categories: int, rows: slice,
                       device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """q(g|i) of the candidates (b, N, G) and of the history items (b, L, G) of lists[rows]; the
    padding item 0 has no category, so its row is zero (= padding for Eq. (1))."""
    items = torch.from_numpy(ids[lists["items"][rows]]).to(device)  # (b, N, A)
    hist = torch.from_numpy(ids[lists["history"][rows]]).to(device)  # (b, L, A)
    return (cal.category_distribution(items, n_categories),
            cal.category_distribution(hist, n_categories))


def rerank_calibrated(cal, lists: dict, ids: np.ndarray, n_categories: int, *, lam: float,
                      alpha: float, half_life: float | None, k: int, chunk: int,
                      device="cpu") -> np.ndarray:
    """Positions (U, k) chosen by `CalibratedReranker` for every list, `chunk` lists at a time;
    relevance = the ranker's scores min-max per list (as MMR and the DPP get them)."""
    model = cal.CalibratedReranker(lam=lam, alpha=alpha, max_length=k, half_life=half_life)
    scores = RL.minmax_scores(torch.from_numpy(lists["init_scores"]).double())
    out = []
    for s in range(0, len(scores), chunk):
        rows = slice(s, s + chunk)
        q_items, q_hist = calibration_inputs(cal, lists, ids, n_categories, rows, device)
        out.append(model(scores=scores[rows].to(device), item_categories=q_items.double(),
                         history_categories=q_hist.double()).cpu())
    return torch.cat(out).numpy()


def miscalibration_at_k(cal, lists: dict, positions, ids: np.ndarray, n_categories: int, *,
                        alpha: float, half_life: float | None, k: int, chunk: int) -> np.ndarray:
    """C_KL (Eq. (3)-(4)) of each list's top k against the user's p(g|u) (Eq. (1)), (U,)."""
    model = cal.CalibratedReranker(alpha=alpha, max_length=k, half_life=half_life)
    pos = torch.as_tensor(np.asarray(positions)[:, :k], dtype=torch.long)
    out = []
    for s in range(0, len(pos), chunk):
        rows = slice(s, s + chunk)
        q_items, q_hist = calibration_inputs(cal, lists, ids, n_categories, rows)
        p = model.target(q_hist.double())  # (b, G) Eq. (1)
        q = cal.list_distribution(q_items.double(), pos[rows])  # (b, G) Eq. (2)
        out.append(cal.miscalibration(p, q, alpha))
    return torch.cat(out).numpy()


def list_evaluator(lists: dict, data, cal, ids: np.ndarray, n_categories: int, *, k: int,
                   alpha: float, half_life: float | None, chunk: int):
    """evaluate(positions) -> NDCG@k, Recall@k, ILD@k, Coverage@k (`rerank_metrics`, the held-out
    item as label) and C_KL@k (mean over lists)."""
    cats, cat_sets = RL.item_categories(data), RL.item_category_sets(data)
    ones = np.ones(len(lists["items"]))

    def evaluate(positions) -> dict[str, float]:
        m = rerank_metrics(positions, lists["items"], lists["labels"], k=k, categories=cats,
                           category_sets=cat_sets, n_relevant=ones)
        kl = miscalibration_at_k(cal, lists, positions, ids, n_categories, alpha=alpha,
                                 half_life=half_life, k=k, chunk=chunk)
        return {**m, KL.format(k=k): float(kl.mean())}

    return evaluate


# --------------------------------------------------------------------------------------------------
# The figure: C_KL@k against NDCG@k and against Recall@k, every point labelled
# --------------------------------------------------------------------------------------------------


def plot(result: dict, tag: str, k: int = 10, path: Path | None = None) -> Path:
    """Two panels, miscalibration (x, lower = better calibrated) against NDCG@k and Recall@k: the
    lambda sweep (each point labelled with its lambda), the initial ranking, DPP and MMR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from Utils.plotting import label_points

    kl = KL.format(k=k)
    path = Path(path or ROOT / "assets" / "Calibration" / f"tradeoff_{tag}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), dpi=110)
    for ax, metric in zip(axes, (f"NDCG@{k}", f"Recall@{k}")):
        sweep = result["Calibration"]
        xs, ys = [r[kl] for r in sweep], [r[metric] for r in sweep]
        (line,) = ax.plot(xs, ys, "o-", ms=4, label="calibrated re-ranking (λ sweep)")
        todo = [(x, y, f"λ={r['lambda']:g}", line.get_color()) for x, y, r in zip(xs, ys, sweep)]
        extra = [("initial ranking", result["initial"], "tab:green", "s")]
        extra += [(f"{name} {knob}={r[key]:g}", r, colour, "D")
                  for name, key, knob, colour in (("DPP", "theta", "θ", "tab:red"),
                                                  ("MMR", "lambda", "λ", "tab:purple"))
                  for r in result.get(name, [])]
        for label, r, colour, marker in extra:
            ax.plot([r[kl]], [r[metric]], marker, color=colour, ms=7, label=label)
        others = [([r[kl]], [r[metric]]) for _, r, _, _ in extra]  # labels keep clear of them too
        ax.set_xlabel(f"{kl}: miscalibration of the top {k} (lower = closer to the history's mix)")
        ax.set_ylabel(f"{metric} (relevance)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.margins(0.1)
        fig.tight_layout()
        label_points(ax, todo, lines=[(xs, ys), *others])
    n, alpha = result["n_lists"], result["alpha"]
    fig.suptitle(f"{tag}: calibrated re-ranking, {n:,} lists (α = {alpha})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# The greedy against brute force on small random lists
# --------------------------------------------------------------------------------------------------


def _objective(p, Q, s, subset, lam, alpha) -> float:
    """Eq. (6) of one set, in numpy: (1 - lam) s(I) - lam C_KL(p, q(I))."""
    q = Q[list(subset)].mean(0)
    q_tilde = (1 - alpha) * q + alpha * p
    sup = p > 0
    kl = (p[sup] * np.log(p[sup] / q_tilde[sup])).sum()
    return float((1 - lam) * s[list(subset)].sum() - lam * kl)


def _modular_log_form(p, Q, s, subset, lam, alpha) -> float:
    """F(I) = (1 - lam) s(I) + lam sum_g p_g log sum_{i in I} m_i(g): Eq. (6) less a function of
    |I| alone (the note's Maths)."""
    m = (1 - alpha) * Q[list(subset)] + alpha * p
    sup = p > 0
    log_sums = (p[sup] * np.log(m[:, sup].sum(0))).sum()
    return float((1 - lam) * s[list(subset)].sum() + lam * log_sums)


def greedy_check(cal, n_cases: int, seed: int = 0, alpha: float = 0.01) -> dict:
    """The greedy's list against the brute-force best k-subset of Eq. (6) on n_cases random lists
    (N in 4..8, k in 2..min(N, 5), 2..4 categories, lambda uniform in [0, 1], scores in [0, 1]).

    Reports how often the greedy is optimal, the worst (f(G) - f_min) / (f(opt) - f_min) over the
    k-subsets, and the worst ratio of the bound that does hold,
    F(G) - F(x1) >= (1 - 1/e)(1 - 1/k)(F(opt) - F(x1)), x1 the first pick (>= 1: it holds)."""
    rng = np.random.default_rng(seed)
    exact, worst_norm, worst_bound = 0, math.inf, math.inf
    for _ in range(n_cases):
        N = int(rng.integers(4, 9))
        k = int(rng.integers(2, min(N, 5) + 1))
        G = int(rng.integers(2, 5))
        Q = rng.dirichlet(np.full(G, 0.5), size=N)
        p = rng.dirichlet(np.ones(G))
        s = rng.random(N)
        lam = float(rng.random())
        picks = cal.calibrated_greedy(
            relevance=torch.tensor(s)[None], item_categories=torch.tensor(Q)[None],
            target=torch.tensor(p)[None], lam=lam, alpha=alpha, max_length=k,
        )[0].tolist()
        subsets = list(itertools.combinations(range(N), k))
        values = {c: _objective(p, Q, s, c, lam, alpha) for c in subsets}
        best, low = max(values.values()), min(values.values())
        got = _objective(p, Q, s, picks, lam, alpha)
        exact += got >= best - 1e-9
        if best - low > 1e-12:
            worst_norm = min(worst_norm, (got - low) / (best - low))
        g1 = _modular_log_form(p, Q, s, picks[:1], lam, alpha)
        g_best = max(_modular_log_form(p, Q, s, c, lam, alpha) for c in subsets)
        if g_best - g1 > 1e-12:
            ratio = (_modular_log_form(p, Q, s, picks, lam, alpha) - g1) / (g_best - g1)
            worst_bound = min(worst_bound, ratio / ((1 - 1 / math.e) * (1 - 1 / k)))
    return {"n_cases": n_cases, "seed": seed, "alpha": alpha,
            "greedy_optimal_share": exact / n_cases, "worst_normalised_ratio": worst_norm,
            "one_minus_one_over_e": 1 - 1 / math.e, "worst_bound_ratio": worst_bound}


# --------------------------------------------------------------------------------------------------


def summarize(paths: list[str], k: int = 10) -> dict:
    """Mean ± sd over runs of the sweep with different seeds (the first-stage ranker is what the
    seed changes): the initial ranking and every lambda all runs share; printed, and written beside
    the first run as tradeoff_<data>_seeds.json."""
    runs = read_runs(paths)
    lams = [r["lambda"] for r in runs[0]["Calibration"]]
    shared = [lam for lam in lams
              if all(any(r["lambda"] == lam for r in run["Calibration"]) for run in runs)]
    out = {"data": runs[0]["data"], "n_lists": runs[0]["n_lists"], "n": len(runs),
           "seeds": [run.get("seed", 0) for run in runs], "runs": [str(p) for p in paths]}
    out["initial"], out["initial_sd"] = mean_sd([run["initial"] for run in runs])
    out["Calibration"] = []
    print(f"{out['data']}: mean ± sd over {len(runs)} seeds {out['seeds']}")
    print("initial ranking  " + pm_line(out["initial"], out["initial_sd"]))
    for lam in shared:
        m, sd = mean_sd([next(r for r in run["Calibration"] if r["lambda"] == lam) for run in runs],
                        skip=("lambda", "seconds"))
        out["Calibration"].append({"lambda": lam, **m, "sd": sd})
        print(f"Calibration lambda={lam:<5} " + pm_line(m, sd))
    write_seeds_summary(paths[0], out)
    return out


def _print_run(saved: dict, k: int) -> None:
    print(f"{saved['data']}, {saved['n_lists']:,} lists; initial ranking: "
          + metric_line(saved["initial"]))
    for r in saved["Calibration"]:
        print(f"Calibration lambda={r['lambda']:<5} " + metric_line(r))
    for name, knob in (("DPP", "theta"), ("MMR", "lambda")):
        for r in saved.get(name, []):
            print(f"{name} {knob}={r[knob]:<5} " + metric_line(r))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, epochs=3, batch_size=512, lr=3e-3)  # of the first-stage ranker
    p.add_argument("--replot", default=None, help="redraw from a saved tradeoff json and exit")
    p.add_argument("--summary", nargs="+", default=None, metavar="JSON",
                   help="mean ± sd over these runs (one per seed) at the lambdas they share")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="where the figure goes (default assets/Calibration/tradeoff_<data>.png)")
    p.add_argument("--candidates", type=positive_int, default=50)
    p.add_argument("--k", type=positive_int, default=10)
    p.add_argument("--similarity", choices=["category", "embedding", "mixed"], default="mixed",
                   help="item features of the DPP and MMR points (as in rerank_tradeoff)")
    p.add_argument("--lams", type=fraction_list_arg(),
                   default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.99")
    p.add_argument("--alpha", type=float, default=0.01, help="alpha of Eq. (4), in (0, 1]")
    p.add_argument("--half-life", type=float, default=None,
                   help="recency half-life of the history weights, in items (default: equal)")
    p.add_argument("--no-peers", action="store_true", help="skip the DPP and MMR points")
    p.add_argument("--chunk", type=positive_int, default=512)
    p.add_argument("--greedy-check", type=positive_int, default=None, metavar="N",
                   help="greedy vs brute force on N small random lists, then exit")
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates "
                f"{args.candidates}")
    if not 0 < args.alpha <= 1:
        p.error(f"--alpha {args.alpha}: expected a number in (0, 1] (the paper: 0.01)")
    if args.half_life is not None and not args.half_life > 0:
        p.error(f"--half-life {args.half_life}: expected a positive number of items")
    if args.summary:
        summarize(args.summary, args.k)
        return
    if args.replot:
        try:
            saved = json.loads(Path(args.replot).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"--replot {args.replot}: {e}; expected a tradeoff json that this "
                            "module wrote (assets/Calibration/results/tradeoff_<data>.json)") from None
        _print_run(saved, args.k)
        tag = Path(args.replot).stem.removeprefix("tradeoff_")
        print(f"wrote {plot(saved, tag, args.k, path=args.plot)}")
        return
    cpu_setup(args.threads)
    set_seed(args.seed)
    cal = load_model_file(MODEL_DIR / "model.py", "calibration_model")
    if args.greedy_check:
        t0 = time.perf_counter()
        res = greedy_check(cal, args.greedy_check, seed=args.seed, alpha=args.alpha)
        out = ROOT / "assets" / "Calibration" / "results" / "greedy_vs_bruteforce.json"
        write_json_atomic(out, {**res, "wall_seconds": time.perf_counter() - t0})
        print(json.dumps(res, indent=1))
        print(f"wrote {out}")
        return

    t0 = time.perf_counter()
    data, lists, feats = first_stage(args, demo="the calibration trade-off")
    ids, n_categories, _ = category_ids(data)
    U = len(lists["items"])
    evaluate = list_evaluator(lists, data, cal, ids, n_categories, k=args.k, alpha=args.alpha,
                              half_life=args.half_life, chunk=args.chunk)
    base = evaluate(initial_positions(U, args.k))
    print("initial ranking: " + metric_line(base), flush=True)
    curves = {"Calibration": []}
    for lam in args.lams:
        t = time.perf_counter()
        pos = rerank_calibrated(cal, lists, ids, n_categories, lam=lam, alpha=args.alpha,
                                half_life=args.half_life, k=args.k, chunk=args.chunk)
        m = evaluate(pos)
        curves["Calibration"].append({"lambda": lam, **m, "seconds": time.perf_counter() - t})
        print(f"Calibration lambda={lam:<5} " + metric_line(m), flush=True)
    if not args.no_peers:  # the diversifiers at their demo defaults, on the same lists
        here = model_dir("Re-ranking", "DPP")
        dpp_demo = load_model_file(here / "demo.py", "dpp_demo")
        dpp = load_model_file(here / "model.py", "dpp_model")
        mmr = load_model_file(model_dir("Re-ranking", "MMR") / "model.py", "mmr_model")
        t = time.perf_counter()
        pos = dpp_demo.rerank(dpp, lists, feats, theta=0.95, k=args.k, window=None, chunk=1024)
        m = evaluate(pos)
        curves["DPP"] = [{"theta": 0.95, **m, "seconds": time.perf_counter() - t}]
        print("DPP theta=0.95  " + metric_line(m), flush=True)
        t = time.perf_counter()
        items = torch.from_numpy(lists["items"])
        scores = RL.minmax_scores(torch.from_numpy(lists["init_scores"]).double())
        m = evaluate(mmr_positions(mmr, scores, feats, items, lam=0.9, k=args.k, chunk=1024))
        curves["MMR"] = [{"lambda": 0.9, **m, "seconds": time.perf_counter() - t}]
        print("MMR lambda=0.9  " + metric_line(m), flush=True)

    tag = "beauty" if "Beauty" in args.data else args.data.split(":")[0]
    result = {"data": args.data, "n_lists": U, "alpha": args.alpha, "half_life": args.half_life,
              "n_categories": n_categories, "similarity": args.similarity, "initial": base,
              **curves}
    result["seed"] = args.seed
    suffix = "" if args.seed == 0 else f"_seed{args.seed}"
    png = plot(result, tag, args.k, path=args.plot) if args.seed == 0 or args.plot else "no figure"
    out = ROOT / "assets" / "Calibration" / "results" / f"tradeoff_{tag}{suffix}.json"
    write_json_atomic(out, {**result, "wall_seconds": time.perf_counter() - t0})
    print(f"wrote {png} and {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
