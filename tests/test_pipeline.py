"""The funnel on a small planted world: every stage must earn its place.

A useless stage is caught: an identity ranker (the merged order), a random ranker and a ranker that
copies the best channel's recall rank fail the lift test that the trained ranker passes, and a
re-ranker that returns the ranker's order fails the near-duplicate test."""

import numpy as np
import pytest

from tests.conftest import load_module
from Utils.funnel.baselines import order_by, rule_scores
from Utils.funnel.ranking import as_of_counts
from Utils.funnel.recall import Channel, CoVisit, ItemCF, merge, popularity_key, ranks_in, retrieve
from Utils.funnel.report import ndcg_per_user, paired
from Utils.loops.constrained_tradeoff import tail_groups

pipeline = load_module("Classic Models/pipeline_demo.py", "pipeline_demo_under_test")

TINY = [
    "--synthetic-users",
    "600",
    "--epochs",
    "5",
    "--rank-epochs",
    "5",
    "--n-candidates",
    "50",
    "--show-users",
    "1",
    "--quiet",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--serve",
    "20",
]


@pytest.fixture(scope="module")
def runs():
    a = pipeline.run(pipeline.parse_args(TINY))
    b = pipeline.run(pipeline.parse_args(TINY))
    return a, b


def rule_order(out: dict) -> np.ndarray:
    """The one-line rule: the merged candidates sorted by training transitions from the last item."""
    cands = out["candidates"]
    return order_by(cands, rule_scores(out["transitions"], out["hist"], cands))


def beats(a: np.ndarray, b: np.ndarray, out: dict, k: int = 10) -> bool:
    targets = out["split"].test_items
    d = paired(ndcg_per_user(a, targets, k), ndcg_per_user(b, targets, k))
    return d["diff"] > 2 * d["se"] and d["diff"] > 0.01


def lift_passes(ranked: np.ndarray, out: dict, k: int = 10) -> bool:
    """The ranking stage earns its place when its NDCG@k beats both the best single recall channel
    (chosen on validation) and the transition-count rule on the same candidates, each by more than two
    paired standard errors (and 0.01)."""
    return beats(ranked, out["lists"][out["best"]], out, k) and beats(ranked, rule_order(out), out, k)


def same_line_rate(lists: np.ndarray, group: np.ndarray, k: int = 10) -> float:
    g = np.where(lists[:, :k] > 0, group[lists[:, :k]], -1 - np.arange(k))
    s = np.sort(g, 1)
    return float((s[:, 1:] == s[:, :-1]).any(1).mean())


def rerank_passes(final: np.ndarray, ranked: np.ndarray, out: dict) -> bool:
    """The re-ranker earns its place when it removes most lists holding two sizes of one product
    (the planted near-duplicates) at a bounded NDCG cost."""
    group = out["data"].extra["truth"]["item_group"]
    targets = out["split"].test_items
    before, after = same_line_rate(ranked, group), same_line_rate(final, group)
    cost = ndcg_per_user(ranked, targets).mean() - ndcg_per_user(final, targets).mean()
    return after < 0.5 * before and cost < 0.15


def test_useless_and_rule_only_rankers_fail_the_lift_test(runs):
    out, _ = runs
    cands, ranks = out["candidates"], out["channel_ranks"]
    assert beats(out["ranked"], out["lists"][out["best"]], out)  # DIN beats the best channel
    assert not lift_passes(rule_order(out), out)  # the transition-count rule, no model
    assert not lift_passes(cands, out)  # identity: the merged order
    rng = np.random.default_rng(0)
    shuffled = np.take_along_axis(
        cands, rng.permuted(np.tile(np.arange(cands.shape[1]), (len(cands), 1)), axis=1), 1
    )
    assert not lift_passes(shuffled, out)  # random
    c = list(out["lists"]).index(out["best"])
    key = np.where(ranks[..., c] > 0, ranks[..., c], 10**6)
    copy = np.take_along_axis(cands, np.argsort(key, axis=1, kind="stable"), 1)
    assert not lift_passes(copy, out)  # copies the best channel's recall rank


