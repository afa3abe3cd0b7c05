"""TIGER: a T5-style encoder-decoder that generates the semantic ID of the next item.

Paper: Shashank Rajput, Nikhil Mehta, Anima Singh, Raghunandan Keshavan, Trung Vu, Lukasz Heldt,
Lichan Hong, Yi Tay, Vinh Q. Tran, Jonah Samost, Maciej Kula, Ed H. Chi, Maheswaran Sathiamoorthy,
"Recommender Systems with Generative Retrieval", NeurIPS 2023. https://arxiv.org/abs/2305.05065
Official code: none released (the paper used T5X). T5 itself: Raffel et al., JMLR 2020.

Usage::

    import torch
    from model import TIGER, TIGERConfig
    cfg = TIGERConfig(code_sizes=(4, 4, 2), n_user_buckets=10, d_model=16, n_heads=2, d_head=8,
                      d_ff=32, n_encoder_layers=1, n_decoder_layers=1)
    model = TIGER(cfg)
    model.set_catalogue(torch.tensor([[0, 0, 0], [0, 1, 0], [1, 2, 0], [1, 2, 1], [3, 3, 0]]))
    user = torch.tensor([7, 8])  # (B,) raw user ids
    history = torch.tensor([[0, 1, 2], [3, 4, 5]])  # (B, L) item ids, 0 = padding, left or right
    loss = model.loss(user=user, history=history, target=torch.tensor([3, 1]))  # Eq. (8)
    items, scores, codes = model.generate(user=user, history=history, beam=3)  # (B, 3), Eq. (9)
    top, best = model.recommend(history, k=2, user=user)  # (B, 2) unseen items of a beam
    model.save("m.pt")  # config, weights, catalogue; a file there is kept without overwrite
    model = TIGER.load("m.pt")  # rebuilt from this file alone, in eval mode

This file stands alone: it needs only torch. Copy it into your project as is. The semantic IDs it
reads and writes come from the RQ-VAE in rqvae.py beside it (or from any other tokenizer): give the
model the (N, T) table of item IDs with `set_catalogue` and it does the rest.

Notation (the note, README.md, uses the same letters):
    B: batch (users), L: history length in items (<= max_history), T: tokens per semantic ID
    (M codes + 1 de-duplicating token), S = 1 + L*T encoder tokens, D: model dim (d_model),
    H: heads, Dh: head dim, K: beam width, N: items in the catalogue (ids 1..N; 0 = padding),
    V: code-token vocabulary = Σ_j sizes[j].

What the model does (note, "Maths", Eqs. (7)-(9); the paper numbers no equations):
    input  = [u, c^{(1)}_1..c^{(1)}_T, ..., c^{(L)}_1..c^{(L)}_T]   hashed user token + history IDs
    h      = Enc(input)                                   bidirectional T5 encoder
    p(c_t | c_<t, input) = softmax(Dec(c_<t, h) Wᵀ)        Eq. (7)  T5 decoder, tied embedding W
    L_rec  = -Σ_{t=1..T} log p(c_t | c_<t, input)          Eq. (8)  teacher-forced cross-entropy
    serve: beam search over Eq. (7) restricted to prefixes of real IDs (a prefix trie), so each
           of the K beams ends on a real item; score = log p(ID) = Σ_t log p(c_t | ...)   Eq. (9)

Vocabulary: 0 = padding, 1 = decoder start, then one token per (position j, code) for the T
positions of an ID (position j's codes are a separate range: "code 5 at level 1" and "code 5 at
level 2" are different tokens, as in the paper), then `n_user_buckets` user tokens.

NOTE (deviations, each listed in the note's "Deviations" section):
- The decoder's softmax runs over the V code tokens only (padding, start and user tokens can never
  be a target); the paper's T5X softmax runs over the whole vocabulary. Same argmax, smaller output.
- Attention scores are divided by sqrt(Dh) (T5 folds that factor into its initialisation).
- The user token sits right before the first history token (the history is left-padded), so its
  relative distance to the history does not depend on how much padding a batch carries.
- Histories may be padded on the left ([0, 0, a, b, c]) or on the right ([a, b, c, 0, 0], what
  `pad_sequence` makes): a right-padded row is moved to the left before it becomes tokens
  (`left_align`), so both give the same losses, scores and beams; padding between items raises.
- Constrained beam search renormalises nothing: a beam's score is the model's own log p(ID) with
  probability mass on invalid continuations simply dropped, so beam = N equals exhaustive scoring.

Speed (CPU training; the maths is unchanged, `cheap_cpu_dropout=False` restores plain PyTorch):
`dropout()` draws 16 random bits per element instead of `bernoulli_`'s per-element double, and
`Attention` writes softmax(q kᵀ / sqrt(Dh) + bias) v out when it trains on CPU with dropout, so the
attention weights get the same cheap masks (SDPA has no fused CPU kernel with dropout). Elsewhere
`F.scaled_dot_product_attention` runs its fused kernels. The demo adds bf16 autocast and fused AdamW.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PAD, BOS, FIRST_CODE = 0, 1, 2


@dataclass
class TIGERConfig:
    code_sizes: tuple[int, ...] = (256, 256, 256, 64)  # per ID position; paper: 3 x 256 + de-dup
    n_user_buckets: int = 2000  # paper: 2,000 hashed user tokens
    max_history: int = 20  # paper: up to 20 items of history
    d_model: int = 128  # paper: 128 (input dim)
    n_heads: int = 6  # paper: 6 heads
    d_head: int = 64  # paper: 64 per head
    d_ff: int = 1024  # paper: MLP 1024
    n_encoder_layers: int = 4  # paper: 4
    n_decoder_layers: int = 4  # paper: 4
    dropout: float = 0.1  # paper: 0.1
    rel_buckets: int = 32  # T5 default relative-position buckets
    rel_max_distance: int = 128  # T5 default; S = 81 tokens fits inside
    # CPU training only (speed, same maths): dropout masks from 16 random bits per element instead
    # of bernoulli_, and attention written out so it can use them (SDPA has no fused CPU kernel with
    # dropout). False = F.dropout and F.scaled_dot_product_attention everywhere.
    cheap_cpu_dropout: bool = True

    def __post_init__(self) -> None:
        self.code_sizes = tuple(int(s) for s in self.code_sizes)
        if len(self.code_sizes) < 1 or any(s < 1 for s in self.code_sizes):
            raise ValueError(f"code_sizes must be positive sizes per ID position, got {self.code_sizes}")
        for name in ("n_user_buckets", "max_history", "d_model", "n_heads", "d_head", "d_ff",
                     "n_encoder_layers", "n_decoder_layers", "rel_buckets", "rel_max_distance"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def id_length(self) -> int:  # T
        return len(self.code_sizes)

    @property
    def n_code_tokens(self) -> int:  # V
        return sum(self.code_sizes)

    @property
    def vocab_size(self) -> int:
        return FIRST_CODE + self.n_code_tokens + self.n_user_buckets


def check_ids(name: str, ids: torch.Tensor, low: int, high: int) -> None:
    """ValueError naming `name`, an offending id and the allowed range [low, high] when an id lies
    outside it (the catalogue lookup would otherwise fail with a bare IndexError). One min/max."""
    if ids.numel() == 0:
        return
    lo, hi = torch.aminmax(ids)
    if lo < low or hi > high:
        bad = int(lo) if lo < low else int(hi)
        raise ValueError(f"{name} has item id {bad}; expected ids in {low}..{high}"
                         + (" (0 = padding)" if low == 0 else ""))


def left_align(history: torch.Tensor, *aligned: torch.Tensor, name: str = "history"
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
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


def user_token(user: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """The paper's hashing trick: raw user id -> one of n_buckets tokens (Knuth multiplicative hash).

    user: (B,) int64. Returns (B,) bucket in [0, n_buckets).
    """
    return (user.long() * 2654435761) % 4294967296 % n_buckets


# --------------------------------------------------------------------------------------------------
# T5 building blocks
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def relative_position_bucket(relative: torch.Tensor, *, bidirectional: bool, n_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """T5's bucketing of key_pos - query_pos: exact for small distances, log-spaced up to
    max_distance, one bucket beyond. Bidirectional halves the buckets between the two directions."""
    bucket = torch.zeros_like(relative)
    if bidirectional:
        n_buckets //= 2
        bucket = bucket + (relative > 0).long() * n_buckets
        dist = relative.abs()
    else:
        dist = (-relative).clamp(min=0)  # causal: only keys at or before the query matter
    exact = n_buckets // 2
    log_part = exact + (torch.log(dist.float().clamp(min=1) / exact)
                        / math.log(max_distance / exact) * (n_buckets - exact)).long()
    log_part = log_part.clamp(max=n_buckets - 1)
    return bucket + torch.where(dist < exact, dist, log_part)


def dropout(x: torch.Tensor, p: float, training: bool, cheap_cpu: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the others by 1 / (1 - p).

    On CPU with `cheap_cpu`, the keep-mask comes from 16 random bits per element, four per 64-bit
    draw of the generator (p is rounded to a multiple of 2^-16): a quarter of the cost of the
    per-element `bernoulli_` behind F.dropout, which made a fifth of a CPU training step (note,
    "Training and serving"). Elsewhere: F.dropout.
    """
    if not training or p == 0.0:
        return x
    if not cheap_cpu or x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
    keep = bits.view(torch.int16)[:n].view(x.shape) >= round(p * 65536) - 32768  # P(keep) = 1 - p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """nn.Dropout with `dropout()`'s cheap CPU masks."""

    def __init__(self, p: float, cheap_cpu: bool = True):
        super().__init__()
        self.p, self.cheap_cpu = p, cheap_cpu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.cheap_cpu)


