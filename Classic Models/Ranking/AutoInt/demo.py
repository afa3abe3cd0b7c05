# %% [markdown]
# # AutoInt / AutoInt+ demo — self-attention over field embeddings, against logistic regression
#
# CPU, synthetic default (16 s of CPU time; 133 s wall on a shared 2-core machine at load ~12):
#
#     python "Classic Models/Ranking/AutoInt/demo.py"
#
# Frappe (the shared copy has no train file: train on the validation file minus a 10% held-out slice
# for early stopping, test on the test file;
# 70 s CPU, 4.7 min wall with 1 thread on that loaded machine):
#
#     python "Classic Models/Ranking/AutoInt/demo.py" --data libfm:../shared/data/frappe/ \
#         --threads 1 --out assets/AutoInt/results/frappe.json
#
# Flags left unset take the preset of the data source (PRESETS below). Every flag: `--help`.
# The last line printed is `RESULT {json}`.

# %%
import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

import Datasets
from Datasets.field_ctr import build_field_ctr
from Utils.baselines import logistic_regression
from Utils.ctr_training import ctr_metrics, train_ctr_model
from Utils.io import add_common_args, print_result
from Utils.training import count_params, cpu_setup, pick_device, set_seed

HERE = Path(__file__).resolve().parent


def load_model_module():
    """model.py stands alone; load it by path (the folder name has a space)."""
    spec = importlib.util.spec_from_file_location("autoint_model", HERE / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


autoint = load_model_module()

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset is AutoInt+
# with the paper's interacting layers (3 layers, 2 heads, d' = 32, residual) and the reczoo BARS
# Frappe settings for the rest (embedding 10, 400-400-400 DNN with batch norm, embedding L2, Adam
# 1e-3, learning rate / 10 on plateau). `--dnn-hidden ''` gives plain AutoInt.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, embed_dim=16, hidden="", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0, layers=2, heads=2, att_dim=16),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, embed_dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05, layers=3, heads=2, att_dim=32),
}
# %%
parser = add_common_args(argparse.ArgumentParser(description="AutoInt demo"), epochs=None,
                         batch_size=None, lr=None)
parser.add_argument("--embed-dim", type=int, default=None)
parser.add_argument("--layers", type=int, default=None, help="interacting layers")
parser.add_argument("--heads", type=int, default=None)
parser.add_argument("--att-dim", type=int, default=None, help="d' per head")
parser.add_argument("--hidden", default=None, help="DNN widths ('' = plain AutoInt)")
parser.add_argument("--dropout", type=float, default=None)
parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
parser.add_argument("--embedding-l2", type=float, default=None,
                    help="L2 (Adam weight decay) on the embedding tables only")
parser.add_argument("--no-lr-decay", action="store_true", help="skip the lr/10 phase on plateau")
parser.add_argument("--holdout", type=float, default=0.1,
                    help="libfm without a train file: share of the validation file held out")
parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
args = parser.parse_args()
for k, v in PRESETS["libfm" if args.data.startswith("libfm") else "synthetic"].items():
    if getattr(args, k) is None:
        setattr(args, k, v)
cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)

# %% [markdown]
# ## Data: one row per impression — sparse fields (B, F) int64, dense fields (B, Fd) float, a click

# %%
ctr = build_field_ctr(Datasets.load(args.data, verbose=True), holdout=args.holdout, seed=args.seed)
print(ctr.protocol)
print("fields:", dict(zip(ctr.field_names, ctr.field_dims)), f"+ {ctr.dense_dim} dense")
for name, ds in (("train", ctr.train), ("valid", ctr.valid), ("test", ctr.test)):
    print(f"{name}: {len(ds):,} rows, positive rate {ds.tensors['label'].mean():.3f}")

# %% [markdown]
# ## Baseline of the ranking stage: logistic regression on the same fields and split

# %%
lr_res = logistic_regression(ctr.train, ctr.valid, ctr.test, field_dims=ctr.field_dims,
                             seed=args.seed)
print("logistic regression, test:", {k: round(v, 4) for k, v in lr_res["metrics"].items()})

# %% [markdown]
# ## Train AutoInt: log loss, Adam, early stopping on validation AUC

# %%
config = autoint.AutoIntConfig(
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, embed_dim=args.embed_dim,
    num_layers=args.layers, num_heads=args.heads, attention_dim=args.att_dim,
    dnn_hidden=tuple(int(h) for h in args.hidden.split(",") if h), dropout=args.dropout,
    batch_norm=args.batch_norm,
)
model = autoint.AutoInt(config).to(device)
MODEL_NAME = "AutoInt+" if config.dnn_hidden else "AutoInt"
print(config)
t0 = time.perf_counter()
phases = train_ctr_model(model, ctr.train, ctr.valid, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, device=device,
                         embedding_l2=args.embedding_l2, lr_decay=not args.no_lr_decay,
                         seed=args.seed, desc=MODEL_NAME)
train_seconds = time.perf_counter() - t0
t1 = time.perf_counter()
metrics = ctr_metrics(model, ctr.test, device)
eval_seconds = time.perf_counter() - t1
print(MODEL_NAME + ", test:", {k: round(v, 4) for k, v in metrics.items()})

# %% [markdown]
# ## Predictions for one test context: the user's recent behaviour and the top items

# %%
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

# %%
print_result(
    model=MODEL_NAME, data=args.data, protocol=ctr.protocol, metrics=metrics,
    baseline={"name": "logistic regression", "metrics": lr_res["metrics"]},
    train_seconds=train_seconds, eval_seconds=eval_seconds,
    epochs=sum(len(h.epochs) for h in phases), params=count_params(model), out=args.out,
    config={k: v for k, v in vars(args).items() if k not in ("out",)},
    valid_auc=max(h.best_metric for h in phases),
)
