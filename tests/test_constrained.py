"""Properties of constrained re-ranking (Geyik, Ambler, Kenthapadi, KDD 2019) — see the note.

The references here are independent readings of the paper: Algorithm 1 written one list at a time in
plain Python, and a brute-force search over every group sequence of a short list for whether any
list meets the prefix floors (Eq. (1)) and ceilings (Eq. (2))."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import load_module

con = load_module("Classic Models/Re-ranking/Constrained/model.py", "constrained_model")
ALGOS = con.ALGORITHMS


# -- references ----------------------------------------------------------------------------------


def bounds(p, k):
    """floor(p_i k), ceil(p_i k) with the model's 1e-5 tolerance for round-off."""
    p = np.asarray(p, dtype=float)
    return np.floor(p * k + 1e-5).astype(int), np.ceil(p * k - 1e-5).astype(int)


def sequence_ok(seq, p, ceilings: bool) -> bool:
    """Does every prefix of the group sequence meet Eq. (1) (and Eq. (2) with ceilings)?"""
    count = np.zeros(len(p), dtype=int)
    for k, g in enumerate(seq, 1):
        count[g] += 1
        lo, hi = bounds(p, k)
        if (count < lo).any() or (ceilings and (count > hi).any()):
            return False
    return True


def brute_force_exists(groups, p, k, ceilings: bool) -> bool:
    """Some list of k of these candidates meets every prefix constraint: only the sequence of
    groups matters, so try every one the candidates can supply."""
    have = np.bincount(groups, minlength=len(p))
    for seq in itertools.product(range(len(p)), repeat=k):
        if (np.bincount(seq, minlength=len(p)) <= have).all() and sequence_ok(seq, p, ceilings):
            return True
    return False


def algorithm_1(scores, groups, p, k_max, algorithm):
    """Algorithm 1 for one list, as the paper writes it, plus the model's documented fallbacks
    (a group with no candidate left drops out; nothing below min or max: best remaining)."""
    G = len(p)
    queues = [sorted((i for i in range(len(scores)) if groups[i] == g), key=lambda i: -scores[i])
              for g in range(G)]
    count, out = [0] * G, []
    for k in range(1, k_max + 1):
        lo, hi = bounds(p, k)
        has = [bool(queues[g]) for g in range(G)]
        head = [scores[queues[g][0]] if has[g] else -math.inf for g in range(G)]
        below_min = [g for g in range(G) if has[g] and count[g] < lo[g]]
        below_max = [g for g in range(G) if has[g] and lo[g] <= count[g] < hi[g]]
        if below_min:
            g = max(below_min, key=lambda a: head[a])
        elif below_max and algorithm == "det_greedy":
            g = max(below_max, key=lambda a: head[a])
        elif below_max:
            due = {a: math.ceil(hi[a] / p[a]) if algorithm == "det_relaxed" else hi[a] / p[a]
                   for a in below_max}
            least = min(due.values())
            g = max((a for a in below_max if due[a] <= least + 1e-5), key=lambda a: head[a])
        elif any(has):
            g = max((a for a in range(G) if has[a]), key=lambda a: head[a])
        else:
            out.append(-1)
            continue
        out.append(queues[g].pop(0))
        count[g] += 1
    return out


def rerank(algorithm, scores, groups, p, k, **kw):
    model = con.ConstrainedReranker(algorithm=algorithm, max_length=k)
    return model(scores=torch.as_tensor(scores)[None], groups=torch.as_tensor(groups)[None],
                 proportions=torch.as_tensor(p, dtype=torch.float64), **kw)


def random_case(rng, G_range=(2, 6)):
    G = int(rng.integers(*G_range))
    N = int(rng.integers(3, 9))
    k = int(rng.integers(2, min(N, 6) + 1))
    p = np.round(rng.dirichlet(np.ones(G)), 2)
    p[-1] = round(max(0.0, 1 - p[:-1].sum()), 2)
    groups = rng.integers(0, G, N)
    return rng.random(N), groups, p, k


# -- the constraints and the feasibility flag ---------------------------------------------------


