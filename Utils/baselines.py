"""Baselines every demo compares with, on the same split and metrics.

- recall: **popularity** (training interaction counts; seen items excluded like every model).
- ranking: **logistic regression** on the same sparse fields (one weight per feature value + bias).
- re-ranking: the unmodified initial ranking (no code needed: evaluate the input list).

Run the popularity baseline from the command line:

    python -m Utils.baselines --data seqtxt:../shared/data/amazon-beauty/Beauty.txt
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from .evaluation import evaluate_ctr, popularity_metrics
from .io import add_common_args, print_result
from .training import pick_device, set_seed


def popularity_scores(split) -> torch.Tensor:
    """(n_items+1,) training interaction counts (padding 0)."""
    return torch.from_numpy(split.item_counts()).float()


class LogisticRegression(nn.Module):
    """sigmoid(b + sum_f w_f[x_f]) over sparse fields (+ a linear map of dense features)."""

    def __init__(self, field_dims: list[int], n_dense: int = 0):
        super().__init__()
        self.offsets = nn.Parameter(torch.tensor(np.concatenate([[0], np.cumsum(field_dims)[:-1]]),
                                                 dtype=torch.long), requires_grad=False)
        self.weight = nn.Embedding(int(sum(field_dims)), 1)
        nn.init.zeros_(self.weight.weight)
        self.dense = nn.Linear(n_dense, 1, bias=False) if n_dense else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        logit = self.weight(sparse + self.offsets).sum(dim=(1, 2)) + self.bias  # (B, F, 1) -> (B,)
        if self.dense is not None and dense is not None:
            logit = logit + self.dense(dense).squeeze(-1)
        return logit


def logistic_regression(train, valid, test, field_dims: list[int], epochs: int = 20,
                        batch_size: int = 1024, lr: float = 1e-2, weight_decay: float = 1e-6,
                        patience: int = 2, seed: int = 0, device="cpu") -> dict:
    """Train LR with Adam on CTRDataset parts; early stop on validation AUC. Returns test metrics
    (AUC, LogLoss, + GAUC when users are known) and the trained model under "model"."""
    from .training import fit

    set_seed(seed)
    n_dense = train.tensors["dense"].shape[1] if "dense" in train.tensors else 0
    model = LogisticRegression(field_dims, n_dense).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    lossf = nn.BCEWithLogitsLoss()

    def step(b):
        return lossf(model(b["sparse"].to(device), b.get("dense")), b["label"].to(device))

    def predict(ds):
        model.eval()
        with torch.no_grad():
            out = [torch.sigmoid(model(b["sparse"].to(device), b.get("dense"))).cpu()
                   for b in ds.batches(8192, shuffle=False)]
        return torch.cat(out).numpy()

    def evaluate():
        return evaluate_ctr(valid.tensors["label"].numpy(), predict(valid))

    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    fit(model, step, lambda e: train.batches(batch_size, generator=g), opt, epochs, evaluate,
        metric="AUC", patience=patience, progress=False)
    secs = time.perf_counter() - t0
    users = test.tensors["user"].numpy() if "user" in test.tensors else None
    metrics = evaluate_ctr(test.tensors["label"].numpy(), predict(test), users)
    return {"metrics": metrics, "model": model, "train_seconds": secs}


def main(argv=None) -> dict:
    import Datasets

    p = add_common_args(argparse.ArgumentParser(description="popularity baseline, full ranking"),
                        epochs=0)
    p.add_argument("--keep-seen", action="store_true", help="do not exclude history items")
    args = p.parse_args(argv)
    set_seed(args.seed)
    pick_device(args.device)
    data = Datasets.load(args.data, verbose=True)
    split = Datasets.leave_one_out(data)
    print(split)
    t0 = time.perf_counter()
    valid = popularity_metrics(split, "valid", exclude_seen=not args.keep_seen)
    test = popularity_metrics(split, "test", exclude_seen=not args.keep_seen)
    secs = time.perf_counter() - t0
    counts = split.item_counts()
    top = np.argsort(-counts)[:5]
    print("most popular items:")
    for i in top:
        print(f"  {counts[i]:6d}  {data.item_text(int(i))}")
    print("validation:", {k: round(v, 4) for k, v in valid.items()})
    excl = "seen items excluded" if not args.keep_seen else "seen items kept"
    return print_result(
        model="Popularity", data=args.data,
        protocol=f"leave-one-out, full ranking over {split.n_items} items, {excl}, test split",
        metrics=test, baseline=None, train_seconds=0.0, eval_seconds=secs, epochs=0, params=0,
        out=args.out, valid_metrics=valid,
    )


if __name__ == "__main__":
    main()
