"""Chunked full-ranking evaluation, retrieval and the training loop."""

import copy

import numpy as np
import pytest
import torch

from Datasets import leave_one_out, load
from Utils import metrics as M
from Utils.evaluation import (
    csr_mask,
    csr_pairs,
    dot_ranks,
    evaluate_embeddings,
    evaluate_full_ranking,
    popularity_metrics,
    sparse_target_ranks,
    target_ranks,
    topk_chunked,
)
from Utils.retrieval import FaissIndex, recall_vs_exact, topk
from Utils.training import fit, pick_device


@pytest.fixture(scope="module")
def split():
    return leave_one_out(load("synthetic"))


def test_chunked_evaluation_equals_one_shot(split):
    rng = torch.Generator().manual_seed(0)
    table = torch.rand(split.n_users, split.n_items + 1, generator=rng)

    def score(b):
        return table[b["row"]]

    small = evaluate_full_ranking(score, split, "test", batch_size=37)
    big = evaluate_full_ranking(score, split, "test", batch_size=100_000)
    assert small == big
    # brute force
    offsets, items = split.seen("test")
    excl = csr_mask(offsets, items, np.arange(split.n_users), split.n_items + 1)
    ranks = target_ranks(table, torch.from_numpy(split.test_items), excl).numpy()
    assert small["NDCG@10"] == pytest.approx(M.ndcg_at_k(ranks, 10))


def test_evaluation_scores_only_what_score_fn_sees(split):
    """An oracle that scores the target highest gets perfect metrics; the history fed to it never
    contains the target it must predict (no leak)."""
    targets = torch.from_numpy(split.test_items)

    def oracle(b):
        s = torch.zeros(len(b["row"]), split.n_items + 1)
        s[torch.arange(len(b["row"])), targets[b["row"]]] = 1.0
        return s

    out = evaluate_full_ranking(oracle, split, "test")
    assert out["Recall@5"] == pytest.approx(1.0 - 0.0, abs=0.02)  # only repeat purchases can miss


def test_popularity_beats_random_on_synthetic(split):
    pop = popularity_metrics(split, "test")
    g = torch.Generator().manual_seed(1)
    rnd = evaluate_full_ranking(lambda b: torch.rand(len(b["row"]), split.n_items + 1, generator=g),
                                split, "test")
    assert pop["Recall@10"] > 2 * rnd["Recall@10"]


def test_popularity_is_the_training_counts_for_every_user(split):
    """popularity_metrics (a dot product with counts, item-chunked on big catalogues) ranks exactly
    as the counts themselves would, also when restricted to some users."""
    counts = torch.from_numpy(split.item_counts()).float()
    rows = np.arange(0, split.n_users, 3)
    for stage in ("valid", "test"):
        for exclude in (True, False):
            ref = evaluate_full_ranking(lambda b: counts.expand(len(b["row"]), -1), split, stage,
                                        exclude_seen=exclude, users=rows)
            assert popularity_metrics(split, stage, exclude_seen=exclude, users=rows) == ref


def test_wrong_score_shape_is_clear(split):
    with pytest.raises(ValueError, match="n_items"):
        evaluate_full_ranking(lambda b: torch.zeros(len(b["row"]), 3), split, "valid")


def test_exact_topk_matches_brute_force_and_excludes():
    g = torch.Generator().manual_seed(0)
    U, N, D = 50, 300, 8
    users, items = torch.randn(U, D, generator=g), torch.randn(N + 1, D, generator=g)
    offsets = np.arange(0, 3 * U + 1, 3)
    seen = np.random.default_rng(0).integers(1, N + 1, 3 * U)
    ids, _ = topk(users, items, 10, exclude=(offsets, seen), memory_budget_mb=0)  # 1-row chunks
    full = users @ items.T
    full[:, 0] = -torch.inf
    full[csr_mask(offsets, seen, np.arange(U), N + 1)] = -torch.inf
    ref = full.topk(10, dim=1).indices
    assert torch.equal(ids, ref)
    assert not np.isin(ids[0].numpy(), seen[:3]).any()


def test_faiss_index_agrees_with_exact():
    g = torch.Generator().manual_seed(0)
    items = torch.randn(2001, 16, generator=g)
    q = torch.randn(100, 16, generator=g)
    exact, _ = topk(q, items, 20)
    for kind in ("flat", "hnsw", "ivf"):
        ids, _ = FaissIndex(items, kind=kind, nprobe=64).search(q, 20)
        r = recall_vs_exact(ids, exact.numpy())
        assert r > (0.999 if kind == "flat" else 0.8), (kind, r)
        assert ids.min() >= 1  # never the padding row


