# %% [markdown]
# # Wide & Deep demo — memorisation (wide, cross products) + generalisation (deep), against
# logistic regression
#
# CPU, synthetic default (about 1 min wall, 19 s of CPU time, 1 thread on a 2-core machine):
#
#     python "Classic Models/Ranking/WideDeep/demo.py"
#
# Frappe (the shared copy has no train file: train on the validation file minus a 10% held-out slice
# for early stopping, test on the test file; 32 s of CPU time, 37 s wall with 1 thread):
#
#     python "Classic Models/Ranking/WideDeep/demo.py" --data libfm:../shared/data/frappe/ \
#         --threads 1 --out assets/WideDeep/results/frappe.json
#
# Save the trained model and rank every item for one raw user id in their latest context;
# later, --load skips training (flags come from the file; identical test metrics):
#
#     python "Classic Models/Ranking/WideDeep/demo.py" --save widedeep.pt --recommend U00001
#     python "Classic Models/Ranking/WideDeep/demo.py" --load widedeep.pt --recommend U00002
#
# Flags left unset take the preset of the data source (PRESETS below). Every flag: `--help`.
# The last line printed is `RESULT {json}`; with `--plot-internals` the figure's lines follow it.
#
# The note's figure (synthetic default, trained as above, then the plot):
#
#     python "Classic Models/Ranking/WideDeep/demo.py" --threads 1 \
#         --plot-internals assets/WideDeep/cross_weights.png

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

widedeep = load_model_file(model_dir("Ranking", "WideDeep") / "model.py", "widedeep_model")

# Per data source: the synthetic preset is sized to run in seconds and crosses the fields whose
# interactions the generator planted (user x category, last item x item); the libfm preset follows
# the reczoo BARS Frappe settings (embedding 10, 400-400-400 with batch norm, embedding L2, Adam
# 1e-3, learning rate / 10 on plateau) and adds the paper's memorising cross product user x item.
PRESETS = {
    "synthetic": dict(epochs=4, batch_size=512, lr=2e-3, dim=16, hidden="128,64", dropout=0.1,
                      batch_norm=False, embedding_l2=0.0, cross="user*category,last_item*item"),
    "libfm": dict(epochs=40, batch_size=1024, lr=1e-3, dim=10, hidden="400,400,400",
                  dropout=0.2, batch_norm=True, embedding_l2=0.05, cross="user*item"),
}
# %%
parser = field_ctr_parser("WideDeep demo")
parser.add_argument("--cross", default=None,
                    help="wide-part cross products, e.g. user*item,user*city ('' = none)")
parser.add_argument("--plot-internals", default=None, metavar="PATH",
                    help="after training, save the learned cross weights and the wide vs deep "
                         "logit of each test row to PATH (.png)")
args = parse_with_presets(parser, PRESETS)

# %% [markdown]
# ## Data: one row per impression — sparse fields (B, F) int64, dense fields (B, Fd) float, a click;
# the ranking stage's baseline, logistic regression, on the same fields and split

# %%
ctr, lr_res, device = prepare(args)

# %% [markdown]
# ## The model: WideDeep

# %%
unknown = [f for c in args.cross.split(",") if c for f in c.split("*") if f not in ctr.field_names]
if unknown:
    raise ValueError(f"--cross {args.cross}: no field named {unknown[0]!r}; expected crosses of "
                     f"field names ({', '.join(ctr.field_names)}) like a*b,a*c")
crosses = tuple(tuple(ctr.field_names.index(f) for f in c.split("*"))
                for c in args.cross.split(",") if c)
