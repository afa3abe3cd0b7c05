"""Constrained re-ranking: every prefix of the list keeps each group between a floor and a ceiling.

Paper: Sahin Cem Geyik, Stuart Ambler, Krishnaram Kenthapadi. "Fairness-Aware Ranking in Search &
Recommendation Systems with Application to LinkedIn Talent Search". KDD 2019.
Link: https://arxiv.org/abs/1905.01989
Official code: none (the paper gives the algorithms as pseudocode, Algorithm 1).

Usage::

    import torch
    from model import ConstrainedReranker, ExposureReranker
    scores = torch.rand(2, 30)  # (B, N) ranker scores
    groups = torch.randint(0, 2, (2, 30))  # (B, N) group id per candidate: 0 = head, 1 = long tail
    shares = torch.tensor([0.7, 0.3])  # (G,) target proportions p (or (B, G), one row per list)
    out = ConstrainedReranker(algorithm="det_greedy", max_length=10)(
        scores=scores, groups=groups, proportions=shares)
    print(out.positions[0].tolist())  # (B, 10) positions into each candidate list
    print(out.feasible.tolist(), out.satisfied.tolist())  # (B,) could it / did it meet the floors
    ConstrainedReranker(max_length=10).save("m.pt")  # its config (no weights)
    reranker = ConstrainedReranker.load("m.pt")  # the same knobs, from this file alone
    exposure = ExposureReranker(max_length=10)  # the long tail gets >= 30% of the exposure
    fit = exposure.fit(scores=scores, groups=groups, min_share=torch.tensor([0.0, 0.3]))
    positions = exposure(scores=scores, groups=groups)  # new lists: s + bonus of the group

This file stands alone: it needs only torch. Copy it into your project as is.
Two model files in one project: every file of this repo is called model.py, so copy each under its
own name (sasrec_model.py, constrained_model.py) and import it as usual.

What it does (the note: Idea, Maths): each candidate belongs to one group a_i (gender in the
paper; in a shop: new / long-tail items, a brand, a category). Given target proportions p_i, the
re-ranked list must keep, in EVERY prefix of length k (positions 1..k), each group's count between
    floor(p_i k)  (minimum representation)  and  ceil(p_i k)  (maximum representation).
Equation numbers are the note's (the paper states the constraints in words and gives Algorithm 1):

    Eq. (1)  count_i(k) >= floor(p_i k)                  for all k <= k_max, all groups i
    Eq. (2)  count_i(k) <= ceil(p_i k)                   for all k <= k_max, all groups i
    Alg. 1, one position k at a time (k = 1 .. k_max), s_i = best remaining score of group i:
        belowMin = {i : count_i < floor(p_i k)}
        belowMax = {i : floor(p_i k) <= count_i < ceil(p_i k)}
        if belowMin is not empty: take the group of belowMin with the highest s_i
        else DetGreedy:  the group of belowMax with the highest s_i
             DetCons:    the group of belowMax with the lowest ceil(p_i k) / p_i
             DetRelaxed: among the groups of belowMax with the lowest ceil(ceil(p_i k) / p_i),
                         the one with the highest s_i
        and place that group's best remaining candidate at position k.
ceil(p_i k) / p_i is the length at which group i would fall below its floor if it got nothing now:
DetCons serves the most urgent group first; DetRelaxed rounds that length up, so that groups
falling due at the same position compete on score.

Exposure over users (amortised; the exposure model of Singh & Joachims, KDD 2018): a per-list quota
binds every list; a provider often needs only its share of the attention across all users.
    Eq. (3)  v_r = 1 / log2(1 + r)                       exposure of rank r (DCG's discount)
    Eq. (4)  E_i(b) = sum_r v_r [a(rank r of list b) = i] / sum_r v_r     group i's share in list b
    Eq. (5)  mean over lists b of E_i(b) >= m_i           for every group i (m_i >= 0, sum <= 1)
    Eq. (6)  rank list b by s_j + mu_{a_j}, mu_i >= 0     one score bonus per group
Eq. (6) maximises the Lagrangian of "position-weighted relevance subject to Eq. (5)" for any mu
(rearrangement inequality); `ExposureReranker.fit` finds the smallest mu meeting Eq. (5) on a batch
of lists by bisection (a group's mean share only grows with its own bonus), and `forward` applies
it to new lists: Eq. (5) then holds in expectation over users, not per list.

Notation (shapes):
    B: number of lists in the batch      N: candidates per list
    G: number of groups (ids 0..G-1)      k: a prefix length; k_max = max_length

Vectorised: a loop over the k_max positions only; each step works on (B, N, G) masks for all
lists, candidates and groups at once (the best remaining candidate of every group in every list).

Feasibility (the method says when no list can meet the floors): `forward` returns
Reranked(positions, feasible, satisfied), each (B,) flag per list:
    feasible[b]   a list of k_max valid candidates meeting every prefix floor, Eq. (1), exists.
                  Exactly when every group has at least floor(p_i k_max) valid candidates and the
                  list has at least k_max valid candidates (the floors rise one at a time and
                  sum to at most k when sum(p) <= 1, so serving them earliest-deadline-first
                  never runs out of slots; a test checks this against brute force).
    satisfied[b]  the returned list meets every prefix floor, Eq. (1). Where a list is infeasible
                  the algorithm still returns its best effort (the floors it can meet, highest
                  scores first) and satisfied is False. Ceilings, Eq. (2): `constraint_check`.
With strict=True in the config, an infeasible list raises a ValueError naming it instead.

NOTE (deviations, each also listed in the note):
    * Batched over lists: all B lists step in lock-step on (B, N) tensors.
    * The paper assumes every group has enough candidates; here a group that runs out drops out of
      belowMin / belowMax (the floor it cannot meet is reported through `satisfied`).
    * When belowMin and belowMax are both empty (possible only when sum(p) < 1: the share
      1 - sum(p) belongs to no group), or hold no group with candidates left, the position takes
      the best remaining candidate of any group, as the relevance order would.
    * Ties: DetCons breaks ties of ceil(p_i k) / p_i by score (the paper does not say).
    * floor / ceil are taken of p_i k -+ 1e-5, so p = 0.7 gives ceil(0.7 * 10) = 7, not the 8 of
      float round-off (0.7 * 10 = 7.000000000000001; 0.3 in float32 is 0.30000001).
    * No training objective: the paper re-ranks given scores, so there is no `loss(...)`.

Input contract (every case is a one-line ValueError, never a silent wrong list):
    * scores must be finite everywhere, padded candidates included; to exclude a candidate pass
      valid=False (not a score of -inf).
    * group ids of valid candidates must lie in 0..G-1, G = proportions.shape[-1].
    * proportions must be finite, >= 0, and sum to at most 1 per list.
    * max_length must be in 1..N; for a list with fewer candidates, pad it to max_length with
      valid=False: the slots it cannot fill come back as -1 and the list is infeasible.
    * N = 0 candidates is refused; a batch of B = 0 lists gives an empty (0, k) result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
from torch import nn

ALGORITHMS = ("det_greedy", "det_cons", "det_relaxed")


@dataclass
class ConstrainedConfig:
    algorithm: str = "det_greedy"  # the paper's A/B-tested choice (LinkedIn Recruiter)
    max_length: int = 10  # k_max: length of the re-ranked list (we report @10)
    strict: bool = False  # True: an infeasible list raises; False: flag it (Reranked.feasible)


class Reranked(NamedTuple):
    """What `ConstrainedReranker.forward` returns (see the module docstring, Feasibility)."""

    positions: torch.Tensor  # (B, k_max) int64 positions into the candidate list; -1 = no item
    feasible: torch.Tensor  # (B,) bool: a list meeting every prefix floor exists
    satisfied: torch.Tensor  # (B,) bool: the returned list meets every prefix floor


_EPS = 1e-5  # p k within 1e-5 of an integer counts as that integer (float32 round-off of p)
_SUM_TOL = 1e-6  # sum(p) may exceed 1 by this much (round-off of shares written as decimals)
_FINITE_SCORES = "finite relevance scores (exclude a candidate with valid=False, not -inf)"


def _check_int(name: str, value, low: int) -> None:
    """An integer knob: value >= low (bool and float are refused: 10.0 is not a length)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be >= {low} (an integer), got {value!r}")


