"""Wide & Deep Learning for Recommender Systems.

Cheng, Koc, Harmsen, Shaked, Chandra, Aradhye, Anderson, Corrado, Chai, Ispir, Anil, Haque, Hong,
Jain, Liu, Shah. DLRS workshop at RecSys 2016. https://arxiv.org/abs/1606.07792
Official code: the TensorFlow estimator `tf.estimator.DNNLinearCombinedClassifier` (the paper's
open-sourced implementation, linked from the paper).

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import WideDeep, WideDeepConfig
    config = WideDeepConfig(field_dims=(10, 20, 5), hidden=(16,), cross_fields=((0, 1),))
    model = WideDeep(config)
    sparse = torch.randint(1, 5, (4, 3))  # (B, F) int64, 0 = padding
    logits = model(sparse)  # (B,) wide + deep logit, Eq. (4) before the sigmoid
    loss = model.loss(logits, torch.tensor([1, 0, 0, 1]))
    probs = model.predict(sparse)  # (B,) click probabilities, in eval mode
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = WideDeep.load("m.pt")  # rebuilt from this file alone, in eval mode

A wide linear model over raw sparse features and cross-product transformations MEMORISES feature
co-occurrences seen in training; a deep MLP over dense embeddings GENERALISES to unseen
combinations. Both are trained jointly on one logistic loss (note, Idea).

Notation (the same in the note, README.md):
    B: batch size      F: number of sparse fields      Fd: number of dense fields
    D: embedding dim   C: number of cross-product features      H: hidden width of a DNN layer

Inputs are plain tensors so the file can be used without any data pipeline:
    sparse: (B, F) int64, field f takes ids in [0, field_dims[f]); id 0 = padding / unknown
    dense:  (B, Fd) float, already normalised; omitted when Fd = 0

NOTE: cross-product features (Eq. (2)) are given as tuples of field indices, e.g. ((0, 1),) for
    user x item. A cross takes value 1 for the observed combination of ids: one exact weight per
    combination while their number is below `cross_buckets`, hashed into that many buckets above
    it. The official `crossed_column` always hashes (into `hash_bucket_size` buckets), so there
    two pairs can share a weight even when few combinations exist. A cross is "missing" (id 0)
    when any of its fields is padding.
NOTE: the paper trains the wide part with FTRL + L1 and the deep part with AdaGrad. torch has no
    FTRL; `wide_parameters()` / `deep_parameters()` let a caller use two optimisers. The demo uses
    one Adam for both (note, Training and serving).
"""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_HASH_MULT = 1_000_003  # odd multiplier of the cross hash (any large odd number works)
_HASH_MASK = (1 << 31) - 1  # keeps the running hash small enough to never overflow int64


@dataclass(kw_only=True)
class WideDeepConfig:
    field_dims: tuple[int, ...]  # vocabulary size of each sparse field, padding id 0 included
    dense_dim: int = 0  # number of dense (float) fields
    dim: int = 32  # paper Fig. 4 (Google Play): 32-dim embeddings
    hidden: tuple[int, ...] = (1024, 512, 256)  # paper Fig. 4: ReLU 1024, 512, 256
    dropout: float = 0.0  # the paper does not use dropout
    batch_norm: bool = False  # not in the paper; helps on small data (see note)
    cross_fields: tuple[tuple[int, ...], ...] = ()  # Eq. (2): fields crossed in the wide part
    cross_buckets: int = 1 << 20  # cap on rows per cross; larger products are hashed
    embed_init_std: float = 1e-2

    def __post_init__(self) -> None:
        self.field_dims = tuple(int(v) for v in self.field_dims)
        if len(self.field_dims) == 0 and self.dense_dim == 0:
            raise ValueError("WideDeepConfig needs at least one sparse or dense field")
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
        self.cross_fields = tuple(tuple(int(f) for f in c) for c in self.cross_fields)
        for c in self.cross_fields:
            if len(c) < 2 or len(set(c)) != len(c):
                raise ValueError(f"a cross needs >= 2 distinct fields, got {c}")
            if any(not 0 <= f < len(self.field_dims) for f in c):
                raise ValueError(f"cross {c} names a field outside 0..{len(self.field_dims) - 1}")
        if self.cross_buckets < 2:
            raise ValueError(f"cross_buckets must be >= 2, got {self.cross_buckets}")


class FieldEmbedding(nn.Module):
    """One table for all sparse fields: id v of field f lives at row offsets[f] + v."""

    def __init__(self, field_dims: tuple[int, ...], dim: int, init_std: float):
        super().__init__()
        offsets = [0]
        for v in field_dims[:-1]:
            offsets.append(offsets[-1] + v)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(max(sum(field_dims), 1), dim)
        nn.init.normal_(self.table.weight, std=init_std)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        e = self.table(sparse + self.offsets)  # (B, F, D)
        return e * (sparse > 0).unsqueeze(-1)  # padding id 0 -> zero vector


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


