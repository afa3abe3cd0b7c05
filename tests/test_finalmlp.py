"""FinalMLP (Mao et al., AAAI 2023): properties of the paper, checked on
`Classic Models/Ranking/FinalMLP/model.py`."""

import json

import pytest
import torch

from tests.conftest import ROOT, model_module

M = model_module("Ranking", "FinalMLP")
FIELD_DIMS = (7, 9, 4, 5)


def small(**kw):
    """A small FinalMLP: gate 1 on field 0 (user), gate 2 on field 1 (item), two heads."""
    cfg = dict(field_dims=FIELD_DIMS, dim=3, hidden1=(12,), hidden2=(6,), gate_hidden=(8,),
               gate1_fields=(0,), gate2_fields=(1,), num_heads=2)
    torch.manual_seed(0)
    return M.FinalMLP(M.FinalMLPConfig(**{**cfg, **kw}))


def batch(B=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(1, v, (B,), generator=g) for v in FIELD_DIMS], dim=1)


# ---------------------------------------------------------------- Eqs. (4)-(5): bilinear fusion
@pytest.mark.parametrize("d1, d2, k", [(12, 6, 2), (12, 6, 3), (10, 20, 5), (4, 8, 1)])
def test_multi_head_bilinear_fusion_equals_a_hand_computation(d1, d2, k):
    """sum_j BF(o1j, o2j) with BF = b + w1j^T o1j + w2j^T o2j + o1j^T W3j o2j, written with loops
    over rows, heads and coordinates."""
    torch.manual_seed(1)
    fusion = M.BilinearFusion(d1, d2, k).double()
    with torch.no_grad():
        fusion.w1.bias.fill_(0.3)
    o1, o2 = torch.randn(5, d1, dtype=torch.float64), torch.randn(5, d2, dtype=torch.float64)
    w1, b, w2, W3 = (t.detach() for t in (fusion.w1.weight[0], fusion.w1.bias[0],
                                           fusion.w2.weight[0], fusion.W3))
    h1, h2 = d1 // k, d2 // k
    want = []
    for r in range(5):
        total = b.item()
        for j in range(k):
            a, c = o1[r, j * h1:(j + 1) * h1], o2[r, j * h2:(j + 1) * h2]
            total += float(w1[j * h1:(j + 1) * h1] @ a) + float(w2[j * h2:(j + 1) * h2] @ c)
            total += sum(float(a[p] * W3[j, p, q] * c[q]) for p in range(h1) for q in range(h2))
        want.append(total)
    torch.testing.assert_close(fusion(o1, o2), torch.tensor(want, dtype=torch.float64))


