"""A small training loop: progress bar, early stopping on a validation metric, best-state restore,
seeding, device auto-selection, and a clear error when the loss becomes NaN/inf."""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def pick_device(arg: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu. A named device that is unavailable is an error."""
    if arg in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(arg)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {arg}: CUDA is not available on this machine (use cpu or auto)")
    return dev


def cpu_setup(threads: int | None = None) -> None:
    """Flush denormals (tiny floats in embeddings/optimiser state slow CPUs a lot) and optionally
    cap intra-op threads (env NUM_THREADS also works)."""
    torch.set_flush_denormal(True)
    threads = threads or (int(os.environ["NUM_THREADS"]) if os.environ.get("NUM_THREADS") else None)
    if threads:
        torch.set_num_threads(threads)


class AdagradMomentum(torch.optim.Optimizer):
    """Adagrad with heavy-ball momentum and sparse rows, as the official GRU4Rec PyTorch code's
    `IndexedAdagradM` (gru4rec_pytorch.py lines 11-75): acc += g²; m = momentum·m - lr·g / sqrt(acc + eps)
    (eps under the root); p += m. A sparse gradient touches only its rows: their accumulator,
    momentum and weights change, every other row stays as it is (momentum included). momentum=0 is
    Adagrad with eps under the root (torch.optim.Adagrad adds eps after the root)."""

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6):
        if not lr > 0 or not momentum >= 0 or not eps > 0:
            raise ValueError(f"expected lr > 0, momentum >= 0, eps > 0; got {lr}, {momentum}, {eps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["acc"] = torch.zeros_like(p)
                    if mu > 0:
                        state["mom"] = torch.zeros_like(p)
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    acc = state["acc"][rows] + values.pow(2)
                    state["acc"].index_copy_(0, rows, acc)
                    step = -lr * values / (acc + eps).sqrt()
                    if mu > 0:
                        step = state["mom"][rows].mul_(mu).add_(step)
                        state["mom"].index_copy_(0, rows, step)
                    p.index_add_(0, rows, step)
                else:
                    state["acc"].add_(grad.pow(2))
                    step = -lr * grad / (state["acc"] + eps).sqrt()
                    if mu > 0:
                        step = state["mom"].mul_(mu).add_(step)
                    p.add_(step)
        return loss


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "loss", "train_seconds", metrics...}
    best_epoch: int = -1
    best_metric: float = -math.inf
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    stopped_early: bool = False
    train_cpu_seconds: float = 0.0  # CPU seconds of this process in the training steps (no validation)

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        pts = [(e["epoch"], e[key]) for e in self.epochs if key in e]
        return [p[0] for p in pts], [p[1] for p in pts]


def fit(
    model: torch.nn.Module,
    train_step: Callable[[dict], torch.Tensor],
    batches: Callable[[int], Iterable[dict]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    evaluate: Callable[[], dict] | None = None,
    metric: str = "NDCG@10",
    higher_is_better: bool = True,
    patience: int = 3,
    eval_every: int = 1,
    grad_clip: float | None = None,
    n_batches: Callable[[], int] | int | None = None,
    progress: bool = True,
    desc: str = "train",
    time_budget: float | None = None,
    after_backward: Callable[[], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    resume: dict | None = None,
) -> History:
    """Train `model` for up to `epochs` epochs.

    train_step(batch) -> scalar loss (the forward pass); the loop does zero_grad/backward/step.
    batches(epoch) -> an iterable of batches for that epoch.
    evaluate() -> validation metric dict, called every `eval_every` epochs; the best state by `metric`
    is kept and restored at the end; training stops after `patience` evaluations without improvement.
    time_budget: stop after this many training seconds (checked per epoch).
    after_backward() runs between backward and the optimiser step (data-parallel training sums the
    gradients across processes there: Utils.distributed).
    Raises FloatingPointError naming the epoch and step when the loss is NaN or inf.

    Resuming: on_epoch_end(snapshot) is called after every epoch with everything the loop needs to go
    on (model and optimiser state, history, best state, evaluations without improvement, the global
    torch RNGs, CPU and CUDA, that dropout and negative sampling draw from, whether it stopped); it must use the
    snapshot at once (write it), as the tensors are live. fit(..., resume=snapshot) with a fresh model
    and optimiser continues from the next epoch and ends as the uninterrupted run would have, provided
    batches(epoch) is restored too (a seeded generator's state is the caller's to keep). A run that
    stopped on its time budget goes on when resumed with a larger one (or none); one that stopped
    early on validation stays stopped.
    """
    hist = History()
    best_state = None
    bad_evals = 0
    first, stopped = 1, False
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        hist = History(**resume["history"])
        best_state, bad_evals = resume["best_state"], resume["bad_evals"]
        torch.set_rng_state(resume["torch_rng"])
        if resume.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["cuda_rng"])  # dropout on the GPU draws from these
        first, stopped = resume["epoch"] + 1, resume["stopped"]
        if stopped and not hist.stopped_early and (time_budget is None
                                                   or hist.train_seconds < time_budget):
            stopped = False  # it stopped on its time budget, and this run gives it more

    sign = 1.0 if higher_is_better else -1.0
    for epoch in range(first, epochs + 1):
        if stopped:
            break
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        total, steps = 0.0, 0
        it = batches(epoch)
        nb = n_batches() if callable(n_batches) else n_batches
        bar = tqdm(it, total=nb, desc=f"{desc} {epoch}/{epochs}", leave=False, disable=not progress,
                   mininterval=1.0) if tqdm else it
        for batch in bar:
            loss = train_step(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch}, step {steps + 1}: lower the learning "
                    f"rate, check the inputs for NaN, or clip gradients (grad_clip)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            total += loss.item()
            steps += 1
            if tqdm and progress and steps % 20 == 0:
                bar.set_postfix(loss=f"{total / steps:.4f}")
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        hist.train_seconds += dt
        hist.train_cpu_seconds += dc
        rec = {"epoch": epoch, "loss": total / max(steps, 1), "train_seconds": dt, "train_cpu_seconds": dc}
        if evaluate is not None and (epoch % eval_every == 0 or epoch == epochs):
            model.eval()
            t1 = time.perf_counter()
            metrics = evaluate()
            hist.eval_seconds += time.perf_counter() - t1
            rec.update(metrics)
            if metric not in metrics:
                raise KeyError(f"evaluate() returned {list(metrics)}, which lacks the metric {metric!r}")
            value = metrics[metric]
            if best_state is None or sign * value > sign * hist.best_metric:
                hist.best_metric, hist.best_epoch = value, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                bad_evals = 0
            else:
                bad_evals += 1
        hist.epochs.append(rec)
        if progress:
            shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in rec.items()
                     if k in ("loss", metric)}
            print(f"epoch {epoch}: {shown} ({dt:.1f}s)", flush=True)
        if evaluate is not None and bad_evals >= patience:
            hist.stopped_early = stopped = True
        elif time_budget is not None and hist.train_seconds >= time_budget:
            stopped = True
        if on_epoch_end is not None:
            on_epoch_end({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "history": asdict(hist), "best_state": best_state,
                          "bad_evals": bad_evals, "torch_rng": torch.get_rng_state(),
                          "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                          "stopped": stopped})
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist
