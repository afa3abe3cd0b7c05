"""DPP re-ranking with fast greedy MAP inference.

Paper: Laming Chen, Guoxin Zhang, Hanning Zhou. "Fast Greedy MAP Inference for Determinantal Point
Process to Improve Recommendation Diversity". NeurIPS 2018.
Link: https://arxiv.org/abs/1709.05135
Official code (NumPy, one list at a time): https://github.com/laming-chen/fast-map-dpp

Usage::

    import torch
    from model import DPPReranker, build_kernel, greedy_map, similarity_matrix
    scores = torch.rand(2, 30)  # (B, N) relevance r on [0, 1]
    item_vectors = torch.randn(2, 30, 8)  # (B, N, D) features f; S = their cosine
    positions = DPPReranker(theta=0.7, max_length=10)(scores=scores, item_vectors=item_vectors)
    S = similarity_matrix(item_vectors.double(), ridge=1e-3)  # (B, N, N), the default ridge
    result = greedy_map(build_kernel(scores=scores, similarity=S, theta=0.7), max_length=10)
    assert torch.equal(result.selected, positions)  # same picks, computed in log space
    DPPReranker(theta=0.7, max_length=10).save("m.pt")  # its config (no weights)
    reranker = DPPReranker.load("m.pt")  # the same knobs, dtype included

This file stands alone: it needs only torch. Copy it into your project as is.
Two model files in one project: every file of this repo is called model.py, so copy each under its
own name (sasrec_model.py, dpp_model.py) and import it as usual. Loading one with importlib instead
needs the module registered in sys.modules before it runs (its @dataclass looks the module up):

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

What it does (the note: Idea, Maths): given a candidate list with relevance scores r and item
feature vectors f, build the kernel L = Diag(exp(alpha r)) S Diag(exp(alpha r)) with S_ij = <f_i,
f_j>, then pick items greedily so that log det(L_Y) grows the most at each step. The greedy step
needs no determinant: it keeps an incremental Cholesky factor, so a list of k items out of N costs
O(N k^2) in total (`greedy_map`), instead of k rounds of N log-determinants (`naive_greedy_map`, the
reference). The sliding-window variant (`greedy_map`, window_size=w) only asks each item to differ
from the w - 1 items right before it, which is what a user scrolling a long feed perceives.

Notation (shapes):
    B: number of lists (users) in the batch     N: candidates per list
    D: item feature dim                          k: items to select (max_length)
    w: window size (sliding-window variant)      t: step of the greedy loop (0-based)

Equation numbers are the paper's (the note uses the same):
    Eq. (1)  j = argmax_i log det(L_{Y+i}) - log det(L_Y)            greedy MAP step
    Eq. (2)-(4)  L_Y = V V^T,  V c_i^T = L_{Y,i},  d_i^2 = L_ii - ||c_i||^2   Cholesky of Y + i
    Eq. (5)-(6)  det(L_{Y+i}) = det(L_Y) d_i^2  =>  j = argmax_i log d_i^2
    Eq. (8)-(9)  e_i = (L_ji - <c_j, c_i>) / d_j,  c_i <- [c_i, e_i],  d_i^2 <- d_i^2 - e_i^2
    Eq. (10) the same step with Y replaced by the last w - 1 picks (sliding window, Alg. 2)
    Eq. (11) L = Diag(r) S Diag(r)                                    relevance x similarity kernel
    Eq. (12) log det(L_Y) = sum_{u in Y} log r_u^2 + log det(S_Y)
    Eq. (13)-(14)  theta * sum r_u + (1 - theta) log det(S_Y)
             ->  L' = Diag(e^{alpha r}) S Diag(e^{alpha r}),  alpha = theta / (2 (1 - theta))
    Stopping rule (Alg. 1): stop when the best d_j^2 < min_gain; min_gain = 1 stops as soon as
    adding an item would lower det(L_Y) (the unconstrained MAP); a tiny min_gain guards round-off.

NOTE (deviations, each also listed in the note):
    * Batched over lists: all B lists step in lock-step on (B, N) tensors; a list that meets the
      stopping rule earlier is padded with -1 in `selected`.
    * `similarity_matrix` adds an optional ridge  S = (F F^T + eps I) / (1 + eps). With
      D-dimensional features S has rank <= D, so the greedy stops after D items; the ridge keeps
      every item selectable (the paper's features have D >> k). eps = 0 is the paper's kernel.
    * `DPPReranker` never forms exp(alpha r): it runs the greedy on S and adds
      log q_i^2 = 2 alpha r_i to log d_i^2 (identical picks, since
      det(L_{Y+i}) / det(L_Y) = q_i^2 d_i^2(S)); exp(alpha r) overflows float64 once
      alpha r > 354, i.e. for theta close to 1. Float64 by default.
    * No training objective: the paper is an inference algorithm, so there is no `loss(...)`.

Input contract (every case is a one-line ValueError, never a silent wrong list):
    * scores, item features and kernels must be finite everywhere, padded candidates included; a
      NaN or +-inf is refused, naming the list (row). To exclude a candidate pass valid=False (not
      a score of -inf).
    * max_length must be in 1..N: a tensor with fewer candidates than max_length is refused. To get
      a short list anyway, pad the candidates to max_length with valid=False: the slots the list
      cannot fill come back as -1 (the marker `selected` already uses after a stop).
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
class DPPConfig:
    theta: float = 0.7  # relevance vs diversity, Eq. (13); tune it on a trade-off curve
    max_length: int = 10  # k: length of the re-ranked list (we report @10)
    window_size: int | None = None  # w: None = plain greedy (Alg. 1); set w for long feeds (Alg. 2)
    min_gain: float = 1e-10  # stop when best d_j^2 < min_gain; 1.0 = the paper's unconstrained rule
    ridge: float = 1e-3  # eps in S = (F F^T + eps I)/(1+eps); keeps low-rank features selectable
    dtype: torch.dtype = torch.float64  # exp(alpha r) needs the range


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


def _check_int(name: str, value, low: int, extra: str = "") -> None:
    """An integer knob: value >= low (bool and float are refused: 10.0 is not a length)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be >= {low}{extra} (an integer), got {value!r}")


