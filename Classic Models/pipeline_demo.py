# %% [markdown]
# # The whole funnel: recall -> ranking -> re-ranking
#
# A real three-stage recommender built from this repo's own `model.py` files (imported from their
# folders, never copied):
#
# 1. **Recall** (SASRec or YoutubeDNN) retrieves N candidates per user from the whole catalogue
#    (exact top-K, or a faiss HNSW/IVF index), seen items excluded;
# 2. **Ranking** (DIN or DeepFM) scores those N candidates; it was trained on DIN-paper style
#    impressions from the training split (next item = click, an unseen item = no click);
# 3. **Re-ranking** (DPP or MMR) picks the final 10 from the ranked candidates, trading relevance
#    for diversity (item similarity = shared categories / attributes, what ILD measures).
#
# Each stage only sees the previous stage's output; metrics are reported per stage on the held-out
# test item of every user (leave-one-out).
#
# CPU command (about a minute on 2 cores on the synthetic default):
#
#     python "Classic Models/pipeline_demo.py"
#     python "Classic Models/pipeline_demo.py" --data seqtxt:../shared/data/amazon-beauty/Beauty.txt

# %%
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import Datasets
from Datasets.behavior_ctr import item_field_table
from Datasets.rerank_lists import (
    category_features,
    item_categories,
    item_category_sets,
    minmax_scores,
)
from Utils.evaluation import evaluate_ctr, evaluate_full_ranking, popularity_metrics
from Utils.io import add_common_args, load_model_file, print_result
from Utils.metrics import ndcg_at_k, recall_at_k
from Utils.rerank_eval import rerank_metrics
from Utils.retrieval import FaissIndex, topk
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = Path(__file__).resolve().parent


def load_model_module(stage: str, name: str):
    """Import `Classic Models/<stage>/<name>/model.py` (folder names hold spaces, so no package)."""
    key = f"pipeline_{stage}_{name}".replace("-", "_")
    if key in sys.modules:
        return sys.modules[key]
    return load_model_file(HERE / stage / name / "model.py", key)


def parse_args(argv=None):
    p = add_common_args(argparse.ArgumentParser(description="recall -> ranking -> re-ranking"),
                        epochs=20, batch_size=256, lr=1e-3)
    p.add_argument("--recall", default="sasrec", choices=["sasrec", "youtubednn"])
    p.add_argument("--rank", default="din", choices=["din", "deepfm"])
    p.add_argument("--rerank", default="dpp", choices=["dpp", "mmr"])
    p.add_argument("--n-candidates", type=int, default=200, help="N retrieved by recall")
    p.add_argument("--k", type=int, default=10, help="length of the final list")
    p.add_argument("--index", default="exact", choices=["exact", "hnsw", "ivf"])
    p.add_argument("--theta", type=float, default=0.9, help="DPP relevance-diversity knob")
    p.add_argument("--lam", type=float, default=0.8, help="MMR lambda")
    p.add_argument("--rank-epochs", type=int, default=10)
    p.add_argument("--rank-negatives", type=int, default=8, help="hard negatives per click")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--time-budget", type=float, default=None, help="stop recall training after this many s")
    p.add_argument("--keep-seen", action="store_true", help="do not exclude history items")
    p.add_argument("--show-users", type=int, default=3)
    p.add_argument("--synthetic-users", type=int, default=None, help="shrink the synthetic world")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


# %% [markdown]
# ## Stage 1 — recall

