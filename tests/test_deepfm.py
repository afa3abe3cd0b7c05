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
    cfg = M.DeepFMConfig(field_dims=FIELD_DIMS, dense_dim=2, dim=3, embed_init_std=0.5)
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
    """The paper's point against FNN / Wide & Deep: both parts read, and train, the same vectors.

    `forward` must equal FM(e) + DNN(e) with e read from the one `embedding` table, before and
    after that table alone is moved: a separate deep-part table, even one initialised as a copy of
    the FM's, does not follow the move and fails."""
    model = M.DeepFM(M.DeepFMConfig(field_dims=FIELD_DIMS, hidden=(8,), dropout=0.0))
    sparse, _ = random_batch(16)
    check = model.double().eval()
    for _ in range(2):
        e = check.embedding(sparse, None)
        w = check.first_order(sparse, None)
        torch.testing.assert_close(check(sparse), check.fm(e, w) + check.deep(e))
        with torch.no_grad():
            check.embedding.table.weight.normal_(std=0.5)  # move the shared table only
    model = M.DeepFM(M.DeepFMConfig(field_dims=FIELD_DIMS, hidden=(8,), dropout=0.0))
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
    model = M.DeepFM(M.DeepFMConfig(field_dims=(20, 30, 4), dense_dim=1, dim=8,
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


def test_demo_save_then_load_gives_identical_test_metrics(tmp_path):
    """--save after a tiny run, then --load (no flags but the data): training is skipped, the flags
    come from the file, and the test metrics are identical."""
    from tests.test_field_ctr import round_trip

    first, second, out = round_trip("DeepFM", tmp_path)
    assert first["model"] == second["model"] == "DeepFM"
    assert first["metrics"] == second["metrics"]
    assert "training skipped" in out and "test metrics equal those of the saving run" in out
    assert second["config"]["hidden"] == "8" and second["loaded_from"].endswith("model.pt")


@pytest.mark.parametrize("dynamo", [
    False,  # torch's TorchScript exporter: the same graph in under a second
    pytest.param(True, marks=pytest.mark.slow),  # torch's default exporter, the demo's (~10 s)
])
def test_onnx_export_matches_pytorch_within_1e_5(tmp_path, dynamo):
    """Utils.loops.field_ctr_demo.export_onnx (the demo's --export-onnx): onnxruntime's logits equal
    PyTorch's within 1e-5 on the rows it was checked on and on a batch of another size (the batch
    axis is dynamic), with sparse and dense inputs and batch norm's running statistics in play."""
    pytest.importorskip("onnxruntime", reason="--export-onnx needs onnx and onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript", reason="torch's default ONNX exporter needs onnxscript")
    import types

    import numpy as np
    import onnxruntime as ort

    from Datasets import CTRDataset
    from Utils.loops.field_ctr_demo import export_onnx

    cfg = M.DeepFMConfig(field_dims=FIELD_DIMS, dense_dim=2, dim=4, hidden=(16, 8),
                         batch_norm=True, embed_init_std=0.3)
    model = M.DeepFM(cfg)
    sparse, dense = random_batch(64, dense_dim=2, seed=1)
    model.train()
    with torch.no_grad():
        model(sparse, dense)  # batch norm's running statistics move away from (0, 1)
    model.eval()
    ctr = types.SimpleNamespace(dense_dim=2, test=CTRDataset(sparse, torch.zeros(64), dense))
    path = tmp_path / "deepfm.onnx"
    diff = export_onnx(model, ctr, str(path), dynamo=dynamo)
    assert diff <= 1e-5 and path.is_file()
    other_sparse, other_dense = random_batch(7, dense_dim=2, seed=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"sparse": other_sparse.numpy(), "dense": other_dense.numpy()})[0]
    with torch.no_grad():
        want = model(other_sparse, other_dense).numpy()
    assert got.shape == (7,) and np.abs(got - want).max() <= 1e-5
    # one movable file: nothing else written beside it, and a copy alone in an empty folder runs
    assert [p.name for p in tmp_path.iterdir()] == ["deepfm.onnx"]
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "m.onnx").write_bytes(path.read_bytes())
    moved = ort.InferenceSession(str(tmp_path / "alone" / "m.onnx"), providers=["CPUExecutionProvider"])
    inputs = {"sparse": other_sparse.numpy(), "dense": other_dense.numpy()}
    assert np.array_equal(moved.run(None, inputs)[0], got)
    print(f"ONNX ({'dynamo' if dynamo else 'TorchScript'} exporter) vs PyTorch: max |diff| = "
          f"{diff:.2e} on 64 rows, {np.abs(got - want).max():.2e} on 7 other rows")
