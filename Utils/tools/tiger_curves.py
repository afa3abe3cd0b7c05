"""TIGER learning curves side by side, and what a fit of each predicts about the step count.

    python -m Utils.tools.tiger_curves \
        --run "TF-IDF keyword IDs=assets/TIGER/results/beauty.json" \
        --run "MiniLM title IDs=assets/TIGER/results/beauty_minilm.json" \
        --target 0.0648 --plot assets/TIGER/beauty_curves_by_content.png \
        --out assets/TIGER/results/beauty_curves_by_content.json

Each `--run LABEL=PATH` is a TIGER demo RESULT json; its `curve` holds the validation Recall@10 and
NDCG@10 (on the demo's sample of validation users) at each validation step. The figure draws
validation Recall@10 against the training step for every run.

The fit: over the second half of each curve's points (the first half is the warm-up, where the model
is still learning the code grammar), validation Recall@10 = a + b ln(step), by least squares. With b > 0
it predicts the step at which the line reaches `--target` (exp((target - a) / b)). The validation
sample and the test users differ (the demo validates on a sample of users and tests all of them at the
best validation step), so the target is also carried over to the validation scale by the ratio of the
validation Recall@10 of the tested state (best validation NDCG@10) to its test Recall@10, and the step for that is printed too. It is a
log-linear extrapolation of a curve that will eventually saturate, so the predicted step count is a
lower bound on what closing the gap would take, and it compares validation users with the paper's test
numbers; both caveats are printed with it. With b <= 0 the curve has stopped rising and no step count is
predicted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..io import write_json_atomic


def log_fit(steps: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Least-squares a, b of values = a + b ln(steps)."""
    X = np.stack([np.ones_like(steps, dtype=float), np.log(steps.astype(float))], axis=1)
    (a, b), *_ = np.linalg.lstsq(X, values.astype(float), rcond=None)
    return float(a), float(b)


def summarize(label: str, result: dict, target: float | None) -> dict:
    curve = result.get("curve") or []
    if len(curve) < 4:
        raise SystemExit(f"error: run {label!r} has {len(curve)} validation points; a fit needs at least 4")
    steps = np.array([p["step"] for p in curve])
    recall = np.array([p["Recall@10"] for p in curve])
    ndcg = np.array([p["NDCG@10"] for p in curve])
    tail = slice(len(curve) // 2, None)
    a, b = log_fit(steps[tail], recall[tail])
    best = int(np.argmax(ndcg))  # the demo tests the state of best validation NDCG@10
    out = {
        "label": label,
        "steps": int(steps[-1]),
        "train_seconds": round(float(curve[-1]["train_seconds"]), 1),
        "best_valid_step": int(steps[best]),
        "best_valid_NDCG@10": float(ndcg[best]),
        "best_valid_Recall@10": float(recall[best]),
        "test": {k: v for k, v in (result.get("metrics") or {}).items() if k.endswith("@10")},
        "fit": {"points": int(len(steps[tail])), "from_step": int(steps[tail][0]), "a": a, "b_per_ln_step": b},
    }
    if target is not None:
        out["target_Recall@10"] = target
        out["predicted_step_at_target"] = predict(a, b, target)
        test = out["test"].get("Recall@10")
        if test:  # the run tested its best validation state: carry the target over to the validation scale
            ratio = float(recall[best]) / test
            out["valid_to_test_ratio"] = ratio
            out["predicted_step_at_target_on_validation_scale"] = predict(a, b, target * ratio)
    return out


def predict(a: float, b: float, value: float) -> int | None:
    """The step at which a + b ln(step) reaches value (None when the line does not rise)."""
    return round(math.exp((value - a) / b)) if b > 0 and (value - a) / b < 700 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="LABEL=PATH",
                    help="a TIGER RESULT json with its label (repeat)")
    ap.add_argument("--target", type=float, default=None, help="Recall@10 to extrapolate to (the paper's)")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    rows, curves = [], {}
    for spec in a.run:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            print(f"error: --run {spec!r}: expected LABEL=PATH", file=sys.stderr)
            return 2
        if not Path(path).is_file():
            print(f"error: --run {label}: {path} does not exist; expected a TIGER demo RESULT json", file=sys.stderr)
            return 2
        result = json.loads(Path(path).read_text())
        row = summarize(label, result, a.target)
        row["path"] = path
        rows.append(row)
        curve = result["curve"]
        curves[f"{label}: validation Recall@10"] = ([p["step"] for p in curve], [p["Recall@10"] for p in curve])
        pred = row.get("predicted_step_at_target")
        scaled = row.get("predicted_step_at_target_on_validation_scale")
        print(f"{label}: {row['steps']:,} steps ({row['train_seconds']:,.0f} s of training), best validation "
              f"NDCG@10 {row['best_valid_NDCG@10']:.4f} (Recall@10 {row['best_valid_Recall@10']:.4f}) at step "
              f"{row['best_valid_step']:,}; fit over steps "
              f"{row['fit']['from_step']:,}+: {row['fit']['a']:.4f} + {row['fit']['b_per_ln_step']:.4f} ln(step)"
              + (f"; reaches {a.target} at step {pred:,}" if pred else
                 ("; the fit does not rise, no step count predicted" if a.target is not None else ""))
              + (f"; reaches it on the validation scale (x {row['valid_to_test_ratio']:.2f}, the tested state's "
                 f"validation over its test Recall@10) at step {scaled:,}" if scaled else "")
              + (" (log-linear: lower bounds)" if pred else ""))
    if a.plot:
        from ..plotting import plot_curves

        if a.target is not None:
            xs = sorted({x for xs_, _ in curves.values() for x in xs_})
            curves["paper, test Recall@10"] = ([xs[0], xs[-1]], [a.target, a.target])
        plot_curves(curves, a.plot, xlabel="training step", ylabel="Recall@10", title="TIGER on Beauty")
        print("figure saved to", a.plot)
    out = {"tool": "Utils.tools.tiger_curves", "target_Recall@10": a.target, "runs": rows}
    if a.out:
        write_json_atomic(a.out, out)
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
