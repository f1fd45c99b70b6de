"""Where Moment should win: metrics inside a room's highlight windows, and within each room.

Moment&Cross (Cao et al. 2024, section 3; ``moment_cross.md``) trains on a 30 s stream so that a
room's predicted CTR follows its highlight moments. Pooled AUC over every impression hardly sees
that: most impressions are outside highlights, and most of the pooled ranking is *between*
rooms (a popular room against a quiet one), which any mode learns. This module adds the slices
where the claim lives.

* **Highlight windows** (:func:`highlight_windows`, ground truth of the simulator only): the
  spans where a room's excitement (``sim_truth/room_ticks.parquet``, 30 s grid) is elevated,
  by the simulator's own definition of a highlight (:mod:`liverank.data.sim.checks.traffic`):
  ticks at or above ``ONSET_LEVEL`` (1.0); runs of such ticks separated by fewer than
  ``ONSET_CALM`` (4) calm ticks are one highlight (the calibration does not count the next
  crossing as a new onset either). A window is ``[first high tick, last high tick + 30 s)``.
  Elevated ticks at a room's start belong to a window too (the onset rule skips them, as
  nothing calm precedes them, but the excitement is as high). With ``highlights`` off the
  excitement is a constant below the level and there are no windows; an experiment then reads
  the windows of the base world (same rooms and times) as a placebo.
* **Within-room temporal AUC** (:func:`room_auc`): the AUC of each room over its own
  impressions across time, averaged over the rooms with both classes, weighted by their
  labelled impressions (:func:`liverank.eval.metrics.grouped_auc` with ``live_id`` as the
  group). Ranking a room's good moments above its dull ones is what a model that follows the
  room in time does, and what a room-level prior cannot do.
* :func:`moment_slices`: per task, ``auc``, ``gauc`` (by user), ``room_auc``, ``count`` and
  ``n_rooms`` on the impressions inside (``highlight``) and outside (``outside-highlight``) the
  windows, and ``room_auc`` / ``n_rooms`` over all impressions (``all``).

Example::

    windows = highlight_windows("runs/world")                  # live_id, start_ts, end_ts
    slices = moment_slices(run.predictions, ["ctr"], windows)
    slices["highlight"]["ctr"]["auc"], slices["all"]["ctr"]["room_auc"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.sim.checks.traffic import ONSET_CALM, ONSET_LEVEL
from liverank.data.sim.clock import TICK_MS
from liverank.errors import ConfigError, DataValidationError
from liverank.eval.metrics import auc, grouped_auc
from liverank.eval.reaction import load_room_ticks
from liverank.eval.result import ALL

HIGHLIGHT = "highlight"
OUTSIDE = "outside-highlight"
WINDOW_SCHEMA: dict[str, type[pl.DataType]] = {
    "live_id": pl.Int64,
    "start_ts": pl.Int64,
    "end_ts": pl.Int64,
}


def windows_from_ticks(
    room_ticks: pl.DataFrame,
    level: float = ONSET_LEVEL,
    calm_ticks: int = ONSET_CALM,
    tick_ms: int = TICK_MS,
) -> pl.DataFrame:
    """Highlight windows ``live_id, start_ts, end_ts`` (end exclusive) of ``room_ticks``.

    Args:
        room_ticks: ``live_id, ts, excitement``, one row per room tick of ``tick_ms``.
        level: excitement at or above which a tick is elevated.
        calm_ticks: elevated runs separated by fewer calm ticks than this are one window
            (1 = never merge).
        tick_ms: the tick length; a window ends ``tick_ms`` after its last elevated tick.

    Returns:
        One row per window, sorted by ``live_id, start_ts``; a room's windows do not overlap.
    """
    if calm_ticks < 1 or tick_ms <= 0:
        raise ConfigError(f"need calm_ticks >= 1 and tick_ms > 0, got {calm_ticks}, {tick_ms}")
    high = (
        room_ticks.lazy()
        .filter(pl.col("excitement") >= level)
        .select(pl.col("live_id").cast(pl.Int64), pl.col("ts").cast(pl.Int64))
        .sort("live_id", "ts")
    )
    # a gap of g calm ticks between two elevated ticks is a ts step of (g + 1) ticks
    new = (pl.col("live_id") != pl.col("live_id").shift(1)).fill_null(True) | (
        pl.col("ts").diff() > calm_ticks * tick_ms
    ).fill_null(True)
    return (
        high.with_columns(new.cum_sum().alias("_window"))
        .group_by("_window")
        .agg(
            pl.col("live_id").first(),
            pl.col("ts").min().alias("start_ts"),
            (pl.col("ts").max() + tick_ms).alias("end_ts"),
        )
        .select(*WINDOW_SCHEMA)
        .sort("live_id", "start_ts")
        .collect()
        .cast(WINDOW_SCHEMA)  # type: ignore[arg-type]
    )


def highlight_windows(dataset_dir: str | Path, **rule: float) -> pl.DataFrame:
    """:func:`windows_from_ticks` of a simulated dataset (``sim_truth/room_ticks.parquet``).

    ``rule`` passes ``level`` / ``calm_ticks`` / ``tick_ms`` on. Raises
    :class:`DataValidationError` for a dataset without the simulator's ground truth.
    """
    return windows_from_ticks(load_room_ticks(dataset_dir), **rule)  # type: ignore[arg-type]


def in_windows(live_id: np.ndarray, ts: np.ndarray, windows: pl.DataFrame) -> np.ndarray:
    """``[N]`` bool: whether ``ts[i]`` lies in a window ``[start_ts, end_ts)`` of room
    ``live_id[i]``.

    One as-of join per call (each query finds its room's latest window starting at or before
    it), no loop over rows. ``windows`` must not overlap within a room (as
    :func:`windows_from_ticks` gives); overlapping windows raise :class:`DataValidationError`.
    """
    room = np.asarray(live_id, dtype=np.int64)  # [N]
    when = np.asarray(ts, dtype=np.int64)  # [N]
    if room.ndim != 1 or room.shape != when.shape:
        raise ValueError(
            f"live_id and ts must be 1-D of one length, got {room.shape}, {when.shape}"
        )
    out = np.zeros(room.shape[0], dtype=bool)
    if room.size == 0 or windows.height == 0:
        return out
    w = windows.select(*WINDOW_SCHEMA).cast(WINDOW_SCHEMA)  # type: ignore[arg-type]
    _check_windows(w)
    queries = pl.DataFrame(
        {"live_id": room, "ts": when, "_row": np.arange(room.size, dtype=np.int64)}
    ).sort("ts")
    # both sides are sorted on the as-of key as a whole, hence within every room too (polars
    # cannot verify that with `by`, and would warn)
    hit = queries.join_asof(
        w.sort("start_ts"),
        left_on="ts",
        right_on="start_ts",
        by="live_id",
        strategy="backward",
        check_sortedness=False,
    ).select("_row", (pl.col("ts") < pl.col("end_ts")).fill_null(False).alias("_in"))
    out[hit["_row"].to_numpy()] = hit["_in"].to_numpy()
    return out


def _check_windows(w: pl.DataFrame) -> None:
    bad = w.filter(pl.col("end_ts") <= pl.col("start_ts"))
    if bad.height:
        raise DataValidationError(
            f"{bad.height} highlight window(s) end at or before they start",
            column="end_ts",
            rows=bad.head(5).rows(),
        )
    overlap = (
        w.sort("live_id", "start_ts")
        .with_columns(pl.col("end_ts").shift(1).over("live_id").alias("_prev_end"))
        .filter(pl.col("start_ts") < pl.col("_prev_end"))
    )
    if overlap.height:
        raise DataValidationError(
            f"{overlap.height} highlight window(s) overlap an earlier window of their room",
            column="start_ts",
            rows=overlap.head(5).select(*WINDOW_SCHEMA).rows(),
        )


def room_auc(
    labels: np.ndarray, scores: np.ndarray, live_id: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Within-room temporal AUC: each room's AUC over its own labelled impressions (across
    time), averaged over the rooms with both classes, weighted by their labelled impressions.
    NaN when no room has both classes."""
    return grouped_auc(labels, scores, live_id, mask)[1]


