"""DeepFM: A Factorization-Machine based Neural Network for CTR Prediction.

Guo, Tang, Ye, Li, He. IJCAI 2017. https://arxiv.org/abs/1703.04247
Official code: none released by the authors (the paper's numbers come from their internal code).

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import DeepFM, DeepFMConfig
    model = DeepFM(DeepFMConfig(field_dims=(10, 20, 5), dense_dim=1, hidden=(16,)))
    sparse = torch.randint(1, 5, (4, 3))  # (B, F) int64, 0 = padding
    dense = torch.rand(4, 1)  # (B, Fd) float
    logits = model(sparse, dense)  # (B,) y_FM + y_DNN, Eq. (1) before the sigmoid
    loss = model.loss(logits, torch.tensor([1, 0, 0, 1]))
    probs = model.predict(sparse, dense)  # (B,) click probabilities, in eval mode
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = DeepFM.load("m.pt")  # rebuilt from this file alone, in eval mode

DeepFM puts a factorization machine (FM) and a deep network side by side on ONE shared embedding
(note, Idea): the FM part models first- and second-order feature interactions explicitly, the deep part
models high-order interactions implicitly, and no hand-made cross features are needed (unlike the
wide part of Wide & Deep).

Notation (the same in the note, README.md):
    B: batch size            F: number of sparse (categorical) fields
    Fd: number of dense fields     N = F + Fd: number of fields seen by the FM
    D: embedding dim (the FM's latent factor size k in the paper)
    H: hidden width of a DNN layer

Inputs are plain tensors so the file can be used without any data pipeline:
    sparse: (B, F) int64, field f takes ids in [0, field_dims[f]); id 0 = padding / unknown
    dense:  (B, Fd) float, already normalised (e.g. log or min-max); omitted when Fd = 0

NOTE: dense fields enter the FM the way the FM paper treats real-valued features: field j has
    its own vector v_j and first-order weight w_j, scaled by the value x_j. The DeepFM paper only
    describes categorical fields (x_i in {0, 1}); for them this is exactly Eq. (2).
NOTE: the paper uses dropout 0.5 and no batch norm; both are configurable here because small data
    sets (Frappe) train better with the settings listed in the note's Results section.
"""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(kw_only=True)
class DeepFMConfig:
    field_dims: tuple[int, ...]  # vocabulary size of each sparse field, padding id 0 included
    dense_dim: int = 0  # number of dense (float) fields
    dim: int = 10  # k, the FM latent size (BARS uses 10 on Frappe)
    hidden: tuple[int, ...] = (400, 400, 400)  # the paper's setting, 400-400-400
    dropout: float = 0.5  # the paper's setting
    batch_norm: bool = False  # not in the paper; helps on small data (see note)
    embed_init_std: float = 1e-2  # small init keeps the FM term near 0 at the start

    def __post_init__(self) -> None:
        self.field_dims = tuple(int(v) for v in self.field_dims)
        if len(self.field_dims) == 0 and self.dense_dim == 0:
            raise ValueError("DeepFMConfig needs at least one sparse or dense field")
        if any(v < 2 for v in self.field_dims):
            raise ValueError(
                f"every field needs vocabulary size >= 2 (id 0 is padding), got {self.field_dims}"
            )
        if self.dense_dim < 0 or self.dim < 1:
            raise ValueError(f"dense_dim >= 0 and dim >= 1 expected, got {self.dense_dim}, "
                             f"{self.dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")


