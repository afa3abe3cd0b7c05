"""Utils.demo_io: one checkpoint format for every demo family.

For one small demo of each family (sequence recall: SASRec; field CTR: DeepFM; behaviour CTR: DIN;
multi-task: MMoE; re-ranking: MMR): --save writes the one format, --load reads back the same
weights and config (and gives the same test metrics); a file of demo A given to demo B fails with
exit status 2 and one line naming both; a file that is no checkpoint fails clearly; an existing
--save path is never replaced without --overwrite.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tests.conftest import result_of, run_demo_in_process
from Utils import demo_io

STAGE = {"SASRec": "Recall", "DeepFM": "Ranking", "DIN": "Ranking", "MMoE": "Ranking",
         "MMR": "Re-ranking"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """A --data spec per demo (tiny files; MMoE runs on its synthetic default)."""
    from tests.test_bad_input_ranking import write_tiny_seqtxt
    from tests.test_bad_input_rerank import write_seqtxt as write_rerank_seqtxt
    from tests.test_bad_input_seqrec import write_seqtxt
    from tests.test_field_ctr import write_toy_frappe

    d = tmp_path_factory.mktemp("demo_io_data")
    return {"SASRec": f"seqtxt:{write_seqtxt(d / 'seq.txt')}",
            "DeepFM": f"libfm:{write_toy_frappe(d / 'frappe_toy')}",
            "DIN": f"seqtxt:{write_tiny_seqtxt(d / 'din', attributes=True)}",
            "MMoE": "synthetic",
            "MMR": f"seqtxt:{write_rerank_seqtxt(d / 'rerank')}"}


def flags(name: str, data: dict[str, str]) -> list[str]:
    from tests.test_bad_input_rerank import FAST
    from tests.test_bad_input_seqrec import TINY as SEQ
    from tests.test_field_ctr import TINY as FIELD

    small = {"SASRec": SEQ["SASRec"], "DeepFM": FIELD,
             "DIN": ["--epochs", "1", "--dim", "4", "--batch-size", "256"],
             "MMoE": ["--epochs", "1"], "MMR": FAST["MMR"]}[name]
    return ["--data", data[name], *small, "--threads", "1"]


def run(name: str, argv: list[str]):
    return run_demo_in_process(STAGE[name], name, argv)


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """name -> (the --save file, the first run's RESULT)."""
    d = tmp_path_factory.mktemp("demo_io_saved")
    out = {}
    for name in STAGE:
        path = d / f"{name}.pt"
        code, stdout, stderr, _ = run(name, [*flags(name, data), "--save", str(path)])
        assert code == 0, (name, stderr[-2000:])
        out[name] = (path, result_of(stdout))
    return out


def test_every_family_writes_the_one_format(saved):
    for name, (path, _) in saved.items():
        payload = torch.load(path, weights_only=True)  # plain types and tensors only
        assert set(payload) == {"format", "version", "demo", "models", "args", "ids", "extra"}
        assert (payload["format"], payload["version"]) == (demo_io.FORMAT, demo_io.VERSION)
        assert payload["demo"] == name and "data" in payload["args"]
        for entry in payload["models"].values():
            assert set(entry) == {"class", "config", "state"} and entry["state"]
        assert demo_io.read_checkpoint(path, demo=name)["demo"] == name


def _model_of(ns: dict) -> tuple[torch.nn.Module, dict] | None:
    """The demo's main model after --load and its config (None where a function keeps it local:
    then the loaded models are saved again and compared)."""
    model = ns.get("model")
    if not isinstance(model, torch.nn.Module):
        return None
    return model, asdict(getattr(model, "config", None) or model.cfg)


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v.cpu(), b[k].cpu()), k


@pytest.mark.parametrize("name", list(STAGE))
def test_save_then_load_gives_the_same_state_config_and_metrics(name, saved, data, tmp_path):
    path, first = saved[name]
    payload = demo_io.read_checkpoint(path, demo=name)
    again = tmp_path / "again.pt"
    code, stdout, stderr, ns = run(name, [*flags(name, data), "--load", str(path)])
    assert code == 0, stderr[-2000:]
    assert result_of(stdout)["metrics"] == first["metrics"]
    loaded = _model_of(ns)
    if loaded is not None:  # the demo's model after --load: the saved class, config and weights
        model, config = loaded
        entry = payload["models"]["model"]
        assert entry["class"] == type(model).__name__
        assert entry["config"] == demo_io._plain(config)
        _same_state(entry["state"], model.state_dict())
    else:  # the loaded models, saved again, hold the same classes, configs and weights
        code, _, stderr, _ = run(name, [*flags(name, data), "--load", str(path), "--save", str(again)])
        assert code == 0, stderr[-2000:]
        resaved = demo_io.read_checkpoint(again, demo=name)
        assert list(resaved["models"]) == list(payload["models"])
        for key, entry in payload["models"].items():
            assert resaved["models"][key]["class"] == entry["class"]
            assert resaved["models"][key]["config"] == entry["config"]
            _same_state(resaved["models"][key]["state"], entry["state"])
        assert resaved["args"] == payload["args"] and resaved["ids"] == payload["ids"]


