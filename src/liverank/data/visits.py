"""Visit reconstruction: impression -> enter -> exit, with labels and first-occurrence times.

Real logs carry no session id, so visits are rebuilt with the rule of :mod:`liverank.data.schema`
(ARCHITECTURE section 2). Where that rule is silent, this module decides as follows:

* **click** - an impression of room ``r`` to user ``u`` at ``t`` is clicked by the *first*
  ``enter`` of ``u`` in ``r`` with ``t <= enter_ts < min(t + CLICK_WINDOW_MS, t_next)``, where
  ``t_next`` is the time of the next impression of ``r`` to ``u``. Impressions of the same
  ``(u, r)`` at the same ``ts`` are ordered by ``(request_id, position)``; only the last of them
  can be clicked (the others have an empty window). The windows of one ``(u, r)`` are disjoint,
  so an enter clicks at most one impression.
* **exit** - the first ``exit`` of ``u`` in ``r`` with ``ts >= enter_ts`` (a 0 ms visit is
  allowed); if there is none, the room's ``end_ts``. ``stay_ms = exit_ts - enter_ts``.
* **behaviours** - a like / comment / gift (or any event named in ``behaviours``) of ``u`` in
  ``r`` belongs to the visit when ``enter_ts <= ts <= exit_ts`` (both ends included).

For every impression the result gives the *first occurrence time* of each behaviour in the
visit: ``t_click`` (= ``enter_ts``), ``t_evtr`` (= enter + ``EFFECTIVE_VIEW_MS`` when the stay
reaches it), ``t_lvtr`` (= enter + ``long_view_ms``), ``t_ltr`` / ``t_cmtr`` / ``t_gtr`` (first
like / comment / gift), null when the behaviour does not happen. The offline builder turns them
into 0/1 labels; the stream engine's ``moment`` mode (Moment&Cross, Cao et al. 2024, section 3.3:
"first-only" label reporting on a 30 s grid) reports each behaviour in the window of its first
occurrence.

An ``enter`` that clicks no impression is either a *re-entry* (it lies inside a reconstructed
visit of the same user and room) or an *orphan* (e.g. the user came from a surface that has no
impression log). Both are counted in :class:`VisitStats` and logged, never silently lost.

Everything is vectorised with polars sorts and ``join_asof`` (no Python loop over rows).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import polars as pl

from liverank.data.schema import CLICK_WINDOW_MS, EFFECTIVE_VIEW_MS
from liverank.errors import DataValidationError

log = logging.getLogger(__name__)

#: task -> live event whose first occurrence inside the visit makes the task positive
DEFAULT_BEHAVIOURS: dict[str, str] = {"ltr": "like", "cmtr": "comment", "gtr": "gift"}

_KEEP = ("request_id", "position", "ts", "user_id", "live_id")
_EVENT_COLUMNS = ("ts", "user_id", "live_id", "event")
_ROOM_COLUMNS = ("live_id", "end_ts")
_PAIR = ["user_id", "live_id"]


def time_columns(behaviours: Mapping[str, str] = DEFAULT_BEHAVIOURS) -> dict[str, str]:
    """Task -> column holding the first occurrence time of that task's behaviour."""
    return {"ctr": "t_click", "evtr": "t_evtr", "lvtr": "t_lvtr"} | {
        task: f"t_{task}" for task in behaviours
    }


@dataclass(frozen=True)
class VisitStats:
    """Counts of one reconstruction (also logged)."""

    impressions: int
    clicks: int
    enters: int
    #: enters inside a reconstructed visit of the same (user, room) that are not its own enter
    reentries: int
    #: enters that click no impression and lie in no visit
    orphan_enters: int
    #: visits with no exit event, closed at the room's end_ts
    closed_at_room_end: int

    @property
    def unmatched_enters(self) -> int:
        return self.reentries + self.orphan_enters

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"unmatched_enters": self.unmatched_enters}


