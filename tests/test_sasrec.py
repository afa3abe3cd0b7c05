"""SASRec (Kang & McAuley, ICDM 2018): the paper's properties, checked on tiny cases."""


import pytest
import torch
import torch.nn.functional as F

from tests.conftest import model_module

sasrec = model_module("Recall", "SASRec")


def _model(loss: str = "bce", **kw) -> "sasrec.SASRec":
    torch.manual_seed(0)
    cfg = sasrec.SASRecConfig(
        n_items=30, max_len=12, dim=16, n_blocks=2, n_heads=2, loss=loss, **kw
    )
    return sasrec.SASRec(cfg).eval()


def test_config_fails_early_with_clear_messages():
    with pytest.raises(ValueError, match="divisible"):
        sasrec.SASRecConfig(n_items=10, dim=10, n_heads=3)
    with pytest.raises(ValueError, match="loss"):
        sasrec.SASRecConfig(n_items=10, loss="mse")
    model = _model()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 13, dtype=torch.long))


def test_causal_output_at_t_ignores_later_items():
    model = _model()
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2]])
    base = model(history)
    for t in range(2, 7):
        changed = history.clone()
        changed[0, t + 1 :] = torch.tensor([11, 12, 13, 14, 15, 16])[: 7 - t]
        out = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])  # later positions do react


def test_padding_does_not_change_real_positions():
    model = _model()
    items = torch.tensor([5, 8, 2, 9])
    short = items.unsqueeze(0)  # (1, 4), no padding
    padded = torch.cat([torch.zeros(6, dtype=torch.long), items]).unsqueeze(0)  # (1, 10)
    torch.testing.assert_close(model(padded)[:, -4:], model(short), atol=1e-6, rtol=1e-5)
    assert torch.all(model(padded)[:, :6] == 0)  # padded slots stay zero
    # in a batch with a longer neighbour, the user's scores are those it gets alone
    batch = torch.stack([padded[0], torch.arange(1, 11)])
    torch.testing.assert_close(model.score(batch)[:1], model.score(padded), atol=1e-5, rtol=1e-5)


def test_scores_are_dot_products_with_the_shared_item_embedding():
    model = _model()
    history = torch.tensor([[0, 1, 2, 3]])
    scores = model.score(history)
    assert scores.shape == (1, 31) and scores[0, 0] == float("-inf")
    expected = model(history)[:, -1] @ model.item_embedding.weight[1:].T  # Eq. (6), M = E
    torch.testing.assert_close(scores[:, 1:], expected)


def test_bce_loss_is_the_papers_with_one_negative_per_position():
    model = _model("bce")
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    negatives = torch.tensor([[9, 9, 9, 9], [10, 11, 12, 13]])
    states = model(history)
    E = model.item_embedding.weight
    mask = targets != 0
    pos = (states * E[targets]).sum(-1)[mask]
    neg = (states * E[negatives]).sum(-1)[mask]
    expected = -(torch.log(torch.sigmoid(pos)) + torch.log(1 - torch.sigmoid(neg))).mean()
    torch.testing.assert_close(model.loss(history, targets, negatives=negatives), expected)


def test_full_softmax_loss_is_cross_entropy_over_all_items():
    model = _model("ce")
    history = torch.tensor([[0, 1, 2, 3]])
    targets = torch.tensor([[0, 2, 3, 4]])
    states = model(history)[0, 1:]  # (3, D)
    logits = states @ model.item_embedding.weight[1:].T
    torch.testing.assert_close(
        model.loss(history, targets), F.cross_entropy(logits, targets[0, 1:] - 1)
    )


