"""HSTU (Zhai et al., ICML 2024): the paper's properties, checked on tiny cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import model_module

hstu = model_module("Recall", "HSTU")


def _model(**kw) -> "hstu.HSTU":
    torch.manual_seed(0)
    base = dict(n_items=30, max_len=12, dim=16, n_blocks=2, n_heads=2, qk_dim=8, v_dim=8)
    base.update(kw)
    model = hstu.HSTU(hstu.HSTUConfig(**base)).eval()
    with torch.no_grad():  # non-trivial relative biases, so the tests exercise them
        for layer in model.layers:
            layer.rab.position_bias.normal_(std=0.5)
            layer.rab.time_bias.normal_(std=0.5)
    return model


def test_config_fails_early_with_clear_messages():
    with pytest.raises(ValueError, match="loss"):
        hstu.HSTUConfig(n_items=10, loss="bce")
    with pytest.raises(ValueError, match="temperature"):
        hstu.HSTUConfig(n_items=10, temperature=0.0)
    with pytest.raises(ValueError, match="max_len"):
        _model()(torch.ones(1, 13, dtype=torch.long))


def test_causal_output_at_t_ignores_later_items():
    model = _model()
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2]])
    base = model(history)
    for t in range(2, 7):
        changed = history.clone()
        changed[0, t + 1 :] = torch.tensor([11, 12, 13, 14, 15, 16])[: 7 - t]
        out = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_padding_does_not_change_real_positions():
    model = _model()
    items = torch.tensor([5, 8, 2, 9])
    ts = torch.tensor([10, 100, 5000, 90000])
    short = model(items.unsqueeze(0), ts.unsqueeze(0))
    padded_items = torch.cat([torch.zeros(6, dtype=torch.long), items]).unsqueeze(0)
    padded_ts = torch.cat([torch.zeros(6, dtype=torch.long), ts]).unsqueeze(0)
    padded = model(padded_items, padded_ts)
    torch.testing.assert_close(padded[:, -4:], short, atol=1e-6, rtol=1e-5)
    assert torch.all(padded[:, :6] == 0)


def test_attention_weights_are_not_normalised():
    """Eq. (2) has no softmax: a row of weights need not sum to 1 (its sum carries intensity)."""
    model = _model()
    layer = model.layers[0]
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2, 6, 5]])
    real, allowed = model._mask(history)
    x = torch.randn(1, 10, 16) * real.unsqueeze(-1)
    _, _, weights = layer.attention(x, allowed)
    row_sums = weights.sum(-1)[0, :, 2:]  # (H, real queries)
    assert not torch.allclose(row_sums, torch.ones_like(row_sums), atol=0.1)
    assert (row_sums.max() - row_sums.min()) > 1e-3  # rows differ in total mass
    assert (weights < 0).any()  # SiLU lets a weight go (slightly) negative, softmax never does


def test_repeated_engagement_changes_the_output_unlike_softmax():
    """Softmax attention over [a, a] equals attention over [a]; HSTU's pointwise attention does not,
    which is how it keeps the *intensity* of engagement (note §2)."""
    torch.manual_seed(0)
    cfg = hstu.HSTUConfig(n_items=5, max_len=4, dim=8, n_heads=1, qk_dim=4, v_dim=4)
    layer = hstu.HSTULayer(cfg)
    a = torch.randn(8)
    once = torch.stack([torch.zeros(8), torch.zeros(8), torch.zeros(8), a]).unsqueeze(0)
    twice = torch.stack([torch.zeros(8), torch.zeros(8), a, a]).unsqueeze(0)
    m1 = torch.tensor([[0, 0, 0, 1]]).bool()
    m2 = torch.tensor([[0, 0, 1, 1]]).bool()
    allow1 = torch.ones(4, 4).bool().tril() & m1.unsqueeze(1)
    allow2 = torch.ones(4, 4).bool().tril() & m2.unsqueeze(1)
    with torch.no_grad():
        layer.rab.position_bias.zero_()  # same bias for both keys, as in the softmax argument
        layer.f1.weight.normal_()  # O(1) projections so the difference is far above rounding
        _, av1, _ = layer.attention(once, allow1)
        _, av2, _ = layer.attention(twice, allow2)
    assert not torch.allclose(av1[0, -1], av2[0, -1], rtol=0.1)
    torch.testing.assert_close(av2[0, -1], 2 * av1[0, -1])  # exactly twice the mass


def test_layer_matches_the_formula_recomputed_step_by_step_in_float64():
    model = _model(dim=8, n_heads=2, qk_dim=3, v_dim=4, max_len=6).double()
    layer = model.layers[0]
    cfg = model.cfg
    history = torch.tensor([[0, 0, 4, 1, 7, 3]])
    ts = torch.tensor([[0, 0, 100, 130, 4000, 4001]])
    real, allowed = model._mask(history)
    torch.manual_seed(3)
    x = torch.randn(1, 6, 8, dtype=torch.float64) * real.unsqueeze(-1)
    out = layer(x, allowed, ts)[0]

    H, dqk, dv, n = cfg.n_heads, cfg.qk_dim, cfg.v_dim, cfg.max_len
    W1, W2, b2 = layer.f1.weight, layer.f2.weight, layer.f2.bias
    pos_b, time_b = layer.rab.position_bias, layer.rab.time_bias
    query_time = [130, 4000, 4001, 4001]  # time of the next item; the last keeps its own
    expected = torch.zeros(6, 8, dtype=torch.float64)
    for i in range(2, 6):  # real positions only
        def proj(j):
            xj = x[0, j]
            xn = (xj - xj.mean()) / torch.sqrt(xj.var(unbiased=False) + cfg.eps)
            h = F.silu(W1 @ xn)  # Eq. (1)
            u, v, q, k = h.split([H * dv, H * dv, H * dqk, H * dqk])
            return u, v, q, k
        u_i, _, q_i, _ = proj(i)
        av = torch.zeros(H * dv, dtype=torch.float64)
        for h in range(H):
            for j in range(2, i + 1):  # causal, real keys
                _, v_j, _, k_j = proj(j)
                dt = abs(query_time[i - 2] - int(ts[0, j]))
                bucket = min(int(math.log(max(dt, 1)) / 0.301), 128)
                logit = q_i[h * dqk : (h + 1) * dqk] @ k_j[h * dqk : (h + 1) * dqk]
                logit = logit + pos_b[j - i + n - 1] + time_b[bucket]  # rab^{p,t}
                w = F.silu(logit) / n  # Eq. (2): pointwise, divided by n
                av[h * dv : (h + 1) * dv] += w * v_j[h * dv : (h + 1) * dv]
        av_n = (av - av.mean()) / torch.sqrt(av.var(unbiased=False) + cfg.eps)
        expected[i] = x[0, i] + W2 @ (av_n * u_i) + b2  # Eq. (3) + residual
    torch.testing.assert_close(out[2:], expected[2:], rtol=1e-10, atol=1e-10)


def test_time_buckets_are_monotone_in_abs_delta_and_clipped():
    deltas = torch.cat([torch.arange(0, 2000), torch.logspace(3, 12, 500).long()]).sort().values
    b = hstu.time_buckets(deltas, n_buckets=128, divisor=0.301)
    assert torch.all(b[1:] >= b[:-1])  # non-decreasing in |Δt|
    assert torch.equal(b, hstu.time_buckets(-deltas, n_buckets=128, divisor=0.301))  # sign-free
    assert b.min() == 0 and b.max() <= 128
    assert hstu.time_buckets(torch.tensor([10**12]), n_buckets=5, divisor=0.301) == 5  # clipped
    assert len(torch.unique(b)) > 20  # buckets actually separate short and long gaps


def test_time_buckets_of_common_gaps_match_the_note():
    """ln|Δt| / 0.301 (the official bucketization): 0.301 = log10(2), but over the natural log a
    bucket spans a factor e^0.301 ≈ 1.35, about 2.3 buckets per doubling (the note's "Maths")."""
    assert abs(math.log10(2) - 0.301) < 1e-4
    gaps = {1: 0, 10: 7, 60: 13, 3600: 27, 86400: 37, 30 * 86400: 49, 365 * 86400: 57,
            3650 * 86400: 65}
    got = hstu.time_buckets(torch.tensor(list(gaps)), n_buckets=128, divisor=0.301).tolist()
    assert got == list(gaps.values())
    # doubling a gap moves it about 2.3 buckets, not 1
    assert hstu.time_buckets(torch.tensor([2**20]), n_buckets=128, divisor=0.301) == 46


def test_plotted_attention_weights_are_the_last_layers_eq2_weights():
    """`HSTU.attention_weights` (the note's figure) returns exactly the weights the last layer applies:
    SiLU(QKᵀ + rab) / n on allowed pairs, 0 on future or padded keys."""
    model = _model()
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2]])
    ts = torch.tensor([[0, 0, 10, 70, 4000, 4100, 90000, 90060]])
    weights = model.attention_weights(history, ts)  # (1, H, L, L)
    captured = {}
    layer = model.layers[-1]
    hook = layer.register_forward_pre_hook(lambda _, args: captured.update(a=args))
    with torch.no_grad():
        model(history, ts)
    hook.remove()
    x, allowed, t = captured["a"]
    with torch.no_grad():
        _, _, expected = layer.attention(x, allowed, t)
    torch.testing.assert_close(weights, expected)
    assert torch.all(weights[0].triu(1) == 0)  # future keys
    assert torch.all(weights[0, :, :, :2] == 0)  # padded keys


