"""DIEN (Zhou et al., AAAI 2019): the paper's properties, on `Ranking/DIEN/model.py`."""


import pytest
import torch
import torch.nn.functional as F

from tests.conftest import model_module

dien = model_module("Ranking", "DIEN")
VOCAB = (40, 6)


def make(**kw):
    torch.manual_seed(0)
    return dien.DIEN(item_vocab_sizes=VOCAB, dim=4, mlp_hidden=(16,), **kw)


def batch(B=12, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, VOCAB[0], (B, T + 1), generator=g)
    ids = torch.stack([items, items % (VOCAB[1] - 1) + 1], -1)  # (B, T+1, 2)
    history, target = ids[:, :-1].clone(), ids[:, -1].clone()
    history[: B // 2, :2] = 0  # left padding
    neg_items = torch.randint(1, VOCAB[0], (B, T), generator=g)
    clash = neg_items == items[:, :-1]  # a negative must not be the step's own behaviour
    neg_items = torch.where(clash, neg_items % (VOCAB[0] - 1) + 1, neg_items)
    neg = torch.stack([neg_items, neg_items % (VOCAB[1] - 1) + 1], -1)
    return target, history, neg


def test_augru_with_zero_attention_keeps_the_hidden_state():
    torch.manual_seed(0)
    cell = dien.AUGRUCell(5, 5, "augru")
    x, h = torch.randn(7, 5), torch.randn(7, 5)
    assert torch.equal(cell(x, h, torch.zeros(7)), h)  # Eqs. (11)-(12): u~ = 0 -> h' = h
    moved = cell(x, h, torch.ones(7))
    assert not torch.allclose(moved, h)
    # a = 1 is an ordinary GRU step, Eqs. (2)-(5)
    gru = dien.AUGRUCell(5, 5, "gru")
    gru.load_state_dict(cell.state_dict())
    assert torch.allclose(moved, gru(x, h, torch.ones(7)))
    # the update is scaled, not the candidate: a = 0.5 lies between h and the full GRU step
    half = cell(x, h, torch.full((7,), 0.5))
    assert ((half - h).abs() <= (moved - h).abs() + 1e-6).all()


def test_update_gate_is_the_gate_forward_applies():
    """AUGRUCell.update_gate (what the demo plots) is u~'_t = a_t * u'_t of Eq. (11), and the step
    forward() takes is h' - h = u~'_t * (h~'_t - h), Eq. (12)."""
    torch.manual_seed(0)
    cell = dien.AUGRUCell(5, 5, "augru")
    x, h, a, ones = torch.randn(7, 5), torch.randn(7, 5), torch.rand(7), torch.ones(7)
    gate, full = cell.update_gate(x, h, a), cell.update_gate(x, h, ones)  # full: u'_t
    assert torch.allclose(gate, a[:, None] * full)
    assert torch.allclose(cell(x, h, a) - h, gate / full * (cell(x, h, ones) - h), atol=1e-6)
    agru = dien.AUGRUCell(5, 5, "agru")
    assert torch.allclose(agru.update_gate(x, h, a), a[:, None].expand(7, 5))  # Eq. (10)


def test_evolution_trace_shows_the_attention_and_gates_of_forward():
    """The plotted a_t are Eq. (8)'s (a softmax over real steps); the plotted gate is 0 at padding
    and never above a_t, since u'_t < 1."""
    model = make()
    target, history, _ = batch()
    with torch.no_grad():
        scores, gates = model.evolution_trace(target, history)
        mask = history[..., 0] != 0
        h = model.extract_interests(model.embed_items(history), mask)
        expect = model.attention_scores(h, model.embed_items(target), mask)
    assert torch.allclose(scores, expect)
    assert torch.allclose(scores.sum(-1), torch.ones(len(scores)), atol=1e-6)
    assert gates.shape == (*history.shape[:2], h.shape[-1])
    assert (gates[~mask] == 0).all() and (gates >= 0).all()
    assert (gates <= scores.unsqueeze(-1)).all()


def test_auxiliary_loss_uses_the_next_behaviour():
    model = make()
    target, history, neg = batch()
    _, aux = model(target, history, neg_history=neg, return_aux=True)
    # hand computation of Eq. (6): pairs (h_t, e_{t+1}) where both steps are real
    mask = history[..., 0] != 0
    e, e_neg = model.embed_items(history), model.embed_items(neg)
    h = model.extract_interests(e, mask)
    pos = (h[:, :-1] * e[:, 1:]).sum(-1)
    negs = (h[:, :-1] * e_neg[:, 1:]).sum(-1)
    pair = mask[:, :-1] & mask[:, 1:]
    expect = -(F.logsigmoid(pos[pair]).mean() + F.logsigmoid(-negs[pair]).mean())
    assert torch.allclose(aux, expect, atol=1e-6)
    # the negative at the first step is never a "next" behaviour: changing it changes nothing
    neg2 = neg.clone()
    neg2[:, 0, 0] = (neg2[:, 0, 0] % (VOCAB[0] - 2)) + 1
    assert torch.allclose(model(target, history, neg_history=neg2, return_aux=True)[1], aux)
    neg3 = neg.clone()
    neg3[:, -1, 0] = (neg3[:, -1, 0] % (VOCAB[0] - 2)) + 1
    assert not torch.allclose(model(target, history, neg_history=neg3, return_aux=True)[1], aux)


def test_a_sampled_negative_equal_to_the_behaviour_is_no_negative():
    """The paper samples the auxiliary negative from the items the user did not click; a uniform
    draw can hit the step's own behaviour. Such a pair is dropped: the loss equals Eq. (6) over
    the other real pairs (a pair with e^ = e would push <h_t, e> up and down at once)."""
    model = make()
    target, history, neg = batch()
    neg[:, 3:5] = history[:, 3:5]  # steps 3 and 4: the "negative" is the clicked item itself
    _, aux = model(target, history, neg_history=neg, return_aux=True)
    mask = history[..., 0] != 0
    e, e_neg = model.embed_items(history), model.embed_items(neg)
    h = model.extract_interests(e, mask)
    pos = (h[:, :-1] * e[:, 1:]).sum(-1)
    negs = (h[:, :-1] * e_neg[:, 1:]).sum(-1)
    pair = mask[:, :-1] & mask[:, 1:] & (neg[:, 1:] != history[:, 1:]).any(-1)
    assert pair.sum() < (mask[:, :-1] & mask[:, 1:]).sum()  # some pairs really are dropped
    expect = -(F.logsigmoid(pos[pair]).mean() + F.logsigmoid(-negs[pair]).mean())
    assert torch.allclose(aux, expect, atol=1e-6)


@pytest.mark.parametrize("evolution", ["gru", "aigru"])
def test_gru_and_aigru_step_on_every_real_behaviour_even_when_attention_underflows(evolution):
    """Plain GRU / AIGRU skip padding by the mask, not by a_t > 0: with a huge attention matrix the
    softmax of Eq. (8) is exactly 0 on most real steps, and those steps still update the state
    (AIGRU then reads a zero input, Eq. (9), which still moves a GRU)."""
    model = make(evolution=evolution)
    target, history, _ = batch()
    with torch.no_grad():
        model.attention.weight.mul_(1e6)
        mask = history[..., 0] != 0
        h = model.extract_interests(model.embed_items(history), mask)  # (B, T, H)
        a = model.attention_scores(h, model.embed_items(target), mask)  # (B, T)
        assert ((a == 0) & mask).sum() > mask.sum() // 3  # many real steps underflow to a_t = 0
        state = torch.zeros(h.shape[0], h.shape[2])
        for t in range(h.shape[1]):  # reference: a step at every real behaviour
            step = model.interest_evolving(h[:, t], state, a[:, t])
            state = torch.where(mask[:, t, None], step, state)
        torch.testing.assert_close(model.evolve_interests(h, a, mask), state)


def test_attention_is_a_softmax_over_real_steps_and_depends_on_the_target():
    model = make()
    target, history, _ = batch()
    mask = history[..., 0] != 0
    h = model.extract_interests(model.embed_items(history), mask)
    a = model.attention_scores(h, model.embed_items(target), mask)
    assert torch.allclose(a.sum(-1), torch.ones(len(a)), atol=1e-6)  # Eq. (8) normalises
    assert (a[~mask] == 0).all()
    b = model.attention_scores(h, model.embed_items(target.flip(0)), mask)
    assert not torch.allclose(a, b)
    with torch.no_grad():
        assert not torch.allclose(model(target, history), model(target.flip(0), history))


def test_left_padding_changes_nothing():
    for evolution in ("augru", "agru", "aigru", "gru"):
        model = make(evolution=evolution)
        target, history, _ = batch()
        padded = torch.cat([torch.zeros_like(history[:, :3]), history], 1)
        with torch.no_grad():
            assert torch.allclose(model(target, padded), model(target, history), atol=1e-6)


def test_loss_adds_the_weighted_auxiliary_loss():
    model = make(aux_weight=0.5)
    logits, labels, aux = torch.randn(5), torch.randint(0, 2, (5,)).float(), torch.tensor(0.8)
    bce = F.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(model.loss(logits, labels, aux), bce + 0.4)  # Eq. (7)
    assert torch.allclose(model.loss(logits, labels), bce)


def test_overfits_a_tiny_batch():
    model = make()
    target, history, neg = batch(B=24, seed=1)
    labels = torch.randint(0, 2, (24,), generator=torch.Generator().manual_seed(2)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        logits, aux = model(target, history, neg_history=neg, return_aux=True)
        loss = model.loss(logits, labels, aux)
        loss.backward()
        opt.step()
    target_loss = F.binary_cross_entropy_with_logits(model(target, history), labels)
    assert target_loss.item() < 0.05


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        dien.DIEN(item_vocab_sizes=(1,))
    with pytest.raises(ValueError):
        dien.DIEN(item_vocab_sizes=(10,), evolution="lstm")
    model = make()
    target, history, _ = batch()
    with pytest.raises(ValueError):
        model(target, history, return_aux=True)


def test_dice_mlp_uses_batch_stats_in_training_and_running_stats_at_eval():
    model = make()  # activation="dice", as the official DIEN's output network
    assert any(isinstance(m, dien.Dice) for m in model.mlp.modules())
    assert not any(isinstance(m, dien.Dice) for m in make(activation="prelu").mlp.modules())
    target, history, _ = batch()
    model.train()
    model(target, history)  # updates the running mean / variance of Dice's normaliser
    model.eval()
    alone = model(target[:1], history[:1])
    together = model(target, history)[:1]
    # at eval a row's score must not depend on which other rows share its batch
    assert torch.allclose(alone, together, atol=1e-6)
    # Dice with E[s] = 0, Var[s] -> 0 is PReLU with slope alpha (DIN paper, Eq. 8 vs Eq. 9)
    act = dien.Dice(3, eps=1e-12)
    act.alpha.data.fill_(0.25)
    act.eval()
    act.norm.running_var.fill_(1e-12)
    s = torch.tensor([[-2.0, 0.5, 3.0]])
    assert torch.allclose(act(s), torch.where(s > 0, s, 0.25 * s))
    with pytest.raises(ValueError, match="activation"):
        make(activation="relu")


def test_step_negatives_follow_clicks_and_avoid_the_steps_own_behaviour():
    """Utils/behavior_demo.step_negatives: 0 at padding; popularity mode draws items in proportion
    to their clicks and never the behaviour of the same step; uniform mode covers 1..n_items."""
    from Utils.loops.behavior_demo import step_negatives

    clicks = torch.tensor([1] * 6 + [2] * 3 + [3] * 1)  # item 1: 60% of clicks, 2: 30%, 3: 10%
    history = torch.tensor([[0, 0, 1, 2, 3, 1]]).repeat(20_000, 1)
    gen = torch.Generator().manual_seed(0)
    neg = step_negatives(history, 5, gen, clicks=clicks)
    assert (neg[:, :2] == 0).all() and (neg[:, 2:] > 0).all()
    assert not ((neg == history) & (history > 0)).any()
    # step with behaviour 3: items 1 and 2 in the ratio 6 : 3
    share = torch.bincount(neg[:, 4], minlength=4).float() / len(neg)
    assert share[1].item() == pytest.approx(2 / 3, abs=0.02)
    assert share[2].item() == pytest.approx(1 / 3, abs=0.02)
    # step with behaviour 1: items 2 and 3 in the ratio 3 : 1
    share = torch.bincount(neg[:, 2], minlength=4).float() / len(neg)
    assert share[2].item() == pytest.approx(0.75, abs=0.02) and share[1] == 0
    uniform = step_negatives(history, 5, gen)
    assert set(uniform[:, 2:].unique().tolist()) == {1, 2, 3, 4, 5}
    assert (uniform[:, :2] == 0).all()


def test_trains_on_a_batch_of_one_and_on_one_behaviour():
    """A training batch of one row reaches Dice in the MLP with one sample: it is normalised with
    the moving averages (as at test time), which stay unchanged; one-behaviour histories have no
    auxiliary pair and give an auxiliary loss of 0."""
    model = make()
    target, history, neg = batch()
    model.train()
    with torch.no_grad():
        model(target, history)  # moving averages away from their (0, 1) start
    one = torch.zeros_like(history[:1])
    one[0, -1] = history[0, -1]
    stats = [m.norm.running_var.clone() for m in model.modules() if isinstance(m, dien.Dice)]
    model.eval()
    with torch.no_grad():
        expect = model(target[:1], one)
    model.train()
    logits, aux = model(target[:1], one, neg_history=neg[:1], return_aux=True)
    model.loss(logits, torch.ones(1), aux).backward()
    assert torch.allclose(logits, expect, atol=1e-6) and aux.item() == 0.0
    after = [m.norm.running_var for m in model.modules() if isinstance(m, dien.Dice)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_out_of_range_id_is_a_clear_error():
    model = make()
    target, history, neg = batch(B=2)
    bad = history.clone()
    bad[0, -1, 0] = VOCAB[0]
    with pytest.raises(ValueError, match=r"history, field 0: id 40 .*0\.\.39"):
        model(target, bad)
    bad = neg.clone()
    bad[1, 2, 1] = -1
    with pytest.raises(ValueError, match=r"neg_history, field 1: id -1 .*0\.\.5"):
        model(target, history, neg_history=bad, return_aux=True)


def test_demo_round_trip_trains_on_a_last_batch_of_one_and_recommends(tmp_path):
    """The demo on a tiny seqtxt file without item attributes (the item id is the only field):
    366 training rows in batches of 365 end with a batch of one row; --save, then --load gives
    identical metrics; --recommend prints a top-10."""
    from tests.conftest import result_of
    from tests.test_bad_input_ranking import run_demo, write_tiny_seqtxt

    data = write_tiny_seqtxt(tmp_path / "data")
    flags = ["--data", f"seqtxt:{data}", "--epochs", "1", "--dim", "4", "--batch-size", "365",
             "--threads", "1"]
    code, out, err, _ = run_demo("DIEN", [*flags, "--save", str(tmp_path / "dien.pt")])
    assert code == 0, err[-2000:]
    assert "the item id is the only item field" in out
    first = result_of(out)
    assert first["rows"]["train"] % 365 == 1
    code, out, err, _ = run_demo("DIEN", [*flags, "--load", str(tmp_path / "dien.pt"),
                                          "--recommend", "7"])
    assert code == 0, err[-2000:]
    assert result_of(out)["metrics"] == first["metrics"]
    assert "top-10 recommendations:" in out and "  10. " in out
