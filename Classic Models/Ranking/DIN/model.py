"""Deep Interest Network (DIN) and its base model (Embedding & MLP with sum/average pooling).

Paper: Guorui Zhou, Xiaoqiang Zhu, Chengru Song, Ying Fan, Han Zhu, Xiao Ma, Yanghui Yan, Junqi Jin,
       Han Li, Kun Gai. "Deep Interest Network for Click-Through Rate Prediction". KDD 2018.
       https://arxiv.org/abs/1706.06978
Official code: https://github.com/zhougr1993/DeepInterestNetwork (TensorFlow 1.x)

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import DIN
    model = DIN(item_vocab_sizes=(101, 11))             # item id + category id, 0 = padding
    target = torch.randint(1, 11, (4, 2))                # (B, G) candidate ad
    history = torch.randint(1, 11, (4, 6, 2))           # (B, L, G) behaviours, 0 = padding
    logits = model(target, history)                      # (B,) click logits
    weights = model.activation_weights(target, history)  # (B, L) a(e_j, v_A) of Eq. (3)
    loss = model.loss(logits, torch.ones(4))             # Eq. (2)
    probs = model.predict(target, history)                # (B,) P(click), eval mode
    model.save("m.pt")                                   # config + weights, no overwrite
    model = DIN.load("m.pt")                             # from this file alone, eval

Notation (same letters in the note, README.md §Maths; equation numbers as in the paper):
    B: batch size            L: behaviour-sequence length (0 = padding)
    G: id fields per item    (e.g. goods id, category id; the paper uses goods/shop/category)
    F: context (user/ad) fields, optional
    D: embedding dim per field, so one item is a G*D vector
    H: hidden width of the activation unit

Inputs are plain tensors:
    target:  (B, G) int64      the candidate ad / item, one id per item field
    history: (B, L, G) int64   the user's behaviours, same fields as the target, 0 = padding
    context: (B, F) int64      other one-hot fields (user profile, context), optional

The model returns one logit per row; `torch.sigmoid(logit)` is the click probability.

Pooling modes (note §Maths: Eqs. (1) and (3)):
    pooling="attention"  DIN, Eq. (3): v_U(A) = sum_j a(e_j, v_A) e_j, weights NOT normalised
    pooling="sum"        base model, Eq. (1) sum pooling
    pooling="mean"       base model, Eq. (1) average pooling

NOTE: the activation unit's input is [e_j, v_A, e_j - v_A, e_j * v_A] (as in the official code); the
      paper's Fig. 2 draws an "out product" of e_j and v_A. The element-wise product and difference
      carry the same pairwise information at O(D) instead of O(D^2) cost. The official
      `attention()` also masks, scales by 1/sqrt(D) and softmax-normalises the scores; the paper
      drops that normalisation (Eq. 3), and so does this file.
NOTE: the mini-batch aware regulariser (Eqs. 4-7) covers the item-field tables only; the context
      tables are left unregularised (note, "Deviations from the paper").
NOTE: the output layer is one logit with a sigmoid instead of the paper's 2-way softmax; the two are
      the same model (softmax over [z0, z1] = sigmoid(z1 - z0)).
NOTE: the activation unit's output bias starts at 1 (`attention_init_bias`), so DIN starts as the
      sum-pooling base model; the paper gives no initialisation (note §Deviations from the paper).
NOTE: the activation unit runs only on real (non-padding) behaviours, so Dice's batch statistics are
      those of real behaviours, and padded positions get weight exactly 0.
NOTE: one sample has no batch variance, so in training a batch of one row (or, in the activation
      unit, a batch holding one real behaviour) is normalised with Dice's moving averages, as at test
      time (`BatchStats`); nn.BatchNorm1d would stop with "Expected more than 1 value per channel".
NOTE: ids outside a field's vocabulary raise a ValueError naming the input, field, id and range
      (`check_ids`), instead of reading another row or failing with a bare IndexError.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Pooling = Literal["attention", "sum", "mean"]


@dataclass
class DINConfig:
    item_vocab_sizes: tuple[int, ...]  # one per item field (goods id, category, ...); 0 = padding
    context_vocab_sizes: tuple[int, ...] = ()  # user/context fields; empty when there are none
    dim: int = 16  # per-field embedding dim; the official Amazon code uses 64 per field on a GPU
    pooling: Pooling = "attention"  # "attention" = DIN; "sum"/"mean" = the paper's base model
    attention_hidden: tuple[int, ...] = (36,)  # paper Fig. 2: one hidden layer of 36 units
    attention_init_bias: float = 1.0  # weights start near 1 = the base model's sum pooling
    mlp_hidden: tuple[int, ...] = (200, 80)  # paper Fig. 2: 200 -> 80 -> output
    activation: Literal["dice", "prelu"] = "dice"  # paper §5.2: Dice generalises PReLU
    dice_eps: float = 1e-8  # paper Eq. (9): epsilon inside sqrt(Var[s] + eps)
    mba_lambda: float = 0.0  # mini-batch aware L2 strength, Eq. (7); 0 switches it off
    id_frequencies: list[torch.Tensor] | None = field(default=None, repr=False)
    # ^ n_j of Eq. (6): occurrences of each id in the training set, one (V_g,) tensor per field;
    #   None = all 1 (plain L2 over the ids in the batch)


def check_ids(ids: torch.Tensor, sizes: tuple[int, ...], what: str) -> None:
    """Raise a ValueError when an id of `ids` (..., G) lies outside field g's range 0..sizes[g]-1.
    One min/max reduction per call; the offending id is looked up only on failure."""
    if ids.shape[-1] != len(sizes):
        raise ValueError(f"{what}: expected {len(sizes)} id fields in the last dim, got shape "
                         f"{tuple(ids.shape)}")
    if ids.numel() == 0:
        return
    flat = ids.reshape(-1, ids.shape[-1])  # (N, G)
    limit = torch.as_tensor(sizes, device=ids.device)  # (G,)
    bad = (flat.amin(0) < 0) | (flat.amax(0) >= limit)  # (G,)
    if bad.any():
        g = int(bad.nonzero()[0])
        column = flat[:, g]
        wrong = int(column[(column < 0) | (column >= sizes[g])][0])
        raise ValueError(f"{what}, field {g}: id {wrong} is out of range; expected 0..{sizes[g] - 1} "
                         f"(vocabulary size {sizes[g]}, 0 = padding)")


def check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """The log loss needs one click label in {0, 1} per logit and at least one row: a label of 2,
    -1, 0.5 or NaN would still give a number, and the mean over 0 rows is NaN."""
    if labels.shape != logits.shape:
        raise ValueError(f"labels must have the shape of logits {tuple(logits.shape)}, got "
                         f"{tuple(labels.shape)}")
    if logits.numel() == 0:
        raise ValueError("loss: the batch is empty (0 rows); there is nothing to average")
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    binary = (labels == 0) | (labels == 1)  # (B,)
    if not binary.all():
        i = int((~binary).nonzero()[0, 0])
        raise ValueError(f"labels[{i}] = {labels[i].item()}; expected click labels in {{0, 1}}")


class BatchStats(nn.BatchNorm1d):
    """(s - E[s]) / sqrt(Var[s] + eps) of Eq. (9), a BatchNorm without affine parameters: batch
    statistics in training, their moving averages at test time. A training batch of one sample has
    no variance, so it is normalised with the moving averages (left unchanged), as at test time."""

    def __init__(self, width: int, *, eps: float) -> None:
        super().__init__(width, eps=eps, affine=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.training and s.shape[0] < 2:  # (N, W) with N <= 1: nothing to estimate from
            return F.batch_norm(s, self.running_mean, self.running_var, eps=self.eps,
                                training=False)
        return super().forward(s)


class Dice(nn.Module):
    """Data-adaptive activation, Eq. (9): f(s) = p(s) * s + (1 - p(s)) * alpha * s,
    p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)).

    E[s] and Var[s] are the mini-batch statistics in training and their moving averages at test time
    (paper §5.2), which is exactly what a BatchNorm without affine parameters keeps (`BatchStats`;
    a training batch of one sample uses the moving averages). With E[s] = 0 and Var[s] = 0, p(s) is a hard step at 0 and Dice becomes PReLU, Eq. (8).
    """

    def __init__(self, width: int, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = BatchStats(width, eps=eps)
        self.alpha = nn.Parameter(torch.zeros(width))  # learnable slope of the "off" side

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        shape = s.shape
        flat = s.reshape(-1, shape[-1])  # (N, W): every row/position is one sample for the stats
        p = torch.sigmoid(self.norm(flat))  # Eq. (9)
        out = p * flat + (1.0 - p) * self.alpha * flat
        return out.reshape(shape)


def _activation(kind: str, width: int, eps: float) -> nn.Module:
    return Dice(width, eps=eps) if kind == "dice" else nn.PReLU(width)


class MLP(nn.Sequential):
    """Linear -> Dice/PReLU blocks, then a Linear to `out_dim` (no activation on the output)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int, *, act: str,
                 eps: float) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), _activation(act, width, eps)]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


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


