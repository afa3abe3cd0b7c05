"""The notes teach from one template, their excerpts match the code, their maths renders, their numbers
are backed by stored runs, and every model file's usage example runs from a copy of that file alone.

The rules live in `Utils/tools/notes_check.py` (also a command: `python -m Utils.tools.notes_check`); the first
tests here run them on every note, the last ones show each rule catches what it is meant to catch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from Utils.tools import notes_check as nc
from Utils.tools import seed_summary

NOTES = nc.note_paths()


def test_all_twenty_two_notes_are_found():
    assert len(NOTES) == 23, [p.parent.name for p in NOTES]


@pytest.mark.parametrize("note", NOTES, ids=[p.parent.name for p in NOTES])
def test_note_follows_the_template(note):
    rep = nc.check_note(note)
    assert not rep.problems, "\n".join(rep.problems)


@pytest.mark.parametrize("page", [p for p in nc.overview_paths() + nc.page_paths() + [nc.ROOT / "README.md",
                                  nc.MODELS_DIR / "README.md"]],
                         ids=lambda p: str(p.relative_to(nc.ROOT)))
def test_overviews_and_readmes(page):
    assert page.is_file(), f"{page} is missing"
    rep = nc.check_overview(page)
    assert not rep.problems, "\n".join(rep.problems)


def test_every_seed_summary_recomputes_from_its_runs():
    summaries = sorted((nc.ROOT / "assets").glob("*/results/summary_*.json"))
    assert summaries, "no summary_*.json found"
    for path in summaries:
        stored = json.loads(path.read_text())
        fresh = json.loads(json.dumps(seed_summary.recompute(path)))
        assert _close(stored, fresh), f"{path} differs from its runs: rerun python -m Utils.tools.seed_summary"
        assert stored["n"] == len(stored["runs"]) == fresh["n"] >= 1


def _close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return a == b


def test_every_formula_renders_in_mathjax3():
    reason = nc.mathjax_available()
    if reason:
        pytest.skip(f"MathJax check needs node + mathjax-full: {reason}")
    rendered, errors = nc.render_mathjax(nc.markdown_pages())
    assert rendered > 300
    assert not errors, "\n".join(errors)


def test_an_excerpt_made_of_input_checks_is_refused():
    code = ["if not 0.0 <= theta < 1.0:", "    raise ValueError(f\"theta must be in [0, 1), got {theta}\")",
            "return theta / (2.0 * (1.0 - theta))"]
    assert nc.input_check_lines(code) == 2
    assert nc.input_check_lines(code[2:]) == 0
    assert nc.input_check_lines(["x = a @ b", "if x.isnan().any():", "    raise ValueError('NaN')",
                                 "return x.softmax(-1)", "y = 2"]) == 2


def test_every_mermaid_diagram_parses():
    reason = nc.mermaid_available()
    if reason:
        pytest.skip(f"mermaid check needs node + mermaid + jsdom: {reason}")
    pages = nc.markdown_pages()
    parsed, errors = nc.parse_mermaid(pages)
    assert parsed == len(nc.mermaid_blocks(pages)) > 10
    assert not errors, "\n".join(errors)


def test_mermaid_check_catches_a_broken_diagram(tmp_path):
    reason = nc.mermaid_available()
    if reason:
        pytest.skip(f"mermaid check needs node + mermaid + jsdom: {reason}")
    page = tmp_path / "page.md"
    page.write_text("```mermaid\nflowchart LR\n  A[ok] --> B[ok]\n```\n\n"
                    "```mermaid\nflowchart LR\n  A[[[ --> B\n```\n")
    parsed, errors = nc.parse_mermaid([page])
    assert parsed == 2 and len(errors) == 1 and ":6:" in errors[0]


def test_model_files_import_only_torch_and_the_standard_library():
    import ast

    for path in nc.model_files():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                assert top == "torch" or top in sys.stdlib_module_names, f"{path}: imports {name}"


_RUNNER = textwrap.dedent("""
    import json, os, shutil, sys, tempfile, traceback
    jobs = json.loads(sys.stdin.read())
    failures = []
    for path, code in jobs:
        folder = tempfile.mkdtemp()
        shutil.copy(path, folder)          # the file alone, as a reader copies it
        os.chdir(folder)
        sys.path.insert(0, folder)
        for mod in ("model", "rqvae"):
            sys.modules.pop(mod, None)
        try:
            exec(compile(code, path + ":Usage", "exec"), {"__name__": "__usage__"})
        except Exception:
            failures.append([path, traceback.format_exc(limit=3)])
        sys.path.remove(folder)
    print(json.dumps(failures))
