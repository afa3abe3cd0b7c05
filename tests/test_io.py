"""RESULT line, checkpoints and plotting helpers."""

import math

import pytest
import torch

from Utils.io import load_checkpoint, parse_result_line, print_result, save_checkpoint
from Utils.plotting import plot_curves


def test_result_line_is_last_and_parseable(capsys, tmp_path):
    out = tmp_path / "r.json"
    print("some progress")
    res = print_result(model="M", data="synthetic", protocol="p", metrics={"NDCG@10": 0.1234567891,
                       "MRR": math.nan}, baseline={"name": "Popularity", "metrics": {"NDCG@10": 0.01}},
                       train_seconds=1.0, eval_seconds=0.5, epochs=2, params=10, out=str(out))
    text = capsys.readouterr().out
    assert text.strip().splitlines()[-1].startswith("RESULT {")
    parsed = parse_result_line(text)
    assert parsed == res and parsed["metrics"]["MRR"] is None  # NaN is not valid JSON: null
    assert set(parsed) >= {"model", "data", "protocol", "metrics", "baseline", "train_seconds",
                           "eval_seconds", "epochs", "params"}
    assert out.is_file()


def test_checkpoint_roundtrip_and_no_silent_overwrite(tmp_path):
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters())
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    p = save_checkpoint(tmp_path / "c.pt", m, opt, epoch=3)
    m2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(m2.parameters())
    extra = load_checkpoint(p, m2, opt2)
    assert extra["epoch"] == 3 and torch.equal(m.weight, m2.weight)
    assert opt2.state_dict()["state"][0]["step"] == 1
    with pytest.raises(FileExistsError, match="overwrite"):
        save_checkpoint(p, m)


def test_plot_curves_writes_png(tmp_path):
    p = plot_curves({"a": ([1, 2, 3], [0.1, 0.2, 0.25])}, tmp_path / "x.png", ylabel="NDCG@10")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_model_file_imports_by_path_and_names_a_missing_file(tmp_path):
    import sys

    from Utils.io import load_model_file

    f = tmp_path / "model.py"
    f.write_text("from dataclasses import dataclass\n\n@dataclass\nclass Cfg:\n    d: int = 3\n")
    mod = load_model_file(f, "tmp_model_under_test")
    assert mod.Cfg().d == 3 and sys.modules["tmp_model_under_test"] is mod  # dataclasses need it
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_model_file(tmp_path / "nope.py", "nope_model")