def reconstruct_visits(
    impressions: pl.DataFrame,
    live_events: pl.DataFrame,
    rooms: pl.DataFrame,
    long_view_ms: int,
    *,
    behaviours: Mapping[str, str] = DEFAULT_BEHAVIOURS,
) -> pl.DataFrame:
    """One row per impression (same order) with its visit, first-occurrence times and labels.

    Args:
        impressions: ``live_impressions`` rows (needs request_id, position, ts, user_id, live_id).
        live_events: ``live_events`` rows (needs ts, user_id, live_id, event); any order.
        rooms: ``rooms`` rows (needs live_id, end_ts); every impressed room must be present.
        long_view_ms: stay that makes a long view (``DatasetMeta.long_view_ms``).
        behaviours: task -> event name for the "first X inside the visit" tasks.

    Returns:
        Columns ``request_id, position, ts, user_id, live_id`` (as given), ``clicked`` (bool),
        ``enter_ts, exit_ts`` (Int64, null unless clicked), ``stay_ms`` (Int64, 0 unless
        clicked), the first-occurrence times of :func:`time_columns` (Int64, null = never) and
        the labels ``ctr, evtr, lvtr`` + ``behaviours`` keys (Int8 0/1).
    """
    return reconstruct_visits_with_stats(
        impressions, live_events, rooms, long_view_ms, behaviours=behaviours
    )[0]


def reconstruct_visits_with_stats(
    impressions: pl.DataFrame,
    live_events: pl.DataFrame,
    rooms: pl.DataFrame,
    long_view_ms: int,
    *,
    behaviours: Mapping[str, str] = DEFAULT_BEHAVIOURS,
) -> tuple[pl.DataFrame, VisitStats]:
    """:func:`reconstruct_visits` plus the :class:`VisitStats` of the reconstruction."""
    _require(impressions, "live_impressions", _KEEP)
    _require(live_events, "live_events", _EVENT_COLUMNS)
    _require(rooms, "rooms", _ROOM_COLUMNS)
    if long_view_ms <= 0:
        raise DataValidationError(f"long_view_ms must be > 0, got {long_view_ms}")
    events = live_events.select(_EVENT_COLUMNS)

    imp = impressions.select(_KEEP).with_row_index("_row")
    imp = _with_room_end(imp, rooms)
    # window end: min(ts + CLICK_WINDOW_MS, next impression of the same (user, room))
    next_ts = pl.col("ts").shift(-1).over(_PAIR)
    imp = imp.sort([*_PAIR, "ts", "request_id", "position"]).with_columns(
        pl.min_horizontal(pl.col("ts") + CLICK_WINDOW_MS, next_ts).alias("_win_end")
    )
    # the first enter at or after the impression
    df = _first_at_or_after(imp.sort("ts"), "ts", _event_times(events, "enter"), "_enter")
    clicked = pl.col("_enter").is_not_null() & (pl.col("_enter") < pl.col("_win_end"))
    df = df.with_columns(clicked.alias("clicked"))
    df = df.with_columns(
        pl.when("clicked").then(pl.col("_enter")).alias("enter_ts"),
        # a non-null sort key for the joins below (rows that are not clicked are masked later)
        pl.col("_enter").fill_null(pl.col("ts")).alias("_k"),
    ).sort("_k")

    df = _first_at_or_after(df, "_k", _event_times(events, "exit"), "_exit")
    df = df.with_columns(
        pl.when("clicked").then(pl.coalesce("_exit", "_room_end")).alias("exit_ts")
    ).with_columns(
        pl.when("clicked")
        .then(pl.col("exit_ts") - pl.col("enter_ts"))
        .otherwise(0)
        .alias("stay_ms")
    )

    in_visit = pl.col("clicked") & (pl.col("_t") <= pl.col("exit_ts"))
    for task, event in behaviours.items():
        df = _first_at_or_after(df, "_k", _event_times(events, event), "_t")
        df = df.with_columns(pl.when(in_visit).then(pl.col("_t")).alias(f"t_{task}")).drop("_t")

    for task, threshold in (("evtr", EFFECTIVE_VIEW_MS), ("lvtr", long_view_ms)):
        reached = pl.col("clicked") & (pl.col("stay_ms") >= threshold)
        df = df.with_columns(
            pl.when(reached).then(pl.col("enter_ts") + threshold).alias(f"t_{task}")
        )
    df = df.with_columns(pl.col("enter_ts").alias("t_click"))

    times = time_columns(behaviours)
    out = df.sort("_row").select(
        *_KEEP,
        "clicked",
        "enter_ts",
        "exit_ts",
        pl.col("stay_ms").cast(pl.Int64),
        *times.values(),
        *(pl.col(col).is_not_null().cast(pl.Int8).alias(task) for task, col in times.items()),
    )
    stats = _stats(df, events)
    log.info("visits: %s", stats.to_dict())
    return out, stats