@pytest.mark.xfail(
    strict=True,
    reason="issue 29, open: DIN does not beat the transition-count rule by 2 paired standard errors "
    "in any one funnel world (funnel:0..2: +0.0043, +0.0038, +0.0092, each +- ~0.004); strict, so a "
    "ranker that starts to beat it shows here",
)
def test_trained_ranker_beats_the_transition_rule(runs):
    out, _ = runs
    assert lift_passes(out["ranked"], out)


def test_reranker_passes_and_returning_the_ranker_order_fails(runs):
    out, _ = runs
    assert rerank_passes(out["final"], out["ranked"], out)
    assert not rerank_passes(out["ranked"][:, :10], out["ranked"], out)


def test_every_reranker_buys_what_it_is_for_on_the_same_lists(runs):
    """`--rerank` swaps the final stage; all five run on the same ranked lists. Each must buy what
    it is for against the ranker's order (`none`): DPP fewer near-duplicate lists, calibration a
    lower miscalibration C_KL, the constrained re-ranker its long-tail floor in every prefix of
    every list that can meet it, leaving a list that already complies as it was; `none` is the
    ranked top k itself."""
    out, _ = runs
    table, finals = out["result"]["rerankers"], out["finals"]
    assert list(table) == ["dpp", "mmr", "calibration", "constrained", "none"]
    assert np.array_equal(finals["none"], out["ranked"][:, :10])
    assert np.array_equal(finals["dpp"], out["final"])  # the default --rerank
    none = table["none"]
    assert none["NDCG@10"] == pytest.approx(out["result"]["metrics"]["rank/NDCG@10"])
    assert table["dpp"]["NearDup@10"] < 0.8 * none["NearDup@10"]
    assert table["calibration"]["C_KL@10"] < 0.5 * none["C_KL@10"]
    knobs = out["result"]["rerank_knobs"]
    q = knobs["tail_quota"]
    tail = tail_groups(out["data"], knobs["head_fraction"])
    feasible = tail[out["ranked"][:, :50]].sum(1) >= int(q * 10)  # enough long-tail candidates
    assert 0.9 < feasible.mean()
    assert table["constrained"]["Satisfied@10"] == pytest.approx(feasible.mean(), abs=1e-6)
    prefix_tail = np.cumsum(tail[finals["constrained"]], 1)[feasible]  # (users, 10)
    assert (prefix_tail >= np.floor(q * np.arange(1, 11) + 1e-9)).all()  # every prefix's floor
    assert (prefix_tail <= np.ceil(q * np.arange(1, 11) - 1e-9)).all()  # and ceiling
    ranked_tail = np.cumsum(tail[out["ranked"][:, :10]], 1)
    ok = ((ranked_tail >= np.floor(q * np.arange(1, 11) + 1e-9))
          & (ranked_tail <= np.ceil(q * np.arange(1, 11) - 1e-9))).all(1)
    assert 0.1 < ok.mean() < 0.9  # the quota binds on some lists, not on all
    same = (finals["constrained"] == out["ranked"][:, :10]).all(1)
    assert np.array_equal(same, ok)  # DetGreedy keeps exactly the lists that already comply
    for name, final in finals.items():  # each final list: distinct items from the ranker's top 50
        assert all(set(f[f > 0]) <= set(r[:50]) for f, r in zip(final, out["ranked"], strict=True))
        assert all(len(set(f[f > 0])) == (f > 0).sum() for f in final), name


def test_one_request_matches_the_batch_pipeline_for_every_reranker(runs):
    """A served request re-ranks with the user's own history (calibration reads it) and gives the
    batch list, whichever re-ranker is plugged in."""
    from Utils.funnel.rerank import build_reranker
    from Utils.funnel.serving import Funnel

    out, _ = runs
    f = out["funnel"]
    for name, final in out["finals"].items():
        served = Funnel(f.args, f.channels, f.ranker, build_reranker(f.args, out["data"], name),
                        f.pop_key)
        for r in range(3):
            assert np.array_equal(served.recommend(out["hist"][r]), final[r]), name


def test_ranker_reads_no_recall_rank_by_default(runs):
    """Without recall features a candidate's score does not depend on where recall put it."""
    out, _ = runs
    ranker = out["ranker"]
    assert not any(n.startswith("rank_") for n in ranker.fb.names)
    h, c = out["hist"][:20], out["candidates"][:20]
    perm = np.random.default_rng(1).permutation(c.shape[1])
    a = ranker.score(h, c)
    b = ranker.score(h, c[:, perm])
    np.testing.assert_allclose(a[:, perm], b, rtol=1e-5, atol=1e-5)


