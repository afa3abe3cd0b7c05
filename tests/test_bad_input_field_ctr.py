"""Bad input to the field-CTR demos (Wide&Deep, DeepFM, DCN-V2, AutoInt, FinalMLP) and their models: every
case ends in ONE line `error: <what was wrong, what was expected>` with status 2 — or, for a
malformed line among good ones, a skip the loader counts and prints — never a traceback, and
nothing is written to --out or --save.

The demos run in this process (`tests.test_field_ctr.run_demo`, which turns an input error into
the line Utils.io's hook prints); one case (marked slow) runs as a real subprocess to check that
hook itself.

The models themselves never answer silently: a label outside {0, 1}, a NaN or inf dense value, a
training batch of one row with batch norm are one-line ValueErrors; an empty batch gives empty
logits and its loss is refused.
"""

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, model_module
from tests.test_field_ctr import TINY, run_demo, write_toy_frappe
from Utils.demo_io import checkpoint_payload

CONFIGS = {"WideDeep": "WideDeepConfig", "DeepFM": "DeepFMConfig", "DCNv2": "DCNv2Config",
           "AutoInt": "AutoIntConfig", "FinalMLP": "FinalMLPConfig"}

# One row per case: (id, demo, argv with {data} {dir} {ckpt} placeholders, files to write
# {name: text}, what the error line must contain).
TOY = "libfm:{toy}"
CASES = [
    # flags, checked at parse time
    ("epochs 0", "DeepFM", ["--epochs", "0"], {}, "--epochs: 0 is not allowed"),
    ("epochs negative", "WideDeep", ["--epochs", "-3"], {}, "expected a whole number >= 1"),
    ("batch size 0", "DCNv2", ["--batch-size", "0"], {}, "--batch-size"),
    ("lr nan", "AutoInt", ["--lr", "nan"], {}, "expected a finite number > 0"),
    ("lr negative", "DeepFM", ["--lr=-0.001"], {}, "expected a finite number > 0"),
    ("device tpu", "DeepFM", ["--device", "tpu"], {}, "tpu"),
    ("threads 0", "WideDeep", ["--threads", "0"], {}, "--threads"),
    ("dim 0", "DeepFM", ["--dim", "0"], {}, "--dim"),
    ("dropout 1.5", "DCNv2", ["--dropout", "1.5"], {}, "expected 0 <= p < 1"),
    ("hidden not numbers", "DeepFM", ["--hidden", "64,x"], {}, "--hidden"),
    ("hidden width 0", "AutoInt", ["--hidden", "64,0"], {}, "layer widths must be >= 1"),
    ("embedding l2 negative", "WideDeep", ["--embedding-l2", "-1"], {}, "--embedding-l2"),
    ("holdout 0", "DeepFM", ["--holdout", "0"], {}, "expected 0 < fraction < 1"),
    ("lr schedule unknown", "FinalMLP", ["--lr-schedule", "cosine"], {}, "invalid choice: 'cosine'"),
    ("grad clip 0", "DeepFM", ["--grad-clip", "0"], {}, "expected a finite number > 0"),
    ("holdout 1.2", "DeepFM", ["--holdout", "1.2"], {}, "expected 0 <= p < 1"),
    ("cross layers 0", "DCNv2", ["--cross-layers", "0"], {}, "--cross-layers"),
    ("experts 0", "DCNv2", ["--experts", "0"], {}, "--experts"),
    ("cross rank negative", "DCNv2", ["--cross-rank", "-2"], {}, "--cross-rank"),
    ("structure unknown", "DCNv2", ["--structure", "diagonal"], {}, "invalid choice"),
    ("heads that do not divide the streams", "FinalMLP", ["--heads", "3"], {},
     "num_heads must be >= 1 and divide both stream widths 8 and 64, got 3"),
    ("gate context unknown", "FinalMLP", ["--heads", "4", "--gate1-context", "age"], {},
     "--gate1-context age: no field age"),
    ("heads 0", "FinalMLP", ["--heads", "0"], {}, "--heads"),
    ("heads 0", "AutoInt", ["--heads", "0"], {}, "--heads"),
    ("att dim text", "AutoInt", ["--att-dim", "x"], {}, "--att-dim"),
    ("unknown flag", "DeepFM", ["--frobnicate"], {}, "unrecognized arguments"),
    ("cross of an unknown field", "WideDeep", ["--data", TOY, "--cross", "user*colour"], {},
     "--cross user*colour: no field named 'colour'"),
    # data specs and file contents
    ("unknown spec", "DeepFM", ["--data", "csv:x.csv"], {}, "unknown data spec"),
    ("libfm path missing", "DeepFM", ["--data", "libfm:{dir}/nothing"], {}, "does not exist"),
    ("synthetic seed text", "AutoInt", ["--data", "synthetic:abc"], {}, "integer seed"),
    ("sequence data", "DeepFM", ["--data", "seqtxt:{dir}/seq.txt"],
     {"seq.txt": "1 1 2 3 4\n2 2 3 4 5\n3 1 3 5 2\n"}, "the DeepFM demo reads click-through"),
    ("libfm folder without libfm files", "DCNv2", ["--data", "libfm:{dir}/empty"],
     {"empty/readme.txt": "nothing here\n"}, "no *.libfm files"),
    ("libfm every line unparsable", "DeepFM", ["--data", "libfm:{dir}/bad"],
     {"bad/x.test.libfm": "yes a b\nno c d\n"}, "no usable lines"),
    ("libfm values not one-hot", "WideDeep", ["--data", "libfm:{dir}/vals"],
     {"vals/x.test.libfm": "1 3:x 5:1\n-1 4:0 6:1\n"}, "no usable lines"),
    ("libfm without a test file", "DeepFM", ["--data", "libfm:{dir}/notest"],
     {"notest/x.validation.libfm": "1 0:1 5:1\n-1 1:1 6:1\n"}, "needs a test part"),
    ("libfm test file all malformed", "DeepFM", ["--data", "libfm:{dir}/emptytest"],
     {"emptytest/x.validation.libfm": "1 0:1 5:1\n-1 1:1 6:1\n" * 20,
      "emptytest/x.test.libfm": "1 3:x 5:1\n"}, "the test split has no rows"),
    ("libfm held-out slice empty", "AutoInt", ["--data", "libfm:{dir}/tiny"],
     {"tiny/x.validation.libfm": "1 0:1 5:1\n-1 1:1 6:1\n",
      "tiny/x.test.libfm": "1 0:1 5:1\n-1 1:1 6:1\n"}, "the valid split has no rows"),
    ("libfm only clicks", "DCNv2", ["--data", "libfm:{dir}/clicks"],
     {"clicks/x.validation.libfm": "1 0:1 5:1\n1 1:1 6:1\n" * 20,
      "clicks/x.test.libfm": "1 0:1 5:1\n-1 1:1 6:1\n"}, "every valid row has label 1"),
    # --save / --load / --recommend
    ("save over an existing file", "DeepFM", ["--data", TOY, "--save", "{dir}/exists.pt"],
     {"exists.pt": "keep me\n"}, "the file exists; pass --overwrite"),
    ("load a missing file", "DeepFM", ["--data", TOY, "--load", "{dir}/none.pt"], {},
     "no such file"),
    ("load a text file", "AutoInt", ["--data", TOY, "--load", "{dir}/notes.pt"],
     {"notes.pt": "not a model\n"}, "not a checkpoint written by --save"),
    ("load another demo's file", "DeepFM", ["--data", TOY, "--load", "{ckpt:WideDeep demo}"], {},
     "written by the WideDeep demo's --save; expected a file written by the DeepFM demo's"),
    ("load a file of other data", "DCNv2", ["--data", TOY, "--load", "{ckpt:DCNv2 demo}"], {},
     "expected the data it was trained on"),
    ("load weights of another shape", "DeepFM", ["--data", TOY, "--load", "{ckpt:DeepFM demo:fit}"],
     {}, "the saved weights do not fit this model"),
    ("recommend an unknown user", "DeepFM", ["--data", TOY, "--recommend", "nobody"], {},
     "--recommend nobody: no such user"),
    ("recommend a code past the last user", "AutoInt", ["--data", TOY, "--recommend", "#99"], {},
     "expected a raw user id as in the data file"),
    ("recommend without a user field", "DeepFM", ["--data", "libfm:{dir}/plain",
                                                 "--recommend", "1"],
     {"plain/x.validation.libfm": "1 0:1 5:1\n-1 1:1 6:1\n" * 20,
      "plain/x.test.libfm": "1 0:1 5:1\n-1 1:1 6:1\n" * 5}, "no field named 'user'"),
]


