# %% [markdown]
# # DeepFM demo — FM + DNN on one shared embedding, against logistic regression
#
# CPU, synthetic default (8 s of CPU time; 70 s wall on a shared 2-core machine at load ~12):
#
#     python "Classic Models/Ranking/DeepFM/demo.py"
#
# Frappe (the shared copy has no train file: train on the validation file minus a 10% held-out slice
# for early stopping, test on the test file;
# 30 s CPU, 3.5 min wall with 1 thread on that loaded machine):
#
#     python "Classic Models/Ranking/DeepFM/demo.py" --data libfm:../shared/data/frappe/ \
#         --threads 1 --out assets/DeepFM/results/frappe.json
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


deepfm = load_model_file(HERE / "model.py", "deepfm_model")

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset follows the
# reczoo BARS Frappe settings (embedding 10, 400-400-400 with batch norm, dropout 0.2, embedding L2
# 0.05, Adam 1e-3, learning rate / 10 on plateau) with a smaller batch for our 3.5x smaller train
# set.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, embed_dim=16, hidden="128,64", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, embed_dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05),
}

# %%
parser = field_ctr_parser("DeepFM demo")
args = parse_with_presets(parser, PRESETS)

# %% [markdown]
# ## Data: one row per impression — sparse fields (B, F) int64, dense fields (B, Fd) float, a click;
# the ranking stage's baseline, logistic regression, on the same fields and split

# %%
ctr, lr_res, device = prepare(args)

# %% [markdown]
# ## The model: DeepFM

# %%
config = deepfm.DeepFMConfig(
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, embed_dim=args.embed_dim,
    hidden=hidden_widths(args.hidden), dropout=args.dropout,
    batch_norm=args.batch_norm,
)
model = deepfm.DeepFM(config).to(device)
print(config)

# %% [markdown]
# ## Train (log loss, Adam, early stopping on validation AUC, one lr/10 phase), test, show
# the top items for one test context, print the RESULT line (the last line printed)

# %%
train_and_report("DeepFM", model, ctr, lr_res, args, device)
