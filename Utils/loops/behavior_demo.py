"""What the demos of the behaviour-sequence CTR models (DIN, DIEN) share.

The rows are (behaviours, candidate, click): on the synthetic default, impressions whose clicks
the generator planted; on real data, the DIN paper's recipe (`Datasets.behavior_ctr`: next item =
positive, a never-touched item = negative, earlier items with their attributes = behaviours;
leave-one-out). This module builds them, fits the logistic-regression baseline on the candidate's
fields, predicts and scores a model, and shows one user's top candidates with the model's weights
over the behaviours. Each demo keeps its models and their training.

Besides training, what a user of the ranking demos can do (flags from `add_model_io_args`; the
multi-task demos use the same helpers; the checkpoint format, user lookup and the recommendation
display are `Utils.demo_io`'s):

    --save PATH       weights + config + the id maps (raw item ids, item field table) after training
    --load PATH       skip training: rebuild the models from a --save file, evaluate and recommend
    --overwrite       let --save replace an existing file
    --recommend USER  score every item the user has not touched and print the top-10
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import Datasets
from Datasets import DataError
from Datasets.BaseDatasets import CTRDataset, TensorDictDataset
from Datasets.behavior_ctr import build_behavior_ctr, has_item_attributes, item_field_table

from ..baselines import logistic_regression
from ..demo_io import (
    add_io_args,
    check_ids,
    check_save_path,
    show_recommendations,
    user_row,
    write_checkpoint,
)
from ..evaluation import evaluate_ctr
from ..io import positive_int
from ..metrics import auc

# Flags that shape the rows and the item fields: a --load run takes them from the checkpoint (all
# but --data, which the user names and `check_saved_items` compares), so its rows (and metrics) are
# those of the run that saved it.
DATA_ARGS = ("data", "seed", "max_len", "n_attributes", "max_users")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected a whole number >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected a whole number >= 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (a loss weight, a regularisation strength)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected a finite number >= 0") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected a finite number >= 0")
    return value


def add_behavior_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--max-len", type=positive_int, default=20, help="behaviours kept per sample")
    parser.add_argument("--dim", type=positive_int, default=16, help="embedding dim per item field")
    parser.add_argument("--n-attributes", type=non_negative_int, default=3,
                        help="attribute/category fields per item, beside the item id (0 = item id only)")
    parser.add_argument("--max-users", type=positive_int, default=None,
                        help="keep a random subset of users (seeded) to shorten real-data runs")
    return add_model_io_args(parser, recommend="score every item USER has not touched and print "
                             "the top-10 (a raw user id as in the data file)")


def add_model_io_args(parser: argparse.ArgumentParser, recommend: str) -> argparse.ArgumentParser:
    """--save, --load, --overwrite, --recommend USER (its help text says where it applies)."""
    return add_io_args(parser, save="after training, save weights + config + id maps here",
                       load="skip training: load a --save file, then evaluate (and recommend)",
                       recommend=recommend)


def check_before_training(args, split, data) -> None:
    """Fail before any training (and before anything is written) on a --save path that exists or
    a --recommend user that is not in the data."""
    check_save_path(args.save, args.overwrite)
    if args.recommend is not None:
        user_row(split, data, args.recommend)


def save_models(args, path: str, demo: str, models: dict, names=DATA_ARGS, **extra) -> None:
    """Write --save (`Utils.demo_io.write_checkpoint`): `models` maps a name (the main model first)
    to (module, config dict); the flags in `names` go under "args"; `extra` holds the item table
    and whatever else the demo needs to use the weights again (an `ids` keyword: raw id maps)."""
    write_checkpoint(path, demo=demo, models=models, args={k: getattr(args, k) for k in names},
                     overwrite=args.overwrite, **extra)
    print(f"saved {', '.join(models)} to {path}")


def check_saved_items(payload: dict, b: BehaviorCTR, path: str) -> None:
    """The rows must be built over the same items (and item fields) as the saved run's."""
    check_ids(payload, path, data_name=b.data.name, item=b.data.item_raw)
    saved = payload["extra"]["fields"]
    if tuple(saved.shape) != tuple(b.fields.shape) or not torch.equal(saved, b.fields):
        raise DataError(f"--load {path}: saved for {saved.shape[0] - 1:,} items with "
                        f"{saved.shape[1]} item fields, but {b.data.name} gives "
                        f"{b.data.n_items:,} items with {b.fields.shape[1]}; expected the --data of "
                        f"the run that saved it ({payload.get('args', {}).get('data', '?')})")


