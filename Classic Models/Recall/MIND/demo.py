# %% [markdown]
# # MIND — demo
#
# Train the Multi-Interest Network with Dynamic routing (Li et al., CIKM 2019) on next-item examples,
# evaluate it by full ranking (leave-one-out, seen items excluded) beside popularity, serve it per
# interest through a faiss index and merge, and (on the synthetic data) check that the interest
# capsules recover the interests planted in each user.
#
# CPU command (synthetic default; 23 s wall, 16 s of it training, on one thread of a shared 2-core
# machine at load average 2; 84 s wall when the machine was heavily loaded):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/MIND/demo.py" --threads 1
#
# The note's figures (synthetic data, one run): one user's routing weights w_ij, and what each
# interest retrieves against the interests planted in that user and three others:
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/MIND/demo.py" --threads 1 \
#         --plot-routing assets/MIND/routing_weights_synthetic.png \
#         --plot assets/MIND/interest_capsules_synthetic.png --out assets/MIND/results/synthetic_routing.json
#
# The note's routing walk-through (Algorithm 1 on 4 behaviours in 2-D, 2 interests, 2 iterations;
# prints and exits, no data, no training):
#
#     .venv/bin/python "Classic Models/Recall/MIND/demo.py" --routing-toy
#
# Beauty (the note's Results; 17 epochs, 763 s of training, about 26 min wall on one thread of the
# same loaded machine):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/MIND/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --epochs 40 \
#         --time-budget 1500 --out assets/MIND/results/beauty.json
#
# A file of item ids only (no `*_item2attributes.json` beside it) works too: side features are
# optional in the paper, and MIND then uses the item id alone. Keep the model, reuse it without
# training, show one user's top 10 and interests, export all K interest vectors per user:
#
#     .venv/bin/python "Classic Models/Recall/MIND/demo.py" --threads 1 --save /tmp/mind.pt \
#         --export-vectors /tmp/mind.npz
#     .venv/bin/python "Classic Models/Recall/MIND/demo.py" --threads 1 --load /tmp/mind.pt \
#         --recommend U00001

# %%
import argparse
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import Datasets
from Utils.demo_io import item_label, load_weights, show_recommendations, user_row
from Utils.evaluation import Timer, evaluate_full_ranking, popularity_metrics
from Utils.io import (
    add_common_args,
    load_model_file,
    model_dir,
    positive_float,
    positive_int,
    print_result,
)
from Utils.loops.recall_io import (
    add_recall_io_args,
    check_recall_io_args,
    export_vectors,
    open_recall_checkpoint,
    save_recall_checkpoint,
    widths_arg,
)
from Utils.mips import MipsHNSW
from Utils.retrieval import FaissIndex, recall_vs_exact, topk
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

mind = load_model_file(model_dir("Recall", "MIND") / "model.py", "mind_model")

# %%
parser = add_common_args(argparse.ArgumentParser(description="MIND multi-interest recall demo"),
                         epochs=10, lr=1e-3, batch_size=256)
add_recall_io_args(parser)
parser.add_argument("--dim", type=positive_int, default=64)
parser.add_argument("--interests", type=positive_int, default=4, help="K, the most interests per user")
parser.add_argument("--routing-iters", type=positive_int, default=3)
parser.add_argument("--no-dynamic-k", action="store_true", help="always use K interests")
parser.add_argument("--routing-sigma", type=positive_float, default=1.0,
                    help="std of the fixed random routing logits")
parser.add_argument("--pow-p", type=float, default=2.0, help="p of the label-aware attention (>= 0)")
parser.add_argument("--hidden", type=widths_arg, default="256",
                    help="H-layer widths below the D-wide top layer")
parser.add_argument("--linear-top", action="store_true", help="make the last H layer linear")
parser.add_argument("--weight-decay", type=float, default=0.0)
parser.add_argument("--max-len", type=positive_int, default=50)
parser.add_argument("--max-per-user", type=positive_int, default=50,
                    help="cap on training examples per user")
parser.add_argument("--negatives", type=positive_int, default=1024, help="M items sampled per batch")
parser.add_argument("--neg-alpha", type=float, default=0.75, help="Q ~ (count + 1)^alpha")
parser.add_argument("--patience", type=positive_int, default=3)
parser.add_argument("--eval-every", type=positive_int, default=1)
parser.add_argument("--time-budget", type=positive_float, default=None,
                    help="stop training after N seconds")
