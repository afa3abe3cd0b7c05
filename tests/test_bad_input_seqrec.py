"""Bad input to the sequence recall demos (SASRec, HSTU, TIGER) and their models: every case ends in
one line `error: <what was wrong, what was expected>` with exit status 2, no traceback, and no
partial output file (--out, --save, exports).

The demos run in-process (`run_demo`): an uncaught input error (`ValueError`, `DataError`,
`OSError`) is printed the way `Utils.io`'s error hook prints it in a real process, which one
subprocess case checks end to end. Model-level cases (out-of-range ids) call the model directly.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from Utils.io import INPUT_ERRORS, ROOT

DEMOS = {name: ROOT / "Classic Models" / "Recall" / name / "demo.py"
         for name in ("SASRec", "HSTU", "TIGER")}
# a tiny model and one quick epoch, so a case that gets as far as training stays fast
TINY = {"SASRec": ["--dim", "8", "--blocks", "1", "--max-len", "8", "--epochs", "1", "--threads", "1"],
        "HSTU": ["--dim", "8", "--blocks", "1", "--max-len", "8", "--epochs", "1", "--negatives", "8",
                 "--threads", "1"],
        "TIGER": ["--preset", "small", "--rq-steps", "5", "--steps", "1", "--round-steps", "1",
                  "--embed-dim", "8", "--eval-users", "10", "--batch-size", "32", "--threads", "1"]}


def run_demo(name: str, argv: list[str]) -> tuple[int, str, str]:
    """Run a demo in this process: (exit status, stdout, stderr)."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    old_argv = sys.argv
    sys.argv = [str(DEMOS[name]), *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(DEMOS[name]), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except INPUT_ERRORS as e:  # what Utils.io.install_error_hook prints outside pytest
                print(f"error: {e}", file=sys.stderr)
                code = 2
    finally:
        sys.argv = old_argv
    return code, out.getvalue(), err.getvalue()


def write_seqtxt(path: Path, n_users: int = 40, n_items: int = 30, attributes: bool = False) -> Path:
    """`user item item ...` lines with a planted +3 transition; optional *_item2attributes.json."""
    lines = []
    for u in range(1, n_users + 1):
        start, n = (7 * u) % n_items, 4 + u % 6
        lines.append(" ".join([str(u)] + [str((start + 3 * k) % n_items + 1) for k in range(n)]))
    path.write_text("\n".join(lines) + "\n")
    if attributes:
        attrs = {str(i): [i % 5 + 1, 10 + i % 7] for i in range(1, n_items + 1)}
        path.with_name(path.stem + "_item2attributes.json").write_text(json.dumps(attrs))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_input")
    f = {"seq": write_seqtxt(d / "seq.txt"),
         "other": write_seqtxt(d / "other.txt", n_users=30, n_items=25),
         "text": write_seqtxt(d / "text.txt", attributes=True)}
    (d / "short.txt").write_text("1 5 6\n2 7\n3 8 9\n")  # every user has fewer than 3 items
    f["short"] = d / "short.txt"
    (d / "empty.txt").write_text("")
    f["empty"] = d / "empty.txt"
    (d / "words.txt").write_text("alice book pen\nbob pen ink\n")
    f["words"] = d / "words.txt"
    (d / "ctr.libfm").write_text("".join(f"{i % 2} {i % 3}:1 {3 + i % 4}:1\n" for i in range(20)))
    f["ctr"] = d / "ctr.libfm"
    (d / "garbage.pt").write_bytes(b"not a checkpoint at all")
    f["garbage"] = d / "garbage.pt"
    (d / "existing.pt").write_bytes(b"keep me")
    f["existing"] = d / "existing.pt"
    for name in ("SASRec", "HSTU"):
        code, out, err = run_demo(name, ["--data", f"seqtxt:{f['seq']}", *TINY[name],
                                         "--save", str(d / f"{name}.pt")])
        assert code == 0, err[-2000:]
        f[name] = d / f"{name}.pt"
    f["dir"] = d
    return f


# (demo, argv with {placeholders} from `files`, a phrase the one-line message must contain)
CLI_CASES = [
    # flags, checked at parse time
    ("SASRec", ["--epochs", "0"], "--epochs"),
    ("SASRec", ["--epochs", "-2"], "--epochs"),
    ("SASRec", ["--batch-size", "0"], "--batch-size"),
    ("SASRec", ["--lr", "nan"], "--lr"),
    ("SASRec", ["--lr", "0"], "--lr"),
    ("SASRec", ["--device", "tpu"], "device"),
    ("SASRec", ["--dim", "0"], "--dim"),
    ("SASRec", ["--max-len", "-3"], "--max-len"),
    ("SASRec", ["--blocks", "two"], "--blocks"),
    ("SASRec", ["--heads", "0"], "--heads"),
    ("SASRec", ["--ffn-dim", "-1"], "--ffn-dim"),
    ("SASRec", ["--patience", "0"], "--patience"),
    ("SASRec", ["--time-budget", "-1"], "--time-budget"),
    ("SASRec", ["--no-such-flag"], "unrecognized"),
    ("HSTU", ["--epochs", "0"], "--epochs"),
    ("HSTU", ["--temperature", "0"], "--temperature"),
    ("HSTU", ["--qk-dim", "0"], "--qk-dim"),
    ("HSTU", ["--negatives", "-5"], "--negatives"),
    ("HSTU", ["--loss", "bce"], "--loss"),
    ("TIGER", ["--epochs", "0"], "--epochs"),
    ("TIGER", ["--beam", "0"], "--beam"),
    ("TIGER", ["--steps", "0"], "--steps"),
    ("TIGER", ["--round-steps", "-1"], "--round-steps"),
    ("TIGER", ["--max-history", "0"], "--max-history"),
    ("TIGER", ["--rq-lr", "inf"], "--rq-lr"),
    ("TIGER", ["--test-users", "0"], "--test-users"),
    ("TIGER", ["--ramp", "-1"], "--ramp"),
    ("TIGER", ["--dead-code-every", "-5"], "--dead-code-every"),
    ("TIGER", ["--resume"], "--resume"),
    ("TIGER", ["--load", "{SASRec}", "--resume"], "only one"),
    # data specs and file contents
    ("SASRec", ["--data", "bogus:x"], "unknown data spec"),
    ("SASRec", ["--data", "seqtxt:{dir}/missing.txt"], "does not exist"),
    ("SASRec", ["--data", "synthetic:abc"], "seed"),
    ("SASRec", ["--data", "libfm:{ctr}"], "SASRec"),
    ("HSTU", ["--data", "libfm:{ctr}"], "HSTU"),
    ("TIGER", ["--data", "libfm:{ctr}"], "TIGER"),
    ("SASRec", ["--data", "seqtxt:{short}"], "fewer than"),
    ("HSTU", ["--data", "seqtxt:{empty}"], "no usable lines"),
    ("SASRec", ["--data", "seqtxt:{words}"], "no usable lines"),
    ("TIGER", ["--data", "seqtxt:{seq}"], "item text"),  # ids only: TIGER's IDs need text
    ("HSTU", ["--data", "seqtxt:{seq}", "--dropout", "1.5"], "dropout"),
    # save / load / recommend / export
    ("SASRec", ["--data", "seqtxt:{seq}", "--save", "{existing}"], "--overwrite"),
    ("TIGER", ["--data", "seqtxt:{text}", "--save", "{existing}"], "--overwrite"),
    ("SASRec", ["--data", "seqtxt:{seq}", "--load", "{dir}/none.pt"], "no such file"),
    ("SASRec", ["--data", "seqtxt:{seq}", "--load", "{garbage}"], "not a checkpoint"),
    ("HSTU", ["--data", "seqtxt:{seq}", "--load", "{garbage}"], "not a checkpoint"),
    ("SASRec", ["--data", "seqtxt:{seq}", "--load", "{HSTU}"], "HSTU"),
    ("TIGER", ["--data", "seqtxt:{text}", "--load", "{SASRec}"], "SASRec"),
    ("SASRec", ["--data", "seqtxt:{other}", "--load", "{SASRec}"], "other data"),
    ("HSTU", ["--data", "seqtxt:{other}", "--load", "{HSTU}"], "other data"),
    ("SASRec", ["--data", "seqtxt:{seq}", "--recommend", "999"], "no such user"),
    ("HSTU", ["--data", "seqtxt:{seq}", "--recommend", "alice"], "no such user"),
    ("TIGER", ["--data", "seqtxt:{text}", "--recommend", "999"], "no such user"),
    ("SASRec", ["--data", "seqtxt:{seq}", "--export-vectors", "{dir}/v.txt"], ".npz"),
    ("TIGER", ["--data", "seqtxt:{text}", "--export-vectors", "{dir}/v.csv"], ".npz"),
    ("SASRec", ["--data", "seqtxt:{seq}", "--export-onnx", "{dir}/m.txt"], ".onnx"),
]


@pytest.mark.parametrize("demo, argv, phrase", CLI_CASES,
                         ids=[f"{d}:{' '.join(a)}" for d, a, _ in CLI_CASES])
def test_bad_input_is_one_line_and_writes_nothing(demo, argv, phrase, files):
    argv = [a.format(**files) for a in argv]
    out_json = files["dir"] / f"out_{abs(hash((demo, *argv)))}.json"
    before = files["existing"].read_bytes()
    code, out, err = run_demo(demo, [*TINY[demo], *argv, "--out", str(out_json)])  # last flag wins
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, (code, err[-1500:])
    assert lines and lines[-1].startswith("error: "), err[-1500:]
    assert phrase.lower() in lines[-1].lower(), lines[-1]
    assert "Traceback" not in err
    assert not out_json.exists()  # no partial --out
    assert files["existing"].read_bytes() == before  # --save never overwrote without --overwrite
    assert not list(files["dir"].glob("v.*")) and not list(files["dir"].glob("m.*"))


def _models():
    from tests.conftest import load_module, model_module

    sas = model_module("Recall", "SASRec")
    hs = model_module("Recall", "HSTU")
    tg = load_module("Classic Models/Recall/TIGER/model.py", "tiger_model_test")
    torch.manual_seed(0)
    s = sas.SASRec(sas.SASRecConfig(n_items=10, max_len=5, dim=8, n_heads=1)).eval()
    h = hs.HSTU(hs.HSTUConfig(n_items=10, max_len=5, dim=8, n_blocks=1, n_heads=1, qk_dim=4,
                              v_dim=4, n_negatives=4)).eval()
    t = tg.TIGER(tg.TIGERConfig(code_sizes=(3, 3, 2), n_user_buckets=4, max_history=4, d_model=8,
                                n_heads=1, d_head=8, d_ff=8, n_encoder_layers=1,
                                n_decoder_layers=1))
    sids = torch.tensor([[i // 3 % 3, i % 3, i // 9] for i in range(10)])
    t.set_catalogue(sids)
    return s, h, t.eval()


L = torch.tensor
# (model, call, the phrase naming the input, the offending id)
TENSOR_CASES = [
    ("sasrec", lambda s, h, t: s(L([[0, 3, 11]])), "history", "11"),
    ("sasrec", lambda s, h, t: s(L([[0, -1, 2]])), "history", "-1"),
    ("sasrec", lambda s, h, t: s.score(L([[1, 2, 99]])), "history", "99"),
    ("sasrec", lambda s, h, t: s.loss(L([[1, 2, 3]]), L([[2, 3, 12]])), "targets", "12"),
    ("sasrec", lambda s, h, t: s.loss(L([[1, 2]]), L([[2, 3]]), negatives=L([[0, 4]])), "negatives", "0"),
    ("hstu", lambda s, h, t: h(L([[0, 3, 11]])), "history", "11"),
    ("hstu", lambda s, h, t: h.score(L([[-4, 1]])), "history", "-4"),
    ("hstu", lambda s, h, t: h.loss(L([[1, 2]]), L([[2, 30]])), "targets", "30"),
    ("tiger", lambda s, h, t: t.generate(user=L([1]), history=L([[0, 11]])), "history", "11"),
    ("tiger", lambda s, h, t: t.loss(user=L([1]), history=L([[1, 2]]), target=L([0])), "target", "0"),
    ("tiger", lambda s, h, t: t.score_items(user=L([1]), history=L([[1, 2]]), items=L([[3, 10, 11]])),
     "items", "11"),
]


@pytest.mark.parametrize("model, call, name, bad", TENSOR_CASES,
                         ids=[f"{m}-{n}-{b}" for m, _, n, b in TENSOR_CASES])
def test_out_of_range_ids_name_the_input_the_id_and_the_range(model, call, name, bad):
    s, h, t = _models()
    with pytest.raises(ValueError) as e:
        call(s, h, t)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(name) and f"id {bad};" in msg and ".." in msg, msg


def test_the_error_hook_prints_one_line_in_a_real_process(files):
    """End to end in a subprocess (the installed excepthook, exit status 2, no traceback)."""
    r = subprocess.run([sys.executable, str(DEMOS["SASRec"]), "--data", f"seqtxt:{files['seq']}",
                        "--load", str(files["garbage"]), "--threads", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: --load")

