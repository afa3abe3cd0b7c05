"""Properties of calibrated re-ranking (Steck, RecSys 2018) — see the Calibration note.

Every reference below is computed in numpy straight from the paper's formulas, one list and one set
at a time, so the batched torch code is checked against an independent reading of Eq. (1)-(6)."""

import itertools
import math

import numpy as np
import pytest
import torch

from tests.conftest import load_module

cal = load_module("Classic Models/Re-ranking/Calibration/model.py", "calibration_model")
ALPHA = 0.01


# -- numpy references ---------------------------------------------------------------------------


def np_kl(p: np.ndarray, q: np.ndarray, alpha: float = ALPHA) -> float:
    """Eq. (3)-(4): sum over p > 0 of p log(p / q~), q~ = (1 - alpha) q + alpha p."""
    q_tilde = (1 - alpha) * q + alpha * p
    s = p > 0
    return float(np.sum(p[s] * np.log(p[s] / q_tilde[s])))


def np_objective(p, Q, s, subset, lam, alpha=ALPHA) -> float:
    """Eq. (6) of one set: (1 - lam) sum s_i - lam C_KL(p, mean of q(g|i) over the set)."""
    subset = list(subset)
    return (1 - lam) * float(s[subset].sum()) - lam * np_kl(p, Q[subset].mean(0), alpha)


def np_log_sum(p, Q, s, subset, lam, alpha=ALPHA) -> float:
    """F(I) = (1 - lam) s(I) + lam sum_g p_g log sum_{i in I} m_i(g), m_i = (1 - alpha) q_i + alpha p:
    a modular term plus concave functions of modular sums (the note's submodular form)."""
    subset = list(subset)
    m = (1 - alpha) * Q[subset] + alpha * p
    sup = p > 0
    log_sums = float(np.sum(p[sup] * np.log(m[:, sup].sum(0))))
    return (1 - lam) * float(s[subset].sum()) + lam * log_sums


def greedy(p, Q, s, lam, k, alpha=ALPHA) -> list[int]:
    picks = cal.calibrated_greedy(relevance=torch.tensor(s)[None],
                                  item_categories=torch.tensor(Q)[None],
                                  target=torch.tensor(p)[None], lam=lam, alpha=alpha, max_length=k)
    return picks[0].tolist()


def random_case(rng, n=None, g=None, lam=None):
    N = int(rng.integers(4, 9)) if n is None else n
    G = int(rng.integers(2, 5)) if g is None else g
    Q = rng.dirichlet(np.full(G, 0.5), size=N)  # q(g|i), mixtures
    p = rng.dirichlet(np.ones(G))
    s = rng.random(N)
    return p, Q, s, (float(rng.random()) if lam is None else lam)


def one_hot(cats: list[int], G: int) -> np.ndarray:
    return np.eye(G)[cats]


# -- the miscalibration metric, Eq. (1)-(4) ------------------------------------------------------


def test_kl_is_zero_at_the_history_mix_and_grows_as_the_list_concentrates():
    G = 4  # column 0 = "no category", then three categories
    p = torch.tensor([[0.0, 0.5, 0.3, 0.2]], dtype=torch.float64)
    # ten items per list; the first mix is exactly p, then one item at a time moves to category 1
    counts = [(5, 3, 2), (6, 2, 2), (7, 1, 2), (8, 0, 2), (9, 0, 1), (10, 0, 0)]
    values = []
    for c1, c2, c3 in counts:
        Q = torch.tensor(one_hot([1] * c1 + [2] * c2 + [3] * c3, G))[None]  # (1, 10, G)
        q = cal.list_distribution(Q, torch.arange(10)[None])
        values.append(float(cal.miscalibration(p, q, ALPHA)[0]))
    assert values[0] == pytest.approx(0.0, abs=1e-12)  # q = p
    assert all(b > a for a, b in zip(values, values[1:])), values
    # all ten in category 1 stays finite: q~ >= alpha p, so C_KL <= log(1 / alpha)
    assert values[-1] == pytest.approx(np_kl(p[0].numpy(), np.array([0.0, 1.0, 0.0, 0.0])))
    assert values[-1] < math.log(1 / ALPHA)