parser.add_argument("--plot", default=None, help="interest-recovery figure (synthetic data)")
parser.add_argument("--plot-routing", default=None,
                    help="heatmap of one user's routing weights w_ij, behaviours x interests (PNG)")
parser.add_argument("--routing-toy", action="store_true",
                    help="print the note's routing walk-through (4 behaviours in 2-D, 2 interests, "
                         "2 iterations) and exit: no data, no training")
args = parser.parse_args()


# %% [markdown]
# ## Algorithm 1 by hand (`--routing-toy`, the note's worked example)
# Four behaviours in 2-D, two of one kind (along x) and two of another (along y); K'_u = 2 interests
# (Eq. 8: log2 4 = 2), r = 2 iterations, S = I so that S e_i = e_i. The initial logits b_ij are
# the model's own draw (MINDConfig's seed 0, sigma = 1). Every step is printed, then the same input
# goes through `MIND.b2i_routing()`, which must return the same weights and capsules.

# %%
def routing_toy() -> None:
    """Print Algorithm 1 step by step on a 2-D toy and check it against `b2i_routing()`."""
    toy = mind.MIND(config=mind.MINDConfig(n_items=4, dim=2, max_len=4, n_interests=2,
                                           routing_iters=2, hidden=(2,)))
    e = torch.tensor([[2.0, 0.4], [1.8, -0.2], [0.2, 2.0], [-0.4, 1.6]])  # (L, D) behaviours e_i
    with torch.no_grad():
        toy.bilinear.copy_(torch.eye(2))  # S = I
        low = e @ toy.bilinear  # S e_i: (L, D)
        b = toy.routing_logits.clone()  # (K, L) b_ij ~ N(0, sigma^2), fixed at construction

    def table(name: str, m: torch.Tensor) -> None:  # (K, L): one row per interest
        print(f"  {name:<34}" + "".join(f"{f'e{i + 1}':>7}" for i in range(m.shape[1])))
        for j, row in enumerate(m):
            print(f"    interest {j + 1:<25}" + "".join(f"{float(v):7.2f}" for v in row))

    print("MIND routing toy: 4 behaviours in 2-D, K'_u = 2 interests, r = 2 iterations, S = I")
    print("  behaviours: " + "  ".join(f"e{i + 1} = ({x:.1f}, {y:.1f})" for i, (x, y) in enumerate(e.tolist())))
    table("initial logits b_ij (step 2)", b)
    for it in range(toy.config.routing_iters):
        print(f"iteration {it + 1}")
        w = torch.softmax(b, dim=0)  # Eq. (6): over the interests, per behaviour
        table("w_ij = softmax_j b_ij (Eq. 6)", w)
        z = w @ low  # Eq. (5): (K, L) @ (L, D) -> (K, D)
        u = mind.squash(z)  # Eq. (7)
        for j in range(2):
            print(f"    interest {j + 1}: z_{j + 1} = ({z[j, 0]:.2f}, {z[j, 1]:.2f}) (Eq. 5), "
                  f"u_{j + 1} = squash(z_{j + 1}) = ({u[j, 0]:.2f}, {u[j, 1]:.2f}), "
                  f"|u_{j + 1}| = {float(u[j].norm()):.2f} (Eq. 7)")
        if it < toy.config.routing_iters - 1:
            b = b + u @ low.T  # Eq. (4): (K, D) @ (D, L) -> (K, L)
            table("b_ij + u_j . S e_i (Eq. 4)", b)
    with torch.no_grad():
        capsules, w_model = toy.b2i_routing(e.unsqueeze(0), torch.ones(1, 4, dtype=torch.bool),
                                            torch.tensor([2]))
    gap = max(float((capsules[0] - u).abs().max()), float((w_model[0].T - w).abs().max()))
    print(f"each behaviour's weights sum to {float(w.sum(0).min()):.4f}..{float(w.sum(0).max()):.4f}; "
          f"MIND.b2i_routing() returns the same weights and capsules (largest difference {gap:.1e})")


if args.routing_toy:
    routing_toy()
    raise SystemExit(0)
# flags that shape the model or its inputs: stored by --save, restored by --load
MODEL_FLAGS = ["dim", "interests", "routing_iters", "no_dynamic_k", "routing_sigma", "pow_p", "hidden",
               "linear_top", "max_len"]
check_recall_io_args(args)

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: leave-one-out split, next-item examples, item side features

