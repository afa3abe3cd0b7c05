"""PLE / CGC (Tang et al., RecSys 2020): the paper's properties, on `Ranking/PLE/model.py`."""


import ast
import math

import pytest
import torch

from tests.conftest import ROOT, model_module

ple = model_module("Ranking", "PLE")


def demo_function(name: str):
    """One function of the PLE demo, without running the demo's script (it parses argv)."""
    path = ROOT / "Classic Models" / "Ranking" / "PLE" / "demo.py"
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {}
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def make(**kw):
    torch.manual_seed(0)
    cfg = dict(dense_dim=10, sparse_vocab_sizes=(6,), dim=4, n_levels=2, n_task_experts=2,
               n_shared_experts=3, expert_hidden=(8,),
               task_types=("binary", "regression", "binary"))
    cfg.update(kw)
    return ple.PLE(**cfg)


def batch(B=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 6, (B, 1), generator=g), torch.randn(B, 10, generator=g)


def test_every_gate_sums_to_one():
    model = make()
    sparse, dense = batch()
    out, gates = model(sparse, dense, return_gates=True)
    assert out.shape == (24, 3) and len(gates) == 2
    for j, level in enumerate(gates):
        for w in level["task"]:
            assert w.shape == (24, 2 + 3)  # own m_k experts + m_s shared experts, Eq. (4)
            assert torch.allclose(w.sum(-1), torch.ones(24), atol=1e-6) and (w >= 0).all()
        if j < len(gates) - 1:  # the shared gate selects over all K*m_k + m_s experts
            assert level["shared"].shape == (24, 3 * 2 + 3)
            assert torch.allclose(level["shared"].sum(-1), torch.ones(24), atol=1e-6)
        else:
            assert level["shared"] is None  # the last level has no shared output


def test_plotted_gate_usage_rows_sum_to_one():
    """The gate figure (demo --plot-gates): per level and gate, the weight on each expert group;
    every row is a distribution, and a task gate has no weight on another task's experts."""
    gate_usage = demo_function("gate_usage")
    model = make()  # 3 tasks, 2 levels, m_k = 2, m_s = 3
    sparse, dense = batch()
    with torch.no_grad():
        _, gates = model(sparse, dense, return_gates=True)
    rows = gate_usage(gates, 2)
    assert len(rows) == 3 + 1 + 3  # level 1: 3 task gates + the shared gate; level 2: 3 task gates
    for i, row in enumerate(rows):
        assert len(row) == 3 + 1  # task 1's, task 2's, task 3's, shared experts
        assert math.isclose(sum(v for v in row if not math.isnan(v)), 1.0, abs_tol=1e-5)
        if i != 3:  # a task gate: exactly one task group (its own) is selectable
            assert sum(not math.isnan(v) for v in row[:3]) == 1


def test_cgc_task_experts_are_private():
    """In CGC (one level), task 0's output does not depend on task 1's specific experts."""
    model = make(n_levels=1)
    sparse, dense = batch()
    out = model(sparse, dense)
    with torch.no_grad():
        for expert in model.levels[0].task_experts[1]:
            expert[0].weight.add_(1.0)
    out2 = model(sparse, dense)
    assert torch.allclose(out[:, 0], out2[:, 0]) and torch.allclose(out[:, 2], out2[:, 2])
    assert not torch.allclose(out[:, 1], out2[:, 1])


def test_ple_shares_task_experts_through_the_shared_gate():
    """With two levels, task 1's level-1 experts reach task 0 via the shared gate (progressive
    extraction), but task 1's level-2 experts still do not."""
    model = make(n_levels=2)
    sparse, dense = batch()
    out = model(sparse, dense)
    with torch.no_grad():
        for expert in model.levels[0].task_experts[1]:
            expert[0].weight.add_(1.0)
    assert not torch.allclose(out[:, 0], model(sparse, dense)[:, 0])
    model = make(n_levels=2)
    with torch.no_grad():
        for expert in model.levels[1].task_experts[1]:
            expert[0].weight.add_(1.0)
    assert torch.allclose(out[:, 0], model(sparse, dense)[:, 0])