def relevance_weight(theta: float) -> float:
    """Eq. (14): alpha = theta / (2 (1 - theta)), the exponent put on the relevance scores."""
    if not 0.0 <= theta < 1.0:
        raise ValueError(f"theta must be in [0, 1), got {theta}")
    return theta / (2.0 * (1.0 - theta))


def similarity_matrix(item_vectors: torch.Tensor, *, ridge: float = 0.0) -> torch.Tensor:
    """S_ij = <f_i, f_j> with unit-norm f, plus an optional ridge (NOTE in the module docstring).

    Args:
        item_vectors: (B, N, D) float, any scale; zero rows (padding) get S_ii = ridge/(1+ridge).
        ridge: eps >= 0.
    Returns:
        S: (B, N, N), positive semi-definite, S_ii = 1 for non-zero rows.
    """
    if item_vectors.dim() != 3:
        raise ValueError(f"item_vectors must be (B, N, D), got {tuple(item_vectors.shape)}")
    if not 0 <= ridge < math.inf:
        raise ValueError(f"ridge must be a finite eps >= 0, got {ridge}")
    _check_finite(item_vectors, "item_vectors", "finite item features (pad with zeros)")
    f = nn.functional.normalize(item_vectors, dim=-1)  # (B, N, D)
    sim = f @ f.transpose(1, 2)  # (B, N, D) @ (B, D, N) -> (B, N, N)
    if ridge > 0:
        eye = torch.eye(sim.shape[-1], dtype=sim.dtype, device=sim.device)
        sim = (sim + ridge * eye) / (1.0 + ridge)
    return sim


