"""Bad input to the YoutubeDNN, MIND and SDM demos and models: each case is one line `error: ...`
(exit status 2, no traceback) and leaves no `--out` / `--save` file behind; a model given an
out-of-range id raises a ValueError naming the input, the id and the allowed range.

The demos run in-process (`run_demo`): a subprocess would pay ~3 s for `import torch` per case. Uncaught
input errors are turned into `error: <message>` + status 2 exactly as the hook that
`Utils.io.add_common_args` installs in a script; anything else propagates and fails the test. One case
runs as a real subprocess to check the hook itself.
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

DEMOS = ("YoutubeDNN", "MIND", "SDM")
# tiny models, so a case that trains (none here; the round trips in tests/test_<model>.py) stays fast
TINY = {
    "YoutubeDNN": ["--dim", "8", "--hidden", "16", "--negatives", "20"],
    "MIND": ["--dim", "8", "--hidden", "16", "--negatives", "20"],
    "SDM": ["--dim", "8", "--heads", "2", "--num-sampled", "20"],
}


def write_tiny_seqtxt(folder: Path, attributes: bool = False, n_users: int = 120, seed: int = 0) -> Path:
    """A small `user item item ...` file (ids only unless `attributes`): 60 items, users with 4-12
    items drawn around a per-user centre, plus user 999 with only 2 items (dropped by the split)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        centre = int(rng.integers(6, 55))
        items = np.clip(centre + rng.integers(-5, 6, int(rng.integers(4, 13))), 1, 60)
        lines.append(" ".join(map(str, [u, *items])))
    lines.append("999 3 4")
    path = folder / "Tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    if attributes:
        attrs = {str(i): [1 + i % 5, 6 + i % 3] for i in range(1, 61)}
        (folder / "Tiny_item2attributes.json").write_text(json.dumps(attrs))
    return path