def _check_algorithm(algorithm) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def check_proportions(proportions: torch.Tensor) -> None:
    """p: (G,) or (B, G), finite, >= 0, each row summing to at most 1."""
    if proportions.dim() not in (1, 2) or proportions.shape[-1] == 0:
        raise ValueError(f"proportions must be (G,) or (B, G) with G >= 1 groups, got "
                         f"{tuple(proportions.shape)}")
    p = proportions.reshape(-1, proportions.shape[-1]).double()
    for bad, problem in ((~torch.isfinite(p).all(-1), "is not finite"),
                         ((p < 0).any(-1), "has a negative share"),
                         (p.sum(-1) > 1 + _SUM_TOL, "sums to more than 1")):
        if bool(bad.any()):
            b = int(bad.nonzero()[0])
            raise ValueError(
                f"proportions: row {b} {problem} ({[round(float(v), 6) for v in p[b]]}); "
                f"expected target shares p_i >= 0 with sum(p) <= 1 (one per group)"
            )


def prefix_bounds(proportions: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1)-(2): floor(p_i k) and ceil(p_i k) for every prefix length k = 1..k_max.

    Args:
        proportions: (B, G) p, float.
        k_max: the longest prefix.
    Returns:
        (floors, ceils), each (B, k_max, G) int64.
    """
    k = torch.arange(1, k_max + 1, dtype=torch.float64, device=proportions.device)  # (k_max,)
    pk = proportions.double().unsqueeze(1) * k[None, :, None]  # (B, 1, G) * (1, k_max, 1)
    return (pk + _EPS).floor().long(), (pk - _EPS).ceil().long()


def prefix_counts(group_of_pick: torch.Tensor, n_groups: int) -> torch.Tensor:
    """count_i(k): how many of the first k picks belong to group i.

    Args:
        group_of_pick: (B, k_max) int64 group of each picked item, -1 = no item.
        n_groups: G.
    Returns:
        (B, k_max, G) int64.
    """
    hot = torch.zeros(*group_of_pick.shape, n_groups + 1, dtype=torch.long,
                      device=group_of_pick.device)  # (B, k_max, G + 1); column G = "no item"
    hot.scatter_(-1, torch.where(group_of_pick >= 0, group_of_pick, n_groups).unsqueeze(-1), 1)
    return hot[..., :n_groups].cumsum(1)  # (B, k_max, G)


def constraint_check(groups: torch.Tensor, positions: torch.Tensor,
                     proportions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Does each returned list keep Eq. (1) and Eq. (2) in every prefix?

    Args:
        groups: (B, N) int64 group id per candidate.
        positions: (B, k_max) int64 positions into the candidates, -1 = no item.
        proportions: (G,) or (B, G) p.
    Returns:
        (min_ok, max_ok, infeasible_index): (B,) bool, (B,) bool, and (B,) int64 the number of
        prefixes k that break a floor or a ceiling of some group (the paper's InfeasibleIndex).
    """
    B, k_max = positions.shape
    p = proportions.expand(B, -1) if proportions.dim() == 1 else proportions  # (B, G)
    picked = groups.gather(1, positions.clamp_min(0))  # (B, k_max)
    counts = prefix_counts(torch.where(positions >= 0, picked, -1), p.shape[1])  # (B, k_max, G)
    floors, ceils = prefix_bounds(p, k_max)  # (B, k_max, G) each
    below, above = (counts < floors).any(-1), (counts > ceils).any(-1)  # (B, k_max)
    return ~below.any(1), ~above.any(1), (below | above).sum(1)


