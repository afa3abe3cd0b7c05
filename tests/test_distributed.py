"""Data-parallel training (Utils.distributed, `--ddp` under torchrun): two gloo processes on a tiny
synthetic run hold identical weights after every step, and end where one process training on the same
global batches ends; the sharded validation equals the single-process one."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import model_dir, run_demo_in_process

FLAGS = ["--threads", "1", "--epochs", "2", "--dim", "16", "--blocks", "1", "--heads", "1",
         "--dropout", "0", "--loss", "ce", "--batch-size", "128"]
RUNS = {  # model -> (flags, optimiser steps in the run)
    "SASRec": (FLAGS, 2 * 16),  # 2,000 users / 128 per batch, 2 epochs
    "YoutubeDNN": (["--threads", "1", "--epochs", "1", "--dim", "16", "--hidden", "32",
                    "--batch-size", "512"], 46),  # 23,478 next-item examples / 512 per batch
}


def _free_port() -> int:
    """A port nothing listens on now (a fixed one can still be held by the previous run's sockets)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", list(RUNS))
def test_two_gloo_processes_train_the_single_process_model(name, tmp_path):
    flags, steps = RUNS[name]
    one_json, one_pt = tmp_path / "one.json", tmp_path / "one.pt"
    code, _, err, _ = run_demo_in_process("Recall", name, flags + ["--out", str(one_json),
                                                                  "--save", str(one_pt)])
    assert code == 0, err
    two_json, two_pt = tmp_path / "two.json", tmp_path / "two.pt"
    demo = model_dir("Recall", name) / "demo.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         str(demo), *flags, "--ddp", "--debug", "--out", str(two_json), "--save", str(two_pt)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data-parallel: 2 processes (gloo)" in proc.stdout
    # every rank entered every step with the same weights (checked each step under --debug)
    assert f"ranks in sync after every one of {steps} steps: True" in proc.stdout
    one, two = json.loads(one_json.read_text()), json.loads(two_json.read_text())
    # the same weights as one process on the same global batches (float summation order aside)
    w1 = torch.load(one_pt, weights_only=True)["models"]["model"]["state"]
    w2 = torch.load(two_pt, weights_only=True)["models"]["model"]["state"]
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
    # the sharded validation, gathered, and the test equal the single-process evaluation: the RESULT
    # json rounds to 6 decimals, so weights equal to float summation order may land one unit apart
    assert two["valid_metrics"] == pytest.approx(one["valid_metrics"], abs=2e-6)
    assert two["metrics"] == pytest.approx(one["metrics"], abs=2e-6)
    assert proc.stdout.count("RESULT ") == 1  # rank 1 prints and writes nothing


def test_ddp_outside_torchrun_says_how_to_launch():
    code, _, err, _ = run_demo_in_process("Recall", "SASRec", FLAGS + ["--ddp"])
    assert code == 2 and "torchrun --nproc_per_node" in err
    code, _, err, _ = run_demo_in_process("Recall", "SASRec", FLAGS + ["--ddp", "--time-budget", "5"])
    assert code == 2 and "--time-budget is not available with --ddp" in err
