"""Utils.tools.ledger: the recall ledger's runner (missing runs only, refit after its train-only run,
nothing rerun unless forced, a failure leaves nothing behind) and its table (current, backed by the
summaries it writes)."""

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch

from Utils.tools import ledger

FAKE_DEMO = textwrap.dedent('''
    import argparse, json, os, sys
    p = argparse.ArgumentParser()
    for f in ("--data", "--seed", "--threads", "--out", "--refit-from", "--epochs", "--fail-on", "--checkpoint"):
        p.add_argument(f)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
    if a.checkpoint:  # the state after "epoch 1"; FAKE_INTERRUPT: the run dies there
        if a.resume:
            assert open(a.checkpoint).read() == "epoch 1"
        else:
            open(a.checkpoint, "w").write("epoch 1")
            if os.environ.get("FAKE_INTERRUPT"):
                sys.exit(137)
    if a.fail_on and a.fail_on in a.data:
        sys.exit(3)  # an interrupted or failed run writes nothing
    best = 4 + int(a.seed)
    res = {"metrics": {"Recall@10": 0.1 + 0.01 * int(a.seed), "NDCG@10": 0.05}, "epochs": best + 2,
           "best_epoch": best, "train_seconds": 10.0, "peak_rss_mb": 300.0 + int(a.seed),
           "config": {"refit_from": a.refit_from}}
    if a.refit_from:  # the refit trains exactly the chosen epoch count
        res.update(epochs=json.load(open(a.refit_from))["best_epoch"], refit_from={"path": a.refit_from})
        res["metrics"]["Recall@10"] += 0.005
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(res, open(a.out, "w"))
''')


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    demo = tmp_path / "Classic Models" / "Recall" / "Fake" / "demo.py"
    demo.parent.mkdir(parents=True)
    demo.write_text(FAKE_DEMO)
    (tmp_path / "ledger.toml").write_text(textwrap.dedent('''
        [data]
        beauty = "beauty-spec"
        toys = "toys-spec"
        [[config]]
        name = "fake"
        model = "Fake"
        label = "Fake, a loss"
        flags = "--epochs 9 --fail-on toys"
        data = ["beauty", "toys"]
        seeds = [0, 1]
        refit = true
    '''))
    monkeypatch.setattr(ledger, "ROOT", tmp_path)
    monkeypatch.setattr(ledger, "LOGS", tmp_path / "logs")
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    return tmp_path


def _calls(root: Path) -> list[list[str]]:
    f = root / "calls.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.is_file() else []


def test_runner_runs_what_is_missing_refits_after_its_run_and_never_reruns(fake_root, capsys):
    specs, configs, _ = ledger.load(fake_root / "ledger.toml")
    jobs = ledger.all_jobs(configs)
    # seed-major order, each refit right after its own train-only run
    assert [str(j) for j in jobs[:4]] == ["fake beauty seed 0 (train-only)", "fake beauty seed 0 (refit)",
                                          "fake toys seed 0 (train-only)", "fake toys seed 0 (refit)"]
    failed = ledger.run(jobs, specs)
    out = capsys.readouterr().out
    # toys fails (the fake exits 3 and writes nothing): its refits are skipped, beauty's all finish
    assert failed == 4 and out.count("FAIL") == 2 and out.count("skip") == 2
    done = sorted(p.name for p in (fake_root / "assets" / "Fake" / "results" / "ledger").iterdir())
    assert done == ["beauty_fake_refit_seed0.json", "beauty_fake_refit_seed1.json",
                    "beauty_fake_seed0.json", "beauty_fake_seed1.json"]
    calls = _calls(fake_root)
    refit = [c for c in calls if "--refit-from" in c]
    assert len(refit) == 2 and all(c[c.index("--refit-from") + 1].endswith(f"beauty_fake_seed{c[c.index('--seed') + 1]}.json")
                                   for c in refit)
    r = json.loads((fake_root / "assets/Fake/results/ledger/beauty_fake_refit_seed1.json").read_text())
    assert r["epochs"] == 5  # seed 1's best epoch
    assert all(c[:2] == ["--data", "beauty-spec" if "beauty" in c[-1] or "beauty" in " ".join(c) else "toys-spec"]
               or c[1] == "toys-spec" for c in calls)
    # a second pass runs only what is missing (the failing toys runs), never a finished run
    n = len(calls)
    ledger.run(jobs, specs)
    again = _calls(fake_root)[n:]
    assert again and all("toys-spec" in c for c in again)
    # --force reruns a config's finished runs
    n = len(_calls(fake_root))
    ledger.run([j for j in jobs if j.data == "beauty"], specs, force={"fake"})
    assert len(_calls(fake_root)) - n == 4


