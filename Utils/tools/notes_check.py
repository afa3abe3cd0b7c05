"""Check the model notes: one template, excerpts that match the code, maths GitHub renders, honest numbers.

    python -m Utils.tools.notes_check                      # every note, stage overview and lab log
    python -m Utils.tools.notes_check "Classic Models/Recall/MIND/README.md"
    python -m Utils.tools.notes_check --mathjax            # also render every formula with MathJax 3 (node)

What is checked (each rule is a function below, and `tests/test_notes.py` runs them all):

- `check_headings`: the note's `##` headings are exactly `TEMPLATE`, in that order.
- `check_excerpts`: in "From paper to code", every fenced python block introduced by a line
  `` `FILE`, `NAME()`: `` occurs verbatim (up to its common indentation) inside the function or class
  NAME of FILE; a line `...` in an excerpt skips lines. Notes cannot drift from the code. On a shared
  page beside a stage overview (`Classic Models/Recall/LOSSES.md`) every such excerpt is checked, FILE
  relative to the page.
- `check_maths`: GitHub's pitfalls. Inline `$...$` must close on its line; no backslash before ASCII
  punctuation inside maths (`\\{`, `\\,`, `\\\\` ...: CommonMark consumes the backslash before MathJax
  sees it; use `\\lbrace`, `\\thinspace`); `$` must not touch a letter or digit outside the maths;
  inline maths does not start or end with a space; `$$` starts its line; no `|` inside maths in a
  table row (it ends the cell).
- `check_displays_once`: each display equation `$$...$$` appears once in a note (compared with whitespace
  removed, both lines named): "Maths" displays it, "From paper to code" cites it by its number and
  displays none.
- `check_results_share`: the Results section is at most 25% of the note's lines.
- `check_words`: no words about how the work was organised ("issue", "target met", "stretch"), and in the
  notes and overviews no lab-notebook words either (`BANNED`: "shared cores", "earlier version", "so far",
  "a one-epoch probe", "first version", "withdrawn", dates ...); a lab log is a dated record of runs and
  is held to `ORGANISATION` only.
- `check_numbers`: in every Markdown table row of a note's Results section (and of the stage
  overviews), each decimal number occurs, rounded to the digits shown, in ONE stored RESULT json of
  the note's model or of a model the row names. Rows quoting a paper ("paper", "published", "BARS",
  "reported") are skipped: they are attributed quotes, not our measurements.
- `check_links`: relative links and images resolve to files (and `#anchors` to headings).
- `check_lab_log` and `check_figure`: the lab log `assets/<Model>/results/README.md` exists and is
  linked; the note embeds at least one figure from `assets/<Model>/`.

`render_mathjax` feeds every formula to MathJax 3 (the engine GitHub uses) through node and the npm
package `mathjax-full`; `make check-notes` installs that package under `.venv/node` when missing.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "Classic Models"
STAGES = ("Recall", "Ranking", "Re-ranking")
TEMPLATE = ("Problem", "Idea", "Architecture", "Maths", "From paper to code", "Training and serving",
            "Deviations from the paper", "Results", "References")
RESULTS_MAX_SHARE = 0.25
HEADLINE_MAX_ROWS = 5  # ours, the paper, the strongest peer measured here, the baseline (+ one)
# Words about how the work was organised: banned everywhere, lab logs included.
ORGANISATION = re.compile(r"\bissues?\b|\btarget\s+met\b|\bstretch\b", re.IGNORECASE)
# ... and lab-notebook words, banned from the notes and overviews (a lab log is a dated record of runs, where
# they belong): the machine's load, a previous version of the work, runs still under way, dates. Phrases,
# not single words: "an earlier item of the history" teaches, and a query "probes" the cells of an IVF index.
# Words are separated by `\s+`, so a phrase is caught when a line break falls inside it.
BANNED = re.compile(
    ORGANISATION.pattern
    + r"|\bshared\s+with\s+other\b"                                                # CPU shared with other jobs
    + r"|\bshared\s+(?:(?:\d+-core|x86|AMD|EPYC)\s+)*(?:cores?|CPUs?|machines?|VMs?)\b"  # shared cores
    + r"|\b(?:CPU|machine|VM|cores?)\s+(?:(?:was|were|is|are|heavily)\s+)*shared\b"   # machine was shared
    + r"|\bearlier[\s,]+(?:headline|version|runs?|results?|numbers?|draft|table)s?\b"  # earlier headline
    + r"|\bso\s+far\b|\bfirst\s+version\b|\bwithdrawn\b|\bcould\s+not\s+be\s+consulted\b"
    + r"|\b(?:an?|one|the|this|that|short|quick|first|[\w-]+-(?:epoch|step|seed|run))\s+probes?\b"  # a probe
    + r"|\bprobe\s+runs?\b"
    + r"|\b20\d\d-\d\d-\d\d\b",                                                     # dates
    re.IGNORECASE)
ATTRIBUTED = re.compile(r"paper|published|BARS|reported", re.IGNORECASE)
# Names a table row may use for a model whose results live under assets/<folder>/.
ALIASES = {"Wide&Deep": "WideDeep", "Wide & Deep": "WideDeep", "DCN-V2": "DCNv2", "DCN V2": "DCNv2",
           "AutoInt+": "AutoInt", "YouTubeDNN": "YoutubeDNN", "YouTube DNN": "YoutubeDNN",
           "funnel": "Pipeline"}
EXCERPT_HEAD = re.compile(r"^`([^`]+)`, `([A-Za-z_][\w.]*)\(\)`:\s*$")
PUNCT_ESCAPE = re.compile(r"\\[!-/:-@\[-`{-~]")
NUMBER = re.compile(r"(?<![\w.])([-−+]?\d+\.\d+)(?![\w.%×])")
MATHJAX_DIR = ROOT / ".venv" / "node"


@dataclass
class Report:
    path: Path
    problems: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def add(self, line: int | None, msg: str) -> None:
        where = f"{self.path.relative_to(ROOT)}" + (f":{line}" if line else "")
        self.problems.append(f"{where}: {msg}")


# ---------------------------------------------------------------------------------------------
# Reading Markdown: lines outside code fences, sections, tables, formulas


def note_paths() -> list[Path]:
    """The model notes: `Classic Models/<Stage>/<Model>/README.md`."""
    return sorted(p for s in STAGES for p in (MODELS_DIR / s).glob("*/README.md"))


def overview_paths() -> list[Path]:
    return [MODELS_DIR / s / "README.md" for s in STAGES]


def page_paths() -> list[Path]:
    """Pages beside a stage overview (`Classic Models/Recall/SCALE.md`): checked as overviews are, their
    table numbers drawn from `assets/<Page>/results` (Scale) as well as from the stage's models."""
    return sorted(p for s in STAGES for p in (MODELS_DIR / s).glob("*.md") if p.name != "README.md")


