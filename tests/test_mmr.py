"""Properties of MMR (Carbonell & Goldstein, SIGIR 1998) — see the MMR note."""


import pytest
import torch

from tests.conftest import load_module

mmr = load_module("Classic Models/Re-ranking/MMR/model.py", "mmr_model")


def _reference_mmr(rel: list[float], sim: list[list[float]], lam: float, k: int) -> list[int]:
    """Eq. (1) written literally, one list, plain Python."""
    chosen: list[int] = [max(range(len(rel)), key=lambda i: rel[i])]
    while len(chosen) < min(k, len(rel)):
        rest = [i for i in range(len(rel)) if i not in chosen]
        chosen.append(
            max(rest, key=lambda i: lam * rel[i] - (1 - lam) * max(sim[i][j] for j in chosen))
        )
    return chosen


def test_lambda_one_returns_the_relevance_order():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(16, 30, generator=gen)
    feats = torch.randn(16, 30, 8, generator=gen)
    out = mmr.MMRReranker(lam=1.0, max_length=10)(scores=scores, item_vectors=feats)
    assert torch.equal(out, scores.argsort(dim=1, descending=True)[:, :10])


def test_lambda_zero_second_pick_is_least_similar_to_the_first():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(32, 20, generator=gen)
    feats = torch.randn(32, 20, 6, generator=gen)
    out = mmr.MMRReranker(lam=0.0, max_length=3)(scores=scores, item_vectors=feats)
    sim = mmr.cosine_similarity(feats)
    first = out[:, 0]
    assert torch.equal(first, scores.argmax(dim=1))  # empty S: the most relevant (NOTE)
    row = sim[torch.arange(32), first].clone()  # (B, N)
    row[torch.arange(32), first] = float("inf")
    assert torch.equal(out[:, 1], row.argmin(dim=1))


def test_batched_selection_equals_literal_equation_on_random_lists():
    gen = torch.Generator().manual_seed(2)
    scores = torch.rand(20, 12, generator=gen, dtype=torch.float64)
    feats = torch.randn(20, 12, 4, generator=gen, dtype=torch.float64)
    sim = mmr.cosine_similarity(feats)
    for lam in (0.0, 0.3, 0.5, 0.8, 1.0):
        out = mmr.mmr_select(relevance=scores, similarity=sim, lam=lam, max_length=8)
        for b in range(20):
            ref = _reference_mmr(scores[b].tolist(), sim[b].tolist(), lam, 8)
            assert out[b].tolist() == ref, (lam, b)


def test_near_duplicate_of_the_first_pick_is_pushed_down():
    # item 1 is item 0 with a tiny change and almost the same relevance
    feats = torch.eye(5).unsqueeze(0).clone()
    feats[0, 1] = feats[0, 0] + 0.01 * feats[0, 4]
    scores = torch.tensor([[1.0, 0.99, 0.6, 0.5, 0.4]])
    plain = mmr.MMRReranker(lam=1.0, max_length=5)(scores=scores, item_vectors=feats)[0].tolist()
    diverse = mmr.MMRReranker(lam=0.5, max_length=5)(scores=scores, item_vectors=feats)[0].tolist()
    assert plain[:2] == [0, 1]
    assert diverse[:4] == [0, 2, 3, 4] and diverse[4] == 1


def test_padding_is_never_selected_and_short_lists_end_with_minus_one():
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(4, 10, generator=gen)
    scores[:, 6:] = 5.0  # padded candidates look best: they must still be skipped
    valid = torch.ones(4, 10, dtype=torch.bool)
    valid[:, 6:] = False
    sim = mmr.cosine_similarity(torch.randn(4, 10, 3, generator=gen))
    out = mmr.mmr_select(relevance=scores, similarity=sim, lam=0.6, max_length=8, valid=valid)
    assert (out[:, :6] >= 0).all() and (out[:, :6] < 6).all()
    assert (out[:, 6:] == -1).all()
    assert all(len(set(r[:6].tolist())) == 6 for r in out)  # no repeats


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        mmr.MMRReranker(lam=1.5)
    with pytest.raises(TypeError):
        mmr.MMRReranker(lambda_=0.5)
    with pytest.raises(ValueError):
        mmr.mmr_select(
            relevance=torch.rand(2, 5), similarity=torch.rand(2, 5, 4), lam=0.5, max_length=3
        )


def test_demo_step_trace_matches_mmr_select_and_eq1():
    """The figure's per-step terms: same picks as mmr_select, and mmr = relevance - redundancy."""
    demo = load_module("Classic Models/Re-ranking/MMR/demo.py", "mmr_demo")
    gen = torch.Generator().manual_seed(3)
    rel = torch.rand(25, generator=gen)
    sim = mmr.cosine_similarity(torch.randn(1, 25, 6, generator=gen))[0]
    for lam in (0.0, 0.5, 0.9):
        steps = demo.mmr_trace(relevance=rel, similarity=sim, lam=lam, k=8)
        ref = mmr.mmr_select(relevance=rel[None], similarity=sim[None], lam=lam, max_length=8)
        assert [s["pick"] for s in steps] == ref[0].tolist()
        assert steps[0]["redundancy"] == 0.0
        for s in steps[1:]:
            assert s["mmr"] == pytest.approx(s["relevance"] - s["redundancy"])


