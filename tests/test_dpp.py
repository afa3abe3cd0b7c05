"""Properties of DPP fast greedy MAP (Chen, Zhang & Zhou, NeurIPS 2018) — see the DPP note."""

import itertools
import math

import pytest
import torch

from tests.conftest import load_module

dpp = load_module("Classic Models/Re-ranking/DPP/model.py", "dpp_model")


def _random_kernel(gen: torch.Generator, n: int, d: int, theta: float = 0.6, ridge: float = 1e-2):
    feats = torch.randn(1, n, d, generator=gen, dtype=torch.float64)
    scores = torch.rand(1, n, generator=gen, dtype=torch.float64)
    sim = dpp.similarity_matrix(feats, ridge=ridge)
    return dpp.build_kernel(scores=scores, similarity=sim, theta=theta)


def test_fast_greedy_equals_naive_logdet_greedy_on_many_random_kernels():
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        n = int(torch.randint(3, 13, (1,), generator=gen))
        d = int(torch.randint(2, 9, (1,), generator=gen))
        k = int(torch.randint(1, n + 1, (1,), generator=gen))
        L = _random_kernel(gen, n, d)
        fast = dpp.greedy_map(L, max_length=k).selected[0]
        naive = dpp.naive_greedy_map(L[0], max_length=k)
        assert torch.equal(fast[fast >= 0], naive)


def test_sliding_window_equals_naive_windowed_greedy():
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        n = int(torch.randint(5, 14, (1,), generator=gen))
        k = int(torch.randint(4, n + 1, (1,), generator=gen))
        w = int(torch.randint(2, 4, (1,), generator=gen))
        L = _random_kernel(gen, n, 4)
        fast = dpp.greedy_map(L, max_length=k, window_size=w).selected[0]
        naive = dpp.naive_greedy_map(L[0], max_length=k, window_size=w)
        assert torch.equal(fast[fast >= 0], naive)


def test_window_lets_an_old_near_duplicate_come_back_but_plain_greedy_does_not():
    # item 0 ~ item 1 (near-identical), items 2..6 orthogonal: with window w the DPP only asks
    # each pick to differ from the w - 1 picks before it, so item 1 comes back after w - 1 others.
    feats = torch.eye(6, dtype=torch.float64)
    feats = torch.cat([feats[:1] + 1e-3 * feats[1:2], feats], dim=0).unsqueeze(0)  # item 0 ~ item 1
    scores = torch.tensor([[1.0, 0.99, 0.5, 0.45, 0.4, 0.35, 0.3]], dtype=torch.float64)
    L = dpp.build_kernel(scores=scores, similarity=dpp.similarity_matrix(feats), theta=0.8)
    plain = dpp.greedy_map(L, max_length=5).selected[0].tolist()
    w2 = dpp.greedy_map(L, max_length=5, window_size=2).selected[0].tolist()
    w3 = dpp.greedy_map(L, max_length=5, window_size=3).selected[0].tolist()
    assert plain == [0, 2, 3, 4, 5]  # the near-duplicate (item 1) of the first pick is shunned
    assert w2[:3] == [0, 2, 1]  # w = 2: one other item in between is enough
    assert w3[:4] == [0, 2, 3, 1]  # w = 3: two other items in between


def test_incremental_cholesky_equals_torch_cholesky_of_selected_subkernel():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(8, 25, 6, generator=gen, dtype=torch.float64)
    scores = torch.rand(8, 25, generator=gen, dtype=torch.float64)
    L = dpp.build_kernel(
        scores=scores, similarity=dpp.similarity_matrix(feats, ridge=1e-2), theta=0.5
    )
    res = dpp.greedy_map(L, max_length=10)
    for b in range(8):
        Y = res.selected[b]
        assert (Y >= 0).all()
        expected = torch.linalg.cholesky(L[b][Y][:, Y])
        torch.testing.assert_close(res.cholesky[b], expected, atol=1e-9, rtol=1e-9)
        # Eq. (3): det(L_Y) is the product of the gains d_j^2
        logdet = torch.linalg.slogdet(L[b][Y][:, Y])[1]
        torch.testing.assert_close(res.log_gains[b].sum(), logdet)