def lab_log_path(note: Path) -> Path:
    return ROOT / "assets" / note.parent.name / "results" / "README.md"


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks, inline code spans blanked."""
    out, fence = [], None
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        m = re.match(r"(`{3,}|~{3,})", stripped)
        if m:
            if fence is None:
                fence = m.group(1)[0] * len(m.group(1))
            elif stripped.startswith(fence):
                fence = None
            continue
        if fence is None:
            out.append((i, re.sub(r"`+[^`]*`+", lambda s: " " * len(s.group(0)), line)))
    return out


def sections(text: str) -> list[tuple[str, int, int]]:
    """(heading, first line, last line) of each `##` section, line numbers 1-based, inclusive."""
    heads = [(i, line[3:].strip()) for i, line in prose_lines(text) if line.startswith("## ")]
    n = len(text.splitlines())
    return [(h, i, (heads[k + 1][0] - 1) if k + 1 < len(heads) else n) for k, (i, h) in enumerate(heads)]


def section_text(text: str, name: str) -> tuple[int, str]:
    """(first line number, text) of the section `## name`; (0, "") when absent."""
    lines = text.splitlines()
    for h, a, b in sections(text):
        if h == name:
            return a, "\n".join(lines[a - 1:b])
    return 0, ""


def formulas(text: str) -> list[tuple[int, str, bool]]:
    """(line, TeX, display) of every formula outside code: `$$...$$` (one or more lines) and `$...$`."""
    out, block, start = [], None, 0
    for i, line in prose_lines(text):
        s = line.strip()
        if block is not None:
            if s.endswith("$$"):
                block.append(s[:-2])
                out.append((start, "\n".join(block).strip(), True))
                block = None
            else:
                block.append(s)
            continue
        if s.startswith("$$") and not (len(s) > 4 and s.endswith("$$")) and s.count("$$") == 1:
            block, start = [s[2:]], i
            continue
        rest = line
        for m in re.finditer(r"\$\$(.+?)\$\$", line):
            out.append((i, m.group(1).strip(), True))
        rest = re.sub(r"\$\$(.+?)\$\$", lambda m: " " * len(m.group(0)), rest)
        for m in _inline_spans(rest):
            out.append((i, rest[m[0] + 1:m[1]], False))
    return out


def _inline_spans(line: str) -> list[tuple[int, int]]:
    """(open, close) indices of single `$` pairs on a line (escaped `\\$` is text)."""
    idx = [m.start() for m in re.finditer(r"(?<![\\$])\$(?!\$)", line)]
    return [(idx[k], idx[k + 1]) for k in range(0, len(idx) - 1, 2)]


def table_rows(section: str, first_line: int) -> list[tuple[int, str]]:
    rows = []
    for k, line in enumerate(section.splitlines()):
        s = line.strip()
        if s.startswith("|") and not re.fullmatch(r"\|[\s:|-]+\|?", s):
            rows.append((first_line + k, s))
    return rows


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


# ---------------------------------------------------------------------------------------------
# Rules


def check_headings(rep: Report, text: str) -> None:
    heads = [h for h, _, _ in sections(text)]
    if tuple(heads) != TEMPLATE:
        rep.add(None, f"## headings are {heads}; expected exactly {list(TEMPLATE)} in that order")


def _definition(tree: ast.AST, name: str) -> ast.AST | None:
    parts = name.split(".")
    scope: list[ast.AST] = [tree]
    found = None
    for depth, part in enumerate(parts):
        found = None
        for node in scope:
            for child in (ast.walk(node) if depth == 0 else ast.iter_child_nodes(node)):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                        and child.name == part:
                    found = child
                    break
            if found:
                break
        if found is None:
            return None
        scope = [found]
    return found


def _dedent(lines: list[str]) -> list[str]:
    return textwrap.dedent("\n".join(ln.rstrip() for ln in lines)).split("\n")


def _find_chunks(body: list[str], chunks: list[list[str]]) -> list[tuple[int, int]] | None:
    """The (start, end) line span of each chunk in `body`, in order, or None when one is missing."""
    pos, spans = 0, []
    for chunk in chunks:
        n = len(chunk)
        for start in range(pos, len(body) - n + 1):
            if _dedent(body[start:start + n]) == chunk:
                spans.append((start, start + n))
                pos = start + n
                break
        else:
            return None
    return spans


ELIDED_MAX = 2  # computing lines an elision `...` may hide when no other excerpt of the note shows them
# bookkeeping an elision may always hide: allocating a buffer, a counter, a closing bracket
BOOKKEEPING = re.compile(r"^[\w\[\], .:]+=\s*(\S+\.)?(new_zeros|new_full|new_ones|new_empty|zeros|ones|full|empty|"
                         r"arange|zeros_like|ones_like|empty_like)\(.*\)(\s*#.*)?$|^\w+ = -?\d+(\s*#.*)?$|^[)\]}],?$")


def computing_lines(lines: list[str]) -> list[str]:
    """The lines of `lines` that compute: not blank, not a comment, not part of a docstring, not an input
    check (a raise, an error message, the `if` guarding a raise)."""
    out, in_doc = [], False
    for k, ln in enumerate(lines):
        s = ln.strip()
        quotes = s.count('"""') + s.count("'''")
        if in_doc or s.startswith(('"""', "'''")):
            in_doc = (not in_doc) if quotes % 2 else in_doc
            if s.startswith(('"""', "'''")) and quotes == 1 and not in_doc:
                in_doc = True
            continue
        nxt = lines[k + 1].strip() if k + 1 < len(lines) else ""
        if (not s or s.startswith("#") or INPUT_CHECK.match(ln) or BOOKKEEPING.match(s)
                or (s.startswith("if ") and nxt.startswith("raise "))):
            continue
        out.append(s)
    return out