def min_feasible(groups: torch.Tensor, proportions: torch.Tensor, valid: torch.Tensor,
                 k_max: int) -> torch.Tensor:
    """(B,) bool: can some list of k_max valid candidates meet every prefix floor, Eq. (1)?

    Yes exactly when each group i has at least floor(p_i k_max) valid candidates and there are
    k_max valid candidates in all (the module docstring, Feasibility, says why)."""
    B, N = groups.shape
    G = proportions.shape[-1]
    hot = torch.zeros(B, G + 1, dtype=torch.long, device=groups.device)
    ids = torch.where(valid, groups, G)  # (B, N); padding counts in column G
    hot.scatter_add_(1, ids, torch.ones_like(ids))  # (B, G + 1) valid candidates per group
    floors, _ = prefix_bounds(proportions, k_max)  # (B, k_max, G)
    return (hot[:, :G] >= floors[:, -1]).all(1) & (valid.sum(1) >= k_max)


def fair_greedy(
    *,
    scores: torch.Tensor,
    groups: torch.Tensor,
    proportions: torch.Tensor,
    algorithm: str,
    max_length: int,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Algorithm 1 (DetGreedy / DetCons / DetRelaxed), batched.

    Args:
        scores: (B, N) finite float relevance; N >= 1, B >= 0 (B = 0: empty result).
        groups: (B, N) int64 group id in 0..G-1 (checked on valid candidates).
        proportions: (B, G) p, each row >= 0 summing to at most 1.
        algorithm: "det_greedy", "det_cons" or "det_relaxed".
        max_length: k_max in 1..N.
        valid: (B, N) bool, False for padded candidates (never picked).
    Returns:
        (B, k_max) int64 positions into the candidate list, in rank order; -1 when a list runs
        out of valid candidates.
    """
    _check_algorithm(algorithm)
    B, N = scores.shape
    G = proportions.shape[1]
    dev = scores.device
    available = torch.ones(B, N, dtype=torch.bool, device=dev) if valid is None else valid.clone()
    member = torch.nn.functional.one_hot(groups.clamp(0, G - 1), G).bool()  # (B, N, G)
    scores = scores.double()
    p = proportions.double()  # (B, G)
    floors, ceils = prefix_bounds(p, max_length)  # (B, k_max, G) each
    counts = torch.zeros(B, G, dtype=torch.long, device=dev)
    rows = torch.arange(B, device=dev)
    selected = torch.full((B, max_length), -1, dtype=torch.long, device=dev)
    for t in range(max_length):  # position k = t + 1
        # s_i: the best remaining score of each group, and where it sits  (B, N, G) -> (B, G)
        masked = scores.unsqueeze(-1).masked_fill(~(member & available.unsqueeze(-1)), -math.inf)
        best, where = masked.max(1)  # (B, G)
        has = best > -math.inf  # (B, G) the group still has a candidate
        below_min = (counts < floors[:, t]) & has  # (B, G)
        below_max = (counts >= floors[:, t]) & (counts < ceils[:, t]) & has  # (B, G)
        pick_max = best.masked_fill(~below_max, -math.inf)  # DetGreedy: best score of belowMax
        if algorithm != "det_greedy":
            due = ceils[:, t].double() / p.clamp_min(_EPS)  # (B, G) ceil(p_i k) / p_i
            if algorithm == "det_relaxed":
                due = (due - _EPS).ceil()  # ceil(ceil(p_i k) / p_i)
            due = due.masked_fill(~below_max, math.inf)
            first = below_max & (due <= due.min(1, keepdim=True).values + _EPS)  # (B, G)
            pick_max = best.masked_fill(~first, -math.inf)  # highest score among the most due
        pick_min = best.masked_fill(~below_min, -math.inf)  # belowMin first, best score first
        pick_any = best.masked_fill(~has, -math.inf)  # fallback: best remaining of any group
        choice = torch.where(below_min.any(1, keepdim=True), pick_min,
                             torch.where(below_max.any(1, keepdim=True), pick_max, pick_any))
        g = choice.argmax(1)  # (B,) the group placed at position k
        ok = has[rows, g]  # False when the list has no valid candidate left
        j = where[rows, g]  # (B,) its best remaining candidate
        selected[:, t] = torch.where(ok, j, -1)
        available[rows, j] &= ~ok
        counts[rows, g] += ok.long()
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






class ConstrainedReranker(nn.Module):
    """Re-rank B candidate lists so that every prefix keeps each group's share: Algorithm 1.

    No parameters: the algorithm, the list length and strict are the knobs; the target shares p
    come with each call (they may differ per list). forward() returns Reranked(positions,
    feasible, satisfied). The config passed in is never modified: overrides apply to a copy.
    """

    def __init__(self, config: ConstrainedConfig | None = None, **overrides) -> None:
        super().__init__()
        known = {f.name for f in fields(ConstrainedConfig)}
        for name in overrides:
            if name not in known:
                raise TypeError(f"unknown ConstrainedConfig field {name!r}")
        config = replace(config or ConstrainedConfig(), **overrides)  # a copy: the caller's stays
        _check_algorithm(config.algorithm)
        _check_int("max_length", config.max_length, 1)
        if not isinstance(config.strict, bool):
            raise ValueError(f"strict must be True or False, got {config.strict!r}")
        self.config = config

    def forward(
        self,
        *,
        scores: torch.Tensor,
        groups: torch.Tensor,
        proportions: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> Reranked:
        """Args:
            scores: (B, N) float relevance (higher = better).
            groups: (B, N) int64 group id of each candidate, in 0..G-1.
            proportions: (G,) or (B, G) target shares p, >= 0, summing to at most 1.
            valid: (B, N) bool, False = padded candidate (never picked; its score must be finite).
        Returns:
            Reranked(positions (B, k_max) int64 with -1 where a list runs out, feasible (B,) bool,
            satisfied (B,) bool); see the module docstring.
        """
        if scores.dim() != 2 or groups.shape != scores.shape:
            raise ValueError(f"expected scores (B, N) and groups (B, N), got "
                             f"{tuple(scores.shape)} and {tuple(groups.shape)}")
        B, N = scores.shape
        if N == 0:
            raise ValueError("the candidate lists are empty (N = 0); expected at least 1 candidate")
        k_max = self.config.max_length
        if k_max > N:
            raise ValueError(
                f"max_length must be in 1..{N} (the list length N), got {k_max}: pass at least "
                f"max_length candidates (pad with valid=False; unfilled slots give -1)"
            )
        if valid is not None and (valid.shape != (B, N) or valid.dtype != torch.bool):
            raise ValueError(f"valid must be (B, N) = {(B, N)} bool, got {tuple(valid.shape)} "
                             f"{valid.dtype}")
        if groups.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"groups must be an integer tensor (B, N), got {groups.dtype}")
        if not bool(torch.isfinite(scores).all()):
            where = [int(i) for i in (~torch.isfinite(scores)).nonzero()[0]]
            raise ValueError(f"scores: list {where[0]} is not finite ({scores[tuple(where)].item()}"
                             f" at scores{where}); expected {_FINITE_SCORES}")
        check_proportions(proportions)
        if proportions.dim() == 2 and proportions.shape[0] != B:
            raise ValueError(f"proportions must be (G,) or (B, G) = ({B}, G), got "
                             f"{tuple(proportions.shape)}")
        G = proportions.shape[-1]
        valid = torch.ones(B, N, dtype=torch.bool, device=scores.device) if valid is None else valid
        bad = ((groups < 0) | (groups >= G)) & valid
        if bool(bad.any()):
            where = [int(i) for i in bad.nonzero()[0]]
            raise ValueError(f"groups: id {int(groups[tuple(where)])} at {where} is an unknown "
                             f"group; expected ids in 0..{G - 1} (one per entry of proportions)")
        p = proportions.to(scores.device).double().expand(B, G)  # (B, G)
        groups = groups.long()
        feasible = min_feasible(groups, p, valid, k_max)  # (B,)
        if self.config.strict and not bool(feasible.all()):
            b = int((~feasible).nonzero()[0])
            raise ValueError(
                f"list {b} cannot meet its floors: {self._shortfall(groups[b], p[b], valid[b])}; "
                f"expected each group i to have at least floor(p_i * {k_max}) valid candidates "
                f"(strict=False returns a best-effort list and feasible=False instead)"
            )
        positions = fair_greedy(scores=scores, groups=groups, proportions=p,
                                algorithm=self.config.algorithm, max_length=k_max, valid=valid)
        min_ok, _, _ = constraint_check(groups, positions, p)
        return Reranked(positions, feasible, min_ok & (positions >= 0).all(1))

    def _shortfall(self, groups: torch.Tensor, p: torch.Tensor, valid: torch.Tensor) -> str:
        """Which group of one list lacks candidates, in words."""
        k_max = self.config.max_length
        need = [math.floor(float(v) * k_max + _EPS) for v in p]
        have = [int(((groups == i) & valid).sum()) for i in range(len(need))]
        short = [f"group {i} needs {n}, has {h}" for i, (n, h) in enumerate(zip(need, have))
                 if h < n]
        total = int(valid.sum())
        return "; ".join(short + ([f"{total} valid candidates < {k_max}"] if total < k_max else []))

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `ConstrainedReranker.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> ConstrainedReranker:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, ConstrainedConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)


# --------------------------------------------------------------------------------------------------
# Exposure over users (amortised): each group's mean share of the position-weighted exposure
# --------------------------------------------------------------------------------------------------


def exposure_weights(k: int, device=None) -> torch.Tensor:
    """Eq. (3): v_r = 1 / log2(1 + r), the exposure of rank r = 1..k (DCG's position discount).
    Returns (k,) float64."""
    r = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    return 1.0 / torch.log2(1.0 + r)


def exposure_shares(groups: torch.Tensor, positions: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Eq. (4): E_i(b) = sum_r v_r [group of rank r = i] / sum_r v_r over the filled ranks of list b.

    Args:
        groups: (B, N) int64 group id per candidate, 0..n_groups-1.
        positions: (B, k) int64 positions into the candidates, -1 = no item.
        n_groups: G.
    Returns:
        (B, G) float64, each row summing to 1 (0 for a list with no item).
    """
    B, k = positions.shape
    v = exposure_weights(k, positions.device).expand(B, k) * (positions >= 0)  # (B, k)
    picked = groups.gather(1, positions.clamp_min(0))  # (B, k)
    ids = torch.where(positions >= 0, picked, n_groups)  # empty slots go to column G
    out = torch.zeros(B, n_groups + 1, dtype=torch.float64, device=positions.device)
    out.scatter_add_(1, ids, v)  # (B, G + 1)
    return out[:, :n_groups] / v.sum(1, keepdim=True).clamp_min(1e-12)


def boosted_order(scores: torch.Tensor, groups: torch.Tensor, bonus: torch.Tensor,
                  max_length: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (6): the top max_length by s_j + mu_{a_j}, ties to the earlier candidate.

    Args:
        scores: (B, N) float relevance; groups: (B, N) int64; bonus: (G,) mu >= 0.
        valid: (B, N) bool, False = never picked.
    Returns:
        (B, max_length) int64 positions, -1 when a list runs out of valid candidates.
    """
    adj = scores.double() + bonus.double().to(scores.device)[groups.clamp(0, len(bonus) - 1)]
    if valid is not None:
        adj = adj.masked_fill(~valid, -math.inf)
    order = torch.argsort(adj, dim=1, descending=True, stable=True)[:, :max_length]  # (B, k)
    return torch.where(adj.gather(1, order) > -math.inf, order, -1)


def fit_exposure_bonus(scores: torch.Tensor, groups: torch.Tensor, min_share: torch.Tensor, *,
                       max_length: int, valid: torch.Tensor | None = None, rounds: int = 20,
                       steps: int = 40) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The smallest bonuses mu >= 0 whose boosted order meets Eq. (5) on these lists:
    mean_b E_i(b) >= m_i for every group i.

    Each group's mean share only grows with its own bonus, so each mu_i is found by bisection
    (`steps` halvings of [0, score range]) with the others fixed; the groups are swept `rounds`
    times (raising one group's bonus lowers the others' shares, so a group may need more).
    Returns (mu (G,) float64, the mean shares reached (G,), met): met is False when a minimum is
    out of reach even with its group ranked first in every list.
    """
    G = min_share.shape[-1]
    m = min_share.double().to(scores.device)
    real = scores.double() if valid is None else scores.double()[valid]
    span = float(real.max() - real.min()) + 1.0 if real.numel() else 1.0  # mu >= span: group first
    mu = torch.zeros(G, dtype=torch.float64, device=scores.device)

    def mean_share(bonus):
        return exposure_shares(groups, boosted_order(scores, groups, bonus, max_length, valid),
                               G).mean(0)

    for _ in range(rounds):
        changed = False
        for i in range(G):
            if bool(mean_share(mu)[i] >= m[i]):
                continue  # met with the bonuses as they are
            lo, hi = float(mu[i]), span
            top = mu.clone()
            top[i] = hi
            if bool(mean_share(top)[i] < m[i]):
                mu[i] = hi  # out of reach: the group first everywhere is the most it can get
                continue
            for _ in range(steps):  # invariant: share(lo) < m_i <= share(hi)
                mid = 0.5 * (lo + hi)
                mu[i] = mid
                if bool(mean_share(mu)[i] >= m[i]):
                    hi = mid
                else:
                    lo = mid
            mu[i] = hi
            changed = True
        if not changed:
            break
    shares = mean_share(mu)
    return mu, shares, bool((shares >= m - 1e-12).all())


@dataclass
class ExposureConfig:
    max_length: int = 10  # k: length of the re-ranked list
    bonus: tuple = ()  # mu per group (Eq. (6)), in the units of the scores; set by fit()
    rounds: int = 20  # sweeps over the groups when fitting


class ExposureFit(NamedTuple):
    """What `ExposureReranker.fit` returns."""

    bonus: torch.Tensor  # (G,) mu
    shares: torch.Tensor  # (G,) mean exposure share of each group on the fitted lists
    met: bool  # every minimum share reached


class ExposureReranker(nn.Module):
    """Amortised exposure: each group's exposure share, averaged over users, is at least m_i.

    fit(scores, groups, min_share) finds the per-group score bonuses mu on a batch of lists (no
    labels: scores and groups only, e.g. yesterday's requests); forward() then ranks each list by
    s_j + mu_{a_j} (Eq. (6)), one sort per list. Scores must be on the scale the bonus was fitted
    on (e.g. min-max per list). The config passed in is never modified.
    """

    def __init__(self, config: ExposureConfig | None = None, **overrides) -> None:
        super().__init__()
        known = {f.name for f in fields(ExposureConfig)}
        for name in overrides:
            if name not in known:
                raise TypeError(f"unknown ExposureConfig field {name!r}")
        config = replace(config or ExposureConfig(), **overrides)
        _check_int("max_length", config.max_length, 1)
        _check_int("rounds", config.rounds, 1)
        bonus = tuple(float(b) for b in config.bonus)
        if any(not math.isfinite(b) or b < 0 for b in bonus):
            raise ValueError(f"bonus must be finite and >= 0 per group, got {config.bonus!r}")
        self.config = replace(config, bonus=bonus)

    def _inputs(self, scores, groups, valid, n_groups: int):
        if scores.dim() != 2 or groups.shape != scores.shape:
            raise ValueError(f"expected scores (B, N) and groups (B, N), got "
                             f"{tuple(scores.shape)} and {tuple(groups.shape)}")
        B, N = scores.shape
        if N == 0:
            raise ValueError("the candidate lists are empty (N = 0); expected at least 1 candidate")
        if self.config.max_length > N:
            raise ValueError(f"max_length must be in 1..{N} (the list length N), got "
                             f"{self.config.max_length}: pad with valid=False to reach it")
        if valid is not None and (valid.shape != (B, N) or valid.dtype != torch.bool):
            raise ValueError(f"valid must be (B, N) = {(B, N)} bool, got {tuple(valid.shape)} "
                             f"{valid.dtype}")
        if not bool(torch.isfinite(scores).all()):
            where = [int(i) for i in (~torch.isfinite(scores)).nonzero()[0]]
            raise ValueError(f"scores: list {where[0]} is not finite at scores{where}; expected "
                             f"{_FINITE_SCORES}")
        if groups.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"groups must be an integer tensor (B, N), got {groups.dtype}")
        bad = (groups < 0) | (groups >= n_groups)
        if valid is not None:
            bad &= valid
        if bool(bad.any()):
            where = [int(i) for i in bad.nonzero()[0]]
            raise ValueError(f"groups: id {int(groups[tuple(where)])} at {where} is an unknown "
                             f"group; expected ids in 0..{n_groups - 1}")
        return groups.long()

    def fit(self, *, scores: torch.Tensor, groups: torch.Tensor, min_share: torch.Tensor,
            valid: torch.Tensor | None = None) -> ExposureFit:
        """Fit mu on these lists so that Eq. (5) holds on them; keeps it in self.config.bonus.

        Args:
            scores: (B, N) float; groups: (B, N) int64 in 0..G-1; min_share: (G,) m_i >= 0 with
            sum <= 1; valid: (B, N) bool.
        """
        check_proportions(min_share)
        if min_share.dim() != 1:
            raise ValueError(f"min_share must be (G,), one share per group, got "
                             f"{tuple(min_share.shape)}")
        groups = self._inputs(scores, groups, valid, min_share.shape[0])
        mu, shares, met = fit_exposure_bonus(scores, groups, min_share,
                                             max_length=self.config.max_length, valid=valid,
                                             rounds=self.config.rounds)
        self.config = replace(self.config, bonus=tuple(float(b) for b in mu))
        return ExposureFit(mu, shares, met)

    def forward(self, *, scores: torch.Tensor, groups: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, max_length) int64 positions by s_j + mu_{a_j}; -1 when a list runs out."""
        if not self.config.bonus:
            raise ValueError("no bonus: call fit(...) on a batch of lists first, or pass "
                             "bonus=(mu_0, ..., mu_{G-1}) in the config")
        bonus = torch.tensor(self.config.bonus, dtype=torch.float64)
        groups = self._inputs(scores, groups, valid, len(bonus))
        return boosted_order(scores, groups, bonus, self.config.max_length, valid)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} (the bonus lives in the config); an
        existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> ExposureReranker:
        """The re-ranker `save` wrote, bonus included, from this file alone."""
        ckpt, config = _read_checkpoint(cls, ExposureConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
