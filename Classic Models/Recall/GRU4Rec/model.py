"""GRU4Rec: session-based recommendations with recurrent neural networks.

Papers: Balázs Hidasi, Alexandros Karatzoglou, Linas Baltrunas, Domonkos Tikk, "Session-based
Recommendations with Recurrent Neural Networks", ICLR 2016. https://arxiv.org/abs/1511.06939
Balázs Hidasi, Alexandros Karatzoglou, "Recurrent Neural Networks with Top-k Gains for Session-based
Recommendations", CIKM 2018. https://arxiv.org/abs/1706.03847
Official code: https://github.com/hidasib/GRU4Rec (Theano, the original) and
https://github.com/hidasib/GRU4Rec_PyTorch_Official (PyTorch, `gru4rec_pytorch.py`); the defaults
below are the PyTorch class's (`GRU4Rec.__init__`), each named in the note's "Training and serving".

This file stands alone: it needs only torch. Copy it into your project as is.
Two model files in one project: every file of this repo is called model.py, so copy each under its
own name (gru4rec_model.py, dpp_model.py) and import it as usual. Loading one with importlib instead
needs the module registered in sys.modules before it runs (its @dataclass looks the module up):

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

Usage::

    import torch
    from model import GRU4Rec, GRU4RecConfig
    model = GRU4Rec(GRU4RecConfig(n_items=100, dim=16, loss="bpr_max", n_sample=32))
    model.set_item_counts(torch.randint(1, 50, (101,)))  # training counts: popularity sampling, log-Q
    # session-parallel training: slot b of a (B, T) chunk continues its session from `hidden`;
    # resets[b, t] = True where a new session starts in slot b (its hidden state restarts from zero)
    items = torch.randint(1, 101, (4, 1))  # (B, T) current items, T = 1 step as the official code
    nexts = torch.randint(1, 101, (4, 1))  # (B, T) the next item of each slot
    resets = torch.tensor([[True], [False], [False], [True]])
    hidden = torch.zeros(1, 4, 16)  # (n_layers, B, D) carried from the previous step
    loss, hidden = model.loss(items, nexts, hidden=hidden, resets=resets, return_hidden=True)
    loss.backward()
    history = torch.randint(1, 101, (2, 20))  # (B, L) whole histories, 0 = padding (left or right)
    scores = model.eval().score(history)  # (B, N + 1) h_L · W_y + b_y for every item, column 0 = -inf
    top, items = model.recommend(history, k=5)  # (B, 5) best unseen items and their scores
    model.save("m.pt")  # config + weights + counts; an existing file is kept unless overwrite=True
    model = GRU4Rec.load("m.pt")  # rebuilt from this file alone, in eval mode

Notation (the note, README.md, uses the same letters):
    B: batch (slots of session-parallel mini-batches, or users), T: steps in a chunk, L: history
    length, D: GRU units = item vector width (`dim`), N: number of items (ids 1..N; 0 is padding),
    S: additional sampled negatives (`n_sample`), M: rows of a loss (positions with a target).

What the model does (equation numbers as in the papers; see the note's "Maths"):
    h_t = (1 - z_t) h_{t-1} + z_t ĥ_t                       ICLR Eq. (1)  the GRU update
    z_t = σ(W_z x_t + U_z h_{t-1})                           ICLR Eq. (2)  update gate
    ĥ_t = tanh(W x_t + U (r_t ⊙ h_{t-1}))                    ICLR Eq. (3)  candidate state
    r_t = σ(W_r x_t + U_r h_{t-1})                           ICLR Eq. (4)  reset gate
    x_t: the item's input vector (a row of W_y with "shared", of its own table with "separate") or
    its one-hot vector ("onehot": W x_t is then a row of the input matrix); every gate has a bias.
    r_i = h_t · W_y[i] + b_y[i]                              the score of item i (unnumbered)
    Session-parallel mini-batches (ICLR §3.1.1): slot b holds one session; when it ends, the next
    session takes the slot and h is reset to zero there, exactly at the first item of the new session.
    Negatives (ICLR §3.1.2, CIKM §3.1): the other slots' next items (mini-batch sampling) plus S items
    shared by the batch, drawn with probability ∝ supp_i^α (`n_sample`, `sample_alpha`).
    Losses over the scores of the positive i and the negatives j (CIKM §3.2; s_j = softmax over the
    negatives' scores only):
        "bpr_max"   -log Σ_j s_j σ(r_i - r_j) + λ Σ_j s_j r_j²      (λ = `bpreg`, score regularisation)
        "top1_max"  Σ_j s_j (σ(r_j - r_i) + σ(r_j²))
        "ce"        -log softmax(r)_i over the positive and the negatives (`logq` > 0: r_j - logq·log q_j)
        "bpr", "top1"  the ICLR 2016 losses: mean over j of -log σ(r_i - r_j), of σ(r_j - r_i) + σ(r_j²)
    The ranking losses read the scores through a final activation (`final_act`: ELU(0.5) by default,
    as the official PyTorch code; linear, tanh, ReLU, leaky ReLU as the Theano code's options); "ce"
    reads the raw scores (its final activation is the softmax). The loss of a step is the sum of its
    rows' losses over the B slots, empty ones included (the official `L / batch_size`), so the last
    steps of an epoch, when sessions run out, stay small. Serving ranks by the raw scores
    h · W_y + b_y: no log-Q and no activation (a monotone activation does not change the order).

NOTE (deviations, each listed in the note's "Deviations" section):
- Items are numbered 1..N with 0 = padding (the official code maps item ids to 0..N-1).
- Whole histories may be padded on the left or the right: a padding step leaves the hidden state
  unchanged, so both layouts give the same states at real items and the same final state; padding
  between real items raises.
- Empty slots (sessions ran out at the end of an epoch) are padding in a fixed-width batch; their
  columns are left out of the other rows' negatives. The official code shrinks the batch instead.
- log Σ_j s_j σ(r_i - r_j) is computed as a logsumexp of log s_j + log σ(r_i - r_j); the official
  code adds 1e-24 inside the log instead. They agree unless the sum underflows.
- Several steps per call (T > 1) back-propagate through the T steps of the chunk; T = 1 is the
  official code's one-step update (it detaches the hidden state after every step).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("bpr_max", "top1_max", "ce", "bpr", "top1")
EMBEDDINGS = ("shared", "separate", "onehot")
FINAL_ACTS = ("linear", "elu", "tanh", "relu", "leaky")
CELLS = ("paper", "official")


@dataclass
class GRU4RecConfig:
    n_items: int  # N: items are 1..N, 0 is padding
    dim: int = 100  # GRU units = item vector width; official default layers=[100] (ICLR: 100 units)
    n_layers: int = 1  # stacked GRU layers of `dim` units (official: one layer)
    embedding: str = "shared"  # input: "shared" = rows of W_y (official constrained_embedding=True),
    #                            "separate" = its own table, "onehot" = the ICLR paper's one-hot input
    loss: str = "ce"  # official default loss='cross-entropy'; "bpr_max" is the CIKM paper's headline
    final_act: str = "elu"  # activation of the scores before a ranking loss (official: ELU, elu_param)
    final_act_param: float = 0.5  # ELU's alpha / leaky ReLU's slope (official elu_param=0.5)
    bpreg: float = 1.0  # λ of BPR-max's score regularisation (official bpreg=1.0)
    n_sample: int = 2048  # S additional negatives per step, shared by the batch (official n_sample)
    sample_alpha: float = 0.5  # P(j) ∝ supp_j^alpha: 0 uniform, 1 popularity (official sample_alpha)
    logq: float = 0.0  # "ce": weight of the log-Q correction (official logq=0.0; README: 1.0 for ce)
    dropout_embed: float = 0.0  # dropout on the input item vectors (official dropout_p_embed)
    dropout_hidden: float = 0.0  # dropout on each layer's output, kept in its state (dropout_p_hidden)
    cell: str = "paper"  # "paper": Eq. (1)-(4) written out; "official": the official PyTorch code's
    #                      torch.nn.GRUCell with its initialisation (shared / separate input only)
    sparse: bool = False  # sparse gradients for the item tables (official: sparse=True): only the rows
    #                       a step reads are updated; needs an optimizer that takes them (Adagrad, SGD)

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if self.dim < 1 or self.n_layers < 1:
            raise ValueError(f"dim and n_layers must be >= 1, got {self.dim} and {self.n_layers}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.cell == "official" and self.embedding == "onehot":
            raise ValueError('cell="official" (torch.nn.GRUCell) reads item vectors; the official code '
                             'writes Eq. (3) out for one-hot input, which is cell="paper"')
        if self.final_act not in FINAL_ACTS:
            raise ValueError(f"final_act must be one of {FINAL_ACTS}, got {self.final_act!r}")
        if self.n_sample < 0:
            raise ValueError(f"n_sample must be >= 0 (0: mini-batch negatives only), got {self.n_sample}")
        if not (0.0 <= self.sample_alpha <= 1.0 and 0.0 <= self.logq <= 1.0):
            raise ValueError(f"sample_alpha and logq must be in [0, 1], got {self.sample_alpha} and "
                             f"{self.logq}")
        if not math.isfinite(self.bpreg) or self.bpreg < 0:
            raise ValueError(f"bpreg must be a finite number >= 0, got {self.bpreg}")
        for name in ("dropout_embed", "dropout_hidden"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def check_ids(name: str, ids: torch.Tensor, low: int, high: int) -> None:
    """ValueError naming `name`, an offending id and the allowed range [low, high] when an id lies
    outside it (an embedding would otherwise read a wrong row or fail with a bare IndexError).
    One min/max per call; skipped while torch.export / torch.compile trace (no data there)."""
    if ids.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = torch.aminmax(ids)
    if lo < low or hi > high:
        bad = int(lo) if lo < low else int(hi)
        raise ValueError(f"{name} has item id {bad}; expected ids in {low}..{high}"
                         + (" (0 = padding)" if low == 0 else ""))


def check_layout(history: torch.Tensor) -> None:
    """ValueError showing the row when padding (0) lies between real items: a row is padded on the
    left ([0, 0, a, b, c]) or on the right ([a, b, c, 0, 0]), or not at all."""
    real = history != 0  # (B, L)
    rises = (real[:, 1:] & ~real[:, :-1]).sum(1)  # (B,) padding -> item steps
    falls = (~real[:, 1:] & real[:, :-1]).sum(1)  # (B,) item -> padding steps
    bad = ((rises > 0) & (falls > 0)) | (rises > 1) | (falls > 1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"history row {row} has padding (0) between real items: "
                         f"{history[row].tolist()}; expected left padding [0, 0, a, b, c] or right "
                         f"padding [a, b, c, 0, 0]")


def uniform_blocks_(weight: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """The official initialisation: each of the `n_blocks` column blocks (fan_in, fan_out) of
    `weight` drawn from U(-σ, σ), σ = sqrt(6 / (fan_in + fan_out)) (one block per gate)."""
    fan_in, width = weight.shape
    sigma = math.sqrt(6.0 / (fan_in + width // n_blocks))
    with torch.no_grad():
        return weight.uniform_(-sigma, sigma)


def final_activation(scores: torch.Tensor, kind: str, param: float) -> torch.Tensor:
    """The activation the ranking losses read the scores through (monotone: it keeps their order)."""
    if kind == "elu":
        return F.elu(scores, alpha=param)
    if kind == "tanh":
        return torch.tanh(scores)
    if kind == "relu":
        return F.relu(scores)
    if kind == "leaky":
        return F.leaky_relu(scores, param)
    return scores


class GRULayer(nn.Module):
    """ICLR Eq. (1)-(4): one GRU layer, one step. The input is a (B, in) vector or, for one-hot
    input, (B,) item ids whose rows of the input matrix are W x_t."""

    def __init__(self, *, in_dim: int, dim: int, one_hot: bool) -> None:
        super().__init__()
        if one_hot:  # one-hot x_t times [W | W_r | W_z] is a row lookup: an (N + 1, 3D) table
            self.input_weight = nn.Embedding(in_dim + 1, 3 * dim, padding_idx=0)
            uniform_blocks_(self.input_weight.weight.data[1:], 3)  # fan_in = N, as the official code
        else:
            self.input_weight = nn.Parameter(uniform_blocks_(torch.empty(in_dim, 3 * dim), 3))
        self.input_bias = nn.Parameter(torch.zeros(3 * dim))  # b, b_r, b_z
        self.hidden_rz = nn.Parameter(uniform_blocks_(torch.empty(dim, 2 * dim), 2))  # U_r | U_z
        self.hidden_h = nn.Parameter(uniform_blocks_(torch.empty(dim, dim), 1))  # U

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x: (B, in) float or (B,) int64 ids; h: (B, D) the previous state -> (B, D) the new one."""
        if isinstance(self.input_weight, nn.Embedding):
            wx = self.input_weight(x) + self.input_bias  # (B, 3D): rows of the one-hot product
        else:
            wx = x @ self.input_weight + self.input_bias  # (B, in) @ (in, 3D) -> (B, 3D)
        wx_h, wx_r, wx_z = wx.chunk(3, dim=-1)  # 3 x (B, D)
        uh_r, uh_z = (h @ self.hidden_rz).chunk(2, dim=-1)  # (B, D) @ (D, 2D) -> 2 x (B, D)
        r = torch.sigmoid(wx_r + uh_r)  # Eq. (4): reset gate
        z = torch.sigmoid(wx_z + uh_z)  # Eq. (2): update gate
        h_hat = torch.tanh(wx_h + (r * h) @ self.hidden_h)  # Eq. (3): candidate, (B, D) @ (D, D)
        return (1 - z) * h + z * h_hat  # Eq. (1)


