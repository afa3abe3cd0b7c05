"""Properties of PRM (Pei et al., RecSys 2019) — see the PRM note."""


import pytest
import torch

from tests.conftest import load_module

prm = load_module("Classic Models/Re-ranking/PRM/model.py", "prm_model")


def _inputs(gen, B=4, N=12, F=6, P=5):
    return (torch.randn(B, N, F, generator=gen), torch.randn(B, N, P, generator=gen))


def test_without_position_embeddings_prm_is_permutation_equivariant():
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=12, use_position=False).eval()
    gen = torch.Generator().manual_seed(1)
    x, pv = _inputs(gen)
    perm = torch.randperm(12, generator=gen)
    out = model(features=x, pv=pv)
    out_perm = model(features=x[:, perm], pv=pv[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)


def test_with_position_embeddings_prm_is_not_permutation_equivariant():
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=12, use_position=True).eval()
    gen = torch.Generator().manual_seed(1)
    x, pv = _inputs(gen)
    perm = torch.randperm(12, generator=gen)
    out = model(features=x, pv=pv)
    out_perm = model(features=x[:, perm], pv=pv[:, perm])
    assert (out_perm - out[:, perm]).abs().max() > 1e-3


def test_score_of_an_item_depends_on_the_other_items_in_the_list():
    # the point of PRM over a pointwise ranker: change item 5, and item 0's score moves
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=12).eval()
    gen = torch.Generator().manual_seed(2)
    x, pv = _inputs(gen, B=1)
    base = model(features=x, pv=pv)
    x2 = x.clone()
    x2[0, 5] += 3.0
    assert (model(features=x2, pv=pv)[0, 0] - base[0, 0]).abs() > 1e-4


def test_without_list_context_an_item_score_ignores_the_other_items():
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=12, list_context=False).eval()
    gen = torch.Generator().manual_seed(2)
    x, pv = _inputs(gen, B=1)
    base = model(features=x, pv=pv)
    x2 = x.clone()
    x2[0, 5] += 3.0
    changed = model(features=x2, pv=pv)
    torch.testing.assert_close(changed[0, :5], base[0, :5])
    assert (changed[0, 5] - base[0, 5]).abs() > 1e-4


def test_padding_does_not_change_real_items_and_gets_no_probability():
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=12).eval()
    gen = torch.Generator().manual_seed(3)
    x, pv = _inputs(gen, B=2, N=8)
    short = model(features=x, pv=pv)
    x_pad = torch.cat([x, torch.randn(2, 4, 6, generator=gen)], dim=1)
    pv_pad = torch.cat([pv, torch.randn(2, 4, 5, generator=gen)], dim=1)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 8:] = False
    padded = model(features=x_pad, pv=pv_pad, mask=mask)
    torch.testing.assert_close(padded[:, :8], short, atol=1e-5, rtol=1e-5)
    assert torch.softmax(padded, dim=-1)[:, 8:].sum() == 0
    assert (model.rerank(features=x_pad, pv=pv_pad, mask=mask)[:, 8:] >= 8).all()


