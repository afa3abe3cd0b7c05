"""MMR: Maximal Marginal Relevance re-ranking.

Paper: Jaime Carbonell, Jade Goldstein. "The Use of MMR, Diversity-Based Reranking for Reordering
Documents and Producing Summaries". SIGIR 1998.
Link: https://doi.org/10.1145/290941.291025
Official code: none (the paper gives the formula).

Usage::

    import torch
    from model import MMRReranker
    scores = torch.rand(2, 30)  # (B, N) ranker scores, already on [0, 1]
    item_vectors = torch.randn(2, 30, 8)  # (B, N, D) item features; Sim2 = their cosine
    mmr = MMRReranker(lam=0.7, max_length=10)
    positions = mmr(scores=scores, item_vectors=item_vectors)  # (B, 10) into the list
    print(positions[0].tolist())
    mmr.save("m.pt")  # its config (no weights); an existing file is kept
    mmr = MMRReranker.load("m.pt")  # the same knobs, from this file alone

This file stands alone: it needs only torch. Copy it into your project as is.

What it does (the note: Idea, Maths): build the list one slot at a time; each slot takes the
candidate with the best trade-off between its relevance and its redundancy with what is already
selected:

    Eq. (1)  MMR = argmax_{D_i in R \\ S} [ lambda * Sim1(D_i, Q)
                                          - (1 - lambda) * max_{D_j in S} Sim2(D_i, D_j) ]

R: the ranked candidate list, S: the items already selected, Sim1: relevance to the query (here:
the first-stage ranker's score), Sim2: item-item similarity (here: cosine of item feature vectors).
lambda = 1 is the relevance order; lambda = 0 is "maximal diversity".

Notation (shapes):
    B: number of lists (users) in the batch     N: candidates per list
    D: item feature dim                          k: items to select (max_length)

Vectorised: one pass per selected slot over all B lists and N candidates at once; the running
max_{j in S} Sim2(i, j) is kept as a (B, N) tensor and updated with the row of the new pick, so a
list costs O(N k) after the (B, N, N) similarity is formed (O(N^2 D)).

NOTE (deviations, each also listed in the note):
    * First slot: with S empty the max term is taken as 0, so slot 1 is the most relevant candidate
      for every lambda > 0; at lambda = 0 every candidate ties and we also take the most relevant
      one (the paper leaves the empty-set case open).
    * Relevance is the ranker's score; put it on the scale of Sim2 (e.g. min-max to [0, 1] per list)
      or lambda loses its meaning. The demo does this.
    * No training objective: MMR is a selection rule, so there is no `loss(...)`.

Input contract (every case is a one-line ValueError, never a silent wrong list):
    * scores (Sim1), item features and similarities must be finite everywhere, padded candidates
      included; a NaN or +-inf is refused, naming the list (row). To exclude a candidate pass
      valid=False (not a score of -inf).
    * max_length must be in 1..N: a tensor with fewer candidates than max_length is refused. To get
      a short list anyway, pad the candidates to max_length with valid=False: the slots the list
      cannot fill come back as -1 (the marker for "no item").
    * N = 0 candidates is refused; a batch of B = 0 lists gives an empty (0, k) result; a list
      whose candidates are all padding gives a row of -1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields, replace

import torch
from torch import nn


@dataclass
class MMRConfig:
    lam: float = 0.7  # lambda in Eq. (1): 1 = relevance only, 0 = diversity only
    max_length: int = 10  # k: length of the re-ranked list (we report @10)


_FINITE_SCORES = "finite relevance scores (exclude a candidate with valid=False, not -inf)"


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


def cosine_similarity(item_vectors: torch.Tensor) -> torch.Tensor:
    """Sim2: (B, N, D) -> (B, N, N) cosine similarity (zero vectors give 0)."""
    if item_vectors.dim() != 3:
        raise ValueError(f"item_vectors must be (B, N, D), got {tuple(item_vectors.shape)}")
    _check_finite(item_vectors, "item_vectors", "finite item features (pad with zeros)")
    f = nn.functional.normalize(item_vectors, dim=-1)  # (B, N, D)
    return f @ f.transpose(1, 2)  # (B, N, D) @ (B, D, N) -> (B, N, N)


def mmr_select(
    *,
    relevance: torch.Tensor,
    similarity: torch.Tensor,
    lam: float,
    max_length: int,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy MMR selection, Eq. (1), batched.

    Args:
        relevance: (B, N) finite float Sim1 of each candidate; N >= 1, B >= 0 (B = 0: empty result).
        similarity: (B, N, N) finite float Sim2 between candidates.
        lam: lambda in [0, 1].
        max_length: k in 1..N (a list with fewer valid candidates ends with -1); for a list shorter
            than k, pad it to k candidates with valid=False.
        valid: (B, N) bool, False for padded candidates (never selected; values must be finite).
    Returns:
        (B, k) int64 positions into the candidate list, in selection order; -1 when a list runs out.
    """
    if relevance.dim() != 2 or similarity.shape != relevance.shape + relevance.shape[-1:]:
        raise ValueError(
            f"expected relevance (B, N) and similarity (B, N, N), got {tuple(relevance.shape)} "
            f"and {tuple(similarity.shape)}"
        )
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
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
    _check_finite(similarity, "similarity", "a finite Sim2 (e.g. a cosine in [-1, 1])")
    B, N = relevance.shape
    k = min(max_length, N)
    rows = torch.arange(B, device=relevance.device)
    available = torch.ones(B, N, dtype=torch.bool, device=relevance.device)
    if valid is not None:
        available &= valid
    max_sim = relevance.new_zeros(B, N)  # max_{j in S} Sim2(i, j); 0 while S is empty (NOTE)
    selected = torch.full((B, k), -1, dtype=torch.long, device=relevance.device)
    for t in range(k):
        if t == 0:
            objective = relevance.clone()  # empty S: slot 1 is the most relevant (NOTE)
        else:
            objective = lam * relevance - (1.0 - lam) * max_sim  # Eq. (1)   (B, N)
        objective = objective.masked_fill(~available, -math.inf)
        j = objective.argmax(dim=1)  # (B,)
        ok = available[rows, j]  # False when a list has no candidate left
        selected[:, t] = torch.where(ok, j, -1)
        available[rows, j] = False
        new_row = similarity[rows, j]  # (B, N) Sim2(i, new pick)
        max_sim = new_row if t == 0 else torch.maximum(max_sim, new_row)
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


