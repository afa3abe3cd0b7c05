# %% [markdown]
# # The whole funnel: multi-channel recall -> ranking -> re-ranking
#
# A three-stage recommender built from this repo's own `model.py` files (imported from their
# folders, never copied), where each stage has to earn its place:
#
# 1. **Recall**: four channels retrieve N candidates each from the whole catalogue (seen items
#    excluded) -- SASRec (sequence model, exact top-N), YoutubeDNN (two-tower, served by a
#    faiss HNSW index), ItemCF (item-to-item co-occurrence) and popularity -- merged into N
#    distinct candidates with per-channel quotas;
# 2. **Ranking**: DIN scores the N candidates from features the recall models do not use (category,
#    brand, price bucket, history x candidate crosses); it is trained on the merged lists of the
#    validation step (the serving distribution), without recall ranks or scores by default;
# 3. **Re-ranking**: DPP (or MMR) picks the final 10 from the ranker's top 50, trading relevance for
#    diversity; similarity = shared categories and title words, so near-duplicates repel.
#
# Metrics are per stage on each user's held-out test item (leave-one-out). `--serve` times single
# requests end to end. The default data is the funnel world (`Datasets/funnel_world.py`): a shop
# with a planted signal for each stage.
#
# CPU command (`make demo`: 93 s wall, 35 s of CPU on a shared 2-core machine; Beauty: 41 min):
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
from Datasets.rerank_lists import item_categories, item_category_sets, minmax_scores
from Utils.io import add_common_args, print_result
from Utils.loops import funnel as FN
from Utils.loops import rank_baselines as RB
from Utils.loops.rerank_eval import rerank_metrics
from Utils.retrieval import FaissIndex
from Utils.training import count_params, cpu_setup, fit, set_seed

CHANNELS = ("sasrec", "youtubednn", "itemcf", "covisit", "popular")


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
    p.add_argument("--rerank", default="dpp", choices=["dpp", "mmr"])
    p.add_argument("--theta", type=float, default=0.9, help="DPP relevance-diversity knob")
    p.add_argument("--lam", type=float, default=0.8, help="MMR lambda")
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
    if args.threads is None:  # small models: a second intra-op thread mostly waits on the first
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
    if args.serve < 0 or not 0 <= args.theta <= 1 or not 0 <= args.lam <= 1:
        raise ValueError("--serve must be >= 0 and --theta / --lam in [0, 1]")
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
    FN.attach_titles(data, args.data)
    return data


# %% [markdown]
# ## Stage 1 -- recall: four channels, merged with quotas


# %%
def train_sasrec(args, split):
    mod = FN.model_module("Recall", "SASRec")
    L = args.max_len
    # sampled softmax over 256 shared negatives: the full softmax costs 50x more per step on
    # Beauty's 12,101 items, and SASRec+SS is the strongest published SASRec on this split
    model = mod.SASRec(
        mod.SASRecConfig(
            n_items=split.n_items,
            max_len=L,
            dim=args.dim,
            n_blocks=2,
            n_heads=2,
            dropout=0.2,
            loss="sampled_ce",
            n_negatives=256,
        )
    )
    data = Datasets.TensorDictDataset({"seq": torch.from_numpy(split.train_sequences(L))})

    def step(b):
        return model.loss(b["seq"][:, :-1], b["seq"][:, 1:])

    def user_vec(h):
        return model.user_embedding(h[:, -L:])

    return model, step, data, user_vec, model.item_embeddings