class FieldEmbedding(nn.Module):
    """One table for all sparse fields: id v of field f lives at row offsets[f] + v.

    Also holds one vector per dense field, scaled by its value (FM's real-valued features).
    """

    def __init__(self, field_dims: tuple[int, ...], dense_dim: int, dim: int, init_std: float):
        super().__init__()
        offsets = [0]
        for v in field_dims[:-1]:
            offsets.append(offsets[-1] + v)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("sizes", torch.tensor(field_dims, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(max(sum(field_dims), 1), dim)
        self.dense = nn.Parameter(torch.empty(dense_dim, dim))
        nn.init.normal_(self.table.weight, std=init_std)
        nn.init.normal_(self.dense, std=init_std)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if sparse.shape[1] > 0:
            e = self.table(sparse + self.offsets)  # (B, F, D)
            parts.append(e * (sparse > 0).unsqueeze(-1))  # padding id 0 -> zero vector
        if dense is not None and dense.shape[1] > 0:
            parts.append(dense.unsqueeze(-1) * self.dense)  # (B, Fd, 1) * (Fd, D) -> (B, Fd, D)
        return torch.cat(parts, dim=1)  # (B, N, D)


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


def fm_second_order(e: torch.Tensor) -> torch.Tensor:
    """Eq. (2), second term, in O(N D): sum_{i<j} <v_i, v_j> x_i x_j.

    Uses sum_{i<j} a_i a_j = 1/2 [(sum_i a_i)^2 - sum_i a_i^2] per factor (FM paper, Lemma 3.1).

    Args:
        e: (B, N, D) the field vectors already scaled by their values, e_i = v_i x_i.
    Returns:
        (B,) the pairwise interaction term.
    """
    square_of_sum = e.sum(dim=1).pow(2)  # (B, D)
    sum_of_square = e.pow(2).sum(dim=1)  # (B, D)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)  # (B,)


def fm_pair_interactions(e: torch.Tensor) -> torch.Tensor:
    """The terms of Eq. (2)'s double sum one by one: <v_i, v_j> x_i x_j for every field pair.

    For inspection only (the note's heatmap); the model computes their sum in O(N D) with
    `fm_second_order()`. The strict upper triangle of each (N, N) matrix sums to that value.

    Args:
        e: (B, N, D) the field vectors already scaled by their values, e_i = v_i x_i.
    Returns:
        (B, N, N) matrix of <e_i, e_j>; the diagonal (<e_i, e_i>) is not part of Eq. (2).
    """
    return e @ e.transpose(1, 2)  # (B, N, D) @ (B, D, N) -> (B, N, N)


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


class DeepFM(nn.Module):
    """FM component + deep component on a shared embedding (note, Maths)."""

    def __init__(self, config: DeepFMConfig):
        super().__init__()
        if not isinstance(config, DeepFMConfig):
            raise TypeError(f"expected DeepFMConfig, got {type(config).__name__}")
        self.config = c = config
        n_fields = len(c.field_dims) + c.dense_dim
        # Shared by the FM and the DNN: the paper's key difference from FNN / Wide & Deep.
        self.embedding = FieldEmbedding(c.field_dims, c.dense_dim, c.dim, c.embed_init_std)
        # First-order weights w_i: a 1-dim "embedding" of every feature.
        self.first_order = FieldEmbedding(c.field_dims, c.dense_dim, 1, c.embed_init_std)
        self.bias = nn.Parameter(torch.zeros(()))
        self.dnn = MLP(n_fields * c.dim, c.hidden, c.dropout, c.batch_norm)
        self.dnn_out = nn.Linear(self.dnn.out_dim, 1)

    def fm(self, e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Eq. (2): y_FM = <w, x> + sum_{i<j} <V_i, V_j> x_i x_j, with the global bias.

        Args: e (B, N, D) scaled field vectors; w (B, N, 1) scaled first-order weights.
        Returns: (B,)
        """
        return self.bias + w.sum(dim=(1, 2)) + fm_second_order(e)

    def deep(self, e: torch.Tensor) -> torch.Tensor:
        """Eqs. (3)-(5): a^(0) = [e_1, ..., e_N] -> hidden layers -> one logit. Returns (B,)."""
        B = e.shape[0]
        a0 = e.reshape(B, -1)  # (B, N * D)
        return self.dnn_out(self.dnn(a0)).squeeze(-1)  # (B,)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (1) before the sigmoid: y_FM + y_DNN.

        Args:
            sparse: (B, F) int64, 0 = padding.
            dense: (B, Fd) float or None when the model has no dense fields.
        Returns:
            (B,) float logits; sigmoid gives the click probability. A batch of 0 rows gives an
            empty (0,) tensor.
        """
        check_inputs(sparse, dense, self.config.field_dims, self.config.dense_dim)
        if sparse.shape[0] == 0:  # batch norm cannot take 0 rows; there is nothing to score
            return self.bias.new_zeros(0)
        e = self.embedding(sparse, dense)  # (B, N, D)
        w = self.first_order(sparse, dense)  # (B, N, 1)
        return self.fm(e, w) + self.deep(e)  # (B,)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The paper's objective: log loss (binary cross-entropy) of the clicks; a scalar.

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
        """torch.save {"model", "config", "state_dict"} for `DeepFM.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> "DeepFM":
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, DeepFMConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
