"""The Amazon 2018 loader on generated files of a million and ten million lines: lines per second and
peak resident memory, streaming vs the whole load, and the loader as it was before it streamed.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.stream_loader \
        --folder /tmp/amazon_scale --out assets/Scale/results/stream_loader.json

The files are the `synthetic:scale=N` worlds written in the Amazon 2018 schema by
`Datasets.synthetic.write_scaled_reviews` (scale 100k: about 1.0M review lines; scale 1m: about 10.2M),
generated once into `--folder` (about 30 MB and 300 MB of gzip; never into the repository).
Each measurement runs in a fresh process started by a parent that imports nothing heavy (on Linux a
child's `ru_maxrss` starts from its parent's peak), so its peak RSS (`resource.getrusage`; `VmHWM` of
/proc/self/status as a cross-check) is its own:

- `stream`: `iter_review_chunks` over the file, chunks counted and dropped (memory: one chunk + id maps);
- `load`: `load_amazon2018` (reviews + meta), the whole RecData in memory;
- `before`: the loader before it streamed (one Python string per review and field, a set of keys for
  duplicates, every meta row kept; its reviews reader is kept below as `legacy_read_reviews`), on the
  small file only by default.

`--check` also builds `synthetic:scale=1m` in memory and checks that the 10M-line file holds the same
interactions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from Utils.atomic import write_json_atomic

FILES = {"1M": "100k", "10M": "1m"}  # label -> synthetic scale (items)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mb() -> float | None:
    """Peak RSS of this process image (Linux /proc), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def legacy_read_reviews(path: Path):
    """The reviews reader as it was before streaming (same accounting, one object per field)."""
    import pandas as pd

    from Datasets.amazon2018 import REQUIRED_REVIEW_FIELDS, _parse_record, numbered_lines
    from Datasets.BaseDatasets import LoadReport

    report = LoadReport(source=str(path))
    users, items, times, ratings = [], [], [], []
    seen: set[tuple[str, str, int]] = set()
    for line_no, line in numbered_lines(path):
        if not line.strip():
            continue
        report.lines += 1
        rec = _parse_record(line)
        if rec is None:
            report.problem("malformed", line_no, "not a JSON object")
            continue
        missing = [k for k in REQUIRED_REVIEW_FIELDS if rec.get(k) in (None, "")]
        if missing:
            report.problem("missing_fields", line_no, f"missing {', '.join(missing)}")
            continue
        try:
            ts = int(rec["unixReviewTime"])
            rating = float(rec["overall"]) if rec.get("overall") is not None else math.nan
        except (TypeError, ValueError, OverflowError):
            report.problem("malformed", line_no, "non-numeric unixReviewTime/overall")
            continue
        if ts < 0:
            report.problem("negative timestamp", line_no, f"negative unixReviewTime {ts}")
            continue
        key = (str(rec["reviewerID"]), str(rec["asin"]), ts)
        if key in seen:
            report.problem("duplicates", line_no, f"duplicate review {key[0]}/{key[1]} at {ts}")
            continue
        seen.add(key)
        users.append(key[0])
        items.append(key[1])
        times.append(ts)
        ratings.append(rating)
    report.kept = len(users)
    return pd.DataFrame({"user": users, "item": items, "timestamp": times, "rating": ratings}), report


def measure(kind: str, reviews: Path) -> dict:
    """One measurement in this process (called in a child)."""
    from Datasets.amazon2018 import iter_review_chunks, load_amazon2018, read_meta
    from Datasets.BaseDatasets import LoadReport, make_rec_data

    meta = reviews.parent / "meta.json.gz"
    rss0 = peak_rss_mb()
    t, c = time.perf_counter(), time.process_time()
    if kind == "stream":
        report = LoadReport(source=str(reviews))
        rows = sum(len(ch["user"]) for ch in iter_review_chunks(reviews, report))
        lines, kept, shape = report.lines, rows, None
    elif kind == "load":
        data = load_amazon2018(str(reviews), str(meta))
        lines, kept = data.report.lines, len(data.interactions)
        shape = [data.n_users, data.n_items]
    elif kind == "before":  # as load_amazon2018 did: every review as strings, every meta row kept
        df, report = legacy_read_reviews(reviews)
        items, _ = read_meta(meta)
        data = make_rec_data("before", df, items=items, report=report)
        lines, kept, shape = report.lines, len(data.interactions), [data.n_users, data.n_items]
    else:
        raise ValueError(kind)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"kind": kind, "file": reviews.name, "lines": lines, "kept": kept, "users_items": shape,
            "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "lines_per_second": round(lines / wall),
            "lines_per_cpu_second": round(lines / cpu), "peak_rss_mb": round(peak_rss_mb(), 1),
            "vm_hwm_mb": vm_hwm_mb(), "rss_before_mb": round(rss0, 1), "load_average": [round(x, 2) for x in os.getloadavg()]}


