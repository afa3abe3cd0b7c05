"""BERT4Rec (Sun et al., CIKM 2019): the paper's properties, checked on tiny cases.

Each test names the property it guards and fails if the model breaks it: the Cloze task never shows
the model the item it asks for, attention runs in both directions, padding changes nothing, the loss
counts the masked positions only, serving reads the [MASK] appended after the history."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import model_module, run_demo_in_process

b4r = model_module("Recall", "BERT4Rec")
N = 30
MASK = N + 1


def _model(**kw) -> "b4r.BERT4Rec":
    torch.manual_seed(0)
    cfg = b4r.BERT4RecConfig(n_items=N, max_len=12, dim=16, n_blocks=2, n_heads=2, **kw)
    return b4r.BERT4Rec(cfg).eval()


def test_config_and_mask_id():
    model = _model()
    assert model.mask_id == N + 1 and model.cfg.ffn_dim == 64  # FFN 4d, as the paper
    assert model.item_embedding.num_embeddings == N + 1  # [MASK] is not an item row: never scored
    with pytest.raises(ValueError, match="divisible"):
        b4r.BERT4RecConfig(n_items=10, dim=10, n_heads=3)
    with pytest.raises(ValueError, match="mask_prob"):
        b4r.BERT4RecConfig(n_items=10, mask_prob=0.0)
    with pytest.raises(ValueError, match="mask_last_prob"):
        b4r.BERT4RecConfig(n_items=10, mask_last_prob=1.5)


# ---- the Cloze task: no leak ------------------------------------------------------------------------

def test_output_at_a_masked_position_does_not_depend_on_the_hidden_item():
    """The item behind [MASK] never reaches the model: swapping the true item at a masked position
    leaves every output (and the loss's logits there) unchanged, while the same swap at an unmasked
    position does change the output — so the test would catch a model that read the original row."""
    model = _model()
    seq = torch.tensor([[0, 0, 4, 9, 2, 7, 5, 11]])
    gen = torch.Generator().manual_seed(1)
    history, targets = model.mask_items(seq, generator=gen)
    t = int((targets[0] != 0).nonzero()[0, 0])  # a masked position
    other = seq.clone()
    other[0, t] = 23  # another true item there: the masked input is the same
    history2, _ = model.mask_items(other, generator=torch.Generator().manual_seed(1))
    assert torch.equal(history, history2) and history[0, t] == MASK
    torch.testing.assert_close(model(history2), model(history))
    # the same change at an unmasked position is visible
    u = int(((targets[0] == 0) & (seq[0] != 0)).nonzero()[0, 0])
    seen = history.clone()
    seen[0, u] = 23
    assert not torch.allclose(model(seen), model(history))


def test_a_target_the_input_shows_is_refused():
    """Bidirectional attention sees the whole row: asking for an item the row shows (the next-item
    target of a causal model, or an unmasked slot) would let the model copy it. `loss` refuses."""
    model = _model()
    seq = torch.tensor([[1, 2, 3, 4, 5]])
    with pytest.raises(ValueError, match=r"does not mask"):
        model.loss(seq[:, :-1], seq[:, 1:])  # SASRec's next-item targets: visible one slot later
    with pytest.raises(ValueError, match=r"does not mask"):
        model.loss(seq, seq)


def test_next_item_targets_would_leak_through_bidirectional_attention():
    """Why the Cloze task: without masks, the output at position t changes when item t + 1 changes,
    so a next-item target at t would be part of the input that produced the prediction."""
    model = _model()
    seq = torch.tensor([[3, 8, 1, 6, 2]])
    changed = seq.clone()
    changed[0, 3] = 19  # the "next item" of position 2
    assert not torch.allclose(model(changed)[0, 2], model(seq)[0, 2])


# ---- bidirectional attention, padding --------------------------------------------------------------

def test_attention_is_bidirectional_a_later_item_changes_earlier_outputs():
    """The opposite of SASRec's causality test: changing the newest item changes every earlier
    position's output, and the last layer's attention puts weight above the diagonal."""
    model = _model()
    seq = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2]])
    changed = seq.clone()
    changed[0, -1] = 17
    base, out = model(seq), model(changed)
    for t in range(2, 7):
        assert not torch.allclose(out[0, t], base[0, t]), t
    w = model.attention_weights(torch.tensor([[3, 7, 1, 9, 4]]))  # (1, H, 6, 6): history + [MASK]
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 6))
    assert float(torch.triu(w[0, :, :-1, :-1], 1).sum()) > 0.1  # earlier items read later ones


def test_extra_left_padding_changes_nothing():
    model = _model()
    items = torch.tensor([5, 8, MASK, 9])
    short = items.unsqueeze(0)
    padded = torch.cat([torch.zeros(6, dtype=torch.long), items]).unsqueeze(0)
    torch.testing.assert_close(model(padded)[:, -4:], model(short), atol=1e-5, rtol=1e-5)
    assert torch.all(model(padded)[:, :6] == 0)
    # in a batch with a longer neighbour, a user's scores are those it gets alone
    hist = torch.tensor([[0, 0, 0, 0, 5, 8, 9]])
    batch = torch.cat([hist, torch.arange(1, 8).unsqueeze(0)])
    torch.testing.assert_close(model.score(batch)[:1], model.score(hist), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.score(hist), model.score(hist[:, 4:]), atol=1e-5, rtol=1e-5)


def test_padding_keys_are_never_attended():
    model = _model()
    w = model.attention_weights(torch.tensor([[0, 0, 0, 4, 6]]))  # (1, H, 6, 6)
    assert torch.all(w[0, :, 3:, :3] == 0)  # real queries put no weight on padded keys


def test_right_padding_reads_as_left_padding():
    model = _model()
    left = torch.tensor([[0, 0, 4, 9, 2], [1, 2, 3, 4, 5]])
    right = torch.tensor([[4, 9, 2, 0, 0], [1, 2, 3, 4, 5]])
    torch.testing.assert_close(model.score(right), model.score(left))
    torch.testing.assert_close(model(right)[0, :3], model(left)[0, 2:])
    with pytest.raises(ValueError, match="between real items"):
        model(torch.tensor([[4, 0, 2, 0, 0]]))


# ---- the Cloze loss --------------------------------------------------------------------------------

def test_cloze_loss_is_the_softmax_over_all_items_at_masked_positions_only():
    """§3.6 by hand: -mean over the masked positions of log softmax(GELU(h W^P + b^P) (LN) E^T + b^O)
    over items 1..N. Unmasked positions, padding, [MASK] and the padding column never enter."""
    model = _model()
    history = torch.tensor([[0, 0, 4, MASK, 2, MASK], [3, MASK, 5, 6, 7, 8]])
    targets = torch.tensor([[0, 0, 0, 11, 0, 13], [0, 21, 0, 0, 0, 0]])
    h = model(history)
    with torch.no_grad():
        E, b = model.item_embedding.weight, model.item_bias[:, 0]
        want = []
        for r, t in [(0, 3), (0, 5), (1, 1)]:
            z = F.layer_norm(F.gelu(h[r, t] @ model.projection.weight.T + model.projection.bias), (16,),
                             model.head_norm.weight, model.head_norm.bias)
            logits = z @ E[1:].T + b[1:]  # (N,): items only
            want.append(-(logits.log_softmax(0)[targets[r, t] - 1]))
        want = torch.stack(want)
    torch.testing.assert_close(model.loss(history, targets), want.mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.loss(history, targets, reduction="sum"), want.sum(), atol=1e-5,
                               rtol=1e-5)
    assert model.loss(history, torch.zeros_like(targets)) == 0  # nothing asked, nothing counted


def test_mask_ratio_in_expectation_at_least_one_per_row_and_never_padding():
    model = _model(mask_prob=0.6, mask_last_prob=0.0, max_predictions=30)
    torch.manual_seed(0)
    lengths = torch.randint(1, 13, (4000,))
    seq = torch.randint(1, N + 1, (4000, 12))
    seq[torch.arange(12)[None, :] < (12 - lengths)[:, None]] = 0  # left padding
    history, targets = model.mask_items(seq, generator=torch.Generator().manual_seed(0))
    masked = history == MASK
    assert torch.equal(masked, targets != 0)
    assert torch.equal(targets[masked], seq[masked]) and bool((history[~masked] == seq[~masked]).all())
    assert not bool((masked & (seq == 0)).any())  # padding is never masked, never a target
    per_row = masked.sum(1)
    assert bool((per_row >= 1).all())  # at least one target per row
    want = torch.clamp(torch.round(lengths * 0.6), min=1)  # the official generator's count
    assert torch.equal(per_row, want.long())
    share = per_row.sum() / lengths.sum()
    assert abs(float(share) - 0.6) < 0.03  # ρ in expectation
    # each real position is masked about equally often (the draw is uniform, not the newest first)
    full = masked[lengths == 12].float().mean(0)
    assert float(full.min()) > 0.5 and float(full.max()) < 0.7


def test_mask_last_rows_hide_only_the_newest_item():
    model = _model(mask_last_prob=1.0)
    seq = torch.tensor([[0, 0, 4, 9, 2], [3, 1, 8, 0, 0]])
    history, targets = model.mask_items(seq)
    assert history.tolist() == [[0, 0, 4, 9, MASK], [3, 1, MASK, 0, 0]]
    assert targets.tolist() == [[0, 0, 0, 0, 2], [0, 0, 8, 0, 0]]
    shared = _model(mask_last_prob=1 / 11)
    rows = shared.mask_items(torch.randint(1, N + 1, (5000, 12)),
                             generator=torch.Generator().manual_seed(3))[1]
    only_last = ((rows != 0).sum(1) == 1) & (rows[:, -1] != 0)
    assert abs(float(only_last.float().mean()) - 1 / 11) < 0.015


# ---- serving ---------------------------------------------------------------------------------------

def test_serving_appends_mask_and_scores_its_output():
    model = _model()
    hist = torch.tensor([[0, 0, 4, 9, 2], [6, 1, 8, 3, 5]])
    x = model.append_mask(hist)
    assert x.tolist() == [[0, 0, 4, 9, 2, MASK], [6, 1, 8, 3, 5, MASK]]
    want = model.output_layer(model(x)[:, -1])
    scores = model.score(hist)
    torch.testing.assert_close(scores[:, 1:], want[:, 1:])
    assert bool((scores[:, 0] == float("-inf")).all()) and scores.shape == (2, N + 1)
    # a history of max_len items drops its oldest one to make room for [MASK]
    full = torch.arange(1, 13).unsqueeze(0)  # (1, 12) = max_len
    assert model.append_mask(full).tolist() == [list(range(2, 13)) + [MASK]]
    torch.testing.assert_close(model.score(full), model.score(full[:, 1:]))
    # the exported vectors rank exactly as score: [z, 1] . [E, b]
    inner = model.user_embedding(hist) @ model.item_embeddings().T
    torch.testing.assert_close(inner[:, 1:], scores[:, 1:], atol=1e-5, rtol=1e-5)


def test_padding_and_mask_are_never_recommended():
    model = _model()
    with torch.no_grad():
        model.item_bias[0] = 1e6  # padding's row made the best: still never returned
    hist = torch.tensor([[0, 0, 4, 9, 2]])
    _, items = model.recommend(hist, k=N - 3)  # every unseen item
    assert sorted(items[0].tolist()) == sorted(set(range(1, N + 1)) - {4, 9, 2})
    _, items = model.recommend(hist, k=N, exclude_seen=False)
    assert bool((items > 0).all()) and bool((items <= N).all())  # no [MASK] (N + 1), no padding
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        model.score(torch.tensor([[3, MASK]]))  # a history of items; serving adds the [MASK]


# ---- persistence, errors, learning -----------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = _model()
    hist = torch.tensor([[0, 0, 4, 9, 2]])
    model.save(tmp_path / "m.pt")
    loaded = b4r.BERT4Rec.load(tmp_path / "m.pt")
    assert loaded.cfg == model.cfg and not loaded.training
    torch.testing.assert_close(loaded.score(hist), model.score(hist))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m.pt")


@pytest.mark.parametrize("call, phrase", [
    (lambda m: m.score(torch.tensor([[1, 2, 31]])), "item id 31"),
    (lambda m: m.score(torch.tensor([[1, -2, 3]])), "item id -2"),
    (lambda m: m(torch.tensor([[1, 2, 33]])), "item id 33"),
    (lambda m: m.score(torch.tensor([[1.0, 2.0]])), "int64"),
    (lambda m: m.score(torch.tensor([1, 2, 3])), "(B, L)"),
    (lambda m: m(torch.ones(1, 13, dtype=torch.long)), "max_len"),
    (lambda m: m.loss(torch.tensor([[1, MASK]]), torch.tensor([[0, 5, 0]])), "must match"),
    (lambda m: m.loss(torch.tensor([[1, MASK]]), torch.tensor([[0, 31]])), "targets has item id 31"),
    (lambda m: m.loss(torch.tensor([[1, MASK]]), torch.tensor([[0, 5]]), reduction="none"), "reduction"),
    (lambda m: m.mask_items(torch.tensor([[1, MASK]])), "no [MASK]"),
    (lambda m: m.recommend(torch.tensor([[1, 2]]), k=0), "k must be"),
])
def test_bad_input_is_a_one_line_value_error(call, phrase):
    with pytest.raises(ValueError) as e:
        call(_model())
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_learns_to_fill_a_mask_from_both_sides():
    """Rows a, a + 1, a + 2, ... (mod N): the item at a masked position is fixed by its neighbours on
    either side. After training, the first item (no left context) and a middle one mostly come back."""
    torch.manual_seed(0)
    model = b4r.BERT4Rec(b4r.BERT4RecConfig(n_items=12, max_len=6, dim=32, n_blocks=1, n_heads=2,
                                            dropout=0.0, attention_dropout=0.0, mask_prob=0.2,
                                            mask_last_prob=0.0))
    starts = torch.arange(12)
    seq = (starts[:, None] + torch.arange(6)[None, :]) % 12 + 1  # (12, 6)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(600):
        history, targets = model.mask_items(seq, generator=gen)
        loss = model.loss(history, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for t in (0, 3):  # no left neighbour; both neighbours
        x = seq.clone()
        x[:, t] = 13
        pred = model.output_layer(model(x)[:, t])[:, 1:].argmax(1) + 1
        assert float((pred == seq[:, t]).float().mean()) >= 0.75, (t, pred, seq[:, t])  # chance: 1/12


# ---- the demo --------------------------------------------------------------------------------------

TINY = ["--dim", "8", "--epochs", "1", "--threads", "1", "--batch-size", "16", "--heads", "2"]


def _demo(tmp_path, *flags):
    from tests.test_bad_input_seqrec import write_seqtxt
    from Utils.io import parse_result_line

    data = tmp_path / "seq.txt"
    if not data.exists():
        write_seqtxt(data)
    code, out, err, _ = run_demo_in_process("Recall", "BERT4Rec", ["--data", f"seqtxt:{data}", *TINY, *flags])
    return code, out, err, (parse_result_line(out) if code == 0 else None)


def test_demo_save_load_round_trip_gives_identical_metrics_and_vectors(tmp_path):
    ckpt, vec = tmp_path / "m.pt", tmp_path / "v.npz"
    code, _, err, saved = _demo(tmp_path, "--save", str(ckpt))
    assert code == 0, err[-2000:]
    assert saved["model"] == "BERT4Rec (cloze)" and saved["protocol_name"] == "train-only"
    code, out, err, loaded = _demo(tmp_path, "--load", str(ckpt), "--recommend", "7",
                                   "--export-vectors", str(vec))
    assert code == 0, err[-2000:]
    assert loaded["metrics"] == saved["metrics"] and "user 7: last items" in out
    z = np.load(vec)
    assert z["item_vectors"].shape == (30, 9) and z["user_vectors"].shape == (40, 9)  # [z, 1] . [E, b]


@pytest.mark.parametrize("flags, phrase", [
    (["--mask-prob", "0"], "--mask-prob"), (["--mask-prob", "1.5"], "--mask-prob"),
    (["--mask-last-prob", "-0.1"], "--mask-last-prob"), (["--dropout", "1.0"], "--dropout"),
    (["--attention-dropout", "1.0"], "--attention-dropout"), (["--weight-decay", "-1"], "--weight-decay"),
    (["--max-len", "1"], "--max-len"), (["--dim", "9"], "divisible"), (["--ddp"], "unrecognized"),
])
def test_demo_bad_flags_are_one_line_errors(tmp_path, flags, phrase):
    code, _, err, _ = _demo(tmp_path, *flags)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and lines[-1].startswith("error: ") and phrase in lines[-1], err[-800:]