def test_one_head_is_the_full_bilinear_form():
    """k = 1: the fusion is b + w1^T o1 + w2^T o2 + o1^T W3 o2 with one full d1 x d2 matrix."""
    torch.manual_seed(2)
    fusion = M.BilinearFusion(6, 4, 1).double()
    o1, o2 = torch.randn(7, 6, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    W = fusion.W3[0]  # (6, 4)
    want = (fusion.w1(o1) + fusion.w2(o2)).squeeze(-1) + ((o1 @ W) * o2).sum(-1)
    torch.testing.assert_close(fusion(o1, o2), want)


def test_heads_partition_the_dimensions_a_block_diagonal_bilinear_form():
    """k heads = the full bilinear form with a block-diagonal W: head j pairs only the j-th chunk
    of o1 with the j-th chunk of o2, every coordinate in exactly one head. So changing o2 in head
    1's chunk leaves the cross terms of head 0 alone."""
    torch.manual_seed(3)
    k, d1, d2 = 3, 9, 6
    fusion = M.BilinearFusion(d1, d2, k).double()
    W = torch.block_diag(*fusion.W3)  # (d1, d2), zero off the k diagonal blocks
    o1, o2 = torch.randn(4, d1, dtype=torch.float64), torch.randn(4, d2, dtype=torch.float64)
    linear = (fusion.w1(o1) + fusion.w2(o2)).squeeze(-1)
    torch.testing.assert_close(fusion(o1, o2), linear + ((o1 @ W) * o2).sum(-1))
    # the cross term's gradient w.r.t. o1's head-0 chunk reads only o2's head-0 chunk
    o1.requires_grad_(True)
    o2_other = o2.clone()
    o2_other[:, 2:] += 5.0  # heads 1 and 2 of o2 (chunk size 2)
    g = torch.autograd.grad(fusion(o1, o2).sum(), o1)[0]
    g_other = torch.autograd.grad(fusion(o1, o2_other).sum(), o1)[0]
    torch.testing.assert_close(g[:, :3], g_other[:, :3])  # head 0 of o1: unchanged
    assert not torch.allclose(g[:, 3:], g_other[:, 3:])


def test_heads_must_divide_both_stream_widths():
    with pytest.raises(ValueError, match="divide both stream widths 12 and 6, got 4"):
        small(num_heads=4)


# -------------------------------------------------------- Eqs. (2)-(3): stream-specific gating
def test_gate_is_two_sigmoid_of_its_logits_in_0_2():
    model = small()
    sparse = batch()
    for gate in (model.gate1, model.gate2):
        logits = gate.logits(sparse)
        torch.testing.assert_close(gate(sparse), 2 * torch.sigmoid(logits))
        with torch.no_grad():
            gate.out.bias.fill_(30.0)
        assert torch.all(gate(sparse) <= 2) and torch.all(gate(sparse) > 1.99)


def test_zero_gate_logits_select_every_feature_unchanged_dualmlp():
    """2 sigmoid(0) = 1: with the gates' output layers zeroed, both streams read the plain
    embedding e, and the model equals the same weights without gates (the paper's DualMLP)."""
    model = small()
    for gate in (model.gate1, model.gate2):
        with torch.no_grad():
            gate.out.weight.zero_()
            gate.out.bias.zero_()
    sparse = batch()
    e = model.embedding(sparse).flatten(1)
    h1, h2 = model.streams(sparse)
    assert torch.equal(model.gate1(sparse), torch.ones_like(e))
    torch.testing.assert_close(h1, e, rtol=0, atol=0)
    torch.testing.assert_close(h2, e, rtol=0, atol=0)
    dual = small(use_gates=False)
    missing = dual.load_state_dict(model.state_dict(), strict=False)
    assert all(k.startswith(("gate1.", "gate2.")) for k in missing.unexpected_keys)
    model.eval()
    dual.eval()
    torch.testing.assert_close(dual(sparse), model(sparse))


def test_the_two_streams_see_different_gated_inputs():
    """Gate 1 reads the user field, gate 2 the item field: h1 != h2; a new user changes gate 1
    only, a new item gate 2 only; a global gate (no context fields) is one vector for all rows."""
    model = small()
    with torch.no_grad():
        for gate in (model.gate1, model.gate2):
            gate.context.table.weight.normal_(std=1.0)  # contexts that matter
    sparse = batch()
    h1, h2 = model.streams(sparse)
    assert not torch.allclose(h1, h2)
    other_user, other_item = sparse.clone(), sparse.clone()
    other_user[:, 0] = sparse[:, 0] % (FIELD_DIMS[0] - 1) + 1
    other_item[:, 1] = sparse[:, 1] % (FIELD_DIMS[1] - 1) + 1
    assert not torch.allclose(model.gate1(other_user), model.gate1(sparse))
    assert torch.equal(model.gate2(other_user), model.gate2(sparse))
    assert torch.equal(model.gate1(other_item), model.gate1(sparse))
    assert not torch.allclose(model.gate2(other_item), model.gate2(sparse))
    glob = small(gate1_fields=(), gate2_fields=())
    with torch.no_grad():
        glob.gate1.bias.normal_()
    g = glob.gate1(sparse)
    assert torch.equal(g, g[:1].expand_as(g)) and not torch.allclose(g, torch.ones_like(g))


def test_gate_context_has_its_own_table_as_in_the_official_code():
    """The gate conditions on its own embedding of the context field: changing the main table
    changes e, not the gate."""
    model = small()
    sparse = batch()
    before = model.gate1(sparse)
    with torch.no_grad():
        model.embedding.table.weight.add_(1.0)
    assert torch.equal(model.gate1(sparse), before)


def test_gate_weights_are_the_gate_averaged_per_field():
    model = small()
    sparse = batch(5)
    g1, g2 = model.gate_weights(sparse)
    assert g1.shape == g2.shape == (5, len(FIELD_DIMS))
    torch.testing.assert_close(g1, model.gate1(sparse).reshape(5, len(FIELD_DIMS), 3).mean(-1))
    ones = small(use_gates=False).gate_weights(sparse)[0]
    assert torch.equal(ones, torch.ones(5, len(FIELD_DIMS)))


def test_padding_id_gives_a_zero_input_in_both_streams():
    model = small()
    sparse = batch(4)
    sparse[:, 2] = 0
    h1, h2 = model.streams(sparse)
    for h in (h1, h2):
        assert torch.equal(h[:, 2 * 3:3 * 3], torch.zeros(4, 3))


def test_forward_is_the_fusion_of_the_two_mlps_of_the_gated_views():
    model = small().eval()
    sparse = batch()
    h1, h2 = model.streams(sparse)
    want = model.fusion(model.mlp1(h1), model.mlp2(h2))
    torch.testing.assert_close(model(sparse), want, rtol=0, atol=0)


# ------------------------------------------------------------------ errors, training, persistence
@pytest.mark.parametrize("bad, text", [
    ([[7, 1, 1, 1]], "sparse field 0: id 7 is out of range; expected 0..6"),
    ([[1, 1, -1, 1]], "sparse field 2: id -1 is out of range"),
])
def test_ids_out_of_range_are_one_line_errors(bad, text):
    with pytest.raises(ValueError, match=text.replace(".", r"\.")):
        small()(torch.tensor(bad))


@pytest.mark.parametrize("kw, text", [
    (dict(gate1_fields=(4,)), "gate1_fields must be distinct sparse field indices in 0..3"),
    (dict(gate2_fields=(1, 1)), "gate2_fields must be distinct"),
    (dict(hidden2=()), "hidden2 must be one or more widths"),
    (dict(dropout=1.0), "dropout must be in"),
])
def test_bad_config_is_a_one_line_error(kw, text):
    with pytest.raises(ValueError, match=text):
        small(**kw)


def test_wrong_shape_and_dtype_are_refused():
    model = small()
    with pytest.raises(ValueError, match=r"sparse must be \(B, 4\) int64"):
        model(torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"sparse must be \(B, 4\) int64"):
        model(torch.ones(3, 4))


def test_a_tiny_batch_is_fitted():
    """The loss is the log loss and goes down: 32 rows with random labels are memorised."""
    model = small()
    sparse = batch(32)
    labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = model.loss(model(sparse), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_save_load_round_trip_and_no_silent_overwrite(tmp_path):
    model = small(batch_norm=True, dropout=0.2)
    model.train()
    model(batch(8))  # move the batch-norm statistics
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = M.FinalMLP.load(path)
    assert loaded.config == model.config and not loaded.training
    sparse = batch(6, seed=3)
    torch.testing.assert_close(loaded.predict(sparse), model.predict(sparse), rtol=0, atol=0)
    assert model.training  # predict ran in eval mode and gave the mode back
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(path)
    model.save(path, overwrite=True)


def test_demo_save_then_load_gives_identical_test_metrics(tmp_path):
    """--save after a tiny run, then --load: training is skipped, the flags (stream widths, heads,
    gate contexts) come from the file, and the test metrics are identical."""
    from tests.test_field_ctr import round_trip

    first, second, out = round_trip("FinalMLP", tmp_path,
                                    extra=("--hidden2", "4", "--heads", "2", "--gate-hidden", "8"))
    assert first["model"] == second["model"] == "FinalMLP"
    assert first["metrics"] == second["metrics"]
    assert "training skipped" in out and "test metrics equal those of the saving run" in out
    assert second["config"]["heads"] == 2 and second["config"]["gate1_context"] == "user"


def test_stored_frappe_runs_are_paired_with_fuxictr_by_seed():
    """The note's comparison is what the stored runs give: five seeds each side, paired."""
    folder = ROOT / "assets" / "FinalMLP" / "results"
    if not (folder / "fuxictr_frappe_paired.json").is_file():
        pytest.skip("no stored FinalMLP-vs-FuxiCTR runs")
    from Utils.tools.peer_fuxictr import paired_summary

    stored = json.loads((folder / "fuxictr_frappe_paired.json").read_text())
    fresh = paired_summary(folder)
    assert stored["seeds"] == fresh["seeds"] == [0, 1, 2, 3, 4]
    assert stored["paired"] == json.loads(json.dumps(fresh["paired"]))