def test_identical_items_second_copy_never_picked_while_a_distinct_item_remains():
    gen = torch.Generator().manual_seed(3)
    for _ in range(30):
        base = torch.randn(6, 8, generator=gen, dtype=torch.float64)  # 6 linearly independent items
        dup = int(torch.randint(0, 6, (1,), generator=gen))
        feats = torch.cat([base, base[dup : dup + 1]], dim=0).unsqueeze(0)  # item 6 copies item dup
        scores = torch.rand(1, 7, generator=gen, dtype=torch.float64)
        scores[0, 6] = scores[0, dup]  # identical item, identical relevance
        theta = float(torch.rand(1, generator=gen)) * 0.95
        # the paper's kernel (no ridge): the copy adds nothing to det(S_Y), whatever its relevance
        L = dpp.build_kernel(scores=scores, similarity=dpp.similarity_matrix(feats), theta=theta)
        order = dpp.greedy_map(L, max_length=7).selected[0].tolist()
        distinct = [i for i in range(6)]
        assert sorted(order[:6]) == distinct, f"a copy came before a distinct item: {order}"
        assert order[6] == -1  # then the stopping rule ends the list: the copy adds det 0


def test_first_pick_and_second_pick_match_brute_force_determinants():
    gen = torch.Generator().manual_seed(4)
    for _ in range(40):
        L = _random_kernel(gen, 7, 4)[0]
        order = dpp.greedy_map(L.unsqueeze(0), max_length=2).selected[0].tolist()
        singles = [float(L[i, i]) for i in range(7)]
        assert order[0] == max(range(7), key=lambda i: singles[i])
        pairs = {j: float(torch.det(L[[order[0], j]][:, [order[0], j]])) for j in range(7)}
        pairs.pop(order[0])
        assert order[1] == max(pairs, key=pairs.get)


