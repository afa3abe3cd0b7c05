"""libFM CTR files: `<label> <feature>:<value> ...` per line, one-hot fields in a fixed column order.

`libfm:PATH` takes a file or a folder of `*.libfm` files; each file becomes a named part ('train',
'validation', 'test' from names like `frappe.validation.libfm`). The k-th feature of a line belongs to
field k; each field's global feature ids are re-coded 1..n_f (0 = padding/unknown). Labels -1/1 or 0/1
become 0/1.

Every line is checked on its own; a bad line is counted as malformed in the LoadReport and skipped (the
rest are kept), or raises `DataError` with its file and line number under `strict=True`:
- the label must be -1, 0 or 1;
- every token must be `id:1`: a non-negative integer feature id and the value 1. This loader reads
  one-hot fields (Frappe and the other NFM/AFM libFM files hold only `:1`), so `3:x`, `3:0`, `3:0.5`,
  `-3:1` and a bare `3` are malformed rather than silently read as `3`;
- the number of features must equal the field count, which is the most common count over all lines
  of all files (not the first line's, so one bad first line cannot decide it).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .BaseDatasets import CTRData, DataError, LoadReport

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
                 "country", "city"]

LABELS = {"-1": 0.0, "0": 0.0, "1": 1.0, "+1": 1.0}


def _part_name(path: Path) -> str:
    bits = path.name.split(".")
    for b in bits:
        if b in ("train", "validation", "valid", "test"):
            return "validation" if b == "valid" else b
    return path.stem


def _parse_line(tok: list[str]) -> tuple[float, list[int]] | str:
    """(label, feature ids) of one line's tokens, or the reason it is malformed."""
    label = LABELS.get(tok[0])
    if label is None:
        try:
            y = float(tok[0])
        except ValueError:
            return f"label {tok[0]!r} is not a number (expected -1, 0 or 1)"
        if y not in (-1.0, 0.0, 1.0):
            return f"label {tok[0]} is not -1, 0 or 1"
        label = 1.0 if y > 0 else 0.0
    feats = []
    for t in tok[1:]:
        fid, colon, val = t.partition(":")
        if not colon:
            return f"token {t!r} has no ':value' (expected id:1)"
        if not (fid.isascii() and fid.isdigit()):
            return f"token {t!r}: feature id must be a non-negative integer"
        if val != "1":
            try:
                ok = float(val) == 1.0
            except ValueError:
                return f"token {t!r}: value is not a number (expected id:1)"
            if not ok:
                return f"token {t!r}: value {val} is not 1 (one-hot fields expected)"
        feats.append(int(fid))
    if not feats:
        return "a label without features"
    return label, feats


def load_libfm(path: str, strict: bool = False, field_names: list[str] | None = None) -> CTRData:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.libfm"))
        if not files:
            raise DataError(f"{p}: no *.libfm files found (expected files like frappe.test.libfm)")
    elif p.is_file():
        files = [p]
    else:
        raise DataError(f"libFM path not found: {p} (expected a .libfm file or a folder of them)")
    report = LoadReport(source=str(p))

    def bad(f: Path, line_no: int, reason: str) -> None:
        if strict:
            raise DataError(f"{f}: line {line_no}: {reason}")
        report.problem("malformed", line_no, f"{f.name}: {reason}")

    # pass 1: parse every line on its own; the field count is decided after all lines are read
    parsed: list[tuple[Path, int, float, list[int]]] = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                tok = line.split()
                if not tok:
                    continue
                report.lines += 1
                out = _parse_line(tok)
                if isinstance(out, str):
                    bad(f, line_no, out)
                    continue
                parsed.append((f, line_no, out[0], out[1]))
    if not parsed:
        raise DataError(f"{p}: no usable lines (read {report.lines:,}; expected '<label> id:1 id:1 ...'"
                        + (f"; first problems: {'; '.join(report.examples)})" if report.examples else ")"))
    counts = Counter(len(feats) for _, _, _, feats in parsed)
    n_fields = counts.most_common(1)[0][0]

    # pass 2: keep the lines with the common field count, in file order; one part per file
    rows, labels, parts = [], [], {}
    start, current = 0, None
    for f, line_no, y, feats in parsed:
        if f is not current:
            if current is not None:
                parts[_part_name(current)] = np.arange(start, len(labels))
            current, start = f, len(labels)
        if len(feats) != n_fields:
            bad(f, line_no, f"{len(feats)} features, expected {n_fields} (the count on "
                            f"{counts[n_fields]:,} of {len(parsed):,} lines)")
            continue
        rows.append(feats)
        labels.append(y)
    parts[_part_name(current)] = np.arange(start, len(labels))
    for f in files:  # a file whose every line was malformed is still a (empty) part
        parts.setdefault(_part_name(f), np.arange(0))
    report.kept = len(rows)
    raw = np.asarray(rows, dtype=np.int64)  # (N, F) global feature ids
    sparse = np.zeros_like(raw)
    dims, field_raw = [], []
    for k in range(raw.shape[1]):
        uniq, inv = np.unique(raw[:, k], return_inverse=True)
        sparse[:, k] = inv + 1
        dims.append(len(uniq) + 1)
        field_raw.append(uniq)  # code c of field k is the file's feature id uniq[c - 1]
    if field_names is None:
        field_names = FRAPPE_FIELDS if raw.shape[1] == len(FRAPPE_FIELDS) and "frappe" in str(p) \
            else [f"f{k}" for k in range(raw.shape[1])]
    elif len(field_names) != raw.shape[1]:
        raise DataError(f"{p}: {len(field_names)} field names given for {raw.shape[1]} fields")
    users = sparse[:, field_names.index("user")] if "user" in field_names else None
    return CTRData(
        name=f"libfm:{p.name}", sparse=sparse, labels=np.asarray(labels, dtype=np.float32),
        field_names=list(field_names), field_dims=dims, parts=parts, users=users, report=report,
        field_raw=field_raw,
    )
