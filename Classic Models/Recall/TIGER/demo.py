# %% [markdown]
# # TIGER — demo
#
# Generative retrieval end to end (Rajput et al., NeurIPS 2023): item text -> content embeddings
# (all-MiniLM-L6-v2 of the title + attribute ids, or TF-IDF + TruncatedSVD) -> RQ-VAE -> semantic
# IDs (3 codes + a de-duplicating token) -> a T5-style encoder-decoder trained to generate the next
# item's ID -> beam search constrained by a prefix trie of valid IDs -> Recall/NDCG by leave-one-out
# beside popularity.
#
# CPU command (synthetic default, small preset; about 70 s of CPU time on one thread, measured as
# 4 min wall on a shared 2-core machine loaded by ~10 other jobs):
#
#     .venv/bin/python "Classic Models/Recall/TIGER/demo.py" --threads 1
#
# Beauty (paper-size model; item titles from Beauty_item_titles.tsv; MiniLM when installed):
#
#     OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/TIGER/demo.py" \
#         --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --threads 1 \
#         --time-budget 1000 --round-steps 300 --save-every 100 --checkpoint /tmp/tiger_beauty.pt \
#         --plot /tmp/tiger_beauty.png --out /tmp/tiger_beauty.json
#
# Training stops after --epochs (3 by default), --steps or --time-budget, whichever is given. On CPU
# it runs under bf16 autocast where the CPU has bf16 matmuls (--bf16 off: fp32). The checkpoint is
# rewritten atomically at every validation and every --save-every steps; --resume continues it (step,
# optimiser, curve, best validation, semantic IDs, flags), on CPU or with --device cuda. Keep the
# model, then serve it without training (the user's generated top-10 with titles; item content
# vectors + semantic IDs):
#
#     .venv/bin/python "Classic Models/Recall/TIGER/demo.py" --threads 1 --save /tmp/tiger.pt
#     .venv/bin/python "Classic Models/Recall/TIGER/demo.py" --threads 1 --load /tmp/tiger.pt \
#         --recommend U00042 --export-vectors /tmp/tiger.npz
#
# Semantic IDs only: their quality (codebook usage, collisions, category agreement) and the note's
# code-tree figure, no seq2seq training (synthetic: about 11 s of CPU time); with --checkpoint, also
# an untrained step-0 run that --resume continues elsewhere (a GPU window: gpu_window.sh beside this):
#
#     .venv/bin/python "Classic Models/Recall/TIGER/demo.py" --threads 1 --ids-only --content tfidf \
#         --code-tree assets/TIGER/code_tree_synthetic.png

# %%
import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import Datasets
from Datasets import DataError
from Datasets.item_text import SOURCES, default_source, item_categories, item_embeddings
from Utils.demo_io import (
    check_ids,
    check_save_path,
    load_weights,
    read_checkpoint,
    user_row,
    write_checkpoint,
)
from Utils.evaluation import Timer, csr_mask, popularity_metrics
from Utils.io import (
    add_common_args,
    fail,
    load_model_file,
    model_dir,
    positive_float,
    positive_int,
    print_result,
)
from Utils.loops.recall_io import add_recall_io_args
from Utils.metrics import ranking_metrics
from Utils.plotting import plot_curves
from Utils.training import count_params, cpu_setup, fit, pick_device, set_seed

HERE = model_dir("Recall", "TIGER")
rq = load_model_file(HERE / "rqvae.py", "tiger_rqvae")
tg = load_model_file(HERE / "model.py", "tiger_model")

# %%
# --epochs: 3 by default; with --steps or --time-budget (and no --epochs) those decide when to stop
parser = add_common_args(argparse.ArgumentParser(description="TIGER demo"), epochs=None, lr=1e-3,
                         batch_size=256)
parser.add_argument("--preset", default="auto", choices=["auto", "paper", "small"],
                    help="model sizes: paper (4+4 layers, 6x64 heads, d 128, MLP 1024, 3x256 codes) "
                         "or small (CPU demo); auto = small on synthetic, paper otherwise")
parser.add_argument("--content", "--embedding", dest="content", default="auto",
                    choices=["auto", *SOURCES],
                    help="item content embedding: minilm (all-MiniLM-L6-v2 of the title + attribute "
                         "ids), tfidf (TF-IDF+SVD of title words + attribute ids), tfidf-keywords (the "
                         "earlier Beauty input: keyword pieces + attribute ids); auto = minilm when "
                         "installed and the items have titles, else tfidf (and on synthetic data, "
                         "whose made-up titles a sentence encoder reads poorly: see the lab log)")
parser.add_argument("--embed-dim", type=positive_int, default=256, help="TF-IDF SVD dimensions")
parser.add_argument("--rq-steps", type=positive_int, default=None, help="RQ-VAE steps (preset default)")
parser.add_argument("--rq-optimizer", default="adam", choices=["adam", "adagrad"],
                    help="paper: Adagrad at 0.4 (it diverged here on TF-IDF inputs, see the note)")
parser.add_argument("--rq-lr", type=positive_float, default=1e-3)
parser.add_argument("--rq-batch", type=positive_int, default=1024, help="paper: 1024")
parser.add_argument("--dead-code-every", type=int, default=100,
                    help="restart unused codes every N RQ-VAE steps (0 = off, k-means init only)")
