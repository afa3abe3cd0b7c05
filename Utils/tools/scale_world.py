"""The synthetic world at scale (`synthetic:scale=N`): build time, peak memory and the planted structure,
next to the default world's, each built in a fresh process.

    OMP_NUM_THREADS=1 .venv/bin/python -m Utils.tools.scale_world \
        --scales default,20k,200k,1m --out assets/Scale/results/scale_world.json

Per world: users, items, interactions, wall and CPU seconds of `Datasets.load(spec)`, peak RSS
(`resource.getrusage`, in a child whose light parent imports nothing heavy), and the planted structure
as the tests read it: the share of actions that follow the previous item's successor, that fall in
one of the user's interest categories, whose price tier matches the user's; the mean actions per user;
the share of the catalogue bought at least once; the share of interactions on the top 1% of items.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from Utils.atomic import write_json_atomic


def measure(spec: str) -> dict:
    import numpy as np

    from Datasets import load

    t, c = time.perf_counter(), time.process_time()
    d = load(spec)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tr, df = d.extra["truth"], d.interactions
    users, items = df["user"].to_numpy(), df["item"].to_numpy()
    same = users[1:] == users[:-1]
    counts = np.sort(np.bincount(items, minlength=d.n_items + 1)[1:])[::-1]
    return {
        "spec": spec, "users": d.n_users, "items": d.n_items, "interactions": len(df),
        "build_seconds": round(wall, 1), "build_cpu_seconds": round(cpu, 1), "peak_rss_mb": round(peak, 1),
        "follow_successor": round(float((tr["successor"][items[:-1]] == items[1:])[same].mean()), 3),
        "in_interest_category": round(float((tr["user_interests"][users, tr["item_category"][items]] > 0).mean()), 3),
        "price_tier_match": round(float((tr["user_tier"][users] == tr["item_tier"][items]).mean()), 3),
        "actions_per_user": round(len(df) / d.n_users, 2),
        "share_of_items_bought": round(float((counts > 0).mean()), 3),
        "share_on_top_1pct_items": round(float(counts[: max(1, d.n_items // 100)].sum() / counts.sum()), 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", default="default,20k,200k,1m", help="'default' (the embedded world) or N")
    p.add_argument("--out", default=None)
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return None
    result = {"benchmark": "synthetic world at scale", "cpu_count": os.cpu_count(), "worlds": []}
    for scale in [s.strip() for s in args.scales.split(",") if s.strip()]:
        spec = "synthetic" if scale == "default" else f"synthetic:scale={scale}"
        out = subprocess.run([sys.executable, "-m", "Utils.tools.scale_world", "--measure", spec],
                             capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        row = json.loads(out.stdout.strip().splitlines()[-1])
        result["worlds"].append(row)
        print(json.dumps(row), flush=True)
    if args.out:  # atomic, without importing Utils.io (torch) into this light parent
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
