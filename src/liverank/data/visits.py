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

Everything is vectorised: one ``np.lexsort`` of the impressions by (user, room, time) and, per
event type, one sort and one ``np.searchsorted`` over int64 keys that order rows as
``(user_id, live_id, ts)`` (:mod:`liverank.data.pair_keys`); no join, no Python loop over rows.
Key columns must not be null (a :class:`DataValidationError` names the column and rows).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from liverank.data.pair_keys import PairTimeKeys, SortedEvents, pair_order, pair_time_keys
from liverank.data.schema import CLICK_WINDOW_MS, EFFECTIVE_VIEW_MS
from liverank.errors import DataValidationError

log = logging.getLogger(__name__)

#: task -> live event whose first occurrence inside the visit makes the task positive
DEFAULT_BEHAVIOURS: dict[str, str] = {"ltr": "like", "cmtr": "comment", "gtr": "gift"}

_KEEP = ("request_id", "position", "ts", "user_id", "live_id")
_EVENT_COLUMNS = ("ts", "user_id", "live_id", "event")
_ROOM_COLUMNS = ("live_id", "end_ts")
#: the impression columns read as int64 arrays, in the order they are unpacked
_ALIGN = ("user_id", "live_id", "ts", "request_id", "position")


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
    _require_values(impressions, "live_impressions", _KEEP)
    _require_values(live_events, "live_events", _EVENT_COLUMNS[:3])
    imp = impressions.select(_KEEP)
    n = len(imp)
    room_end = _room_end(imp, rooms)  # [N]
    i_user, i_live, i_ts, i_req, i_pos = (_ints(imp[c]) for c in _ALIGN)
    e_user, e_live, e_ts = (_ints(live_events[c]) for c in ("user_id", "live_id", "ts"))
    names = live_events["event"]

    keys = pair_time_keys(
        np.concatenate([i_user, e_user]),
        np.concatenate([i_live, e_live]),
        np.concatenate([i_ts, e_ts]),
    )
    ev_keys = PairTimeKeys(keys.pair[n:], keys.key[n:])

    def events_of(event: str) -> SortedEvents:
        return SortedEvents.of(ev_keys, e_ts, (names == event).fill_null(False).to_numpy())

    # impressions in (user, room, ts, request_id, position) order: the searches below then run
    # over sorted queries (fast), and results are put back in input order once (``back``)
    order = pair_order(keys.key[:n], i_req, i_pos)
    pair, key, ts = keys.pair[:n][order], keys.key[:n][order], i_ts[order]
    # window end: min(ts + CLICK_WINDOW_MS, the next impression of the same (user, room))
    win_end = ts + CLICK_WINDOW_MS
    same = pair[1:] == pair[:-1]  # [N - 1]: row i + 1 is the next impression of row i's pair
    win_end[:-1] = np.where(same, np.minimum(win_end[:-1], ts[1:]), win_end[:-1])

    enters = events_of("enter")
    enter = enters.first_at_or_after(key, pair)
    clicked = enter.found & (enter.ts < win_end)
    # later searches start at the enter (its key); rows that are not clicked are masked below
    k = np.where(enter.found, enter.key, key)
    exit_ = events_of("exit").first_at_or_after(k, pair)
    exit_sorted = np.where(exit_.found, exit_.ts, room_end[order])
    behaviour_sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task, event in behaviours.items():
        first = events_of(event).first_at_or_after(k, pair)
        behaviour_sorted[task] = (clicked & first.found & (first.ts <= exit_sorted), first.ts)
    stats = _stats(pair, clicked, enter.key, exit_sorted, exit_.found, enters)

    back = np.empty(n, dtype=np.int64)  # input row -> its position in the sorted order
    back[order] = np.arange(n)
    clicked, enter_ts, exit_ts = clicked[back], enter.ts[back], exit_sorted[back]
    stay = np.where(clicked, exit_ts - enter_ts, 0)
    times: dict[str, tuple[np.ndarray, np.ndarray]] = {"ctr": (clicked, enter_ts)}
    for task, threshold in (("evtr", EFFECTIVE_VIEW_MS), ("lvtr", long_view_ms)):
        times[task] = (clicked & (stay >= threshold), enter_ts + threshold)
    for task, (valid, at) in behaviour_sorted.items():
        times[task] = (valid[back], at[back])

    columns = {
        "clicked": pl.Series(clicked),
        "enter_ts": _nullable(enter_ts, clicked),
        "exit_ts": _nullable(exit_ts, clicked),
        "stay_ms": pl.Series(stay),
    }
    for task, col in time_columns(behaviours).items():
        valid, at = times[task]
        columns[col] = _nullable(at, valid)
    labels = {task: pl.Series(times[task][0].astype(np.int8)) for task in time_columns(behaviours)}
    out = imp.with_columns(**columns, **labels)

    log.info("visits: %s", stats.to_dict())
    return out, stats