class Attention(nn.Module):
    """Multi-head attention without biases (T5); optional additive bias (B|1, H, Lq, Lk)."""

    def __init__(self, cfg: TIGERConfig):
        super().__init__()
        inner = cfg.n_heads * cfg.d_head
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        self.dropout, self.cheap_cpu = cfg.dropout, cfg.cheap_cpu_dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, L, Dh)

    def key_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of memory (B, Lk, D): (B, H, Lk, Dh) each; cached for decoding."""
        return self.heads(self.k(memory)), self.heads(self.v(memory))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, Lq, D) queries; self-attention when kv is None, else attention to kv."""
        B, Lq, _ = x.shape
        k, v = self.key_values(x) if kv is None else kv  # (B, H, Lk, Dh)
        q = self.heads(self.q(x))  # (B, H, Lq, Dh)
        if self.training and self.dropout > 0 and self.cheap_cpu and x.device.type == "cpu":
            # what SDPA computes (its CPU path with dropout is this, unfused), with cheap masks
            scores = (q * self.d_head**-0.5) @ k.transpose(-1, -2)  # (B, H, Lq, Lk)
            if bias is not None:
                scores = scores + bias.to(scores.dtype)
            att = dropout(scores.softmax(-1), self.dropout, True)  # (B, H, Lq, Lk)
            out = att.to(v.dtype) @ v  # (B, H, Lq, Lk) @ (B, H, Lk, Dh) -> (B, H, Lq, Dh)
        else:  # fused kernels (flash / memory-efficient) where the device has them
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, Lq, -1))  # (B, Lq, H*Dh) -> (B, Lq, D)