def test_loss_is_listwise_softmax_cross_entropy_and_learns_a_within_list_rule():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # second list: no click, skipped
    expected = -torch.log_softmax(logits[0], -1)[1]
    torch.testing.assert_close(prm.PRM.loss(logits, labels), expected)
    # planted rule: the clicked item is the one whose feature 0 is unique within the list; no single
    # item reveals it, so only a list-aware model can learn it. Without position embeddings.
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    B, N = 128, 6
    x = torch.zeros(B, N, 3)
    common = torch.randint(0, 2, (B,), generator=gen).float()
    x[:, :, 0] = common[:, None]
    odd = torch.randint(0, N, (B,), generator=gen)
    x[torch.arange(B), odd, 0] = 1 - common
    x[:, :, 1:] = torch.randn(B, N, 2, generator=gen)
    y = torch.zeros(B, N)
    y[torch.arange(B), odd] = 1.0
    model = prm.PRM(
        feature_dim=3,
        max_len=N,
        d_model=16,
        n_heads=2,
        n_blocks=1,
        ffn_dim=32,
        dropout=0.0,
        use_position=False,
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        loss = prm.PRM.loss(model(features=x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(features=x).argmax(-1) == odd).float().mean()
    assert acc > 0.95, f"PRM failed to learn the within-list rule: top-1 accuracy {acc:.2f}"


def test_bad_arguments_fail_early():
    with pytest.raises(TypeError):
        prm.PRM()
    with pytest.raises(ValueError):
        prm.PRM(feature_dim=6, d_model=30, n_heads=4)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=4)
    with pytest.raises(ValueError):
        model(features=torch.randn(1, 5, 6), pv=torch.randn(1, 5, 5))
    with pytest.raises(ValueError):
        model(features=torch.randn(1, 3, 6))


def test_simulated_clicks_plant_an_order_free_within_list_redundancy_effect():
    # Datasets/rerank_lists.simulate_clicks: the labels the PRM demo trains on
    import numpy as np

    import Datasets
    from Datasets import rerank_lists as RL

    data = Datasets.load("synthetic")
    t = data.extra["truth"]
    group, cat = t["item_group"], t["item_category"]
    ids = np.arange(1, data.n_items + 1)
    sizes = np.bincount(group[1:])
    i = int(ids[sizes[group[1:]] >= 2][0])  # an item with a variant sibling j
    j = int(ids[(group[1:] == group[i]) & (ids != i)][0])
    fillers = ids[(cat[1:] != cat[i]) & (group[1:] != group[i])]
    _, first = np.unique(group[fillers], return_index=True)  # one item per other variant group
    fillers = fillers[np.sort(first)][:49]
    base = np.concatenate([[i], fillers])[None]  # (1, 50): i and 49 unrelated items
    with_sibling = base.copy()
    with_sibling[0, -1] = j  # swap one unrelated item for i's sibling
    hist = np.zeros((1, 20), dtype=np.int64)
    hist[0, -1] = int(fillers[0])

    def logit_of_i(items):
        lists = {"items": items, "user": np.array([1]), "history": hist}
        _, p = RL.simulate_clicks(data, lists)
        return float(np.log(p[0, 0] / (1 - p[0, 0])))

    drop = logit_of_i(base) - logit_of_i(with_sibling)
    # one more variant (-2) and one more item of i's category among the 49 others (-4 / 49)
    assert drop == pytest.approx(2.0 + 4.0 / 49, abs=1e-3)
    perm = np.random.default_rng(0).permutation(50)
    lists = {"items": with_sibling, "user": np.array([1]), "history": hist}
    _, p = RL.simulate_clicks(data, lists)
    _, p_perm = RL.simulate_clicks(data, {**lists, "items": with_sibling[:, perm]})
    np.testing.assert_allclose(p_perm, p[:, perm], rtol=1e-6)  # order-free


def test_demo_attention_maps_are_row_stochastic_and_leave_the_output_unchanged():
    """The figure's attention: rows sum to 1, padded keys get 0, and asking for the weights does
    not change PRM's scores."""
    demo = load_module("Classic Models/Re-ranking/PRM/demo.py", "prm_demo")
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=3, max_len=10, d_model=16, n_heads=2, n_blocks=2)
    model.eval()
    x, pv = torch.randn(3, 10, 6), torch.randn(3, 10, 3)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        before = model(features=x, pv=pv, mask=mask)
    att = demo.attention_maps(model, features=x, pv=pv, mask=mask)  # (n_blocks, B, N, N)
    assert att.shape == (2, 3, 10, 10)
    assert torch.allclose(att.sum(-1), torch.ones(2, 3, 10), atol=1e-5)
    assert float(att[:, 1, :, 7:].abs().max()) == 0.0
    with torch.no_grad():
        after = model(features=x, pv=pv, mask=mask)
    assert torch.equal(before, after)


def test_demo_save_then_load_gives_identical_metrics(tmp_path, capsys):
    from tests.test_bad_input_rerank import FAST, result_of, run_demo, write_seqtxt

    data = ["--data", f"seqtxt:{write_seqtxt(tmp_path / 'd')}"]
    ckpt = tmp_path / "prm.pt"
    code, out, err = run_demo("PRM", [*FAST["PRM"], *data, "--save", str(ckpt)], capsys)
    assert code == 0 and ckpt.is_file(), err[-2000:]
    first = result_of(out)
    # flags that shaped the saved model are taken from the file, not from the command line
    code, out, err = run_demo("PRM", [*data, "--load", str(ckpt), "--k", "5", "--recommend", "9"],
                              capsys)
    assert code == 0, err[-2000:]
    again = result_of(out)
    assert again["metrics"] == first["metrics"] and again["params"] == first["params"]
    assert again["train_seconds"] == 0.0 and "user 9 " in out and "PRM top-5" in out


