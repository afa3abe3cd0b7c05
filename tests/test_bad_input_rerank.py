"""Bad input to the re-ranking demos (MMR, DPP, PRM, Calibration, Constrained) and their models: every case ends in one line
`error: <what was wrong, what was expected>` with exit status 2, no traceback and no partial output
file; every model guard is a ValueError naming the argument and the allowed range.

The demos run in-process (`main(argv)`, as the script does) on a tiny sequence file written here;
`run_demo` reproduces what the installed error hook prints (Utils.io.install_error_hook), and one
subprocess case checks the hook itself. The helpers here are shared by the round-trip tests in
test_mmr.py, test_dpp.py and test_prm.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, load_module
from Utils.io import INPUT_ERRORS
from Utils.loops import first_stage as FS

DEMOS = {name: f"Classic Models/Re-ranking/{name}/demo.py"
         for name in ("MMR", "DPP", "PRM", "Calibration", "Constrained")}


def demo_module(name: str):
    return load_module(DEMOS[name], f"{name.lower()}_demo")


def write_seqtxt(folder: Path, *, n_users: int = 80, n_items: int = 40, attributes: bool = True,
                 short_users: int = 0, name: str = "Tiny") -> Path:
    """A small `user item item ...` file: 4 item categories (item % 4), each user mostly in one.
    With `attributes`, a `<name>_item2attributes.json` beside it gives each item its category."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        fav = rng.integers(4)
        length = 2 if u <= short_users else int(rng.integers(6, 11))
        pool = [i for i in range(1, n_items + 1) if i % 4 == fav]
        seq = [int(rng.choice(pool)) if rng.random() < 0.8 else int(rng.integers(1, n_items + 1))
               for _ in range(length)]
        lines.append(" ".join(map(str, [u, *seq])))
    path = folder / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    if attributes:
        attrs = {str(i): [i % 4 + 1] for i in range(1, n_items + 1)}
        (folder / f"{name}_item2attributes.json").write_text(json.dumps(attrs))
    return path


# flags that make a demo run in about a second on the tiny file
FAST = {
    "MMR": ["--epochs", "1", "--candidates", "20", "--k", "5", "--sweep", "0.5", "--threads", "1"],
    "DPP": ["--epochs", "1", "--candidates", "20", "--k", "5", "--sweep", "0.5", "--threads", "1"],
    "PRM": ["--epochs", "2", "--ranker-epochs", "1", "--candidates", "20", "--k", "5",
            "--d-model", "8", "--heads", "2", "--threads", "1"],
    "Calibration": ["--epochs", "1", "--candidates", "20", "--k", "5", "--sweep", "0.5",
                    "--threads", "1"],
    "Constrained": ["--epochs", "1", "--candidates", "20", "--k", "5", "--sweep", "0.5",
                    "--threads", "1"],
}


def run_demo(name: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) in-process; an input error is printed as the installed hook prints it."""
    demo = demo_module(name)
    hook = sys.excepthook
    code = 0
    try:
        demo.main(argv)
    except SystemExit as e:
        code = e.code
    except INPUT_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    finally:
        sys.excepthook = hook  # parse_args installs the one-line hook; keep pytest's
    out, err = capsys.readouterr()
    return code, out, err


def result_of(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, out[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The data and files the cases point at, written once."""
    root = tmp_path_factory.mktemp("rerank_bad")
    f = {
        "tiny": write_seqtxt(root / "tiny"),
        "ids_only": write_seqtxt(root / "ids", attributes=False),
        "other": write_seqtxt(root / "other", n_items=36),
        "short": write_seqtxt(root / "short", short_users=80),
        "some_short": write_seqtxt(root / "some_short", short_users=3),
        "small": write_seqtxt(root / "small", n_users=40, n_items=14),
    }
    empty = root / "empty" / "Empty.txt"
    empty.parent.mkdir()
    empty.write_text("")
    f["empty"] = empty
    libfm = root / "ctr.libfm"
    libfm.write_text("".join(f"{i % 2} {i % 5}:1 {10 + i % 3}:1 {20 + i % 4}:1\n" for i in range(30)))
    f["libfm"] = libfm
    garbage = root / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    f["garbage"] = garbage
    foreign = root / "foreign.pt"
    torch.save({"a": torch.zeros(2)}, foreign)
    f["foreign"] = foreign
    existing = root / "existing.pt"
    existing.write_text("keep me\n")
    f["existing"] = existing
    f["folder"] = root / "a_folder"
    f["folder"].mkdir()
    return f


