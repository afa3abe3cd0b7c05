"""MIND: Multi-Interest Network with Dynamic routing.

Paper: Chao Li, Zhiyuan Liu, Mengmeng Wu, Yuchi Xu, Pipei Huang, Huan Zhao, Guoliang Kang, Qiwei Chen,
Wei Li, Dik Lun Lee. "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall".
CIKM 2019. https://arxiv.org/abs/1904.08030
Official code: none was released; Algorithm 1 and section 3 of the paper are the specification.

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import MIND, MINDConfig
    model = MIND(config=MINDConfig(n_items=100, dim=16, max_len=10, hidden=(32,)))
    history = torch.randint(1, 101, (4, 10))  # (B, L) latest last; 0 = padding, left or right
    interests, active = model.user_tower(history=history)  # (B, K, D), (B, K): the first K'_u
    scores = model.score_items(interests, active, model.item_tower())  # (B, N + 1), Eq. (3)
    loss = model.loss(interests=interests, active=active, target=torch.randint(1, 101, (4,)),
                      negatives=torch.randint(1, 101, (32,)), log_q_target=torch.zeros(4),
                      log_q_negatives=torch.zeros(32))
    top, items = model.recommend(history, k=5)  # (B, 5) best unseen items, Eq. (3)
    model.save("m.pt")  # config + weights; an existing file is kept unless overwrite=True
    model = MIND.load("m.pt")  # rebuilt from this file alone, in eval mode

What is here (equation numbers as in the paper; the note's sections in brackets):
- `item_embedding()`: Eq. (2), e_i = f_item(F_i), the mean of the id embedding and the side-feature
  embeddings of an item (the "pooling layer") [note: Maths].
- `b2i_routing()`: Algorithm 1, behaviour-to-interest dynamic routing with one shared bilinear map S,
  routing logits drawn at random once and never learned, squash (Eq. (7)), a fixed number of iterations,
  and the dynamic interest count K'_u of Eq. (8) [note: Maths, Algorithm 1].
- `user_tower()`: interest capsules concatenated with the user-profile embedding, then ReLU layers per
  interest ("H layers"), giving V_u = (v_u^1 .. v_u^K) of Eq. (1) [note: Maths].
- `label_aware_attention()`: Eq. (9), the training-time attention of the target over the interests with
  power p [note: Maths; the pow deviation in Deviations from the paper].
- `loss()`: Eq. (10)-(11), sampled softmax of the attended user vector, with log-Q correction
  [note: Maths].
- `score_items()`: Eq. (3), f_score = max_k e_i . v_u^k, the merge of per-interest retrieval
  [note: Training and serving].

Notation: B batch, L history length, K interests (max), K'_u interests of user u, D dim, A side features
per item, F user-profile features, M sampled negatives, N items (ids 1..N, 0 = padding); S is the
paper's bilinear map (`bilinear`), not a size.

NOTE: Eq. (9) writes softmax(pow(V_u^T e_i, p)). An element-wise power of raw dot products is undefined
for negative scores at non-integer p and not monotone at even p, so here the power is applied to the
softmax's numerators: w_k ∝ (exp(v_k . e_i))^p = exp(p v_k . e_i). It keeps the paper's two limits
(p -> 0: equal attention; p -> inf: hard attention on the best-matching interest).
NOTE: K'_u = max(1, min(K, floor(log2 |I_u|))); the paper does not say how log2 is rounded.
NOTE: capsules beyond K'_u are masked (zero routing weight, excluded from attention and serving).
NOTE: the fixed routing logits are tied to a behaviour's distance from the most recent one (histories are
left-padded), so extra padding cannot shift them; this makes "padding changes no capsule" exact.
NOTE: a history may be padded on the left ([0, 0, a, b, c]) or on the right ([a, b, c, 0, 0], what
`pad_sequence` makes): a right-padded row is moved to the left before routing (`left_align`), so
both give the same interests; padding between real behaviours raises.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# B: batch, L: history length, K: interests, D: dim, A: side features per item, M: negatives, N: items


@dataclass
class MINDConfig:
    n_items: int  # item ids are 1..n_items; 0 is padding
    dim: int = 64  # D: embedding, capsule and user-vector size
    side_vocab_size: int = 0  # vocabulary of item side-feature ids (category, brand, ...; 0 = padding)
    user_feature_sizes: tuple[int, ...] = ()  # vocabulary of each user-profile feature (P_u)
    max_len: int = 50  # longest history; sizes the fixed routing logits
    n_interests: int = 4  # K, the most interests per user
    routing_iters: int = 3  # r in Algorithm 1; 3 as in capsule routing (Sabour et al.)
    dynamic_k: bool = True  # Eq. (8): fewer interests for users with few behaviours
    pow_p: float = 2.0  # p of Eq. (9); larger p -> closer to hard attention
    routing_sigma: float = 1.0  # std of the random routing logits b_ij ~ N(0, sigma^2)
    hidden: tuple[int, ...] = (256,)  # H layers between capsule and user vector (paper: "several ReLU")
    final_relu: bool = True  # paper: the user vectors come out of ReLU layers
    seed: int = 0  # draws the fixed routing logits, so serving is deterministic


def squash(z: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Eq. (7): squash(z) = |z|^2 / (1 + |z|^2) * z / |z|; keeps the direction, maps length into [0, 1)."""
    n2 = (z * z).sum(dim=-1, keepdim=True)  # (..., 1)
    return z * (n2 / (1.0 + n2)) / torch.sqrt(n2 + eps)


