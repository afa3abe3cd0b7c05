"""Side-by-side: the official GRU4Rec PyTorch code (hidasib/GRU4Rec_PyTorch_Official) on our split.

The official code is a *peer*, not a dependency: it is never copied into this repository. Put its
files in a scratch folder and name that folder with `--official-dir`. It needs only torch, numpy and
pandas, but numpy < 2: its default `compatibility_mode` initialisation multiplies a float32 array by a
numpy float64, which numpy 2 promotes to float64, and `Tensor.set_` then refuses it. So it gets a
scratch environment (torch first, from the local CPU wheel):

    git clone https://github.com/hidasib/GRU4Rec_PyTorch_Official /tmp/g4r_official
    python3 -m venv /tmp/g4r_venv && /tmp/g4r_venv/bin/pip install torch==2.13.0 "numpy<2" pandas
    OMP_NUM_THREADS=1 PYTHONPATH=. /tmp/g4r_venv/bin/python -m Utils.tools.peer_gru4rec \\
        --official-dir /tmp/g4r_official --data seqtxt:../shared/data/amazon-beauty/Beauty.txt \\
        --params retailrocket --seed 0 --threads 1 --out FILE.json

What it does (their file and line named at each step):

1. builds our leave-one-out split (`Datasets.leave_one_out`) and writes the training part in their
   input format, one session per user (`SessionId` = our user id, `ItemId` = our item id, `Time`):
   the training items only (all but the last two), in time order. Their iterator orders sessions by
   the time of their first event (`SessionDataIterator`, `session_order='time'`,
   gru4rec_pytorch.py line 298) and keeps that order in every epoch; the benchmark file has no
   timestamps, so each session's start time is its place in a random permutation drawn from `--seed`
   and its events follow one time unit apart (`export_split`).
2. trains their `GRU4Rec` class unchanged (`GRU4Rec.set_params`, then `GRU4Rec.fit` with their default
   `compatibility_mode=True`, as their run.py does) on CPU, one thread, with a parameter file of
   theirs (`--params retailrocket`: paramfiles/retailrocket_bprmax_shared_best.py, the BPR-max file
   their README's examples use; the README advises BPR-max for smaller data sets and 2,048 extra
   negatives down to 5-10K items, and Beauty has 12,101) or the configuration of our ledger row
   (`--params ledger`), or any `name=value,...` string as run.py's `-ps`;
3. chooses the number of epochs on OUR validation item: their `fit` loop runs as written; the driver
   only swaps in a subclass of their `SessionDataIterator` whose epoch generator, once exhausted,
   scores the validation item of every user by full ranking (our evaluator, seen items excluded),
   keeps a copy of the weights of the best validation NDCG@10 and stops training (an exception out of
   `fit`) after `--patience` epochs without a gain, at most `--max-epochs` (our ledger row: 20 and 3).
   The best epoch's weights are then put back;
4. tests once, on every user: the user's whole history (training items + the validation item, no
   length cut) is fed from a zero state through their `GRU4RecModel.forward` one item per step
   (`official_scores`; the intermediate steps score one column, the last step scores every item,
   exactly their `forward(X, H, None)`), and the scores are ranked by `Utils.evaluation.
   evaluate_full_ranking` (full ranking, seen items excluded, pessimistic ties). Items their model
   never saw in training (not in its item map) score -inf;
5. also runs their own `evaluation.batch_eval` ('conservative' ties = our pessimistic rule) the only
   way it applies here: their evaluation is session-based (the state starts from zero at each test
   session, README "Notes on sequence-aware and session-based models"), so each user's test session is
   [validation item, test item]: one prediction per user from the last item alone, seen items not
   excluded, Recall@k and MRR@k. The same scores through our evaluator (one-item history, seen items
   kept) must give the same Recall@k: a check that `official_scores` reads their model as they do.

Seconds: wall and CPU (`time.process_time`) of each training epoch, validation not included, and of
each validation pass, in the RESULT's curve. One thread: `--threads 1` and OMP_NUM_THREADS=1.
Differences from their set-up, each stated in the RESULT: CPU instead of their GPU (`device`), our
epoch choice instead of their fixed `n_epochs`, and our seed for torch's generator (their
`compatibility_mode` draws the initial weights from numpy seed 42 in every run, so a seed changes the
negative samples, the dropout masks and the session order, not the initial weights).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import Datasets
from Datasets.BaseDatasets import leave_one_out
from Utils.evaluation import evaluate_full_ranking
from Utils.io import print_result

# paramfiles/retailrocket_bprmax_shared_best.py of the official repository, verbatim values
RETAILROCKET = OrderedDict([
    ("loss", "bpr-max"), ("constrained_embedding", True), ("embedding", 0), ("elu_param", 0.5),
    ("layers", [224]), ("n_epochs", 10), ("batch_size", 80), ("dropout_p_embed", 0.5),
    ("dropout_p_hidden", 0.05), ("learning_rate", 0.05), ("momentum", 0.4), ("n_sample", 2048),
    ("sample_alpha", 0.4), ("bpreg", 1.95), ("logq", 0.0)])
# our ledger row `gru4rec` (ledger.toml) in their names: their class defaults + the dropout we chose
LEDGER = OrderedDict([
    ("loss", "bpr-max"), ("constrained_embedding", True), ("embedding", 0), ("elu_param", 0.5),
    ("layers", [100]), ("n_epochs", 10), ("batch_size", 64), ("dropout_p_embed", 0.5),
    ("dropout_p_hidden", 0.05), ("learning_rate", 0.05), ("momentum", 0.0), ("n_sample", 2048),
    ("sample_alpha", 0.5), ("bpreg", 1.0), ("logq", 0.0)])
PRESETS = {"retailrocket": RETAILROCKET, "ledger": LEDGER}
KS = (5, 10, 20, 50)


class StopTraining(Exception):
    """Raised from the epoch hook to leave their `fit` loop (patience or time budget)."""


def export_split(split, seed: int) -> dict[str, pd.DataFrame]:
    """Our split in their input format (SessionId, ItemId, Time), one session per user.

    "train": every user's training items in time order; "valid" / "test": the two-event sessions
    [last training item, validation item] / [validation item, test item] that their session-based
    `batch_eval` reads. A session's start time is its user's place in a permutation drawn from `seed`
    (their iterator orders sessions by it), its events follow one time unit apart.
    """
    lens = np.diff(split.train_offsets)
    stride = int(lens.max()) + 2
    start = np.empty(split.n_users, dtype=np.int64)
    start[np.random.default_rng(seed).permutation(split.n_users)] = np.arange(split.n_users)
    start *= stride
    pos = np.arange(len(split.train_items)) - np.repeat(split.train_offsets[:-1], lens)
    train = pd.DataFrame({"SessionId": np.repeat(split.users, lens), "ItemId": split.train_items,
                          "Time": np.repeat(start, lens) + pos})
    last_train = split.train_items[split.train_offsets[1:] - 1]

    def pairs(first, second, t0):
        return pd.DataFrame({"SessionId": np.repeat(split.users, 2),
                             "ItemId": np.stack([first, second], 1).ravel(),
                             "Time": np.stack([t0, t0 + 1], 1).ravel()})

    return {"train": train,
            "valid": pairs(last_train, split.valid_items, start + lens - 1),
            "test": pairs(split.valid_items, split.test_items, start + lens)}


def import_official(official_dir: str):
    """Their `gru4rec_pytorch` and `evaluation` modules, imported from the scratch folder."""
    path = Path(official_dir).resolve()
    if not (path / "gru4rec_pytorch.py").is_file():
        raise SystemExit(f"error: {path} has no gru4rec_pytorch.py; put the official code there "
                         "(see this module's docstring)")
    sys.path.insert(0, str(path))
    g4r = importlib.import_module("gru4rec_pytorch")
    evaluation = importlib.import_module("evaluation")
    return g4r, evaluation


def item_maps(gru, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(to_theirs (N + 1,) their index of each of our ids, -1 when unknown; cols (n,) our id of each
    of their indices)."""
    idmap = gru.data_iterator.itemidmap  # pandas Series: our item id -> their index
    ours = torch.as_tensor(idmap.index.to_numpy().astype(np.int64))
    theirs = torch.as_tensor(idmap.to_numpy().astype(np.int64))
    to_theirs = torch.full((n_items + 1,), -1, dtype=torch.long)
    to_theirs[ours] = theirs
    cols = torch.empty(len(idmap), dtype=torch.long)
    cols[theirs] = ours
    return to_theirs, cols