class OfficialGRULayer(nn.Module):
    """For comparison only: the official PyTorch code's layer for item-vector input, torch.nn.GRUCell
    (`gru4rec_pytorch.py`, `GRU4RecModel.__init__`). Two differences from Eq. (1)-(4): the reset gate
    multiplies U h_{t-1} + b_hn after the product, n = tanh(W x + b + r ⊙ (U h + b_hn)), and each gate
    has two biases. Initialised as the official `fit` does by default (`compatibility_mode=True`,
    `_reset_weights_to_compatibility_mode`): each gate's (in, D) and (D, D) block from U(-σ, σ),
    σ = sqrt(6 / (fan_in + D)), as `GRULayer`; biases zero."""

    def __init__(self, *, in_dim: int, dim: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(in_dim, dim)
        with torch.no_grad():  # torch stores (3D, in): gate blocks are row blocks
            for w in (self.cell.weight_ih, self.cell.weight_hh):
                uniform_blocks_(w.T, 3)  # w.T is a (in, 3D) view: three (in, D) column blocks
            self.cell.bias_ih.zero_()
            self.cell.bias_hh.zero_()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x: (B, in) item vectors; h: (B, D) -> (B, D)."""
        return self.cell(x, h)


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


def _top_k(scores: torch.Tensor, seen: torch.Tensor | None, k: int) -> tuple:
    """(scores, items), each (B, k) best first, of scores (B, N + 1) without padding (item 0) and,
    if given, each row's `seen` ids (B, L). A ValueError when a row has fewer than k items left."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    out = torch.zeros_like(scores, dtype=torch.bool)  # (B, N + 1), True = left out
    out[:, 0] = True  # padding is never recommended
    if seen is not None:
        out.scatter_(1, seen.to(scores.device), True)
    left = int((~out).sum(1).min()) if len(out) else k  # items left in the emptiest row
    if left < k:
        raise ValueError(f"recommend: a row has {left} items left; expected k <= {left}, got {k}")
    return tuple(scores.masked_fill(out, float("-inf")).topk(int(k), dim=1))  # (B, k) each


class GRU4Rec(nn.Module):
    """GRU layers over item vectors, an output table W_y with a bias b_y, and the papers' losses.
    `forward(history)` -> the top layer's state after each item."""

    def __init__(self, config: GRU4RecConfig) -> None:
        super().__init__()
        cfg = self.cfg = self.config = config
        N, D = cfg.n_items, cfg.dim
        self.item_embedding = nn.Embedding(N + 1, D, padding_idx=0, sparse=cfg.sparse)  # W_y (+ input)
        uniform_blocks_(self.item_embedding.weight.data[1:], 1)
        self.item_bias = nn.Parameter(torch.zeros(N + 1, 1))  # b_y, one column (a table like W_y)
        if cfg.embedding == "separate":  # its own input table (official embedding='layersize')
            self.input_embedding = nn.Embedding(N + 1, D, padding_idx=0, sparse=cfg.sparse)
            uniform_blocks_(self.input_embedding.weight.data[1:], 1)
        one_hot = cfg.embedding == "onehot"
        self.layers = nn.ModuleList(
            OfficialGRULayer(in_dim=D, dim=D) if cfg.cell == "official" else
            GRULayer(in_dim=N if one_hot and i == 0 else D, dim=D, one_hot=one_hot and i == 0)
            for i in range(cfg.n_layers))
        self.embed_dropout = nn.Dropout(cfg.dropout_embed)
        self.hidden_dropout = nn.Dropout(cfg.dropout_hidden)
        counts = torch.ones(N + 1)
        counts[0] = 0.0  # padding is never drawn
        self.register_buffer("item_counts", counts)  # supp_i: sampling ∝ counts^alpha, log-Q

    def set_item_counts(self, counts: torch.Tensor) -> None:
        """supp_i, how often each item occurs in the training data: (N + 1,) non-negative, index =
        item id (index 0 is ignored). The S extra negatives are drawn ∝ counts^sample_alpha, and
        "ce" with logq reads them. Until set, every item counts 1 (uniform sampling)."""
        counts = torch.as_tensor(counts, dtype=torch.float32).flatten()
        if counts.shape != self.item_counts.shape:
            raise ValueError(f"counts must have N + 1 = {self.item_counts.numel()} entries (index = "
                             f"item id), got {counts.numel()}")
        if not bool(torch.isfinite(counts).all()) or bool((counts[1:] < 0).any()):
            raise ValueError("counts must be finite and >= 0")
        if not bool((counts[1:] > 0).any()):
            raise ValueError("counts are all zero; expected at least one item that occurs")
        counts = counts.clone()
        counts[0] = 0.0
        self.item_counts.copy_(counts.to(self.item_counts.device))

    def _check_history(self, history: torch.Tensor, name: str = "history") -> None:
        if history.dim() != 2 or history.dtype != torch.long:
            raise ValueError(f"{name} must be (B, L) int64, got {tuple(history.shape)} {history.dtype}")
        check_ids(name, history, 0, self.cfg.n_items)
        check_layout(history)

    def initial_hidden(self, batch: int, device=None) -> torch.Tensor:
        """(n_layers, B, D) zeros: the state before a session's first item."""
        return torch.zeros(self.cfg.n_layers, batch, self.cfg.dim, device=device)

    def _inputs(self, history: torch.Tensor) -> torch.Tensor:
        """What the first layer reads at each step: (B, L, D) item vectors, or (B, L) ids (one-hot)."""
        if self.cfg.embedding == "onehot":
            return history
        table = self.item_embedding if self.cfg.embedding == "shared" else self.input_embedding
        return self.embed_dropout(table(history))  # (B, L, D)

    def encode(self, history: torch.Tensor, *, hidden: torch.Tensor | None = None,
               resets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the GRU over T steps.

        Args:
            history: (B, T) int64 item ids, oldest first, 0 = padding (left or right): a padding step
                leaves the slot's state as it is.
            hidden: (n_layers, B, D) the state before the first step (zeros when omitted).
            resets: (B, T) bool, True where a new session starts in slot b at step t: its state is
                set to zero *before* reading history[b, t] (session-parallel mini-batches).
        Returns:
            states (B, T, D): the top layer's state after each step (zero at padding), and the
            hidden state (n_layers, B, D) after the last step.
        """
        self._check_history(history)
        B, T = history.shape
        if hidden is None:
            hidden = self.initial_hidden(B, history.device)
        elif hidden.shape != (self.cfg.n_layers, B, self.cfg.dim):
            raise ValueError(f"hidden must be (n_layers, B, D) = {(self.cfg.n_layers, B, self.cfg.dim)}, "
                             f"got {tuple(hidden.shape)}")
        if resets is not None and (resets.shape != history.shape or resets.dtype != torch.bool):
            raise ValueError(f"resets must be (B, T) bool like history {tuple(history.shape)}, got "
                             f"{tuple(resets.shape)} {resets.dtype}")
        real = (history != 0).unsqueeze(-1)  # (B, T, 1)
        x_all = self._inputs(history)  # (B, T, D) or (B, T) ids
        h = list(hidden.unbind(0))  # n_layers x (B, D)
        states = []
        for t in range(T):
            if resets is not None:  # a new session: its state starts from zero at this item
                keep = (~resets[:, t]).unsqueeze(-1).to(hidden.dtype)  # (B, 1)
                h = [h_l * keep for h_l in h]
            x = x_all[:, t]
            for i, layer in enumerate(self.layers):
                new = self.hidden_dropout(layer(x, h[i]))  # (B, D); the dropped-out output is the state
                h[i] = torch.where(real[:, t], new, h[i])  # padding keeps the state
                x = h[i]
            states.append(x * real[:, t])
        return torch.stack(states, 1), torch.stack(h)  # (B, T, D), (n_layers, B, D)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history, left- or right-padded -> (B, L, D) the state after each real item."""
        return self.encode(history)[0]

    def hidden_state(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history, left- or right-padded -> (B, D) h after the last real item (the session
        representation; padding steps leave it unchanged, so it is the state after the last item)."""
        return self.encode(history)[1][-1]

    def user_embedding(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, D + 1) [h, 1]: with `item_embeddings()` an inner product equals `score`."""
        h = self.hidden_state(history)
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)

    def item_embeddings(self) -> torch.Tensor:
        """(N + 1, D + 1) [W_y, b_y] (row 0 = padding): a maximum-inner-product search of
        `user_embedding` over these rows ranks exactly as `score`."""
        return torch.cat([self.item_embedding.weight, self.item_bias], dim=1)

    def score(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history -> (B, N + 1) r_i = h · W_y[i] + b_y[i] for every item, column 0 = -inf.
        Serving scores: no log-Q correction and no final activation (it is monotone)."""
        h = self.hidden_state(history)  # (B, D)
        scores = h @ self.item_embedding.weight.T + self.item_bias.T  # (B, D) @ (D, N+1)
        scores[:, 0] = float("-inf")
        return scores

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int = 10, *, exclude_seen: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first: the items 1..N by `score`, in eval mode, less
        `history`'s if exclude_seen."""
        with _eval_mode(self):
            scores = self.score(history)  # (B, N + 1)
        return _top_k(scores, history if exclude_seen else None, k)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `GRU4Rec.load` (the item counts are a
        buffer of the state dict), written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.cfg, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> GRU4Rec:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, GRU4RecConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)

    # -- training ----------------------------------------------------------------------------------
    def _rows(self, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """table[ids], with a sparse gradient when the config asks for one (only those rows update)."""
        return F.embedding(ids, table, padding_idx=0, sparse=self.cfg.sparse)

    def sample_negatives(self, steps: int, device=None) -> torch.Tensor:
        """(steps, S) extra negatives, one draw of S per step shared by the batch, P(j) ∝
        supp_j^alpha (CIKM §3.1: alpha = 0 uniform, alpha = 1 proportional to popularity)."""
        weights = self.item_counts.pow(self.cfg.sample_alpha)  # (N + 1,)
        weights[0] = 0.0  # 0^0 = 1 for the padding row: never draw it
        draws = torch.multinomial(weights, steps * self.cfg.n_sample, replacement=True)
        return draws.view(steps, self.cfg.n_sample).to(device)

    def loss(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        *,
        hidden: torch.Tensor | None = None,
        resets: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
        return_hidden: bool = False,
        reduction: str = "slot",
    ):
        """The next-item loss of a chunk of session-parallel steps (or of whole sequences).

        Args:
            history: (B, T) int64 the current item of each slot at each step, 0 = empty slot.
            targets: (B, T) int64 the next item, 0 where there is none (the row is not trained).
            hidden: (n_layers, B, D) the slots' state before the chunk (zeros when omitted); pass
                the one the previous call returned, detached (the official code: T = 1 per step).
            resets: (B, T) bool, True where a new session starts (see `encode`).
            negatives: the S extra negatives, (S,) or (T, S); drawn from supp^alpha when omitted
                (none when n_sample = 0). At step t, row b's negatives are the other rows' targets
                at step t (mini-batch sampling) and these S items.
            return_hidden: also return the hidden state after the chunk (detached).
            reduction: "slot" (session-parallel batches, the official code's `L / batch_size`): the
                sum over the rows with a target divided by the B x T cells of the chunk, empty slots
                included, so the last steps of an epoch, when most slots are empty, take small steps
                as in the official code; "row": the mean over the rows with a target (whole padded
                sequences, where padding must not change the loss).
        Returns:
            the scalar loss, and the hidden state if asked.
        """
        if reduction not in ("slot", "row"):
            raise ValueError(f'reduction must be "slot" or "row", got {reduction!r}')
        if targets.shape != history.shape:
            raise ValueError(f"targets {tuple(targets.shape)} must match history {tuple(history.shape)}")
        check_ids("targets", targets, 0, self.cfg.n_items)
        B, T = history.shape
        if negatives is None and self.cfg.n_sample > 0:
            negatives = self.sample_negatives(T, history.device)
        if negatives is not None:
            if negatives.dim() == 1:
                negatives = negatives.unsqueeze(0).expand(T, -1)  # the same S at every step
            if negatives.dim() != 2 or negatives.shape[0] != T:
                raise ValueError(f"negatives must be (S,) or (T, S) with T = {T}, got "
                                 f"{tuple(negatives.shape)}")
            check_ids("negatives", negatives, 1, self.cfg.n_items)
        states, hidden_out = self.encode(history, hidden=hidden, resets=resets)  # (B, T, D)
        has_target = (targets != 0) & (history != 0)  # (B, T)
        if not bool(has_target.any()):  # nothing to predict in this chunk
            loss = states.sum() * 0.0
            return (loss, hidden_out.detach()) if return_hidden else loss
        # mini-batch sampling: at step t, column j is slot j's target (ICLR §3.1.2)
        cols = targets.T  # (T, B) column j of step t: slot j's next item
        if negatives is not None:  # + S extra items shared by the batch (CIKM §3.1)
            cols = torch.cat([cols, negatives], dim=1)  # (T, B + S)
        W_cols = self._rows(self.item_embedding.weight, cols)  # (T, B + S, D)
        b_cols = self._rows(self.item_bias, cols).squeeze(-1)  # (T, B + S)
        scores = torch.einsum("btd,tcd->tbc", states, W_cols) + b_cols.unsqueeze(1)  # (T, B, B + S)
        valid = torch.cat([has_target.T, has_target.new_ones(T, cols.shape[1] - B)], dim=1)  # (T, B + S)
        rows = has_target.T  # (T, B): the rows that train
        step = torch.arange(T, device=history.device).unsqueeze(1).expand(T, B)[rows]  # (M,)
        r = scores[rows]  # (M, B + S)
        pos = torch.arange(B, device=history.device).expand(T, B)[rows]  # (M,) the diagonal column
        q = None
        if self.cfg.loss == "ce" and self.cfg.logq > 0:  # sampling weights: supp_j in-batch, supp_j^alpha extra
            q = self.item_counts[cols]  # (T, B + S)
            q = torch.cat([q[:, :B], q[:, B:].pow(self.cfg.sample_alpha)], dim=1)[step]  # (M, B + S)
        denominator = B * T if reduction == "slot" else None  # the B x T cells, or the M rows
        loss = self.ranking_loss(r, pos, valid[step], q, denominator=denominator)
        return (loss, hidden_out.detach()) if return_hidden else loss

    def ranking_loss(self, r: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor,
                     q: torch.Tensor | None = None, denominator: int | None = None) -> torch.Tensor:
        """The configured loss of M rows of scores r (M, C) whose positive sits in column pos (M,);
        `valid` (M, C) marks the columns that are items (the positive and its negatives); q (M, C)
        the columns' sampling weights, read by "ce" with logq > 0. The mean over the rows, or their
        sum divided by `denominator` when given."""
        cfg = self.cfg

        def reduce(per_row: torch.Tensor) -> torch.Tensor:  # (M,) -> scalar
            return per_row.mean() if denominator is None else per_row.sum() / denominator

        rows = torch.arange(len(pos), device=r.device)
        is_pos = torch.zeros_like(valid)
        is_pos[rows, pos] = True
        if cfg.loss == "ce":  # softmax over the positive and its negatives (CIKM §3.2)
            if cfg.logq > 0:  # r_j - logq · log q_j (the official code's logq, the positive included)
                r = r - cfg.logq * torch.log(q.clamp(min=torch.finfo(q.dtype).tiny))
            logits = r.masked_fill(~valid, float("-inf"))  # (M, C)
            return reduce(-F.log_softmax(logits, dim=1)[rows, pos])
        negative = valid & ~is_pos  # (M, C) the negatives of each row
        if not bool(negative.any(1).all()):  # a row without a negative has nothing to rank against
            keep = negative.any(1)
            if not bool(keep.any()):
                return r.sum() * 0.0
            r, pos, negative, rows = r[keep], pos[keep], negative[keep], rows[: int(keep.sum())]
        a = final_activation(r, cfg.final_act, cfg.final_act_param)  # (M, C)
        target = a[rows, pos].unsqueeze(1)  # (M, 1) the positive's activated score
        if cfg.loss in ("bpr", "top1"):  # ICLR 2016: the mean over the N_S negatives
            n_neg = negative.sum(1).clamp(min=1)  # (M,)
            if cfg.loss == "bpr":
                term = -F.logsigmoid(target - a)  # -log σ(r_i - r_j)
            else:
                term = torch.sigmoid(a - target) + torch.sigmoid(a * a)  # σ(r_j - r_i) + σ(r_j²)
            return reduce((term * negative).sum(1) / n_neg)
        # CIKM 2018: s_j, the softmax over the negatives' scores only (the positive gets weight 0)
        log_s = F.log_softmax(a.masked_fill(~negative, float("-inf")), dim=1)  # (M, C)
        s = log_s.exp()  # (M, C), 0 off the negatives
        if cfg.loss == "top1_max":  # Σ_j s_j (σ(r_j - r_i) + σ(r_j²))
            return reduce((s * (torch.sigmoid(a - target) + torch.sigmoid(a * a))).sum(1))
        # BPR-max: -log Σ_j s_j σ(r_i - r_j) + λ Σ_j s_j r_j², the first term as a logsumexp
        log_terms = (log_s + F.logsigmoid(target - a)).masked_fill(~negative, float("-inf"))
        ranking = -torch.logsumexp(log_terms, dim=1)  # (M,)
        regulariser = cfg.bpreg * (s * a * a).sum(1)  # (M,) score regularisation
        return reduce(ranking + regulariser)