def test_greedy_finds_the_brute_force_optimum_on_a_clustered_kernel():
    # three tight clusters with different relevance: the max-det 3-set takes one item per cluster,
    # the most relevant of each; greedy must find exactly that set (brute force over all 3-sets).
    gen = torch.Generator().manual_seed(5)
    centres = torch.eye(3, dtype=torch.float64)
    feats = centres.repeat_interleave(3, dim=0) + 0.05 * torch.randn(
        9, 3, generator=gen, dtype=torch.float64
    )
    scores = torch.rand(1, 9, generator=gen, dtype=torch.float64)
    L = dpp.build_kernel(
        scores=scores, similarity=dpp.similarity_matrix(feats.unsqueeze(0)), theta=0.5
    )[0]
    best = max(
        itertools.combinations(range(9), 3), key=lambda s: float(torch.det(L[list(s)][:, list(s)]))
    )
    greedy = dpp.greedy_map(L.unsqueeze(0), max_length=3).selected[0].tolist()
    assert sorted(greedy) == sorted(best)
    assert sorted(i // 3 for i in greedy) == [0, 1, 2]


def test_stopping_rule_min_gain_one_stops_when_det_would_decrease():
    gen = torch.Generator().manual_seed(6)
    feats = torch.randn(4, 30, 3, generator=gen, dtype=torch.float64)
    scores = torch.rand(4, 30, generator=gen, dtype=torch.float64)
    L = dpp.build_kernel(
        scores=scores, similarity=dpp.similarity_matrix(feats, ridge=0.05), theta=0.7
    )
    res = dpp.greedy_map(L, max_length=30, min_gain=1.0)
    for b in range(4):
        Y = res.selected[b][res.selected[b] >= 0]
        assert 0 < len(Y) < 30
        assert (res.log_gains[b, : len(Y)] >= 0.0).all()
        # the best remaining item would have lowered det(L_Y)
        logdet = torch.linalg.slogdet(L[b][Y][:, Y])[1]
        rest = [i for i in range(30) if i not in Y.tolist()]
        nxt = max(
            float(torch.linalg.slogdet(L[b][Y.tolist() + [i]][:, Y.tolist() + [i]])[1])
            for i in rest
        )
        assert nxt < float(logdet)


def test_theta_knob_alpha_and_extremes():
    assert dpp.relevance_weight(0.5) == pytest.approx(0.5)
    assert dpp.relevance_weight(0.0) == 0.0
    with pytest.raises(ValueError):
        dpp.relevance_weight(1.0)
    gen = torch.Generator().manual_seed(7)
    feats = torch.randn(3, 20, 4, generator=gen)
    scores = torch.rand(3, 20, generator=gen)
    # theta -> 1: relevance dominates, the list is the relevance order
    near_one = dpp.DPPReranker(theta=0.999, max_length=5, ridge=1e-2)
    assert torch.equal(
        near_one(scores=scores, item_vectors=feats), scores.argsort(dim=1, descending=True)[:, :5]
    )
    # theta = 0: scores are ignored
    zero = dpp.DPPReranker(theta=0.0, max_length=5, ridge=1e-2)
    assert torch.equal(
        zero(scores=scores, item_vectors=feats), zero(scores=scores.flip(1), item_vectors=feats)
    )


def test_log_quality_form_picks_what_the_explicit_kernel_picks():
    gen = torch.Generator().manual_seed(9)
    feats = torch.randn(5, 40, 6, generator=gen, dtype=torch.float64)
    scores = torch.rand(5, 40, generator=gen, dtype=torch.float64)
    sim = dpp.similarity_matrix(feats, ridge=1e-3)
    for theta in (0.0, 0.3, 0.7, 0.95):
        L = dpp.build_kernel(scores=scores, similarity=sim, theta=theta)
        explicit = dpp.greedy_map(L, max_length=10, window_size=4)
        log_form = dpp.greedy_map(
            sim, max_length=10, window_size=4, log_quality=2 * dpp.relevance_weight(theta) * scores
        )
        assert torch.equal(explicit.selected, log_form.selected)
        torch.testing.assert_close(explicit.log_gains, log_form.log_gains)


def test_batched_equals_one_list_at_a_time_and_padding_is_never_picked():
    gen = torch.Generator().manual_seed(8)
    feats = torch.randn(6, 15, 5, generator=gen)
    scores = torch.rand(6, 15, generator=gen)
    valid = torch.ones(6, 15, dtype=torch.bool)
    valid[:, 12:] = False
    scores[:, 12:] = 10.0  # padded candidates look the most relevant: they must still be skipped
    model = dpp.DPPReranker(theta=0.6, max_length=8, window_size=3)
    batched = model(scores=scores, item_vectors=feats, valid=valid)
    for b in range(6):
        one = model(scores=scores[b : b + 1, :12], item_vectors=feats[b : b + 1, :12])
        assert torch.equal(batched[b], one[0])
    assert (batched < 12).all()


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        dpp.greedy_map(torch.zeros(3, 3), max_length=2)
    with pytest.raises(ValueError):
        dpp.greedy_map(torch.eye(3).unsqueeze(0), max_length=2, window_size=1)
    with pytest.raises(TypeError):
        dpp.DPPReranker(thetaa=0.5)
    assert math.isclose(dpp.relevance_weight(0.9), 4.5)


def test_rerank_metrics_score_positions_and_count_stopped_slots_as_misses():
    # Utils/loops/rerank_eval.py, shared by the three re-rankers' demos
    import numpy as np

    from Utils.loops.rerank_eval import initial_positions, rerank_metrics

    items = np.array([[5, 6, 7, 8]])
    labels = np.array([[0.0, 0.0, 1.0, 0.0]])
    one = np.ones(1)
    initial = rerank_metrics(initial_positions(1, 2), items, labels, k=2, n_relevant=one)
    assert initial["NDCG@2"] == 0.0 and initial["Recall@2"] == 0.0
    moved_up = rerank_metrics(np.array([[2, -1]]), items, labels, k=2, n_relevant=one)
    assert moved_up["NDCG@2"] == pytest.approx(1.0) and moved_up["Recall@2"] == 1.0
    second = rerank_metrics(np.array([[-1, 2]]), items, labels, k=2, n_relevant=one)
    assert second["NDCG@2"] == pytest.approx(1 / math.log2(3))


def test_demo_kernel_and_picks_are_eq14_and_match_the_reranker():
    """The figure's kernel is Diag(q) S Diag(q) with q = exp(alpha r), and its picks are the
    DPPReranker's picks for the same list (explicit kernel vs log-space relevance)."""
    demo = load_module("Classic Models/Re-ranking/DPP/demo.py", "dpp_demo")
    gen = torch.Generator().manual_seed(5)
    r, f = torch.rand(20, generator=gen), torch.randn(20, 6, generator=gen)
    kernel, picks = demo.kernel_and_picks(dpp, scores=r, item_vectors=f, theta=0.7, k=8)
    q = torch.exp(dpp.relevance_weight(0.7) * r.double())
    S = kernel / torch.outer(q, q)
    assert torch.allclose(S, dpp.similarity_matrix(f[None].double(), ridge=1e-3)[0])
    ref = dpp.DPPReranker(theta=0.7, max_length=8)(scores=r[None].double(), item_vectors=f[None])
    assert torch.equal(picks, ref[0])


def test_k_longer_than_the_list_is_refused_not_capped():
    with pytest.raises(ValueError, match=r"max_length must be in 1\.\.4"):
        dpp.greedy_map(torch.eye(4, dtype=torch.float64).expand(1, 4, 4), max_length=5)


def test_demo_save_then_load_gives_identical_metrics(tmp_path, capsys):
    from tests.test_bad_input_rerank import FAST, result_of, run_demo, write_seqtxt

    data = ["--data", f"seqtxt:{write_seqtxt(tmp_path / 'd')}", "--window", "3"]
    ckpt = tmp_path / "dpp.pt"
    code, out, err = run_demo("DPP", [*FAST["DPP"], *data, "--save", str(ckpt)], capsys)
    assert code == 0 and ckpt.is_file(), err[-2000:]
    first = result_of(out)
    code, out, err = run_demo("DPP", [*FAST["DPP"], *data, "--load", str(ckpt), "--recommend", "3"],
                              capsys)
    assert code == 0, err[-2000:]
    again = result_of(out)
    assert again["metrics"] == first["metrics"] and again["sweep"] == first["sweep"]
    assert "user 3 " in out and "DPP top-5" in out


def test_overrides_never_mutate_the_callers_config():
    cfg = dpp.DPPConfig()
    model = dpp.DPPReranker(cfg, theta=0.2, max_length=3, window_size=2)
    assert cfg == dpp.DPPConfig()  # the caller's object keeps its values
    assert model.config is not cfg
    assert (model.config.theta, model.config.max_length, model.config.window_size) == (0.2, 3, 2)
    with pytest.raises(ValueError, match=r"theta must be in \[0, 1\), got 2\.0"):
        dpp.DPPReranker(cfg, theta=2.0)  # a refused override leaves no trace either
    assert cfg == dpp.DPPConfig()
    cfg.theta = 0.9  # and the model does not see later edits of the caller's object
    assert model.config.theta == 0.2


def test_nan_score_is_refused_instead_of_a_silent_row_of_minus_one():
    gen = torch.Generator().manual_seed(11)
    scores, feats = torch.rand(3, 8, generator=gen), torch.randn(3, 8, 4, generator=gen)
    model = dpp.DPPReranker(theta=0.7, max_length=4)
    assert (model(scores=scores, item_vectors=feats) >= 0).all()  # finite: four picks per list
    scores[2, 5] = float("nan")
    with pytest.raises(ValueError, match=r"scores: list 2 is not finite \(nan at scores\[2, 5\]\)"):
        model(scores=scores, item_vectors=feats)


def test_short_list_padded_with_valid_false_gives_its_items_then_minus_one():
    """The documented way to re-rank a list shorter than max_length: pad it with valid=False."""
    gen = torch.Generator().manual_seed(12)
    scores, feats = torch.rand(3, 10, generator=gen), torch.randn(3, 10, 5, generator=gen)
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[0, 3:] = False  # list 0 has 3 candidates
    valid[1] = False  # list 1 has none
    scores[0, 3:], feats[0, 3:] = 0.0, 0.0  # the padding's values (finite) do not matter
    out = dpp.DPPReranker()(scores=scores, item_vectors=feats, valid=valid)  # default k = 10
    assert out.shape == (3, 10) and out.dtype == torch.long
    alone = dpp.DPPReranker(max_length=3)(scores=scores[:1, :3], item_vectors=feats[:1, :3])
    assert torch.equal(out[0, :3], alone[0]) and sorted(out[0, :3].tolist()) == [0, 1, 2]
    assert (out[0, 3:] == -1).all() and (out[1] == -1).all()
    assert sorted(out[2].tolist()) == list(range(10))
    with pytest.raises(ValueError, match=r"max_length must be in 1\.\.3 .*got 10"):
        dpp.DPPReranker()(scores=scores[:1, :3], item_vectors=feats[:1, :3])  # unpadded: refused


def test_an_empty_batch_gives_an_empty_result_and_empty_lists_are_refused():
    out = dpp.DPPReranker(max_length=4)(scores=torch.rand(0, 6), item_vectors=torch.rand(0, 6, 3))
    assert out.shape == (0, 4) and out.dtype == torch.long
    with pytest.raises(ValueError, match=r"the candidate lists are empty \(N = 0\)"):
        dpp.greedy_map(torch.zeros(2, 0, 0, dtype=torch.float64), max_length=1)


@pytest.mark.parametrize("tag", ["synthetic", "beauty"])
def test_tradeoff_figure_labels_every_point_with_its_theta_or_lambda_legibly(tag):
    """The note's trade-off figures, drawn from the stored runs: every DPP point carries `θ=<its
    theta>` and every MMR point `λ=<its lambda>`, anchored at that point; the labels overlap no
    other label and no marker, and stay inside the axes."""
    import json

    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from tests.conftest import ROOT
    from Utils.loops import rerank_tradeoff as T
    from Utils.plotting import scatter_figure

    result = json.loads((ROOT / "assets" / "DPP" / "results" / f"tradeoff_{tag}.json").read_text())
    points, labels = T.tradeoff_points(result)
    fig, ax, anns = scatter_figure(points, point_labels=labels, figsize=(8, 5.5))
    try:
        expected = [(r["ILD@10"], r["NDCG@10"], f"θ={r['theta']:g}") for r in result["DPP"]]
        expected += [(r["ILD@10"], r["NDCG@10"], f"λ={r['lambda']:g}") for r in result["MMR"]]
        assert len(anns) == len(expected) == len(result["DPP"]) + len(result["MMR"])
        assert [(a.xy[0], a.xy[1], a.get_text()) for a in anns] == expected
        renderer = fig.canvas.get_renderer()
        boxes = []
        for a in anns:
            a.update_positions(renderer)
            boxes.append(Text.get_window_extent(a, renderer))
        inside = ax.get_window_extent()
        markers = [(x, y) for xs, ys in points.values() for x, y in zip(xs, ys)]  # + initial
        px = ax.transData.transform(markers)
        for i, b in enumerate(boxes):
            name = anns[i].get_text()
            assert inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 <= b.y1 <= inside.y1
            assert not any(b.overlaps(o) for o in boxes[i + 1 :]), f"label {name} overlaps another"
            assert not any(b.contains(mx, my) for mx, my in px), f"label {name} hides a marker"
    finally:
        plt.close(fig)


def test_tradeoff_replot_prints_the_stored_points_and_draws_without_a_run(tmp_path, capsys):
    """`--replot` redraws the figure from a stored json: no data, no training; it prints every
    stored point with its knob and writes the PNG where `--plot` says."""
    import json

    from tests.conftest import ROOT
    from Utils.loops import rerank_tradeoff as T

    stored = ROOT / "assets" / "DPP" / "results" / "tradeoff_beauty.json"
    out = tmp_path / "fig.png"
    T.main(["--replot", str(stored), "--plot", str(out)])
    printed = capsys.readouterr().out.splitlines()
    result = json.loads(stored.read_text())
    for name, knob in (("DPP", "theta"), ("MMR", "lambda")):
        for r in result[name]:
            line = next(s for s in printed if s.startswith(f"{name} {knob}={r[knob]} "))
            assert f"NDCG@10={r['NDCG@10']:.4f}" in line and f"ILD@10={r['ILD@10']:.4f}" in line
    assert out.stat().st_size > 10_000 and printed[-1] == f"wrote {out}"
