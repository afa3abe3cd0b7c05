"""MMoE (Ma et al., KDD 2018): properties of the paper, on `Classic Models/Ranking/MMoE/model.py`,
and of its synthetic generator `Datasets/mmoe_synthetic.py`."""


import ast
import json

import numpy as np
import pytest
import torch

from Datasets.mmoe_synthetic import make_mmoe_synthetic, make_task_weights
from tests.conftest import ROOT, model_module

mmoe = model_module("Ranking", "MMoE")


def demo_function(name: str):
    """One function of the MMoE demo, without running the demo's script (it parses argv)."""
    path = ROOT / "Classic Models" / "Ranking" / "MMoE" / "demo.py"
    node = next(n for n in ast.parse(path.read_text()).body
                if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {"np": np}
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def make(cls=None, **kw):
    torch.manual_seed(0)
    cfg = dict(dense_dim=12, sparse_vocab_sizes=(7, 5), dim=4, n_experts=4, expert_hidden=(8,),
               task_types=("binary", "regression"))
    cfg.update(kw)
    return (cls or mmoe.MMoE)(**cfg)


def batch(B=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (B, 2), generator=g), torch.randn(B, 12, generator=g)


def test_every_gate_sums_to_one_and_gates_differ_per_task():
    model = make(task_types=("binary", "regression", "binary"))
    sparse, dense = batch()
    gates = model.gate_weights(sparse, dense)  # (B, K, E)
    assert gates.shape == (32, 3, 4)
    assert torch.allclose(gates.sum(-1), torch.ones(32, 3), atol=1e-6)
    assert (gates >= 0).all()
    assert not torch.allclose(gates[:, 0], gates[:, 1]), "each task has its own gate (Eq. 7)"
    out, g2 = model(sparse, dense, return_gates=True)
    assert torch.equal(gates, g2) and out.shape == (32, 3)


def test_plotted_mean_gate_weights_sum_to_one_per_task():
    """The gate figure (demo --plot-gates) shows gate_weights averaged over inputs: (K, E), and
    each task's row is still a distribution over the experts."""
    model = make(task_types=("regression", "regression"))
    sparse, dense = batch(B=64, seed=1)
    with torch.no_grad():
        mean = model.gate_weights(sparse, dense).mean(0)  # (B, K, E) -> (K, E)
    assert mean.shape == (2, 4)
    assert torch.allclose(mean.sum(-1), torch.ones(2), atol=1e-6) and (mean >= 0).all()


def test_task_input_is_the_gate_weighted_sum_of_experts():
    """Eq. (6): with a one-hot gate, task k sees exactly expert i; with a zero gate, the mean."""
    model = make()
    sparse, dense = batch()
    x = model.inputs(sparse, dense)
    experts = torch.stack([e(x) for e in model.experts], 1)  # (B, E, H)
    with torch.no_grad():
        model.gates[0].weight.zero_()  # uniform gate for task 0
        out = model(sparse, dense)
        expect0 = model.towers[0](experts.mean(1)).squeeze(-1)
    assert torch.allclose(out[:, 0], expect0, atol=1e-6)
    # one-hot gate for task 1 on expert 2 (a huge constant logit through a constant input feature)
    with torch.no_grad():
        model.gates[1].weight.zero_()
        dense_const = dense.clone()
        dense_const[:, 0] = 1.0
        model.gates[1].weight[2, model.inputs.out_dim - 12] = 1e4
        x = model.inputs(sparse, dense_const)
        experts = torch.stack([e(x) for e in model.experts], 1)
        out = model(sparse, dense_const)
        expect1 = model.towers[1](experts[:, 2]).squeeze(-1)
    assert torch.allclose(out[:, 1], expect1, atol=1e-5)


def test_shared_bottom_towers_share_one_representation():
    model = make(mmoe.SharedBottom, bottom_hidden=(16,))
    sparse, dense = batch()
    out = model(sparse, dense)
    # a change that only touches tower 0 leaves task 1 unchanged: the towers are task-specific
    with torch.no_grad():
        model.towers[0][0].weight.add_(1.0)
    out2 = model(sparse, dense)
    assert not torch.allclose(out[:, 0], out2[:, 0]) and torch.allclose(out[:, 1], out2[:, 1])


def test_loss_is_bce_plus_mse_and_respects_masks():
    model = make(task_weights=(1.0, 0.5))
    outputs = torch.randn(10, 2)
    labels = torch.stack([torch.randint(0, 2, (10,)).float(), torch.randn(10)], 1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], labels[:, 0])
    mse = torch.nn.functional.mse_loss(outputs[:, 1], labels[:, 1])
    assert torch.allclose(model.loss(outputs, labels), bce + 0.5 * mse)
    mask = torch.ones(10, 2, dtype=torch.bool)
    mask[5:, 1] = False  # task 1 labelled only on the first five rows
    mse5 = torch.nn.functional.mse_loss(outputs[:5, 1], labels[:5, 1])
    assert torch.allclose(model.loss(outputs, labels, mask), bce + 0.5 * mse5)
    p = model.predict(outputs)
    assert torch.allclose(p[:, 0], torch.sigmoid(outputs[:, 0]))
    assert torch.equal(p[:, 1], outputs[:, 1])


