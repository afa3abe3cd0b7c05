"""Multi-gate Mixture-of-Experts (MMoE) and the Shared-Bottom multi-task model it is compared with.

Paper: Jiaqi Ma, Zhe Zhao, Xinyang Yi, Jilin Chen, Lichan Hong, Ed H. Chi. "Modeling Task
       Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts". KDD 2018.
       https://dl.acm.org/doi/10.1145/3219819.3220007
Official code: none released (the note links the paper's figures and the synthetic generator).

Usage::

    import torch
    from model import MMoE
    model = MMoE(task_types=("binary", "regression"), dense_dim=10, n_experts=4)
    dense = torch.randn(32, 10)                                  # (B, Fd)
    outputs, gates = model(dense=dense, return_gates=True)       # (B, K), (B, K, E)
    labels = torch.stack([torch.randint(0, 2, (32,)).float(), torch.randn(32)], dim=1)
    loss = model.loss(outputs, labels)                           # BCE(task 1) + MSE(task 2)
    probs = model.predict(outputs)                               # sigmoid for the binary task
    probs = model.predict(dense=dense)                           # from inputs, eval mode
    model.save("m.pt")                                           # config + weights
    model = MMoE.load("m.pt")                                    # from this file alone

This file stands alone: it needs only torch. Copy it into your project as is.

Notation (same letters in the note, README.md §Maths):
    B: batch size     K: number of tasks     E: number of experts (the paper's n)
    F: sparse fields  Fd: dense features     D: embedding dim per sparse field
    X: width of the input vector x = [embeddings of the F fields, Fd dense values]
    H: expert output width

Inputs are plain tensors: `sparse (B, F) int64` (0 = padding/unknown) and/or `dense (B, Fd) float`.
Outputs are `(B, K)` raw task outputs: a logit for a "binary" task, the prediction for "regression".

    Shared-Bottom, Eq. (1):  y_k = h^k(f(x))
    MMoE, Eqs. (6)-(7):      y_k = h^k(f^k(x)),  f^k(x) = sum_i g^k(x)_i f_i(x),
                             g^k(x) = softmax(W_gk x)

NOTE: the paper's gate is linear without a bias (softmax(W_gk x)); we follow that. Experts and
      towers are ReLU MLPs of configurable depth (the paper's synthetic experiment uses one layer
      each).
NOTE: the joint loss is the (optionally weighted) sum of the task losses; the paper uses the sum.
NOTE: a sparse code outside its field's vocabulary raises a ValueError naming the field, the code and
      the range (`check_ids`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

TaskType = Literal["binary", "regression"]


@dataclass
class MultiTaskConfig:
    task_types: tuple[TaskType, ...] = ("regression", "regression")  # one entry per task (K)
    sparse_vocab_sizes: tuple[int, ...] = ()  # per sparse field, code 0 = padding/unknown
    dense_dim: int = 0  # number of dense features; the paper's synthetic x is 100 dense values
    dim: int = 8  # embedding dim per sparse field
    n_experts: int = 8  # paper §5 (synthetic): 8 experts
    expert_hidden: tuple[int, ...] = (16,)  # paper §5: each expert one layer of 16 ReLU units
    tower_hidden: tuple[int, ...] = (8,)  # paper §5: towers one hidden layer of 8 units
    bottom_hidden: tuple[int, ...] = (126,)  # Shared-Bottom only: as many weights as MMoE at d=100
    task_weights: tuple[float, ...] | None = field(default=None)  # loss weights; None = all 1


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int | None = None) -> nn.Sequential:
    """Linear+ReLU per hidden width; then a plain Linear to out_dim when given."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def _check(cfg: MultiTaskConfig) -> None:
    if not cfg.task_types or any(t not in ("binary", "regression") for t in cfg.task_types):
        raise ValueError(f"task_types must list 'binary'/'regression' per task, "
                         f"got {cfg.task_types}")
    if not cfg.sparse_vocab_sizes and cfg.dense_dim <= 0:
        raise ValueError("need sparse_vocab_sizes and/or dense_dim > 0 (the model has no input)")
    if any(v < 1 for v in cfg.sparse_vocab_sizes) or cfg.dense_dim < 0 or cfg.dim < 1:
        raise ValueError(f"bad input sizes: vocab {cfg.sparse_vocab_sizes}, dense {cfg.dense_dim}")
    if cfg.n_experts < 1 or not cfg.expert_hidden:
        raise ValueError(f"need n_experts >= 1 and >= 1 expert layer, got {cfg.n_experts}, "
                         f"{cfg.expert_hidden}")
    if cfg.task_weights is not None and len(cfg.task_weights) != len(cfg.task_types):
        raise ValueError("task_weights needs one weight per task")