def test_prefix_bounds_are_floor_and_ceil_of_p_k_without_round_off():
    lo, hi = con.prefix_bounds(torch.tensor([[0.7, 0.3]]), 10)
    assert hi[0, -1].tolist() == [7, 3] and lo[0, -1].tolist() == [7, 3]  # 0.7 * 10 is 7.000..01
    assert lo[0, 2].tolist() == [2, 0] and hi[0, 2].tolist() == [3, 1]  # k = 3: 2.1 and 0.9


def test_the_feasible_flag_equals_brute_force_over_every_group_sequence():
    rng = np.random.default_rng(0)
    for _ in range(300):
        s, g, p, k = random_case(rng)
        out = rerank("det_greedy", s, g, p, k)
        assert bool(out.feasible[0]) == brute_force_exists(g, p, k, ceilings=False), (g, p, k)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_with_up_to_three_groups_every_prefix_meets_the_floors_and_ceilings_when_it_can(algorithm):
    """The paper's guarantee: with at most three groups all three algorithms are feasible. Here
    on 400 random short lists: whenever brute force finds a list meeting every floor (and every
    ceiling), the returned list meets them too; satisfied says so."""
    rng = np.random.default_rng(1)
    for _ in range(400):
        s, g, p, k = random_case(rng, (2, 4))
        out = rerank(algorithm, s, g, p, k)
        lo_ok, hi_ok, _ = con.constraint_check(torch.as_tensor(g)[None], out.positions,
                                               torch.as_tensor(p))
        assert bool(out.satisfied[0]) == bool(lo_ok[0])
        if brute_force_exists(g, p, k, ceilings=False):
            assert bool(lo_ok[0]), (g, p, k, out.positions)
        if brute_force_exists(g, p, k, ceilings=True):
            assert bool(lo_ok[0] and hi_ok[0]), (g, p, k, out.positions)


@pytest.mark.parametrize("algorithm", ["det_cons", "det_relaxed"])
def test_with_four_or_five_groups_the_look_ahead_variants_still_meet_every_constraint(algorithm):
    rng = np.random.default_rng(2)
    for _ in range(300):
        s, g, p, k = random_case(rng, (4, 6))
        out = rerank(algorithm, s, g, p, k)
        lo_ok, hi_ok, _ = con.constraint_check(torch.as_tensor(g)[None], out.positions,
                                               torch.as_tensor(p))
        if brute_force_exists(g, p, k, ceilings=True):
            assert bool(lo_ok[0] and hi_ok[0]), (g, p, k, out.positions)


def test_det_greedy_can_miss_a_floor_with_four_groups_and_says_so():
    """Two floors fall due at the same position: at k = 4 group 1 needs floor(0.26 * 4) = 1 and
    group 3 floor(0.51 * 4) = 2, but DetGreedy spent positions 1 and 3 on the best scores of
    groups 0 and 2 (below their ceilings). One slot, two groups below their minimum; a list that
    meets every floor exists (DetCons finds one). `satisfied` says which happened."""
    s = np.array([0.92, 0.15, 0.17, 0.84, 0.45, 0.56, 0.77, 0.48])
    g = np.array([0, 0, 3, 3, 2, 3, 2, 1])
    p = [0.18, 0.26, 0.01, 0.51, 0.04]
    greedy, cons = rerank("det_greedy", s, g, p, 4), rerank("det_cons", s, g, p, 4)
    assert greedy.positions[0].tolist() == [0, 3, 6, 5]  # group 1 never comes
    assert bool(greedy.feasible[0]) and not bool(greedy.satisfied[0])
    assert cons.positions[0].tolist() == [3, 7, 5, 0] and bool(cons.satisfied[0])
    assert brute_force_exists(g, p, 4, ceilings=False)


