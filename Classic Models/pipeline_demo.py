# %% [markdown]
# # The whole funnel: multi-channel recall -> ranking -> re-ranking
#
# A three-stage recommender built from this repo's own `model.py` files (imported from their
# folders, never copied), where each stage has to earn its place:
#
# 1. **Recall**: five channels retrieve N candidates each from the whole catalogue (seen items
#    excluded) -- SASRec (sequence model, exact top-N), YoutubeDNN (two-tower, served by a
#    faiss HNSW index), ItemCF (symmetric item-to-item co-occurrence), co-visitation (directed:
#    what followed the last items) and popularity -- merged into N distinct candidates with
#    per-channel quotas; the best single channel is chosen on validation;
# 2. **Ranking**: DIN scores the N candidates from item fields (category, brand, price bucket) and
#    history x candidate crosses, the strongest of which is a co-occurrence count (how often the
#    candidate followed the user's last item in training); it is trained on the merged lists of the
#    validation step and of each user's last training steps (count features taken as of the step),
#    without recall ranks or scores by default. It is set against what it must beat on the same
#    candidates: that count as a one-line rule, logistic regression and a gradient-boosted tree;
# 3. **Re-ranking**: DPP picks the final 10 from the ranker's top 50, trading relevance for
#    diversity (similarity = shared categories and title words, so near-duplicates repel); `--rerank`
#    swaps in MMR, calibration (the list's category mix follows the history's), a long-tail quota in
#    every prefix (constrained) or none. All five run on the same ranked lists, and a table shows
#    what each buys (diversity, calibration, long-tail share, exposure) and costs (NDCG, time).
#
# Metrics are per stage on each user's held-out test item (leave-one-out). `--serve` times single
# requests end to end. The default data is the funnel world (`Datasets/funnel_world.py`): a shop
# with a planted signal for each stage.
#
# CPU command (`make demo` = the first line with `--threads 2 --rank-steps 2`: 73 s wall on an
# otherwise idle 2-core machine):
#
#     python "Classic Models/pipeline_demo.py"
#     python "Classic Models/pipeline_demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --epochs 6 --rank-epochs 5

# %%
from __future__ import annotations

import argparse
import sys
import time
import traceback

import numpy as np
import torch

import Datasets
from Utils.funnel.items import attach_titles, item_side
from Utils.funnel.report import ndcg_per_user, paired, show_users, what_each_stage_found
from Utils.io import add_common_args, print_result
from Utils.training import count_params, cpu_setup, set_seed

# %% [markdown]
# ## Stage 1 -- recall: four channels, merged with quotas

# %%
# isort: split
from Utils.funnel.recall import (
    CHANNELS,
    build_channels,
    compare_channels,
    merge,
    popularity_key,
    ranks_in,
    recall_stage,
)

# %% [markdown]
# ## Stage 2 -- ranking on the serving distribution
#
# Impressions come from the merged candidate lists of each user's **validation** step, a period the
# recall models never trained on: the true next item is the click when it was retrieved, 20 other
# candidates drawn uniformly from the same list are non-clicks. The ranker reads item fields (id,
# category, brand, price bucket) and history x candidate crosses; recall ranks are features only
# with `--recall-features` (the ablation shows both).

# %%
# isort: split
from Utils.funnel.baselines import print_baselines, ranking_baselines
from Utils.funnel.ranking import earlier_stage, fit_ranker, rank_ablation, rank_lists

# %% [markdown]
# ## Stage 3 -- re-ranking

# %%
# isort: split
from Utils.funnel.rerank import (
    RERANKERS,
    build_reranker,
    compare_rerankers,
    list_metrics,
    print_rerankers,
)

# %% [markdown]
# ## One request, end to end

# %%
# isort: split
from Utils.funnel.serving import Funnel, candidate_sweep, serve_requests


