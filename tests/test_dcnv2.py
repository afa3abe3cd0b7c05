"""DCN-V2 (Wang et al., WWW 2021): properties of the paper, checked on
`Classic Models/Ranking/DCNv2/model.py`."""


import numpy as np
import pytest
import torch

from tests.conftest import model_module

M = model_module("Ranking", "DCNv2")
FIELD_DIMS = (6, 9, 4)


def poly_residual(t, y, degree):
    """Max abs residual of the least-squares polynomial fit of y(t) with the given degree."""
    coef = np.polynomial.polynomial.polyfit(t, y, degree)
    return np.abs(np.polynomial.polynomial.polyval(t, coef) - y).max(), coef


def check_degree(net, dim, num_layers):
    """On the line x_0 = t * u, every output coordinate is a polynomial in t of degree <= l + 1,
    and some coordinate has degree exactly l + 1 (nonzero leading coefficient)."""
    t = np.linspace(-1.5, 1.5, 41)
    u = torch.linspace(0.5, 1.0, dim, dtype=torch.float64)
    with torch.no_grad():
        out = net(torch.from_numpy(t)[:, None] * u).numpy()  # (T, d)
    scale = np.abs(out).max()
    leading = []
    for j in range(dim):
        res_hi, coef = poly_residual(t, out[:, j], num_layers + 1)
        assert res_hi < 1e-9 * scale, f"coordinate {j} is not a degree-{num_layers + 1} polynomial"
        leading.append(abs(coef[-1]))
    assert max(leading) > 1e-3 * scale


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_full_rank_cross_stack_is_polynomial_of_degree_l_plus_1_scalar_input(num_layers):
    """Scalar x_0 (d = 1): x_{l+1} = x_0 (w_l x_l + b_l) + x_l has degree exactly l + 1."""
    net = M.CrossNetwork(1, num_layers, rank=None, num_experts=1, activation=None).double()
    for layer in net.layers:
        layer.W.data.fill_(0.7)
        layer.bias.data.fill_(0.3)
    t = np.linspace(-1.5, 1.5, 41)
    with torch.no_grad():
        y = net(torch.from_numpy(t)[:, None]).numpy()[:, 0]
    res, coef = poly_residual(t, y, num_layers + 1)
    assert res < 1e-10
    np.testing.assert_allclose(coef[-1], 0.7 ** num_layers, rtol=1e-8)  # leading term prod w_l
    res_lower, _ = poly_residual(t, y, num_layers)
    assert res_lower > 1e-3  # not a polynomial of lower degree


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("rank", [None, 2])
def test_cross_stack_degree_on_a_line_full_and_low_rank(num_layers, rank):
    net = M.CrossNetwork(5, num_layers, rank=rank, num_experts=1, activation=None).double()
    check_degree(net, 5, num_layers)


def test_low_rank_layer_equals_full_rank_with_w_equal_u_v_transpose():
    """Eq. (4) is Eq. (1) with W = U V^T."""
    low = M.CrossLayer(6, rank=2, num_experts=1, activation=None).double()
    full = M.CrossLayer(6, rank=None, num_experts=1, activation=None).double()
    full.W.data = low.U.data[0] @ low.V.data[0].T
    full.bias.data = low.bias.data.clone()
    x0, x = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(low(x0, x), full(x0, x))


def test_mixture_of_distinct_experts_follows_eq5_with_gates_of_x_l():
    """Eq. (5) with four different experts, rebuilt from one-expert layers (Eq. (4)):
    x_{l+1} = x_0 ⊙ sum_i G_i(x_l) (U_i V_i^T x_l + b_l) + x_l, with G = softmax over the experts
    of a linear map of x_l. Gates computed from x_0, over the batch, or not normalised all fail."""
    moe = M.CrossLayer(6, rank=2, num_experts=4, activation=None).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        moe.gate.weight.copy_(torch.randn(4, 6, generator=g, dtype=torch.float64))
        moe.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    x0 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    experts = []  # E'_i(x_l) = U_i V_i^T x_l + b_l, each from a one-expert layer with U_i, V_i
    for i in range(4):
        one = M.CrossLayer(6, rank=2, num_experts=1, activation=None).double()
        with torch.no_grad():
            one.U.copy_(moe.U[i:i + 1])
            one.V.copy_(moe.V[i:i + 1])
            one.bias.copy_(moe.bias)
        experts.append(one.transform(x))  # (B, d)
    experts = torch.stack(experts, dim=1)  # (B, K, d)
    assert (experts[:, 0] - experts[:, 1]).abs().min() > 1e-6  # the experts really differ
    logits = x @ moe.gate.weight.T  # (B, K): the gate reads x_l
    gates = logits.exp() / logits.exp().sum(-1, keepdim=True)  # softmax over the K experts
    assert gates.std(dim=0).min() > 1e-3  # the gates depend on the row
    expected = x0 * (gates.unsqueeze(-1) * experts).sum(1) + x
    torch.testing.assert_close(moe(x0, x), expected)


def test_identical_experts_reduce_to_one_expert():
    """Gates summing to 1 over the experts: K copies of one expert are that expert (Eq. (5))."""
    moe = M.CrossLayer(6, rank=2, num_experts=4, activation=None).double()
    x0, x = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    single = M.CrossLayer(6, rank=2, num_experts=1, activation=None).double()
    moe.U.data[:] = single.U.data[0]
    moe.V.data[:] = single.V.data[0]
    moe.bias.data = single.bias.data.clone()
    torch.testing.assert_close(moe(x0, x), single(x0, x))


