"""Long views known in real time: the live history's ``lv`` rows from a stream of enters and exits.

The long-history store (:mod:`liverank.features.long_history`) has one *derived* row per visit
whose stay reaches ``long_view_ms``, stamped at ``enter_ts + long_view_ms`` -- the moment the
long view becomes known. The offline builder finds those visits with the whole log in hand
(:mod:`liverank.data.visits`); a service whose histories follow the event stream must find them
as the events arrive. :func:`advance` does that one chunk at a time, with the builder's rules:

* a visit starts at an ``enter`` of user ``u`` in room ``r`` and ends at the first ``exit`` of
  ``u`` in ``r`` at or after it, or at the room's ``end_ts`` when there is none;
* an ``enter`` inside an open visit of the same ``(u, r)`` is a re-entry, not a visit;
* the visit is long when ``end - enter >= long_view_ms``; its row is emitted as soon as that is
  known: when the exit arrives, or when the stream's watermark passes ``enter + long_view_ms``
  with the user still in the room (and the room still on air then).

The state between chunks is the open visits (``OPEN_COLUMNS``; the visits whose long view was
already emitted stay in it, flagged, so that a re-entry while the user is still in the room is
recognised). It is a small table (one row per user currently in a room) that the caller keeps
with its other progress (the Redis store writes it in the same transaction as the rows).

Where this differs from the builder: the builder counts only enters that click an impression
(orphan enters from surfaces without impression logs make no visit); here every enter opens a
visit. On the simulated worlds there are no orphan enters (the sample builder's visit
statistics say so), and the parity test compares the two on one. Events must arrive in time
order (the stream engine's input); a late exit older than the watermark cannot withdraw a long
view already emitted.
"""

from __future__ import annotations

import polars as pl

#: the open-visit state: user, room, enter time, long view already emitted
OPEN_COLUMNS: dict[str, type[pl.DataType]] = {
    "user_id": pl.Int64,
    "live_id": pl.Int64,
    "enter_ts": pl.Int64,
    "emitted": pl.Boolean,
}
_PAIR = ["user_id", "live_id"]


def empty_state() -> pl.DataFrame:
    """No open visit."""
    return pl.DataFrame(schema=OPEN_COLUMNS)


def advance(
    state: pl.DataFrame,
    events: pl.DataFrame,
    room_end: pl.DataFrame,
    watermark: int,
    long_view_ms: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One chunk of live events through the visit rules.

    Args:
        state: the open visits before the chunk (``OPEN_COLUMNS``).
        events: the chunk's live events in time order, with ``ts, user_id, live_id, event``
            (only ``enter`` and ``exit`` are read).
        room_end: ``live_id, end_ts`` of (at least) the rooms in ``state`` and ``events``; a
            room missing here never ends by itself.
        watermark: the newest event time the stream has seen (the chunk's maximum ``ts`` or
            later): every event at or before it has arrived.
        long_view_ms: the dataset's long-view threshold (``DatasetMeta.long_view_ms``).

    Returns:
        ``(state after the chunk, long views)`` where the long views have ``user_id, live_id,
        ts`` (= ``enter_ts + long_view_ms``), one row per visit that became long, in time order.
    """
    enters = events.filter(pl.col("event") == "enter").select(
        pl.col("user_id").cast(pl.Int64),
        pl.col("live_id").cast(pl.Int64),
        pl.col("ts").cast(pl.Int64).alias("enter_ts"),
        pl.lit(False).alias("emitted"),
    )
    exits = (
        events.filter(pl.col("event") == "exit")
        .select(
            pl.col("user_id").cast(pl.Int64),
            pl.col("live_id").cast(pl.Int64),
            pl.col("ts").cast(pl.Int64).alias("exit_ts"),
        )
        .sort(["user_id", "live_id", "exit_ts"])
    )
    visits = pl.concat([state.select(list(OPEN_COLUMNS)), enters]).sort(
        ["user_id", "live_id", "enter_ts"], maintain_order=True
    )
    # the first exit at or after each enter (the builder's rule)
    visits = visits.join_asof(
        exits, left_on="enter_ts", right_on="exit_ts", by=_PAIR, strategy="forward",
        check_sortedness=False,
    )  # fmt: skip
    # enters that share their exit (or, still open, share "no exit yet") with an earlier enter
    # of the same pair lie inside that visit: re-entries
    visits = visits.filter(pl.struct([*_PAIR, "exit_ts"]).is_first_distinct())
    visits = visits.join(
        room_end.select(pl.col("live_id").cast(pl.Int64), pl.col("end_ts").cast(pl.Int64)),
        on="live_id",
        how="left",
    )
    lv_ts = pl.col("enter_ts") + long_view_ms
    ended_by_room = pl.col("exit_ts").is_null() & (pl.col("end_ts") <= watermark)
    end = (
        pl.when(pl.col("exit_ts").is_not_null())
        .then(pl.col("exit_ts"))
        .when(ended_by_room)
        .then(pl.col("end_ts"))
        .otherwise(None)
    )
    visits = visits.with_columns(end.alias("end"))
    closed_long = pl.col("end").is_not_null() & (pl.col("end") - pl.col("enter_ts") >= long_view_ms)
    open_long = (
        pl.col("end").is_null()
        & (lv_ts <= watermark)
        & (pl.col("end_ts").is_null() | (lv_ts <= pl.col("end_ts")))
    )
    visits = visits.with_columns(((closed_long | open_long) & ~pl.col("emitted")).alias("emit"))
    long_views = (
        visits.filter(pl.col("emit"))
        .select(*_PAIR, lv_ts.alias("ts"))
        .sort("ts", maintain_order=True)
    )
    still_open = visits.filter(pl.col("end").is_null()).select(
        *_PAIR, "enter_ts", (pl.col("emitted") | pl.col("emit")).alias("emitted")
    )
    return still_open, long_views
