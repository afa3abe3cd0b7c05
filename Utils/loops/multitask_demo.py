"""The two-task ranking experiment shared by the MMoE and PLE demos.

A two-task split of the synthetic default (`Datasets.multitask_ctr`): task "click" is the
generator's planted click, task "next" whether the candidate is the item the user really took next.
Each demo passes the models it compares (name -> builder); this module loads the data, fits one
logistic regression per task as the baseline, trains every model the same way (Adam, early stopping
on the mean validation AUC of the tasks), tests them, and shows one user's top candidates.
`--save` / `--load` / `--recommend USER` work as in the behaviour demos (`Utils.loops.behavior_demo`;
the checkpoint, user lookup and display are `Utils.demo_io`'s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch

import Datasets
from Datasets import DataError
from Datasets.BaseDatasets import CTRDataset, TensorDictDataset
from Datasets.multitask_ctr import FIELDS, TASKS, two_task_impressions

from ..baselines import logistic_regression
from ..demo_io import apply_saved_args, read_checkpoint, restore, show_recommendations, user_row
from ..evaluation import evaluate_ctr
from ..training import History, fit, set_seed
from .behavior_demo import check_before_training, save_models


def predict(model: torch.nn.Module, ds, device, batch_size: int = 4096) -> np.ndarray:
    """(S, K) per-task predictions (probabilities for binary tasks)."""
    model.eval()
    with torch.no_grad():
        out = [model.predict(model(b["sparse"].to(device))).cpu()
               for b in ds.batches(batch_size, shuffle=False)]
    return torch.cat(out).numpy()


def task_metrics(model: torch.nn.Module, ds, device) -> dict[str, float]:
    """AUC / LogLoss / GAUC per task (suffix _click, _next) and their mean AUC."""
    p, y, users = predict(model, ds, device), ds.tensors["labels"].numpy(), ds.tensors["user"].numpy()
    out = {}
    for k, task in enumerate(TASKS):
        for name, value in evaluate_ctr(y[:, k], p[:, k], users).items():
            out[f"{name}_{task}"] = value
    out["AUC_mean"] = float(np.mean([out[f"AUC_{t}"] for t in TASKS]))
    return out


def logistic_per_task(sets: dict, dims, seed: int) -> dict[str, float]:
    """The ranking stage's baseline: one logistic regression per task on the same fields."""
    metrics = {}
    for k, task in enumerate(TASKS):
        parts = [CTRDataset(sparse=sets[s].tensors["sparse"],
                            labels=sets[s].tensors["labels"][:, k], users=sets[s].tensors["user"])
                 for s in ("train", "valid", "test")]
        res = logistic_regression(*parts, field_dims=dims, seed=seed)
        metrics.update({f"{n}_{task}": v for n, v in res["metrics"].items()})
    metrics["AUC_mean"] = float(np.mean([metrics[f"AUC_{t}"] for t in TASKS]))
    return metrics


def train_two_task(build: Callable[[], torch.nn.Module], sets: dict, args, device,
                   desc: str) -> tuple[torch.nn.Module, History]:
    """Seed, build, then Adam with early stopping (patience 2) on the mean validation AUC."""
    set_seed(args.seed)
    model = build().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    train = sets["train"]

    def step(b):
        return model.loss(model(b["sparse"].to(device)), b["labels"].to(device))

    hist = fit(model, step, lambda e: train.batches(args.batch_size, generator=gen), opt,
               args.epochs, evaluate=lambda: task_metrics(model, sets["valid"], device),
               metric="AUC_mean", patience=2, n_batches=train.num_batches(args.batch_size),
               desc=desc)
    return model, hist