def test_each_stage_gets_the_previous_output(runs):
    out, _ = runs
    cand, ranked, final = out["candidates"], out["ranked"], out["final"]
    assert cand.shape[1] == 50 and final.shape[1] == 10
    assert all(len(set(r)) == len(r) for r in cand)  # merged candidates are distinct
    assert np.array_equal(np.sort(cand, 1), np.sort(ranked, 1))  # ranking reorders the merged set
    assert all(set(f[f > 0]) <= set(r[:50]) for f, r in zip(final, ranked, strict=True))
    assert all(len(set(f[f > 0])) == (f > 0).sum() for f in final)


def test_no_seen_item_is_recommended(runs):
    out, _ = runs
    split = out["split"]
    offsets, items = split.seen("test")
    for r in range(split.n_users):
        seen = set(items[offsets[r] : offsets[r + 1]])
        assert not seen & set(out["candidates"][r]) and not seen & set(out["final"][r])


def test_same_seed_same_lists(runs):
    a, b = runs
    for key in ("candidates", "ranked", "final"):
        assert np.array_equal(a[key], b[key])
    assert a["result"]["metrics"] == b["result"]["metrics"]


def test_one_request_matches_the_batch_pipeline(runs):
    out, _ = runs
    f = out["funnel"]
    for r in range(5):
        assert np.array_equal(f.recommend(out["hist"][r]), out["final"][r])
    serving = out["result"]["serving"]
    for stage in ("recall", "merge", "rank", "rerank", "total"):
        assert serving[stage]["p95_ms"] >= serving[stage]["p50_ms"] > 0


def test_result_has_metrics_per_stage(runs):
    res = runs[0]["result"]
    for key in (
        "recall/Recall@50",
        "recall/NDCG@10",
        "rank/NDCG@10",
        "rerank/NDCG@10",
        "rerank/ILD@10",
        "rerank/Coverage@10",
        "rank/lift_vs_best_channel",
    ):
        assert key in res["metrics"]
    ch = res["channels"]
    union = ch["union/Recall@50"]
    assert all(0 <= v <= 1 for k, v in ch.items() if k.startswith("overlap/"))
    assert (
        union
        >= max(v for k, v in ch.items() if k.endswith("/Recall@50") and not k.startswith("union"))
        - 0.2
    )
    assert res["baseline"]["name"] == "Popularity"


def test_merge_keeps_quotas_and_drops_duplicates():
    a = np.array([[1, 2, 3, 4, 5, 6]])
    b = np.array([[2, 7, 8, 9, 10, 11]])
    merged = merge([a, b], [0.5, 0.5], 6)
    # keys r / q: a1 b2 a2(dup) b7 a3 b8 a4 ... ; ties in channel order
    assert merged.tolist() == [[1, 2, 7, 3, 8, 4]]
    merged = merge([a, b], [0.75, 0.25], 4)  # keys: a 0, 1.3, 2.7, 4; b 0, 4
    assert merged.tolist() == [[1, 2, 3, 4]]
    assert ranks_in(merged, b).tolist() == [[0, 1, 0, 0]]


def test_itemcf_ties_go_to_popular_items_then_lower_ids():
    class S:  # a tiny split: three users' training sequences
        n_users, n_items = 3, 5
        train_offsets = np.array([0, 2, 4, 6])
        train_items = np.array([1, 2, 1, 3, 4, 5])

        def item_counts(self):
            return np.bincount(self.train_items, minlength=6)

    s = S()
    icf = ItemCF(s)
    pop = popularity_key(s)
    ch = Channel("itemcf", "dense", score_fn=icf.scores)
    seen = (np.array([0, 1]), np.array([1]))
    got = retrieve(ch, np.array([[0, 1]]), seen, np.array([0]), 4, pop)
    # items 2 and 3 co-occur with 1 equally; then no co-occurrence: 4, 5 by id (equal counts)
    assert got.tolist() == [[2, 3, 4, 5]]