@torch.no_grad()
def official_scores(gru, history: torch.Tensor, to_theirs: torch.Tensor, cols: torch.Tensor,
                    n_items: int) -> torch.Tensor:
    """(b, L) our ids, left-padded with 0 -> (b, N + 1) their model's scores of every item after it
    reads the history from a zero state, one item per step, through their `GRU4RecModel.forward`
    (eval mode: `training=False`). Padding and items unknown to their model leave the state as it is;
    their unknown items and our column 0 score -inf."""
    model = gru.model
    idx = to_theirs[history]  # (b, L)
    real = idx >= 0
    x = idx.clamp(min=0)
    H = [torch.zeros(len(history), d) for d in gru.layers]
    L = history.shape[1]
    R = None
    for t in range(L):
        old = list(H)  # hidden_step rebinds H[i]; the old tensors stay as they were
        last = t == L - 1
        # intermediate steps: scores of one column only (cheap); the last: every item, forward(X, H, None)
        R = model.forward(x[:, t], H, None if last else x[:1, t], training=False)
        keep = real[:, t : t + 1]
        for i in range(len(H)):
            H[i] = torch.where(keep, H[i], old[i])
    bad = ~real[:, -1]  # the last step was padding or an unknown item: score the kept state
    if bool(bad.any()):
        R[bad] = model.score_items(H[-1][bad], model.Wy.weight, model.By.weight)
    out = torch.full((len(history), n_items + 1), float("-inf"))
    out[:, cols] = R
    return out