def test_demo_runs_on_interactions_alone(tmp_path, capsys):
    from tests.test_bad_input_rerank import FAST, result_of, run_demo, write_seqtxt

    path = write_seqtxt(tmp_path / "ids", attributes=False)
    code, out, err = run_demo("PRM", [*FAST["PRM"], "--data", f"seqtxt:{path}"], capsys)
    assert code == 0, err[-2000:]
    assert out.count("[side inputs]") == 1
    assert set(result_of(out)["metrics"]) == {"NDCG@5", "Recall@5"}


def test_overrides_never_mutate_the_callers_config():
    cfg = prm.PRMConfig(feature_dim=6)
    model = prm.PRM(cfg, pv_dim=5, d_model=16, n_heads=2)
    assert cfg == prm.PRMConfig(feature_dim=6) and model.config is not cfg
    assert (model.config.pv_dim, model.config.d_model, model.config.n_heads) == (5, 16, 2)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1\.5"):
        prm.PRM(cfg, dropout=1.5)  # a refused override leaves no trace either
    assert cfg == prm.PRMConfig(feature_dim=6)


def test_nan_feature_is_refused_instead_of_a_list_of_nan_scores():
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=12).eval()
    x, pv = _inputs(torch.Generator().manual_seed(6), B=3, N=8)
    assert torch.isfinite(model(features=x, pv=pv)).all()
    x[2, 1, 0] = float("nan")  # used to make every score of list 2 NaN
    with pytest.raises(ValueError, match=r"features: list 2 is not finite \(nan at features\[2, 1"):
        model.rerank(features=x, pv=pv)


def test_empty_batch_gives_empty_logits_and_a_list_without_items_is_refused():
    torch.manual_seed(0)
    model = prm.PRM(feature_dim=6, pv_dim=5, max_len=12).eval()
    x, pv = _inputs(torch.Generator().manual_seed(7), B=0, N=8)
    assert model(features=x, pv=pv).shape == (0, 8)
    assert model.rerank(features=x, pv=pv).shape == (0, 8)
    x, pv = _inputs(torch.Generator().manual_seed(7), B=2, N=8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"mask: list 1 has no real item \(all False\)"):
        model(features=x, pv=pv, mask=mask)


def test_figure_list_is_the_one_where_prm_moved_a_clicked_item_up_the_most(tmp_path):
    """The note's figure picks its list by a rule, not by hand: on random orders and clicks, the
    chosen item is clicked, its upward move (initial minus PRM position) is the largest over all
    lists and clicked items, the list is the first with that move, and the tie count is exact."""
    import numpy as np

    demo = load_module("Classic Models/Re-ranking/PRM/demo.py", "prm_demo")
    rng = np.random.default_rng(0)
    for _ in range(20):
        U, N = int(rng.integers(1, 30)), int(rng.integers(2, 12))
        positions = np.stack([rng.permutation(N) for _ in range(U)])
        labels = (rng.random((U, N)) < 0.2).astype(np.float32)
        labels[0, 0] = 1.0  # at least one click
        u, i, to, n_tied = demo.most_moved_list(positions, labels)
        assert labels[u, i] == 1 and positions[u, to] == i
        moves = [
            (p - int(np.where(positions[v] == p)[0][0]), v)
            for v in range(U) for p in range(N) if labels[v, p]
        ]
        best = max(m for m, _ in moves)
        assert i - to == best
        assert u == min(v for m, v in moves if m == best)
        assert n_tied == len({v for m, v in moves if m == best})
    # by hand: list 1's clicked item goes from position 3 to 0, more than list 0's 1 -> 0
    positions = np.array([[1, 0, 2, 3], [3, 0, 1, 2]])
    labels = np.array([[0, 1, 0, 0], [0, 0, 0, 1]])
    assert demo.most_moved_list(positions, labels) == (1, 3, 0, 1)
    # the figure itself: both panels drawn for that list
    att = np.full((4, 4), 0.25)
    path = tmp_path / "list.png"
    demo.plot_list_attention(path, att, positions[1], labels[1] > 0, ["a · x"] * 4, moved=3,
                             title="t")
    assert path.stat().st_size > 10_000