def excerpts(text: str, section: str | None = "From paper to code") -> list[tuple[int, str, str, list[str]]]:
    """(line, file, name, code lines) of each excerpt in `section` ("From paper to code"), or anywhere in
    the text when `section` is None (a shared page such as `Classic Models/Recall/LOSSES.md`)."""
    first, sec = section_text(text, section) if section is not None else (1, text)
    lines = sec.splitlines()
    out = []
    for k, line in enumerate(lines):
        m = EXCERPT_HEAD.match(line.strip())
        if not m:
            continue
        j = k + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or not lines[j].strip().startswith("```python"):
            out.append((first + k, m.group(1), m.group(2), []))
            continue
        indent = len(lines[j]) - len(lines[j].lstrip())
        code, j = [], j + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            code.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        out.append((first + k, m.group(1), m.group(2), code))
    return out


INPUT_CHECK = re.compile(r"^\s*(raise\b|.*\b(ValueError|TypeError|IndexError)\(|[rf]?[\"'].*[\"']\)?\s*$)")


def input_check_lines(code: list[str]) -> int:
    """How many lines of an excerpt raise an error or continue an error message (an `if` guarding a
    raise counts too): what a reader does not need to see to follow the paper."""
    n = 0
    for k, ln in enumerate(code):
        nxt = code[k + 1] if k + 1 < len(code) else ""
        if INPUT_CHECK.match(ln) or (ln.strip().startswith("if ") and nxt.strip().startswith("raise ")):
            n += 1
    return n


