"""Datasets/field_ctr.py: the split the field-interaction CTR demos train and report on."""

import numpy as np
import pytest
import torch

import Datasets
from Datasets.field_ctr import build_field_ctr
from tests.conftest import model_module, shared_path


def write_libfm(folder, name, rows):
    (folder / name).write_text("".join(f"{y} " + " ".join(f"{f}:1" for f in fs) + "\n"
                                       for y, fs in rows))


def toy_libfm_split(folder, n_rows, n_validation, n_users, n_items):
    """Random (user, item) click rows written as a validation file and a test file (no train
    file); returns the rows."""
    rng = np.random.default_rng(0)
    rows = [(int(rng.choice([-1, 1])), [int(rng.integers(0, n_users)),
                                        n_users + int(rng.integers(0, n_items))])
            for _ in range(n_rows)]
    write_libfm(folder, "toy.validation.libfm", rows[:n_validation])
    write_libfm(folder, "toy.test.libfm", rows[n_validation:])
    return rows


def test_without_a_train_file_the_validation_file_is_split_and_test_is_kept(tmp_path):
    rows = toy_libfm_split(tmp_path, 200, 150, n_users=5, n_items=7)
    ctr = build_field_ctr(Datasets.load(f"libfm:{tmp_path}"), holdout=0.2, seed=0)
    assert (len(ctr.train), len(ctr.valid), len(ctr.test)) == (120, 30, 50)
    labels = np.array([1.0 if y > 0 else 0.0 for y, _ in rows], dtype=np.float32)
    np.testing.assert_array_equal(ctr.test.tensors["label"].numpy(), labels[150:])
    both = torch.cat([ctr.train.tensors["label"], ctr.valid.tensors["label"]])
    assert both.sum().item() == labels[:150].sum()
    # one context x every item: only the item field changes
    sparse, dense = ctr.candidate_rows(ctr.test.tensors["sparse"][0], torch.arange(1, 4))
    assert dense is None and (sparse[:, 1] == torch.arange(1, 4)).all()
    assert (sparse[:, 0] == ctr.test.tensors["sparse"][0, 0]).all()


@pytest.mark.realdata
def test_frappe_protocol_uses_the_validation_file_for_training_and_the_test_file_once():
    path = shared_path("frappe")
    ctr = build_field_ctr(Datasets.load(f"libfm:{path}"), holdout=0.1, seed=0)
    assert len(ctr.train) + len(ctr.valid) == 57_722 and len(ctr.test) == 28_860
    assert ctr.field_names[:2] == ["user", "item"] and len(ctr.field_dims) == 10


def test_auc_by_seen_pair_splits_test_positives_by_training_clicks(tmp_path):
    """Utils/field_ctr_demo.auc_by_seen_pair: positives whose (user, item) pair was clicked in
    training vs the rest, each against all test negatives, equal scikit-learn's AUC; the two AUCs
    weighted by their positives give the overall AUC."""
    from sklearn.metrics import roc_auc_score

    from Utils.loops.field_ctr_demo import auc_by_seen_pair

    toy_libfm_split(tmp_path, 400, 300, n_users=6, n_items=8)
    ctr = build_field_ctr(Datasets.load(f"libfm:{tmp_path}"), holdout=0.2, seed=0)
    ctr.field_names[0] = "user"
    item_score = torch.randn(ctr.field_dims[ctr.item_field],
                             generator=torch.Generator().manual_seed(0))

    class ItemScore(torch.nn.Module):
        def forward(self, sparse, dense=None):
            return item_score[sparse[:, ctr.item_field]]

    got = auc_by_seen_pair(ItemScore(), ctr, torch.device("cpu"))
    tr, y_tr = ctr.train.tensors["sparse"].numpy(), ctr.train.tensors["label"].numpy()
    clicked = {(int(a), int(b)) for a, b in tr[y_tr > 0][:, [0, ctr.item_field]]}
    te, y = ctr.test.tensors["sparse"].numpy(), ctr.test.tensors["label"].numpy()
    seen = np.array([(int(a), int(b)) in clicked for a, b in te[:, [0, ctr.item_field]]])
    p = torch.sigmoid(item_score[torch.as_tensor(te[:, ctr.item_field])]).numpy()
    for name, group in (("seen pair", (y > 0) & seen), ("new pair", (y > 0) & ~seen)):
        assert got[name]["positives"] == group.sum() > 0
        rows = group | (y == 0)
        assert got[name]["AUC"] == pytest.approx(roc_auc_score(y[rows], p[rows]))
    mix = sum(v["AUC"] * v["positives"] for v in got.values()) / (y > 0).sum()
    assert mix == pytest.approx(roc_auc_score(y, p))
    ctr.field_names[0] = "f0"
    assert auc_by_seen_pair(ItemScore(), ctr, torch.device("cpu")) is None