def test_plotted_attention_weights_are_causal_softmax_rows_that_reproduce_the_layer():
    """The figure's weights (Eq. 2 recomputed outside the fused kernel): each row sums to 1, future
    and padded keys get 0, and weights @ V gives back the attention layer's own output."""
    model = _model()
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2]])
    weights = model.attention_weights(history)  # (1, H, L, L)
    assert weights.shape == (1, 2, 8, 8)
    real = weights[0, :, 2:]  # rows of real queries
    torch.testing.assert_close(real.sum(-1), torch.ones(2, 6))
    assert torch.all(real[:, :, :2] == 0)  # padded keys
    assert torch.all(weights[0].triu(1)[:, 2:] == 0)  # future keys (j > t) of real queries
    # the same weights applied to V reproduce CausalSelfAttention.forward on the captured inputs
    attn = model.blocks[-1].attention
    captured = {}
    hook = attn.register_forward_pre_hook(lambda _, args: captured.update(a=args))
    with torch.no_grad():
        model(history)
    hook.remove()
    x, allowed = captured["a"]
    B, L, D = x.shape
    v = attn.to_qkv(x).chunk(3, dim=-1)[2].view(B, L, 2, D // 2).transpose(1, 2)  # (B, H, L, D/H)
    by_hand = attn.out((weights @ v).transpose(1, 2).reshape(B, L, D))
    with torch.no_grad():
        torch.testing.assert_close(by_hand[:, 2:], attn(x, allowed)[:, 2:], atol=1e-6, rtol=1e-5)


def _states_and_targets(model, history, targets):
    states = model(history)
    mask = (targets != 0) & (history != 0)
    return states[mask], targets[mask], mask


def test_sampled_softmax_draws_negatives_per_position_and_masks_accidental_hits():
    """Per-position negatives (B, L, S): each position's softmax is over its own positive and its own S
    negatives; a negative equal to the positive drops out."""
    model = _model("sampled_ce", n_negatives=3)
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    g = torch.Generator().manual_seed(0)
    negatives = torch.randint(1, 31, (2, 4, 3), generator=g)
    negatives[1, 2, 0] = 7  # the positive of that position: an accidental hit
    h, pos, mask = _states_and_targets(model, history, targets)
    E = model.item_embedding.weight
    neg = negatives[mask]  # (T, S)
    expected = []
    for t in range(len(pos)):  # one position at a time, by the definition
        logits = [h[t] @ E[pos[t]]] + [h[t] @ E[j] for j in neg[t] if j != pos[t]]
        expected.append(-torch.log_softmax(torch.stack(logits), 0)[0])
    torch.testing.assert_close(model.loss(history, targets, negatives=negatives), torch.stack(expected).mean())
    # shared negatives (S,) are the per-position case with the same S at every position
    shared = negatives[0, 0]
    torch.testing.assert_close(model.loss(history, targets, negatives=shared),
                               model.loss(history, targets, negatives=shared.expand(2, 4, 3)))


def test_log_q_correction_makes_the_sampled_softmax_estimate_the_full_one():
    """With q_j = 1/N, exp(r_j) N / S summed over S uniform draws estimates the sum over all items: for
    large S the corrected loss approaches full cross-entropy (plus the positive counted twice, which is
    negligible here), the uncorrected one stays off by about log(N / S) in the log-partition."""
    torch.manual_seed(0)
    kw = dict(n_items=40, max_len=6, dim=8, n_blocks=1, n_heads=1, dropout=0.0)
    full = sasrec.SASRec(sasrec.SASRecConfig(loss="ce", **kw)).eval()
    corrected = sasrec.SASRec(sasrec.SASRecConfig(loss="sampled_ce", logq=True, **kw)).eval()
    plain = sasrec.SASRec(sasrec.SASRecConfig(loss="sampled_ce", **kw)).eval()
    for m in (corrected, plain):
        m.load_state_dict(full.state_dict())
    with torch.no_grad():
        for m in (full, corrected, plain):  # sharpen the scores so the test is not trivially flat
            m.item_embedding.weight.mul_(8.0)
    history = torch.tensor([[0, 1, 2, 3, 4, 5]])
    targets = torch.tensor([[0, 2, 3, 4, 5, 6]])
    S = 200_000  # many more draws than items: the estimate is close
    negatives = torch.randint(1, 41, (1, 6, S), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ce = full.loss(history, targets)
        got = corrected.loss(history, targets, negatives=negatives)
        off = plain.loss(history, targets, negatives=negatives)
    torch.testing.assert_close(got, ce, atol=0.02, rtol=0.0)
    assert abs(float(off - ce)) > 5.0  # log(S / N) = log(5000) ≈ 8.5 without the correction


def test_gbce_is_bce_with_the_positive_probability_raised_to_beta():
    """gSASRec Eq. (10): σ(r+) is replaced by σ(r+)^β, β = α (t (1 - 1/α) + 1/α), α = S / (N - 1);
    the loss is the mean of the 1 + S binary cross-entropies. t = 0 gives β = 1 (plain BCE with S
    negatives), t = 1 gives β = α."""
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    negatives = torch.randint(1, 31, (2, 4, 5), generator=torch.Generator().manual_seed(0))
    negatives[negatives == 8] = 9  # no accidental hit, so every term counts
    negatives[negatives == 4] = 9
    for t in (0.0, 0.5, 1.0):
        model = _model("gbce", n_negatives=5, gbce_t=t)
        h, pos, mask = _states_and_targets(model, history, targets)
        E = model.item_embedding.weight
        alpha = 5 / (30 - 1)
        beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
        pos_p = torch.sigmoid((h * E[pos]).sum(-1)) ** beta  # the transformed positive probability
        neg_p = torch.sigmoid(torch.einsum("td,tsd->ts", h, E[negatives[mask]]))
        per_position = -(torch.log(pos_p) + torch.log(1 - neg_p).sum(1)) / 6
        torch.testing.assert_close(model.loss(history, targets, negatives=negatives), per_position.mean())
    assert beta == pytest.approx(alpha)  # t = 1


def test_inbatch_softmax_uses_the_other_positions_positives_with_log_q():
    """Position t's softmax is over its positive and the positives of the batch's other positions (an
    item that is t's own positive elsewhere in the batch is no negative); with log-Q every logit of item
    j is lowered by log p_j (Yi et al., RecSys 2019)."""
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 3]])  # item 3 is the positive of two positions
    log_q = torch.log(torch.linspace(0.01, 0.3, 31))
    for logq in (False, True):
        model = _model("inbatch", logq=logq)
        h, pos, _ = _states_and_targets(model, history, targets)
        E = model.item_embedding.weight
        expected = []
        for t in range(len(pos)):
            cols = [pos[t]] + [pos[j] for j in range(len(pos)) if j != t and pos[j] != pos[t]]
            logits = torch.stack([h[t] @ E[j] - (log_q[j] if logq else 0.0) for j in cols])
            expected.append(-torch.log_softmax(logits, 0)[0])
        got = model.loss(history, targets, log_q=log_q if logq else None)
        torch.testing.assert_close(got, torch.stack(expected).mean())
    with pytest.raises(ValueError, match="log_q"):
        _model("inbatch", logq=True).loss(history, targets)


