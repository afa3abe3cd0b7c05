"""What the demos of the feature-field CTR models (Wide&Deep, DeepFM, DCN-V2, AutoInt) share.

Each demo keeps its model, its flags and its presets; this module holds the rest: the common
flags with per-data-source presets, the data (`Datasets.field_ctr`) with the logistic-regression
baseline on the same split, training (`Utils.ctr_training`), the test, the top items for one test
context and the `RESULT` line; and what a user does with a trained model:

    --save PATH [--overwrite]  weights + config + model flags + raw id maps (Utils.demo_io format)
    --load PATH                skip training: the flags come from the file, and the test
                               metrics equal the saving run's
    --recommend USER           a raw user id: every item ranked in that user's latest context
    --export-onnx PATH         (demos that ask for it) an ONNX graph, checked against PyTorch
                               with onnxruntime
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import logging
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets.field_ctr import FieldCTR, build_field_ctr

from ..baselines import logistic_regression
from ..ctr_training import ctr_metrics, predict_ctr, train_ctr_model
from ..demo_io import (
    add_io_args,
    apply_saved_args,
    check_save_path,
    load_weights,
    read_checkpoint,
    write_checkpoint,
)
from ..io import add_common_args, positive_float, positive_int, print_result
from ..metrics import auc
from ..training import count_params, cpu_setup, pick_device, set_seed


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (an L2 weight)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; expected a finite number >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected a finite number >= 0")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (0 meaning "off" or "full", as the flag's help says)."""
    return 0 if text.strip() == "0" else positive_int(text)