def train_youtubednn(args, split):
    mod = FN.model_module("Recall", "YoutubeDNN")
    model = mod.YoutubeDNN(
        config=mod.YoutubeDNNConfig(n_items=split.n_items, dim=args.dim, use_example_age=False)
    )
    data = Datasets.RecallDataset(split, max_len=args.max_len, max_per_user=50, seed=args.seed)
    counts = torch.from_numpy(split.item_counts()).double() + 1.0
    counts[0] = 0.0
    q = (counts / counts.sum()).float()  # sampling distribution Q (popularity)
    n_neg = 512

    def step(b):
        neg = torch.multinomial(q, n_neg, replacement=True)  # (M,) shared by the batch
        t = b["target"]
        u = model.user_tower(history=b["history"])
        return model.loss(
            user_vec=u,
            target=t,
            negatives=neg,
            log_q_target=torch.log(q[t] * n_neg),
            log_q_negatives=torch.log(q[neg] * n_neg),
        )

    def user_vec(h):
        return model.user_tower(history=h)

    return model, step, data, user_vec, model.item_tower


def build_channels(args, split, pop_key):
    """Train the neural channels (early stopping on validation NDCG@10) and build the others."""
    from Utils.evaluation import evaluate_full_ranking

    channels, models, timings, epochs = {}, {}, {}, {}
    for name in args.channel_list:
        t0 = time.perf_counter()
        if name in ("sasrec", "youtubednn"):
            model, step, data, user_vec, item_vecs = (
                train_sasrec if name == "sasrec" else train_youtubednn
            )(args, split)
            opt = torch.optim.Adam(model.parameters(), lr=args.lr)
            g = torch.Generator().manual_seed(args.seed)

            def evaluate(model=model, user_vec=user_vec, item_vecs=item_vecs):
                with torch.no_grad():
                    iv = item_vecs()
                    return evaluate_full_ranking(
                        lambda b: user_vec(b["history"]) @ iv.T,
                        split,
                        "valid",
                        max_len=args.max_len,
                        ks=(10,),
                    )

            hist = fit(
                model,
                step,
                lambda e, data=data, g=g: data.batches(args.batch_size, generator=g),
                opt,
                args.epochs,
                evaluate,
                metric="NDCG@10",
                patience=args.patience,
                progress=not args.quiet,
                desc=f"recall/{name}",
                n_batches=data.num_batches(args.batch_size),
                time_budget=args.time_budget,
            )
            model.eval()
            epochs[name] = len(hist.epochs)
            models[name] = model
            with torch.no_grad():
                iv = item_vecs().detach().clone()
            if name == "sasrec":

                def score_fn(h, user_vec=user_vec, iv=iv):
                    with torch.no_grad():
                        return (user_vec(torch.from_numpy(h)) @ iv.T).numpy()

                channels[name] = FN.Channel(name, "dense", score_fn=score_fn)
            else:

                def user_fn(h, user_vec=user_vec):
                    with torch.no_grad():
                        return user_vec(torch.from_numpy(h)).numpy()

                channels[name] = FN.Channel(
                    name,
                    "faiss",
                    user_fn=user_fn,
                    index=FaissIndex(iv, kind=args.index, threads=args.threads),
                )
        elif name == "itemcf":
            icf = FN.ItemCF(split)
            channels[name] = FN.Channel(name, "dense", score_fn=icf.scores)
            models[name] = icf
        elif name == "covisit":
            cv = FN.CoVisit(split)
            channels[name] = FN.Channel(name, "dense", score_fn=cv.scores)
            models[name] = cv
        else:
            channels[name] = FN.Channel(
                name, "dense", score_fn=lambda h: np.zeros((len(h), len(pop_key)))
            )
        timings[f"train_{name}_s"] = time.perf_counter() - t0
    if "itemcf" not in models:
        models["itemcf"] = FN.ItemCF(split)  # its transition counts are a ranker feature
    return channels, models, timings, epochs


def recall_stage(args, channels, split, stage, pop_key, n):
    """Every channel's top n for every user at `stage`, and the merged n candidates."""
    hist, _ = split.history(stage, args.max_len)
    seen = split.seen(stage)
    rows = np.arange(split.n_users)
    lists, secs = {}, {}
    for name, ch in channels.items():
        lists[name], secs[name] = FN.timed(FN.retrieve, ch, hist, seen, rows, n, pop_key)
    merged, secs["merge"] = FN.timed(FN.merge, [lists[c] for c in channels], args.quota_list, n)
    ranks = np.stack([FN.ranks_in(merged, lists[c]) for c in channels], axis=-1)  # (U, N, C)
    return hist, lists, merged, ranks, secs


