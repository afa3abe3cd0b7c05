"""Calibrated re-ranking: make the top k reflect the mix of categories in the user's history.

Paper: Harald Steck. "Calibrated Recommendations". RecSys 2018.
Link: https://doi.org/10.1145/3240323.3240372
Official code: none (the paper gives the formulas and the greedy).

Usage::

    import torch
    from model import CalibratedReranker, category_distribution
    scores = torch.rand(2, 30)  # (B, N) ranker scores, already on [0, 1]
    item_ids = torch.randint(1, 6, (2, 30, 2))  # (B, N, A) category ids per candidate, 0 = none
    history_ids = torch.randint(1, 6, (2, 20, 2))  # (B, L, A) ids of the history, oldest first
    q_items = category_distribution(item_ids, n_categories=5)  # (B, N, 6) q(g|i)
    q_history = category_distribution(history_ids, n_categories=5)  # (B, L, 6); zero row = padding
    calib = CalibratedReranker(lam=0.5, max_length=10)
    positions = calib(scores=scores, item_categories=q_items, history_categories=q_history)
    print(positions[0].tolist())  # (B, 10) positions into each candidate list
    calib.save("m.pt")  # its config (no weights); an existing file is kept
    calib = CalibratedReranker.load("m.pt")  # the same knobs, from this file alone

This file stands alone: it needs only torch. Copy it into your project as is.
Two model files in one project: every file of this repo is called model.py, so copy each under its
own name (sasrec_model.py, calibration_model.py) and import it as usual.

What it does (the note: Idea, Maths): a list is *calibrated* when its category mix q(g|u) matches
the mix p(g|u) of what the user consumed. Miscalibration is a KL divergence; the re-ranker picks k
of the N candidates, one slot at a time, trading the ranker's scores against it. Equation numbers
follow the order of the paper's Sections 2-3 (the note uses the same):

    Eq. (1)  p(g|u) = sum_{i in H} w_{u,i} q(g|i) / sum_{i in H} w_{u,i}      history mix
    Eq. (2)  q(g|u) = sum_{i in I} w_{r(i)} q(g|i) / sum_{i in I} w_{r(i)}    list mix (I: the list)
    Eq. (3)  C_KL(p, q) = KL(p || q~) = sum_g p(g|u) log( p(g|u) / q~(g|u) )  miscalibration
    Eq. (4)  q~(g|u) = (1 - alpha) q(g|u) + alpha p(g|u),  alpha = 0.01       keeps Eq. (3) finite
    Eq. (6)  I* = argmax_{|I| = k} (1 - lambda) s(I) - lambda C_KL(p, q(I)),  s(I) = sum_i s(i)
    solved greedily: each slot takes the candidate that maximises Eq. (6) for the list so far
    plus that candidate.

q(g|i) is the category distribution of item i (`category_distribution`: uniform over its ids).
lambda = 0 is the relevance order; lambda = 1 is calibration only.

Notation (shapes):
    B: number of lists (users) in the batch     N: candidates per list
    G: categories + 1 (column 0 = "no category", always 0)     L: history length
    k: items to select (max_length)              S: categories in a user's history (p > 0)

Vectorised: one pass per selected slot over all B lists and N candidates at once. With uniform rank
weights the smoothed list mix is a mean over items,
    q~(g | I + i) = (sum_{j in I} m_j + m_i) / (|I| + 1),  m_i = (1 - alpha) q(g|i) + alpha p(g|u),
so each step is O(N S): only the S categories of the history enter Eq. (3) (p log(p / q~) = 0 where
p = 0), so the greedy works on those columns alone.

NOTE (deviations, each also listed in the note):
    * Rank weights w_{r(i)} of Eq. (2) are all 1: the list is scored as a set, the form the greedy
      and its submodularity argument take (rank weights would make the value depend on the order).
    * The constant s(I) of the picks so far is left out of each step's argmax
      (s(I + i) = s(I) + s(i)), so lambda = 0 returns the relevance order exactly, with no
      round-off from a running sum.
    * Recency weights w_{u,i} of Eq. (1): w = 0.5 ** (age / half_life), age = number of history
      items after item i; half_life=None (default) weighs every history item equally.
    * No training objective: the paper re-ranks given scores, so there is no `loss(...)`.

Input contract (every case is a one-line ValueError, never a silent wrong list):
    * scores and category distributions must be finite everywhere, padded candidates included; a NaN
      or +-inf is refused, naming the list (row). To exclude a candidate pass valid=False.
    * every valid candidate's q(g|i) and every non-padding history row must be a distribution
      (entries >= 0 summing to 1); a history row of zeros is padding; a list whose history has no
      category at all (p(g|u) undefined) is refused.
    * category ids (`category_distribution`) must lie in 0..n_categories (0 = none).
    * max_length must be in 1..N: a tensor with fewer candidates than max_length is refused. To get
      a short list anyway, pad the candidates to max_length with valid=False: the slots the list
      cannot fill come back as -1 (the marker for "no item").
    * N = 0 candidates is refused; a batch of B = 0 lists gives an empty (0, k) result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields, replace

import torch
from torch import nn


@dataclass
class CalibrationConfig:
    lam: float = 0.5  # lambda in Eq. (6): 0 = relevance order, 1 = calibration only
    alpha: float = 0.01  # alpha in Eq. (4), the paper's value: q~ >= alpha p keeps C_KL finite
    max_length: int = 10  # k: length of the re-ranked list (we report @10)
    half_life: float | None = None  # recency weights w_{u,i} of Eq. (1), in items; None = equal


_FINITE_SCORES = "finite relevance scores (exclude a candidate with valid=False, not -inf)"
_SUM_TOL = 1e-4  # |sum - 1| allowed for a distribution (float32 round-off of a few hundred terms)


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
    """An integer knob: value >= low (bool and float are refused: 10.0 is not a length)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be >= {low} (an integer), got {value!r}")