def build_kernel(*, scores: torch.Tensor, similarity: torch.Tensor, theta: float) -> torch.Tensor:
    """Eq. (11)+(14): L = Diag(exp(alpha r)) S Diag(exp(alpha r)).

    Args:
        scores: (B, N) relevance r from the ranker (put them on a common scale, e.g. [0, 1]).
        similarity: (B, N, N) PSD similarity S.
        theta: relevance-diversity trade-off in [0, 1); 0 = diversity only.
    Returns:
        L: (B, N, N) in similarity's dtype.
    """
    if scores.shape != similarity.shape[:2] or similarity.shape[1] != similarity.shape[2]:
        raise ValueError(
            f"scores (B, N) and similarity (B, N, N) disagree: {tuple(scores.shape)} vs "
            f"{tuple(similarity.shape)}"
        )
    _check_finite(scores, "scores", _FINITE_SCORES)
    alpha = relevance_weight(theta)
    quality = torch.exp(alpha * scores.to(similarity.dtype))  # (B, N)
    return quality.unsqueeze(2) * similarity * quality.unsqueeze(1)  # (B, N, N)


@dataclass
class GreedyResult:
    selected: torch.Tensor  # (B, k) int64 candidate positions, -1 after the list stopped
    log_gains: torch.Tensor  # (B, k) log det(L_{Y+j}) - log det(L_Y) of each pick; -inf after stop
    cholesky: (
        torch.Tensor | None
    )  # (B, k, k) V with K_Y = V V^T for the kernel K passed in (Alg. 1)