def test_miscalibration_equals_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    for _ in range(50):
        G = int(rng.integers(2, 12))
        p = rng.dirichlet(np.ones(G))
        p[rng.random(G) < 0.3] = 0.0  # categories the user never had
        if p.sum() == 0:
            p[0] = 1.0
        p /= p.sum()
        q = rng.dirichlet(np.ones(G))
        q[rng.random(G) < 0.3] = 0.0  # categories the list misses: q~ stays > 0 where p > 0
        alpha = float(rng.choice([0.01, 0.1, 0.5]))
        got = cal.miscalibration(torch.tensor(p)[None], torch.tensor(q)[None], alpha)
        assert float(got[0]) == pytest.approx(np_kl(p, q, alpha), rel=1e-12, abs=1e-12)


def test_history_and_list_mixes_follow_eq_1_and_2():
    rng = np.random.default_rng(1)
    ids = torch.from_numpy(rng.integers(0, 6, size=(3, 7, 2)))  # (B, L, A), 0 = none
    ids[:, :2] = 0  # left padding: no category at all
    q_hist = cal.category_distribution(ids, n_categories=5).double()  # (B, L, 6)
    half_life = 2.0
    present = q_hist.sum(-1) > 0
    w = cal.recency_weights(present, half_life)
    p = cal.history_distribution(q_hist, w)
    for b in range(3):
        rows = [i for i in range(7) if present[b, i]]
        ages = [sum(1 for j in rows if j > i) for i in rows]  # items after i
        weights = np.array([0.5 ** (a / half_life) for a in ages])
        want = (weights[:, None] * q_hist[b, rows].numpy()).sum(0) / weights.sum()
        np.testing.assert_allclose(p[b].numpy(), want, rtol=1e-6)
        assert float(w[b, rows[-1]]) == 1.0 and float(w[b, :2].abs().sum()) == 0.0
    # Eq. (2) with equal weights: the mean of q(g|i) over the shown items; -1 = no item
    Q = torch.rand(2, 6, 4).double()
    Q = Q / Q.sum(-1, keepdim=True)
    pos = torch.tensor([[3, 0, -1], [5, 5, 2]])
    q = cal.list_distribution(Q, pos)
    np.testing.assert_allclose(q[0].numpy(), Q[0, [3, 0]].mean(0).numpy())
    np.testing.assert_allclose(q[1].numpy(), Q[1, [5, 5, 2]].mean(0).numpy())


def test_category_distribution_is_uniform_over_an_items_distinct_ids():
    ids = torch.tensor([[[2, 3, 0]], [[4, 4, 0]], [[0, 0, 0]]])  # (3, 1, 3)
    d = cal.category_distribution(ids, n_categories=4)  # (3, 1, 5)
    assert torch.equal(d[0, 0], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0]))
    assert torch.equal(d[1, 0], torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))  # a repeated id once
    assert torch.equal(d[2, 0], torch.zeros(5))  # no id: a zero row (padding)


# -- the greedy of Eq. (6) -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lambda_zero_returns_the_relevance_order_exactly(dtype):
    gen = torch.Generator().manual_seed(2)
    B, N, G, k = 8, 30, 6, 10
    scores = torch.rand(B, N, generator=gen, dtype=dtype)
    scores[:, 5] = scores[:, 7]  # a tie: the earlier position first, as a stable sort
    scores[:, 10:13] = 0.5 + 1e-7 * torch.arange(3, dtype=dtype)  # nearly equal scores
    Q = torch.softmax(torch.randn(B, N, G, generator=gen, dtype=torch.float64), -1)
    hist = torch.softmax(torch.randn(B, 4, G, generator=gen, dtype=torch.float64), -1)
    got = cal.CalibratedReranker(lam=0.0, max_length=k)(scores=scores, item_categories=Q,
                                                        history_categories=hist)
    want = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(got, want)


