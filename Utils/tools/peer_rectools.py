"""Side-by-side: RecTools' own SASRecModel (the implementation behind eSASRec's SASRec+SS rows) on our split.

`--model bert4rec` trains RecTools' `BERT4RecModel` the same way (same split, trainer, evaluators):
the reference implementation beside this repo's BERT4Rec. Its defaults are our BERT4Rec's Beauty
flags (2 blocks, 2 heads, dimension 64, mask probability 0.6, dropout 0.5, batch 256, max length
50, full softmax over the catalogue — RecTools' `loss="softmax"`); RecTools has one dropout rate
where ours also has an attention dropout (0.2), and its max length counts the appended [MASK]. The
eSASRec benchmark has no BERT4Rec configuration, so the trainer is the same as for SASRec.

The eSASRec paper's benchmark (public repository of "eSASRec: Enhancing Transformer-based
Recommendations in a Modular Fashion", RecSys 2025) trains RecTools' `SASRecModel` with
`configs/paper/loo/s3_vanilla.yaml` and `src/models/transformers/trainer.py`
(`get_trainer_200_epochs`, `get_val_mask_func_all`), and scores it in `src/evaluation/common.py`
(`validate_model_on_holdout`). Its `requirements.txt` pins `rectools[torch]==0.13.0`. RecTools is a
*peer*, not a dependency: it gets a scratch virtual environment of its own, never this repo's
requirements (install torch first, from the local CPU wheel, so that no CUDA build is pulled):

    python3 -m venv /tmp/rt13
    /tmp/rt13/bin/pip install torch==2.13.0
    /tmp/rt13/bin/pip install "rectools[torch]==0.13.0"     # brings numpy<2, scipy<1.13, lightning
    PYTHONPATH=. /tmp/rt13/bin/python -m Utils.tools.peer_rectools \\
        --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --dim 64 --seed 0 --threads 1 \\
        --time-budget 7200 --workdir /tmp/rectools_work/beauty_d64_s0 --out FILE.json

What it does, as their code does it (file and function named at each step):

1. builds our leave-one-out split (`Datasets.leave_one_out`) and hands RecTools every interaction but
   the test item, with the position in the user's sequence as the timestamp (their
   `src/datasets/s3_repro.py` uses the same counter);
2. `get_val_mask_func` marks each user's last remaining interaction (the validation item); RecTools'
   data preparator (`process_dataset_train`) then REMOVES those items from the training data and
   keeps them only as validation targets: their protocol is our train-only protocol, no refit;
3. trains `SASRecModel` with the s3_vanilla configuration (1 block, 1 head, dropout 0.2, max length
   50, sampled softmax over 256 uniform negatives per position, `n_factors` = `--dim`; RecTools'
   defaults for the rest: Adam 1e-3 with betas (0.9, 0.98), batch 128, Xavier-normal initialisation)
   under a Lightning `Trainer` built like `get_trainer_200_epochs`: at most 200 epochs, validation
   Recall@10 every epoch (full ranking, the user's training items masked, as their
   `RecallCallback`), the best-Recall@10 checkpoint kept and reloaded at the end, early stopping
   after 50 epochs without a gain, `deterministic=True`;
4. tests the best-validation model twice on the same test items:
   - their evaluator: `model.recommend(..., filter_viewed=True)` over the train + validation
     interactions, scored by `rectools.metrics.calc_metrics` with `Recall(k)` and
     `NDCG(k, divide_by_achievable=True)` on a holdout filtered as their `LastNSplitter` filters it
     (test items never seen in the fitted interactions and already-seen items are dropped);
   - ours: `Utils.evaluation.evaluate_full_ranking` over every user of the split (no user dropped),
     with RecTools' own serving embeddings, seen items excluded, pessimistic ties.

Runs on CPU are long (minutes per epoch), so a run is resumable and may be time-budgeted:
`--workdir` keeps Lightning's last checkpoint after every epoch and the validation curve; running the
same command again goes on from the last finished epoch (Xavier initialisation is not redone; the
data order and negatives after a resume come from the reseeded global RNG, so a resumed run is not
bit-identical to an uninterrupted one). `--time-budget` (wall seconds, summed over the resumed
pieces) stops training after the first epoch past it, and the best checkpoint so far is tested;
the RESULT says `stopped_by_time_budget`. Differences from their set-up, each stated in the RESULT:
CPU instead of their GPU (`accelerator="gpu"` in their trainer), our seed instead of their fixed 32
(`src/utils.py`, `setup_deterministic`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import Datasets
from Datasets.BaseDatasets import leave_one_out
from Utils.atomic import write_json_atomic
from Utils.evaluation import evaluate_full_ranking
from Utils.io import add_common_args, positive_int, print_result

RECALL_K = 10  # their trainer.py: RECALL_K = 10; validation on Recall@10
PATIENCE = 50  # their trainer.py: PATIENCE = 50
MAX_EPOCHS = 200  # get_trainer_200_epochs (Beauty, Sports, Toys)


def rectools_frame(split, stage: str = "test") -> pd.DataFrame:
    """The interactions seen before `stage`'s target as RecTools' columns; the position in each user's
    sequence (1, 2, ...) is the datetime, as their s3_repro.py does."""
    offsets, items, _ = split._full(stage)
    lens = np.diff(offsets)
    pos = np.arange(len(items)) - np.repeat(offsets[:-1], lens) + 1
    return pd.DataFrame({"user_id": np.repeat(split.users, lens), "item_id": items,
                         "weight": 1.0, "datetime": pos})


def last_per_user_mask(interactions: pd.DataFrame) -> np.ndarray:
    """Their `get_val_mask_func_all`: each user's last interaction by datetime is validation."""
    rank = (interactions.sort_values("datetime", ascending=False, kind="stable")
            .groupby("user_id", sort=False).cumcount())
    return (rank == 0).reindex(interactions.index).to_numpy()


