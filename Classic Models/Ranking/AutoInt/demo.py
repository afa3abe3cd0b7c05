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
from pathlib import Path

from Utils.field_ctr_demo import (
    field_ctr_parser,
    hidden_widths,
    parse_with_presets,
    prepare,
    train_and_report,
)
from Utils.io import load_model_file

HERE = Path(__file__).resolve().parent


autoint = load_model_file(HERE / "model.py", "autoint_model")

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset is AutoInt+
# with the paper's interacting layers (3 layers, 2 heads, d' = 32, residual) and the reczoo BARS
# Frappe settings for the rest (embedding 10, 400-400-400 DNN with batch norm, embedding L2, Adam
# 1e-3, learning rate / 10 on plateau). `--hidden ''` gives plain AutoInt.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, embed_dim=16, hidden="", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0, layers=2, heads=2, att_dim=16),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, embed_dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05, layers=3, heads=2, att_dim=32),
}
# %%
parser = field_ctr_parser("AutoInt demo",
                          hidden_help="DNN widths ('' = plain AutoInt)")
parser.add_argument("--layers", type=int, default=None, help="interacting layers")
parser.add_argument("--heads", type=int, default=None)
parser.add_argument("--att-dim", type=int, default=None, help="d' per head")
args = parse_with_presets(parser, PRESETS)

# %% [markdown]
# ## Data: one row per impression — sparse fields (B, F) int64, dense fields (B, Fd) float, a click;
# the ranking stage's baseline, logistic regression, on the same fields and split

# %%
ctr, lr_res, device = prepare(args)

# %% [markdown]
# ## The model: AutoInt

# %%
config = autoint.AutoIntConfig(
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, embed_dim=args.embed_dim,
    num_layers=args.layers, num_heads=args.heads, attention_dim=args.att_dim,
    dnn_hidden=hidden_widths(args.hidden), dropout=args.dropout,
    batch_norm=args.batch_norm,
)
model = autoint.AutoInt(config).to(device)
MODEL_NAME = "AutoInt+" if config.dnn_hidden else "AutoInt"
print(config)

# %% [markdown]
# ## Train (log loss, Adam, early stopping on validation AUC, one lr/10 phase), test, show
# the top items for one test context, print the RESULT line (the last line printed)

# %%
train_and_report(MODEL_NAME, model, ctr, lr_res, args, device)