# %% [markdown]
# ## Stage 2 -- ranking on the serving distribution
#
# Impressions come from the merged candidate lists of each user's **validation** step, a period the
# recall models never trained on: the true next item is the click when it was retrieved, 20 other
# candidates drawn uniformly from the same list are non-clicks. The ranker reads item fields (id,
# category, brand, price bucket) and history x candidate crosses; recall ranks are features only
# with `--recall-features` (the ablation shows both).


# %%
def earlier_stage(args, channels, split, pop_key):
    """The merged candidates of each user's last `--rank-steps` training steps (prefix histories):
    more impressions for the ranker. The recall models trained on these steps, so their lists are
    in-sample (easier than at serving); the ranker reads no recall rank or score by default, only
    which items were retrieved, and its count features are taken as of each step."""
    st = FN.earlier_steps(split, args.max_len, args.rank_steps)
    rows = np.arange(len(st["target"]))
    lists = [
        FN.retrieve(ch, st["history"], st["seen"], rows, args.n_candidates, pop_key)
        for ch in channels.values()
    ]
    st["cands"] = FN.merge(lists, args.quota_list, args.n_candidates)
    return st


def ranker_data(args, split, valid, early=None, recall_features=False):
    """The rankers' training impressions and the held-out users they stop on: the merged validation
    lists of 90% of the users (the validation item is the click) plus, with `early` and without
    recall features, the same users' earlier training steps. Every ranker (DIN and its baselines)
    trains and chooses on exactly these; the held-out 10% give none."""
    v_hist, _, v_cands, v_ranks, _ = valid
    held = np.random.default_rng(args.seed).random(split.n_users) < 0.1  # users for early stopping
    targets = split.valid_items
    train_rows = np.nonzero(~held)[0]
    imps = FN.impressions(
        v_hist[train_rows],
        v_cands[train_rows],
        targets[train_rows],
        args.rank_negatives,
        args.seed,
        v_ranks[train_rows] if recall_features else None,
    )
    if early is not None and not recall_features:
        mine = ~held[early["row"]]
        e = FN.impressions(
            early["history"][mine], early["cands"][mine], early["target"][mine],
            args.rank_negatives, args.seed + 1,
        )
        rows = np.nonzero(mine)[0][e["rows"]]
        e["asof"] = tuple(m[rows] for m in early["asof"])
        imps = FN.stack_impressions([imps, e])
    return imps, np.nonzero(held)[0][:1000]


def feature_builder(side, split, models, n_channels, recall_features=False, drop=()):
    return FN.FeatureBuilder(
        side=side,
        item_counts=split.item_counts(),
        transitions=models["itemcf"].transitions,
        recall_features=recall_features,
        n_channels=n_channels,
        drop=drop,
    )


def fit_ranker(args, side, split, models, valid, early=None, recall_features=False, drop=()):
    v_hist, _, v_cands, v_ranks, _ = valid
    fb = feature_builder(side, split, models, v_ranks.shape[-1], recall_features, drop)
    ranker = FN.Ranker(fb, seed=args.seed)
    targets = split.valid_items
    imps, ev = ranker_data(args, split, valid, early, recall_features)

    def evaluate():
        sc = ranker.score(v_hist[ev], v_cands[ev], v_ranks[ev] if recall_features else None)
        order = np.argsort(-sc, axis=1, kind="stable")
        return {
            "NDCG@10": float(
                FN.ndcg_per_user(np.take_along_axis(v_cands[ev], order, 1), targets[ev]).mean()
            )
        }

    hist = FN.train_ranker(
        ranker,
        imps,
        evaluate,
        epochs=args.rank_epochs,
        lr=args.rank_lr,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
    )
    return ranker, hist, len(imps["items"])


