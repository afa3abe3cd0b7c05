"""Data-parallel training across processes with `torch.distributed`, launched by `torchrun`.

    torchrun --nproc_per_node 2 "Classic Models/Recall/SASRec/demo.py" --data ... --ddp

Every process (rank) builds the same model from the same seed and walks the same sequence of global
batches; each takes its shard of the rows of every batch (rows rank, rank + W, ...), computes its part of
the loss, and the gradients are summed across ranks before each optimiser step (gloo on CPU, nccl on GPU).
The part of rank r is its loss mean times T_r / T (T_r of the batch's T targets are on rank r), so the
summed gradient is exactly the gradient of the global batch's mean loss: the weights after each step are
those of one process training on the same global batch, up to float summation order. This is what
`DistributedDataParallel` does (bucketed all-reduce overlapped with backward); it is written out here
because the models train through `model.loss(...)`, not `forward`, and DDP only hooks `forward`.

Evaluation is sharded the same way (users rank, rank + W, ...); each rank ranks its users' targets, the
ranks are gathered back into user order, and every rank computes the metrics from the same array: they
equal a single-process evaluation of the same weights exactly.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: torch.device) -> Dist:
    """Join the process group torchrun set up (env RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): gloo on
    CPU, nccl on CUDA (one GPU per rank, LOCAL_RANK)."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"--ddp needs the environment torchrun sets ({', '.join(missing)} missing): launch "
                         f"with `torchrun --nproc_per_node N demo.py ... --ddp`")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), backend, device)


def shutdown() -> None:
    """At exit, every rank: wait until all ranks are here, then leave the group together. A rank that
    tears its gloo group down while another still holds its end can abort at interpreter exit
    ("terminate called without an active exception"), so rank 1, done after training, waits here for
    rank 0 to finish testing and writing."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def leave(d: Dist) -> None:
    """A rank other than 0, done after training: wait at rank 0's exit barrier (`shutdown`), leave the
    group, and end the process here without the interpreter's teardown. Under load, gloo's worker
    threads could still be torn down during that teardown and abort the process ("terminate called
    without an active exception", SIGABRT), which torchrun reports as a failed run. This rank has
    written nothing, so nothing is lost by skipping it."""
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def shard(batch: dict, d: Dist) -> dict:
    """This rank's rows of a global batch: rows rank, rank + W, rank + 2W, ..."""
    return {k: v[d.rank :: d.world] for k, v in batch.items()}


def sharded_step(train_step: Callable[[dict], torch.Tensor], count: Callable[[dict], int], d: Dist
                 ) -> Callable[[dict], torch.Tensor]:
    """train_step for one rank: run the model's step on this rank's shard and weight its mean loss by
    the shard's share of the batch's targets (`count(batch)`: targets in a batch), so that summing the
    gradients over ranks gives the gradient of the global batch's mean loss."""

    def step(batch: dict) -> torch.Tensor:
        mine = shard(batch, d)
        total, part = count(batch), count(mine)
        if part == 0:  # nothing to predict on this rank: no gradient (sum_gradients adds zeros)
            return torch.zeros((), requires_grad=True)
        return train_step(mine) * (part / max(total, 1))

    return step


def sum_gradients(model: torch.nn.Module, d: Dist) -> None:
    """All-reduce (sum) every gradient across ranks, flattened into one buffer (one collective per
    step instead of one per tensor)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    i = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[i : i + n].view_as(p))
        i += n


def weights_in_sync(model: torch.nn.Module, d: Dist) -> bool:
    """True when every rank holds bit-identical weights (compares a float64 fingerprint across ranks)."""
    with torch.no_grad():
        vec = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
        g = torch.Generator().manual_seed(12345)
        probe = torch.rand(vec.numel(), generator=g, dtype=torch.float64)
        fp = torch.stack([vec.sum(), (vec * probe).sum()]).to(d.device)
    lo, hi = fp.clone(), fp.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))


def gather_in_order(rows: np.ndarray, values: np.ndarray, n_total: int) -> np.ndarray:
    """Every rank's (rows, values) gathered into one array ordered by row (n_total rows in all)."""
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (np.asarray(rows), np.asarray(values)))
    all_rows = np.concatenate([p[0] for p in parts])
    all_values = np.concatenate([p[1] for p in parts])
    if len(all_rows) != n_total or len(np.unique(all_rows)) != n_total:
        raise RuntimeError(f"sharded evaluation covered {len(np.unique(all_rows))} of {n_total} rows")
    return all_values[np.argsort(all_rows, kind="stable")]


def agree(value: float, d: Dist) -> float:
    """The largest of the ranks' values (e.g. elapsed seconds), so that every rank takes the same
    decision from it."""
    t = torch.tensor([float(value)], dtype=torch.float64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def setup(args, device) -> tuple[torch.device, Dist | None]:
    """A demo's `--ddp`: join torchrun's process group and leave the writing to rank 0 (the other ranks
    print nothing and write no file: their output flags are cleared). Returns (device, Dist or None)."""
    if not getattr(args, "ddp", False):
        return device, None
    if getattr(args, "time_budget", None) is not None:
        raise ValueError("--time-budget is not available with --ddp (the ranks must stop at the same "
                         "epoch); use --epochs")
    if getattr(args, "load", None):
        raise ValueError("--ddp trains; it cannot be combined with --load")
    d = init(torch.device(device))
    atexit.register(shutdown)
    if not d.is_main:
        for flag in ("out", "save", "plot", "export_vectors", "export_onnx", "plot_attention", "plot_logq"):
            if hasattr(args, flag):
                setattr(args, flag, None)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    print(f"data-parallel: {d.world} processes ({d.backend}), each training on its shard of every batch")
    return d.device, d


def training_hooks(model: torch.nn.Module, train_step: Callable[[dict], torch.Tensor],
                   count: Callable[[dict], int], d: Dist, check_every_step: bool = False):
    """(train_step, after_backward, steps) for `Utils.training.fit`: the sharded step, the gradient sum
    (and, with check_every_step, the check that every rank entered the step with the same weights);
    steps() -> the number of steps taken."""
    n = [0]

    def after_backward() -> None:
        sum_gradients(model, d)
        n[0] += 1
        if check_every_step and n[0] > 1 and not weights_in_sync(model, d):
            raise RuntimeError(f"ranks hold different weights before step {n[0]}")

    return sharded_step(train_step, count, d), after_backward, lambda: n[0]


def report_sync(model: torch.nn.Module, d: Dist, steps: int) -> None:
    """After training: check (and print, for the tests) that the ranks end with the same weights."""
    in_sync = weights_in_sync(model, d)
    print(f"ranks in sync after every one of {steps} steps: {in_sync}")
    if not in_sync:
        raise RuntimeError("ranks hold different weights after training")


def sharded_ranks(rank_users: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, d: Dist) -> np.ndarray:
    """Each rank ranks its shard of `rows` (rank_users(rows) -> their targets' ranks); the ranks of all
    `rows`, gathered, in the order of `rows` (so metrics computed from them are the single-process ones)."""
    mine = rows[d.rank :: d.world]
    by_row = gather_in_order(mine, rank_users(mine), len(rows))
    return by_row[np.searchsorted(np.sort(rows), rows)]
