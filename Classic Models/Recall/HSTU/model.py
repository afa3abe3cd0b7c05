"""HSTU: Hierarchical Sequential Transduction Units, a generative sequential recommender.

Paper: Jiaqi Zhai, Lucy Liao, Xing Liu, Yueming Wang, Rui Li, Xuan Cao, Leon Gao, Zhaojie Gong,
Fangda Gu, Michael He, Yinghai Lu, Yu Shi, "Actions Speak Louder than Words: Trillion-Parameter
Sequential Transducers for Generative Recommendations", ICML 2024. https://arxiv.org/abs/2402.17152
Official code: https://github.com/facebookresearch/generative-recommenders (research/ folder, the
code behind the paper's public-data experiments, Section 4.1.1).

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import HSTU, HSTUConfig
    model = HSTU(HSTUConfig(n_items=100, max_len=20, dim=16, n_blocks=2, n_negatives=32))
    history = torch.randint(1, 101, (2, 20))  # (B, L) item ids, 0 = padding (left or right)
    times = torch.cumsum(torch.randint(1, 10**5, (2, 20)), dim=1)  # (B, L) seconds, increasing
    loss = model.loss(history[:, :-1], history[:, 1:], timestamps=times[:, :-1])  # sampled softmax
    loss.backward()
    scores = model.eval().score(history, times)  # (B, N + 1) cosine / τ, column 0 = -inf
    weights = model.attention_weights(history, times)  # (B, H, L, L) SiLU weights, not softmax
    top, items = model.recommend(history, k=5, timestamps=times)  # (B, 5) unseen items
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = HSTU.load("m.pt")  # rebuilt from this file alone, in eval mode

Notation (the note, README.md, uses the same letters):
    B: batch (users), L: history length (<= max_len), D: embedding dim, H: heads,
    d_qk / d_v: per-head query-key / value dims, N: number of items (1..N; 0 is padding),
    S: number of sampled negatives, τ: softmax temperature.

One HSTU layer (the note's "Maths"; equation numbers as in the paper):
    U(X), V(X), Q(X), K(X) = Split(φ1(f1(X)))          Eq. (1)  f1 linear, φ1 = SiLU
    A(X) V(X) = φ2(Q(X) K(X)ᵀ + rab^{p,t}) V(X)        Eq. (2)  φ2 = SiLU, no softmax, divided by n
    Y(X) = f2(Norm(A(X) V(X)) ⊙ U(X))                  Eq. (3)  f2 linear, Norm = LayerNorm
with a residual X + Y(X) and a LayerNorm on the layer input, as the official code does.
rab^{p,t} (relative attention bias) = b^p[i - j] + b^t[bucket(t_i - t_j)],
bucket = ⌊ln max(|Δt|, 1) / 0.301⌋ clipped to 128, as the official code's bucketization_fn.
0.301 is log10(2), but the official code divides the *natural* log by it, so a bucket spans a
factor e^0.301 ≈ 1.35 of |Δt| (about 2.3 buckets per doubling), not a factor 2.

Training (official research code): the output embedding and the item embeddings are L2-normalised
and their dot product divided by τ = 0.05; loss = sampled softmax against S uniformly drawn
negatives (`loss="sampled_softmax"`), or a full softmax over all N items (`loss="ce"`).

NOTE (deviations, each listed in the note's "Deviations" section):
- Dense, left-padded (B, L) tensors replace the official jagged tensors (fbgemm); padded keys are
  masked. Absolute positions for the input embedding are counted from the most recent item, so the
  amount of padding does not matter; the attention is divided by the fixed n = max_len, so outputs
  do not depend on padding either. The official code divides by its padded length,
  max_sequence_len + max_output_len (the history window plus the target slots); the LayerNorm of
  Eq. (3) that follows cancels any constant factor (up to its eps), so the two agree.
- The S negatives are shared by all positions of a batch (one (T, D) @ (D, S) matmul) instead of
  drawn per position; both are uniform samples, the shared form is several times cheaper on a CPU.
- The query time of position i is the timestamp of item i+1 (the time of the request it serves), as
  in the official RelativeBucketedTimeAndPositionBasedBias; the last position reuses its own time.
  The official pipeline writes the target's timestamp into the slot after the last real item, so
  there the last real position sees the request time; the (B, L) windows here carry no request time.
- When no timestamps are given the bias is positional only; the official code then adds no
  relative bias at all (it adds rab only when timestamps exist).
- The temperature stays the official 0.05 by default; with the *full* softmax over the 12,101
  Beauty items, τ = 0.05 collapsed every user onto popularity in the first epoch, so the Beauty
  full-softmax runs use τ = 0.1 (and 0.2, too flat; the note's "Deviations").
- M-FALCON (batched inference over candidates) and stochastic length (training-time sequence
  sparsification) are not implemented: the note explains them; at max_len = 50 they would not
  matter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("sampled_softmax", "ce")


@dataclass
class HSTUConfig:
    n_items: int  # N: items are 1..N, 0 is padding
    max_len: int = 50  # official Amazon configs: 50
    dim: int = 64  # official Amazon configs: item_embedding_dim 64
    n_blocks: int = 4  # official amzn-books: 4 blocks
    n_heads: int = 4  # official amzn-books: 4 heads
    qk_dim: int = 16  # d_qk per head (official dqk = 16)
    v_dim: int = 16  # d_v per head (official dv = 16)
    dropout: float = 0.5  # official Amazon: 0.5 on the input embedding and before f2
    n_time_buckets: int = 128  # official: 128 log buckets of |Δt|
    time_bucket_divisor: float = 0.301  # official: bucket = floor(ln|Δt| / 0.301)
    loss: str = "sampled_softmax"  # official: SampledSoftmaxLoss; "ce" = full softmax over N items
    n_negatives: int = 512  # official amzn-books: 512 uniform ("local") negatives
    temperature: float = 0.05  # official: τ = 0.05 on L2-normalised embeddings
    eps: float = 1e-6  # LayerNorm / L2-norm epsilon (official 1e-6)

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        for name in ("max_len", "dim", "n_blocks", "n_heads", "qk_dim", "v_dim", "n_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


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


def left_align(history: torch.Tensor, *aligned: torch.Tensor
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
    """Rows padded on the right (`[a, b, c, 0, 0]`, what `torch.nn.utils.rnn.pad_sequence` makes) moved to
    the left padding the model reads (`[0, 0, a, b, c]`); each tensor of `aligned` (B, L, ...) moves with
    its row. Returns (history, aligned, shift): shift (B,) is each row's move, None when every row was
    left-padded already (nothing is copied then). A row with padding between real items is neither
    layout and raises a ValueError that shows it."""
    real = history != 0  # (B, L)
    rises = (real[:, 1:] & ~real[:, :-1]).sum(1)  # (B,) padding -> item steps
    falls = (~real[:, 1:] & real[:, :-1]).sum(1)  # (B,) item -> padding steps
    traced = torch.compiler.is_compiling()  # torch.export / ONNX: no data-dependent branch, always move
    if not traced and not bool(falls.any()):
        return history, aligned, None
    bad = ((rises > 0) & (falls > 0)) | (rises > 1) | (falls > 1)
    if not traced and bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"history row {row} has padding (0) between real items: "
                         f"{history[row].tolist()}; expected left padding [0, 0, a, b, c] or right "
                         f"padding [a, b, c, 0, 0]")
    L = history.shape[1]
    shift = (~real).sum(1) * (falls > 0)  # (B,): a right-padded row moves by its trailing zeros
    idx = (torch.arange(L, device=history.device) - shift[:, None]) % L  # new[j] = old[j - shift]
    moved = tuple(t.gather(1, idx.view(*idx.shape, *[1] * (t.dim() - 2)).expand_as(t)) for t in aligned)
    return history.gather(1, idx), moved, shift


def unalign(x: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """Undo `left_align` on (B, L, ...) per-position outputs: back to the caller's layout."""
    if shift is None:
        return x
    L = x.shape[1]
    idx = (torch.arange(L, device=x.device) + shift[:, None]) % L  # old[i] = new[i + shift]
    return x.gather(1, idx.view(*idx.shape, *[1] * (x.dim() - 2)).expand_as(x))