@pytest.mark.parametrize("loss", ["sampled_softmax", "ce"])
def test_overfits_a_tiny_set(loss):
    torch.manual_seed(0)
    cfg = hstu.HSTUConfig(
        n_items=60, max_len=6, dim=32, n_blocks=2, n_heads=2, qk_dim=16, v_dim=16,
        dropout=0.0, loss=loss, n_negatives=16,
    )
    model = hstu.HSTU(cfg)
    g = torch.Generator().manual_seed(1)
    seqs = (torch.randperm(60, generator=g)[:56] + 1).view(8, 7)  # disjoint, each step learnable
    history, targets = seqs[:, :-1], seqs[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        model.loss(history, targets).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        top1 = (model(history) @ model.item_embeddings()[1:].T).argmax(-1) + 1  # (8, 6)
    assert (top1 == targets).float().mean() == 1.0


def test_score_is_cosine_over_temperature():
    model = _model()
    history = torch.tensor([[0, 1, 2, 3]])
    scores = model.score(history)
    user = model(history)[:, -1]
    assert torch.allclose(user.norm(dim=-1), torch.ones(1))
    expected = user @ F.normalize(model.item_embedding.weight[1:], dim=-1).T / model.cfg.temperature
    torch.testing.assert_close(scores[:, 1:], expected)
    assert scores[0, 0] == float("-inf")


def test_out_of_range_ids_are_a_clear_error_not_another_row():
    model = _model()
    with pytest.raises(ValueError, match=r"history has item id 31; expected ids in 0\.\.30"):
        model(torch.tensor([[0, 5, 31]]))
    with pytest.raises(ValueError, match=r"negatives has item id 0; expected ids in 1\.\.30"):
        model.loss(torch.tensor([[1, 2]]), torch.tensor([[2, 3]]), negatives=torch.tensor([0, 4]))


def test_demo_save_load_round_trip_gives_identical_metrics(tmp_path):
    """--save then --load (no training): the same test metrics; --export-vectors writes unit
    vectors (the cosine the model scores with) with raw ids."""
    import numpy as np

    from tests.test_bad_input_seqrec import TINY, run_demo, write_seqtxt
    from Utils.io import parse_result_line

    data = write_seqtxt(tmp_path / "seq.txt")
    base = ["--data", f"seqtxt:{data}", *TINY["HSTU"]]
    ckpt, vec = tmp_path / "m.pt", tmp_path / "v.npz"
    code, out, err = run_demo("HSTU", [*base, "--save", str(ckpt)])
    assert code == 0, err[-2000:]
    code, out2, err = run_demo("HSTU", [*base, "--load", str(ckpt), "--export-vectors", str(vec)])
    assert code == 0, err[-2000:]
    assert parse_result_line(out2)["metrics"] == parse_result_line(out)["metrics"]
    z = np.load(vec)
    assert z["item_vectors"].shape == (30, 8) and z["user_vectors"].shape == (40, 8)
    np.testing.assert_allclose(np.linalg.norm(z["user_vectors"], axis=1), 1.0, rtol=1e-5)


def test_right_padding_reads_as_left_padding_and_time_must_not_run_backwards():
    """`pad_sequence` pads on the right: the same scores, vectors and per-position states (in the
    caller's layout) as left padding, timestamps moved with their items; a clock that runs backwards
    along a history and padding between items are clear errors."""
    torch.manual_seed(0)
    model = hstu.HSTU(hstu.HSTUConfig(n_items=30, max_len=6, dim=16, n_blocks=2, n_heads=2, qk_dim=8,
                                      v_dim=8, dropout=0.0)).eval()
    rows = [[5, 8, 2, 9], [3, 1], [7, 4, 6, 11, 12, 13]]
    times = [[10, 20, 35, 60], [5, 9], [1, 2, 4, 8, 16, 32]]
    L = 6
    left = torch.tensor([[0] * (L - len(r)) + r for r in rows])
    right = torch.tensor([r + [0] * (L - len(r)) for r in rows])
    t_left = torch.tensor([[0] * (L - len(t)) + t for t in times])
    t_right = torch.tensor([t + [0] * (L - len(t)) for t in times])
    torch.testing.assert_close(model.score(right, t_right), model.score(left, t_left))
    out_l, out_r = model(left, t_left), model(right, t_right)
    for i, r in enumerate(rows):
        torch.testing.assert_close(out_r[i, : len(r)], out_l[i, L - len(r):])
    hist_l, tgt_l = left[:, :-1], left[:, 1:]
    hist_r = torch.tensor([r[:-1] + [0] * (L - len(r)) for r in rows])
    tgt_r = torch.tensor([r[1:] + [0] * (L - len(r)) for r in rows])
    tl = t_left[:, :-1]
    tr = torch.tensor([t[:-1] + [0] * (L - len(t)) for t in times])
    model.cfg.loss = "ce"
    torch.testing.assert_close(model.loss(hist_r, tgt_r, timestamps=tr), model.loss(hist_l, tgt_l, timestamps=tl))
    with pytest.raises(ValueError, match="between real items"):
        model.score(torch.tensor([[3, 0, 5, 6]]))
    with pytest.raises(ValueError, match="decrease from slot 2 to slot 3"):
        model.score(torch.tensor([[0, 3, 4, 5]]), torch.tensor([[0, 10, 30, 20]]))


def test_intensity_toy_of_the_note_scales_by_ten_pointwise_and_not_under_softmax():
    """`demo.py --intensity-toy` (the numbers of the note's Idea): ten matching items give ten times
    the output of one under Eq. (2)'s SiLU / n and the same output under softmax; unrelated items
    (q·k = 0) dilute the softmax average and add nothing pointwise (SiLU(0) = 0)."""
    import re

    from tests.conftest import run_demo_in_process

    code, out, err, _ = run_demo_in_process("Recall", "HSTU", ["--intensity-toy"])
    assert code == 0, err[-2000:]
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\[a[^\]]*\])\s", line)
        if m:
            vecs = [tuple(map(float, v)) for v in re.findall(r"\(([-\d.]+), ([-\d.]+)\)", line)]
            rows[m.group(1)] = vecs  # [softmax output, pointwise output]
    one, ten, mixed = rows["[a]"], rows["[a x 10]"], rows["[a, b x 9]"]
    assert ten[0] == one[0] == (1.0, 0.0)  # softmax: the same average
    # (the printed outputs are rounded to 3 decimals: ten times a rounded value is off by up to 5e-3)
    assert ten[1][0] == pytest.approx(10 * one[1][0], abs=5.1e-3) and ten[1][1] == one[1][1] == 0.0
    assert mixed[1] == one[1]  # pointwise: the nine unrelated items add nothing
    assert mixed[0][0] < 0.5 and sum(mixed[0]) == pytest.approx(1.0, abs=2e-3)  # softmax: diluted
    assert "softmax output x 1.00, pointwise output x 10.00" in out


def test_demo_plots_attention_on_data_without_categories(tmp_path):
    """`--plot-attention` on a seqtxt file (no item categories): the user rule and the right panel
    fall back to all earlier items, and the figure is written after the RESULT line's run."""
    from tests.test_bad_input_seqrec import TINY, run_demo, write_seqtxt

    data = write_seqtxt(tmp_path / "seq.txt")
    png = tmp_path / "attention.png"
    code, out, err = run_demo("HSTU", ["--data", f"seqtxt:{data}", *TINY["HSTU"],
                                       "--plot-attention", str(png)])
    assert code == 0, err[-2000:]
    assert png.stat().st_size > 0 and "row sums (x 1e-3, not 1)" in out
    assert "all test users, earlier items:" in out and out.strip().splitlines()[-1].startswith("RESULT ")
