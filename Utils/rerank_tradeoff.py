"""Relevance-diversity trade-off of DPP (theta sweep) and MMR (lambda sweep) on the same lists.

Both re-rankers get the same candidate lists (top-50 of the first-stage ranker, test stage), the
same min-max relevance and the same item features (cosine similarity), so the curves compare the
selection rules and nothing else. Plots NDCG@10 against ILD@10 with the initial ranking as a point.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.rerank_tradeoff   # ~20-40 s
    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.rerank_tradeoff \
        --data seqtxt:../shared/data/amazon-beauty/Beauty.txt   # 31 min on a loaded machine

Writes assets/DPP/tradeoff_<data>.png and assets/DPP/results/tradeoff_<data>.json.
`--replot assets/DPP/results/tradeoff_<data>.json` redraws the figure from a saved run.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets import rerank_lists as RL
from Utils.io import load_model_file
from Utils.plotting import plot_scatter
from Utils.rerank_eval import initial_positions, rerank_metrics
from Utils.training import cpu_setup, set_seed

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "Classic Models" / "Re-ranking" / "DPP"


def plot(result: dict, tag: str, k: int = 10) -> Path:
    """NDCG@k against ILD@k for every sweep point, plus the initial ranking."""
    ndcg, ild = f"NDCG@{k}", f"ILD@{k}"
    points = {
        name: ([r[ild] for r in result[name]], [r[ndcg] for r in result[name]])
        for name in ("DPP", "MMR")
    }
    points["initial ranking"] = ([result["initial"][ild]], [result["initial"][ndcg]])
    return plot_scatter(
        points,
        ROOT / "assets" / "DPP" / f"tradeoff_{tag}.png",
        xlabel=ild,
        ylabel=ndcg,
        title=f"{tag}: DPP (theta sweep) vs MMR (lambda sweep)",
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--replot", default=None, help="redraw from a saved tradeoff json and exit")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the first-stage ranker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--similarity", choices=["category", "embedding", "mixed"], default="mixed")
    p.add_argument("--thetas", default="0,0.3,0.5,0.6,0.7,0.8,0.9,0.95,0.98,0.99")
    p.add_argument("--lams", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95")
    p.add_argument("--chunk", type=int, default=1024)
    args = p.parse_args(argv)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        tag = Path(args.replot).stem.removeprefix("tradeoff_")
        print(f"wrote {plot(saved, tag, args.k)}")
        return
    cpu_setup()
    set_seed(args.seed)
    demo = load_model_file(HERE / "demo.py", "dpp_demo")  # its rerank(); main() does not run
    dpp = load_model_file(HERE / "model.py", "dpp_model")
    mmr = load_model_file(HERE.parent / "MMR" / "model.py", "mmr_model")

    t0 = time.perf_counter()
    data = Datasets.load(args.data)
    split = Datasets.leave_one_out(data)
    scorer = RL.train_scorer(split, epochs=args.epochs, seed=args.seed)
    lists = RL.candidate_lists(split, scorer, stage="test", n_candidates=args.candidates)
    feats = RL.similarity_features(args.similarity, data, scorer)
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

    def run_mmr(lam):
        model = mmr.MMRReranker(lam=lam, max_length=args.k)
        out = [
            model(
                scores=scores[s : s + args.chunk],
                item_vectors=feats[items[s : s + args.chunk]].double(),
            )
            for s in range(0, U, args.chunk)
        ]
        return torch.cat(out).numpy()

    base = evaluate(initial_positions(U, args.k))
    print(f"initial ranking: {base}")
    curves = {"DPP": [], "MMR": []}
    for theta in [float(x) for x in args.thetas.split(",")]:
        t = time.perf_counter()
        pos = demo.rerank(dpp, lists, feats, theta=theta, k=args.k, window=None, chunk=args.chunk)
        m = evaluate(pos)
        curves["DPP"].append({"theta": theta, **m, "seconds": time.perf_counter() - t})
        print(
            f"DPP theta={theta:<5} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()), flush=True
        )
    for lam in [float(x) for x in args.lams.split(",")]:
        t = time.perf_counter()
        m = evaluate(run_mmr(lam))
        curves["MMR"].append({"lambda": lam, **m, "seconds": time.perf_counter() - t})
        print(f"MMR lambda={lam:<5} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()), flush=True)

    tag = "beauty" if "Beauty" in args.data else args.data.split(":")[0]
    result = {
        "data": args.data,
        "similarity": args.similarity,
        "n_lists": U,
        "initial": base,
        **curves,
    }
    png = plot(result, tag, args.k)
    out = ROOT / "assets" / "DPP" / "results" / f"tradeoff_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({**result, "wall_seconds": time.perf_counter() - t0}, indent=2) + "\n"
    )
    print(f"wrote {png} and {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