# %%
def train_recall(args, split, device):
    """Train the recall model on the training split; early stopping on validation NDCG@10.
    Returns (user_vectors_fn(history) -> (b, D), item_vectors (N+1, D), model, history)."""
    n_items, L = split.n_items, args.max_len
    if args.recall == "sasrec":
        mod = load_model_module("Recall", "SASRec")
        model = mod.SASRec(mod.SASRecConfig(n_items=n_items, max_len=L, dim=args.dim, n_blocks=2,
                                            n_heads=2, dropout=0.2, loss="ce")).to(device)
        seqs = torch.from_numpy(split.train_sequences(L))  # (U, L+1)
        data = Datasets.TensorDictDataset({"seq": seqs})

        def step(b):
            s = b["seq"].to(device)
            return model.loss(s[:, :-1], s[:, 1:])

        def user_vec(h):
            return model.user_embedding(h[:, -L:])

        def item_vecs():
            return model.item_embeddings()
    else:
        mod = load_model_module("Recall", "YoutubeDNN")
        model = mod.YoutubeDNN(config=mod.YoutubeDNNConfig(n_items=n_items, dim=args.dim,
                                                           use_example_age=False)).to(device)
        data = Datasets.RecallDataset(split, max_len=L, max_per_user=50, seed=args.seed)
        counts = torch.from_numpy(split.item_counts()).double() + 1.0
        counts[0] = 0.0
        q = (counts / counts.sum()).float().to(device)  # sampling distribution Q (popularity)
        n_neg = 512

        def step(b):
            neg = torch.multinomial(q, n_neg, replacement=True)  # (M,) shared by the batch
            t = b["target"].to(device)
            u = model.user_tower(history=b["history"].to(device))
            return model.loss(user_vec=u, target=t, negatives=neg,
                              log_q_target=torch.log(q[t] * n_neg), log_q_negatives=torch.log(q[neg] * n_neg))

        def user_vec(h):
            return model.user_tower(history=h)

        def item_vecs():
            return model.item_tower()

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)

    def evaluate():
        with torch.no_grad():
            iv = item_vecs()
            return evaluate_full_ranking(lambda b: user_vec(b["history"]) @ iv.T, split, "valid",
                                         max_len=L, ks=(10,), device=device)

    hist = fit(model, step, lambda e: data.batches(args.batch_size, generator=g), opt, args.epochs,
               evaluate, metric="NDCG@10", patience=args.patience, progress=not args.quiet,
               desc=f"recall/{args.recall}", n_batches=data.num_batches(args.batch_size),
               time_budget=args.time_budget)
    model.eval()
    return user_vec, item_vecs, model, hist


@torch.no_grad()
def retrieve(args, split, user_vec, item_vectors, device):
    """N candidates per test user from the whole catalogue (seen items excluded unless --keep-seen)."""
    hist, _ = split.history("test", args.max_len)
    uv = torch.cat([user_vec(torch.from_numpy(hist[s:s + 2048]).to(device))
                    for s in range(0, len(hist), 2048)]).cpu()
    iv = item_vectors.detach().cpu()
    exclude = None if args.keep_seen else split.seen("test")
    if args.index == "exact":
        ids, scores = topk(uv, iv, args.n_candidates, exclude=exclude)
        return ids.numpy(), scores.numpy()
    index = FaissIndex(iv, kind=args.index)
    return index.search(uv, args.n_candidates, exclude=exclude)


# %% [markdown]
# ## Stage 2 — ranking
#
# The ranker is trained on impressions that look like what it will score at serving time, from a
# period the recall model never trained on: for each user's **validation** step the recall model
# retrieves its top N candidates, exactly as at serving time; when the true next item is among them it
# is the click and `n_neg` other retrieved candidates are non-clicks (hard negatives). (A ranker
# trained on uniform negatives learns "popular vs random" and cannot order the recall stage's output.)
# Besides the item fields and the behaviour sequence, the ranker sees the candidate's **recall rank**
# (log2-bucketed), as production rankers see their retrieval scores; training and serving draw
# candidates from the same top N, so the rank feature means the same in both. 10% of the users are
# held out for early stopping; the test step is untouched until the end.

# %%
def rank_bucket(rank: torch.Tensor) -> torch.Tensor:
    """1-based recall rank -> bucket 1 + floor(log2(rank)) (1, 2-3, 4-7, ...); rank 0 = not recalled."""
    return torch.where(rank > 0, 1 + torch.log2(rank.clamp_min(1).float()).floor().long(),
                       torch.zeros_like(rank))


N_RANK_BUCKETS = 20  # covers ranks up to 2**19


