"""Utils.metrics against scikit-learn and hand-computed cases; pessimistic ties."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import ndcg_score, roc_auc_score

from Utils import metrics as M
from Utils.evaluation import target_ranks


def test_auc_matches_sklearn_tie_free():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 200))
        y = rng.integers(0, 2, n)
        y[0], y[1] = 0, 1
        s = rng.normal(size=n)
        assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_with_ties_gives_half_credit_like_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(5, 100))
        y = rng.integers(0, 2, n)
        y[0], y[1] = 0, 1
        s = rng.integers(0, 4, n).astype(float)  # heavy ties
        assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auc([0, 1], [0.3, 0.3]) == 0.5


def test_log_loss_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    p = rng.uniform(0.01, 0.99, 500)
    assert M.log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-9)


def test_ndcg_single_positive_matches_sklearn():
    """With one relevant item, NDCG@k from the rank equals sklearn's ndcg_score on the full scores."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        n, k = 50, int(rng.integers(1, 20))
        scores = rng.normal(size=(1, n))
        rel = np.zeros((1, n))
        t = int(rng.integers(n))
        rel[0, t] = 1
        rank = 1 + int((scores[0] > scores[0, t]).sum())
        assert M.ndcg_at_k([rank], k) == pytest.approx(ndcg_score(rel, scores, k=k), abs=1e-12)


def test_ndcg_lists_matches_sklearn_graded():
    rng = np.random.default_rng(4)
    for _ in range(30):
        n, k = 20, int(rng.integers(1, 20))
        scores = rng.normal(size=(3, n))
        rel = rng.integers(0, 4, size=(3, n)).astype(float)
        order = np.argsort(-scores, axis=1)
        shown = np.take_along_axis(rel, order, axis=1)
        assert M.ndcg_at_k_lists(shown, k) == pytest.approx(ndcg_score(rel, scores, k=k), abs=1e-9)


def test_hand_computed_recall_ndcg_mrr():
    ranks = np.array([1, 3, 11, 2])
    assert M.recall_at_k(ranks, 1) == 0.25
    assert M.recall_at_k(ranks, 10) == 0.75
    assert M.ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(3)) / 4)
    assert M.mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 2) / 4)


def test_constant_scores_get_near_zero_metrics():
    """Ties count against the model: a constant scorer must not look good (DESIGN.md)."""
    n_items, b = 1000, 64
    scores = torch.zeros(b, n_items + 1)
    target = torch.randint(1, n_items + 1, (b,))
    ranks = target_ranks(scores, target)
    assert torch.all(ranks == n_items)  # every other item ties with the target, and ties lose
    out = M.ranking_metrics(ranks.numpy(), ks=(5, 10, 50))
    assert out["Recall@50"] == 0.0 and out["NDCG@10"] == 0.0 and out["MRR"] < 0.002


def test_target_ranks_pessimistic_and_exclusion():
    scores = torch.tensor([[0.0, 5.0, 3.0, 3.0, 1.0]])  # item 0 is padding
    assert target_ranks(scores, torch.tensor([1])).item() == 1
    assert target_ranks(scores, torch.tensor([2])).item() == 3  # tie with item 3 counts against
    excl = torch.tensor([[False, True, False, False, False]])
    assert target_ranks(scores, torch.tensor([2]), excl).item() == 2  # item 1 excluded
    excl_t = torch.tensor([[False, False, True, False, False]])
    assert target_ranks(scores, torch.tensor([2]), excl_t).item() == 5  # excluded target = miss


def test_target_outside_catalogue_is_a_clear_error():
    with pytest.raises(ValueError, match="catalogue"):
        target_ranks(torch.zeros(2, 5), torch.tensor([1, 7]))
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.full((1, 5), float("nan")), torch.tensor([1]))


def test_gauc_weights_users_by_impressions():
    users = np.array([1, 1, 1, 1, 2, 2, 3, 3])
    y = np.array([1, 0, 0, 1, 1, 0, 1, 1])  # user 3 has one class: skipped
    s = np.array([0.9, 0.1, 0.5, 0.2, 0.2, 0.8, 0.5, 0.6])
    a1 = roc_auc_score(y[:4], s[:4])
    a2 = roc_auc_score(y[4:6], s[4:6])
    assert M.gauc(users, y, s) == pytest.approx((4 * a1 + 2 * a2) / 6)


def test_ild_and_coverage():
    cats = np.array([0, 1, 1, 2, 3])  # item -> category
    lists = np.array([[1, 2, 3, 4], [1, 2, 0, 0]])
    # list 1: pairs (1,2) same, others differ: 5/6 dissimilar; list 2: one pair, same -> 0
    assert M.ild(lists, categories=cats) == pytest.approx((5 / 6 + 0) / 2)
    assert M.category_coverage(lists, cats, k=4) == pytest.approx((3 / 3 + 1 / 3) / 2)
    vec = np.array([[0, 0], [1, 0], [1, 0], [0, 1], [-1, 0]], dtype=float)
    assert M.ild(np.array([[1, 3]]), item_vectors=vec) == pytest.approx(1.0)
    assert M.ild(np.array([[1, 2]]), item_vectors=vec) == pytest.approx(0.0)


def test_list_metrics_normalise_by_every_relevant_candidate_not_only_the_shown_ones():
    """A re-ranker shows n of its m candidates: NDCG's ideal DCG and Recall's denominator come from all
    m (`ideal`, `n_relevant`), so a relevant candidate left out of the shown list costs both metrics."""
    # the shown list holds one of the user's two positives (at rank 1); the other was not shown
    shown, every = np.array([[1, 0, 0]]), np.array([[1, 0, 0, 1, 0]])
    ideal_dcg = 1.0 + 1.0 / np.log2(3.0)
    assert M.ndcg_at_k_lists(shown, 2, ideal=every) == pytest.approx(1.0 / ideal_dcg, abs=1e-12)
    assert M.recall_at_k_lists(shown, 2, n_relevant=np.array([2])) == pytest.approx(0.5)
    # both positives shown, at ranks 1 and 3, k = 2: one found, the ideal puts both in the top 2
    both = np.array([[1, 0, 1, 0]])
    assert M.ndcg_at_k_lists(both, 2) == pytest.approx(1.0 / ideal_dcg, abs=1e-12)
    assert M.recall_at_k_lists(both, 2) == pytest.approx(0.5)
    # the defaults read the shown list itself
    assert M.ndcg_at_k_lists(shown, 2) == pytest.approx(1.0)
    assert M.recall_at_k_lists(shown, 2) == pytest.approx(1.0)