def probability(text: str) -> float:
    """argparse type: a number in [0, 1) (a dropout rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected 0 <= p < 1") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected 0 <= p < 1")
    return value


def open_fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a held-out share)."""
    value = probability(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected 0 < fraction < 1")
    return value


def widths(text: str) -> str:
    """argparse type: comma-separated positive layer widths ('400,400,400'), or '' for none."""
    try:
        hidden_widths(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return text


def field_ctr_parser(description: str, *, hidden_help: str = "DNN widths, e.g. 400,400,400",
                     onnx: bool = False):
    """The flags every field-CTR demo has; a flag left unset takes its data source's preset (or,
    with --load, the saved model's value). `onnx=True` adds --export-onnx."""
    parser = add_common_args(argparse.ArgumentParser(description=description), epochs=None,
                             batch_size=None, lr=None)
    parser.add_argument("--dim", type=positive_int, default=None, help="embedding width D")
    parser.add_argument("--hidden", type=widths, default=None, help=hidden_help)
    parser.add_argument("--dropout", type=probability, default=None)
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--embedding-l2", type=non_negative_float, default=None,
                        help="L2 (Adam weight decay) on the embedding tables only")
    parser.add_argument("--no-lr-decay", action="store_true",
                        help="keep the learning rate: no lr/10 on plateau")
    parser.add_argument("--lr-schedule", choices=("restart", "plateau"), default=None,
                        help="restart: on plateau, one more phase from the best state at lr/10; "
                             "plateau (FuxiCTR's): lr/10 after every epoch without a validation "
                             "gain, from the current weights")
    parser.add_argument("--grad-clip", type=positive_float, default=None,
                        help="clip the gradient norm at this value (FuxiCTR: 10)")
    parser.add_argument("--holdout", type=open_fraction, default=0.1,
                        help="libfm without a train file: share of the validation file held out")
    add_io_args(parser, save="after training, save weights + config + flags + raw id maps here",
                load="load a --save file and skip training (its flags are used)",
                recommend="print the top 10 of all items in this raw user id's latest context")
    if onnx:
        parser.add_argument("--export-onnx", default=None, metavar="PATH",
                            help="export the trained model to ONNX (inputs sparse, dense; output "
                                 "logit) and check it against PyTorch with onnxruntime")
    return parser


def parse_with_presets(parser: argparse.ArgumentParser, presets: dict[str, dict]):
    """Parse, then fill every flag left unset from the --load file's flags, else from
    presets['libfm'] or presets['synthetic']."""
    args = parser.parse_args()
    if args.load:  # the demo's name: its description without " demo" ("DeepFM demo" -> DeepFM)
        ck = read_checkpoint(args.load, demo=parser.description.removesuffix(" demo"))
        if "embed_dim" in ck["args"]:  # a file saved while the flag was --embed-dim: now --dim
            ck["args"]["dim"] = ck["args"].pop("embed_dim")
            ck["extra"]["flags"] = ["dim" if f == "embed_dim" else f for f in ck["extra"]["flags"]]
        apply_saved_args(args, ck, names=ck["extra"]["flags"], label=None, only_unset=True)
        args._checkpoint = ck
    for k, v in presets["libfm" if args.data.startswith("libfm") else "synthetic"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args._presets = list(presets["synthetic"])  # the flags that define the model: saved with it
    args._demo = parser.description
    return args


def hidden_widths(spec: str) -> tuple[int, ...]:
    """'400,400,400' -> (400, 400, 400); '' -> ()."""
    out = tuple(int(h) for h in spec.split(",") if h.strip())
    if any(h < 1 for h in out):
        raise ValueError(f"layer widths must be >= 1, got {spec!r}")
    return out


def prepare(args) -> tuple[FieldCTR, dict, torch.device]:
    """Threads, seed and device; the data split; logistic regression on the same fields and split."""
    cpu_setup(args.threads)
    set_seed(args.seed)
    device = pick_device(args.device)
    demo = getattr(args, "_demo", "field-CTR demo")
    ctr = build_field_ctr(Datasets.load(args.data, verbose=True, expect="ctr", demo=f"the {demo}"),
                          holdout=args.holdout, seed=args.seed)
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
    print(f"user {ctr.raw_id('user', user)}: clicked in training ({len(clicked)}):")
    for i in clicked[-5:].tolist():
        print("   ", ctr.describe_item(i))
    print("context:", context_text(ctr, sparse_row))
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


def check_requests(args, ctr: FieldCTR) -> tuple[int, str] | None:
    """Before any training: the --save file may be written, the --recommend user exists and has a
    row, the --load file fits this data, --export-onnx has its packages. Returns the recommend
    user's (row index into the split, split name) or None."""
    check_save_path(args.save, args.overwrite)
    ck = getattr(args, "_checkpoint", None)
    saved = ck["extra"] if ck is not None else None
    if ck is not None and (list(saved["field_dims"]) != list(ctr.field_dims)
                           or saved["dense_dim"] != ctr.dense_dim):
        raise Datasets.DataError(
            f"--load {args.load}: the model was trained on {ck['args']['data']} (field sizes "
            f"{list(saved['field_dims'])} + {saved['dense_dim']} dense); --data {args.data} gives "
            f"{list(ctr.field_dims)} + {ctr.dense_dim} dense; expected the data it was trained on")
    if getattr(args, "export_onnx", None):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ValueError(f"--export-onnx needs the packages onnx and onnxruntime ({e}); "
                             "install them: pip install onnx onnxruntime onnxscript") from None
    if args.recommend is None:
        return None
    if "user" not in ctr.field_names:
        raise Datasets.DataError(f"--recommend: this data has no field named 'user' (fields: "
                                 f"{', '.join(ctr.field_names)}); expected data with a user field")
    code = ctr.code_of("user", args.recommend)
    if code is None:
        raw = ctr.raw_ids.get("user")
        example = (", ".join(raw[1:4]) if raw is not None
                   else f"a user code 1..{ctr.field_dims[ctr.field_names.index('user')] - 1}")
        raise Datasets.DataError(f"--recommend {args.recommend}: no such user in {args.data}; "
                                 f"expected a raw user id as in the data file (e.g. {example})")
    col = ctr.field_names.index("user")
    for name in ("test", "valid", "train"):  # the latest context the data has for that user
        rows = torch.nonzero(getattr(ctr, name).tensors["sparse"][:, col] == code).flatten()
        if len(rows):
            return int(rows[-1]), name
    raise Datasets.DataError(f"--recommend {args.recommend}: the user has no impression in "
                             f"{args.data}; expected a user with at least one row")


def context_text(ctr: FieldCTR, sparse_row: torch.Tensor) -> dict:
    """The fields of a row that do not depend on the candidate item, with raw ids where known."""
    return {n: (ctr.describe_item(v) if n.endswith("item") else ctr.raw_id(n, v)
                if n in ctr.raw_ids else v)
            for k, (n, v) in enumerate(zip(ctr.field_names, sparse_row.tolist()))
            if k not in ctr.item_columns and n != "user"}


def recommend(model: torch.nn.Module, ctr: FieldCTR, raw_user: str, row: int, split: str, device,
              k: int = 10) -> list[tuple[str, float]]:
    """Print the user's top k of ALL items, each scored in the user's latest context (one forward
    pass per item); returns [(raw item id, click probability)]."""
    ds = getattr(ctr, split)
    sparse_row = ds.tensors["sparse"][row]
    dense_row = ds.tensors["dense"][row] if ctr.dense_dim else None
    items = torch.arange(1, ctr.field_dims[ctr.item_field])
    sparse_c, dense_c = ctr.candidate_rows(sparse_row, items, dense_row)
    model.eval()
    with torch.no_grad():
        dense_c = None if dense_c is None else dense_c.to(device)
        probs = torch.sigmoid(model(sparse_c.to(device), dense_c)).cpu()  # (n_items,)
    top = torch.topk(probs, min(k, len(items)))
    user_col = ctr.field_names.index("user")
    train_sparse, train_label = ctr.train.tensors["sparse"], ctr.train.tensors["label"]
    clicked = set(train_sparse[(train_sparse[:, user_col] == sparse_row[user_col])
                               & (train_label > 0), ctr.item_field].tolist())
    item_name = ctr.field_names[ctr.item_field]
    print(f"--recommend {raw_user}: all {len(items):,} items ranked by predicted click probability "
          f"in the user's latest context (their last {split} row: "
          f"{context_text(ctr, sparse_row)}); "
          "* = clicked by this user in training")
    out = []
    for r, (pr, i) in enumerate(zip(top.values.tolist(), items[top.indices].tolist()), 1):
        raw, text = ctr.raw_id(item_name, i), ctr.describe_item(i)
        label = text if raw.startswith("#") or raw in text else f"{raw}  {text}"
        print(f"  {r:2d}. {pr:.3f}  {label}{'  *' if i in clicked else ''}")
        out.append((raw, pr))
    return out


def export_onnx(model: torch.nn.Module, ctr: FieldCTR, path: str, rows: int = 4096,
                dynamo: bool = True) -> float:
    """Export `model` (on CPU, eval mode) to ONNX at `path` with a dynamic batch size, inputs
    `sparse` (B, F) int64 [+ `dense` (B, Fd) float32], output `logit` (B,). The file is written
    whole or not at all. Runs onnxruntime on up to `rows` test rows and returns the max abs
    difference from PyTorch's logits.

    `dynamo=True`: torch's default exporter (torch.export; needs the package onnxscript, ~10 s);
    False: the older TorchScript tracer (under a second, deprecated by torch, used by the fast
    tests). The exported graph does not check id ranges (a graph cannot raise): give it valid
    ids."""
    import onnxruntime as ort

    m = copy.deepcopy(model).cpu().eval()
    sparse = ctr.test.tensors["sparse"][:rows]
    dense = ctr.test.tensors["dense"][:rows] if ctr.dense_dim else None
    inputs = (sparse, dense) if ctr.dense_dim else (sparse,)
    names = ["sparse", "dense"][:len(inputs)]
    batch = torch.export.Dim("batch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    try:
        onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed" and the exporter's steps
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if dynamo:
                torch.onnx.export(m, inputs, str(tmp), input_names=names, output_names=["logit"],
                                  dynamic_shapes=tuple({0: batch} for _ in inputs), dynamo=True,
                                  verbose=False, external_data=False)
            else:
                torch.onnx.export(m, inputs, str(tmp), input_names=names, output_names=["logit"],
                                  dynamic_axes={n: {0: "batch"} for n in [*names, "logit"]},
                                  dynamo=False)
        onnx_log.setLevel(level)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0]
        with torch.no_grad():
            want = m(*inputs).numpy()
        diff = float(np.abs(got - want).max())
        os.replace(tmp, path)
    finally:
        onnx_log.setLevel(level)
        tmp.unlink(missing_ok=True)
    print(f"wrote {path}: ONNX, inputs {', '.join(names)}, output logit (B,); onnxruntime vs "
          f"PyTorch on {len(sparse):,} test rows: max |logit difference| = {diff:.2e}")
    return diff


def save_model(path: str, model: torch.nn.Module, ctr: FieldCTR, args, *, metrics: dict,
               valid_auc: float, epochs: int) -> None:
    """Weights + config + the flags that define the model + raw id maps (Utils.demo_io's format:
    atomic; an existing file only with --overwrite). Plain types only (weights_only loading)."""
    write_checkpoint(
        path, demo=args._demo.removesuffix(" demo"), models={"model": (model, dataclasses.asdict(model.config))},
        args={"data": args.data, "seed": args.seed, "holdout": args.holdout,
              **{k: getattr(args, k) for k in args._presets}},
        ids=ctr.raw_ids, overwrite=args.overwrite, flags=list(args._presets),
        field_names=list(ctr.field_names), field_dims=list(ctr.field_dims),
        dense_dim=ctr.dense_dim, metrics=dict(metrics), valid_auc=float(valid_auc),
        epochs=int(epochs),
    )
    print(f"saved {path}: weights, config, flags and raw id maps; --load {path} skips training")


def train_and_report(name: str, model: torch.nn.Module, ctr: FieldCTR, lr_res: dict, args,
                     device, *, desc: str | None = None) -> dict:
    """Train (early stopping on validation AUC, one lr/10 phase) or, with --load, restore the saved
    weights; test, show one context, --recommend, --export-onnx, --save, and print the RESULT
    line (the last line printed) and return it. Every request is checked before training."""
    wanted = check_requests(args, ctr)
    ck = getattr(args, "_checkpoint", None)
    t0 = time.perf_counter()
    if ck is not None:
        load_weights(model, ck["models"]["model"]["state"], args.load,
                     what="the saved weights do not fit this model")
        model.to(device)
        print(f"loaded {args.load} ({args._demo}, trained on {ck['args']['data']}, seed "
              f"{ck['args']['seed']}, {ck['extra']['epochs']} epochs): training skipped")
        epochs, valid_auc = ck["extra"]["epochs"], ck["extra"]["valid_auc"]
    else:
        phases = train_ctr_model(model, ctr.train, ctr.valid, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, device=device,
                                 embedding_l2=args.embedding_l2, lr_decay=not args.no_lr_decay,
                                 schedule=args.lr_schedule or "restart",
                                 grad_clip=args.grad_clip, seed=args.seed, desc=desc or name)
        epochs = sum(len(h.epochs) for h in phases)
        valid_auc = max(h.best_metric for h in phases)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = ctr_metrics(model, ctr.test, device)
    eval_seconds = time.perf_counter() - t1
    print(f"{name}, test:", {k: round(v, 4) for k, v in metrics.items()})
    if ck is not None and ck["args"]["data"] == args.data and ck["args"]["seed"] == args.seed:
        same = all(metrics[k] == ck["extra"]["metrics"].get(k) for k in metrics)
        print(f"test metrics {'equal' if same else 'DIFFER from'} those of the saving run")
    by_pair = auc_by_seen_pair(model, ctr, device)
    if by_pair is not None:
        print(f"{name}, test AUC by (user, item) pair: " + "  ".join(
            f"{k}: {'-' if v['AUC'] is None else round(v['AUC'], 4)} ({v['positives']:,} positives)"
            for k, v in by_pair.items()))
    show_context(model, ctr, device)
    extra = {"loaded_from": args.load} if args.load else {}
    if wanted is not None:
        recommend(model, ctr, args.recommend, *wanted, device)
    if getattr(args, "export_onnx", None):
        extra["onnx_max_abs_diff"] = f"{export_onnx(model, ctr, args.export_onnx):.2e}"
    if args.save:
        save_model(args.save, model, ctr, args, metrics=metrics, valid_auc=valid_auc,
                   epochs=epochs)
    return print_result(
        model=name, data=args.data, protocol=ctr.protocol, metrics=metrics,
        baseline={"name": "logistic regression", "metrics": lr_res["metrics"]},
        train_seconds=train_seconds, eval_seconds=eval_seconds,
        epochs=epochs, params=count_params(model), out=args.out,
        config={k: v for k, v in vars(args).items() if k != "out" and not k.startswith("_")},
        valid_auc=valid_auc, auc_by_seen_pair=by_pair, **extra,
    )
