"""Properties of MIND (Li et al., CIKM 2019) that the paper implies.

- B2I routing (Algorithm 1): for every real behaviour the routing weights over the user's interests sum
  to 1; padded behaviours get zero weight and change no capsule; the iterations are really used; the
  routing logits are fixed (not parameters);
- Eq. (8): K'_u = max(1, min(K, log2 |I_u|)), and interests beyond K'_u are inactive;
- Eq. (9): label-aware attention tends to the hard max over interests as p grows, to the mean as p -> 0;
- Eq. (3): the served score is the max over interests; dynamic K off runs;
- the model overfits a tiny batch.
"""

import math

import pytest
import torch

from tests.conftest import model_module

mind = model_module("Recall", "MIND")
N_ITEMS, N_SIDE, MAX_LEN = 40, 9, 12


def make_model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    side = torch.randint(0, N_SIDE, (N_ITEMS + 1, 2))
    side[0] = 0
    cfg = mind.MINDConfig(n_items=N_ITEMS, dim=8, side_vocab_size=N_SIDE, user_feature_sizes=(3,),
                          max_len=MAX_LEN, n_interests=4, hidden=(16,), **kw)
    return mind.MIND(config=cfg, item_side_ids=side)


def history_batch() -> torch.Tensor:
    return torch.tensor([
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],  # 1 behaviour  -> K' = 1
        [0, 0, 0, 0, 0, 0, 0, 0, 3, 7, 9, 2],  # 4 behaviours -> K' = 2
        [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],  # 8 behaviours -> K' = 3
        [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],  # 12 -> K' = min(4, 3) = 3
    ])


def routed(model, history):
    mask = history != 0
    k = mind.interest_count(mask.sum(1), model.config.n_interests)
    behaviours = model.item_embedding(history) * mask.unsqueeze(-1)
    return model.b2i_routing(behaviours, mask, k)


