"""GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018): the papers' properties, checked
on tiny cases — the GRU equations, session-parallel mini-batches that reset a slot's state exactly where a
new session starts, the ranking-max losses against a brute-force computation, popularity sampling, and the
repo's conventions (padding on either side, seen items left out, save / load, clear errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import model_module, run_demo_in_process
from Utils.loops.seqrec import padded_sequence_batches, session_parallel_batches
from Utils.training import AdagradMomentum

gru = model_module("Recall", "GRU4Rec")


def _model(loss: str = "bpr_max", **kw):
    torch.manual_seed(0)
    cfg = {"n_items": 30, "dim": 8, "loss": loss, "n_sample": 0, **kw}
    return gru.GRU4Rec(gru.GRU4RecConfig(**cfg)).eval()


def test_config_fails_early_with_clear_messages():
    for bad, word in [({"loss": "mse"}, "loss"), ({"embedding": "bag"}, "embedding"),
                      ({"final_act": "gelu"}, "final_act"), ({"n_sample": -1}, "n_sample"),
                      ({"sample_alpha": 1.5}, "sample_alpha"), ({"bpreg": -1.0}, "bpreg"),
                      ({"dropout_hidden": 1.0}, "dropout_hidden"), ({"dim": 0}, "dim"),
                      ({"cell": "lstm"}, "cell"), ({"cell": "official", "embedding": "onehot"}, "cell")]:
        with pytest.raises(ValueError, match=word):
            gru.GRU4RecConfig(n_items=10, **bad)


# ---- ICLR Eq. (1)-(4): the GRU ------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", ["shared", "separate", "onehot"])
def test_one_step_is_the_papers_gru_written_out(embedding):
    """h_t = (1 - z) h + z ĥ, z = σ(W_z x + U_z h), ĥ = tanh(W x + U (r ⊙ h)), r = σ(W_r x + U_r h), with the
    reset gate applied *before* U (the paper's form; torch.nn.GRUCell applies it after U). One-hot input:
    W x is the item's row of the input matrix."""
    model = _model(embedding=embedding)
    with torch.no_grad():
        for p in model.parameters():  # non-zero biases
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    layer = model.layers[0]
    items = torch.tensor([3, 17])
    h = torch.randn(2, 8)
    if embedding == "onehot":
        one_hot = F.one_hot(items, 31).float()  # (B, N + 1)
        wx = one_hot @ layer.input_weight.weight + layer.input_bias
    else:
        table = model.item_embedding if embedding == "shared" else model.input_embedding
        wx = table.weight[items] @ layer.input_weight + layer.input_bias
    W, W_r, W_z = wx.chunk(3, -1)
    U_r, U_z = layer.hidden_rz.chunk(2, -1)
    r = torch.sigmoid(W_r + h @ U_r)  # Eq. (4)
    z = torch.sigmoid(W_z + h @ U_z)  # Eq. (2)
    h_hat = torch.tanh(W + (r * h) @ layer.hidden_h)  # Eq. (3)
    expected = (1 - z) * h + z * h_hat  # Eq. (1)
    with torch.no_grad():
        _, got = model.encode(items.unsqueeze(1), hidden=h.unsqueeze(0))
    torch.testing.assert_close(got[0], expected)


@pytest.mark.parametrize("embedding", ["shared", "separate"])
def test_official_cell_is_torch_grucell_with_the_reset_gate_after_the_product(embedding):
    """cell="official" (the official PyTorch code's nn.GRUCell, for comparison): n = tanh(W x + b +
    r ⊙ (U h + b_hn)), h' = (1 - z) n + z h. On the same weights the paper's Eq. (3), r applied to h
    before U, gives another state; the official default initialisation (compatibility mode) bounds
    every weight by σ = sqrt(6 / (in + D)), as the paper cell's."""
    model = _model(embedding=embedding, cell="official")
    cell = model.layers[0].cell
    sigma = math.sqrt(6.0 / (8 + 8))
    for w in (cell.weight_ih, cell.weight_hh):
        assert float(w.abs().max()) <= sigma and float(w.abs().max()) > 0.9 * sigma
    with torch.no_grad():
        for b in (cell.bias_ih, cell.bias_hh):
            assert float(b.abs().max()) == 0.0
            b.add_(torch.randn_like(b) * 0.3)
    items = torch.tensor([3, 17])
    h = torch.randn(2, 8)
    table = model.item_embedding if embedding == "shared" else model.input_embedding
    x = table.weight[items]
    i_r, i_z, i_n = (x @ cell.weight_ih.T + cell.bias_ih).chunk(3, -1)
    h_r, h_z, h_n = (h @ cell.weight_hh.T + cell.bias_hh).chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)  # the reset gate after U h (plus its own bias)
    expected = (1 - z) * n + z * h
    with torch.no_grad():
        _, got = model.encode(items.unsqueeze(1), hidden=h.unsqueeze(0))
    torch.testing.assert_close(got[0], expected)
    U_hn = cell.weight_hh[16:].T  # (D, D): the same weights read as Eq. (3)
    paper = (1 - z) * torch.tanh(i_n + (r * h) @ U_hn + cell.bias_hh[16:]) + z * h
    assert float((paper - expected).abs().max()) > 1e-3