@pytest.mark.parametrize("cls", ["MMoE", "SharedBottom"])
def test_overfits_a_tiny_batch(cls):
    model = make(getattr(mmoe, cls), task_types=("regression", "regression"), bottom_hidden=(32,))
    sparse, dense = batch(B=16, seed=3)
    labels = torch.randn(16, 2, generator=torch.Generator().manual_seed(4))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(250):
        opt.zero_grad()
        loss = model.loss(model(sparse, dense), labels)
        loss.backward()
        opt.step()
    assert loss.item() < 0.02


def test_synthetic_generator_sets_the_cosine_and_orders_label_correlation():
    for p in (1.0, 0.9, 0.5, 0.0):
        w = make_task_weights(100, p, rng=np.random.default_rng(1))
        cos = w[0] @ w[1] / np.linalg.norm(w[0]) / np.linalg.norm(w[1])
        assert abs(cos - p) < 1e-9 and np.allclose(np.linalg.norm(w, axis=1), 1.0)
    pearson = [make_mmoe_synthetic(4000, p, seed=2, task_seed=5).label_pearson()
               for p in (1.0, 0.9, 0.5)]
    assert pearson[0] > pearson[1] > pearson[2]  # the paper's Fig. 2: label correlation follows p
    a = make_mmoe_synthetic(50, 0.5, seed=1, task_seed=9)
    b = make_mmoe_synthetic(50, 0.5, seed=2, task_seed=9)
    assert torch.equal(a.w, b.w) and not torch.equal(a.x, b.x)  # same tasks, fresh inputs


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        mmoe.MMoE(task_types=("ranking",), dense_dim=3)
    with pytest.raises(ValueError):
        mmoe.MMoE(task_types=("binary",))
    model = make()
    with pytest.raises(ValueError):
        model(None, torch.randn(3, 12))


def test_stored_headline_summary_recomputes_from_the_runs():
    """The note's table (correlation_30runs_summary.json) is the demo's --summarize of the stored
    per-run MSEs, and its sd is the sample sd (ddof = 1)."""
    results = ROOT / "assets" / "MMoE" / "results"
    runs = json.loads((results / "correlation_30runs.json").read_text())["final_by_run"]
    stored = json.loads((results / "correlation_30runs_summary.json").read_text())
    fresh = demo_function("summarize")(runs)
    for key in ("correlations", "runs", "mean", "sd", "median", "median_gain"):
        assert stored[key] == fresh[key], key
    sb = np.asarray(runs["Shared-Bottom_corr1.0"])
    assert stored["sd"]["Shared-Bottom_corr1.0"] == pytest.approx(sb.std(ddof=1), abs=1e-6)


def test_out_of_range_sparse_id_is_a_clear_error():
    model = make()
    sparse, dense = batch(B=4)
    sparse[2, 1] = 5  # field 1 has 5 codes (0..4): 5 would read past the table
    with pytest.raises(ValueError, match=r"sparse field 1: id 5 .*0\.\.4"):
        model(sparse, dense)
    with pytest.raises(ValueError, match=r"sparse field 0: id -1"):
        make(mmoe.SharedBottom)(torch.tensor([[-1, 0]] * 4), dense)


def test_correlation_study_round_trip(tmp_path):
    """--save after a tiny correlation study, then --load: no training, identical metrics, and the
    loaded weights reproduce the saved curves' best epochs."""
    from tests.conftest import result_of
    from tests.test_bad_input_ranking import run_demo

    flags = ["--experiment", "correlation", "--runs", "1", "--epochs", "2", "--n-train", "300",
             "--n-test", "100", "--correlations", "1.0", "--plot-dir", str(tmp_path), "--threads",
             "1"]
    code, out, err, _ = run_demo("MMoE", [*flags, "--save", str(tmp_path / "study.pt")])
    assert code == 0, err[-2000:]
    first = result_of(out)
    code, out, err, _ = run_demo("MMoE", ["--experiment", "correlation", "--load",
                                          str(tmp_path / "study.pt"), "--plot-dir", str(tmp_path)])
    assert code == 0, err[-2000:]
    assert result_of(out)["metrics"] == first["metrics"]
    assert "largest difference 0.00e+00" in out


@pytest.mark.slow
def test_two_task_demo_round_trip_and_recommend(tmp_path):
    """The default two-task run: --save, then --load (no training) gives identical metrics;
    --recommend prints a top-10 for a synthetic user."""
    from tests.conftest import result_of
    from tests.test_bad_input_ranking import run_demo

    flags = ["--epochs", "1", "--threads", "1"]
    code, out, err, _ = run_demo("MMoE", [*flags, "--save", str(tmp_path / "mmoe.pt")])
    assert code == 0, err[-2000:]
    first = result_of(out)
    code, out, err, _ = run_demo("MMoE", [*flags, "--load", str(tmp_path / "mmoe.pt"),
                                          "--recommend", "U00007"])
    assert code == 0, err[-2000:]
    again = result_of(out)
    assert again["metrics"] == first["metrics"]
    assert again["shared_bottom"]["metrics"] == first["shared_bottom"]["metrics"]
    assert "top-10 recommendations:" in out and "  10. " in out