def test_memory_bounded_topk_large_catalogue():
    """1,000,000 items x 64 dims for a handful of users: chunks keep memory to the budget."""
    items = torch.randn(1_000_001, 64)
    q = torch.randn(10, 64)
    ids, sc = topk(q, items, 5, memory_budget_mb=16)  # 4 users per chunk
    assert ids.shape == (10, 5) and torch.all(sc[:, :-1] >= sc[:, 1:])


# ---- chunked over items as well as users (catalogues of millions) ----------------------------------


def _int_vectors(n_rows, dim, seed):
    """Small integer coordinates: every score is exact in float32 and ties are everywhere."""
    return torch.randint(-2, 3, (n_rows, dim), generator=torch.Generator().manual_seed(seed)).float()


def test_sparse_exclusion_ranks_equal_the_dense_mask():
    """Exclusions as (row, item) pairs give target_ranks' numbers: repeats and padding in the CSR,
    an excluded target (a miss), ties, infinite scores."""
    g = torch.Generator().manual_seed(3)
    b, n1 = 40, 30
    scores = torch.randint(0, 4, (b, n1), generator=g).float()
    scores[0, 5], scores[1, :] = torch.inf, -torch.inf
    target = torch.randint(1, n1, (b,), generator=g)
    offsets = np.arange(0, 6 * b + 1, 6)
    items = np.random.default_rng(3).integers(0, n1, 6 * b)  # repeats and item 0 included
    items[6 * 2] = target[2].item()  # row 2's target is a seen item
    dense = target_ranks(scores, target, csr_mask(offsets, items, np.arange(b), n1))
    sparse = sparse_target_ranks(scores, target, csr_pairs(offsets, items, np.arange(b)))
    assert torch.equal(dense, sparse)
    assert sparse[2] == n1  # the excluded target is a miss
    assert torch.equal(target_ranks(scores, target), sparse_target_ranks(scores, target))


@pytest.mark.parametrize("item_chunk", [7, 64, 5000])
def test_item_chunked_ranks_equal_one_block(split, item_chunk):
    """dot_ranks scans the catalogue chunk by chunk and must give the ranks of one (b, N+1) block:
    with integer vectors every score is exact and ties are many (the pessimistic rule is tested)."""
    U = _int_vectors(split.n_users, 6, 0)
    V = _int_vectors(split.n_items + 1, 6, 1)
    offsets, seen = split.seen("test")
    brute = target_ranks(U @ V.T, torch.from_numpy(split.test_items),
                         csr_mask(offsets, seen, np.arange(split.n_users), split.n_items + 1)).numpy()
    for stage, exclude in (("test", True), ("valid", False)):
        one, r_one = evaluate_embeddings(lambda b: U[b["row"]], V, split, stage, exclude_seen=exclude,
                                         return_ranks=True)
        chunked, r_chunked = evaluate_embeddings(lambda b: U[b["row"]], V, split, stage, exclude_seen=exclude,
                                                 item_chunk=item_chunk, batch_size=300, return_ranks=True)
        assert np.array_equal(r_one, r_chunked) and one == chunked
        if stage == "test":
            assert np.array_equal(r_chunked, brute)


def test_item_chunked_ranks_on_float_vectors_and_copies_of_the_target():
    """Float vectors: the ranks are exact for the float32 scores the chunks compute (a (b, D) @ (D, c)
    product may round a score differently from a (b, D) @ (D, N+1) one, so that is the reference).
    Items that are copies of the target tie with it and count against it, in whichever chunk."""
    g = torch.Generator().manual_seed(5)
    U, V = torch.randn(64, 16, generator=g), torch.randn(1001, 16, generator=g)
    target = torch.randint(1, 1001, (64,), generator=g)
    for chunk in (1, 10, 333, 1001):
        scores = torch.cat([U @ V[a:a + chunk].T for a in range(0, 1001, chunk)], dim=1)
        assert torch.equal(dot_ranks(U, V, target, item_chunk=chunk), target_ranks(scores, target))
    U, V = torch.round(U * 8) / 8, torch.round(V * 8) / 8  # eighths: every sum below is exact
    V[900:] = V[target[0]]  # 101 copies of user 0's target, in the last chunks
    for chunk in (1, 10, 333):
        ranks = dot_ranks(U, V, target, item_chunk=chunk)
        assert torch.equal(ranks, target_ranks(U @ V.T, target))
        assert ranks[0] >= 101  # every copy counts against the target


def _dyadic(x):
    """Multiples of 1/256 in [-4, 4]: sums of 8 products are exact in float32, so every way of
    cutting the matmul gives the same scores."""
    return torch.round(x.clamp(-4, 4) * 256) / 256