# -- the choices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGOS)
def test_batched_picks_equal_algorithm_1_written_one_list_at_a_time(algorithm):
    rng = np.random.default_rng(4)
    for _ in range(300):
        s, g, p, k = random_case(rng)
        got = rerank(algorithm, s, g, p, k).positions[0].tolist()
        assert got == algorithm_1(s.tolist(), g.tolist(), p.tolist(), k, algorithm), (g, p, k)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_each_group_contributes_its_best_scored_candidates_in_score_order(algorithm):
    """Within the constraint the choice is the best-scored candidate: the items of group i in the
    list are group i's top count_i by score (brute force: sort the group), in that order."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        s, g, p, k = random_case(rng)
        pos = rerank(algorithm, s, g, p, k).positions[0].tolist()
        for a in set(g.tolist()):
            mine = [i for i in pos if g[i] == a]
            best = sorted(np.flatnonzero(g == a).tolist(), key=lambda i: -s[i])[: len(mine)]
            assert mine == best


def test_det_greedy_takes_the_best_candidate_the_floors_allow():
    """Brute force per position: DetGreedy's pick is the highest score among the candidates
    of the groups below their floor, or when none is, of the groups below their ceiling."""
    rng = np.random.default_rng(6)
    for _ in range(200):
        s, g, p, k = random_case(rng, (2, 4))
        pos = rerank("det_greedy", s, g, p, k).positions[0].tolist()
        count = np.zeros(len(p), dtype=int)
        for t, j in enumerate(pos, 1):
            lo, hi = bounds(p, t)
            left = [i for i in range(len(s)) if i not in pos[: t - 1]]
            allowed = [i for i in left if count[g[i]] < lo[g[i]]] or \
                      [i for i in left if count[g[i]] < hi[g[i]]] or left
            assert j == max(allowed, key=lambda i: s[i])
            count[g[j]] += 1


def test_with_p_the_shares_of_a_list_that_already_complies_det_greedy_keeps_the_relevance_order():
    rng = np.random.default_rng(7)
    kept = 0
    for _ in range(300):
        N, G, k = int(rng.integers(4, 12)), int(rng.integers(2, 4)), 0
        k = int(rng.integers(2, N + 1))
        s = np.sort(rng.random(N))[::-1].copy()  # relevance order = 0, 1, 2, ...
        g = rng.integers(0, G, N)
        p = np.bincount(g[:k], minlength=G) / k  # the shares of the top k
        if not sequence_ok(g[:k].tolist(), p, ceilings=True):
            continue
        kept += 1
        assert rerank("det_greedy", s, g, p, k).positions[0].tolist() == list(range(k))
    assert kept > 50


def test_half_and_half_interleaves_a_list_that_puts_one_group_first():
    """The paper's motivating case: the ranker puts every group-0 item above group 1."""
    s = np.linspace(1, 0.1, 10)
    g = np.array([0] * 5 + [1] * 5)
    for algorithm in ALGOS:
        pos = rerank(algorithm, s, g, [0.5, 0.5], 6).positions[0].tolist()
        assert [int(g[i]) for i in pos] == [0, 1, 0, 1, 0, 1], algorithm
        assert pos == [0, 5, 1, 6, 2, 7]


# -- infeasible lists, padding, batching ----------------------------------------------------------


def test_too_few_candidates_of_a_group_is_reported_not_hidden():
    s, g = np.linspace(1, 0, 8), np.array([0, 0, 0, 0, 0, 0, 0, 1])  # one long-tail item
    out = rerank("det_cons", s, g, [0.6, 0.4], 5)  # floor(0.4 * 5) = 2 long-tail items needed
    assert not bool(out.feasible[0]) and not bool(out.satisfied[0])
    assert 7 in out.positions[0].tolist()  # the floor it can meet, it meets
    strict = con.ConstrainedReranker(algorithm="det_cons", max_length=5, strict=True)
    with pytest.raises(ValueError, match=r"list 0 cannot meet its floors: group 1 needs 2, has 1"):
        strict(scores=torch.tensor(s)[None], groups=torch.tensor(g)[None],
               proportions=torch.tensor([0.6, 0.4]))


def test_a_short_list_padded_with_valid_false_ends_with_minus_one_and_is_infeasible():
    s, g = np.array([0.9, 0.8, 0.7, 0.5]), np.array([0, 1, 0, 1])
    valid = torch.tensor([[True, True, True, False]])
    out = rerank("det_greedy", s, g, [0.5, 0.5], 4, valid=valid)
    assert out.positions[0].tolist()[-1] == -1 and 3 not in out.positions[0].tolist()
    assert not bool(out.feasible[0]) and not bool(out.satisfied[0])


