"""Progressive Layered Extraction (PLE) and its single-level form, Customized Gate Control (CGC).

Paper: Hongyan Tang, Junning Liu, Ming Zhao, Xudong Gong. "Progressive Layered Extraction (PLE): A
       Novel Multi-Task Learning (MTL) Model for Personalized Recommendations". RecSys 2020.
       https://dl.acm.org/doi/10.1145/3383313.3412236
Official code: none released by the authors.

Usage::

    import torch
    from model import PLE
    model = PLE(task_types=("binary", "binary"), sparse_vocab_sizes=(50, 20), dim=8, n_levels=2)
    sparse = torch.randint(0, 20, (32, 2))                       # (B, F), 0 = padding
    outputs, gates = model(sparse=sparse, return_gates=True)     # (B, K); one dict per level
    labels = torch.randint(0, 2, (32, 2)).float()
    mask = torch.ones(32, 2, dtype=torch.bool)                   # (B, K) delta_k^i of Eq. (9)
    mask[:, 1] = labels[:, 0].bool()                             # task 2 only where task 1 = 1
    loss = model.loss(outputs, labels, mask)                     # Eq. (9): per-task sample spaces
    probs = model.predict(sparse=sparse)                         # (B, K), eval mode
    model.save("m.pt")                                           # config + weights
    model = PLE.load("m.pt")                                     # from this file alone

This file stands alone: it needs only torch. Copy it into your project as is.

Notation (same letters in the note, README.md §Maths):
    B: batch size        K: number of tasks
    m_k: task-specific experts per task (`n_task_experts`)
    m_s: shared experts (`n_shared_experts`)
    N: number of extraction levels (`n_levels`; N = 1 is CGC)
    F: sparse fields     Fd: dense features     D: embedding dim
    X: input width       H: expert width

Inputs are plain tensors: `sparse (B, F) int64` (0 = padding/unknown) and/or `dense (B, Fd) float`.
Outputs are `(B, K)` raw task outputs: a logit for a "binary" task, the prediction for "regression".

    CGC, Eqs. (2)-(4):  g^k(x) = w^k(x) S^k(x),  w^k(x) = softmax(W_g^k x),
                        S^k(x) = [E_(k,1) .. E_(k,m_k), E_(s,1) .. E_(s,m_s)]
    PLE, Eqs. (5)-(6):  g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x),   y^k = t^k(g^{k,N}(x))
    loss, Eqs. (7)-(9): L = sum_k w_k L_k,  w_k^(t) = w_{k,0} * gamma_k^t,
                        L_k = mean of task k's loss over the samples in its sample space (delta = 1)

In every level but the last, a shared gate mixes *all* experts (every task's and the shared ones)
into the input of the next level's shared experts; a task gate sees only its own and the shared
experts.

NOTE: gates are linear without bias + softmax, as in the paper's formula. Experts and towers are
      ReLU MLPs of configurable depth.
NOTE: a sparse code outside its field's vocabulary raises a ValueError naming the field, the code and
      the range (`check_ids`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

TaskType = Literal["binary", "regression"]


@dataclass
class PLEConfig:
    task_types: tuple[TaskType, ...] = ("regression", "regression")  # one entry per task (K)
    sparse_vocab_sizes: tuple[int, ...] = ()  # per sparse field, code 0 = padding/unknown
    dense_dim: int = 0  # number of dense features
    dim: int = 8  # embedding dim per sparse field
    n_levels: int = 2  # N extraction levels; 1 = CGC. Paper's Tencent video runs use 2
    n_task_experts: int = 2  # m_k, task-specific experts per task per level
    n_shared_experts: int = 2  # m_s, shared experts per level
    expert_hidden: tuple[int, ...] = (16,)  # each expert's layers; the last width is H
    tower_hidden: tuple[int, ...] = (8,)  # t^k hidden layers
    task_weights: tuple[float, ...] | None = None  # w_{k,0} of Eq. (8); None = all 1
    weight_decay_rates: tuple[float, ...] | None = None  # gamma_k of Eq. (8); None = all 1


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int | None = None) -> nn.Sequential:
    """Linear+ReLU per hidden width; then a plain Linear to out_dim when given."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


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

    def __init__(self, cfg: PLEConfig) -> None:
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


class ExtractionLayer(nn.Module):
    """One level of PLE (a CGC block). Takes K task inputs and one shared input, returns K task
    outputs g^{k,j} and, unless it is the last level, the shared output for the next level."""

    def __init__(self, in_dim: int, cfg: PLEConfig, *, last: bool) -> None:
        super().__init__()
        K, m_k, m_s = len(cfg.task_types), cfg.n_task_experts, cfg.n_shared_experts
        self.task_experts = nn.ModuleList(  # E_(k, i)
            nn.ModuleList(mlp(in_dim, cfg.expert_hidden) for _ in range(m_k)) for _ in range(K))
        self.shared_experts = nn.ModuleList(mlp(in_dim, cfg.expert_hidden) for _ in range(m_s))
        # Eq. (3)/(5): w^{k,j} = softmax(W x) over the task's own experts and the shared ones
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, m_k + m_s, bias=False) for _ in range(K))
        # the shared gate of a non-final level selects over every expert of the level
        self.shared_gate = None if last else nn.Linear(in_dim, K * m_k + m_s, bias=False)

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor):
        """task_inputs: K tensors (B, X_in); shared_input: (B, X_in).
        Returns (task outputs: K x (B, H), shared output (B, H) or None, gate weights dict)."""
        shared = torch.stack([e(shared_input) for e in self.shared_experts], 1)  # (B, m_s, H)
        outs, gates, all_task = [], [], []
        for k, (experts, gate) in enumerate(zip(self.task_experts, self.task_gates)):
            own = torch.stack([e(task_inputs[k]) for e in experts], 1)  # (B, m_k, H)
            all_task.append(own)
            selected = torch.cat([own, shared], dim=1)  # S^{k,j}, Eq. (4): (B, m_k + m_s, H)
            w = torch.softmax(gate(task_inputs[k]), dim=-1)  # (B, m_k + m_s)
            gates.append(w)
            outs.append(torch.einsum("be,beh->bh", w, selected))  # Eq. (2)/(5): (B, H)
        shared_out, shared_w = None, None
        if self.shared_gate is not None:
            every = torch.cat([*all_task, shared], dim=1)  # (B, K*m_k + m_s, H)
            shared_w = torch.softmax(self.shared_gate(shared_input), dim=-1)  # (B, K*m_k + m_s)
            shared_out = torch.einsum("be,beh->bh", shared_w, every)  # (B, H)
        return outs, shared_out, {"task": gates, "shared": shared_w}


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