def check_ids(sparse: torch.Tensor, sizes: tuple[int, ...]) -> None:
    """Raise a ValueError when a code of `sparse` (B, F) lies outside field f's range 0..sizes[f]-1
    (it would read another row or fail with a bare IndexError). One min/max reduction per call."""
    if sparse.numel() == 0:
        return
    limit = torch.as_tensor(sizes, device=sparse.device)  # (F,)
    bad = (sparse.amin(0) < 0) | (sparse.amax(0) >= limit)  # (F,)
    if bad.any():
        f = int(bad.nonzero()[0])
        column = sparse[:, f]
        wrong = int(column[(column < 0) | (column >= sizes[f])][0])
        raise ValueError(f"sparse field {f}: id {wrong} is out of range; expected 0..{sizes[f] - 1} "
                         f"(vocabulary size {sizes[f]}, 0 = padding/unknown)")


def check_finite(dense: torch.Tensor) -> None:
    """A NaN or inf dense value would spread into every task output silently. One pass per call."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # an exported graph cannot raise; validate dense values before calling it
    finite = torch.isfinite(dense)  # (B, Fd)
    if not finite.all():
        row, col = (~finite).nonzero()[0].tolist()
        raise ValueError(f"dense field {col}: row {row} holds {dense[row, col].item()}; "
                         "expected finite values")


def check_labels(labels: torch.Tensor, mask: torch.Tensor | None,
                 task_types: tuple[str, ...]) -> None:
    """Binary tasks need labels in {0, 1}, regression tasks finite labels, on every row the mask
    keeps (a label the mask drops is never read); an empty batch has nothing to average.
    labels: (B, K) float; mask: (B, K) or None. One pass over (B, K) per call."""
    if labels.shape[0] == 0:
        raise ValueError("loss: the batch is empty (0 rows); there is nothing to average")
    if mask is not None and mask.shape != labels.shape:
        raise ValueError(f"mask must have the shape of labels {tuple(labels.shape)}, got "
                         f"{tuple(mask.shape)}")
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    binary = torch.tensor([t == "binary" for t in task_types], device=labels.device)  # (K,)
    ok = torch.where(binary, (labels == 0) | (labels == 1), torch.isfinite(labels))  # (B, K)
    if mask is not None:
        ok = ok | (mask == 0)
    if not ok.all():
        row, k = (~ok).nonzero()[0].tolist()
        want = "labels in {0, 1}" if task_types[k] == "binary" else "finite labels"
        raise ValueError(f"labels[{row}, {k}] = {labels[row, k].item()} (task {k}, "
                         f"{task_types[k]}); expected {want}")


class InputLayer(nn.Module):
    """x = [emb(sparse_1), ..., emb(sparse_F), dense]: (B, X)."""

    def __init__(self, cfg: MultiTaskConfig) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(v, cfg.dim) for v in cfg.sparse_vocab_sizes)
        self.vocab_sizes = tuple(cfg.sparse_vocab_sizes)
        self.dense_dim = cfg.dense_dim
        self.out_dim = len(cfg.sparse_vocab_sizes) * cfg.dim + cfg.dense_dim

    def forward(self, sparse: torch.Tensor | None, dense: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.embeddings:
            if sparse is None or sparse.dim() != 2 or sparse.shape[1] != len(self.embeddings):
                raise ValueError(f"expected sparse (B, {len(self.embeddings)}) int64, got "
                                 f"{None if sparse is None else tuple(sparse.shape)}")
            check_ids(sparse, self.vocab_sizes)
            parts += [table(sparse[:, f]) for f, table in enumerate(self.embeddings)]  # F x (B, D)
        if self.dense_dim:
            if dense is None or dense.dim() != 2 or dense.shape[1] != self.dense_dim:
                raise ValueError(f"expected dense (B, {self.dense_dim}) float, got "
                                 f"{None if dense is None else tuple(dense.shape)}")
            check_finite(dense)
            parts.append(dense)
        return torch.cat(parts, dim=-1)  # (B, X)


# --------------------------------------------------------------------------------------------------
# Serving and persistence helpers: one convention, the same code in every model file
# --------------------------------------------------------------------------------------------------


class _eval_mode:
    """Eval mode inside a `with` block; each submodule gets its own train/eval mode back after it."""

    def __init__(self, module: nn.Module):
        self.module, self.modes = module, [(m, m.training) for m in module.modules()]

    def __enter__(self) -> nn.Module:
        return self.module.eval()

    def __exit__(self, *exc) -> None:
        for m, training in self.modes:
            m.training = training


def _plain(value):
    """A config value in types torch.load(weights_only=True) reads: lists, a dtype by its name."""
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")  # torch.float64 -> "float64"
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _unplain(kind: str, value):
    """`_plain` undone for a field annotated `kind`: lists back to tuples, a dtype from its name."""
    if "tuple" in kind and isinstance(value, list):
        return tuple(_unplain(kind, v) for v in value)
    return getattr(torch, value, value) if "dtype" in kind and isinstance(value, str) else value


def _save_checkpoint(model: nn.Module, config, path, overwrite: bool, **extra) -> None:
    """torch.save {"model": class name, "config": plain types, "state_dict", **extra} to `path`."""
    config = {k: _plain(v) for k, v in dataclasses.asdict(config).items()}
    payload = {"model": type(model).__name__, "config": config, "state_dict": model.state_dict(),
               **extra}
    try:  # mode "x": the file is created only if it does not exist yet, in one step
        with open(path, "wb" if overwrite else "xb") as f:
            torch.save(payload, f)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None


def _read_checkpoint(cls: type, config_cls: type, path, map_location, extra=()) -> tuple:
    """(checkpoint, config) from a file `cls.save` wrote; any other file raises a ValueError."""
    keys = ["model", "config", "state_dict", *extra]
    kinds = {f.name: str(f.type) for f in dataclasses.fields(config_cls)}  # "tuple[int, ...]"
    expected = f"expected a {cls.__name__}.save() dict: keys {keys}, config fields {list(kinds)}"
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # a missing or unreadable file says so itself
    except Exception as e:  # not a torch.save file, or one holding more than plain types
        raise ValueError(f"{path}: {e}; {expected}") from e
    if not isinstance(ckpt, dict) or not set(keys) <= set(ckpt) or ckpt["model"] != cls.__name__:
        got = f", model {ckpt.get('model')!r}, keys {list(ckpt)}" if isinstance(ckpt, dict) else ""
        raise ValueError(f"{path} holds a {type(ckpt).__name__}{got}; {expected}")
    try:
        values = {k: _unplain(kinds.get(k, ""), v) for k, v in ckpt["config"].items()}
        return ckpt, config_cls(**values)
    except (AttributeError, TypeError) as e:  # not a dict, or a field missing or unknown
        raise ValueError(f"{path}: the saved config does not fit ({e}); {expected}") from e


def _load_weights(model: nn.Module, ckpt: dict, path, map_location) -> nn.Module:
    """ckpt["state_dict"] into `model`, moved to map_location when it names a device; eval mode."""
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError) as e:  # missing, unexpected or mis-shaped weights
        raise ValueError(f"{path}: the saved weights do not fit {type(model).__name__}: {e}") from e
    device = map_location if isinstance(map_location, (str, torch.device)) else None
    return model.to(device).eval()


class _MultiTaskBase(nn.Module):
    config: MultiTaskConfig

    def multitask_loss(self, outputs: torch.Tensor, labels: torch.Tensor,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over tasks of w_k * L_k: BCE-with-logits for binary tasks, MSE for regression.

        Args:
            outputs, labels: (B, K).  mask: (B, K) bool, False where a task has no label for a row.
        Returns:
            (total scalar, per-task losses (K,)).
        Raises a ValueError for a binary label outside {0, 1}, a non-finite regression label (where
        the mask keeps the row) or an empty batch (`check_labels`).
        """
        if outputs.shape != labels.shape:
            raise ValueError(f"outputs {tuple(outputs.shape)} and labels {tuple(labels.shape)} "
                             "differ")
        labels = labels.float()
        check_labels(labels, mask, self.config.task_types)
        if mask is not None:  # a dropped label (e.g. NaN for "none") must not reach the sum
            labels = torch.where(mask == 0, torch.zeros_like(labels), labels)
        per_task = []
        for k, kind in enumerate(self.config.task_types):
            fn = F.binary_cross_entropy_with_logits if kind == "binary" else F.mse_loss
            elementwise = fn(outputs[:, k], labels[:, k], reduction="none")  # (B,)
            if mask is None:
                per_task.append(elementwise.mean())
            else:
                m = mask[:, k].float()
                per_task.append((elementwise * m).sum() / m.sum().clamp_min(1.0))
        losses = torch.stack(per_task)  # (K,)
        weights = losses.new_tensor(self.config.task_weights or [1.0] * len(per_task))
        return (weights * losses).sum(), losses

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        """The joint training objective: sum_k w_k L_k(y_k, label_k)."""
        return self.multitask_loss(outputs, labels, mask)[0]

    def predict(self, *inputs, **kw):
        """(B, K) probabilities of binary tasks, values of regression ones: from forward's inputs in
        eval mode, detached; `predict(outputs)` only maps forward's float outputs."""
        if not inputs and set(kw) == {"outputs"}:
            inputs, kw = (kw["outputs"],), {}
        if (len(inputs) == 1 and not kw and isinstance(inputs[0], torch.Tensor)
                and inputs[0].is_floating_point()):  # forward's outputs: map them, run nothing
            outputs = inputs[0]
            kinds = self.config.task_types
            binary = torch.tensor([t == "binary" for t in kinds], device=outputs.device)
            return torch.where(binary, torch.sigmoid(outputs), outputs)
        with torch.no_grad(), _eval_mode(self):
            out = self(*inputs, **kw)  # (B, K), or (outputs, gates) with return_gates=True
            if isinstance(out, tuple):
                return self.predict(out[0]), out[1]
            return self.predict(out)  # (B, K)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `load` to `path`, written in place; an
        existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> _MultiTaskBase:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, MultiTaskConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)


