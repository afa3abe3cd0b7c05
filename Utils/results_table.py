"""Build the top README's results overview from the demos' stored RESULT json files.

Every real-data run a note reports is saved by its demo (`--out assets/<Model>/results/<name>.json`).
This script turns those files into the README table between the markers

    <!-- results:start -->  ...  <!-- results:end -->

so the overview cannot drift from what the commands printed. `tests/test_results_table.py` fails when
the README and the stored results disagree.

    python -m Utils.results_table          # rewrite the README section
    python -m Utils.results_table --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"
STAGES = ("Recall", "Ranking", "Re-ranking")

# The papers' own numbers on the same public data, quoted in the issues / ../shared/data/README.md.
PAPER = {
    ("SASRec", "Beauty"): "R@10 0.0605 · N@10 0.0318 (TIGER paper, Table 1)",
    ("HSTU", "Beauty"): "— (paper reports no Beauty number; compare with SASRec)",
    ("TIGER", "Beauty"): "R@10 0.0648 · N@10 0.0384 (paper, Table 1)",
    ("YoutubeDNN", "Beauty"): "— (no Beauty number; target: Caser R@10 0.0347 · N@10 0.0176)",
    ("MIND", "Beauty"): "— (no Beauty number; target: Caser R@10 0.0347 · N@10 0.0176)",
    ("SDM", "Beauty"): "— (no Beauty number; target: Caser R@10 0.0347 · N@10 0.0176)",
    ("DeepFM", "frappe"): "AUC 0.9839 (BARS Frappe_x1, mean of 5 runs; 3.9× more training rows)",
    ("DCNv2", "frappe"): "AUC 0.9838 (BARS Frappe_x1, mean of 5 runs)",
    ("AutoInt", "frappe"): "AUC 0.9837 (AutoInt+, BARS Frappe_x1, mean of 5 runs)",
    ("WideDeep", "frappe"): "AUC 0.9831 (BARS Frappe_x1, mean of 5 runs)",
    ("DIN", "Beauty"): "— (paper: Amazon Electronics, not Beauty; target: base < DIN)",
    ("DIEN", "Beauty"): "— (paper: Amazon Books/Electronics; target: DIN ≤ DIEN)",
    ("MMoE", "mmoe"): "gain over shared-bottom grows as ρ falls (paper, Fig. 4)",
}


# The run each note calls its headline (other real-data files are ablations / sweeps, shown in the
# notes). A model folder missing here contributes all of its real-data files.
HEADLINE = {
    "SASRec": "beauty_ce_batch32_seed0.json", "HSTU": "beauty_ce_t01.json", "TIGER": "beauty.json",
    "YoutubeDNN": "beauty.json", "MIND": "beauty.json", "SDM": "beauty_short5.json",
    "WideDeep": "frappe.json", "DeepFM": "frappe.json", "DCNv2": "frappe.json", "AutoInt": "frappe.json",
    "DIN": "beauty.json", "DIEN": "beauty.json", "MMoE": "correlation_30runs.json",
    "DPP": "beauty.json", "MMR": "beauty.json", "PRM": "beauty.json", "Pipeline": "beauty.json",
}


ORDER = ["YoutubeDNN", "MIND", "SDM", "HSTU", "TIGER", "SASRec", "WideDeep", "DeepFM", "DCNv2",
         "AutoInt", "DIN", "DIEN", "MMoE", "PLE", "MMR", "DPP", "PRM", "Pipeline"]


def _folder_of(model_dir: str) -> Path | None:
    if model_dir == "Pipeline":
        return ROOT / "Classic Models"
    for stage in STAGES:
        p = ROOT / "Classic Models" / stage / model_dir
        if p.is_dir():
            return p
    return None


def _headline(metrics: dict) -> str:
    if "rerank/NDCG@10" in metrics:  # the funnel: one number per stage
        keys = ["recall/Recall@200", "rank/NDCG@10", "rerank/NDCG@10", "rerank/ILD@10"]
    elif "Recall@10" in metrics and "ILD@10" not in metrics:
        keys = ["Recall@10", "NDCG@10", "Recall@50"]
    elif "AUC" in metrics:
        keys = ["AUC", "GAUC", "LogLoss"]
    elif "NDCG@10" in metrics:
        keys = ["NDCG@10", "ILD@10", "Recall@10"]
    elif any(k.startswith("MSE_") for k in metrics):  # MMoE study: MSE_<model>_corr<c>
        by_corr: dict[str, list[str]] = {}
        for k, v in metrics.items():
            _, model, corr = k.split("_", 2)
            by_corr.setdefault(corr.replace("corr", "ρ="), []).append(f"{model} {v:.4f}")
        return " · ".join(f"{c}: {', '.join(m)}" for c, m in by_corr.items())
    else:
        keys = list(metrics)[:4]
    short = {"Recall": "R", "NDCG": "N"}
    parts = []
    for k in keys:
        if k in metrics and metrics[k] is not None:
            name = k
            for a, b in short.items():
                name = name.replace(a + "@", b + "@")
            parts.append(f"{name} {metrics[k]:.4f}")
    return " · ".join(parts)


def _baseline(res: dict) -> str:
    b = res.get("baseline") or {}
    if not isinstance(b, dict) or not b.get("metrics"):
        return ""
    return f"{b.get('name', 'baseline')}: {_headline(b['metrics'])}"


def collect(root: Path = ROOT) -> list[dict]:
    rows = []
    for f in sorted((root / "assets").glob("*/results/*.json")):
        try:
            res = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if not isinstance(res, dict) or "metrics" not in res or "model" not in res:
            continue
        data = str(res.get("data", ""))
        if data.startswith("synthetic") or not isinstance(res["metrics"], dict):
            continue
        model_dir = f.parent.parent.name
        if model_dir in HEADLINE and f.name != HEADLINE[model_dir]:
            continue
        rows.append({"dir": model_dir, "file": f.relative_to(root).as_posix(), "res": res})
    return rows


def render(root: Path = ROOT) -> str:
    lines = [
        "| Model | Data | This repo (test split) | Baseline, same split | Paper | Note | Raw result |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = sorted(collect(root), key=lambda r: (ORDER.index(r["dir"]) if r["dir"] in ORDER else 99,
                                                  r["file"]))
    if not rows:
        lines.append("| — | | no real-data results stored yet | | | | |")
    for r in rows:
        res = r["res"]
        data = str(res.get("data", ""))
        data_name = Path(data.split(":", 1)[1]).stem if ":" in data else data.split(" (")[0]
        paper = next((v for (m, d), v in PAPER.items() if m == r["dir"] and d.lower() in data.lower()), "")
        folder = _folder_of(r["dir"])
        note = ""
        if folder is not None:
            rel = folder.relative_to(root).as_posix().replace(" ", "%20")
            note = f"[note]({rel}/README.md#results)"
        lines.append(
            f"| {res['model']} | {data_name} | {_headline(res['metrics'])} | {_baseline(res)} | "
            f"{paper} | {note} | [json]({r['file'].replace(' ', '%20')}) |"
        )
    return "\n".join(lines)


def update_readme(readme: Path = ROOT / "README.md", check: bool = False) -> bool:
    """Rewrite the section; with check=True only report whether it is current. Returns current?"""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render(readme.parent)}\n{END}{tail}"
    if check:
        return new == text
    if new != text:
        readme.write_text(new)
    return True


def recall_figure(root: Path = ROOT, out: Path | None = None) -> Path:
    """Recall@K of every recall model's headline Beauty run (and popularity), one line each."""
    from .plotting import plot_curves

    curves, pop = {}, None
    for r in sorted(collect(root), key=lambda r: ORDER.index(r["dir"]) if r["dir"] in ORDER else 99):
        m = r["res"]["metrics"]
        if "Beauty" not in str(r["res"].get("data", "")) or "Recall@10" not in m or "ILD@10" in m:
            continue
        ks = sorted(int(k.split("@")[1]) for k in m if k.startswith("Recall@"))
        curves[r["res"]["model"]] = (ks, [m[f"Recall@{k}"] for k in ks])
        b = (r["res"].get("baseline") or {}).get("metrics") or {}
        if pop is None and "Recall@10" in b:
            bk = sorted(int(k.split("@")[1]) for k in b if k.startswith("Recall@"))
            pop = (bk, [b[f"Recall@{k}"] for k in bk])
    if pop is not None:
        curves["Popularity"] = pop
    return plot_curves(curves, out or root / "assets" / "recall_at_k_beauty.png", xlabel="K",
                       ylabel="Recall@K (test)", logx=True,
                       title="Amazon Beauty, full ranking, seen items excluded")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="results overview in README.md from assets/*/results/*.json")
    p.add_argument("--check", action="store_true")
    p.add_argument("--figure", action="store_true", help="also redraw assets/recall_at_k_beauty.png")
    a = p.parse_args(argv)
    if a.figure:
        print(f"wrote {recall_figure()}")
    ok = update_readme(check=a.check)
    if a.check and not ok:
        print("README results section is stale: run `python -m Utils.results_table`", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
