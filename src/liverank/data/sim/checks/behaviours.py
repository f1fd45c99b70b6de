"""Calibration of behaviours located in time (``timed_behaviours``, docs/simulator.md section 11).

* Excitement lift: for every like / comment (and, separately, every gift) of a sampled user,
  the room's true excitement at the event (``sim_truth/room_ticks``) minus the time average of
  the excitement over the event's visit. Events placed uniformly inside their visit give 0 in
  expectation; a hazard that follows the room's state gives a positive lift.
* First gift delay: time from the enter to the first gift of a visit.
* Fast / slow reporting (Moment&Cross; ``liverank.stream.reporting``, mode ``fast_slow``): an
  impression emits one fast row; it emits a slow row when some label behaviour of its visit
  first happens in ``(ts + 5 min, ts + 1 h]``. Computed here from the rebuilt visits with the
  reporting module's own windows (the test suite checks it against ``emit_rows``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.sim.calibration import CHOSEN, CalibrationContext, Metric
from liverank.data.sim.clock import TICK_MS
from liverank.data.visits import time_columns
from liverank.stream.reporting import FAST_MS, SLOW_MS

SLIVER = "Sliver (Liang et al. 2024) Fig. 5: like labels ~80 % right 5 min after exposure"
MOMENT = "Moment&Cross: gifts come tens of minutes after entry (level chosen)"


class RoomExcitement:
    """The true excitement of every room tick (``sim_truth/room_ticks``), piecewise constant on
    the 30 s grid: point values and exact time averages."""

    def __init__(self, truth: Path) -> None:
        t = pl.read_parquet(truth / "room_ticks.parquet", columns=["live_id", "ts", "excitement"])
        t = t.sort("live_id", "ts")
        self.e = t["excitement"].to_numpy().astype(np.float64)  # [T]
        self.ids, self.offset, self.n = np.unique(
            t["live_id"].to_numpy(), return_index=True, return_counts=True
        )  # [R]
        self.start = t["ts"].to_numpy()[self.offset]  # [R]
        self.cum = np.concatenate([[0.0], np.cumsum(self.e)])  # [T + 1]

    def _tick(self, live_id: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.searchsorted(self.ids, live_id)
        k = np.clip((ts - self.start[r]) // TICK_MS, 0, self.n[r] - 1)
        return r, k

    def at(self, live_id: np.ndarray, ts: np.ndarray) -> np.ndarray:
        r, k = self._tick(live_id, ts)
        return self.e[self.offset[r] + k]

    def integral(self, live_id: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``integral of e(s) ds`` from the room's start to ``ts`` (ms)."""
        r, k = self._tick(live_id, ts)
        flat = self.offset[r] + k
        done = (self.cum[flat] - self.cum[self.offset[r]]) * TICK_MS
        return done + self.e[flat] * (ts - self.start[r] - k * TICK_MS)

    def mean(self, live_id: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Time average over ``[t0, t1]`` (``t1 > t0``)."""
        return (self.integral(live_id, t1) - self.integral(live_id, t0)) / (t1 - t0)


def checks(ctx: CalibrationContext) -> list[Metric]:
    clicks = ctx.visits.filter("clicked")
    if clicks.height == 0:
        return []
    return _excitement_lift(ctx, clicks) + _gift_delay(ctx, clicks) + _fast_slow(ctx, clicks)


def _excitement_lift(ctx: CalibrationContext, clicks: pl.DataFrame) -> list[Metric]:
    on = ctx.cfg.timed_behaviours and ctx.cfg.highlights
    ex = RoomExcitement(ctx.truth)
    visits = (
        clicks.filter(pl.col("stay_ms") > 0)
        .select("user_id", "live_id", "enter_ts", "exit_ts")
        .sort("enter_ts")
    )
    events = (
        ctx.events.filter(pl.col("event").is_in(["like", "comment", "gift"]))
        .filter(pl.col("user_id").is_in(ctx.users["user_id"].implode()))
        .select("user_id", "live_id", "ts", "event")
        .sort("ts")
        .join_asof(
            visits,
            left_on="ts",
            right_on="enter_ts",
            by=["user_id", "live_id"],
            check_sortedness=False,
        )
        .filter(pl.col("ts") <= pl.col("exit_ts"))
    )
    live_id = events["live_id"].to_numpy()
    lift = ex.at(live_id, events["ts"].to_numpy()) - ex.mean(
        live_id, events["enter_ts"].to_numpy(), events["exit_ts"].to_numpy()
    )
    gift = (events["event"] == "gift").to_numpy()

    def metric(name: str, x: np.ndarray, lo: float, what: str) -> Metric:
        value = float(x.mean()) if len(x) else float("nan")
        return Metric(name, value, *((lo, None) if on else (-0.02, 0.02)),
                      f"{what}: excitement at the event - its visit's mean excitement", CHOSEN)  # fmt: skip

    return [
        metric("gift_excitement_lift", lift[gift], 0.1, "gifts"),
        metric("interaction_excitement_lift", lift[~gift], 0.05, "likes and comments"),
    ]


def _gift_delay(ctx: CalibrationContext, clicks: pl.DataFrame) -> list[Metric]:
    gifted = clicks.filter(pl.col("t_gtr").is_not_null())
    delay = ((gifted["t_gtr"] - gifted["enter_ts"]) / 1000).to_numpy()  # [G] s
    long = (gifted["stay_ms"] >= 600_000).to_numpy()
    on = ctx.cfg.visit_mixture and ctx.cfg.timed_behaviours

    def med(x: np.ndarray) -> float:
        return float(np.median(x)) if len(x) else float("nan")

    return [
        Metric("first_gift_delay_p50_s", med(delay), *((120.0, None) if on else (None, None)),
               "median time from the enter to the first gift of a visit (s)", MOMENT if on else ""),
        Metric("first_gift_delay_long_p50_s", med(delay[long]),
               note="the same, in visits of >= 10 min (s)"),
    ]  # fmt: skip


def _fast_slow(ctx: CalibrationContext, clicks: pl.DataFrame) -> list[Metric]:
    cfg = ctx.cfg
    ts = pl.col("ts")
    cols = list(time_columns().values())
    late = pl.any_horizontal(
        *(((pl.col(c) > ts + FAST_MS) & (pl.col(c) <= ts + SLOW_MS)).fill_null(False) for c in cols)
    )
    slow = int(ctx.visits.select(late.sum()).item())

    def late_share(col: str) -> float:
        seen = clicks.filter(pl.col(col) <= ts + SLOW_MS)
        return float((seen[col] > seen["ts"] + FAST_MS).mean()) if seen.height else float("nan")

    on = cfg.visit_mixture and cfg.timed_behaviours
    return [
        Metric("fast_slow_slow_per_fast", slow / ctx.visits.height,
               note="fast_slow slow rows / fast rows (one fast row per impression)"),
        Metric("fast_slow_slow_per_click", slow / clicks.height,
               *((0.05, None) if on else (None, None)),
               "fast_slow slow rows / fast rows of clicked impressions", CHOSEN if on else ""),
        Metric("like_late_share", late_share("t_ltr"), *((0.1, 0.4) if on else (None, None)),
               "visits whose first like is in (5 min, 1 h] after the impression / visits with a "
               "like within 1 h", SLIVER if on else ""),
        Metric("gift_late_share", late_share("t_gtr"),
               *((0.5, None) if on else (None, 0.5) if cfg.visit_mixture else (None, None)),
               "the same for gifts", MOMENT if on else CHOSEN if cfg.visit_mixture else ""),
    ]  # fmt: skip