def _config(config: MultiTaskConfig | None, overrides: dict) -> MultiTaskConfig:
    """`Model(config, **overrides)` or `Model(**keywords)`: a copy, the caller's config untouched."""
    return dataclasses.replace(config, **overrides) if config is not None else MultiTaskConfig(**overrides)


class SharedBottom(_MultiTaskBase):
    """Shared-Bottom, Eq. (1): one bottom network f shared by all tasks, a tower h^k per task."""

    def __init__(self, config: MultiTaskConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = _config(config, overrides)
        _check(cfg)
        self.config = cfg
        self.inputs = InputLayer(cfg)
        self.bottom = mlp(self.inputs.out_dim, cfg.bottom_hidden)  # f
        self.towers = nn.ModuleList(mlp(cfg.bottom_hidden[-1], cfg.tower_hidden, 1)
                                    for _ in cfg.task_types)  # h^k

    def forward(self, sparse: torch.Tensor | None = None,
                dense: torch.Tensor | None = None) -> torch.Tensor:
        """Returns (B, K) task outputs; (0, K) for a batch of 0 rows."""
        shared = self.bottom(self.inputs(sparse, dense))  # (B, H)
        return torch.cat([tower(shared) for tower in self.towers], dim=-1)  # Eq. (1): (B, K)


class MMoE(_MultiTaskBase):
    """Multi-gate Mixture-of-Experts, Eqs. (5)-(7): E shared experts, one softmax gate per task."""

    def __init__(self, config: MultiTaskConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = _config(config, overrides)
        _check(cfg)
        self.config = cfg
        self.inputs = InputLayer(cfg)
        X, H = self.inputs.out_dim, cfg.expert_hidden[-1]
        self.experts = nn.ModuleList(mlp(X, cfg.expert_hidden) for _ in range(cfg.n_experts))  # f_i
        # Eq. (7): g^k(x) = softmax(W_gk x), a linear map without bias per task
        self.gates = nn.ModuleList(nn.Linear(X, cfg.n_experts, bias=False) for _ in cfg.task_types)
        self.towers = nn.ModuleList(mlp(H, cfg.tower_hidden, 1) for _ in cfg.task_types)  # h^k

    def gate_weights(self, sparse: torch.Tensor | None = None,
                     dense: torch.Tensor | None = None) -> torch.Tensor:
        """g^k(x) for every task: (B, K, E); each row sums to 1 (Eq. 7)."""
        x = self.inputs(sparse, dense)  # (B, X)
        return torch.stack([torch.softmax(gate(x), dim=-1) for gate in self.gates], dim=1)

    def forward(self, sparse: torch.Tensor | None = None, dense: torch.Tensor | None = None,
                return_gates: bool = False):
        """Returns (B, K) task outputs, and the (B, K, E) gate weights when return_gates; a batch
        of 0 rows gives (0, K) outputs."""
        x = self.inputs(sparse, dense)  # (B, X)
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # f_i(x): (B, E, H)
        gates = torch.stack([torch.softmax(gate(x), dim=-1) for gate in self.gates], 1)  # (B, K, E)
        mixed = gates @ experts  # Eq. (6) f^k(x): (B, K, E) @ (B, E, H) -> (B, K, H)
        out = torch.cat([tower(mixed[:, k]) for k, tower in enumerate(self.towers)], -1)  # (B, K)
        return (out, gates) if return_gates else out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
