"""SASRec: Self-Attentive Sequential Recommendation.

Paper: Wang-Cheng Kang, Julian McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
https://arxiv.org/abs/1808.09781 -- official code (TensorFlow): https://github.com/kang205/SASRec

This file stands alone: it needs only torch. Copy it into your project as is.
Two model files in one project: every file of this repo is called model.py, so copy each under its
own name (sasrec_model.py, dpp_model.py) and import it as usual. Loading one with importlib instead
needs the module registered in sys.modules before it runs (its @dataclass looks the module up):

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

Usage::

    import torch
    from model import SASRec, SASRecConfig
    model = SASRec(SASRecConfig(n_items=100, max_len=20, dim=16, loss="ce"))
    history = torch.randint(1, 101, (2, 20))  # (B, L) item ids, 0 = padding (left or right)
    loss = model.loss(history[:, :-1], history[:, 1:])  # every position predicts the next item
    loss.backward()
    scores = model.eval().score(history)  # (B, N + 1) Eq. (6) for every item, column 0 = -inf
    weights = model.attention_weights(history)  # (B, H, L, L) last block, rows sum to 1
    top, items = model.recommend(history, k=5)  # (B, 5) best unseen items and their scores
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = SASRec.load("m.pt")  # rebuilt from this file alone, in eval mode

Notation (the note, README.md, uses the same letters):
    B: batch (users), L: history length (<= max_len), D: embedding dim, H: attention heads,
    N: number of items (ids 1..N; id 0 is padding), S: number of sampled negatives.

What the model does (equation numbers as in the paper, Section III; see the note's "Maths"):
    Ê = M[s] * sqrt(D) + P                       Eq. (1)  input = item + learned position embeddings
    Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(D)) V   Eq. (2), causal: position t sees items <= t
    S = SA(Ê) = Attention(Ê W^Q, Ê W^K, Ê W^V)    Eq. (3)
    F = FFN(S) = ReLU(S W1 + b1) W2 + b2          Eq. (4)
    S^(b) = SA(F^(b-1)), F^(b) = FFN(S^(b))       Eq. (5), n_blocks times, each sub-layer g wrapped
    g(x) -> x + Dropout(g(LayerNorm(x)))          (unnumbered in the paper), g in {SA, FFN}
    r_{i,t} = F_t · M_i                            Eq. (6), M = the shared item embedding
    loss (paper): -Σ_t [log σ(r_{o_t,t}) + log(1 - σ(r_{j,t}))], one sampled negative j
                                                   (the paper's BCE, Section III-E, unnumbered)

Three more objectives are selectable with `SASRecConfig.loss` (the note's "Which loss"):
    "ce"          full softmax cross-entropy over all N items (RecBole's and the HSTU paper's
                  stronger SASRec baseline; cheap at N = 12k),
    "sampled_ce"  softmax over the positive and S uniform negatives, drawn for every position
                  (as eSASRec's "SASRec+SS"; `shared_negatives=True`: one draw for the batch).
                  `logq=True` adds the log-Q correction: each sampled logit r_j becomes
                  r_j - log(S q_j) with q_j = 1/N, so Σ_j exp(r_j) N / S estimates the full
                  softmax's sum over the negatives (Bengio & Senécal 2008; Jean et al. 2015).
    "inbatch"     softmax over the positive and the other positions' positives in the batch (no item
                  table product at all: the choice for catalogues of millions); with `logq=True` every
                  logit r_j becomes r_j - log p_j, p_j the item's share of the training targets
                  (`loss(..., log_q=...)`), the correction of Yi et al. (RecSys 2019).
    "gbce"        gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023, Eq. (8)-(10)):
                  S negatives per position, the positive's log σ raised to β,
                  β = α (t (1 - 1/α) + 1/α), α = S / (N - 1), calibration t = `gbce_t`.

NOTE (deviations, each listed in the note's "Deviations" section):
- Positions are counted from the most recent item (the last real item always has position 0).
  The official code left-pads to max_len and indexes positions by array slot, which is the same
  labelling up to a constant; counting from the end makes the output independent of how much
  padding a batch carries, which the tests check.
- Histories may be padded on the left (the official layout) or on the right (`pad_sequence`'s): a
  right-padded row is moved to the left before encoding and the states come back in its own layout
  (`left_align`), so both give the same scores; padding between real items raises.
- Padding keys are masked out of attention (the official code only zeroes padded inputs, so a
  padded slot can still leak its LayerNorm bias into real positions).
- The block follows the paper's sub-layer wrapper literally (pre-LayerNorm on the sub-layer input,
  residual around it); the official TF code normalises only the queries. A final LayerNorm
  follows the last block, as in the official code.
- The paper draws a negative not in the user's history; the default sampler here draws uniformly
  from all items and masks the rare hit on the positive (negligible at N = 12k).

Four switches reproduce how other SASRec code builds the same model (RecTools' `SASRecModel`, the
implementation behind the eSASRec benchmark; the recall ledger ablates them one at a time):
    block="sasrec"        the official code's block: only the queries are normalised, keys and values
                          read the raw input, each residual starts from the normalised tensor
                          (Q = LN(x); x = Q + SA(Q, x); F = LN(x); x = F + Dropout(FFN(F))).
    init="xavier"         Xavier-normal weights for every matrix, embeddings included (RecTools).
    scale_embeddings=False  no sqrt(D) factor on the item embeddings in Eq. (1) (RecTools).
    item_dropout=p        dropout on the whole item table at every training step, applied to the
                          history's embeddings and to the scored items alike (RecTools' item net).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("bce", "ce", "sampled_ce", "gbce", "inbatch")
BLOCKS = ("pre_ln", "sasrec")
INITS = ("normal", "xavier")


@dataclass
class SASRecConfig:
    n_items: int  # N: items are 1..N, 0 is padding
    max_len: int = 50  # paper: 50 for Amazon Beauty (sparse data, short histories)
    dim: int = 64  # paper: d = 50; 64 matches RecBole's run this repo compares with
    n_blocks: int = 2  # paper: 2 blocks
    n_heads: int = 1  # paper: one head ("multi-head did not help"); RecBole uses 2
    ffn_dim: int = 0  # 0 -> dim, as the paper's square W1, W2
    dropout: float = 0.5  # paper: 0.5 on the sparse Amazon sets, 0.2 on MovieLens
    loss: str = "bce"  # "bce" (the paper's loss), "ce" (full softmax), "sampled_ce", "gbce"
    n_negatives: int = 256  # S for "sampled_ce" and "gbce"
    shared_negatives: bool = False  # "sampled_ce": one draw of S for the whole batch
    logq: bool = False  # "sampled_ce", "inbatch": log-Q correction of the sampled logits
    gbce_t: float = 0.75  # "gbce": calibration t in [0, 1] (gSASRec paper's choice)
    init_std: float = 0.02  # N(0, 0.02) init of embeddings / linears, as RecBole and BERT
    init: str = "normal"  # "normal": N(0, init_std); "xavier": Xavier-normal (RecTools)
    block: str = "pre_ln"  # "pre_ln": the paper's wrapper; "sasrec": the official code's block
    scale_embeddings: bool = True  # Eq. (1) multiplies item embeddings by sqrt(D) (RecTools: no)
    item_dropout: float = 0.0  # dropout on the item table, input and output (RecTools: dropout)

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if self.max_len < 1 or self.dim < 1 or self.n_blocks < 1:
            raise ValueError("max_len, dim and n_blocks must be >= 1")
        if self.dim % self.n_heads != 0:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {self.n_negatives}")
        if not 0.0 <= self.gbce_t <= 1.0:
            raise ValueError(f"gbce_t must be in [0, 1], got {self.gbce_t}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0.0 <= self.item_dropout < 1.0:
            raise ValueError(f"item_dropout must be in [0, 1), got {self.item_dropout}")
        if self.ffn_dim == 0:
            self.ffn_dim = self.dim


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


class CausalSelfAttention(nn.Module):
    """Eq. (2)-(3): scaled dot-product attention, each position sees itself and the past."""

    def __init__(self, *, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)  # W^Q, W^K, W^V in one matmul
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor,
                kv: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D) queries' input; kv: (B, L, D) keys' and values' input (default x);
        allowed: (B, 1, L, L) bool, True where query t may attend key j."""
        B, L, D = x.shape
        if kv is None:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # 3 x (B, L, D)
        else:  # the official block: W^Q reads the normalised x, W^K and W^V the raw input
            w_q, w_kv = self.to_qkv.weight.split([D, 2 * D])
            b_q, b_kv = self.to_qkv.bias.split([D, 2 * D])
            q = F.linear(x, w_q, b_q)  # (B, L, D)
            k, v = F.linear(kv, w_kv, b_kv).chunk(2, dim=-1)  # 2 x (B, L, D)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        # (B, H, L, D/H): softmax(q kᵀ / sqrt(D/H)) v with the causal + padding mask
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(a.transpose(1, 2).reshape(B, L, D))  # (B, L, D)

    def weights(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """The softmax weights of Eq. (2) that `forward` applies (its fused kernel does not return
        them): x (B, L, D), allowed (B, 1, L, L) -> (B, H, L, L), each row sums to 1."""
        B, L, D = x.shape
        q, k, _ = self.to_qkv(x).chunk(3, dim=-1)  # 2 x (B, L, D)
        q, k = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k))
        logits = q @ k.transpose(-1, -2) / math.sqrt(D // self.n_heads)  # (B, H, L, L)
        return logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)