def test_sampled_losses_draw_the_shape_the_config_asks_for(monkeypatch):
    draws = []
    real = torch.randint

    def spy(*args, **kwargs):
        draws.append(tuple(args[2]) if len(args) > 2 else tuple(kwargs.get("size")))
        return real(*args, **kwargs)

    history = torch.tensor([[0, 1, 2, 3]])
    targets = torch.tensor([[0, 2, 3, 4]])
    monkeypatch.setattr(torch, "randint", spy)
    _model("sampled_ce", n_negatives=7).train().loss(history, targets)
    _model("sampled_ce", n_negatives=7, shared_negatives=True).train().loss(history, targets)
    _model("gbce", n_negatives=7).train().loss(history, targets)
    assert draws == [(3, 7), (7,), (3, 7)]  # 3 positions with a target


@pytest.mark.parametrize("loss", ["bce", "ce", "sampled_ce", "gbce", "inbatch"])
def test_overfits_a_tiny_set(loss):
    """Every objective memorises 8 short deterministic sequences (next item predicted exactly)."""
    torch.manual_seed(0)
    cfg = sasrec.SASRecConfig(
        n_items=60, max_len=6, dim=32, n_blocks=2, n_heads=2, dropout=0.0, loss=loss, n_negatives=16
    )
    model = sasrec.SASRec(cfg)
    g = torch.Generator().manual_seed(1)
    seqs = (torch.randperm(60, generator=g)[:56] + 1).view(8, 7)  # disjoint: each step learnable
    history, targets = seqs[:, :-1], seqs[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300 if loss in ("ce", "sampled_ce", "inbatch") else 600):  # BCE-type losses learn slower
        opt.zero_grad()
        model.loss(history, targets).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        states = model(history)  # (8, 6, D)
        top1 = (states @ model.item_embedding.weight[1:].T).argmax(-1) + 1  # (8, 6)
    assert (top1 == targets).float().mean() == 1.0