def greedy_map(
    kernel: torch.Tensor,
    *,
    max_length: int,
    min_gain: float = 1e-10,
    valid: torch.Tensor | None = None,
    window_size: int | None = None,
    log_quality: torch.Tensor | None = None,
) -> GreedyResult:
    """Fast greedy MAP (paper Alg. 1), or its sliding-window form (Alg. 2) when window_size is set.

    Cost: O(N k^2) per list for Alg. 1 (each step updates N vectors c_i of length <= k, Eq. (9));
    O(N k w) for Alg. 2.

    With `log_quality` = log q^2 the kernel passed in is S and the DPP is L = Diag(q) S Diag(q)
    (Eq. (11)). Since det(L_{Y+i}) / det(L_Y) = q_i^2 d_i^2(S), the step of Eq. (6) becomes
    argmax_i log q_i^2 + log d_i^2(S): the same picks as running on L, without ever forming
    exp(alpha r), which overflows float64 once alpha r > 354 (theta close to 1).

    Args:
        kernel: (B, N, N) finite PSD kernel (L, or S when log_quality is given); N >= 1, B >= 0
            (B = 0 gives empty results).
        max_length: k in 1..N; for a shorter list, pad it with valid=False (its slots give -1).
        min_gain: stopping rule, > 0: stop when det(L_{Y+j}) / det(L_Y) < min_gain.
        valid: (B, N) bool, False for padded candidates (never selected). Default: all valid.
        window_size: w >= 2 for Alg. 2; None for Alg. 1.
        log_quality: (B, N) log q_i^2 = 2 alpha r_i, or None.
    Returns:
        GreedyResult; `cholesky` is the incremental factor V (Eq. (2)-(4)) of the kernel passed in,
        for Alg. 1; None for Alg. 2.
    """
    if kernel.dim() != 3 or kernel.shape[1] != kernel.shape[2]:
        raise ValueError(f"kernel must be (B, N, N), got {tuple(kernel.shape)}")
    B, N, _ = kernel.shape
    if N == 0:
        raise ValueError("the candidate lists are empty (N = 0); expected at least 1 candidate")
    _check_int("max_length", max_length, 1)
    if max_length > N:
        raise ValueError(
            f"max_length must be in 1..{N} (the list length N), got {max_length}: pass at least "
            f"max_length candidates (pad with valid=False; unfilled slots give -1)"
        )
    if valid is not None and (valid.shape != (B, N) or valid.dtype != torch.bool):
        raise ValueError(
            f"valid must be (B, N) = {(B, N)} bool, got {tuple(valid.shape)} {valid.dtype}"
        )
    if log_quality is not None and log_quality.shape != (B, N):
        raise ValueError(f"log_quality must be (B, N) = {(B, N)}, got {tuple(log_quality.shape)}")
    if not 0 < min_gain < math.inf:
        raise ValueError(f"min_gain must be in (0, inf) (compared in log space), got {min_gain}")
    if window_size is not None:
        _check_int("window_size", window_size, 2, " or None")
    _check_finite(kernel, "kernel", "a finite kernel (exp(alpha r) overflows: use log_quality)")
    if log_quality is not None:
        _check_finite(log_quality, "log_quality", "finite log q_i^2 = 2 alpha r_i")
    k = min(max_length, N)
    if window_size is not None and window_size >= k:
        window_size = None  # a window as long as the list is the plain greedy
    rows = torch.arange(B, device=kernel.device)

    d2 = kernel.diagonal(dim1=1, dim2=2).clone()  # (B, N) d_i^2 with Y empty: L_ii
    if valid is not None:
        d2 = d2.masked_fill(~valid, -math.inf)
    # c_i stacked as rows: C[:, s, i] is the s-th entry of c_i (Eq. (3)); Alg. 2 keeps only w rows.
    n_rows = k if window_size is None else window_size
    C = kernel.new_zeros(B, n_rows, N)  # (B, k or w, N)
    V = kernel.new_zeros(B, n_rows, n_rows) if window_size is not None else None  # window factor
    selected = torch.full((B, k), -1, dtype=torch.long, device=kernel.device)
    log_gains = kernel.new_full((B, k), -math.inf)
    log_min_gain = math.log(min_gain)
    d_sel = kernel.new_zeros(B, k)  # d_j of each pick: the diagonal of V
    active = torch.ones(B, dtype=torch.bool, device=kernel.device)
    m = 0  # rows of C in use (= |Y| for Alg. 1, = window fill for Alg. 2)

    for t in range(k):
        # Eq. (6): argmax_i log d_i^2 (+ log q_i^2); d_i^2 <= 0 (round-off, chosen) -> -inf
        objective = torch.where(d2 > 0, d2.clamp_min(1e-300).log(), -math.inf)  # (B, N)
        if log_quality is not None:
            objective = objective + log_quality
        log_gain, j = objective.max(dim=1)  # (B,), (B,)
        gain = d2[rows, j]  # (B,) d_j^2 of the kernel passed in
        active = active & (log_gain >= log_min_gain)  # stopping rule
        if not bool(active.any()):
            break
        selected[:, t] = torch.where(active, j, -1)
        log_gains[:, t] = torch.where(active, log_gain, -math.inf)
        d_sel[:, t] = torch.where(active, gain.clamp_min(0).sqrt(), 0.0)
        if t == k - 1:
            break
        # Eq. (8)-(9): one new entry e_i for every candidate's c_i, from the chosen j's c_j and d_j.
        d_j = gain.clamp_min(1e-300).sqrt()  # (B,) clamp only matters for stopped lists
        c_j = C[rows, :m, j] if m > 0 else None  # (B, m)
        L_j = kernel[rows, j, :]  # (B, N)
        if m > 0:
            proj = torch.einsum("bm,bmn->bn", c_j, C[:, :m])  # (B, m) x (B, m, N) -> (B, N)
            e = (L_j - proj) / d_j.unsqueeze(1)  # (B, N)
        else:
            e = L_j / d_j.unsqueeze(1)  # (B, N)
        if V is not None:
            if m > 0:
                V[:, m, :m] = c_j
            V[:, m, m] = d_j
        C[:, m] = e
        m += 1
        d2 = d2 - e.square()
        d2[rows, j] = -math.inf  # chosen items leave the candidate pool for good
        if window_size is not None and m == window_size:
            d2 = _drop_oldest(C, V, d2, m)
            m -= 1

    cholesky = None
    if window_size is None:
        # V = C[:, :, Y]^T: row t holds c_{y_t}; C[t, y_t] = d_{y_t} (Eq. (9) with i = j).
        idx = selected.clamp_min(0).unsqueeze(1).expand(B, k, k)  # (B, k, k)
        cholesky = torch.gather(C, 2, idx).transpose(1, 2).tril(-1)  # (B, k, k) below diagonal
        # the diagonal is d_{y_t} = sqrt(gain); the last pick's row of C is never written
        cholesky = cholesky + torch.diag_embed(d_sel)
        cholesky = cholesky * (selected >= 0).unsqueeze(2) * (selected >= 0).unsqueeze(1)
    return GreedyResult(selected=selected, log_gains=log_gains, cholesky=cholesky)