def test_lambda_one_ignores_the_scores():
    gen = torch.Generator().manual_seed(3)
    Q = torch.softmax(3 * torch.randn(4, 20, 5, generator=gen, dtype=torch.float64), -1)
    hist = torch.softmax(torch.randn(4, 6, 5, generator=gen, dtype=torch.float64), -1)
    model = cal.CalibratedReranker(lam=1.0, max_length=8)
    a = model(scores=torch.rand(4, 20, generator=gen), item_categories=Q, history_categories=hist)
    b = model(scores=torch.rand(4, 20, generator=gen), item_categories=Q, history_categories=hist)
    assert torch.equal(a, b)


def test_first_pick_is_the_brute_force_argmax_and_every_pick_the_argmax_given_the_picks_before():
    rng = np.random.default_rng(4)
    for _ in range(100):
        p, Q, s, lam = random_case(rng)
        k = int(rng.integers(1, len(s) + 1))
        picks = greedy(p, Q, s, lam, k)
        assert len(set(picks)) == k and min(picks) >= 0
        for t, j in enumerate(picks):  # Eq. (6) of the picks so far plus each candidate, in numpy
            values = {i: np_objective(p, Q, s, picks[:t] + [i], lam) for i in range(len(s))
                      if i not in picks[:t]}
            assert values[j] >= max(values.values()) - 1e-9, (t, values, j)
        # k = 1: the greedy IS the brute-force best single item
        singles = [np_objective(p, Q, s, [i], lam) for i in range(len(s))]
        assert picks[0] == int(np.argmax(singles))


def test_the_objective_scores_a_set_so_brute_force_over_subsets_covers_every_order():
    rng = np.random.default_rng(5)
    p, Q, s, lam = random_case(rng, n=6)
    Qt = torch.tensor(Q)[None]
    for subset in itertools.combinations(range(6), 3):
        kls = {float(cal.miscalibration(torch.tensor(p)[None],
                                        cal.list_distribution(Qt, torch.tensor(order)[None]))[0])
               for order in itertools.permutations(subset)}
        assert max(kls) - min(kls) < 1e-12  # equal rank weights: the order does not matter


def test_greedy_finds_the_brute_force_optimum_on_a_two_category_user():
    # 60 % / 40 % history; six items of each category, distinct scores: the best 5-list at a large
    # lambda takes the 3 best of category 1 and the 2 best of category 2, and the greedy finds it.
    G = 3
    p = np.array([0.0, 0.6, 0.4])
    cats = [1, 2] * 6
    Q = one_hot(cats, G)
    rank = np.arange(12) // 2  # 0..5 within each category
    s = np.where(np.array(cats) == 2, 0.9, 0.6) - 0.05 * rank  # category 2 scores higher
    lam, k = 0.9, 5
    best = max(itertools.combinations(range(12), k), key=lambda c: np_objective(p, Q, s, c, lam))
    got = greedy(p, Q, s, lam, k)
    assert sorted(got) == sorted(best)
    assert sorted(cats[i] for i in got) == [1, 1, 1, 2, 2]
    assert sorted(greedy(p, Q, s, 0.0, k)) == sorted(np.argsort(-s)[:k].tolist())  # all category 2


# -- what the (1 - 1/e) argument rests on, and what holds -----------------------------------------


def test_the_log_of_sums_form_is_monotone_and_submodular():
    """F(I) = (1 - lam) s(I) + lam sum_g p_g log sum_{i in I} m_i(g) with s >= 0: adding an item
    never lowers F, and it adds less to a larger set (diminishing returns), on random sets A < B."""
    rng = np.random.default_rng(6)
    for _ in range(300):
        p, Q, s, lam = random_case(rng, n=8)
        order = rng.permutation(8).tolist()
        a = int(rng.integers(1, 4))
        b = int(rng.integers(a, 7))
        A, B, x = order[:a], order[:b], order[7]
        gain_a = np_log_sum(p, Q, s, A + [x], lam) - np_log_sum(p, Q, s, A, lam)
        gain_b = np_log_sum(p, Q, s, B + [x], lam) - np_log_sum(p, Q, s, B, lam)
        assert gain_a >= gain_b - 1e-12 and gain_b >= -1e-12


