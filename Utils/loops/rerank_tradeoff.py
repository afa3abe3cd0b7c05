"""Relevance-diversity trade-off of DPP (theta sweep) and MMR (lambda sweep) on the same lists.

Both re-rankers get the same candidate lists (top-50 of the first-stage ranker, test stage), the
same min-max relevance and the same item features (cosine similarity), so the curves compare the
selection rules and nothing else. Plots NDCG@10 against ILD@10, every point labelled with its theta
(DPP) or lambda (MMR), with the initial ranking as a point.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.rerank_tradeoff   # ~10-40 s
    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.loops.rerank_tradeoff \
        --data seqtxt:../shared/data/amazon-beauty/Beauty.txt   # 31 min on a loaded machine

Writes assets/DPP/tradeoff_<data>.png and assets/DPP/results/tradeoff_<data>.json.
`--replot assets/DPP/results/tradeoff_<data>.json` prints a saved run's points and redraws its
figure in seconds, without training or re-ranking.
"""

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
from Utils.loops import first_stage as FS
from Utils.loops.rerank_eval import fraction_list_arg, initial_positions, rerank_metrics
from Utils.plotting import plot_scatter
from Utils.training import cpu_setup, set_seed


def metric_line(metrics: dict) -> str:
    """`NDCG@10=0.1550  Recall@10=...` for the metrics of one point (knob and timing left out)."""
    return "  ".join(
        f"{k}={v:.4f}" for k, v in metrics.items() if k not in ("theta", "lambda", "seconds")
    )


def read_runs(paths: list[str]) -> list[dict]:
    """The trade-off jsons of one sweep run with several seeds (`--summary`); a file that cannot be
    read, or runs on different data, is a one-line DataError."""
    try:
        runs = [json.loads(Path(p).read_text()) for p in paths]
    except (OSError, ValueError) as e:
        raise DataError(f"--summary: {e}; expected tradeoff jsons that this module wrote") from None
    if len({run["data"] for run in runs}) != 1:
        raise DataError("--summary: the runs are on different data; expected one sweep per seed")
    return runs


def mean_sd(rows: list[dict], skip=("seconds",)) -> tuple[dict, dict]:
    """Mean and sample sd (ddof 1) of every metric the rows share, knobs and timings left out."""
    keys = [k for k in rows[0] if k not in skip and not k.endswith("seconds")]
    return ({k: float(np.mean([r[k] for r in rows])) for k in keys},
            {k: float(np.std([r[k] for r in rows], ddof=1)) for k in keys})


def pm_line(m: dict, sd: dict) -> str:
    """`NDCG@10=0.0250±0.0005  ...` for a mean and its sd."""
    return "  ".join(f"{k}={m[k]:.4f}±{sd[k]:.4f}" for k in m)


def write_seeds_summary(first: str, out: dict) -> Path:
    """The summary beside the first run: tradeoff_<data>_seeds.json."""
    path = Path(first)
    tag = path.stem.removeprefix("tradeoff_").split("_seed")[0]
    dest = path.with_name(f"tradeoff_{tag}_seeds.json")
    write_json_atomic(dest, out)
    print(f"wrote {dest}")
    return dest


def tradeoff_points(result: dict, k: int = 10) -> tuple[dict, dict]:
    """(points, labels) of the figure: NDCG@k against ILD@k per sweep point, plus the initial
    ranking; every DPP point labelled with its theta, every MMR point with its lambda."""
    ndcg, ild = f"NDCG@{k}", f"ILD@{k}"
    points, labels = {}, {}
    for name, knob, symbol in (("DPP", "theta", "θ"), ("MMR", "lambda", "λ")):
        key = f"{name} ({symbol} sweep)"
        points[key] = ([r[ild] for r in result[name]], [r[ndcg] for r in result[name]])
        labels[key] = [f"{symbol}={r[knob]:g}" for r in result[name]]
    points["initial ranking"] = ([result["initial"][ild]], [result["initial"][ndcg]])
    return points, labels


def plot(result: dict, tag: str, k: int = 10, path: Path | None = None) -> Path:
    """NDCG@k against ILD@k for every sweep point (each labelled with its theta / lambda), plus
    the initial ranking; `path` defaults to assets/DPP/tradeoff_<tag>.png."""
    points, labels = tradeoff_points(result, k)
    return plot_scatter(
        points,
        path or ROOT / "assets" / "DPP" / f"tradeoff_{tag}.png",
        xlabel=f"ILD@{k} (diversity)",
        ylabel=f"NDCG@{k} (relevance)",
        title=f"{tag}: DPP (θ sweep) vs MMR (λ sweep), {result['n_lists']:,} lists",
        point_labels=labels,
        figsize=(8, 5.5),
    )


