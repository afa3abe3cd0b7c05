"""AutoInt (Song et al., CIKM 2019): properties of the paper, checked on
`Classic Models/Ranking/AutoInt/model.py`."""


import pytest
import torch

from tests.conftest import model_module

M = model_module("Ranking", "AutoInt")
FIELD_DIMS = (6, 9, 4, 5)


def batch(B=32, seed=0, dense_dim=0):
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(1, v, (B,), generator=g) for v in FIELD_DIMS], dim=1)
    return sparse, (torch.rand(B, dense_dim, generator=g) if dense_dim else None)


@pytest.mark.parametrize("residual", [True, False])
def test_interacting_layers_are_permutation_equivariant_over_fields(residual):
    """Self-attention over the SET of fields: permuting fields permutes the output rows alike."""
    model = M.AutoInt(M.AutoIntConfig(field_dims=FIELD_DIMS, dense_dim=2, num_layers=3,
                                      residual=residual, embed_init_std=1.0)).double().eval()
    sparse, dense = batch(dense_dim=2)
    e = model.embedding(sparse, dense.double())  # (B, M, D)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = model.interacting_layers(e)
    out_perm = model.interacting_layers(e[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm])
    assert not torch.allclose(out[:, 0], out[:, 1])  # not trivially equal rows


def test_attention_is_a_softmax_over_fields_eq5_eq6():
    """Eq. (5)-(6): head output = sum_k alpha_{m,k} W_V e_k with alpha summing to 1 over the keys k.

    The fields differ (so the weights are not uniform), but W_V reads only a coordinate that is 1 in
    every field: every value vector is the same c, so a softmax over the keys gives each field
    exactly c. A softmax over the queries (the wrong axis) gives sum_k alpha_{k,m} c, not c. With
    one field the layer is ReLU(W_V e + W_Res e) (Eq. (8)).
    """
    layer = M.InteractingLayer(3, attention_dim=2, num_heads=2, residual=False,
                               scale=False).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.W_query.weight.copy_(torch.randn(4, 3, generator=g, dtype=torch.float64) * 2)
        layer.W_key.weight.copy_(torch.randn(4, 3, generator=g, dtype=torch.float64) * 2)
        layer.W_value.weight.zero_()
        layer.W_value.weight[:, 0] = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    e = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    e[..., 0] = 1.0  # distinct fields, one shared coordinate
    alpha = layer.attention(e)  # (B, Hh, M, M)
    assert (alpha.max(-1).values - alpha.min(-1).values).min() > 0.05  # far from uniform
    c = layer.W_value.weight[:, 0]  # (Hh * A,)
    torch.testing.assert_close(layer(e), c.expand(2, 5, 4))

    layer = M.InteractingLayer(4, attention_dim=3, num_heads=2, residual=True, scale=False).double()
    e = torch.randn(2, 1, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(e), torch.relu(layer.W_value(e) + layer.W_res(e)))


def test_attention_uses_the_unscaled_inner_product_by_default():
    layer = M.InteractingLayer(4, attention_dim=3, num_heads=1, residual=False,
                               scale=False).double()
    e = torch.randn(1, 3, 4, dtype=torch.float64)
    q, k, v = layer.W_query(e)[0], layer.W_key(e)[0], layer.W_value(e)[0]
    alpha = torch.softmax(q @ k.T, dim=-1)  # psi(e_m, e_k) = <W_Q e_m, W_K e_k>
    torch.testing.assert_close(layer(e)[0], torch.relu(alpha @ v))


@pytest.mark.parametrize("scale", [False, True])
def test_attention_maps_are_the_weights_forward_uses_and_rows_sum_to_one(scale):
    """The figure's weights: `attention_maps()` returns, per layer, the alpha of Eq. (5) that
    `forward` mixes the values with (rebuilding each layer's output from it); rows sum to 1."""
    model = M.AutoInt(M.AutoIntConfig(field_dims=FIELD_DIMS, dense_dim=1, num_layers=2,
                                      num_heads=2, attention_dim=3, scale_attention=scale,
                                      embed_init_std=1.0)).double().eval()
    sparse, dense = batch(B=5, dense_dim=1)
    maps = model.attention_maps(sparse, dense.double())
    assert len(maps) == 2 and maps[0].shape == (5, 2, 5, 5)
    e = model.embedding(sparse, dense.double())  # (B, M, D)
    for layer, alpha in zip(model.layers, maps):
        torch.testing.assert_close(alpha.sum(-1), torch.ones(5, 2, 5, dtype=torch.float64))
        v = layer.W_value(e).view(5, 5, 2, 3).transpose(1, 2)  # (B, Hh, M, A)
        heads = (alpha @ v).transpose(1, 2).reshape(5, 5, 6)
        torch.testing.assert_close(layer(e), torch.relu(heads + layer.W_res(e)))
        e = layer(e)
    assert maps[0].std() > 0  # not uniform: the weights depend on the fields


def test_autoint_plus_adds_the_dnn_logit():
    cfg = dict(field_dims=FIELD_DIMS, num_layers=2)
    plus = M.AutoInt(M.AutoIntConfig(**cfg, dnn_hidden=(16,))).eval()
    plain = M.AutoInt(M.AutoIntConfig(**cfg)).eval()
    plain.load_state_dict({k: v for k, v in plus.state_dict().items() if not k.startswith("dnn")})
    sparse, _ = batch()
    e = plus.embedding(sparse, None)
    dnn_logit = plus.dnn_out(plus.dnn(e.reshape(32, -1))).squeeze(-1)
    torch.testing.assert_close(plus(sparse), plain(sparse) + dnn_logit)


def test_padding_field_has_a_zero_embedding():
    model = M.AutoInt(M.AutoIntConfig(field_dims=FIELD_DIMS, embed_init_std=1.0))
    sparse, _ = batch()
    sparse[:, 1] = 0
    assert model.embedding(sparse, None)[:, 1].abs().sum() == 0


@pytest.mark.parametrize("dnn_hidden", [(), (32,)])
def test_overfits_a_tiny_batch(dnn_hidden):
    model = M.AutoInt(M.AutoIntConfig(field_dims=FIELD_DIMS, dense_dim=1, dim=8, num_layers=2,
                                      attention_dim=8, dnn_hidden=dnn_hidden))
    sparse, dense = batch(64, seed=1, dense_dim=1)
    labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(2)).float()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(150):
        loss = model.loss(model(sparse, dense), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert model.loss(model(sparse, dense), labels).item() < 0.05


def test_bad_inputs_fail_early():
    with pytest.raises(ValueError, match="num_heads"):
        M.AutoIntConfig(field_dims=FIELD_DIMS, num_heads=0)
    model = M.AutoInt(M.AutoIntConfig(field_dims=FIELD_DIMS))
    with pytest.raises(ValueError, match="int64"):
        model(torch.ones(3, 2, dtype=torch.long))


def test_demo_save_then_load_gives_identical_test_metrics(tmp_path):
    """--save after a tiny run, then --load (no flags but the data): training is skipped, the flags
    come from the file, and the test metrics are identical."""
    from tests.test_field_ctr import round_trip

    first, second, out = round_trip("AutoInt", tmp_path)
    assert first["model"] == second["model"] == "AutoInt+"
    assert first["metrics"] == second["metrics"]
    assert "training skipped" in out and "test metrics equal those of the saving run" in out
    assert second["config"]["hidden"] == "8" and second["loaded_from"].endswith("model.pt")