def test_scores_are_the_state_times_the_output_table_plus_bias_and_a_search_reproduces_them():
    model = _model()
    with torch.no_grad():
        model.item_bias.normal_()
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    h = model.hidden_state(history)
    scores = model.score(history)
    assert scores.shape == (2, 31) and bool(torch.isneginf(scores[:, 0]).all())
    torch.testing.assert_close(scores[:, 1:], h @ model.item_embedding.weight[1:].T + model.item_bias[1:, 0])
    inner = model.user_embedding(history) @ model.item_embeddings().T  # what --export-vectors writes
    torch.testing.assert_close(inner[:, 1:], scores[:, 1:])


# ---- session-parallel mini-batches (ICLR §3.1.1) --------------------------------------------------------


def _sessions(lengths, n_items=30, seed=0):
    """A left-padded (U, L) tensor whose row u holds a session of lengths[u] items (0 or 1: no session)."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    seq = torch.zeros(len(lengths), L, dtype=torch.long)
    for u, n in enumerate(lengths):
        if n:
            seq[u, L - n:] = torch.randint(1, n_items + 1, (n,), generator=g)
    return seq


@pytest.mark.parametrize("steps", [1, 3])
def test_session_parallel_batches_cover_every_transition_once_and_flag_each_new_session(steps):
    seq = _sessions([5, 2, 1, 7, 3, 0, 4, 2, 6])
    batches = list(session_parallel_batches(seq, 3, torch.Generator().manual_seed(0), steps=steps))
    items = torch.cat([b["items"] for b in batches], 1)  # (slots, all steps)
    targets = torch.cat([b["targets"] for b in batches], 1)
    resets = torch.cat([b["resets"] for b in batches], 1)
    rows = torch.cat([b["rows"] for b in batches], 1)
    assert items.shape[0] == 3 and all(b["items"].shape == (3, steps) for b in batches)
    seen = []
    for s in range(3):
        k = 0  # position of the current step inside its session
        for t in range(items.shape[1]):
            if items[s, t] == 0:
                assert targets[s, t] == 0 and rows[s, t] == -1 and not resets[s, t]
                assert bool((items[s, t:] == 0).all())  # an empty slot stays empty
                break
            new = t == 0 or rows[s, t] != rows[s, t - 1]
            assert bool(resets[s, t]) == new  # the flag sits exactly on a session's first step
            row = seq[int(rows[s, t])]
            real = row[row != 0]
            k = 0 if new else k + 1
            assert items[s, t] == real[k] and targets[s, t] == real[k + 1]
            seen.append((int(rows[s, t]), k))
    lengths = (seq != 0).sum(1)
    expected = [(u, k) for u in range(len(seq)) for k in range(int(lengths[u]) - 1)]
    assert sorted(seen) == sorted(expected)  # each next-item transition exactly once; short rows skipped


def test_padded_batches_hold_whole_sessions_each_read_from_zero():
    """The usual third-party batching (the demo's --batching padded): every next-item transition of
    every session once, a batch cut to its longest session, the state dropped at its first column."""
    seq = _sessions([5, 2, 1, 7, 3, 0, 4, 2, 6])
    seen = []
    for b in padded_sequence_batches(seq, 4, torch.Generator().manual_seed(0)):
        items, targets, resets, rows = b["items"], b["targets"], b["resets"], b["rows"]
        assert bool(resets[:, 0].all()) and not bool(resets[:, 1:].any())
        assert bool((items[:, -1] != 0).all())  # left-padded: every session ends at the last column
        assert bool((items != 0).sum(1).max() == items.shape[1])  # cut to its longest session
        for r in range(len(items)):
            row = seq[int(rows[r, 0])]
            real = row[row != 0]
            k = int((items[r] != 0).sum())
            assert items[r, -k:].tolist() == real[:-1].tolist()
            assert targets[r, -k:].tolist() == real[1:].tolist() and not bool(targets[r, :-k].any())
            seen += [(int(rows[r, 0]), j) for j in range(k)]
    lengths = (seq != 0).sum(1)
    assert sorted(seen) == [(u, k) for u in range(len(seq)) for k in range(int(lengths[u]) - 1)]


def test_adagrad_momentum_is_the_official_indexed_adagrad_m():
    """Utils.training.AdagradMomentum against IndexedAdagradM's update written out (acc += g²,
    m = μ m - lr g / sqrt(acc + eps), p += m), dense and sparse: rows a sparse gradient does not touch
    keep their weights and their momentum."""
    lr, mu, eps = 0.1, 0.4, 1e-6
    torch.manual_seed(0)
    table = torch.nn.Embedding(6, 3, sparse=True)
    dense = torch.nn.Parameter(torch.randn(3, 2))
    opt = AdagradMomentum([table.weight, dense], lr=lr, momentum=mu, eps=eps)
    p_t, p_d = table.weight.detach().clone(), dense.detach().clone()
    acc_t, acc_d = torch.zeros_like(p_t), torch.zeros_like(p_d)
    mom_t, mom_d = torch.zeros_like(p_t), torch.zeros_like(p_d)
    for ids in ([1, 2, 2], [2, 4], [1]):
        opt.zero_grad()
        ((table(torch.tensor(ids)) @ dense) ** 2).sum().backward()
        g_t = table.weight.grad.to_dense()
        touched = g_t.abs().sum(1) > 0
        acc_t[touched] += g_t[touched] ** 2
        mom_t[touched] = mu * mom_t[touched] - lr * g_t[touched] / (acc_t[touched] + eps).sqrt()
        p_t[touched] += mom_t[touched]
        acc_d += dense.grad ** 2
        mom_d = mu * mom_d - lr * dense.grad / (acc_d + eps).sqrt()
        p_d += mom_d
        opt.step()
        assert torch.allclose(table.weight, p_t, atol=1e-6) and torch.allclose(dense, p_d, atol=1e-6)
    assert bool((opt.state[table.weight]["mom"][[0, 3, 5]] == 0).all())  # never touched
    with pytest.raises(ValueError, match="momentum"):
        AdagradMomentum([dense], momentum=-0.1)


def test_hidden_state_is_reset_exactly_where_a_new_session_starts():
    """Carried from batch to batch with the resets applied, each slot's state at every step equals the
    state of its own session's prefix read alone from zero. Moving the resets one step later or earlier
    breaks this (the test is sensitive to an off-by-one)."""
    model = _model(dim=6)
    seq = _sessions([4, 2, 6, 3, 5, 2, 7, 3], seed=1)
    batches = list(session_parallel_batches(seq, 3, torch.Generator().manual_seed(2), steps=2))

    def run(shift: int = 0):
        items = torch.cat([b["items"] for b in batches], 1)
        resets = torch.cat([b["resets"] for b in batches], 1)
        if shift:  # the same flags one step later (+1) or earlier (-1)
            resets = torch.roll(resets, shift, dims=1)
        hidden, states = None, []
        for t in range(0, items.shape[1], 2):  # chunks of two steps, the state carried across
            out, hidden = model.encode(items[:, t:t + 2], hidden=hidden, resets=resets[:, t:t + 2])
            states.append(out)
        return torch.cat(states, 1)

    items = torch.cat([b["items"] for b in batches], 1)
    rows = torch.cat([b["rows"] for b in batches], 1)
    with torch.no_grad():
        states = run()
        expected = torch.zeros_like(states)
        for s in range(items.shape[0]):
            for t in range(items.shape[1]):
                if items[s, t] == 0:
                    continue
                start = t
                while start > 0 and rows[s, start - 1] == rows[s, t]:
                    start -= 1
                prefix = items[s, start:t + 1].unsqueeze(0)  # the session so far, alone
                expected[s, t] = model.hidden_state(prefix)[0]
        torch.testing.assert_close(states, expected)
        for shift in (1, -1):
            assert not torch.allclose(run(shift), expected, atol=1e-4)


def test_resets_inside_a_chunk_equal_starting_the_suffix_from_zero():
    model = _model()
    history = torch.tensor([[3, 4, 5, 6, 7]])
    resets = torch.tensor([[False, False, True, False, False]])
    with torch.no_grad():
        out, _ = model.encode(history, hidden=torch.randn(1, 1, 8), resets=resets)
        torch.testing.assert_close(out[:, 2:], model(history[:, 2:]))


# ---- the losses (CIKM 2018 §3.2), against a brute-force computation ---------------------------------------


def _brute_force(model, history, targets, negatives, hidden=None):
    """Row by row, by the papers' definitions: the row's positive against the other rows' targets at the
    same step (empty slots are no items) and the S extra negatives."""
    cfg = model.cfg
    with torch.no_grad():
        states, _ = model.encode(history, hidden=hidden)
    W, b = model.item_embedding.weight, model.item_bias[:, 0]
    losses = []
    B, T = history.shape
    for t in range(T):
        for i in range(B):
            if targets[i, t] == 0 or history[i, t] == 0:
                continue
            h = states[i, t]
            cols = [int(targets[j, t]) for j in range(B) if targets[j, t] != 0 and history[j, t] != 0]
            own = [j for j in range(B) if targets[j, t] != 0 and history[j, t] != 0].index(i)
            cols += [int(n) for n in negatives[t]]
            r = [float(h @ W[c] + b[c]) for c in cols]
            if cfg.loss == "ce":
                q = [float(model.item_counts[c]) for c in cols[:len(cols) - len(negatives[t])]]
                q += [float(model.item_counts[c]) ** cfg.sample_alpha for c in negatives[t]]
                z = [rj - cfg.logq * math.log(qj) for rj, qj in zip(r, q)]
                losses.append(-(z[own] - math.log(sum(math.exp(x) for x in z))))
                continue
            act = {"linear": lambda x: x, "elu": lambda x: x if x >= 0 else cfg.final_act_param * (math.exp(x) - 1),
                   "tanh": math.tanh}[cfg.final_act]
            a = [act(x) for x in r]
            ri, neg = a[own], [x for k, x in enumerate(a) if k != own]
            sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
            if cfg.loss == "bpr":
                losses.append(sum(-math.log(sig(ri - rj)) for rj in neg) / len(neg))
            elif cfg.loss == "top1":
                losses.append(sum(sig(rj - ri) + sig(rj * rj) for rj in neg) / len(neg))
            else:
                m = max(neg)
                s = [math.exp(x - m) for x in neg]
                s = [x / sum(s) for x in s]  # softmax over the negatives only
                if cfg.loss == "top1_max":
                    losses.append(sum(sj * (sig(rj - ri) + sig(rj * rj)) for sj, rj in zip(s, neg)))
                else:  # bpr_max with the score regularisation
                    losses.append(-math.log(sum(sj * sig(ri - rj) for sj, rj in zip(s, neg)))
                                  + cfg.bpreg * sum(sj * rj * rj for sj, rj in zip(s, neg)))
    return sum(losses), len(losses)


CASES = [dict(loss="bpr_max"), dict(loss="bpr_max", bpreg=0.3, final_act="linear"),
         dict(loss="top1_max"), dict(loss="top1_max", final_act="tanh"), dict(loss="bpr"),
         dict(loss="top1", final_act="linear"), dict(loss="ce"), dict(loss="ce", logq=1.0, sample_alpha=0.4)]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_losses_equal_their_definitions_computed_by_hand(kw):
    """Two steps of four slots, one slot empty at the second step (it is neither a row nor a negative),
    three extra negatives per step; the counts make log-Q non-trivial. reduction="slot" (the default,
    the official `L / batch_size`): the row sum over the 4 x 2 cells, the empty one included;
    "row": the mean over the 7 rows."""
    model = _model(**kw)
    with torch.no_grad():
        model.item_embedding.weight.mul_(6.0)  # scores of a few units: the activations bend
        model.item_bias.normal_()
    model.set_item_counts(torch.arange(31).float() + 1)
    history = torch.tensor([[1, 2], [3, 4], [5, 0], [7, 8]])
    targets = torch.tensor([[2, 9], [4, 10], [6, 0], [8, 11]])
    negatives = torch.tensor([[12, 13, 14], [15, 2, 16]])
    hidden = torch.randn(1, 4, 8) * 0.5
    with torch.no_grad():
        slot = model.loss(history, targets, negatives=negatives, hidden=hidden)
        row = model.loss(history, targets, negatives=negatives, hidden=hidden, reduction="row")
    total, rows = _brute_force(model, history, targets, negatives, hidden)
    assert rows == 7
    assert abs(float(slot) - total / 8) < 1e-4
    assert abs(float(row) - total / 7) < 1e-4


def test_a_chunk_of_steps_is_the_mean_of_its_one_step_losses():
    """T steps in one call = T calls of one step with the state carried (the official code's update),
    when every slot has a target at every step."""
    model = _model("bpr_max")
    history = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    targets = torch.tensor([[2, 3, 10], [5, 6, 11], [8, 9, 12]])
    negatives = torch.tensor([[13, 14], [15, 16], [17, 18]])
    with torch.no_grad():
        whole = model.loss(history, targets, negatives=negatives)
        hidden, parts = None, []
        for t in range(3):
            loss, hidden = model.loss(history[:, t:t + 1], targets[:, t:t + 1], negatives=negatives[t],
                                      hidden=hidden, return_hidden=True)
            parts.append(loss)
    torch.testing.assert_close(whole, torch.stack(parts).mean())


def test_bpr_max_becomes_bpr_against_the_highest_scoring_negative():
    """CIKM §3.2: the softmax weights s_j approximate the max over the negatives; as the scores sharpen,
    BPR-max (λ = 0) approaches -log σ(r_i - max_j r_j), while BPR averages over all negatives."""
    model = _model("bpr_max", bpreg=0.0, final_act="linear")
    r = torch.tensor([[0.5, 0.2, 0.45, -1.0, 0.1]])  # column 0 is the positive
    valid = torch.ones_like(r, dtype=torch.bool)
    pos = torch.tensor([0])
    gaps = []
    for scale in (1.0, 10.0, 100.0):
        got = model.ranking_loss(r * scale, pos, valid)
        hardest = -F.logsigmoid((r[0, 0] - r[0, 1:].max()) * scale)
        gaps.append(float((got - hardest).abs()))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3


def test_bpr_max_gradient_does_not_vanish_with_many_easy_negatives():
    """The CIKM paper's argument: with many negatives that already score low, BPR's gradient on the
    positive is diluted by 1 / N_S; BPR-max's is not (the hard negative keeps its weight)."""
    grads = {}
    for loss in ("bpr", "bpr_max"):
        model = _model(loss, bpreg=0.0, final_act="linear")
        r = torch.cat([torch.tensor([1.0, 1.5]), torch.full((2000,), -6.0)]).unsqueeze(0).requires_grad_()
        model.ranking_loss(r, torch.tensor([0]), torch.ones_like(r, dtype=torch.bool)).backward()
        grads[loss] = float(r.grad[0, 0].abs())
    assert grads["bpr_max"] > 100 * grads["bpr"]


def test_extra_negatives_follow_support_to_the_power_alpha():
    model = _model(n_sample=50_000, sample_alpha=0.5)
    counts = torch.zeros(31)
    counts[1:] = torch.arange(1, 31).float() ** 2  # supp_i = i², so supp^0.5 = i
    model.set_item_counts(counts)
    torch.manual_seed(0)
    draws = model.sample_negatives(4).flatten()
    freq = torch.bincount(draws, minlength=31).float() / len(draws)
    assert freq[0] == 0  # padding is never drawn
    want = torch.arange(1, 31).float() / torch.arange(1, 31).sum()
    assert float((freq[1:] - want).abs().max()) < 0.005
    uniform = _model(n_sample=50_000, sample_alpha=0.0)
    uniform.set_item_counts(counts)
    freq = torch.bincount(uniform.sample_negatives(4).flatten(), minlength=31).float() / 200_000
    assert float((freq[1:] - 1 / 30).abs().max()) < 0.005


def test_loss_draws_its_extra_negatives_when_none_are_given():
    model = _model(n_sample=7)
    history, targets = torch.tensor([[1], [2]]), torch.tensor([[3], [4]])
    torch.manual_seed(1)
    drawn = model.loss(history, targets)
    torch.manual_seed(1)
    negatives = model.sample_negatives(1)
    torch.testing.assert_close(drawn, model.loss(history, targets, negatives=negatives))


def test_a_batch_without_targets_or_negatives_gives_a_zero_loss_with_a_graph():
    model = _model("bpr_max").train()
    loss = model.loss(torch.tensor([[1, 0]]), torch.tensor([[0, 0]]))
    assert float(loss) == 0.0 and loss.requires_grad
    one = model.loss(torch.tensor([[1]]), torch.tensor([[2]]))  # one slot, no extra negatives
    assert float(one) == 0.0


# ---- conventions: padding, serving, persistence, errors --------------------------------------------------


def test_left_and_right_padding_give_identical_states_and_scores():
    model = _model()
    items = torch.tensor([5, 8, 2, 9])
    left = torch.cat([torch.zeros(3, dtype=torch.long), items]).unsqueeze(0)
    right = torch.cat([items, torch.zeros(3, dtype=torch.long)]).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(model.score(left), model.score(right))
        torch.testing.assert_close(model.score(left), model.score(items.unsqueeze(0)))
        torch.testing.assert_close(model(left)[:, 3:], model(right)[:, :4])
        assert bool((model(left)[:, :3] == 0).all()) and bool((model(right)[:, 4:] == 0).all())
        batch = torch.stack([left[0], torch.arange(1, 8), right[0]])  # neighbours change nothing
        torch.testing.assert_close(model.score(batch)[[0, 2]], model.score(left).expand(2, -1))


def test_recommend_leaves_out_seen_items_and_padding():
    model = _model()
    history = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 6]])
    scores, items = model.recommend(history, k=10)
    assert not bool((items.unsqueeze(-1) == history.unsqueeze(1)).any()) and bool((items > 0).all())
    with torch.no_grad():
        torch.testing.assert_close(scores, model.score(history).gather(1, items))
    _, all_items = model.recommend(history, k=30 - 3, exclude_seen=False)
    assert bool(torch.isin(torch.tensor([3, 5, 7]), all_items[0]).all())


