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
# The first cross layer's weights as a field-by-field heatmap (synthetic default, same run):
#
#     python "Classic Models/Ranking/DCNv2/demo.py" --threads 1 \
#         --plot-cross-weights assets/DCNv2/cross_weights.png
#
# Save the trained model and rank every item for one raw user id in their latest context;
# later, --load skips training (flags come from the file; identical test metrics):
#
#     python "Classic Models/Ranking/DCNv2/demo.py" --save dcnv2.pt --recommend U00001
#     python "Classic Models/Ranking/DCNv2/demo.py" --load dcnv2.pt --recommend U00002
#
# Flags left unset take the preset of the data source (PRESETS below). Every flag: `--help`.
# The last line printed is `RESULT {json}`.

# %%

from Utils.io import load_model_file, model_dir, positive_int
from Utils.loops.field_ctr_demo import (
    field_ctr_parser,
    hidden_widths,
    non_negative_int,
    parse_with_presets,
    prepare,
    train_and_report,
)
from Utils.plotting import plot_heatmap

dcnv2 = load_model_file(model_dir("Ranking", "DCNv2") / "model.py", "dcnv2_model")

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset follows the
# reczoo BARS Frappe settings where they fit (embedding 10, Adam 1e-3, learning rate / 10 on
# plateau) with the paper's parallel structure and a 400-400-400 deep network with batch norm.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, dim=16, hidden="128,64", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0, structure="parallel", cross_layers=2,
                      cross_rank=0, experts=1),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05, structure="parallel",
                  cross_layers=3, cross_rank=0, experts=1),
}
# %%
parser = field_ctr_parser("DCNv2 demo")
parser.add_argument("--structure", default=None, choices=["stacked", "parallel", "cross_only"])
parser.add_argument("--cross-layers", type=positive_int, default=None)
parser.add_argument("--cross-rank", type=non_negative_int, default=None,
                    help="0 = full-rank W_l (Eq. (1))")
parser.add_argument("--experts", type=positive_int, default=None,
                    help="> 1: mixture of low-rank experts")
parser.add_argument("--plot-cross-weights", default=None, metavar="PATH",
                    help="write the first cross layer's mean |W| per field pair as a PNG heatmap")
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
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, dim=args.dim,
    hidden=hidden_widths(args.hidden), dropout=args.dropout,
    batch_norm=args.batch_norm, structure=args.structure, num_cross_layers=args.cross_layers,
    cross_rank=args.cross_rank or None, num_experts=args.experts,
)
model = dcnv2.DCNv2(config).to(device)
print(config)
init_level = float(model.cross_weight_blocks(0).mean())  # mean |W| per block before training

# %% [markdown]
# ## Train (log loss, Adam, early stopping on validation AUC, one lr/10 phase), test, show
# the top items for one test context, print the RESULT line (the last line printed)

# %%
train_and_report("DCN-V2", model, ctr, lr_res, args, device, desc="DCNv2")

# %% [markdown]
# ## What the cross network learned (`--plot-cross-weights PATH`)
# In the first cross layer W_0[i, j] weights the product x_0[i] * x_0[j], so the mean |W_0| over
# the block (field a, field b) says how strongly the layer crosses field a with field b. On the
# synthetic data the planted crosses are known (`Datasets.synthetic.click_logit`): user x category
# (interest), user x item price tier (brand, price bucket, item), item x last item (successor),
# category x the recent categories.

# %%
if args.plot_cross_weights:
    blocks = model.cross_weight_blocks(0).cpu()  # (F + Fd, F + Fd)
    names = list(ctr.field_names) + [f"dense_{j}" for j in range(ctr.dense_dim)]
    sym = (blocks + blocks.T) / 2  # W[a, b] and W[b, a] both weight the a x b crosses
    pairs = sorted(((float(sym[a, b]), f"{names[a]} x {names[b]}")
                    for a in range(len(names)) for b in range(a)), reverse=True)
    print(f"first cross layer, mean |W| per field block: {init_level:.3f} at initialisation; "
          "strongest field pairs after training:")
    for w, pair in pairs[:8]:
        print(f"   {w:.3f}  {pair}")
    print(f"   median of all {len(pairs)} pairs: {pairs[len(pairs) // 2][0]:.3f}")
    plot_heatmap(blocks.numpy(), args.plot_cross_weights, xlabels=names, ylabels=names,
                 xlabel="field b: x_0[j], column j of W_0",
                 ylabel="field a: x_0[i], row i of W_0", annotate=True,
                 title="DCN-V2, first cross layer: mean |W_0| per field pair",
                 colorbar_label="mean |W_0| over the block")
    print("wrote", args.plot_cross_weights)
