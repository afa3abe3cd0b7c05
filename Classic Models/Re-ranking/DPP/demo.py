# %% [markdown]
# # DPP re-ranking demo (Chen, Zhang & Zhou, NeurIPS 2018)
#
# A first-stage ranker proposes 50 candidates per user; the DPP picks 10 of them that are both
# relevant and diverse (fast greedy MAP, `model.py`). We compare with the unmodified initial ranking
# on the same lists: NDCG@10 / Recall@10 of the held-out item, ILD@10 and category coverage@10,
# and sweep theta for the relevance-diversity trade-off.
#
# CPU command (synthetic default; 46 s wall measured on a heavily loaded shared 2-core machine,
# 1 thread — well under that on an idle one):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/DPP/demo.py"
#
# The note's figure (one list's kernel with the greedy picks; about 50 s):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/DPP/demo.py" --sweep "" \
#         --plot-kernel assets/DPP/kernel_synthetic.png
#
# Save the ranker, then load it (training skipped, the same metrics) and show one user's lists:
#
#     .venv/bin/python "Classic Models/Re-ranking/DPP/demo.py" --save /tmp/dpp.pt
#     .venv/bin/python "Classic Models/Re-ranking/DPP/demo.py" --load /tmp/dpp.pt --recommend U00007
#
# Beauty (attributes as categories; 505 s wall on the same loaded machine, 1 thread):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/DPP/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --epochs 3

# %%
import argparse
import time
from pathlib import Path

import torch

import Datasets
from Datasets import rerank_lists as RL
from Utils.demo_io import user_row
from Utils.io import add_common_args, load_model_file, model_dir, positive_int, print_result
from Utils.loops import first_stage as FS
from Utils.loops.rerank_eval import (
    add_rerank_io_args,
    check_output_paths,
    fraction_arg,
    fraction_list_arg,
    heldout_list_evaluator,
    initial_positions,
    load_rerank,
    save_rerank,
    show_reranked_list,
    side_inputs,
)
from Utils.training import cpu_setup, pick_device, set_seed

MODEL_DIR = model_dir("Re-ranking", "DPP")  # model.py's folder (a notebook has no __file__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="DPP re-ranking demo (Chen, Zhang & Zhou, 2018)")
    add_common_args(
        p, epochs=3, batch_size=512, lr=3e-3
    )  # epochs/lr/batch: of the first-stage ranker
    add_rerank_io_args(p)  # --save/--load: the ranker (the DPP has no weights), --recommend USER
    p.add_argument(
        "--candidates", type=positive_int, default=50, help="N: candidates per list from the ranker"
    )
    p.add_argument("--k", type=positive_int, default=10, help="length of the re-ranked list")
    p.add_argument(
        "--theta",
        type=fraction_arg(open_top=True),
        default=0.95,
        help="relevance-diversity knob in [0, 1)",
    )
    p.add_argument(
        "--window", type=positive_int, default=None, help="sliding window w >= 2 (Alg. 2); default none"
    )
    p.add_argument(
        "--similarity",
        choices=["category", "embedding", "mixed"],
        default="mixed",
        help="item features for S: category multi-hot, ranker item embeddings, or both",
    )
    p.add_argument(
        "--sweep",
        type=fraction_list_arg(open_top=True),
        default="0,0.3,0.5,0.6,0.7,0.8,0.9,0.95,0.98",
        help="theta values for the trade-off curve ('' to skip)",
    )
    p.add_argument("--chunk", type=positive_int, default=1024, help="lists per DPP batch")
    p.add_argument(
        "--plot-kernel",
        metavar="PATH",
        default=None,
        help="PNG: the kernel of one list's first 20 candidates, greedy picks marked",
    )
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates {args.candidates}")
    if args.window is not None and args.window < 2:
        p.error(f"--window {args.window}: expected a window of at least 2 items (or no --window)")
    return args


# %% [markdown]
# ## The DPP over every candidate list, and one list's kernel (the note's figure)