def test_gated_output_is_the_weighted_sum_of_selected_experts():
    """Eq. (2): g^k = w^k S^k; with a zero gate matrix the weights are uniform -> the mean."""
    model = make(n_levels=1, task_types=("regression",))
    sparse, dense = batch()
    layer = model.levels[0]
    x = model.inputs(sparse, dense)
    with torch.no_grad():
        layer.task_gates[0].weight.zero_()
        experts = [e(x) for e in layer.task_experts[0]] + [e(x) for e in layer.shared_experts]
        expect = model.towers[0](torch.stack(experts, 1).mean(1)).squeeze(-1)
        assert torch.allclose(model(sparse, dense)[:, 0], expect, atol=1e-6)


def test_loss_sample_spaces_and_weight_schedule():
    """Eq. (9): a task's loss averages only over its own sample space; Eq. (8): w_k0 * gamma_k^t."""
    model = make(task_types=("binary", "binary"), task_weights=(1.0, 2.0),
                 weight_decay_rates=(1.0, 0.5))
    outputs = torch.randn(8, 2)
    labels = torch.randint(0, 2, (8, 2)).float()
    mask = torch.ones(8, 2, dtype=torch.bool)
    mask[4:, 1] = False  # e.g. conversion is only defined on clicked rows
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    l0, l1 = bce(outputs[:, 0], labels[:, 0]), bce(outputs[:4, 1], labels[:4, 1])
    assert torch.allclose(model.loss(outputs, labels, mask, step=0), l0 + 2.0 * l1)
    assert torch.allclose(model.loss(outputs, labels, mask, step=2), l0 + 2.0 * 0.25 * l1)


def test_overfits_a_tiny_batch():
    model = make(task_types=("regression", "regression"), expert_hidden=(16,))
    sparse, dense = batch(B=16, seed=3)
    labels = torch.randn(16, 2, generator=torch.Generator().manual_seed(4))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = model.loss(model(sparse, dense), labels)
        loss.backward()
        opt.step()
    assert loss.item() < 0.02


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        ple.PLE(task_types=("binary",), dense_dim=4, n_levels=0)
    with pytest.raises(ValueError):
        ple.PLE(task_types=("binary",), dense_dim=4, n_task_experts=0, n_shared_experts=0)
    with pytest.raises(ValueError):
        ple.PLE(task_types=("binary", "binary"), dense_dim=4, task_weights=(1.0,))


def test_out_of_range_sparse_id_is_a_clear_error():
    model = make()
    sparse, dense = batch(B=4)
    sparse[1, 0] = 6  # the field has 6 codes (0..5)
    with pytest.raises(ValueError, match=r"sparse field 0: id 6 .*0\.\.5"):
        model(sparse, dense)


@pytest.mark.slow
def test_two_task_demo_round_trip_and_recommend(tmp_path):
    """The default two-task run: --save, then --load (no training) gives identical metrics for PLE
    and MMoE; --recommend prints a top-10 for a synthetic user."""
    from tests.conftest import result_of
    from tests.test_bad_input_ranking import run_demo

    flags = ["--epochs", "1", "--threads", "1"]
    code, out, err, _ = run_demo("PLE", [*flags, "--save", str(tmp_path / "ple.pt")])
    assert code == 0, err[-2000:]
    first = result_of(out)
    code, out, err, _ = run_demo("PLE", [*flags, "--load", str(tmp_path / "ple.pt"),
                                         "--recommend", "U00007"])
    assert code == 0, err[-2000:]
    again = result_of(out)
    assert again["metrics"] == first["metrics"] and again["mmoe"]["metrics"] == first["mmoe"]["metrics"]
    assert "top-10 recommendations:" in out and "  10. " in out