def check_excerpts(rep: Report, note: Path, text: str, minimum: int = 3,
                   section: str | None = "From paper to code") -> None:
    found = excerpts(text, section)
    rep.stats["excerpts"] = len(found)
    if len(found) < minimum:
        rep.add(None, f"'From paper to code' has {len(found)} checked code excerpts; expected at least "
                      f"{minimum} (a line `FILE`, `NAME()`: then a ```python block)")
    for line, fname, name, code in found:
        path = (note.parent / fname).resolve()
        if not code:
            rep.add(line, f"excerpt header for {fname} {name}() is not followed by a ```python block")
            continue
        if not path.is_file():
            rep.add(line, f"excerpt names {fname}, which does not exist")
            continue
        src = path.read_text()
        node = _definition(ast.parse(src), name)
        if node is None:
            rep.add(line, f"excerpt names {name}(), which is not defined in {fname}")
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        body = src.splitlines()[start - 1:node.end_lineno]
        chunks, cur = [], []
        for ln in code:
            if ln.strip() in ("...", "# ..."):
                if cur:
                    chunks.append(cur)
                cur = []
            else:
                cur.append(ln)
        if cur:
            chunks.append(cur)
        checks = input_check_lines(code)
        if checks * 2 > sum(1 for ln in code if ln.strip() not in ("", "...", "# ...")):
            rep.add(line, f"excerpt of {name}() is mostly input checks ({checks} lines raise or build an "
                          "error message): show the lines that compute what the paper says")
        chunks = [_dedent(c) for c in chunks]
        spans = _find_chunks(body, chunks) if chunks else None
        if spans is None:
            rep.add(line, f"excerpt is not verbatim in {fname} {name}() (lines {start}-{node.end_lineno}):"
                          f" first line {code[0].strip()!r}")
            continue
        shown = {ln.strip() for _, _, _, other in found for ln in other}  # every excerpt of the note
        for (_, end), (nxt, _) in zip(spans, spans[1:]):
            hidden = [ln for ln in computing_lines(body[end:nxt]) if ln not in shown]
            if len(hidden) > ELIDED_MAX:
                rep.add(line, f"excerpt of {name}() elides {len(hidden)} computing lines no other excerpt "
                              f"shows (first {hidden[0]!r}): show the hard lines, elide only checks, "
                              "docstrings and bookkeeping")


