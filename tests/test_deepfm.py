"""DeepFM (Guo et al., IJCAI 2017): properties of the paper, checked on
`Classic Models/Ranking/DeepFM/model.py`."""

import itertools
import pathlib
import sys

import pytest
import torch

from tests.conftest import model_module

ROOT = pathlib.Path(__file__).resolve().parents[1]


M = model_module("Ranking", "DeepFM")
FIELD_DIMS = (5, 7, 3, 4)


def random_batch(B, field_dims=FIELD_DIMS, dense_dim=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(1, v, (B,), generator=g) for v in field_dims], dim=1)
    dense = torch.rand(B, dense_dim, generator=g) if dense_dim else None
    return sparse, dense


def test_fm_second_order_equals_brute_force_pairwise_sum():
    e = torch.randn(6, 5, 4, dtype=torch.float64)  # (B, N, D)
    brute = torch.zeros(6, dtype=torch.float64)
    for i, j in itertools.combinations(range(5), 2):
        brute += (e[:, i] * e[:, j]).sum(-1)
    torch.testing.assert_close(M.fm_second_order(e), brute)


def test_pair_interactions_are_the_terms_of_the_fm_sum():
    """The heatmap's cells (`fm_pair_interactions`) are the terms of Eq. (2)'s double sum: the
    strict upper triangle adds up to the O(N D) second-order term, and the matrix is symmetric."""
    e = torch.randn(6, 5, 4, dtype=torch.float64)  # (B, N, D)
    pairs = M.fm_pair_interactions(e)  # (B, N, N)
    torch.testing.assert_close(pairs, pairs.transpose(1, 2))
    torch.testing.assert_close(torch.triu(pairs, diagonal=1).sum(dim=(1, 2)), M.fm_second_order(e))
    torch.testing.assert_close(pairs[:, 1, 3], (e[:, 1] * e[:, 3]).sum(-1))


def test_model_fm_term_is_eq2_with_real_valued_dense_features():
    """y_FM = b + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j, for one-hot AND real-valued x."""
    cfg = M.DeepFMConfig(field_dims=FIELD_DIMS, dense_dim=2, embed_dim=3, embed_init_std=0.5)
    model = M.DeepFM(cfg).double().eval()
    sparse, dense = random_batch(4, dense_dim=2)
    dense = dense.double()
    v_sparse = model.embedding.table.weight[sparse + model.embedding.offsets]  # (B, F, D), x = 1
    v = torch.cat([v_sparse, model.embedding.dense.expand(4, -1, -1)], dim=1)  # (B, N, D)
    x = torch.cat([torch.ones(4, len(FIELD_DIMS), dtype=torch.float64), dense], dim=1)  # (B, N)
    w = torch.cat([model.first_order.table.weight[sparse + model.first_order.offsets, 0],
                   model.first_order.dense[:, 0].expand(4, -1)], dim=1)  # (B, N)
    expected = model.bias + (w * x).sum(1)
    for i, j in itertools.combinations(range(x.shape[1]), 2):
        expected = expected + (v[:, i] * v[:, j]).sum(-1) * x[:, i] * x[:, j]
    e = model.embedding(sparse, dense)
    got = model.fm(e, model.first_order(sparse, dense))
    torch.testing.assert_close(got, expected)


def test_fm_and_deep_share_one_embedding():
    """The paper's point against FNN / Wide & Deep: both parts read, and train, the same vectors."""
    model = M.DeepFM(M.DeepFMConfig(field_dims=FIELD_DIMS, hidden=(8,), dropout=0.0))
    sparse, _ = random_batch(16)
    e = model.embedding(sparse, None)
    g_fm = torch.autograd.grad(M.fm_second_order(e).sum(), model.embedding.table.weight,
                               retain_graph=True)[0]
    g_deep = torch.autograd.grad(model.deep(e).sum(), model.embedding.table.weight)[0]
    assert g_fm.abs().sum() > 0 and g_deep.abs().sum() > 0
    params = [n for n, _ in model.named_parameters() if "table" in n]
    assert params == ["embedding.table.weight", "first_order.table.weight"]


def test_padding_id_contributes_nothing():
    model = M.DeepFM(M.DeepFMConfig(field_dims=FIELD_DIMS, embed_init_std=1.0))
    sparse, _ = random_batch(8)
    sparse[:, 2] = 0
    assert model.embedding(sparse, None)[:, 2].abs().sum() == 0
    assert model.first_order(sparse, None)[:, 2].abs().sum() == 0


def test_overfits_a_tiny_batch():
    model = M.DeepFM(M.DeepFMConfig(field_dims=(20, 30, 4), dense_dim=1, embed_dim=8,
                                    hidden=(32,), dropout=0.0))
    sparse, dense = random_batch(64, field_dims=(20, 30, 4), dense_dim=1, seed=1)
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
    with pytest.raises(ValueError, match="vocabulary size"):
        M.DeepFMConfig(field_dims=(1, 5))
    with pytest.raises(ValueError, match="dropout"):
        M.DeepFMConfig(field_dims=(5,), dropout=1.0)
    model = M.DeepFM(M.DeepFMConfig(field_dims=FIELD_DIMS))
    with pytest.raises(ValueError, match="int64"):
        model(torch.ones(2, len(FIELD_DIMS)))
    with pytest.raises(ValueError, match="dense_dim=0"):
        model(torch.ones(2, len(FIELD_DIMS), dtype=torch.long), torch.ones(2, 3))


@pytest.mark.realdata
@pytest.mark.slow
def test_frappe_demo_beats_logistic_regression():
    """Short Frappe run of the demo (3 epochs): DeepFM's test AUC beats LR on the same split."""
    import subprocess

    from Utils.io import parse_result_line

    from .conftest import shared_path

    frappe = shared_path("frappe")
    out = subprocess.run(
        [sys.executable, str(ROOT / "Classic Models" / "Ranking" / "DeepFM" / "demo.py"),
         "--data", f"libfm:{frappe}", "--epochs", "3", "--no-lr-decay", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    res = parse_result_line(out.stdout)
    assert res["metrics"]["AUC"] > res["baseline"]["metrics"]["AUC"]