def _drop_oldest(C: torch.Tensor, V: torch.Tensor, d2: torch.Tensor, m: int) -> torch.Tensor:
    """Paper Alg. 2: remove the oldest window item from the Cholesky factor V (m x m) and from C.

    With W' = W minus its first item, L_{W'} is V[1:, :] V[1:, :]^T. Givens rotations on the
    columns (0, r), r = 1..m-1, zero V[1:, 0] and leave V[1:, 1:] lower-triangular, so it is the
    Cholesky factor of L_{W'}. The same rotations act on the rows of C (since L_{W,:} = V C), and
    the row they push into position 0 is exactly what d_i^2 regains:
    d_i^2(W') = d_i^2(W) + C_new[0, i]^2. Cost O(w N) per step. In place on C and V.
    """
    for r in range(1, m):
        v_rr, v_r0 = V[:, r, r].clone(), V[:, r, 0].clone()  # (B,)
        h = torch.sqrt(v_rr.square() + v_r0.square()).clamp_min(1e-300)
        cos, sin = (v_rr / h).unsqueeze(1), (v_r0 / h).unsqueeze(1)  # (B, 1)
        col_r, col_0 = V[:, r:m, r].clone(), V[:, r:m, 0].clone()  # (B, m - r)
        V[:, r:m, r] = cos * col_r + sin * col_0
        V[:, r:m, 0] = cos * col_0 - sin * col_r
        row_r, row_0 = C[:, r].clone(), C[:, 0].clone()  # (B, N)
        C[:, r] = cos * row_r + sin * row_0
        C[:, 0] = cos * row_0 - sin * row_r
    d2 = d2 + C[:, 0].square()
    # shift the window: drop row/column 0
    C[:, : m - 1] = C[:, 1:m].clone()
    C[:, m - 1] = 0
    V[:, : m - 1, : m - 1] = V[:, 1:m, 1:m].clone()
    V[:, m - 1, :] = 0
    V[:, :, m - 1] = 0
    return d2


def naive_greedy_map(
    kernel: torch.Tensor,
    *,
    max_length: int,
    min_gain: float = 1e-10,
    window_size: int | None = None,
) -> torch.Tensor:
    """Reference greedy for one list: Eq. (1) with explicit log-determinants (tests, benchmark).

    Each step computes log det(L_{Y+i}) for all N candidates with a batched slogdet, so a list
    costs O(N k^4) instead of O(N k^2). Windowed: Y is the last w - 1 picks.

    Args:
        kernel: (N, N) PSD kernel.
    Returns:
        (k',) int64 positions, k' <= max_length (stops like `greedy_map`).
    """
    if kernel.dim() != 2:
        raise ValueError(f"naive_greedy_map takes one (N, N) kernel, got {tuple(kernel.shape)}")
    N = kernel.shape[0]
    chosen: list[int] = []
    available = torch.ones(N, dtype=torch.bool, device=kernel.device)
    logdet_prev = 0.0
    for _ in range(min(max_length, N)):
        start = 0 if window_size is None else max(0, len(chosen) - (window_size - 1))
        context = chosen[start:]
        cand = torch.arange(N, device=kernel.device)  # (N,)
        ctx = torch.tensor(context, dtype=torch.long, device=kernel.device)
        idx = torch.cat([ctx.expand(N, len(context)), cand.unsqueeze(1)], dim=1)  # (N, m + 1)
        sub = kernel[idx.unsqueeze(2), idx.unsqueeze(1)]  # (N, m + 1, m + 1)
        sign, logdet = torch.linalg.slogdet(sub)  # (N,)
        logdet = torch.where(sign > 0, logdet, torch.full_like(logdet, -math.inf))
        logdet = logdet.masked_fill(~available, -math.inf)
        best = int(logdet.argmax())
        sub_ctx = kernel[ctx.unsqueeze(1), ctx.unsqueeze(0)]  # (m, m)
        logdet_prev = float(torch.linalg.slogdet(sub_ctx)[1]) if context else 0.0
        gain = float(logdet[best]) - logdet_prev  # log d_j^2
        if not math.isfinite(gain) or gain < math.log(min_gain):
            break
        chosen.append(best)
        available[best] = False
    return torch.tensor(chosen, dtype=torch.long, device=kernel.device)


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