def check_maths(rep: Report, text: str) -> None:
    n_formulas = 0
    for i, line in prose_lines(text):
        if "$$" in line and not line.lstrip().startswith("$$") and not line.rstrip().endswith("$$"):
            rep.add(i, "display maths `$$` must start its line")
        rest = re.sub(r"\$\$(.+?)\$\$", lambda m: " " * len(m.group(0)), line)
        rest_no_dd = rest.replace("$$", "  ")
        singles = [m.start() for m in re.finditer(r"(?<![\\$])\$(?!\$)", rest_no_dd)]
        if len(singles) % 2:
            rep.add(i, "inline maths `$...$` does not close on its line (broken across lines, or a stray"
                       " `$`: write \\$ for a dollar sign)")
        for a, b in _inline_spans(rest_no_dd):
            tex = rest_no_dd[a + 1:b]
            if a > 0 and rest_no_dd[a - 1].isalnum():
                rep.add(i, f"`$` touches the letter or digit before it: ...{rest_no_dd[max(0, a - 8):b + 1]!r}")
            if b + 1 < len(rest_no_dd) and rest_no_dd[b + 1].isalnum():
                rep.add(i, f"`$` touches the letter or digit after it: {rest_no_dd[a:b + 3]!r}...")
            if tex != tex.strip():
                rep.add(i, f"inline maths starts or ends with a space (GitHub will not render it): ${tex}$")
            if rest_no_dd.lstrip().startswith("|") and "|" in tex:
                rep.add(i, f"a `|` inside maths in a table row splits the cell (use \\vert): ${tex}$")
    for i, tex, _display in formulas(text):
        n_formulas += 1
        bad = PUNCT_ESCAPE.findall(tex)
        if bad:
            rep.add(i, f"backslash before punctuation {sorted(set(bad))} in maths: GitHub's Markdown eats "
                       "the backslash (use \\lbrace \\rbrace \\thinspace \\Vert, one formula per line)")
    rep.stats["formulas"] = n_formulas


def check_displays_once(rep: Report, text: str) -> None:
    """Each display equation is shown once per note: "Maths" displays it, "From paper to code" cites it by
    number. Two displays whose text is equal with whitespace removed are reported with both lines."""
    _, code_first, code_last = next((s for s in sections(text) if s[0] == "From paper to code"), ("", 0, -1))
    seen: dict[str, int] = {}
    for i, tex, display in formulas(text):
        if not display:
            continue
        if code_first <= i <= code_last:
            rep.add(i, "display equation in From paper to code: display it in Maths and cite it here by number")
        key = re.sub(r"\s+", "", tex)
        if key in seen:
            rep.add(i, f"display equation repeats the one at line {seen[key]} (lines {seen[key]} and {i}): "
                       "display it once in Maths and cite it by number in From paper to code")
        else:
            seen[key] = i


def check_results_share(rep: Report, text: str) -> None:
    total = len(text.splitlines())
    res = next(((a, b) for h, a, b in sections(text) if h == "Results"), None)
    if res is None:
        return
    share = (res[1] - res[0] + 1) / max(total, 1)
    rep.stats.update(lines=total, results_lines=res[1] - res[0] + 1)
    if share > RESULTS_MAX_SHARE:
        rep.add(res[0], f"Results is {share:.0%} of the note ({res[1] - res[0] + 1} of {total} lines); "
                        f"at most {RESULTS_MAX_SHARE:.0%}: move the rest to the lab log")


def check_headline_table(rep: Report, text: str) -> None:
    """Results holds one headline table of at most HEADLINE_MAX_ROWS rows; the rest is the lab log's."""
    if not any(h == "Results" for h, _, _ in sections(text)):
        return
    first, sec = section_text(text, "Results")
    tables, rows, start = [], 0, None
    for k, ln in enumerate(sec.splitlines() + [""]):
        if ln.lstrip().startswith("|"):
            rows, start = rows + 1, start if start is not None else first + k
        elif rows:
            tables.append((start, rows - 2))  # less the header and the |---| line
            rows, start = 0, None
    if len(tables) > 1:
        rep.add(tables[1][0], f"Results has {len(tables)} tables; one headline table, the rest in the lab log")
    for line, n in tables:
        if n > HEADLINE_MAX_ROWS:
            rep.add(line, f"the headline table has {n} rows; at most {HEADLINE_MAX_ROWS}: move the rest to "
                          "the lab log")


def check_words(rep: Report, text: str, banned: re.Pattern = BANNED) -> None:
    """Report each match of `banned` at the line it starts on (a phrase may run over a line break)."""
    for m in banned.finditer(text):
        phrase = " ".join(m.group(0).split())
        rep.add(text.count("\n", 0, m.start()) + 1, f"word about how the work was organised: {phrase!r}")


def _json_numbers(obj) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _json_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _json_numbers(v)]
    return []


_JSON_CACHE: dict[Path, list[float]] = {}


def model_jsons(model: str) -> dict[Path, list[float]]:
    folder = ROOT / "assets" / model / "results"
    out = {}
    for p in sorted(folder.glob("*.json")):
        if p not in _JSON_CACHE:
            _JSON_CACHE[p] = _json_numbers(json.loads(p.read_text()))
        out[p] = _JSON_CACHE[p]
    return out