def fake_checkpoint(path, spec, toy_dims):
    """A --save file without training: {ckpt:DEMO} has other data's field sizes; {ckpt:DEMO:fit}
    has this data's sizes but no weights."""
    demo, _, fit = spec.partition(":")
    torch.save(checkpoint_payload(
        demo=demo.removesuffix(" demo"), models={}, args={"data": "libfm:elsewhere", "seed": 0},
        flags=[], field_dims=toy_dims if fit else [3, 3], dense_dim=0, epochs=1, metrics={},
        valid_auc=0.5) | {"models": {"model": {"class": "?", "config": {}, "state": {}}}}, path)
    return str(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    import Datasets

    folder = write_toy_frappe(tmp_path_factory.mktemp("field_ctr_bad") / "frappe_toy")
    return folder, Datasets.load(f"libfm:{folder}").field_dims


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, toy):
    _, demo, argv, files, expected = case
    folder, dims = toy
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    args = []
    for a in argv:
        if a.startswith("{ckpt:"):
            a = fake_checkpoint(tmp_path / "fake.pt", a[6:-1], dims)
        args.append(a.replace("{toy}", str(folder)).replace("{dir}", str(tmp_path)))
    out_file = tmp_path / "result.json"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    tiny = TINY if "--epochs" not in args else []
    status, stdout, stderr = run_demo(demo, [*args, *tiny, "--out", str(out_file)])
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert status == 2, (stdout[-1500:], stderr[-1500:])
    assert len(errors) == 1 and expected in errors[0], stderr[-1500:]
    assert "Traceback" not in stderr and "RESULT" not in stdout
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "a failed run wrote or changed a file"


