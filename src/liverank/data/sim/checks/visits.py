"""Calibration of the visit-length mixture (``visit_mixture``, docs/simulator.md section 10).

Stays are measured on the clicked visits rebuilt by ``reconstruct_visits`` (after the cuts at
the room's end and before the user's next request), in seconds.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from liverank.data.schema import EFFECTIVE_VIEW_MS
from liverank.data.sim.calibration import CHOSEN, CalibrationContext, Metric

#: a stay this long is a "long stay" for the favourite lift (s)
LONG_STAY_S = 600
KUAILIVE = "KuaiLive public summaries: short median watch time with a heavy tail"
MOMENT = "Moment&Cross: a viewer may stay 30 to 80 minutes (level chosen)"


def checks(ctx: CalibrationContext) -> list[Metric]:
    on = ctx.cfg.visit_mixture
    clicks = ctx.visits.filter("clicked")
    stay = clicks["stay_ms"].to_numpy() / 1000.0  # [V] s
    if len(stay) == 0:
        return []
    p50, p90, p99 = np.quantile(stay, [0.5, 0.9, 0.99])
    nonbounce = stay[stay >= EFFECTIVE_VIEW_MS / 1000]
    out = [
        Metric("stay_p50_s", float(p50), None, 60.0, "median stay of clicked visits (s)", KUAILIVE),
        Metric("stay_p90_s", float(p90), note="90th percentile of the stay (s)"),
        Metric("stay_p99_s", float(p99), note="99th percentile of the stay (s)"),
        Metric(
            "stay_over_30min_share",
            float((stay > 1800).mean()),
            *((0.02, None) if on else (None, 0.005)),
            "share of clicked visits longer than 30 min",
            MOMENT,
        ),
        Metric(
            "stay_nonbounce_p50_s",
            float(np.median(nonbounce)) if len(nonbounce) else float("nan"),
            *((120.0, None) if on else (None, 60.0)),
            "median stay of clicked visits of >= 3 s (s)",
            CHOSEN,
        ),
    ]
    return out + _why_long(ctx, clicks) + _cuts(ctx, clicks)


def _why_long(ctx: CalibrationContext, clicks: pl.DataFrame) -> list[Metric]:
    """Long stays (>= 10 min) on favourite authors vs other authors (the engaged component
    rises with favourites)."""
    fav = pl.read_parquet(ctx.truth / "favourites.parquet").with_columns(pl.lit(True).alias("fav"))
    v = clicks.select("user_id", "live_id", "stay_ms").join(
        ctx.rooms.select("live_id", "author_id"), on="live_id"
    )
    v = v.join(fav, on=["user_id", "author_id"], how="left").with_columns(
        pl.col("fav").fill_null(False)
    )
    long = (pl.col("stay_ms") >= LONG_STAY_S * 1000).mean()
    share = v.group_by("fav").agg(long.alias("long"))
    by = dict(zip(share["fav"].to_list(), share["long"].to_list(), strict=True))
    lift = by.get(True, float("nan")) / by[False] if by.get(False) else float("nan")
    return [
        Metric("long_stay_favourite_lift", lift,
               note="P(stay >= 10 min | favourite author) / P(stay >= 10 min | other author)"),
    ]  # fmt: skip


def _cuts(ctx: CalibrationContext, clicks: pl.DataFrame) -> list[Metric]:
    """How often a visit ends at the room's end or 1 ms before the user's next request."""
    requests = ctx.impressions.group_by("request_id").agg(
        pl.col("user_id").first(), pl.col("ts").first()
    )
    requests = requests.select("user_id", pl.col("ts").alias("next_ts")).sort("next_ts")
    v = (
        clicks.select("user_id", "live_id", "ts", "exit_ts").sort("ts")
        .join_asof(requests, left_on="ts", right_on="next_ts", by="user_id", check_sortedness=False,
                   strategy="forward", allow_exact_matches=False)
        .join(ctx.rooms.select("live_id", "end_ts"), on="live_id")
    )  # fmt: skip
    by_request = (v["exit_ts"] == v["next_ts"] - 1).fill_null(False).mean()
    by_end = (v["exit_ts"] == v["end_ts"]).mean()
    return [
        Metric("stay_cut_by_request_share", float(by_request),
               note="clicked visits that end 1 ms before the user's next request"),
        Metric("stay_cut_by_room_end_share", float(by_end),
               note="clicked visits that end at the room's end"),
    ]  # fmt: skip