# %%
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the MIND demo")
split = Datasets.leave_one_out(data)
print(split)
N = split.n_items
ckpt = open_recall_checkpoint(args.load, data, model="MIND", args=args) if args.load else None
rec_row = user_row(split, data, args.recommend) if args.recommend else None  # checked before training
if any(c in data.items for c in ("attributes", "category", "brand")):
    side = data.item_attributes(8)  # (N+1, A): seqtxt attributes, or category + brand codes
    side = side[:, : max(1, int((side > 0).sum(1).max()))]
else:  # side features are optional in the paper: Eq. (2) then pools the id embedding alone
    side = np.zeros((N + 1, 0), dtype=np.int64)
    print(f"side inputs absent in {data.name}: no item attributes, category or brand; MIND uses the "
          "item id alone as its only item feature (Eq. 2 is the id embedding)")
side_vocab_size = int(side.max()) + 1 if side.size and side.max() > 0 else 0
item_side_ids = torch.from_numpy(side) if side_vocab_size else None

examples = split.next_item_examples(args.max_len, max_per_user=args.max_per_user, seed=args.seed)
train_set = Datasets.TensorDictDataset(examples)
print(f"{len(train_set):,} next-item examples" + (f"; item side ids: {side.shape[1]} per item, "
                                                  f"vocabulary {side_vocab_size}" if side_vocab_size else ""))

counts = torch.from_numpy(split.item_counts()).double()
q = (counts + 1.0) ** args.neg_alpha
q[0] = 0.0
q = (q / q.sum()).float()
log_expected = torch.log(args.negatives * q.clamp(min=1e-30)).to(device)

# %% [markdown]
# ## Model and training (label-aware attention, sampled softmax with log-Q correction)

# %%
config = mind.MINDConfig(
    n_items=N, dim=args.dim, side_vocab_size=side_vocab_size, max_len=args.max_len,
    n_interests=args.interests, routing_iters=args.routing_iters, dynamic_k=not args.no_dynamic_k,
    pow_p=args.pow_p, routing_sigma=args.routing_sigma, hidden=args.hidden,
    final_relu=not args.linear_top, seed=args.seed if ckpt is None else ckpt["models"]["model"]["config"]["seed"],
)
model = mind.MIND(config=config, item_side_ids=item_side_ids).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
gen = torch.Generator().manual_seed(args.seed)
print(model)


def train_step(batch):
    interests, active = model.user_tower(history=batch["history"].to(device))
    target = batch["target"].to(device)
    neg = torch.multinomial(q, args.negatives, replacement=True, generator=gen).to(device)
    return model.loss(interests=interests, active=active, target=target, negatives=neg,
                      log_q_target=log_expected[target], log_q_negatives=log_expected[neg])


def score_fn(batch):
    interests, active = model.user_tower(history=batch["history"])
    return model.score_items(interests, active, model.item_tower())  # Eq. (3): max over interests


def evaluate():
    return evaluate_full_ranking(score_fn, split, "valid", max_len=args.max_len, device=device)


if ckpt is not None:  # --load: the saved weights, no training
    if ckpt["models"]["model"]["config"] != asdict(config):
        raise Datasets.DataError(f"--load {args.load}: the checkpoint's model config {ckpt['config']} does "
                                 f"not fit this data ({asdict(config)}); expected the data it was trained on")
    load_weights(model, ckpt["models"]["model"]["state"], args.load)
    epochs_run, best_epoch, train_seconds, samples_per_s = ckpt["extra"]["epochs"], ckpt["extra"]["best_epoch"], 0.0, None
    print(f"loaded {args.load}: trained {epochs_run} epochs, best validation epoch {best_epoch}; "
          "training skipped")
else:
    history = fit(
        model, train_step, lambda epoch: train_set.batches(args.batch_size, generator=gen), optimizer,
        args.epochs, evaluate, metric="NDCG@10", patience=args.patience, eval_every=args.eval_every,
        n_batches=train_set.num_batches(args.batch_size), desc="MIND", time_budget=args.time_budget,
    )
    epochs_run, best_epoch, train_seconds = len(history.epochs), history.best_epoch, history.train_seconds
    samples_per_s = len(train_set) * epochs_run / max(train_seconds, 1e-9)
    print(f"trained {epochs_run} epochs in {train_seconds:.1f}s "
          f"({samples_per_s:,.0f} samples/s), best validation epoch {best_epoch}")

