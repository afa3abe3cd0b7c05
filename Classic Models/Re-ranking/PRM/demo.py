# %% [markdown]
# # PRM demo (Pei et al., RecSys 2019)
#
# A first-stage ranker (pre-trained, frozen) proposes 50 candidates per user. PRM reads each list
# with a Transformer and re-scores every item in the context of the others (`model.py`). We train it
# on lists built at training prefixes, select the epoch on validation lists, and compare with the
# unmodified initial ranking on the test lists (NDCG@10, Recall@10, ILD@10, coverage@10).
#
# Labels: on the synthetic default, clicks from a planted click model with a **within-list effect**
# (`Datasets/rerank_lists.simulate_clicks`: an item is clicked less when its near-duplicates or many
# items of its category are in the same list). On real data (Beauty): the held-out next item.
#
# CPU command (synthetic default; 50 s wall on a shared 2-core machine at load average ~5, 167 s at
# load ~11; 1 thread):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/PRM/demo.py"
#
# The note's figure (PRM trained on the ranker's top-10 lists; the test list where it moved a
# clicked item up the most, before/after, and the self-attention among its 10 items; about 15 s):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/PRM/demo.py" --candidates 10 \
#         --plot-attention assets/PRM/attention_synthetic.png
#
# Save PRM and the ranker, then load them (training skipped, the same metrics; about 15 s) and
# show one user's lists:
#
#     .venv/bin/python "Classic Models/Re-ranking/PRM/demo.py" --save /tmp/prm.pt
#     .venv/bin/python "Classic Models/Re-ranking/PRM/demo.py" --load /tmp/prm.pt --recommend U00007
#
# Beauty (attributes as categories; 957 s wall on the same loaded machine, 1 thread):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Re-ranking/PRM/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt

# %%
import argparse
import collections
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets import TensorDictDataset
from Datasets import rerank_lists as RL
from Utils.demo_io import user_row
from Utils.io import add_common_args, load_model_file, model_dir, positive_int, print_result
from Utils.loops import first_stage as FS
from Utils.loops.rerank_eval import (
    add_rerank_io_args,
    check_output_paths,
    initial_positions,
    load_rerank,
    rerank_metrics,
    save_rerank,
    show_reranked_list,
    side_inputs,
)
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