# %%
def rerank(dpp, lists, feats, *, theta, k, window, chunk, ridge=1e-3, device="cpu"):
    """Positions (U, k) chosen by the DPP for every list, in chunks of `chunk` lists, on `device`
    (float64: Apple's mps has none, so the DPP stays on the CPU there)."""
    device = torch.device("cpu") if torch.device(device).type == "mps" else device
    model = dpp.DPPReranker(theta=theta, max_length=k, window_size=window, ridge=ridge)
    items = torch.from_numpy(lists["items"]).to(device)
    scores = RL.minmax_scores(torch.from_numpy(lists["init_scores"]).double()).to(device)
    feats = feats.to(device)
    out = []
    for s in range(0, len(items), chunk):
        out.append(model(scores=scores[s : s + chunk], item_vectors=feats[items[s : s + chunk]]))
    return torch.cat(out).cpu().numpy()


def kernel_and_picks(dpp, *, scores, item_vectors, theta: float, k: int, ridge=1e-3):
    """ONE list: the kernel L' of Eq. (14) and the fast greedy's picks on it (Alg. 1).

    scores: (N,) relevance in [0, 1]; item_vectors: (N, D). Returns (L' (N, N) float64,
    picks (min(k, N),) positions in pick order, -1 after a stop).
    """
    sim = dpp.similarity_matrix(item_vectors[None].double(), ridge=ridge)  # (1, N, N) S
    kernel = dpp.build_kernel(scores=scores[None].double(), similarity=sim, theta=theta)
    picks = dpp.greedy_map(kernel, max_length=min(k, len(scores))).selected[0]  # (k,)
    return kernel[0], picks


def short_label(data, item: int) -> str:
    """The item's category (the bracket of its text on synthetic data), else its text, cut."""
    text = RL.describe_item(data, item)
    return text.rsplit("[", 1)[-1].rstrip("]") if "[" in text else text[:20]


