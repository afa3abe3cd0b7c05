# %% [markdown]
# # MMR re-ranking demo (Carbonell & Goldstein, SIGIR 1998)
#
# A first-stage ranker proposes 50 candidates per user; MMR re-orders them slot by slot, trading the
# ranker's relevance against similarity to what is already shown (`model.py`). We compare with the
# unmodified initial ranking on the same lists: NDCG@10 / Recall@10 of the held-out item, ILD@10 and
# category coverage@10, and sweep lambda for the relevance-diversity trade-off.
#
# CPU command (synthetic default; 33 s wall measured on a heavily loaded shared 2-core machine,
# 1 thread — well under that on an idle one):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/MMR/demo.py"
#
# The note's figure (one list, relevance vs redundancy of each pick; about 25 s):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/MMR/demo.py" --sweep "" \
#         --plot-steps assets/MMR/mmr_steps_synthetic.png
#
# Save the ranker, then load it (training skipped, the same metrics) and show one user's lists:
#
#     .venv/bin/python "Classic Models/Re-ranking/MMR/demo.py" --save /tmp/mmr.pt
#     .venv/bin/python "Classic Models/Re-ranking/MMR/demo.py" --load /tmp/mmr.pt --recommend U00007
#
# Beauty (attributes as categories; 365 s wall on the same loaded machine, 1 thread):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/MMR/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt

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

MODEL_DIR = model_dir("Re-ranking", "MMR")  # model.py's folder (a notebook has no __file__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="MMR re-ranking demo (Carbonell & Goldstein, 1998)")
    add_common_args(
        p, epochs=3, batch_size=512, lr=3e-3
    )  # epochs/lr/batch: of the first-stage ranker
    add_rerank_io_args(p)  # --save/--load: the ranker (MMR has no weights), --recommend USER
    p.add_argument(
        "--candidates", type=positive_int, default=50, help="N: candidates per list from the ranker"
    )
    p.add_argument("--k", type=positive_int, default=10, help="length of the re-ranked list")
    p.add_argument(
        "--lam", type=fraction_arg(), default=0.9, help="lambda in [0, 1]: 1 = relevance only"
    )
    p.add_argument(
        "--similarity",
        choices=["category", "embedding", "mixed"],
        default="mixed",
        help="item features for Sim2: category multi-hot, ranker item embeddings, or both",
    )
    p.add_argument(
        "--sweep",
        type=fraction_list_arg(),
        default="0,0.2,0.4,0.5,0.6,0.7,0.8,0.9,0.95",
        help="lambda values for the trade-off curve ('' to skip)",
    )
    p.add_argument("--chunk", type=positive_int, default=1024, help="lists per MMR batch")
    p.add_argument(
        "--plot-steps",
        metavar="PATH",
        default=None,
        help="PNG: relevance and redundancy of each MMR pick for one list, step by step",
    )
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates {args.candidates}")
    return args


# %% [markdown]
# ## MMR over every candidate list, and one list step by step (the note's figure)

# %%
def rerank(mmr, lists, feats, *, lam, k, chunk, device="cpu"):
    """Positions (U, k) chosen by MMR for every list, in chunks of `chunk` lists, on `device`."""
    model = mmr.MMRReranker(lam=lam, max_length=k)
    items = torch.from_numpy(lists["items"])
    scores = RL.minmax_scores(torch.from_numpy(lists["init_scores"]).float())  # Sim1 on [0, 1]
    items, scores, feats = items.to(device), scores.to(device), feats.to(device)
    out = [
        model(scores=scores[s : s + chunk], item_vectors=feats[items[s : s + chunk]])
        for s in range(0, len(items), chunk)
    ]
    return torch.cat(out).cpu().numpy()


def mmr_trace(*, relevance, similarity, lam: float, k: int) -> list[dict]:
    """Eq. (1) for ONE list, step by step: at each slot the pick and the two terms it traded.

    relevance: (N,) Sim1; similarity: (N, N) Sim2. Returns k dicts with `pick` (position),
    `relevance` = lambda * Sim1, `redundancy` = (1 - lambda) * max_{j in S} Sim2 (0 for slot 1)
    and `mmr` = their difference (slot 1: the most relevant item, as in `mmr_select`).
    """
    N = relevance.shape[0]
    chosen: list[int] = []
    steps = []
    for _ in range(min(k, N)):
        rest = torch.tensor([i for i in range(N) if i not in chosen])
        if chosen:
            red = (1 - lam) * similarity[rest][:, chosen].max(dim=1).values  # (|rest|,)
            mr = lam * relevance[rest] - red
        else:  # empty S: slot 1 is the most relevant candidate (see model.py NOTE)
            red, mr = torch.zeros(len(rest)), relevance[rest]
        best = int(mr.argmax())
        j = int(rest[best])
        steps.append(
            {
                "pick": j,
                "relevance": float(lam * relevance[j]),
                "redundancy": float(red[best]),
                "mmr": float(lam * relevance[j] - red[best]),
            }
        )
        chosen.append(j)
    return steps


def short_label(data, item: int) -> str:
    """The item's category (the bracket of its text on synthetic data), else its text, cut."""
    text = RL.describe_item(data, item)
    return text.rsplit("[", 1)[-1].rstrip("]") if "[" in text else text[:20]