@pytest.mark.parametrize(
    "flags",
    [
        ["--k", "0"],
        ["--quotas", "1,2"],
        ["--channels", "sasrec,foo"],
        ["--sweep-n", "a"],
        ["--theta", "2"],
        ["--cal-lambda", "1.5"],
        ["--tail-quota", "-0.1"],
        ["--head-fraction", "1"],
    ],
)
def test_bad_flags_exit_2(flags, capsys):
    assert pipeline.main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


class _Split:  # a tiny split: three users' training sequences
    n_users, n_items = 3, 5
    train_offsets = np.array([0, 4, 7, 9])
    train_items = np.array([1, 2, 1, 2, 3, 1, 2, 4, 5])

    def item_counts(self):
        return np.bincount(self.train_items, minlength=6)


def test_covisit_is_directed_and_counts_what_follows():
    cv = CoVisit(_Split(), window=1, last=1)
    # 1 -> 2 three times (users 0, 0, 1); 2 -> 1 once (user 0); nothing follows 5
    sc = cv.scores(np.array([[0, 1], [0, 2], [0, 5]]))
    assert sc[0].tolist() == [0, 0, 3, 0, 0, 0]
    assert sc[1].tolist() == [0, 1, 0, 0, 0, 0]
    assert not sc[2].any()


def test_as_of_counts_equal_a_recount_of_the_past():
    """Counts taken as of a step = the training counts minus what happens at or after the step, i.e.
    exactly the counts of the user's earlier transitions plus every other user's."""
    split = _Split()
    n1 = split.n_items + 1
    icf = ItemCF(split)
    g = np.array([1, 2, 3, 5, 8])
    row = np.searchsorted(split.train_offsets, g, side="right") - 1
    later_t, later_c = as_of_counts(split, g, row)
    items, o = split.train_items, split.train_offsets
    for r, (gi, u) in enumerate(zip(g, row, strict=True)):
        past = [items[o[v] : o[v + 1]] if v != u else items[o[u] : gi] for v in range(split.n_users)]
        trans = np.zeros((n1, n1))
        for seq in past:
            for a, b in zip(seq[:-1], seq[1:], strict=False):
                trans[a, b] += 1
        last = items[gi - 1]
        got = icf.transitions[last].toarray()[0] - later_t[r].toarray()[0]
        np.testing.assert_array_equal(got, trans[last])
        counts = np.bincount(np.concatenate(past), minlength=n1)
        np.testing.assert_array_equal(split.item_counts() - later_c[r].toarray()[0], counts)


def test_rule_scores_are_the_transition_counts_from_the_last_item():
    icf = ItemCF(_Split())
    h = np.array([[0, 1], [1, 2]])
    cands = np.array([[3, 2, 0], [1, 4, 3]])
    sc = rule_scores(icf.transitions, h, cands)
    dense = icf.transitions.toarray()
    assert sc[0, :2].tolist() == [dense[1, 3], dense[1, 2]] and sc[0, 2] == -np.inf
    assert sc[1].tolist() == [dense[2, 1], dense[2, 4], dense[2, 3]]
    # equal counts keep the merged order
    assert order_by(np.array([[7, 8, 9]]), np.array([[0.0, 1.0, 0.0]])).tolist() == [[8, 7, 9]]


def test_seed_summary_keeps_the_rerankers_settings_as_set(tmp_path):
    """summarize_seeds averages measurements, not settings: the runs' re-ranking knobs come back as
    they were given (0.8, not 0.8000000000000002; the algorithm's name kept), with no sd."""
    import json

    from Utils.funnel.report import summarize_seeds

    knobs = {"theta": 0.9, "lam": 0.8, "constrained_algorithm": "det_greedy"}
    paths = []
    for s, (rank, rec) in enumerate([(0.41, 0.36), (0.42, 0.37), (0.43, 0.35)]):
        run = {"model": "funnel", "data": f"funnel:{s}", "protocol": "p", "params": 1,
               "metrics": {"rank/NDCG@10": rank, "recall/NDCG@10": rec},
               "best_channel": "covis", "rerank_knobs": knobs}
        paths.append(tmp_path / f"run{s}.json")
        paths[-1].write_text(json.dumps(run))
    out = summarize_seeds(tmp_path / "summary.json", paths)
    assert out["rerank_knobs"] == knobs and "rerank_knobs_sd" not in out
    assert out["lift_over_seeds"]["diff"] == pytest.approx((0.05 + 0.05 + 0.08) / 3)