def plot_kernel(path, kernel, picks, items, data, *, theta: float) -> None:
    """Heatmap of L'_ij / sqrt(L'_ii L'_jj) = S_ij; the relevance q_i = e^{alpha r_i} beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    L = kernel.numpy()
    q = np.sqrt(np.diag(L))  # e^{alpha r_i}
    S = L / np.outer(q, q)  # the similarity part of L'
    n = len(L)
    order = {int(j): t + 1 for t, j in enumerate(picks.tolist()) if j >= 0}
    labels = [f"#{i + 1} {short_label(data, int(items[i]))}" for i in range(n)]
    fig, (ax, axq) = plt.subplots(
        1, 2, figsize=(12, 8.5), dpi=110, gridspec_kw={"width_ratios": [5, 1]}
    )
    im = ax.imshow(S, cmap="viridis", vmin=min(0.0, S.min()), vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.04, label="S_ij = L'_ij / sqrt(L'_ii L'_jj)")
    ax.set_xticks(range(n), labels, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for i, t in order.items():
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.text(i, i, str(t), ha="center", va="center", color="white", fontsize=8, weight="bold")
        ax.get_yticklabels()[i].set_color("red")
    ax.set_title(f"DPP kernel of one list, θ = {theta}: red boxes = greedy picks, in pick order")
    colors = ["tab:red" if i in order else "tab:gray" for i in range(n)]
    axq.barh(range(n), np.log(q**2), color=colors)
    axq.set_ylim(n - 0.5, -0.5)
    axq.set_yticks([])
    axq.set_xlabel("log q_i² = 2α r_i")
    axq.set_title("relevance")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")


# %% [markdown]
# ## The demo: candidate lists from a first-stage ranker, the DPP, metrics beside the initial ranking

# %%
def main(argv=None):
    args = parse_args(argv)
    cpu_setup(args.threads)
    set_seed(args.seed)
    check_output_paths(args)  # --save / --out: fail now, not after training
    device = pick_device(args.device)  # where the DPP runs; the small ranker trains on the CPU
    dpp = load_model_file(MODEL_DIR / "model.py", "dpp_model")

    # -- data, split and the first-stage ranker (trained on the training part only, or --load)
    data = Datasets.load(args.data, expect="interactions", demo="the DPP demo")
    similarity = side_inputs(data, args.similarity)  # interaction-only data: embeddings alone
    split = Datasets.leave_one_out(data)
    print(split)
    row = user_row(split, data, args.recommend) if args.recommend else None
    t0 = time.perf_counter()
    if args.load:
        scorer, saved = load_rerank(args.load, data=data, reranker="DPP")
        epochs = saved["extra"]["epochs"]
    else:
        scorer = FS.train_scorer(
            split, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        epochs = args.epochs
    lists = FS.candidate_lists(split, scorer, stage="test", n_candidates=args.candidates)
    ranker_seconds = time.perf_counter() - t0
    feats = FS.similarity_features(similarity, data, scorer)  # float32; S cast to float64
    U = len(lists["items"])
    evaluate = heldout_list_evaluator(lists, data, args.k)

    # -- re-rank with the DPP
    t1 = time.perf_counter()
    positions = rerank(
        dpp, lists, feats, theta=args.theta, k=args.k, window=args.window, chunk=args.chunk,
        device=device,
    )
    dpp_seconds = time.perf_counter() - t1
    base = evaluate(initial_positions(U, args.k))
    ours = evaluate(positions)

    # -- one user (--recommend USER, else the first whose held-out item is in the list): history,
    # initial top-k and DPP top-k side by side
    show_reranked_list(
        data, lists, positions, args.k, f"DPP top-{args.k} (theta={args.theta})", u=row
    )

    # -- one list: the kernel and the greedy picks on its first 20 candidates (--plot-kernel)
    if args.plot_kernel:
        u = int(lists["labels"].sum(1).argmax()) if row is None else row  # the list shown above
        n_show = min(20, lists["items"].shape[1])
        items_u = torch.from_numpy(lists["items"][u, :n_show])
        r = RL.minmax_scores(torch.from_numpy(lists["init_scores"][u : u + 1, :n_show]))[0]
        kernel, picks = kernel_and_picks(
            dpp, scores=r, item_vectors=feats[items_u], theta=args.theta, k=args.k
        )
        plot_kernel(args.plot_kernel, kernel, picks, items_u.numpy(), data, theta=args.theta)

    # -- trade-off sweep
    sweep = []
    for theta in args.sweep:
        m = evaluate(
            rerank(dpp, lists, feats, theta=theta, k=args.k, window=args.window, chunk=args.chunk,
                   device=device)
        )
        sweep.append({"theta": theta, **m})
        print(f"theta={theta:<5} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))

    print(f"\ninitial ranking: {base}\nDPP theta={args.theta}: {ours}")
    if args.save:  # the DPP has no weights: the ranker that made the lists, its settings, item ids
        save_rerank(
            args.save, scorer=scorer, data=data, reranker="DPP", overwrite=args.overwrite,
            settings={"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed},
            epochs=epochs,
        )
        print(f"saved {args.save}")
    # the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
    print_result(
        model="DPP",
        data=args.data,
        protocol=(
            f"test lists: top-{args.candidates} of a history-mean item-embedding ranker "
            f"(seen items excluded), re-ranked to {args.k}; label = held-out last item; "
            f"similarity={similarity}, scores min-max per list, window={args.window}"
        ),
        metrics=ours,
        baseline={"name": "initial ranking", "metrics": base},
        train_seconds=ranker_seconds,
        eval_seconds=dpp_seconds,
        epochs=epochs,
        params=0,
        out=args.out,
        theta=args.theta,
        sweep=sweep,
        n_lists=U,
        **({"loaded": args.load} if args.load else {}),
    )


# %% [markdown]
# ## Run
# As a script, the flags above apply; in a notebook the kernel's own arguments are ignored and the
# defaults run (edit `main([...])` to pass flags, e.g. `main(["--theta", "0.7", "--sweep", ""])`).

# %%
if __name__ == "__main__":
    main()
