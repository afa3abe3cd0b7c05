# %% [markdown]
# # Constrained re-ranking demo (Geyik, Ambler, Kenthapadi, KDD 2019)
#
# A first-stage ranker proposes 50 candidates per user; the constrained re-ranker picks 10 of them
# so that EVERY prefix of the list holds at least floor(q k) long-tail items (and at most
# ceil(q k)): a minimum share of the catalogue's long tail, the business form of the paper's
# minimum representation (`model.py`, DetGreedy / DetCons / DetRelaxed). The head is the 10% of
# items with the most training interactions. We compare with the unmodified initial ranking on the
# same lists: NDCG@10 / Recall@10 of the held-out item, the long-tail share Tail@10, the share of
# lists meeting every prefix floor (Satisfied@10), exposure Gini@10, and sweep the quota q.
#
# CPU command (synthetic default; about 30 s wall on a loaded 2-core machine, 1 thread):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/Constrained/demo.py"
#
# The note's figure (one user's cumulative long-tail count before and after against the floor):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/Constrained/demo.py" \
#         --plot-prefix assets/Constrained/prefix_synthetic.png \
#         --out assets/Constrained/results/synthetic.json
#
# Save the ranker, then load it (training skipped, the same metrics) and show one user's lists:
#
#     .venv/bin/python "Classic Models/Re-ranking/Constrained/demo.py" --save /tmp/con.pt
#     .venv/bin/python "Classic Models/Re-ranking/Constrained/demo.py" --load /tmp/con.pt \
#         --recommend U00007

# %%
import argparse
import time
from pathlib import Path

import numpy as np

import Datasets
from Utils.demo_io import user_row
from Utils.io import add_common_args, load_model_file, model_dir, positive_int, print_result
from Utils.loops import constrained_tradeoff as CT
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

MODEL_DIR = model_dir("Re-ranking", "Constrained")  # model.py's folder (a notebook has no __file__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Constrained re-ranking demo (Geyik et al., 2019)")
    add_common_args(
        p, epochs=3, batch_size=512, lr=3e-3
    )  # epochs/lr/batch: of the first-stage ranker
    add_rerank_io_args(p)  # --save/--load: the ranker (no weights here), --recommend USER
    p.add_argument(
        "--candidates", type=positive_int, default=50, help="N: candidates per list from the ranker"
    )
    p.add_argument("--k", type=positive_int, default=10, help="length of the re-ranked list")
    p.add_argument("--algorithm", choices=CT.ALGORITHMS, default="det_greedy",
                   help="Algorithm 1's rule once every floor is met (the paper deployed det_greedy)")
    p.add_argument("--quota", type=fraction_arg(), default=0.3,
                   help="q in [0, 1]: every prefix k holds >= floor(q k) long-tail items")
    p.add_argument("--head-fraction", type=fraction_arg(), default=0.1,
                   help="share of the catalogue (the most interacted items) that is the head")
    p.add_argument(
        "--sweep",
        type=fraction_list_arg(),
        default="0.1,0.2,0.3,0.4,0.5",
        help="quotas for the price-of-the-constraint curve ('' to skip)",
    )
    p.add_argument("--chunk", type=positive_int, default=512, help="lists per re-ranking batch")
    p.add_argument(
        "--plot-prefix",
        metavar="PATH",
        default=None,
        help="PNG: one user's cumulative long-tail count along the list, before and after",
    )
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates "
                f"{args.candidates}")
    if not 0 < args.head_fraction < 1:
        p.error(f"--head-fraction {args.head_fraction}: expected a number in (0, 1)")
    return args


# %% [markdown]
# ## One user: the long-tail count along the list against the floor (the note's figure)

# %%
def prefix_tail_counts(item_group, items_u, before, after) -> dict:
    """Cumulative long-tail count at each prefix k of the initial and of the constrained list."""
    g_before = item_group[items_u[before]]
    g_after = item_group[items_u[np.asarray(after)[np.asarray(after) >= 0]]]
    return {"before": np.cumsum(g_before).tolist(), "after": np.cumsum(g_after).tolist()}