def _matches(token: str, values: list[float]) -> bool:
    t = float(token.replace("−", "-"))
    decimals = len(token.split(".")[1])
    tol = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(abs(v) - abs(t)) <= tol for v in values)


def models_named(row: str) -> set[str]:
    names = {d.name for d in (ROOT / "assets").iterdir() if (d / "results").is_dir()}
    found = {n for n in names if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", row)}
    found |= {folder for alias, folder in ALIASES.items() if alias in row}
    return found


def check_numbers(rep: Report, section: str, first_line: int, own_model: str | list[str] | None) -> None:
    """Each table row's decimals must all occur in one json of `own_model` (or the models it lists) or of
    a model the row names."""
    own = set([own_model] if isinstance(own_model, str) else own_model or [])
    checked = 0
    for line, row in table_rows(section, first_line):
        if ATTRIBUTED.search(row):
            continue
        tokens = [t for t in NUMBER.findall(re.sub(r"\]\([^)]*\)", "]", row))]
        if not tokens:
            continue
        candidates: dict[Path, list[float]] = {}
        for m in own | models_named(row):
            candidates.update(model_jsons(m))
        checked += len(tokens)
        if not any(all(_matches(t, vals) for t in tokens) for vals in candidates.values()):
            missing = [t for t in tokens if not any(_matches(t, v) for v in candidates.values())]
            why = (f"not found in any stored json: {missing}" if missing else
                   "found, but not all in one json (make a summary: python -m Utils.tools.seed_summary)")
            rep.add(line, f"table row numbers are not backed by one RESULT json of "
                          f"{sorted(own | models_named(row))}: {why}")
    rep.stats["numbers_checked"] = rep.stats.get("numbers_checked", 0) + checked


def check_links(rep: Report, path: Path, text: str) -> None:
    for i, line in prose_lines(text):
        for m in re.finditer(r"\]\(([^)\s]+)\)", line):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part.replace("%20", " ")).resolve() if file_part else path
            if not dest.exists():
                rep.add(i, f"link to {target} does not resolve")
                continue
            if anchor and dest.suffix == ".md":
                anchors = {slug(line[3:] if line.startswith("## ") else line.lstrip("#"))
                           for _, line in prose_lines(dest.read_text()) if line.startswith("#")}
                if anchor not in anchors:
                    rep.add(i, f"link {target}: no heading with anchor #{anchor} in {file_part or 'this file'}")


def check_lab_log(rep: Report, note: Path, text: str) -> None:
    log = lab_log_path(note)
    if not log.is_file():
        rep.add(None, f"lab log {log.relative_to(ROOT)} is missing")
        return
    if f"assets/{note.parent.name}/results/README.md" not in text:
        rep.add(None, f"the note does not link its lab log assets/{note.parent.name}/results/README.md")


def check_figure(rep: Report, note: Path, text: str) -> None:
    figs = re.findall(rf"!\[[^\]]*\]\(\.\./\.\./\.\./assets/{re.escape(note.parent.name)}/([^)]+\.png)\)", text)
    rep.stats["figures"] = len(figs)
    if not figs:
        rep.add(None, f"no figure from assets/{note.parent.name}/ is embedded in the note")


# ---------------------------------------------------------------------------------------------
# Entry points


def check_note(note: Path) -> Report:
    text = note.read_text()
    rep = Report(note)
    check_headings(rep, text)
    check_excerpts(rep, note, text)
    check_maths(rep, text)
    check_displays_once(rep, text)
    check_results_share(rep, text)
    check_headline_table(rep, text)
    check_words(rep, text)
    first, res = section_text(text, "Results")
    check_numbers(rep, res, first, note.parent.name)
    check_links(rep, note, text)
    check_lab_log(rep, note, text)
    check_figure(rep, note, text)
    log = lab_log_path(note)
    if log.is_file():
        log_text = log.read_text()
        sub = Report(log)
        check_words(sub, log_text, ORGANISATION)  # a dated record of runs: only ORGANISATION
        check_maths(sub, log_text)
        check_links(sub, log, log_text)
        rep.problems += sub.problems
    return rep