parser.add_argument("--max-history", type=positive_int, default=20, help="paper: 20 items")
parser.add_argument("--steps", type=positive_int, default=None, help="seq2seq steps (None: until budget)")
parser.add_argument("--round-steps", type=positive_int, default=None, help="steps between validations")
parser.add_argument("--warmup", type=positive_int, default=10000,
                    help="constant lr for this many steps, then inverse-sqrt decay (paper: 10k)")
parser.add_argument("--ramp", type=int, default=0,
                    help="linear lr ramp from 0 over the first N steps (0 = none, as the paper)")
parser.add_argument("--beam", type=positive_int, default=20, help="beam width (>= the largest K)")
parser.add_argument("--eval-users", type=positive_int, default=1000, help="validation users per check")
parser.add_argument("--test-users", type=positive_int, default=None,
                    help="test a sample of this many users (default: all)")
parser.add_argument("--time-budget", type=positive_float, default=None, help="seq2seq training seconds")
parser.add_argument("--checkpoint", default=None,
                    help="save the run here at every validation (and its best state to *.best.pt); "
                         "--resume continues it, --load PATH.best.pt serves it")
parser.add_argument("--resume", action="store_true")
parser.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                    help="train under bf16 autocast (evaluation stays fp32); auto = on where the "
                         "device has bf16 matmuls (AMX / AVX-512 BF16 CPUs, recent GPUs)")
parser.add_argument("--save-every", type=positive_int, default=None,
                    help="with --checkpoint: also save it every N training steps (it is always saved "
                         "at every validation); each save replaces the file atomically")
parser.add_argument("--compact-checkpoint", action="store_true",
                    help="store the optimiser moments in bf16 (resume casts them back to fp32): the "
                         "paper preset's checkpoint shrinks from 56 to 38 MiB, for short GPU windows")
parser.add_argument("--plot", default=None, help="save the learning curve (PNG) here")
parser.add_argument("--code-tree", default=None,
                    help="draw the semantic-ID code tree (a few first codes, the items under them)")
parser.add_argument("--ids-only", action="store_true",
                    help="stop after the semantic IDs (and the --code-tree figure): no seq2seq")