def test_item_chunked_path_refuses_non_finite_vectors(split):
    U, V = _int_vectors(split.n_users, 4, 0), _int_vectors(split.n_items + 1, 4, 1)
    bad_items, bad_users = V.clone(), U.clone()
    bad_items[7, 2], bad_users[3, 0] = torch.nan, torch.inf
    for users, items in ((U, bad_items), (bad_users, V)):
        with pytest.raises(ValueError, match="NaN"):
            evaluate_embeddings(lambda b, users=users: users[b["row"]], items, split, "valid", item_chunk=100)


def test_item_chunked_topk_equals_one_block_topk():
    g = torch.Generator().manual_seed(0)
    U, N = 50, 700
    users, items = _dyadic(torch.randn(U, 8, generator=g)), _dyadic(torch.randn(N + 1, 8, generator=g))
    offsets = np.arange(0, 4 * U + 1, 4)
    seen = np.random.default_rng(0).integers(1, N + 1, 4 * U)
    ref_ids, ref_sc = topk(users, items, 20, exclude=(offsets, seen))
    for item_chunk in (1, 9, 64, 701):
        ids, sc = topk_chunked(users, items, 20, exclude=(offsets, seen), item_chunk=item_chunk, user_chunk=17)
        assert torch.equal(ids, ref_ids) and torch.equal(sc, ref_sc), item_chunk
    # ties everywhere (integer vectors): the scores are the same multiset; the ids are valid and unseen
    users, items = _int_vectors(U, 4, 2), _int_vectors(N + 1, 4, 3)
    _, ref_sc = topk(users, items, 20, exclude=(offsets, seen))
    ids, sc = topk_chunked(users, items, 20, exclude=(offsets, seen), item_chunk=13)
    assert torch.equal(sc, ref_sc)
    assert torch.equal((users[:, None, :] * items[ids]).sum(-1), sc)  # each id carries its score
    seen_mask = csr_mask(offsets, seen, np.arange(U), N + 1)
    assert not seen_mask.gather(1, ids).any() and ids.min() >= 1
    assert all(len(set(r)) == 20 for r in ids.tolist())
    # a row with fewer eligible items than k ends in id 0 / -inf
    ids, sc = topk_chunked(users[:1], items[:4], 3, exclude=(np.array([0, 1]), np.array([2])), item_chunk=2)
    assert ids[0, -1] == 0 and torch.isneginf(sc[0, -1]) and sorted(ids[0, :2].tolist()) == [1, 3]


def test_item_chunked_paths_never_hold_users_x_items():
    """Every score block the chunked paths compute is at most (user batch) x (item chunk)."""
    from torch.overrides import TorchFunctionMode

    class Largest(TorchFunctionMode):
        numel = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__) and isinstance(out, torch.Tensor):
                Largest.numel = max(Largest.numel, out.numel())
            return out

    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(100, 8, generator=g), torch.randn(5001, 8, generator=g)
    target = torch.randint(1, 5001, (100,), generator=g)
    with Largest():
        dot_ranks(users, items, target, item_chunk=512)
        topk_chunked(users, items, 10, user_chunk=30, item_chunk=512)
    assert 0 < Largest.numel <= 100 * 512
    with Largest():
        (users @ items.T).sum()
    assert Largest.numel == 100 * 5001  # the recorder sees a full block when there is one


def test_evaluation_sharded_over_users_gathers_to_the_same_metrics(split):
    """What a data-parallel evaluation does: each process ranks its own users (`users=`), the ranks
    are gathered in user order, and the metrics equal one process's, exactly (ranks are integers)."""
    U, V = _int_vectors(split.n_users, 6, 7), _int_vectors(split.n_items + 1, 6, 8)

    def user_fn(b):  # reads the batch's history and its timestamps too, which a shard cuts itself
        return U[b["row"]] + V[b["history"][:, -1]] * (b["history_ts"][:, -1:] > 0)

    one, r_one = evaluate_embeddings(user_fn, V, split, "test", return_ranks=True)
    rows = np.arange(split.n_users)
    shards = [evaluate_embeddings(user_fn, V, split, "test", users=rows[k::3], item_chunk=50,
                                  return_ranks=True)[1] for k in range(3)]
    gathered = np.empty(split.n_users)
    for k, r in enumerate(shards):
        gathered[rows[k::3]] = r
    assert np.array_equal(gathered, r_one) and M.ranking_metrics(gathered, (5, 10, 20, 50)) == one


