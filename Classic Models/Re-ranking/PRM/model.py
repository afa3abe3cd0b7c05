"""PRM: Personalized Re-ranking Model.

Paper: Changhua Pei, Yi Zhang, Yongfeng Zhang, Fei Sun, Xiao Lin, Hanxiao Sun, Jian Wu, Peng Jiang,
Junfeng Ge, Wenwu Ou, Dan Pei. "Personalized Re-ranking for Recommendation". RecSys 2019.
Link: https://arxiv.org/abs/1904.06813
Official code: none released with the paper (LibRerank, by other authors, re-implements it).

Usage::

    import torch
    from model import PRM
    model = PRM(feature_dim=16, pv_dim=8, max_len=20, d_model=32, n_heads=2, n_blocks=1)
    x, pv = torch.randn(4, 20, 16), torch.randn(4, 20, 8)  # (B, N, F), (B, N, P), initial order
    clicks = (torch.rand(4, 20) < 0.2).float()  # (B, N) labels y_i
    loss = PRM.loss(model(features=x, pv=pv), clicks)  # Eq. (2) with the softmax of Eq. (9)
    loss.backward()
    order = model.rerank(features=x, pv=pv)  # (B, N) positions into the list, best first
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = PRM.load("m.pt")  # rebuilt from this file alone, in eval mode

This file stands alone: it needs only torch. Copy it into your project as is.

What it does (the note: Idea, Maths): a ranker scores items one at a time, so it cannot see that an
item's appeal depends on the other items shown with it. PRM reads the ranker's whole initial list at
once with a Transformer encoder and rescores every item in the context of the others:

    Eq. (2)  L = sum_lists l({y_i, P(y_i | X, PV)})   list-wise loss; here softmax cross-entropy
    Eq. (3)  E' = [x_i ; pv_i]                      item features + personalised vector
    Eq. (4)  E'' = E' + PE                           learnable embedding of the initial rank
    Eq. (5)  E = E'' W^E + b^E                       project to d_model
    Eq. (6)  Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V
    Eq. (7)  S' = MH(E) = Concat(head_1, ..., head_h) W^O                           multi-head
    Eq. (8)  F^(N_x) = FFN(MH(F^(N_x - 1)))   N_x blocks, residual + LayerNorm around each part
    Eq. (9)  Score(i) = softmax_i(F^(N_x) W^F + b^F)                                 over the list
Equation numbers are the paper's (the note uses the same).

Notation (shapes):
    B: lists in the batch    N: items per list (initial ranking order)
    F: item feature dim      P: personalised-vector dim      D: d_model      H: heads

NOTE (deviations, each also listed in the note):
    * pv_i comes from whatever pre-trained model you have; the paper uses the hidden layer before
      the sigmoid of a pre-trained CTR model over the user's history. The demo uses u (.) v_i
      (element-wise product of the user and item vectors of the first-stage ranker), whose sum is
      the ranker's score.
    * Padding: lists may be shorter than N; padded slots are masked out of attention and softmax.
    * Lists without any click carry no signal under Eq. (2) and are skipped in the mean.
    * `list_context=False` is not in the paper: it limits attention to the item itself, which turns
      PRM into a pointwise scorer of the same size, to measure what the list context adds.

Input contract (every case is a one-line ValueError, never a silent wrong score):
    * features and pv must be finite everywhere, padded slots included (pad with zeros); a NaN or
      +-inf is refused, naming the list (row). labels must be finite, >= 0, and 0 at padding.
    * Lists shorter than N: mark the padded slots with mask=False; their logits are -inf and
      `rerank` puts them last. A list with no real item (mask all False) is refused; N = 0 and
      N > max_len are refused; a batch of B = 0 lists gives empty (0, N) logits.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields, replace

import torch
from torch import nn


@dataclass
class PRMConfig:
    feature_dim: int  # F: x_i, the item features the ranker used
    pv_dim: int = 0  # P: personalised vector; 0 gives the paper's PRM-BASE (no personalisation)
    max_len: int = 50  # N: longest list; size of the position-embedding table
    d_model: int = 64  # D: width of the encoder
    n_heads: int = 4  # H: attention heads (D must be divisible by H)
    n_blocks: int = 2  # N_x: encoder blocks (the paper finds a few blocks enough)
    ffn_dim: int = 128  # hidden width of the position-wise FFN
    dropout: float = 0.1
    use_position: bool = True  # Eq. (4); False makes PRM permutation-equivariant over the list
    list_context: bool = True  # False: each item attends only to itself (a pointwise ablation)


def _check_finite(x: torch.Tensor, name: str, expected: str) -> None:
    """One vectorised check per tensor; only when it fails, find the first bad list to name it."""
    if bool(torch.isfinite(x).all()):
        return
    where = tuple(int(i) for i in (~torch.isfinite(x)).nonzero()[0])  # (list, position, ...)
    raise ValueError(
        f"{name}: list {where[0]} is not finite ({x[where].item()} at {name}{list(where)}); "
        f"expected {expected}"
    )


def _check_int(name: str, value, low: int) -> None:
    """An integer knob: value >= low (bool and float are refused: 10.0 is not a size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be >= {low} (an integer), got {value!r}")


class EncoderBlock(nn.Module):
    """Eq. (6)-(8): multi-head self-attention and FFN, each with residual + LayerNorm (post-LN)."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, d_model)
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, s: torch.Tensor, pad: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """s: (B, N, D); pad: (B, N) bool, True = padded slot (ignored as a key);
        attn_mask: (N, N) bool, True = not allowed (None: every item sees every item)."""
        att, _ = self.attention(
            s, s, s, key_padding_mask=pad, attn_mask=attn_mask, need_weights=False
        )  # (B, N, D)
        s = self.norm1(s + self.drop(att))  # Eq. (7) + residual, LayerNorm
        return self.norm2(s + self.drop(self.ffn(s)))  # Eq. (8): FFN + residual, LayerNorm


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


class PRM(nn.Module):
    """Personalized Re-ranking Model: Transformer over the initial list, softmax over positions.

    The config passed in is never modified: overrides apply to a copy (self.config).
    """

    def __init__(self, config: PRMConfig | None = None, **overrides) -> None:
        super().__init__()
        if config is None:
            if "feature_dim" not in overrides:
                raise TypeError("PRM needs feature_dim (the size of x_i), e.g. PRM(feature_dim=32)")
            config = PRMConfig(feature_dim=overrides["feature_dim"])
        known = {f.name for f in fields(PRMConfig)}
        for name in overrides:
            if name not in known:
                raise TypeError(f"unknown PRMConfig field {name!r}")
        config = replace(config, **overrides)  # a copy: the caller's config stays as it is
        for name, low in (("feature_dim", 1), ("pv_dim", 0), ("max_len", 1), ("d_model", 1),
                          ("n_heads", 1), ("n_blocks", 1), ("ffn_dim", 1)):
            _check_int(name, getattr(config, name), low)
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        if config.d_model % config.n_heads:
            raise ValueError(
                f"d_model={config.d_model} must be divisible by n_heads={config.n_heads}"
            )
        self.config = config
        width = config.feature_dim + config.pv_dim
        # Eq. (4): PE has the width of [x_i; pv_i], added before the projection as in the paper
        self.position = nn.Embedding(config.max_len, width) if config.use_position else None
        self.input_proj = nn.Linear(width, config.d_model)  # Eq. (5)
        self.blocks = nn.ModuleList(
            EncoderBlock(config.d_model, config.n_heads, config.ffn_dim, config.dropout)
            for _ in range(config.n_blocks)
        )
        self.output = nn.Linear(config.d_model, 1)  # Eq. (9): W^F, b^F
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=0.1)

    def forward(
        self,
        *,
        features: torch.Tensor,
        pv: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            features: (B, N, F) float x_i, items in the initial ranking order.
            pv: (B, N, P) float personalised vectors, or None when pv_dim = 0.
            mask: (B, N) bool, True = real item (default: all real); at least one per list.
        Returns:
            logits (B, N): Score(i) = softmax over the list of these (Eq. (9)); -inf at padding.
            B = 0 gives (0, N).
        """
        cfg = self.config
        if features.dim() != 3 or features.shape[-1] != cfg.feature_dim:
            raise ValueError(
                f"features must be (B, N, {cfg.feature_dim}), got {tuple(features.shape)}"
            )
        B, N, _ = features.shape
        if not 1 <= N <= cfg.max_len:
            raise ValueError(f"list length N must be in 1..{cfg.max_len} (max_len), got {N}")
        if mask is not None and (mask.shape != (B, N) or mask.dtype != torch.bool):
            raise ValueError(
                f"mask must be (B, N) = {(B, N)} bool, got {tuple(mask.shape)} {mask.dtype}"
            )
        if mask is not None and not bool(mask.any(1).all()):
            row = int((~mask.any(1)).nonzero()[0])
            raise ValueError(
                f"mask: list {row} has no real item (all False); expected at least one True per "
                f"list (drop empty lists from the batch)"
            )
        _check_finite(features, "features", "finite item features (pad with zeros)")
        if cfg.pv_dim:
            if pv is None or pv.shape != (B, N, cfg.pv_dim):
                got = None if pv is None else tuple(pv.shape)
                raise ValueError(
                    f"pv must be (B, N, {cfg.pv_dim}) = {(B, N, cfg.pv_dim)}, got {got}"
                )
            _check_finite(pv, "pv", "finite personalised vectors (pad with zeros)")
            e = torch.cat([features, pv], dim=-1)  # Eq. (3)   (B, N, F + P)
        else:
            if pv is not None:
                raise ValueError("pv given, but the model has pv_dim=0 (PRM-BASE); expected None")
            e = features
        if B == 0:  # an empty batch: no list to attend over (MultiheadAttention needs B >= 1)
            return self.output(e.new_zeros(0, N, cfg.d_model)).squeeze(-1)  # (0, N)
        if self.position is not None:
            e = e + self.position(torch.arange(N, device=e.device))  # Eq. (4)   (B, N, F + P)
        s = self.input_proj(e)  # Eq. (5)   (B, N, D)
        pad = torch.zeros(B, N, dtype=torch.bool, device=e.device) if mask is None else ~mask
        attn_mask = None
        if not cfg.list_context:  # ablation: attention restricted to the item itself
            attn_mask = ~torch.eye(N, dtype=torch.bool, device=e.device)  # (N, N)
        for block in self.blocks:
            s = block(s, pad, attn_mask)  # Eq. (6)-(8)   (B, N, D)
        logits = self.output(s).squeeze(-1)  # (B, N)
        return logits.masked_fill(pad, -math.inf)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. (2): -sum_i y_i log softmax_i(logits), averaged over lists with at least one click.

        Args:
            logits: (B, N) from forward (-inf at padding).
            labels: (B, N) float clicks in {0, 1} (0 at padding); finite and >= 0.
        """
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels must have the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        _check_finite(labels, "labels", "finite clicks in {0, 1}")
        bad = (labels < 0) | ((labels != 0) & torch.isneginf(logits))  # (B, N)
        if bool(bad.any()):
            row, pos = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"labels: list {row} has {labels[row, pos].item()} at position {pos} (logit "
                f"{logits[row, pos].item()}); expected clicks >= 0, and 0 at padded slots"
            )
        log_p = torch.log_softmax(logits, dim=-1)  # (B, N)
        per_list = -(labels * log_p.masked_fill(labels == 0, 0.0)).sum(-1)  # (B,)
        has_click = labels.sum(-1) > 0
        if not bool(has_click.any()):
            return logits.new_zeros(()) * logits.masked_fill(~torch.isfinite(logits), 0).sum()
        return per_list[has_click].mean()

    @torch.no_grad()
    def rerank(self, **inputs) -> torch.Tensor:
        """(B, N) positions into the initial list, best first (padding last)."""
        return self.forward(**inputs).argsort(dim=-1, descending=True, stable=True)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `PRM.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> PRM:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, PRMConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