@pytest.fixture(scope="module")
def mmr_checkpoint(files, tmp_path_factory):
    """A checkpoint written by the MMR demo's --save on the tiny file."""
    path = tmp_path_factory.mktemp("rerank_ckpt") / "mmr.pt"
    demo = demo_module("MMR")
    hook = sys.excepthook
    try:
        demo.main(["--data", f"seqtxt:{files['tiny']}", *FAST["MMR"], "--save", str(path)])
    finally:
        sys.excepthook = hook
    return path


# (demo, flags, expected words in the error): {name} is a path from `files`
CASES = [
    # flags, checked at parse time
    ("DPP", ["--batch-size", "0"], "--batch-size"),
    ("MMR", ["--batch-size", "-5"], "--batch-size"),
    ("PRM", ["--batch-size", "0"], "--batch-size"),
    ("MMR", ["--epochs", "0"], "--epochs"),
    ("PRM", ["--epochs", "0"], "--epochs"),
    ("DPP", ["--lr", "nan"], "--lr"),
    ("PRM", ["--lr", "-1"], "--lr"),
    ("MMR", ["--device", "tpu"], "--device"),
    ("MMR", ["--threads", "0"], "--threads"),
    ("PRM", ["--threads", "two"], "--threads"),
    ("MMR", ["--lam", "1.5"], "--lam"),
    ("MMR", ["--lam", "x"], "--lam"),
    ("DPP", ["--theta", "1"], "--theta"),
    ("DPP", ["--theta", "-0.1"], "--theta"),
    ("MMR", ["--sweep", "0.2,2"], "--sweep"),
    ("DPP", ["--sweep", "0.5,a"], "--sweep"),
    ("DPP", ["--window", "1"], "--window"),
    ("DPP", ["--window", "0"], "--window"),
    ("MMR", ["--k", "0"], "--k"),
    ("MMR", ["--k", "60", "--candidates", "50"], "--k 60"),
    ("PRM", ["--k", "21", "--candidates", "20"], "--k 21"),
    ("DPP", ["--candidates", "0"], "--candidates"),
    ("DPP", ["--chunk", "0"], "--chunk"),
    ("MMR", ["--chunk", "-1"], "--chunk"),
    ("MMR", ["--similarity", "foo"], "--similarity"),
    ("PRM", ["--heads", "3"], "--heads"),
    ("PRM", ["--d-model", "0"], "--d-model"),
    ("PRM", ["--per-user", "0"], "--per-user"),
    ("PRM", ["--ranker-epochs", "0"], "--ranker-epochs"),
    ("PRM", ["--patience", "0"], "--patience"),
    ("MMR", ["--no-such-flag"], "unrecognized"),
    # data
    ("MMR", ["--data", "nosuch:x"], "unknown data spec"),
    ("DPP", ["--data", "seqtxt:/no/such/file.txt"], "does not exist"),
    ("PRM", ["--data", "libfm:{libfm}"], "reads interaction data"),
    ("MMR", ["--data", "libfm:{libfm}"], "reads interaction data"),
    ("MMR", ["--data", "seqtxt:{short}"], "fewer than 3"),
    ("DPP", ["--data", "seqtxt:{empty}"], "no usable lines"),
    ("MMR", ["--data", "seqtxt:{ids_only}", "--similarity", "category"], "--similarity embedding"),
    ("PRM", ["--data", "seqtxt:{tiny}", "--labels", "clicks"], "--labels target"),
    ("DPP", ["--data", "seqtxt:{tiny}", "--candidates", "41", "--k", "5"], "--candidates"),
    ("MMR", ["--data", "seqtxt:{small}", "--candidates", "12", "--k", "5"], "unseen"),
    # --recommend
    ("MMR", ["--data", "seqtxt:{tiny}", "--recommend", "nosuch"], "no such user"),
    ("PRM", ["--data", "seqtxt:{some_short}", "--recommend", "1"], "fewer than 3"),
    # --save / --load
    ("MMR", ["--data", "seqtxt:{tiny}", "--save", "{existing}"], "--overwrite"),
    ("DPP", ["--data", "seqtxt:{tiny}", "--save", "{folder}"], "folder"),
    ("MMR", ["--data", "seqtxt:{tiny}", "--load", "/no/such/model.pt"], "no such file"),
    ("DPP", ["--data", "seqtxt:{tiny}", "--load", "{garbage}"], "not a checkpoint"),
    ("MMR", ["--data", "seqtxt:{tiny}", "--load", "{foreign}"], "not a checkpoint written by a demo's --save"),
    ("PRM", ["--data", "seqtxt:{tiny}", "--load", "{mmr_ckpt}"], "no PRM weights"),
    ("DPP", ["--data", "seqtxt:{other}", "--load", "{mmr_ckpt}"], "trained on"),
    ("MMR", ["--data", "seqtxt:{tiny}", "--out", "{existing}/r.json"], "is a file"),
    # Calibration: its knobs, data without categories, a file of another re-ranking demo
    ("Calibration", ["--lam", "1.5"], "--lam"),
    ("Calibration", ["--alpha", "0"], "--alpha"),
    ("Calibration", ["--alpha", "2"], "--alpha"),
    ("Calibration", ["--half-life", "0"], "--half-life"),
    ("Calibration", ["--sweep", "0.5,-1"], "--sweep"),
    ("Calibration", ["--k", "21", "--candidates", "20"], "--k 21"),
    ("Calibration", ["--data", "seqtxt:{ids_only}"], "needs item categories"),
    ("Calibration", ["--data", "seqtxt:{tiny}", "--load", "{garbage}"], "not a checkpoint"),
    ("Calibration", ["--data", "seqtxt:{other}", "--load", "{mmr_ckpt}"], "trained on"),
    # Constrained: its knobs and a file of another re-ranking demo
    ("Constrained", ["--quota", "1.5"], "--quota"),
    ("Constrained", ["--head-fraction", "1"], "--head-fraction"),
    ("Constrained", ["--algorithm", "det_const_sort"], "--algorithm"),
    ("Constrained", ["--sweep", "0.5,-1"], "--sweep"),
    ("Constrained", ["--k", "21", "--candidates", "20"], "--k 21"),
    ("Constrained", ["--data", "seqtxt:{other}", "--load", "{mmr_ckpt}"], "trained on"),
]


