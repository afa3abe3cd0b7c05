"""The README results overview must match the stored RESULT json files, and each note's headline row the
overview's row for its model."""

import json
import re

import pytest

from Utils.tools import notes_check, results_table


def test_readme_results_section_is_current():
    assert results_table.update_readme(check=True), (
        "README results section is stale: run `python -m Utils.tools.results_table`")


def test_render_reads_stored_results(tmp_path):
    res = tmp_path / "assets" / "Foo" / "results"
    res.mkdir(parents=True)
    (res / "beauty.json").write_text(
        '{"model": "Foo", "data": "seqtxt:x/Beauty.txt", "metrics": {"Recall@10": 0.05, "NDCG@10": 0.02},'
        ' "baseline": {"name": "Popularity", "metrics": {"Recall@10": 0.011, "NDCG@10": 0.005}}}')
    (res / "synthetic.json").write_text('{"model": "Foo", "data": "synthetic", "metrics": {"AUC": 0.9}}')
    table = results_table.render(tmp_path)
    assert "R@10 0.0500" in table and "Popularity: R@10 0.0110" in table
    assert "AUC 0.9" not in table  # synthetic runs are not headline numbers


def test_stage_ledgers_are_current():
    assert results_table.update_ledgers(check=True), (
        "a ledger in Classic Models/<Stage>/README.md is stale: run `python -m Utils.tools.results_table`")


# --- the note's headline row and the overview's row show the same numbers ---------------------------

# The headline metrics compared per stage: (name in the note's column header, name in the overview).
HEADLINE_METRICS = {"Recall": [("Recall@10", "R@10"), ("NDCG@10", "N@10")], "Ranking": [("AUC", "AUC")],
                    "Re-ranking": [("NDCG@10", "N@10")]}
# Models in HEADLINE without a model note: the funnel's results sit in `Classic Models/README.md`, per stage.
NO_NOTE = {"Pipeline"}
VALUE = r"([-−]?\d+\.\d+)(?:\s*±\s*(\d+\.\d+))?"


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _overview_cell(model: str) -> str:
    """The 'This repo' cell of the model's row in the top README's results overview."""
    text = (results_table.ROOT / "README.md").read_text()
    block = text.split(results_table.START, 1)[1].split(results_table.END, 1)[0]
    rows = [r for r in block.splitlines() if f"/{model}/README.md#results" in r]
    assert len(rows) == 1, f"{model}: {len(rows)} rows in the README results overview"
    return _cells(rows[0])[2]


