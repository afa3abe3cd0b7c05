"""Data layer: one `load(spec)` entry for every source, the canonical form and the split.

Specs (the `--data` flag of every demo):
    synthetic | synthetic:SEED          embedded synthetic default (Amazon 2018 schema)
    synthetic:scale=1m[,seed=SEED]      the same world at ~1M items / ~10M interactions (also 200k, 50000)
    amazon2018:REVIEWS[,META]           Amazon Review 2018 reviews json[.gz] (+ meta_*.json[.gz])
    seqtxt:PATH                         'user item item ...' lines (+ *_item2attributes.json beside)
    movielens:FOLDER                    ml-100k / ml-1m / ml-20m / ml-25m folder
    libfm:PATH                          libFM CTR file or folder of *.libfm files
"""

from __future__ import annotations

from pathlib import Path

from .BaseDatasets import (
    PAD,
    CTRData,
    CTRDataset,
    DataError,
    LoadReport,
    LOOSplit,
    RecallDataset,
    RecData,
    RerankDataset,
    TensorDictDataset,
    k_core,
    leave_one_out,
    make_rec_data,
)

SPECS = ("synthetic", "amazon2018", "seqtxt", "movielens", "libfm")


KINDS = {"interactions": "interaction data (synthetic, amazon2018:PATH, seqtxt:PATH, movielens:PATH)",
         "ctr": "click-through (CTR) data (libfm:PATH, or synthetic for the demos that build clicks from it)"}


def load(spec: str = "synthetic", strict: bool = False, verbose: bool = False, *,
         expect: str | None = None, demo: str = "this demo") -> RecData | CTRData:
    """Load a data set from a DESIGN.md `--data` spec. Raises DataError on a bad spec or path.

    `expect="interactions"` (recall, re-ranking and behaviour demos) or `expect="ctr"` (field-CTR demos)
    turns data of the other kind into a DataError that names what `demo` reads, instead of a crash later.
    """
    if expect is not None and expect not in KINDS:
        raise ValueError(f"expect must be one of {sorted(KINDS)}, got {expect!r}")
    if not isinstance(spec, str) or not spec:
        raise DataError(f"data spec must be a non-empty string like 'synthetic' or 'seqtxt:PATH', got {spec!r}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SPECS:
        raise DataError(f"unknown data spec {spec!r}: expected one of "
                        + ", ".join(f"'{s}:PATH'" if s != "synthetic" else "'synthetic'" for s in SPECS))
    if kind == "synthetic":
        from .synthetic import load_synthetic, load_synthetic_scaled, parse_synthetic_arg
        seed, n_items = parse_synthetic_arg(arg)
        data = load_synthetic(seed) if n_items is None else load_synthetic_scaled(seed, n_items)
    else:
        if not arg:
            raise DataError(f"data spec {spec!r} needs a path: '{kind}:PATH'")
        first = arg.split(",")[0]
        if not Path(first).exists():
            raise DataError(f"{kind}: path does not exist: {first!r} (from spec {spec!r})")
        if kind == "amazon2018":
            from .amazon2018 import load_amazon2018
            data = load_amazon2018(arg, strict=strict)
        elif kind == "seqtxt":
            from .seqtxt import load_seqtxt
            data = load_seqtxt(arg, strict=strict)
        elif kind == "movielens":
            from .movielens import load_movielens
            data = load_movielens(arg, strict=strict)
        else:
            from .libfm import load_libfm
            data = load_libfm(arg, strict=strict)
    if verbose or data.report.skipped:
        print(f"[data] {data.report}")
    if expect == "interactions" and isinstance(data, CTRData):
        raise DataError(f"{spec!r} is click-through (CTR) data; {demo} reads {KINDS['interactions']}")
    if expect == "ctr" and isinstance(data, RecData) and kind != "synthetic":
        raise DataError(f"{spec!r} is interaction data; {demo} reads {KINDS['ctr']}")
    return data


__all__ = [
    "PAD", "CTRData", "CTRDataset", "DataError", "LoadReport", "LOOSplit", "RecallDataset", "RecData",
    "RerankDataset", "TensorDictDataset", "k_core", "leave_one_out", "load", "make_rec_data",
]