def test_nonlinear_experts_follow_eq6():
    """Eq. (6): E_i(x_l) = x_0 ⊙ (U_i g(C_i g(V_i^T x_l)) + b_l)."""
    layer = M.CrossLayer(4, rank=3, num_experts=1, activation="tanh").double()
    layer.C.data = torch.randn_like(layer.C.data)
    x0, x = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    U, V, C = layer.U[0], layer.V[0], layer.C[0]
    inner = torch.tanh(torch.tanh(x @ V) @ C.T)  # (B, r)
    expected = x0 * (inner @ U.T + layer.bias) + x
    torch.testing.assert_close(layer(x0, x), expected)


def batch(B=32, seed=0, dense_dim=2):
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(1, v, (B,), generator=g) for v in FIELD_DIMS], dim=1)
    return sparse, torch.rand(B, dense_dim, generator=g)


@pytest.mark.parametrize("structure", ["stacked", "parallel", "cross_only"])
def test_stacked_and_parallel_structures_wire_as_in_figure_1(structure):
    model = M.DCNv2(M.DCNv2Config(field_dims=FIELD_DIMS, dense_dim=2, dim=4,
                                  structure=structure, hidden=(8,))).eval()
    sparse, dense = batch()
    x0 = model.x0(sparse, dense)
    assert x0.shape == (32, len(FIELD_DIMS) * 4 + 2)
    if structure == "stacked":
        expected = model.logit(model.dnn(model.cross(x0)))
    elif structure == "parallel":
        expected = model.logit(torch.cat([model.cross(x0), model.dnn(x0)], dim=1))
    else:
        expected = model.logit(model.cross(x0))
    torch.testing.assert_close(model(sparse, dense), expected.squeeze(-1))


def test_loss_is_eq3_log_loss_plus_l2_on_cross_weights():
    model = M.DCNv2(M.DCNv2Config(field_dims=FIELD_DIMS, dim=4, hidden=(8,), cross_l2=0.01,
                                  num_cross_layers=2))
    sparse, _ = batch(dense_dim=0)
    logits, labels = model(sparse), torch.randint(0, 2, (32,)).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    reg = sum(layer.W.pow(2).sum() for layer in model.cross.layers)
    torch.testing.assert_close(model.loss(logits, labels), bce + 0.01 * reg)


@pytest.mark.parametrize("kw", [dict(structure="stacked"), dict(structure="parallel"),
                                dict(structure="parallel", cross_rank=4, num_experts=3,
                                     expert_activation="relu")])
def test_overfits_a_tiny_batch(kw):
    model = M.DCNv2(M.DCNv2Config(field_dims=FIELD_DIMS, dense_dim=2, dim=8, hidden=(32,),
                                  **kw))
    sparse, dense = batch(64, seed=1)
    labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(2)).float()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(150):
        loss = model.loss(model(sparse, dense), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_cross_weight_blocks_average_abs_w_per_field_pair():
    """The figure's matrix: mean |W_0| over the block of field a's rows and field b's columns
    (sparse fields D columns each, dense fields one each); low rank reads W = U V^T."""
    model = M.DCNv2(M.DCNv2Config(field_dims=FIELD_DIMS, dense_dim=1, dim=2, hidden=(4,)))
    sizes, d = [2, 2, 2, 1], 7
    W = torch.zeros(d, d)
    starts = [0, 2, 4, 6]
    W[starts[0]:starts[0] + 2, starts[2]:starts[2] + 2] = -3.0  # field 0 x field 2, sign ignored
    W[starts[3], starts[1]] = 5.0  # dense field x field 1: one of its 2 cells
    model.cross.layers[0].W.data = W
    expected = torch.zeros(4, 4)
    expected[0, 2], expected[3, 1] = 3.0, 5.0 / (sizes[3] * sizes[1])
    torch.testing.assert_close(model.cross_weight_blocks(0), expected)
    low = M.DCNv2(M.DCNv2Config(field_dims=FIELD_DIMS, dense_dim=1, dim=2, hidden=(4,),
                                cross_rank=2))
    U, V = low.cross.layers[0].U.data[0], low.cross.layers[0].V.data[0]
    model.cross.layers[0].W.data = U @ V.T
    torch.testing.assert_close(low.cross_weight_blocks(0), model.cross_weight_blocks(0))


def test_bad_configs_fail_early():
    with pytest.raises(ValueError, match="cross_rank"):
        M.DCNv2Config(field_dims=FIELD_DIMS, num_experts=4)
    with pytest.raises(ValueError, match="structure"):
        M.DCNv2Config(field_dims=FIELD_DIMS, structure="side_by_side")
    with pytest.raises(ValueError, match="needs a deep network"):
        M.DCNv2Config(field_dims=FIELD_DIMS, hidden=())


def test_demo_save_then_load_gives_identical_test_metrics(tmp_path):
    """--save after a tiny run, then --load (no flags but the data): training is skipped, the flags
    come from the file, and the test metrics are identical."""
    from tests.test_field_ctr import round_trip

    first, second, out = round_trip("DCNv2", tmp_path)
    assert first["model"] == second["model"] == "DCN-V2"
    assert first["metrics"] == second["metrics"]
    assert "training skipped" in out and "test metrics equal those of the saving run" in out
    assert second["config"]["hidden"] == "8" and second["loaded_from"].endswith("model.pt")
