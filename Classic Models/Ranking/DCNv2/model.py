"""DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank
Systems.

Wang, Shivanna, Cheng, Jain, Lin, Hong, Chi. WWW 2021. https://arxiv.org/abs/2008.13535
Official code: the `Cross` layer of TensorFlow Recommenders
(https://github.com/tensorflow/recommenders, `tfrs.layers.dcn.Cross`), written by the authors.

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import DCNv2, DCNv2Config
    model = DCNv2(DCNv2Config(field_dims=(10, 20, 5), dense_dim=2, dim=4, hidden=(16,)))
    sparse = torch.randint(0, 5, (8, 3))                # (B, F) int64, 0 = padding
    dense = torch.rand(8, 2)                            # (B, Fd) float
    logits = model(sparse, dense)                       # (B,) logits of Eq. (2)
    loss = model.loss(logits, torch.randint(0, 2, (8,)))
    probs = model.predict(sparse, dense)  # (B,) click probabilities, in eval mode
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = DCNv2.load("m.pt")  # rebuilt from this file alone, in eval mode
    blocks = model.cross_weight_blocks()                # (F + Fd, F + Fd) mean |W_0| per field pair

A cross network builds explicit, bounded-degree feature crosses: each cross layer multiplies the
input x_0 element-wise with a learned linear map of the previous layer, so l layers give every
polynomial term of x_0 up to degree l + 1 (note, "Maths"). A deep network beside it (parallel) or
after it (stacked) adds implicit interactions. The cross weights may be factored into low-rank
experts mixed by a gate. `cross_weight_blocks()` reads a cross layer's W per pair of fields (the
note's figure).

Notation (the same in the note, README.md; equation numbers follow the arXiv version):
    B: batch size      F: number of sparse fields      Fd: number of dense fields
    D: embedding dim   d = F * D + Fd: width of x_0    L: number of cross layers
    r: rank of a low-rank cross    K: number of experts    H: hidden width of a DNN layer

Inputs are plain tensors so the file can be used without any data pipeline:
    sparse: (B, F) int64, field f takes ids in [0, field_dims[f]); id 0 = padding / unknown
    dense:  (B, Fd) float, already normalised; omitted when Fd = 0

NOTE: the gate G_i(x_l) of Eq. (5) is a linear map followed by a softmax over the K experts; the
    paper allows any gating function (sigmoid, softmax) and does not fix one.
NOTE: `structure="cross_only"` (no deep network) is offered because the paper reports the cross
    network alone as a model (CrossNet) and BARS tuned DCN-V2 to it on Frappe.
"""

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


@dataclass(kw_only=True)
class DCNv2Config:
    field_dims: tuple[int, ...]  # vocabulary size of each sparse field, padding id 0 included
    dense_dim: int = 0  # number of dense (float) fields
    dim: int = 16  # the paper sizes embeddings per feature (~6 * vocab^(1/4)); one D here
    num_cross_layers: int = 3  # l layers give crosses up to degree l + 1
    structure: Literal["stacked", "parallel", "cross_only"] = "parallel"  # paper Fig. 1
    hidden: tuple[int, ...] = (512, 512)  # the deep network (unused by cross_only)
    dropout: float = 0.0
    batch_norm: bool = False
    cross_rank: int | None = None  # None: full-rank W_l, Eq. (1); r: W_l = U_l V_l^T, Eq. (4)
    num_experts: int = 1  # K > 1: mixture of low-rank experts, Eq. (5); needs cross_rank
    expert_activation: Literal["relu", "tanh"] | None = None  # g in Eq. (6); None: Eq. (5)
    cross_l2: float = 0.0  # lambda of Eq. (3), on the cross weights
    embed_init_std: float = 1e-2

    def __post_init__(self) -> None:
        self.field_dims = tuple(int(v) for v in self.field_dims)
        if len(self.field_dims) == 0 and self.dense_dim == 0:
            raise ValueError("DCNv2Config needs at least one sparse or dense field")
        if any(v < 2 for v in self.field_dims):
            raise ValueError(
                f"every field needs vocabulary size >= 2 (id 0 is padding), got {self.field_dims}"
            )
        if self.dense_dim < 0 or self.dim < 1 or self.num_cross_layers < 1:
            raise ValueError("dense_dim >= 0, dim >= 1 and num_cross_layers >= 1 expected")
        if self.structure not in ("stacked", "parallel", "cross_only"):
            raise ValueError(f"structure must be stacked, parallel or cross_only, "
                             f"got {self.structure!r}")
        if self.structure != "cross_only" and len(self.hidden) == 0:
            raise ValueError(f"structure={self.structure!r} needs a deep network (hidden)")
        self.hidden = tuple(int(h) for h in self.hidden)
        if any(h < 1 for h in self.hidden) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"bad hidden {self.hidden} or dropout {self.dropout}")
        if self.cross_rank is not None and self.cross_rank < 1:
            raise ValueError(f"cross_rank must be None or >= 1, got {self.cross_rank}")
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
        if self.cross_rank is None and (self.num_experts > 1 or self.expert_activation):
            raise ValueError("experts are low-rank (Eqs. (5), (6)): set cross_rank as well")
        if self.expert_activation not in (None, *_ACTIVATIONS):
            raise ValueError(f"expert_activation must be None, 'relu' or 'tanh', "
                             f"got {self.expert_activation!r}")
        if self.cross_l2 < 0:
            raise ValueError(f"cross_l2 must be >= 0, got {self.cross_l2}")


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


