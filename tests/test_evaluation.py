"""Chunked full-ranking evaluation, retrieval and the training loop."""

import numpy as np
import pytest
import torch

from Datasets import leave_one_out, load
from Utils import metrics as M
from Utils.evaluation import csr_mask, evaluate_full_ranking, popularity_metrics, target_ranks
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


def test_pick_device():
    assert pick_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
