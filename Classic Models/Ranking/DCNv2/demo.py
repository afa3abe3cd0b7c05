# %% [markdown]
# # DCN-V2 demo — cross network (explicit crosses of bounded degree) + deep network, against
# logistic regression
#
# CPU, synthetic default (10 s of CPU time; 81 s wall on a shared 2-core machine at load ~12):
#
#     python "Classic Models/Ranking/DCNv2/demo.py"
#
# Frappe (the shared copy has no train file: train on the validation file minus a 10% held-out slice
# for early stopping, test on the test file;
# 27 s CPU, 1.7 min wall with 1 thread on that loaded machine):
#
#     python "Classic Models/Ranking/DCNv2/demo.py" --data libfm:../shared/data/frappe/ \
#         --threads 1 --out assets/DCNv2/results/frappe.json
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


dcnv2 = load_model_file(HERE / "model.py", "dcnv2_model")

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset follows the
# reczoo BARS Frappe settings where they fit (embedding 10, Adam 1e-3, learning rate / 10 on
# plateau) with the paper's parallel structure and a 400-400-400 deep network with batch norm.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, embed_dim=16, hidden="128,64", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0, structure="parallel", cross_layers=2,
                      cross_rank=0, experts=1),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, embed_dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05, structure="parallel",
                  cross_layers=3, cross_rank=0, experts=1),
}
# %%
parser = field_ctr_parser("DCNv2 demo")
parser.add_argument("--structure", default=None, choices=["stacked", "parallel", "cross_only"])
parser.add_argument("--cross-layers", type=int, default=None)
parser.add_argument("--cross-rank", type=int, default=None, help="0 = full-rank W_l (Eq. (1))")
parser.add_argument("--experts", type=int, default=None, help="> 1: mixture of low-rank experts")
args = parse_with_presets(parser, PRESETS)

# %% [markdown]
# ## Data: one row per impression — sparse fields (B, F) int64, dense fields (B, Fd) float, a click;
# the ranking stage's baseline, logistic regression, on the same fields and split

# %%
ctr, lr_res, device = prepare(args)

# %% [markdown]
# ## The model: DCNv2

# %%
config = dcnv2.DCNv2Config(
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, embed_dim=args.embed_dim,
    hidden=hidden_widths(args.hidden), dropout=args.dropout,
    batch_norm=args.batch_norm, structure=args.structure, num_cross_layers=args.cross_layers,
    cross_rank=args.cross_rank or None, num_experts=args.experts,
)
model = dcnv2.DCNv2(config).to(device)
print(config)

# %% [markdown]
# ## Train (log loss, Adam, early stopping on validation AUC, one lr/10 phase), test, show
# the top items for one test context, print the RESULT line (the last line printed)

# %%
train_and_report("DCN-V2", model, ctr, lr_res, args, device, desc="DCNv2")