# %% [markdown]
# ## Test: full ranking beside popularity

# %%
model.eval()
with Timer() as t_eval:
    test_metrics = evaluate_full_ranking(score_fn, split, "test", max_len=args.max_len, device=device)
valid_metrics = evaluate()
pop = popularity_metrics(split, "test")
print("test      ", {k: round(v, 4) for k, v in test_metrics.items()})
print("popularity", {k: round(v, 4) for k, v in pop.items()})

# %% [markdown]
# ## Serving: retrieve per interest from a faiss index, merge by score (Eq. 3)

# %%
K_TOP = min(50, N)
hist_t, _ = split.history("test", args.max_len)
with torch.no_grad():
    outs = [model.user_tower(history=torch.from_numpy(hist_t[s:s + 4096]).to(device))
            for s in range(0, len(hist_t), 4096)]
    interests = torch.cat([o[0] for o in outs]).cpu()  # (U, K, D)
    active = torch.cat([o[1] for o in outs]).cpu()  # (U, K)
    item_vecs = model.item_tower().cpu()
U, K, D = interests.shape


def merge(ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Merge per-interest lists (U, K*k) into one top-k per user: an item keeps its best score."""
    out = []
    for s in range(0, len(ids), 1024):
        i, sc = torch.from_numpy(ids[s:s + 1024]), torch.from_numpy(scores[s:s + 1024])
        dense = torch.full((len(i), N + 1), -torch.inf)
        dense.scatter_reduce_(1, i, sc, reduce="amax")  # (b, N+1)
        dense[:, 0] = -torch.inf
        out.append(dense.topk(k, dim=1).indices)
    return torch.cat(out).numpy()


flat = interests.reshape(U * K, D)
with Timer() as t_exact:
    e_ids, e_sc = topk(flat, item_vecs, K_TOP)
    e_sc = e_sc.masked_fill(~active.reshape(-1, 1), -torch.inf)
    exact_ids = merge(e_ids.reshape(U, -1).numpy(), e_sc.reshape(U, -1).numpy(), K_TOP)
ann = {"k": K_TOP, "users": U, "exact_ms_per_user": 1000 * t_exact.seconds / U,
       "mean_active_interests": float(active.sum(1).float().mean())}
indexes = {
    "hnsw-mips": lambda: MipsHNSW(item_vecs, threads=args.threads),  # HNSW in L2 after the MIPS reduction
    "hnsw-ip": lambda: FaissIndex(item_vecs, kind="hnsw", threads=args.threads),  # HNSW on raw e . v
}
for name, build in indexes.items():
    index = build()
    with Timer() as t_ann:
        a_ids, a_sc = index.search(flat, K_TOP)  # one query per interest
        a_sc = np.where(active.reshape(-1, 1).numpy(), a_sc, -np.inf).astype(np.float32)
        ann_ids = merge(a_ids.reshape(U, -1), a_sc.reshape(U, -1), K_TOP)
    ann[name] = {"recall_vs_exact": recall_vs_exact(ann_ids, exact_ids),
                 "ms_per_user": 1000 * t_ann.seconds / U}
    print(f"per-interest retrieval + merge, {name}: recall@{K_TOP} vs exact "
          f"{ann[name]['recall_vs_exact']:.4f}; {ann[name]['ms_per_user']:.3f} ms per user "
          f"(exact {ann['exact_ms_per_user']:.3f} ms); "
          f"{ann['mean_active_interests']:.2f} active interests per user on average")

# %% [markdown]
# ## One user: history, the merged top-10, and what each interest retrieves (`--recommend USER`)

# %%
row = rec_row if args.recommend else int(np.argmax(active.sum(1).numpy() >= 2))
offs, seen = split.seen("test")
with torch.no_grad():
    merged = model.score_items(interests[row:row + 1], active[row:row + 1], item_vecs)[0]  # (N+1,) Eq. (3)
merged[0] = -torch.inf
merged[torch.from_numpy(seen[offs[row]:offs[row + 1]])] = -torch.inf  # seen items excluded
scores, ids = merged.topk(10)
show_recommendations(data, seen[offs[row]:offs[row + 1]].tolist(), ids.tolist(), scores.tolist(),
                     raw_user=str(data.user_raw[split.users[row]]), last=10)
test_item = int(split.test_items[row])
print(f"held-out test item: {item_label(data, test_item)}"
      + ("  (in the top-10)" if test_item in ids.tolist() else ""))
for k in range(int(active[row].sum())):
    k_ids, _ = topk(interests[row, k:k + 1], item_vecs, 5)
    print(f"interest {k + 1} of {int(active[row].sum())}, its top-5:")
    for i in k_ids[0].tolist():
        print("   ", item_label(data, i))

# %% [markdown]
# ## Synthetic data: do the capsules recover the planted interests?
#
# Each synthetic user was generated with 2-4 interest categories. For each active interest vector we
# take its top-20 items and call the interest's category the most common one among them. A planted
# category counts as recovered when some interest of that user lands on it. Not every behaviour of a
# user comes from a planted category: half of the generator's transitions follow the previous item's
# successor, and 30 % of the items have their successor in the paired category (Fragrance <-> Sun
# Care, Hair Care <-> Men's Grooming, ...), so a user planted with Fragrance also buys sun care.

# %%
recovery = None
if "truth" in data.extra:
    truth = data.extra["truth"]
    cats = truth["item_category"] if "item_category" in truth else None
    if cats is None:
        cats = data.item_feature("category") - 1
    cats = np.asarray(cats)  # (N+1,) category index, -1 for padding
    n_cat = int(cats.max()) + 1
    names_c = list(truth["categories"])
    weights_planted = truth["user_interests"][split.users]  # (U, C) Dirichlet weights, 0 = not planted
    planted = weights_planted > 0  # (U, C)
    top_ids, _ = topk(flat, item_vecs, 20)
    top_cat = cats[top_ids.numpy()].reshape(U, K, 20)  # (U, K, 20)
    share = np.stack([(top_cat == c).mean(-1) for c in range(n_cat)], axis=-1)  # (U, K, C)
    main_cat = share.argmax(-1)  # (U, K)
    act = active.numpy()
    found = np.zeros_like(planted)
    for k in range(K):
        found[np.arange(U)[act[:, k]], main_cat[act[:, k], k]] = True
    multi = planted.sum(1) >= 2
    recovered = (found & planted).sum(1) / planted.sum(1)
    precision = np.array([planted[u, main_cat[u, act[u]]].mean() for u in range(U)])
    # the test histories' behaviours per category: (U, C)
    hist_count = np.stack([((cats[hist_t] == c) & (hist_t != 0)).sum(1) for c in range(n_cat)], axis=-1)
    recovery = {"users_with_2plus_planted": int(multi.sum()),
                "planted_recovered": float(recovered[multi].mean()),
                "interest_precision": float(precision[multi].mean()),
                "mean_planted_per_user": float(planted[multi].sum(1).mean()),
                "mean_active_interests": float(act[multi].sum(1).mean()),
                "behaviours_in_planted_categories": float((hist_count * planted).sum() / hist_count.sum())}
    print(f"planted interests recovered by the interests: {recovery['planted_recovered']:.3f} "
          f"over {recovery['users_with_2plus_planted']} users with >= 2 planted interests "
          f"({recovery['mean_planted_per_user']:.2f} planted, "
          f"{recovery['mean_active_interests']:.2f} active per user); "
          f"share of interests that land on a planted category: {recovery['interest_precision']:.3f}; "
          f"share of the behaviours from a planted category: "
          f"{recovery['behaviours_in_planted_categories']:.3f}")

# %% [markdown]
# ## The user the figures show
#
# The rule, in `pick_user()`: a history of 12-16 behaviours (all of them fit the routing figure)
# with at least three active interests; on the synthetic data also at least three planted interests
# with two or more behaviours each in the history, every one of them recovered (some interest of the
# user lands on each), and, among those users, the largest share of behaviours from the planted
# categories (the first on ties). Recovery is not that complete for
# every user (the rate above), so the interests figure shows three more users, the first with at
# least three planted interests, whatever their interests found.

# %%
n_beh = (hist_t > 0).sum(1)  # (U,)


def pick_user() -> int:
    """Row of the user the figures show (the rule above); `row` when no user qualifies."""
    pick = (active.sum(1).numpy() >= 3) & (n_beh >= 12) & (n_beh <= 16)
    if recovery is None:
        return int(np.argmax(pick)) if pick.any() else row
    seen = planted & (hist_count >= 2)  # planted interests the history shows at least twice
    pick &= (seen.sum(1) >= 3) & ~(seen & ~found).any(1)
    from_planted = (hist_count * planted).sum(1) / np.maximum(n_beh, 1)  # (U,)
    return int(np.argmax(np.where(pick, from_planted, -1.0))) if pick.any() else row


def describe_user(u: int) -> list[str]:
    """Planted interests with their weight and behaviour count, and the behaviours from elsewhere."""
    parts = [f"{names_c[c]} {weights_planted[u, c]:.2f} ({hist_count[u, c]} behaviours)"
             for c in np.argsort(-weights_planted[u]) if planted[u, c]]
    other = int(n_beh[u] - (hist_count[u] * planted[u]).sum())
    return parts + [f"{other} behaviours from other categories"]


if recovery is not None and (args.plot or args.plot_routing):
    fig_user = pick_user()
    print(f"the figures' user {split.users[fig_user]}: {int(n_beh[fig_user])} behaviours, K'_u = "
          f"{int(act[fig_user].sum())}; planted: " + "; ".join(describe_user(fig_user)))
    for k in np.nonzero(act[fig_user])[0]:
        c = main_cat[fig_user, k]
        print(f"  interest {k + 1}: top-20 items {share[fig_user, k, c]:.0%} {names_c[c]}"
              + ("  (planted)" if planted[fig_user, c] else ""))

if recovery is not None and args.plot:
    from Utils.plotting import plt  # matplotlib with the Agg backend

    others = [u for u in np.nonzero((act.sum(1) >= 2) & (planted.sum(1) >= 3))[0] if u != fig_user][:3]
    show = [fig_user] + others
    fig, axes = plt.subplots(1, len(show), figsize=(3.0 + 2.1 * len(show), 6.0), dpi=110,
                             sharey=True, gridspec_kw={"wspace": 0.08})
    fig.subplots_adjust(top=0.76, bottom=0.14)
    for n, (ax, u) in enumerate(zip(np.atleast_1d(axes), show)):
        k_act = np.nonzero(act[u])[0]
        cols = [weights_planted[u], hist_count[u] / max(int(n_beh[u]), 1)] + [share[u, k] for k in k_act]
        im = ax.imshow(np.stack(cols, axis=1), aspect="auto", cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(cols)), ["planted weight", "history share"]
                      + [f"interest {k + 1}" for k in k_act], fontsize=7, rotation=90)
        ax.xaxis.tick_top()
        ax.axvline(1.5, color="k", lw=1)
        ax.set_yticks(range(n_cat), names_c, fontsize=8)
        rec = int((found[u] & planted[u]).sum())
        ax.set_xlabel(f"user {split.users[u]}: {int(n_beh[u])} behaviours,\n"
                      f"{rec} of {int(planted[u].sum())} planted recovered"
                      + ("\n(the routing figure's user)" if n == 0 else ""), fontsize=8)
    fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02, label="weight or share")
    fig.suptitle("MIND interests against planted interests, per category (rows): the planted weight, "
                 "the share of the user's behaviours,\nand for each active interest the share of its "
                 "top-20 items", fontsize=9, y=0.99)
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {args.plot} (users {', '.join(str(split.users[u]) for u in show)})")
    for u in show:
        history = ", ".join(f"{names_c[c]} {hist_count[u, c]}" for c in np.argsort(-hist_count[u], kind="stable")
                            if hist_count[u, c])
        print(f"  user {split.users[u]}: history {history}; planted "
              + ", ".join(names_c[c] for c in np.nonzero(planted[u])[0])
              + f"; interests on {', '.join(names_c[main_cat[u, k]] for k in np.nonzero(act[u])[0])}; "
              f"{int((found[u] & planted[u]).sum())} of {int(planted[u].sum())} planted recovered")

# %% [markdown]
# ## One user's routing weights (`--plot-routing PATH`)
#
# Algorithm 1 run on one user's history: the weight w_ij with which each behaviour i (rows, most recent
# last) feeds each active interest j (columns) in the last routing iteration. Each row sums to 1.
# On the synthetic data, behaviours from a category that was not planted in the user are grey.

# %%
if args.plot_routing:
    from Utils.plotting import plt  # matplotlib with the Agg backend

    u = pick_user()
    hist_u = torch.from_numpy(hist_t[u:u + 1]).to(device)  # (1, L)
    mask_u = hist_u != 0
    k_u = (mind.interest_count(mask_u.sum(1), K) if config.dynamic_k
           else torch.full((1,), K, dtype=torch.long, device=device))
    with torch.no_grad():  # the same calls as user_tower(), keeping the weights w_ij
        _, w_u = model.b2i_routing(model.item_embedding(hist_u) * mask_u.unsqueeze(-1), mask_u, k_u)
    real = mask_u[0].cpu().numpy()
    w_show = w_u[0].cpu().numpy()[real][-16:, : int(k_u)]  # (behaviours, K'_u), the last 16
    beh_ids = hist_t[u][real][-16:]
    x_names = [f"interest {k + 1}" for k in range(int(k_u))]
    title = (f"MIND B2I routing weights w_ij after {config.routing_iters} iterations, "
             f"user {split.users[u]} (each row sums to 1)")
    if recovery is not None:  # name each interest by the category of its top-20 items
        x_names = [f"{n}\ntop-20: {share[u, k, main_cat[u, k]]:.0%} {names_c[main_cat[u, k]]}"
                   for k, n in enumerate(x_names)]
        parts = describe_user(u)
        title += ("\nplanted: " + "; ".join(parts[:-1]) + "\n" + parts[-1]
                  + (" (grey)" if not parts[-1].startswith("0 ") else ""))
    fig, ax = plt.subplots(figsize=(4.6 + 1.5 * w_show.shape[1], 2.2 + 0.32 * len(w_show)), dpi=110)
    im = ax.imshow(w_show, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03, label="routing weight w_ij")
    for (r, c), v in np.ndenumerate(w_show):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if v > 0.6 else "black")
    ax.set_xticks(range(len(x_names)), x_names, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(beh_ids)), [data.item_text(int(i)) for i in beh_ids], fontsize=7)
    if recovery is not None:
        for tick, i in zip(ax.get_yticklabels(), beh_ids):
            if not planted[u, cats[int(i)]]:
                tick.set_color("grey")
    ax.set_ylabel("behaviours i (oldest at the top, latest at the bottom)", fontsize=7)
    ax.set_title(title, fontsize=8)
    Path(args.plot_routing).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot_routing, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {args.plot_routing} (user {split.users[u]}, {int(real.sum())} behaviours, "
          f"K'_u = {int(k_u)}; row sums {w_show.sum(1).min():.4f}..{w_show.sum(1).max():.4f})")
    for i, wrow in zip(beh_ids, w_show):
        print("  " + " ".join(f"{v:.2f}" for v in wrow) + f"  {data.item_text(int(i))}")

# %% [markdown]
# ## Save, export (`--save`, `--export-vectors`): written last, after every step succeeded
#
# The vectors file holds all K interest vectors per user, `user_vectors` (U, K, D), and `user_active`
# (U, K): only the first K'_u of Eq. (8) are the user's interests. Serve by one query per active
# interest and merge the lists by score (Eq. (3)), as above.

# %%
if args.export_vectors:
    export_vectors(args.export_vectors, item_vectors=item_vecs, data=data, user_vectors=interests,
                   user_ids=split.users)
    with np.load(args.export_vectors) as z:  # add the active-interest mask, again atomically
        arrays = dict(z)
    arrays["user_active"] = active.numpy()
    tmp = Path(args.export_vectors).with_name(f".{Path(args.export_vectors).stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, args.export_vectors)
    print(f"vectors written to {args.export_vectors}: {N} items, {U} users x {K} interests "
          f"({int(active.sum())} active), D = {D}")
if args.save:
    save_recall_checkpoint(args.save, model, data, name="MIND", config=config, args=args,
                           keys=MODEL_FLAGS, epochs=epochs_run, best_epoch=best_epoch)
    print(f"saved {args.save} (weights, config, id maps); reuse with --load {args.save}")

# %%
# the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
print_result(
    model="MIND", data=args.data,
    protocol=f"leave-one-out, full ranking over {N} items, seen items excluded, test split",
    metrics=test_metrics, baseline={"name": "popularity", "metrics": pop},
    train_seconds=train_seconds, eval_seconds=t_eval.seconds, epochs=epochs_run,
    params=count_params(model), out=args.out, valid_metrics=valid_metrics,
    best_epoch=best_epoch, samples_per_second=samples_per_s, train_examples=len(train_set),
    ann=ann, interest_recovery=recovery, side_features=bool(side_vocab_size), loaded_from=args.load,
    config={k: v for k, v in vars(args).items() if k != "out"},
    threads=torch.get_num_threads(),
)