def recommend(model: torch.nn.Module, b: BehaviorCTR, raw_user: str, max_len: int, device,
              k: int = 10, batch_size: int = 2048) -> list[int]:
    """Score every item the user has not touched (the held-out test item stays a candidate) given
    the user's behaviours before the test step; print the history and the top-k with titles /
    categories. Returns the top-k item ids."""
    row = user_row(b.split, b.data, raw_user)
    hist_items, _ = b.split.history("test", max_len)
    history = torch.as_tensor(hist_items[row])  # (L,)
    o = b.split.train_offsets
    seen = np.append(b.split.train_items[o[row]:o[row + 1]], b.split.valid_items[row])
    candidates = torch.as_tensor(np.setdiff1d(np.arange(1, b.split.n_items + 1), seen))  # (C,)
    model.eval()
    scores = []
    with torch.no_grad():
        for chunk in candidates.split(batch_size):
            hist = b.fields[history].unsqueeze(0).expand(len(chunk), -1, -1)  # (c, L, G)
            scores.append(torch.sigmoid(model(b.fields[chunk].to(device), hist.to(device))).cpu())
    score = torch.cat(scores)  # (C,)
    top = torch.topk(score, min(k, len(score))).indices
    items = candidates[top].tolist()
    print(f"\n--recommend {raw_user}: {len(candidates):,} candidates (every item the user has not "
          "touched before the test step), scored with the user's last behaviours")
    show_recommendations(b.data, [int(i) for i in history[history > 0]], items,
                         score[top].tolist(), raw_user=raw_user, k=k)
    held_out = int(b.split.targets("test")[row])
    rank = int((score > score[candidates == held_out]).sum()) + 1
    print(f"  the user's held-out next item ranks {rank:,} of {len(candidates):,}")
    return items


@dataclass
class BehaviorCTR:
    data: object
    split: object
    fields: torch.Tensor  # (n_items + 1, G) item id + attribute ids; row 0 = padding
    vocab: tuple[int, ...]  # vocabulary size of each of the G item fields
    sets: dict  # "train" / "valid" / "test" -> TensorDictDataset(user, history, target, label)
    protocol: str
    n_users: int


def load_behavior_ctr(args, demo: str) -> BehaviorCTR:
    """Rows for `args.data` (see the module docstring), printed with their positive rates.
    `demo` ("the DIN demo") names the reader in the error for data of the wrong kind. Before the
    rows are built, a --save path that exists or an unknown --recommend user is a one-line error."""
    data = Datasets.load(args.data, verbose=True, expect="interactions", demo=demo)
    split = Datasets.leave_one_out(data)
    print(split)
    check_before_training(args, split, data)
    if args.n_attributes > 0 and not has_item_attributes(data):
        print(f"[data] {data.name} has no item attributes, categories or brands (e.g. no "
              "*_item2attributes.json beside a seqtxt file): the item id is the only item field")
    fields = item_field_table(data, n_attributes=args.n_attributes)  # (n_items+1, G)
    vocab = tuple(int(v) + 1 for v in fields.max(0).values)
    keep_users = None
    if args.max_users is not None and args.max_users < split.n_users:
        keep_users = np.sort(np.random.default_rng(args.seed).choice(
            split.n_users, args.max_users, replace=False))
        print(f"subsampled {args.max_users:,} of {split.n_users:,} users (seed {args.seed})")
    if "truth" in data.extra:  # the synthetic world knows the true click model
        from Datasets.synthetic import ctr_impressions

        sets = {}
        for stage in ("train", "valid", "test"):
            imp = ctr_impressions(data, split, stage, max_len=args.max_len, seed=args.seed)
            sets[stage] = TensorDictDataset(
                {k: torch.as_tensor(imp[k]) for k in ("user", "history", "label")}
                | {"target": torch.as_tensor(imp["item"])})
        protocol = ("synthetic impressions with planted clicks (true next item + 3 "
                    "popularity-sampled items per step), leave-one-out: test = last step")
    else:
        sets = build_behavior_ctr(split, max_len=args.max_len, seed=args.seed, users=keep_users)
        protocol = ("DIN-paper behaviour CTR: next item = positive, one never-seen uniform item = "
                    "negative, earlier items (+ attributes) = behaviours; leave-one-out, test = "
                    "last item; GAUC = per-user AUC weighted by impressions")
    for k, v in sets.items():
        print(f"{k}: {len(v):,} rows, positive rate {v.tensors['label'].float().mean():.3f}")
    n_users = int(split.n_users if keep_users is None else len(keep_users))
    return BehaviorCTR(data, split, fields, vocab, sets, protocol, n_users)