@pytest.mark.parametrize("demo,flags,words", CASES,
                         ids=[f"{d}:{' '.join(f)[:40]}" for d, f, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(demo, flags, words, files, mmr_checkpoint,
                                                  tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(FS, "tqdm", None)  # the ranker's progress bar would share stderr
    paths = {k: str(v) for k, v in files.items()} | {"mmr_ckpt": str(mmr_checkpoint)}
    argv = [a.format(**paths) for a in flags]
    if "--data" not in argv:
        argv = ["--data", f"seqtxt:{files['tiny']}", *argv]
    out_file, save_file = tmp_path / "result.json", tmp_path / "model.pt"
    if "--out" not in argv:
        argv += ["--out", str(out_file)]
    if "--save" not in argv and "--load" not in argv:
        argv += ["--save", str(save_file)]
    before = files["existing"].read_text()
    code, out, err = run_demo(demo, [*FAST[demo], *argv], capsys)  # later flags win
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-1000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-1000:]
    assert words in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert not out_file.exists() and not save_file.exists()
    assert files["existing"].read_text() == before  # never half-overwritten


# (model, call, expected words): tensors and arguments the models refuse
def _mmr():
    return load_module("Classic Models/Re-ranking/MMR/model.py", "mmr_model")


def _dpp():
    return load_module("Classic Models/Re-ranking/DPP/model.py", "dpp_model")


def _prm():
    return load_module("Classic Models/Re-ranking/PRM/model.py", "prm_model")


def _prm_model(**kw):
    return _prm().PRM(feature_dim=4, max_len=6, d_model=8, n_heads=2, n_blocks=1, **kw)


TENSOR_CASES = [
    ("MMR k > N", lambda: _mmr().MMRReranker(max_length=7)(
        scores=torch.rand(2, 5), item_vectors=torch.rand(2, 5, 3)), "max_length must be in 1..5"),
    ("MMR valid shape", lambda: _mmr().mmr_select(
        relevance=torch.rand(2, 5), similarity=torch.rand(2, 5, 5), lam=0.5, max_length=3,
        valid=torch.ones(2, 4, dtype=torch.bool)), "valid must be (B, N)"),
    ("MMR 1-D scores", lambda: _mmr().MMRReranker()(
        scores=torch.rand(5), item_vectors=torch.rand(1, 5, 3)), "scores (B, N)"),
    ("MMR features of another list", lambda: _mmr().MMRReranker(max_length=2)(
        scores=torch.rand(2, 5), item_vectors=torch.rand(2, 6, 3)), "item_vectors (B, N, D)"),
    ("MMR lambda", lambda: _mmr().MMRReranker(lam=-0.1), "lam must be in [0, 1]"),
    ("DPP k > N", lambda: _dpp().DPPReranker(max_length=9)(
        scores=torch.rand(2, 5), item_vectors=torch.rand(2, 5, 3)), "max_length must be in 1..5"),
    ("DPP valid shape", lambda: _dpp().greedy_map(
        torch.eye(4).expand(2, 4, 4).double(), max_length=2, valid=torch.ones(4, dtype=torch.bool)),
        "valid must be (B, N)"),
    ("DPP kernel not square", lambda: _dpp().greedy_map(torch.rand(1, 4, 3), max_length=2),
     "kernel must be (B, N, N)"),
    ("DPP window", lambda: _dpp().DPPReranker(window_size=1), "window_size must be >= 2"),
    ("DPP theta", lambda: _dpp().DPPReranker(theta=1.0), "theta must be in [0, 1)"),
    ("PRM mask shape", lambda: _prm_model()(
        features=torch.rand(2, 5, 4), mask=torch.ones(2, 6, dtype=torch.bool)), "mask must be (B, N)"),
    ("PRM pv without pv_dim", lambda: _prm_model()(
        features=torch.rand(2, 5, 4), pv=torch.rand(2, 5, 3)), "pv_dim=0"),
    ("PRM missing pv", lambda: _prm_model(pv_dim=3)(features=torch.rand(2, 5, 4)), "pv must be"),
    ("PRM list too long", lambda: _prm_model()(features=torch.rand(2, 7, 4)), "1..6"),
    ("PRM feature width", lambda: _prm_model()(features=torch.rand(2, 5, 3)), "features must be"),
    ("PRM labels shape", lambda: _prm().PRM.loss(torch.rand(2, 5), torch.rand(2, 4)),
     "labels must have the logits' shape"),
]


def _with(x: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    """x with one entry replaced (a NaN or an inf planted in one list)."""
    x = x.clone()
    x[index] = value
    return x


NAN, INF = float("nan"), float("inf")
S25, F253 = torch.rand(2, 5), torch.rand(2, 5, 3)  # (B, N) scores, (B, N, D) item features

# non-finite inputs, empty and short lists, knobs out of range: the cases that used to give a
# silent answer (a row of -1, a NaN pick, a mutated config) and now name the list and the range
NON_FINITE_AND_RANGE_CASES = [
    # DPP: NaN scores used to stop the list at once (a row of -1, no error)
    ("DPP NaN score", lambda: _dpp().DPPReranker(max_length=3)(
        scores=_with(S25, (1, 2), NAN), item_vectors=F253),
     "scores: list 1 is not finite (nan at scores[1, 2]); expected finite relevance scores"),
    ("DPP -inf score", lambda: _dpp().DPPReranker(max_length=3)(
        scores=_with(S25, (0, 4), -INF), item_vectors=F253),
     "scores: list 0 is not finite (-inf at scores[0, 4]); expected finite relevance scores "
     "(exclude a candidate with valid=False, not -inf)"),
    ("DPP +inf score", lambda: _dpp().DPPReranker(max_length=3)(
        scores=_with(S25, (1, 0), INF), item_vectors=F253), "scores: list 1 is not finite (inf"),
    ("DPP NaN feature", lambda: _dpp().DPPReranker(max_length=3)(
        scores=S25, item_vectors=_with(F253, (1, 3, 2), NAN)),
     "item_vectors: list 1 is not finite (nan at item_vectors[1, 3, 2]); expected finite item"),
    ("DPP build_kernel NaN score", lambda: _dpp().build_kernel(
        scores=_with(S25, (1, 1), NAN), similarity=torch.eye(5).expand(2, 5, 5), theta=0.5),
     "scores: list 1 is not finite"),
    ("DPP NaN kernel", lambda: _dpp().greedy_map(
        _with(torch.eye(4, dtype=torch.float64).repeat(3, 1, 1), (2, 1, 3), NAN), max_length=2),
     "kernel: list 2 is not finite (nan at kernel[2, 1, 3])"),
    ("DPP overflowed explicit kernel", lambda: _dpp().greedy_map(_dpp().build_kernel(
        scores=torch.tensor([[1.0, 800.0]]), similarity=torch.eye(2).double()[None], theta=0.5),
        max_length=2), "kernel: list 0 is not finite (inf"),
    ("DPP NaN log_quality", lambda: _dpp().greedy_map(
        torch.eye(3).double()[None], max_length=2, log_quality=torch.tensor([[0.0, NAN, 1.0]])),
     "log_quality: list 0 is not finite"),
    ("DPP no candidates", lambda: _dpp().DPPReranker(max_length=3)(
        scores=torch.rand(2, 0), item_vectors=torch.rand(2, 0, 3)),
     "the candidate lists are empty (N = 0); expected at least 1 candidate"),
    ("DPP default max_length on 5 candidates", lambda: _dpp().DPPReranker()(
        scores=S25, item_vectors=F253),
     "max_length must be in 1..5 (the list length N), got 10: pass at least max_length"),
    ("DPP valid not bool", lambda: _dpp().DPPReranker(max_length=3)(
        scores=S25, item_vectors=F253, valid=torch.ones(2, 5, dtype=torch.long)),
     "valid must be (B, N) = (2, 5) bool, got (2, 5) torch.int64"),
    ("DPP theta NaN", lambda: _dpp().DPPReranker(theta=NAN), "theta must be in [0, 1), got nan"),
    ("DPP theta < 0", lambda: _dpp().DPPReranker(theta=-0.1), "theta must be in [0, 1), got -0.1"),
    ("DPP max_length 0", lambda: _dpp().DPPReranker(max_length=0),
     "max_length must be >= 1 (an integer), got 0"),
    ("DPP max_length float", lambda: _dpp().DPPReranker(max_length=2.5),
     "max_length must be >= 1 (an integer), got 2.5"),
    ("DPP window 0", lambda: _dpp().DPPReranker(window_size=0),
     "window_size must be >= 2 or None (an integer), got 0"),
    ("DPP min_gain 0", lambda: _dpp().DPPReranker(min_gain=0.0),
     "min_gain must be in (0, inf), got 0.0"),
    ("DPP min_gain inf", lambda: _dpp().DPPReranker(min_gain=INF),
     "min_gain must be in (0, inf), got inf"),
    ("DPP ridge < 0", lambda: _dpp().DPPReranker(ridge=-1e-3),
     "ridge must be a finite eps >= 0, got -0.001"),
    ("DPP integer dtype", lambda: _dpp().DPPReranker(dtype=torch.int64),
     "dtype must be a floating torch dtype"),
    # MMR: a NaN score used to be picked first (argmax treats NaN as the largest)
    ("MMR NaN score", lambda: _mmr().MMRReranker(max_length=3)(
        scores=_with(S25, (1, 2), NAN), item_vectors=F253),
     "scores: list 1 is not finite (nan at scores[1, 2]); expected finite relevance scores"),
    ("MMR -inf score", lambda: _mmr().MMRReranker(max_length=3)(
        scores=_with(S25, (0, 1), -INF), item_vectors=F253),
     "(exclude a candidate with valid=False, not -inf)"),
    ("MMR +inf score", lambda: _mmr().MMRReranker(max_length=3)(
        scores=_with(S25, (1, 4), INF), item_vectors=F253), "scores: list 1 is not finite (inf"),
    ("MMR NaN feature", lambda: _mmr().MMRReranker(max_length=3)(
        scores=S25, item_vectors=_with(F253, (0, 2, 1), NAN)),
     "item_vectors: list 0 is not finite (nan at item_vectors[0, 2, 1])"),
    ("MMR NaN relevance", lambda: _mmr().mmr_select(
        relevance=_with(S25, (1, 3), NAN), similarity=torch.rand(2, 5, 5), lam=0.5, max_length=2),
     "relevance: list 1 is not finite (nan at relevance[1, 3])"),
    ("MMR inf similarity", lambda: _mmr().mmr_select(
        relevance=S25, similarity=_with(torch.rand(2, 5, 5), (0, 1, 2), INF), lam=0.5,
        max_length=2), "similarity: list 0 is not finite (inf at similarity[0, 1, 2])"),
    ("MMR no candidates", lambda: _mmr().MMRReranker(max_length=3)(
        scores=torch.rand(2, 0), item_vectors=torch.rand(2, 0, 3)),
     "the candidate lists are empty (N = 0); expected at least 1 candidate"),
    ("MMR default max_length on 5 candidates", lambda: _mmr().MMRReranker()(
        scores=S25, item_vectors=F253),
     "max_length must be in 1..5 (the list length N), got 10: pass at least max_length"),
    ("MMR valid not bool", lambda: _mmr().MMRReranker(max_length=3)(
        scores=S25, item_vectors=F253, valid=torch.ones(2, 5, dtype=torch.long)),
     "valid must be (B, N) = (2, 5) bool, got (2, 5) torch.int64"),
    ("MMR lambda NaN", lambda: _mmr().MMRReranker(lam=NAN), "lam must be in [0, 1], got nan"),
    ("MMR lambda > 1", lambda: _mmr().MMRReranker(lam=1.5), "lam must be in [0, 1], got 1.5"),
    ("MMR max_length 0", lambda: _mmr().MMRReranker(max_length=0),
     "max_length must be >= 1 (an integer), got 0"),
    ("MMR max_length float", lambda: _mmr().mmr_select(
        relevance=S25, similarity=torch.rand(2, 5, 5), lam=0.5, max_length=2.0),
     "max_length must be >= 1 (an integer), got 2.0"),
    # PRM: one NaN used to turn the scores of its whole list into NaN
    ("PRM NaN feature", lambda: _prm_model()(features=_with(torch.rand(2, 5, 4), (1, 2, 3), NAN)),
     "features: list 1 is not finite (nan at features[1, 2, 3]); expected finite item features"),
    ("PRM inf pv", lambda: _prm_model(pv_dim=3)(
        features=torch.rand(2, 5, 4), pv=_with(torch.rand(2, 5, 3), (0, 4, 0), -INF)),
     "pv: list 0 is not finite (-inf at pv[0, 4, 0])"),
    ("PRM list without a real item", lambda: _prm_model()(
        features=torch.rand(3, 5, 4), mask=torch.tensor([[True] * 5, [False] * 5, [True] * 5])),
     "mask: list 1 has no real item (all False); expected at least one True per list"),
    ("PRM mask not bool", lambda: _prm_model()(
        features=torch.rand(2, 5, 4), mask=torch.ones(2, 5, dtype=torch.long)),
     "mask must be (B, N) = (2, 5) bool, got (2, 5) torch.int64"),
    ("PRM no items", lambda: _prm_model()(features=torch.rand(2, 0, 4)),
     "list length N must be in 1..6 (max_len), got 0"),
    ("PRM NaN label", lambda: _prm().PRM.loss(torch.rand(2, 5), _with(torch.zeros(2, 5), (1, 0),
                                                                       NAN)),
     "labels: list 1 is not finite (nan at labels[1, 0]); expected finite clicks"),
    ("PRM click on padding", lambda: _prm().PRM.loss(
        _with(torch.rand(2, 5), (0, 4), -INF), _with(torch.zeros(2, 5), (0, 4), 1.0)),
     "labels: list 0 has 1.0 at position 4 (logit -inf); expected clicks >= 0, and 0 at padded"),
    ("PRM negative label", lambda: _prm().PRM.loss(torch.rand(2, 5), _with(torch.zeros(2, 5),
                                                                             (1, 2), -1.0)),
     "labels: list 1 has -1.0 at position 2"),
    ("PRM n_heads 0", lambda: _prm().PRM(feature_dim=4, n_heads=0),
     "n_heads must be >= 1 (an integer), got 0"),
    ("PRM d_model 0", lambda: _prm().PRM(feature_dim=4, d_model=0),
     "d_model must be >= 1 (an integer), got 0"),
    ("PRM n_blocks 0", lambda: _prm().PRM(feature_dim=4, n_blocks=0),
     "n_blocks must be >= 1 (an integer), got 0"),
    ("PRM pv_dim < 0", lambda: _prm().PRM(feature_dim=4, pv_dim=-1),
     "pv_dim must be >= 0 (an integer), got -1"),
    ("PRM max_len 0", lambda: _prm().PRM(feature_dim=4, max_len=0),
     "max_len must be >= 1 (an integer), got 0"),
    ("PRM feature_dim float", lambda: _prm().PRM(feature_dim=4.0),
     "feature_dim must be >= 1 (an integer), got 4.0"),
    ("PRM dropout 1", lambda: _prm().PRM(feature_dim=4, dropout=1.0),
     "dropout must be in [0, 1), got 1.0"),
]


def _cal():
    return load_module("Classic Models/Re-ranking/Calibration/model.py", "calibration_model")


Q253 = torch.full((2, 5, 3), 1 / 3)  # (B, N, G) q(g|i), uniform
H243 = torch.full((2, 4, 3), 1 / 3)  # (B, L, G) history q(g|i)


def _calibrate(max_length=3, **kw):
    args = {"scores": S25, "item_categories": Q253, "history_categories": H243} | kw
    return _cal().CalibratedReranker(max_length=max_length)(**args)


CALIBRATION_CASES = [
    ("Calibration NaN score", lambda: _calibrate(scores=_with(S25, (1, 2), NAN)),
     "scores: list 1 is not finite (nan at scores[1, 2]); expected finite relevance scores"),
    ("Calibration -inf score", lambda: _calibrate(scores=_with(S25, (0, 1), -INF)),
     "(exclude a candidate with valid=False, not -inf)"),
    ("Calibration NaN category", lambda: _calibrate(item_categories=_with(Q253, (1, 3, 2), NAN)),
     "item_categories: list 1 is not finite (nan at item_categories[1, 3, 2])"),
    ("Calibration no candidates", lambda: _calibrate(
        scores=torch.rand(2, 0), item_categories=torch.rand(2, 0, 3)),
     "the candidate lists are empty (N = 0); expected at least 1 candidate"),
    ("Calibration list shorter than k", lambda: _cal().CalibratedReranker()(
        scores=S25, item_categories=Q253, history_categories=H243),
     "max_length must be in 1..5 (the list length N), got 10: pass at least max_length"),
    ("Calibration unknown category id", lambda: _cal().category_distribution(
        torch.tensor([[[1, 2], [7, 0]]]), n_categories=5),
     "category_ids: id 7 at [0, 1, 0] is an unknown category; expected ids in 0..5"),
    ("Calibration negative category id", lambda: _cal().category_distribution(
        torch.tensor([[[-1]]]), n_categories=5), "expected ids in 0..5"),
    ("Calibration float ids", lambda: _cal().category_distribution(
        torch.tensor([[[1.0]]]), n_categories=5), "category_ids must be an integer tensor"),
    ("Calibration item row not summing to 1", lambda: _calibrate(
        item_categories=_with(Q253, (1, 4, 0), 0.9)),
     "item_categories: list 1, candidate [4] does not sum to 1"),
    ("Calibration negative item row", lambda: _calibrate(
        item_categories=torch.tensor([0.5, 0.7, -0.2]).expand(2, 5, 3).clone()),
     "item_categories: list 0, candidate [0] has a negative entry"),
    ("Calibration history row not summing to 1", lambda: _calibrate(
        history_categories=_with(H243, (0, 2, 1), 0.0)),
     "history_categories: list 0, history item [2] does not sum to 1"),
    ("Calibration history without categories", lambda: _calibrate(
        history_categories=_with(H243, (1,), 0.0)),
     "history_categories: list 1 has no history item with a category"),
    ("Calibration negative history weight", lambda: _calibrate(
        history_weights=_with(torch.ones(2, 4), (0, 1), -1.0)), "a weight is negative"),
    ("Calibration target not a distribution", lambda: _cal().calibrated_greedy(
        relevance=S25, item_categories=Q253, target=torch.tensor([[0.5, 0.5, 0.5]] * 2), lam=0.5,
        alpha=0.01, max_length=2), "target: list 0, row [0] does not sum to 1"),
    ("Calibration valid not bool", lambda: _calibrate(valid=torch.ones(2, 5, dtype=torch.long)),
     "valid must be (B, N) = (2, 5) bool, got (2, 5) torch.int64"),
    ("Calibration history of another width", lambda: _calibrate(
        history_categories=torch.full((2, 4, 4), 0.25)), "history_categories must be (B, L, G)"),
    ("Calibration lambda > 1", lambda: _cal().CalibratedReranker(lam=1.5),
     "lam must be in [0, 1], got 1.5"),
    ("Calibration lambda < 0", lambda: _cal().CalibratedReranker(lam=-0.1),
     "lam must be in [0, 1], got -0.1"),
    ("Calibration lambda NaN", lambda: _cal().CalibratedReranker(lam=NAN),
     "lam must be in [0, 1], got nan"),
    ("Calibration alpha 0", lambda: _cal().CalibratedReranker(alpha=0.0),
     "alpha must be in (0, 1] (the paper: 0.01), got 0.0"),
    ("Calibration half_life 0", lambda: _cal().CalibratedReranker(half_life=0.0),
     "half_life must be > 0 items (or None), got 0.0"),
    ("Calibration max_length float", lambda: _cal().CalibratedReranker(max_length=2.5),
     "max_length must be >= 1 (an integer), got 2.5"),
]


def _con():
    return load_module("Classic Models/Re-ranking/Constrained/model.py", "constrained_model")


G25 = torch.tensor([[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]])  # (B, N) group ids
P2 = torch.tensor([0.6, 0.4])  # (G,) target shares


def _constrain(max_length=3, **kw):
    args = {"scores": S25, "groups": G25, "proportions": P2} | kw
    return _con().ConstrainedReranker(max_length=max_length)(**args)


CONSTRAINED_CASES = [
    ("Constrained NaN score", lambda: _constrain(scores=_with(S25, (1, 2), NAN)),
     "scores: list 1 is not finite (nan at scores[1, 2]); expected finite relevance scores"),
    ("Constrained no candidates", lambda: _constrain(
        scores=torch.rand(2, 0), groups=torch.zeros(2, 0, dtype=torch.long)),
     "the candidate lists are empty (N = 0); expected at least 1 candidate"),
    ("Constrained list shorter than k", lambda: _con().ConstrainedReranker()(
        scores=S25, groups=G25, proportions=P2),
     "max_length must be in 1..5 (the list length N), got 10: pass at least max_length"),
    ("Constrained unknown group", lambda: _constrain(groups=_with(G25, (0, 3), 2)),
     "groups: id 2 at [0, 3] is an unknown group; expected ids in 0..1"),
    ("Constrained negative group", lambda: _constrain(groups=_with(G25, (1, 0), -1)),
     "expected ids in 0..1"),
    ("Constrained float groups", lambda: _constrain(groups=G25.float()),
     "groups must be an integer tensor"),
    ("Constrained negative share", lambda: _constrain(proportions=torch.tensor([1.2, -0.2])),
     "proportions: row 0 has a negative share"),
    ("Constrained shares above 1", lambda: _constrain(proportions=torch.tensor([0.7, 0.6])),
     "proportions: row 0 sums to more than 1"),
    ("Constrained NaN share", lambda: _constrain(proportions=torch.tensor([NAN, 0.5])),
     "proportions: row 0 is not finite"),
    ("Constrained shares of another batch", lambda: _constrain(proportions=torch.full((3, 2), 0.5)),
     "proportions must be (G,) or (B, G) = (2, G)"),
    ("Constrained infeasible, strict", lambda: _con().ConstrainedReranker(max_length=5, strict=True)(
        scores=S25, groups=G25, proportions=torch.tensor([0.2, 0.8])),
     "list 0 cannot meet its floors: group 1 needs 4, has 2"),
    ("Constrained valid not bool", lambda: _constrain(valid=torch.ones(2, 5, dtype=torch.long)),
     "valid must be (B, N) = (2, 5) bool"),
    ("Constrained algorithm", lambda: _con().ConstrainedReranker(algorithm="det_const_sort"),
     "algorithm must be one of ('det_greedy', 'det_cons', 'det_relaxed')"),
    ("Constrained max_length 0", lambda: _con().ConstrainedReranker(max_length=0),
     "max_length must be >= 1 (an integer), got 0"),
]
TENSOR_CASES += NON_FINITE_AND_RANGE_CASES + CALIBRATION_CASES + CONSTRAINED_CASES


@pytest.mark.parametrize("name,call,words", TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES])
def test_models_refuse_bad_tensors_with_a_clear_value_error(name, call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value), str(info.value)
    assert "\n" not in str(info.value)  # one line: what was wrong and what was expected


def test_the_script_prints_one_line_and_exits_2(tmp_path):
    """The installed hook itself, once (a subprocess costs an `import torch`): a DataError raised
    inside main(), after the flags passed their parse-time checks, is one line and exit 2."""
    out = tmp_path / "r.json"
    flags = ["--data", "seqtxt:/no/such/file.txt", "--batch-size", "7"]
    proc = subprocess.run([sys.executable, str(ROOT / DEMOS["DPP"]), *flags, "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert not out.exists()