def histories(split, stage: str, rows: np.ndarray) -> torch.Tensor:
    """(b, L) the whole history before `stage`'s target of split rows `rows`, left-padded, no cut."""
    offsets, items, _ = split._full(stage)
    starts, ends = offsets[rows], offsets[rows + 1]
    L = int((ends - starts).max())
    idx = ends[:, None] - np.arange(L, 0, -1)[None, :]
    return torch.from_numpy(np.where(idx >= starts[:, None], items[np.maximum(idx, 0)], 0))


def our_metrics(gru, split, stage: str, maps, *, last_item_only: bool = False,
                exclude_seen: bool = True, users: np.ndarray | None = None) -> dict:
    """Our evaluator on their model's scores (full ranking, pessimistic ties)."""
    to_theirs, cols = maps

    def score(batch):
        rows = batch["row"].numpy()
        hist = histories(split, stage, rows)
        if last_item_only:
            hist = hist[:, -1:]
        return official_scores(gru, hist, to_theirs, cols, split.n_items)

    if users is None:  # every user, in order of history length: a batch steps through its longest
        offsets = split._full(stage)[0]
        users = np.argsort(np.diff(offsets), kind="stable")
    return evaluate_full_ranking(score, split, stage, ks=KS, exclude_seen=exclude_seen,
                                 batch_size=512, users=users)


def their_metrics(gru, evaluation, sessions: pd.DataFrame, ks=(5, 10, 20)) -> dict:
    """Their `evaluation.batch_eval` on two-event sessions, 'conservative' ties."""
    recall, mrr = evaluation.batch_eval(gru, sessions, cutoff=list(ks), batch_size=512,
                                        mode="conservative")
    out = {}
    for k in ks:
        out[f"Recall@{k}"] = float(recall[k])
        out[f"MRR@{k}"] = float(mrr[k])
    return out