config = widedeep.WideDeepConfig(
    field_dims=tuple(ctr.field_dims), dense_dim=ctr.dense_dim, dim=args.dim,
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

# %% [markdown]
# ## What the two parts learned (`--plot-internals PATH`). On the synthetic data, whose clicks
# were planted (`Datasets.synthetic.click_logit`), two panels compare the wide part's learned
# cross weights with the truth: the user x category weight against that user's planted interest
# in the category, and the last item x item weight for pairs where the item is or is not the
# planted successor of the last item. The last panel, for any data, puts each test row's wide
# cross-product logit beside its deep logit (Eq. (4) adds them).

# %%
if args.plot_internals:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    import Datasets

    def cross_weight(k: int, columns: dict[int, np.ndarray]) -> np.ndarray:
        """Learned weight of cross k for rows whose crossed fields take the given ids."""
        n = len(next(iter(columns.values())))
        sparse = torch.zeros(n, len(ctr.field_dims), dtype=torch.long)
        for f, ids in columns.items():
            sparse[:, f] = torch.as_tensor(ids)
        with torch.no_grad():  # the other crosses are padding here, so they add 0
            w = model.wide_cross(model.cross_features(sparse.to(device)))  # (n, C, 1)
        return w[:, k, 0].cpu().numpy()

    model.eval()
    names, crosses = ctr.field_names, config.cross_fields
    panels = []
    train_sparse = ctr.train.tensors["sparse"].numpy()
    if args.data == "synthetic" and {(0, 2), (5, 1)} <= set(crosses):
        world = Datasets.load("synthetic")  # the same world prepare() built, with its truth
        truth = world.extra["truth"]
        cat_code = world.item_feature("category")  # item id -> code of the category field
        code_to_cat = {int(c): int(np.bincount(truth["item_category"][cat_code == c]).argmax())
                       for c in np.unique(cat_code[1:])}
        uc = np.unique(train_sparse[:, [0, 2]], axis=0)  # (user, category) pairs seen in training
        uc = uc[(uc > 0).all(1)]
        w_uc = cross_weight(crosses.index((0, 2)), {0: uc[:, 0], 2: uc[:, 1]})
        interest = truth["user_interests"][uc[:, 0], [code_to_cat[int(c)] for c in uc[:, 1]]]
        li = np.unique(train_sparse[:, [5, 1]], axis=0)  # (last item, item) pairs seen
        li = li[(li > 0).all(1)]
        w_li = cross_weight(crosses.index((5, 1)), {5: li[:, 0], 1: li[:, 1]})
        succ = truth["successor"][li[:, 0]] == li[:, 1]
        r = np.corrcoef(interest, w_uc)[0, 1]
        print(f"user x category: {len(uc):,} pairs seen in training; correlation of the learned "
              f"weight with the planted interest: {r:.3f}")
        print(f"last item x item: {len(li):,} pairs seen; mean weight {w_li[succ].mean():.3f} "
              f"when the item is the planted successor ({succ.sum():,} pairs), "
              f"{w_li[~succ].mean():.3f} otherwise ({(~succ).sum():,} pairs)")
        panels += ["uc", "li"]
    panels.append("rows")
    with torch.no_grad():
        sparse = ctr.test.tensors["sparse"].to(device)
        dense = ctr.test.tensors["dense"].to(device) if ctr.dense_dim else None
        wide_cross = model.wide_cross(model.cross_features(sparse)).sum(dim=(1, 2)).cpu().numpy()
        deep = model.deep(sparse, dense).cpu().numpy()
    label = ctr.test.tensors["label"].numpy() > 0
    print(f"test rows: wide cross-product logit sd {wide_cross.std():.3f}, deep logit sd "
          f"{deep.std():.3f}")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), dpi=120,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "uc":
            ax.scatter(interest, w_uc, s=3, alpha=0.3)
            ax.set_xlabel("planted interest of the user in the category")
            ax.set_ylabel("learned wide weight of the user x category cross")
            ax.set_title(f"memorised interests (r = {r:.2f})", fontsize=9)
        elif panel == "li":
            ax.boxplot([w_li[~succ], w_li[succ]], showfliers=False)
            ax.set_xticks([1, 2], ["other pairs", "item = planted\nsuccessor of last item"])
            ax.set_ylabel("learned wide weight of the last item x item cross")
            ax.set_title("memorised transitions", fontsize=9)
        else:
            for lab, colour, text in ((False, "tab:blue", "no click"), (True, "tab:red", "click")):
                ax.scatter(wide_cross[label == lab], deep[label == lab], s=3, alpha=0.3,
                           c=colour, label=text)
            ax.set_xlabel("wide part: sum of the cross-product weights of the row")
            ax.set_ylabel("deep part: w_deep^T a of the row")
            ax.set_title("test rows: the two logits Eq. (4) adds", fontsize=9)
            ax.legend(markerscale=4, fontsize=8)
    fig.tight_layout()
    Path(args.plot_internals).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot_internals)
    print("wrote", args.plot_internals)