def test_the_kl_form_itself_is_neither_monotone_nor_submodular():
    """-C_KL over sets of any size: a user who only had category 1 (p = e_1); an item of category 2
    raises the KL (not monotone), and hurts a one-item list more than a two-item list (increasing
    returns: not submodular). The normalisation by |I| in Eq. (2) is the culprit."""
    p = np.array([0.0, 1.0, 0.0])
    Q = one_hot([1, 1, 2], 3)  # a1, a2 of category 1, x of category 2
    f = lambda subset: -np_kl(p, Q[list(subset)].mean(0))  # noqa: E731
    gain_a = f([0, 2]) - f([0])  # A = {a1}
    gain_b = f([0, 1, 2]) - f([0, 1])  # B = {a1, a2}
    assert gain_a < 0 and gain_b < 0  # adding x lowers -C_KL: not monotone
    assert gain_b > gain_a  # a larger set loses less: not submodular


def test_on_lists_of_one_length_the_kl_form_is_the_submodular_form_plus_a_constant():
    rng = np.random.default_rng(7)
    for _ in range(30):
        p, Q, s, lam = random_case(rng, n=7)
        k = int(rng.integers(1, 7))
        diffs = [np_objective(p, Q, s, c, lam) - np_log_sum(p, Q, s, c, lam)
                 for c in itertools.combinations(range(7), k)]
        assert max(diffs) - min(diffs) < 1e-9  # lam (H(p)... - log k): same argmax, same greedy


def test_greedy_meets_the_bound_that_holds_and_is_often_optimal():
    """F is monotone submodular but F(empty set) = -inf, so the classic (1 - 1/e) bound cannot start
    from the empty list. It holds from the first pick x1 on: F(G) - F(x1) >= (1 - 1/e)(1 - 1/k)
    (F(opt) - F(x1)) (greedy on the normalised F'(S) = F(S + x1) - F(x1), whose best (k-1)-set keeps
    (k-1)/k of the optimum's gain). Checked against brute force on random small lists."""
    rng = np.random.default_rng(8)
    optimal = 0
    n_cases = 200
    for _ in range(n_cases):
        p, Q, s, lam = random_case(rng)
        N = len(s)
        k = int(rng.integers(2, min(N, 5) + 1))
        picks = greedy(p, Q, s, lam, k)
        subsets = list(itertools.combinations(range(N), k))
        best = max(np_log_sum(p, Q, s, c, lam) for c in subsets)
        got, first = np_log_sum(p, Q, s, picks, lam), np_log_sum(p, Q, s, picks[:1], lam)
        assert got - first >= (1 - 1 / math.e) * (1 - 1 / k) * (best - first) - 1e-9
        optimal += got >= best - 1e-9
    assert optimal >= 0.8 * n_cases  # the greedy's list is usually the brute-force optimum


def test_the_plain_reading_of_the_bound_fails_on_a_small_case():
    """(f(G) - f_min) / (f(opt) - f_min) >= 1 - 1/e, f = Eq. (6) over the k-sets, is NOT guaranteed.
    Two mixed items near the user's mix and two pure ones: the greedy takes the mixed item first
    (the safest single item), then cannot reach the optimum, which pairs the two pure items."""
    Q = np.array([[0.44, 0.56], [0.30, 0.70], [1.0, 0.0], [0.0, 1.0]])  # q(g|i), two categories
    p = np.array([0.36, 0.64])
    s = np.array([0.19, 0.29, 0.58, 0.61])
    lam, k = 0.85, 3
    picks = greedy(p, Q, s, lam, k)
    values = {c: np_objective(p, Q, s, c, lam) for c in itertools.combinations(range(4), k)}
    best = max(values, key=values.get)
    assert picks == [1, 0, 3] and best == (1, 2, 3)
    low, high = min(values.values()), values[best]
    assert (np_objective(p, Q, s, picks, lam) - low) / (high - low) < 1 - 1 / math.e


