"""Calibration of periodic interests (issue #13, point 4, FARM) and of live-sequence length.

For every behaviour of a sampled user in a room (or a video) of the user's category ``B``
(``x = +1``) or ``A`` (``x = -1``), from ``sim_truth/users.parquet``:

* ``periodic_live_fast_corr`` / ``periodic_live_slow_corr``: the correlation of ``x`` with the
  user's fast square wave / slow drift at the behaviour's time (live ``enter`` events); about 0
  when ``periodic_interests`` is off (the waves are drawn either way and then unused);
* ``periodic_video_fast_corr``: the same over the short-video plays of the users with id
  ``<= _VIDEO_USERS`` (reported with ``cross_domain_interest`` on, when the video domain shares
  the live clock);
* ``periodic_fast_power_ratio``: phase-free, the periodogram of ``x`` at the stated fast period
  (``|sum_k x_k exp(-2 pi i t_k / P_fast)|^2 / n`` per user, ``x`` centred per user, averaged
  over users) over its mean at the neighbouring frequencies of :data:`BAND`: about 1 without
  periodicity at that period;
* ``live_seq_len_active_mean``: the live sequence (``live_events`` other than ``exit``, the
  last ``SEQ_LEN`` before the impression, as ``build-samples`` makes it) at the impressions of
  high-activity users in the last 40 % of the period.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from liverank.data.sim.calibration import CHOSEN, CalibrationContext, Metric
from liverank.data.sim.periodic import Wave

SEQ_LEN = 50  # build-samples' default seq_len (FARM uses 50)
_FARM = "FARM: sequences of 50 behaviours split by a DFT filter"
_MIN_ITEMS = 8  # users with fewer A/B behaviours are left out of the periodogram
_VIDEO_USERS = 5_000  # the video correlation reads the plays of users with id <= this


def _waves(ctx: CalibrationContext, truth: pl.DataFrame) -> Wave:
    cfg = ctx.cfg
    n = int(truth["user_id"].max()) + 1
    phase_slow, phase_fast = np.zeros(n), np.zeros(n)
    uid = truth["user_id"].to_numpy()
    phase_slow[uid] = truth["periodic_phase_slow"].to_numpy()
    phase_fast[uid] = truth["periodic_phase_fast"].to_numpy()
    return Wave(
        axis=np.zeros((n, 1)), cat_a=np.zeros(n), cat_b=np.zeros(n),
        phase_slow=phase_slow, phase_fast=phase_fast,
        period_slow_ms=cfg.periodic_slow_days * 86_400_000.0,
        period_fast_ms=cfg.periodic_fast_min * 60_000.0,
        amp_slow=1.0 - cfg.periodic_fast_share, amp_fast=cfg.periodic_fast_share, on=True,
    )  # fmt: skip


def ab_items(behaviours: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """``user_id, ts, x`` of the behaviours (``user_id, ts, category``) in category ``B``
    (``x = 1``) or ``A`` (``x = -1``) of their user, sorted by user and time."""
    return (
        behaviours.join(truth.select("user_id", "periodic_cat_a", "periodic_cat_b"), on="user_id")
        .with_columns(
            pl.when(pl.col("category") == pl.col("periodic_cat_b")).then(1.0)
            .when(pl.col("category") == pl.col("periodic_cat_a")).then(-1.0)
            .otherwise(0.0).alias("x")
        )
        .filter(pl.col("x") != 0)
        .select("user_id", "ts", "x")
        .sort("user_id", "ts")
    )  # fmt: skip


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


#: the control band of the periodogram: frequencies around the stated one, in its multiples
BAND = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7)


def periodogram(items: pl.DataFrame, frequencies: np.ndarray) -> np.ndarray:
    """Mean per-user periodogram of ``x`` (centred per user) at ``frequencies`` (per ms),
    over users with at least ``_MIN_ITEMS`` items: ``|sum_k x_k exp(-2 pi i f t_k)|^2 / n``."""
    counts = items.group_by("user_id").len()
    keep = counts.filter(pl.col("len") >= _MIN_ITEMS)["user_id"]
    it = items.filter(pl.col("user_id").is_in(keep.implode()))
    if it.height == 0:
        return np.full(len(frequencies), np.nan)
    _, grp = np.unique(it["user_id"].to_numpy(), return_inverse=True)
    n = np.bincount(grp)
    x = it["x"].to_numpy()
    x = x - (np.bincount(grp, weights=x) / n)[grp]
    ts = it["ts"].to_numpy()
    out = np.zeros(len(frequencies))
    for i, f in enumerate(frequencies):
        period = 1.0 / f
        angle = 2 * np.pi * (np.mod(ts, period) / period)  # exact for epoch-ms times
        re = np.bincount(grp, weights=x * np.cos(angle))
        im = np.bincount(grp, weights=x * np.sin(angle))
        out[i] = ((re**2 + im**2) / n).mean()
    return out


def power_ratio(items: pl.DataFrame, period_ms: float) -> float:
    """Periodogram at ``1 / period_ms`` over its mean in the control :data:`BAND` around it
    (about 1 when nothing is periodic at that period; behaviour that clusters in time raises
    the whole neighbourhood, not the stated frequency alone)."""
    p = periodogram(items, np.array([1.0, *BAND]) / period_ms)
    return float(p[0] / p[1:].mean()) if p[1:].mean() > 0 else math.nan


def live_seq_len(
    events: pl.DataFrame, impressions: pl.DataFrame, seq_len: int = SEQ_LEN
) -> np.ndarray:
    """Live-sequence length (``min(seq_len, behaviours before ts)``) of each impression."""
    big = np.int64(1) << 42  # > any epoch ms
    ev = events.filter(pl.col("event") != "exit")
    key = np.sort(ev["user_id"].to_numpy().astype(np.int64) * big + ev["ts"].to_numpy())
    q_user = impressions["user_id"].to_numpy().astype(np.int64)
    before = np.searchsorted(key, q_user * big + impressions["ts"].to_numpy())
    first = np.searchsorted(key, q_user * big)
    return np.minimum(before - first, seq_len)


def checks(ctx: CalibrationContext) -> list[Metric]:
    cfg = ctx.cfg
    truth = pl.read_parquet(
        ctx.truth / "users.parquet",
        columns=["user_id", "periodic_cat_a", "periodic_cat_b", "periodic_phase_slow",
                 "periodic_phase_fast"],
    ).filter(pl.col("user_id").is_in(ctx.users["user_id"].implode()))  # fmt: skip
    wave = _waves(ctx, truth)
    rooms = ctx.rooms.select("live_id", "category")
    enters = (
        ctx.events.filter((pl.col("event") == "enter") & (pl.col("user_id") <= truth["user_id"].max()))
        .join(rooms, on="live_id")
        .select("user_id", "ts", "category")
    )  # fmt: skip
    live = ab_items(enters, truth)
    u, ts, x = (live[c].to_numpy() for c in ("user_id", "ts", "x"))
    on = cfg.periodic_interests
    out = [
        Metric(
            "periodic_live_fast_corr", _corr(x, wave.fast(u, ts)),
            *((0.1, None) if on else (-0.03, 0.03)),
            f"corr(enter in B (+1) / A (-1), the user's fast wave; period "
            f"{cfg.periodic_fast_min:g} min)", CHOSEN,
        ),
        Metric(
            "periodic_live_slow_corr", _corr(x, wave.slow(u, ts)),
            *((0.05, None) if on else (-0.03, 0.03)),
            f"the same with the slow drift (period {cfg.periodic_slow_days:g} days)", CHOSEN,
        ),
    ]  # fmt: skip
    ratio = power_ratio(live, wave.period_fast_ms)
    out.append(
        Metric(
            "periodic_fast_power_ratio", ratio, *((1.3, None) if on else (None, 1.2)),
            "periodogram of the A/B enters at the fast period / its mean at 0.6-0.85 and "
            "1.2-1.7 times that frequency",
            CHOSEN,
        )
    )  # fmt: skip
    if cfg.cross_domain_interest:
        plays = (
            ctx.scan("video_events")
            .filter((pl.col("event") == "play") & (pl.col("user_id") <= _VIDEO_USERS))
            .select("user_id", "ts", "photo_id")
            .collect()
            .join(ctx.scan("videos").select("photo_id", pl.col("tag").alias("category")).collect(),
                  on="photo_id")
        )  # fmt: skip
        video = ab_items(plays.select("user_id", "ts", "category"), truth)
        vu, vts, vx = (video[c].to_numpy() for c in ("user_id", "ts", "x"))
        out.append(
            Metric(
                "periodic_video_fast_corr", _corr(vx, wave.fast(vu, vts)),
                *((0.1, None) if on else (-0.03, 0.03)),
                "the same over short-video plays (one clock for both domains)", CHOSEN,
            )
        )  # fmt: skip

    split = cfg.start_ts + int(0.6 * (cfg.end_ts - cfg.start_ts))
    active = ctx.users.filter(pl.col("activity") == 3)["user_id"]
    imp = ctx.impressions.filter(
        (pl.col("ts") >= split) & pl.col("user_id").is_in(active.implode())
    ).select("user_id", "ts")
    sampled = ctx.events.filter(pl.col("user_id") <= ctx.users["user_id"].max())
    lengths = live_seq_len(sampled.select("user_id", "ts", "event"), imp)
    evidence = cfg.size == "evidence"
    out.append(
        Metric(
            "live_seq_len_active_mean", float(lengths.mean()) if len(lengths) else math.nan,
            20.0 if evidence else None, None,
            f"live-sequence items (of {SEQ_LEN}) at impressions of high-activity users, last 40 %",
            _FARM + "; the target is chosen so the live filter has a sequence to filter"
            if evidence else "",
        )
    )  # fmt: skip
    return out