def test_k_longer_than_the_list_is_refused_not_capped():
    with pytest.raises(ValueError, match=r"max_length must be in 1\.\.6"):
        mmr.mmr_select(relevance=torch.rand(2, 6), similarity=torch.rand(2, 6, 6), lam=0.5,
                       max_length=7)


def test_demo_save_then_load_gives_identical_metrics_and_recommends(tmp_path, capsys):
    from tests.test_bad_input_rerank import FAST, result_of, run_demo, write_seqtxt

    data = ["--data", f"seqtxt:{write_seqtxt(tmp_path / 'd')}"]
    ckpt = tmp_path / "mmr.pt"
    code, out, err = run_demo("MMR", [*FAST["MMR"], *data, "--save", str(ckpt)], capsys)
    assert code == 0 and ckpt.is_file(), err[-2000:]
    first = result_of(out)
    code, out, err = run_demo("MMR", [*FAST["MMR"], *data, "--load", str(ckpt), "--recommend", "7"],
                              capsys)
    assert code == 0, err[-2000:]
    again = result_of(out)
    assert again["metrics"] == first["metrics"] and again["sweep"] == first["sweep"]
    assert again["loaded"] == str(ckpt) and "user 7 " in out and "MMR top-5" in out
    # --save refuses to overwrite unless asked
    code, _, err = run_demo("MMR", [*FAST["MMR"], *data, "--save", str(ckpt)], capsys)
    assert code == 2 and "--overwrite" in err


def test_demo_runs_on_interactions_alone_and_says_what_it_uses_instead(tmp_path, capsys):
    from tests.test_bad_input_rerank import FAST, result_of, run_demo, write_seqtxt

    path = write_seqtxt(tmp_path / "ids", attributes=False)
    argv = [*FAST["MMR"], "--data", f"seqtxt:{path}", "--threads", "2", "--device", "cpu"]
    code, out, err = run_demo("MMR", argv, capsys)
    assert code == 0, err[-2000:]
    assert torch.get_num_threads() == 2  # --threads takes effect (the fixture restores it)
    assert out.count("[side inputs]") == 1 and "item embeddings" in out
    res = result_of(out)
    assert set(res["metrics"]) == {"NDCG@5", "Recall@5"} and "similarity=embedding" in res["protocol"]


def test_overrides_never_mutate_the_callers_config():
    cfg = mmr.MMRConfig()
    model = mmr.MMRReranker(cfg, lam=0.3, max_length=4)
    assert cfg == mmr.MMRConfig() and model.config is not cfg
    assert (model.config.lam, model.config.max_length) == (0.3, 4)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\], got 1\.5"):
        mmr.MMRReranker(cfg, lam=1.5)  # a refused override leaves no trace either
    assert cfg == mmr.MMRConfig()


def test_nan_score_is_refused_instead_of_being_picked_first():
    gen = torch.Generator().manual_seed(4)
    scores, feats = torch.rand(2, 6, generator=gen), torch.randn(2, 6, 3, generator=gen)
    scores[1, 4] = float("nan")  # argmax would take the NaN as the best candidate
    with pytest.raises(ValueError, match=r"scores: list 1 is not finite \(nan at scores\[1, 4\]\)"):
        mmr.MMRReranker(max_length=3)(scores=scores, item_vectors=feats)


def test_short_list_padded_with_valid_false_gives_its_items_then_minus_one():
    gen = torch.Generator().manual_seed(5)
    scores, feats = torch.rand(3, 10, generator=gen), torch.randn(3, 10, 4, generator=gen)
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[0, 4:] = False  # list 0 has 4 candidates
    valid[1] = False  # list 1 has none
    out = mmr.MMRReranker()(scores=scores, item_vectors=feats, valid=valid)  # default k = 10
    assert out.shape == (3, 10) and out.dtype == torch.long
    alone = mmr.MMRReranker(max_length=4)(scores=scores[:1, :4], item_vectors=feats[:1, :4])
    assert torch.equal(out[0, :4], alone[0])
    assert (out[0, 4:] == -1).all() and (out[1] == -1).all()
    assert sorted(out[2].tolist()) == list(range(10))


def test_an_empty_batch_gives_an_empty_result_and_empty_lists_are_refused():
    out = mmr.MMRReranker(max_length=4)(scores=torch.rand(0, 6), item_vectors=torch.rand(0, 6, 3))
    assert out.shape == (0, 4) and out.dtype == torch.long
    with pytest.raises(ValueError, match=r"the candidate lists are empty \(N = 0\)"):
        mmr.mmr_select(relevance=torch.rand(2, 0), similarity=torch.rand(2, 0, 0), lam=0.5,
                       max_length=1)