# a file of the first demo given to the second: exit 2, one line naming both demos
CROSS = [("SASRec", "DIN"), ("DIN", "DeepFM"), ("DeepFM", "SASRec"), ("MMR", "MMoE"),
         ("MMoE", "MMR"), ("DIN", "MMoE")]


@pytest.mark.parametrize("writer,reader", CROSS)
def test_another_demos_file_fails_in_one_line_naming_both(writer, reader, saved, data):
    code, stdout, stderr, _ = run(reader, [*flags(reader, data), "--load", str(saved[writer][0])])
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --load"), stderr
    assert f"written by the {writer} demo's --save" in lines[0], lines[0]
    wanted = lines[0].split("expected", 1)[1]  # "a file written by the MMR, DPP or PRM demo's --save"
    assert reader in wanted and "demo's --save" in wanted, lines[0]
    assert "RESULT" not in stdout


@pytest.mark.parametrize("name", list(STAGE))
@pytest.mark.parametrize("kind", ["text", "untagged"])
def test_a_file_that_is_no_checkpoint_fails_clearly(name, kind, data, tmp_path):
    path = tmp_path / "not_a_checkpoint.pt"
    if kind == "text":
        path.write_text("not a model\n")
    else:  # a torch file of another program: no format tag
        torch.save({"model": {"w": torch.zeros(2)}, "demo": name}, path)
    code, _, stderr, _ = run(name, [*flags(name, data), "--load", str(path)])
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert "not a checkpoint written by" in lines[0] and "--save" in lines[0], lines[0]


@pytest.mark.parametrize("name", list(STAGE))
def test_an_existing_save_path_is_kept_without_overwrite(name, data, tmp_path):
    path = tmp_path / "exists.pt"
    path.write_bytes(b"keep me")
    code, stdout, stderr, _ = run(name, [*flags(name, data), "--save", str(path)])
    assert code == 2 and "--overwrite" in stderr.strip().splitlines()[-1], stderr
    assert path.read_bytes() == b"keep me" and "RESULT" not in stdout


def test_writer_and_reader_round_trip_and_refuse_overwrite(tmp_path):
    """Direct: several named models, args, ids and extras come back equal; the tag, the version
    and the demo name are checked; overwrite only when asked."""
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    path = tmp_path / "x.pt"
    demo_io.write_checkpoint(path, demo="Toy", models={"model": (a, {"n": 3}), "head": (b, {"n": 2})},
                             args={"data": "synthetic", "seed": 1}, ids={"item": ["<pad>", "a"]},
                             epochs={"Toy": 2}, table=torch.arange(4))
    p = demo_io.read_checkpoint(path, demo="Toy")
    assert list(p["models"]) == ["model", "head"] and p["models"]["head"]["class"] == "Linear"
    assert p["models"]["model"]["config"] == {"n": 3} and p["args"]["seed"] == 1
    assert p["ids"]["item"] == ["<pad>", "a"] and p["extra"]["epochs"] == {"Toy": 2}
    assert torch.equal(p["extra"]["table"], torch.arange(4))
    restored = demo_io.restore(lambda **c: torch.nn.Linear(c["n"], 2), p["models"]["model"],
                               "cpu", path)
    assert torch.equal(restored.weight, a.weight)
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo_io.write_checkpoint(path, demo="Toy", models={})
    demo_io.write_checkpoint(path, demo="Toy", models={}, overwrite=True)
    with pytest.raises(ValueError, match="written by the Toy demo's --save; expected a file "
                                         "written by the Other demo's --save"):
        demo_io.read_checkpoint(path, demo="Other")
    torch.save({**torch.load(path, weights_only=True), "version": 99}, path)
    with pytest.raises(ValueError, match="version 99; expected version 1"):
        demo_io.read_checkpoint(path, demo="Toy")
    with pytest.raises(FileNotFoundError, match="no such file"):
        demo_io.read_checkpoint(tmp_path / "none.pt", demo="Toy")