@pytest.mark.parametrize("demo", list(CONFIGS))
@pytest.mark.parametrize("sparse, message", [
    ([[11, 1, 1]], "sparse field 0: id 11 is out of range; expected 0..10"),  # the next field's row
    ([[1, 6, 1]], "sparse field 1: id 6 is out of range; expected 0..5"),
    ([[1, 1, -1]], "sparse field 2: id -1 is out of range; expected 0..3"),
    ([[1.0, 1.0, 1.0]], "sparse must be (B, 3) int64"),
    ([[1, 1]], "sparse must be (B, 3) int64"),
])
def test_bad_tensor_is_a_one_line_value_error(demo, sparse, message):
    """The models themselves: field_dims (11, 6, 4); each bad tensor a ValueError of one line."""
    M = model_module("Ranking", demo)
    model = getattr(M, demo)(getattr(M, CONFIGS[demo])(field_dims=(11, 6, 4))).eval()
    with pytest.raises(ValueError) as info:
        model(torch.tensor(sparse))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_malformed_line_among_good_ones_is_counted_and_skipped(tmp_path):
    folder = write_toy_frappe(tmp_path / "frappe_toy")
    test_file = folder / "toy.test.libfm"
    test_file.write_text(test_file.read_text() + "1 3:x 5:1\n")
    status, stdout, stderr = run_demo("DeepFM", ["--data", f"libfm:{folder}", *TINY])
    assert status == 0 and "Traceback" not in stderr
    assert "malformed" in stdout and "kept 400" in stdout.replace(",", "")


@pytest.mark.slow  # a fresh interpreter imports torch: several seconds
def test_the_real_command_line_prints_one_line_and_exits_2(tmp_path):
    """Utils.io's hook, not the in-process stand-in: a subprocess, status 2, one stderr line."""
    folder = write_toy_frappe(tmp_path / "frappe_toy")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "Classic Models/Ranking/DeepFM/demo.py"),
                           "--data", f"libfm:{folder}", *TINY, "--recommend", "nobody",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: --recommend nobody: no such user") and not out.exists()


# ------------------------------------------ values the models used to take silently (labels, NaN)
def ctr_model(demo, **kw):
    """A small model of `demo`: field_dims (11, 6, 4), two dense fields, one hidden layer."""
    M = model_module("Ranking", demo)
    hidden = {"AutoInt": {"dnn_hidden": (8,)},
              "FinalMLP": {"hidden1": (8,), "hidden2": (4,), "gate_hidden": (8,),
                           "gate1_fields": (0,), "gate2_fields": (1,), "num_heads": 2},
              }.get(demo, {"hidden": (8,)})
    torch.manual_seed(0)
    return getattr(M, demo)(getattr(M, CONFIGS[demo])(field_dims=(11, 6, 4), dense_dim=2,
                                                      **hidden, **kw))