class DPPReranker(nn.Module):
    """Re-rank B candidate lists with the DPP of Eq. (14) and fast greedy MAP (Alg. 1 / Alg. 2).

    No parameters: theta is the only knob. forward() returns positions into the candidate list.
    The config passed in is never modified: overrides apply to a copy (self.config).
    """

    def __init__(self, config: DPPConfig | None = None, **overrides) -> None:
        super().__init__()
        known = {f.name for f in fields(DPPConfig)}
        for name in overrides:
            if name not in known:
                raise TypeError(f"unknown DPPConfig field {name!r}")
        config = replace(config or DPPConfig(), **overrides)  # a copy: the caller's stays as it is
        relevance_weight(config.theta)  # validates theta
        _check_int("max_length", config.max_length, 1)
        if config.window_size is not None:
            _check_int("window_size", config.window_size, 2, " or None")
        if not 0 < config.min_gain < math.inf:
            raise ValueError(f"min_gain must be in (0, inf), got {config.min_gain}")
        if not 0 <= config.ridge < math.inf:
            raise ValueError(f"ridge must be a finite eps >= 0, got {config.ridge}")
        if not (isinstance(config.dtype, torch.dtype) and config.dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype (float64), got {config.dtype}")
        self.config = config

    def kernel(self, *, scores: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """(B, N) scores + (B, N, D) features -> (B, N, N) kernel L' of Eq. (14)."""
        cfg = self.config
        sim = similarity_matrix(item_vectors, ridge=cfg.ridge).to(cfg.dtype)  # (B, N, N)
        return build_kernel(scores=scores, similarity=sim, theta=cfg.theta)

    def forward(
        self,
        *,
        scores: torch.Tensor,
        item_vectors: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            scores: (B, N) float relevance of each candidate (higher = more relevant).
            item_vectors: (B, N, D) float features used for the similarity S.
            valid: (B, N) bool, False = padded candidate (never picked; its values must be finite).
        Returns:
            (B, k) int64 positions into the candidate list, -1 where the stopping rule ended it
            (a list with fewer than k valid candidates ends with -1; N < k is refused).
        """
        if scores.dim() != 2 or item_vectors.dim() != 3 or item_vectors.shape[:2] != scores.shape:
            raise ValueError(
                f"expected scores (B, N) and item_vectors (B, N, D), got {tuple(scores.shape)} and "
                f"{tuple(item_vectors.shape)}"
            )
        _check_finite(scores, "scores", _FINITE_SCORES)
        cfg = self.config
        # S in the features' dtype (float32 is plenty for a cosine), the greedy in cfg.dtype
        sim = similarity_matrix(item_vectors, ridge=cfg.ridge).to(cfg.dtype)  # (B, N, N) S
        # Eq. (14) in log space: log q_i^2 = 2 alpha r_i (see greedy_map), never exp(alpha r)
        log_quality = 2.0 * relevance_weight(cfg.theta) * scores.to(cfg.dtype)  # (B, N)
        result = greedy_map(
            sim,
            max_length=cfg.max_length,
            min_gain=cfg.min_gain,
            valid=valid,
            window_size=cfg.window_size,
            log_quality=log_quality,
        )
        return result.selected

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str, *, overwrite: bool = False) -> None:
        """torch.save {"model", "config", "state_dict"} for `DPPReranker.load`,
        written in place; an existing file is kept unless overwrite=True."""
        _save_checkpoint(self, self.config, path, overwrite)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> DPPReranker:
        """The model `save` wrote, rebuilt from this file alone, in eval mode. A file `save` did not
        write (keys missing, another model's config) raises a ValueError saying what it expected."""
        ckpt, config = _read_checkpoint(cls, DPPConfig, path, map_location)
        return _load_weights(cls(config), ckpt, path, map_location)
