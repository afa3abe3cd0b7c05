"""What the demos of the feature-field CTR models (Wide&Deep, DeepFM, DCN-V2, AutoInt) share.

Each demo keeps its model, its flags and its presets; this module holds the rest: the common
flags with per-data-source presets, the data (`Datasets.field_ctr`) with the logistic-regression
baseline on the same split, training (`Utils.ctr_training`), the test, the top items for one test
context and the `RESULT` line.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import Datasets
from Datasets.field_ctr import FieldCTR, build_field_ctr

from .baselines import logistic_regression
from .ctr_training import ctr_metrics, predict_ctr, train_ctr_model
from .io import add_common_args, print_result
from .metrics import auc
from .training import count_params, cpu_setup, pick_device, set_seed


def field_ctr_parser(description: str, *, hidden_help: str = "DNN widths, e.g. 400,400,400"):
    """The flags every field-CTR demo has; a flag left unset takes its data source's preset."""
    parser = add_common_args(argparse.ArgumentParser(description=description), epochs=None,
                             batch_size=None, lr=None)
    parser.add_argument("--embed-dim", type=int, default=None)
    parser.add_argument("--hidden", default=None, help=hidden_help)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--embedding-l2", type=float, default=None,
                        help="L2 (Adam weight decay) on the embedding tables only")
    parser.add_argument("--no-lr-decay", action="store_true",
                        help="skip the lr/10 phase on plateau")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="libfm without a train file: share of the validation file held out")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return parser