class PointWiseFFN(nn.Module):
    """Eq. (4): the same two-layer ReLU network applied at every position."""

    def __init__(self, *, dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, ffn_dim)
        self.w2 = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(F.relu(self.w1(x))))  # (B, L, D)


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


class SASRecBlock(nn.Module):
    """One block of Eq. (5), each sub-layer wrapped as g(x) -> x + Dropout(g(LayerNorm(x)))."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.official = cfg.block == "sasrec"
        self.attn_norm = nn.LayerNorm(cfg.dim)
        self.attention = CausalSelfAttention(dim=cfg.dim, n_heads=cfg.n_heads, dropout=cfg.dropout)
        self.ffn_norm = nn.LayerNorm(cfg.dim)
        self.ffn = PointWiseFFN(dim=cfg.dim, ffn_dim=cfg.ffn_dim, dropout=cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.official:  # Q = LN(x); x = Q + SA(Q, x); F = LN(x); x = F + Dropout(FFN(F))
            q = self.attn_norm(x)  # (B, L, D)
            x = q + self.attention(q, allowed, kv=x)  # (B, L, D)
            f = self.ffn_norm(x)  # (B, L, D)
            return (f + self.dropout(self.ffn(f))) * real
        x = x + self.dropout(self.attention(self.attn_norm(x), allowed))  # (B, L, D)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))  # (B, L, D)
        return x * real  # keep padded slots at zero between blocks


class SASRec(nn.Module):
    """SASRec encoder + the paper's loss. `forward(history)` -> hidden state per position."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        cfg = self.cfg = self.config = config
        self.item_embedding = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)  # E = M
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.dim)  # P, learned
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(cfg) for _ in range(cfg.n_blocks))
        self.final_norm = nn.LayerNorm(cfg.dim)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)) and self.cfg.init == "xavier":
            nn.init.xavier_normal_(module.weight)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])

    def _check_history(self, history: torch.Tensor) -> None:
        if history.dim() != 2 or history.dtype != torch.long:
            raise ValueError(
                f"history must be (B, L) int64, got {tuple(history.shape)} {history.dtype}"
            )
        if history.shape[1] > self.cfg.max_len:
            raise ValueError(f"history length {history.shape[1]} > max_len {self.cfg.max_len}")
        check_ids("history", history, 0, self.cfg.n_items)

    def _item_table(self) -> torch.Tensor:
        """(N + 1, D) the item matrix of one training step: M, with `item_dropout` while training
        (one draw used for the history and the scored items alike)."""
        E = self.item_embedding.weight
        return F.dropout(E, self.cfg.item_dropout, self.training) if self.cfg.item_dropout else E

    def forward(self, history: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Encode a batch of histories.

        Args:
            history: (B, L) int64 item ids, oldest first, 0 = padding, on the left ([0, 0, a, b, c])
                or on the right ([a, b, c, 0, 0], as `pad_sequence` makes it): right-padded rows are
                read as left-padded ones (`left_align`), the same states come back in your layout.
            table: optional (N + 1, D) item matrix to read (`loss` passes its dropped-out one).
        Returns:
            (B, L, D) float: F_t, the state after reading items 1..t (zero at padded slots).
        """
        self._check_history(history)
        history, _, shift = left_align(history)  # right padding -> left padding
        B, L = history.shape
        real = (history != 0).unsqueeze(-1)  # (B, L, 1)
        # Eq. (1); positions count from the newest slot (see NOTE): padding does not shift them
        positions = torch.arange(L - 1, -1, -1, device=history.device)  # (L,)
        E = self._item_table() if table is None else table  # (N+1, D)
        scale = math.sqrt(self.cfg.dim) if self.cfg.scale_embeddings else 1.0
        x = E[history] * scale  # (B, L, D)
        x = x + self.position_embedding(positions)  # + (L, D)
        x = self.embed_dropout(x) * real  # (B, L, D)
        causal = torch.ones(L, L, dtype=torch.bool, device=history.device).tril()  # (L, L)
        eye = torch.eye(L, dtype=torch.bool, device=history.device)
        # a query may attend a real key at or before it; padded queries attend only themselves
        allowed = (causal & real.transpose(1, 2)) | eye  # (B, L, L)
        allowed = allowed.unsqueeze(1)  # (B, 1, L, L), broadcast over heads
        for block in self.blocks:
            x = block(x, allowed, real)
        return unalign(self.final_norm(x) * real, shift)  # (B, L, D), in the caller's layout

    @torch.no_grad()
    def attention_weights(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history -> (B, H, L, L) attention weights of the last block (query row t, key
        column j <= t; rows sum to 1), for inspection: the note's figure plots them. Rows and
        columns follow the left-padded layout (a right-padded history is left-aligned first)."""
        self._check_history(history)
        history, _, _ = left_align(history)
        block = self.blocks[-1]
        captured = {}
        hook = block.attention.register_forward_pre_hook(lambda _, args: captured.update(a=args))
        try:
            self.forward(history)
        finally:
            hook.remove()
        return block.attention.weights(*captured["a"])  # inputs of the last attention

    def user_embedding(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L) history, left- or right-padded -> (B, D): the state at the most recent item."""
        self._check_history(history)
        history, _, _ = left_align(history)
        return self.forward(history)[:, -1]  # left padding: the last slot is the newest item

    def item_embeddings(self) -> torch.Tensor:
        """(N + 1, D) the shared item matrix M = E (row 0 = padding)."""
        return self.item_embedding.weight

    def score(self, history: torch.Tensor) -> torch.Tensor:
        """Eq. (6) for every item: (B, L) history -> (B, N + 1) scores; column 0 (pad) = -inf."""
        scores = self.user_embedding(history) @ self.item_embeddings().T  # (B, D) @ (D, N+1)
        scores[:, 0] = float("-inf")
        return scores

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int = 10, *, exclude_seen: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first: the items 1..N by `score` (Eq. (6)), in eval
        mode, less `history`'s if exclude_seen."""
        with _eval_mode(self):
            scores = self.score(history)  # (B, N + 1)
        return _top_k(scores, history if exclude_seen else None, k)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `SASRec.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.cfg, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> SASRec:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, SASRecConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)

    def loss(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        *,
        negatives: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-item loss at every position (SASRec trains all positions of a sequence at once).

        Args:
            history: (B, L) int64 inputs s_1..s_L (left-padded).
            targets: (B, L) int64 the next item o_t at each position, 0 where there is no target
                (positions whose input is padding are skipped as well).
            negatives: optional, drawn uniformly from 1..N when omitted. "bce": (B, L), one
                negative per position; "sampled_ce" and "gbce": (B, L, S) per position, or (S,)
                shared by the batch.
            log_q: "inbatch" with logq: (N + 1,) log of each item's chance to be a batch's positive
                (its share of the training targets).
        Returns:
            scalar loss averaged over positions with a target.
        """
        if targets.shape != history.shape:
            raise ValueError(
                f"targets {tuple(targets.shape)} must match history {tuple(history.shape)}"
            )
        check_ids("targets", targets, 0, self.cfg.n_items)
        if negatives is not None:
            check_ids("negatives", negatives, 1, self.cfg.n_items)
        E = self._item_table()  # (N+1, D): one dropout draw for inputs and outputs
        states = self.forward(history, E)  # (B, L, D)
        # a position trains when it has a next item and reads a real item (not an empty prefix)
        has_target = (targets != 0) & (history != 0)  # (B, L)
        h = states[has_target]  # (T, D): only positions with a target
        pos = targets[has_target]  # (T,)
        if pos.numel() == 0:  # nothing to predict in this batch
            return states.sum() * 0.0
        n_items = self.cfg.n_items
        if self.cfg.loss == "bce":  # the paper's BCE (Section III-E)
            if negatives is None:
                negatives = torch.randint(1, n_items + 1, history.shape, device=history.device)
            neg = negatives[has_target]  # (T,)
            pos_logit = (h * E[pos]).sum(-1)  # (T,)
            neg_logit = (h * E[neg]).sum(-1)  # (T,)
            keep = (neg != pos).float()  # a negative equal to the positive is not a negative
            # -log σ(r+) - log(1 - σ(r-)), written with softplus for numerical safety
            loss = F.softplus(-pos_logit) + keep * F.softplus(neg_logit)
            return loss.mean()
        if self.cfg.loss == "ce":  # softmax over all N items
            logits = h @ E[1:].T  # (T, D) @ (D, N) -> (T, N)
            return F.cross_entropy(logits, pos - 1)
        if self.cfg.loss == "inbatch":  # the batch's other positives are the negatives
            logits = h @ E[pos].T  # (T, D) @ (D, T): column j is position j's positive
            if self.cfg.logq:
                if log_q is None or log_q.shape != (n_items + 1,):
                    raise ValueError(f"inbatch with logq needs log_q of shape ({n_items + 1},), got "
                                     f"{None if log_q is None else tuple(log_q.shape)}")
                logits = logits - log_q[pos].unsqueeze(0)  # r_j - log p_j, every column
            same = pos.unsqueeze(1) == pos.unsqueeze(0)  # another position with the same positive
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
            return F.cross_entropy(logits, torch.arange(len(pos), device=pos.device))
        # "sampled_ce" and "gbce": the positive against S uniform negatives
        pos_logit, neg_logit, hit = self._sampled_logits(h, E, pos, has_target, negatives)
        if self.cfg.loss == "sampled_ce":
            if self.cfg.logq:  # r_j - log(S q_j), q_j = 1/N: the sum estimates all N - 1 negatives
                neg_logit = neg_logit + math.log(n_items / neg_logit.shape[1])
            neg_logit = neg_logit.masked_fill(hit, float("-inf"))  # an accidental hit is no negative
            logits = torch.cat([pos_logit.unsqueeze(1), neg_logit], dim=1)  # (T, 1 + S)
            return -F.log_softmax(logits, dim=1)[:, 0].mean()
        # gBCE: -[β log σ(r+) + Σ_j log(1 - σ(r_j))], averaged over the 1 + S terms as gSASRec does
        S = neg_logit.shape[1]
        alpha = S / max(n_items - 1, 1)  # the sampling rate
        beta = alpha * (self.cfg.gbce_t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
        neg_term = F.softplus(neg_logit).masked_fill(hit, 0.0).sum(1)  # (T,)
        return ((beta * F.softplus(-pos_logit) + neg_term) / (1 + S)).mean()

    def _sampled_logits(self, h: torch.Tensor, E: torch.Tensor, pos: torch.Tensor,
                        has_target: torch.Tensor, negatives: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the T positives (T,) and of their S uniform negatives (T, S) against the item
        matrix E (N + 1, D), with the mask (T, S) of negatives equal to the position's positive."""
        if negatives is None:
            S, n_items = self.cfg.n_negatives, self.cfg.n_items
            shape = (S,) if self.cfg.shared_negatives else (len(pos), S)
            negatives = torch.randint(1, n_items + 1, shape, device=h.device)
        elif negatives.dim() == 3:  # (B, L, S) per position -> the T positions with a target
            negatives = negatives[has_target]
        elif negatives.dim() != 1:
            raise ValueError(f"negatives must be (S,) or (B, L, S), got {tuple(negatives.shape)}")
        pos_logit = (h * E[pos]).sum(-1)  # (T,)
        if negatives.dim() == 1:  # shared: one (T, D) @ (D, S) product
            neg_logit = h @ E[negatives].T
            hit = pos.unsqueeze(1) == negatives.unsqueeze(0)
        else:  # per position: (T, S, D) gathered rows dotted with each state
            neg_logit = torch.einsum("td,tsd->ts", h, E[negatives])
            hit = pos.unsqueeze(1) == negatives
        return pos_logit, neg_logit, hit