def logistic_baseline(b: BehaviorCTR, seed: int) -> dict:
    """The ranking stage's baseline: logistic regression on the candidate's fields only."""
    def as_ctr(ds):
        return CTRDataset(sparse=b.fields[ds.tensors["target"]], labels=ds.tensors["label"],
                          users=ds.tensors["user"])

    res = logistic_regression(*(as_ctr(b.sets[s]) for s in ("train", "valid", "test")),
                              field_dims=list(b.vocab), seed=seed)
    print("logistic regression, test:", {k: round(v, 4) for k, v in res["metrics"].items()})
    return res


def predict(model: torch.nn.Module, ds, fields: torch.Tensor, device,
            batch_size: int = 4096) -> np.ndarray:
    """Click probabilities of `model(target_fields, history_fields)` for every row of ds."""
    model.eval()
    out = []
    with torch.no_grad():
        for b in ds.batches(batch_size, shuffle=False):
            logits = model(fields[b["target"]].to(device), fields[b["history"]].to(device))
            out.append(torch.sigmoid(logits).cpu())
    return torch.cat(out).numpy()


def ctr_metrics(model: torch.nn.Module, ds, fields: torch.Tensor, device) -> dict[str, float]:
    """AUC, LogLoss and GAUC (per-user AUC weighted by impressions)."""
    return evaluate_ctr(ds.tensors["label"].numpy(), predict(model, ds, fields, device),
                        ds.tensors["user"].numpy())


POSITIVE_COUNT_BUCKETS = ((0, 0), (1, 4), (5, 19), (20, None))


def auc_by_positive_count(model: torch.nn.Module, b: BehaviorCTR, stage: str,
                          device) -> dict[str, dict] | None:
    """AUC within groups of a stage's (positive, negative) pairs, grouped by how often the pair's
    positive item was a clicked target in the training rows: 0, 1-4, 5-19, >= 20 times. Tells
    whether a model's edge rests on well-trained or on rarely seen items. Real-data rows only
    (each positive followed by its negative); None for other row layouts (the synthetic default).
    Returns {"0": {"pairs": n, "AUC": x}, "1-4": ..., "5-19": ..., "20+": ...}."""
    ds = b.sets[stage].tensors
    label = ds["label"].numpy()
    if len(label) % 2 or not ((label[0::2] == 1).all() and (label[1::2] == 0).all()):
        return None
    train = b.sets["train"].tensors
    clicked = train["target"][train["label"] > 0].numpy()
    count = np.bincount(clicked, minlength=b.fields.shape[0])[ds["target"].numpy()[0::2]]
    score = predict(model, b.sets[stage], b.fields, device)
    out = {}
    for lo, hi in POSITIVE_COUNT_BUCKETS:
        in_bucket = (count >= lo) & (count <= (np.inf if hi is None else hi))
        rows = np.repeat(in_bucket, 2)  # the pair's positive and its negative
        name = f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")
        out[name] = {"pairs": int(in_bucket.sum()),
                     "AUC": auc(label[rows], score[rows]) if in_bucket.any() else None}
    return out


def print_by_positive_count(name: str, stage: str, buckets: dict[str, dict] | None) -> None:
    if buckets is not None:
        print(f"{name}, {stage} AUC by the positive's training clicks: " + "  ".join(
            f"{k}: {'-' if v['AUC'] is None else round(v['AUC'], 4)} ({v['pairs']:,} pairs)"
            for k, v in buckets.items()))


