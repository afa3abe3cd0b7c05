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

Files of tens of millions of lines are streamed: `iter_review_chunks` turns every 100,000 reviews into
numpy arrays of integer codes, so the loader's memory is the compact result (about 20 bytes a review)
plus the distinct ids, never the file's text or a Python object per review; exact duplicates are found
after the last chunk by one sort. Measured in `python -m Utils.tools.stream_loader` (see
"Classic Models/Recall/SCALE.md").

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


CHUNK_LINES = 100_000  # kept reviews gathered in Python lists before they are packed into numpy arrays


@dataclass
class ReviewCodes:
    """The kept reviews of a file in compact form: per review int32 codes of user and item (first
    appearance order, 0-based), int64 timestamp, float32 rating; the raw ids in code order. About 20
    bytes a review plus the distinct ids, where a DataFrame of raw strings takes several hundred."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray
    user_ids: list[str]
    item_ids: list[str]

    def __len__(self) -> int:
        return len(self.user)


def _first_duplicates(u: np.ndarray, i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Positions of rows whose (user, item, timestamp) occurred in an earlier row (bool mask)."""
    order = np.lexsort((t, i, u))  # stable: equal keys keep file order, so the first one stays
    us, is_, ts = u[order], i[order], t[order]
    again = np.zeros(len(u), dtype=bool)
    again[1:] = (us[1:] == us[:-1]) & (is_[1:] == is_[:-1]) & (ts[1:] == ts[:-1])
    dup = np.zeros(len(u), dtype=bool)
    dup[order] = again
    return dup