def parse_with_presets(parser: argparse.ArgumentParser, presets: dict[str, dict]):
    """Parse, then fill every flag left unset from presets['libfm'] or presets['synthetic']."""
    args = parser.parse_args()
    for k, v in presets["libfm" if args.data.startswith("libfm") else "synthetic"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def hidden_widths(spec: str) -> tuple[int, ...]:
    """'400,400,400' -> (400, 400, 400); '' -> ()."""
    return tuple(int(h) for h in spec.split(",") if h)


def prepare(args) -> tuple[FieldCTR, dict, torch.device]:
    """Threads, seed and device; the data split; logistic regression on the same fields and split."""
    cpu_setup(args.threads)
    set_seed(args.seed)
    device = pick_device(args.device)
    ctr = build_field_ctr(Datasets.load(args.data, verbose=True), holdout=args.holdout,
                          seed=args.seed)
    print(ctr.protocol)
    print("fields:", dict(zip(ctr.field_names, ctr.field_dims)), f"+ {ctr.dense_dim} dense")
    for name, ds in (("train", ctr.train), ("valid", ctr.valid), ("test", ctr.test)):
        print(f"{name}: {len(ds):,} rows, positive rate {ds.tensors['label'].mean():.3f}")
    lr_res = logistic_regression(ctr.train, ctr.valid, ctr.test, field_dims=ctr.field_dims,
                                 seed=args.seed)
    print("logistic regression, test:", {k: round(v, 4) for k, v in lr_res["metrics"].items()})
    return ctr, lr_res, device


def show_context(model: torch.nn.Module, ctr: FieldCTR, device) -> None:
    """The first positive test row: the user's clicks in training, the context, and the model's
    top 5 of all items in that context (the clicked item starred)."""
    row = int(torch.nonzero(ctr.test.tensors["label"] > 0)[0])
    sparse_row = ctr.test.tensors["sparse"][row]
    dense_row = ctr.test.tensors["dense"][row] if ctr.dense_dim else None
    user = int(sparse_row[0])
    train_sparse, train_label = ctr.train.tensors["sparse"], ctr.train.tensors["label"]
    clicked = train_sparse[(train_sparse[:, 0] == user) & (train_label > 0), ctr.item_field]
    print(f"user {user}: clicked in training ({len(clicked)}):")
    for i in clicked[-5:].tolist():
        print("   ", ctr.describe_item(i))
    context = {n: int(v) for n, v in zip(ctr.field_names, sparse_row.tolist())
               if n not in ("user", "item", "category", "brand", "price_bucket")}
    print("context:", {k: (ctr.describe_item(v) if k.endswith("item") else v)
                        for k, v in context.items()})
    items = torch.arange(1, ctr.field_dims[ctr.item_field])
    sparse_c, dense_c = ctr.candidate_rows(sparse_row, items, dense_row)
    model.eval()
    with torch.no_grad():
        dense_c = None if dense_c is None else dense_c.to(device)
        probs = torch.sigmoid(model(sparse_c.to(device), dense_c))
    top = torch.topk(probs.cpu(), 5)
    truth = int(sparse_row[ctr.item_field])
    print("top 5 items for this context (* = the item clicked in the test row):")
    for p, i in zip(top.values.tolist(), (items[top.indices]).tolist()):
        print(f"   {p:.3f}  {ctr.describe_item(i)}{'  *' if i == truth else ''}")


def auc_by_seen_pair(model: torch.nn.Module, ctr: FieldCTR, device) -> dict[str, dict] | None:
    """Test AUC of two groups of positives, each against all test negatives: positives whose
    (user, item) pair was clicked in the training rows, and positives of a pair never clicked
    there. Separates memorising known pairs from generalising to new ones. None without a field
    named "user"; a group without positives gets AUC None.
    Returns {"seen pair": {"positives": n, "AUC": x}, "new pair": {...}}."""
    if "user" not in ctr.field_names:
        return None
    u, i = ctr.field_names.index("user"), ctr.item_field
    n_items = ctr.field_dims[i]
    train_sparse = ctr.train.tensors["sparse"].numpy()
    train_label = ctr.train.tensors["label"].numpy()
    clicked = np.unique(train_sparse[train_label > 0, u].astype(np.int64) * n_items
                        + train_sparse[train_label > 0, i])
    sparse, label = ctr.test.tensors["sparse"].numpy(), ctr.test.tensors["label"].numpy() > 0
    seen = np.isin(sparse[:, u].astype(np.int64) * n_items + sparse[:, i], clicked)
    score = predict_ctr(model, ctr.test, device)
    out = {}
    for name, group in (("seen pair", label & seen), ("new pair", label & ~seen)):
        rows = group | ~label
        out[name] = {"positives": int(group.sum()),
                     "AUC": auc(label[rows], score[rows]) if group.any() else None}
    return out


def train_and_report(name: str, model: torch.nn.Module, ctr: FieldCTR, lr_res: dict, args,
                     device, *, desc: str | None = None) -> dict:
    """Train (early stopping on validation AUC, one lr/10 phase), test, show one context, print
    the RESULT line (the last line printed) and return it."""
    t0 = time.perf_counter()
    phases = train_ctr_model(model, ctr.train, ctr.valid, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, device=device,
                             embedding_l2=args.embedding_l2, lr_decay=not args.no_lr_decay,
                             seed=args.seed, desc=desc or name)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = ctr_metrics(model, ctr.test, device)
    eval_seconds = time.perf_counter() - t1
    print(f"{name}, test:", {k: round(v, 4) for k, v in metrics.items()})
    by_pair = auc_by_seen_pair(model, ctr, device)
    if by_pair is not None:
        print(f"{name}, test AUC by (user, item) pair: " + "  ".join(
            f"{k}: {'-' if v['AUC'] is None else round(v['AUC'], 4)} ({v['positives']:,} positives)"
            for k, v in by_pair.items()))
    show_context(model, ctr, device)
    return print_result(
        model=name, data=args.data, protocol=ctr.protocol, metrics=metrics,
        baseline={"name": "logistic regression", "metrics": lr_res["metrics"]},
        train_seconds=train_seconds, eval_seconds=eval_seconds,
        epochs=sum(len(h.epochs) for h in phases), params=count_params(model), out=args.out,
        config={k: v for k, v in vars(args).items() if k not in ("out",)},
        valid_auc=max(h.best_metric for h in phases), auc_by_seen_pair=by_pair,
    )