@torch.no_grad()
def recall_impressions(history: np.ndarray, target: np.ndarray, rows: np.ndarray, user_vec,
                       item_vectors, n_neg: int, top_n: int, seed: int, device) -> Datasets.TensorDictDataset:
    """Impressions (row, history, target, recall_rank, label) from the recall model's top_n, for the
    rows whose target the recall model retrieved (the only ones a ranker ever sees)."""
    rng = np.random.default_rng(seed)
    iv = item_vectors.detach()
    tops, keep = [], []
    for s in range(0, len(history), 2048):
        h = torch.from_numpy(history[s:s + 2048]).to(device)
        sc = user_vec(h) @ iv.T  # (b, D) @ (D, N+1)
        sc[:, 0] = -torch.inf
        sc.scatter_(1, h, -torch.inf)  # never the items already in the history
        top = sc.topk(top_n, dim=1).indices.cpu().numpy()  # (b, top_n) in recall order
        tops.append(top)
    top = np.concatenate(tops)  # (S, top_n)
    hit = top == target[:, None]
    keep = hit.any(1)
    top, hit, target = top[keep], hit[keep], target[keep]
    pos_rank = hit.argmax(1) + 1  # (S',) 1-based
    # n_neg distinct positions among the other top_n candidates, uniformly
    key = rng.random(top.shape)
    key[hit] = 2.0  # never the positive
    neg_pos = np.argsort(key, axis=1)[:, :n_neg]  # (S', n_neg) 0-based
    items = np.concatenate([target[:, None], np.take_along_axis(top, neg_pos, 1)], axis=1)
    ranks = np.concatenate([pos_rank[:, None], neg_pos + 1], axis=1)
    per = items.shape[1]
    label = np.zeros(items.shape, dtype=np.float32)
    label[:, 0] = 1.0
    return Datasets.TensorDictDataset({
        "row": torch.from_numpy(np.repeat(rows[keep], per)),
        "history": torch.from_numpy(np.repeat(history[keep], per, axis=0)),
        "target": torch.from_numpy(items.reshape(-1)),
        "recall_rank": torch.from_numpy(ranks.reshape(-1).astype(np.int64)),
        "label": torch.from_numpy(label.reshape(-1)),
    })


def train_ranker(args, data, split, user_vec, item_vectors, device):
    """Train DIN or DeepFM on recall-stage impressions from the training split.
    Returns score_fn(rows, history (b, L), candidates (b, N)) -> (b, N) logits."""
    L = 20  # behaviours the ranker reads (DIN paper: recent behaviours)
    vh, _ = split.history("valid", args.max_len)
    imps = recall_impressions(vh, split.valid_items, np.arange(split.n_users), user_vec=user_vec,
                              item_vectors=item_vectors, n_neg=args.rank_negatives,
                              top_n=args.n_candidates, seed=args.seed, device=device)
    held = np.random.default_rng(args.seed).random(split.n_users) < 0.1  # users for early stopping
    is_held = torch.from_numpy(held)[imps.tensors["row"]]
    train = Datasets.TensorDictDataset({k: v[~is_held] for k, v in imps.tensors.items()})
    valid = Datasets.TensorDictDataset({k: v[is_held] for k, v in imps.tensors.items()})
    fields = item_field_table(data, n_attributes=2).to(device)  # (n_items+1, G): id, attributes
    if args.rank == "din":
        mod = load_model_module("Ranking", "DIN")
        sizes = tuple(int(fields[:, g].max()) + 1 for g in range(fields.shape[1]))
        model = mod.DIN(item_vocab_sizes=sizes, context_vocab_sizes=(N_RANK_BUCKETS,), dim=16).to(device)

        def logits(rows, history, target, rank):  # history (b, L), target (b,), rank (b,)
            return model(fields[target], fields[history[:, -L:]], rank_bucket(rank)[:, None])
    else:
        mod = load_model_module("Ranking", "DeepFM")
        cat_col = min(1, fields.shape[1] - 1)
        field_dims = (split.n_users + 1, *(int(fields[:, g].max()) + 1 for g in range(fields.shape[1])),
                      int(fields[:, cat_col].max()) + 1, split.n_items + 1, N_RANK_BUCKETS)
        model = mod.DeepFM(mod.DeepFMConfig(field_dims=field_dims)).to(device)

        def logits(rows, history, target, rank):
            last = history[:, -1]  # the most recent item and its category: sequential context
            sparse = torch.cat([(rows + 1)[:, None], fields[target], fields[last, cat_col][:, None],
                                last[:, None], rank_bucket(rank)[:, None]], dim=1)
            return model(sparse)

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)

    def step(b):
        out = logits(b["row"].to(device), b["history"].to(device), b["target"].to(device),
                     b["recall_rank"].to(device))
        return F.binary_cross_entropy_with_logits(out, b["label"].to(device))

    @torch.no_grad()
    def evaluate():
        outs = [logits(b["row"].to(device), b["history"].to(device), b["target"].to(device),
                       b["recall_rank"].to(device)).cpu() for b in valid.batches(4096, shuffle=False)]
        return evaluate_ctr(valid.tensors["label"].numpy(), torch.sigmoid(torch.cat(outs)).numpy())

    bs = args.batch_size
    drop = len(train) > bs  # Dice / batch norm need more than one sample per batch
    hist = fit(model, step, lambda e: train.batches(bs, generator=g, drop_last=drop), opt,
               args.rank_epochs, evaluate, metric="AUC", patience=2, progress=not args.quiet,
               desc=f"rank/{args.rank}",
               n_batches=train.num_batches(bs, drop_last=drop))
    model.eval()

    @torch.no_grad()
    def score(rows, history, candidates):
        b, n = candidates.shape
        rank = torch.arange(1, n + 1, device=candidates.device).repeat(b)  # candidates in recall order
        out = logits(rows.repeat_interleave(n), history.repeat_interleave(n, dim=0), candidates.reshape(-1),
                     rank)
        return out.reshape(b, n)

    return score, model, hist