def make_trainer_factory(workdir: Path, time_budget: float | None, resume_from: Path | None,
                         state: dict, max_epochs: int = MAX_EPOCHS):
    """A `get_trainer_func` like their `get_trainer_200_epochs`, on CPU, resumable and timed."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    class RecallAtK(Callback):
        """Validation Recall@K as their RecallCallback computes it: full scores from the last
        position, the user's input items masked (padding column not masked, as theirs), top-K."""

        def __init__(self):
            self.hits: list[torch.Tensor] = []

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                    dataloader_idx=0):
            tm = pl_module.torch_model
            user = tm.encode_sessions(batch, pl_module.item_embs)[:, -1, :]  # (b, D)
            logits = tm.similarity_module(user, pl_module.item_embs)  # (b, N)
            x = batch["x"]
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen.scatter_(1, x, x != 0)  # (b, N): True at the input items, never at padding
            top = logits.masked_fill(seen, float("-inf")).topk(RECALL_K, dim=1).indices
            self.hits.append((top == batch["y"][:, -1:]).any(1).float())

        def on_validation_epoch_end(self, trainer, pl_module):
            recall = float(torch.cat(self.hits).mean()) if self.hits else 0.0
            self.hits.clear()
            pl_module.log(f"recall@{RECALL_K}", recall, on_step=False, on_epoch=True)

    class Clock(Callback):
        """Wall and CPU seconds of training + validation, summed over resumed pieces; the
        validation curve; the time budget."""

        def on_train_epoch_start(self, trainer, pl_module):
            if "t0" not in state:
                state["t0"], state["c0"] = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self, trainer, pl_module):  # Lightning 2: after validation
            if "t0" not in state:
                return
            wall = state["wall_before"] + time.perf_counter() - state["t0"]
            cpu = state["cpu_before"] + time.process_time() - state["c0"]
            rec = float(trainer.callback_metrics.get(f"recall@{RECALL_K}", float("nan")))
            loss = trainer.callback_metrics.get("train_loss")
            point = {"epoch": trainer.current_epoch + 1, f"valid_Recall@{RECALL_K}": rec,
                     "train_loss": None if loss is None else float(loss),
                     "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}
            state["curve"].append(point)
            write_json_atomic(workdir / "curve.json", {"curve": state["curve"],
                                                       "resumed_after_epochs": state["resumed"]})
            print(f"epoch {point['epoch']}: valid Recall@{RECALL_K} {rec:.4f}, train loss "
                  f"{point['train_loss']}, {wall:.0f}s wall", flush=True)
            if time_budget is not None and wall >= time_budget:
                state["stopped_by_budget"] = True
                trainer.should_stop = True

    class BestModelLoad(Callback):
        """Their BestModelLoad: the best-Recall@10 checkpoint's weights at the end of fit."""

        def on_fit_end(self, trainer, pl_module):
            ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
            pl_module.load_state_dict(ckpt["state_dict"])
            state["best_epoch"] = int(ckpt["epoch"]) + 1

    class ResumingTrainer(pl.Trainer):
        def fit(self, *args, **kwargs):
            if resume_from is not None:
                kwargs.setdefault("ckpt_path", str(resume_from))
                kwargs.setdefault("weights_only", False)  # it holds numpy arrays; this run wrote it
            return super().fit(*args, **kwargs)

    def get_trainer():
        monitor = f"recall@{RECALL_K}"
        return ResumingTrainer(
            max_epochs=max_epochs, deterministic=True, enable_progress_bar=False,
            enable_model_summary=False, logger=CSVLogger(str(workdir / "logs")),
            accelerator="cpu", devices=1, num_sanity_val_steps=0,
            callbacks=[RecallAtK(), Clock(),
                       ModelCheckpoint(dirpath=str(workdir), filename="best_recall", monitor=monitor,
                                       mode="max", save_last=True),
                       BestModelLoad(), EarlyStopping(monitor=monitor, mode="max", patience=PATIENCE)])

    return get_trainer


def their_metrics(model, fit_frame: pd.DataFrame, split, ks) -> dict:
    """Their `validate_model_on_holdout`: recommend with seen items filtered, `calc_metrics` on the
    holdout that their LastNSplitter keeps (cold items and already-seen pairs dropped)."""
    from rectools.dataset import Dataset
    from rectools.metrics import NDCG, Recall, calc_metrics

    holdout = pd.DataFrame({"user_id": split.users, "item_id": split.test_items, "weight": 1.0,
                            "datetime": 0})
    seen = holdout.merge(fit_frame[["user_id", "item_id"]].drop_duplicates(), how="left",
                         on=["user_id", "item_id"], indicator=True)["_merge"].eq("both").to_numpy()
    holdout = holdout[holdout["item_id"].isin(fit_frame["item_id"]).to_numpy() & ~seen]
    dataset = Dataset.construct(fit_frame)
    reco = model.recommend(users=holdout["user_id"].unique(), dataset=dataset, k=max(ks),
                           filter_viewed=True, on_unsupported_targets="warn")
    metrics = {}
    for k in ks:
        metrics[f"Recall@{k}"] = Recall(k=k)
        metrics[f"NDCG@{k}"] = NDCG(k=k, divide_by_achievable=True)
    out = calc_metrics(metrics=metrics, reco=reco, interactions=holdout, prev_interactions=fit_frame,
                       catalog=fit_frame["item_id"].unique())
    out = {k: float(v) for k, v in out.items()}
    out["users"] = int(holdout["user_id"].nunique())
    out["users_dropped"] = int(split.n_users - out["users"])
    return out


def our_metrics(model, split, ks, fit_frame: pd.DataFrame) -> dict:
    """Our evaluator over every user: RecTools' serving embeddings (its own `recommend` path), items
    RecTools never trained on scored -inf (they cannot be recommended by it)."""
    from rectools.dataset import Dataset

    prep, lm = model.data_preparator, model.lightning_model
    dataset = Dataset.construct(fit_frame)
    served = prep.transform_dataset_u2i(dataset, split.users)
    loader = prep.get_dataloader_recommend(served, batch_size=256)
    user_embs, item_embs = lm._get_user_item_embeddings(loader, "cpu")  # (U', D), (N', D)
    served_users = served.user_id_map.external_ids  # row i of user_embs (sorted internal ids)
    row_of = pd.Series(np.arange(len(served_users)), index=served_users)
    ext_items = prep.item_id_map.external_ids  # internal -> external, extra tokens first
    n_extra = prep.n_item_extra_tokens
    ours = torch.full((split.n_items + 1, item_embs.shape[1]), float("nan"))
    ours[torch.as_tensor(ext_items[n_extra:].astype(np.int64))] = item_embs[n_extra:]
    unknown = torch.isnan(ours[:, 0])  # (N+1,) padding and items RecTools never saw in training
    ours = torch.nan_to_num(ours)
    missing = ~np.isin(split.users, served_users)
    if missing.any():
        raise ValueError(f"RecTools served no embedding for {int(missing.sum())} users")
    U = torch.as_tensor(user_embs)[torch.as_tensor(row_of.loc[split.users].to_numpy())]

    def score(batch):
        s = U[batch["row"]] @ ours.T  # (b, D) @ (D, N+1)
        return s.masked_fill(unknown, float("-inf"))

    return evaluate_full_ranking(score, split, "test", ks=ks, exclude_seen=True)


BERT_ONLY = ("model", "blocks", "heads", "dropout", "mask_prob", "max_len")


def run_flags(args) -> dict:
    """The flags a --workdir is tied to (a resumed run must repeat them). The BERT4Rec flags are
    left out of a SASRec run's, so a SASRec workdir written before they existed still resumes."""
    skip = ("time_budget", "out", "debug", "threads", "epochs", "evaluate_only")
    return {k: v for k, v in vars(args).items()
            if k not in skip and (args.model == "bert4rec" or k not in BERT_ONLY)}


def main() -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]),
                             epochs=MAX_EPOCHS, batch_size=None, lr=1e-3)
    parser.add_argument("--model", choices=("sasrec", "bert4rec"), default="sasrec",
                        help="RecTools' SASRecModel (default) or BERT4RecModel")
    parser.add_argument("--dim", type=int, default=64, help="n_factors (their config: 256; README: 64)")
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--blocks", type=positive_int, default=2, help="bert4rec: transformer blocks")
    parser.add_argument("--heads", type=positive_int, default=2, help="bert4rec: attention heads")
    parser.add_argument("--dropout", type=float, default=0.5, help="bert4rec: dropout rate")
    parser.add_argument("--mask-prob", type=float, default=0.6, help="bert4rec: Cloze mask probability")
    parser.add_argument("--max-len", type=positive_int, default=50, help="bert4rec: session_max_len")
    parser.add_argument("--workdir", required=True, help="checkpoints and curve; resumes from here")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop after the first epoch past this many wall seconds (all pieces)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="train no further: test the best checkpoint of the epochs --workdir holds "
                             "(the RESULT says after how many epochs it was stopped)")
    args = parser.parse_args()
    bert = args.model == "bert4rec"
    if args.batch_size is None:  # theirs for SASRec+SS; our BERT4Rec's Beauty batch
        args.batch_size = 256 if bert else 128
    try:
        from pytorch_lightning import seed_everything
        from rectools.models import BERT4RecModel, SASRecModel
    except ImportError as e:
        raise SystemExit(f"RecTools is not importable ({e}); make the scratch environment in this "
                         "module's docstring") from e
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    last = workdir / "last.ckpt"
    flags = run_flags(args)
    meta_path = workdir / "run.json"
    state = {"curve": [], "resumed": [], "wall_before": 0.0, "cpu_before": 0.0,
             "stopped_by_budget": False}
    if args.evaluate_only and not last.exists():
        raise SystemExit(f"error: --evaluate-only needs a run in {workdir} (no last.ckpt there)")
    if last.exists():
        meta = json.loads(meta_path.read_text())
        if meta["flags"] != flags:
            raise SystemExit(f"error: {workdir} holds a run with other flags {meta['flags']}")
        saved = json.loads((workdir / "curve.json").read_text())
        state["curve"], state["resumed"] = saved["curve"], saved["resumed_after_epochs"]
        state["wall_before"] = state["curve"][-1]["wall_seconds"]
        state["cpu_before"] = state["curve"][-1]["cpu_seconds"]
        state["resumed"].append(len(state["curve"]))
        print(f"resuming after epoch {len(state['curve'])} ({state['wall_before']:.0f}s so far)")
    else:
        write_json_atomic(meta_path, {"flags": flags})
    seed_everything(args.seed + len(state["resumed"]) * 1000, workers=True)

    data = Datasets.load(args.data, verbose=True)
    split = leave_one_out(data)
    fit_frame = rectools_frame(split, "test")  # every interaction but the test item

    if last.exists():  # the weights come from the checkpoint: no Xavier re-initialisation
        from rectools.models.nn.transformers.lightning import TransformerLightningModule

        TransformerLightningModule.on_train_start = lambda self: None
    done = len(state["curve"])
    get_trainer = make_trainer_factory(workdir, args.time_budget, last if last.exists() else None,
                                       state, max_epochs=done if args.evaluate_only else MAX_EPOCHS)
    if bert:
        config = dict(n_factors=args.dim, session_max_len=args.max_len, n_blocks=args.blocks,
                      n_heads=args.heads, dropout_rate=args.dropout, mask_prob=args.mask_prob,
                      loss="softmax")
        model_cls, name = BERT4RecModel, f"BERT4Rec (RecTools {{}}, full softmax, dim {args.dim})"
    else:
        config = dict(n_factors=args.dim, session_max_len=50, n_blocks=1, n_heads=1,
                      dropout_rate=0.2, loss="sampled_softmax", n_negatives=args.negatives)
        model_cls = SASRecModel
        name = f"SASRec (RecTools {{}}, sampled softmax, dim {args.dim})"
    model = model_cls(
        **config, lr=args.lr, batch_size=args.batch_size, epochs=MAX_EPOCHS, deterministic=True,
        verbose=1, get_val_mask_func=last_per_user_mask, get_trainer_func=get_trainer,
        recommend_torch_device="cpu",
    )
    from rectools.dataset import Dataset

    t0 = time.perf_counter()
    model.fit(Dataset.construct(fit_frame))
    piece_seconds = time.perf_counter() - t0
    curve = state["curve"]
    finished = not state["stopped_by_budget"] and not args.evaluate_only
    ks = (5, 10, 20, 50)
    t1 = time.perf_counter()
    theirs = their_metrics(model, fit_frame, split, ks)
    ours = our_metrics(model, split, ks, fit_frame)
    eval_seconds = time.perf_counter() - t1
    wall = curve[-1]["wall_seconds"] if curve else piece_seconds
    cpu = curve[-1]["cpu_seconds"] if curve else float("nan")
    n = len(curve)
    print_result(
        model=name.format(__import__("rectools").__version__),
        data=args.data,
        protocol=("train-only (RecTools get_val_mask_func: the validation item is removed from "
                  "training and used for early stopping on validation Recall@10, patience 50, best "
                  "checkpoint reloaded); test history includes the validation item; full ranking, "
                  "seen items excluded, every user; pessimistic ties"),
        metrics=ours, baseline=None, train_seconds=wall, eval_seconds=eval_seconds, epochs=n,
        params=sum(p.numel() for p in model.lightning_model.torch_model.parameters()),
        metrics_rectools_eval=theirs, best_epoch=state.get("best_epoch"),
        best_valid_recall10=max((p[f"valid_Recall@{RECALL_K}"] for p in curve), default=None),
        seconds_per_epoch=wall / n if n else None, cpu_seconds_per_epoch=cpu / n if n else None,
        stopped_by_time_budget=not finished, time_budget=args.time_budget,
        evaluated_only=args.evaluate_only,
        resumed_after_epochs=state["resumed"], curve=curve, seed=args.seed,
        threads=args.threads or torch.get_num_threads(),
        config=dict(config, lr=args.lr, batch_size=args.batch_size, max_epochs=MAX_EPOCHS,
                    patience=PATIENCE, device="cpu (theirs: gpu)", seed=f"{args.seed} (theirs: 32)"),
        command="PYTHONPATH=. python -m Utils.tools.peer_rectools " + " ".join(
            sys.argv[1:]),
        out=args.out,
    )


if __name__ == "__main__":
    main()