# %%
def parse_args(argv=None):
    p = add_common_args(
        argparse.ArgumentParser(description="multi-channel recall -> ranking -> re-ranking"),
        epochs=10,
        batch_size=256,
        lr=1e-3,
        data="funnel",
    )
    p.add_argument(
        "--channels", default=",".join(CHANNELS), help="recall channels, in merge priority"
    )
    p.add_argument(
        "--quotas", default="0.3,0.2,0.2,0.2,0.1", help="share of the N candidates per channel"
    )
    p.add_argument("--n-candidates", type=int, default=200, help="N candidates after merging")
    p.add_argument("--k", type=int, default=10, help="length of the final list")
    p.add_argument(
        "--index", default="hnsw", choices=["flat", "hnsw", "ivf"], help="faiss index (two-tower)"
    )
    p.add_argument("--rerank", default="dpp", choices=RERANKERS,
                   help="the final list's re-ranker (all five are compared on the same lists)")
    p.add_argument("--theta", type=float, default=0.9, help="DPP relevance-diversity knob")
    p.add_argument("--lam", type=float, default=0.8, help="MMR lambda")
    p.add_argument("--cal-lambda", type=float, default=0.5,
                   help="calibration weight lambda of Steck's Eq. (6), in [0, 1]")
    p.add_argument("--tail-quota", type=float, default=0.3,
                   help="constrained: share q of long-tail items in every prefix, in [0, 1]")
    p.add_argument("--head-fraction", type=float, default=0.5,
                   help="constrained: the most interacted share of the catalogue that is the head "
                   "(the rest is the long tail)")
    p.add_argument("--constrained-algorithm", default="det_greedy",
                   choices=["det_greedy", "det_cons", "det_relaxed"])
    p.add_argument(
        "--rerank-depth", type=int, default=50, help="ranked candidates the re-ranker sees"
    )
    p.add_argument("--rank-epochs", type=int, default=5)
    p.add_argument(
        "--rank-negatives", type=int, default=20, help="non-clicks per click, from the list"
    )
    p.add_argument("--rank-lr", type=float, default=1e-3)
    p.add_argument(
        "--rank-steps",
        type=int,
        default=4,
        help="earlier training steps per user added to the ranker's impressions (0 = the validation "
        "step only); their count features are taken as of the step",
    )
    p.add_argument(
        "--recall-features",
        action="store_true",
        help="give the ranker each channel's rank of the candidate (off by default)",
    )
    p.add_argument(
        "--ablation", action="store_true", help="also train rankers with/without feature groups"
    )
    p.add_argument(
        "--ablation-users",
        type=int,
        default=0,
        help="score the ablation on this many test users (0 = all)",
    )
    p.add_argument(
        "--sweep-n", default="", help="e.g. 50,100,200,500: ceiling and NDCG per candidate count"
    )
    p.add_argument("--serve", type=int, default=0, help="time this many single requests end to end")
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the ranking baselines (transition rule, logistic regression, GBDT)",
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="history length the models read (default: 20 on the funnel world, whose users "
        "have at most 40 actions; 50 elsewhere)",
    )
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument(
        "--time-budget", type=float, default=None, help="stop each recall model after this many s"
    )
    p.add_argument("--show-users", type=int, default=2)
    p.add_argument(
        "--synthetic-users", type=int, default=None, help="shrink the funnel world (tests)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    for flag, kw in (
        ("--threads", {"type": int, "default": None}),
        ("--debug", {"action": "store_true", "help": "show tracebacks"}),
    ):
        if flag not in p._option_string_actions:  # older Utils.io: not among the common flags
            p.add_argument(flag, **kw)
    args = p.parse_args(argv)
    if args.threads is None:  # one thread: run-to-run bit-identical (make demo uses two: faster, not)
        args.threads = 1
    if args.max_len is None:
        args.max_len = 20 if args.data.startswith("funnel") else 50
    args.channel_list = [c.strip() for c in args.channels.split(",") if c.strip()]
    bad = [c for c in args.channel_list if c not in CHANNELS]
    if bad or len(set(args.channel_list)) != len(args.channel_list) or not args.channel_list:
        raise ValueError(
            f"--channels must list distinct names from {','.join(CHANNELS)}, got {args.channels!r}"
        )
    try:
        args.quota_list = [float(q) for q in args.quotas.split(",")]
        args.sweep = [int(n) for n in args.sweep_n.split(",") if n.strip()]
    except ValueError:
        raise ValueError(
            f"--quotas takes numbers and --sweep-n integers, got {args.quotas!r}, {args.sweep_n!r}"
        ) from None
    if len(args.quota_list) != len(args.channel_list) or min(args.quota_list) <= 0:
        raise ValueError(
            f"--quotas needs one positive share per channel ({len(args.channel_list)}), "
            f"got {args.quotas!r}"
        )
    if args.rank_steps < 0:
        raise ValueError(f"--rank-steps must be >= 0, got {args.rank_steps}")
    for name in ("n_candidates", "k", "epochs", "rank_epochs", "rank_negatives", "rerank_depth"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.k > min(args.n_candidates, args.rerank_depth):
        raise ValueError(f"--k {args.k} must not exceed --n-candidates and --rerank-depth")
    if args.serve < 0:
        raise ValueError(f"--serve must be >= 0, got {args.serve}")
    for name in ("theta", "lam", "cal_lambda", "tail_quota"):
        if not 0 <= getattr(args, name) <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not 0 < args.head_fraction < 1:
        raise ValueError(f"--head-fraction must be in (0, 1), got {args.head_fraction}")
    return args


def load_data(args):
    kind, _, arg = args.data.partition(":")
    if kind == "funnel":
        from Datasets.funnel_world import FunnelWorldConfig, load_funnel_world

        try:
            seed = int(arg) if arg else 0
        except ValueError:
            raise ValueError(f"'funnel:SEED' needs an integer seed, got {arg!r}") from None
        cfg = FunnelWorldConfig()
        if args.synthetic_users:
            cfg = FunnelWorldConfig(
                n_users=args.synthetic_users, n_items=max(240, args.synthetic_users // 2)
            )
        return load_funnel_world(seed, cfg)
    data = Datasets.load(args.data)
    attach_titles(data, args.data)
    return data


# %%
def run(args) -> dict:
    cpu_setup(args.threads)
    set_seed(args.seed)
    t_start = time.perf_counter()
    data = load_data(args)
    split = Datasets.leave_one_out(data)
    n_max = max([args.n_candidates, *args.sweep])
    if n_max > split.n_items // 2:
        raise ValueError(
            f"--n-candidates / --sweep-n ({n_max}) must be at most half the catalogue "
            f"({split.n_items} items)"
        )
    print(data)
    print(split)
    side = item_side(data)
    pop_key = popularity_key(split)
    timings = {}
    targets = split.test_items
    U = split.n_users

    # -- stage 1: recall
    channels, models, t_train, recall_epochs = build_channels(args, split, pop_key)
    timings.update(t_train)
    valid = recall_stage(args, channels, split, "valid", pop_key, args.n_candidates)
    hist, lists, cands, cranks, secs = recall_stage(args, channels, split, "test", pop_key, n_max)
    if (
        n_max > args.n_candidates
    ):  # the sweep retrieved deeper; the headline uses the first N of each channel
        n = args.n_candidates
        lists_n = {c: v[:, :n] for c, v in lists.items()}
        cands = merge(list(lists_n.values()), args.quota_list, n)
        cranks = np.stack([ranks_in(cands, v) for v in lists_n.values()], -1)
    else:
        lists_n = lists
    timings["recall_serve_s"] = sum(secs.values())
    stats, ch_ndcg, valid_ndcg, best, merged_ndcg = compare_channels(
        args, lists_n, cands, targets, valid[1], split.valid_items
    )

    # -- stage 2: ranking
    t0 = time.perf_counter()
    early = earlier_stage(args, channels, split, pop_key) if args.rank_steps > 0 else None
    ranker, rank_hist, n_imps = fit_ranker(
        args, side, split, models, valid, early, recall_features=args.recall_features
    )
    timings["train_ranker_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ranked, ranked_scores = rank_lists(ranker, hist, cands, cranks)
    timings["rank_serve_s"] = time.perf_counter() - t0
    rank_ndcg = ndcg_per_user(ranked, targets, args.k)
    lift = paired(rank_ndcg, ch_ndcg[best])
    print(
        f"\nranking (DIN on {n_imps:,} clicked lists: merged validation lists{' + earlier steps' if early is not None else ''}): NDCG@{args.k} "
        f"{rank_ndcg.mean():.4f} vs best channel {best} {ch_ndcg[best].mean():.4f}: "
        f"{lift['diff']:+.4f} ± {lift['se']:.4f} (paired over users)"
    )

    baselines, baseline_lists = {}, {}
    if not args.no_baselines:
        baselines, baseline_lists = ranking_baselines(
            args, side, split, models, valid, early, hist, cands, rank_ndcg, targets
        )
        print_baselines(baselines, rank_ndcg, args.k)

    ablation = {}
    if args.ablation:
        ablation = rank_ablation(
            args, side, split, models, valid, early, hist, cands, cranks, targets, rank_ndcg,
            ch_ndcg[best], rank_hist.best_metric,
        )

    # -- stage 3: re-ranking, all five rules on the same ranked lists; the final list is --rerank's
    finals, rerankers = compare_rerankers(args, data, side, ranked, ranked_scores, hist, targets)
    final = finals[args.rerank]
    timings["rerank_s"] = rerankers[args.rerank]["ms_per_1000_users"] * U / 1e6
    print_rerankers(rerankers, args.rerank, args.k)
    reranker = build_reranker(args, data, side=side)
    final_ndcg = ndcg_per_user(final, targets, args.k)
    best_top = lists_n[best]
    after_rank, after_rerank, cov_best, dup = list_metrics(
        data, side, targets, args.k, rank_ndcg, best_top, ranked, final
    )

    # -- what each stage found (planted world only)
    found = what_each_stage_found(
        args, data, split, hist, targets, lists_n, ch_ndcg[best], rank_ndcg, best_top, ranked, final
    )

    # -- the candidate-count trade-off
    sweep = candidate_sweep(args, lists, ranker, reranker, hist, targets)

    # -- serving: single requests through every stage
    serving = {}
    if args.serve:
        funnel = Funnel(args, channels, ranker, reranker, pop_key)
        serving = serve_requests(funnel, args.serve, hist, final, args.seed)

    # What each stage did, for a few users
    show_users(args, data, split, hist, targets, best, best_top, ranked, final)

    k = args.k
    metrics = {
        f"recall/Recall@{args.n_candidates}": stats[f"union/Recall@{args.n_candidates}"],
        f"recall/NDCG@{k}": float(ch_ndcg[best].mean()),
        f"recall/merged_NDCG@{k}": float(merged_ndcg.mean()),
        f"rank/NDCG@{k}": after_rank[f"NDCG@{k}"],
        f"rank/Recall@{k}": after_rank[f"Recall@{k}"],
        f"rank/ILD@{k}": after_rank[f"ILD@{k}"],
        f"rank/Coverage@{k}": after_rank[f"Coverage@{k}"],
        "rank/lift_vs_best_channel": lift["diff"],
        "rank/lift_se": lift["se"],
        "rank/valid_NDCG@10": rank_hist.best_metric,
        f"rerank/NDCG@{k}": after_rerank[f"NDCG@{k}"],
        f"rerank/Recall@{k}": after_rerank[f"Recall@{k}"],
        f"rerank/ILD@{k}": after_rerank[f"ILD@{k}"],
        f"rerank/Coverage@{k}": after_rerank[f"Coverage@{k}"],
        f"recall/ILD@{k}": cov_best[f"ILD@{k}"],
        f"recall/Coverage@{k}": cov_best[f"Coverage@{k}"],
        **{f"{s}/NearDup@{k}": v for s, v in dup.items()},
        "rerank/cost_NDCG": float(final_ndcg.mean() - rank_ndcg.mean()),
    }
    cost = {
        "recall_ms_per_1000_users": 1000 * 1000 * timings["recall_serve_s"] / U,
        "rank_ms_per_1000_users": 1000 * 1000 * timings["rank_serve_s"] / U,
        "rerank_ms_per_1000_users": 1000 * 1000 * timings["rerank_s"] / U,
        "recall_channel_s": secs,
    }
    timings["wall_s"] = time.perf_counter() - t_start
    print("\nper stage:")
    for k_, v in metrics.items():
        print(f"  {k_:28s} {v:.4f}")
    print(
        "cost per 1,000 users (ms):",
        {k_: round(v, 1) for k_, v in cost.items() if k_.endswith("users")},
    )
    print("timings (s):", {k_: round(v, 1) for k_, v in timings.items()})
    from Utils.evaluation import popularity_metrics

    pop = popularity_metrics(split, "test", ks=(k, args.n_candidates))
    result = print_result(
        model=f"Pipeline({'+'.join(channels)}->din->{args.rerank})",
        data=args.data,
        protocol=(
            f"leave-one-out test item; recall: {len(channels)} channels over the full catalogue "
            f"({split.n_items} items, seen items excluded) merged to {args.n_candidates} with quotas "
            f"{args.quotas}; DIN ranker ({'with' if args.recall_features else 'without'} recall ranks); "
            f"{args.rerank} over the top {args.rerank_depth} -> top {k}; threads {torch.get_num_threads()}"
        ),
        metrics=metrics,
        baseline={
            "name": "Popularity",
            "metrics": {
                f"Recall@{args.n_candidates}": pop[f"Recall@{args.n_candidates}"],
                f"NDCG@{k}": pop[f"NDCG@{k}"],
                f"Recall@{k}": pop[f"Recall@{k}"],
            },
        },
        train_seconds=sum(v for k_, v in timings.items() if k_.startswith("train_")),
        eval_seconds=timings["recall_serve_s"] + timings["rank_serve_s"] + timings["rerank_s"],
        epochs=recall_epochs,
        params=sum(count_params(m) for m in models.values() if isinstance(m, torch.nn.Module))
        + count_params(ranker.model),
        out=args.out,
        seed=args.seed,
        threads=torch.get_num_threads(),
        best_channel=best,
        best_channel_chosen_on={"valid_NDCG@10": valid_ndcg},
        ranking_baselines=baselines,
        rerankers=rerankers,
        rerank_knobs={"theta": args.theta, "lam": args.lam, "cal_lambda": args.cal_lambda,
                      "tail_quota": args.tail_quota, "head_fraction": args.head_fraction,
                      "constrained_algorithm": args.constrained_algorithm},
        channels=stats,
        lift=lift,
        ablation=ablation,
        found=found,
        sweep=sweep,
        serving=serving,
        cost=cost,
        timings=timings,
        rank_impressions=n_imps,
    )
    return {
        "result": result,
        "candidates": cands,
        "lists": lists_n,
        "ranked": ranked,
        "final": final,
        "split": split,
        "data": data,
        "hist": hist,
        "ranker": ranker,
        "reranker": reranker,
        "side": side,
        "channel_ranks": cranks,
        "best": best,
        "transitions": models["itemcf"].transitions,
        "baseline_lists": baseline_lists,
        "funnel": Funnel(args, channels, ranker, reranker, pop_key),
        "finals": finals,
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        run(parse_args(argv))
    except (ValueError, Datasets.DataError, FileNotFoundError) as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    if "ipykernel" in sys.modules:  # a notebook: the kernel's own arguments are not the demo's flags
        main([])
    else:
        sys.exit(main())