def check_same_world(reviews: Path, scale: str) -> dict:
    """The file read back equals the world built in memory (raw ids, times, ratings)."""
    import numpy as np

    from Datasets import load
    from Datasets.amazon2018 import load_amazon2018

    read = load_amazon2018(str(reviews), str(reviews.parent / "meta.json.gz"))
    a = (read.user_raw[read.interactions["user"].to_numpy()], read.item_raw[read.interactions["item"].to_numpy()],
         read.interactions["timestamp"].to_numpy(), read.interactions["rating"].to_numpy())
    del read
    built = load(f"synthetic:scale={scale}")
    b = (built.user_raw[built.interactions["user"].to_numpy()], built.item_raw[built.interactions["item"].to_numpy()],
         built.interactions["timestamp"].to_numpy(), built.interactions["rating"].to_numpy())
    same = all(np.array_equal(x, y) for x, y in zip(a, b))
    return {"same_interactions_as_built_in_memory": bool(same), "interactions": len(a[0])}


def child(args_list: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "Utils.tools.stream_loader", *args_list], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="/tmp/amazon_scale", help="where the generated files go")
    p.add_argument("--files", default="1M,10M", help="comma list of 1M, 10M")
    p.add_argument("--before-on", default="1M", help="files on which the loader before streaming runs")
    p.add_argument("--check", action="store_true", help="check the 10M-line file against the built world")
    p.add_argument("--out", default=None)
    p.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--check-one", nargs=2, metavar=("PATH", "SCALE"), help=argparse.SUPPRESS)
    p.add_argument("--write-one", nargs=2, metavar=("FOLDER", "SCALE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return None
    if args.check_one:
        print(json.dumps(check_same_world(Path(args.check_one[0]), args.check_one[1])))
        return None
    if args.write_one:
        from Datasets.synthetic import parse_scale, write_scaled_reviews

        t = time.perf_counter()
        write_scaled_reviews(args.write_one[0], seed=0, n_items=parse_scale(args.write_one[1]))
        print(json.dumps({"write_seconds": round(time.perf_counter() - t, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}))
        return None
    labels = [x.strip() for x in args.files.split(",") if x.strip()]
    if not labels or set(labels) - set(FILES):
        p.error(f"--files {args.files!r}: expected a comma list of {', '.join(FILES)}")
    result = {"benchmark": "Amazon 2018 loader, streaming", "cpu_count": os.cpu_count(),
              "parent_peak_rss_mb": None, "files": {}}
    for label in labels:
        folder = Path(args.folder) / f"scale_{FILES[label]}"
        reviews = folder / "reviews.json.gz"
        entry = {"scale": FILES[label]}
        if not reviews.is_file():
            entry["write"] = child(["--write-one", str(folder), FILES[label]])
            print(f"[{label}] wrote {reviews}: {entry['write']}", flush=True)
        entry["gzip_mb"] = round(reviews.stat().st_size / 2**20, 1)
        kinds = ["stream", "load"] + (["before"] if label in args.before_on.split(",") else [])
        for kind in kinds:
            entry[kind] = child(["--measure", kind, str(reviews)])
            m = entry[kind]
            print(f"[{label}] {kind:6s} {m['lines']:>12,} lines  {m['seconds']:7.1f} s wall ({m['cpu_seconds']:.1f} "
                  f"s cpu)  {m['lines_per_second']:>9,} lines/s  peak RSS {m['peak_rss_mb']:8.1f} MB", flush=True)
        if args.check and label == "10M":
            entry["check"] = child(["--check-one", str(reviews), FILES[label]])
            print(f"[{label}] {entry['check']}", flush=True)
        result["files"][label] = entry
    result["parent_peak_rss_mb"] = round(peak_rss_mb(), 1)  # what each child's ru_maxrss starts from
    if args.out:  # atomic, without importing Utils.io (torch) into this light parent
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