# --------------------------------------------------------------------------------------------------
# Running the four field-CTR demos in-process on a toy libFM folder (no `import torch` per run):
# shared by tests/test_{widedeep,deepfm,dcnv2,autoint}.py and tests/test_bad_input_field_ctr.py.
# --------------------------------------------------------------------------------------------------

DEMOS = ("WideDeep", "DeepFM", "DCNv2", "AutoInt")
TINY = ["--epochs", "1", "--hidden", "8", "--dim", "4", "--batch-size", "64"]


def write_toy_frappe(folder, n_validation=300, n_test=100, seed=0):
    """A Frappe-shaped libFM folder (10 one-hot fields: user, item and 8 context fields; the folder
    name holds 'frappe' so the loader names the fields), clicks that depend on user x item."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def lines(n):
        out = []
        for _ in range(n):
            u, i = int(rng.integers(0, 6)), 100 + int(rng.integers(0, 8))
            ctx = [200 + 10 * k + int(rng.integers(0, 3)) for k in range(8)]
            y = 1 if (u + i) % 3 == 0 or rng.random() < 0.2 else -1
            out.append(f"{y} " + " ".join(f"{f}:1" for f in [u, i, *ctx]) + "\n")
        return "".join(out)

    (folder / "toy.validation.libfm").write_text(lines(n_validation))
    (folder / "toy.test.libfm").write_text(lines(n_test))
    return folder


def run_demo(name, argv):
    """Run `Classic Models/Ranking/<name>/demo.py` in this process with `argv`, as the command line
    would: an input error (`ValueError`, `DataError`, `OSError`) becomes `error: <message>` on
    stderr and status 2, as Utils.io's hook does. Returns (status, stdout, stderr)."""
    import contextlib
    import io
    import runpy
    import sys

    from Utils.io import INPUT_ERRORS, model_dir

    path = model_dir("Ranking", name) / "demo.py"
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.excepthook
    sys.argv = [str(path), *argv]
    # Utils.io.in_notebook() looks for ipykernel in sys.modules; starting a kernel from this
    # process (tests/test_notebooks.py) imports it here too, and argv would then be ignored.
    kernel = sys.modules.pop("ipykernel", None)
    status = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:
                status = e.code
            except INPUT_ERRORS as e:
                print(f"error: {e}", file=sys.stderr)
                status = 2
    finally:
        sys.argv, sys.excepthook = saved
        if kernel is not None:
            sys.modules["ipykernel"] = kernel
    return status, out.getvalue(), err.getvalue()


def round_trip(name, tmp_path, extra=()):
    """A tiny run with --save, then --load: (first RESULT, second RESULT, second stdout)."""
    import json

    data = f"libfm:{write_toy_frappe(tmp_path / 'frappe_toy')}"
    ck, out1, out2 = tmp_path / "model.pt", tmp_path / "first.json", tmp_path / "second.json"
    status, stdout, stderr = run_demo(name, ["--data", data, *TINY, *extra, "--save", str(ck),
                                             "--out", str(out1)])
    assert status == 0, stderr[-2000:]
    status, stdout, stderr = run_demo(name, ["--data", data, "--load", str(ck), "--out", str(out2)])
    assert status == 0, stderr[-2000:]
    return json.loads(out1.read_text()), json.loads(out2.read_text()), stdout


def test_a_file_saved_while_the_flag_was_embed_dim_loads_with_its_width(tmp_path):
    """--save files written before --embed-dim became --dim hold the width as `embed_dim`: --load
    reads it as --dim (the libfm preset's 10 would not fit the saved 4-wide embeddings)."""
    import json

    data = f"libfm:{write_toy_frappe(tmp_path / 'frappe_toy')}"
    ck, out = tmp_path / "model.pt", tmp_path / "second.json"
    status, _, stderr = run_demo("DeepFM", ["--data", data, *TINY, "--save", str(ck)])
    assert status == 0, stderr[-2000:]
    payload = torch.load(ck, weights_only=True)
    payload["args"]["embed_dim"] = payload["args"].pop("dim")
    payload["extra"]["flags"] = ["embed_dim" if f == "dim" else f for f in payload["extra"]["flags"]]
    torch.save(payload, ck)
    status, stdout, stderr = run_demo("DeepFM", ["--data", data, "--load", str(ck), "--out", str(out)])
    assert status == 0, stderr[-2000:]
    assert "training skipped" in stdout and json.loads(out.read_text())["config"]["dim"] == 4


