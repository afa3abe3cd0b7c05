"""Processed sequence files: one user per line, `user item item ...` in time order.

This is the format of the S3-Rec / TIGER Amazon benchmarks (e.g. Beauty.txt). Side files beside it are
picked up when present:
- `<Name>_item2attributes.json`: `{"item": [attribute ids]}` -> items.attributes
- `<Name>_item2asin.tsv`: item -> ASIN (header row) -> items.asin
- `<Name>_item_keywords.txt`: `ASIN |tok|tok|...` -> items.keywords (needs the asin map)
- `<Name>_item_titles.tsv`: header row, then `item<TAB>asin<TAB>title` -> items.title (HTML entities
  such as `&amp;` decoded; an empty title stays ""). A line without an integer item id, or one that
  repeats an item, is counted in the LoadReport (`titles malformed`, `titles duplicates`) and skipped;
  `strict=True` raises with the line number. When the asin map is present too, a title whose ASIN
  disagrees with it is counted (`titles asin mismatch`) and skipped: it belongs to another item.

There are no timestamps: `timestamp` is the position in the sequence and `has_timestamps` is False.
The file's own ids are kept (sorted numerically), so item 7 in the file is item 7 here.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .BaseDatasets import DataError, LoadReport, RecData, make_rec_data


def _side(path: Path, suffix: str) -> Path | None:
    cand = path.with_name(path.stem + suffix)
    return cand if cand.is_file() else None


def read_titles(path: Path, report: LoadReport, strict: bool = False,
                asin_map: dict[int, str] | None = None) -> dict[int, str]:
    """`item<TAB>asin<TAB>title` lines after a header row -> {item id: title}.

    Problems are counted in `report` (as `titles <kind>`, with the file name in the example) and the
    line is skipped; `strict` raises DataError with the line number instead.
    """
    titles: dict[int, str] = {}

    def problem(kind: str, line_no: int, reason: str) -> None:
        if strict:
            raise DataError(f"{path}: line {line_no}: {reason}")
        report.problem(f"titles {kind}", line_no, f"{path.name}: {reason}")

    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line_no == 1 or not line.strip():
                continue  # the header row (item_id, asin, title), blank lines
            parts = line.split("\t", 2)
            item = parts[0].strip()
            if len(parts) < 2 or not (item.isascii() and item.isdigit()):
                problem("malformed", line_no, "expected 'item<TAB>asin<TAB>title' with an integer item id")
                continue
            i = int(item)
            if i in titles:
                problem("duplicates", line_no, f"item {i} appears twice")
                continue
            asin = parts[1].strip()
            if asin_map is not None and i in asin_map and asin_map[i] and asin != asin_map[i]:
                problem("asin mismatch", line_no, f"item {i} has ASIN {asin_map[i]}, not {asin}")
                continue
            titles[i] = " ".join(html.unescape(parts[2] if len(parts) > 2 else "").split())
    return titles


def load_seqtxt(path: str, strict: bool = False) -> RecData:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"sequence file not found: {p} (expected 'user item item ...' lines)")
    report = LoadReport(source=str(p))
    users, lens, flat = [], [], []
    seen_users: set[str] = set()
    with open(p, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            report.lines += 1
            if len(parts) < 2 or not all(t.isascii() and t.isdigit() for t in parts):
                reason = "needs a user id and at least one item" if len(parts) < 2 else "non-integer id"
                if strict:
                    raise DataError(f"{p}: line {line_no}: {reason}")
                report.problem("malformed", line_no, reason)
                continue
            if parts[0] in seen_users:
                if strict:
                    raise DataError(f"{p}: line {line_no}: user {parts[0]} appears twice")
                report.problem("duplicates", line_no, f"user {parts[0]} appears twice")
                continue
            seen_users.add(parts[0])
            users.append(int(parts[0]))
            lens.append(len(parts) - 1)
            flat.extend(parts[1:])
    report.kept = len(users)
    if not users:
        raise DataError(f"{p}: no usable lines (read {report.lines:,}; expected 'user item item ...' with "
                        f"integer ids" + (f"; first problems: {'; '.join(report.examples)})"
                                          if report.examples else ")"))
    lens_a = np.asarray(lens, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens_a)])
    df = pd.DataFrame({
        "user": np.repeat(np.asarray(users, dtype=np.int64), lens_a),
        "item": np.asarray(flat, dtype=np.int64),
        "timestamp": np.arange(offsets[-1]) - np.repeat(offsets[:-1], lens_a),
    })

    items = pd.DataFrame(index=pd.Index(np.unique(df["item"].to_numpy()), dtype=object))
    attr_file = _side(p, "_item2attributes.json")
    if attr_file is not None:
        try:
            with open(attr_file, encoding="utf-8") as f:
                attrs = {int(k): [int(a) for a in v] for k, v in json.load(f).items()}
        except (ValueError, TypeError, AttributeError) as e:
            raise DataError(f"{attr_file}: expected a JSON object {{\"item id\": [attribute ids]}} "
                            f"({type(e).__name__}: {e}); fix or remove the file") from None
        items["attributes"] = [attrs.get(int(i), []) for i in items.index]
    asin_file = _side(p, "_item2asin.tsv")
    asin_map = None
    if asin_file is not None:
        asin = pd.read_csv(asin_file, sep="\t", dtype=str)
        if asin.shape[1] < 2 or not asin.iloc[:, 0].fillna("").str.isdigit().all():
            raise DataError(f"{asin_file}: expected a header row, then 'item<TAB>asin' lines with "
                            f"integer item ids; fix or remove the file")
        asin_map = dict(zip(asin.iloc[:, 0].astype(int), asin.iloc[:, 1], strict=False))
        items["asin"] = [asin_map.get(int(i), "") for i in items.index]
        kw_file = _side(p, "_item_keywords.txt")
        if kw_file is not None:
            kw: dict[str, list[str]] = {}
            with open(kw_file, encoding="utf-8") as f:
                for line in f:
                    a, _, rest = line.rstrip("\n").partition(" ")
                    kw[a] = [t for t in rest.split("|") if t]
            items["keywords"] = [kw.get(a, []) for a in items["asin"]]
    title_file = _side(p, "_item_titles.tsv")
    if title_file is not None:
        titles = read_titles(title_file, report, strict, asin_map)
        items["title"] = [titles.get(int(i), "") for i in items.index]
    items.index = pd.Index(items.index.astype(object))
    df["user"] = df["user"].astype(object)
    df["item"] = df["item"].astype(object)
    data = make_rec_data(f"seqtxt:{p.name}", df, items=items, has_timestamps=False, report=report,
                         sort_ids=True)
    for col in ("asin",):
        if col in data.items:
            data.items[col] = data.items[col].fillna("").astype(str)
    if "keywords" in data.items:
        data.items["keywords"] = [x if isinstance(x, list) else [] for x in data.items["keywords"]]
    return data