def moment_slices(
    pred: pl.DataFrame, tasks: Sequence[str], windows: pl.DataFrame
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics inside / outside the highlight windows, and the within-room AUC of every row.

    Args:
        pred: a prediction frame (:mod:`liverank.train.stream_eval`): ``user_id``,
            ``live_id``, ``ts`` and per task ``<task>``, ``p_<task>`` and optionally
            ``mask_<task>`` (absent = every label observed). Rows with ``slow = 1`` (the slow
            rows of a ``fast_slow`` training stream) are left out, as in the hourly metrics.
        tasks: the tasks to score.
        windows: ``live_id, start_ts, end_ts`` (:func:`highlight_windows`).

    Returns:
        ``{slice: {task: {metric: value}}}``: slices ``highlight`` and ``outside-highlight``
        with ``auc``, ``gauc`` (by user), ``room_auc``, ``count`` (labelled rows) and
        ``n_rooms`` (rooms with both classes); slice ``all`` with ``room_auc`` and ``n_rooms``.
    """
    need = ["user_id", "live_id", "ts", *tasks, *(f"p_{t}" for t in tasks)]
    missing = [c for c in need if c not in pred.columns]
    if missing:
        raise DataValidationError(
            f"prediction frame lacks columns {missing} (has {pred.columns})", column=missing[0]
        )
    if "slow" in pred.columns:
        pred = pred.filter(pl.col("slow") == 0)
    room = pred["live_id"].to_numpy().astype(np.int64)  # [N]
    user = pred["user_id"].to_numpy().astype(np.int64)  # [N]
    inside = in_windows(room, pred["ts"].to_numpy(), windows)  # [N]
    out: dict[str, dict[str, dict[str, float]]] = {ALL: {}, HIGHLIGHT: {}, OUTSIDE: {}}
    for t in tasks:
        y = pred[t].cast(pl.Float64).fill_null(0.0).to_numpy()  # [N]
        p = pred[f"p_{t}"].cast(pl.Float64).fill_null(0.0).to_numpy()  # [N]
        m = (
            pred[f"mask_{t}"].cast(pl.Float64).fill_null(0.0).to_numpy() > 0
            if f"mask_{t}" in pred.columns
            else np.ones(pred.height, dtype=bool)
        )  # [N]
        _, r_all, n_all = grouped_auc(y, p, room, m)
        out[ALL][t] = {"room_auc": r_all, "n_rooms": float(n_all)}
        for name, rows in ((HIGHLIGHT, inside), (OUTSIDE, ~inside)):
            ys, ps, ms = y[rows], p[rows], m[rows]
            _, r, n_rooms = grouped_auc(ys, ps, room[rows], ms)
            out[name][t] = {
                "auc": auc(ys, ps, ms),
                "gauc": grouped_auc(ys, ps, user[rows], ms)[1],
                "room_auc": r,
                "count": float(ms.sum()),
                "n_rooms": float(n_rooms),
            }
    return out