""")


def test_every_model_file_has_a_usage_example_that_runs_from_a_copy_alone():
    files = nc.model_files()
    missing = [str(p.relative_to(nc.ROOT)) for p in files if nc.usage_block(p) is None]
    assert not missing, f"no `Usage::` block in the module docstring of {missing}"
    jobs = [[str(p), nc.usage_block(p)] for p in files]
    proc = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(jobs), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n\n".join(f"{p}\n{tb}" for p, tb in failures)


# --- each rule catches what it should -------------------------------------------------------------


def _report(tmp_path: Path, text: str) -> nc.Report:
    note = tmp_path / "README.md"
    note.write_text(text)
    return nc.Report(note)


def test_maths_rule_catches_githubs_pitfalls(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    text = ("ok $a_i$ and $x + y$.\n"
            "set $\\{1, 2\\}$ loses its braces\n"
            "thin $a\\,b$ space\n"
            "broken $a +\n"
            "b$ across lines\n"
            "touching 2$x$\n"
            "text $$x$$ inline display\n"
            "| cell $|x|$ | 2 |\n")
    rep = _report(tmp_path, text)
    nc.check_maths(rep, text)
    joined = "\n".join(rep.problems)
    assert ":2: backslash before punctuation" in joined and ":3: backslash before punctuation" in joined
    assert ":4: inline maths" in joined and ":5: inline maths" in joined
    assert ":6: `$` touches" in joined and ":7: display maths" in joined and ":8: a `|` inside" in joined
    assert not any(p.startswith(f"{'README.md'}:1:") for p in rep.problems)
    good = "Use $\\lbrace 1, 2 \\rbrace$ and $a\\thinspace b$.\n\n$$\\sum_i x_i \\qquad (1)$$\n"
    rep = _report(tmp_path, good)
    nc.check_maths(rep, good)
    assert not rep.problems and rep.stats["formulas"] == 3


def test_excerpt_rule_catches_code_that_drifted(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    (tmp_path / "model.py").write_text(
        "def squash(z, eps=1e-9):\n"
        "    norm2 = (z * z).sum(-1, keepdim=True)\n"
        "    scale = norm2 / (1 + norm2)\n"
        "    return scale * z / (norm2 + eps).sqrt()\n\n"
        "def other():\n"
        "    return 1\n")

    def note(code: str, name: str = "squash") -> str:
        return (f"## From paper to code\n\n`model.py`, `{name}()`:\n```python\n{code}\n```\n")

    def problems(text):
        rep = _report(tmp_path, text)
        nc.check_excerpts(rep, tmp_path / "README.md", text, minimum=1)
        return rep.problems

    assert not problems(note("norm2 = (z * z).sum(-1, keepdim=True)\nscale = norm2 / (1 + norm2)"))
    assert not problems(note("norm2 = (z * z).sum(-1, keepdim=True)\n...\nreturn scale * z / (norm2 + eps).sqrt()"))
    assert "not verbatim" in problems(note("norm2 = (z * z).sum(-1)"))[0]             # drifted
    assert "not verbatim" in problems(note("return 1", name="squash"))[0]              # wrong function
    assert "not defined" in problems(note("return 1", name="missing"))[0]
    assert "not verbatim" in problems(note("scale = norm2 / (1 + norm2)\nnorm2 = (z * z).sum(-1, keepdim=True)"))[0]


def test_excerpt_rule_reaches_shared_pages(tmp_path, monkeypatch):
    """A page beside the stage overviews (LOSSES.md) quotes a model's code anywhere on it: checked too."""
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    (tmp_path / "M").mkdir()
    (tmp_path / "M" / "model.py").write_text("def f(x):\n    y = x + 1\n    return y\n")
    page = tmp_path / "PAGE.md"
    page.write_text("# A page\n\n### A loss\n\n`M/model.py`, `f()`:\n```python\ny = x + 1\n```\n")
    assert not nc.check_overview(page).problems
    page.write_text("# A page\n\n### A loss\n\n`M/model.py`, `f()`:\n```python\ny = x + 2\n```\n")
    assert any(":5: excerpt is not verbatim" in p for p in nc.check_overview(page).problems)