def plot_steps(path, steps, items, data, *, lam: float) -> None:
    """Bars per slot: +lambda*Sim1 and -(1-lambda)*max Sim2 of the pick; dot = the MMR score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = range(len(steps))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    ax.bar(x, [s["relevance"] for s in steps], color="tab:blue", label="λ · Sim1 (relevance)")
    ax.bar(
        x,
        [-s["redundancy"] for s in steps],
        color="tab:red",
        label="−(1−λ) · max over S of Sim2 (redundancy)",
    )
    ax.plot(x, [s["mmr"] for s in steps], "ko", label="MMR score of the pick, Eq. (1)")
    ax.axhline(0, color="black", lw=0.8)
    labels = [
        f"{t + 1}: #{s['pick'] + 1} {short_label(data, int(items[s['pick']]))}"
        for t, s in enumerate(steps)
    ]
    ax.set_xticks(list(x), labels, rotation=40, ha="right", fontsize=8)
    ax.set_xlabel("slot: initial rank # and category of the item MMR picked")
    ax.set_title(f"MMR, one list, λ = {lam}: what each pick gained and paid")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")


# %% [markdown]
# ## The demo: candidate lists from a first-stage ranker, MMR, metrics beside the initial ranking

# %%
def main(argv=None):
    args = parse_args(argv)
    cpu_setup(args.threads)
    set_seed(args.seed)
    check_output_paths(args)  # --save / --out: fail now, not after training
    device = pick_device(args.device)  # where MMR runs; the small ranker trains on the CPU
    mmr = load_model_file(MODEL_DIR / "model.py", "mmr_model")

    # -- data, split and the first-stage ranker (trained on the training part only, or --load)
    data = Datasets.load(args.data, expect="interactions", demo="the MMR demo")
    similarity = side_inputs(data, args.similarity)  # interaction-only data: embeddings alone
    split = Datasets.leave_one_out(data)
    print(split)
    row = user_row(split, data, args.recommend) if args.recommend else None
    t0 = time.perf_counter()
    if args.load:
        scorer, saved = load_rerank(args.load, data=data, reranker="MMR")
        epochs = saved["extra"]["epochs"]
    else:
        scorer = FS.train_scorer(
            split, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        epochs = args.epochs
    lists = FS.candidate_lists(split, scorer, stage="test", n_candidates=args.candidates)
    ranker_seconds = time.perf_counter() - t0
    feats = FS.similarity_features(similarity, data, scorer)
    U = len(lists["items"])
    evaluate = heldout_list_evaluator(lists, data, args.k)

    # -- re-rank with MMR
    t1 = time.perf_counter()
    positions = rerank(mmr, lists, feats, lam=args.lam, k=args.k, chunk=args.chunk, device=device)
    mmr_seconds = time.perf_counter() - t1
    base = evaluate(initial_positions(U, args.k))
    ours = evaluate(positions)

    # -- one user (--recommend USER, else the first whose held-out item is in the list): history,
    # initial top-k and MMR top-k side by side
    show_reranked_list(
        data, lists, positions, args.k, f"MMR top-{args.k} (lambda={args.lam})", u=row
    )

    # -- one list step by step: relevance gained and redundancy paid by each pick (--plot-steps)
    if args.plot_steps:
        u = int(lists["labels"].sum(1).argmax()) if row is None else row  # the list shown above
        rel = RL.minmax_scores(torch.from_numpy(lists["init_scores"][u : u + 1]).float())[0]
        sim = mmr.cosine_similarity(feats[torch.from_numpy(lists["items"][u : u + 1])])[0]
        steps = mmr_trace(relevance=rel, similarity=sim, lam=args.lam, k=args.k)
        plot_steps(args.plot_steps, steps, lists["items"][u], data, lam=args.lam)

    # -- trade-off sweep
    sweep = []
    for lam in args.sweep:
        m = evaluate(rerank(mmr, lists, feats, lam=lam, k=args.k, chunk=args.chunk, device=device))
        sweep.append({"lambda": lam, **m})
        print(f"lambda={lam:<5} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))

    print(f"\ninitial ranking: {base}\nMMR lambda={args.lam}: {ours}")
    if args.save:  # MMR has no weights: the ranker that made the lists, its settings, item ids
        save_rerank(
            args.save, scorer=scorer, data=data, reranker="MMR", overwrite=args.overwrite,
            settings={"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed},
            epochs=epochs,
        )
        print(f"saved {args.save}")
    # the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
    print_result(
        model="MMR",
        data=args.data,
        protocol=(
            f"test lists: top-{args.candidates} of a history-mean item-embedding ranker "
            f"(seen items excluded), re-ranked to {args.k}; label = held-out last item; "
            f"similarity={similarity}, scores min-max per list"
        ),
        metrics=ours,
        baseline={"name": "initial ranking", "metrics": base},
        train_seconds=ranker_seconds,
        eval_seconds=mmr_seconds,
        epochs=epochs,
        params=0,
        out=args.out,
        lam=args.lam,
        sweep=sweep,
        n_lists=U,
        **({"loaded": args.load} if args.load else {}),
    )


# %% [markdown]
# ## Run
# As a script, the flags above apply; in a notebook the kernel's own arguments are ignored and the
# defaults run (edit `main([...])` to pass flags, e.g. `main(["--lam", "0.5", "--sweep", ""])`).

# %%
if __name__ == "__main__":
    main()