def test_recommend_ranks_every_item_in_the_users_latest_context(tmp_path):
    """--recommend USER: one line says what is ranked, then the top 10 (here all 8 items), each
    once, by decreasing probability; the user's latest row is their last test row."""
    import re

    data = f"libfm:{write_toy_frappe(tmp_path / 'frappe_toy')}"
    status, out, err = run_demo("DeepFM", ["--data", data, *TINY, "--recommend", "3"])
    assert status == 0, err[-2000:]
    head = next(ln for ln in out.splitlines() if ln.startswith("--recommend 3:"))
    assert "all 8 items ranked by predicted click probability" in head and "last test row" in head
    ranked = re.findall(r"^\s+(\d+)\. (\d\.\d+)  item (\d+)", out, flags=re.M)  # raw feature ids
    assert [int(r) for r, _, _ in ranked] == list(range(1, 9))
    assert len({i for _, _, i in ranked}) == 8
    probs = [float(p) for _, p, _ in ranked]
    assert probs == sorted(probs, reverse=True)


def test_raw_ids_of_a_loader_that_keeps_them_are_used_both_ways(tmp_path):
    """A CTRData carrying `field_raw` (raw feature ids per field) gives raw ids for --recommend
    and for printing; without it, codes stand in ('#3')."""
    data = Datasets.load(f"libfm:{write_toy_frappe(tmp_path / 'frappe_toy')}")
    assert data.field_raw is not None  # the libFM loader keeps the file's feature ids
    data.field_raw = None
    plain = build_field_ctr(data)
    assert plain.raw_id("user", 3) == "#3" and plain.code_of("user", "3") == 3
    assert plain.code_of("user", "#3") == 3 and plain.code_of("user", "99") is None
    data.field_raw = [np.arange(100 * k, 100 * k + d - 1) for k, d in enumerate(data.field_dims)]
    ctr = build_field_ctr(data)
    assert ctr.raw_id("user", 3) == "2" and ctr.code_of("user", "2") == 3
    assert ctr.code_of("user", "#3") is None
    assert ctr.describe_item(1) == "item 100"


@pytest.mark.slow  # builds the synthetic impressions: a few seconds
def test_synthetic_raw_ids_are_the_reviewer_and_item_ids():
    data = Datasets.load("synthetic")
    ctr = build_field_ctr(data)
    u = int(ctr.test.tensors["sparse"][0, 0])
    assert ctr.raw_id("user", u) == data.user_raw[u] and ctr.code_of("user", data.user_raw[u]) == u
    assert ctr.raw_id("item", 5) == data.item_raw[5]


@pytest.mark.parametrize("name,cls", [("WideDeep", "WideDeep"), ("DeepFM", "DeepFM"), ("DCNv2", "DCNv2"),
                                      ("AutoInt", "AutoInt"), ("FinalMLP", "FinalMLP")])
def test_an_out_of_range_id_is_a_clear_error_not_the_next_fields_row(name, cls):
    """All five field models keep every field in one table (row offsets[f] + id), so id 11 of a field
    of size 11 would read the next field's padding row: it must fail, naming the field, the id and
    the range, while the largest valid ids and the padding id still work."""
    mod = model_module("Ranking", name)
    model = getattr(mod, cls)(getattr(mod, f"{cls}Config")(field_dims=(11, 6, 4))).eval()
    for bad, field, text in (([[11, 1, 1]], 0, "id 11"), ([[1, -1, 1]], 1, "id -1"),
                             ([[1, 1, 4]], 2, "id 4")):
        with pytest.raises(ValueError) as info:
            model(torch.tensor(bad))
        message = str(info.value)
        assert f"sparse field {field}: {text} is out of range" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"expected 0\.\.10 \(field_dims\[0\] = 11"):
        model(torch.tensor([[11, 1, 1]]))
    with torch.no_grad():
        assert model(torch.tensor([[10, 5, 3], [0, 0, 0]])).shape == (2,)