add_recall_io_args(parser)  # --save --load --overwrite --recommend --export-vectors
args = parser.parse_args()
for flag in ("ramp", "dead_code_every"):
    if getattr(args, flag) < 0:
        fail(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected 0 (off) or a whole number >= 1")
if args.epochs is None and args.steps is None and args.time_budget is None:
    args.epochs = 3  # synthetic default: 3 epochs (3 rounds of 90 steps)
if args.load and args.resume:
    fail("--load serves a saved model and --resume continues training one; expected only one of them")
if args.export_vectors and not args.export_vectors.endswith(".npz"):
    fail(f"--export-vectors {args.export_vectors}: expected a file name ending in .npz")
check_save_path(args.save, args.overwrite)

cpu_setup(args.threads)
set_seed(args.seed)
device = pick_device(args.device)
ckpt = Path(args.checkpoint) if args.checkpoint else None
if args.resume and (ckpt is None or not ckpt.is_file()):
    fail(f"--resume needs an existing --checkpoint file, got {args.checkpoint!r}")
loaded = read_checkpoint(args.load, demo="TIGER") if args.load else None
saved = loaded if loaded is not None else (
    read_checkpoint(str(ckpt), demo="TIGER", flag="--resume") if args.resume else None)
if saved is not None:  # --load / --resume: the saved run's model sizes and inputs
    args.content = saved["args"].get("content", saved["args"].get("embedding"))
    # --resume continues the same run: its batches (size, seeded order) and learning-rate schedule
    keys = ("preset", "embed_dim", "max_history") + (
        ("batch_size", "lr", "warmup", "ramp", "seed") if args.resume else ())
    for key in keys:
        setattr(args, key, saved["args"][key])
preset = args.preset if args.preset != "auto" else (
    "small" if args.data.startswith("synthetic") else "paper")
if preset == "paper":
    RQ = dict(hidden_dims=(512, 256, 128), latent_dim=32, n_levels=3, codebook_size=256)
    SEQ = dict(d_model=128, n_heads=6, d_head=64, d_ff=1024, n_encoder_layers=4,
               n_decoder_layers=4, dropout=0.1)
    rq_steps, round_steps = args.rq_steps or 1000, args.round_steps or 100
else:  # a CPU-sized model for the synthetic demo: same architecture, smaller numbers
    RQ = dict(hidden_dims=(128, 64), latent_dim=16, n_levels=3, codebook_size=32)
    SEQ = dict(d_model=64, n_heads=4, d_head=16, d_ff=128, n_encoder_layers=2,
               n_decoder_layers=2, dropout=0.1)
    rq_steps, round_steps = args.rq_steps or 150, args.round_steps or 90
    args.embed_dim = min(args.embed_dim, 64)
KS = (5, 10)

# %% [markdown]
# ## Data and item content embeddings

# %%
t_start = time.perf_counter()
data = Datasets.load(args.data, verbose=True, expect="interactions", demo="the TIGER demo")
if saved is not None:
    check_ids(saved, args.load or args.checkpoint, data_name=data.name, item=data.item_raw,
              user=data.user_raw)
if args.content == "auto":  # the synthetic titles are made-up names: TF-IDF reads their tokens best
    args.content = "tfidf" if args.data.startswith("synthetic") else default_source(data)
    print(f"content embedding: {args.content} (auto: minilm when installed and the items have "
          "titles, tfidf on the synthetic data)")
split = Datasets.leave_one_out(data)
print(split)
show_row = user_row(split, data, args.recommend) if args.recommend else None  # before training


def content_embeddings() -> tuple[np.ndarray, dict]:
    """(N + 1, E) item content embeddings; TIGER needs item text, so ids alone are a DataError."""
    try:
        return item_embeddings(data, source=args.content, dim=args.embed_dim, seed=args.seed)
    except DataError as e:
        raise DataError(f"TIGER builds its semantic IDs from item text and {e}; with ids only "
                        "use SASRec or HSTU") from None
    except ImportError as e:  # --content minilm without the optional package
        fail(f"--content minilm: {e}; or use --content tfidf")


x_np = None
if saved is not None:  # the semantic IDs come from the checkpoint: no embedding
    rq_state = saved["extra"]["rqvae_report"]
    emb_info = rq_state["embedding"]
    x_items = torch.zeros(1, emb_info["dim"], device=device)  # only its width is used below
else:
    with Timer() as t_emb:
        x_np, emb_info = content_embeddings()
    print(f"item embeddings {x_np.shape} from {emb_info} in {t_emb.seconds:.1f}s")
    x_items = torch.from_numpy(x_np[1:]).to(device)  # (N, E), row i-1 = item i

# %% [markdown]
# ## RQ-VAE: content embedding -> 3 codes (Eq. 1-6); then the de-duplicating 4th token

# %%
rq_cfg = rq.RQVAEConfig(input_dim=x_items.shape[1], **RQ)
rqvae = rq.RQVAE(rq_cfg).to(device)
if saved is not None:
    codes = torch.tensor(rq_state["codes"])
    print(f"{'loaded' if loaded is not None else 'resumed'}: semantic IDs from the checkpoint")
else:
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(args.seed)
    opt_cls = torch.optim.Adam if args.rq_optimizer == "adam" else torch.optim.Adagrad
    opt_rq = opt_cls(rqvae.parameters(), lr=args.rq_lr)
    n = x_items.shape[0]
    bs = min(args.rq_batch, n)
    usage = torch.zeros(rq_cfg.n_levels, rq_cfg.codebook_size, dtype=torch.long, device=device)
    restarts, rq_curve = 0, []
    with Timer() as t_rq:
        bar = tqdm(range(1, rq_steps + 1), desc="RQ-VAE", mininterval=1.0)
        for step in bar:
            batch = x_items[torch.randperm(n, generator=g)[:bs].to(device)]
            if step == 1:
                rqvae.init_codebooks(batch, generator=g)  # the paper's k-means initialisation
            out = rqvae(batch)
            opt_rq.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt_rq.step()
            usage += rqvae.code_usage(out["codes"])
            if args.dead_code_every and step % args.dead_code_every == 0:
                if step <= 0.75 * rq_steps:  # leave the codebooks alone at the end
                    restarts += rqvae.restart_dead_codes(batch, usage, generator=g)
                usage.zero_()
            if step % 50 == 0 or step == rq_steps:
                rq_curve.append({"step": step, "loss": out["loss"].item(),
                                 "recon": out["recon"].item(), "rqvae": out["rqvae"].item()})
                bar.set_postfix(recon=f"{out['recon'].item():.4f}", rq=f"{out['rqvae'].item():.4f}")
    rqvae.eval()
    codes = rqvae.encode(x_items).cpu()  # (N, M)
    with torch.no_grad():
        z = rqvae.encoder(x_items)
        _, residuals, words = rqvae.quantize(z)  # (N, M, D) each
        last = residuals[:, -1] - words[:, -1]  # what is left after the last level
        res_norm = [float(r.norm(dim=1).mean()) for r in [*residuals.unbind(1), last]]
    _, inv, cnt = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    rq_state = {
        "codes": codes.tolist(),
        "rq_steps": rq_steps, "rq_seconds": t_rq.seconds, "dead_code_restarts": restarts,
        "codebook_usage": [int(torch.unique(codes[:, d]).numel()) for d in range(rq_cfg.n_levels)],
        "codebook_size": rq_cfg.codebook_size,
        "distinct_3code_ids": int(len(cnt)),
        "items_sharing_3code_id": int((cnt[inv] > 1).sum()),
        "largest_collision_group": int(cnt.max()),
        "residual_norm_per_level": res_norm,
        "final_recon": rq_curve[-1]["recon"], "curve": rq_curve, "embedding": emb_info,
    }
table = rq.SemanticIDTable.from_codes(codes, rq_cfg.codebook_size)
sids = table.item_to_sid[1:]  # (N, 4)
inv_ok = bool((table.sid_to_item(sids) == torch.arange(1, len(sids) + 1)).all())
print(f"RQ-VAE: codebook usage per level {rq_state['codebook_usage']} of {rq_cfg.codebook_size}; "
      f"{rq_state['items_sharing_3code_id']:,} of {len(codes):,} items share their 3-code ID "
      f"with another item (largest group {rq_state['largest_collision_group']}); 4th-token range "
      f"{table.sizes[-1]}; residual norm by level {np.round(rq_state['residual_norm_per_level'], 4)}"
      f"; tables invert: {inv_ok}")


# %% [markdown]
# ## The code tree (figure): items that share a prefix of their semantic ID
#
# Each level of the RQ-VAE refines the previous one, so the ID is a path in a tree: the first code
# is a coarse group, the next codes split it. If the content embedding carries the category, the
# items under one first code should mostly share a category, and the share grows with the prefix.


# %%
def category_purity(sids: torch.Tensor, categories: list[str], length: int) -> float:
    """Share of items whose category is the most common one among the items that share the first
    `length` codes of their ID (1.0: every prefix group is one category)."""
    groups: dict[tuple, list[str]] = {}
    for sid, cat in zip(sids[:, :length].tolist(), categories):
        groups.setdefault(tuple(sid), []).append(cat)
    return sum(max(g.count(c) for c in set(g)) for g in groups.values()) / len(categories)


def plot_code_tree(sids: torch.Tensor, path: str, n_roots: int = 3, n_children: int = 2,
                   n_leaves: int = 3) -> None:
    """The `n_roots` largest first-level codes; under each its `n_children` largest second-level
    codes; under each its first `n_leaves` items with their full ID, title and category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = sids.tolist()  # row i-1 = item i
    first = torch.bincount(sids[:, 0])
    roots = torch.argsort(first, descending=True, stable=True)[:n_roots].tolist()
    fig, ax = plt.subplots(figsize=(12, 0.42 * n_roots * n_children * n_leaves + 1.2), dpi=120)
    y = 0.0
    for c0 in roots:
        under0 = [i for i, s in enumerate(codes, 1) if s[0] == c0]
        second = torch.bincount(torch.tensor([codes[i - 1][1] for i in under0]))
        children = torch.argsort(second, descending=True, stable=True)[:n_children].tolist()
        ys1 = []
        for c1 in children:
            leaves = [i for i in under0 if codes[i - 1][1] == c1]
            size = {}  # items per third code under this prefix
            for i in leaves:
                size[codes[i - 1][2]] = size.get(codes[i - 1][2], 0) + 1
            leaves.sort(key=lambda i: (-size[codes[i - 1][2]], codes[i - 1][2:]))  # shared c2 first
            ys = [y - k for k in range(min(n_leaves, len(leaves)))]
            for i, yy in zip(leaves, ys):
                ax.plot([1, 2], [np.mean(ys), yy], color="0.6", lw=0.8)
                ax.text(2.05, yy, f"{tuple(codes[i - 1])}  {data.item_text(i)}", va="center",
                        fontsize=8, family="monospace")
            more = f" (+{len(leaves) - len(ys)} more)" if len(leaves) > len(ys) else ""
            ax.text(0.95, np.mean(ys) + 0.15, f"c1={c1}: {len(leaves)} items{more}", ha="right",
                    va="bottom", fontsize=8, color="tab:orange")
            ax.plot(1, np.mean(ys), "o", color="tab:orange")
            ys1.append(np.mean(ys))
            y = ys[-1] - 1.0
        for yy in ys1:
            ax.plot([0, 1], [np.mean(ys1), yy], color="0.4", lw=1.2)
        ax.plot(0, np.mean(ys1), "o", color="tab:blue", ms=9)
        ax.text(0, np.mean(ys1) + 0.45, f"c0={c0}\n{len(under0)} items", ha="center",
                fontsize=9, color="tab:blue")
        y -= 0.8
    ax.set_xlim(-0.3, 5.6)
    ax.axis("off")
    ax.set_title(f"Semantic IDs on {data.name}: the {n_roots} largest first codes, their "
                 f"{n_children} largest second codes, and items under them (ID = c0, c1, c2, c3)",
                 fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print("code tree saved to", path)


def same_category_rate(sids: torch.Tensor, categories: list[str], length: int) -> float:
    """P(two distinct items have the same category | they share the first `length` codes), over all
    such pairs of items that have a category (length 0: any two items, the chance level)."""
    keep = np.array([bool(c) for c in categories])
    _, cat = np.unique(np.asarray(categories)[keep], return_inverse=True)
    prefix = sids[torch.from_numpy(keep), :length].numpy()
    group = (np.unique(prefix, axis=0, return_inverse=True)[1].reshape(-1) if length
             else np.zeros(len(prefix), dtype=np.int64))
    pairs = lambda counts: float((counts * (counts - 1)).sum())  # noqa: E731  ordered pairs
    same = pairs(np.unique(group * (cat.max() + 1) + cat, return_counts=True)[1])
    total = pairs(np.unique(group, return_counts=True)[1])
    return same / total if total else float("nan")


def next_item_first_code() -> dict:
    """How often a user's next training item has the same first code as the item before it, beside
    the rate two independent draws from the same marginals would give."""
    df = data.interactions  # sorted by user, then time
    pos = df.groupby("user").cumcount().to_numpy()
    n = df.groupby("user")["item"].transform("size").to_numpy()
    items = df["item"].to_numpy()
    nxt = np.nonzero((pos[1:] > 0) & (pos[1:] < n[1:] - 2))[0] + 1  # training transitions only
    a, b = sids[items[nxt - 1] - 1, 0].numpy(), sids[items[nxt] - 1, 0].numpy()
    size = rq_cfg.codebook_size
    chance = float((np.bincount(a, minlength=size) / len(a) * np.bincount(b, minlength=size)
                    / len(b)).sum())
    return {"transitions": int(len(nxt)), "same_first_code": float((a == b).mean()),
            "chance": chance}


cats, subcats = item_categories(data, 1), item_categories(data, 2)
quality = {
    "content": emb_info, "codebook_size": rq_cfg.codebook_size,
    **{k: rq_state[k] for k in ("codebook_usage", "distinct_3code_ids", "items_sharing_3code_id",
                                "largest_collision_group", "residual_norm_per_level")},
    "items": int(len(sids)), "category_labels": len(set(cats) - {""}),
    "subcategory_labels": len(set(subcats) - {""}),
    # P(same category | same first t codes), t = 0 (any two items), 1, 2, 3
    "same_category_given_prefix": [same_category_rate(sids, cats, t) for t in range(4)],
    "same_subcategory_given_prefix": [same_category_rate(sids, subcats, t) for t in range(4)],
    "category_purity_by_prefix": [category_purity(sids, cats, t) for t in range(sids.shape[1])],
    "next_item": next_item_first_code(),
}
print(f"semantic-ID quality ({args.content}): codebook usage {quality['codebook_usage']} of "
      f"{rq_cfg.codebook_size}; {quality['items_sharing_3code_id']:,} of {len(sids):,} items share "
      f"a 3-code prefix; P(same category | same first 0/1/2/3 codes) = "
      f"{[round(p, 3) for p in quality['same_category_given_prefix']]} "
      f"({quality['category_labels']} categories), of the subcategory "
      f"{[round(p, 3) for p in quality['same_subcategory_given_prefix']]} "
      f"({quality['subcategory_labels']}); next training item has the last item's first "
      f"code {quality['next_item']['same_first_code']:.3f} of the time "
      f"(chance {quality['next_item']['chance']:.3f})")
if args.code_tree:
    plot_code_tree(sids, args.code_tree)

# %% [markdown]
# ## The seq2seq model: hashed user token + history IDs -> next item's 4 tokens (Eq. 7-8)

# %%
dedup_room = max(table.sizes[-1], 8 if preset == "small" else 64)
seq_cfg = tg.TIGERConfig(code_sizes=(rq_cfg.codebook_size,) * rq_cfg.n_levels + (dedup_room,),
                         max_history=args.max_history, **SEQ)
if saved is not None:
    seq_cfg = tg.TIGERConfig(**saved["models"]["model"]["config"])
model = tg.TIGER(seq_cfg).to(device)
model.set_catalogue(sids.to(device))
if loaded is not None:
    load_weights(model, loaded["models"]["model"]["state"], args.load)
# fused AdamW: one kernel for all parameters instead of a few per tensor (CPU and CUDA)
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
if device.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
bf16_ok = (torch.cuda.is_bf16_supported() if device.type == "cuda"
           else device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())
use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and bf16_ok)
print(f"TIGER seq2seq: {count_params(model):,} parameters ({preset} preset); training in "
      f"{'bf16 autocast' if use_bf16 else 'fp32'} on {device}")

train = Datasets.RecallDataset(split, max_len=args.max_history)  # every prefix -> next item
steps_per_epoch = train.num_batches(args.batch_size, drop_last=True)
if steps_per_epoch < 1:
    fail(f"--batch-size {args.batch_size} is larger than the {len(train):,} training examples; "
         "expected a smaller batch")
print(f"{len(train):,} training examples (history <= {args.max_history} items), "
      f"{steps_per_epoch:,} steps per epoch of {args.batch_size}")
state = {"step": 0, "curve": [], "train_seconds": 0.0}
if loaded is not None:
    state = loaded["extra"]["state"]
if args.resume:  # the --checkpoint file (read above as `saved`): weights, optimiser, step
    load_weights(model, saved["models"]["model"]["state"], ckpt)
    optimizer.load_state_dict(saved["extra"]["optimizer"])
    state = saved["extra"]["state"]
    print(f"resumed at step {state['step']:,} ({state['train_seconds']:.0f}s trained so far)")


def checkpoint_fields() -> dict:
    """What a --checkpoint / --save file holds (`Utils.demo_io.write_checkpoint`): the weights and
    config, semantic IDs (RQ-VAE report), raw id maps, the flags; `--load` reads it back."""
    return dict(demo="TIGER", models={"model": (model, dataclasses.asdict(seq_cfg))},
                ids={"item": data.item_raw, "user": data.user_raw}, rqvae_report=rq_state,
                args=vars(args))


if args.ids_only:  # stop after the semantic IDs; with --checkpoint, also write a step-0 run to --resume
    if ckpt is not None and not args.resume:
        write_checkpoint(ckpt, overwrite=args.overwrite, state=state,
                         optimizer=optimizer.state_dict(), **checkpoint_fields())
        print(f"step-0 checkpoint (semantic IDs + untrained model) written to {ckpt}; continue it "
              "with --checkpoint PATH --resume (no sentence encoder needed there)")
    print_result(model=f"TIGER semantic IDs ({preset})", data=args.data,
                 protocol="semantic IDs only (RQ-VAE), no seq2seq training: quality in semantic_ids",
                 metrics={}, baseline=None, train_seconds=rq_state["rq_seconds"], eval_seconds=0.0,
                 epochs=0, params=count_params(rqvae), semantic_ids=quality,
                 wall_seconds=time.perf_counter() - t_start, config=vars(args), out=args.out)
    raise SystemExit(0)


def lr_at(step: int) -> float:
    """Constant for `warmup` steps, then inverse-sqrt decay (the paper's schedule, scaled); with
    --ramp, a linear ramp from 0 over the first `ramp` steps."""
    ramp = min(1.0, step / args.ramp) if args.ramp else 1.0
    return args.lr * ramp * min(1.0, (args.warmup / max(step, 1)) ** 0.5)


hist_len = (train.tensors["history"] != 0).sum(1)  # (S,) items of history per example
if device.type == "cuda":  # the whole training set fits on the GPU: batches are gathered there
    train.tensors = {k: v.to(device) for k, v in train.tensors.items()}


def trim(history: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns all rows share (histories are left-padded)."""
    return history[:, -max(int((history != 0).sum(1).max()), 1):]


def epoch_batches(epoch: int) -> list[torch.Tensor]:
    """One epoch's batches of example indices, seeded by the epoch number (so a resumed run sees
    the same data order). Examples of similar history length share a batch, and the batch order is
    shuffled: most Beauty prefixes are short, so trimming padding saves most of the encoder's work."""
    g = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
    noise = torch.rand(len(train), generator=g)
    order = torch.argsort(hist_len.double() + noise.double())  # by length, random within a length
    chunks = list(order[: steps_per_epoch * args.batch_size].view(steps_per_epoch, -1))
    return [chunks[i] for i in torch.randperm(len(chunks), generator=g).tolist()]


def stream(start_step: int, n_steps: int):
    """Batches for steps start_step+1 .. start_step+n_steps (epochs follow each other)."""
    s = start_step
    while s < start_step + n_steps:
        epoch, offset = divmod(s, steps_per_epoch)
        for idx in epoch_batches(epoch)[offset:]:
            if s >= start_step + n_steps:
                return
            yield train[idx]
            s += 1


def trained_seconds() -> float:
    """Training seconds of the whole run (earlier invocations included), validations excluded."""
    return trained_before + (time.perf_counter() - clock["fit_start"]) - clock["eval"]


def save_run(path: Path, with_optimizer: bool = True) -> None:
    """The run as it stands (weights, optimiser, step, curve, best, semantic IDs), written to a
    temporary file and renamed: an interrupted save leaves the previous file whole."""
    opt = {}
    if with_optimizer:
        opt_state = optimizer.state_dict()
        if args.compact_checkpoint:  # Optimizer.load_state_dict casts them back to the param dtype
            opt_state["state"] = {i: {k: (v.bfloat16() if k != "step" else v) for k, v in st.items()}
                                  for i, st in opt_state["state"].items()}
        opt = {"optimizer": opt_state}
    write_checkpoint(path, overwrite=True, state={**state, "train_seconds": trained_seconds()},
                     **opt, **checkpoint_fields())


def train_step(batch):
    if (ckpt is not None and args.save_every and state["step"] % args.save_every == 0
            and state["step"] > state["saved_step"]):  # the model holds state["step"] steps here
        state["saved_step"] = state["step"]
        save_run(ckpt)
    state["step"] += 1
    for group in optimizer.param_groups:
        group["lr"] = lr_at(state["step"])
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss = model.loss(user=batch["user"].to(device), history=trim(batch["history"]).to(device),
                          target=batch["target"].to(device))
    window["loss"] += loss.detach()  # no device sync: read once per validation
    window["steps"] += 1
    return loss


# %% [markdown]
# ## Evaluation: constrained beam search -> top-K distinct real items -> Recall / NDCG

# %%
def generative_ranks(stage: str, rows: np.ndarray, beam: int, constrained: bool = True,
                     batch_size: int = 256) -> tuple[np.ndarray, float]:
    """Rank of each user's target in the beam's item list (seen items removed, as every model
    here); n_items + 1 when absent. Also returns the share of valid IDs among all beams."""
    hist, _ = split.history(stage, args.max_history)
    targets = split.targets(stage)
    offsets, seen = split.seen(stage)
    rows = rows[np.argsort((hist[rows] != 0).sum(1), kind="stable")]  # similar lengths together
    ranks, valid = [], []
    model.eval()
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        items, _, _ = model.generate(user=torch.from_numpy(split.users[r]).to(device),
                                     history=trim(torch.from_numpy(hist[r])).to(device),
                                     beam=beam, constrained=constrained)
        items = items.cpu()  # (b, K)
        valid.append(items > 0)
        # seen items of these users as a (b, N+1) mask, read at the listed items
        seen_mask = csr_mask(offsets, seen, r, split.n_items + 1).gather(1, items)
        keep = (items > 0) & ~seen_mask
        pos = keep.cumsum(1)  # rank among kept items
        hit = keep & (items == torch.from_numpy(targets[r])[:, None])
        ranks.append(torch.where(hit.any(1), (pos * hit).amax(1), split.n_items + 1))
    return torch.cat(ranks).double().numpy(), float(torch.cat(valid).float().mean())


def at_k(metrics: dict) -> dict:
    """Recall@K / NDCG@K only: an MRR over a beam's short list is not comparable to a full one."""
    return {k: v for k, v in metrics.items() if "@" in k}


rng = np.random.default_rng(args.seed)
valid_rows = np.sort(rng.choice(split.n_users, min(args.eval_users, split.n_users), replace=False))
trained_before = state["train_seconds"]
clock = {"fit_start": time.perf_counter(), "eval": 0.0}
window = {"loss": 0.0, "steps": 0}  # training loss since the last validation
state.setdefault("best", None)  # the best validation of the whole run, across --resume
state.setdefault("saved_step", state["step"])
best_path = ckpt.with_suffix(".best.pt") if ckpt is not None else None


def evaluate():
    t0 = time.perf_counter()
    trained = trained_seconds()
    ranks, _ = generative_ranks("valid", valid_rows, args.beam)
    metrics = at_k(ranking_metrics(ranks, KS))
    point = {"step": state["step"], "train_seconds": trained,
             **{k: metrics[k] for k in ("Recall@10", "NDCG@10")}}
    if window["steps"]:
        point["loss"] = float(window["loss"]) / window["steps"]  # mean training loss of the round
    window.update(loss=0.0, steps=0)
    state["curve"].append(point)
    print(f"step {state['step']:,} ({trained:.0f}s trained): validation ({len(valid_rows)} users) "
          + json.dumps({k: round(v, 4) for k, v in metrics.items()}), flush=True)
    if state["best"] is None or metrics["NDCG@10"] > state["best"]["NDCG@10"]:
        state["best"] = dict(point)  # model selection: validation NDCG@10, as fit() does
        if best_path is not None:
            save_run(best_path, with_optimizer=False)  # for --load / the test: weights suffice
    if ckpt is not None:
        state["saved_step"] = state["step"]
        save_run(ckpt)
    clock["eval"] += time.perf_counter() - t0
    return metrics


# fit() runs "epochs" of up to `round_steps` steps each, ending on multiples of round_steps (so a
# resumed run validates at the same steps); the step counter lives in `state`.
def train_rounds() -> None:
    end = None  # with only a time budget: rounds until it is spent
    if args.steps is not None:
        end = args.steps
    elif args.epochs:  # the whole number of rounds closest to the epochs (at least one)
        end = max(1, round(args.epochs * steps_per_epoch / round_steps)) * round_steps
    if end is not None and end <= state["step"]:
        fail(f"the run is already at step {state['step']:,}; expected --steps or --epochs beyond it")
    max_rounds = 9999 if end is None else -(-end // round_steps) - state["step"] // round_steps

    def round_batches(_):
        stop = (state["step"] // round_steps + 1) * round_steps
        return stream(state["step"], (stop if end is None else min(stop, end)) - state["step"])

    history = fit(
        model, train_step, round_batches, optimizer, max_rounds, evaluate, metric="NDCG@10",
        patience=10**9, n_batches=round_steps, desc="TIGER", time_budget=args.time_budget,
        grad_clip=1.0,
    )
    state["train_seconds"] = trained_before + history.train_seconds
    # fit() restored the best state of this invocation; the run's best may be older (--resume)
    points = state["curve"][len(state["curve"]) - len(history.epochs):]
    state["tested_step"] = max(points, key=lambda p: p["NDCG@10"])["step"] if points else state["step"]
    if best_path is not None and best_path.is_file():
        best = read_checkpoint(best_path, demo="TIGER", flag="--checkpoint")
        load_weights(model, best["models"]["model"]["state"], best_path)
        state["tested_step"] = state["best"]["step"]
    print(f"trained to step {state['step']:,} ({state['step'] / steps_per_epoch:.2f} epochs) in "
          f"{state['train_seconds']:.0f}s; best validation at step {state['best']['step']:,} "
          f"(NDCG@10 {state['best']['NDCG@10']:.4f}, Recall@10 {state['best']['Recall@10']:.4f})")


if loaded is None:
    train_rounds()
else:  # --load: the saved weights, no training
    print(f"loaded {args.load}: trained to step {state['step']:,} by the run that saved it; "
          "no training here")

# %% [markdown]
# ## Test: full catalogue via constrained beam search, beside popularity (same split)

# %%
test_rows = np.arange(split.n_users)
if args.test_users:
    test_rows = np.sort(rng.choice(split.n_users, min(args.test_users, split.n_users),
                                   replace=False))
with Timer() as t_eval:
    test_ranks, _ = generative_ranks("test", test_rows, args.beam)
test_metrics = at_k(ranking_metrics(test_ranks, KS))
free_rows = test_rows[: min(len(test_rows), 1000)]
_, valid_share = generative_ranks("test", free_rows, 10, constrained=False)
pop = at_k(popularity_metrics(split, "test", ks=KS))
print(f"test ({len(test_rows):,} users, beam {args.beam}, {t_eval.seconds:.0f}s):",
      {k: round(v, 4) for k, v in test_metrics.items()})
print("popularity:", {k: round(v, 4) for k, v in pop.items()})
print(f"without the trie, {valid_share:.1%} of the top-10 generated IDs name a real item "
      f"({len(free_rows):,} users)")

# %% [markdown]
# ## One user: history and top-10 generated items, with their semantic IDs
# (`--recommend USER` picks the user by the raw id of the data file)

# %%
row = show_row if show_row is not None else int(test_rows[0])
hist_items, _ = split.history("test", args.max_history)
beam = max(args.beam, 10)
items, scores, gen_codes = model.generate(
    user=torch.from_numpy(split.users[row : row + 1]).to(device),
    history=trim(torch.from_numpy(hist_items[row : row + 1])).to(device), beam=beam)
print(f"user {data.user_raw[split.users[row]]}: last items of the history (semantic ID, item)")
for i in [int(x) for x in hist_items[row] if x][-6:]:
    print(f"   {tuple(table.item_to_sid[i].tolist())}  {data.item_text(i)}")
target = int(split.test_items[row])
print(f"held-out next item: {tuple(table.item_to_sid[target].tolist())}  {data.item_text(target)}")
offsets, seen = split.seen("test")
seen_items = set(seen[offsets[row] : offsets[row + 1]].tolist())  # as in the evaluation: removed
top = [(i, s) for i, s in zip(items[0].tolist(), scores[0].tolist()) if i and i not in seen_items]
print(f"top-10 generated (constrained beam search, beam {beam}, items the user has seen removed; "
      "log p(ID)):")
for r, (i, s) in enumerate(top[:10], 1):
    hit = "  <- held-out item" if i == target else ""
    print(f"  {r:2d}. {tuple(table.item_to_sid[i].tolist())} {s:7.2f}  {data.item_text(i)}{hit}")

# %%
if args.plot and state["curve"]:
    xs = [p["step"] for p in state["curve"]]
    curves = {"validation NDCG@10": (xs, [p["NDCG@10"] for p in state["curve"]]),
              "validation Recall@10": (xs, [p["Recall@10"] for p in state["curve"]])}
    if "beauty" in args.data.lower():  # the paper's Table 1 (test split) for reference
        curves["paper Recall@10 (test)"] = (xs, [0.0648] * len(xs))
        curves["paper NDCG@10 (test)"] = (xs, [0.0384] * len(xs))
    plot_curves(curves, args.plot, xlabel="training step", ylabel="metric",
                title=f"TIGER on {data.name} ({preset} preset)")
    print("curve saved to", args.plot)

# %% [markdown]
# ## Export and save: `--export-vectors` (item content vectors + semantic IDs), `--save` (`--load` serves it)

# %%
outputs = {}
if args.export_vectors:  # TIGER has no user vectors: a user is served by beam search (--recommend)
    if x_np is None:
        x_np, _ = content_embeddings()
    path = Path(args.export_vectors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, item_ids=np.asarray(data.item_raw[1:]).astype(str), item_vectors=x_np[1:],
             semantic_ids=sids.numpy(), user_ids=np.asarray(data.user_raw)[split.users].astype(str))
    os.replace(tmp, path)
    print(f"vectors written to {path}: {data.n_items:,} item content vectors (the RQ-VAE's input, "
          f"dimension {x_np.shape[1]}) with their semantic IDs; TIGER has no user vectors "
          "(it generates IDs by beam search: use --recommend)")
    outputs["export_vectors"] = str(path)
if args.save:
    write_checkpoint(args.save, overwrite=args.overwrite, state=state, **checkpoint_fields())
    print(f"saved to {args.save} (weights, config, semantic IDs, id maps); reuse with --load {args.save}")
    outputs["saved"] = str(args.save)

wall = time.perf_counter() - t_start
# the last line printed: RESULT {json} (Utils.io.print_result), read by benchmarks
print_result(
    model=f"TIGER ({preset})", data=args.data,
    protocol=(f"leave-one-out, constrained beam search (beam {args.beam}) over all "
              f"{split.n_items} items, seen items removed from the list, test split"
              + (f", {len(test_rows)} sampled users" if args.test_users else "")),
    metrics=test_metrics, baseline={"name": "popularity", "metrics": pop},
    train_seconds=0.0 if loaded is not None else state["train_seconds"], eval_seconds=t_eval.seconds,
    epochs=round(state["step"] / steps_per_epoch, 3), params=count_params(model),
    steps=state["step"], wall_seconds=wall, embedding=emb_info, best_valid=state.get("best"),
    tested_step=state.get("tested_step", state["step"]),
    device=str(device), threads=torch.get_num_threads(),
    valid_id_share_without_trie=valid_share,
    rqvae={k: v for k, v in rq_state.items() if k not in ("codes", "curve")},
    rqvae_params=count_params(rqvae), semantic_ids=quality, curve=state["curve"],
    **({"loaded_from": str(args.load)} if loaded is not None else {}), **outputs,
    config=vars(args), out=args.out,
)
