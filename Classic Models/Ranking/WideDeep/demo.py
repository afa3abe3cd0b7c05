# %% [markdown]
# # Wide & Deep demo — memorisation (wide, cross products) + generalisation (deep), against
# logistic regression
#
# CPU, synthetic default (11 s of CPU time; 85 s wall on a shared 2-core machine at load ~12):
#
#     python "Classic Models/Ranking/WideDeep/demo.py"
#
# Frappe (the shared copy has no train file: train on the validation file minus a 10% held-out slice
# for early stopping, test on the test file;
# 37 s CPU, 2.7 min wall with 1 thread on that loaded machine):
#
#     python "Classic Models/Ranking/WideDeep/demo.py" --data libfm:../shared/data/frappe/ \
#         --threads 1 --out assets/WideDeep/results/frappe.json
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


widedeep = load_model_file(HERE / "model.py", "widedeep_model")

# Per data source: the synthetic preset is sized to run in seconds and crosses the fields whose
# interactions the generator planted (user x category, last item x item); the libfm preset follows
# the reczoo BARS Frappe settings (embedding 10, 400-400-400 with batch norm, embedding L2, Adam
# 1e-3, learning rate / 10 on plateau) and adds the paper's memorising cross product user x item.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, embed_dim=16, hidden="128,64", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0, cross="user*category,last_item*item"),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, embed_dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05, cross="user*item"),
}
# %%
parser = field_ctr_parser("WideDeep demo")
parser.add_argument("--cross", default=None,
                    help="wide-part cross products, e.g. user*item,user*city ('' = none)")
args = parse_with_presets(parser, PRESETS)

# %% [markdown]
# ## Data: one row per impression — sparse fields (B, F) int64, dense fields (B, Fd) float, a click;
# the ranking stage's baseline, logistic regression, on the same fields and split

# %%
ctr, lr_res, device = prepare(args)

# %% [markdown]
# ## The model: WideDeep

# %%
crosses = tuple(tuple(ctr.field_names.index(f) for f in c.split("*"))
                for c in args.cross.split(",") if c)
config = widedeep.WideDeepConfig(
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, embed_dim=args.embed_dim,
    hidden=hidden_widths(args.hidden), dropout=args.dropout,
    batch_norm=args.batch_norm, cross_fields=crosses,
)
model = widedeep.WideDeep(config).to(device)
print(config)

# %% [markdown]
# ## Train (log loss, Adam, early stopping on validation AUC, one lr/10 phase), test, show
# the top items for one test context, print the RESULT line (the last line printed)

# %%
train_and_report("Wide&Deep", model, ctr, lr_res, args, device, desc="WideDeep")