def plot_prefix(path, counts: dict, quota: float, k: int, algorithm: str) -> None:
    """Steps: the cumulative long-tail count of the initial and of the constrained top k, with the
    floor floor(q k) and the ceiling ceil(q k) of every prefix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, k + 1)
    floor = np.floor(quota * x + 1e-5)
    ceil = np.ceil(quota * x - 1e-5)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.fill_between(x, floor, ceil, step="mid", color="tab:gray", alpha=0.2,
                    label=f"allowed: floor({quota} k) .. ceil({quota} k)")
    ax.step(x, counts["before"], where="mid", color="tab:orange", lw=2, label="initial ranking")
    ax.step(x, counts["after"], where="mid", color="tab:blue", lw=2, ls="--",
            label=f"constrained ({algorithm})")
    ax.set_xticks(x)
    ax.set_xlabel("prefix length k (positions 1..k)")
    ax.set_ylabel("long-tail items among the first k")
    ax.set_title("One user: the long-tail count of every prefix, before and after")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")


# %% [markdown]
# ## The demo: candidate lists from a first-stage ranker, the quota, metrics beside the initial
# ranking

# %%
def main(argv=None):
    args = parse_args(argv)
    cpu_setup(args.threads)
    set_seed(args.seed)
    check_output_paths(args)  # --save / --out: fail now, not after training
    device = pick_device(args.device)  # where the greedy runs; the small ranker trains on the CPU
    con = load_model_file(MODEL_DIR / "model.py", "constrained_model")

    # -- data, split, item groups and the first-stage ranker (trained on the training part only)
    data = Datasets.load(args.data, expect="interactions", demo="the constrained demo")
    split = Datasets.leave_one_out(data)
    print(split)
    item_group = CT.tail_groups(data, args.head_fraction)  # 0 = head, 1 = long tail
    row = user_row(split, data, args.recommend) if args.recommend else None
    t0 = time.perf_counter()
    if args.load:
        scorer, saved = load_rerank(args.load, data=data, reranker="Constrained")
        epochs = saved["extra"]["epochs"]
    else:
        scorer = FS.train_scorer(
            split, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        epochs = args.epochs
    lists = FS.candidate_lists(split, scorer, stage="test", n_candidates=args.candidates)
    ranker_seconds = time.perf_counter() - t0
    U = len(lists["items"])
    evaluate = CT.list_evaluator(lists, data, con, item_group, k=args.k)
    print(f"long-tail share: catalogue {item_group[1:].mean():.3f}, candidates "
          f"{item_group[lists['items']].mean():.3f}")

    # -- re-rank every list (Algorithm 1)
    t1 = time.perf_counter()
    positions, feasible, satisfied = CT.rerank_constrained(
        con, lists, item_group, quota=args.quota, algorithm=args.algorithm, k=args.k,
        chunk=args.chunk, device=device)
    rerank_seconds = time.perf_counter() - t1
    base = evaluate(initial_positions(U, args.k), args.quota)
    ours = {**evaluate(positions, args.quota), "Feasible": float(feasible.mean())}
    print(f"{int((~feasible).sum())} of {U} lists have too few long-tail candidates for the "
          f"floors (reported, best effort returned); {int(satisfied.sum())} lists meet every floor")

    # -- one user (--recommend USER, else the first whose held-out item is in the list)
    u = int(np.argmax(lists["labels"].sum(1) > 0)) if row is None else row
    show_reranked_list(data, lists, positions, args.k,
                       f"constrained top-{args.k} ({args.algorithm}, q={args.quota})", u=u)
    counts = prefix_tail_counts(item_group, lists["items"][u], np.arange(args.k), positions[u])
    print(f"long-tail count per prefix: initial {counts['before']}, constrained {counts['after']}")
    example = {"user": str(data.user_raw[int(lists["user"][u])]), **counts}
    if args.plot_prefix:
        plot_prefix(args.plot_prefix, counts, args.quota, args.k, args.algorithm)

    # -- the price of the constraint: a quota sweep
    sweep = []
    for q in args.sweep:
        pos, feas, _ = CT.rerank_constrained(con, lists, item_group, quota=q,
                                             algorithm=args.algorithm, k=args.k, chunk=args.chunk,
                                             device=device)
        m = {**evaluate(pos, q), "Feasible": float(feas.mean())}
        sweep.append({"quota": q, **m})
        print(f"q={q:<5} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))

    print(f"\ninitial ranking: {base}\nconstrained q={args.quota}: {ours}")
    if args.save:  # no weights: the ranker that made the lists, settings, item ids
        save_rerank(
            args.save, scorer=scorer, data=data, reranker="Constrained", overwrite=args.overwrite,
            settings={"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed},
            epochs=epochs,
        )
        print(f"saved {args.save}")
    # the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
    print_result(
        model="Constrained",
        data=args.data,
        protocol=(
            f"test lists: top-{args.candidates} of a history-mean item-embedding ranker "
            f"(seen items excluded), re-ranked to {args.k} by {args.algorithm}; label = held-out "
            f"last item; groups: head = top {args.head_fraction:g} of items by training "
            f"interactions, long tail = the rest; p = (1 - q, q), q = {args.quota}"
        ),
        metrics=ours,
        baseline={"name": "initial ranking", "metrics": base},
        train_seconds=ranker_seconds,
        eval_seconds=rerank_seconds,
        epochs=epochs,
        params=0,
        out=args.out,
        quota=args.quota,
        algorithm=args.algorithm,
        sweep=sweep,
        n_lists=U,
        example=example,
        **({"loaded": args.load} if args.load else {}),
    )


# %% [markdown]
# ## Run
# As a script, the flags above apply; in a notebook the kernel's own arguments are ignored and the
# defaults run (edit `main([...])` to pass flags, e.g. `main(["--quota", "0.5", "--sweep", ""])`).

# %%
if __name__ == "__main__":
    main()