def check_overview(path: Path) -> Report:
    """A stage overview or another README: words, maths, links, and every table row's numbers."""
    text = path.read_text()
    rep = Report(path)
    check_words(rep, text)
    check_maths(rep, text)
    check_links(rep, path, text)
    if path.name != "README.md":  # a shared page's excerpts (`SASRec/model.py`, ...) are verbatim too
        check_excerpts(rep, path, text, minimum=0, section=None)
    if path.parent.name in STAGES:  # a stage's shared tables draw on the runs of its models
        models = sorted(d.name for d in path.parent.iterdir() if (ROOT / "assets" / d.name / "results").is_dir())
        own = path.stem.title()  # SCALE.md -> assets/Scale/results
        if path.name != "README.md" and (ROOT / "assets" / own / "results").is_dir():
            models.append(own)
        check_numbers(rep, text, 1, models)
    return rep


def model_files() -> list[Path]:
    """The copyable model files: every `.py` in a model folder except the demo."""
    return sorted(p for s in STAGES for p in (MODELS_DIR / s).glob("*/*.py") if p.name != "demo.py")


def usage_block(path: Path) -> str | None:
    """The code of the `Usage::` block in a file's module docstring, dedented; None when absent."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=True) or ""
    lines = doc.splitlines()
    if "Usage::" not in [ln.strip() for ln in lines]:
        return None
    k = [ln.strip() for ln in lines].index("Usage::") + 1
    block = []
    while k < len(lines) and (not lines[k].strip() or lines[k].startswith("    ")):
        block.append(lines[k])
        k += 1
    code = textwrap.dedent("\n".join(block)).strip("\n")
    return code or None


def all_formulas(paths: list[Path]) -> list[tuple[str, int, str, bool]]:
    return [(str(p.relative_to(ROOT)), i, tex, d) for p in paths for i, tex, d in formulas(p.read_text())]


def mathjax_available() -> str | None:
    """None when node and mathjax-full are there; otherwise the reason they are not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (MATHJAX_DIR / "node_modules" / "mathjax-full").is_dir():
        return f"mathjax-full is not installed under {MATHJAX_DIR.relative_to(ROOT)} (run `make check-notes`)"
    return None


_RENDER_JS = r"""
const {mathjax} = require('mathjax-full/js/mathjax.js');
const {TeX} = require('mathjax-full/js/input/tex.js');
const {SVG} = require('mathjax-full/js/output/svg.js');
const {liteAdaptor} = require('mathjax-full/js/adaptors/liteAdaptor.js');
const {RegisterHTMLHandler} = require('mathjax-full/js/handlers/html.js');
const {AllPackages} = require('mathjax-full/js/input/tex/AllPackages.js');
const adaptor = liteAdaptor();
RegisterHTMLHandler(adaptor);
const html = mathjax.document('', {InputJax: new TeX({packages: AllPackages.filter(p => p !== 'noundefined')}), OutputJax: new SVG()});
// without 'noundefined' an unknown macro is an error, not red text
const items = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const errors = [];
for (const [where, tex, display] of items) {
  let out;
  try { out = adaptor.outerHTML(html.convert(tex, {display})); }
  catch (e) { errors.push([where, tex, String(e.message || e)]); continue; }
  const m = out.match(/data-mjx-error="([^"]*)"/) || out.match(/<merror[^>]*title="([^"]*)"/);
  if (m || out.includes('merror')) errors.push([where, tex, m ? m[1] : 'merror']);
}
process.stdout.write(JSON.stringify({rendered: items.length, errors}));
"""


def render_mathjax(paths: list[Path]) -> tuple[int, list[str]]:
    """(formulas rendered, errors) with MathJax 3 through node; raises RuntimeError if unavailable."""
    reason = mathjax_available()
    if reason:
        raise RuntimeError(reason)
    items = [[f"{f}:{i}", tex, d] for f, i, tex, d in all_formulas(paths)]
    env = dict(os.environ, NODE_PATH=str(MATHJAX_DIR / "node_modules"))
    proc = subprocess.run(["node", "-e", _RENDER_JS], input=json.dumps(items), capture_output=True,
                          text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"node failed: {proc.stderr.strip()[-500:]}")
    res = json.loads(proc.stdout)
    return res["rendered"], [f"{w}: MathJax error {msg!r} in {tex!r}" for w, tex, msg in res["errors"]]


MERMAID_PACKAGES = ("mermaid@11.17.2", "jsdom@24.1.3")


