"""Training throughput of one process against N data-parallel processes (`--ddp` under torchrun), same
model, same global batch, on one data set:

    python -m Utils.tools.ddp_throughput --data seqtxt:../shared/data/amazon-sports/Sports_and_Outdoors.txt \
        --model SASRec --epochs 2 --out assets/Scale/ddp_throughput_sports.json

Each run trains `--epochs` epochs with one thread per process and validates once, at the end; the
throughput is training sequences (or examples) per second of training time as the demo reports it
(`train_seconds`: the time in `fit`'s epochs, validation excluded). On a machine with C cores, N
processes of one thread each can at best be min(N, C) times faster; the gradient all-reduce and the
shared memory bandwidth take their part of that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..io import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
FLAGS = {
    "SASRec": ["--loss", "ce", "--blocks", "1", "--heads", "1", "--dropout", "0.2", "--batch-size", "128"],
    "HSTU": ["--loss", "ce", "--blocks", "2", "--heads", "2", "--batch-size", "128"],
    "YoutubeDNN": ["--batch-size", "256"],
}


def one_run(model: str, data: str, epochs: int, procs: int, out: Path) -> dict:
    demo = ROOT / "Classic Models" / "Recall" / model / "demo.py"
    argv = [str(demo), "--data", data, *FLAGS[model], "--epochs", str(epochs), "--eval-every", str(epochs),
            "--patience", str(epochs), "--threads", "1", "--seed", "0", "--out", str(out)]
    if procs > 1:
        argv = ["-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port", "29533",
                *argv, "--ddp"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"error: {model} with {procs} process(es) failed:\n{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="seqtxt:../shared/data/amazon-sports/Sports_and_Outdoors.txt")
    ap.add_argument("--model", choices=sorted(FLAGS), default="SASRec")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the comparison here (json)")
    a = ap.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, a.procs):
            res = one_run(a.model, a.data, a.epochs, n, Path(tmp) / f"p{n}.json")
            rows[n] = {"processes": n, "train_seconds": res["train_seconds"], "epochs": res["epochs"],
                       "seconds_per_epoch": res["train_seconds"] / res["epochs"],
                       "valid_NDCG@10": res["valid_metrics"]["NDCG@10"], "test_NDCG@10": res["metrics"]["NDCG@10"]}
            print(f"{n} process(es): {rows[n]['seconds_per_epoch']:.1f} s per epoch, "
                  f"validation NDCG@10 {rows[n]['valid_NDCG@10']:.4f}", flush=True)
    speedup = rows[1]["seconds_per_epoch"] / rows[a.procs]["seconds_per_epoch"]
    result = {"model": a.model, "data": a.data, "flags": FLAGS[a.model], "cpu_count": os.cpu_count(),
              "threads_per_process": 1, "runs": list(rows.values()), "speedup": speedup}
    print(f"speed-up with {a.procs} processes on {os.cpu_count()} CPUs: {speedup:.2f}x")
    if a.out:
        write_json_atomic(a.out, result)
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
