"""Training and prediction for feature-field CTR models (`model(sparse, dense) -> logits`,
`model.loss`).

Wraps `Utils.training.fit` with what the CTR benchmarks (e.g. reczoo BARS) do: Adam, early stopping
on validation AUC, an optional L2 penalty on the embedding tables only (as an Adam weight decay),
and a learning-rate schedule on plateau, one of two:
- "restart" (the default): when validation AUC stops improving, restart from the best state with the
  learning rate divided by 10 and train until it stops improving again;
- "plateau" (FuxiCTR's `BaseModel.fit`): divide the learning rate by 10 (not below 1e-6) after every
  evaluation without a gain and go on from the current weights; stop after `patience` such evaluations
  in a row; the best state is restored at the end.
FuxiCTR also clips the gradient norm at 10 (`grad_clip`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .evaluation import evaluate_ctr
from .training import History, fit, set_seed


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of embedding tables: nn.Embedding modules and modules named *Embedding."""
    out, seen = [], set()
    for m in model.modules():
        if isinstance(m, nn.Embedding) or type(m).__name__.endswith("Embedding"):
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def predict_ctr(model: nn.Module, ds, device, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities (N,) for a CTRDataset, in its order."""
    model.eval()
    out = []
    with torch.no_grad():
        for b in ds.batches(batch_size, shuffle=False):
            dense = b["dense"].to(device) if "dense" in b else None
            out.append(torch.sigmoid(model(b["sparse"].to(device), dense)).cpu())
    return torch.cat(out).numpy()


def ctr_metrics(model: nn.Module, ds, device) -> dict[str, float]:
    """AUC, LogLoss (+ GAUC when the dataset has users)."""
    users = ds.tensors["user"].numpy() if "user" in ds.tensors else None
    return evaluate_ctr(ds.tensors["label"].numpy(), predict_ctr(model, ds, device), users)


def train_ctr_model(model: nn.Module, train, valid, *, epochs: int, batch_size: int, lr: float,
                    device, embedding_l2: float = 0.0, weight_decay: float = 0.0,
                    lr_decay: bool = True, patience: int = 2, seed: int = 0,
                    schedule: str = "restart", grad_clip: float | None = None,
                    progress: bool = True, desc: str = "train") -> list[History]:
    """Train with Adam on `model.loss`; early stopping on validation AUC; best state restored.

    schedule: "restart" or "plateau" (module docstring); `lr_decay=False` keeps the learning rate.
    Returns the History of each phase (one, or two with the "restart" schedule)."""
    if schedule not in ("restart", "plateau"):
        raise ValueError(f"schedule={schedule!r}; expected 'restart' or 'plateau'")
    set_seed(seed)
    emb = embedding_parameters(model)
    emb_ids = {id(p) for p in emb}
    rest = [p for p in model.parameters() if id(p) not in emb_ids]
    opt = torch.optim.Adam([{"params": emb, "weight_decay": embedding_l2},
                            {"params": rest, "weight_decay": weight_decay}], lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def step(b):
        dense = b["dense"].to(device) if "dense" in b else None
        return model.loss(model(b["sparse"].to(device), dense), b["label"].to(device))

    def evaluate():
        return ctr_metrics(model, valid, device)

    def batches(_epoch):
        return train.batches(batch_size, generator=gen)

    def divide_on_plateau(snapshot):
        if snapshot["bad_evals"] > 0:  # this epoch's evaluation brought no gain
            for g in opt.param_groups:
                g["lr"] = max(g["lr"] / 10, 1e-6)

    nb = train.num_batches(batch_size)
    hist = fit(model, step, batches, opt, epochs, evaluate, metric="AUC", patience=patience,
               grad_clip=grad_clip, n_batches=nb, progress=progress, desc=desc,
               on_epoch_end=divide_on_plateau if lr_decay and schedule == "plateau" else None)
    phases = [hist]
    if schedule == "plateau":
        return phases
    left = epochs - len(hist.epochs)
    if lr_decay and left > 0:
        best_state = copy.deepcopy(model.state_dict())
        for g in opt.param_groups:
            g["lr"] = lr / 10
        phases.append(fit(model, step, batches, opt, left, evaluate, metric="AUC", patience=1,
                          grad_clip=grad_clip, n_batches=nb, progress=progress, desc=f"{desc} lr/10"))
        if phases[1].best_metric <= hist.best_metric:  # the slower phase never beat phase 1
            model.load_state_dict(best_state)
    return phases