class MMRReranker(nn.Module):
    """Re-rank B candidate lists with MMR (Eq. (1)); Sim2 = cosine of item feature vectors.

    No parameters: lambda is the only knob. forward() returns positions into the candidate list.
    The config passed in is never modified: overrides apply to a copy (self.config).
    """

    def __init__(self, config: MMRConfig | None = None, **overrides) -> None:
        super().__init__()
        known = {f.name for f in fields(MMRConfig)}
        for name in overrides:
            if name not in known:
                raise TypeError(f"unknown MMRConfig field {name!r}")
        config = replace(config or MMRConfig(), **overrides)  # a copy: the caller's stays as it is
        if not 0.0 <= config.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {config.lam}")
        _check_int("max_length", config.max_length, 1)
        self.config = config

    def forward(
        self,
        *,
        scores: torch.Tensor,
        item_vectors: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            scores: (B, N) float relevance Sim1 (on the scale of cosine similarity, e.g. [0, 1]).
            item_vectors: (B, N, D) float item features for Sim2.
            valid: (B, N) bool, False = padded candidate (never picked; its values must be finite).
        Returns:
            (B, k) int64 positions into the candidate list, -1 when a list runs out of candidates
            (a list with fewer than k valid candidates ends with -1; N < k is refused).
        """
        if scores.dim() != 2 or item_vectors.dim() != 3 or item_vectors.shape[:2] != scores.shape:
            raise ValueError(
                f"expected scores (B, N) and item_vectors (B, N, D), got {tuple(scores.shape)} and "
                f"{tuple(item_vectors.shape)}"
            )
        _check_finite(scores, "scores", _FINITE_SCORES)
        sim = cosine_similarity(item_vectors.to(scores.dtype))  # (B, N, N)
        return mmr_select(
            relevance=scores,
            similarity=sim,
            lam=self.config.lam,
            max_length=self.config.max_length,
            valid=valid,
        )

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `MMRReranker.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> MMRReranker:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, MMRConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