def parse_params(spec: str) -> OrderedDict:
    """A preset name or run.py's `-ps` string `name=value,...` (their set_params converts types)."""
    if spec in PRESETS:
        return OrderedDict(PRESETS[spec])
    try:
        return OrderedDict(kv.split("=", 1) for kv in spec.split(","))
    except ValueError:
        raise SystemExit(f"error: --params must be one of {sorted(PRESETS)} or name=value,...; "
                         f"got {spec!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-dir", required=True, help="folder holding gru4rec_pytorch.py")
    parser.add_argument("--data", default="seqtxt:../shared/data/amazon-beauty/Beauty.txt")
    parser.add_argument("--params", default="retailrocket",
                        help="retailrocket (their paramfile) | ledger (our row's values) | name=value,...")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop after the first epoch past this many training wall seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    params = parse_params(args.params)
    g4r, evaluation = import_official(args.official_dir)

    data = Datasets.load(args.data, verbose=True)
    split = leave_one_out(data)
    frames = export_split(split, args.seed)
    print(split)
    print(f"exported {len(frames['train']):,} training events in {split.n_users:,} sessions")

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gru = g4r.GRU4Rec(device=torch.device("cpu"))
    gru.set_params(**params)
    gru.n_epochs = args.max_epochs  # the epoch count is chosen on validation below
    state = {"curve": [], "best": -1.0, "best_epoch": 0, "best_weights": None, "since": 0,
             "train_wall": 0.0, "train_cpu": 0.0, "valid_wall": 0.0, "valid_cpu": 0.0,
             "stopped_by": "max_epochs"}

    def epoch_end(wall: float, cpu: float) -> None:
        maps = item_maps(gru, split.n_items)
        t0, c0 = time.perf_counter(), time.process_time()
        valid = our_metrics(gru, split, "valid", maps)
        vw, vc = time.perf_counter() - t0, time.process_time() - c0
        state["train_wall"] += wall
        state["train_cpu"] += cpu
        state["valid_wall"] += vw
        state["valid_cpu"] += vc
        epoch = len(state["curve"]) + 1
        point = {"epoch": epoch, "NDCG@10": valid["NDCG@10"], "Recall@10": valid["Recall@10"],
                 "train_wall_seconds": round(wall, 2), "train_cpu_seconds": round(cpu, 2),
                 "valid_wall_seconds": round(vw, 2), "valid_cpu_seconds": round(vc, 2)}
        state["curve"].append(point)
        print(f"epoch {epoch}: valid NDCG@10 {valid['NDCG@10']:.4f} Recall@10 "
              f"{valid['Recall@10']:.4f}; training {wall:.1f}s wall {cpu:.1f}s CPU, validation "
              f"{vw:.1f}s wall", flush=True)
        if valid["NDCG@10"] > state["best"]:
            state.update(best=valid["NDCG@10"], best_epoch=epoch, since=0, best_valid=valid,
                         best_weights=copy.deepcopy(gru.model.state_dict()))
        else:
            state["since"] += 1
        if state["since"] >= args.patience:
            state["stopped_by"] = "patience"
            raise StopTraining
        if args.time_budget is not None and state["train_wall"] >= args.time_budget:
            state["stopped_by"] = "time_budget"
            raise StopTraining

    base = g4r.SessionDataIterator

    class EpochHook(base):
        """Their iterator, unchanged; when an epoch's mini-batches run out, `epoch_end` runs."""

        def __call__(self, enable_neg_samples, reset_hook=None):
            t0, c0 = time.perf_counter(), time.process_time()
            yield from base.__call__(self, enable_neg_samples, reset_hook)  # their steps run here
            epoch_end(time.perf_counter() - t0, time.process_time() - c0)  # the epoch's training

    g4r.SessionDataIterator = EpochHook
    t_fit, c_fit = time.perf_counter(), time.process_time()
    try:
        gru.fit(frames["train"])
    except StopTraining:
        pass
    finally:
        g4r.SessionDataIterator = base
    fit_wall, fit_cpu = time.perf_counter() - t_fit, time.process_time() - c_fit
    if gru.error_during_train:
        raise SystemExit("error: their training diverged (NaN loss)")
    gru.model.load_state_dict(state["best_weights"])

    maps = item_maps(gru, split.n_items)
    t1, c1 = time.perf_counter(), time.process_time()
    ours = our_metrics(gru, split, "test", maps)
    eval_wall, eval_cpu = time.perf_counter() - t1, time.process_time() - c1
    theirs = their_metrics(gru, evaluation, frames["test"])
    # their batch_eval drops the events of items their model does not know: the same users here
    known = np.flatnonzero((maps[0][torch.from_numpy(split.valid_items)] >= 0).numpy()
                           & (maps[0][torch.from_numpy(split.test_items)] >= 0).numpy())
    theirs["users"] = len(known)
    same_input = our_metrics(gru, split, "test", maps, last_item_only=True, exclude_seen=False,
                             users=known)
    full_seen_kept = our_metrics(gru, split, "test", maps, exclude_seen=False)
    unknown = int((maps[0][1:] < 0).sum())
    n = len(state["curve"])
    print(f"their evaluation.batch_eval on [validation, test] sessions: {theirs}")
    print(f"our evaluator, the same {len(known):,} users, one-item history, seen items kept: "
          f"Recall@10 {same_input['Recall@10']:.6f} (theirs {theirs['Recall@10']:.6f})")
    print_result(
        model=f"GRU4Rec (official PyTorch code, {params['loss']}, --params {args.params})",
        data=args.data,
        protocol=("train-only (trained on the training part with their fit loop; the epoch count "
                  "chosen on validation NDCG@10, patience " f"{args.patience}, best epoch's weights "
                  "kept); test history = training items + validation item, read from a zero state "
                  "through their forward pass; full ranking, seen items excluded, every user; "
                  "pessimistic ties"),
        metrics=ours, baseline=None, train_seconds=state["train_wall"], eval_seconds=eval_wall,
        epochs=n, params=sum(p.numel() for p in gru.model.parameters()),
        best_epoch=state["best_epoch"], valid_metrics=state["best_valid"],
        stopped_by=state["stopped_by"],
        seconds_per_epoch=state["train_wall"] / n, cpu_seconds_per_epoch=state["train_cpu"] / n,
        valid_cpu_seconds_per_epoch=state["valid_cpu"] / n,
        fit_wall_seconds=fit_wall, fit_cpu_seconds=fit_cpu, eval_cpu_seconds=eval_cpu,
        metrics_their_eval_session_based=theirs,
        metrics_ours_last_item_only_seen_kept=same_input,
        metrics_ours_full_history_seen_kept=full_seen_kept,
        items_unknown_to_their_model=unknown, curve=state["curve"], seed=args.seed,
        threads=args.threads,
        official_params={k: v for k, v in params.items() if k != "n_epochs"},
        config=dict(max_epochs=args.max_epochs, patience=args.patience, select_metric="NDCG@10",
                    time_budget=args.time_budget, device="cpu (theirs: cuda:0)",
                    compatibility_mode=True, session_order="a permutation drawn from --seed",
                    official_commit=official_commit(args.official_dir)),
        command="PYTHONPATH=. python -m Utils.tools.peer_gru4rec " + " ".join(sys.argv[1:]),
        out=args.out,
    )


def official_commit(official_dir: str) -> str | None:
    """The commit of the official code, when the scratch folder says which (a git clone, or a COMMIT
    file beside an exported copy)."""
    import subprocess

    path = Path(official_dir)
    if (path / "COMMIT").is_file():
        return (path / "COMMIT").read_text().strip()
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


if __name__ == "__main__":
    main()