def ctr_batch(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, v, (B,), generator=g) for v in (11, 6, 4)], dim=1)
    return sparse, torch.rand(B, 2, generator=g)


def one_line_error(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("demo", list(CONFIGS))
@pytest.mark.parametrize("labels, shown", [
    (torch.tensor([1, 2, 0]), "labels[1] = 2;"),
    (torch.tensor([0, -1, 1]), "labels[1] = -1;"),
    (torch.tensor([0.0, 0.5, 1.0]), "labels[1] = 0.5;"),
    (torch.tensor([1.0, 0.0, float("nan")]), "labels[2] = nan;"),
])
def test_loss_rejects_labels_outside_0_1_naming_the_value(demo, labels, shown):
    model = ctr_model(demo)
    logits = model(*ctr_batch(3))
    message = one_line_error(lambda: model.loss(logits, labels))
    assert shown in message and "expected click labels in {0, 1}" in message, message


@pytest.mark.parametrize("demo", list(CONFIGS))
def test_valid_labels_of_any_dtype_give_the_plain_log_loss(demo):
    """The checks change no number: int, float and bool 0/1 labels give the same log loss as
    torch's BCE-with-logits (DCN-V2 adds its cross_l2 = 0 regulariser: nothing)."""
    model = ctr_model(demo)
    logits = model(*ctr_batch(4))
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([1., 0, 0, 1]))
    for labels in (torch.tensor([1, 0, 0, 1]), torch.tensor([1.0, 0, 0, 1]),
                   torch.tensor([True, False, False, True])):
        torch.testing.assert_close(model.loss(logits, labels), want, rtol=0, atol=0)


@pytest.mark.parametrize("demo", list(CONFIGS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_dense_value_is_a_value_error_naming_the_field(demo, bad):
    model = ctr_model(demo)
    sparse, dense = ctr_batch(3)
    dense[2, 1] = bad
    message = one_line_error(lambda: model(sparse, dense))
    assert message == f"dense field 1: row 2 holds {bad}; expected finite values", message


@pytest.mark.parametrize("demo", list(CONFIGS))
def test_dense_check_is_skipped_while_compiling_and_changes_no_number(demo, monkeypatch):
    """As the id check: an exported graph cannot raise, so the check steps aside while
    torch.compiler.is_compiling(); with valid values the logits are the same either way."""
    model = ctr_model(demo)
    model.eval()
    sparse, dense = ctr_batch(5)
    checked = model(sparse, dense)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(model(sparse, dense), checked, rtol=0, atol=0)
    dense[0, 0] = float("nan")
    assert model(sparse, dense)[0].isnan()  # no check: the NaN goes through


@pytest.mark.parametrize("demo", list(CONFIGS))
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_empty_batch_gives_empty_logits_and_loss_says_there_is_nothing(demo, batch_norm, training):
    model = ctr_model(demo, batch_norm=batch_norm)
    model.train(training)
    logits = model(*ctr_batch(0))
    assert logits.shape == (0,) and logits.dtype == torch.float32
    message = one_line_error(lambda: model.loss(logits, torch.zeros(0)))
    assert "the batch is empty (0 rows)" in message and "nothing to average" in message


@pytest.mark.parametrize("demo", list(CONFIGS))
def test_batch_norm_one_row_fails_clearly_in_training_and_serves_in_eval(demo):
    model = ctr_model(demo, batch_norm=True)
    sparse, dense = ctr_batch(2)
    model.train()
    model(sparse, dense)  # two rows train, and move the running statistics
    message = one_line_error(lambda: model(sparse[:1], dense[:1]))
    assert message.startswith("batch_norm=True needs at least 2 rows per batch in training mode, "
                              "got 1") and "model.eval()" in message, message
    model.eval()
    one = model(sparse[:1], dense[:1])  # serving one row
    assert one.shape == (1,) and torch.isfinite(one).all()
    torch.testing.assert_close(one, model(sparse, dense)[:1])


@pytest.mark.parametrize("demo", list(CONFIGS))
def test_one_row_trains_without_batch_norm(demo):
    model = ctr_model(demo, batch_norm=False)
    model.train()
    sparse, dense = ctr_batch(1)
    model.loss(model(sparse, dense), torch.ones(1)).backward()
