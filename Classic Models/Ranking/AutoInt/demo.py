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
# The attention weights between fields, per layer and head (synthetic default, same run):
#
#     python "Classic Models/Ranking/AutoInt/demo.py" --threads 1 \
#         --plot-attention assets/AutoInt/field_attention.png
#
# Save the trained model and rank every item for one raw user id in their latest context;
# later, --load skips training (flags come from the file; identical test metrics):
#
#     python "Classic Models/Ranking/AutoInt/demo.py" --save autoint.pt --recommend U00001
#     python "Classic Models/Ranking/AutoInt/demo.py" --load autoint.pt --recommend U00002
#
# Flags left unset take the preset of the data source (PRESETS below). Every flag: `--help`.
# The last line printed is `RESULT {json}`.

# %%

import torch

from Utils.io import load_model_file, model_dir, positive_int
from Utils.loops.field_ctr_demo import (
    field_ctr_parser,
    hidden_widths,
    parse_with_presets,
    prepare,
    train_and_report,
)
from Utils.plotting import plt  # matplotlib with the Agg backend (no screen needed)

autoint = load_model_file(model_dir("Ranking", "AutoInt") / "model.py", "autoint_model")

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset is AutoInt+
# with the paper's interacting layers (3 layers, 2 heads, d' = 32, residual) and the reczoo BARS
# Frappe settings for the rest (embedding 10, 400-400-400 DNN with batch norm, embedding L2, Adam
# 1e-3, learning rate / 10 on plateau). `--hidden ''` gives plain AutoInt.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, dim=16, hidden="", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0, layers=2, heads=2, att_dim=16),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05, layers=3, heads=2, att_dim=32),
}
# %%
parser = field_ctr_parser("AutoInt demo",
                          hidden_help="DNN widths ('' = plain AutoInt)")
parser.add_argument("--layers", type=positive_int, default=None, help="interacting layers")
parser.add_argument("--heads", type=positive_int, default=None)
parser.add_argument("--att-dim", type=positive_int, default=None, help="d' per head")
parser.add_argument("--plot-attention", default=None, metavar="PATH",
                    help="write the mean attention between fields of each layer and head as a PNG")
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
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, dim=args.dim,
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

# %% [markdown]
# ## Which fields attend to which (`--plot-attention PATH`)
# The attention weights alpha of Eq. (5), averaged over the test rows, one fields x fields map per
# interacting layer and head: row m is where field m takes its values from (each row sums to 1).
# On the synthetic data the planted crosses are known (`Datasets.synthetic.click_logit`): user x
# category, user x price tier (brand, price bucket, item), item x last item, category x the recent
# categories.

# %%
if args.plot_attention:
    names = list(ctr.field_names) + [f"dense_{j}" for j in range(ctr.dense_dim)]
    total, n = None, 0
    for b in ctr.test.batches(4096, shuffle=False):
        dense_b = b["dense"].to(device) if "dense" in b else None
        maps = model.attention_maps(b["sparse"].to(device), dense_b)  # layers x (b, Hh, M, M)
        s = torch.stack([a.sum(0) for a in maps]).cpu()  # (layers, Hh, M, M)
        total, n = (s if total is None else total + s), n + len(b["sparse"])
    mean = (total / n).numpy()  # (layers, Hh, M, M), each row sums to 1
    L, H, M = mean.shape[0], mean.shape[1], mean.shape[2]
    for layer in range(L):
        for head in range(H):
            a = mean[layer, head].copy()
            a[range(M), range(M)] = 0  # strongest pairs between two different fields
            top = sorted(((a[i, j], names[i], names[j]) for i in range(M) for j in range(M)),
                         reverse=True)[:3]
            print(f"layer {layer + 1} head {head + 1}: uniform = {1 / M:.3f}; strongest "
                  + ", ".join(f"{q} -> {k} {w:.3f}" for w, q, k in top))
    fig, axes = plt.subplots(L, H, figsize=(3.6 * H + 1.6, 3.4 * L + 0.8), dpi=120, squeeze=False,
                             constrained_layout=True)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            im = ax.imshow(mean[layer, head], cmap="viridis", vmin=0, vmax=float(mean.max()))
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(range(M), names if layer == L - 1 else [""] * M, rotation=60,
                          ha="right", fontsize=7)
            ax.set_yticks(range(M), names if head == 0 else [""] * M, fontsize=7)
            if layer == L - 1:
                ax.set_xlabel("attended field k", fontsize=8)
            if head == 0:
                ax.set_ylabel("field m (query)", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.7, label="mean attention weight alpha_m,k")
    fig.suptitle(f"{MODEL_NAME}: attention between fields, mean over {n:,} test rows", fontsize=10)
    fig.savefig(args.plot_attention, bbox_inches="tight")
    plt.close(fig)
    print("wrote", args.plot_attention)
