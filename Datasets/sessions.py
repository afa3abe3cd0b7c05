"""Session splitting for session-aware recall models (SDM, Lv et al., CIKM 2019, §3.1).

The SDM paper cuts a user's time-ordered behaviour into sessions by three rules:

1. actions logged with the same session id belong to one session (our data has no session ids);
2. adjacent actions whose time gap is *under* ``gap_seconds`` (10 minutes) stay in one session;
3. a session holds at most ``max_session`` (50) actions; the next action opens a new session.

The latest session is the short-term behaviour ``S^u``; what happened before it (the paper keeps
the 7 days before ``S^u``) is the long-term behaviour ``L^u``.

Rule 3 is applied the way a logger sees the stream: counting from the first action of a run of
small gaps, actions 1..50 form a session, 51..100 the next, and so on; the latest session is the
(possibly short) last block.

Data with order but no clock (``seqtxt:`` files such as Amazon Beauty) cannot use rule 2; for it
``split_latest_session(..., last_n=N)`` is the stated fallback: the last ``N`` actions form the
short-term session and everything before them is long-term.

Everything here is vectorised over users/examples (no Python loop per row).
"""

from __future__ import annotations

import numpy as np
import torch

SESSION_GAP_SECONDS = 600  # paper §3.1: "less than 10 minutes" keeps actions in one session
MAX_SESSION_LEN = 50  # paper §3.1: a session holds at most 50 actions


def session_ids(
    user: np.ndarray,
    timestamp: np.ndarray,
    *,
    gap_seconds: int = SESSION_GAP_SECONDS,
    max_session: int = MAX_SESSION_LEN,
) -> np.ndarray:
    """Session index of every interaction of a flat log sorted by (user, time).

    Args:
        user: (N,) int user ids, rows grouped by user and sorted by time within a user.
        timestamp: (N,) int seconds.
        gap_seconds: a gap ``>= gap_seconds`` starts a new session (same session while ``<``).
        max_session: the longest session; action ``max_session + 1`` of a run opens a new one.

    Returns:
        (N,) int64 global session ids, 0-based, increasing along the log.
    """
    user = np.asarray(user)
    timestamp = np.asarray(timestamp, dtype=np.int64)
    if user.shape != timestamp.shape or user.ndim != 1:
        raise ValueError(
            f"user and timestamp must be 1-D of one length, got {user.shape} and {timestamp.shape}"
        )
    if max_session < 1:
        raise ValueError(f"max_session must be >= 1, got {max_session}")
    n = len(user)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    run_start = np.ones(n, dtype=bool)  # rule 2: a new user or a long gap starts a run
    run_start[1:] = (user[1:] != user[:-1]) | (timestamp[1:] - timestamp[:-1] >= gap_seconds)
    if (np.diff(timestamp)[user[1:] == user[:-1]] < 0).any():
        raise ValueError("timestamps must be non-decreasing within each user")
    pos = np.arange(n)
    first_of_run = np.maximum.accumulate(np.where(run_start, pos, 0))
    start = run_start | ((pos - first_of_run) % max_session == 0)  # rule 3
    return np.cumsum(start) - 1


def _left_pack(items: torch.Tensor, keep: torch.Tensor, width: int) -> torch.Tensor:
    """Keep the masked entries of each row, in order, right-aligned in ``width`` columns.

    (B, L) items and (B, L) bool mask -> (B, width), 0 = padding on the left; when a row keeps
    more than ``width`` entries, the most recent (rightmost) ones are kept.
    """
    B, L = items.shape
    order = torch.sort(
        keep.to(torch.int8), dim=1, stable=True
    ).indices  # kept entries last, in order
    packed = items.gather(1, order).masked_fill(~keep.gather(1, order), 0)  # (B, L)
    if width <= L:
        return packed[:, L - width :]
    return torch.cat([packed.new_zeros(B, width - L), packed], dim=1)


def trim_left_padding(items: torch.Tensor, min_width: int = 1) -> torch.Tensor:
    """Drop the leading columns that are padding (0) in every row of a left-padded (B, L) batch.

    Keeps at least ``min_width`` columns. A batch of short sessions then costs what its longest
    session costs, not ``max_session`` steps.
    """
    nonzero_cols = (items != 0).any(dim=0)  # (L,)
    if not bool(nonzero_cols.any()):
        return items[:, items.shape[1] - min_width :]
    first = int(nonzero_cols.float().argmax())
    return items[:, min(first, items.shape[1] - min_width) :]


