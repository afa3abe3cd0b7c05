"""Amazon Review Data (2018) loader: reviews (full or 5-core) + optional metadata.

Reviews are JSON lines with `reviewerID, asin, overall, unixReviewTime, ...`; metadata lines carry
`asin, title, brand, category (list), price, main_cat, ...`. Files may be gzipped. The 2014 release
wrote Python-literal lines (single quotes); those are read too.

Real files contain malformed lines, exact duplicate reviews and records missing required fields: each is
counted in the LoadReport and skipped; `strict=True` raises `DataError` with the line number instead.
Timestamps: a review without `unixReviewTime` is counted under "missing fields" and skipped; a negative
one (before 1970: no Amazon review is) is counted under "negative timestamp" and skipped. A truncated or
corrupt gzip file is a `DataError` naming the file and the last line read (strict or not: what follows
the break cannot be read).

Item `category` is the first level below the root of the category path (e.g. "Skin Care" for
["Beauty", "Skin Care", "Face"]); the whole path is kept in `categories`.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from .BaseDatasets import DataError, LoadReport, RecData, make_rec_data

REQUIRED_REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")


def open_text(path: Path):
    """Open a plain or gzipped text file (by magic bytes, not by name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a plain or gzipped file; a broken gzip stream is a DataError that names
    the file and the line reached, instead of gzip's bare EOFError / BadGzipFile."""
    line_no = 0
    with open_text(path) as f:
        it = iter(f)
        while True:
            try:
                line = next(it)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error) as e:
                what = "ends early (truncated download?)" if isinstance(e, EOFError) else f"is corrupt ({e})"
                raise DataError(
                    f"{path}: the gzip stream {what} after line {line_no:,}; download the file again "
                    f"(`python -m Datasets.download ...`) or check it with `gzip -t`"
                ) from None
            line_no += 1
            yield line_no, line


def _parse_record(line: str):
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        try:
            rec = ast.literal_eval(line)  # 2014 release: Python literals
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return rec if isinstance(rec, dict) else None


def _fail(report: LoadReport, strict: bool, kind: str, line_no: int, reason: str, path: Path) -> None:
    if strict:
        raise DataError(f"{path}: line {line_no}: {reason}")
    report.problem(kind, line_no, reason)


def read_reviews(path: str | Path, strict: bool = False) -> tuple[pd.DataFrame, LoadReport]:
    """Parse a reviews file into raw columns user, item, timestamp, rating."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"reviews file not found: {path} (expected an Amazon 2018 reviews .json[.gz])")
    report = LoadReport(source=str(path))
    users, items, times, ratings = [], [], [], []
    seen: set[tuple[str, str, int]] = set()
    for line_no, line in numbered_lines(path):
        if not line.strip():
            continue
        report.lines += 1
        rec = _parse_record(line)
        if rec is None:
            _fail(report, strict, "malformed", line_no, "not a JSON object", path)
            continue
        missing = [k for k in REQUIRED_REVIEW_FIELDS if rec.get(k) in (None, "")]
        if missing:
            _fail(report, strict, "missing_fields", line_no, f"missing {', '.join(missing)}", path)
            continue
        try:
            ts = int(rec["unixReviewTime"])
            rating = float(rec["overall"]) if rec.get("overall") is not None else math.nan
        except (TypeError, ValueError, OverflowError):
            _fail(report, strict, "malformed", line_no, "non-numeric unixReviewTime/overall", path)
            continue
        if ts < 0:
            _fail(report, strict, "negative timestamp", line_no, f"negative unixReviewTime {ts}", path)
            continue
        key = (str(rec["reviewerID"]), str(rec["asin"]), ts)
        if key in seen:
            _fail(report, strict, "duplicates", line_no,
                  f"duplicate review {key[0]}/{key[1]} at {ts}", path)
            continue
        seen.add(key)
        users.append(key[0])
        items.append(key[1])
        times.append(ts)
        ratings.append(rating)
    report.kept = len(users)
    df = pd.DataFrame({"user": users, "item": items, "timestamp": times, "rating": ratings})
    return df, report


_PRICE = re.compile(r"[-+]?\d[\d,]*\.?\d*")


def parse_price(value) -> float:
    """'$12.99' -> 12.99; '$1.00 - $2.00' -> 1.0; anything else -> nan."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return math.nan
    m = _PRICE.search(value)
    if m is None or "$" not in value and not value.strip()[:1].isdigit():
        return math.nan
    try:
        return float(m.group().replace(",", ""))
    except ValueError:
        return math.nan


def read_meta(path: str | Path, strict: bool = False) -> tuple[pd.DataFrame, LoadReport]:
    """Parse a meta file into a table indexed by asin: title, brand, category, categories, price."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"meta file not found: {path} (expected an Amazon 2018 meta_*.json[.gz])")
    report = LoadReport(source=str(path))
    rows: dict[str, tuple] = {}
    for line_no, line in numbered_lines(path):
        if not line.strip():
            continue
        report.lines += 1
        rec = _parse_record(line)
        if rec is None:
            _fail(report, strict, "malformed", line_no, "not a JSON object", path)
            continue
        asin = rec.get("asin")
        if not asin:
            _fail(report, strict, "missing_fields", line_no, "missing asin", path)
            continue
        if not isinstance(asin, (str, int)):
            _fail(report, strict, "malformed", line_no, f"asin is a {type(asin).__name__}", path)
            continue
        asin = str(asin)
        if asin in rows:
            _fail(report, strict, "duplicates", line_no, f"duplicate asin {asin}", path)
            continue
        cats = rec.get("category") or rec.get("categories") or []
        if isinstance(cats, str):
            cats = [cats]
        elif not isinstance(cats, list):
            cats = []
        if cats and isinstance(cats[0], list):  # 2014: list of paths
            cats = cats[0]
        cats = [str(c) for c in cats if isinstance(c, str)]
        cat = cats[1] if len(cats) > 1 else (cats[0] if cats else str(rec.get("main_cat") or ""))
        title = rec.get("title") or ""
        rows[asin] = (str(title), str(rec.get("brand") or ""), cat, cats,
                      parse_price(rec.get("price")))
    report.kept = len(rows)
    meta = pd.DataFrame.from_dict(
        rows, orient="index", columns=["title", "brand", "category", "categories", "price"]
    )
    return meta, report


def find_meta(reviews: Path) -> Path | None:
    """meta_<Category>.json[.gz] beside <Category>[_5].json[.gz], if present."""
    stem = reviews.name.split(".")[0]
    stem = stem[:-2] if stem.endswith("_5") else stem
    for cand in (f"meta_{stem}.json.gz", f"meta_{stem}.json"):
        if (reviews.parent / cand).is_file():
            return reviews.parent / cand
    return None


def load_amazon2018(path: str, meta: str | None = None, strict: bool = False,
                    name: str | None = None) -> RecData:
    """Load reviews (+ meta) into RecData. `path` may be 'REVIEWS,META'."""
    if meta is None and "," in path:
        path, meta = path.split(",", 1)
    reviews = Path(path)
    df, report = read_reviews(reviews, strict=strict)
    meta_path = Path(meta) if meta else find_meta(reviews)
    items = None
    if meta_path is not None:
        items, meta_report = read_meta(meta_path, strict=strict)
        report.other.update({f"meta {k}": v for k, v in
                             (("malformed", meta_report.malformed),
                              ("duplicates", meta_report.duplicates),
                              ("missing fields", meta_report.missing_fields)) if v})
        report.examples.extend(meta_report.examples[:2])
    data = make_rec_data(name or f"amazon2018:{reviews.name}", df, items=items, report=report)
    return data
