"""Deep Interest Evolution Network (DIEN).

Paper: Guorui Zhou, Na Mou, Ying Fan, Qi Pi, Weijie Bian, Chang Zhou, Xiaoqiang Zhu, Kun Gai.
       "Deep Interest Evolution Network for Click-Through Rate Prediction". AAAI 2019.
       https://arxiv.org/abs/1809.03672
Official code: https://github.com/mouna99/dien (TensorFlow 1.x)

This file stands alone: it needs only torch. Copy it into your project as is.

Usage::

    import torch
    from model import DIEN
    model = DIEN(item_vocab_sizes=(101, 11))         # item id + category id, 0 = padding
    target = torch.randint(1, 11, (4, 2))            # (B, G) candidate
    history = torch.randint(1, 11, (4, 6, 2))        # (B, T, G) oldest first, left-padded with 0
    negatives = torch.randint(1, 11, (4, 6, 2))      # one sampled item per step, for Eq. (6)
    logits, aux = model(target, history, neg_history=negatives, return_aux=True)  # (B,), scalar
    loss = model.loss(logits, torch.ones(4), aux)    # Eq. (7)
    scores, gates = model.evolution_trace(target, history)  # (B, T) a_t, (B, T, H) gate of Eq. (11)
    probs = model.predict(target, history)           # (B,) P(click), in eval mode
    model.save("m.pt")                               # config + weights, no overwrite
    model = DIEN.load("m.pt")                        # from this file alone, eval mode

Notation (same letters in the note, README.md §Maths; equation numbers as in the AAAI 2019 paper):
    B: batch size            T: behaviour-sequence length (time steps, 0 = padding)
    G: id fields per item    D: embedding dim per field, so one item e is a G*D vector
    H: GRU hidden size (= G*D, so that the auxiliary loss can take <h_t, e_{t+1}>)
    F: context (user profile / context) fields, optional

Inputs are plain tensors:
    target:       (B, G) int64       the candidate item
    history:      (B, T, G) int64    behaviours in time order, LEFT-padded with 0 (most recent last)
    neg_history:  (B, T, G) int64    one sampled non-clicked item per behaviour step, for the
                                     auxiliary loss only (training); ignored at padded steps
    context:      (B, F) int64       optional

Layers (note §Architecture):
    interest extractor   GRU over the behaviours, Eqs. (2)-(5) -> h_t
    auxiliary loss       next behaviour e_b[t+1] vs a sampled one, supervises h_t, Eq. (6)
    attention            a_t = softmax_t(h_t W e_a), Eq. (8)
    interest evolving    AUGRU: the update gate is scaled by a_t, Eqs. (11)-(12) -> h'_T
    output               MLP on [h'_T, e_a, context, ...] -> logit
    loss                 L = L_target + alpha L_aux, Eq. (7); L_target is Eq. (1)

NOTE: the auxiliary score sigma(h_t, e) is the sigmoid of the inner product <h_t, e>, as the paper
      writes it; the official code uses a small MLP on [h_t, e] instead.
NOTE: the MLP input also holds the summed behaviours and their product with the target, as the
      official code does (`include_sum_pooling`); the paper's Fig. 1 shows only h'_T, the target
      and the context.
NOTE: the MLP's activation is Dice (DIN paper Eq. 9), as the official DIEN model builds its output
      network (`build_fcn_net(inp, use_dice=True)`); `activation="prelu"` gives PReLU instead.
NOTE: AIGRU (Eq. 9) and AGRU (Eq. 10), the paper's weaker variants, are available via `evolution`.
NOTE: the auxiliary loss is the mean over the real (t, t+1) pairs; Eq. (6) divides the sum by the
      number of users and the official code by all B x (T-1) padded cells, so the same alpha is a
      different weight in each (note, "Deviations from the paper").
NOTE: a sampled negative equal to that step's own behaviour is dropped from Eq. (6): the paper
      samples from the items the user did not click.
NOTE: one sample has no batch variance, so Dice normalises a training batch of one row with its
      moving averages, as at test time (`BatchStats`); nn.BatchNorm1d would stop with "Expected more
      than 1 value per channel".
NOTE: ids outside a field's vocabulary raise a ValueError naming the input, field, id and range
      (`check_ids`), instead of reading another row or failing with a bare IndexError.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Evolution = Literal["augru", "agru", "aigru", "gru"]


@dataclass
class DIENConfig:
    item_vocab_sizes: tuple[int, ...]  # one per item field (item id, category, ...), id 0 = padding
    context_vocab_sizes: tuple[int, ...] = ()  # user profile / context fields
    dim: int = 16  # per-field embedding dim; the official Amazon code uses 18 per field
    evolution: Evolution = "augru"  # paper's best; "agru"/"aigru"/"gru" are its ablations
    aux_weight: float = 1.0  # alpha of Eq. (7); the official code uses 1 (over padded cells)
    mlp_hidden: tuple[int, ...] = (200, 80)  # as DIN and the official code
    include_sum_pooling: bool = True  # official code: also feed sum_t e_t and (sum_t e_t) * e_a
    activation: Literal["dice", "prelu"] = "dice"  # MLP activation; the official DIEN uses Dice
    dice_eps: float = 1e-8  # epsilon inside sqrt(Var[s] + eps) of Dice


def check_ids(ids: torch.Tensor, sizes: tuple[int, ...], what: str) -> None:
    """Raise a ValueError when an id of `ids` (..., G) lies outside field g's range 0..sizes[g]-1.
    One min/max reduction per call; the offending id is looked up only on failure."""
    if ids.shape[-1] != len(sizes):
        raise ValueError(f"{what}: expected {len(sizes)} id fields in the last dim, got shape "
                         f"{tuple(ids.shape)}")
    if ids.numel() == 0:
        return
    flat = ids.reshape(-1, ids.shape[-1])  # (N, G)
    limit = torch.as_tensor(sizes, device=ids.device)  # (G,)
    bad = (flat.amin(0) < 0) | (flat.amax(0) >= limit)  # (G,)
    if bad.any():
        g = int(bad.nonzero()[0])
        column = flat[:, g]
        wrong = int(column[(column < 0) | (column >= sizes[g])][0])
        raise ValueError(f"{what}, field {g}: id {wrong} is out of range; expected 0..{sizes[g] - 1} "
                         f"(vocabulary size {sizes[g]}, 0 = padding)")


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


class BatchStats(nn.BatchNorm1d):
    """(s - E[s]) / sqrt(Var[s] + eps) for Dice, a BatchNorm without affine parameters: batch
    statistics in training, their moving averages at test time. A training batch of one sample has
    no variance, so it is normalised with the moving averages (left unchanged), as at test time."""

    def __init__(self, width: int, *, eps: float) -> None:
        super().__init__(width, eps=eps, affine=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.training and s.shape[0] < 2:  # (N, W) with N <= 1: nothing to estimate from
            return F.batch_norm(s, self.running_mean, self.running_var, eps=self.eps,
                                training=False)
        return super().forward(s)


class Dice(nn.Module):
    """DIN's data-adaptive activation: f(s) = p(s) * s + (1 - p(s)) * alpha * s with
    p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)); batch statistics in training, their moving
    averages at test time (a BatchNorm without affine parameters keeps exactly these; a training
    batch of one row uses the moving averages, see `BatchStats`)."""

    def __init__(self, width: int, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = BatchStats(width, eps=eps)
        self.alpha = nn.Parameter(torch.zeros(width))  # slope of the "off" side

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.norm(s))  # s: (B, W)
        return p * s + (1.0 - p) * self.alpha * s


class AUGRUCell(nn.Module):
    """GRU cell whose update gate is scaled by an attention score (Eqs. 11-12), or the AGRU /
    AIGRU / plain-GRU variants. One step: (x (B, H_in), h (B, H), a (B,)) -> h' (B, H)."""

    def __init__(self, input_size: int, hidden_size: int, mode: Evolution = "augru") -> None:
        super().__init__()
        self.mode = mode
        self.x2gates = nn.Linear(input_size, 3 * hidden_size)  # W^u, W^r, W^h and biases
        self.h2gates = nn.Linear(hidden_size, 3 * hidden_size, bias=False)  # U^u, U^r, U^h

    def forward(self, x: torch.Tensor, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        a = a.unsqueeze(-1)  # (B, 1)
        if self.mode == "aigru":
            x = x * a  # Eq. (9): i'_t = h_t * a_t
        xu, xr, xh = self.x2gates(x).chunk(3, dim=-1)  # 3 x (B, H)
        hu, hr, hh = self.h2gates(h).chunk(3, dim=-1)
        u = torch.sigmoid(xu + hu)  # Eq. (2) update gate u'_t
        r = torch.sigmoid(xr + hr)  # Eq. (3) reset gate
        h_tilde = torch.tanh(xh + r * hh)  # Eq. (4)
        if self.mode == "augru":
            u = a * u  # Eq. (11): u~'_t = a_t * u'_t
        elif self.mode == "agru":
            u = a.expand_as(u)  # Eq. (10): the attention score replaces the update gate
        return (1.0 - u) * h + u * h_tilde  # Eq. (12) (Eq. 5 for the plain GRU)

    def update_gate(self, x: torch.Tensor, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The update gate this step applies, (B, H): u~'_t = a_t * u'_t of Eq. (11) for AUGRU, a_t
        for AGRU (Eq. 10), u'_t for GRU / AIGRU. For plots and tests; forward() does not call it."""
        a = a.unsqueeze(-1)  # (B, 1)
        if self.mode == "aigru":
            x = x * a
        u = torch.sigmoid(self.x2gates(x).chunk(3, dim=-1)[0] + self.h2gates(h).chunk(3, dim=-1)[0])
        if self.mode == "augru":
            return a * u
        return a.expand_as(u) if self.mode == "agru" else u


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


class DIEN(nn.Module):
    """Deep Interest Evolution Network. Build from a config,
    `DIEN(DIENConfig(item_vocab_sizes=(n_items + 1, n_cats + 1)))`, optionally with keyword overrides,
    or from keywords alone; the config passed in is never modified (overrides apply to a copy)."""

    def __init__(self, config: DIENConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = dataclasses.replace(config, **overrides) if config is not None else DIENConfig(**overrides)
        if not cfg.item_vocab_sizes or any(v < 2 for v in cfg.item_vocab_sizes):
            raise ValueError(f"item_vocab_sizes needs >= 1 field of size >= 2 (id 0 = padding), "
                             f"got {cfg.item_vocab_sizes}")
        if cfg.evolution not in ("augru", "agru", "aigru", "gru"):
            raise ValueError(f"evolution must be augru/agru/aigru/gru, got {cfg.evolution!r}")
        if cfg.activation not in ("dice", "prelu"):
            raise ValueError(f"activation must be 'dice' or 'prelu', got {cfg.activation!r}")
        if cfg.dim < 1 or cfg.aux_weight < 0:
            raise ValueError(f"need dim >= 1 and aux_weight >= 0, got {cfg.dim}, {cfg.aux_weight}")
        self.config = cfg
        D, G = cfg.dim, len(cfg.item_vocab_sizes)
        H = G * D  # hidden size = item size, so <h_t, e_{t+1}> is defined (Eq. 6)
        self.item_embeddings = nn.ModuleList(
            nn.Embedding(v, D, padding_idx=0) for v in cfg.item_vocab_sizes)
        self.context_embeddings = nn.ModuleList(nn.Embedding(v, D) for v in cfg.context_vocab_sizes)
        for table in [*self.item_embeddings, *self.context_embeddings]:
            nn.init.normal_(table.weight, std=0.05)
        for table in self.item_embeddings:
            with torch.no_grad():
                table.weight[0].zero_()
        self.interest_extractor = nn.GRUCell(H, H)  # Eqs. (2)-(5)
        self.attention = nn.Linear(H, H, bias=False)  # W of Eq. (8)
        self.interest_evolving = AUGRUCell(H, H, cfg.evolution)  # Eqs. (9)-(12)
        mlp_in = 2 * H + len(cfg.context_vocab_sizes) * D
        mlp_in += 2 * H if cfg.include_sum_pooling else 0  # [sum_t e_t, (sum_t e_t) * e_a]
        layers: list[nn.Module] = []
        for width in cfg.mlp_hidden:
            act = Dice(width, eps=cfg.dice_eps) if cfg.activation == "dice" else nn.PReLU(width)
            layers += [nn.Linear(mlp_in, width), act]
            mlp_in = width
        layers.append(nn.Linear(mlp_in, 1))
        self.mlp = nn.Sequential(*layers)

    # ----------------------------------------------------------------- embeddings
    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (..., G) int64 -> (..., G*D)."""
        if ids.shape[-1] != len(self.item_embeddings):
            raise ValueError(f"expected {len(self.item_embeddings)} item fields in the last dim, "
                             f"got shape {tuple(ids.shape)}")
        return torch.cat([table(ids[..., g]) for g, table in enumerate(self.item_embeddings)], -1)

    # ----------------------------------------------------------------- Eqs. (2)-(5)
    def extract_interests(self, behaviours: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Interest extractor GRU. behaviours: (B, T, H); mask: (B, T) bool, False = padding.
        Returns h: (B, T, H); the state is held (and 0 before the first behaviour) at padding."""
        B, T, H = behaviours.shape
        h = behaviours.new_zeros(B, H)
        states = []
        for t in range(T):
            step = mask[:, t].unsqueeze(-1)  # (B, 1)
            h = torch.where(step, self.interest_extractor(behaviours[:, t], h), h)  # Eq. (5)
            states.append(h)
        return torch.stack(states, dim=1)  # (B, T, H)

    # ----------------------------------------------------------------- Eq. (6)
    def auxiliary_loss(self, interests: torch.Tensor, behaviours: torch.Tensor,
                       negatives: torch.Tensor, mask: torch.Tensor,
                       is_negative: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (6): h_t should score the real next behaviour e_b[t+1] above a sampled one.

        interests h: (B, T, H); behaviours e_b and negatives (B, T, H); mask (B, T) bool;
        is_negative (B, T) bool, False where the sampled item IS that step's behaviour (the paper
        samples from the items the user did not click; forward() computes it from the ids).
        Pairs (h_t, e_{t+1}) count only where both steps are real behaviours and the sample is a
        real negative; the loss is the mean over the pairs that count (note, Deviations).
        """
        h = interests[:, :-1]  # (B, T-1, H): h_1 .. h_{T-1}
        pos = (h * behaviours[:, 1:]).sum(-1)  # <h_t, e_b[t+1]>: (B, T-1)
        neg = (h * negatives[:, 1:]).sum(-1)  # <h_t, e^_b[t+1]>: (B, T-1)
        pair = mask[:, :-1] & mask[:, 1:]  # (B, T-1)
        if is_negative is not None:
            pair = pair & is_negative[:, 1:]  # a "negative" equal to the clicked item is none
        pair = pair.float()
        nll = F.softplus(-pos) + F.softplus(neg)  # -log s(pos) - log(1 - s(neg))
        return (nll * pair).sum() / pair.sum().clamp_min(1.0)

    # ----------------------------------------------------------------- Eq. (8)
    def attention_scores(self, interests: torch.Tensor, target_emb: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        """a_t = exp(h_t W e_a) / sum_j exp(h_j W e_a) over real steps: (B, T); 0 at padding."""
        logits = torch.einsum("bth,bh->bt", interests, self.attention(target_emb))  # (B, T)
        logits = logits.masked_fill(~mask, float("-inf"))
        scores = torch.softmax(logits, dim=-1)
        return torch.nan_to_num(scores, nan=0.0)  # rows without any behaviour: all 0

    # ----------------------------------------------------------------- Eqs. (9)-(12)
    def evolve_interests(self, interests: torch.Tensor, scores: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        """Interest evolving layer over h_t with attention a_t; returns the final state h'_T (B, H).
        mask (B, T) bool, False = padding. Padding has a_t = 0, so AUGRU/AGRU keep their state
        there; plain GRU/AIGRU hold their state at padding by the mask (a real step whose a_t
        underflows to 0 is still a step)."""
        B, T, H = interests.shape
        h = interests.new_zeros(B, H)
        for t in range(T):
            new = self.interest_evolving(interests[:, t], h, scores[:, t])
            if self.config.evolution in ("gru", "aigru"):
                new = torch.where(mask[:, t].unsqueeze(-1), new, h)
            h = new
        return h

    def evolution_trace(self, target: torch.Tensor,
                        history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the interest evolving layer does for each (user, candidate), step by step: the
        attention a_t of Eq. (8), (B, T), and the update gate the AUGRU applies at each step, (B, T, H)
        (Eq. 11; 0 at padding). Runs the same cells as forward(); used by the demo's plot."""
        mask = history[..., 0] != 0  # (B, T)
        interests = self.extract_interests(self.embed_items(history), mask)  # (B, T, H)
        scores = self.attention_scores(interests, self.embed_items(target), mask)  # (B, T)
        h = interests.new_zeros(interests.shape[0], interests.shape[2])  # (B, H)
        gates = []
        for t in range(interests.shape[1]):
            x, a = interests[:, t], scores[:, t]
            gates.append(self.interest_evolving.update_gate(x, h, a) * mask[:, t, None])
            new = self.interest_evolving(x, h, a)
            if self.config.evolution in ("gru", "aigru"):
                new = torch.where(mask[:, t].unsqueeze(-1), new, h)  # as evolve_interests()
            h = new
        return scores, torch.stack(gates, dim=1)  # (B, T), (B, T, H)

    # ----------------------------------------------------------------- forward / loss
    def forward(self, target: torch.Tensor, history: torch.Tensor,
                context: torch.Tensor | None = None, neg_history: torch.Tensor | None = None,
                return_aux: bool = False):
        """Args:
            target: (B, G) int64.  history: (B, T, G) int64, left-padded with 0.
            context: (B, F) int64 or None.  neg_history: (B, T, G) int64, needed when return_aux.
        Returns:
            logits (B,), and the auxiliary loss (scalar) when return_aux. A batch of 0 rows gives
            empty (0,) logits (and an auxiliary loss of 0).
        """
        if target.dim() != 2 or history.dim() != 3 or history.shape[0] != target.shape[0]:
            raise ValueError(f"target must be (B, G) and history (B, T, G); got "
                             f"{tuple(target.shape)} and {tuple(history.shape)}")
        n_ctx = len(self.context_embeddings)
        if (context is None) != (n_ctx == 0) or (context is not None and context.shape[1] != n_ctx):
            raise ValueError(f"config has {n_ctx} context fields, got "
                             f"{None if context is None else tuple(context.shape)}")
        check_ids(target, self.config.item_vocab_sizes, "target")
        check_ids(history, self.config.item_vocab_sizes, "history")
        if context is not None:
            check_ids(context, self.config.context_vocab_sizes, "context")
        if neg_history is not None and return_aux:
            check_ids(neg_history, self.config.item_vocab_sizes, "neg_history")
        mask = history[..., 0] != 0  # (B, T)
        behaviours = self.embed_items(history)  # (B, T, H)
        target_emb = self.embed_items(target)  # (B, H)
        interests = self.extract_interests(behaviours, mask)  # (B, T, H)
        scores = self.attention_scores(interests, target_emb, mask)  # (B, T)
        final = self.evolve_interests(interests, scores, mask)  # (B, H)
        parts = [final, target_emb]
        if self.config.include_sum_pooling:
            summed = behaviours.sum(1)  # (B, H); padding rows are zero vectors
            parts += [summed, summed * target_emb]
        if context is not None:
            parts += [table(context[:, f]) for f, table in enumerate(self.context_embeddings)]
        logits = self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)  # (B,)
        if not return_aux:
            return logits
        if neg_history is None or neg_history.shape != history.shape:
            raise ValueError("return_aux needs neg_history with the shape of history")
        is_negative = (neg_history != history).any(-1)  # (B, T): False where it is the click
        aux = self.auxiliary_loss(interests, behaviours, self.embed_items(neg_history), mask,
                                  is_negative)
        return logits, aux

    def loss(self, logits: torch.Tensor, labels: torch.Tensor,
             aux_loss: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (7): L = L_target + alpha * L_aux (L_aux left out when not given).

        labels: (B,) in {0, 1}; other values and an empty batch raise a ValueError (`check_labels`).
        """
        check_labels(logits, labels)
        target_loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        if aux_loss is None:
            return target_loss
        return target_loss + self.config.aux_weight * aux_loss

    # -- serving and persistence -----------------------------------------------------------------
    @torch.no_grad()
    def predict(self, *inputs, **kw):
        """Click probabilities sigmoid(forward(...)), (B,) float, detached (and the auxiliary loss
        with return_aux=True): forward's inputs, run in eval mode for the call."""
        with _eval_mode(self):
            out = self(*inputs, **kw)  # (B,) logits, or (logits, aux) with return_aux=True
        if isinstance(out, tuple):
            return torch.sigmoid(out[0]), out[1]
        return torch.sigmoid(out)  # (B,)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `DIEN.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> DIEN:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, DIENConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