@pytest.mark.parametrize("algorithm", ALGOS)
def test_a_batch_equals_one_list_at_a_time_with_per_list_targets_and_padding(algorithm):
    rng = np.random.default_rng(8)
    B, N, G, k = 6, 12, 3, 8
    s = torch.rand(B, N, dtype=torch.float64)
    g = torch.randint(0, G, (B, N))
    p = torch.tensor(rng.dirichlet(np.ones(G), size=B)) * 0.95
    valid = torch.rand(B, N) > 0.15
    g = torch.where(valid, g, 99)  # a padded candidate's group id is never read
    model = con.ConstrainedReranker(algorithm=algorithm, max_length=k)
    whole = model(scores=s, groups=g, proportions=p, valid=valid)
    for b in range(B):
        one = model(scores=s[b : b + 1], groups=g[b : b + 1], proportions=p[b],
                    valid=valid[b : b + 1])
        for got, want in zip(whole, one):
            assert torch.equal(got[b : b + 1], want)
    picked = whole.positions
    assert not bool((~valid).gather(1, picked.clamp_min(0))[picked >= 0].any())


def test_keyword_overrides_leave_the_callers_config_alone_and_save_load_keeps_the_knobs(tmp_path):
    cfg = con.ConstrainedConfig()
    model = con.ConstrainedReranker(cfg, algorithm="det_relaxed", strict=True)
    assert cfg.algorithm == "det_greedy" and model.config.algorithm == "det_relaxed"
    model.save(tmp_path / "m.pt")
    assert con.ConstrainedReranker.load(tmp_path / "m.pt").config == model.config


# -- amortised exposure (Eq. (3)-(6) of the note) -------------------------------------------------


def test_exposure_shares_are_the_position_weighted_group_shares_by_hand():
    groups = torch.tensor([[0, 1, 1, 0]])
    positions = torch.tensor([[1, 0, 3]])  # ranks 1..3 hold groups 1, 0, 0
    v = [1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)]
    got = con.exposure_shares(groups, positions, 2)[0].tolist()
    assert got == pytest.approx([(v[1] + v[2]) / sum(v), v[0] / sum(v)])
    short = con.exposure_shares(groups, torch.tensor([[2, -1, -1]]), 2)[0].tolist()
    assert short == pytest.approx([0.0, 1.0])  # an empty slot has no exposure


def test_the_boosted_order_maximises_exposure_weighted_utility_plus_bonus_brute_force():
    """Eq. (6) is the Lagrangian's maximiser per list: no ordered choice of k of the N candidates
    scores higher on sum_r v_r (s + mu_a) (the rearrangement inequality), checked exhaustively."""
    rng = np.random.default_rng(3)
    k, N = 3, 6
    v = con.exposure_weights(k).numpy()
    for _ in range(60):
        s = rng.random(N)
        g = rng.integers(0, 2, N)
        mu = np.array([0.0, rng.random() * 0.8])
        pos = con.boosted_order(torch.tensor(s)[None], torch.tensor(g)[None], torch.tensor(mu), k)
        got = float((v * (s + mu[g])[pos[0].numpy()]).sum())
        best = max(float((v * (s + mu[g])[list(c)]).sum()) for c in itertools.permutations(range(N), k))
        assert got == pytest.approx(best, abs=1e-12)


def _lists(seed, B=2000, N=50, tail=0.25):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(B, N, generator=gen), (torch.rand(B, N, generator=gen) < tail).long()


def test_a_fitted_bonus_meets_the_mean_exposure_minimum_on_its_lists_and_on_new_users():
    """Eq. (5) holds on the fitted lists (the bisection keeps the side that meets it, overshoot
    under 0.005) and, in expectation, on 2,000 new lists from the same distribution: stated
    tolerance 0.02 (the per-list share has sd ~0.15, so the mean over 2,000 lists has sd ~0.003)."""
    s, g = _lists(0)
    model = con.ExposureReranker(max_length=10)
    before = con.exposure_shares(g, con.boosted_order(s, g, torch.zeros(2), 10), 2).mean(0)
    assert before[1] < 0.35
    fit = model.fit(scores=s, groups=g, min_share=torch.tensor([0.0, 0.4]))
    assert fit.met and fit.bonus[0] == 0 and fit.bonus[1] > 0
    assert 0.4 <= float(fit.shares[1]) < 0.405
    s2, g2 = _lists(1)
    held_out = con.exposure_shares(g2, model(scores=s2, groups=g2), 2).mean(0)
    assert abs(float(held_out[1]) - 0.4) < 0.02