# %% [markdown]
# ## Stage 3 — re-ranking

# %%
def build_reranker(args):
    if args.rerank == "dpp":
        mod = load_model_module("Re-ranking", "DPP")
        return mod.DPPReranker(theta=args.theta, max_length=args.k)
    mod = load_model_module("Re-ranking", "MMR")
    return mod.MMRReranker(lam=args.lam, max_length=args.k)


# %%
def run(args) -> dict:
    cpu_setup(args.threads)
    set_seed(args.seed)
    device = pick_device(args.device)
    if args.data.startswith("synthetic") and args.synthetic_users:
        from Datasets.synthetic import SyntheticConfig, load_synthetic
        seed = int(args.data.split(":")[1]) if ":" in args.data else 0
        data = load_synthetic(seed, SyntheticConfig(n_users=args.synthetic_users,
                                                    n_items=max(240, args.synthetic_users // 2)))
    else:
        data = Datasets.load(args.data)
    split = Datasets.leave_one_out(data)
    if args.n_candidates > split.n_items:
        raise ValueError(f"--n-candidates {args.n_candidates} exceeds the catalogue ({split.n_items})")
    if args.k > args.n_candidates:
        raise ValueError(f"--k {args.k} must not exceed --n-candidates {args.n_candidates}")
    print(data)
    print(split)
    timings = {}
    targets = split.test_items

    # -- stage 1
    t0 = time.perf_counter()
    user_vec, item_vecs, recall_model, recall_hist = train_recall(args, split, device)
    timings["recall_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cand, cand_scores = retrieve(args, split, user_vec, item_vecs(), device)
    timings["recall_serve_s"] = time.perf_counter() - t0
    in_cand = (cand == targets[:, None])
    recall_at_n = float(in_cand.any(1).mean())

    # -- stage 2
    t0 = time.perf_counter()
    score_fn, rank_model, rank_hist = train_ranker(args, data, split, user_vec, item_vecs(), device)
    timings["rank_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hist_test, _ = split.history("test", args.max_len)
    rank_scores = np.concatenate([
        score_fn(torch.arange(s, min(s + 256, split.n_users), device=device),
                 torch.from_numpy(hist_test[s:s + 256]).to(device),
                 torch.from_numpy(cand[s:s + 256]).to(device)).cpu().numpy()
        for s in range(0, split.n_users, 256)])
    rank_scores = np.where(cand > 0, rank_scores, -np.inf)  # padded candidates (ANN ran short)
    order = np.argsort(-rank_scores, axis=1, kind="stable")
    ranked = np.take_along_axis(cand, order, axis=1)  # candidates in ranker order
    ranked_scores = np.take_along_axis(rank_scores, order, axis=1)
    timings["rank_serve_s"] = time.perf_counter() - t0
    hit = ranked == targets[:, None]
    rank_pos = np.where(hit.any(1), hit.argmax(1) + 1, split.n_items + 1)  # miss = beyond the list

    # -- stage 3
    t0 = time.perf_counter()
    reranker = build_reranker(args)
    feats = category_features(data)  # (n_items+1, C) multi-hot: similarity = shared categories
    labels = hit.astype(np.float32)
    finals = []
    for s in range(0, split.n_users, 512):
        items_b = torch.from_numpy(ranked[s:s + 512])
        sc = torch.from_numpy(ranked_scores[s:s + 512]).float()
        valid = items_b > 0
        sc = torch.where(valid, sc, sc[valid].min() if valid.any() else torch.zeros(()))
        sc = minmax_scores(sc)  # relevance in [0, 1] per list, so theta / lambda mean the same everywhere
        finals.append(reranker(scores=sc, item_vectors=feats[items_b], valid=valid).numpy())
    positions = np.concatenate(finals)
    timings["rerank_s"] = time.perf_counter() - t0
    final = np.where(positions >= 0, np.take_along_axis(ranked, np.clip(positions, 0, None), 1), 0)

    cats, cat_sets = item_categories(data), item_category_sets(data)
    ones = np.ones(split.n_users)
    initial = np.tile(np.arange(args.k), (split.n_users, 1))
    after_rank = rerank_metrics(initial, ranked, labels, k=args.k, categories=cats,
                                category_sets=cat_sets, n_relevant=ones)
    after_rerank = rerank_metrics(positions, ranked, labels, k=args.k, categories=cats,
                                  category_sets=cat_sets, n_relevant=ones)
    recall_only = rerank_metrics(initial, cand, (cand == targets[:, None]).astype(np.float32), k=args.k,
                                 categories=cats, category_sets=cat_sets, n_relevant=ones)
    assert abs(after_rank[f"NDCG@{args.k}"] - ndcg_at_k(rank_pos, args.k)) < 1e-9
    assert abs(after_rank[f"Recall@{args.k}"] - recall_at_k(rank_pos, args.k)) < 1e-9
    pop = popularity_metrics(split, "test", ks=(args.k, args.n_candidates), exclude_seen=not args.keep_seen)

    # %% [markdown]
    # ## What each stage did, for a few users
    # %%
    rng = np.random.default_rng(args.seed)
    for r in rng.choice(split.n_users, size=min(args.show_users, split.n_users), replace=False):
        print(f"\n=== user {data.user_raw[split.users[r]]} (test item: {data.item_text(int(targets[r]))})")
        h = hist_test[r][hist_test[r] > 0][-5:]
        print("  recent history:")
        for i in h:
            print(f"    - {data.item_text(int(i))}")
        print(f"  after ranking (top {args.k} of {args.n_candidates} recalled):")
        for i in ranked[r, :args.k]:
            print(f"    {'*' if i == targets[r] else ' '} {data.item_text(int(i))}")
        print(f"  after re-ranking ({args.rerank}):")
        for i in final[r]:
            if i > 0:
                print(f"    {'*' if i == targets[r] else ' '} {data.item_text(int(i))}")

    metrics = {
        f"recall/Recall@{args.n_candidates}": recall_at_n,
        f"recall/NDCG@{args.k}": recall_only[f"NDCG@{args.k}"],
        f"rank/NDCG@{args.k}": after_rank[f"NDCG@{args.k}"],
        f"rank/Recall@{args.k}": after_rank[f"Recall@{args.k}"],
        f"rank/ILD@{args.k}": after_rank[f"ILD@{args.k}"],
        f"rank/Coverage@{args.k}": after_rank[f"Coverage@{args.k}"],
        "rank/valid_AUC": rank_hist.best_metric,
        f"rerank/NDCG@{args.k}": after_rerank[f"NDCG@{args.k}"],
        f"rerank/Recall@{args.k}": after_rerank[f"Recall@{args.k}"],
        f"rerank/ILD@{args.k}": after_rerank[f"ILD@{args.k}"],
        f"rerank/Coverage@{args.k}": after_rerank[f"Coverage@{args.k}"],
    }
    print("\nper stage:")
    for k_, v in metrics.items():
        print(f"  {k_:24s} {v:.4f}")
    print("timings (s):", {k_: round(v, 1) for k_, v in timings.items()})
    excl = "seen items kept" if args.keep_seen else "seen items excluded"
    result = print_result(
        model=f"Pipeline({args.recall}->{args.rank}->{args.rerank})", data=args.data,
        protocol=(f"leave-one-out test item; recall: full catalogue ({split.n_items} items, {excl}, "
                  f"{args.index}) -> top {args.n_candidates}; rank -> re-rank -> top {args.k}"),
        metrics=metrics,
        baseline={"name": "Popularity", "metrics": {f"Recall@{args.n_candidates}": pop[f"Recall@{args.n_candidates}"],
                                                    f"NDCG@{args.k}": pop[f"NDCG@{args.k}"],
                                                    f"Recall@{args.k}": pop[f"Recall@{args.k}"]}},
        train_seconds=timings["recall_train_s"] + timings["rank_train_s"],
        eval_seconds=timings["recall_serve_s"] + timings["rank_serve_s"] + timings["rerank_s"],
        epochs=len(recall_hist.epochs), params=count_params(recall_model) + count_params(rank_model),
        out=args.out, timings=timings,
    )
    return {"result": result, "candidates": cand, "ranked": ranked, "final": final, "split": split,
            "data": data}


if __name__ == "__main__":
    run(parse_args())