def test_an_interrupted_checkpoint_run_goes_on_from_its_state_and_removes_it_when_done(
        fake_root, capsys, monkeypatch):
    toml = fake_root / "ledger.toml"
    toml.write_text(toml.read_text().replace("refit = true", "refit = true\ncheckpoint = true"))
    specs, configs, _ = ledger.load(toml)
    job = ledger.all_jobs(configs)[0]  # beauty seed 0, train-only
    assert job.state == fake_root / "logs" / "beauty_fake_seed0.state.pt"
    monkeypatch.setenv("FAKE_INTERRUPT", "1")
    assert ledger.run([job], specs) == 1
    assert "its training state is kept" in capsys.readouterr().out and job.state.is_file()
    assert not job.out.is_file()
    ledger.status([job])  # the kept state is listed as a partial run (this fake's is not a torch file)
    assert "[part] fake beauty seed 0 (train-only)" in capsys.readouterr().out
    torch.save({"epoch": 3, "wall_seconds": 41.0}, job.state.with_suffix(".real"))
    assert ledger._state_epochs(job.state.with_suffix(".real")) == "3 epochs done, 41 s wall"
    monkeypatch.delenv("FAKE_INTERRUPT")
    assert ledger.run([job], specs) == 0
    assert "resume fake beauty seed 0" in capsys.readouterr().out
    first, second = _calls(fake_root)
    assert first[-2:] == ["--checkpoint", "logs/beauty_fake_seed0.state.pt"]  # a fresh start
    assert second[-3:] == ["--checkpoint", "logs/beauty_fake_seed0.state.pt", "--resume"]
    assert job.out.is_file() and not job.state.exists()  # done: the state is gone
    log = (fake_root / "logs" / "beauty_fake_seed0.log").read_text()
    assert log.count("--checkpoint") == 2  # both attempts kept in one log


def test_summaries_and_table_hold_mean_and_sd_over_seeds(fake_root):
    specs, configs, _ = ledger.load(fake_root / "ledger.toml")
    ledger.run(ledger.all_jobs(configs), specs)
    s = ledger.summarise(configs[0])
    train = s["results"]["beauty"]["train-only"]
    assert train["n"] == 2 and train["metrics"]["Recall@10"] == pytest.approx(0.105)
    assert train["sd"]["Recall@10"] == pytest.approx(0.01 / 2 ** 0.5)  # sample sd of 0.10, 0.11
    assert train["peak_rss_mb"] == 301.0  # the largest over the seeds
    assert s["results"]["beauty"]["refit"]["metrics"]["Recall@10"] == pytest.approx(0.11)
    assert "toys" not in s["results"]
    published = [{"label": "X (some paper)", "protocol": "refit", "beauty": [0.5, 0.25]}]
    table = ledger.render(configs, published, {"fake": s})
    row = next(ln for ln in table.splitlines() if ln.startswith("| [Fake]") and "| refit |" in ln)
    assert "| 0.1100 ± 0.0071 | 0.0500 ± 0.0000 |" in row  # Recall@10 of 0.105, 0.115; NDCG@10 equal
    assert "| 2 / – / 0 |" in row  # seeds: 2 on Beauty, Sports not configured, none on Toys yet
    assert "| X (some paper) | refit | 0.5000 | 0.2500 |" in table


