"""Bad input to the DIN, DIEN, MMoE and PLE demos and models: each case is one line `error: ...`
(exit status 2, no traceback) and leaves no `--out` / `--save` file behind; a model given an
out-of-range id raises a ValueError naming the input, the id and the allowed range; a label outside
{0, 1} (binary) or not finite (regression), or a NaN / inf dense value, raises one naming the value
and where it is; an empty batch gives empty outputs and its loss is refused.

The demos run in-process (`run_demo`): a subprocess would pay ~3 s for `import torch` per case.
Uncaught input errors are turned into `error: <message>` + status 2 exactly as the hook that
`Utils.io.add_common_args` installs in a script; anything else propagates and fails the test. One
case runs as a real subprocess to check the hook itself. The round trips (save -> load -> identical
metrics) live in tests/test_<model>.py and use `run_demo` from here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, model_module, run_demo_in_process
from Utils.demo_io import checkpoint_payload
from Utils.io import model_dir

DEMOS = ("DIN", "DIEN", "MMoE", "PLE")
BEHAVIOUR = ("DIN", "DIEN")
# tiny models, so that a case which gets as far as building one stays fast
TINY = {"DIN": ["--dim", "4"], "DIEN": ["--dim", "4"], "MMoE": [], "PLE": []}


def write_tiny_seqtxt(folder: Path, attributes: bool = False, n_users: int = 60, seed: int = 0) -> Path:
    """A small `user item item ...` file (ids only unless `attributes`): 40 items, users with 4-9
    distinct items."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(map(str, [u, *rng.choice(np.arange(1, 41), int(rng.integers(4, 10)),
                                                replace=False)]))
             for u in range(1, n_users + 1)]
    path = folder / "Tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    if attributes:
        attrs = {str(i): [1 + i % 5, 6 + i % 3] for i in range(1, 41)}
        (folder / "Tiny_item2attributes.json").write_text(json.dumps(attrs))
    return path


