# %% [markdown]
# # Calibrated re-ranking demo (Steck, RecSys 2018)
#
# A first-stage ranker proposes 50 candidates per user; the calibrated re-ranker picks 10 of them so
# that the list's category mix q(g|u) stays close to the mix p(g|u) of the user's history, trading
# the ranker's scores against the miscalibration C_KL (`model.py`). We compare with the unmodified
# initial ranking on the same lists: NDCG@10 / Recall@10 of the held-out item, ILD@10, category
# coverage@10 and C_KL@10, and sweep lambda for the relevance-calibration trade-off.
#
# CPU command (synthetic default; about 20 s wall on a loaded 2-core machine, 1 thread):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/Calibration/demo.py"
#
# The note's figure (one user's history mix against the list's mix before and after; ~20 s):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/Calibration/demo.py" \
#         --plot-mix assets/Calibration/mix_synthetic.png \
#         --out assets/Calibration/results/synthetic.json
#
# Save the ranker, then load it (training skipped, the same metrics) and show one user's lists:
#
#     .venv/bin/python "Classic Models/Re-ranking/Calibration/demo.py" --save /tmp/cal.pt
#     .venv/bin/python "Classic Models/Re-ranking/Calibration/demo.py" --load /tmp/cal.pt \
#         --recommend U00007
#
# Beauty (the S3-Rec attribute ids as categories):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/Calibration/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --sweep ""

# %%
import argparse
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets import DataError
from Datasets import rerank_lists as RL
from Utils.demo_io import user_row
from Utils.io import add_common_args, load_model_file, model_dir, positive_int, print_result
from Utils.loops import calibration_tradeoff as CT
from Utils.loops import first_stage as FS
from Utils.loops.rerank_eval import (
    add_rerank_io_args,
    check_output_paths,
    fraction_arg,
    fraction_list_arg,
    initial_positions,
    load_rerank,
    save_rerank,
    show_reranked_list,
)
from Utils.training import cpu_setup, pick_device, set_seed

MODEL_DIR = model_dir("Re-ranking", "Calibration")  # model.py's folder (a notebook has no __file__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Calibrated re-ranking demo (Steck, 2018)")
    add_common_args(
        p, epochs=3, batch_size=512, lr=3e-3
    )  # epochs/lr/batch: of the first-stage ranker
    add_rerank_io_args(p)  # --save/--load: the ranker (no weights here), --recommend USER
    p.add_argument(
        "--candidates", type=positive_int, default=50, help="N: candidates per list from the ranker"
    )
    p.add_argument("--k", type=positive_int, default=10, help="length of the re-ranked list")
    p.add_argument(
        "--lam", type=fraction_arg(), default=0.5, help="lambda in [0, 1]: 0 = relevance only"
    )
    p.add_argument("--alpha", type=float, default=0.01, help="alpha of Eq. (4), in (0, 1]")
    p.add_argument(
        "--half-life",
        type=float,
        default=None,
        help="recency half-life of the history weights w_{u,i}, in items (default: equal weights)",
    )
    p.add_argument(
        "--sweep",
        type=fraction_list_arg(),
        default="0,0.2,0.4,0.6,0.8,0.9,0.99",
        help="lambda values for the trade-off curve ('' to skip)",
    )
    p.add_argument("--chunk", type=positive_int, default=512, help="lists per re-ranking batch")
    p.add_argument(
        "--plot-mix",
        metavar="PATH",
        default=None,
        help="PNG: one user's history mix p(g|u) against the list's mix before and after",
    )
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates "
                f"{args.candidates}")
    if not 0 < args.alpha <= 1:
        p.error(f"--alpha {args.alpha}: expected a number in (0, 1] (the paper: 0.01)")
    if args.half_life is not None and not args.half_life > 0:
        p.error(f"--half-life {args.half_life}: expected a positive number of items (or no flag)")
    return args


