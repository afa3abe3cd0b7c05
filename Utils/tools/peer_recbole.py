"""Side-by-side: RecBole 1.2.1's own SASRec on our data, timed like our SASRec demo.

RecBole is a *peer* library, not a dependency. It pins old packages (numpy < 2 through ray), so it
gets a scratch virtual environment of its own, never this repo's requirements:

    python3 -m venv /tmp/rbvenv
    /tmp/rbvenv/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2" "pandas<2.3" "scipy<1.14" \\
        "scikit-learn<1.6"      # no setuptools pin: torch 2.13 conflicts with setuptools<70
    PYTHONPATH=. /tmp/rbvenv/bin/python -m Utils.tools.peer_recbole \\
        --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 --epochs 26

What it does: writes our loaded interactions as a RecBole atomic file (user, item, position as the
timestamp, so RecBole's time-ordered leave-one-out split equals `Datasets.leave_one_out`), then runs
RecBole's `Trainer` on its `SASRec` with the configuration measured in ../shared/data/README.md (CE over all
items, max length 50, 2 blocks, 2 heads, hidden 64, inner 256, dropout 0.5, Adam 1e-3, batch 256,
validation NDCG@10 every epoch, early stopping after 10 epochs without gain); `--blocks --heads --dim
--inner --dropout --batch-size` change the sizes (the recall ledger times it on Sports with the sizes
of its own SASRec configurations), `--time-budget` caps the wall time. Every validation is
time-stamped, so the wall time until validation NDCG@10 reaches `--target-ndcg` is measured the way
our demos measure it (training + validation). The best model is then tested with RecBole's own
full-ranking evaluator (history items masked), and one more full-ranking evaluation is timed alone.
Prints one RESULT line.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

import Datasets
from Utils.io import add_common_args, print_result
from Utils.training import count_params


def write_atomic(data, folder: Path, name: str) -> Path:
    """RecBole's `.inter` atomic file: one row per interaction, the position as the timestamp."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    inter = data.interactions  # sorted by (user, time): the position is the within-user count
    pd.DataFrame({"user_id:token": inter["user"], "item_id:token": inter["item"],
                  "timestamp:float": inter.groupby("user").cumcount()}
                 ).to_csv(path, sep="\t", index=False)
    return path


def main() -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]),
                             epochs=30, batch_size=256, lr=1e-3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", default="/tmp/recbole_work")
    parser.add_argument("--stopping-step", type=int, default=10, help="RecBole's default: 10")
    parser.add_argument("--target-ndcg", type=float, default=0.0512)
    parser.add_argument("--blocks", type=int, default=2, help="RecBole's n_layers (its default: 2)")
    parser.add_argument("--heads", type=int, default=2, help="RecBole's n_heads (its default: 2)")
    parser.add_argument("--dim", type=int, default=64, help="RecBole's hidden_size (its default: 64)")
    parser.add_argument("--inner", type=int, default=256, help="RecBole's inner_size (its default: 256)")
    parser.add_argument("--dropout", type=float, default=0.5,
                        help="RecBole's hidden and attention dropout (its default: 0.5)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop training after the first validation past this many wall seconds "
                             "(the best model so far is tested)")
    args = parser.parse_args()
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error(f"--time-budget must be > 0 seconds, got {args.time_budget}")
    try:
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.model.sequential_recommender import SASRec
        from recbole.trainer import Trainer
        from recbole.utils import init_logger, init_seed
    except ImportError as e:
        raise SystemExit(f"RecBole is not importable ({e}); make the scratch environment in this "
                         "module's docstring") from e
    # RecBole 1.2.1 pickles its config into the checkpoint it reloads for the test (torch >= 2.6
    # refuses that by default); the file is the one this run just wrote.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    data = Datasets.load(args.data, verbose=True)
    work = Path(args.workdir).resolve()
    out = str(Path(args.out).resolve()) if args.out else None
    write_atomic(data, work / "data" / "dataset", "dataset")  # <data_path>/<name>/<name>.inter
    os.chdir(work)  # RecBole writes ./log and ./log_tensorboard wherever it runs
    config = Config(model="SASRec", dataset="dataset", config_dict={
        "data_path": str(work / "data"), "checkpoint_dir": str(work / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50, "loss_type": "CE", "train_neg_sample_args": None,
        "n_layers": args.blocks, "n_heads": args.heads, "hidden_size": args.dim, "inner_size": args.inner,
        "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout,
        "learning_rate": args.lr, "train_batch_size": args.batch_size, "epochs": args.epochs,
        "stopping_step": args.stopping_step, "eval_batch_size": 4096,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                      "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [5, 10, 50, 200], "valid_metric": "NDCG@10",
        "seed": args.seed, "reproducibility": True, "use_gpu": args.device == "cuda",
        "show_progress": False, "log_wandb": False,
    })
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    if args.threads:  # after RecBole's own set-up, so its defaults cannot override it
        torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    print(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)

    t0 = time.perf_counter()
    curve = []

    class OutOfTime(Exception):
        pass

    def on_valid(epoch: int, score: float) -> None:
        curve.append({"epoch": epoch + 1, "NDCG@10": float(score),
                      "wall_seconds": time.perf_counter() - t0})
        print(f"epoch {epoch + 1}: valid NDCG@10 {score:.4f} at {curve[-1]['wall_seconds']:.0f}s",
              flush=True)
        if args.time_budget is not None and curve[-1]["wall_seconds"] >= args.time_budget:
            raise OutOfTime  # RecBole's fit() has no time limit; its best model is already saved

    stopped_by_budget = False
    try:
        _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False,
                                    callback_fn=on_valid)
    except OutOfTime:
        stopped_by_budget = True
        best_valid = trainer.best_valid_result
        print(f"time budget of {args.time_budget:.0f}s spent after epoch {len(curve)}; testing the best "
              "validation model so far", flush=True)
    fit_seconds = time.perf_counter() - t0
    reached = [p for p in curve if p["NDCG@10"] >= args.target_ndcg]
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    t1 = time.perf_counter()
    trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    eval_seconds = time.perf_counter() - t1
    metrics = {k.replace("recall", "Recall").replace("ndcg", "NDCG"): float(v)
               for k, v in test.items()}
    print_result(
        model="SASRec (RecBole 1.2.1)", data=args.data,
        protocol=("RecBole leave-one-out (LS valid_and_test, order TO), full ranking with history "
                  "items masked, test split, best validation NDCG@10 model"),
        metrics=metrics, baseline=None, train_seconds=fit_seconds, eval_seconds=eval_seconds,
        epochs=len(curve), params=count_params(model),
        best_valid={k: float(v) for k, v in best_valid.items()},
        best_epoch=max(curve, key=lambda p: p["NDCG@10"])["epoch"] if curve else None,
        time_to_target_seconds=reached[0]["wall_seconds"] if reached else None,
        time_to_target_epoch=reached[0]["epoch"] if reached else None,
        target_ndcg=args.target_ndcg, stopped_by_time_budget=stopped_by_budget, curve=curve,
        config=vars(args), out=out,
    )


if __name__ == "__main__":
    main()