# -- batching, padding, persistence ---------------------------------------------------------------


def test_batched_lists_equal_one_at_a_time_and_padding_is_never_picked():
    gen = torch.Generator().manual_seed(9)
    B, N, G, L, k = 12, 25, 7, 9, 10
    scores = torch.rand(B, N, generator=gen, dtype=torch.float64)
    ids = torch.randint(1, G, (B, N, 2), generator=gen)
    Q = cal.category_distribution(ids, n_categories=G - 1).double()
    hist = cal.category_distribution(torch.randint(0, G, (B, L, 2), generator=gen), G - 1).double()
    hist[:, -1] = Q[:, 0]  # every history has at least one item with a category
    valid = torch.rand(B, N, generator=gen) > 0.3
    valid[0] = torch.arange(N) < 8  # a list with 8 valid candidates: its last 2 slots are -1
    model = cal.CalibratedReranker(lam=0.6, max_length=k, half_life=3.0)
    batch = model(scores=scores, item_categories=Q, history_categories=hist, valid=valid)
    for b in range(B):
        one = model(scores=scores[b : b + 1], item_categories=Q[b : b + 1],
                    history_categories=hist[b : b + 1], valid=valid[b : b + 1])
        assert torch.equal(batch[b : b + 1], one)
        shown = batch[b][batch[b] >= 0]
        assert bool(valid[b, shown].all()) and len(set(shown.tolist())) == len(shown)
    assert batch[0, 8:].tolist() == [-1, -1] and bool((batch[0, :8] >= 0).all())
    empty = model(scores=scores[:0], item_categories=Q[:0], history_categories=hist[:0])
    assert empty.shape == (0, k)


def test_the_reranker_uses_eq_1_for_its_target():
    """forward = calibrated_greedy on p(g|u) of Eq. (1) with the recency weights of the config."""
    gen = torch.Generator().manual_seed(10)
    scores = torch.rand(3, 15, generator=gen, dtype=torch.float64)
    Q = torch.softmax(torch.randn(3, 15, 5, generator=gen, dtype=torch.float64), -1)
    hist = torch.softmax(torch.randn(3, 6, 5, generator=gen, dtype=torch.float64), -1)
    model = cal.CalibratedReranker(lam=0.7, max_length=6, half_life=1.5)
    w = cal.recency_weights(torch.ones(3, 6, dtype=torch.bool), 1.5).double()
    p = cal.history_distribution(hist, w)
    want = cal.calibrated_greedy(relevance=scores, item_categories=Q, target=p, lam=0.7,
                                 alpha=ALPHA, max_length=6)
    assert torch.equal(model(scores=scores, item_categories=Q, history_categories=hist), want)
    # explicit weights replace the recency weights
    assert torch.equal(model(scores=scores, item_categories=Q, history_categories=hist,
                             history_weights=w), want)


def test_keyword_overrides_leave_the_callers_config_alone(tmp_path):
    cfg = cal.CalibrationConfig(lam=0.2)
    model = cal.CalibratedReranker(cfg, lam=0.9, half_life=4.0)
    assert cfg.lam == 0.2 and cfg.half_life is None
    assert model.config.lam == 0.9 and model.config.alpha == ALPHA
    model.save(str(tmp_path / "m.pt"))
    assert cal.CalibratedReranker.load(str(tmp_path / "m.pt")).config == model.config


# -- the loop and the demo compute what the model computes ----------------------------------------