def first_stage(args, *, demo: str):
    """(data, candidate lists, item features) of the trade-off runs: the first-stage ranker trained
    with args.epochs / batch_size / lr / seed, its top args.candidates test lists, and the item
    features of args.similarity. The calibration sweep (`Utils.loops.calibration_tradeoff`) calls
    it with the same arguments, so both modules re-rank the same lists."""
    data = Datasets.load(args.data, expect="interactions", demo=demo)
    if not RL.has_categories(data):
        raise DataError(f"{args.data}: the trade-off needs item categories or attributes (ILD, "
                        "calibration); expected data with them (e.g. a seqtxt file with its "
                        "*_item2attributes.json beside it)")
    split = Datasets.leave_one_out(data)
    scorer = FS.train_scorer(split, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed)
    lists = FS.candidate_lists(split, scorer, stage="test", n_candidates=args.candidates)
    feats = FS.similarity_features(args.similarity, data, scorer)
    return data, lists, feats


def mmr_positions(mmr, scores, feats, items, *, lam: float, k: int, chunk: int) -> np.ndarray:
    """MMR's picks (U, k) for every list: `scores` (U, N) min-max float64, `feats` the item
    features, `items` (U, N) the candidate ids; `chunk` lists at a time."""
    model = mmr.MMRReranker(lam=lam, max_length=k)
    out = [
        model(scores=scores[s : s + chunk], item_vectors=feats[items[s : s + chunk]].double())
        for s in range(0, len(items), chunk)
    ]
    return torch.cat(out).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    add_common_args(p, epochs=3, batch_size=512, lr=3e-3)  # of the first-stage ranker
    p.add_argument("--replot", default=None, help="redraw from a saved tradeoff json and exit")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="where the figure goes (default assets/DPP/tradeoff_<data>.png)")
    p.add_argument("--candidates", type=positive_int, default=50)
    p.add_argument("--k", type=positive_int, default=10)
    p.add_argument("--similarity", choices=["category", "embedding", "mixed"], default="mixed")
    p.add_argument("--thetas", type=fraction_list_arg(open_top=True),
                   default="0,0.3,0.5,0.6,0.7,0.8,0.9,0.95,0.98,0.99")
    p.add_argument("--lams", type=fraction_list_arg(), default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95")
    p.add_argument("--chunk", type=positive_int, default=1024)
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates {args.candidates}")
    if args.replot:
        try:
            saved = json.loads(Path(args.replot).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"--replot {args.replot}: {e}; expected a tradeoff json that this "
                            "module wrote (assets/DPP/results/tradeoff_<data>.json)") from None
        tag = Path(args.replot).stem.removeprefix("tradeoff_")
        print(f"{saved['data']}, {saved['n_lists']:,} lists; initial ranking: "
              + metric_line(saved["initial"]))
        for name, knob in (("DPP", "theta"), ("MMR", "lambda")):
            for r in saved[name]:
                print(f"{name} {knob}={r[knob]:<5} " + metric_line(r))
        print(f"wrote {plot(saved, tag, args.k, path=args.plot)}")
        return
    cpu_setup(args.threads)
    set_seed(args.seed)
    here = model_dir("Re-ranking", "DPP")
    demo = load_model_file(here / "demo.py", "dpp_demo")  # its rerank(); main() does not run
    dpp = load_model_file(here / "model.py", "dpp_model")
    mmr = load_model_file(model_dir("Re-ranking", "MMR") / "model.py", "mmr_model")

    t0 = time.perf_counter()
    data, lists, feats = first_stage(args, demo="the DPP-vs-MMR trade-off")
    cats, cat_sets = RL.item_categories(data), RL.item_category_sets(data)
    U = len(lists["items"])
    ones = np.ones(U)
    items = torch.from_numpy(lists["items"])
    scores = RL.minmax_scores(torch.from_numpy(lists["init_scores"]).double())

    def evaluate(positions):
        return rerank_metrics(
            positions,
            lists["items"],
            lists["labels"],
            k=args.k,
            categories=cats,
            category_sets=cat_sets,
            n_relevant=ones,
        )

    base = evaluate(initial_positions(U, args.k))
    print(f"initial ranking: {base}")
    curves = {"DPP": [], "MMR": []}
    for theta in args.thetas:
        t = time.perf_counter()
        pos = demo.rerank(dpp, lists, feats, theta=theta, k=args.k, window=None, chunk=args.chunk)
        m = evaluate(pos)
        curves["DPP"].append({"theta": theta, **m, "seconds": time.perf_counter() - t})
        print(
            f"DPP theta={theta:<5} " + metric_line(m), flush=True
        )
    for lam in args.lams:
        t = time.perf_counter()
        m = evaluate(mmr_positions(mmr, scores, feats, items, lam=lam, k=args.k, chunk=args.chunk))
        curves["MMR"].append({"lambda": lam, **m, "seconds": time.perf_counter() - t})
        print(f"MMR lambda={lam:<5} " + metric_line(m), flush=True)

    tag = "beauty" if "Beauty" in args.data else args.data.split(":")[0]
    result = {
        "data": args.data,
        "similarity": args.similarity,
        "n_lists": U,
        "initial": base,
        **curves,
    }
    png = plot(result, tag, args.k, path=args.plot)
    out = ROOT / "assets" / "DPP" / "results" / f"tradeoff_{tag}.json"
    write_json_atomic(out, {**result, "wall_seconds": time.perf_counter() - t0})
    print(f"wrote {png} and {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
