"""BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from Transformer.

Paper: Fei Sun, Jun Liu, Jian Wu, Changhua Pei, Xiao Lin, Wenwu Ou, Peng Jiang, "BERT4Rec: Sequential
Recommendation with Bidirectional Encoder Representations from Transformer", CIKM 2019.
https://arxiv.org/abs/1904.06690 -- official code (TensorFlow 1, built on Google's BERT):
https://github.com/FeiSun/BERT4Rec

This file stands alone: it needs only torch. Copy it into your project as is (two model files of
this repo in one project: copy each under its own name, bert4rec_model.py, sasrec_model.py).

Usage::

    import torch
    from model import BERT4Rec, BERT4RecConfig
    model = BERT4Rec(BERT4RecConfig(n_items=100, max_len=20, dim=16))
    sequence = torch.randint(1, 101, (2, 20))  # (B, L) item ids, 0 = padding (left or right)
    history, targets = model.mask_items(sequence)  # the Cloze task: [MASK] = id 101, targets at masks
    loss = model.loss(history, targets)  # softmax over all items at the masked positions only
    loss.backward()
    scores = model.eval().score(sequence)  # (B, N + 1): [MASK] appended, its output scored; col 0 = -inf
    top, items = model.recommend(sequence, k=5)  # (B, 5) best unseen items and their scores
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = BERT4Rec.load("m.pt")  # rebuilt from this file alone, in eval mode

Notation (the note, README.md, uses the same letters):
    B: batch (users), L: sequence length (<= max_len), D: embedding dim, H: attention heads,
    N: number of items (ids 1..N; id 0 is padding, id N + 1 is [MASK]), M: masked positions of a batch.

What the model does (the paper's Section 3; see the note's "Maths"):
    h_i^0 = v_i + p_i                              §3.4  item + learned position embedding
    MH(H) = [head_1; ...; head_h] W^O               Eq. (1), head_i = Attention(H W_i^Q, H W_i^K, H W_i^V)
    Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(D/H)) V    Eq. (2), bidirectional: every position sees all
    FFN(x) = GELU(x W1 + b1) W2 + b2               Eq. (3), at every position
    A = LN(H + Dropout(MH(H))),  Trm(H) = LN(A + Dropout(PFFN(A)))   Eq. (4), post-LN, n_blocks times
    P(v) = softmax(GELU(h_t W^P + b^P) Eᵀ + b^O)   §3.5  output layer, E = the shared item embedding
    L = 1/|S^m| Σ_{v_m in S^m} -log P(v_m = v*_m | S')    §3.6  the Cloze loss, masked positions only
    serving: append [MASK] after the history, score all items at that position      §3.6

Why masks: with attention in both directions, the output at position t has read item t + 1 (and item t
itself), so "predict the next item at every position" would be answered by copying what is visible.
The Cloze task hides the items it asks for (`mask_items`); `loss` refuses a target the input shows.

NOTE (deviations, each listed in the note's "Deviations" section):
- As in the official code (Google's BERT), the embedding sum h^0 is layer-normalised before dropout,
  and the output layer's GELU projection is followed by a LayerNorm (`head_norm`); the paper's
  formulas show neither.
- Positions are counted from the most recent slot (at serving time the appended [MASK] is always
  position 0); the official code counts from the oldest slot of a right-padded row. Both make the
  output independent of the padding, which the tests check.
- [MASK] has its own vector (`mask_embedding`) instead of a row of the item table, so the table has
  the N + 1 rows every model of this repo has and [MASK] can never be scored or recommended; the
  official code keeps it in the vocabulary and scores it with the items.
- Masking (`mask_items`) follows the official data generator: round(ρ n) positions of a row of n
  items (at least 1, at most `max_predictions`) drawn without replacement, all replaced by [MASK]
  (its mask_prob = 1.0: no 80/10/10 split); a share `mask_last_prob` of the rows masks only its last
  item instead (the paper's samples that "only mask the last item"; the official generator adds one
  such copy per ten random ones: 1/11). The official code writes ten masked copies of the data up
  front (dupe_factor 10); here every call draws fresh masks, so each epoch sees new ones.
- Padding keys are masked out of attention, as in the official code's attention mask.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BERT4RecConfig:
    n_items: int  # N: items are 1..N, 0 is padding, N + 1 is [MASK]
    max_len: int = 50  # paper / official run_beauty.sh: 50 for Beauty (200 for MovieLens)
    dim: int = 64  # paper: d = 64 (official run_beauty.sh: dim=64)
    n_blocks: int = 2  # paper: L = 2 Transformer layers
    n_heads: int = 2  # paper: h = 2 heads
    ffn_dim: int = 0  # 0 -> 4 * dim (paper: 4d; official intermediate_size 256 at d = 64)
    dropout: float = 0.5  # official Beauty config: hidden_dropout_prob 0.5 (embeddings, sub-layers)
    attention_dropout: float = 0.2  # official Beauty config: attention_probs_dropout_prob 0.2
    mask_prob: float = 0.6  # ρ: paper's best on Beauty, official run_beauty.sh masked_lm_prob=0.6
    max_predictions: int = 30  # at most this many masks per row (official max_predictions_per_seq)
    mask_last_prob: float = 1 / 11  # rows that mask only their last item (official: 1 copy in 11)
    head_norm: bool = True  # LayerNorm after the output layer's GELU projection (official code)
    init_std: float = 0.02  # N(0, 0.02) weights, BERT's initializer_range

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if self.max_len < 2 or self.dim < 1 or self.n_blocks < 1:
            raise ValueError(f"expected max_len >= 2 (history + [MASK]), dim >= 1 and n_blocks >= 1, got "
                             f"{self.max_len}, {self.dim}, {self.n_blocks}")
        if self.n_heads < 1 or self.dim % self.n_heads != 0:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if not 0.0 <= self.mask_last_prob <= 1.0:
            raise ValueError(f"mask_last_prob must be in [0, 1], got {self.mask_last_prob}")
        if self.max_predictions < 1:
            raise ValueError(f"max_predictions must be >= 1, got {self.max_predictions}")
        if self.ffn_dim == 0:
            self.ffn_dim = 4 * self.dim


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


class BidirectionalSelfAttention(nn.Module):
    """Eq. (1)-(2): multi-head scaled dot-product attention; every position sees every real one."""

    def __init__(self, *, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)  # W^Q, W^K, W^V of all heads in one matmul
        self.out = nn.Linear(dim, dim)  # W^O
        self.dropout = dropout  # on the attention weights (BERT's attention_probs_dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D); allowed: (B, 1, L, L) bool, True where query t may attend key j."""
        B, L, D = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # 3 x (B, L, D)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        # Eq. (2) per head, (B, H, L, D/H): softmax(q kᵀ / sqrt(D/H)) v, no causal mask
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(a.transpose(1, 2).reshape(B, L, D))  # Eq. (1): [head_1; ...; head_h] W^O

    def weights(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """The softmax weights of Eq. (2) that `forward` applies: (B, H, L, L), rows sum to 1."""
        B, L, D = x.shape
        q, k, _ = self.to_qkv(x).chunk(3, dim=-1)  # 2 x (B, L, D)
        q, k = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k))
        logits = q @ k.transpose(-1, -2) / math.sqrt(D // self.n_heads)  # (B, H, L, L)
        return logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)


