"""Build the top README's results overview from the demos' stored RESULT json files.

Every real-data run a note reports is saved by its demo (`--out assets/<Model>/results/<name>.json`).
This script turns those files into the README table between the markers

    <!-- results:start -->  ...  <!-- results:end -->

so the overview cannot drift from what the commands printed. `tests/test_results_table.py` fails when
the README and the stored results disagree.

    python -m Utils.tools.results_table          # rewrite the README section
    python -m Utils.tools.results_table --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- results:start -->", "<!-- results:end -->"
STAGES = ("Recall", "Ranking", "Re-ranking")

# The papers' own numbers on the same public data (see ../shared/data/README.md and the notes).
PAPER = {
    ("SASRec", "Beauty"): ("R@10 0.0605 · N@10 0.0318 (SASRec's BCE, TIGER paper, Table 1); same protocol "
                           "as ours (train-only): SASRec+SS R@10 0.0921 · N@10 0.0531, eSASRec R@10 0.0928 · N@10 0.0523 "
                           "(eSASRec paper, RecTools)"),
    ("HSTU", "Beauty"): ("R@10 0.0788 · N@10 0.0439 (official code, recomputed in the eSASRec paper; the official "
                         "code trains on all but the test item, one interaction per user more than ours)"),
    ("TIGER", "Beauty"): "R@10 0.0648 · N@10 0.0384 (paper, Table 1)",
    ("GRU4Rec", "Beauty"): ("R@10 0.0283 · N@10 0.0137 (TIGER paper, Table 1; the GRU4Rec papers have no "
                            "Beauty number)"),
    ("YoutubeDNN", "Beauty"): "— (no Beauty number in the paper; Caser R@10 0.0347 · N@10 0.0176, TIGER paper, Table 1)",
    ("MIND", "Beauty"): "— (no Beauty number in the paper; Caser R@10 0.0347 · N@10 0.0176, TIGER paper, Table 1)",
    ("SDM", "Beauty"): "— (no Beauty number in the paper; Caser R@10 0.0347 · N@10 0.0176, TIGER paper, Table 1)",
    ("DeepFM", "frappe"): "AUC 0.9839 (BARS Frappe_x1, mean of 5 runs; 3.9× more training rows)",
    ("DCNv2", "frappe"): "AUC 0.9838 (BARS Frappe_x1, mean of 5 runs)",
    ("AutoInt", "frappe"): "AUC 0.9848 (AutoInt+, BARS Frappe_x1, one run; before a FuxiCTR bug fix the page listed 0.9837 over 5 runs)",
    ("WideDeep", "frappe"): "AUC 0.9831 (BARS Frappe_x1, mean of 5 runs)",
    ("FinalMLP", "frappe"): "AUC 0.9861 (BARS Frappe_x1, one run of the authors' configuration)",
    ("DIN", "Beauty"): "— (paper: Amazon Electronics, not Beauty; its claim: DIN above the base model)",
    ("DIEN", "Beauty"): "— (paper: Amazon Books/Electronics; its claim: DIEN above DIN)",
    ("MMoE", "mmoe"): "gain over shared-bottom grows as ρ falls (paper, Fig. 4)",
}


# The run each note calls its headline (other real-data files are ablations / sweeps, in the lab logs).
# A `summary_*.json` (mean ± sd over seeds, `python -m Utils.tools.seed_summary`) is preferred when it exists.
# A model folder missing here contributes all of its real-data files.
SUMMARY = {"SASRec": "summary_beauty_ledger_ce_random_itemdrop.json", "HSTU": "summary_beauty.json",
           "GRU4Rec": "summary_beauty_ledger_rr.json", "DIN": "summary_beauty.json",
           "DIEN": "summary_beauty.json", "WideDeep": "summary_frappe.json", "DeepFM": "summary_frappe.json",
           "DCNv2": "summary_frappe.json", "AutoInt": "summary_frappe.json",
           "FinalMLP": "summary_frappe.json"}
HEADLINE = {
    "SASRec": "ledger/beauty_sasrec_ce_random_itemdrop_seed0.json", "HSTU": "beauty_ce_t01.json", "TIGER": "beauty.json",
    "GRU4Rec": "summary_beauty_ledger_rr.json", "BERT4Rec": "beauty_seed0_budget8800.json",
    "YoutubeDNN": "beauty.json", "MIND": "beauty.json", "SDM": "beauty_short5.json",
    "WideDeep": "frappe.json", "DeepFM": "frappe.json", "DCNv2": "frappe.json", "AutoInt": "frappe.json",
    "FinalMLP": "frappe.json",
    "DIN": "beauty.json", "DIEN": "beauty.json", "MMoE": "correlation_30runs.json",
    "DPP": "beauty.json", "MMR": "beauty.json", "PRM": "beauty.json", "Pipeline": "beauty.json",
}


PAGES = {"Protocols", "Scale"}
ORDER = ["YoutubeDNN", "MIND", "SDM", "GRU4Rec", "HSTU", "TIGER", "SASRec", "BERT4Rec", "WideDeep", "DeepFM", "DCNv2",
         "AutoInt", "FinalMLP", "DIN", "DIEN", "MMoE", "PLE", "MMR", "DPP", "PRM", "Pipeline"]


def headline_file(model_dir: str, root: Path = ROOT) -> str | None:
    """The file name of a model's headline result: its seed summary when stored, else the single run."""
    if model_dir in SUMMARY and (root / "assets" / model_dir / "results" / SUMMARY[model_dir]).is_file():
        return SUMMARY[model_dir]
    return HEADLINE.get(model_dir)