def _check_knobs(lam, alpha) -> None:
    if not 0.0 <= lam <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1] (the paper: 0.01), got {alpha}")


def _check_distributions(x: torch.Tensor, rows: torch.Tensor, name: str, what: str) -> None:
    """Rows of x (..., G) where `rows` is True must be >= 0 and sum to 1; name the first bad one."""
    negative = (x < 0).any(-1) & rows
    off = ((x.sum(-1) - 1.0).abs() > _SUM_TOL) & rows
    for bad, problem in ((negative, "has a negative entry"), (off, "does not sum to 1")):
        if bool(bad.any()):
            where = [int(i) for i in bad.nonzero()[0]]
            total = float(x[tuple(where)].sum())
            raise ValueError(
                f"{name}: list {where[0]}, {what} {where[1:]} {problem} (sum {total:.6g}, min "
                f"{float(x[tuple(where)].min()):.6g}); expected a category distribution: entries "
                f">= 0 summing to 1 (category_distribution builds one from category ids)"
            )


def category_distribution(category_ids: torch.Tensor, n_categories: int) -> torch.Tensor:
    """q(g|i): each item's categories as a distribution, uniform over its distinct ids.

    Args:
        category_ids: (..., A) int64 ids in 0..n_categories, 0 = no category (padding).
        n_categories: the number of real categories (ids 1..n_categories).
    Returns:
        (..., n_categories + 1) float32; column 0 is always 0; a row with no id is all zeros.
    """
    _check_int("n_categories", n_categories, 1)
    if category_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(
            f"category_ids must be an integer tensor (..., A), got {category_ids.dtype}"
        )
    if category_ids.dim() == 0:
        raise ValueError("category_ids must be (..., A): one row of ids per item, got a scalar")
    bad = (category_ids < 0) | (category_ids > n_categories)
    if bool(bad.any()):
        where = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(
            f"category_ids: id {int(category_ids[tuple(where)])} at {where} is an unknown "
            f"category; "
            f"expected ids in 0..{n_categories} (n_categories = {n_categories}, 0 = none)"
        )
    ids = category_ids.long()
    hot = torch.zeros(*ids.shape[:-1], n_categories + 1, device=ids.device)  # (..., G)
    hot.scatter_(-1, ids, 1.0)  # a repeated id counts once
    hot[..., 0] = 0.0  # "no category" is not a category
    return hot / hot.sum(-1, keepdim=True).clamp_min(1.0)  # (..., G)


