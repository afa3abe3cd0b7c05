"""Attribution and reporting for the funnel: what each stage did, measured and printed.

The measures every stage is judged by: per-user NDCG@k (`ndcg_per_user`), paired differences over
users (`paired`) and a call's wall time (`timed`). What each stage found on the funnel world's
planted truth (`what_each_stage_found`) and each stage's list for a few users (`show_users`). And
the commands around finished runs: mean ± sd and the lift over seeds (`summarize_seeds`), the funnel
page's Markdown tables (`tables`) and the candidate-count figure (`plot_sweep`):

    python -m Utils.funnel.report summarize OUT.json RUN.json ... | tables RESULT.json
        | plot RESULT.json OUT.png
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def ndcg_per_user(lists: np.ndarray, targets: np.ndarray, k: int = 10) -> np.ndarray:
    """(U,) NDCG@k of one held-out target per user (a miss = 0)."""
    hit = lists[:, :k] == targets[:, None]
    pos = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    return np.where(pos > 0, 1.0 / np.log2(np.maximum(pos, 1) + 1.0), 0.0)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of a - b and its standard error (paired over users)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return {
        "diff": float(d.mean()),
        "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0,
    }


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# What each stage found
# --------------------------------------------------------------------------------------------------


def what_each_stage_found(
    args, data, split, hist, targets, lists, best_ndcg, rank_ndcg, best_top, ranked, final
) -> dict:
    """On the funnel world (its planted truth in `data.extra['truth']`; {} elsewhere): Recall@N of
    each channel (`lists`) on test items that follow the last item's successor line and on the
    others; NDCG@k of the best channel (`best_ndcg`) and the ranker (`rank_ndcg`) on favourite-brand
    test items and the others; the share of lists holding two sizes of one product after each
    stage. Printed, and returned as one flat dict."""
    found = {}
    if "truth" in data.extra and "successor_group" in data.extra["truth"]:
        tr = data.extra["truth"]
        last = hist[:, -1]
        follows = tr["item_group"][targets] == tr["successor_group"][last]
        found["share_successor_targets"] = float(follows.mean())
        for c in lists:
            hit = (lists[c] == targets[:, None]).any(1)
            found[f"{c}/Recall@{args.n_candidates}|successor"] = float(hit[follows].mean())
            found[f"{c}/Recall@{args.n_candidates}|other"] = float(hit[~follows].mean())
        fav = (
            tr["user_fav_brand"][split.users, np.maximum(tr["item_category"][targets], 0)]
            == tr["item_brand"][targets]
        )
        found["share_favourite_brand_targets"] = float(fav.mean())
        for nm, x in (("best_channel", best_ndcg), ("rank", rank_ndcg)):
            found[f"{nm}/NDCG@{args.k}|favourite_brand"] = float(x[fav].mean())
            found[f"{nm}/NDCG@{args.k}|other_brand"] = float(x[~fav].mean())
        grp = tr["item_group"]
        for stage, x in (("recall", best_top), ("rank", ranked), ("rerank", final)):
            g = np.where(x[:, : args.k] > 0, grp[x[:, : args.k]], -1 - np.arange(args.k))
            s = np.sort(g, 1)
            found[f"{stage}/same_line_pair@{args.k}"] = float((s[:, 1:] == s[:, :-1]).any(1).mean())

    if found:
        n, k = args.n_candidates, args.k
        print("\nwhat each stage found (planted truth of the funnel world):")
        print(f"  recall: {found['share_successor_targets']:.2f} of the test items follow the last item's "
              "successor line; Recall@N on them (on the others): "
              + ", ".join(f"{c} {found[f'{c}/Recall@{n}|successor']:.2f} "
                          f"({found[f'{c}/Recall@{n}|other']:.2f})" for c in lists))
        print(f"  ranking: NDCG@{k} on favourite-brand test items {found[f'best_channel/NDCG@{k}|favourite_brand']:.4f}"
              f" (best channel) -> {found[f'rank/NDCG@{k}|favourite_brand']:.4f}; on the others "
              f"{found[f'best_channel/NDCG@{k}|other_brand']:.4f} -> {found[f'rank/NDCG@{k}|other_brand']:.4f}")
        print(f"  re-ranking: lists holding two sizes of one product {found[f'recall/same_line_pair@{k}']:.2f}"
              f" (best channel), {found[f'rank/same_line_pair@{k}']:.2f} (ranker), "
              f"{found[f'rerank/same_line_pair@{k}']:.2f} ({args.rerank})")
    return found


def show_users(args, data, split, hist, targets, best, best_top, ranked, final) -> None:
    """What each stage did for `--show-users` random users: the end of their history, then the top
    k of the best channel, after ranking and after re-ranking (* marks the test item)."""
    U = split.n_users
    rng = np.random.default_rng(args.seed)
    for r in rng.choice(U, size=min(args.show_users, U), replace=False):
        print(
            f"\n=== user {data.user_raw[split.users[r]]} (test item: {data.item_text(int(targets[r]))})"
        )
        for i in hist[r][hist[r] > 0][-4:]:
            print(f"    history: {data.item_text(int(i))}")
        for title, x in (
            (f"best channel ({best})", best_top[r]),
            ("after ranking", ranked[r]),
            (f"after re-ranking ({args.rerank})", final[r]),
        ):
            print(f"  {title}:")
            for i in x[: args.k]:
                if i > 0:
                    print(f"    {'*' if i == targets[r] else ' '} {data.item_text(int(i))[:70]}")


# --------------------------------------------------------------------------------------------------
# Seeds and the candidate-count figure
# --------------------------------------------------------------------------------------------------


def summarize_seeds(out_path: str | Path, run_paths: list[str | Path]) -> dict:
    """Mean ± sd over seeds (Utils.tools.seed_summary's schema) plus the ranking stage's lift over the
    best single channel per seed, with its mean and standard error over seeds (sd / sqrt(n))."""
    import json

    from Utils.io import write_json_atomic
    from Utils.tools.seed_summary import build

    out_path = Path(out_path)
    summary = build(out_path, [Path(p) for p in run_paths])
    runs = [json.loads(Path(p).read_text()) for p in run_paths]
    knobs = [r.get("rerank_knobs") for r in runs]
    if knobs[0] is not None and all(k == knobs[0] for k in knobs):  # settings, not measurements:
        summary["rerank_knobs"] = knobs[0]  # the runs' own values (a mean would read 0.8000...2)
        summary.pop("rerank_knobs_sd", None)
    worlds = list(dict.fromkeys(r["data"] for r in runs))
    if len(worlds) > 1:  # several worlds (funnel:0, funnel:1, ...): name them all, not the first
        summary["data"] = ", ".join(worlds)
    diffs = [r["metrics"]["rank/NDCG@10"] - r["metrics"]["recall/NDCG@10"] for r in runs]
    n = len(diffs)
    mean = float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    summary["lift_over_seeds"] = {
        "per_seed": diffs,
        "best_channel": [r["best_channel"] for r in runs],
        "diff": mean,
        "se": se,
        "n": n,
    }
    write_json_atomic(out_path, summary)
    m, sd = summary["metrics"], summary["sd"]
    print(f"{summary['data']}: {n} seeds")
    for key in (
        "recall/Recall@200",
        "recall/NDCG@10",
        "rank/NDCG@10",
        "rerank/NDCG@10",
        "rerank/ILD@10",
    ):
        if key in m:
            print(f"  {key:22s} {m[key]:.4f} ± {sd[key]:.4f}")
    print(
        f"  lift rank - best channel: {mean:+.4f} ± {se:.4f} (se over seeds); per seed "
        + ", ".join(f"{d:+.4f}" for d in diffs)
    )
    return summary


def plot_sweep(result_path: str | Path, png: str | Path) -> Path:
    """The candidate-count trade-off of a run with --sweep-n: ceiling and NDCG@10 against N."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(Path(result_path).read_text())
    sweep = res["sweep"]
    ns = sorted(int(n) for n in sweep)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].plot(ns, [sweep[str(n)]["ceiling"] for n in ns], "o-", color="tab:gray")
    ax[0].set(
        xscale="log", xlabel="N candidates", ylabel="Recall@N of the union", title="recall ceiling"
    )
    for key, label, c in (
        ("rank/NDCG@10", "after ranking", "tab:blue"),
        ("rerank/NDCG@10", "after re-ranking", "tab:orange"),
    ):
        ax[1].plot(ns, [sweep[str(n)][key] for n in ns], "o-", label=label, color=c)
    ax[1].axhline(
        res["metrics"]["recall/NDCG@10"],
        ls="--",
        color="tab:gray",
        label=f"best channel ({res['best_channel']})",
    )
    ax[1].set(xscale="log", xlabel="N candidates", ylabel="NDCG@10", title="final accuracy")
    ax[1].legend(fontsize=8)
    for a in ax:
        a.minorticks_off()
        a.set_xticks(ns)
        a.set_xticklabels([str(n) for n in ns])
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _ms(d: dict, key: str, sd: dict | None = None, f: str = "{:.4f}") -> str:
    v = d.get(key)
    if v is None:
        return ""
    s = sd.get(key) if sd else None
    return f.format(v) + (" ± " + f.format(s) if s is not None and len(sd) else "")