def ranking_baselines(args, side, split, models, valid, early, hist, cands, rank_ndcg, targets):
    """The rule, LR and GBDT on the test users' merged candidates, each against DIN paired over
    users: {name: {NDCG@k, din_minus (diff, se), ...}} and their ordered lists."""
    v_hist, _, v_cands, v_ranks, _ = valid
    imps, ev = ranker_data(args, split, valid, early)
    fb = feature_builder(side, split, models, v_ranks.shape[-1])
    out, lists = {}, {}
    t0 = time.perf_counter()
    lists["rule"] = RB.order_by(cands, RB.rule_scores(models["itemcf"].transitions, hist, cands))
    out["rule"] = {"seconds": time.perf_counter() - t0}
    for kind in ("lr", "gbdt"):
        t0 = time.perf_counter()
        r, tried = RB.fit_tabular(
            kind, fb, imps, v_hist[ev], v_cands[ev], split.valid_items[ev], seed=args.seed
        )
        lists[kind] = RB.order_by(cands, r.score(hist, cands))
        out[kind] = {
            "seconds": time.perf_counter() - t0,
            "setting": r.setting,
            "valid_NDCG@10_by_setting": {str(k): v for k, v in tried.items()},
        }
    for name, lst in lists.items():
        nd = FN.ndcg_per_user(lst, targets, args.k)
        d = FN.paired(rank_ndcg, nd)
        out[name].update(
            {
                f"NDCG@{args.k}": float(nd.mean()),
                "din_minus": d,
                "din_wins": bool(d["diff"] > 2 * d["se"]),
            }
        )
    return out, lists


def rank_lists(ranker, hist, cands, ranks):
    scores = ranker.score(hist, cands, ranks if ranker.fb.recall_features else None)
    order = np.argsort(-scores, axis=1, kind="stable")  # ties keep the merged order
    return np.take_along_axis(cands, order, 1), np.take_along_axis(scores, order, 1)


# %% [markdown]
# ## Stage 3 -- re-ranking


# %%
def build_reranker(args):
    if args.rerank == "dpp":
        mod = FN.model_module("Re-ranking", "DPP")
        return mod.DPPReranker(theta=args.theta, max_length=args.k)
    mod = FN.model_module("Re-ranking", "MMR")
    return mod.MMRReranker(lam=args.lam, max_length=args.k)


def rerank_lists(reranker, side, ranked, ranked_scores, depth, chunk=128):
    items = ranked[:, :depth]
    out = []
    for s in range(0, len(items), chunk):
        it = torch.from_numpy(items[s : s + chunk])
        sc = torch.from_numpy(ranked_scores[s : s + chunk, :depth]).double()
        valid = it > 0
        sc = torch.where(
            valid, sc, sc[valid].min() if valid.any() else torch.zeros((), dtype=sc.dtype)
        )
        pos = reranker(
            scores=minmax_scores(sc).float(), item_vectors=side.similarity[it], valid=valid
        ).numpy()
        out.append(pos)
    pos = np.concatenate(out)
    return np.where(pos >= 0, np.take_along_axis(items, np.clip(pos, 0, None), 1), 0)


# %% [markdown]
# ## One request, end to end