def test_flag_values_read_numbers_as_numbers_and_switches_as_true():
    assert ledger.flag_values(("--loss", "gbce", "--gbce-t", "0.75", "--logq", "--negatives", "256",
                               "--hidden", "256,128", "--shared-negatives")) == {
        "--loss": "gbce", "--gbce-t": 0.75, "--logq": True, "--negatives": 256, "--hidden": "256,128",
        "--shared-negatives": True}


def test_the_ledger_file_names_real_demos_and_flags_they_accept():
    specs, configs, published = ledger.load()
    assert set(specs) == {"beauty", "sports", "toys"}
    root = Path(ledger.__file__).resolve().parents[2]
    shared = set()
    for f in [root / "Utils" / "io.py", *sorted((root / "Utils" / "loops").glob("*.py"))]:
        shared |= set(re.findall(r'add_argument\(\s*"(--[\w-]+)"', f.read_text()))
    for c in configs:
        demo = (root / "Classic Models" / "Recall" / c.model / "demo.py").read_text()
        accepted = shared | set(re.findall(r'add_argument\(\s*"(--[\w-]+)"', demo))
        unknown = [f for f in c.flags if f.startswith("--") and f not in accepted]
        assert not unknown, f"{c.name}: {unknown} are not flags of {c.model}'s demo"
    assert all(len(p[d]) == 2 for p in published for d in specs if d in p)


def test_the_recall_ledger_in_the_readme_is_current():
    assert ledger.table(write=False), "the recall ledger is stale: run `python -m Utils.tools.ledger table`"


def test_ledger_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "l.toml"
    bad.write_text('[data]\nbeauty = "x"\n[[config]]\nname = "a"\nmodel = "SASRec"\nlabel = "l"\n'
                   'flags = ""\ndata = ["sports"]\nseeds = [0]\n')
    with pytest.raises(SystemExit, match=r"names data \['sports'\]"):
        ledger.load(bad)
    bad.write_text("[[config]]\nname = 1\n")
    with pytest.raises(SystemExit, match="lacks"):
        ledger.load(bad)


def test_same_budget_reads_each_curve_at_the_references_slowest_time_to_its_best(fake_root):
    specs, configs, _ = ledger.load(fake_root / "ledger.toml")
    ref = dict(configs[0].__dict__, name="ref")
    other = dict(configs[0].__dict__, name="other", model="Other", label="Other, its loss")
    configs = [ledger.Config(**ref), ledger.Config(**other)]
    # the reference's seeds reach their best (0.06) at 100 s and 150 s: the budget is 150 s
    ref_curves = [[[50.0, 0.04], [100.0, 0.06], [160.0, 0.05]], [[80.0, 0.05], [150.0, 0.06]]]
    # the other model is better in the end (0.07 at 300 s) but, by 150 s, at 0.045 and 0.055
    other_curves = [[[60.0, 0.03], [140.0, 0.045], [300.0, 0.07]], [[150.0, 0.055], [151.0, 0.08]]]
    summaries = {"ref": {"results": {"beauty": {"train-only": {"valid_curves": ref_curves}}}},
                 "other": {"results": {"beauty": {"train-only": {"valid_curves": other_curves}}}}}
    rows = ledger.same_budget_rows(configs, summaries, {"reference": "ref", "compare": ["other"]})
    assert [r["config"].name for r in rows] == ["ref", "other"]
    assert rows[0]["budget"] == 150.0 and rows[0]["within"] == pytest.approx(0.06)
    assert rows[1]["within"] == pytest.approx((0.045 + 0.055) / 2)  # the epoch at exactly 150 s counts
    assert rows[1]["best"] == pytest.approx((0.07 + 0.08) / 2)
    assert rows[1]["time_to_best"] == pytest.approx((300 + 151) / 2)
    # a run whose first epoch ends after the budget has no value there: the cell is empty, not a mean
    summaries["other"]["results"]["beauty"]["train-only"]["valid_curves"][1] = [[200.0, 0.08]]
    rows = ledger.same_budget_rows(configs, summaries, {"reference": "ref", "compare": ["other"]})
    assert rows[1]["within"] is None
    for s in summaries.values():  # what the main table and the cost table read
        s["results"]["beauty"]["train-only"].update(n=2, metrics={"Recall@10": 0.1, "NDCG@10": 0.05},
                                                    sd={"Recall@10": 0.0, "NDCG@10": 0.0},
                                                    epochs=3.0, train_seconds=100.0)
    table = ledger.render(configs, [], summaries, {"reference": "ref", "compare": ["other"]})
    assert "| Other: its loss | Beauty | 150 | 2 | – | 0.0750 | 250 |" in table