# ---------------------------------------------------------------------------------- helpers
def _require(df: pl.DataFrame, table: str, columns: tuple[str, ...]) -> None:
    for c in columns:
        if c not in df.columns:
            raise DataValidationError(
                f"table '{table}' has no column '{c}' (has {df.columns})", file=table, column=c
            )


def _with_room_end(imp: pl.DataFrame, rooms: pl.DataFrame) -> pl.DataFrame:
    ends = rooms.select("live_id", pl.col("end_ts").alias("_room_end"))
    out = imp.join(ends, on="live_id", how="left", maintain_order="left")
    unknown = out.filter(pl.col("_room_end").is_null())
    if len(unknown):
        raise DataValidationError(
            "impressions refer to rooms missing from the rooms table",
            file="live_impressions",
            column="live_id",
            rows=unknown["_row"].head(5).to_list(),
            examples=unknown["live_id"].head(5).to_list(),
        )
    return out


def _event_times(events: pl.DataFrame, event: str) -> pl.DataFrame:
    """``(user_id, live_id, _t)`` of one event type, sorted by time."""
    return (
        events.filter(pl.col("event") == event).select(*_PAIR, pl.col("ts").alias("_t")).sort("_t")
    )


def _first_at_or_after(left: pl.DataFrame, on: str, times: pl.DataFrame, name: str) -> pl.DataFrame:
    """Add ``name``: the first ``times._t >= left[on]`` of the same (user, room); keeps order.

    ``left`` must be sorted by ``on``.
    """
    joined = left.join_asof(
        times,
        left_on=on,
        right_on="_t",
        by=_PAIR,
        strategy="forward",
        check_sortedness=False,  # both sides are sorted by their key above
    )
    return joined.rename({"_t": name}) if name != "_t" else joined


def _stats(df: pl.DataFrame, events: pl.DataFrame) -> VisitStats:
    """Count clicks, re-entries and orphan enters (see the module docstring)."""
    visits = (
        df.filter("clicked").select(*_PAIR, pl.col("enter_ts").alias("_t"), "exit_ts").sort("_t")
    )
    enters = _event_times(events, "enter").rename({"_t": "_e"})
    # the latest visit of the same (user, room) starting at or before each enter
    latest = enters.join_asof(
        visits, left_on="_e", right_on="_t", by=_PAIR, strategy="backward", check_sortedness=False
    )
    inside = int(latest.select((pl.col("_e") <= pl.col("exit_ts")).sum()).item() or 0)
    clicks = int(df["clicked"].sum())
    closed_at_end = int(df.select((pl.col("clicked") & pl.col("_exit").is_null()).sum()).item())
    return VisitStats(
        impressions=len(df),
        clicks=clicks,
        enters=len(enters),
        reentries=inside - clicks,
        orphan_enters=len(enters) - inside,
        closed_at_room_end=closed_at_end,
    )
