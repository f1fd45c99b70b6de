"""Label reporting modes: when each label of a visit is emitted, and with which mask.

Input is the output of :func:`liverank.data.visits.reconstruct_visits`: one row per impression
with ``clicked``, ``exit_ts`` and the first-occurrence times ``t_<x>`` of every task (null =
the behaviour never happens in the visit). Output rows follow ``liverank.features.spec``:
float 0/1 labels per task plus ``mask_<task>`` (1 = the label is reported in this row).

**End of a visit** (``visit_end``): for a clicked impression the visit's ``exit_ts``; for an
impression that is not clicked, ``ts + CLICK_WINDOW_MS`` - the latest time at which an enter
could still click it, i.e. the moment the engine knows for sure that the user has moved on.

Modes (Moment&Cross, Cao et al. 2024, section 3.3; the sliding-window paper for fast/slow):

* ``exit`` - one row per impression at ``emit_ts = visit_end`` with every label (all masks 1).
* ``fast_slow`` - a *fast* row at ``ts + FAST_MS`` (5 min) with every label, positive iff the
  behaviour happened at or before the fast time; a *slow* row at ``ts + SLOW_MS`` (1 h) only
  when some behaviour first happened in ``(ts + FAST_MS, ts + SLOW_MS]`` (the positives the
  fast row missed), with only those tasks unmasked and ``slow = 1`` (for the PU correction
  loss). Behaviours after one hour are never reported.
* ``moment`` - a global grid of ``WINDOW_MS`` (30 s) windows aligned to the Unix epoch. At the
  end of window ``k`` an impression emits one row holding the tasks whose first occurrence
  fell in window ``k`` (label 1) and, if ``visit_end`` lies in window ``k``, every task not yet
  reported (label 0); all other tasks are masked. Each task of each impression is therefore
  reported exactly once, never before it happens, and a negative only after the visit ends.

``sample_id = stable_id(request_id, position, MODE_CODE[mode], part)`` with ``part`` = 0 in
``exit``, 0 (fast) / 1 (slow) in ``fast_slow`` and the window index ``k`` in ``moment``: ids are
deterministic and unique per emitted row, independent of chunking and order.

Everything is vectorised polars (no Python loop over rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import polars as pl

from liverank.data.schema import CLICK_WINDOW_MS
from liverank.data.visits import DEFAULT_BEHAVIOURS, time_columns
from liverank.errors import ConfigError, DataValidationError
from liverank.features.ids import stable_id

Mode = Literal["exit", "fast_slow", "moment"]
MODES: tuple[str, ...] = ("exit", "fast_slow", "moment")
MODE_CODE: dict[str, int] = {"exit": 1, "fast_slow": 2, "moment": 3}

WINDOW_MS = 30_000
FAST_MS = 5 * 60_000
SLOW_MS = 60 * 60_000

KEYS: tuple[str, ...] = ("request_id", "position", "ts", "user_id", "live_id")
#: columns every emitted row starts with (then labels, masks)
META: tuple[str, ...] = ("sample_id", *KEYS, "emit_ts", "part", "slow")


def visit_end() -> pl.Expr:
    """``exit_ts`` for a click, ``ts + CLICK_WINDOW_MS`` otherwise (see the module doc)."""
    return (
        pl.when(pl.col("clicked"))
        .then(pl.col("exit_ts"))
        .otherwise(pl.col("ts") + CLICK_WINDOW_MS)
        .alias("visit_end")
    )


def final_emit_ts(mode: str, window_ms: int = WINDOW_MS) -> pl.Expr:
    """The time of the last row an impression emits in ``mode`` (no row comes after it)."""
    _check_mode(mode)
    end = visit_end()
    if mode == "exit":
        return end.alias("final_emit_ts")
    if mode == "fast_slow":
        return (pl.col("ts") + SLOW_MS).alias("final_emit_ts")
    return ((end // window_ms + 1) * window_ms).alias("final_emit_ts")


def emit_rows(
    visits: pl.DataFrame,
    mode: str,
    *,
    behaviours: Mapping[str, str] = DEFAULT_BEHAVIOURS,
    window_ms: int = WINDOW_MS,
    emit_range: tuple[int | None, int | None] | None = None,
) -> pl.DataFrame:
    """All rows ``mode`` emits for ``visits``, sorted by ``(emit_ts, request_id, position)``.

    Args:
        visits: output of ``reconstruct_visits`` (any row order).
        mode: one of :data:`MODES`.
        behaviours: the task -> event map given to ``reconstruct_visits``.
        window_ms: grid step of ``moment`` mode.
        emit_range: ``(lo, hi)``: only the rows with ``lo <= emit_ts < hi`` (``None``: no
            bound), selected before ids and sorting (the stream engine's per-push band).

    Returns:
        Columns :data:`META` (``part`` Int64, ``slow`` Int8), then per task ``<task>`` and
        ``mask_<task>`` (Float32).
    """
    _check_mode(mode)
    if window_ms <= 0:
        raise ConfigError(f"window_ms must be > 0, got {window_ms}")
    times = time_columns(behaviours)
    missing = [c for c in (*KEYS, "clicked", "exit_ts", *times.values()) if c not in visits.columns]
    if missing:
        raise DataValidationError(
            f"visits lack columns {missing}; pass the output of reconstruct_visits",
            file="visits",
            column=missing[0],
        )
    v = visits.select(*KEYS, "clicked", "exit_ts", *times.values()).with_columns(visit_end())
    lo, hi = emit_range or (None, None)
    if mode == "moment":
        out = _moment(v, times, window_ms, lo, hi)
    else:
        out = _exit(v, times) if mode == "exit" else _fast_slow(v, times)
        if emit_range is not None:
            out = out.filter(pl.Series(_in_band(out["emit_ts"].to_numpy(), lo, hi)))
    out = _with_ids(out, MODE_CODE[mode])
    cols = [*META, *times, *(f"mask_{t}" for t in times)]
    return out.select(cols).sort("emit_ts", "request_id", "position", "part")


def empty_rows(
    mode: str,
    *,
    behaviours: Mapping[str, str] = DEFAULT_BEHAVIOURS,
    window_ms: int = WINDOW_MS,
) -> pl.DataFrame:
    """The frame of ``mode``'s rows with no row: :func:`emit_rows` of no visit (every column,
    every dtype), for callers that emit nothing yet (the stream engine, the Flink job)."""
    cols = {c: pl.Int64() for c in (*KEYS, "exit_ts", *time_columns(behaviours).values())}
    visits = pl.DataFrame(schema=cols | {"clicked": pl.Boolean()})
    return emit_rows(visits, mode, behaviours=behaviours, window_ms=window_ms)


# ---------------------------------------------------------------------------------- modes
def _exit(v: pl.DataFrame, times: dict[str, str]) -> pl.DataFrame:
    return v.select(
        *KEYS,
        pl.col("visit_end").alias("emit_ts"),
        pl.lit(0, pl.Int64).alias("part"),
        pl.lit(0, pl.Int8).alias("slow"),
        *(pl.col(c).is_not_null().cast(pl.Float32).alias(t) for t, c in times.items()),
        *(pl.lit(1.0, pl.Float32).alias(f"mask_{t}") for t in times),
    )


def _fast_slow(v: pl.DataFrame, times: dict[str, str]) -> pl.DataFrame:
    fast_end = pl.col("ts") + FAST_MS
    slow_end = pl.col("ts") + SLOW_MS
    fast = v.select(
        *KEYS,
        fast_end.alias("emit_ts"),
        pl.lit(0, pl.Int64).alias("part"),
        pl.lit(0, pl.Int8).alias("slow"),
        *(
            (pl.col(c) <= fast_end).fill_null(False).cast(pl.Float32).alias(t)
            for t, c in times.items()
        ),
        *(pl.lit(1.0, pl.Float32).alias(f"mask_{t}") for t in times),
    )
    missed = {
        t: ((pl.col(c) > fast_end) & (pl.col(c) <= slow_end)).fill_null(False)
        for t, c in times.items()
    }
    slow = v.filter(pl.any_horizontal(*missed.values())).select(
        *KEYS,
        slow_end.alias("emit_ts"),
        pl.lit(1, pl.Int64).alias("part"),
        pl.lit(1, pl.Int8).alias("slow"),
        *(m.cast(pl.Float32).alias(t) for t, m in missed.items()),
        *(m.cast(pl.Float32).alias(f"mask_{t}") for t, m in missed.items()),
    )
    return pl.concat([fast, slow])


def _moment(
    v: pl.DataFrame, times: dict[str, str], window_ms: int, lo: int | None, hi: int | None
) -> pl.DataFrame:
    """One row per (impression, window with something to report), vectorised in NumPy.

    Each task of an impression is reported in one window: the window of its first occurrence
    (label 1) or, if it never happens, the window of ``visit_end`` (label 0). An impression
    emits one row per *distinct* window among its tasks' windows. Most impressions (every one
    not clicked) report all their tasks in one window and take a fast path; the others sort
    their ``T`` windows to find the distinct ones. Rows outside ``lo <= emit_ts < hi`` (bounds
    that are ``None`` are open) are dropped before the output columns are built.
    """
    report = [(pl.coalesce(c, "visit_end") // window_ms).alias(t) for t, c in times.items()]
    part = v.select(report).to_numpy()  # [N, T] window of each task's report
    pos = v.select(pl.col(c).is_not_null() for c in times.values()).to_numpy()  # [N, T]
    single = (part == part[:, :1]).all(axis=1)  # [N] every task in one window
    one = np.flatnonzero(single)  # [S]
    many = np.flatnonzero(~single)  # [M]
    srt = np.sort(part[many], axis=1)  # [M, T]
    new = np.ones_like(srt, dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    row_of, col_of = np.nonzero(new)  # [R'] row of many, position in the sorted row
    rows = np.concatenate([one, many[row_of]])  # [R] impression of each emitted row
    row_part = np.concatenate([part[one, 0], srt[row_of, col_of]])  # [R]
    emit_ts = (row_part + 1) * window_ms  # [R]
    if lo is not None or hi is not None:
        keep = _in_band(emit_ts, lo, hi)
        rows, row_part, emit_ts = rows[keep], row_part[keep], emit_ts[keep]
    mask = part[rows] == row_part[:, None]  # [R, T] task reported in this row
    label = mask & pos[rows]  # [R, T]
    cols = {
        "part": pl.Series("part", row_part, dtype=pl.Int64),
        "emit_ts": pl.Series("emit_ts", emit_ts, dtype=pl.Int64),
        "slow": pl.Series("slow", np.zeros(len(rows), dtype=np.int8), dtype=pl.Int8),
    }
    for j, t in enumerate(times):
        cols[t] = pl.Series(t, label[:, j], dtype=pl.Float32)
        cols[f"mask_{t}"] = pl.Series(f"mask_{t}", mask[:, j], dtype=pl.Float32)
    return v.select(KEYS)[rows].with_columns(**cols)


# ---------------------------------------------------------------------------------- helpers
def _with_ids(df: pl.DataFrame, mode_code: int) -> pl.DataFrame:
    ids = stable_id(
        df["request_id"].to_numpy(),
        df["position"].to_numpy(),
        np.full(len(df), mode_code, dtype=np.int64),
        df["part"].to_numpy(),
    )  # [R]
    return df.with_columns(pl.Series("sample_id", ids, dtype=pl.Int64))


def _in_band(emit_ts: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
    """``lo <= emit_ts < hi`` per row (a ``None`` bound is open)."""
    keep = np.ones(len(emit_ts), dtype=bool)
    if lo is not None:
        keep &= emit_ts >= lo
    if hi is not None:
        keep &= emit_ts < hi
    return keep


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown reporting mode '{mode}' (expected one of {MODES})")
