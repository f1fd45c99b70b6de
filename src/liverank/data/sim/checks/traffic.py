"""Calibration of concentrated traffic (issue #13, point 1): how busy the busiest rooms are.

* ``room_impressions_per_min_*``: per room, its impressions (all users) during its air time
  divided by its air minutes; the *top decile* are the 10 % of rooms with the highest rate.
* ``traffic_top_decile_share``: the top decile's share of the summed per-room rates, a
  scale-free concentration (about 0.1 if every room drew the same traffic).
* ``onset_clicks_2min_*``: highlight onsets from ``sim_truth/room_ticks`` (:func:`onsets`), and
  the room's clicks (``enter`` events, all users) in the 2 minutes from each onset; the median
  over the onsets of top-decile rooms, and over all onsets for information.

The absolute targets (top-decile rate, onset clicks) are stated for the ``evidence`` preset, the
world sized for them; other sizes report the values.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from liverank.data.sim.calibration import CHOSEN, CalibrationContext, Metric

#: an onset: excitement reaches ONSET_LEVEL after ONSET_CALM ticks below it
ONSET_LEVEL = 1.0
ONSET_CALM = 4
ONSET_WINDOW_MS = 120_000
_KUAILIVE = "KuaiLive: long-tail streamer popularity (most streamers rarely interacted with)"


def room_rates(rooms: pl.DataFrame, impressions: pl.LazyFrame) -> pl.DataFrame:
    """``live_id, minutes, impressions, rate``: impressions per air minute of every room."""
    counts = impressions.group_by("live_id").len().collect()
    return (
        rooms.select("live_id", ((pl.col("end_ts") - pl.col("start_ts")) / 60_000).alias("minutes"))
        .join(counts, on="live_id", how="left")
        .with_columns(pl.col("len").fill_null(0).alias("impressions"))
        .drop("len")
        .with_columns((pl.col("impressions") / pl.col("minutes")).alias("rate"))
    )


def onsets(ticks: pl.DataFrame, level: float = ONSET_LEVEL, calm: int = ONSET_CALM) -> pl.DataFrame:
    """``live_id, ts`` of highlight onsets in ``room_ticks`` (``live_id, ts, excitement``, sorted
    by room then ts): the first tick at or above ``level`` after at least ``calm`` ticks of the
    same room below it."""
    t = ticks.sort("live_id", "ts")
    room = t["live_id"].to_numpy()
    high = t["excitement"].to_numpy() >= level
    n = len(room)
    # ticks since the room's last high tick (or since its start), before this tick
    idx = np.arange(n)
    first = np.concatenate([[True], room[1:] != room[:-1]]) if n else np.zeros(0, dtype=bool)
    start = np.maximum.accumulate(np.where(first, idx, 0))
    last_high = np.maximum.accumulate(np.where(high, idx, -1))
    prev_high = np.concatenate([[-1], last_high[:-1]]) if n else last_high
    calm_run = idx - np.maximum(prev_high + 1, start)
    hit = high & (calm_run >= calm)
    return t.filter(pl.Series(hit)).select("live_id", "ts")


def clicks_after(onset: pl.DataFrame, enters: pl.DataFrame, window_ms: int) -> np.ndarray:
    """Enter events of each onset's room in ``[ts, ts + window_ms)`` (``[len(onset)]``)."""
    if onset.height == 0:
        return np.zeros(0)
    big = np.int64(1) << 42  # > any epoch ms
    key = np.sort(enters["live_id"].to_numpy().astype(np.int64) * big + enters["ts"].to_numpy())
    base = onset["live_id"].to_numpy().astype(np.int64) * big + onset["ts"].to_numpy()
    return np.searchsorted(key, base + window_ms) - np.searchsorted(key, base)


def checks(ctx: CalibrationContext) -> list[Metric]:
    cfg = ctx.cfg
    rates = room_rates(ctx.rooms, ctx.scan("live_impressions").select("live_id"))
    r = np.sort(rates["rate"].to_numpy())[::-1]
    n_top = max(1, len(r) // 10)
    top = r[:n_top]
    share = float(top.sum() / r.sum()) if r.sum() > 0 else math.nan
    evidence = cfg.size == "evidence" and cfg.concentrated_traffic
    out = [
        Metric(
            "room_impressions_per_min_top10_median", float(np.median(top)) if len(r) else math.nan,
            50.0 if evidence else None, None,
            "impressions per air minute of a room: median over the top decile of rooms",
            CHOSEN if evidence else "",
        ),
        Metric("room_impressions_per_min_top10_mean", float(top.mean()) if len(r) else math.nan,
               note="the same, mean over the top decile"),
        Metric("room_impressions_per_min_median", float(np.median(r)) if len(r) else math.nan,
               note="impressions per air minute, median over all rooms"),
    ]  # fmt: skip
    lo, hi = (0.30, None) if cfg.concentrated_traffic else (None, 0.25)
    out.append(
        Metric(
            "traffic_top_decile_share", share, lo, hi,
            "top decile of rooms' share of the summed impressions per air minute (0.1 = even)",
            f"{CHOSEN}; {_KUAILIVE}",
        )
    )  # fmt: skip

    ticks = pl.read_parquet(
        ctx.truth / "room_ticks.parquet", columns=["live_id", "ts", "excitement"]
    )
    onset = onsets(ticks)
    enters = ctx.events.filter(pl.col("event") == "enter").select("live_id", "ts")
    clicks = clicks_after(onset, enters, ONSET_WINDOW_MS)
    top_ids = rates.sort("rate", descending=True).head(n_top)["live_id"]
    in_top = onset["live_id"].is_in(top_ids.implode()).to_numpy() if onset.height else clicks > 0
    on_target = evidence and cfg.highlights
    out += [
        Metric(
            "onset_clicks_2min_top10_median",
            float(np.median(clicks[in_top])) if in_top.any() else math.nan,
            20.0 if on_target else None, None,
            f"enters in the 2 min from a highlight onset (excitement >= {ONSET_LEVEL:g} after "
            f"{ONSET_CALM} calmer ticks), median over onsets of top-decile rooms",
            CHOSEN if on_target else "",
        ),
        Metric("onset_clicks_2min_median", float(np.median(clicks)) if len(clicks) else math.nan,
               note="the same, median over the onsets of all rooms"),
        Metric("onsets_per_room_hour", onset.height / max(rates["minutes"].sum() / 60, 1e-9),
               note="highlight onsets per hour of air time"),
    ]  # fmt: skip
    return out