# %%
class Funnel:
    """The trained stages behind one call: `recommend(history) -> final k item ids`."""

    def __init__(self, args, channels, ranker, reranker, side, pop_key):
        self.args, self.channels, self.ranker, self.reranker = args, channels, ranker, reranker
        self.side, self.pop_key = side, pop_key

    def recommend(self, history: np.ndarray, timings: dict | None = None) -> np.ndarray:
        """history: (L,) item ids, oldest first (0 = padding). Seen items are never returned."""
        a = self.args
        t = time.perf_counter
        h = np.zeros((1, a.max_len), dtype=np.int64)
        real = history[history > 0][-a.max_len :]
        h[0, a.max_len - len(real) :] = real
        seen_items = np.unique(history[history > 0])
        seen = (np.array([0, len(seen_items)]), seen_items)
        t0 = t()
        lists = [
            FN.retrieve(ch, h, seen, np.array([0]), a.n_candidates, self.pop_key)
            for ch in self.channels.values()
        ]
        t1 = t()
        cands = FN.merge(lists, a.quota_list, a.n_candidates)
        ranks = np.stack([FN.ranks_in(cands, lst) for lst in lists], -1)
        t2 = t()
        ranked, scores = rank_lists(self.ranker, h, cands, ranks)
        t3 = t()
        final = rerank_lists(self.reranker, self.side, ranked, scores, a.rerank_depth)[0]
        t4 = t()
        if timings is not None:
            for key, v in (
                ("recall", t1 - t0),
                ("merge", t2 - t1),
                ("rank", t3 - t2),
                ("rerank", t4 - t3),
                ("total", t4 - t0),
            ):
                timings.setdefault(key, []).append(1000 * v)
        return final


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
    side = FN.item_side(data)
    pop_key = FN.popularity_key(split)
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
        cands = FN.merge(list(lists_n.values()), args.quota_list, n)
        cranks = np.stack([FN.ranks_in(cands, v) for v in lists_n.values()], -1)
    else:
        lists_n = lists
    timings["recall_serve_s"] = sum(secs.values())
    stats = FN.channel_stats(lists_n, cands, targets, args.k)
    ch_ndcg = {c: FN.ndcg_per_user(lists_n[c], targets, args.k) for c in channels}
    # the best single channel is chosen on the validation step, never on test
    valid_ndcg = {
        c: float(FN.ndcg_per_user(valid[1][c], split.valid_items, args.k).mean()) for c in channels
    }
    best = max(valid_ndcg, key=valid_ndcg.get)
    merged_ndcg = FN.ndcg_per_user(cands, targets, args.k)
    print("\nrecall channels (test):")
    for key, v in stats.items():
        print(f"  {key:32s} {v:.4f}")
    print(
        f"  merged order NDCG@{args.k}            {merged_ndcg.mean():.4f}   best channel: {best} "
        f"(chosen on validation NDCG@{args.k}: "
        + ", ".join(f"{c} {v:.4f}" for c, v in valid_ndcg.items())
        + ")"
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
    rank_ndcg = FN.ndcg_per_user(ranked, targets, args.k)
    lift = FN.paired(rank_ndcg, ch_ndcg[best])
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
        print(f"ranking baselines on the same candidates (DIN {rank_ndcg.mean():.4f}; DIN minus "
              "baseline, paired over users):")
        for name, b in baselines.items():
            d = b["din_minus"]
            print(
                f"  {name:5s} NDCG@{args.k} {b[f'NDCG@{args.k}']:.4f}   DIN {d['diff']:+.4f} ± {d['se']:.4f}"
                f"   {'DIN wins (> 2 se)' if b['din_wins'] else 'DIN does NOT win by 2 se'}"
            )

    ablation = {}
    if args.ablation:
        variants = {
            "default": (args.recall_features, ()),
            "with recall ranks": (True, ()),
            "without recall ranks": (False, ()),
            "without brand/price": (args.recall_features, ("side",)),
            "without co-occurrence": (args.recall_features, ("cooccurrence",)),
        }
        sub = np.arange(U)
        if 0 < args.ablation_users < U:  # a random subset of test users, the same for every variant
            sub = np.sort(
                np.random.default_rng(args.seed).choice(U, args.ablation_users, replace=False)
            )
        ablation["users"] = len(sub)
        for vname, (rf, drop) in variants.items():
            if vname == "default" or (rf == args.recall_features and not drop):
                nd, v_nd = rank_ndcg[sub], rank_hist.best_metric
            else:
                r2, h2, _ = fit_ranker(
                    args, side, split, models, valid, early, recall_features=rf, drop=drop
                )
                nd = FN.ndcg_per_user(
                    rank_lists(r2, hist[sub], cands[sub], cranks[sub])[0], targets[sub], args.k
                )
                v_nd = h2.best_metric
            ablation[vname] = {
                # what decides a feature group: the held-out users' validation NDCG@10
                "valid_NDCG@10": float(v_nd),
                f"NDCG@{args.k}": float(nd.mean()),
                "vs_best_channel": FN.paired(nd, ch_ndcg[best][sub]),
                "vs_default": FN.paired(nd, rank_ndcg[sub]),
            }
            print(f"  ablation {vname:24s} validation NDCG@10 {v_nd:.4f}   test NDCG@{args.k} {nd.mean():.4f}")

    # -- stage 3: re-ranking
    reranker = build_reranker(args)
    final, timings["rerank_s"] = FN.timed(
        rerank_lists, reranker, side, ranked, ranked_scores, args.rerank_depth
    )
    final_ndcg = FN.ndcg_per_user(final, targets, args.k)
    cats, cat_sets = item_categories(data), item_category_sets(data)
    labels = (ranked == targets[:, None]).astype(np.float32)
    ones = np.ones(U)
    initial = np.tile(np.arange(args.k), (U, 1))
    after_rank = rerank_metrics(
        initial, ranked, labels, k=args.k, categories=cats, category_sets=cat_sets, n_relevant=ones
    )
    fl = (final == targets[:, None]).astype(np.float32)
    after_rerank = rerank_metrics(
        initial,
        np.where(final > 0, final, 0),
        fl,
        k=args.k,
        categories=cats,
        category_sets=cat_sets,
        n_relevant=ones,
    )
    assert abs(after_rank[f"NDCG@{args.k}"] - rank_ndcg.mean()) < 1e-9
    best_top = lists_n[best]
    dup = {
        stage: FN.near_duplicate_rate(x, side.tokens, args.k)
        for stage, x in (("recall", best_top), ("rank", ranked), ("rerank", final))
    }
    cov_best = rerank_metrics(
        initial,
        best_top,
        (best_top == targets[:, None]).astype(np.float32),
        k=args.k,
        categories=cats,
        category_sets=cat_sets,
        n_relevant=ones,
    )

    # -- what each stage found (planted world only)
    found = {}
    if "truth" in data.extra and "successor_group" in data.extra["truth"]:
        tr = data.extra["truth"]
        last = hist[:, -1]
        follows = tr["item_group"][targets] == tr["successor_group"][last]
        found["share_successor_targets"] = float(follows.mean())
        for c in channels:
            hit = (lists_n[c] == targets[:, None]).any(1)
            found[f"{c}/Recall@{args.n_candidates}|successor"] = float(hit[follows].mean())
            found[f"{c}/Recall@{args.n_candidates}|other"] = float(hit[~follows].mean())
        fav = (
            tr["user_fav_brand"][split.users, np.maximum(tr["item_category"][targets], 0)]
            == tr["item_brand"][targets]
        )
        found["share_favourite_brand_targets"] = float(fav.mean())
        for nm, x in (("best_channel", ch_ndcg[best]), ("rank", rank_ndcg)):
            found[f"{nm}/NDCG@{args.k}|favourite_brand"] = float(x[fav].mean())
            found[f"{nm}/NDCG@{args.k}|other_brand"] = float(x[~fav].mean())
        grp = tr["item_group"]
        for stage, x in (("recall", best_top), ("rank", ranked), ("rerank", final)):
            g = np.where(x[:, : args.k] > 0, grp[x[:, : args.k]], -1 - np.arange(args.k))
            s = np.sort(g, 1)
            found[f"{stage}/same_line_pair@{args.k}"] = float((s[:, 1:] == s[:, :-1]).any(1).mean())

    if found:
        n, k = args.n_candidates, args.k
        print("\nwhat each stage found (planted truth of the funnel world):")
        print(f"  recall: {found['share_successor_targets']:.2f} of the test items follow the last item's "
              "successor line; Recall@N on them (on the others): "
              + ", ".join(f"{c} {found[f'{c}/Recall@{n}|successor']:.2f} "
                          f"({found[f'{c}/Recall@{n}|other']:.2f})" for c in channels))
        print(f"  ranking: NDCG@{k} on favourite-brand test items {found[f'best_channel/NDCG@{k}|favourite_brand']:.4f}"
              f" (best channel) -> {found[f'rank/NDCG@{k}|favourite_brand']:.4f}; on the others "
              f"{found[f'best_channel/NDCG@{k}|other_brand']:.4f} -> {found[f'rank/NDCG@{k}|other_brand']:.4f}")
        print(f"  re-ranking: lists holding two sizes of one product {found[f'recall/same_line_pair@{k}']:.2f}"
              f" (best channel), {found[f'rank/same_line_pair@{k}']:.2f} (ranker), "
              f"{found[f'rerank/same_line_pair@{k}']:.2f} ({args.rerank})")

    # -- the candidate-count trade-off
    sweep = {}
    for n in args.sweep:
        ln = {c: v[:, :n] for c, v in lists.items()}
        cn = FN.merge(list(ln.values()), args.quota_list, n)
        rn = np.stack([FN.ranks_in(cn, v) for v in ln.values()], -1)
        (rk, rs), t_rank = FN.timed(rank_lists, ranker, hist, cn, rn)
        fn_ = rerank_lists(reranker, side, rk, rs, min(args.rerank_depth, n))
        sweep[str(n)] = {
            "ceiling": float((cn == targets[:, None]).any(1).mean()),
            f"rank/NDCG@{args.k}": float(FN.ndcg_per_user(rk, targets, args.k).mean()),
            f"rerank/NDCG@{args.k}": float(FN.ndcg_per_user(fn_, targets, args.k).mean()),
            "rank_s_per_1000_users": 1000 * t_rank / U,
        }
        print(
            f"  N={n:4d}: ceiling {sweep[str(n)]['ceiling']:.4f}  rank NDCG@{args.k} "
            f"{sweep[str(n)][f'rank/NDCG@{args.k}']:.4f}  final {sweep[str(n)][f'rerank/NDCG@{args.k}']:.4f}"
        )

    # -- serving: single requests through every stage
    serving = {}
    if args.serve:
        f = Funnel(args, channels, ranker, reranker, side, pop_key)
        rng = np.random.default_rng(args.seed)
        tm: dict[str, list] = {}
        for r in rng.integers(0, U, args.serve):
            f.recommend(hist[r], tm)
        serving = {k_: FN.percentiles(v) for k_, v in tm.items()}
        print(f"\nserving {args.serve} single requests (ms):")
        for k_, v in serving.items():
            print(f"  {k_:8s} p50 {v['p50_ms']:7.2f}   p95 {v['p95_ms']:7.2f}")
        # the served list equals the batch pipeline's list
        r0 = int(rng.integers(0, U))
        serving["matches_batch"] = bool(np.array_equal(f.recommend(hist[r0]), final[r0]))

    # What each stage did, for a few users
    rng = np.random.default_rng(args.seed)
    for r in rng.choice(U, size=min(args.show_users, U), replace=False):
        print(
            f"\n=== user {data.user_raw[split.users[r]]} (test item: {data.item_text(int(targets[r]))})"
        )
        for i in hist[r][hist[r] > 0][-4:]:
            print(f"    history: {data.item_text(int(i))}")
        for title, x in (
            (f"best channel ({best})", best_top[r]),
            ("after ranking", ranked[r]),
            (f"after re-ranking ({args.rerank})", final[r]),
        ):
            print(f"  {title}:")
            for i in x[: args.k]:
                if i > 0:
                    print(f"    {'*' if i == targets[r] else ' '} {data.item_text(int(i))[:70]}")

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
        "funnel": Funnel(args, channels, ranker, reranker, side, pop_key),
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