# %% [markdown]
# ## One user: the history's category mix and the list's mix, before and after (the note's figure)

# %%
def user_mixes(cal, lists, ids, n_categories, u: int, before, after, *, alpha, half_life):
    """p(g|u), q(g|u) of the initial top k and of the calibrated top k for list u, with the two
    C_KL values: numpy arrays over the G category columns."""
    q_items, q_hist = CT.calibration_inputs(cal, lists, ids, n_categories, slice(u, u + 1))
    model = cal.CalibratedReranker(alpha=alpha, half_life=half_life)
    p = model.target(q_hist.double())  # (1, G) Eq. (1)
    out = {"p": p[0].numpy()}
    for name, pos in (("before", before), ("after", after)):
        q = cal.list_distribution(q_items.double(), torch.as_tensor(pos[None], dtype=torch.long))
        out[name] = q[0].numpy()
        out[f"kl_{name}"] = float(cal.miscalibration(p, q, alpha)[0])
    return out


def shown_categories(mix: dict, top: int) -> list[int]:
    """The categories of any of the three mixes, the history's largest shares first."""
    order = np.argsort(-(mix["p"] + 1e-3 * (mix["before"] + mix["after"])), kind="stable")
    return [int(g) for g in order if mix["p"][g] + mix["before"][g] + mix["after"][g] > 0][:top]


def print_mixes(mix: dict, names: list[str], top: int = 8) -> dict:
    """The history's mix and both lists' mixes, one category per line (the largest shares first);
    returns them as a dict for the RESULT json."""
    shown = shown_categories(mix, top)
    print(f"\n{'category':28s} history p(g|u)  initial q(g|u)  calibrated q(g|u)")
    for g in shown:
        print(f"{names[g][:28]:28s} {mix['p'][g]:14.2f}  {mix['before'][g]:14.2f}  "
              f"{mix['after'][g]:17.2f}")
    print(f"C_KL: initial top-k {mix['kl_before']:.3f}, calibrated top-k {mix['kl_after']:.3f}")
    return {"categories": [names[g] for g in shown],
            **{key: [round(float(mix[key][g]), 4) for g in shown]
               for key in ("p", "before", "after")},
            "kl_before": mix["kl_before"], "kl_after": mix["kl_after"]}