# ---------------------------------------------------------------------------------- helpers
def _require(df: pl.DataFrame, table: str, columns: tuple[str, ...]) -> None:
    for c in columns:
        if c not in df.columns:
            raise DataValidationError(
                f"table '{table}' has no column '{c}' (has {df.columns})", file=table, column=c
            )


def _nullable(values: np.ndarray, valid: np.ndarray) -> pl.Series:
    """An Int64 column of ``values`` with nulls where not ``valid``."""
    return pl.from_arrow(pa.array(values, mask=~valid))  # type: ignore[return-value]


def _require_values(df: pl.DataFrame, table: str, columns: tuple[str, ...]) -> None:
    """Raise naming the column and rows when a key column holds nulls (no rule applies to them)."""
    for c in columns:
        if df[c].null_count():
            rows = df.with_row_index("_row").filter(pl.col(c).is_null())["_row"].head(5).to_list()
            raise DataValidationError(
                f"table '{table}' has null values in column '{c}'", file=table, column=c, rows=rows
            )


def _ints(series: pl.Series) -> np.ndarray:
    return series.cast(pl.Int64).to_numpy()


def _room_end(imp: pl.DataFrame, rooms: pl.DataFrame) -> np.ndarray:
    """``end_ts`` of each impression's room ``[N]``; raises naming rooms missing from ``rooms``."""
    ids, ends = _ints(rooms["live_id"].fill_null(-1)), _ints(rooms["end_ts"].fill_null(0))
    order = np.argsort(ids, kind="stable")
    ids, ends = ids[order], ends[order]
    live = _ints(imp["live_id"])
    at = np.minimum(np.searchsorted(ids, live), max(len(ids) - 1, 0))
    known = (ids[at] == live) if len(ids) else np.zeros(len(live), dtype=bool)
    if not known.all():
        rows = np.flatnonzero(~known)[:5]
        raise DataValidationError(
            "impressions refer to rooms missing from the rooms table",
            file="live_impressions",
            column="live_id",
            rows=rows.tolist(),
            examples=live[rows].tolist(),
        )
    return ends[at] if len(ids) else np.zeros(0, dtype=np.int64)


def _stats(
    pair: np.ndarray,
    clicked: np.ndarray,
    enter_key: np.ndarray,
    exit_ts: np.ndarray,
    exit_found: np.ndarray,
    enters: SortedEvents,
) -> VisitStats:
    """Count clicks, re-entries and orphan enters (see the module docstring).

    Arguments are the impressions' arrays ``[N]`` in (user, room, ts) order, so the clicked
    ones' enter keys are sorted (the enters of one pair's visits increase with its impressions).
    """
    v_key, v_pair, v_exit = enter_key[clicked], pair[clicked], exit_ts[clicked]
    inside = 0
    if len(v_key):
        # the latest visit of the same (user, room) starting at or before each enter
        at = np.searchsorted(v_key, enters.key, side="right") - 1  # [E]
        safe = np.maximum(at, 0)
        has = (at >= 0) & (v_pair[safe] == enters.pair)  # [E]
        inside = int((has & (enters.ts <= v_exit[safe])).sum())
    clicks = int(clicked.sum())
    return VisitStats(
        impressions=len(pair),
        clicks=clicks,
        enters=len(enters.key),
        reentries=inside - clicks,
        orphan_enters=len(enters.key) - inside,
        closed_at_room_end=int((clicked & ~exit_found).sum()),
    )