def run_demo(name: str, argv: list[str]) -> tuple[int, str, str, dict]:
    """Run `Classic Models/Ranking/<name>/demo.py` in this process (see `tests.conftest`)."""
    return run_demo_in_process("Ranking", name, argv)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every file a case refers to, by placeholder name."""
    d = tmp_path_factory.mktemp("bad_input_ranking")
    tiny = write_tiny_seqtxt(d / "tiny")
    (d / "short.txt").write_text("1 1 2\n2 3\n3 4 5\n")  # every user has < 3 items
    (d / "clicks.libfm").write_text("1 0:1 3:1\n0 1:1 4:1\n1 0:1 4:1\n")
    (d / "existing.pt").write_bytes(b"keep me")
    (d / "garbage.pt").write_bytes(b"\x00not a torch file")
    (d / "not_json.json").write_text("{not json")
    (d / "no_runs.json").write_text('{"model": "MMoE"}')
    (d / "bad_runs.json").write_text('{"data": "x", "protocol": "y", "final_by_run": {"MMoE": [1]}}')
    torch.save(checkpoint_payload(demo="SomeOtherModel", models={}), d / "other_model.pt")
    torch.save([1, 2, 3], d / "a_list.pt")
    for name in BEHAVIOUR:  # right model, other data: 3 items, one field
        torch.save(checkpoint_payload(
            demo=name, models={}, args={"data": "seqtxt:elsewhere.txt", "seed": 0, "max_len": 20,
                                        "n_attributes": 3, "max_users": None},
            ids={"item": ["<pad>", "1", "2", "3"]}, fields=torch.arange(4)[:, None]),
            d / f"other_data_{name}.pt")
    return {"tmp": str(d), "tiny": str(tiny), **{p.stem: str(p) for p in d.iterdir() if p.is_file()}}


# (flags, what the one-line error must mention); {name} is a path from `files`
COMMON_CASES = [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-5"], "--batch-size"),
    (["--lr", "nan"], "--lr"),
    (["--device", "tpu"], "tpu"),
    (["--threads", "0"], "--threads"),
    (["--load", "{tmp}/missing.pt"], "no such file"),
    (["--load", "{garbage}"], "not a checkpoint"),
    (["--load", "{a_list}"], "not a checkpoint"),
    (["--load", "{other_model}"], "SomeOtherModel"),
    (["--data", "libfm:{clicks}"], "interaction data"),
    (["--data", "seqtxt:{tmp}/nowhere.txt"], "does not exist"),
    (["--data", "nosuchkind:x"], "unknown data spec"),
]
BEHAVIOUR_CASES = [
    (["--max-len", "0"], "--max-len"),
    (["--dim", "-1"], "--dim"),
    (["--n-attributes", "-1"], "--n-attributes"),
    (["--max-users", "0"], "--max-users"),
    (["--data", "seqtxt:{short}"], "3"),
    (["--data", "seqtxt:{tiny}", "--recommend", "nobody"], "nobody"),
    (["--data", "seqtxt:{tiny}", "--save", "{existing}"], "--overwrite"),
    (["--data", "seqtxt:{tiny}", "--plot-internals", "{tmp}/x.png"], "category"),
    (["--data", "seqtxt:{tiny}", "--load", "{other_data_NAME}"], "items"),
]
SPECIFIC_CASES = [
    ("DIN", ["--mba-lambda", "-1"], "--mba-lambda"),
    ("DIN", ["--activation", "relu"], "--activation"),
    ("DIN", ["--attention-init-bias", "x"], "--attention-init-bias"),
    ("DIEN", ["--aux-weight", "nan"], "--aux-weight"),
    ("DIEN", ["--evolution", "lstm"], "--evolution"),
    ("DIEN", ["--load", "{other_data_DIN}"], "DIN demo"),
    ("MMoE", ["--runs", "0"], "--runs"),
    ("MMoE", ["--n-train", "0"], "--n-train"),
    ("MMoE", ["--correlations", "2.0"], "[-1, 1]"),
    ("MMoE", ["--correlations", "a,b"], "comma-separated"),
    ("MMoE", ["--experiment", "correlation", "--recommend", "U00001"], "needs users"),
    ("MMoE", ["--summarize", "{tmp}/missing.json"], "missing.json"),
    ("MMoE", ["--summarize", "{not_json}"], "final_by_run"),
    ("MMoE", ["--summarize", "{no_runs}"], "final_by_run"),
    ("MMoE", ["--summarize", "{bad_runs}"], "final_by_run"),
    ("MMoE", ["--plot-gates", "{tmp}/g.png", "--save", "{tmp}/g.pt"], "--plot-gates"),
    ("MMoE", ["--experiment", "correlation", "--load", "{other_data_DIN}"], "DIN demo"),
    ("MMoE", ["--experiment", "correlation", "--save", "{existing}"], "--overwrite"),
    ("MMoE", ["--data", "seqtxt:{tiny}"], "synthetic"),
    ("MMoE", ["--recommend", "nobody"], "nobody"),
    ("PLE", ["--levels", "0"], "--levels"),
    ("PLE", ["--n-test", "-3"], "--n-test"),
    ("PLE", ["--plot-gates", "{tmp}/g.png", "--load", "{garbage}"], "--plot-gates"),
    ("PLE", ["--data", "seqtxt:{tiny}"], "synthetic"),
    ("PLE", ["--load", "{other_data_DIEN}"], "DIEN demo"),
    ("PLE", ["--save", "{existing}"], "--overwrite"),
]
CASES = ([(name, flags, want) for name in DEMOS for flags, want in COMMON_CASES]
         + [(name, [f.replace("NAME", name) for f in flags], want) for name in BEHAVIOUR
            for flags, want in BEHAVIOUR_CASES]
         + SPECIFIC_CASES)


@pytest.mark.parametrize("name,flags,want", CASES,
                         ids=[f"{n}:{' '.join(f)}" for n, f, _ in CASES])
def test_bad_input_is_one_line(name, flags, want, files):
    out = Path(files["tmp"]) / f"out_{name}.json"
    save = Path(files["tmp"]) / f"new_{name}.pt"
    argv = [f.format(**files) for f in flags]
    alone = {"--save", "--plot-gates", "--summarize"}  # flags that --save must not join
    extra = [] if alone & set(argv) else ["--save", str(save)]
    code, stdout, stderr, _ = run_demo(name, [*TINY[name], *argv, *extra, "--out", str(out)])
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr[-1500:], stdout[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    assert want in lines[0], lines[0]
    assert not out.exists() and not save.exists()
    assert Path(files["existing"]).read_bytes() == b"keep me"


def test_the_hook_prints_one_line_in_a_real_script(files):
    """The same as above without the in-process shortcut: the excepthook of Utils.io."""
    demo = model_dir("Ranking", "DIN") / "demo.py"
    run = subprocess.run([sys.executable, str(demo), "--data", f"seqtxt:{files['tiny']}",
                          "--recommend", "nobody"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert run.returncode == 2 and run.stderr.strip().startswith("error: --recommend nobody")
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


# ------------------------------------------------------------------ tensors given to the models
din = model_module("Ranking", "DIN")
dien = model_module("Ranking", "DIEN")
mmoe = model_module("Ranking", "MMoE")
ple = model_module("Ranking", "PLE")
VOCAB = (11, 6)  # item id, category; 0 = padding


def _din():
    return din.DIN(item_vocab_sizes=VOCAB, context_vocab_sizes=(4,), dim=4)


def _dien():
    return dien.DIEN(item_vocab_sizes=VOCAB, context_vocab_sizes=(4,), dim=4, mlp_hidden=(8,))


def _mmoe():
    return mmoe.MMoE(sparse_vocab_sizes=(11, 6, 4), dim=4, n_experts=2)


def _ple():
    return ple.PLE(sparse_vocab_sizes=(11, 6, 4), dim=4)


TARGET, HISTORY, CONTEXT = torch.tensor([[3, 2]]), torch.tensor([[[0, 0], [4, 1]]]), torch.tensor([[1]])
TENSOR_CASES = [
    ("DIN target item id = vocab", lambda: _din()(torch.tensor([[11, 1]]), HISTORY, CONTEXT),
     "target, field 0: id 11", "0..10"),
    ("DIN target category = vocab", lambda: _din()(torch.tensor([[3, 6]]), HISTORY, CONTEXT),
     "target, field 1: id 6", "0..5"),
    ("DIN negative history id", lambda: _din()(TARGET, torch.tensor([[[-1, 0], [4, 1]]]), CONTEXT),
     "history, field 0: id -1", "0..10"),
    ("DIN context id", lambda: _din()(TARGET, HISTORY, torch.tensor([[4]])),
     "context, field 0: id 4", "0..3"),
    ("DIN too few fields", lambda: _din()(torch.tensor([[3]]), HISTORY, CONTEXT), "target: expected 2 id fields", ""),
    ("DIEN history id", lambda: _dien()(TARGET, torch.tensor([[[0, 0], [40, 1]]]), CONTEXT),
     "history, field 0: id 40", "0..10"),
    ("DIEN neg_history id", lambda: _dien()(TARGET, HISTORY, CONTEXT,
                                            neg_history=torch.tensor([[[0, 0], [3, 9]]]),
                                            return_aux=True),
     "neg_history, field 1: id 9", "0..5"),
    ("DIEN target id", lambda: _dien()(torch.tensor([[12, 1]]), HISTORY, CONTEXT),
     "target, field 0: id 12", "0..10"),
    ("MMoE sparse id = vocab", lambda: _mmoe()(torch.tensor([[11, 1, 1]])),
     "sparse field 0: id 11", "0..10"),
    ("MMoE negative sparse id", lambda: _mmoe()(torch.tensor([[1, 1, -2]])),
     "sparse field 2: id -2", "0..3"),
    ("PLE sparse id", lambda: _ple()(torch.tensor([[1, 6, 1]])), "sparse field 1: id 6", "0..5"),
    ("PLE shared-bottom sparse id", lambda: mmoe.SharedBottom(sparse_vocab_sizes=(3,), dim=2)(
        torch.tensor([[3]])), "sparse field 0: id 3", "0..2"),
]


@pytest.mark.parametrize("what,call,want,allowed", TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES])
def test_out_of_range_ids_name_input_id_and_range(what, call, want, allowed):
    torch.manual_seed(0)
    with pytest.raises(ValueError) as e:
        call()
    assert want in str(e.value) and allowed in str(e.value), str(e.value)
    assert len(str(e.value).splitlines()) == 1


# ------------------------------------- labels, NaN features and empty batches given to the models
def one_line_error(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def _behaviour_batch(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.stack([torch.randint(1, 11, (B,), generator=g),
                          torch.randint(1, 6, (B,), generator=g)], dim=1)  # (B, 2)
    history = torch.stack([torch.randint(0, 11, (B, 3), generator=g),
                           torch.randint(1, 6, (B, 3), generator=g)], dim=-1)  # (B, 3, 2)
    return target, history, torch.randint(0, 4, (B, 1), generator=g)


@pytest.mark.parametrize("make", [_din, _dien], ids=BEHAVIOUR)
@pytest.mark.parametrize("labels, shown", [
    (torch.tensor([1, 2, 0]), "labels[1] = 2;"),
    (torch.tensor([-1, 0, 1]), "labels[0] = -1;"),
    (torch.tensor([0.0, 1.0, 0.5]), "labels[2] = 0.5;"),
    (torch.tensor([1.0, float("nan"), 0.0]), "labels[1] = nan;"),
])
def test_behaviour_models_reject_labels_outside_0_1(make, labels, shown):
    model = make()
    logits = model(*_behaviour_batch(3))
    message = one_line_error(lambda: model.loss(logits, labels))
    assert shown in message and "expected click labels in {0, 1}" in message, message


@pytest.mark.parametrize("make", [_din, _dien], ids=BEHAVIOUR)
def test_behaviour_models_valid_labels_give_the_plain_log_loss(make):
    model = make()
    logits = model(*_behaviour_batch(4))
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([1., 0, 0, 1]))
    for labels in (torch.tensor([1, 0, 0, 1]), torch.tensor([1.0, 0, 0, 1]),
                   torch.tensor([True, False, False, True])):
        torch.testing.assert_close(model.loss(logits, labels), want, rtol=0, atol=0)


@pytest.mark.parametrize("make", [_din, _dien], ids=BEHAVIOUR)
@pytest.mark.parametrize("training", [False, True])
def test_behaviour_models_empty_batch_gives_empty_logits_and_loss_refuses(make, training):
    model = make().train(training)
    logits = model(*_behaviour_batch(0))
    assert logits.shape == (0,)
    message = one_line_error(lambda: model.loss(logits, torch.zeros(0)))
    assert "the batch is empty (0 rows)" in message and "nothing to average" in message


def test_dien_empty_batch_auxiliary_loss_is_zero_and_loss_refuses():
    model = _dien().train()
    target, history, context = _behaviour_batch(0)
    logits, aux = model(target, history, context, neg_history=history, return_aux=True)
    assert logits.shape == (0,) and aux.item() == 0.0
    assert "nothing to average" in one_line_error(lambda: model.loss(logits, torch.zeros(0), aux))


@pytest.mark.parametrize("make", [_din, _dien], ids=BEHAVIOUR)
def test_behaviour_models_train_on_one_row_and_serve_it(make):
    """Dice normalises a training batch of one with its moving averages (no batch norm error)."""
    model = make().train()
    batch = _behaviour_batch(1)
    model.loss(model(*batch), torch.ones(1)).backward()
    model.eval()
    assert model(*batch).shape == (1,)


# the multi-task models: task 0 binary, task 1 regression, one sparse field and three dense values
def _multitask(name):
    torch.manual_seed(0)
    kw = dict(task_types=("binary", "regression"), sparse_vocab_sizes=(4,), dense_dim=3, dim=2)
    if name == "MMoE":
        return mmoe.MMoE(n_experts=2, **kw)
    if name == "SharedBottom":
        return mmoe.SharedBottom(bottom_hidden=(4,), **kw)
    return ple.PLE(**kw)


MULTITASK = ("MMoE", "SharedBottom", "PLE")


def _multitask_batch(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    sparse, dense = torch.randint(0, 4, (B, 1), generator=g), torch.randn(B, 3, generator=g)
    labels = torch.stack([torch.randint(0, 2, (B,), generator=g).float(),
                          torch.randn(B, generator=g)], dim=1)  # (B, 2)
    return sparse, dense, labels


@pytest.mark.parametrize("name", MULTITASK)
@pytest.mark.parametrize("row, task, value, want", [
    (1, 0, 2.0, "labels[1, 0] = 2.0 (task 0, binary); expected labels in {0, 1}"),
    (3, 0, -1.0, "labels[3, 0] = -1.0 (task 0, binary); expected labels in {0, 1}"),
    (0, 0, 0.5, "labels[0, 0] = 0.5 (task 0, binary); expected labels in {0, 1}"),
    (2, 0, float("nan"), "labels[2, 0] = nan (task 0, binary); expected labels in {0, 1}"),
    (2, 1, float("nan"), "labels[2, 1] = nan (task 1, regression); expected finite labels"),
    (0, 1, float("inf"), "labels[0, 1] = inf (task 1, regression); expected finite labels"),
])
def test_multitask_loss_names_the_task_and_the_bad_label(name, row, task, value, want):
    model = _multitask(name)
    sparse, dense, labels = _multitask_batch(4)
    labels[row, task] = value
    outputs = model(sparse, dense)
    assert one_line_error(lambda: model.loss(outputs, labels)) == want
    mask = torch.ones(4, 2, dtype=torch.bool)
    assert one_line_error(lambda: model.loss(outputs, labels, mask)) == want


@pytest.mark.parametrize("name", MULTITASK)
def test_multitask_labels_the_mask_drops_are_never_read(name):
    """A row outside a task's sample space may hold anything (NaN for "no label", -1): the loss
    equals the one with a valid label there, and valid labels give the plain BCE / MSE."""
    model = _multitask(name)
    sparse, dense, labels = _multitask_batch(6)
    outputs = model(sparse, dense)
    mask = torch.ones(6, 2, dtype=torch.bool)
    mask[3:, 1], mask[0, 0] = False, False
    want = model.loss(outputs, labels, mask)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(outputs[1:, 0], labels[1:, 0])
    mse = torch.nn.functional.mse_loss(outputs[:3, 1], labels[:3, 1])
    torch.testing.assert_close(want, bce + mse)
    labels[3:, 1], labels[0, 0] = float("nan"), -1.0
    loss = model.loss(outputs, labels, mask)
    torch.testing.assert_close(loss, want, rtol=0, atol=0)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MULTITASK)
def test_multitask_mask_of_another_shape_is_refused(name):
    model = _multitask(name)
    sparse, dense, labels = _multitask_batch(4)
    message = one_line_error(lambda: model.loss(model(sparse, dense), labels,
                                                torch.ones(4, 3, dtype=torch.bool)))
    assert message == "mask must have the shape of labels (4, 2), got (4, 3)"


@pytest.mark.parametrize("name", MULTITASK)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_multitask_non_finite_dense_value_names_the_field(name, bad):
    model = _multitask(name)
    sparse, dense, _ = _multitask_batch(4)
    dense[1, 2] = bad
    assert one_line_error(lambda: model(sparse, dense)) == (
        f"dense field 2: row 1 holds {bad}; expected finite values")


@pytest.mark.parametrize("name", MULTITASK)
def test_multitask_dense_check_is_skipped_while_compiling(name, monkeypatch):
    model = _multitask(name)
    sparse, dense, _ = _multitask_batch(4)
    checked = model(sparse, dense)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(model(sparse, dense), checked, rtol=0, atol=0)
    dense[0, 0] = float("nan")
    assert model(sparse, dense)[0].isnan().all()


@pytest.mark.parametrize("name", MULTITASK)
def test_multitask_empty_batch_gives_empty_outputs_and_loss_refuses(name):
    model = _multitask(name)
    sparse, dense, labels = _multitask_batch(0)
    outputs = model(sparse, dense)
    assert outputs.shape == (0, 2)
    for mask in (None, torch.ones(0, 2, dtype=torch.bool)):
        message = one_line_error(lambda mask=mask: model.loss(outputs, labels, mask))
        assert message == "loss: the batch is empty (0 rows); there is nothing to average"