def step_negatives(history: torch.Tensor, n_items: int, generator: torch.Generator,
                   clicks: torch.Tensor | None = None, max_rounds: int = 100) -> torch.Tensor:
    """One "non-clicked" item per behaviour step, for DIEN's auxiliary loss; 0 at padding.

    clicks None: uniform over items 1..n_items. clicks (N,) = every training click's item: an entry
    drawn uniformly, so an item comes up in proportion to its clicks (the official DIEN iterator
    draws from its list of all reviews), redrawn where it equals that step's own behaviour."""
    if clicks is None:
        neg = torch.randint(1, n_items + 1, history.shape, generator=generator)
    else:
        neg = clicks[torch.randint(len(clicks), history.shape, generator=generator)]
        for _ in range(max_rounds):
            clash = (neg == history) & (history > 0)
            if not clash.any():
                break
            neg[clash] = clicks[torch.randint(len(clicks), (int(clash.sum()),),
                                              generator=generator)]
        else:
            raise RuntimeError(f"step negatives still equal their behaviour after {max_rounds} "
                               "rounds; does one item hold (almost) all clicks?")
    return torch.where(history > 0, neg, 0)


def describe(data, i: int) -> str:
    """Title/category when the source has them; seqtxt items add their first keyword tokens."""
    text = data.item_text(i)
    if "keywords" in data.items and isinstance(data.items["keywords"].iloc[i], list):
        text += " | " + " ".join(k.lstrip("\u2581") for k in data.items["keywords"].iloc[i][:4])
    return text


def show_user(model: torch.nn.Module, b: BehaviorCTR, max_len: int,
              weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], what: str) -> None:
    """The first test row's user: last behaviours, the model's top 5 of the 200 most popular items
    (+ the held-out one), and `weights(candidate (1, G), history (1, L, G)) -> (L,)` of the top
    candidate over the behaviours, printed after `what`."""
    test = b.sets["test"]
    row = int(test.tensors["row"][0]) if "row" in test.tensors else 0
    hist_items, _ = b.split.history("test", max_len)
    history = torch.as_tensor(hist_items[row])  # (L,)
    print(f"\nuser {b.split.users[row]} — last behaviours (oldest first):")
    for i in history[history > 0].tolist()[-8:]:
        print("   ", describe(b.data, i))
    popular = np.argsort(-b.split.item_counts())[:200]
    candidates = torch.as_tensor(np.unique(np.append(popular, b.split.targets("test")[row])))
    cand_fields = b.fields[candidates]  # (C, G)
    hist_fields = b.fields[history].unsqueeze(0).expand(len(candidates), -1, -1)  # (C, L, G)
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(cand_fields, hist_fields))
        top = torch.topk(scores, 5).indices
        w = weights(cand_fields[top[:1]], hist_fields[:1])
    held_out = int(b.split.targets("test")[row])
    print(f"top 5 of {len(candidates)} candidates (200 most popular + the held-out item "
          f"'{describe(b.data, held_out)}'):")
    for j in top.tolist():
        mark = "  <- held-out next item" if int(candidates[j]) == held_out else ""
        print(f"    p={scores[j]:.3f}  {describe(b.data, int(candidates[j]))}{mark}")
    print(what, [round(x, 2) for x in w[history > 0].tolist()[-8:]])


def pick_user_and_candidates(b, max_len: int, n_show: int = 12):
    """For `--plot-internals` of the DIN and DIEN demos: the first test user whose last `n_show`
    behaviours hold >= 3 items of each of two categories (field 1 of the item table), and for each
    category its most popular item the user never touched. Returns (history (L,) int64 left-padded,
    candidates [2] item ids)."""
    hist_items, _ = b.split.history("test", max_len)
    counts = b.split.item_counts()
    cat = b.fields[:, 1].numpy()  # (n_items + 1,)
    for row in range(len(hist_items)):
        items = hist_items[row][hist_items[row] > 0][-n_show:]
        cats, n = np.unique(cat[items], return_counts=True)
        top2 = cats[np.argsort(-n)][:2]
        if len(cats) < 2 or np.sort(n)[-2] < 3:
            continue
        seen = set(hist_items[row].tolist())
        cands = [max((i for i in np.flatnonzero(cat == c) if i not in seen and i > 0),
                     key=lambda i: counts[i]) for c in top2]
        return torch.as_tensor(hist_items[row]), cands
    raise DataError("--plot-internals: no test user has >= 3 behaviours in each of two categories "
                    "among the last ones; expected data with item categories")