def test_number_rule_catches_a_number_no_json_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    nc._JSON_CACHE.clear()
    res = tmp_path / "assets" / "Foo" / "results"
    res.mkdir(parents=True)
    (res / "a.json").write_text('{"metrics": {"Recall@10": 0.053912, "NDCG@10": 0.02761}}')
    (res / "b.json").write_text('{"metrics": {"Recall@10": 0.0612}}')
    table = ("| model | R@10 | N@10 |\n|---|---|---|\n"
             "| Foo | 0.0539 | 0.0276 |\n"             # backed by a.json
             "| Foo (paper, Table 1) | 0.0999 | 0.0111 |\n"  # attributed quote: skipped
             "| Foo | 0.0612 | 0.0276 |\n"             # each found, not in one json
             "| Foo | 0.0540 | 0.0276 |\n")            # 0.0540 printed by nothing
    rep = _report(tmp_path, table)
    nc.check_numbers(rep, table, 1, "Foo")
    assert len(rep.problems) == 2
    assert ":5:" in rep.problems[0] and "not all in one json" in rep.problems[0]
    assert ":6:" in rep.problems[1] and "0.0540" in rep.problems[1]
    nc._JSON_CACHE.clear()


def test_heading_and_word_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    good = "".join(f"## {h}\n\ntext\n\n" for h in nc.TEMPLATE)
    rep = _report(tmp_path, good)
    nc.check_headings(rep, good)
    nc.check_words(rep, good)
    assert not rep.problems
    bad = good.replace("## Idea", "## 2. The idea") + "As the issue author asked, target met.\n"
    rep = _report(tmp_path, bad)
    nc.check_headings(rep, bad)
    nc.check_words(rep, bad)
    assert len(rep.problems) == 3


LAB_NOTEBOOK = [
    "Hardware: 2-core x86 CPU shared with other jobs, one thread per run",
    "about 2 min wall on 2 shared cores",
    "CPU seconds because this 2-core machine was shared with other jobs",
    "wall seconds of single-thread runs on a shared machine",
    "one thread of a shared 2-core machine",
    "a 2-core CPU heavily shared",
    "the earlier headline (2 blocks, 2 heads, batch 32)",
    "the page's withdrawn earlier version",
    "the input of the earlier runs",
    "mean over the seeds run so far",
    "mean over the seeds run so\nfar, per data set",
    "the state collapsed (a one-epoch probe, lab log)",
    "In a 175-step probe the state collapsed",
    "a first version used the other init",
    "the PDF could not be consulted here",
    "measured on 2026-11-30",
    "From 2026-11-30 the runs live in ledger/",
]


@pytest.mark.parametrize("sentence", LAB_NOTEBOOK)
def test_word_rule_catches_lab_notebook_phrases(tmp_path, monkeypatch, sentence):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    rep = _report(tmp_path, f"A line that teaches.\n{sentence}\n")
    nc.check_words(rep, rep.path.read_text())
    assert rep.problems and all(":2: word about" in p for p in rep.problems), rep.problems


def test_word_rule_leaves_teaching_sentences_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    text = ("The state attends to an earlier item of the history.\n"
            "Earlier items are the behaviours; the items already chosen form Y.\n"
            "One shared embedding feeds both parts; 256 negatives are shared by the batch.\n"
            "Shared experts and the shared gate of PLE; data under ../shared/data/.\n"
            "The cells a query probes hold few vectors (nprobe 16 of 256 lists).\n"
            "Hardware: one thread of a 2-core x86 CPU, torch 2.13.\n"
            "The first epoch, the version of the paper on arXiv, so fast, far from it.\n")
    rep = _report(tmp_path, text)
    nc.check_words(rep, text)
    assert not rep.problems, rep.problems


def test_lab_logs_may_date_their_runs(tmp_path, monkeypatch):
    """A lab log is a dated record of runs: held to the organisation words only."""
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    text = "From 2026-11-30 the runs live in ledger/; the first version used PReLU.\nThe issue asked for it.\n"
    rep = _report(tmp_path, text)
    nc.check_words(rep, text, nc.ORGANISATION)
    assert len(rep.problems) == 1 and ":2: word about" in rep.problems[0], rep.problems