def test_interest_count_formula():
    n = torch.tensor([0, 1, 2, 3, 4, 7, 8, 15, 16, 1000])
    expected = [max(1, min(4, math.floor(math.log2(max(int(x), 1))))) for x in n]
    assert mind.interest_count(n, 4).tolist() == expected == [1, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    _, active = make_model().user_tower(history=history_batch(), user_features=torch.zeros(4, 1).long())
    assert active.sum(1).tolist() == [1, 2, 3, 3]


def test_routing_weights_sum_to_one_and_padding_gets_none():
    model = make_model()
    hist = history_batch()
    capsules, w = routed(model, hist)  # (B, K, D), (B, L, K)
    real = hist != 0
    k = mind.interest_count(real.sum(1), 4)
    torch.testing.assert_close(w.sum(-1)[real], torch.ones(int(real.sum())))
    assert torch.all(w[~real] == 0)
    for b in range(len(hist)):  # no weight on inactive interests, and their capsules are zero
        assert torch.all(w[b, :, k[b]:] == 0)
        assert torch.all(capsules[b, k[b]:] == 0)
    assert torch.all(capsules.norm(dim=-1) < 1)  # squash keeps lengths below 1


def test_padding_leaves_capsules_and_user_vectors_unchanged():
    model = make_model()
    hist = history_batch()[:3, -6:]  # (3, 6): shorter window, same real behaviours for rows 0-1
    feats = torch.tensor([[0], [1], [2]])
    caps, _ = routed(model, hist)
    V, active = model.user_tower(history=hist, user_features=feats)
    longer = torch.cat([torch.zeros(3, 6, dtype=torch.long), hist], dim=1)  # (3, 12)
    caps2, w2 = routed(model, longer)
    V2, active2 = model.user_tower(history=longer, user_features=feats)
    torch.testing.assert_close(caps2, caps)
    torch.testing.assert_close(V2, V)
    assert torch.equal(active, active2) and torch.all(w2[:, :6] == 0)
    with torch.no_grad():  # a non-zero padding embedding must not leak in either
        model.id_embedding.weight[0].normal_()
        model.side_embedding.weight[0].normal_()
    torch.testing.assert_close(model.user_tower(history=longer, user_features=feats)[0], V)


def _left_and_right(rows: list[list[int]], L: int = MAX_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows padded on the left ([0, 0, a, b]) and on the right ([a, b, 0, 0])."""
    left = torch.tensor([[0] * (L - len(r)) + r for r in rows])
    right = torch.tensor([r + [0] * (L - len(r)) for r in rows])
    return left, right


ROWS = [[5], [3, 7, 9, 2], [1, 2, 3, 4, 5, 6, 7, 8], list(range(11, 23)), [30, 31]]


def test_right_padding_reads_as_left_padding():
    """`pad_sequence` pads on the right; the routing logits count from the newest slot, so a copied
    model must not give the real behaviours other logits then. Right-padded rows give the same
    interests, scores and loss as the same rows padded on the left (a mixed batch too), the routing
    weights come back in the caller's layout, and padding between behaviours is a clear error."""
    model = make_model()
    left, right = _left_and_right(ROWS)
    feats = torch.tensor([[0], [1], [2], [0], [1]])
    with torch.no_grad():
        V_l, active_l = model.user_tower(history=left, user_features=feats)
        V_r, active_r = model.user_tower(history=right, user_features=feats)
        torch.testing.assert_close(V_r, V_l)
        assert torch.equal(active_r, active_l) and active_l.sum(1).tolist() == [1, 2, 3, 3, 1]
        items = model.item_tower()
        torch.testing.assert_close(model.score_items(V_r, active_r, items),
                                   model.score_items(V_l, active_l, items))
        batch = dict(target=torch.tensor([1, 2, 3, 4, 5]), negatives=torch.arange(6, 30),
                     log_q_target=torch.zeros(5), log_q_negatives=torch.zeros(24))
        torch.testing.assert_close(model.loss(interests=V_r, active=active_r, **batch),
                                   model.loss(interests=V_l, active=active_l, **batch))
        (caps_l, w_l), (caps_r, w_r) = routed(model, left), routed(model, right)
        torch.testing.assert_close(caps_r, caps_l)
        for i, r in enumerate(ROWS):  # row i's behaviours keep their weights, in the caller's slots
            torch.testing.assert_close(w_r[i, : len(r)], w_l[i, MAX_LEN - len(r):])
            assert torch.all(w_r[i, len(r):] == 0)
        mixed = torch.where(torch.arange(5)[:, None] % 2 == 0, left, right)  # 1, 3: right-padded
        torch.testing.assert_close(model.user_tower(history=mixed, user_features=feats)[0], V_l)
    assert mind.left_align(left)[2] is None  # left padding: the tensors pass untouched
    gap = left.clone()
    gap[2, -3] = 0  # [0, 0, 0, 0, 1, ..., 5, 0, 7, 8]
    with pytest.raises(ValueError, match=r"history row 2 has padding \(0\) between real items"):
        model.user_tower(history=gap, user_features=feats)
    with pytest.raises(ValueError, match=r"mask row 2 has padding \(0\) between real items"):
        routed(model, gap)


def test_right_padding_path_exports():
    """`left_align` takes no data-dependent branch under torch.export: the exported user tower
    always moves every row (left-padded rows by 0) and gives the eager interests for either layout."""
    model = make_model().eval()
    left, right = _left_and_right(ROWS)
    feats = torch.tensor([[0], [1], [2], [0], [1]])
    mixed = torch.where(torch.arange(5)[:, None] % 2 == 0, left, right)

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mind = model

        def forward(self, history, user_features):
            return self.mind.user_tower(history=history, user_features=user_features)

    with torch.no_grad():
        eager = Tower()(left, feats)
        exported = torch.export.export(Tower(), (right, feats)).module()
        for history in (left, right, mixed):
            for got, want in zip(exported(history, feats), eager):
                torch.testing.assert_close(got, want)


def test_routing_logits_are_fixed_and_iterations_are_used():
    model = make_model()
    names = [n for n, _ in model.named_parameters()]
    assert "routing_logits" not in names and "routing_logits" in dict(model.named_buffers())
    assert "bilinear" in names  # the shared map S is learned
    hist = history_batch()
    before = model.routing_logits.clone()
    caps = {r: None for r in (1, 2, 3)}
    for r in caps:
        model.config.routing_iters = r
        caps[r], _ = routed(model, hist)
    assert not torch.allclose(caps[1], caps[2]) and not torch.allclose(caps[2], caps[3])
    assert torch.equal(model.routing_logits, before)
    # one iteration = squash of the weighted sum with the fixed random logits (Eq. 5-7)
    model.config.routing_iters = 1
    mask = hist[3:] != 0
    e = model.item_embedding(hist[3:]) * mask.unsqueeze(-1)  # (1, L, D)
    w = torch.softmax(model.routing_logits[:3], dim=0)  # (3, L): K' = 3 for this row
    z = w @ (e[0] @ model.bilinear)  # (3, D)
    torch.testing.assert_close(routed(model, hist[3:])[0][0, :3], mind.squash(z))


def test_label_aware_attention_limits():
    model = make_model()
    g = torch.Generator().manual_seed(5)
    V = torch.randn(6, 4, 8, generator=g)
    target = torch.randn(6, 8, generator=g)
    active = torch.tensor([[True] * 4] * 4 + [[True, True, False, False]] * 2)
    scores = (V @ target.unsqueeze(-1)).squeeze(-1).masked_fill(~active, float("-inf"))
    best = V[torch.arange(6), scores.argmax(1)]  # hard max over active interests
    hard = model.label_aware_attention(V, active, target, p=1e4)
    torch.testing.assert_close(hard, best)
    soft = model.label_aware_attention(V, active, target, p=0.0)  # equal attention
    mean = (V * active.unsqueeze(-1)).sum(1) / active.sum(1, keepdim=True)
    torch.testing.assert_close(soft, mean)
    errs = [(model.label_aware_attention(V, active, target, p=p) - best).norm().item()
            for p in (0.5, 2.0, 8.0, 32.0)]
    assert errs == sorted(errs, reverse=True)  # larger p, closer to the hard max


def test_dynamic_k_off_runs_and_serving_is_max_over_interests():
    model = make_model(dynamic_k=False)
    hist = history_batch()
    V, active = model.user_tower(history=hist, user_features=torch.zeros(4, 1).long())
    assert V.shape == (4, 4, 8) and bool(active.all())
    items = model.item_tower()  # (N+1, D)
    assert torch.count_nonzero(items[0]) == 0
    scores = model.score_items(V, active, items)  # (B, N+1)
    per_interest = torch.einsum("bkd,nd->bkn", V, items)
    torch.testing.assert_close(scores, per_interest.max(1).values)
    loss = model.loss(interests=V, active=active, target=torch.tensor([1, 2, 3, 4]),
                      negatives=torch.arange(5, 20), log_q_target=torch.zeros(4),
                      log_q_negatives=torch.zeros(15))
    assert torch.isfinite(loss)
    # serving with dynamic K: inactive interests never decide the score
    model2 = make_model()
    V2, active2 = model2.user_tower(history=hist, user_features=torch.zeros(4, 1).long())
    s2 = model2.score_items(V2, active2, model2.item_tower())
    torch.testing.assert_close(s2[0], V2[0, 0] @ model2.item_tower().T)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="item_side_ids"):
        mind.MIND(config=mind.MINDConfig(n_items=5, side_vocab_size=3))
    model = make_model()
    with pytest.raises(ValueError, match="max_len"):
        model.user_tower(history=torch.ones(1, MAX_LEN + 1, dtype=torch.long),
                         user_features=torch.zeros(1, 1).long())
    with pytest.raises(ValueError, match="padding"):
        V, a = model.user_tower(history=history_batch(), user_features=torch.zeros(4, 1).long())
        model.loss(interests=V, active=a, target=torch.tensor([0, 1, 2, 3]), negatives=torch.arange(1, 5),
                   log_q_target=torch.zeros(4), log_q_negatives=torch.zeros(4))


def test_overfits_tiny_batch():
    torch.manual_seed(0)
    model = make_model()
    hist = torch.randint(1, N_ITEMS + 1, (16, MAX_LEN))
    hist[torch.arange(MAX_LEN) < torch.randint(0, MAX_LEN, (16, 1))] = 0  # left padding, 1-12 items
    feats = torch.randint(0, 3, (16, 1))
    target = torch.randint(1, N_ITEMS + 1, (16,))
    corpus = torch.arange(1, N_ITEMS + 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(80):
        V, active = model.user_tower(history=hist, user_features=feats)
        loss = model.loss(interests=V, active=active, target=target, negatives=corpus,
                          log_q_target=torch.zeros(16), log_q_negatives=torch.zeros(N_ITEMS))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::20]


# ---- the demo as a tool: ids only, save -> load round trip, all K interest vectors exported -------


def test_out_of_range_ids_are_named_errors():
    """An item or profile id past its table is a ValueError naming the input and the range."""
    model = make_model()
    feats = torch.zeros(4, 1).long()
    model.user_tower(history=history_batch().clamp(max=N_ITEMS), user_features=feats)  # edge id N: fine
    bad = history_batch()
    bad[2, -1] = N_ITEMS + 1
    with pytest.raises(ValueError, match=rf"history .*id {N_ITEMS + 1} .*0\.\.{N_ITEMS}"):
        model.user_tower(history=bad, user_features=feats)
    with pytest.raises(ValueError, match=r"user_features\[:, 0\]: id 3 .*0\.\.2"):
        model.user_tower(history=history_batch(), user_features=torch.full((4, 1), 3))


def test_demo_runs_on_ids_only_and_round_trips_save_load(tmp_path):
    """A seqtxt file with no *_item2attributes.json: MIND uses the item id alone (side features are
    optional in the paper), says so once, and a saved model reloads to identical metrics."""
    import numpy as np

    from tests.conftest import result_of
    from tests.test_bad_input_recall import TINY, run_demo, write_tiny_seqtxt

    data = write_tiny_seqtxt(tmp_path / "ids_only")
    flags = ["--data", f"seqtxt:{data}", *TINY["MIND"], "--epochs", "2", "--threads", "1"]
    ckpt, vectors = tmp_path / "mind.pt", tmp_path / "mind.npz"
    code, out, err, ns = run_demo("MIND", [*flags, "--save", str(ckpt), "--export-vectors", str(vectors)])
    assert code == 0, err[-2000:]
    assert out.count("MIND uses the item id alone") == 1
    assert ns["model"].side_embedding is None
    saved = result_of(out)
    assert saved["side_features"] is False
    code, out, err, _ = run_demo("MIND", [*flags, "--load", str(ckpt), "--recommend", "7"])
    assert code == 0, err[-2000:]
    loaded = result_of(out)
    assert loaded["metrics"] == saved["metrics"] and loaded["valid_metrics"] == saved["valid_metrics"]
    assert "training skipped" in out and "user 7:" in out and "top-10 recommendations:" in out
    z = np.load(vectors)
    K = 4  # the demo's default --interests
    assert z["user_vectors"].shape == (120, K, 8) and z["user_active"].shape == (120, K)
    assert z["user_active"][:, 0].all()  # every user has at least one interest ...
    counts = z["user_active"].sum(1)  # ... and K'_u of Eq. (8) from the history length
    assert counts.min() >= 1 and counts.max() <= K and (np.diff(z["user_active"].astype(int), axis=1) <= 0).all()


def test_routing_toy_of_the_note_matches_b2i_routing_and_separates_the_two_kinds():
    """`demo.py --routing-toy` (the walk-through of the note's Maths): Algorithm 1 printed step by
    step on 4 behaviours in 2-D gives what `b2i_routing()` returns; each behaviour's weights sum to
    1 over the 2 interests; the second iteration sends e1, e2 (along x) to one interest and e3, e4
    (along y) to the other, each more firmly than the first iteration did."""
    import re

    from tests.conftest import run_demo_in_process

    code, out, err, _ = run_demo_in_process("Recall", "MIND", ["--routing-toy"])
    assert code == 0, err[-2000:]
    lines = out.splitlines()
    weights = []  # one (K, L) table per iteration
    for k, line in enumerate(lines):
        if line.strip().startswith("w_ij = softmax_j"):
            rows = [re.findall(r"-?\d+\.\d+", lines[k + j]) for j in (1, 2)]
            weights.append(torch.tensor([[float(v) for v in r] for r in rows]))  # (2, 4)
    assert len(weights) == 2  # r = 2 iterations
    for w in weights:
        torch.testing.assert_close(w.sum(0), torch.ones(4), atol=0.011, rtol=0)  # per behaviour
    first, second = weights
    home = second.argmax(0)  # the interest each behaviour ends on
    assert home[0] == home[1] != home[2] == home[3]
    assert (second.max(0).values > first.max(0).values).all()  # routing sharpened every behaviour
    gap = float(re.search(r"largest difference ([\d.e+-]+)\)", out).group(1))
    assert gap < 1e-6


def test_demo_plots_routing_on_data_without_planted_interests(tmp_path):
    """`--plot-routing` on a seqtxt file (no planted interests to name the columns): the figure is
    written and the plotted routing weights of every behaviour sum to 1."""
    from tests.test_bad_input_recall import TINY, run_demo, write_tiny_seqtxt

    data = write_tiny_seqtxt(tmp_path / "ids_only")
    png = tmp_path / "routing.png"
    code, out, err, _ = run_demo("MIND", ["--data", f"seqtxt:{data}", *TINY["MIND"], "--epochs", "1",
                                          "--threads", "1", "--plot-routing", str(png)])
    assert code == 0, err[-2000:]
    assert png.stat().st_size > 0 and "row sums 1.0000..1.0000" in out