def test_a_minimum_already_met_leaves_the_relevance_order_and_an_unreachable_one_says_so():
    s, g = _lists(2, B=300)
    model = con.ExposureReranker(max_length=10)
    fit = model.fit(scores=s, groups=g, min_share=torch.tensor([0.5, 0.1]))
    assert fit.met and fit.bonus.tolist() == [0.0, 0.0]
    assert torch.equal(model(scores=s, groups=g), torch.argsort(s, 1, descending=True)[:, :10])
    s, g = _lists(3, B=300, tail=0.02)  # ~1 tail candidate per list: 90% of exposure is out of reach
    fit = con.ExposureReranker(max_length=10).fit(scores=s, groups=g,
                                                  min_share=torch.tensor([0.0, 0.9]))
    assert not fit.met and float(fit.shares[1]) < 0.9


def test_three_groups_each_reach_their_minimum_together():
    gen = torch.Generator().manual_seed(4)
    s = torch.rand(1500, 40, generator=gen)
    g = torch.multinomial(torch.tensor([0.7, 0.2, 0.1]), 1500 * 40, replacement=True,
                          generator=gen).view(1500, 40)
    m = torch.tensor([0.0, 0.3, 0.25])
    fit = con.ExposureReranker(max_length=10).fit(scores=s, groups=g, min_share=m)
    assert fit.met and (fit.shares >= m).all() and float(fit.shares[1:].sum()) < 0.56


def test_exposure_bad_inputs_are_one_line_errors_and_save_load_keeps_the_bonus(tmp_path):
    s, g = _lists(5, B=20)
    with pytest.raises(ValueError, match="call fit"):
        con.ExposureReranker()(scores=s, groups=g)
    with pytest.raises(ValueError, match="bonus must be finite"):
        con.ExposureReranker(bonus=(0.0, -1.0))
    model = con.ExposureReranker(bonus=(0.0, 0.1))
    with pytest.raises(ValueError, match="unknown group"):
        model(scores=s, groups=g + 1)
    bad = s.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ValueError, match="list 3 is not finite"):
        model(scores=bad, groups=g)
    with pytest.raises(ValueError, match="sums to more than 1"):
        model.fit(scores=s, groups=g, min_share=torch.tensor([0.6, 0.6]))
    model.save(tmp_path / "e.pt")
    assert con.ExposureReranker.load(tmp_path / "e.pt").config.bonus == (0.0, 0.1)
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "e.pt")


def test_the_seed_summary_is_the_mean_and_sample_sd_of_the_runs_and_refuses_mixed_data(tmp_path):
    from Datasets import DataError
    from Utils.loops import constrained_tradeoff as KT

    def run(seed, ndcg, data="d"):
        point = {"NDCG@10": ndcg, "Tail@10": 0.1, "seconds": 9.0}
        row = {"quota": 0.3, "feasible": 0.5, "initial": point,
               **{a: {**point, "NDCG@10": ndcg - 0.01} for a in KT.ALGORITHMS}}
        path = tmp_path / f"tradeoff_x{'' if seed == 0 else f'_seed{seed}'}.json"
        path.write_text(json.dumps({"data": data, "n_lists": 4, "head_fraction": 0.1, "seed": seed,
                                    "sweep": [row]}))
        return str(path)

    out = KT.summarize([run(0, 0.2), run(1, 0.4)])
    det = out["sweep"][0]["det_greedy"]
    assert det["NDCG@10"] == pytest.approx(0.29) and "seconds" not in det
    assert out["sweep"][0]["det_greedy_sd"]["NDCG@10"] == pytest.approx(0.2 / math.sqrt(2))
    assert (tmp_path / "tradeoff_x_seeds.json").is_file()
    with pytest.raises(DataError, match="different data"):
        KT.summarize([run(0, 0.2), run(2, 0.4, data="other")])