def test_seed_summary_is_mean_and_sample_sd(tmp_path):
    runs = []
    for i, v in enumerate([0.1, 0.2, 0.3]):
        p = tmp_path / f"run{i}.json"
        p.write_text(json.dumps({"model": "M", "data": "d", "protocol": "p", "metrics": {"AUC": v},
                                 "baseline": {"name": "b", "metrics": {"AUC": 0.5}}}))
        runs.append(p)
    out = tmp_path / "summary_x.json"
    assert seed_summary.main([str(out)] + [str(p) for p in runs]) == 0
    s = json.loads(out.read_text())
    assert s["metrics"]["AUC"] == pytest.approx(0.2) and s["sd"]["AUC"] == pytest.approx(0.1)
    assert s["runs"] == ["run0.json", "run1.json", "run2.json"] and s["baseline"]["metrics"]["AUC"] == 0.5
    assert seed_summary.recompute(out)["metrics"] == s["metrics"]


def test_display_rule_catches_an_equation_shown_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    twice = ("## Maths\n\n**Eq. (1)**, squash:\n\n$$v = \\frac{\\lVert z\\rVert^2}{1+\\lVert z\\rVert^2} z$$\n\n"
             "## From paper to code\n\n**Eq. (1) — squash.**\n\n"
             "$$v = \\frac{\\lVert z\\rVert^2}{1 + \\lVert z\\rVert^2}   z$$\n")
    rep = _report(tmp_path, twice)
    nc.check_displays_once(rep, twice)
    assert any(":11:" in p and "lines 5 and 11" in p for p in rep.problems), rep.problems
    assert any("in From paper to code" in p for p in rep.problems), rep.problems
    once = ("## Maths\n\n$$v = \\frac{\\lVert z\\rVert^2}{1+\\lVert z\\rVert^2} z \\qquad (1)$$\n\n"
            "$$b = u^\\top z \\qquad (2)$$\n\n"
            "## From paper to code\n\n**Eq. (1) — squash**, $v \\propto z$.\n\n**Eq. (2) — agreement.**\n")
    rep = _report(tmp_path, once)
    nc.check_displays_once(rep, once)
    assert not rep.problems, rep.problems


def test_an_excerpt_that_elides_the_hard_lines_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)  # where Report names its pages from
    (tmp_path / "model.py").write_text(
        "def step(x, y):\n"
        "    \"\"\"One step.\"\"\"\n"
        "    if x is None:\n"
        "        raise ValueError('x is missing')\n"
        "    buf = x.new_zeros(3)\n"
        "    a = x @ y\n"
        "    b = a.softmax(-1)\n"
        "    c = b * y\n"
        "    return c.sum()\n")
    head = "`model.py`, `step()`:\n```python\n"

    def problems(code):
        rep = nc.Report(tmp_path / "README.md")
        nc.check_excerpts(rep, tmp_path / "README.md", head + code + "\n```\n", minimum=1, section=None)
        return rep.problems

    # eliding the docstring, the check and an allocation is fine
    assert problems("\"\"\"One step.\"\"\"\n...\na = x @ y\nb = a.softmax(-1)\nc = b * y\nreturn c.sum()") == []
    # eliding three computing lines is refused, naming the first hidden one
    refused = problems("buf = x.new_zeros(3)\n...\nreturn c.sum()")
    assert len(refused) == 1 and "elides 3 computing lines" in refused[0] and "a = x @ y" in refused[0]
    # unless another excerpt of the same note shows them
    rep = nc.Report(tmp_path / "README.md")
    text = (head + "buf = x.new_zeros(3)\n...\nreturn c.sum()\n```\n\n"
            + head + "a = x @ y\nb = a.softmax(-1)\nc = b * y\n```\n")
    nc.check_excerpts(rep, tmp_path / "README.md", text, minimum=1, section=None)
    assert rep.problems == []


def test_results_rule_allows_one_headline_table_of_five_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    head = "| run | NDCG@10 |\n|---|---|\n"

    def problems(results):
        rep = nc.Report(tmp_path / "README.md")
        nc.check_headline_table(rep, "## Results\n\n" + results + "\n## References\n")
        return rep.problems

    five = head + "".join(f"| r{i} | 0.1 |\n" for i in range(5))
    assert problems(five) == []
    assert any("6 rows" in p for p in problems(five + "| r5 | 0.1 |\n"))
    assert any("2 tables" in p for p in problems(five + "\ntext\n\n" + head + "| x | 0.2 |\n"))