def check_ids(name: str, ids: torch.Tensor, high: int, low: int = 0) -> None:
    """Raise a ValueError naming the input when an id lies outside low..high: an embedding lookup
    would otherwise fail with a bare IndexError (or, on a GPU, a device assert). One min and one max
    per call; skipped while torch.export traces the model, where ids are symbolic."""
    if ids.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()  # one pass, one device sync
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        raise ValueError(f"{name}: id {bad} is out of range; expected ids in {low}..{high}")


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


def unalign(x: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """Undo `left_align` on (B, L, ...) per-position outputs: back to the caller's layout."""
    if shift is None:
        return x
    L = x.shape[1]
    idx = (torch.arange(L, device=x.device) + shift[:, None]) % L  # old[i] = new[i + shift]
    return x.gather(1, idx.view(*idx.shape, *[1] * (x.dim() - 2)).expand_as(x))


def interest_count(n_behaviours: torch.Tensor, max_interests: int) -> torch.Tensor:
    """Eq. (8): K'_u = max(1, min(K, floor(log2 |I_u|))). (B,) int64 counts -> (B,) int64."""
    log2 = torch.log2(n_behaviours.clamp(min=1).to(torch.float64)).floor().long()
    return log2.clamp(min=1, max=max_interests)


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


class MIND(nn.Module):
    """Multi-interest recall model (paper §3, Figure 2)."""

    def __init__(self, config: MINDConfig, *, item_side_ids: torch.Tensor | None = None) -> None:
        """
        Args:
            config: see MINDConfig.
            item_side_ids: (N + 1, A) int64 side-feature ids of every item in 1..side_vocab_size-1, 0 = none;
                required when config.side_vocab_size > 0. Row 0 (padding item) is ignored.
        """
        super().__init__()
        c = config
        if c.n_items < 1 or c.dim < 1 or c.max_len < 1:
            raise ValueError(f"n_items, dim and max_len must be >= 1, got {c.n_items}, {c.dim}, {c.max_len}")
        if c.n_interests < 1:
            raise ValueError(f"n_interests must be >= 1, got {c.n_interests}")
        if c.routing_iters < 1:
            raise ValueError(f"routing_iters must be >= 1, got {c.routing_iters}")
        if c.pow_p < 0:
            raise ValueError(f"pow_p must be >= 0, got {c.pow_p}")
        if c.side_vocab_size > 0:
            if item_side_ids is None or item_side_ids.dim() != 2 or item_side_ids.shape[0] != c.n_items + 1:
                raise ValueError(f"item_side_ids must be (n_items + 1 = {c.n_items + 1}, A) int64")
            if int(item_side_ids.max()) >= c.side_vocab_size or int(item_side_ids.min()) < 0:
                raise ValueError(f"item_side_ids must lie in 0..{c.side_vocab_size - 1}")
        elif item_side_ids is not None:
            raise ValueError("item_side_ids given but config.side_vocab_size is 0")
        self.config = c
        D = c.dim
        self.id_embedding = nn.Embedding(c.n_items + 1, D, padding_idx=0)
        self.side_embedding = nn.Embedding(c.side_vocab_size, D, padding_idx=0) if c.side_vocab_size else None
        side = item_side_ids if item_side_ids is not None else torch.zeros(c.n_items + 1, 0)
        self.register_buffer("item_side_ids", side.long().clone(), persistent=False)
        self.user_feature_embeddings = nn.ModuleList(nn.Embedding(n, D) for n in c.user_feature_sizes)
        # one bilinear map S shared by every (behaviour, interest) pair: B2I routing, §3.3.2
        self.bilinear = nn.Parameter(torch.randn(D, D) / math.sqrt(D))
        # routing logits b_ij ~ N(0, sigma^2), drawn once, never learned; column -1 = latest behaviour
        g = torch.Generator().manual_seed(c.seed)
        logits = torch.randn(c.n_interests, c.max_len, generator=g) * c.routing_sigma
        self.register_buffer("routing_logits", logits)  # (K, max_len)
        layers: list[nn.Module] = []
        sizes = [D * (1 + len(c.user_feature_sizes)), *c.hidden, D]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2 or c.final_relu:
                layers.append(nn.ReLU())
        self.h_layers = nn.Sequential(*layers)
        for emb in [self.id_embedding, self.side_embedding, *self.user_feature_embeddings]:
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
                if emb.padding_idx is not None:
                    with torch.no_grad():
                        emb.weight[emb.padding_idx].zero_()

    # ---- Eq. (2): item embedding ---------------------------------------------------------------
    def item_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """e_i = mean of the id embedding and the item's non-padding side-feature embeddings.

        items: (...) int64 item ids; returns (..., D). Padding items give arbitrary vectors: mask them.
        """
        e = self.id_embedding(items)  # (..., D)
        if self.side_embedding is None:
            return e
        side = self.item_side_ids[items]  # (..., A)
        present = (side != 0).unsqueeze(-1).to(e.dtype)  # (..., A, 1)
        total = e + (self.side_embedding(side) * present).sum(dim=-2)  # (..., D)
        return total / (1.0 + present.sum(dim=-2))

    def item_tower(self) -> torch.Tensor:
        """Item vectors for serving: (N + 1, D), row 0 = padding (zeroed)."""
        ids = torch.arange(self.config.n_items + 1, device=self.id_embedding.weight.device)
        vec = self.item_embedding(ids)
        return torch.cat([torch.zeros_like(vec[:1]), vec[1:]])

    # ---- Algorithm 1: B2I dynamic routing --------------------------------------------------------
    def b2i_routing(
        self, behaviours: torch.Tensor, mask: torch.Tensor, n_interests: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Behaviour-to-interest dynamic routing.

        Args:
            behaviours: (B, L, D) behaviour embeddings e_i, the latest real behaviour last;
                padded on the left, or on the right (such rows are left-aligned first).
            mask: (B, L) bool, True for real behaviours.
            n_interests: (B,) int64 K'_u in 1..K.
        Returns:
            capsules (B, K, D), zero beyond K'_u; weights (B, L, K) w_ij of the last iteration,
            in the caller's layout (each real behaviour's row sums to 1 over its user's K'_u
            interests, padding rows are 0).
        """
        B, L, D = behaviours.shape
        K = self.config.n_interests
        if L > self.config.max_len:
            raise ValueError(f"history length {L} exceeds config.max_len={self.config.max_len}")
        # right padding -> left padding: column -1 is the latest behaviour, as the logits read it
        real_l, (behaviours,), shift = left_align(mask.long(), behaviours, name="mask")
        mask = real_l != 0  # (B, L)
        low = behaviours @ self.bilinear  # S e_i: (B, L, D) @ (D, D) -> (B, L, D)
        logits = self.routing_logits[:, -L:].unsqueeze(0).expand(B, K, L)  # b_ij: (B, K, L)
        active = torch.arange(K, device=behaviours.device).unsqueeze(0) < n_interests.unsqueeze(1)  # (B, K)
        real = mask.unsqueeze(1).to(behaviours.dtype)  # (B, 1, L)
        for it in range(self.config.routing_iters):
            # Eq. (6): softmax over interests for each behaviour; inactive interests get no weight
            w = torch.softmax(logits.masked_fill(~active.unsqueeze(2), float("-inf")), dim=1)  # (B, K, L)
            w = w * real  # padded behaviours route nowhere
            z = w @ low  # Eq. (5): (B, K, L) @ (B, L, D) -> (B, K, D)
            capsules = squash(z)  # Eq. (7)
            if it < self.config.routing_iters - 1:
                # Eq. (4): b_ij += u_j^T S e_i
                logits = logits + capsules @ low.transpose(1, 2)  # (B, K, D) @ (B, D, L) -> (B, K, L)
        capsules = capsules * active.unsqueeze(-1).to(capsules.dtype)  # (B, K, D)
        return capsules, unalign(w.transpose(1, 2), shift)  # (B, K, D), (B, L, K) caller's layout

    # ---- Eq. (1): user representation ------------------------------------------------------------
    def user_tower(
        self, *, history: torch.Tensor, user_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """V_u = f_user(I_u, P_u).

        Args:
            history: (B, L) int64 behaviour item ids (latest last), L <= max_len, 0 = padding on
                the left ([0, 0, a, b, c]) or on the right ([a, b, c, 0, 0], as `pad_sequence`
                makes it).
            user_features: (B, F) int64 user-profile ids, one column per config.user_feature_sizes.
        Returns:
            interests (B, K, D) user vectors v_u^k; active (B, K) bool, True for the first K'_u.
        """
        c = self.config
        if history.dim() != 2:
            raise ValueError(f"history must be (B, L), got shape {tuple(history.shape)}")
        B, L = history.shape
        check_ids("history (item ids, 0 = padding)", history, c.n_items)
        history, _, _ = left_align(history)  # right padding -> left padding
        mask = history != 0  # (B, L)
        n_int = (
            interest_count(mask.sum(1), c.n_interests) if c.dynamic_k
            else torch.full((B,), c.n_interests, dtype=torch.long, device=history.device)
        )
        behaviours = self.item_embedding(history) * mask.unsqueeze(-1)  # (B, L, D)
        capsules, _ = self.b2i_routing(behaviours, mask, n_int)  # (B, K, D)
        parts = [capsules]
        if c.user_feature_sizes:
            if user_features is None or user_features.shape != (B, len(c.user_feature_sizes)):
                raise ValueError(f"user_features must be (B={B}, F={len(c.user_feature_sizes)}) int64")
            for f, emb in enumerate(self.user_feature_embeddings):
                check_ids(f"user_features[:, {f}]", user_features[:, f], emb.num_embeddings - 1)
            profile = torch.cat([emb(user_features[:, f]) for f, emb in
                                 enumerate(self.user_feature_embeddings)], dim=-1)  # (B, F*D)
            parts.append(profile.unsqueeze(1).expand(B, c.n_interests, profile.shape[-1]))
        interests = self.h_layers(torch.cat(parts, dim=-1))  # (B, K, D(1+F)) -> (B, K, D)
        active = torch.arange(c.n_interests, device=history.device).unsqueeze(0) < n_int.unsqueeze(1)
        return interests, active

    # ---- Eq. (9): label-aware attention -----------------------------------------------------------
    def label_aware_attention(
        self, interests: torch.Tensor, active: torch.Tensor, target_vec: torch.Tensor,
        p: float | None = None,
    ) -> torch.Tensor:
        """v_u = V_u softmax(pow(V_u^T e_i, p)) (see the NOTE on pow in the module docstring).

        interests (B, K, D), active (B, K) bool, target_vec (B, D) = e_i of the label item -> (B, D).
        """
        p = self.config.pow_p if p is None else p
        scores = (interests @ target_vec.unsqueeze(-1)).squeeze(-1)  # (B, K, D) @ (B, D, 1) -> (B, K)
        scores = (p * scores).masked_fill(~active, float("-inf"))
        attn = torch.softmax(scores, dim=-1)  # (B, K)
        return (attn.unsqueeze(1) @ interests).squeeze(1)  # (B, 1, K) @ (B, K, D) -> (B, D)

    # ---- Eq. (10)-(11): training objective -------------------------------------------------------
    def loss(
        self,
        *,
        interests: torch.Tensor,
        active: torch.Tensor,
        target: torch.Tensor,
        negatives: torch.Tensor,
        log_q_target: torch.Tensor,
        log_q_negatives: torch.Tensor,
    ) -> torch.Tensor:
        """Sampled softmax of Pr(i|u) = exp(v_u . e_i) / sum_j exp(v_u . e_j), with log-Q correction.

        Args:
            interests, active: from `user_tower`.
            target: (B,) int64 label items (>= 1).
            negatives: (M,) int64 items sampled from Q, shared by the batch.
            log_q_target, log_q_negatives: (B,), (M,) log expected count of each item under Q.
        Returns:
            scalar mean cross-entropy (the negative of Eq. (11) per example).
        """
        if bool((target < 1).any()):
            raise ValueError("target contains the padding id 0")
        check_ids("target", target, self.config.n_items, low=1)
        check_ids("negatives", negatives, self.config.n_items, low=1)
        e_target = self.item_embedding(target)  # (B, D)
        v_u = self.label_aware_attention(interests, active, e_target)  # (B, D)
        e_neg = self.item_embedding(negatives)  # (M, D)
        pos = (v_u * e_target).sum(-1) - log_q_target  # (B,)
        neg = v_u @ e_neg.T - log_q_negatives.unsqueeze(0)  # (B, D) @ (D, M) -> (B, M)
        neg = neg.masked_fill(target.unsqueeze(1) == negatives.unsqueeze(0), float("-inf"))
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)  # (B, 1 + M)
        return F.cross_entropy(logits, torch.zeros_like(target))

    # ---- Eq. (3): serving ------------------------------------------------------------------------
    @staticmethod
    def score_items(interests: torch.Tensor, active: torch.Tensor, item_vecs: torch.Tensor) -> torch.Tensor:
        """f_score(V_u, e_i) = max over the user's active interests of e_i . v_u^k.

        interests (B, K, D), active (B, K), item_vecs (N + 1, D) -> (B, N + 1). Equals retrieving the top
        items of every interest and merging the lists by score.
        """
        scores = interests @ item_vecs.T  # (B, K, D) @ (D, N+1) -> (B, K, N+1)
        scores = scores.masked_fill(~active.unsqueeze(-1), float("-inf"))
        return scores.max(dim=1).values  # (B, N+1)

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int = 10, *, exclude_seen: bool = True,
                  **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, items), each (B, k) best first: the items 1..N by Eq. (3), in eval mode,
        less `history`'s if exclude_seen. `inputs` go to `user_tower` (`user_features`)."""
        with _eval_mode(self):
            interests, active = self.user_tower(history=history, **inputs)  # (B, K, D), (B, K)
            scores = self.score_items(interests, active, self.item_tower())  # (B, N + 1), Eq. (3)
        return _top_k(scores, history if exclude_seen else None, k)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict", "init"} for `MIND.load`,
        written in place; an existing file is kept unless overwrite=True."""
        side = self.item_side_ids if self.config.side_vocab_size else None  # (N + 1, A) or None
        _save_checkpoint(self, self.config, path, overwrite, init={"item_side_ids": side})

    @classmethod
    def load(cls, path: str, map_location="cpu") -> MIND:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, MINDConfig, path, map_location, extra=("init",))
        model = cls(config=config, item_side_ids=ckpt["init"]["item_side_ids"])
        return _load_weights(model, ckpt, path, map_location)