def test_same_budget_names_unknown_configs(tmp_path):
    f = tmp_path / "l.toml"
    f.write_text('[same_budget]\nreference = "nope"\ncompare = []\n')
    with pytest.raises(SystemExit, match=r"\[same_budget\] names \['nope'\]"):
        ledger.load_same_budget([], f)


def test_a_peer_is_a_row_of_its_protocol_and_a_timed_one_says_whether_it_reached_the_target(fake_root):
    (fake_root / "ledger.toml").write_text((fake_root / "ledger.toml").read_text() + textwrap.dedent('''
        [[peer]]
        label = "Peer SASRec"
        data = "beauty"
        protocol = "train-only"
        timing = true
        json = "peer.json"
        command = "peer --out peer.json"
    '''))
    toml = fake_root / "ledger.toml"
    assert ledger.load_peers(toml)[0]["result"] is None  # not run yet: no row
    _, configs, _ = ledger.load(toml)
    assert "Peer SASRec" not in ledger.render(configs, [], {"fake": {"results": {}}}, None, ledger.load_peers(toml))
    curve = [{"epoch": 1, "NDCG@10": 0.02, "wall_seconds": 500.0}, {"epoch": 2, "NDCG@10": 0.03, "wall_seconds": 990.0}]
    result = {"metrics": {"Recall@10": 0.0446, "NDCG@10": 0.0209}, "target_ndcg": 0.0314,
              "time_to_target_seconds": None, "time_to_target_epoch": None, "curve": curve,
              "stopped_by_time_budget": True, "config": {"time_budget": 900.0}}
    (fake_root / "peer.json").write_text(json.dumps(result))
    table = ledger.render(configs, [], {"fake": {"results": {}}}, None, ledger.load_peers(toml))
    # its test numbers in its data set's columns, under the protocol it names
    assert ("| Peer SASRec | train-only | 0.0446 | 0.0209 | – | – | – | – | 1 / – / – | [json](../../peer.json) |"
            in table)
    assert ("| Peer SASRec (stopped by a 900 s budget after 2 epochs) | Beauty | 0.0314 | 0 of 1 | – | – | 0.0300 |"
            in table)
    result.update(time_to_target_seconds=990.0, time_to_target_epoch=2, stopped_by_time_budget=False,
                  config={"time_budget": None})
    (fake_root / "peer.json").write_text(json.dumps(result))
    table = ledger.render(configs, [], {"fake": {"results": {}}}, None, ledger.load_peers(toml))
    assert "| Peer SASRec | Beauty | 0.0314 | 1 of 1 | 990 | 2.0 | 0.0300 |" in table
    # without timing = true it is a row of the table only
    toml.write_text(toml.read_text().replace("timing = true\n", ""))
    table = ledger.render(configs, [], {"fake": {"results": {}}}, None, ledger.load_peers(toml))
    assert "| Peer SASRec | train-only |" in table and "| Peer SASRec | Beauty |" not in table
    toml.write_text(toml.read_text().replace('protocol = "train-only"', 'protocol = "paper"'))
    with pytest.raises(SystemExit, match="protocol 'paper' is not one of"):
        ledger.load_peers(toml)


def _cfg(name, model="SASRec", group="main", label=None):
    return ledger.Config(name, model, label or f"{model}, {name}", ("--x",), ("beauty",), (0,), False, {},
                         False, group)