class DIN(nn.Module):
    """Deep Interest Network (pooling="attention") or the base model (pooling="sum"/"mean").

    Build from a config, `DIN(DINConfig(item_vocab_sizes=(n_items + 1, n_cats + 1)))`, optionally with
    keyword overrides (`DIN(c, dim=32)`), or from keywords alone (`DIN(item_vocab_sizes=...)`). The
    config passed in is never modified: overrides apply to a copy (self.config).
    """

    def __init__(self, config: DINConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = dataclasses.replace(config, **overrides) if config is not None else DINConfig(**overrides)
        if not cfg.item_vocab_sizes or any(v < 2 for v in cfg.item_vocab_sizes):
            raise ValueError(f"item_vocab_sizes needs >= 1 field of size >= 2 (id 0 = padding), "
                             f"got {cfg.item_vocab_sizes}")
        if any(v < 1 for v in cfg.context_vocab_sizes):
            raise ValueError(f"context_vocab_sizes must be positive, got {cfg.context_vocab_sizes}")
        if cfg.pooling not in ("attention", "sum", "mean"):
            raise ValueError(f"pooling must be 'attention', 'sum' or 'mean', got {cfg.pooling!r}")
        if cfg.activation not in ("dice", "prelu"):
            raise ValueError(f"activation must be 'dice' or 'prelu', got {cfg.activation!r}")
        if cfg.dim < 1 or cfg.mba_lambda < 0:
            raise ValueError(f"need dim >= 1 and mba_lambda >= 0, got {cfg.dim}, {cfg.mba_lambda}")
        self.config = cfg
        G, D = len(cfg.item_vocab_sizes), cfg.dim
        # Item-side tables are shared by the target and the behaviours (paper §4.2: same embedding).
        self.item_embeddings = nn.ModuleList(
            nn.Embedding(v, D, padding_idx=0) for v in cfg.item_vocab_sizes)
        self.context_embeddings = nn.ModuleList(nn.Embedding(v, D) for v in cfg.context_vocab_sizes)
        for table in [*self.item_embeddings, *self.context_embeddings]:
            nn.init.normal_(table.weight, std=0.05)
        for table in self.item_embeddings:
            with torch.no_grad():
                table.weight[0].zero_()
        item_dim = G * D
        if cfg.pooling == "attention":
            # Activation unit, Fig. 2 (right): [e_j, v_A, e_j - v_A, e_j * v_A] -> MLP -> scalar
            self.activation_unit = MLP(4 * item_dim, cfg.attention_hidden, 1,
                                       act=cfg.activation, eps=cfg.dice_eps)
            # Start every weight near 1, i.e. as the sum-pooling base model, and let training learn
            # how far each behaviour should be activated up or down (a zero start would hide the
            # behaviours from the MLP early in training).
            nn.init.constant_(self.activation_unit[-1].bias, cfg.attention_init_bias)
        mlp_in = 2 * item_dim + len(cfg.context_vocab_sizes) * D
        self.mlp = MLP(mlp_in, cfg.mlp_hidden, 1, act=cfg.activation, eps=cfg.dice_eps)
        freqs = cfg.id_frequencies or [torch.ones(v) for v in cfg.item_vocab_sizes]
        if len(freqs) != G or any(f.shape != (v,) for f, v in zip(freqs, cfg.item_vocab_sizes)):
            raise ValueError("id_frequencies needs one (V_g,) tensor per item field")
        for g, f in enumerate(freqs):
            self.register_buffer(f"id_frequency_{g}", f.float().clamp_min(1.0), persistent=False)

    @classmethod
    def from_config(cls, config: DINConfig) -> DIN:
        return cls(config)

    # ----------------------------------------------------------------- embeddings
    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (..., G) int64 -> (..., G*D): concatenated field embeddings."""
        if ids.shape[-1] != len(self.item_embeddings):
            raise ValueError(f"expected {len(self.item_embeddings)} item fields in the last dim, "
                             f"got shape {tuple(ids.shape)}")
        return torch.cat([table(ids[..., g]) for g, table in enumerate(self.item_embeddings)], -1)

    # ----------------------------------------------------------------- Eq. (3)
    def activation_weights(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Local activation unit a(e_j, v_A) of Eq. (3) for every behaviour.

        Args:
            target: (B, G) int64.  history: (B, L, G) int64, 0 = padding.
        Returns:
            (B, L) float weights; NOT softmax-normalised (paper §4.3: keeps the intensity of the
            user's interest), exactly 0 at padded positions.
        """
        if self.config.pooling != "attention":
            raise RuntimeError("activation_weights needs pooling='attention'")
        B, L, _ = history.shape
        valid = history[..., 0] != 0  # (B, L)
        rows, cols = valid.nonzero(as_tuple=True)  # (N,) each: only real behaviours are scored
        behaviours = self.embed_items(history[rows, cols])  # (N, G*D)
        candidate = self.embed_items(target[rows])  # (N, G*D)
        unit_in = torch.cat([behaviours, candidate, behaviours - candidate,
                             behaviours * candidate], dim=-1)  # (N, 4*G*D)
        scores = self.activation_unit(unit_in).squeeze(-1)  # (N,)
        weights = scores.new_zeros(B, L)
        weights[rows, cols] = scores  # (B, L), exactly 0 at padding
        return weights

    def user_interest(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """User vector v_U (B, G*D): attention (Eq. 3) or sum/mean pooling (Eq. 1)."""
        behaviours = self.embed_items(history)  # (B, L, G*D); padding rows are the zero vector
        mask = (history[..., 0] != 0).float()  # (B, L)
        if self.config.pooling == "attention":
            w = self.activation_weights(target, history)  # (B, L)
            return torch.einsum("bl,bld->bd", w, behaviours)  # Eq. (3): sum_j w_j e_j
        pooled = (behaviours * mask.unsqueeze(-1)).sum(1)  # (B, G*D), Eq. (1) sum pooling
        if self.config.pooling == "mean":
            pooled = pooled / mask.sum(1, keepdim=True).clamp_min(1.0)
        return pooled

    # ----------------------------------------------------------------- forward
    def forward(self, target: torch.Tensor, history: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            target: (B, G) int64 candidate item fields.
            history: (B, L, G) int64 behaviour fields, 0 = padding (left or right, any order).
            context: (B, F) int64 context/user fields, or None when the config has none.
        Returns:
            (B,) float logits; a batch of 0 rows gives an empty (0,) tensor.
        """
        if target.dim() != 2 or history.dim() != 3 or history.shape[0] != target.shape[0]:
            raise ValueError(f"target must be (B, G) and history (B, L, G); got "
                             f"{tuple(target.shape)} and {tuple(history.shape)}")
        n_ctx = len(self.context_embeddings)
        if (context is None) != (n_ctx == 0) or (context is not None and context.shape[1] != n_ctx):
            raise ValueError(f"config has {n_ctx} context fields, got "
                             f"{None if context is None else tuple(context.shape)}")
        check_ids(target, self.config.item_vocab_sizes, "target")
        check_ids(history, self.config.item_vocab_sizes, "history")
        if context is not None:
            check_ids(context, self.config.context_vocab_sizes, "context")
        parts = [self.user_interest(target, history), self.embed_items(target)]  # 2 x (B, G*D)
        if context is not None:
            parts += [table(context[:, f]) for f, table in enumerate(self.context_embeddings)]
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)  # (B,)

    # ----------------------------------------------------------------- Eqs. (2), (4)-(7)
    def mba_regularization(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Mini-batch aware L2, Eq. (6): sum_j alpha_mj / n_j * ||w_j||^2 over item-field ids j that
        appear in this mini-batch (alpha_mj = 1), so untouched rows of the huge tables cost nothing.
        Context tables are left unregularised (they are small)."""
        ids = torch.cat([target.unsqueeze(1), history], dim=1)  # (B, L+1, G)
        total = target.new_zeros((), dtype=torch.float)
        for g, table in enumerate(self.item_embeddings):
            present = torch.unique(ids[..., g])
            present = present[present != 0]  # (U,) ids seen in the batch; padding is not a feature
            n_j = getattr(self, f"id_frequency_{g}")[present]  # (U,)
            total = total + (table.weight[present].pow(2).sum(-1) / n_j).sum()
        return total

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, *,
             target: torch.Tensor | None = None,
             history: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (2): mean negative log-likelihood, plus lambda * Eq. (6) when mba_lambda > 0
        (then pass the batch's `target` and `history` so the regulariser knows which ids it saw).
        labels: (B,) in {0, 1}; other values and an empty batch raise a ValueError (`check_labels`).
        """
        check_labels(logits, labels)
        nll = F.binary_cross_entropy_with_logits(logits, labels.float())
        if self.config.mba_lambda == 0.0:
            return nll
        if target is None or history is None:
            raise ValueError("mba_lambda > 0: pass target= and history= to loss()")
        return nll + self.config.mba_lambda * self.mba_regularization(target, history)

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def predict(self, *inputs, **kw) -> torch.Tensor:
        """Click probabilities sigmoid(forward(...)), (B,) float, detached: forward's inputs, run in
        eval mode for the call (the modules' train/eval modes are restored after it)."""
        with _eval_mode(self):
            return torch.sigmoid(self(*inputs, **kw))  # (B,)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `DIN.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> DIN:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, DINConfig, path, map_location)
        return _load_weights(cls.from_config(config), ckpt, path, map_location)