def iter_review_chunks(path: str | Path, report: LoadReport, strict: bool = False,
                       chunk_lines: int = CHUNK_LINES, user_codes: dict | None = None,
                       item_codes: dict | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Stream a reviews file: yield dicts of numpy arrays `user`, `item` (codes from `user_codes` /
    `item_codes`, raw id -> code, extended in first-appearance order), `timestamp`, `rating`, `line`
    for every `chunk_lines` valid reviews. Memory: one chunk plus the code maps, whatever the file size.

    Malformed records, missing fields and negative timestamps are counted in `report` as they come
    (`strict` raises at the first); exact duplicates are not removed here (that needs every key seen):
    `read_review_codes` removes them after the last chunk.
    """
    path = Path(path)
    users = {} if user_codes is None else user_codes
    items = {} if item_codes is None else item_codes
    scan_once = json.JSONDecoder().scan_once  # what json.loads runs, minus two Python frames a line
    lines = 0
    cols: tuple[list, ...] = ([], [], [], [], [])
    for line_no, line in numbered_lines(path):
        if not line.strip():
            continue
        lines += 1
        try:  # the fast path of json.loads: one JSON value that ends the line; anything else goes
            rec, end = scan_once(line, 0)  # through `_parse_record`, whose answer is the rule
            if end != len(line) and line[end:] != "\n":
                rec = _parse_record(line)
        except (StopIteration, ValueError):
            rec = _parse_record(line)
        if not isinstance(rec, dict):
            report.lines = lines
            _fail(report, strict, "malformed", line_no, "not a JSON object", path)
            continue
        u, i, t = rec.get("reviewerID"), rec.get("asin"), rec.get("unixReviewTime")
        if u is None or u == "" or i is None or i == "" or t is None or t == "":
            missing = [k for k in REQUIRED_REVIEW_FIELDS if rec.get(k) in (None, "")]
            report.lines = lines
            _fail(report, strict, "missing_fields", line_no, f"missing {', '.join(missing)}", path)
            continue
        try:
            ts = int(t)
            o = rec.get("overall")
            rating = float(o) if o is not None else math.nan
        except (TypeError, ValueError, OverflowError):
            report.lines = lines
            _fail(report, strict, "malformed", line_no, "non-numeric unixReviewTime/overall", path)
            continue
        if ts < 0:
            report.lines = lines
            _fail(report, strict, "negative timestamp", line_no, f"negative unixReviewTime {ts}", path)
            continue
        u, i = str(u), str(i)
        uc = users.get(u)
        if uc is None:
            uc = users[u] = len(users)
        ic = items.get(i)
        if ic is None:
            ic = items[i] = len(items)
        cols[0].append(uc)
        cols[1].append(ic)
        cols[2].append(ts)
        cols[3].append(rating)
        cols[4].append(line_no)
        if len(cols[0]) >= chunk_lines:
            report.lines = lines
            yield _pack(cols)
            cols = ([], [], [], [], [])
    report.lines = lines
    if cols[0]:
        yield _pack(cols)


def _pack(cols: tuple[list, ...]) -> dict[str, np.ndarray]:
    return {"user": np.array(cols[0], dtype=np.int32), "item": np.array(cols[1], dtype=np.int32),
            "timestamp": np.array(cols[2], dtype=np.int64), "rating": np.array(cols[3], dtype=np.float32),
            "line": np.array(cols[4], dtype=np.int64)}


def read_review_codes(path: str | Path, strict: bool = False,
                      chunk_lines: int = CHUNK_LINES) -> tuple[ReviewCodes, LoadReport]:
    """Parse a reviews file in chunks into `ReviewCodes` (compact arrays), counting what is skipped.

    Peak memory: the compact arrays of the kept reviews, the distinct ids and one chunk of Python
    objects; not the file's text nor a Python object per review (`read_reviews` builds those)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"reviews file not found: {path} (expected an Amazon 2018 reviews .json[.gz])")
    report = LoadReport(source=str(path))
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    examples: list[tuple[int, str]] = []  # (line, text) of the first problems other than duplicates
    chunks = []
    n_examples = 0
    stream = iter_review_chunks(path, report, strict=False, chunk_lines=chunk_lines, user_codes=users,
                                item_codes=items)
    while True:
        try:
            chunk = next(stream)
        except StopIteration:
            chunk = None
        # new problems of this stretch, with their line numbers (LoadReport keeps only the text)
        for text in report.examples[n_examples:]:
            examples.append((int(text.split(":", 1)[0].split()[1]), text))
        n_examples = len(report.examples)
        if strict and report.skipped:  # the first problem in file order wins, duplicates included
            first = examples[0][0]
            _raise_first_duplicate(chunks + ([chunk] if chunk else []), users, items, path, before=first)
            raise DataError(f"{path}: {examples[0][1]}")
        if chunk is None:
            break
        chunks.append(chunk)
    cat = {k: np.concatenate([c[k] for c in chunks]) if chunks else np.zeros(0, dtype=np.int64)
           for k in ("user", "item", "timestamp", "rating", "line")}
    del chunks
    dup = _first_duplicates(cat["user"], cat["item"], cat["timestamp"])
    n_dup = int(dup.sum())
    if n_dup:
        user_ids, item_ids = list(users), list(items)
        pos = np.nonzero(dup)[0]
        if strict:
            p = pos[0]
            raise DataError(f"{path}: line {cat['line'][p]}: "
                            f"{_dup_reason(cat, p, user_ids, item_ids)}")
        report.duplicates += n_dup
        examples += [(int(cat["line"][p]), f"line {cat['line'][p]}: {_dup_reason(cat, p, user_ids, item_ids)}")
                     for p in pos[:5]]
        keep = ~dup
        cat = {k: v[keep] for k, v in cat.items()}
    report.examples = [text for _, text in sorted(examples, key=lambda e: e[0])[:5]]
    report.kept = len(cat["user"])
    codes = ReviewCodes(cat["user"].astype(np.int32), cat["item"].astype(np.int32), cat["timestamp"],
                        cat["rating"].astype(np.float32), list(users), list(items))
    return codes, report


def _dup_reason(cat: dict, p: int, user_ids: list, item_ids: list) -> str:
    return (f"duplicate review {user_ids[cat['user'][p]]}/{item_ids[cat['item'][p]]} at "
            f"{cat['timestamp'][p]}")


def _raise_first_duplicate(chunks: list[dict], users: dict, items: dict, path: Path, before: int) -> None:
    """strict: raise for the first duplicate review if it comes before line `before`."""
    if not chunks:
        return
    cat = {k: np.concatenate([c[k] for c in chunks]) for k in ("user", "item", "timestamp", "line")}
    pos = np.nonzero(_first_duplicates(cat["user"], cat["item"], cat["timestamp"]))[0]
    if len(pos) and cat["line"][pos[0]] < before:
        raise DataError(f"{path}: line {cat['line'][pos[0]]}: "
                        f"{_dup_reason(cat, pos[0], list(users), list(items))}")


def read_reviews(path: str | Path, strict: bool = False) -> tuple[pd.DataFrame, LoadReport]:
    """Parse a reviews file into raw columns user, item, timestamp, rating (one Python string per
    review and column: convenient for small files; `load_amazon2018` keeps the compact codes)."""
    codes, report = read_review_codes(path, strict=strict)
    users = np.array(codes.user_ids, dtype=object)
    items = np.array(codes.item_ids, dtype=object)
    df = pd.DataFrame({"user": users[codes.user] if len(codes) else [],
                       "item": items[codes.item] if len(codes) else [],
                       "timestamp": codes.timestamp, "rating": codes.rating.astype(np.float64)})
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


def read_meta(path: str | Path, strict: bool = False,
              keep: set | None = None) -> tuple[pd.DataFrame, LoadReport]:
    """Parse a meta file into a table indexed by asin: title, brand, category, categories, price.

    `keep`: only these asins get a row (a full meta file describes millions of items a reviews file
    may never name); every line is still checked and counted. `kept` counts the rows returned."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"meta file not found: {path} (expected an Amazon 2018 meta_*.json[.gz])")
    report = LoadReport(source=str(path))
    rows: dict[str, tuple] = {}
    seen: set[str] = set()  # every asin read, for the duplicate check when `keep` filters rows
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
        if asin in seen:
            _fail(report, strict, "duplicates", line_no, f"duplicate asin {asin}", path)
            continue
        seen.add(asin)
        if keep is not None and asin not in keep:
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
    """Load reviews (+ meta) into RecData. `path` may be 'REVIEWS,META'.

    The reviews are streamed in chunks into compact codes (`read_review_codes`), so a file of tens of
    millions of lines needs memory for its kept reviews as arrays, not for its text."""
    if meta is None and "," in path:
        path, meta = path.split(",", 1)
    reviews = Path(path)
    codes, report = read_review_codes(reviews, strict=strict)
    meta_path = Path(meta) if meta else find_meta(reviews)
    items = None
    if meta_path is not None:
        items, meta_report = read_meta(meta_path, strict=strict, keep=set(codes.item_ids))
        report.other.update({f"meta {k}": v for k, v in
                             (("malformed", meta_report.malformed),
                              ("duplicates", meta_report.duplicates),
                              ("missing fields", meta_report.missing_fields)) if v})
        report.examples.extend(meta_report.examples[:2])
        # the item table by code (the ids make_rec_data sees below), not by raw asin
        items = items.reindex(pd.Index(codes.item_ids, dtype=object))
        items.index = pd.RangeIndex(len(codes.item_ids))
    # integer codes in first-appearance order: make_rec_data's ids (first appearance) are code + 1
    df = pd.DataFrame({"user": codes.user, "item": codes.item, "timestamp": codes.timestamp,
                       "rating": codes.rating})
    data = make_rec_data(name or f"amazon2018:{reviews.name}", df, items=items, report=report)
    del df
    data.user_raw = np.array(["<pad>", *codes.user_ids], dtype=object)
    data.item_raw = np.array(["<pad>", *codes.item_ids], dtype=object)
    return data
