"""SDM: Sequential Deep Matching Model for Online Large-scale Recommender System.

Fuyu Lv, Taiwei Jin, Changlong Yu, Fei Sun, Quan Lin, Keping Yang, Wilfred Ng. CIKM 2019.
Paper: https://arxiv.org/abs/1909.00385
Official code (TF 1.4): https://github.com/alicogintel/SDM
This file stands alone: it needs only torch. The note (README.md beside it) derives every
equation referenced below as ``Eq. (n)``, numbered as in the paper (arXiv v2, §3).

Usage::

    import torch
    from model import SDM, SDMConfig
    model = SDM(SDMConfig(n_items=50, profile_sizes={"user": 11}, dim=16, num_heads=2))
    short = torch.randint(1, 51, (3, 5))                # (B, S) latest session, 0 = padding
                                                        # (left or right, as pad_sequence pads)
    long = torch.randint(0, 51, (3, 8))                 # (B, T) earlier behaviour, a bag
    o, G = model(profile={"user": torch.tensor([1, 2, 3])}, short=short, long=long,
                 return_gate=True)                      # (B, D) user vector, (B, D) gate
    scores = model.score(o)                             # (B, N + 1), Eq. (1)
    loss = model.loss(o, torch.tensor([4, 5, 6]), torch.randint(1, 51, (20,)))
    top, items = model.recommend(short, k=5, profile={"user": torch.tensor([1, 2, 3])},
                                  long=long)  # (B, 5) best items seen in neither
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = SDM.load("m.pt")  # rebuilt from this file alone, in eval mode

A user's behaviour is cut into sessions (10-minute gaps, at most 50 actions; note, "Problem").
The latest session is the short-term behaviour S^u, encoded by an LSTM, multi-head
self-attention and a user attention into s^u; the behaviour before it, L^u, is split by feature
type (item id, category, brand, ...) and each type is pooled by a user attention, then a dense
layer gives p^u.
A gate decides, per dimension, how much of each enters the user vector o^u (Eqs. (21)-(22)):

    G = sigmoid(W1 e_u + W2 s + W3 p + b),   o = (1 - G) * p + G * s

Items are scored by o^u . v_i and trained with a sampled softmax on the next item.
The session split itself is data preparation (``Datasets/sessions.py``); this model takes the
short-term and long-term item tensors.

Notation: B batch, S short-term session length, T long-term length, D dim, F item feature types
(item id first), A values per item of a feature, H heads, N items (id 0 = padding), M sampled
negatives.

NOTE (deviations, each also in the note's "Deviations"):
- The user profile e_u is the concatenation of profile-feature embeddings mapped to D by a dense
  tanh layer (the official code's ``user_fc_trans``), so any number of profile fields can feed
  the D-dim dot-product attentions. On data without profile fields the user id is the profile.
- Each item feature embedding has D dims (the paper writes d_f in §3.3 and d in §3.6); the long-
  term attention for feature f reuses the short-term embedding table of f, as the paper says.
- A multi-valued feature (e.g. Beauty's attribute ids) is mean-pooled into one vector per item
  in Eq. (4); in the long-term split every value of every earlier item is one element of L_f^u.
- Self-attention is followed by residual + layer norm and scaled by 1/sqrt(D/H), as in the
  official code (the paper's Eq. (13) writes the unscaled product).
- The session may be padded on the left ([0, 0, a, b, c]) or on the right ([a, b, c, 0, 0], what
  `pad_sequence` makes): a right-padded row is moved to the left before encoding (`left_align`), so
  both give the same user vector; padding between real items raises. The long-term behaviour is
  a bag (its order is never read), so any layout of it gives the same vector.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class SDMConfig:
    n_items: int  # item ids are 1..n_items, 0 = padding
    profile_sizes: dict[str, int] = field(default_factory=dict)  # e.g. {"user": n_users + 1}
    dim: int = 64  # paper/official: 64 units
    num_heads: int = 4  # official run flag num_heads=4
    lstm_layers: int = 1  # official flag num_layers=1; more layers get residuals (paper §4.4)
    dropout: float = 0.2  # official default dropout
    # A long-term feature with at most this many values (category, brand, ...) is pooled from the
    # count of each value instead of one row per occurrence: Eqs. (17)-(18), far fewer rows.
    count_pooling_max_vocab: int = 4096

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if not self.profile_sizes:
            raise ValueError("profile_sizes needs at least one field, e.g. {'user': n_users + 1}")
        for name, size in self.profile_sizes.items():
            if size < 2:
                raise ValueError(
                    f"profile field {name!r} needs size >= 2 (0 = unknown), got {size}"
                )
        if self.dim < 1 or self.dim % self.num_heads:
            raise ValueError(
                f"dim ({self.dim}) must be a positive multiple of num_heads ({self.num_heads})"
            )
        if self.lstm_layers < 1:
            raise ValueError(f"lstm_layers must be >= 1, got {self.lstm_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def check_ids(name: str, ids: Tensor, high: int, low: int = 0) -> None:
    """Raise a ValueError naming the input when an id lies outside low..high: an embedding lookup
    would otherwise fail with a bare IndexError (or, on a GPU, a device assert). One min and one max
    per call; skipped while torch.export traces the model, where ids are symbolic."""
    if ids.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()  # one pass, one device sync
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        raise ValueError(f"{name}: id {bad} is out of range; expected ids in {low}..{high}")


def left_align(history: Tensor, *aligned: Tensor, name: str = "history"
               ) -> tuple[Tensor, tuple[Tensor, ...], Tensor | None]:
    """Rows padded on the right (`[a, b, c, 0, 0]`, what `torch.nn.utils.rnn.pad_sequence` makes)
    moved to the left padding the model reads (`[0, 0, a, b, c]`); each tensor of `aligned`
    (B, L, ...) moves with its row. Returns (history, aligned, shift): shift (B,) is each row's
    move, None when every row was left-padded already (nothing is copied then). A row with padding
    between real items is neither layout and raises a ValueError that shows it (named `name`)."""
    real = history != 0  # (B, L)
    rises = (real[:, 1:] & ~real[:, :-1]).sum(1)  # (B,) padding -> item steps
    falls = (~real[:, 1:] & real[:, :-1]).sum(1)  # (B,) item -> padding steps
    traced = torch.compiler.is_compiling()  # torch.export / ONNX: no data-dependent branch
    if not traced and not bool(falls.any()):
        return history, aligned, None
    bad = ((rises > 0) & (falls > 0)) | (rises > 1) | (falls > 1)
    if not traced and bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name} row {row} has padding (0) between real items: "
                         f"{history[row].tolist()}; expected left padding [0, 0, a, b, c] or right "
                         f"padding [a, b, c, 0, 0]")
    L = history.shape[1]
    shift = (~real).sum(1) * (falls > 0)  # (B,): a right-padded row moves by its trailing zeros
    idx = (torch.arange(L, device=history.device) - shift[:, None]) % L  # new[j] = old[j - shift]
    moved = tuple(t.gather(1, idx.view(*idx.shape, *[1] * (t.dim() - 2)).expand_as(t))
                  for t in aligned)
    return history.gather(1, idx), moved, shift


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``mask``-True entries; a row with no True entry gets all-zero weights."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # finite: no NaN anywhere
    return torch.softmax(scores, dim=dim) * mask  # an all-masked row: uniform * 0 = 0


class MultiHeadSelfAttention(nn.Module):
    """Eqs. (11)-(14): H heads over the LSTM states, then residual + layer norm (official code)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)  # W^O of Eq. (11)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, S, D) float; mask: (B, S) bool, True = real action. Returns (B, S, D)."""
        B, S, D = x.shape
        H = self.num_heads
        q, k, v = (
            self.to_qkv(x).view(B, S, 3, H, D // H).permute(2, 0, 3, 1, 4)
        )  # 3 x (B, H, S, D/H)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)  # (B, H, S, S), Eq. (13)
        weights = masked_softmax(scores, mask[:, None, None, :])  # padded keys get weight 0
        heads = weights @ v  # (B, H, S, S) @ (B, H, S, D/H) -> (B, H, S, D/H), Eq. (14)
        out = self.to_out(heads.transpose(1, 2).reshape(B, S, D))  # (B, S, D), Eq. (11)
        return self.norm(x + self.dropout(out))


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


class SDM(nn.Module):
    """Sequential Deep Matching: short-term session + long-term behaviour + gated fusion.

    Args:
        config: sizes and hyper-parameters (see ``SDMConfig``).
        item_features: side features of items besides the id, name -> (N + 1, A) int64 table
            of feature codes (A values per item; 0 = padding/unknown; row 0 is the padding
            item). The order of the dict is the order of F after the item id.
    """

    def __init__(
        self, config: SDMConfig, *, item_features: Mapping[str, Tensor] | None = None
    ) -> None:
        super().__init__()
        self.config = config
        D, N = config.dim, config.n_items
        item_features = dict(item_features or {})
        self.feature_names = ["item"] + list(item_features)
        if "item" in item_features:
            raise ValueError("'item' is the id feature; name side features differently")

        # Eq. (4): one embedding table per item feature f; the id table is the first.
        self.feature_embeddings = nn.ModuleDict({"item": nn.Embedding(N + 1, D, padding_idx=0)})
        for name, table in item_features.items():
            if table.dim() == 1:
                table = table[:, None]
            if table.dim() != 2 or table.shape[0] != N + 1 or table.dtype != torch.int64:
                raise ValueError(
                    f"item feature {name!r} must be an int64 (n_items + 1, A) table, got "
                    f"{tuple(table.shape)} {table.dtype}"
                )
            self.register_buffer(f"table_{name}", table.clone(), persistent=False)
            size = int(table.max()) + 1
            self.feature_embeddings[name] = nn.Embedding(max(size, 2), D, padding_idx=0)

        # Eq. (5): user profile e_u from its fields (NOTE: dense tanh to D, official user_fc_trans).
        self.profile_embeddings = nn.ModuleDict(
            {
                name: nn.Embedding(size, D, padding_idx=0)
                for name, size in config.profile_sizes.items()
            }
        )
        self.profile_proj = nn.Linear(D * len(config.profile_sizes), D)

        # Short-term: LSTM (Eqs. (6)-(10)) -> self-attention (Eqs. (11)-(14)) -> user attention.
        F_ = len(self.feature_names)
        self.lstm = nn.ModuleList(
            [
                nn.LSTM(F_ * D if layer == 0 else D, D, batch_first=True)
                for layer in range(config.lstm_layers)
            ]
        )
        self.self_attention = MultiHeadSelfAttention(D, config.num_heads, config.dropout)
        # Long-term: Eq. (20) dense layer over the concatenated per-feature poolings.
        self.long_proj = nn.Linear(F_ * D, D)
        # Gated fusion, Eq. (21): W1 e_u + W2 s + W3 p + b.
        self.gate_user = nn.Linear(D, D, bias=True)  # W1 and b
        self.gate_short = nn.Linear(D, D, bias=False)  # W2
        self.gate_long = nn.Linear(D, D, bias=False)  # W3
        # Item vectors v_i of Eq. (1): a separate output table, as the official ``nce_weights``.
        self.item_vectors = nn.Embedding(N + 1, D)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in list(self.feature_embeddings.values()) + list(self.profile_embeddings.values()):
            nn.init.normal_(emb.weight, std=0.05)
            with torch.no_grad():
                emb.weight[0].zero_()
        nn.init.normal_(self.item_vectors.weight, std=0.05)

    # ------------------------------------------------------------------ inputs
    def _check(self, name: str, x: Tensor, ndim: int) -> None:
        if x.dim() != ndim or x.dtype != torch.int64:
            raise ValueError(
                f"{name} must be an int64 tensor with {ndim} dims, got {tuple(x.shape)} {x.dtype}"
            )

    def feature_values(self, name: str, items: Tensor) -> Tensor:
        """Codes of feature ``name`` for ``items`` (...,) -> (..., A); 0 stays 0 (padding)."""
        if name == "item":
            return items.unsqueeze(-1)
        return getattr(self, f"table_{name}")[items]

    def embed_items(self, items: Tensor) -> Tensor:
        """Eq. (4): e_i = concat_f(e_i^f). items (B, S) int64 -> (B, S, F*D); padding -> 0."""
        parts = []
        for name in self.feature_names:
            codes = self.feature_values(name, items)  # (B, S, A)
            emb = self.feature_embeddings[name](codes)  # (B, S, A, D), padding rows are 0
            count = (codes != 0).sum(-1, keepdim=True).clamp(min=1)  # (B, S, 1)
            parts.append(emb.sum(-2) / count)  # (B, S, D): mean over the item's values
        return torch.cat(parts, dim=-1)  # (B, S, F*D)

    def user_profile(self, profile: Mapping[str, Tensor]) -> Tensor:
        """Eq. (5): e_u from the profile fields, each (B,) int64 -> (B, D)."""
        missing = set(self.profile_embeddings) - set(profile)
        if missing:
            raise ValueError(
                f"profile misses fields {sorted(missing)}; expected {list(self.profile_embeddings)}"
            )
        for name, emb in self.profile_embeddings.items():
            check_ids(f"profile[{name!r}]", profile[name], emb.num_embeddings - 1)
        parts = []
        for name, emb in self.profile_embeddings.items():
            self._check(f"profile[{name!r}]", profile[name], 1)
            parts.append(emb(profile[name]))  # (B, D)
        return torch.tanh(self.profile_proj(torch.cat(parts, dim=-1)))  # (B, D)

    # ------------------------------------------------------------------ towers
    def session_states(self, short: Tensor) -> tuple[Tensor, Tensor]:
        """Eqs. (6)-(14): latest session (B, S) -> x^_k (B, S, D) and its mask (B, S).

        The session may be left- or right-padded (a right-padded row is left-aligned first). The
        LSTM reads it right-aligned, so padding never enters its state; the returned states and
        mask are right-aligned whatever the input's layout (True = real action).
        """
        short, _, _ = left_align(short, name="short")  # right padding -> left padding
        B, S = short.shape
        mask = short != 0  # (B, S)
        lengths = mask.sum(1)  # (B,)
        pos = torch.arange(S, device=short.device)
        idx = (pos[None, :] + (S - lengths)[:, None]).clamp(
            max=S - 1
        )  # (B, S): left- -> right-padded
        right = short.gather(1, idx).masked_fill(pos[None, :] >= lengths[:, None], 0)  # (B, S)
        right_mask = right != 0
        x = self.dropout(self.embed_items(right))  # (B, S, F*D)
        for layer, lstm in enumerate(self.lstm):
            h, _ = lstm(x)  # (B, S, D), Eqs. (6)-(10); trailing padding cannot reach earlier states
            x = h if layer == 0 else x + h  # residual between stacked layers (paper §4.4)
        return self.self_attention(x, right_mask), right_mask  # (B, S, D), Eqs. (11)-(14)

    def short_term(self, short: Tensor, e_u: Tensor) -> Tensor:
        """Eqs. (6)-(16): latest session (B, S), left- or right-padded -> s^u (B, D): the session
        states of `session_states()` pooled by the user attention; padded positions get weight 0."""
        x_hat, right_mask = self.session_states(short)  # (B, S, D), (B, S)
        alpha = masked_softmax(
            (x_hat @ e_u.unsqueeze(-1)).squeeze(-1), right_mask
        )  # (B, S), Eq. (15)
        return (alpha.unsqueeze(-1) * x_hat).sum(1)  # (B, D), Eq. (16)

    def long_term(self, long: Tensor, e_u: Tensor) -> Tensor:
        """Eqs. (17)-(20): behaviour before the session (B, T), padded anywhere -> p^u (B, D).
        A bag: the elements are pooled by attention, so their order and the padding's place do not
        matter."""
        B, T = long.shape
        pooled = []
        for name in self.feature_names:
            codes = self.feature_values(name, long).reshape(B, -1)  # (B, T*A): the subset L_f^u
            emb = self.feature_embeddings[name]
            if emb.num_embeddings <= self.config.count_pooling_max_vocab:
                pooled.append(self._pool_by_counts(codes, emb.weight, e_u))
                continue
            g = emb(codes)  # (B, T*A, D): one row per element g_k of L_f^u
            alpha = masked_softmax((g @ e_u.unsqueeze(-1)).squeeze(-1), codes != 0)  # Eq. (17)
            alpha = self.dropout(alpha)  # dropout on attention weights, as the official code
            pooled.append((alpha.unsqueeze(-1) * g).sum(1))  # (B, D): z_f^u, Eq. (18)
        z = torch.cat(pooled, dim=-1)  # (B, F*D), Eq. (19)
        return torch.tanh(self.long_proj(z))  # (B, D), Eq. (20)

    def _pool_by_counts(self, codes: Tensor, table: Tensor, e_u: Tensor) -> Tensor:
        """Eqs. (17)-(18) for a small vocabulary, exactly: weight c * exp(score) for c hits.

        sum_k softmax_k(g_k . e_u) g_k over the elements equals sum_v softmax_v(E_v . e_u +
        log c_v) E_v over the distinct values v, so (B, V) scores replace (B, T*A, D) rows.
        codes (B, K) int64, table (V, D), e_u (B, D) -> z_f^u (B, D).
        """
        B, V = codes.shape[0], table.shape[0]
        count = torch.zeros(B, V, device=codes.device, dtype=e_u.dtype)
        count.scatter_add_(1, codes, torch.ones_like(codes, dtype=e_u.dtype))  # (B, V)
        count[:, 0] = 0.0  # padding is no behaviour
        scores = e_u @ table.T + torch.log(count.clamp(min=1.0))  # (B, D) @ (D, V) -> (B, V)
        alpha = self.dropout(masked_softmax(scores, count > 0))  # (B, V)
        return alpha @ table  # (B, V) @ (V, D) -> (B, D)

    def gate(self, e_u: Tensor, s: Tensor, p: Tensor) -> Tensor:
        """Eq. (21): G = sigmoid(W1 e_u + W2 s + W3 p + b), (B, D) each -> (B, D) in (0, 1)."""
        return torch.sigmoid(self.gate_user(e_u) + self.gate_short(s) + self.gate_long(p))

    def user_tower(
        self,
        *,
        profile: Mapping[str, Tensor],
        short: Tensor,
        long: Tensor,
        force_gate: float | None = None,
        return_gate: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The user vector o^u of Eq. (22).

        Args:
            profile: field name -> (B,) int64 codes (e.g. {"user": user ids}).
            short: (B, S) int64 latest session, oldest first, 0 = padding, on the left
                ([0, 0, a, b, c]) or on the right ([a, b, c, 0, 0], as `pad_sequence` makes it).
            long: (B, T) int64 behaviour before that session, 0 = padding (a bag: any layout).
            force_gate: replace G by this constant (1.0 -> o = s, 0.0 -> o = p); for analysis.
            return_gate: also return G (B, D).

        Returns:
            o: (B, D) float [, G: (B, D)].
        """
        self._check("short", short, 2)
        self._check("long", long, 2)
        check_ids("short (item ids, 0 = padding)", short, self.config.n_items)
        check_ids("long (item ids, 0 = padding)", long, self.config.n_items)
        if short.shape[0] != long.shape[0]:
            raise ValueError(
                "short and long must share the batch size, got "
                f"{short.shape[0]} and {long.shape[0]}"
            )
        e_u = self.user_profile(profile)  # (B, D)
        s = self.short_term(short, e_u)  # (B, D)
        p = self.long_term(long, e_u)  # (B, D)
        G = self.gate(e_u, s, p)  # (B, D)
        if force_gate is not None:
            G = torch.full_like(G, float(force_gate))
        o = (1.0 - G) * p + G * s  # (B, D), Eq. (22)
        return (o, G) if return_gate else o

    forward = user_tower

    def item_tower(self) -> Tensor:
        """v_i for every item, (N + 1, D); row 0 is padding and must be excluded from rankings."""
        return self.item_vectors.weight

    def score(self, user_vec: Tensor) -> Tensor:
        """Eq. (1): z_i = o^u . v_i over all items, (B, D) -> (B, N + 1); padding gets -inf."""
        scores = user_vec @ self.item_tower().T  # (B, D) @ (D, N + 1) -> (B, N + 1)
        scores[:, 0] = float("-inf")
        return scores

    # ------------------------------------------------------------------ objective
    def loss(
        self,
        user_vec: Tensor,
        target: Tensor,
        negatives: Tensor,
        *,
        negative_log_q: Tensor | None = None,
        target_log_q: Tensor | None = None,
    ) -> Tensor:
        """Eqs. (2)-(3) by sampled softmax: cross-entropy of the next item against M negatives.

        As in TF's ``sampled_softmax_loss`` (used by the official code), logits are corrected
        by -log Q(i) of the sampler and a negative equal to the target (an accidental hit)
        is removed. With negatives = every other item and no correction this is the full
        softmax cross-entropy of Eq. (3).

        Args:
            user_vec: (B, D) o^u.
            target: (B,) int64 next item.
            negatives: (M,) int64 shared by the batch, or (B, M) per example.
            negative_log_q: log Q of each negative, same shape as ``negatives``.
            target_log_q: (B,) log Q of each target.

        Returns:
            scalar mean loss.
        """
        self._check("target", target, 1)
        if negatives.dtype != torch.int64 or negatives.dim() not in (1, 2):
            raise ValueError(
                "negatives must be int64 (M,) or (B, M), got "
                f"{tuple(negatives.shape)} {negatives.dtype}"
            )
        if (target == 0).any():
            raise ValueError("target contains the padding id 0")
        check_ids("target", target, self.config.n_items, low=1)
        check_ids("negatives", negatives, self.config.n_items, low=1)
        v_pos = self.item_vectors(target)  # (B, D)
        pos = (user_vec * v_pos).sum(-1, keepdim=True)  # (B, 1)
        if negatives.dim() == 1:
            neg = user_vec @ self.item_vectors(negatives).T  # (B, D) @ (D, M) -> (B, M)
            hit = negatives[None, :] == target[:, None]  # (B, M)
        else:
            neg = (self.item_vectors(negatives) @ user_vec.unsqueeze(-1)).squeeze(-1)  # (B, M)
            hit = negatives == target[:, None]
        if negative_log_q is not None:
            neg = neg - negative_log_q
        if target_log_q is not None:
            pos = pos - target_log_q.unsqueeze(-1)
        neg = neg.masked_fill(hit, float("-inf"))
        logits = torch.cat([pos, neg], dim=1)  # (B, 1 + M): the target is class 0
        return F.cross_entropy(logits, torch.zeros_like(target))

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, short: torch.Tensor, k: int = 10, *, exclude_seen: bool = True,
                  **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first: the items 1..N by Eq. (1), in eval mode, less
        those of `short` and `long` if exclude_seen. `inputs` go to `user_tower` (`long`, ...)."""
        with _eval_mode(self):
            scores = self.score(self.user_tower(short=short, **inputs))  # (B, N + 1), Eq. (1)
        seen = torch.cat([short, inputs["long"]], dim=1) if exclude_seen else None  # (B, S + T)
        return _top_k(scores, seen, k)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict", "init"} for `SDM.load`,
        written in place; an existing file is kept unless overwrite=True."""
        tables = {name: getattr(self, f"table_{name}") for name in self.feature_names[1:]}
        _save_checkpoint(self, self.config, path, overwrite, init={"item_features": tables})

    @classmethod
    def load(cls, path: str, map_location="cpu") -> SDM:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, SDMConfig, path, map_location, extra=("init",))
        model = cls(config, item_features=ckpt["init"]["item_features"])  # name -> (N + 1, A)
        return _load_weights(model, ckpt, path, map_location)