def _headline_table(model: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and data rows of the first table of the note's Results section."""
    note = next((results_table.ROOT / "Classic Models").glob(f"*/{model}/README.md"))
    first, section = notes_check.section_text(note.read_text(), "Results")
    rows, table = [], False
    for line in section.splitlines():
        if line.strip().startswith("|"):
            table = True
            rows.append(line)
        elif table:
            break
    body = [r for r in rows if not re.fullmatch(r"\|[\s:|-]+\|?", r.strip())]
    assert len(body) >= 2, f"{model}: no table with a data row in the note's Results"
    return _cells(body[0]), [_cells(r) for r in body[1:]]


def _value(text: str) -> tuple[str, str | None] | None:
    m = re.search(VALUE, text.replace("*", ""))
    return (m.group(1), m.group(2)) if m else None


def _same(shown: str, overview: str) -> bool:
    """Equal at the digits shown: the note's rounding of the number the overview rounds."""
    d, e = (len(x.split(".")[1]) for x in (shown, overview))
    a, b = (float(x.replace("−", "-")) for x in (shown, overview))
    return shown == overview if d == e else abs(a - b) <= 0.5 * 10 ** -d + 0.5 * 10 ** -e + 1e-12


def _compare(model: str, label: str, note_cell: str, overview_value: tuple[str, str | None],
             sd_in_overview: bool = True) -> list[str]:
    """Problems of one number; an sd the note shows must be the overview's (when the overview shows sds)."""
    got = _value(note_cell)
    if got is None:
        return [f"{model} {label}: no number in the note's cell {note_cell!r}"]
    problems = []
    if not _same(got[0], overview_value[0]):
        problems.append(f"{model} {label}: note {got[0]}, README overview {overview_value[0]}")
    if sd_in_overview and got[1] is not None and (overview_value[1] is None
                                                  or not _same(got[1], overview_value[1])):
        problems.append(f"{model} {label}: note sd {got[1]}, README overview sd {overview_value[1]}")
    return problems


def _check_headline_row(model: str) -> tuple[list[str], int]:
    """(problems, numbers compared) between the note's headline row and the overview's row of `model`."""
    stage = results_table._folder_of(model).parent.name
    header, rows = _headline_table(model)
    cell = _overview_cell(model)
    problems: list[str] = []
    compared = 0
    if any(k.startswith("MSE_") for k in _headline_metrics(model)):
        # MMoE's study: one row per correlation, one column per model. The overview prints the means of the
        # run json; the note's sd (n - 1) and median come from the summary `--summarize` computes from it.
        names = [re.sub(r"\s*\(.*|,.*", "", h) for h in header]
        for row in rows:
            corr = _value(row[0])
            if corr is None or f"ρ={corr[0]}:" not in cell:
                continue
            part = cell.split(f"ρ={corr[0]}:", 1)[1].split("·", 1)[0]
            for name, value in zip(names[1:], row[1:]):
                m = re.search(rf"(?<![\w-]){re.escape(name)} {VALUE}", part)
                if m:
                    compared += 1
                    problems += _compare(model, f"MSE {name} at p = {corr[0]}", value, (m.group(1), m.group(2)),
                                         sd_in_overview=False)
        return problems, compared
    for note_key, overview_key in HEADLINE_METRICS[stage]:
        col = next((i for i, h in enumerate(header) if re.search(rf"(?<![A-Za-z]){re.escape(note_key)}(?!\d)", h)),
                   None)
        if col is None:
            problems.append(f"{model}: no {note_key} column in the note's headline table ({header})")
            continue
        m = re.search(rf"(?<![\w/]){re.escape(overview_key)} {VALUE}", cell)
        if m is None:
            problems.append(f"{model}: no {overview_key} in the README overview cell {cell!r}")
            continue
        compared += 1
        problems += _compare(model, note_key, rows[0][col], (m.group(1), m.group(2)))
    return problems, compared


def _headline_metrics(model: str) -> dict:
    name = results_table.headline_file(model)
    return json.loads((results_table.ROOT / "assets" / model / "results" / name).read_text())["metrics"]


MODELS = [m for m in results_table.HEADLINE if m not in NO_NOTE
          and (results_table.ROOT / "assets" / m / "results" / results_table.headline_file(m)).is_file()]


def test_every_headline_model_is_compared():
    assert {"SASRec", "HSTU", "YoutubeDNN", "MIND", "DIN", "DPP", "MMoE"} <= set(MODELS)
    assert all(results_table._folder_of(m) is not None for m in MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_note_headline_row_matches_the_readme_overview(model):
    """The first data row of the note's Results table (ours) shows, at its digits, the Recall@10 / NDCG@10
    (recall), AUC (ranking) or NDCG@10 (re-ranking) of the README overview's row for the model: both come
    from the json `results_table.HEADLINE` / `SUMMARY` names. An sd the note shows must match too."""
    problems, compared = _check_headline_row(model)
    assert not problems, "\n".join(problems)
    assert compared >= 1, f"{model}: no headline number compared"


def test_headline_row_check_catches_a_drifted_note(tmp_path, monkeypatch):
    """A note whose headline row rounds another run than the overview's json is caught, at the digits shown."""
    note = tmp_path / "Classic Models" / "Recall" / "Foo" / "README.md"
    note.parent.mkdir(parents=True)
    res = tmp_path / "assets" / "Foo" / "results"
    res.mkdir(parents=True)
    (res / "beauty.json").write_text('{"model": "Foo", "metrics": {"Recall@10": 0.0539, "NDCG@10": 0.0276}}')
    (tmp_path / "README.md").write_text(
        f"{results_table.START}\n| Model | Data | This repo | Baseline | Paper | Note | Raw |\n|---|---|---|---|---|---|---|\n"
        "| Foo | Beauty | R@10 0.0539 · N@10 0.0276 · R@50 0.1360 | | | "
        f"[note](Classic%20Models/Recall/Foo/README.md#results) | json |\n{results_table.END}\n")
    monkeypatch.setattr(results_table, "ROOT", tmp_path)
    monkeypatch.setitem(results_table.HEADLINE, "Foo", "beauty.json")

    def check(first_row: str) -> list[str]:
        note.write_text("## Results\n\nProtocol: leave-one-out:\n\n| model | Recall@5 | Recall@10 | NDCG@10 |\n"
                        f"|---|---|---|---|\n{first_row}\n| popularity | 0.0068 | 0.0110 | 0.0053 |\n\n## References\n")
        problems, compared = _check_headline_row("Foo")
        assert compared == 2
        return problems

    assert check("| **Foo (n = 1)** | 0.0333 | **0.0539** | **0.0276** |") == []
    assert check("| Foo | 0.0333 | 0.054 | 0.028 |") == []                      # fewer digits, same numbers
    assert "NDCG@10: note 0.0277" in check("| Foo | 0.0333 | 0.0539 | 0.0277 |")[0]
    assert "note sd 0.0010" in check("| Foo | 0.0333 | 0.0539 ± 0.0010 | 0.0276 |")[0]  # a summary, not the run
    assert "note 0.0110" in check("| popularity | 0.0068 | 0.0110 | 0.0053 |")[0]  # the first row is not ours