def cross_product_ids(
    sparse: torch.Tensor, fields: tuple[int, ...], field_dims: tuple[int, ...], buckets: int
) -> tuple[torch.Tensor, int]:
    """Eq. (2): phi_k(x) = prod_i x_i^{c_ki} for one-hot fields = one id per observed combination.

    Args:
        sparse: (B, F) int64 ids.
        fields: the fields crossed, e.g. (0, 1).
    Returns:
        ids (B,) int64 in [0, size), 0 when any crossed field is padding; and size (rows needed).
    """
    n_combos = 1
    for f in fields:
        n_combos *= field_dims[f]
    present = (sparse[:, list(fields)] > 0).all(dim=1)  # (B,)
    if n_combos < buckets:  # exact: mixed-radix index of the combination, shifted past padding
        idx = torch.zeros_like(sparse[:, 0])
        for f in fields:  # a loop over the (2-3) crossed fields, not over samples
            idx = idx * field_dims[f] + sparse[:, f]
        return torch.where(present, idx + 1, torch.zeros_like(idx)), n_combos + 1
    h = torch.zeros_like(sparse[:, 0])
    for f in fields:
        h = ((h * _HASH_MULT) ^ sparse[:, f]) & _HASH_MASK
    return torch.where(present, h % (buckets - 1) + 1, torch.zeros_like(h)), buckets


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


class WideDeep(nn.Module):
    """Wide linear model + deep MLP, summed into one logit (Eq. (4))."""

    def __init__(self, config: WideDeepConfig):
        super().__init__()
        if not isinstance(config, WideDeepConfig):
            raise TypeError(f"expected WideDeepConfig, got {type(config).__name__}")
        self.config = c = config
        # Wide part, Eq. (1): one weight per raw feature, cross-product feature, dense value.
        self.wide_raw = FieldEmbedding(c.field_dims, 1, init_std=0.0)
        cross_sizes = [cross_product_ids(torch.zeros(1, len(c.field_dims), dtype=torch.long), k,
                                         c.field_dims, c.cross_buckets)[1] for k in c.cross_fields]
        self.wide_cross = FieldEmbedding(tuple(cross_sizes), 1, init_std=0.0)
        self.wide_dense = nn.Linear(c.dense_dim, 1, bias=False) if c.dense_dim else None
        self.bias = nn.Parameter(torch.zeros(()))  # b of Eq. (4)
        # Deep part, Eq. (3): embeddings of the sparse fields, concatenated with the dense values.
        self.embedding = FieldEmbedding(c.field_dims, c.dim, c.embed_init_std)
        self.dnn = MLP(len(c.field_dims) * c.dim + c.dense_dim, c.hidden, c.dropout,
                       c.batch_norm)
        self.deep_out = nn.Linear(self.dnn.out_dim, 1, bias=False)

    def cross_features(self, sparse: torch.Tensor) -> torch.Tensor:
        """(B, C) int64 ids of the cross-product features, 0 = missing."""
        c = self.config
        if not c.cross_fields:
            return sparse.new_zeros(sparse.shape[0], 0)
        ids = [cross_product_ids(sparse, k, c.field_dims, c.cross_buckets)[0]
               for k in c.cross_fields]
        return torch.stack(ids, dim=1)  # (B, C)

    def wide(self, sparse: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        """Eq. (1) on [x, phi(x)]: w_wide^T [x, phi(x)] + b. Returns (B,)."""
        y = self.wide_raw(sparse).sum(dim=(1, 2))  # (B,)
        if self.config.cross_fields:
            y = y + self.wide_cross(self.cross_features(sparse)).sum(dim=(1, 2))
        if self.wide_dense is not None:
            y = y + self.wide_dense(dense).squeeze(-1)
        return y + self.bias

    def deep(self, sparse: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        """Eq. (3): a^(0) = [embeddings, dense] -> ReLU layers -> w_deep^T a^(lf). Returns (B,)."""
        B = sparse.shape[0]
        a = self.embedding(sparse).reshape(B, -1)  # (B, F * D)
        if dense is not None and dense.shape[1] > 0:
            a = torch.cat([a, dense], dim=1)  # (B, F * D + Fd)
        return self.deep_out(self.dnn(a)).squeeze(-1)  # (B,)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (4) before the sigmoid: w_wide^T [x, phi(x)] + w_deep^T a^(lf) + b.

        Args:
            sparse: (B, F) int64, 0 = padding.
            dense: (B, Fd) float or None when the model has no dense fields.
        Returns:
            (B,) float logits; sigmoid gives P(Y = 1 | x). A batch of 0 rows gives an empty (0,)
            tensor.
        """
        check_inputs(sparse, dense, self.config.field_dims, self.config.dense_dim)
        if sparse.shape[0] == 0:  # batch norm cannot take 0 rows; there is nothing to score
            return self.bias.new_zeros(0)
        return self.wide(sparse, dense) + self.deep(sparse, dense)

    def wide_parameters(self) -> list[nn.Parameter]:
        """For the paper's FTRL(+L1) on the wide part, if you have such an optimiser."""
        dense = [] if self.wide_dense is None else list(self.wide_dense.parameters())
        return [*self.wide_raw.parameters(), *self.wide_cross.parameters(), *dense, self.bias]

    def deep_parameters(self) -> list[nn.Parameter]:
        """For the paper's AdaGrad on the deep part."""
        return [*self.embedding.parameters(), *self.dnn.parameters(), *self.deep_out.parameters()]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The paper's objective: logistic loss of Eq. (4) on the labels. Returns a scalar.

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
        """torch.save {"model", "config", "state_dict"} for `WideDeep.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> "WideDeep":
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, WideDeepConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
