# %% [markdown]
# # FinalMLP demo — two MLP streams, each behind its own feature gate, fused by multi-head bilinear
# fusion, against logistic regression
#
# CPU, synthetic default (about 16 s of CPU time with 1 thread; 40-80 s wall on a busy 2-core CPU):
#
#     python "Classic Models/Ranking/FinalMLP/demo.py"
#
# Frappe (the shared copy has no train file: train on the validation file minus a 10% held-out slice
# for early stopping, test on the test file; 32-42 s of CPU time with 1 thread), with the note's
# figure (each stream's gate per field, averaged over the test rows):
#
#     python "Classic Models/Ranking/FinalMLP/demo.py" --data libfm:../shared/data/frappe/ \
#         --threads 1 --out assets/FinalMLP/results/frappe.json \
#         --plot-gates assets/FinalMLP/gate_weights.png
#
# Save the trained model and rank every item for one raw user id in their latest context;
# later, --load skips training (flags come from the file; identical test metrics):
#
#     python "Classic Models/Ranking/FinalMLP/demo.py" --save finalmlp.pt --recommend U00001
#     python "Classic Models/Ranking/FinalMLP/demo.py" --load finalmlp.pt --recommend U00002
#
# `--no-gates` drops the feature gates (the paper's DualMLP: two plain MLPs, bilinear fusion).
# Flags left unset take the preset of the data source (PRESETS below). Every flag: `--help`.
# The last line printed is `RESULT {json}`; with `--plot-gates` the figure's lines follow it.

# %%
import argparse

import Datasets
from Utils.io import load_model_file, model_dir, positive_float, positive_int
from Utils.loops.field_ctr_demo import (
    field_ctr_parser,
    hidden_widths,
    parse_with_presets,
    prepare,
    train_and_report,
    widths,
)
from Utils.plotting import plot_heatmap

finalmlp = load_model_file(model_dir("Ranking", "FinalMLP") / "model.py", "finalmlp_model")

# Per data source: the synthetic preset is sized to run in seconds; the libfm preset is reczoo BARS'
# Frappe configuration of FinalMLP (FinalMLP_frappe_x1: embedding 10, stream MLPs 400 and 100 with
# batch norm and dropout 0.4, gates with one hidden layer of 400 conditioned on the user (stream 1)
# and the item (stream 2), 5 fusion heads, embedding L2 0.05, Adam 1e-3, learning rate / 10 on
# plateau) with the batch of our other Frappe runs, 1024, for our 3.9x smaller train set.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, dim=16, hidden="128", hidden2="64",
                      dropout=0.1, batch_norm=False, embedding_l2=0.0, gate_hidden="64",
                      gate1_context="user", gate2_context="item", heads=4, gates=True,
                      embed_init_std=1e-2),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, dim=10, hidden="400", hidden2="100",
                  dropout=0.4, batch_norm=True, embedding_l2=0.05, gate_hidden="400",
                  gate1_context="user", gate2_context="item", heads=5, gates=True,
                  embed_init_std=1e-2),
}

# %%
parser = field_ctr_parser("FinalMLP demo", hidden_help="stream 1 MLP widths, e.g. 400")
parser.add_argument("--hidden2", type=widths, default=None, help="stream 2 MLP widths, e.g. 100")
parser.add_argument("--gate-hidden", type=widths, default=None,
                    help="hidden widths of each feature gate's MLP, e.g. 400")
parser.add_argument("--gate1-context", default=None, metavar="FIELDS",
                    help="comma-separated field names conditioning stream 1's gate ('' = one "
                         "learned vector: a global gate)")
parser.add_argument("--gate2-context", default=None, metavar="FIELDS",
                    help="the same for stream 2's gate")
parser.add_argument("--heads", type=positive_int, default=None,
                    help="fusion heads k; must divide both streams' last widths")
parser.add_argument("--gates", action=argparse.BooleanOptionalAction, default=None,
                    help="--no-gates: both streams read the plain embedding (DualMLP)")
