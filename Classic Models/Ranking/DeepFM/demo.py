# %% [markdown]
# # DeepFM demo — FM + DNN on one shared embedding, against logistic regression
#
# CPU, synthetic default (about 30 s wall, 12 s of CPU time, 1 thread on a 2-core machine):
#
#     python "Classic Models/Ranking/DeepFM/demo.py"
#
# Frappe (the shared copy has no train file: train on the validation file minus a 10% held-out slice
# for early stopping, test on the test file; 27 s of CPU time, 27 s wall with 1 thread):
#
#     python "Classic Models/Ranking/DeepFM/demo.py" --data libfm:../shared/data/frappe/ \
#         --threads 1 --out assets/DeepFM/results/frappe.json
#
# Save the trained model and rank every item for one raw user id in their latest context;
# later, --load skips training (flags come from the file; identical test metrics) and
# --export-onnx writes an ONNX graph checked against PyTorch with onnxruntime:
#
#     python "Classic Models/Ranking/DeepFM/demo.py" --save deepfm.pt --recommend U00001
#     python "Classic Models/Ranking/DeepFM/demo.py" --load deepfm.pt --recommend U00002 \
#         --export-onnx deepfm.onnx
#
# Flags left unset take the preset of the data source (PRESETS below). Every flag: `--help`.
# The last line printed is `RESULT {json}`; with `--plot-internals` the figure's lines follow it.
#
# The note's figure (synthetic default, trained as above, then the plot):
#
#     python "Classic Models/Ranking/DeepFM/demo.py" --threads 1 \
#         --plot-internals assets/DeepFM/fm_pair_strengths.png

# %%
from pathlib import Path

from Utils.io import load_model_file, model_dir
from Utils.loops.field_ctr_demo import (
    field_ctr_parser,
    hidden_widths,
    parse_with_presets,
    prepare,
    train_and_report,
)

deepfm = load_model_file(model_dir("Ranking", "DeepFM") / "model.py", "deepfm_model")

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset follows the
# reczoo BARS Frappe settings (embedding 10, 400-400-400 with batch norm, dropout 0.2, embedding L2
# 0.05, Adam 1e-3, learning rate / 10 on plateau) with a smaller batch for our 3.5x smaller train
# set.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, dim=16, hidden="128,64", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05),
}

# %%
parser = field_ctr_parser("DeepFM demo", onnx=True)
parser.add_argument("--plot-internals", default=None, metavar="PATH",
                    help="after training, save a heatmap of the FM's pair strengths to PATH (.png)")
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
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, dim=args.dim,
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

# %% [markdown]
# ## What the FM part learned (`--plot-internals PATH`): for every field pair (i, j), the mean
# of |<e_i, e_j>| over the test rows — the size of that pair's term in Eq. (2). On the synthetic
# data the clicks come from a few planted field pairs (`Datasets.synthetic.click_logit`), boxed
# in the heatmap: user x category (interest), user x brand / price bucket (price tier), category x
# last / previous category (same category as the recent behaviour), item x last item (successor).

# %%
PLANTED = [("user", "category"), ("user", "brand"), ("user", "price_bucket"),
           ("category", "last_category"), ("category", "prev_category"), ("item", "last_item")]

if args.plot_internals:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    names = ctr.field_names + (["popularity"] if ctr.dense_dim == 1 else
                               [f"dense_{k}" for k in range(ctr.dense_dim)])
    model.eval()
    with torch.no_grad():
        sparse = ctr.test.tensors["sparse"].to(device)
        dense = ctr.test.tensors["dense"].to(device) if ctr.dense_dim else None
        e = model.embedding(sparse, dense)  # (B, N, D), the shared embedding
        strength = deepfm.fm_pair_interactions(e).abs().mean(0).cpu().numpy()  # (N, N)
    n = len(names)
    strength[range(n), range(n)] = float("nan")  # <e_i, e_i> is not a term of Eq. (2)
    mid = (np.nanmax(strength) + np.nanmin(strength)) / 2  # text colour switches here
    pairs = sorted(((strength[i, j], names[i], names[j]) for i in range(n)
                    for j in range(i + 1, n)), reverse=True)
    print("FM pair strength, mean |<e_i, e_j>| over the test rows, strongest first:")
    for v, a, b in pairs[:10]:
        star = " *planted" if (a, b) in PLANTED or (b, a) in PLANTED else ""
        print(f"   {a} x {b}: {v:.3f}{star}")
    fig, ax = plt.subplots(figsize=(7.5, 6.2), dpi=120)
    im = ax.imshow(strength, cmap="viridis")
    fig.colorbar(im, ax=ax, label="mean |<e_i, e_j>| over the test rows")
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for i in range(n):
        for j in range(n):
            if i != j:
                ax.text(j, i, f"{strength[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if strength[i, j] < mid else "black")
            planted = (names[i], names[j]) in PLANTED or (names[j], names[i]) in PLANTED
            if planted and args.data == "synthetic":
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    boxed = " (red box = planted pair)" if args.data == "synthetic" else ""
    ax.set_title(f"DeepFM: FM second-order pair strengths{boxed}", fontsize=9)
    fig.tight_layout()
    Path(args.plot_internals).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot_internals)
    print("wrote", args.plot_internals)