def test_the_trade_off_loop_scores_lists_with_the_models_metric():
    from Utils.loops import calibration_tradeoff as CT

    rng = np.random.default_rng(11)
    n_items, U, N, L = 30, 6, 12, 5
    ids = np.zeros((n_items + 1, 2), dtype=np.int64)
    ids[1:, 0] = rng.integers(1, 5, n_items)
    items = [rng.choice(np.arange(1, n_items + 1), N, replace=False) for _ in range(U)]
    lists = {"items": np.stack(items),
             "history": rng.integers(0, n_items + 1, (U, L)),
             "init_scores": np.sort(rng.random((U, N)))[:, ::-1].copy()}
    lists["history"][:, -1] = 1  # an item with a category in every history
    pos = CT.rerank_calibrated(cal, lists, ids, 4, lam=0.8, alpha=ALPHA, half_life=None, k=4,
                               chunk=4)
    kl = CT.miscalibration_at_k(cal, lists, pos, ids, 4, alpha=ALPHA, half_life=None, k=4, chunk=4)
    kl0 = CT.miscalibration_at_k(cal, lists, np.tile(np.arange(4), (U, 1)), ids, 4, alpha=ALPHA,
                                 half_life=None, k=4, chunk=4)
    for u in range(U):
        G = 5
        hist = [i for i in lists["history"][u] if ids[i, 0] > 0]
        p = one_hot([ids[i, 0] for i in hist], G).mean(0)
        q = one_hot([ids[lists["items"][u, j], 0] for j in pos[u]], G).mean(0)
        assert kl[u] == pytest.approx(np_kl(p, q), abs=1e-9)
        q0 = one_hot([ids[lists["items"][u, j], 0] for j in range(4)], G).mean(0)
        assert kl0[u] == pytest.approx(np_kl(p, q0), abs=1e-9)
    assert kl.mean() <= kl0.mean()  # lambda = 0.8 calibrates better than the initial order


def test_demo_save_then_load_gives_identical_metrics_and_shows_the_mixes(tmp_path, capsys):
    from tests.test_bad_input_rerank import FAST, result_of, run_demo, write_seqtxt

    data = ["--data", f"seqtxt:{write_seqtxt(tmp_path / 'd')}"]
    ckpt, png = tmp_path / "cal.pt", tmp_path / "mix.png"
    code, out, err = run_demo("Calibration", [*FAST["Calibration"], *data, "--save", str(ckpt),
                                              "--plot-mix", str(png)], capsys)
    assert code == 0 and ckpt.is_file() and png.is_file(), err[-2000:]
    first = result_of(out)
    assert set(first["metrics"]) == {"NDCG@5", "Recall@5", "ILD@5", "Coverage@5", "C_KL@5"}
    assert first["baseline"]["name"] == "initial ranking" and "history p(g|u)" in out
    code, out, err = run_demo("Calibration", [*FAST["Calibration"], *data, "--load", str(ckpt),
                                              "--recommend", "7"], capsys)
    assert code == 0, err[-2000:]
    again = result_of(out)
    assert again["metrics"] == first["metrics"] and again["sweep"] == first["sweep"]
    assert again["loaded"] == str(ckpt) and "user 7 " in out and "calibrated top-5" in out


def test_the_demos_user_mix_is_eq_1_and_2_of_the_shown_lists():
    from tests.test_bad_input_rerank import demo_module

    demo = demo_module("Calibration")
    ids = np.array([[0], [1], [2], [3], [1], [2]])  # items 1..5 with categories 1, 2, 3, 1, 2
    lists = {"items": np.array([[1, 4, 2, 5, 3]]), "history": np.array([[0, 1, 1, 2]]),
             "init_scores": np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])}
    mix = demo.user_mixes(cal, lists, ids, 3, 0, np.array([0, 1]), np.array([0, 2]), alpha=ALPHA,
                          half_life=None)
    np.testing.assert_allclose(mix["p"], [0, 2 / 3, 1 / 3, 0])  # two items of 1, one of 2
    np.testing.assert_allclose(mix["before"], [0, 1, 0, 0])  # items 1 and 4: both category 1
    np.testing.assert_allclose(mix["after"], [0, 0.5, 0.5, 0])  # items 1 and 2
    assert mix["kl_before"] == pytest.approx(np_kl(mix["p"], mix["before"]))
    assert mix["kl_after"] == pytest.approx(np_kl(mix["p"], mix["after"]))
    assert mix["kl_after"] < mix["kl_before"]