parser.add_argument("--embed-init-std", type=positive_float, default=None,
                    help="standard deviation of the initial embeddings (the official code: 1e-4)")
parser.add_argument("--plot-gates", default=None, metavar="PATH",
                    help="after training, save each stream's mean gate per field as a heatmap "
                         "(.png)")
args = parse_with_presets(parser, PRESETS)

# %% [markdown]
# ## Data: one row per impression — sparse fields (B, F) int64, dense fields (B, Fd) float, a click;
# the ranking stage's baseline, logistic regression, on the same fields and split

# %%
ctr, lr_res, device = prepare(args)


def context_fields(spec: str, flag: str) -> tuple[int, ...]:
    """'user,item' -> the indices of those fields in this data; '' -> () (a global gate)."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    missing = [n for n in names if n not in ctr.field_names]
    if missing:
        raise Datasets.DataError(f"{flag} {spec}: no field {', '.join(missing)} in {args.data}; "
                                 f"expected names from {', '.join(ctr.field_names)} (or '')")
    return tuple(ctr.field_names.index(n) for n in names)


# %% [markdown]
# ## The model: FinalMLP

# %%
config = finalmlp.FinalMLPConfig(
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, dim=args.dim,
    hidden1=hidden_widths(args.hidden), hidden2=hidden_widths(args.hidden2), dropout=args.dropout,
    batch_norm=args.batch_norm, use_gates=args.gates, gate_hidden=hidden_widths(args.gate_hidden),
    gate1_fields=context_fields(args.gate1_context, "--gate1-context"),
    gate2_fields=context_fields(args.gate2_context, "--gate2-context"), num_heads=args.heads,
    embed_init_std=args.embed_init_std,
)
model = finalmlp.FinalMLP(config).to(device)
print(config)

# %% [markdown]
# ## Train (log loss, Adam, early stopping on validation AUC, one lr/10 phase), test, show
# the top items for one test context, print the RESULT line

# %%
train_and_report("FinalMLP" if args.gates else "DualMLP", model, ctr, lr_res, args, device,
                 desc="FinalMLP")

# %% [markdown]
# ## What the gates learned (`--plot-gates PATH`)
# Each stream multiplies the embedding by 2 * sigmoid(Gate(x)): 1 keeps a field as it is, above 1
# amplifies it, below 1 damps it. Averaged over the D coordinates of each field and over the test
# rows, the two rows of the heatmap show which fields each stream reads louder or softer; the
# spread over the test rows says how much the gate changes with its context (user or item).

# %%
if args.plot_gates:
    import torch

    model.eval()
    g1, g2 = [], []
    for b in ctr.test.batches(8192, shuffle=False):
        dense = b["dense"].to(device) if "dense" in b else None
        a1, a2 = model.gate_weights(b["sparse"].to(device), dense)  # (B, N) each
        g1.append(a1.cpu())
        g2.append(a2.cpu())
    g = torch.stack([torch.cat(g1), torch.cat(g2)])  # (2, rows, N)
    names = list(ctr.field_names) + [f"dense_{j}" for j in range(ctr.dense_dim)]
    ctx = [args.gate1_context or "global", args.gate2_context or "global"]
    print("mean gate per field over the test rows (sd over rows), 1 = unchanged:")
    for s in range(2):
        cells = "  ".join(f"{n} {g[s, :, f].mean():.2f} ({g[s, :, f].std():.3f})"
                          for f, n in enumerate(names))
        print(f"   stream {s + 1} (gate on {ctx[s]}): {cells}")
    plot_heatmap(g.mean(1).numpy(), args.plot_gates, xlabels=names,
                 ylabels=[f"stream {s + 1}: gate on {ctx[s]}" for s in range(2)], annotate=True,
                 title="FinalMLP: mean gate 2·sigmoid(g) per field, test rows", cmap="coolwarm",
                 colorbar_label="mean gate")
    print("wrote", args.plot_gates)