def test_save_load_round_trip_keeps_weights_config_and_counts(tmp_path):
    model = _model("ce", logq=1.0, n_sample=4, embedding="separate", n_layers=2, sparse=True)
    model.set_item_counts(torch.arange(31).float())
    path = tmp_path / "g.pt"
    model.save(str(path))
    loaded = gru.GRU4Rec.load(str(path))
    assert loaded.cfg == model.cfg and not loaded.training
    torch.testing.assert_close(loaded.item_counts, model.item_counts)
    history = torch.tensor([[0, 4, 9, 2]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(history), model.score(history))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(str(path))


L = torch.tensor
BAD = [
    (lambda m: m.score(L([[0, 3, 31]])), r"history has item id 31; expected ids in 0\.\.30"),
    (lambda m: m.score(L([[-1, 3]])), r"history has item id -1"),
    (lambda m: m.score(L([[1, 0, 3]])), r"padding \(0\) between real items"),
    (lambda m: m.score(L([1, 2, 3])), r"\(B, L\) int64"),
    (lambda m: m.score(torch.ones(1, 3)), r"\(B, L\) int64"),
    (lambda m: m.loss(L([[1, 2]]), L([[2]])), r"targets \(1, 1\) must match history \(1, 2\)"),
    (lambda m: m.loss(L([[1]]), L([[40]])), r"targets has item id 40"),
    (lambda m: m.loss(L([[1]]), L([[2]]), negatives=L([0, 4])), r"negatives has item id 0; expected ids in 1\.\.30"),
    (lambda m: m.loss(L([[1, 2]]), L([[2, 3]]), negatives=L([[4], [5], [6]])), r"negatives must be \(S,\) or \(T, S\)"),
    (lambda m: m.loss(L([[1]]), L([[2]]), hidden=torch.zeros(1, 2, 8)), r"hidden must be \(n_layers, B, D\)"),
    (lambda m: m.encode(L([[1, 2]]), resets=L([[1, 0]])), r"resets must be \(B, T\) bool"),
    (lambda m: m.set_item_counts(torch.ones(5)), r"N \+ 1 = 31 entries"),
    (lambda m: m.set_item_counts(-torch.ones(31)), r"finite and >= 0"),
    (lambda m: m.set_item_counts(torch.full((31,), float("nan"))), r"finite and >= 0"),
    (lambda m: m.loss(L([[1]]), L([[2]]), reduction="sum"), r'reduction must be "slot" or "row"'),
    (lambda m: m.recommend(L([[1, 2]]), k=0), r"k must be an integer >= 1"),
    (lambda m: m.recommend(L([[1, 2]]), k=29), r"expected k <= 28"),
]


@pytest.mark.parametrize("call, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_a_value_error_that_names_it(call, message):
    with pytest.raises(ValueError, match=message):
        call(_model())


def test_session_parallel_training_memorises_a_tiny_set():
    """Eight disjoint sessions trained the official way (one step per update, state carried, resets at
    session starts, BPR-max, Adagrad with sparse item gradients): each next item ends up ranked first.
    (Every loss is checked against its definition above; this checks the training path end to end.)"""
    torch.manual_seed(0)
    model = gru.GRU4Rec(gru.GRU4RecConfig(n_items=60, dim=32, loss="bpr_max", n_sample=8, sparse=True))
    seq = (torch.randperm(60, generator=torch.Generator().manual_seed(1))[:48] + 1).view(8, 6)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.2, eps=1e-6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        hidden = None
        for batch in session_parallel_batches(seq, 4, gen):
            loss_value, hidden = model.loss(batch["items"], batch["targets"], resets=batch["resets"],
                                            hidden=hidden, return_hidden=True)
            opt.zero_grad()
            loss_value.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        for k in range(1, 6):
            top1 = model.score(seq[:, :k]).argmax(1)
            assert bool((top1 == seq[:, k]).all()), (k, top1, seq[:, k])


# ---- the demo ----------------------------------------------------------------------------------------------

TINY = ["--dim", "8", "--epochs", "1", "--n-sample", "16", "--threads", "1"]


def _demo(tmp_path, *flags):
    from tests.test_bad_input_seqrec import write_seqtxt
    from Utils.io import parse_result_line

    data = tmp_path / "seq.txt"
    if not data.exists():
        write_seqtxt(data)
    code, out, err, _ = run_demo_in_process("Recall", "GRU4Rec", ["--data", f"seqtxt:{data}", *TINY, *flags])
    return code, out, err, (parse_result_line(out) if code == 0 else None)


def test_demo_save_load_round_trip_gives_identical_metrics_and_vectors(tmp_path):
    ckpt, vec = tmp_path / "m.pt", tmp_path / "v.npz"
    code, _, err, saved = _demo(tmp_path, "--save", str(ckpt), "--loss", "top1_max")
    assert code == 0, err[-2000:]
    assert saved["model"] == "GRU4Rec (top1_max)" and saved["protocol_name"] == "train-only"
    assert saved["metrics"]["NDCG@10"] > saved["baseline"]["metrics"]["NDCG@10"]
    code, out, err, loaded = _demo(tmp_path, "--load", str(ckpt), "--recommend", "7", "--export-vectors", str(vec))
    assert code == 0, err[-2000:]
    assert loaded["metrics"] == saved["metrics"] and "user 7: last items" in out
    z = np.load(vec)
    assert z["item_vectors"].shape == (30, 9) and z["user_vectors"].shape == (40, 9)  # [h, 1] · [W_y, b_y]


@pytest.mark.parametrize("flags, phrase", [
    (["--loss", "mse"], "--loss"), (["--n-sample", "-1"], "--n-sample"), (["--sample-alpha", "2"], "--sample-alpha"),
    (["--dropout", "1.0"], "--dropout"), (["--embed-dropout", "-0.1"], "--embed-dropout"), (["--steps", "0"], "--steps"),
    (["--bpreg", "-1"], "--bpreg"), (["--batching", "random"], "--batching"), (["--ddp"], "unrecognized"),
    (["--momentum", "0.4", "--optimizer", "adam"], "--momentum"), (["--momentum", "1.0"], "--momentum"),
    (["--cell", "official", "--embedding", "onehot"], "--cell official"), (["--cell", "lstm"], "--cell"),
])
def test_demo_bad_flags_are_one_line_errors(tmp_path, flags, phrase):
    code, _, err, _ = _demo(tmp_path, *flags)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and lines[-1].startswith("error: ") and phrase in lines[-1], err[-800:]