@pytest.mark.slow  # builds the 1M-item world (~25 s, 1.5 GB)
def test_million_item_catalogue_ranks_equal_brute_force():
    s = leave_one_out(load("synthetic:scale=1m"))
    g = torch.Generator().manual_seed(0)
    U = torch.randn(s.n_users, 32, generator=g)
    V = torch.randn(s.n_items + 1, 32, generator=g)
    rows = np.arange(0, s.n_users, s.n_users // 64)[:64]
    _, r = evaluate_embeddings(lambda b: U[b["row"]], V, s, "test", users=rows, return_ranks=True)
    offsets, seen = s.seen("test")
    brute = target_ranks(U[rows] @ V.T, torch.from_numpy(s.test_items[rows]),
                         csr_mask(offsets, seen, rows, s.n_items + 1)).numpy()
    assert np.array_equal(r, brute)


def test_fit_nan_loss_is_a_clear_error():
    m = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        fit(m, lambda b: m(b).sum() * float("nan"), lambda e: [torch.ones(1, 2)], opt, 1, progress=False)


def test_fit_early_stops_and_restores_best():
    m = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(m.weight)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9])
    seen_w = []

    def evaluate():
        seen_w.append(m.weight.item())
        return {"NDCG@10": next(scores)}

    h = fit(m, lambda b: -(m(b)).sum(), lambda e: [torch.ones(1, 1)], opt, 5, evaluate, patience=2,
            progress=False)
    assert h.best_epoch == 2 and h.stopped_early and len(h.epochs) == 4
    assert m.weight.item() == pytest.approx(seen_w[1])  # the best state is back


def _resumable_run(epochs, resume=None, snapshots=None, patience=2):
    """A run whose every step draws from the global torch RNG (dropout) and whose optimiser has
    state (Adam), validated on a metric that peaks at epoch 2: everything fit must carry over."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    x = torch.arange(12.0).view(3, 4) / 10
    metric = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.8][(resume["epoch"] if resume else 0):])
    h = fit(m, lambda b: m(b).pow(2).mean(), lambda e: [x, x.flip(0)], opt, epochs,
            lambda: {"NDCG@10": next(metric)}, patience=patience, progress=False,
            on_epoch_end=(lambda s: snapshots.append(copy.deepcopy(s))) if snapshots is not None else None,
            resume=resume)
    return m, h


def test_fit_resumed_from_an_epoch_snapshot_ends_as_the_uninterrupted_run():
    whole, h_whole = _resumable_run(6)
    assert h_whole.stopped_early and len(h_whole.epochs) == 4 and h_whole.best_epoch == 2
    snaps = []
    _resumable_run(6, snapshots=snaps)
    assert [s["epoch"] for s in snaps] == [1, 2, 3, 4] and snaps[-1]["stopped"]
    for cut in (1, 3):  # interrupted after epoch 1 (still improving) or 3 (one evaluation without gain)
        resumed, h = _resumable_run(6, resume=snaps[cut - 1])
        assert [e["loss"] for e in h.epochs] == [e["loss"] for e in h_whole.epochs]  # same dropout draws
        assert len(h.epochs) == 4 and h.stopped_early and h.best_epoch == 2  # same patience count
        for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()):
            assert torch.equal(a, b)  # the best state (epoch 2) restored in both
    _, h = _resumable_run(6, resume=snaps[-1])  # a run that had stopped does not train on
    assert len(h.epochs) == 4 and h.epochs == snaps[-1]["history"]["epochs"]


def test_a_run_stopped_by_its_time_budget_goes_on_with_a_larger_one():
    """--time-budget stops a run after the epoch that spends it; resumed with a larger budget it
    trains on from the next epoch, with a smaller or equal one it stays stopped."""
    def run(budget, resume=None, snaps=None):
        torch.manual_seed(0)
        m = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        x = torch.ones(2, 4)
        return fit(m, lambda b: m(b).pow(2).mean(), lambda e: [x], opt, 5, None, progress=False,
                   time_budget=budget, resume=resume,
                   on_epoch_end=(lambda s: snaps.append(copy.deepcopy(s))) if snaps is not None
                   else None)

    snaps = []
    h = run(1e-9, snaps=snaps)  # any epoch spends the budget: one epoch, then stopped
    assert len(h.epochs) == 1 and snaps[-1]["stopped"] and not h.stopped_early
    assert len(run(1e-9, resume=snaps[-1]).epochs) == 1  # the same budget: stays stopped
    more = run(None, resume=snaps[-1])  # no budget: trains on to the last epoch
    assert [e["epoch"] for e in more.epochs] == [1, 2, 3, 4, 5]


def test_pick_device():
    assert pick_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
