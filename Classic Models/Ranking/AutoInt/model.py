"""AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks.

Song, Shi, Xiao, Duan, Xu, Zhang, Tang. CIKM 2019. https://arxiv.org/abs/1810.11921
Official code: https://github.com/DeepGraphLearning/RecommenderSystems (featureRec/autoint, TF 1.x).

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import AutoInt, AutoIntConfig
    model = AutoInt(AutoIntConfig(field_dims=(10, 20, 5), dense_dim=1, dim=8,
                                  attention_dim=4, dnn_hidden=(16,)))    # AutoInt+
    sparse = torch.randint(0, 5, (8, 3))                # (B, F) int64, 0 = padding
    dense = torch.rand(8, 1)                            # (B, Fd) float
    logits = model(sparse, dense)                       # (B,) logits of Eq. (9) + DNN
    loss = model.loss(logits, torch.randint(0, 2, (8,)))
    probs = model.predict(sparse, dense)  # (B,) click probabilities, in eval mode
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = AutoInt.load("m.pt")  # rebuilt from this file alone, in eval mode
    alpha = model.attention_maps(sparse, dense)         # per layer (B, Hh, M, M), rows sum to 1

Every field becomes one vector; multi-head self-attention over the set of field vectors lets each
field pick which other fields to interact with, and stacking interacting layers builds higher-order
combinations (note, "Idea"). Residual connections keep the lower-order terms. AutoInt+ adds a plain
feed-forward network on the same embeddings and sums the two logits.

Notation (the same in the note, README.md):
    B: batch size     F: number of sparse fields     Fd: number of dense fields
    M = F + Fd: number of fields     D: embedding dim (d in the paper)
    A: attention dim per head (d' in the paper)     Hh: number of heads     H: DNN hidden width

Inputs are plain tensors so the file can be used without any data pipeline:
    sparse: (B, F) int64, field f takes ids in [0, field_dims[f]); id 0 = padding / unknown
    dense:  (B, Fd) float, already normalised; omitted when Fd = 0

NOTE: `scale_attention=True` divides the scores by sqrt(A), as the official code does; the
    paper's Eq. (5) is the plain inner product, which is the default here.
NOTE: the official interacting layer also puts a bias and a ReLU on the query/key/value/residual
    projections, dropout on the attention weights and on the embeddings, and a layer norm after
    each layer; none of these is in the paper's Eqs. (5)-(8), which this file follows (note,
    "Deviations from the paper").
NOTE: AutoInt+ combines the two parts by summing their logits; the paper says only that the
    feed-forward network is "jointly trained" beside the interacting layers.
"""

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(kw_only=True)
class AutoIntConfig:
    field_dims: tuple[int, ...]  # vocabulary size of each sparse field, padding id 0 included
    dense_dim: int = 0  # number of dense (float) fields, each embedded as v_m * x_m (Eq. (4))
    dim: int = 16  # the paper's setting, d = 16
    num_layers: int = 3  # the paper's setting; more layers = higher orders
    num_heads: int = 2  # the paper's setting
    attention_dim: int = 32  # d' per head, the paper's setting
    residual: bool = True  # Eq. (8); the paper's ablation shows it helps
    scale_attention: bool = False  # Eq. (5) is an unscaled inner product
    dnn_hidden: tuple[int, ...] = ()  # () = AutoInt; e.g. (200, 200) = AutoInt+
    dropout: float = 0.0  # on the AutoInt+ feed-forward network
    batch_norm: bool = False
    embed_init_std: float = 1e-2

    def __post_init__(self) -> None:
        self.field_dims = tuple(int(v) for v in self.field_dims)
        if len(self.field_dims) + self.dense_dim < 1:
            raise ValueError("AutoIntConfig needs at least one sparse or dense field")
        if any(v < 2 for v in self.field_dims):
            raise ValueError(
                f"every field needs vocabulary size >= 2 (id 0 is padding), got {self.field_dims}"
            )
        for name in ("dim", "num_layers", "num_heads", "attention_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dense_dim < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"bad dense_dim {self.dense_dim} or dropout {self.dropout}")
        self.dnn_hidden = tuple(int(h) for h in self.dnn_hidden)
        if any(h < 1 for h in self.dnn_hidden):
            raise ValueError(f"dnn_hidden widths must be positive, got {self.dnn_hidden}")


class FieldEmbedding(nn.Module):
    """One table for all sparse fields (id v of field f at row offsets[f] + v) + one vector per
    dense field scaled by its value, Eqs. (2) and (4)."""

    def __init__(self, field_dims: tuple[int, ...], dense_dim: int, dim: int, init_std: float):
        super().__init__()
        offsets = [0]
        for v in field_dims[:-1]:
            offsets.append(offsets[-1] + v)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(max(sum(field_dims), 1), dim)
        self.dense = nn.Parameter(torch.empty(dense_dim, dim))
        nn.init.normal_(self.table.weight, std=init_std)
        nn.init.normal_(self.dense, std=init_std)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if sparse.shape[1] > 0:
            e = self.table(sparse + self.offsets)  # Eq. (2): e_i = V_i x_i, (B, F, D)
            parts.append(e * (sparse > 0).unsqueeze(-1))  # padding id 0 -> zero vector
        if dense is not None and dense.shape[1] > 0:
            parts.append(dense.unsqueeze(-1) * self.dense)  # Eq. (4): e_m = v_m x_m, (B, Fd, D)
        return torch.cat(parts, dim=1)  # (B, M, D)


class MLP(nn.Module):
    """Linear -> (BatchNorm) -> ReLU -> Dropout per hidden layer; no output layer."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float, batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers.append(nn.Linear(in_dim, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            in_dim = h
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim
        self.batch_norm = batch_norm and len(hidden) > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_norm and self.training and x.shape[0] == 1:
            raise ValueError("batch_norm=True needs at least 2 rows per batch in training mode, "
                             "got 1; score a single row in eval mode (model.eval())")
        return self.net(x)


def check_inputs(
    sparse: torch.Tensor, dense: torch.Tensor | None, field_dims: tuple[int, ...], dense_dim: int
) -> None:
    """Fail early, with the expected shape and dtype in the message."""
    if sparse.dim() != 2 or sparse.dtype != torch.long or sparse.shape[1] != len(field_dims):
        raise ValueError(f"sparse must be (B, {len(field_dims)}) int64, got "
                         f"{tuple(sparse.shape)} {sparse.dtype}")
    if dense_dim > 0:
        if dense is None or dense.dim() != 2 or dense.shape != (sparse.shape[0], dense_dim):
            got = None if dense is None else tuple(dense.shape)
            raise ValueError(f"dense must be (B, {dense_dim}) float, got {got}")
        if not dense.is_floating_point():
            raise ValueError(f"dense must be a float tensor, got {dense.dtype}")
        check_finite(dense)
    elif dense is not None and dense.numel() > 0:
        raise ValueError("model was built with dense_dim=0 but dense features were given")
    check_ids(sparse, field_dims)


def check_finite(dense: torch.Tensor) -> None:
    """A NaN or inf dense value would spread into the logit silently. One pass per forward."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # an exported graph cannot raise; validate dense values before calling it
    finite = torch.isfinite(dense)  # (B, Fd)
    if not finite.all():
        row, col = (~finite).nonzero()[0].tolist()
        raise ValueError(f"dense field {col}: row {row} holds {dense[row, col].item()}; "
                         "expected finite values")


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


def check_ids(sparse: torch.Tensor, field_dims: tuple[int, ...]) -> None:
    """Every id of field f must lie in [0, field_dims[f]): one table holds all fields, so an id
    past the end would silently read the next field's rows. One min/max pass per forward."""
    if sparse.shape[0] == 0 or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # an exported graph cannot raise; validate ids before calling it
    lo, hi = torch.aminmax(sparse, dim=0)  # (F,), (F,)
    for f, (low, high) in enumerate(torch.stack([lo, hi], dim=1).tolist()):
        if low < 0 or high >= field_dims[f]:
            raise ValueError(f"sparse field {f}: id {low if low < 0 else high} is out of range; "
                             f"expected 0..{field_dims[f] - 1} (field_dims[{f}] = {field_dims[f]}, "
                             "0 = padding)")


class InteractingLayer(nn.Module):
    """One interacting layer: multi-head self-attention over fields + residual, Eqs. (5)-(8)."""

    def __init__(self, in_dim: int, attention_dim: int, num_heads: int, residual: bool,
                 scale: bool):
        super().__init__()
        self.heads, self.att_dim, self.scale = num_heads, attention_dim, scale
        out = attention_dim * num_heads
        self.W_query = nn.Linear(in_dim, out, bias=False)
        self.W_key = nn.Linear(in_dim, out, bias=False)
        self.W_value = nn.Linear(in_dim, out, bias=False)
        self.W_res = nn.Linear(in_dim, out, bias=False) if residual else None
        self.out_dim = out

    @torch.no_grad()
    def attention(self, e: torch.Tensor) -> torch.Tensor:
        """The weights alpha of Eq. (5) that `forward` uses, for reading. e: (B, M, D_in).

        Returns (B, Hh, M, M): row m is how field m spreads its attention over the M fields (sums
        to 1).
        """
        B, M, _ = e.shape
        Hh, A = self.heads, self.att_dim
        q = self.W_query(e).view(B, M, Hh, A).transpose(1, 2)  # (B, Hh, M, A)
        k = self.W_key(e).view(B, M, Hh, A).transpose(1, 2)  # (B, Hh, M, A)
        scores = q @ k.transpose(-1, -2)  # (B, Hh, M, M)
        if self.scale:
            scores = scores / math.sqrt(A)
        return torch.softmax(scores, dim=-1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """e: (B, M, D_in) field vectors. Returns (B, M, Hh * A)."""
        B, M, _ = e.shape
        Hh, A = self.heads, self.att_dim
        q = self.W_query(e).view(B, M, Hh, A).transpose(1, 2)  # (B, Hh, M, A)
        k = self.W_key(e).view(B, M, Hh, A).transpose(1, 2)  # (B, Hh, M, A)
        v = self.W_value(e).view(B, M, Hh, A).transpose(1, 2)  # (B, Hh, M, A)
        scores = q @ k.transpose(-1, -2)  # Eq. (5), psi = <W_Q e_m, W_K e_k>: (B, Hh, M, M)
        if self.scale:
            scores = scores / math.sqrt(A)
        alpha = torch.softmax(scores, dim=-1)  # Eq. (5): over the fields k
        heads = alpha @ v  # Eq. (6): (B, Hh, M, M) @ (B, Hh, M, A) -> (B, Hh, M, A)
        out = heads.transpose(1, 2).reshape(B, M, Hh * A)  # Eq. (7): concat heads, (B, M, Hh*A)
        if self.W_res is not None:
            out = out + self.W_res(e)  # Eq. (8)
        return torch.relu(out)  # Eq. (8): ReLU(e~_m + W_Res e_m)


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


class AutoInt(nn.Module):
    """Embedding -> interacting layers -> output layer (+ DNN for AutoInt+)."""

    def __init__(self, config: AutoIntConfig):
        super().__init__()
        if not isinstance(config, AutoIntConfig):
            raise TypeError(f"expected AutoIntConfig, got {type(config).__name__}")
        self.config = c = config
        M = len(c.field_dims) + c.dense_dim
        self.embedding = FieldEmbedding(c.field_dims, c.dense_dim, c.dim, c.embed_init_std)
        layers, in_dim = [], c.dim
        for _ in range(c.num_layers):
            layers.append(InteractingLayer(in_dim, c.attention_dim, c.num_heads, c.residual,
                                           c.scale_attention))
            in_dim = layers[-1].out_dim
        self.layers = nn.ModuleList(layers)
        self.output = nn.Linear(M * in_dim, 1)  # Eq. (9): w^T (e_1^Res ⊕ ... ⊕ e_M^Res) + b
        if c.dnn_hidden:  # AutoInt+
            self.dnn = MLP(M * c.dim, c.dnn_hidden, c.dropout, c.batch_norm)
            self.dnn_out = nn.Linear(self.dnn.out_dim, 1, bias=False)
        else:
            self.dnn = None

    def interacting_layers(self, e: torch.Tensor) -> torch.Tensor:
        """Stacked interacting layers. e: (B, M, D). Returns (B, M, Hh * A).

        No position or field index enters here, so permuting the fields of e permutes the output
        the same way (tests/test_autoint.py checks it); field identity comes from the embeddings.
        """
        for layer in self.layers:  # loop over the few layers, not over samples
            e = layer(e)
        return e

    @torch.no_grad()
    def attention_maps(self, sparse: torch.Tensor, dense: torch.Tensor | None = None
                       ) -> list[torch.Tensor]:
        """The attention weights of every interacting layer, for reading which fields combine.

        Args: as `forward`. Returns a list of num_layers tensors (B, Hh, M, M); in each, row m of a
        head is field m's softmax over the M fields (Eq. (5)).
        """
        check_inputs(sparse, dense, self.config.field_dims, self.config.dense_dim)
        e, maps = self.embedding(sparse, dense), []  # (B, M, D)
        for layer in self.layers:  # the same pass as interacting_layers(), keeping alpha
            maps.append(layer.attention(e))
            e = layer(e)
        return maps

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (9) before the sigmoid (+ the DNN logit for AutoInt+).

        Args:
            sparse: (B, F) int64, 0 = padding.
            dense: (B, Fd) float or None when the model has no dense fields.
        Returns:
            (B,) float logits; a batch of 0 rows gives an empty (0,) tensor.
        """
        check_inputs(sparse, dense, self.config.field_dims, self.config.dense_dim)
        if sparse.shape[0] == 0:  # batch norm cannot take 0 rows; there is nothing to score
            return self.output.weight.new_zeros(0)
        e = self.embedding(sparse, dense)  # (B, M, D)
        B = e.shape[0]
        h = self.interacting_layers(e)  # (B, M, Hh * A)
        logit = self.output(h.reshape(B, -1)).squeeze(-1)  # (B,)
        if self.dnn is not None:
            logit = logit + self.dnn_out(self.dnn(e.reshape(B, -1))).squeeze(-1)
        return logit

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. (10): log loss. Returns a scalar.

        labels: (B,) in {0, 1}. Other values and an empty batch raise a ValueError (`check_labels`).
        """
        check_labels(logits, labels)
        return F.binary_cross_entropy_with_logits(logits, labels.float())

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def predict(self, *inputs, **kw) -> torch.Tensor:
        """Click probabilities sigmoid(forward(...)), (B,) float, detached: forward's inputs, run in
        eval mode for the call (the modules' train/eval modes are restored after it)."""
        with _eval_mode(self):
            return torch.sigmoid(self(*inputs, **kw))  # (B,)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `AutoInt.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> "AutoInt":
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, AutoIntConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