def test_recbole_atomic_file_keeps_every_interaction_in_time_order(tmp_path):
    """The side-by-side RecBole run (Utils/tools/peer_recbole.py) must see exactly our sequences: its
    leave-one-out split orders by the timestamp column, so positions must follow each user's line."""
    import pandas as pd

    from Datasets.seqtxt import load_seqtxt
    from Utils.tools.peer_recbole import write_atomic

    lines = ["1 5 3 9 2", "2 4 4 7", "3 8 1 6 5 3"]
    (tmp_path / "toy.txt").write_text("\n".join(lines) + "\n")
    data = load_seqtxt(str(tmp_path / "toy.txt"))
    path = write_atomic(data, tmp_path / "rb" / "toy", "toy")
    df = pd.read_csv(path, sep="\t")
    assert list(df.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert len(df) == sum(len(ln.split()) - 1 for ln in lines)
    raw_items = data.item_raw
    for user, group in df.groupby("user_id:token"):
        group = group.sort_values("timestamp:float")
        assert group["timestamp:float"].tolist() == list(range(len(group)))
        raw = [str(raw_items[i]) for i in group["item_id:token"]]
        line = next(ln for ln in lines if ln.split()[0] == str(data.user_raw[user]))
        assert raw == line.split()[1:]


def test_out_of_range_ids_are_a_clear_error_not_another_row():
    """Item ids outside 0..N name the input, the id and the range (no bare IndexError)."""
    model = _model()
    with pytest.raises(ValueError, match=r"history has item id 31; expected ids in 0\.\.30"):
        model(torch.tensor([[0, 5, 31]]))
    with pytest.raises(ValueError, match=r"targets has item id -2"):
        model.loss(torch.tensor([[1, 2]]), torch.tensor([[2, -2]]))


def _demo_run(tmp_path, *flags):
    from tests.test_bad_input_seqrec import TINY, run_demo, write_seqtxt
    from Utils.io import parse_result_line

    data = tmp_path / "seq.txt"
    if not data.exists():
        write_seqtxt(data)
    code, out, err = run_demo("SASRec", ["--data", f"seqtxt:{data}", *TINY["SASRec"], *flags])
    assert code == 0, err[-2000:]
    return parse_result_line(out), out


def test_demo_save_load_round_trip_gives_identical_metrics_and_vectors(tmp_path):
    """--save then --load (no training): the same test metrics; --export-vectors holds raw ids and
    vectors whose inner products are the model's scores; --recommend takes a raw user id."""
    import numpy as np

    ckpt, vec = tmp_path / "m.pt", tmp_path / "v.npz"
    saved, _ = _demo_run(tmp_path, "--save", str(ckpt))
    loaded, out = _demo_run(tmp_path, "--load", str(ckpt), "--recommend", "7",
                            "--export-vectors", str(vec))
    assert loaded["metrics"] == saved["metrics"] and loaded["loaded_from"] == str(ckpt)
    assert "user 7: last items" in out and "no training here" in out
    z = np.load(vec)
    assert z["item_vectors"].shape == (30, 8) and z["user_vectors"].shape == (40, 8)
    assert set(z["item_ids"]) == {str(i) for i in range(1, 31)} and "7" in set(z["user_ids"])
    torch.testing.assert_close(torch.load(ckpt, weights_only=True)["models"]["model"]["state"]["item_embedding.weight"][1:],
                               torch.from_numpy(z["item_vectors"]))


@pytest.mark.slow
def test_demo_onnx_export_matches_pytorch(tmp_path):
    """--export-onnx: the scoring path (history (B, max_len) -> scores, user vector) run by
    onnxruntime equals PyTorch within 1e-5 (torch's dynamo exporter needs onnx + onnxscript)."""
    import numpy as np

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    ckpt, path = tmp_path / "m.pt", tmp_path / "m.onnx"
    result, out = _demo_run(tmp_path, "--save", str(ckpt), "--export-onnx", str(path))
    assert result["onnx"]["max_abs_diff_scores"] <= 1e-5
    assert result["onnx"]["max_abs_diff_user_vector"] <= 1e-5
    payload = torch.load(ckpt, weights_only=True)
    model = sasrec.SASRec(sasrec.SASRecConfig(**payload["models"]["model"]["config"])).eval()
    model.load_state_dict(payload["models"]["model"]["state"])
    g = torch.Generator().manual_seed(3)
    history = torch.randint(1, 31, (17, 8), generator=g)
    for row, n_pad in enumerate(torch.randint(0, 8, (17,), generator=g).tolist()):
        history[row, :n_pad] = 0  # left padding of every length
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, user = session.run(None, {"history": history.numpy()})
    with torch.no_grad():
        ref_scores, ref_user = model.score(history).numpy(), model.user_embedding(history).numpy()
    assert np.isneginf(scores[:, 0]).all()
    assert np.abs(scores[:, 1:] - ref_scores[:, 1:]).max() <= 1e-5
    assert np.abs(user - ref_user).max() <= 1e-5
    # the exported file is the whole model: nothing else was written beside it, and a copy of it
    # alone in an empty folder runs
    assert sorted(p.name for p in tmp_path.iterdir() if "onnx" in p.name) == ["m.onnx"]
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    (alone / "copy.onnx").write_bytes(path.read_bytes())
    moved = ort.InferenceSession(str(alone / "copy.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(moved.run(None, {"history": history.numpy()})[1], user)


def _block_by_hand(x, real, allowed, block, official: bool):
    """One SASRec block recomputed from its weights: the paper's pre-LN wrapper
    g(x) -> x + g(LN(x)), or the official code's block (Q = LN(x); x = Q + SA(Q, x);
    F = LN(x); x = F + FFN(F)); dropout is off (eval)."""
    D = x.shape[-1]
    W, b = block.attention.to_qkv.weight, block.attention.to_qkv.bias

    def attend(q_in, kv_in):
        q = q_in @ W[:D].T + b[:D]
        k = kv_in @ W[D:2 * D].T + b[D:2 * D]
        v = kv_in @ W[2 * D:].T + b[2 * D:]
        logits = (q @ k.transpose(1, 2) / D ** 0.5).masked_fill(~allowed, float("-inf"))
        return block.attention.out(logits.softmax(-1) @ v)

    def ffn(t):
        return block.ffn.w2(torch.relu(block.ffn.w1(t)))

    def ln(norm, t):
        return F.layer_norm(t, (D,), norm.weight, norm.bias, norm.eps)

    if official:
        q = ln(block.attn_norm, x)
        x = q + attend(q, x)
        f = ln(block.ffn_norm, x)
        return (f + ffn(f)) * real
    h = ln(block.attn_norm, x)
    x = x + attend(h, h)
    x = x + ffn(ln(block.ffn_norm, x))
    return x * real


@pytest.mark.parametrize("block", ["pre_ln", "sasrec"])
def test_one_block_recomputed_by_hand(block):
    """Eq. (1)-(5) for one block and one head, written out from the weights: a post-LN block, a
    missing residual, keys read from the wrong tensor or a lost final LayerNorm all differ."""
    torch.manual_seed(0)
    cfg = sasrec.SASRecConfig(n_items=20, max_len=6, dim=8, n_blocks=1, n_heads=1, block=block)
    model = sasrec.SASRec(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters and biases
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    history = torch.tensor([[0, 0, 4, 9, 2, 17], [3, 1, 5, 5, 8, 12]])
    B, L = history.shape
    real = (history != 0).unsqueeze(-1)
    positions = torch.arange(L - 1, -1, -1)
    x = (model.item_embedding.weight[history] * cfg.dim ** 0.5 + model.position_embedding.weight[positions])
    x = x * real
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = (causal & real.transpose(1, 2)) | torch.eye(L, dtype=torch.bool)  # (B, L, L)
    x = _block_by_hand(x, real, allowed, model.blocks[0], official=block == "sasrec")
    expected = F.layer_norm(x, (cfg.dim,), model.final_norm.weight, model.final_norm.bias,
                            model.final_norm.eps) * real
    torch.testing.assert_close(model(history), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "bce", "sampled_ce"])
def test_positions_whose_input_is_padding_leave_the_loss_unchanged(loss):
    """A left-padded row's first target sits under a padding input: it has nothing to be predicted
    from, so the loss must not count it. The padded row's loss equals the unpadded row's, and
    zeroing that target changes nothing."""
    model = _model(loss)
    seq = torch.tensor([[0, 0, 0, 3, 5, 7, 2]])  # (1, L + 1), left-padded
    history, targets = seq[:, :-1], seq[:, 1:]  # targets[0, 2] = 3 sits under a padding input
    short_h, short_t = seq[:, 3:-1], seq[:, 4:]  # the same sequence without padding
    g = torch.Generator().manual_seed(1)
    if loss == "bce":
        neg = torch.randint(1, 31, history.shape, generator=g)
        kw, kw_short = {"negatives": neg}, {"negatives": neg[:, 3:]}
    elif loss == "sampled_ce":
        neg = torch.randint(1, 31, (*history.shape, 8), generator=g)
        kw, kw_short = {"negatives": neg}, {"negatives": neg[:, 3:]}
    else:
        kw = kw_short = {}
    full = model.loss(history, targets, **kw)
    zeroed = targets.masked_fill(history == 0, 0)
    torch.testing.assert_close(model.loss(history, zeroed, **kw), full)
    torch.testing.assert_close(model.loss(short_h, short_t, **kw_short), full, atol=1e-6, rtol=1e-5)


def test_rectools_switches_change_what_they_name():
    """init="xavier", scale_embeddings=False and item_dropout act where they say, and nowhere else."""
    torch.manual_seed(0)
    base = sasrec.SASRec(sasrec.SASRecConfig(n_items=200, max_len=6, dim=16, n_blocks=1))
    xav = sasrec.SASRec(sasrec.SASRecConfig(n_items=200, max_len=6, dim=16, n_blocks=1, init="xavier"))
    assert abs(base.item_embedding.weight[1:].std().item() - 0.02) < 0.004
    expected = (2 / (201 + 16)) ** 0.5  # Xavier normal for a (N + 1, D) matrix
    assert abs(xav.item_embedding.weight[1:].std().item() - expected) < 0.2 * expected
    history = torch.tensor([[0, 3, 4, 5]])
    unscaled = sasrec.SASRec(sasrec.SASRecConfig(n_items=200, max_len=6, dim=16, n_blocks=1,
                                                 scale_embeddings=False)).eval()
    scaled = sasrec.SASRec(sasrec.SASRecConfig(n_items=200, max_len=6, dim=16, n_blocks=1)).eval()
    scaled.load_state_dict(unscaled.state_dict())
    with torch.no_grad():
        scaled.item_embedding.weight.div_(4.0)  # sqrt(16) * (E / 4) == E
    torch.testing.assert_close(scaled(history), unscaled(history))
    drop = sasrec.SASRec(sasrec.SASRecConfig(n_items=200, max_len=6, dim=16, n_blocks=1,
                                             item_dropout=0.5, dropout=0.0))
    ref = sasrec.SASRec(sasrec.SASRecConfig(n_items=200, max_len=6, dim=16, n_blocks=1,
                                            dropout=0.0)).eval()
    drop.load_state_dict(ref.state_dict())
    drop.eval()
    torch.testing.assert_close(drop(history), ref(history))  # no dropout at serving time
    drop.train()
    table = drop._item_table()
    zeros = (table[1:] == 0).float().mean().item()
    assert 0.4 < zeros < 0.6  # about half the entries of the table are dropped in training
    with pytest.raises(ValueError, match="item_dropout"):
        sasrec.SASRecConfig(n_items=10, item_dropout=1.0)
    with pytest.raises(ValueError, match="block"):
        sasrec.SASRecConfig(n_items=10, block="post_ln")


def test_right_padding_reads_as_left_padding():
    """`pad_sequence` pads on the right; a copied model must not read the padding as the newest item.
    Right-padded rows give the same scores, user vectors, loss and (in the caller's layout) states as
    the same rows padded on the left; padding between real items is a clear error."""
    model = _model("ce")
    rows = [[5, 8, 2, 9], [3, 1], [7, 4, 6, 11, 12, 13], [14]]
    L = 6
    left = torch.tensor([[0] * (L - len(r)) + r for r in rows])
    right = torch.tensor([r + [0] * (L - len(r)) for r in rows])
    torch.testing.assert_close(model.score(right), model.score(left))
    torch.testing.assert_close(model.user_embedding(right), model.user_embedding(left))
    out_l, out_r = model(left), model(right)
    for i, r in enumerate(rows):  # row i's real positions hold the same states in either layout
        torch.testing.assert_close(out_r[i, : len(r)], out_l[i, L - len(r):])
        assert torch.all(out_r[i, len(r):] == 0)
    # the loss: a right-padded sequence and its targets, against the same sequence padded on the left
    hist_l, tgt_l = torch.tensor([[0, 0, 3, 5, 7, 2], [0, 0, 0, 0, 4, 6]]), torch.tensor([[0, 3, 5, 7, 2, 9], [0, 0, 0, 4, 6, 8]])
    hist_r, tgt_r = torch.tensor([[3, 5, 7, 2, 0, 0], [4, 6, 0, 0, 0, 0]]), torch.tensor([[5, 7, 2, 9, 0, 0], [6, 8, 0, 0, 0, 0]])
    torch.testing.assert_close(model.loss(hist_r, tgt_r), model.loss(hist_l, tgt_l))
    mixed = torch.stack([left[0], right[1]])  # one row of each layout in a batch
    torch.testing.assert_close(model.score(mixed), model.score(torch.stack([left[0], left[1]])))
    with pytest.raises(ValueError, match="between real items"):
        model.score(torch.tensor([[3, 0, 5, 6]]))
    with pytest.raises(ValueError, match="between real items"):
        model.score(torch.tensor([[0, 5, 6, 0]]))