class TransformerLayer(nn.Module):
    """Eq. (3)-(4): A = LN(H + Dropout(MH(H))); Trm(H) = LN(A + Dropout(PFFN(A))) (post-LN, as BERT)."""

    def __init__(self, cfg: BERT4RecConfig) -> None:
        super().__init__()
        self.attention = BidirectionalSelfAttention(dim=cfg.dim, n_heads=cfg.n_heads,
                                                    dropout=cfg.attention_dropout)
        self.attn_norm = nn.LayerNorm(cfg.dim)
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim)
        self.ffn_norm = nn.LayerNorm(cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        a = self.attn_norm(h + self.dropout(self.attention(h, allowed)))  # (B, L, D)
        ffn = self.w2(F.gelu(self.w1(a)))  # Eq. (3): GELU(x W1 + b1) W2 + b2, (B, L, D)
        return self.ffn_norm(a + self.dropout(ffn))  # (B, L, D)


class BERT4Rec(nn.Module):
    """BERT4Rec encoder + the Cloze loss. `forward(history)` -> the hidden state of every position."""

    def __init__(self, config: BERT4RecConfig) -> None:
        super().__init__()
        cfg = self.cfg = self.config = config
        self.mask_id = cfg.n_items + 1
        self.item_embedding = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)  # E, shared
        self.mask_embedding = nn.Parameter(torch.zeros(cfg.dim))  # the [MASK] token's input vector
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.dim)  # p_i, learned
        self.embed_norm = nn.LayerNorm(cfg.dim)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.n_blocks))
        self.projection = nn.Linear(cfg.dim, cfg.dim)  # W^P, b^P of the output layer
        self.head_norm = nn.LayerNorm(cfg.dim) if cfg.head_norm else nn.Identity()
        self.item_bias = nn.Parameter(torch.zeros(cfg.n_items + 1, 1))  # b^O, one per item
        self.apply(self._init)
        nn.init.normal_(self.mask_embedding, std=cfg.init_std)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])

    def _check_history(self, history: torch.Tensor, *, masks: bool, width: int | None = None) -> None:
        if not isinstance(history, torch.Tensor) or history.dim() != 2 or history.dtype != torch.long:
            got = (f"{tuple(history.shape)} {history.dtype}" if isinstance(history, torch.Tensor)
                   else type(history).__name__)
            raise ValueError(f"history must be a (B, L) int64 tensor of item ids, got {got}")
        width = self.cfg.max_len if width is None else width
        if history.shape[1] > width:
            raise ValueError(f"history length {history.shape[1]} > {width} (max_len "
                             f"{self.cfg.max_len}{', less one slot for [MASK]' if width < self.cfg.max_len else ''})")
        if masks:
            check_ids("history", history, 0, self.mask_id)
        else:
            check_ids("history (items only, no [MASK])", history, 0, self.cfg.n_items)

    # -- the encoder -----------------------------------------------------------------------------
    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Encode a batch of sequences that may hold [MASK] tokens.

        Args:
            history: (B, L) int64, L <= max_len: item ids 1..N, [MASK] = N + 1, 0 = padding, on the
                left ([0, 0, a, M, c]) or on the right ([a, M, c, 0, 0]); right-padded rows are read as
                left-padded ones (`left_align`) and the states come back in your layout.
        Returns:
            (B, L, D) float: h^L_t of every position (zero at padded slots).
        """
        self._check_history(history, masks=True)
        history, _, shift = left_align(history)  # right padding -> left padding
        B, L = history.shape
        real = history != 0  # (B, L): items and [MASK]
        # §3.4: h^0 = v + p; [MASK] reads its own vector; positions count from the newest slot
        table = torch.cat([self.item_embedding.weight, self.mask_embedding[None]])  # (N + 2, D)
        positions = torch.arange(L - 1, -1, -1, device=history.device)  # (L,)
        h = table[history] + self.position_embedding(positions)  # (B, L, D)
        h = self.embed_dropout(self.embed_norm(h))  # (B, L, D), LN + dropout as BERT's embeddings
        eye = torch.eye(L, dtype=torch.bool, device=history.device)
        # bidirectional: a query attends every real key, before or after it; padded queries themselves
        allowed = (real[:, None, :] | eye).unsqueeze(1)  # (B, 1, L, L), broadcast over heads
        for layer in self.layers:
            h = layer(h, allowed)  # Eq. (4)
        return unalign(h * real.unsqueeze(-1), shift)  # (B, L, D), in the caller's layout

    def output_layer(self, h: torch.Tensor) -> torch.Tensor:
        """§3.5 without the softmax: (..., D) states -> (..., N + 1) logits GELU(h W^P + b^P) Eᵀ + b^O
        (column 0 is padding's; callers drop or mask it)."""
        z = self.head_norm(F.gelu(self.projection(h)))  # (..., D)
        return z @ self.item_embedding.weight.T + self.item_bias.T  # (..., D) @ (D, N + 1)

    # -- the Cloze task --------------------------------------------------------------------------
    def mask_items(self, sequence: torch.Tensor, *, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """§3.6: hide items of each row behind [MASK] and ask for them.

        A row with n real items gets k = clamp(round(ρ n), 1, min(n, max_predictions)) masks at
        positions drawn uniformly without replacement; with probability `mask_last_prob` it masks only
        its last item instead (the serving situation). Draws come from `generator` (on the sequence's
        device) or torch's global one.

        Args:
            sequence: (B, L) int64 item ids 1..N, 0 = padding (left or right), no [MASK].
        Returns:
            (history, targets), each (B, L) int64: history = sequence with [MASK] (N + 1) at the masked
            positions; targets = the hidden item there, 0 everywhere else.
        """
        self._check_history(sequence, masks=False)
        real = sequence != 0  # (B, L)
        n = real.sum(1)  # (B,) real items per row
        k = (n.float() * self.cfg.mask_prob).round().long()  # (B,)
        k = torch.minimum(k.clamp(min=1, max=self.cfg.max_predictions), n)  # (B,)
        u = torch.rand(sequence.shape, generator=generator, device=sequence.device)  # (B, L)
        u = u.masked_fill(~real, 2.0)  # padding sorts after every real position
        rank = u.argsort(1).argsort(1)  # (B, L) each position's place in its row's random order
        masked = rank < k[:, None]  # (B, L): the k first real positions of the random order
        last = torch.rand(len(sequence), generator=generator, device=sequence.device)
        last = last < self.cfg.mask_last_prob  # (B,) rows that mask only their last item
        newest = real & ~torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], 1)  # (B, L)
        masked = torch.where(last[:, None], newest, masked)  # (B, L)
        history = sequence.masked_fill(masked, self.mask_id)
        targets = sequence * masked
        return history, targets

    def loss(self, history: torch.Tensor, targets: torch.Tensor, *,
             reduction: str = "mean") -> torch.Tensor:
        """§3.6, the Cloze loss: softmax cross-entropy over all N items at the masked positions only.

        Args:
            history: (B, L) int64 with [MASK] (N + 1) at the asked positions (`mask_items`).
            targets: (B, L) int64, the hidden item at each [MASK], 0 elsewhere (no loss there). A
                target where the input shows an item instead of [MASK] raises: the model could read it.
            reduction: "mean" over the masked positions of the batch (the paper's 1/|S^m| Σ), or "sum".
        Returns:
            scalar loss.
        """
        if not isinstance(targets, torch.Tensor) or targets.shape != history.shape:
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"targets {got} must match history {tuple(history.shape)}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        check_ids("targets", targets, 0, self.cfg.n_items)
        asked = targets != 0  # (B, L)
        if bool((asked & (history != self.mask_id)).any()):
            row = int((asked & (history != self.mask_id)).any(1).nonzero()[0, 0])
            raise ValueError(f"targets row {row} asks for an item at a position its history does not "
                             f"mask (expected [MASK] = {self.mask_id} there): the model would see the "
                             f"answer; history {history[row].tolist()}, targets {targets[row].tolist()}")
        h = self.forward(history)  # (B, L, D)
        if not bool(asked.any()):  # nothing to predict in this batch
            return h.sum() * 0.0
        logits = self.output_layer(h[asked])[:, 1:]  # (M, D) -> (M, N): items 1..N, no padding
        return F.cross_entropy(logits, targets[asked] - 1, reduction=reduction)

    # -- serving ---------------------------------------------------------------------------------
    def append_mask(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) item history, left- or right-padded -> (B, min(L + 1, max_len)) left-padded with
        [MASK] in the last slot; a history of max_len items drops its oldest one to make room."""
        self._check_history(history, masks=False)
        history, _, _ = left_align(history)
        if history.shape[1] == self.cfg.max_len:
            history = history[:, 1:]  # the oldest slot makes room for [MASK]
        mask = torch.full_like(history[:, :1], self.mask_id)  # (B, 1)
        return torch.cat([history, mask], dim=1)

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history -> (B, D) h^L at the [MASK] appended after it (§3.6, serving)."""
        return self.forward(self.append_mask(history))[:, -1]

    def user_embedding(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, D + 1) [GELU(h W^P + b^P) (normalised), 1]: with `item_embeddings()` an
        inner product equals `score` (the vectors --export-vectors writes for faiss)."""
        z = self.head_norm(F.gelu(self.projection(self.user_state(history))))  # (B, D)
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)

    def item_embeddings(self) -> torch.Tensor:
        """(N + 1, D + 1) [E, b^O] (row 0 = padding; [MASK] has none: it is never an answer)."""
        return torch.cat([self.item_embedding.weight, self.item_bias], dim=1)

    def score(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history of items -> (B, N + 1): §3.5 logits at the appended [MASK]; column 0 = -inf."""
        scores = self.output_layer(self.user_state(history))  # (B, N + 1)
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def attention_weights(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history of items -> (B, H, L', L') attention weights of the last layer over the
        serving input (the history, left-aligned, then [MASK]; L' = min(L + 1, max_len)); row t is the
        query, column j the key, rows sum to 1. The note's figure plots them."""
        x = self.append_mask(history)
        layer = self.layers[-1]
        captured = {}
        hook = layer.attention.register_forward_pre_hook(lambda _, args: captured.update(a=args))
        try:
            self.forward(x)
        finally:
            hook.remove()
        return layer.attention.weights(*captured["a"])

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int = 10, *, exclude_seen: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first: the items 1..N by `score`, in eval mode, less
        `history`'s if exclude_seen. Padding and [MASK] are never recommended."""
        with _eval_mode(self):
            scores = self.score(history)  # (B, N + 1)
        return _top_k(scores, history if exclude_seen else None, k)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `BERT4Rec.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.cfg, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> BERT4Rec:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, BERT4RecConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