def tables(path: str | Path) -> None:
    """Print the funnel page's Markdown tables from a run or a seed summary json."""
    import json

    r = json.loads(Path(path).read_text())
    m, sd = r["metrics"], r.get("sd", {})
    n = next(k for k in m if k.startswith("recall/Recall@")).split("@")[1]
    seeds = f"{r['n']} seeds, mean ± sd" if "n" in r else "one run"
    print(f"\n{r['data']} ({seeds}); {Path(path).name}\n")
    print(f"| after stage | Recall@{n} | NDCG@10 | Recall@10 | ILD@10 | Coverage@10 | NearDup@10 |")
    print("|---|---|---|---|---|---|---|")
    pm = r["baseline"]["metrics"]
    print(
        f"| popularity (baseline) | {pm[f'Recall@{n}']:.4f} | {pm['NDCG@10']:.4f} | {pm['Recall@10']:.4f} | | | |"
    )
    best = r.get("best_channel") or ", ".join(
        sorted(set(r.get("lift_over_seeds", {}).get("best_channel", [])))
    )
    print(
        f"| recall: best channel alone | | {_ms(m, 'recall/NDCG@10', sd)} | | {_ms(m, 'recall/ILD@10', sd)} "
        f"| {_ms(m, 'recall/Coverage@10', sd)} | {_ms(m, 'recall/NearDup@10', sd)} |"
    )
    print(
        f"| recall: {len(r['channels']) and 'merged'} (union of channels) | {_ms(m, f'recall/Recall@{n}', sd)} "
        f"| {_ms(m, 'recall/merged_NDCG@10', sd)} | | | | |"
    )
    print(
        f"| ranking (DIN) | | {_ms(m, 'rank/NDCG@10', sd)} | {_ms(m, 'rank/Recall@10', sd)} "
        f"| {_ms(m, 'rank/ILD@10', sd)} | {_ms(m, 'rank/Coverage@10', sd)} | {_ms(m, 'rank/NearDup@10', sd)} |"
    )
    print(
        f"| re-ranking (DPP) | | {_ms(m, 'rerank/NDCG@10', sd)} | {_ms(m, 'rerank/Recall@10', sd)} "
        f"| {_ms(m, 'rerank/ILD@10', sd)} | {_ms(m, 'rerank/Coverage@10', sd)} | {_ms(m, 'rerank/NearDup@10', sd)} |"
    )
    print(f"\nbest channel: {best}")
    if "lift_over_seeds" in r:
        lo = r["lift_over_seeds"]
        print(
            f"lift: {lo['diff']:+.4f} ± {lo['se']:.4f} (se over {lo['n']} seeds); per seed "
            + ", ".join(f"{d:+.4f}" for d in lo["per_seed"])
        )
    print(f"lift paired over users: {r['lift']['diff']:+.4f} ± {r['lift']['se']:.4f}")
    ch, chsd = r["channels"], r.get("channels_sd", {})
    print("\n| channel | Recall@" + n + " alone | NDCG@10 alone |\n|---|---|---|")
    for c in [
        k.split("/")[0] for k in ch if k.endswith(f"/Recall@{n}") and not k.startswith("union")
    ]:
        print(f"| {c} | {_ms(ch, f'{c}/Recall@{n}', chsd)} | {_ms(ch, f'{c}/NDCG@10', chsd)} |")
    print(f"| union (merged, quotas) | {_ms(ch, f'union/Recall@{n}', chsd)} | |")
    print(
        "overlaps: "
        + ", ".join(f"{k[8:]} {v:.2f}" for k, v in ch.items() if k.startswith("overlap/"))
    )
    rb, rbsd = r.get("ranking_baselines") or {}, r.get("ranking_baselines_sd") or {}
    if rb:
        print(
            "\n| ranker on the same candidates | NDCG@10 | DIN minus it (paired over users) | "
            "chosen on validation |\n|---|---|---|---|"
        )
        print(f"| DIN | {_ms(m, 'rank/NDCG@10', sd)} | | validation NDCG@10 {m['rank/valid_NDCG@10']:.4f} |")
        for name, v in rb.items():
            d = v["din_minus"]
            tried = v.get("valid_NDCG@10_by_setting")
            note = ", ".join(f"{k}: {x:.4f}" for k, x in tried.items()) if tried else ""
            print(f"| {name} | {_ms(v, 'NDCG@10', rbsd.get(name, {}))} | {d['diff']:+.4f} ± {d['se']:.4f} | {note} |")
    rr, rrsd = r.get("rerankers") or {}, r.get("rerankers_sd") or {}
    if rr:
        kn = r.get("rerank_knobs") or {}
        cols = ["NDCG@10", "Recall@10", "ILD@10", "NearDup@10", "C_KL@10", "Tail@10",
                "Satisfied@10", "Gini@10"]
        print(
            f"\n| re-ranker, top 10 of the ranker's top 50 | {' | '.join(cols)} | ms per 1,000 users |\n"
            + "|---" * (len(cols) + 2) + "|"
        )
        for name, v in rr.items():
            s_ = rrsd.get(name, {})
            cells = " | ".join(_ms(v, c, s_) for c in cols)
            print(f"| {name} | {cells} | {v['ms_per_1000_users']:.0f} |")
        print("(knobs: " + ", ".join(f"{k} {v}" for k, v in kn.items()) + ")")
    ab, absd = r.get("ablation") or {}, r.get("ablation_sd") or {}
    if ab:
        print(
            "\n| ranker | validation NDCG@10 (decides) | test NDCG@10 | vs best channel (paired over users) "
            "| vs default |\n|---|---|---|---|---|"
        )
        for name, v in ab.items():
            if not isinstance(v, dict):
                continue
            s_ = absd.get(name, {})
            print(
                f"| {name} | {_ms(v, 'valid_NDCG@10', s_)} | {_ms(v, 'NDCG@10', s_)} | "
                f"{v['vs_best_channel']['diff']:+.4f} ± {v['vs_best_channel']['se']:.4f} | "
                f"{v['vs_default']['diff']:+.4f} ± {v['vs_default']['se']:.4f} |"
            )
        print(f"(ablation on {ab.get('users')} test users)")
    fo = r.get("found") or {}
    if fo:
        print("\nfound:", json.dumps({k: round(v, 4) for k, v in fo.items()}))
    c = r.get("cost") or {}
    print(
        "\ncost ms per 1,000 users:", {k: round(v, 1) for k, v in c.items() if isinstance(v, float)}
    )
    print("timings s:", {k: round(v, 1) for k, v in (r.get("timings") or {}).items()})
    if r.get("serving"):
        print(
            "serving ms:",
            {
                k: (round(v["p50_ms"], 2), round(v["p95_ms"], 2))
                for k, v in r["serving"].items()
                if isinstance(v, dict)
            },
        )
    if r.get("sweep"):
        print(
            "\n| N | ceiling | rank NDCG@10 | final NDCG@10 | ranking ms per 1,000 users |\n|---|---|---|---|---|"
        )
        for k, v in sorted(r["sweep"].items(), key=lambda kv: int(kv[0])):
            print(
                f"| {k} | {v['ceiling']:.4f} | {v['rank/NDCG@10']:.4f} | {v['rerank/NDCG@10']:.4f} "
                f"| {1000 * v['rank_s_per_1000_users']:.0f} |"
            )


def main(argv: list[str] | None = None) -> int:
    """python -m Utils.funnel.report summarize OUT.json RUN.json ... | tables RESULT.json
    | plot RESULT.json OUT.png"""
    import argparse
    import sys

    p = argparse.ArgumentParser(description="funnel seed summaries and the candidate-count figure")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summarize")
    s.add_argument("out")
    s.add_argument("runs", nargs="+")
    t = sub.add_parser("tables")
    t.add_argument("result")
    f = sub.add_parser("plot")
    f.add_argument("result")
    f.add_argument("png")
    args = p.parse_args(argv)
    try:
        if args.cmd == "summarize":
            summarize_seeds(args.out, args.runs)
        elif args.cmd == "tables":
            tables(args.result)
        else:
            print(plot_sweep(args.result, args.png))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