class CrossLayer(nn.Module):
    """One cross layer: x_{l+1} = x_0 * f(x_l) + x_l, with f full-rank or a mixture of experts.

    - full rank, Eq. (1):  f(x) = W x + b,                W: (d, d)
    - low rank,  Eq. (4):  f(x) = U (V^T x) + b,          U, V: (d, r)
    - experts,   Eq. (5):  sum_i G_i(x) [U_i (V_i^T x) + b] with softmax gates G(x)
    - nonlinear, Eq. (6):  expert i uses U_i g(C_i g(V_i^T x)) + b, C_i: (r, r)
    """

    def __init__(self, dim: int, rank: int | None, num_experts: int, activation: str | None):
        super().__init__()
        self.rank, self.activation = rank, activation
        self.bias = nn.Parameter(torch.zeros(dim))  # b_l, shared by the experts as in Eq. (5)
        if rank is None:
            self.W = nn.Parameter(torch.empty(dim, dim))
            nn.init.xavier_uniform_(self.W)
            return
        K = num_experts
        self.U = nn.Parameter(torch.empty(K, dim, rank))
        self.V = nn.Parameter(torch.empty(K, dim, rank))
        for t in (self.U, self.V):
            for k in range(K):  # init loop over experts, once
                nn.init.xavier_uniform_(t.data[k])
        self.C = nn.Parameter(torch.stack([torch.eye(rank)] * K)) if activation else None
        self.gate = nn.Linear(dim, K, bias=False) if K > 1 else None

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """f(x_l) without the x_0 product. x: (B, d). Returns (B, d)."""
        if self.rank is None:
            return x @ self.W.T + self.bias  # Eq. (1): (B, d) @ (d, d) -> (B, d)
        h = torch.einsum("bd,kdr->bkr", x, self.V)  # V_i^T x: (B, K, r)
        if self.activation:  # Eq. (6): g(C_i g(V_i^T x))
            g = _ACTIVATIONS[self.activation]
            h = g(torch.einsum("bkr,ksr->bks", g(h), self.C))  # (B, K, r) @ (K, r, r)^T
        experts = torch.einsum("bkr,kdr->bkd", h, self.U)  # U_i h_i: (B, K, d)
        if self.gate is None:  # K = 1: Eq. (4)
            return experts[:, 0] + self.bias
        gates = torch.softmax(self.gate(x), dim=-1)  # G_i(x_l): (B, K), sums to 1 over experts
        return (gates.unsqueeze(-1) * experts).sum(dim=1) + self.bias  # (B, d)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_{l+1} = x_0 ⊙ f(x_l) + x_l. x0, x: (B, d). Returns (B, d).

        With experts, x_0 ⊙ sum_i G_i E'_i = sum_i G_i (x_0 ⊙ E'_i), so this equals Eq. (5).
        """
        return x0 * self.transform(x) + x

    def weight_norm(self) -> torch.Tensor:
        """sum of squared cross weights, the regulariser of Eq. (3)."""
        if self.rank is None:
            return self.W.pow(2).sum()
        s = self.U.pow(2).sum() + self.V.pow(2).sum()
        return s + (self.C.pow(2).sum() if self.C is not None else 0.0)


class CrossNetwork(nn.Module):
    """L cross layers applied to x_0 (note, "Maths")."""

    def __init__(self, dim: int, num_layers: int, rank: int | None, num_experts: int,
                 activation: str | None):
        super().__init__()
        self.layers = nn.ModuleList(
            CrossLayer(dim, rank, num_experts, activation) for _ in range(num_layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:  # loop over the L layers, not over samples
            x = layer(x0, x)  # (B, d)
        return x


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


class DCNv2(nn.Module):
    """Embedding -> x_0 -> cross network and deep network (stacked or parallel) -> logit."""

    def __init__(self, config: DCNv2Config):
        super().__init__()
        if not isinstance(config, DCNv2Config):
            raise TypeError(f"expected DCNv2Config, got {type(config).__name__}")
        self.config = c = config
        self.embedding = FieldEmbedding(c.field_dims, c.dim, c.embed_init_std)
        d = len(c.field_dims) * c.dim + c.dense_dim
        self.cross = CrossNetwork(d, c.num_cross_layers, c.cross_rank, c.num_experts,
                                  c.expert_activation)
        if c.structure == "cross_only":
            self.dnn, out_dim = None, d
        else:  # stacked: the DNN reads x_L; parallel: it reads x_0 and sits beside the cross net
            self.dnn = MLP(d, c.hidden, c.dropout, c.batch_norm)
            out_dim = self.dnn.out_dim + (d if c.structure == "parallel" else 0)
        self.logit = nn.Linear(out_dim, 1)  # w_logit of Eq. (2)

    def x0(self, sparse: torch.Tensor, dense: torch.Tensor | None) -> torch.Tensor:
        """The embedding layer: x_0 = [e_1; ...; e_F; dense]. Returns (B, d)."""
        B = sparse.shape[0]
        x0 = self.embedding(sparse).reshape(B, -1)  # (B, F * D)
        if dense is not None and dense.shape[1] > 0:
            x0 = torch.cat([x0, dense], dim=1)  # (B, F * D + Fd)
        return x0

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (2) before the sigmoid: w_logit^T x_final + bias.

        Args:
            sparse: (B, F) int64, 0 = padding.
            dense: (B, Fd) float or None when the model has no dense fields.
        Returns:
            (B,) float logits; a batch of 0 rows gives an empty (0,) tensor.
        """
        check_inputs(sparse, dense, self.config.field_dims, self.config.dense_dim)
        if sparse.shape[0] == 0:  # batch norm cannot take 0 rows; there is nothing to score
            return self.logit.weight.new_zeros(0)
        x0 = self.x0(sparse, dense)  # (B, d)
        xc = self.cross(x0)  # (B, d)
        if self.config.structure == "cross_only":
            final = xc
        elif self.config.structure == "stacked":  # Fig. 1(b): x_0 -> cross -> deep
            final = self.dnn(xc)  # (B, H)
        else:  # Fig. 1(a): cross(x_0) || deep(x_0)
            final = torch.cat([xc, self.dnn(x0)], dim=1)  # (B, d + H)
        return self.logit(final).squeeze(-1)  # (B,)

    @torch.no_grad()
    def cross_weight_blocks(self, layer: int = 0) -> torch.Tensor:
        """Mean |W_l| per (field, field) block: which pairs of fields a cross layer crosses.

        In the first layer W_0[i, j] weights the product x_0[i] * x_0[j] (Eq. (1) with x_l = x_0),
        so block (a, b) holds the weights of the crosses of field a with field b. Low rank:
        W = U V^T (Eq. (4)), |W| averaged over the experts. Fields: the F sparse fields (D columns
        each), then the Fd dense ones (1 column each). Returns (F + Fd, F + Fd) float.
        """
        c, cross = self.config, self.cross.layers[layer]
        if cross.rank is None:
            W = cross.W.abs()  # (d, d)
        else:
            W = torch.einsum("kdr,ker->kde", cross.U, cross.V).abs().mean(0)  # mean_i |U_i V_i^T|
        sizes = [c.dim] * len(c.field_dims) + [1] * c.dense_dim
        rows = torch.split(W, sizes, dim=0)  # F + Fd blocks of rows
        return torch.stack([torch.stack([b.mean() for b in r.split(sizes, dim=1)]) for r in rows])

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. (3): mean log loss + lambda * sum_l ||W_l||^2 over the cross layers.

        labels: (B,) in {0, 1}. Other values and an empty batch raise a ValueError (`check_labels`).
        """
        check_labels(logits, labels)
        bce = F.binary_cross_entropy_with_logits(logits, labels.float())
        if self.config.cross_l2 == 0:
            return bce
        reg = sum(layer.weight_norm() for layer in self.cross.layers)
        return bce + self.config.cross_l2 * reg

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def predict(self, *inputs, **kw) -> torch.Tensor:
        """Click probabilities sigmoid(forward(...)), (B,) float, detached: forward's inputs, run in
        eval mode for the call (the modules' train/eval modes are restored after it)."""
        with _eval_mode(self):
            return torch.sigmoid(self(*inputs, **kw))  # (B,)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `DCNv2.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> "DCNv2":
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, DCNv2Config, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
