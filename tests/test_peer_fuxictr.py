"""The FuxiCTR side-by-side driver (`Utils/tools/peer_fuxictr.py`): what can be checked without
FuxiCTR installed — the pairing of our runs with FuxiCTR's by seed, and the ray stand-in."""

import json
import sys

import pytest

from Utils.tools import peer_fuxictr as peer


def _run(path, auc, logloss=0.3, epochs=10, **extra):
    res = {"model": "M", "data": "libfm:x", "protocol": "p", "epochs": epochs,
           "metrics": {"AUC": auc, "LogLoss": logloss, "GAUC": auc - 0.01}, **extra}
    path.write_text(json.dumps(res))


def test_runs_are_paired_by_the_seed_inside_each_file_not_by_file_order(tmp_path):
    # our stored runs: the summary lists them; frappe.json is seed 0, the others say their seed
    _run(tmp_path / "frappe.json", 0.95, config={"seed": 0})
    _run(tmp_path / "frappe_seed1.json", 0.96, config={"seed": 1})
    _run(tmp_path / "frappe_seed2.json", 0.97, config={"seed": 2})
    (tmp_path / "summary_frappe.json").write_text(json.dumps(
        {"runs": ["frappe_seed2.json", "frappe.json", "frappe_seed1.json"]}))
    # FuxiCTR: seeds 0 and 2 only, written in another order
    _run(tmp_path / "fuxictr_frappe_seed2.json", 0.975, seed=2, epochs=20,
         cpu_seconds_per_epoch=4.0, seconds_per_epoch=5.0)
    _run(tmp_path / "fuxictr_frappe_seed0.json", 0.94, seed=0, epochs=18,
         cpu_seconds_per_epoch=3.0, seconds_per_epoch=4.0)
    _run(tmp_path / "ours_vs_fuxictr_frappe_seed0.json", 0.951, seed=0, epochs=12,
         cpu_seconds_per_epoch=2.0, seconds_per_epoch=2.5)
    out = peer.paired_summary(tmp_path)
    assert out["seeds"] == [0, 2] and out["n"] == 2
    rows = out["paired"]["per_seed"]
    assert [(r["seed"], r["ours_AUC"], r["fuxictr_AUC"]) for r in rows] == [(0, 0.95, 0.94),
                                                                            (2, 0.97, 0.975)]
    assert out["paired"]["AUC_ours_minus_fuxictr"] == pytest.approx((0.01 - 0.005) / 2)
    assert out["paired"]["ours_AUC_at_least_fuxictr"] == 1
    # the paired difference's standard error: sd of (0.01, -0.005) over sqrt(2)
    assert out["paired"]["AUC_ours_minus_fuxictr_se"] == pytest.approx(
        (((0.01 - 0.0025) ** 2 + (-0.005 - 0.0025) ** 2) / 1) ** 0.5 / 2 ** 0.5)
    assert out["paired"]["LogLoss_ours_minus_fuxictr"] == pytest.approx(0.0)
    assert out["ours"]["metrics"]["AUC"] == pytest.approx(0.96)
    assert out["fuxictr"]["epochs"] == pytest.approx(19)
    (speed,) = out["speed"]
    assert speed["seed"] == 0 and speed["fuxictr_cpu_seconds_per_epoch"] == 3.0
    assert speed["ours_cpu_seconds_per_epoch"] == 2.0


def test_ray_stand_in_answers_imports_and_refuses_use(monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr("builtins.__import__", _no_ray(__import__))
    peer.placeholder_ray()
    import ray  # noqa: E402
    from ray.data import SaveMode  # noqa: E402  (the names FuxiCTR imports at load time)
    from ray.data.datasource.filename_provider import FilenameProvider  # noqa: F401, E402
    assert ray.is_initialized() is False
    with pytest.raises(ImportError, match="ray is not installed"):
        SaveMode()
    for name in ("ray", "ray.data", "ray.data.datasource", "ray.data.datasource.filename_provider"):
        monkeypatch.delitem(sys.modules, name)


def _no_ray(real_import):
    """An __import__ that fails for ray unless the stand-in is registered (as without ray)."""
    def fake(name, *args, **kwargs):
        if (name == "ray" or name.startswith("ray.")) and name not in sys.modules:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    return fake


def test_another_set_of_fuxictr_runs_is_paired_only_when_asked(tmp_path):
    """FuxiCTR run with our batch size (`fuxictr_frappe_batch1024_seed*.json`) sits beside its BARS
    runs: the default pairing ignores it, `peer_runs` pairs it instead."""
    _run(tmp_path / "frappe.json", 0.95, config={"seed": 0})
    (tmp_path / "summary_frappe.json").write_text(json.dumps({"runs": ["frappe.json"]}))
    _run(tmp_path / "fuxictr_frappe_seed0.json", 0.94, seed=0)
    _run(tmp_path / "fuxictr_frappe_batch1024_seed0.json", 0.96, seed=0)
    assert peer.paired_summary(tmp_path)["fuxictr"]["metrics"]["AUC"] == pytest.approx(0.94)
    other = peer.paired_summary(tmp_path, "fuxictr_frappe_batch1024_seed*.json")
    assert other["fuxictr"]["runs"] == ["fuxictr_frappe_batch1024_seed0.json"]
    assert other["paired"]["AUC_ours_minus_fuxictr"] == pytest.approx(-0.01)
    (tmp_path / "summary_frappe_other.json").write_text(json.dumps({"runs": ["frappe_other.json"]}))
    _run(tmp_path / "frappe_other.json", 0.97, config={"seed": 0})
    third = peer.paired_summary(tmp_path, "fuxictr_frappe_batch1024_seed*.json", "summary_frappe_other.json")
    assert third["ours"]["runs"] == ["frappe_other.json"]
    assert third["paired"]["AUC_ours_minus_fuxictr"] == pytest.approx(0.01)
