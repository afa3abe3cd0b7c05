"""FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction.

Mao, Zhu, Su, Cai, Li, Dong. AAAI 2023. https://arxiv.org/abs/2304.00902
Official code: `model_zoo/FinalMLP` of FuxiCTR (https://github.com/reczoo/FuxiCTR), by the authors.

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import FinalMLP, FinalMLPConfig
    model = FinalMLP(FinalMLPConfig(field_dims=(10, 20, 5), dim=4, hidden1=(16,), hidden2=(8,),
                                    gate_hidden=(8,), gate1_fields=(0,), gate2_fields=(1,),
                                    num_heads=2))
    sparse = torch.randint(0, 5, (8, 3))                # (B, F) int64, 0 = padding
    logits = model(sparse)                              # (B,) logits of Eq. (5)
    loss = model.loss(logits, torch.randint(0, 2, (8,)))
    probs = model.predict(sparse)  # (B,) click probabilities, in eval mode
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = FinalMLP.load("m.pt")  # rebuilt from this file alone, in eval mode
    g1, g2 = model.gate_weights(sparse)                 # (B, F) mean gate per field, each stream

Two plain MLPs read the same field embeddings, each through its own feature gate (note, "Idea"):
stream k multiplies the flat embedding by 2 * sigmoid(Gate_k(x_k)), where x_k is the embedding of
the fields that condition that stream's gate (the user for one, the item for the other; none: a
learned vector, one global gate). A multi-head bilinear fusion then combines the two stream
outputs: each head j is b + w1^T o1j + w2^T o2j + o1j^T W3j o2j, and the heads are summed into the
logit. `gate_weights()` reads the gates per field (the note's figure).

Notation (the same in the note, README.md):
    B: batch size      F: number of sparse fields      Fd: number of dense fields
    D: embedding dim   N = F + Fd: fields seen by the streams      d = N * D: flat embedding width
    d1, d2: output widths of the two MLP streams      k: number of fusion heads

Inputs are plain tensors so the file can be used without any data pipeline:
    sparse: (B, F) int64, field f takes ids in [0, field_dims[f]); id 0 = padding / unknown
    dense:  (B, Fd) float, already normalised; omitted when Fd = 0

NOTE: the gate's context fields have their own embedding table, as in the official code
    (`FeatureSelection` builds a separate `FeatureEmbedding`); the paper only says the gate is
    conditioned on "user features" or "item features".
NOTE: the k heads' biases and linear terms are summed into one bias b and one w1^T o1 + w2^T o2:
    sum_j (b_j + w1j^T o1j + w2j^T o2j) is exactly that, with fewer parameters to name.
NOTE: dense fields (absent from the paper's data sets) get one vector each, scaled by the value,
    so that they are gated like any other field.
NOTE: Linear layers start as in the official code (Xavier-normal weights, zero biases), so every
    gate starts near 2 * sigmoid(0) = 1: both streams start from the plain embedding.
"""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(kw_only=True)
class FinalMLPConfig:
    field_dims: tuple[int, ...]  # vocabulary size of each sparse field, padding id 0 included
    dense_dim: int = 0  # number of dense (float) fields
    dim: int = 10  # D; BARS' Frappe configuration (FinalMLP_frappe_x1) uses 10
    hidden1: tuple[int, ...] = (400,)  # stream 1 MLP; the paper tunes both streams per data set
    hidden2: tuple[int, ...] = (100,)  # stream 2 MLP; a narrower stream is a different view
    dropout: float = 0.0  # both streams
    batch_norm: bool = False  # both streams; not in the paper's equations, BARS uses it on Frappe
    use_gates: bool = True  # False: both streams read the plain embedding (the paper's DualMLP)
    gate_hidden: tuple[int, ...] = (400,)  # the gate MLP's hidden widths (fs_hidden_units)
    gate1_fields: tuple[int, ...] = ()  # sparse fields conditioning stream 1's gate; (): global
    gate2_fields: tuple[int, ...] = ()  # sparse fields conditioning stream 2's gate; (): global
    num_heads: int = 1  # k; must divide both d1 and d2
    embed_init_std: float = 1e-2

    def __post_init__(self) -> None:
        self.field_dims = tuple(int(v) for v in self.field_dims)
        for name in ("hidden1", "hidden2", "gate_hidden", "gate1_fields", "gate2_fields"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.field_dims) == 0 and self.dense_dim == 0:
            raise ValueError("FinalMLPConfig needs at least one sparse or dense field")
        if any(v < 2 for v in self.field_dims):
            raise ValueError(
                f"every field needs vocabulary size >= 2 (id 0 is padding), got {self.field_dims}"
            )
        if self.dense_dim < 0 or self.dim < 1:
            raise ValueError(f"dense_dim >= 0 and dim >= 1 expected, got {self.dense_dim}, "
                             f"{self.dim}")
        for name in ("hidden1", "hidden2"):
            widths = getattr(self, name)
            if len(widths) == 0 or any(h < 1 for h in widths):
                raise ValueError(f"{name} must be one or more widths >= 1, got {widths}")
        if any(h < 1 for h in self.gate_hidden):
            raise ValueError(f"gate_hidden widths must be >= 1, got {self.gate_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("gate1_fields", "gate2_fields"):
            fields = getattr(self, name)
            in_range = all(0 <= f < len(self.field_dims) for f in fields)
            if not in_range or len(set(fields)) < len(fields):
                raise ValueError(f"{name} must be distinct sparse field indices in "
                                 f"0..{len(self.field_dims) - 1}, got {fields}")
        d1, d2, k = self.hidden1[-1], self.hidden2[-1], self.num_heads
        if k < 1 or d1 % k or d2 % k:
            raise ValueError(f"num_heads must be >= 1 and divide both stream widths "
                             f"{d1} and {d2}, got {k}")


class FieldEmbedding(nn.Module):
    """One table for the given sparse fields: id v of field f lives at row offsets[f] + v.

    Also holds one vector per dense field, scaled by its value.
    """

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

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
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


class FeatureGate(nn.Module):
    """Stream-specific feature selection, Eqs. (2)-(3): h = 2 * sigmoid(Gate(x)) ⊙ e.

    x is the embedding of the context fields (their own table), or a learned vector when there are
    none. Gate is an MLP (ReLU hidden layers, no batch norm or dropout) ending in d = N * D logits.
    """

    def __init__(self, field_dims: tuple[int, ...], fields: tuple[int, ...], dim: int,
                 hidden: tuple[int, ...], out_dim: int, init_std: float):
        super().__init__()
        self.register_buffer("fields", torch.tensor(fields, dtype=torch.long), persistent=False)
        if fields:  # x = the context fields' embeddings, flattened
            self.context = FieldEmbedding(tuple(field_dims[f] for f in fields), 0, dim, init_std)
            in_dim = len(fields) * dim
        else:  # x = one learned vector: the same gate for every example
            self.context, in_dim = None, dim
            self.bias = nn.Parameter(torch.zeros(dim))
        self.mlp = MLP(in_dim, hidden, 0.0, False)
        self.out = nn.Linear(self.mlp.out_dim, out_dim)

    def logits(self, sparse: torch.Tensor) -> torch.Tensor:
        """g = Gate(x), Eq. (2). sparse: (B, F). Returns (B, d)."""
        if self.context is None:
            x = self.bias.expand(sparse.shape[0], -1)  # (B, D)
        else:
            x = self.context(sparse[:, self.fields]).flatten(1)  # (B, |fields| * D)
        return self.out(self.mlp(x))  # (B, d)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        """The gate 2 * sigmoid(g), Eq. (3), in (0, 2) with 1 at g = 0. Returns (B, d)."""
        return 2 * torch.sigmoid(self.logits(sparse))  # (B, d)


class BilinearFusion(nn.Module):
    """Multi-head bilinear fusion, Eqs. (4)-(5): the heads split o1 and o2 into k chunks each.

    sum_j BF(o1j, o2j) = b + w1^T o1 + w2^T o2 + sum_j o1j^T W3j o2j   (the heads' b and w summed)
    """

    def __init__(self, d1: int, d2: int, num_heads: int):
        super().__init__()
        self.k = num_heads
        self.w1 = nn.Linear(d1, 1)  # w1 and the bias b
        self.w2 = nn.Linear(d2, 1, bias=False)  # w2
        self.W3 = nn.Parameter(torch.empty(num_heads, d1 // num_heads, d2 // num_heads))
        # the official code's init: Xavier-normal of W3 stored as one (k * d1/k * d2/k, 1) matrix
        nn.init.normal_(self.W3, std=(2.0 / (1 + self.W3.numel())) ** 0.5)

    def forward(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        """o1: (B, d1), o2: (B, d2). Returns (B,) logits."""
        B = o1.shape[0]
        o1j = o1.reshape(B, self.k, -1)  # (B, k, d1/k): head j holds dims j*d1/k .. (j+1)*d1/k - 1
        o2j = o2.reshape(B, self.k, -1)  # (B, k, d2/k)
        cross = torch.einsum("bki,kij,bkj->b", o1j, self.W3, o2j)  # sum_j o1j^T W3j o2j: (B,)
        return self.w1(o1).squeeze(-1) + self.w2(o2).squeeze(-1) + cross  # (B,)


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


class FinalMLP(nn.Module):
    """Embedding -> two gated views (Eqs. (2)-(3)) -> two MLPs (Eq. (1)) -> bilinear fusion."""

    def __init__(self, config: FinalMLPConfig | None = None, **overrides) -> None:
        super().__init__()
        if config is not None and not isinstance(config, FinalMLPConfig):
            raise TypeError(f"expected FinalMLPConfig, got {type(config).__name__}")
        c = (FinalMLPConfig(**overrides) if config is None
             else dataclasses.replace(config, **overrides))
        self.config = c
        d = (len(c.field_dims) + c.dense_dim) * c.dim  # width of the flat embedding e
        self.embedding = FieldEmbedding(c.field_dims, c.dense_dim, c.dim, c.embed_init_std)
        if c.use_gates:
            self.gate1 = FeatureGate(c.field_dims, c.gate1_fields, c.dim, c.gate_hidden, d,
                                     c.embed_init_std)
            self.gate2 = FeatureGate(c.field_dims, c.gate2_fields, c.dim, c.gate_hidden, d,
                                     c.embed_init_std)
        self.mlp1 = MLP(d, c.hidden1, c.dropout, c.batch_norm)
        self.mlp2 = MLP(d, c.hidden2, c.dropout, c.batch_norm)
        self.fusion = BilinearFusion(self.mlp1.out_dim, self.mlp2.out_dim, c.num_heads)
        for m in self.modules():  # the official code's init for every Linear layer
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def streams(self, sparse: torch.Tensor,
                dense: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The two gated views of the embedding, h1 and h2 of Eq. (3). Returns (B, d) twice."""
        e = self.embedding(sparse, dense).flatten(1)  # e = [e_1; ...; e_N]: (B, d)
        if not self.config.use_gates:
            return e, e  # DualMLP: both streams read the same input
        h1 = self.gate1(sparse) * e  # Eq. (3): 2 sigmoid(g1) ⊙ e, (B, d)
        h2 = self.gate2(sparse) * e  # (B, d)
        return h1, h2

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (5) before the sigmoid: the sum over heads of the bilinear fusion.

        Args:
            sparse: (B, F) int64, 0 = padding.
            dense: (B, Fd) float or None when the model has no dense fields.
        Returns:
            (B,) float logits; a batch of 0 rows gives an empty (0,) tensor.
        """
        check_inputs(sparse, dense, self.config.field_dims, self.config.dense_dim)
        if sparse.shape[0] == 0:  # batch norm cannot take 0 rows; there is nothing to score
            return self.fusion.W3.new_zeros(0)
        h1, h2 = self.streams(sparse, dense)
        o1 = self.mlp1(h1)  # Eq. (1), stream 1: (B, d1)
        o2 = self.mlp2(h2)  # stream 2: (B, d2)
        return self.fusion(o1, o2)  # (B,)

    @torch.no_grad()
    def gate_weights(self, sparse: torch.Tensor,
                     dense: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stream's gate 2 * sigmoid(g) averaged over the D coordinates of each field:
        1 leaves a field as it is, above 1 amplifies it, below 1 damps it. Fields: the F sparse
        ones, then the Fd dense ones. Returns two (B, N) float tensors (all ones without gates)."""
        check_inputs(sparse, dense, self.config.field_dims, self.config.dense_dim)
        c = self.config
        B, N = sparse.shape[0], len(c.field_dims) + c.dense_dim
        if not c.use_gates:
            ones = torch.ones(B, N, device=sparse.device)
            return ones, ones.clone()
        return tuple(g(sparse).reshape(B, N, c.dim).mean(-1) for g in (self.gate1, self.gate2))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. (6): mean log loss. labels: (B,) in {0, 1}; other values and an empty batch raise a
        ValueError (`check_labels`)."""
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
        """torch.save {"model", "config", "state_dict"} for `FinalMLP.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> "FinalMLP":
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, FinalMLPConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