def time_buckets(delta: torch.Tensor, *, n_buckets: int, divisor: float) -> torch.Tensor:
    """Log-bucket time gaps: ⌊ln(max(|Δt|, 1)) / divisor⌋ clipped to [0, n_buckets]. int64."""
    return (torch.log(delta.abs().clamp(min=1).double()) / divisor).long().clamp(0, n_buckets)


class RelativeAttentionBias(nn.Module):
    """rab^{p,t}: a learned scalar per relative position i - j plus one per log time bucket."""

    def __init__(self, cfg: HSTUConfig) -> None:
        super().__init__()
        self.max_len = cfg.max_len
        self.n_buckets = cfg.n_time_buckets
        self.divisor = cfg.time_bucket_divisor
        self.position_bias = nn.Parameter(torch.randn(2 * cfg.max_len - 1) * 0.02)  # b^p[j - i]
        self.time_bias = nn.Parameter(torch.randn(cfg.n_time_buckets + 1) * 0.02)  # b^t[bucket]

    def forward(
        self, L: int, timestamps: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:
        """Returns (1 or B, L, L) float: bias for query i (row) and key j (column)."""
        i = torch.arange(L, device=device)
        rel = i.view(1, L) - i.view(L, 1) + self.max_len - 1  # (L, L): j - i shifted to >= 0
        bias = self.position_bias[rel].unsqueeze(0)  # (1, L, L)
        if timestamps is not None:
            # query time = time of the next item (the request), last position keeps its own
            query_time = torch.cat([timestamps[:, 1:], timestamps[:, -1:]], dim=1)  # (B, L)
            delta = query_time.unsqueeze(2) - timestamps.unsqueeze(1)  # (B, L, L)
            buckets = time_buckets(delta, n_buckets=self.n_buckets, divisor=self.divisor)
            bias = bias + self.time_bias[buckets]  # (B, L, L)
        return bias


class HSTULayer(nn.Module):
    """One HSTU layer, Eq. (1)-(3), with pointwise (SiLU) attention instead of softmax."""

    def __init__(self, cfg: HSTUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H, dqk, dv = cfg.n_heads, cfg.qk_dim, cfg.v_dim
        self.f1 = nn.Linear(cfg.dim, 2 * H * dv + 2 * H * dqk, bias=False)  # -> U, V, Q, K
        self.f2 = nn.Linear(H * dv, cfg.dim)
        self.rab = RelativeAttentionBias(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.f1.weight, std=0.02)  # official: N(0, 0.02) for the uvqk matrix
        nn.init.xavier_uniform_(self.f2.weight)  # official: xavier for the output projection

    def attention(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        timestamps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. (1)-(2). x: (B, L, D) layer input; allowed: (B, L, L) bool.

        Returns U (B, L, H*d_v), A(X)V(X) (B, L, H*d_v) and the attention weights (B, H, L, L).
        """
        cfg = self.cfg
        B, L, _ = x.shape
        H, dqk, dv = cfg.n_heads, cfg.qk_dim, cfg.v_dim
        normed = F.layer_norm(x, (cfg.dim,), eps=cfg.eps)  # (B, L, D)
        uvqk = F.silu(self.f1(normed))  # Eq. (1): (B, L, 2*H*d_v + 2*H*d_qk)
        u, v, q, k = uvqk.split([H * dv, H * dv, H * dqk, H * dqk], dim=-1)
        q = q.view(B, L, H, dqk).transpose(1, 2)  # (B, H, L, d_qk)
        k = k.view(B, L, H, dqk).transpose(1, 2)  # (B, H, L, d_qk)
        v = v.view(B, L, H, dv).transpose(1, 2)  # (B, H, L, d_v)
        logits = q @ k.transpose(-1, -2)  # (B, H, L, d_qk) @ (B, H, d_qk, L) -> (B, H, L, L)
        logits = logits + self.rab(L, timestamps, x.device).unsqueeze(1)  # + rab^{p,t}
        # Eq. (2): pointwise SiLU, divided by n (official: its padded length), no softmax
        weights = F.silu(logits) / cfg.max_len * allowed.unsqueeze(1)  # (B, H, L, L)
        av = weights @ v  # (B, H, L, L) @ (B, H, L, d_v) -> (B, H, L, d_v)
        av = av.transpose(1, 2).reshape(B, L, H * dv)  # (B, L, H*d_v)
        return u, av, weights

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, timestamps: torch.Tensor | None = None
    ) -> torch.Tensor:
        u, av, _ = self.attention(x, allowed, timestamps)
        av = F.layer_norm(av, (av.shape[-1],), eps=self.cfg.eps)  # Norm(A(X)V(X))
        return x + self.f2(self.dropout(av * u))  # Eq. (3) + residual, (B, L, D)


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


class HSTU(nn.Module):
    """HSTU encoder + the official sampled-softmax objective."""

    def __init__(self, config: HSTUConfig) -> None:
        super().__init__()
        cfg = self.cfg = self.config = config
        self.item_embedding = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.dim)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.n_blocks))
        # official init (truncated normal there): items std 0.02, positions std sqrt(1/D). The small
        # item scale matters: Adam's fixed-size steps then move item vectors fast, relative to their
        # norm; with std sqrt(1/D) the full-softmax run on Beauty collapsed to popularity.
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=math.sqrt(1.0 / cfg.dim))
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    @staticmethod
    def _check_time_order(history: torch.Tensor, timestamps: torch.Tensor | None) -> None:
        """Timestamps must not decrease along a (left-padded) history: rab^t buckets the time from
        each key to the query, and a decreasing clock would bucket negative gaps as if they were
        recent. Skipped while torch.export traces (no data there)."""
        if timestamps is None or torch.compiler.is_compiling():
            return
        both = (history[:, 1:] != 0) & (history[:, :-1] != 0)  # (B, L-1) consecutive real items
        back = both & (timestamps[:, 1:] < timestamps[:, :-1])
        if bool(back.any()):
            row, col = (int(v) for v in back.nonzero()[0])
            raise ValueError(f"timestamps of history row {row} decrease from slot {col} to slot "
                             f"{col + 1} ({int(timestamps[row, col])} then "
                             f"{int(timestamps[row, col + 1])}); expected events in time order, "
                             f"oldest first")

    def _mask(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if history.dim() != 2 or history.dtype != torch.long:
            raise ValueError(
                f"history must be (B, L) int64, got {tuple(history.shape)} {history.dtype}"
            )
        L = history.shape[1]
        if L > self.cfg.max_len:
            raise ValueError(f"history length {L} > max_len {self.cfg.max_len}")
        check_ids("history", history, 0, self.cfg.n_items)
        real = history != 0  # (B, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=history.device).tril()  # (L, L)
        allowed = causal & real.unsqueeze(1)  # (B, L, L): key j real and j <= i
        return real, allowed

    def forward(
        self, history: torch.Tensor, timestamps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode histories.

        Args:
            history: (B, L) int64 item ids, oldest first, 0 = padding, on the left ([0, 0, a, b, c])
                or on the right ([a, b, c, 0, 0], as `pad_sequence` makes it): right-padded rows are
                read as left-padded ones (`left_align`), the same states come back in your layout.
            timestamps: optional (B, L) int64 event times (any unit; seconds in the paper),
                non-decreasing along each history (the time deltas of rab^t assume it).
        Returns:
            (B, L, D) float, L2-normalised state after each item (zero at padded slots).
        """
        self._mask(history)  # checks shape, dtype and ids before anything reads them
        B, L = history.shape
        if timestamps is not None and timestamps.shape != history.shape:
            raise ValueError(f"timestamps {tuple(timestamps.shape)} must match history {(B, L)}")
        history, moved, shift = left_align(history, *(() if timestamps is None else (timestamps,)))
        timestamps = moved[0] if moved else None
        self._check_time_order(history, timestamps)
        real, allowed = self._mask(history)
        positions = torch.arange(L - 1, -1, -1, device=history.device)  # counted from the newest
        x = self.item_embedding(history) * math.sqrt(self.cfg.dim) + self.position_embedding(
            positions
        )  # (B, L, D)
        x = self.embed_dropout(x) * real.unsqueeze(-1)
        for layer in self.layers:
            x = layer(x, allowed, timestamps) * real.unsqueeze(-1)  # (B, L, D)
        x = F.normalize(x, dim=-1, eps=self.cfg.eps)  # official L2NormEmbeddingPostprocessor
        return unalign(x, shift)  # (B, L, D), in the caller's layout

    @torch.no_grad()
    def attention_weights(
        self, history: torch.Tensor, timestamps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) history -> (B, H, L, L) weights of the last layer's Eq. (2), SiLU(QKᵀ + rab) / n
        on allowed pairs and 0 elsewhere: not normalised (rows need not sum to 1), for inspection;
        the note's figure plots them. Rows and columns follow the left-padded layout."""
        self._mask(history)
        history, moved, _ = left_align(history, *(() if timestamps is None else (timestamps,)))
        timestamps = moved[0] if moved else None
        layer = self.layers[-1]
        captured = {}
        hook = layer.register_forward_pre_hook(lambda _, args: captured.update(a=args))
        try:
            self.forward(history, timestamps)
        finally:
            hook.remove()
        return layer.attention(*captured["a"])[2]  # inputs of the last layer -> its weights

    def item_embeddings(self) -> torch.Tensor:
        """(N + 1, D) L2-normalised item embeddings (row 0 = padding, zero)."""
        return F.normalize(self.item_embedding.weight, dim=-1, eps=self.cfg.eps)

    def user_embedding(
        self, history: torch.Tensor, timestamps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) history, left- or right-padded -> (B, D): the state at the newest item."""
        self._mask(history)
        history, moved, _ = left_align(history, *(() if timestamps is None else (timestamps,)))
        return self.forward(history, moved[0] if moved else None)[:, -1]  # the last slot: newest

    def score(self, history: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) -> (B, N + 1) cosine scores / τ for every item; column 0 (padding) = -inf."""
        user = self.user_embedding(history, timestamps)  # (B, D)
        scores = user @ self.item_embeddings().T / self.cfg.temperature  # (B, D) @ (D, N+1)
        scores[:, 0] = float("-inf")
        return scores

    def loss(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        *,
        timestamps: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Autoregressive next-item loss at every position.

        Args:
            history: (B, L) int64 inputs (left-padded).
            targets: (B, L) int64 next item at each position, 0 where there is none.
            timestamps: optional (B, L) int64 times of the history items.
            negatives: optional (S,) int64 shared negatives for "sampled_softmax" (uniform when
                omitted).
        Returns:
            scalar, mean over positions with a target.
        """
        if targets.shape != history.shape:
            raise ValueError(
                f"targets {tuple(targets.shape)} must match history {tuple(history.shape)}"
            )
        check_ids("targets", targets, 0, self.cfg.n_items)
        if negatives is not None:
            check_ids("negatives", negatives, 1, self.cfg.n_items)
        states = self.forward(history, timestamps)  # (B, L, D)
        has_target = (targets != 0) & (history != 0)  # skip empty-prefix positions
        h = states[has_target]  # (T, D)
        pos = targets[has_target]  # (T,)
        if pos.numel() == 0:  # nothing to predict in this batch
            return states.sum() * 0.0
        E = self.item_embeddings()  # (N+1, D)
        tau = self.cfg.temperature
        if self.cfg.loss == "ce":
            logits = h @ E[1:].T / tau  # (T, D) @ (D, N) -> (T, N)
            return F.cross_entropy(logits, pos - 1)
        if negatives is None:
            negatives = torch.randint(
                1, self.cfg.n_items + 1, (self.cfg.n_negatives,), device=history.device
            )
        pos_logit = (h * E[pos]).sum(-1, keepdim=True) / tau  # (T, 1)
        neg_logit = h @ E[negatives].T / tau  # (T, D) @ (D, S) -> (T, S)
        # official: a sampled negative equal to the positive is pushed out of the softmax
        neg_logit = neg_logit.masked_fill(pos.unsqueeze(1) == negatives.unsqueeze(0), -5e4)
        return -F.log_softmax(torch.cat([pos_logit, neg_logit], dim=1), dim=1)[:, 0].mean()

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int = 10, *, exclude_seen: bool = True,
                  **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first: the items 1..N by `score`, in eval mode,
        less `history`'s if exclude_seen. `inputs` go to `score` (`timestamps`)."""
        with _eval_mode(self):
            scores = self.score(history, **inputs)  # (B, N + 1) cosine / τ
        return _top_k(scores, history if exclude_seen else None, k)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `HSTU.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.cfg, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> HSTU:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, HSTUConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