def _summary(valid_ndcg, test_ndcg, n=1):
    res = {"n": n, "metrics": {"Recall@10": 0.08, "NDCG@10": test_ndcg}, "sd": {"Recall@10": 0.0,
           "NDCG@10": 0.0}, "best_epoch": 5, "valid": {"Recall@10": 0.1, "NDCG@10": valid_ndcg}}
    return {"results": {"beauty": {"train-only": res}}}


def test_choices_and_ablation_steps_are_decided_on_validation_never_on_test():
    """The headline is the config with the best validation NDCG@10 even when another has the best
    test NDCG@10; an ablation step is kept when its validation beats the base's, whatever its test."""
    configs = [_cfg("sasrec_ss"), _cfg("sasrec_ce"), _cfg("sasrec_bce")]
    summaries = {"sasrec_ss": _summary(0.0583, 0.0490), "sasrec_ce": _summary(0.0631, 0.0450),
                 "sasrec_bce": _summary(0.0374, 0.0309)}
    rows = [r for r in ledger.choice_table(configs, summaries) if r.startswith("| SASRec")]
    assert "sasrec_ce" in rows[0] and "0.0631" in rows[0]  # best validation first, though worse on test
    ablation = [_cfg("a_up", group="ablation", label="up"), _cfg("a_down", group="ablation", label="down"),
                _cfg("sasrec_ss_combined", group="ablation", label="combined")]
    summaries |= {"a_up": _summary(0.0600, 0.0400), "a_down": _summary(0.0570, 0.0600),
                  "sasrec_ss_combined": _summary(0.0620, 0.0500)}
    table = {r.split(" | ")[0].strip("| "): r.split(" | ")[5] for r in
             ledger.ablation_table(configs, ablation, summaries) if r.startswith("| ") and " | " in r}
    assert table["up"] == "yes" and table["down"] == "no" and table["combined"] == "–"


def test_a_one_seed_candidate_does_not_displace_a_three_seed_headline():
    """The headline is the best validation among configurations run with three seeds; a one-seed run
    that lands higher on validation is listed after them as a candidate, not taken as the choice."""
    configs = [_cfg("sasrec_ce_random"), _cfg("sasrec_ce"), _cfg("sasrec_candidate")]
    summaries = {"sasrec_ce_random": _summary(0.0713, 0.0564, n=3),
                 "sasrec_ce": _summary(0.0631, 0.0491, n=3),
                 "sasrec_candidate": _summary(0.0723, 0.0548, n=1)}
    rows = [r for r in ledger.choice_table(configs, summaries) if r.startswith("| SASRec")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| SASRec: sasrec_ce_random", "| SASRec: sasrec_ce", "| SASRec: sasrec_candidate"]


def test_partial_writes_the_curve_an_unfinished_run_reached(fake_root):
    """`ledger partial`: an unfinished run's kept state becomes `<out>.partial.json` with its curve and
    best validation so far; a finished run (RESULT json present) gets none."""
    toml = fake_root / "ledger.toml"
    toml.write_text(toml.read_text().replace("refit = true", "refit = true\ncheckpoint = true"))
    _, configs, _ = ledger.load(toml)
    job = ledger.all_jobs(configs)[0]
    job.state.parent.mkdir(parents=True, exist_ok=True)
    epochs = [{"epoch": 1, "loss": 5.0, "NDCG@10": 0.01, "Recall@10": 0.02, "wall_seconds": 10.0},
              {"epoch": 2, "loss": 4.0, "NDCG@10": 0.03, "Recall@10": 0.05, "wall_seconds": 20.0}]
    torch.save({"epoch": 2, "wall_seconds": 20.0,
                "history": {"epochs": epochs, "best_epoch": 2, "best_metric": 0.03}}, job.state)
    out = ledger.write_partial(job)
    got = json.loads(out.read_text())
    assert out.name.endswith("_seed0.partial.json") and not job.out.exists()
    assert got["epochs_done"] == 2 and got["best_valid_so_far"] == 0.03
    assert [p["NDCG@10"] for p in got["curve"]] == [0.01, 0.03]