def plot_mix(path, mix: dict, names: list[str], *, lam: float, top: int = 12) -> None:
    """Grouped bars per category: the history's mix, the initial top k's, the calibrated top k's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = shown_categories(mix, top)
    x = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(max(7, 0.8 * len(shown) + 3), 4.5), dpi=120)
    bars = (("history p(g|u), Eq. (1)", "p", "tab:gray"),
            (f"initial top 10 q(g|u): C_KL = {mix['kl_before']:.2f}", "before", "tab:orange"),
            (f"calibrated top 10, λ = {lam}: C_KL = {mix['kl_after']:.2f}", "after", "tab:blue"))
    for k, (label, key, colour) in enumerate(bars):
        ax.bar(x + (k - 1) * 0.27, mix[key][shown], width=0.27, color=colour, label=label)
    ax.set_xticks(x, [names[g][:18] for g in shown], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share of the category")
    ax.set_title("One user: the category mix of the history and of the top 10, before and after")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")


# %% [markdown]
# ## The demo: candidate lists from a first-stage ranker, calibration, metrics beside the initial
# ranking

# %%
def main(argv=None):
    args = parse_args(argv)
    cpu_setup(args.threads)
    set_seed(args.seed)
    check_output_paths(args)  # --save / --out: fail now, not after training
    device = pick_device(args.device)  # where the greedy runs; the small ranker trains on the CPU
    cal = load_model_file(MODEL_DIR / "model.py", "calibration_model")

    # -- data, split and the first-stage ranker (trained on the training part only, or --load)
    data = Datasets.load(args.data, expect="interactions", demo="the calibration demo")
    if not RL.has_categories(data):
        raise DataError(f"{data.name} has item ids only: calibration needs item categories or "
                        "attributes; expected data with them (e.g. a seqtxt file with its "
                        "*_item2attributes.json beside it)")
    ids, n_categories, names = CT.category_ids(data)
    split = Datasets.leave_one_out(data)
    print(split)
    row = user_row(split, data, args.recommend) if args.recommend else None
    t0 = time.perf_counter()
    if args.load:
        scorer, saved = load_rerank(args.load, data=data, reranker="Calibration")
        epochs = saved["extra"]["epochs"]
    else:
        scorer = FS.train_scorer(
            split, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        epochs = args.epochs
    lists = FS.candidate_lists(split, scorer, stage="test", n_candidates=args.candidates)
    ranker_seconds = time.perf_counter() - t0
    U = len(lists["items"])
    knobs = dict(alpha=args.alpha, half_life=args.half_life)
    evaluate = CT.list_evaluator(lists, data, cal, ids, n_categories, k=args.k, chunk=args.chunk,
                                 **knobs)

    # -- re-rank every list (Eq. (6), greedy)
    t1 = time.perf_counter()
    positions = CT.rerank_calibrated(cal, lists, ids, n_categories, lam=args.lam, k=args.k,
                                     chunk=args.chunk, device=device, **knobs)
    rerank_seconds = time.perf_counter() - t1
    base = evaluate(initial_positions(U, args.k))
    ours = evaluate(positions)

    # -- one user (--recommend USER, else the first whose held-out item is in the list): history,
    # initial top-k and calibrated top-k side by side, then the three category mixes
    u = int(np.argmax(lists["labels"].sum(1) > 0)) if row is None else row
    show_reranked_list(data, lists, positions, args.k,
                       f"calibrated top-{args.k} (lambda={args.lam})", u=u)
    mix = user_mixes(cal, lists, ids, n_categories, u, np.arange(args.k), positions[u], **knobs)
    example = {"user": str(data.user_raw[int(lists["user"][u])]), **print_mixes(mix, names)}
    if args.plot_mix:
        plot_mix(args.plot_mix, mix, names, lam=args.lam)

    # -- trade-off sweep
    sweep = []
    for lam in args.sweep:
        m = evaluate(CT.rerank_calibrated(cal, lists, ids, n_categories, lam=lam, k=args.k,
                                          chunk=args.chunk, device=device, **knobs))
        sweep.append({"lambda": lam, **m})
        print(f"lambda={lam:<5} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))

    print(f"\ninitial ranking: {base}\ncalibrated lambda={args.lam}: {ours}")
    if args.save:  # calibration has no weights: the ranker that made the lists, settings, item ids
        save_rerank(
            args.save, scorer=scorer, data=data, reranker="Calibration", overwrite=args.overwrite,
            settings={"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed},
            epochs=epochs,
        )
        print(f"saved {args.save}")
    # the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
    print_result(
        model="Calibration",
        data=args.data,
        protocol=(
            f"test lists: top-{args.candidates} of a history-mean item-embedding ranker "
            f"(seen items excluded), re-ranked to {args.k}; label = held-out last item; "
            f"p(g|u) from the last 20 history items, alpha={args.alpha}, "
            f"half_life={args.half_life}, scores min-max per list"
        ),
        metrics=ours,
        baseline={"name": "initial ranking", "metrics": base},
        train_seconds=ranker_seconds,
        eval_seconds=rerank_seconds,
        epochs=epochs,
        params=0,
        out=args.out,
        lam=args.lam,
        sweep=sweep,
        n_lists=U,
        example=example,
        **({"loaded": args.load} if args.load else {}),
    )


# %% [markdown]
# ## Run
# As a script, the flags above apply; in a notebook the kernel's own arguments are ignored and the
# defaults run (edit `main([...])` to pass flags, e.g. `main(["--lam", "0.8", "--sweep", ""])`).

# %%
if __name__ == "__main__":
    main()