class FeedForward(nn.Module):
    """T5 v1.0 MLP: ReLU(x W_i) W_o with dropout in between."""

    def __init__(self, cfg: TIGERConfig):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = Dropout(cfg.dropout, cfg.cheap_cpu_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.drop(F.relu(self.wi(x))))


class Block(nn.Module):
    """Pre-norm T5 block: self-attention (+ cross-attention in the decoder) + MLP, residuals."""

    def __init__(self, cfg: TIGERConfig, cross: bool):
        super().__init__()
        self.norm1, self.self_attn = RMSNorm(cfg.d_model), Attention(cfg)
        self.cross = cross
        if cross:
            self.norm2, self.cross_attn = RMSNorm(cfg.d_model), Attention(cfg)
        self.norm3, self.mlp = RMSNorm(cfg.d_model), FeedForward(cfg)
        self.drop = Dropout(cfg.dropout, cfg.cheap_cpu_dropout)

    def forward(self, x: torch.Tensor, self_bias: torch.Tensor, memory_kv=None,
                memory_mask: torch.Tensor | None = None, cache: dict | None = None) -> torch.Tensor:
        """x: (B, k, n, D) in the decoder (k sequences per memory row, e.g. beams), (B, n, D) in
        the encoder. Self-attention stays within each sequence; cross-attention folds the k
        sequences of one row into one query block, so the memory's keys are computed once per row.
        cache (decoding only): this layer's self-attention keys/values of the earlier positions;
        x then holds only the new position and the cache is extended in place."""
        if not self.cross:
            return self._mlp(x + self.drop(self.self_attn(self.norm1(x), self_bias)))
        B, k, n, D = x.shape
        flat = x.reshape(B * k, n, D)
        h = self.norm1(flat)
        kv = None
        if cache is not None:
            new_k, new_v = self.self_attn.key_values(h)  # (B*k, H, n, Dh)
            if "k" in cache:
                new_k, new_v = torch.cat([cache["k"], new_k], 2), torch.cat([cache["v"], new_v], 2)
            cache["k"], cache["v"] = kv = (new_k, new_v)
        flat = flat + self.drop(self.self_attn(h, self_bias, kv))
        x = flat.view(B, k * n, D)  # (B, k*n, D): every query attends to its row's memory
        x = x + self.drop(self.cross_attn(self.norm2(x), memory_mask, memory_kv))
        return self._mlp(x).view(B, k, n, D)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.mlp(self.norm3(x)))


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


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class TIGER(nn.Module):
    """Encoder-decoder over semantic-ID tokens. Call `set_catalogue(sids)` before use.

    The catalogue table (N+1, T) maps item ids to their semantic IDs (row 0 = padding), and the
    sorted prefix keys of every length serve as the prefix trie of valid IDs.
    """

    def __init__(self, config: TIGERConfig):
        super().__init__()
        if not isinstance(config, TIGERConfig):
            raise TypeError(f"config must be a TIGERConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=1.0)  # T5 init: unit-variance token embeddings
        self.enc_rel = nn.Embedding(cfg.rel_buckets, cfg.n_heads)  # shared by encoder layers (T5)
        self.dec_rel = nn.Embedding(cfg.rel_buckets, cfg.n_heads)
        self.encoder = nn.ModuleList([Block(cfg, cross=False) for _ in range(cfg.n_encoder_layers)])
        self.decoder = nn.ModuleList([Block(cfg, cross=True) for _ in range(cfg.n_decoder_layers)])
        self.enc_norm, self.dec_norm = RMSNorm(cfg.d_model), RMSNorm(cfg.d_model)
        self.drop = Dropout(cfg.dropout, cfg.cheap_cpu_dropout)
        offsets = torch.tensor([0, *cfg.code_sizes[:-1]]).cumsum(0) + FIRST_CODE  # (T,)
        self.register_buffer("code_offsets", offsets, persistent=False)
        self.register_buffer("catalogue", torch.zeros(1, cfg.id_length, dtype=torch.long))
        self._trie: list[torch.Tensor] | None = None

    # -- catalogue and prefix trie --------------------------------------------------------------
    def set_catalogue(self, sids: torch.Tensor) -> None:
        """sids: (N, T) int64 unique semantic IDs of items 1..N (row i-1 = item i)."""
        T = self.config.id_length
        if sids.dim() != 2 or sids.shape[1] != T:
            raise ValueError(f"sids must be (n_items, {T}), got {tuple(sids.shape)}")
        sizes = torch.tensor(self.config.code_sizes, device=sids.device)
        if (sids < 0).any() or (sids >= sizes).any():
            worst = sids.max(0).values.tolist()
            raise ValueError(f"semantic-ID codes must lie in [0, code_sizes) = {self.config.code_sizes}, "
                             f"got per-position maxima {worst}: raise code_sizes")
        table = torch.cat([torch.zeros(1, T, dtype=torch.long, device=sids.device), sids.long()])
        self.catalogue = table.to(self.catalogue.device)
        self._trie = None
        if len(torch.unique(self._prefix_keys(sids.long(), T))) != sids.shape[0]:
            raise ValueError("semantic IDs must be unique per item: de-duplicate them first")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "catalogue" in state_dict:
            self.catalogue = torch.zeros_like(state_dict["catalogue"]).to(self.catalogue.device)
        self._trie = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _prefix_keys(self, codes: torch.Tensor, length: int) -> torch.Tensor:
        """(..., >= length) codes -> (...) int64 key of the first `length` codes (mixed radix)."""
        key = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for j in range(length):
            key = key * self.config.code_sizes[j] + codes[..., j]
        return key

    def prefix_trie(self) -> list[torch.Tensor]:
        """Sorted unique prefix keys of length 1..T: level t's keys are the trie's nodes at depth t."""
        if self._trie is None or self._trie[0].device != self.catalogue.device:
            items = self.catalogue[1:]
            if len(items) == 0 or (self.catalogue.shape[0] == 1):
                raise RuntimeError("no catalogue: call set_catalogue(sids) first")
            self._trie = [torch.unique(self._prefix_keys(items, t))
                          for t in range(1, self.config.id_length + 1)]
        return self._trie

    def sids_to_items(self, sids: torch.Tensor) -> torch.Tensor:
        """(..., T) codes -> (...) item ids; 0 for an ID that is not in the catalogue."""
        keys = self._prefix_keys(self.catalogue[1:], self.config.id_length)
        sorted_keys, order = torch.sort(keys)
        q = self._prefix_keys(sids, self.config.id_length)
        pos = torch.searchsorted(sorted_keys, q.flatten()).clamp(max=len(sorted_keys) - 1)
        hit = sorted_keys[pos] == q.flatten()
        return torch.where(hit, order[pos] + 1, 0).view(q.shape)

    # -- inputs ---------------------------------------------------------------------------------
    def encoder_tokens(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """user: (B,) raw user ids; history: (B, L) item ids, oldest first, 0 = padding on the
        left ([0, 0, a, b, c]) or on the right ([a, b, c, 0, 0]: such a row is moved to the left).

        Returns (B, 1 + L*T) token ids: padding, then the user token, then the history's codes
        (left-padded whatever the history's layout).
        """
        B, L = history.shape
        if L > self.config.max_history:
            raise ValueError(f"history has {L} items; max_history is {self.config.max_history}")
        if user.shape != (B,):
            raise ValueError(f"user must have shape ({B},), got {tuple(user.shape)}")
        check_ids("history", history, 0, self.catalogue.shape[0] - 1)
        history, _, _ = left_align(history)  # right padding -> left padding; gaps raise
        codes = self.catalogue[history]  # (B, L, T)
        toks = torch.where(history[..., None] > 0, codes + self.code_offsets, PAD)  # (B, L, T)
        toks = toks.reshape(B, -1)  # (B, L*T)
        n_pad = (toks == PAD).sum(1)  # (B,) index of the slot right before the first real token
        u = FIRST_CODE + self.config.n_code_tokens + user_token(user, self.config.n_user_buckets)
        seq = torch.cat([torch.zeros_like(toks[:, :1]), toks], 1)  # (B, 1 + L*T)
        return seq.scatter(1, n_pad[:, None], u[:, None])

    def _rel_bias(self, table: nn.Embedding, q_len: int, k_len: int, bidirectional: bool,
                  device) -> torch.Tensor:
        rel = torch.arange(k_len, device=device)[None, :] - torch.arange(q_len, device=device)[:, None]
        buckets = relative_position_bucket(rel, bidirectional=bidirectional,
                                           n_buckets=self.config.rel_buckets,
                                           max_distance=self.config.rel_max_distance)
        return table(buckets).permute(2, 0, 1)[None]  # (1, H, Lq, Lk)

    # -- encoder / decoder ----------------------------------------------------------------------
    def encode(self, tokens: torch.Tensor) -> tuple[list, torch.Tensor]:
        """tokens: (B, S) -> the decoder layers' cached cross-attention keys/values (one (k, v) pair
        of (B, H, S, Dh) per layer) and the additive key-padding mask (B, 1, 1, S)."""
        B, S = tokens.shape
        pad_mask = torch.zeros(B, 1, 1, S, device=tokens.device)
        pad_mask = pad_mask.masked_fill((tokens == PAD)[:, None, None, :], float("-inf"))
        bias = self._rel_bias(self.enc_rel, S, S, True, tokens.device) + pad_mask  # (B, H, S, S)
        x = self.drop(self.embed(tokens))  # (B, S, D)
        for block in self.encoder:
            x = block(x, bias)
        memory = self.drop(self.enc_norm(x))  # (B, S, D)
        return [block.cross_attn.key_values(memory) for block in self.decoder], pad_mask

    def decode(self, prefix: torch.Tensor, memory_kv: list, memory_mask: torch.Tensor
               ) -> torch.Tensor:
        """prefix: (B, k, t) code indices in 0..V-1 already generated (t may be 0), k sequences
        (beams or candidate items) per user.

        Returns (B, k, t+1, V) logits of the next code token at each decoder position (Eq. 7).
        """
        B, k, t = prefix.shape
        start = torch.full((B, k, 1), BOS, dtype=torch.long, device=prefix.device)
        tokens = torch.cat([start, prefix + FIRST_CODE], 2)  # (B, k, t+1)
        n = t + 1
        causal = torch.full((n, n), float("-inf"), device=prefix.device).triu(1)  # (t+1, t+1)
        self_bias = self._rel_bias(self.dec_rel, n, n, False, prefix.device) + causal
        return self._decoder(tokens, self_bias, memory_kv, memory_mask)

    def decode_next(self, last: torch.Tensor | None, t: int, memory_kv: list,
                    memory_mask: torch.Tensor, caches: list[dict]) -> torch.Tensor:
        """One incremental decoding step: same logits as `decode(...)[:, :, -1]`, but only the new
        position runs through the decoder (the earlier ones are in `caches`, one dict per layer).

        last: (B, k) code index generated at step t-1 (None at t = 0). Returns (B, k, V).
        """
        B = memory_mask.shape[0]
        if last is None:
            tokens = torch.full((B, 1, 1), BOS, dtype=torch.long, device=memory_mask.device)
        else:
            tokens = (last + FIRST_CODE)[..., None]  # (B, k, 1)
        bias = self._rel_bias(self.dec_rel, t + 1, t + 1, False, tokens.device)[:, :, -1:]
        return self._decoder(tokens, bias, memory_kv, memory_mask, caches)[:, :, -1]

    def _decoder(self, tokens: torch.Tensor, self_bias: torch.Tensor, memory_kv: list,
                 memory_mask: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        x = self.drop(self.embed(tokens))  # (B, k, n, D)
        for i, (block, kv) in enumerate(zip(self.decoder, memory_kv)):
            x = block(x, self_bias, kv, memory_mask, None if caches is None else caches[i])
        x = self.drop(self.dec_norm(x)) * self.config.d_model ** -0.5  # T5 scaling of tied output
        w = self.embed.weight[FIRST_CODE : FIRST_CODE + self.config.n_code_tokens]  # (V, D)
        return x @ w.T  # (B, k, n, D) @ (D, V) -> (B, k, n, V)

    def target_codes(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item ids -> (..., T) indices into the V code tokens (position offsets applied)."""
        return self.catalogue[items] + (self.code_offsets - FIRST_CODE)

    def forward(self, *, user: torch.Tensor, history: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        """Teacher-forced logits (B, T, V): position t predicts code t of `target` (B,) items."""
        check_ids("target", target, 1, self.catalogue.shape[0] - 1)
        memory_kv, mask = self.encode(self.encoder_tokens(user, history))
        codes = self.target_codes(target)  # (B, T)
        return self.decode(codes[:, None, :-1], memory_kv, mask)[:, 0]  # (B, T, V)

    def loss(self, *, user: torch.Tensor, history: torch.Tensor, target: torch.Tensor
             ) -> torch.Tensor:
        """Eq. (8): teacher-forced cross-entropy of the target's T tokens, averaged over tokens."""
        logits = self.forward(user=user, history=history, target=target)  # (B, T, V)
        codes = self.target_codes(target)  # (B, T)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))

    # -- serving --------------------------------------------------------------------------------
    @torch.no_grad()
    def score_items(self, *, user: torch.Tensor, history: torch.Tensor, items: torch.Tensor
                    ) -> torch.Tensor:
        """Eq. (9) by teacher forcing: log p(ID of item) for each user and each of items (B, K).

        Exhaustive and exact; used to check beam search. Returns (B, K) float.
        """
        check_ids("items", items, 1, self.catalogue.shape[0] - 1)
        memory_kv, mask = self.encode(self.encoder_tokens(user, history))
        codes = self.target_codes(items)  # (B, K, T)
        logp = self.decode(codes[..., :-1], memory_kv, mask).log_softmax(-1)  # (B, K, T, V)
        return logp.gather(3, codes[..., None]).squeeze(-1).sum(2)  # (B, K)

    @torch.no_grad()
    def generate(self, *, user: torch.Tensor, history: torch.Tensor, beam: int = 10,
                 constrained: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Beam search for the next item's ID (Eq. 9).

        constrained=True: each step keeps only continuations that are prefixes of real IDs (the
        prefix trie, checked for all beams x candidates at once by `searchsorted` on the sorted
        prefix keys), so every finished beam is a distinct real item.
        constrained=False: plain beam search where, at ID position j, only position j's code
        tokens are allowed; the IDs may name no item (item 0).

        Returns items (B, K) int64 (0 = no valid item), scores (B, K) log p(ID) in descending
        order (-inf where fewer than K valid IDs exist), and the generated codes (B, K, T).
        """
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        cfg = self.config
        memory_kv, mask = self.encode(self.encoder_tokens(user, history))
        B, dev = history.shape[0], history.device
        trie = self.prefix_trie() if constrained else None
        codes = torch.zeros(B, 1, 0, dtype=torch.long, device=dev)  # (B, k, t) codes so far
        scores = torch.zeros(B, 1, device=dev)  # (B, k) log p(prefix)
        caches: list[dict] = [{} for _ in self.decoder]  # self-attention keys/values per layer
        for t in range(cfg.id_length):
            last = None if t == 0 else codes[..., -1] + int(self.code_offsets[t - 1]) - FIRST_CODE
            logp = self.decode_next(last, t, memory_kv, mask, caches).log_softmax(-1)  # (B, k, V)
            lo = int(self.code_offsets[t]) - FIRST_CODE
            cand = scores[..., None] + logp[..., lo : lo + cfg.code_sizes[t]]  # (B, k, C_t)
            if constrained:
                keys = (self._prefix_keys(codes, t)[..., None] * cfg.code_sizes[t]
                        + torch.arange(cfg.code_sizes[t], device=dev))  # (B, k, C_t)
                level = trie[t]
                pos = torch.searchsorted(level, keys.flatten()).clamp(max=len(level) - 1)
                valid = (level[pos] == keys.flatten()).view(keys.shape)
                cand = cand.masked_fill(~valid, float("-inf"))
            k = cand.shape[1]
            flat = cand.reshape(B, -1)  # (B, k*C_t)
            scores, top_idx = flat.topk(min(beam, flat.shape[1]), dim=1)  # sorted, (B, k')
            parent, code = top_idx // cfg.code_sizes[t], top_idx % cfg.code_sizes[t]
            codes = torch.cat([codes.gather(1, parent[..., None].expand(-1, -1, t)),
                               code[..., None]], 2)  # (B, k', t+1)
            rows = torch.arange(B, device=dev)[:, None]
            for c in caches:  # the surviving beams keep their parents' keys/values
                for name in ("k", "v"):
                    kv = c[name].view(B, k, *c[name].shape[1:])[rows, parent]  # (B, k', H, t+1, Dh)
                    c[name] = kv.reshape(-1, *kv.shape[2:])
        items = torch.where(torch.isfinite(scores), self.sids_to_items(codes), 0)  # (B, K)
        return items, scores, codes

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int = 10, *, exclude_seen: bool = True,
                  **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first, from `generate`'s beam (Eq. 9) in eval mode;
        without the items of `history` if exclude_seen. `inputs` go to `generate` (`user`, ...)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        seen, widen = None, 0
        if exclude_seen:
            check_ids("history", history, 0, self.catalogue.shape[0] - 1)  # before the scatter
            seen = torch.zeros(history.shape[0], self.catalogue.shape[0], dtype=torch.bool,
                               device=history.device).scatter_(1, history, True)  # (B, N + 1)
            seen[:, 0] = False
            widen = int(seen.sum(1).max()) if len(seen) else 0  # so k unseen items remain
        beam = inputs.pop("beam", int(k) + widen)
        with _eval_mode(self):
            items, scores, _ = self.generate(history=history, beam=beam, **inputs)  # (B, K')
        keep = items > 0  # (B, K'): a real item (0 where fewer valid IDs than beams exist)
        if seen is not None:
            keep &= ~seen.gather(1, items)
        left = keep.sum(1)  # (B,)
        if bool((left < k).any()):
            row = int((left < k).nonzero()[0, 0])
            raise ValueError(f"recommend: row {row} has {int(left[row])} items left in a beam of "
                             f"{beam} (catalogue {self.catalogue.shape[0] - 1} items"
                             f"{', seen items left out' if exclude_seen else ''}); expected "
                             f"k <= {int(left[row])}, got k = {k}")
        values, where = scores.masked_fill(~keep, float("-inf")).topk(int(k), dim=1)  # (B, k)
        return values, items.gather(1, where)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `TIGER.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> TIGER:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, TIGERConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
