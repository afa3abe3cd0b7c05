"""libFM CTR files: `<label> <feature>:<value> ...` per line, one-hot fields in a fixed column order.

`libfm:PATH` takes a file or a folder of `*.libfm` files; each file becomes a named part ('train',
'validation', 'test' from names like `frappe.validation.libfm`). The k-th feature of a line belongs to
field k; each field's global feature ids are re-coded 1..n_f (0 = padding/unknown). Labels -1/1 or 0/1
become 0/1. Lines with a different number of features than the first line are malformed: counted and
skipped (or raise with `strict=True`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .BaseDatasets import CTRData, DataError, LoadReport

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
                 "country", "city"]


def _part_name(path: Path) -> str:
    bits = path.name.split(".")
    for b in bits:
        if b in ("train", "validation", "valid", "test"):
            return "validation" if b == "valid" else b
    return path.stem


def load_libfm(path: str, strict: bool = False, field_names: list[str] | None = None) -> CTRData:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.libfm"))
        if not files:
            raise DataError(f"{p}: no *.libfm files found")
    elif p.is_file():
        files = [p]
    else:
        raise DataError(f"libFM path not found: {p} (expected a .libfm file or a folder of them)")
    report = LoadReport(source=str(p))
    rows, labels, parts = [], [], {}
    n_fields = None
    for f in files:
        start = len(labels)
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                tok = line.split()
                if not tok:
                    continue
                report.lines += 1
                try:
                    y = float(tok[0])
                    feats = [int(t.split(":", 1)[0]) for t in tok[1:]]
                except ValueError:
                    msg = f"{f.name}: unparsable label or feature"
                    if strict:
                        raise DataError(f"{f}: line {line_no}: {msg}") from None
                    report.problem("malformed", line_no, msg)
                    continue
                if n_fields is None:
                    n_fields = len(feats)
                if len(feats) != n_fields or y not in (-1.0, 0.0, 1.0):
                    msg = (f"{f.name}: expected label in {{-1,0,1}} and {n_fields} features, "
                           f"got label {tok[0]} and {len(feats)} features")
                    if strict:
                        raise DataError(f"{f}: line {line_no}: {msg}")
                    report.problem("malformed", line_no, msg)
                    continue
                rows.append(feats)
                labels.append(1.0 if y > 0 else 0.0)
        parts[_part_name(f)] = np.arange(start, len(labels))
    if not rows:
        raise DataError(f"{p}: no usable lines")
    report.kept = len(rows)
    raw = np.asarray(rows, dtype=np.int64)  # (N, F) global feature ids
    sparse = np.zeros_like(raw)
    dims = []
    for k in range(raw.shape[1]):
        uniq, inv = np.unique(raw[:, k], return_inverse=True)
        sparse[:, k] = inv + 1
        dims.append(len(uniq) + 1)
    if field_names is None:
        field_names = FRAPPE_FIELDS if raw.shape[1] == len(FRAPPE_FIELDS) and "frappe" in str(p) \
            else [f"f{k}" for k in range(raw.shape[1])]
    users = sparse[:, field_names.index("user")] if "user" in field_names else None
    return CTRData(
        name=f"libfm:{p.name}", sparse=sparse, labels=np.asarray(labels, dtype=np.float32),
        field_names=list(field_names), field_dims=dims, parts=parts, users=users, report=report,
    )