def latest_session_mask(
    items: torch.Tensor,
    timestamps: torch.Tensor | None = None,
    *,
    gap_seconds: int = SESSION_GAP_SECONDS,
    max_session: int = MAX_SESSION_LEN,
    last_n: int | None = None,
) -> torch.Tensor:
    """Which positions of a left-padded history belong to its latest session.

    Args:
        items: (B, L) int64 left-padded histories (most recent last, 0 = padding).
        timestamps: (B, L) int64 seconds, aligned with ``items``; required unless ``last_n``.
        last_n: fallback for data without a clock: the last ``last_n`` actions are the session.

    Returns:
        (B, L) bool.
    """
    if items.dim() != 2:
        raise ValueError(f"items must be (B, L), got shape {tuple(items.shape)}")
    B, L = items.shape
    valid = items != 0
    pos = torch.arange(L, device=items.device).expand(B, L)
    if last_n is not None:
        if last_n < 1:
            raise ValueError(f"last_n must be >= 1, got {last_n}")
        keep = valid & (pos >= L - last_n)
        # rows whose history is shorter than last_n are all short-term; that is the rule too
        return keep
    if timestamps is None or timestamps.shape != items.shape:
        raise ValueError("timestamps (B, L) aligned with items are required unless last_n is given")
    prev_valid = torch.zeros_like(valid)
    prev_valid[:, 1:] = valid[:, :-1]
    gap_break = torch.zeros_like(valid)
    gap_break[:, 1:] = (timestamps[:, 1:] - timestamps[:, :-1]) >= gap_seconds  # rule 2
    run_start = valid & (~prev_valid | gap_break)
    first_of_run = torch.cummax(torch.where(run_start, pos, torch.zeros_like(pos)), dim=1).values
    session_start = valid & ((pos - first_of_run) % max_session == 0)  # rule 3
    latest_start = (
        torch.where(session_start, pos, torch.full_like(pos, -1)).max(dim=1).values
    )  # (B,)
    return valid & (pos >= latest_start[:, None])


def split_latest_session(
    items: torch.Tensor,
    timestamps: torch.Tensor | None = None,
    *,
    gap_seconds: int = SESSION_GAP_SECONDS,
    max_session: int = MAX_SESSION_LEN,
    last_n: int | None = None,
    long_window_seconds: int | None = None,
    max_long: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split left-padded histories into SDM's short-term session and long-term behaviour.

    Args:
        items: (B, L) int64 left-padded histories (most recent last, 0 = padding).
        timestamps: (B, L) int64 seconds; needed for the time rule, ignored with ``last_n``.
        gap_seconds, max_session: the paper's session rule (10 minutes, 50 actions).
        last_n: no-clock fallback: the last ``last_n`` actions form the session.
        long_window_seconds: keep only long-term actions at most this long before the session's
            first action (paper: 7 days); None keeps all of the history before the session.
        max_long: width of the long-term output (default L).

    Returns:
        short: (B, last_n or min(max_session, L)) int64, left-padded latest session.
        long: (B, max_long or L) int64, left-padded behaviour before that session.
    """
    short_mask = latest_session_mask(
        items, timestamps, gap_seconds=gap_seconds, max_session=max_session, last_n=last_n
    )
    valid = items != 0
    long_mask = valid & ~short_mask
    if long_window_seconds is not None:
        if timestamps is None:
            raise ValueError("long_window_seconds needs timestamps")
        big = torch.iinfo(timestamps.dtype).max
        session_begin = (
            torch.where(short_mask, timestamps, torch.full_like(timestamps, big)).min(dim=1).values
        )
        long_mask = long_mask & (timestamps >= session_begin[:, None] - long_window_seconds)
    width_short = last_n if last_n is not None else min(max_session, items.shape[1])
    short = _left_pack(items, short_mask, width_short)
    long = _left_pack(items, long_mask, max_long if max_long is not None else items.shape[1])
    return short, long