class PLE(nn.Module):
    """PLE: `n_levels` stacked extraction layers, then a tower t^k per task. n_levels=1 is CGC."""

    def __init__(self, config: PLEConfig | None = None, **overrides) -> None:
        """`PLE(PLEConfig(...))`, optionally with keyword overrides, or `PLE(**keywords)`; the config
        passed in is never modified (overrides apply to a copy, self.config)."""
        super().__init__()
        cfg = dataclasses.replace(config, **overrides) if config is not None else PLEConfig(**overrides)
        K = len(cfg.task_types)
        if not cfg.task_types or any(t not in ("binary", "regression") for t in cfg.task_types):
            raise ValueError(f"task_types must list 'binary'/'regression' per task, "
                             f"got {cfg.task_types}")
        if not cfg.sparse_vocab_sizes and cfg.dense_dim <= 0:
            raise ValueError("need sparse_vocab_sizes and/or dense_dim > 0 (no input otherwise)")
        if cfg.n_levels < 1 or cfg.n_task_experts < 0 or cfg.n_shared_experts < 0:
            raise ValueError(f"need n_levels >= 1 and non-negative expert counts, got "
                             f"{cfg.n_levels}, {cfg.n_task_experts}, {cfg.n_shared_experts}")
        if cfg.n_task_experts + cfg.n_shared_experts < 1 or not cfg.expert_hidden:
            raise ValueError("each task needs at least one expert with at least one layer")
        for name in ("task_weights", "weight_decay_rates"):
            value = getattr(cfg, name)
            if value is not None and len(value) != K:
                raise ValueError(f"{name} needs one value per task ({K}), got {value}")
        self.config = cfg
        self.inputs = InputLayer(cfg)
        H = cfg.expert_hidden[-1]
        self.levels = nn.ModuleList(
            ExtractionLayer(self.inputs.out_dim if j == 0 else H, cfg, last=j == cfg.n_levels - 1)
            for j in range(cfg.n_levels))
        self.towers = nn.ModuleList(mlp(H, cfg.tower_hidden, 1) for _ in cfg.task_types)  # t^k

    def forward(self, sparse: torch.Tensor | None = None, dense: torch.Tensor | None = None,
                return_gates: bool = False):
        """Returns (B, K) task outputs ((0, K) for a batch of 0 rows); with return_gates also a list
        (one dict per level) with "task": K tensors (B, m_k + m_s) and "shared": (B, K*m_k + m_s)
        or None."""
        x = self.inputs(sparse, dense)  # (B, X)
        task_inputs, shared_input = [x] * len(self.towers), x  # level 1 reads x everywhere
        all_gates = []
        for level in self.levels:
            task_inputs, shared_input, gates = level(task_inputs, shared_input)  # Eq. (5)
            all_gates.append(gates)
        out = torch.cat([t(h) for t, h in zip(self.towers, task_inputs)], dim=-1)  # Eq. (6): (B, K)
        return (out, all_gates) if return_gates else out

    # ----------------------------------------------------------------- Eqs. (7)-(9)
    def loss_weights(self, step: int = 0) -> torch.Tensor:
        """Eq. (8): w_k^(t) = w_{k,0} * gamma_k^t, (K,)."""
        K = len(self.config.task_types)
        w0 = torch.tensor(self.config.task_weights or [1.0] * K)
        gamma = torch.tensor(self.config.weight_decay_rates or [1.0] * K)
        return w0 * gamma.pow(step)

    def multitask_loss(self, outputs: torch.Tensor, labels: torch.Tensor,
                       mask: torch.Tensor | None = None,
                       step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (7) with Eq. (9)'s per-task sample spaces.

        Args:
            outputs, labels: (B, K).  mask: (B, K) bool delta_k^i — False where sample i lies
            outside task k's sample space (e.g. conversion labels exist only for clicked rows);
            None = all rows count.
            step: training step t for Eq. (8)'s weight schedule.
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
            delta = outputs.new_ones(len(outputs)) if mask is None else mask[:, k].float()
            per_task.append((elementwise * delta).sum() / delta.sum().clamp_min(1.0))  # Eq. (9)
        losses = torch.stack(per_task)  # (K,)
        return (self.loss_weights(step).to(losses) * losses).sum(), losses

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
             step: int = 0) -> torch.Tensor:
        """The joint objective of Eq. (7)."""
        return self.multitask_loss(outputs, labels, mask, step)[0]

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
        """torch.save {"model", "config", "state_dict"} for `PLE.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> PLE:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, PLEConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
