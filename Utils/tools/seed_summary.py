"""Mean ± sd over the seeds of one configuration, from the demos' stored RESULT jsons.

A note's headline reports a configuration as the mean and the sample standard deviation over the seeds
that were run. This command computes them from the stored runs and writes them as one json beside the
runs, so the number in the note is a number a command printed and a file holds:

    python -m Utils.tools.seed_summary assets/SASRec/results/summary_beauty.json \
        assets/SASRec/results/beauty_ce_batch32_seed0.json assets/SASRec/results/beauty_ce_batch32_seed1.json ...

The summary keeps the RESULT schema (`model`, `data`, `protocol`, `metrics`, `baseline`) with means,
adds `sd` (sample standard deviation, n - 1; 0 for one run), `n` and `runs` (file names relative to the
summary's folder). `tests/test_notes.py` recomputes every `summary_*.json` from its runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

# Numeric top-level fields averaged besides the metric dicts.
SKIP = ("config", "curve", "sweep", "metrics", "baseline", "valid_metrics")
SCALARS = ("train_seconds", "eval_seconds", "wall_seconds", "epochs", "best_epoch", "params")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def _numeric_keys(dicts: list[dict]) -> list[str]:
    """Keys whose value is a number in every dict, in the first dict's order."""
    return [k for k, v in dicts[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and all(isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool) for d in dicts)]


def summarize(runs: list[dict], names: list[str]) -> dict:
    """The summary dict of `runs` (RESULT dicts of one configuration, one per seed)."""
    if not runs:
        raise ValueError("seed_summary needs at least one run")
    metric_dicts = [r.get("metrics") or {} for r in runs]
    keys = _numeric_keys(metric_dicts)
    if not keys:
        raise ValueError("the runs share no numeric metric")
    out: dict = {"model": runs[0].get("model"), "data": runs[0].get("data"),
                 "protocol": runs[0].get("protocol"), "n": len(runs), "runs": names,
                 "metrics": {}, "sd": {}}
    for k in keys:
        out["metrics"][k], out["sd"][k] = _mean_sd([d[k] for d in metric_dicts])
    base = [r.get("baseline") or {} for r in runs]
    base_metrics = [b.get("metrics") or {} for b in base]
    bkeys = _numeric_keys(base_metrics) if all(base_metrics) else []
    if bkeys:
        out["baseline"] = {"name": base[0].get("name"), "metrics": {}, "sd": {}}
        for k in bkeys:
            out["baseline"]["metrics"][k], out["baseline"]["sd"][k] = _mean_sd([b[k] for b in base_metrics])
    valid = [r.get("valid_metrics") for r in runs]
    if all(isinstance(v, dict) and v for v in valid):
        vkeys = _numeric_keys(valid)
        out["valid_metrics"] = {k: _mean_sd([v[k] for v in valid])[0] for k in vkeys}
        out["valid_sd"] = {k: _mean_sd([v[k] for v in valid])[1] for k in vkeys}
    for k in SCALARS:
        if all(isinstance(r.get(k), (int, float)) for r in runs):
            out[k], out[k + "_sd"] = _mean_sd([r[k] for r in runs])
    # Nested results a demo stores besides its metrics (DIN's base model, AUC by group, ...).
    for k, v in runs[0].items():
        if isinstance(v, dict) and k not in SKIP and k not in out:
            tree = _mean_tree([r.get(k) for r in runs])
            if tree is not None:
                out[k], out[k + "_sd"] = tree
    return out


def _mean_tree(values: list) -> tuple | None:
    """(mean tree, sd tree) over the numeric leaves that every value has; None when there are none."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return _mean_sd(values)
    if not all(isinstance(v, dict) for v in values):
        return None
    mean, sd = {}, {}
    for key in values[0]:
        sub = _mean_tree([v.get(key) for v in values])
        if sub is not None:
            mean[key], sd[key] = sub
    return (mean, sd) if mean else None


def build(out_path: Path, run_paths: list[Path]) -> dict:
    """Read the runs, summarise them, return the summary (nothing written)."""
    runs, names = [], []
    for p in run_paths:
        try:
            runs.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read RESULT json {p}: {e}") from e
        names.append(Path(p).resolve().relative_to(out_path.resolve().parent).as_posix()
                     if Path(p).resolve().is_relative_to(out_path.resolve().parent) else str(p))
    return summarize(runs, names)


def recompute(summary_path: Path) -> dict:
    """Summarise again the runs a stored summary names (for the consistency test)."""
    stored = json.loads(summary_path.read_text())
    return build(summary_path, [summary_path.parent / n for n in stored["runs"]])


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write `obj` as json through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, nargs="?", help="summary json to write (assets/M/results/summary_x.json)")
    ap.add_argument("runs", type=Path, nargs="*", help="RESULT jsons, one per seed")
    ap.add_argument("--refresh", action="store_true",
                    help="recompute every stored assets/*/results/summary_*.json from the runs it names")
    args = ap.parse_args(argv)
    if args.refresh:
        root = Path(__file__).resolve().parents[2]
        for path in sorted(root.glob("assets/*/results/summary_*.json")):
            write_json_atomic(path, recompute(path))
            print(f"refreshed {path.relative_to(root)}")
        return 0
    if args.out is None or not args.runs:
        print("error: give the summary path and at least one RESULT json (or --refresh)", file=sys.stderr)
        return 2
    if args.out.name in {p.name for p in args.runs}:
        print("error: the summary path is one of the runs; expected a new file name", file=sys.stderr)
        return 2
    if not args.out.name.startswith("summary_"):
        print("error: name the summary summary_<name>.json so the tests find it", file=sys.stderr)
        return 2
    try:
        summary = build(args.out, args.runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_json_atomic(args.out, summary)
    print(f"{summary['model']} on {summary['data']}: n = {summary['n']} runs")
    for k, mean in summary["metrics"].items():
        print(f"  {k:>14}: {mean:.4f} ± {summary['sd'][k]:.4f}")
    if "baseline" in summary:
        b = summary["baseline"]
        print(f"  baseline {b['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in b["metrics"].items()))
    for k, v in summary.items():
        if k != "baseline" and not k.endswith("_sd") and isinstance(v, dict) \
                and isinstance(v.get("metrics"), dict):
            sd = summary[k + "_sd"]["metrics"]
            print(f"  {k}: " + ", ".join(f"{m} {x:.4f} ± {sd[m]:.4f}" for m, x in v["metrics"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