def _folder_of(model_dir: str) -> Path | None:
    if model_dir == "Pipeline":
        return ROOT / "Classic Models"
    for stage in STAGES:
        p = ROOT / "Classic Models" / stage / model_dir
        if p.is_dir():
            return p
    return None


def _headline(metrics: dict, sd: dict | None = None) -> str:
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
            parts.append(f"{name} {_fmt(metrics[k], (sd or {}).get(k))}")
    return " · ".join(parts)


def _fmt(value: float, sd: float | None = None) -> str:
    return f"{value:.4f}" if sd is None else f"{value:.4f} ± {sd:.4f}"


def _baseline(res: dict) -> str:
    b = res.get("baseline") or {}
    if not isinstance(b, dict) or not b.get("metrics"):
        return ""
    sd = b.get("sd") if res.get("n", 1) > 1 else None
    return f"{b.get('name', 'baseline')}: {_headline(b['metrics'], sd)}"


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
        if model_dir in PAGES:  # a page's own measurements (PROTOCOLS.md, SCALE.md), not a model's
            continue
        if model_dir in HEADLINE and f.name != headline_file(model_dir, root):
            continue
        rows.append({"dir": model_dir, "file": f.relative_to(root).as_posix(), "res": res})
    return rows


def render(root: Path = ROOT) -> str:
    lines = [
        "| Model | Data | This repo (test split; mean ± sd over n seeds) | Baseline, same split | Paper "
        "| Note | Raw result |",
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
        runs = f" (n = {res['n']})" if res.get("n", 1) > 1 else ""
        sd = res.get("sd") if res.get("n", 1) > 1 else None
        lines.append(
            f"| {res['model']}{runs} | {data_name} | {_headline(res['metrics'], sd)} | {_baseline(res)} | "
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


# ---------------------------------------------------------------------------------------------
# Ledgers: the results several notes share, written once in the stage overviews between
# <!-- ledger:NAME:start --> and <!-- ledger:NAME:end -->.

# Published numbers on the same Beauty split (leave-one-out, full ranking): quotes, not our runs.
BEAUTY_PUBLISHED = [
    ("Caser (TIGER paper, Table 1)", {"Recall@10": "0.0347", "NDCG@10": "0.0176"}),
    ("HGN (TIGER paper, Table 1)", {"Recall@10": "0.0512", "NDCG@10": "0.0266"}),
    ("GRU4Rec (TIGER paper, Table 1)", {"Recall@10": "0.0283", "NDCG@10": "0.0137"}),
    ("SASRec, one sampled negative (TIGER paper, Table 1)",
     {"Recall@5": "0.0387", "NDCG@5": "0.0249", "Recall@10": "0.0605", "NDCG@10": "0.0318"}),
    ("S3-Rec (TIGER paper, Table 1)",
     {"Recall@5": "0.0387", "NDCG@5": "0.0244", "Recall@10": "0.0647", "NDCG@10": "0.0327"}),
    ("TIGER (TIGER paper, Table 1)",
     {"Recall@5": "0.0454", "NDCG@5": "0.0321", "Recall@10": "0.0648", "NDCG@10": "0.0384"}),
    ("HSTU, official code (eSASRec paper; trained on all but the test item, no validation split)",
     {"Recall@10": "0.0788", "NDCG@10": "0.0439"}),
    ("SASRec+SS, 256 sampled negatives (eSASRec paper; train-only, as ours: RecTools stops on validation)",
     {"Recall@10": "0.0921", "NDCG@10": "0.0531"}),
]
# BARS Frappe_x1 (trained on the full train file): AUC and the number of runs it is the mean of.
FRAPPE_BARS = {"WideDeep": ("0.9831", 5), "DeepFM": ("0.9839", 5), "DCNv2": ("0.9838", 5),
               "AutoInt": ("0.9848", 1), "FinalMLP": ("0.9861", 1)}


def _load(root: Path, model_dir: str, name: str | None) -> tuple[dict, str] | None:
    if name is None:
        return None
    f = root / "assets" / model_dir / "results" / name
    if not f.is_file():
        return None
    return json.loads(f.read_text()), f.relative_to(root).as_posix()


def _link(rel: str, page: Path) -> str:
    """A Markdown link to `rel` (repo-relative) from a page in `Classic Models/<Stage>/`."""
    return f"[json](../../{rel.replace(' ', '%20')})"


def _cells(metrics: dict, sd: dict | None, keys: list[str]) -> list[str]:
    return [_fmt(metrics[k], (sd or {}).get(k)) if metrics.get(k) is not None else "–" for k in keys]


def ledger_beauty(root: Path = ROOT) -> str:
    keys = ["Recall@5", "NDCG@5", "Recall@10", "NDCG@10", "Recall@50", "NDCG@50"]
    head = "| Model | runs | " + " | ".join(keys) + " | raw |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    pop = None
    for m in ["YoutubeDNN", "MIND", "SDM", "GRU4Rec", "HSTU", "TIGER", "SASRec"]:
        got = _load(root, m, headline_file(m, root))
        if got is None:
            continue
        res, rel = got
        note = f"[{m}]({m}/README.md)"
        lines.append(f"| {note} | {res.get('n', 1)} | " + " | ".join(_cells(res["metrics"], res.get("sd"), keys))
                     + f" | {_link(rel, root)} |")
        if pop is None and res.get("baseline"):
            pop = (res["baseline"], rel)
    peer = _load(root, "SASRec", "recbole_beauty_ce.json")
    if peer is not None:
        res, rel = peer
        lines.append("| RecBole 1.2.1 SASRec, full softmax, measured here on the same split | 1 | "
                     + " | ".join(_cells(res["metrics"], None, keys)) + f" | {_link(rel, root)} |")
    if pop is not None:
        (b, rel) = pop
        lines.append(f"| {b.get('name', 'popularity')} (counts from training interactions) | – | "
                     + " | ".join(_cells(b["metrics"], b.get("sd"), keys)) + f" | {_link(rel, root)} |")
    for name, vals in BEAUTY_PUBLISHED:
        lines.append(f"| {name} | – | " + " | ".join(vals.get(k, "–") for k in keys) + " | – |")
    return "\n".join(lines)


def ledger_frappe(root: Path = ROOT) -> str:
    keys = ["AUC", "LogLoss", "GAUC"]
    lines = ["| Model | runs | AUC | LogLoss | GAUC | AUC, seen (user, app) pair | AUC, new pair | raw |",
             "|" + "---|" * 8]
    base = None
    for m in ["WideDeep", "DeepFM", "DCNv2", "AutoInt", "FinalMLP"]:
        got = _load(root, m, headline_file(m, root))
        if got is None:
            continue
        res, rel = got
        seen = res.get("auc_by_seen_pair") or {}
        seen_sd = res.get("auc_by_seen_pair_sd") or {}
        pairs = [_fmt(seen[g]["AUC"], (seen_sd.get(g) or {}).get("AUC")) if g in seen else "–"
                 for g in ("seen pair", "new pair")]
        lines.append(f"| [{res['model']}]({m}/README.md) | {res.get('n', 1)} | "
                     + " | ".join(_cells(res["metrics"], res.get("sd"), keys) + pairs)
                     + f" | {_link(rel, root)} |")
        if base is None and res.get("baseline"):
            base = (res["baseline"], res.get("n", 1), rel)
    if base is not None:
        b, n, rel = base
        lines.append(f"| {b.get('name')} (stored with the Wide&Deep runs) | {n} | "
                     + " | ".join(_cells(b["metrics"], b.get("sd"), keys)) + f" | – | – | {_link(rel, root)} |")
    names = {"WideDeep": "Wide&Deep", "DeepFM": "DeepFM", "DCNv2": "DCN-V2", "AutoInt": "AutoInt+",
             "FinalMLP": "FinalMLP"}
    for m, (auc, runs) in FRAPPE_BARS.items():
        what = f"mean of {runs} runs" if runs > 1 else "one run"
        lines.append(f"| {names[m]} (BARS Frappe_x1, {what}, trained on the full train file) | {runs} | "
                     f"{auc} | – | – | – | – | – |")
    return "\n".join(lines)


def ledger_behaviour(root: Path = ROOT) -> str:
    keys = ["AUC", "GAUC", "LogLoss"]
    lines = ["| Model | runs | AUC | GAUC | LogLoss | raw |", "|---|---|---|---|---|---|"]
    din = _load(root, "DIN", headline_file("DIN", root))
    rows = []
    if din is not None and isinstance(din[0].get("base_model"), dict):
        b = din[0]["base_model"]
        sd = (din[0].get("base_model_sd") or {}).get("metrics")
        rows.append(("Embedding&MLP base model, sum pooling (DIN runs)", din[0].get("n", 1), b["metrics"], sd, din[1]))
    for m, name, label in [("DIN", headline_file("DIN", root), "[DIN](DIN/README.md)"),
                           ("DIEN", headline_file("DIEN", root), "[DIEN](DIEN/README.md), uniform auxiliary negatives"),
                           ("DIEN", "summary_beauty_aux-popularity.json",
                            "[DIEN](DIEN/README.md), auxiliary negatives by clicks (as the official code)")]:
        got = _load(root, m, name)
        if got is not None:
            rows.append((label, got[0].get("n", 1), got[0]["metrics"], got[0].get("sd"), got[1]))
    if din is not None and din[0].get("baseline"):
        b = din[0]["baseline"]
        rows.append((f"{b['name']} (DIN runs)", din[0].get("n", 1), b["metrics"], b.get("sd"), din[1]))
    for label, n, metrics, sd, rel in rows:
        lines.append(f"| {label} | {n} | " + " | ".join(_cells(metrics, sd, keys)) + f" | {_link(rel, root)} |")
    return "\n".join(lines)


def ledger_rerank(root: Path = ROOT) -> str:
    keys = ["NDCG@10", "Recall@10", "ILD@10", "Coverage@10"]
    lines = ["| Re-ranker | " + " | ".join(keys) + " | raw |", "|" + "---|" * (len(keys) + 2)]
    base = None
    for m in ["MMR", "DPP", "PRM"]:
        got = _load(root, m, HEADLINE.get(m))
        if got is None:
            continue
        res, rel = got
        lines.append(f"| [{m}]({m}/README.md) | " + " | ".join(_cells(res["metrics"], res.get("sd"), keys))
                     + f" | {_link(rel, root)} |")
        if base is None and res.get("baseline"):
            base = (res["baseline"], rel)
    # the two constraint re-rankers, from their sweeps on the same lists (seed 0 of the first stage)
    cal = _load(root, "Calibration", "tradeoff_beauty.json")
    point = cal and next((r for r in cal[0]["Calibration"] if r["lambda"] == 0.5), None)
    if point:
        lines.append("| [Calibration](Calibration/README.md), λ = 0.5 | "
                     + " | ".join(_cells(point, None, keys)) + f" | {_link(cal[1], root)} |")
    con = _load(root, "Constrained", "tradeoff_beauty.json")
    point = con and next((r for r in con[0]["sweep"] if r["quota"] == 0.3), None)
    if point:
        lines.append("| [Constrained](Constrained/README.md), DetGreedy, long-tail quota 0.3 | "
                     + " | ".join(_cells(point["det_greedy"], None, keys))
                     + f" | {_link(con[1], root)} |")
    if base is not None:
        b, rel = base
        lines.append(f"| {b['name']} (stored with the MMR run) | " + " | ".join(_cells(b["metrics"], None, keys))
                     + f" | {_link(rel, root)} |")
    return "\n".join(lines)


LEDGERS = {
    "beauty": ("Classic Models/Recall/README.md", ledger_beauty),
    "frappe": ("Classic Models/Ranking/README.md", ledger_frappe),
    "behaviour": ("Classic Models/Ranking/README.md", ledger_behaviour),
    "rerank": ("Classic Models/Re-ranking/README.md", ledger_rerank),
    "recall3": ("Classic Models/Recall/README.md", lambda root: _recall3(root)),
}


def _recall3(root: Path) -> str:
    """The recall ledger on Beauty, Sports and Toys (Utils.tools.ledger renders it from ledger.toml)."""
    from .ledger import render_block

    return render_block(root)


def replace_block(path: Path, name: str, body: str, write: bool = True) -> bool:
    """Put `body` between the page's `<!-- ledger:NAME:start -->` and `... :end -->` markers (written
    only when `write`); returns whether the page already held it."""
    text = path.read_text()
    start, end = f"<!-- ledger:{name}:start -->", f"<!-- ledger:{name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path}: markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{body}\n{end}{tail}"
    if new != text and write:
        path.write_text(new)
    return new == text


def update_ledgers(root: Path = ROOT, check: bool = False) -> bool:
    """Rewrite every ledger between its markers; with check=True only report whether all are current."""
    current = True
    for name, (page, render_fn) in LEDGERS.items():
        current = replace_block(root / page, name, render_fn(root), write=not check) and current
    return current


def recall_figure(root: Path = ROOT, out: Path | None = None) -> Path:
    """Recall@K of every recall model's headline Beauty run (and popularity), one line each."""
    from ..plotting import plot_curves

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
    ok = update_ledgers(check=a.check) and ok
    if a.check and not ok:
        print("README results section or a stage ledger is stale: run `python -m Utils.tools.results_table`",
              file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