MODEL_DIR = model_dir("Re-ranking", "PRM")  # model.py's folder (a notebook has no __file__)
# flags that fix the lists, the labels and PRM's shape: a --save file keeps them, --load uses them
SAVED_FLAGS = ("candidates", "labels", "ranker_epochs", "per_user", "seed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="PRM demo (Pei et al., RecSys 2019)")
    add_common_args(p, epochs=10, batch_size=256, lr=2e-3)
    add_rerank_io_args(p)  # --save/--load: PRM's weights + the ranker, --recommend USER
    p.add_argument(
        "--candidates", type=positive_int, default=50, help="N: list length from the ranker"
    )
    p.add_argument("--k", type=positive_int, default=10)
    p.add_argument(
        "--per-user", type=positive_int, default=3, help="training lists per user (prefixes)"
    )
    p.add_argument("--ranker-epochs", type=positive_int, default=3)
    p.add_argument(
        "--labels",
        choices=["auto", "clicks", "target"],
        default="auto",
        help="auto: simulated clicks on synthetic data, held-out item otherwise",
    )
    p.add_argument("--d-model", type=positive_int, default=32)
    p.add_argument("--blocks", type=positive_int, default=1)
    p.add_argument("--heads", type=positive_int, default=2)
    p.add_argument("--no-pv", action="store_true", help="PRM-BASE: no personalised vector")
    p.add_argument("--no-position", action="store_true", help="drop the position embedding")
    p.add_argument(
        "--no-context",
        action="store_true",
        help="ablation: attention only to the item itself (pointwise, same size)",
    )
    p.add_argument("--patience", type=positive_int, default=3)
    p.add_argument(
        "--plot-attention",
        metavar="PATH",
        default=None,
        help="PNG: one test list before/after PRM (the list where PRM moved a clicked item up "
        "the most) and its self-attention (block 1, mean over heads); readable for short lists, "
        "e.g. --candidates 10",
    )
    args = p.parse_args(argv)
    if args.k > args.candidates:
        p.error(f"--k {args.k} is longer than the list: expected --k <= --candidates {args.candidates}")
    if args.d_model % args.heads:
        p.error(f"--d-model {args.d_model} must be divisible by --heads {args.heads}")
    return args


# %% [markdown]
# ## PRM's inputs: the item table x_i, and a look at what it reads (self-attention)

# %%
def item_table(data, scorer) -> torch.Tensor:
    """(n_items+1, F) x_i without the score: ranker item embedding, category multi-hot, brand."""
    parts = [torch.nn.functional.normalize(scorer.item_vectors().detach().float(), dim=1)]
    if RL.has_categories(data):  # interaction-only data: the ranker's embedding and the score
        parts.append(RL.category_features(data))
    if "brand" in data.items:
        brand = torch.from_numpy(data.item_feature("brand"))
        onehot = torch.zeros(len(brand), int(brand.max()) + 1)
        onehot[torch.arange(len(brand)), brand] = 1.0
        onehot[:, 0] = 0.0
        parts.append(onehot)
    return torch.cat(parts, dim=1)


def attention_maps(model, **inputs) -> torch.Tensor:
    """Self-attention weights of every encoder block, (n_blocks, B, N, N), mean over heads.

    Row i is how much item i reads from each item of the list (the softmax of Eq. (6); rows sum
    to 1, padded keys get 0). Hooks ask `nn.MultiheadAttention` for its weights during one forward
    pass; the model's own code and outputs are untouched.
    """
    maps, handles = [], []

    def ask_for_weights(module, args, kwargs):
        kwargs["need_weights"], kwargs["average_attn_weights"] = True, True
        return args, kwargs

    def keep_weights(module, args, output):
        maps.append(output[1])  # (B, N, N)

    for block in model.blocks:
        att = block.attention
        handles.append(att.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
        handles.append(att.register_forward_hook(keep_weights))
    try:
        model.eval()
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(maps)


def most_moved_list(positions, labels) -> tuple[int, int, int, int]:
    """The figure's list, by a rule: the list in which PRM moved a clicked item up the most.

    positions: (U, N) PRM's order (initial positions, best first); labels: (U, N) clicks by initial
    position. A clicked item's move is its initial position minus its position after PRM (> 0: up).
    Returns (list u, initial position, PRM position) of that item and how many lists share that
    largest move; ties go to the first list, then to the item ranked higher initially. Lists
    without a click are never chosen (unless no list has one: then list 0, item 0).
    """
    positions, labels = np.asarray(positions), np.asarray(labels)
    U, N = positions.shape
    after = np.empty_like(positions)  # after[u, i]: PRM's position of initial position i
    after[np.arange(U)[:, None], positions] = np.arange(N)[None]
    move = np.where(labels > 0, np.arange(N)[None] - after, -N)  # (U, N) -N: not clicked
    best = move.max(1)  # (U,)
    u = int(best.argmax())  # argmax: the first list of the largest move
    i = int(move[u].argmax())
    return u, i, int(after[u, i]), int((best == best[u]).sum())


def plot_list_attention(path, att, order, clicked, names, *, moved: int, title: str) -> None:
    """Top: one list in the ranker's order and in PRM's order, a line per item (clicked items in
    red, the moved item thick). Bottom: the self-attention among its items (row = item being
    rescored, column = item it reads), coloured against the uniform weight 1/N, values in the
    cells, the moved item's row boxed.

    att: (N, N) weights by initial position; order: (N,) PRM's order (initial positions); clicked:
    (N,) bool; names: N `Category · title` labels; moved: initial position of the item the figure
    is about.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    N = len(order)
    after = np.empty(N, dtype=int)
    after[np.asarray(order)] = np.arange(N)
    star = ["★ " if c else "" for c in clicked]
    h_top = 0.42 * N + 1.2
    fig, (ax, axa) = plt.subplots(
        2, 1, figsize=(12, min(h_top + 0.6 * N + 2.4, 30)), dpi=100,
        gridspec_kw={"height_ratios": [h_top, 0.6 * N + 2.4]},
    )
    for i in range(N):
        colour = "tab:red" if clicked[i] else "0.35"
        bold = "bold" if i == moved else "normal"
        ax.plot([0, 1], [i, after[i]], color=colour, lw=3.0 if i == moved else 1.2, marker="o",
                ms=5)
        ax.text(-0.03, i, f"{star[i]}{i + 1}. {names[i]}", ha="right", va="center", fontsize=10,
                color=colour, weight=bold)
        ax.text(1.03, after[i], f"{after[i] + 1}. {names[i]}", ha="left", va="center",
                fontsize=10, color=colour, weight=bold)
    ax.set_xlim(-1.75, 2.75)
    ax.set_ylim(N - 0.5, -1.2)
    ax.axis("off")
    ax.text(0, -1.0, "ranker's order", ha="center", fontsize=11, weight="bold")
    ax.text(1, -1.0, "PRM's order", ha="center", fontsize=11, weight="bold")

    lo, hi = float(att.min()), float(att.max())
    norm = TwoSlopeNorm(vcenter=1 / N, vmin=min(lo, 1 / N - 1e-6), vmax=max(hi, 1 / N + 1e-6))
    im = axa.imshow(att, cmap="RdBu_r", norm=norm)
    cb = fig.colorbar(im, ax=axa, fraction=0.04, pad=0.02)
    cb.set_label(f"attention weight (white = uniform 1/{N}; each row sums to 1)", fontsize=10)
    short = [f"{star[i]}#{i + 1} {names[i].split(' · ')[0]}" for i in range(N)]
    axa.set_xticks(range(N), short, rotation=40, ha="right", fontsize=10)
    axa.set_yticks(range(N), short, fontsize=10)
    for r in range(N if N <= 15 else 0):  # values in the cells: short lists only
        for c in range(N):
            dark = abs(norm(att[r, c]) - 0.5) > 0.3
            axa.text(c, r, f"{att[r, c]:.3f}", ha="center", va="center", fontsize=9,
                     color="white" if dark else "black")
    axa.add_patch(plt.Rectangle((-0.5, moved - 0.5), N, 1, fill=False, ec="black", lw=2.5))
    for labels in (axa.get_yticklabels(), axa.get_xticklabels()):
        for i, t in enumerate(labels):
            t.set_color("tab:red" if clicked[i] else "black")
    axa.set_xlabel("key: the item read (initial rank)", fontsize=10)
    axa.set_ylabel("query: the item being rescored", fontsize=10)
    axa.set_title("self-attention among the list's items (block 1, mean over heads); "
                  "boxed: the moved item's row", fontsize=10)
    fig.suptitle(title + "\n★ / red = clicked; thick line = the clicked item PRM moved up most",
                 fontsize=12)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def item_name(data, item: int) -> str:
    """`Category · title` on synthetic data (the bracket of its text first), else its text, cut."""
    text = RL.describe_item(data, item, width=80)
    if "[" not in text:
        return text[:30]
    title, category = text.rsplit("[", 1)
    return f"{category.rstrip(']')} · {title.strip()[:40]}"


def to_dataset(lists, labels) -> TensorDictDataset:
    return TensorDictDataset(
        {
            "items": torch.from_numpy(lists["items"]),
            "scores": RL.minmax_scores(torch.from_numpy(lists["init_scores"]).float()),
            "user_vectors": torch.from_numpy(lists["user_vectors"]).float(),
            "labels": torch.from_numpy(labels).float(),
        }
    )


# %% [markdown]
# ## The demo: lists from a frozen first-stage ranker, PRM trained on them, test beside the
# initial ranking

# %%
def main(argv=None):
    args = parse_args(argv)
    cpu_setup(args.threads)
    set_seed(args.seed)
    check_output_paths(args)  # --save / --out: fail now, not after training
    device = pick_device(args.device)
    prm = load_model_file(MODEL_DIR / "model.py", "prm_model")

    # -- data, split and the pre-trained first-stage ranker (frozen from here on)
    data = Datasets.load(args.data, expect="interactions", demo="the PRM demo")
    side_inputs(data)  # interaction-only data: x_i = ranker embedding + score, no ILD/coverage
    split = Datasets.leave_one_out(data)
    print(split)
    row = user_row(split, data, args.recommend) if args.recommend else None
    t0 = time.perf_counter()
    saved = None
    if args.load:  # the saved ranker and PRM; the flags that shaped them come from the file
        scorer, saved = load_rerank(args.load, data=data, reranker="PRM")
        for name in SAVED_FLAGS:
            setattr(args, name, saved["args"][name])
        print("settings from the file: " + ", ".join(f"{n}={getattr(args, n)}" for n in SAVED_FLAGS))
    use_clicks = args.labels == "clicks" or (args.labels == "auto" and "truth" in data.extra)
    if use_clicks and "truth" not in data.extra:
        raise Datasets.DataError(
            f"--labels clicks: {data.name} has no planted click model (synthetic data only); "
            "expected --labels target (the held-out next item) or auto"
        )
    if saved is None:
        scorer = FS.train_scorer(split, epochs=args.ranker_epochs, seed=args.seed)
    valid_l = FS.candidate_lists(split, scorer, stage="valid", n_candidates=args.candidates)
    test_l = FS.candidate_lists(split, scorer, stage="test", n_candidates=args.candidates)
    if use_clicks:
        y_valid, _ = RL.simulate_clicks(data, valid_l, seed=args.seed + 2)
        y_test, p_test = RL.simulate_clicks(data, test_l, seed=args.seed + 3)
    else:
        y_valid, y_test, p_test = valid_l["labels"], test_l["labels"], None
    if saved is None:  # training lists at random prefixes of the training history
        train_l = FS.prefix_lists(
            split, scorer, per_user=args.per_user, n_candidates=args.candidates, seed=args.seed
        )
        if use_clicks:
            y_train, _ = RL.simulate_clicks(data, train_l, seed=args.seed + 1)
        else:
            y_train = train_l["labels"]
        keep = y_train.sum(1) > 0  # lists without a click carry no signal under Eq. (7)
        if not keep.any():
            raise Datasets.DataError(
                f"no training list holds a click or its next item among the ranker's top "
                f"{args.candidates} ({len(keep):,} lists); expected more data or a larger --candidates"
            )
        train_l = {k: v[keep] for k, v in train_l.items()}
        y_train = y_train[keep]
        print(
            f"training lists with a click: {int(keep.sum()):,} of {len(keep):,}; "
            f"labels = {'simulated clicks' if use_clicks else 'held-out next item'}"
        )
    table = item_table(data, scorer).to(device)
    valid_ds, test_ds = to_dataset(valid_l, y_valid), to_dataset(test_l, y_test)
    ranker_seconds = time.perf_counter() - t0

    # -- the model: x_i = [item table row, initial score], pv_i = u (.) v_i of the ranker
    if saved is None:
        pv_dim = 0 if args.no_pv else test_l["user_vectors"].shape[1]
        model = prm.PRM(
            feature_dim=table.shape[1] + 1,
            pv_dim=pv_dim,
            max_len=args.candidates,
            d_model=args.d_model,
            n_heads=args.heads,
            n_blocks=args.blocks,
            ffn_dim=2 * args.d_model,
            use_position=not args.no_position,
            list_context=not args.no_context,
        ).to(device)
    else:
        model = prm.PRM(prm.PRMConfig(**saved["models"]["model"]["config"]))
        model.load_state_dict(saved["models"]["model"]["state"])
        model = model.to(device)
        pv_dim = model.config.pv_dim
    item_vecs = scorer.item_vectors().detach().float().to(device)

    def inputs(batch):
        items = batch["items"].to(device)
        x = torch.cat([table[items], batch["scores"].to(device).unsqueeze(-1)], dim=-1)  # (B, N, F)
        pv = None
        if pv_dim:
            pv = batch["user_vectors"].to(device).unsqueeze(1) * item_vecs[items]  # (B, N, P)
        return {"features": x, "pv": pv}

    @torch.no_grad()
    def positions(ds):
        model.eval()
        out = [model.rerank(**inputs(b)).cpu() for b in ds.batches(1024, shuffle=False)]
        return torch.cat(out).numpy()

    cats = cat_sets = None  # interaction-only data: no ILD / coverage
    if RL.has_categories(data):
        cats, cat_sets = RL.item_categories(data), RL.item_category_sets(data)

    def evaluate_on(lists, labels, pos):
        # clicks: recall over the list's clicks; held-out item: over 1 target (may be missing)
        n_rel = None if use_clicks else np.ones(len(labels))
        return rerank_metrics(
            pos,
            lists["items"],
            labels,
            k=args.k,
            categories=cats,
            category_sets=cat_sets,
            n_relevant=n_rel,
        )

    # -- train with early stopping on validation NDCG@k (skipped with --load)
    if saved is None:
        train_ds = to_dataset(train_l, y_train)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        gen = torch.Generator().manual_seed(args.seed)

        def step(batch):
            return prm.PRM.loss(model(**inputs(batch)), batch["labels"].to(device))

        history = fit(
            model,
            step,
            lambda epoch: train_ds.batches(args.batch_size, shuffle=True, generator=gen),
            opt,
            args.epochs,
            evaluate=lambda: evaluate_on(valid_l, y_valid, positions(valid_ds)),
            metric=f"NDCG@{args.k}",
            patience=args.patience,
            n_batches=train_ds.num_batches(args.batch_size),
            desc="PRM",
        )
        train_seconds, epochs, best_epoch = (
            history.train_seconds, len(history.epochs), history.best_epoch
        )
    else:
        train_seconds, epochs, best_epoch = 0.0, saved["extra"]["epochs"], saved["extra"]["best_epoch"]

    # -- test: PRM against the initial ranking on the same lists and labels
    t1 = time.perf_counter()
    pos = positions(test_ds)
    eval_seconds = time.perf_counter() - t1
    U = len(y_test)
    base = evaluate_on(test_l, y_test, initial_positions(U, args.candidates))
    ours = evaluate_on(test_l, y_test, pos)
    extra = {}
    if p_test is not None:  # noise-free view: graded relevance = true click probability
        base[f"NDCG@{args.k}(p)"] = rerank_metrics(
            initial_positions(U, args.k), test_l["items"], p_test, k=args.k
        )[f"NDCG@{args.k}"]
        ours[f"NDCG@{args.k}(p)"] = rerank_metrics(pos, test_l["items"], p_test, k=args.k)[
            f"NDCG@{args.k}"
        ]

    # -- one user (--recommend USER, else the first with a click): history, initial top-k and
    # PRM top-k with the labels
    u = int(np.argmax(y_test.sum(1) > 0)) if row is None else row
    show_reranked_list(
        data, test_l, pos, args.k, f"PRM top-{args.k} (label)", u=u, labels=y_test
    )

    # -- what PRM does to one list and what it read to do it (--plot-attention): the list where
    # PRM moved a clicked item up the most (a rule, `most_moved_list`), its lists and attention
    if args.plot_attention:
        u_fig, i_fig, to, n_tied = most_moved_list(pos, y_test)
        show_reranked_list(
            data, test_l, pos, args.k, f"PRM top-{args.k} (label)", u=u_fig, labels=y_test
        )
        one = {k: v[u_fig : u_fig + 1] for k, v in test_ds.tensors.items()}
        att = attention_maps(model, **inputs(one))[0, 0].cpu().numpy()  # block 1, (N, N)
        items_fig = test_l["items"][u_fig]
        names = [item_name(data, int(i)) for i in items_fig]
        print(
            f"\nfigure: list {u_fig} (user {data.user_raw[int(test_l['user'][u_fig])]}), the "
            f"largest upward move of a clicked item: #{i_fig + 1} {names[i_fig]} -> {to + 1} "
            f"({i_fig - to} places; {n_tied} of {U:,} lists have a move that large, "
            "the first is shown)"
        )
        if all(" · " in n for n in names):  # synthetic: the category mix the click model sees
            mix = collections.Counter(n.split(" · ")[0] for n in names).most_common()
            print("categories in the list: " + ", ".join(f"{c} {n}" for c, n in mix))
        print(f"attention of #{i_fig + 1} (its row; uniform = {1 / len(att):.3f}):")
        for j in np.argsort(-att[i_fig]):
            star = " (clicked)" if y_test[u_fig, j] else ""
            print(f"   {att[i_fig, j]:.3f}  #{j + 1} {names[j]}{star}")
        plot_list_attention(
            args.plot_attention, att, pos[u_fig], y_test[u_fig] > 0, names, moved=i_fig,
            title=f"PRM on one test list of {len(att)} items: what moved, and what it read",
        )
        print(f"saved {args.plot_attention}")

    print(f"\ninitial ranking: {base}\nPRM: {ours}")
    if args.save:  # PRM's weights, the frozen ranker, the flags that shaped them, item ids
        save_rerank(
            args.save, scorer=scorer, data=data, reranker="PRM", overwrite=args.overwrite,
            model=model, settings={n: getattr(args, n) for n in SAVED_FLAGS}, epochs=epochs,
            best_epoch=best_epoch,
        )
        print(f"saved {args.save}")
    cfg = model.config
    variant = (
        "PRM"
        + ("-BASE" if not cfg.pv_dim else "")
        + ("-noPE" if not cfg.use_position else "")
        + ("-pointwise" if not cfg.list_context else "")
    )
    # the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
    print_result(
        model=variant,
        data=args.data,
        protocol=(
            f"lists: top-{args.candidates} of a history-mean item-embedding ranker (frozen, "
            f"pv = u*v_i); train on {args.per_user} prefix lists/user, select on valid lists, "
            f"report test lists; labels = "
            + (
                "simulated clicks with a within-list redundancy effect"
                if use_clicks
                else "held-out next item"
            )
        ),
        metrics=ours,
        baseline={"name": "initial ranking", "metrics": base},
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        epochs=epochs,
        params=count_params(model),
        out=args.out,
        best_epoch=best_epoch,
        ranker_and_lists_seconds=ranker_seconds,
        n_test_lists=U,
        **extra,
        **({"loaded": args.load} if args.load else {}),
    )


# %% [markdown]
# ## Run
# As a script, the flags above apply; in a notebook the kernel's own arguments are ignored and the
# defaults run (edit `main([...])` to pass flags, e.g. `main(["--epochs", "3", "--no-pv"])`).

# %%
if __name__ == "__main__":
    main()