def mermaid_available() -> str | None:
    """None when node, mermaid and jsdom are there; otherwise the reason they are not."""
    if shutil.which("node") is None:
        return "node is not installed"
    for pkg in MERMAID_PACKAGES:
        name = pkg.rsplit("@", 1)[0]
        if not (MATHJAX_DIR / "node_modules" / name).is_dir():
            return f"{name} is not installed under {MATHJAX_DIR.relative_to(ROOT)} (run `make mermaid`)"
    return None


MERMAID_BLOCK = re.compile(r"^```mermaid[ \t]*\n(.*?)^```", re.M | re.S)

# mermaid's own parser (the one GitHub's renderer runs), in node with a jsdom window; ESM, so it runs
# from the folder holding node_modules (NODE_PATH does not reach ES modules)
_MERMAID_JS = r"""
import { JSDOM } from "jsdom";
const dom = new JSDOM("<!DOCTYPE html><body></body>");
globalThis.window = dom.window; globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });
const items = JSON.parse(await new Promise(r => { let s = ""; process.stdin.on("data", d => s += d);
                                                  process.stdin.on("end", () => r(s)); }));
const errors = [];
for (const [where, text] of items) {
  try { await mermaid.parse(text); }
  catch (e) { errors.push([where, String(e.message || e).split("\n").slice(0, 4).join(" | ")]); }
}
process.stdout.write(JSON.stringify({parsed: items.length, errors}));
"""


def mermaid_blocks(paths: list[Path]) -> list[tuple[str, str]]:
    """(page:line, diagram text) of every ```mermaid block in the pages."""
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for m in MERMAID_BLOCK.finditer(text):
            name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            out.append((f"{name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1)))
    return out


def parse_mermaid(paths: list[Path]) -> tuple[int, list[str]]:
    """(diagrams parsed, errors) with mermaid's parser through node; raises RuntimeError if unavailable."""
    reason = mermaid_available()
    if reason:
        raise RuntimeError(reason)
    items = [list(b) for b in mermaid_blocks(paths)]
    proc = subprocess.run(["node", "--input-type=module", "-e", _MERMAID_JS], input=json.dumps(items),
                          capture_output=True, text=True, cwd=MATHJAX_DIR, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"node failed: {proc.stderr.strip()[-500:]}")
    res = json.loads(proc.stdout)
    return res["parsed"], [f"{w}: mermaid parse error: {msg}" for w, msg in res["errors"]]


def markdown_pages() -> list[Path]:
    """Every Markdown page whose maths GitHub renders: notes, lab logs, overviews, READMEs."""
    pages = note_paths() + overview_paths() + page_paths() + [ROOT / "README.md", MODELS_DIR / "README.md"]
    pages += sorted((ROOT / "assets").glob("*/results/README.md"))
    return [p for p in pages if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check the notes against the template and the code.")
    ap.add_argument("paths", nargs="*", type=Path, help="notes to check (default: all)")
    ap.add_argument("--mathjax", action="store_true", help="also render every formula with MathJax 3")
    args = ap.parse_args(argv)
    notes = [p.resolve() for p in args.paths] or note_paths()
    reports = []
    for p in notes:
        if not p.is_file():
            print(f"error: {p} does not exist; expected a note README.md", file=sys.stderr)
            return 2
        is_note = p.parent.parent.name in STAGES and p.name == "README.md"
        reports.append(check_note(p) if is_note else check_overview(p))
    if not args.paths:
        reports += [check_overview(p) for p in overview_paths() + page_paths()
                    + [ROOT / "README.md", MODELS_DIR / "README.md"] if p.is_file()]
    n_bad = 0
    for r in reports:
        s = r.stats
        print(f"{'ok  ' if not r.problems else 'FAIL'} {r.path.relative_to(ROOT)}  "
              + " ".join(f"{k}={v}" for k, v in s.items()))
        for msg in r.problems:
            print("     " + msg)
        n_bad += bool(r.problems)
    if args.mathjax:
        pages = notes if args.paths else markdown_pages()
        try:
            rendered, errors = render_mathjax(pages)
        except RuntimeError as e:
            print(f"MathJax check skipped: {e}")
        else:
            print(f"MathJax 3: {rendered} formulas rendered, {len(errors)} errors")
            for e in errors:
                print("     " + e)
            n_bad += bool(errors)
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