def run_two_task(builders: dict[str, Callable[[dict], torch.nn.Module]], show: str, args,
                 device) -> tuple[dict, dict, dict]:
    """Train and test every model of `builders` (each called with the shared constructor keywords)
    on the two-task split of `args.data`; print the comparison and model `show`'s top candidates
    for one user. With `args.load`, the models come from a `--save` file instead of training;
    `args.save` writes them; `args.recommend` prints one user's top-10. Returns results
    {name: (model, epochs run, test metrics)}, training seconds by name and the
    logistic-regression metrics."""
    saved = read_checkpoint(args.load, demo=show) if args.load else None
    if saved:
        apply_saved_args(args, saved, names=("seed",))
    data = Datasets.load(args.data, verbose=True, expect="interactions",
                         demo=f"the {show} demo's two-task run")
    split = Datasets.leave_one_out(data)
    check_before_training(args, split, data)
    sets, dims = two_task_impressions(data, split, seed=args.seed)
    print(split, {k: len(v) for k, v in sets.items()}, "fields:", dict(zip(FIELDS, dims)))
    if saved and list(saved["extra"]["dims"]) != list(dims):
        raise DataError(f"--load {args.load}: saved for field sizes {list(saved['extra']['dims'])}, but "
                        f"{data.name} gives {list(dims)}; expected the --data of the run that "
                        f"saved it ({saved['args'].get('data', '?')})")
    lr_metrics = logistic_per_task(sets, dims, args.seed)
    common = dict(task_types=("binary", "binary"), sparse_vocab_sizes=tuple(dims), dim=16)
    results, seconds = {}, {}
    for name, build in builders.items():
        t0 = time.perf_counter()
        if saved:
            model = restore(type(build(common)), saved["models"][name], device, args.load)
            epochs = saved["extra"]["epochs"][name]
        else:
            model, hist = train_two_task(lambda build=build: build(common), sets, args, device,
                                         name)
            epochs = len(hist.epochs)
        seconds[name] = 0.0 if saved else time.perf_counter() - t0
        results[name] = (model, epochs, task_metrics(model, sets["test"], device))
    if saved:
        print(f"loaded {', '.join(builders)} from {args.load} (no training)")
    if args.save:
        models = {show: results[show][0]} | {k: v[0] for k, v in results.items() if k != show}
        save_models(args, args.save, show, {k: (m, asdict(m.config)) for k, m in models.items()},
                    names=("data", "seed"), dims=list(dims),
                    epochs={k: v[1] for k, v in results.items()},
                    ids={"user": data.user_raw, "item": data.item_raw})
    for name, m in [("logistic regression", lr_metrics)] + [(k, v[2]) for k, v in results.items()]:
        print(f"{name:>20s}  " + "  ".join(f"{k} {m[k]:.4f}" for k in
                                           ("AUC_click", "AUC_next", "GAUC_click", "GAUC_next")))
    show_user(results[show][0], data, split, sets["test"], device)
    if args.recommend is not None:
        recommend(results[show][0], data, split, args.recommend, device)
    return results, seconds, lr_metrics


def candidate_impressions(data, split, raw_user: str) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(history (L,) item ids, candidates (C,) every item the user has not touched before the test
    step, sparse (C, 7) int64 inputs in the order of `FIELDS`: user, item, category, brand, price
    bucket, last behaviour item and its category) for one user's --recommend."""
    row = user_row(split, data, raw_user)
    hist_items, _ = split.history("test", 20)
    history = hist_items[row][hist_items[row] > 0]
    o = split.train_offsets
    seen = np.append(split.train_items[o[row]:o[row + 1]], split.valid_items[row])
    cand = np.setdiff1d(np.arange(1, split.n_items + 1), seen)  # (C,)
    category = data.item_feature("category")
    last = int(history[-1]) if len(history) else 0
    sparse = torch.as_tensor(np.stack([
        np.full(len(cand), split.users[row]), cand, category[cand], data.item_feature("brand")[cand],
        data.item_feature("price_bucket")[cand], np.full(len(cand), last),
        np.full(len(cand), category[last])], axis=1), dtype=torch.long)  # (C, 7) as FIELDS
    return history, cand, sparse


def recommend(model: torch.nn.Module, data, split, raw_user: str, device, k: int = 10) -> list[int]:
    """Score every item the user has not touched before the test step by p(click) x p(next), with
    the user's last behaviour as context; print the history and the top-k. Returns the item ids."""
    history, cand, sparse = candidate_impressions(data, split, raw_user)
    p = predict(model, TensorDictDataset({"sparse": sparse}), device)
    score = p[:, 0] * p[:, 1]
    order = np.argsort(-score)[:k]
    print(f"\n--recommend {raw_user}: {len(cand):,} candidates (every item the user has not "
          "touched before the test step), ranked by p(click) x p(next)")
    show_recommendations(data, [int(i) for i in history], [int(cand[j]) for j in order],
                         [float(score[j]) for j in order], raw_user=raw_user, k=k)
    return [int(cand[j]) for j in order]


def show_user(model: torch.nn.Module, data, split, test, device) -> None:
    """The first test row's user: last behaviours and the top 5 of the 200 most popular items (+
    the held-out one) by p(click) x p(next)."""
    row = 0
    user = int(test.tensors["user"][row])
    hist_items, _ = split.history("test", 20)
    urow = int(np.searchsorted(split.users, user))
    print(f"\nuser {user} — last behaviours (oldest first):")
    for i in hist_items[urow][hist_items[urow] > 0][-6:]:
        print("   ", data.item_text(int(i)))
    held_out = split.targets("test")[urow]
    cand = np.unique(np.append(np.argsort(-split.item_counts())[:200], held_out))
    sparse = test.tensors["sparse"][row].repeat(len(cand), 1)
    sparse[:, 1] = torch.as_tensor(cand)
    sparse[:, 2] = torch.as_tensor(data.item_feature("category")[cand])
    sparse[:, 3] = torch.as_tensor(data.item_feature("brand")[cand])
    sparse[:, 4] = torch.as_tensor(data.item_feature("price_bucket")[cand])
    p = predict(model, TensorDictDataset({"sparse": sparse}), device)
    order = np.argsort(-(p[:, 0] * p[:, 1]))[:5]
    print(f"top 5 of {len(cand)} candidates by p(click) x p(next):")
    for j in order:
        mark = "  <- held-out next item" if cand[j] == held_out else ""
        print(f"    click {p[j, 0]:.3f}  next {p[j, 1]:.3f}  {data.item_text(int(cand[j]))}{mark}")