def recency_weights(present: torch.Tensor, half_life: float | None) -> torch.Tensor:
    """w_{u,i} of Eq. (1): 0.5 ** (age / half_life), age = history items after i (the last has 0).

    Args:
        present: (B, L) bool, True for a history item, False for padding; oldest first.
        half_life: in items, > 0; None gives every history item weight 1.
    Returns:
        (B, L) float32 weights, 0 on padding.
    """
    w = present.float()  # (B, L)
    if half_life is None:
        return w
    age = w.flip(1).cumsum(1).flip(1) - w  # (B, L) items after position l
    return torch.pow(0.5, age / half_life) * w


def history_distribution(history_categories: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (1): p(g|u), the weighted mean of q(g|i) over the user's history.

    Args:
        history_categories: (B, L, G) q(g|i) of each history item; a row of zeros is padding.
        weights: (B, L) w_{u,i} >= 0 (default 1 for every history item).
    Returns:
        (B, G) p(g|u); every list needs a history item with a category.
    """
    present = history_categories.sum(-1) > 0  # (B, L) padding rows are all zero
    w = present.to(history_categories.dtype) if weights is None else weights * present
    total = w.sum(1, keepdim=True)  # (B, 1)
    if bool((total <= 0).any()):
        b = int((total[:, 0] <= 0).nonzero()[0])
        raise ValueError(
            f"history_categories: list {b} has no history item with a category (or only weight 0), "
            f"so p(g|u) is undefined; expected at least one history row that is a distribution"
        )
    return (w.unsqueeze(-1) * history_categories).sum(1) / total  # (B, L, 1) * (B, L, G) -> (B, G)


def list_distribution(item_categories: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Eq. (2) with w_{r(i)} = 1: q(g|u), the mean of q(g|i) over the items of each list.

    Args:
        item_categories: (B, N, G) q(g|i) of the candidates.
        positions: (B, k) int64 positions into the candidates; -1 = no item (left out).
    Returns:
        (B, G) q(g|u); a list with no item gives a row of zeros.
    """
    B, N, G = item_categories.shape
    shown = (positions >= 0).to(item_categories.dtype)  # (B, k)
    idx = positions.clamp_min(0).unsqueeze(-1).expand(B, positions.shape[1], G)  # (B, k, G)
    picked = item_categories.gather(1, idx) * shown.unsqueeze(-1)  # (B, k, G)
    return picked.sum(1) / shown.sum(1, keepdim=True).clamp_min(1.0)  # (B, G)


def miscalibration(p: torch.Tensor, q: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """Eq. (3)-(4): C_KL(p, q) = KL(p || q~), q~ = (1 - alpha) q + alpha p, per list.

    Args:
        p: (B, G) target mix p(g|u).
        q: (B, G) the list's mix q(g|u).
        alpha: in (0, 1]; q~ >= alpha p, so the KL is finite even where q = 0.
    Returns:
        (B,) C_KL >= 0, 0 when q = p.
    """
    _check_knobs(0.0, alpha)
    q_tilde = (1.0 - alpha) * q + alpha * p  # Eq. (4)
    support = p > 0  # p log(p / q~) = 0 where p = 0
    ratio = torch.where(support, p, 1.0).log() - torch.where(support, q_tilde, 1.0).log()
    return (p * ratio).sum(-1)  # Eq. (3)


def calibrated_greedy(
    *,
    relevance: torch.Tensor,
    item_categories: torch.Tensor,
    target: torch.Tensor,
    lam: float,
    alpha: float,
    max_length: int,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy maximisation of Eq. (6), batched.

    Args:
        relevance: (B, N) finite float s(i); N >= 1, B >= 0 (B = 0: empty result).
        item_categories: (B, N, G) q(g|i); a distribution for every valid candidate.
        target: (B, G) p(g|u), a distribution.
        lam: lambda in [0, 1]; alpha: in (0, 1].
        max_length: k in 1..N (a list with fewer valid candidates ends with -1); for a list shorter
            than k, pad it to k candidates with valid=False.
        valid: (B, N) bool, False for padded candidates (never selected; values must be finite).
    Returns:
        (B, k) int64 positions into the candidate list, in selection order; -1 when a list runs out.
    """
    if (relevance.dim() != 2 or item_categories.dim() != 3 or target.dim() != 2
            or item_categories.shape[:2] != relevance.shape
            or target.shape != (relevance.shape[0], item_categories.shape[2])):
        raise ValueError(
            f"expected relevance (B, N), item_categories (B, N, G) and target (B, G), got "
            f"{tuple(relevance.shape)}, {tuple(item_categories.shape)} and {tuple(target.shape)}"
        )
    _check_knobs(lam, alpha)
    if relevance.shape[1] == 0:
        raise ValueError("the candidate lists are empty (N = 0); expected at least 1 candidate")
    _check_int("max_length", max_length, 1)
    if max_length > relevance.shape[1]:
        raise ValueError(
            f"max_length must be in 1..{relevance.shape[1]} (the list length N), got {max_length}: "
            f"pass at least max_length candidates (pad with valid=False; unfilled slots give -1)"
        )
    if valid is not None and (valid.shape != relevance.shape or valid.dtype != torch.bool):
        raise ValueError(
            f"valid must be (B, N) = {tuple(relevance.shape)} bool, got {tuple(valid.shape)} "
            f"{valid.dtype}"
        )
    _check_finite(relevance, "relevance", _FINITE_SCORES)
    _check_finite(item_categories, "item_categories", "finite q(g|i) (pad with zeros)")
    _check_finite(target, "target", "a finite p(g|u)")
    B, N, G = item_categories.shape
    available = torch.ones(B, N, dtype=torch.bool, device=relevance.device)
    if valid is not None:
        available &= valid
    _check_distributions(item_categories, available, "item_categories", "candidate")
    _check_distributions(target.unsqueeze(1), torch.ones_like(target[:, :1], dtype=torch.bool),
                         "target", "row")
    dtype = torch.promote_types(relevance.dtype, torch.float32)
    relevance = relevance.to(dtype)
    k = max_length
    rows = torch.arange(B, device=relevance.device)

    # Only the S categories of the history enter Eq. (3): gather those columns of p and q(g|i).
    support = target > 0  # (B, G)
    S = max(int(support.sum(1).max()), 1) if B > 0 else 1
    cols = support.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :S]  # (B, S)
    p = target.to(dtype).gather(1, cols)  # (B, S); 0 past a list's own support
    q = item_categories.to(dtype).gather(2, cols.unsqueeze(1).expand(B, N, S))  # (B, N, S)
    # Eq. (4) item by item: q~ of a list is the mean of m_i = (1 - alpha) q(g|i) + alpha p(g|u)
    m = (1.0 - alpha) * q + alpha * p.unsqueeze(1)  # (B, N, S)
    log_p = torch.where(p > 0, p, 1.0).log().unsqueeze(1)  # (B, 1, S)
    tiny = torch.finfo(dtype).tiny  # q~ = 0 only where p = 0, and there p * log(.) must be 0
    m_sum = relevance.new_zeros(B, S)  # sum of m_j over the picks so far
    selected = torch.full((B, k), -1, dtype=torch.long, device=relevance.device)
    for t in range(k):
        q_tilde = (m_sum.unsqueeze(1) + m) / (t + 1)  # (B, N, S) Eq. (2) + (4) for the list + i
        kl = (p.unsqueeze(1) * (log_p - q_tilde.clamp_min(tiny).log())).sum(-1)  # (B, N) Eq. (3)
        objective = (1.0 - lam) * relevance - lam * kl  # Eq. (6) less the constant s(I)  (B, N)
        objective = objective.masked_fill(~available, -math.inf)
        j = objective.argmax(dim=1)  # (B,)
        ok = available[rows, j]  # False when a list has no candidate left
        selected[:, t] = torch.where(ok, j, -1)
        available[rows, j] = False
        m_sum = m_sum + m[rows, j] * ok.unsqueeze(1).to(dtype)  # (B, S)
    return selected


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




class CalibratedReranker(nn.Module):
    """Re-rank B candidate lists towards the user's category mix: greedy Eq. (6).

    No parameters: lambda, alpha and the recency half-life are the knobs. forward() returns
    positions into the candidate list. The config passed in is never modified: overrides apply to
    a copy (self.config).
    """

    def __init__(self, config: CalibrationConfig | None = None, **overrides) -> None:
        super().__init__()
        known = {f.name for f in fields(CalibrationConfig)}
        for name in overrides:
            if name not in known:
                raise TypeError(f"unknown CalibrationConfig field {name!r}")
        config = replace(config or CalibrationConfig(), **overrides)  # a copy: the caller's stays
        _check_knobs(config.lam, config.alpha)
        _check_int("max_length", config.max_length, 1)
        if config.half_life is not None and not 0 < config.half_life < math.inf:
            raise ValueError(f"half_life must be > 0 items (or None), got {config.half_life}")
        self.config = config

    def target(self, history_categories: torch.Tensor,
               history_weights: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, G) q(g|i) of the history (zero rows = padding) -> (B, G) p(g|u), Eq. (1)."""
        if history_categories.dim() != 3:
            raise ValueError(
                f"history_categories must be (B, L, G), got {tuple(history_categories.shape)}"
            )
        _check_finite(history_categories, "history_categories", "finite q(g|i) (pad with zeros)")
        present = history_categories.abs().sum(-1) > 0  # (B, L)
        _check_distributions(history_categories, present, "history_categories", "history item")
        if history_weights is None:
            history_weights = recency_weights(present, self.config.half_life)
        elif history_weights.shape != present.shape:
            raise ValueError(
                f"history_weights must be (B, L) = {tuple(present.shape)}, got "
                f"{tuple(history_weights.shape)}"
            )
        else:
            _check_finite(history_weights, "history_weights", "finite weights >= 0")
            if bool((history_weights < 0).any()):
                raise ValueError("history_weights: a weight is negative; expected weights >= 0")
        weights = history_weights.to(history_categories.dtype)  # (B, L)
        return history_distribution(history_categories, weights)

    def forward(
        self,
        *,
        scores: torch.Tensor,
        item_categories: torch.Tensor,
        history_categories: torch.Tensor,
        history_weights: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            scores: (B, N) float relevance s(i) (put it on a fixed scale, e.g. [0, 1] per list).
            item_categories: (B, N, G) float q(g|i) of each candidate (`category_distribution`).
            history_categories: (B, L, G) float q(g|i) of the history, oldest first; zero rows =
                padding.
            history_weights: (B, L) w_{u,i} of Eq. (1); default: recency weights of the config.
            valid: (B, N) bool, False = padded candidate (never picked; its values must be finite).
        Returns:
            (B, k) int64 positions into the candidate list, -1 when a list runs out of candidates
            (a list with fewer than k valid candidates ends with -1; N < k is refused).
        """
        if (scores.dim() != 2 or item_categories.dim() != 3
                or item_categories.shape[:2] != scores.shape):
            raise ValueError(
                f"expected scores (B, N) and item_categories (B, N, G), got {tuple(scores.shape)} "
                f"and {tuple(item_categories.shape)}"
            )
        if history_categories.dim() != 3 or history_categories.shape[0] != scores.shape[0] \
                or history_categories.shape[2] != item_categories.shape[2]:
            raise ValueError(
                f"history_categories must be (B, L, G) = ({scores.shape[0]}, L, "
                f"{item_categories.shape[2]}), got {tuple(history_categories.shape)}"
            )
        _check_finite(scores, "scores", _FINITE_SCORES)
        cfg = self.config
        p = self.target(history_categories, history_weights)  # (B, G) Eq. (1)
        return calibrated_greedy(
            relevance=scores,
            item_categories=item_categories,
            target=p,
            lam=cfg.lam,
            alpha=cfg.alpha,
            max_length=cfg.max_length,
            valid=valid,
        )

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `CalibratedReranker.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> CalibratedReranker:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, CalibrationConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