def run_demo(name: str, argv: list[str]) -> tuple[int, str, str, dict]:
    """Run `Classic Models/Recall/<name>/demo.py` in this process (see `tests.conftest`)."""
    return run_demo_in_process("Recall", name, argv)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every file a case refers to, by placeholder name."""
    d = tmp_path_factory.mktemp("bad_input_recall")
    tiny = write_tiny_seqtxt(d / "tiny")
    (d / "short.txt").write_text("1 1 2\n2 3\n3 4 5\n")  # every user has < 3 items
    (d / "malformed.txt").write_text("1 a b\nx y z\n")
    (d / "empty.txt").write_text("")
    (d / "clicks.libfm").write_text("1 0:1 3:1\n0 1:1 4:1\n1 0:1 4:1\n")
    (d / "existing.pt").write_bytes(b"keep me")
    (d / "garbage.pt").write_bytes(b"\x00not a torch file")
    torch.save(checkpoint_payload(demo="SomeOtherModel", models={}), d / "other_model.pt")
    for name in DEMOS:  # right model, other data: 3 users and 3 items
        torch.save(checkpoint_payload(demo=name, models={}, args={"data": "seqtxt:elsewhere.txt"},
                                      ids={"user": ["<pad>", "1", "2", "3"],
                                           "item": ["<pad>", "1", "2", "3"]}),
                   d / f"other_data_{name}.pt")
    return {"tmp": str(d), "tiny": str(tiny), **{p.stem: str(p) for p in d.iterdir() if p.is_file()}}


# (flags, what the one-line error must mention); {name} is a path from `files`
COMMON_CASES = [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-5"], "--batch-size"),
    (["--lr", "nan"], "--lr"),
    (["--device", "tpu"], "tpu"),
    (["--threads", "0"], "--threads"),
    (["--dim", "0"], "--dim"),
    (["--max-len", "abc"], "--max-len"),
    (["--no-such-flag"], "unrecognized"),
    (["--export-vectors", "{tmp}/vectors.txt"], ".npz"),
    (["--save", "{existing}"], "exists"),
    (["--save", "{tmp}/a.pt", "--load", "{garbage}"], "--save and --load"),
    (["--load", "{tmp}/missing.pt"], "no such file"),
    (["--load", "{garbage}"], "not a checkpoint"),
    (["--load", "{other_model}"], "SomeOtherModel"),
    (["--load", "{other_data_DEMO}"], "trained on"),
    (["--recommend", "424242"], "no such user"),
    (["--recommend", "999"], "fewer than 3"),
    (["--data", "nosuch:x"], "unknown data spec"),
    (["--data", "seqtxt:{tmp}/missing.txt"], "does not exist"),
    (["--data", "seqtxt:"], "needs a path"),
    (["--data", "synthetic:abc"], "SEED"),
    (["--data", "libfm:{clicks}"], "click-through"),
    (["--data", "seqtxt:{short}"], "fewer than 3"),
    (["--data", "seqtxt:{malformed}"], "malformed.txt"),
    (["--data", "seqtxt:{empty}"], "empty.txt"),
]
DEMO_CASES = {
    "YoutubeDNN": [
        (["--hidden", "a,b"], "--hidden"),
        (["--negatives", "0"], "--negatives"),
        (["--dropout", "1.5"], "dropout"),
        (["--time-budget", "-1"], "--time-budget"),
        (["--patience", "0"], "--patience"),
        (["--export-onnx", "{tmp}/tower.txt"], ".onnx"),
    ],
    "MIND": [
        (["--hidden", "0"], "--hidden"),
        (["--interests", "0"], "--interests"),
        (["--routing-iters", "0"], "--routing-iters"),
        (["--routing-sigma", "0"], "--routing-sigma"),
        (["--pow-p", "-1"], "pow_p"),
    ],
    "SDM": [
        (["--num-sampled", "0"], "--num-sampled"),
        (["--short-len", "0"], "--short-len"),
        (["--force-gate", "2"], "--force-gate"),
        (["--heads", "3"], "num_heads"),
        (["--dropout", "1"], "dropout"),
    ],
}
CASES = [(d, f, m) for d in DEMOS for f, m in COMMON_CASES] + [
    (d, f, m) for d, cases in DEMO_CASES.items() for f, m in cases]


@pytest.mark.parametrize("demo,flags,expected", CASES,
                         ids=[f"{d}:{' '.join(f)}" for d, f, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(demo, flags, expected, files):
    out_json = Path(files["tmp"]) / f"out_{demo}.json"
    flags = [f.replace("DEMO", demo).format(**files) for f in flags]
    argv = ["--data", f"seqtxt:{files['tiny']}", *TINY[demo], "--epochs", "1", "--threads", "1",
            "--out", str(out_json), *flags]
    code, stdout, stderr, _ = run_demo(demo, argv)
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert code == 2, (code, stderr[-1500:])
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert "Traceback" not in stderr
    assert expected in errors[0], errors[0]
    assert "RESULT" not in stdout and not out_json.exists()
    assert Path(files["existing"]).read_bytes() == b"keep me"  # --save never replaced it
    assert not (Path(files["tmp"]) / "a.pt").exists()


@pytest.mark.slow  # a subprocess: ~4 s of it importing torch
def test_hook_in_a_real_process_prints_one_line(files):
    """The same contract end to end: the installed excepthook, exit status 2, no traceback."""
    demo = ROOT / "Classic Models" / "Recall" / "MIND" / "demo.py"
    proc = subprocess.run([sys.executable, str(demo), "--data", f"libfm:{files['clicks']}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: ") and "click-through" in proc.stderr


# ---- models: out-of-range ids are a ValueError naming the input, the id and the allowed range ----

ytd = model_module("Recall", "YoutubeDNN")
mind = model_module("Recall", "MIND")
sdm = model_module("Recall", "SDM")
N = 20


def _ytd():
    cfg = ytd.YoutubeDNNConfig(n_items=N, dim=4, bag_sizes={"category": 5}, user_feature_sizes=(3,),
                               hidden=(8,))
    return ytd.YoutubeDNN(config=cfg)


def _ytd_inputs(history=None, cats=None, feats=None):
    return dict(history=torch.tensor([[0, 1, N]]) if history is None else history,
                bags={"category": torch.tensor([[0, 4]]) if cats is None else cats},
                user_features=torch.tensor([[2]]) if feats is None else feats)


def _mind():
    return mind.MIND(config=mind.MINDConfig(n_items=N, dim=4, max_len=5, hidden=(8,),
                                            user_feature_sizes=(3,)))


def _sdm():
    return sdm.SDM(sdm.SDMConfig(n_items=N, profile_sizes={"user": 4}, dim=4, num_heads=2))


def _sdm_call(short=None, long=None, user=None):
    return _sdm()(profile={"user": torch.tensor([3]) if user is None else user},
                  short=torch.tensor([[1, N]]) if short is None else short,
                  long=torch.tensor([[0, 2]]) if long is None else long)


U = torch.ones(1, 4)
TENSOR_CASES = [
    ("YoutubeDNN history id N+1", lambda: _ytd().user_tower(**_ytd_inputs(history=torch.tensor([[1, N + 1]]))),
     f"history (item ids, 0 = padding): id {N + 1} is out of range; expected ids in 0..{N}"),
    ("YoutubeDNN history id -1", lambda: _ytd().user_tower(**_ytd_inputs(history=torch.tensor([[-1, 2]]))),
     f"id -1 is out of range; expected ids in 0..{N}"),
    ("YoutubeDNN bag id", lambda: _ytd().user_tower(**_ytd_inputs(cats=torch.tensor([[5]]))),
     "bag 'category': id 5 is out of range; expected ids in 0..4"),
    ("YoutubeDNN user feature", lambda: _ytd().user_tower(**_ytd_inputs(feats=torch.tensor([[3]]))),
     "user_features[:, 0]: id 3 is out of range; expected ids in 0..2"),
    ("YoutubeDNN loss target", lambda: _ytd().loss(
        user_vec=U, target=torch.tensor([N + 1]), negatives=torch.tensor([1]),
        log_q_target=torch.zeros(1), log_q_negatives=torch.zeros(1)),
     f"target: id {N + 1} is out of range; expected ids in 1..{N}"),
    ("YoutubeDNN loss negatives", lambda: _ytd().loss(
        user_vec=U, target=torch.tensor([1]), negatives=torch.tensor([0, 2]),
        log_q_target=torch.zeros(1), log_q_negatives=torch.zeros(2)),
     f"negatives: id 0 is out of range; expected ids in 1..{N}"),
    ("MIND history id N+1", lambda: _mind().user_tower(history=torch.tensor([[1, N + 1]]),
                                                       user_features=torch.tensor([[0]])),
     f"history (item ids, 0 = padding): id {N + 1} is out of range; expected ids in 0..{N}"),
    ("MIND user feature", lambda: _mind().user_tower(history=torch.tensor([[1, 2]]),
                                                     user_features=torch.tensor([[7]])),
     "user_features[:, 0]: id 7 is out of range; expected ids in 0..2"),
    ("MIND loss negatives", lambda: (lambda m: m.loss(
        interests=torch.ones(1, 4, 4), active=torch.ones(1, 4, dtype=torch.bool),
        target=torch.tensor([1]), negatives=torch.tensor([N + 5]), log_q_target=torch.zeros(1),
        log_q_negatives=torch.zeros(1)))(_mind()),
     f"negatives: id {N + 5} is out of range; expected ids in 1..{N}"),
    ("MIND loss target", lambda: (lambda m: m.loss(
        interests=torch.ones(1, 4, 4), active=torch.ones(1, 4, dtype=torch.bool),
        target=torch.tensor([N + 1]), negatives=torch.tensor([1]), log_q_target=torch.zeros(1),
        log_q_negatives=torch.zeros(1)))(_mind()),
     f"target: id {N + 1} is out of range; expected ids in 1..{N}"),
    ("SDM short id", lambda: _sdm_call(short=torch.tensor([[1, N + 1]])),
     f"short (item ids, 0 = padding): id {N + 1} is out of range; expected ids in 0..{N}"),
    ("SDM long id", lambda: _sdm_call(long=torch.tensor([[-2, 1]])),
     f"long (item ids, 0 = padding): id -2 is out of range; expected ids in 0..{N}"),
    ("SDM profile id", lambda: _sdm_call(user=torch.tensor([4])),
     "profile['user']: id 4 is out of range; expected ids in 0..3"),
    ("SDM loss target", lambda: _sdm().loss(U, torch.tensor([N + 1]), torch.tensor([1])),
     f"target: id {N + 1} is out of range; expected ids in 1..{N}"),
]


@pytest.mark.parametrize("name,call,message", TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES])
def test_out_of_range_id_names_input_id_and_range(name, call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


# ---- models: padding between the items of an ordered history is a ValueError naming the row ----

GAP_CASES = [
    ("MIND history", lambda: _mind().user_tower(history=torch.tensor([[0, 1, 2], [1, 0, 2]]),
                                                user_features=torch.tensor([[0], [0]])),
     "history row 1 has padding (0) between real items: [1, 0, 2]"),
    ("SDM short", lambda: _sdm_call(short=torch.tensor([[3, 0, 0, 1]])),
     "short row 0 has padding (0) between real items: [3, 0, 0, 1]"),
]


@pytest.mark.parametrize("name,call,message", GAP_CASES, ids=[c[0] for c in GAP_CASES])
def test_padding_between_items_names_input_and_row(name, call, message):
    """Left ([0, a, b]) and right ([a, b, 0], `pad_sequence`'s) padding are both read; a row that is
    neither would be read with a wrong recency, so it is refused, showing the row."""
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bags_accept_padding_anywhere():
    """YoutubeDNN's history and SDM's long-term behaviour are bags (no order is read): padding
    between ids is no error there and gives the vector of the packed row."""
    ytd_model, sdm_model = _ytd(), _sdm().eval()

    def ytd_vector(history):
        return ytd_model.user_tower(**_ytd_inputs(history=history))

    def sdm_vector(long):
        return sdm_model(profile={"user": torch.tensor([3])}, short=torch.tensor([[1, N]]),
                         long=long)

    torch.testing.assert_close(ytd_vector(torch.tensor([[1, 0, N]])),
                               ytd_vector(torch.tensor([[0, 1, N]])))
    torch.testing.assert_close(sdm_vector(torch.tensor([[2, 0, 5, 0]])),
                               sdm_vector(torch.tensor([[0, 0, 2, 5]])))
