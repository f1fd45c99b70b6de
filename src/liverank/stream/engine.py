"""Incremental event-time engine: a merged event stream in, the rows of a reporting mode out.

The input is one merged stream (:func:`merge_stream`) of ``live_impressions`` and
``live_events`` rows, pushed in chunks in (roughly) event-time order. The engine keeps

* a **screen** of every row on arrival: a row with a null key column, an unknown event name
  (``kind`` not ``"impression"`` nor in ``schema.LIVE_EVENTS``), an unknown room (not in
  ``rooms``) or, when the engine is given ``users``, an unknown user goes to the dead-letter table
  with its reason (:mod:`liverank.data.dead_letters`) and is counted; with
  ``unknown_events="error"`` an unknown event name raises instead;
* a **watermark** ``max event ts seen - allowed_lateness_ms`` (over the rows that pass the
  screen). A row that arrives with ``ts < watermark`` is *late*: it goes to the dead-letter
  table with its reason (and is counted), never silently dropped; so every row with
  ``ts < watermark`` that the engine will ever use is already in its state;
* the open **visit state**: the impressions whose last emission is not yet due, and the events
  a visit rule can still look at: those at or after the watermark, and older ones of a
  (user, room) pair only from that pair's earliest open impression on (enter, exit and
  behaviours of a visit all come at or after its impression).

On each push the engine re-derives the visits of its open state with
:func:`liverank.data.visits.reconstruct_visits`, computes the rows of
:func:`liverank.stream.reporting.emit_rows` and emits those with ``emit_ts < watermark`` that it
has not emitted yet: those at or after the previous push's watermark (see ``_emit``). Because a row due before the watermark depends only on events before it
(reporting's windows close strictly before the emission), the union of everything emitted
equals ``emit_rows`` on the whole (accepted) data, whatever the chunking - the property the
tests check. This is a micro-batch over the open state (cost per push ~ the open state), the
first cut of the engine; a per-visit state machine keyed by (user, room, impression) with
O(1) updates is future work (see docs/streaming.md).

Assumption (validated by ``liverank.data.validate``): no event of a room comes after the
room's ``end_ts`` (the "on air" rule), so a visit closed at room end is never re-opened.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from liverank.data import dead_letters as dl
from liverank.data.io import read_table
from liverank.data.pair_keys import pair_codes, pair_order, pair_time_keys
from liverank.data.schema import LIVE_EVENTS
from liverank.data.validate import check_columns
from liverank.data.visits import DEFAULT_BEHAVIOURS, reconstruct_visits
from liverank.errors import ConfigError, DataValidationError
from liverank.stream.reporting import WINDOW_MS, emit_rows, empty_rows, final_emit_ts

log = logging.getLogger(__name__)

IMPRESSION = "impression"
#: columns of the merged stream (request_id / position are null on live events)
STREAM_SCHEMA: dict[str, pl.DataType] = dl.STREAM_SCHEMA
#: dead-letter columns: the stream's, then ``photo_id, table, row, reason``
#: (:data:`liverank.data.dead_letters.DEAD_SCHEMA`; ``table = "stream"``, ``row`` = the row's
#: index in the engine's input, i.e. its source offset)
DEAD_SCHEMA: dict[str, pl.DataType] = dl.DEAD_SCHEMA
#: the ``kind`` values the engine knows
KINDS: tuple[str, ...] = (IMPRESSION, *LIVE_EVENTS)
_NEVER = 2**62  # a watermark past every event (flush)


def merge_stream(impressions: pl.DataFrame, live_events: pl.DataFrame) -> pl.DataFrame:
    """One time-ordered stream of impressions (``kind = "impression"``) and live events.

    Ties at one ``ts`` put impressions first (an enter at the impression's ms can click it).
    """
    imp = impressions.select(
        "ts", "user_id", "live_id", pl.lit(IMPRESSION).alias("kind"), "request_id", "position"
    )
    ev = live_events.select(
        "ts",
        "user_id",
        "live_id",
        pl.col("event").alias("kind"),
        pl.lit(None, pl.Int64).alias("request_id"),
        pl.lit(None, pl.Int64).alias("position"),
    )
    out = pl.concat([imp.cast(STREAM_SCHEMA), ev.cast(STREAM_SCHEMA)])  # [I + E]
    return (
        out.with_columns((pl.col("kind") != IMPRESSION).alias("_ev"))
        .sort("ts", "_ev", maintain_order=True)
        .drop("_ev")
    )


def read_stream(data_dir: str | Path) -> pl.DataFrame:
    """``merge_stream`` of a dataset directory's ``live_impressions`` and ``live_events``.

    Raises :class:`DataValidationError` naming the file and column when a table is missing or
    unreadable or lacks a column (or has it with a wrong dtype).
    """
    need = {
        "live_impressions": ["ts", "user_id", "live_id", "request_id", "position"],
        "live_events": ["ts", "user_id", "live_id", "event"],
    }
    for table, columns in need.items():
        check_columns(data_dir, table, columns)
    return merge_stream(
        read_table(data_dir, "live_impressions", need["live_impressions"]),
        read_table(data_dir, "live_events", need["live_events"]),
    )


@dataclass
class EngineStats:
    """Counters of one engine run."""

    rows_in: int = 0
    late: int = 0
    unknown_room: int = 0
    emitted: int = 0
    pushes: int = 0
    unknown_user: int = 0
    unknown_event: int = 0
    null_field: int = 0


class StreamEngine:
    """Event-time engine for one reporting mode (see the module doc)."""

    def __init__(
        self,
        rooms: pl.DataFrame,
        long_view_ms: int,
        mode: str,
        *,
        allowed_lateness_ms: int = 0,
        behaviours: Mapping[str, str] = DEFAULT_BEHAVIOURS,
        window_ms: int = WINDOW_MS,
        users: pl.DataFrame | None = None,
        unknown_events: str = "dead-letter",
    ) -> None:
        """``users`` (a frame with ``user_id``): also dead-letter rows of users not in it;
        ``unknown_events``: ``"dead-letter"`` or ``"error"`` (see the module doc)."""
        if allowed_lateness_ms < 0:
            raise ConfigError(f"allowed_lateness_ms must be >= 0, got {allowed_lateness_ms}")
        final_emit_ts(mode)  # validates the mode
        dl.check_policy(unknown_events)
        self.unknown_events = unknown_events
        self.users = None if users is None else users.select(pl.col("user_id").cast(pl.Int64))
        self.rooms = rooms.select("live_id", "end_ts")
        self.long_view_ms = long_view_ms
        self.mode = mode
        self.lateness = allowed_lateness_ms
        self.behaviours = dict(behaviours)
        self.window_ms = window_ms
        self.stats = EngineStats()
        self._max_ts: int | None = None
        self._imps = pl.DataFrame(schema=STREAM_SCHEMA)
        self._events = pl.DataFrame(schema=STREAM_SCHEMA)
        # every row with emit_ts below this has been emitted (None: nothing yet); see _emit
        self._emitted_below: int | None = None
        self._dead: list[pl.DataFrame] = []

    @property
    def watermark(self) -> int | None:
        """``max ts seen - allowed lateness``; None before the first row."""
        return None if self._max_ts is None else self._max_ts - self.lateness

    @property
    def open_impressions(self) -> int:
        return len(self._imps)

    @property
    def dead_letters(self) -> pl.DataFrame:
        """Every rejected stream row with its ``reason``."""
        if not self._dead:
            return pl.DataFrame(schema=DEAD_SCHEMA)
        return pl.concat(self._dead)

    def write_dead_letters(self, path: str | Path) -> Path:
        """Write :attr:`dead_letters` as Parquet (also when empty) and return the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.dead_letters.write_parquet(p)
        return p

    def push(self, chunk: pl.DataFrame) -> pl.DataFrame:
        """Ingest the next chunk of the merged stream; return the rows now due."""
        missing = [c for c in STREAM_SCHEMA if c not in chunk.columns]
        if missing:
            raise DataValidationError(
                f"stream chunk lacks columns {missing} (see merge_stream)",
                file="stream",
                column=missing[0],
            )
        chunk = chunk.select(list(STREAM_SCHEMA)).cast(STREAM_SCHEMA)
        if self.unknown_events == "error":
            self._raise_on_unknown_events(chunk)
        first = self.stats.rows_in
        self.stats.pushes += 1
        self.stats.rows_in += len(chunk)
        if len(chunk) == 0:
            return self._emit(self.watermark)
        chunk = chunk.with_columns(pl.int_range(first, first + len(chunk)).alias("_row"))
        chunk = self._screen(chunk)
        chunk = self._reject_late(chunk).drop("_row")
        is_imp = pl.col("kind") == IMPRESSION
        self._imps = pl.concat([self._imps, chunk.filter(is_imp)])
        self._events = pl.concat([self._events, chunk.filter(~is_imp)])
        return self._emit(self.watermark)

    # ------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, object]:
        """Everything needed to continue this engine elsewhere (see ``stream.checkpoint``).

        Values are either ``pl.DataFrame`` (the open state, emitted ids, dead letters, rooms) or
        JSON-serialisable scalars / dicts (configuration, watermark, counters).
        """
        return {
            "config": {
                "mode": self.mode,
                "long_view_ms": self.long_view_ms,
                "allowed_lateness_ms": self.lateness,
                "behaviours": dict(self.behaviours),
                "window_ms": self.window_ms,
            },
            "max_ts": self._max_ts,
            "stats": asdict(self.stats),
            "rooms": self.rooms,
            "impressions": self._imps,
            "events": self._events,
            "emitted_below": self._emitted_below,
            "dead_letters": self.dead_letters,
        } | ({} if self.users is None else {"users": self.users})

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`); the configuration must match."""
        config = dict(state["config"])  # type: ignore[call-overload]
        mine = self.state_dict()["config"]
        if config != mine:
            raise ConfigError(
                f"engine state was saved with config {config}, this engine has {mine}; "
                "build the engine with the saved configuration (stream.checkpoint.restore_engine)"
            )
        frames: dict[str, pl.DataFrame] = {}
        for name in ("rooms", "impressions", "events", "dead_letters"):
            frame = state[name]
            if not isinstance(frame, pl.DataFrame):
                raise DataValidationError(f"engine state '{name}' is not a DataFrame")
            frames[name] = frame
        self.rooms = frames["rooms"].select("live_id", "end_ts")
        self._imps = frames["impressions"].select(list(STREAM_SCHEMA)).cast(STREAM_SCHEMA)
        self._events = frames["events"].select(list(STREAM_SCHEMA)).cast(STREAM_SCHEMA)
        saved = frames["dead_letters"]  # checkpoints from before photo_id / table / row lack them
        dead = saved.select(
            (pl.col(c) if c in saved.columns else pl.lit(None)).cast(t).alias(c)
            for c, t in DEAD_SCHEMA.items()
        )
        self._dead = [dead] if len(dead) else []
        users = state.get("users")
        if isinstance(users, pl.DataFrame):
            self.users = users.select(pl.col("user_id").cast(pl.Int64))
        max_ts = state["max_ts"]
        self._max_ts = None if max_ts is None else int(max_ts)  # type: ignore[call-overload]
        # checkpoints written before emitted_below kept the emitted ids instead; every push
        # emits up to the watermark, so theirs is the watermark at the checkpoint
        below = state.get("emitted_below", self.watermark)
        self._emitted_below = None if below is None else int(below)  # type: ignore[call-overload]
        self.stats = EngineStats(**dict(state["stats"]))  # type: ignore[call-overload]

    def flush(self) -> pl.DataFrame:
        """End of stream: emit every remaining row and clear the state."""
        out = self._emit(_NEVER)
        log.info("stream engine (%s) flushed: %s", self.mode, self.stats)
        return out

    # ------------------------------------------------------------------------------ steps
    def _dead_letter(self, rows: pl.DataFrame, reason: pl.Expr) -> None:
        """Keep ``rows`` (stream columns and ``_row``) in the dead-letter table with ``reason``."""
        self._dead.append(
            rows.select(
                *STREAM_SCHEMA,
                pl.lit(None, pl.Int64).alias("photo_id"),
                pl.lit("stream").alias("table"),
                pl.col("_row").cast(pl.Int64).alias("row"),
                reason.alias("reason"),
            )
        )

    def _raise_on_unknown_events(self, chunk: pl.DataFrame) -> None:
        bad = chunk.with_row_index("_i").filter(
            pl.col("kind").is_not_null() & ~pl.col("kind").is_in(KINDS)
        )
        if len(bad):
            rows = (bad["_i"].head(5) + self.stats.rows_in).to_list()
            raise dl.unknown_event_error("stream", "kind", bad["kind"], KINDS, rows)

    def _screen(self, chunk: pl.DataFrame) -> pl.DataFrame:
        """Dead-letter rows with null keys, unknown event names, rooms or users (module doc)."""
        is_imp = pl.col("kind") == IMPRESSION
        nulls = [
            (pl.col(c).is_null() & (is_imp if c in ("request_id", "position") else True), c)
            for c in STREAM_SCHEMA
        ]
        rules = [(cond, f"null {c}") for cond, c in nulls]
        rules.append((~pl.col("kind").is_in(KINDS), dl.UNKNOWN_EVENT))
        if self.users is not None:
            rules.append(
                (~pl.col("user_id").is_in(self.users["user_id"].implode()), dl.UNKNOWN_USER)
            )
        rules.append((~pl.col("live_id").is_in(self.rooms["live_id"].implode()), dl.UNKNOWN_ROOM))
        reason = pl.when(rules[0][0]).then(pl.lit(rules[0][1]))
        for cond, why in rules[1:]:
            reason = reason.when(cond).then(pl.lit(why))
        flagged = chunk.with_columns(reason.otherwise(pl.lit(None, pl.String)).alias("_why"))
        bad = flagged.filter(pl.col("_why").is_not_null())
        if not len(bad):
            return chunk
        counts = bad["_why"].value_counts()
        for why, n in counts.iter_rows():
            if why.startswith("null "):
                self.stats.null_field += n
            else:
                field = {
                    dl.UNKNOWN_EVENT: "unknown_event",
                    dl.UNKNOWN_USER: "unknown_user",
                    dl.UNKNOWN_ROOM: "unknown_room",
                }[why]
                setattr(self.stats, field, getattr(self.stats, field) + n)
        self._dead_letter(bad, pl.col("_why"))
        log.warning(
            "stream engine: %d row(s) set aside to the dead-letter table: %s",
            len(bad),
            dict(counts.iter_rows()),
        )
        return flagged.filter(pl.col("_why").is_null()).drop("_why")

    def _reject_late(self, chunk: pl.DataFrame) -> pl.DataFrame:
        # the watermark each row meets on arrival: max ts before it (this chunk and earlier)
        if not len(chunk):
            return chunk
        prior = pl.lit(self._max_ts if self._max_ts is not None else -_NEVER, pl.Int64)
        seen = pl.max_horizontal(pl.col("ts").cum_max().shift(1), prior)
        wm = seen - self.lateness
        flagged = chunk.with_columns(wm.alias("_wm"))
        is_late = pl.col("ts") < pl.col("_wm")
        late = flagged.filter(is_late)
        top = int(chunk["ts"].max())  # type: ignore[arg-type]
        self._max_ts = top if self._max_ts is None else max(top, self._max_ts)
        if len(late):
            self.stats.late += len(late)
            why = pl.concat_str(pl.lit("late: ts < watermark "), pl.col("_wm").cast(pl.String))
            self._dead_letter(late, why)
            log.warning("stream engine: %d late rows to the dead-letter table", len(late))
        return flagged.filter(~is_late).drop("_wm")

    def _emit(self, watermark: int | None) -> pl.DataFrame:
        """Rows with ``emitted_below <= emit_ts < watermark``, then retire what is done.

        A row due before the watermark depends only on events before it, and an impression
        accepted now has ``ts`` at or after every earlier watermark, so the rows below the
        previous watermark were all emitted by earlier pushes, with the same content: the
        band is exactly the rows not emitted yet (no set of emitted ids to keep).
        """
        if watermark is None:
            return self._empty()
        lo = self._emitted_below
        self._emitted_below = watermark if lo is None else max(lo, watermark)
        if len(self._imps) == 0:
            self._events = self._events.filter(pl.col("ts") >= watermark)
            return self._empty()
        visits = reconstruct_visits(
            self._imps.drop("kind"),
            self._events.rename({"kind": "event"}),
            self.rooms,
            self.long_view_ms,
            behaviours=self.behaviours,
        )
        due = emit_rows(
            visits,
            self.mode,
            behaviours=self.behaviours,
            window_ms=self.window_ms,
            emit_range=(lo, watermark),
        )
        self.stats.emitted += len(due)
        self._retire(visits, watermark)
        return due

    def _retire(self, visits: pl.DataFrame, watermark: int) -> None:
        """Drop impressions whose last row is emitted, and the events no one needs."""
        # An impression's click window ends at the *next* impression of the same (user, room),
        # so an impression may only leave once every earlier one of its pair has left too.
        final = visits.select(final_emit_ts(self.mode, self.window_ms))
        due = final.to_series().to_numpy() < watermark  # [N]
        cols = [visits[c].to_numpy() for c in ("user_id", "live_id", "ts")]
        keys = pair_time_keys(*cols)
        order = pair_order(keys.key, visits["request_id"].to_numpy(), visits["position"].to_numpy())
        pair, waiting = keys.pair[order], ~due[order]  # [N] in pair order
        seen = np.cumsum(waiting)  # impressions not due up to and including each row
        start = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])  # first row of each pair
        sizes = np.diff(np.r_[start, len(pair)])
        before_pair = np.repeat(seen[start] - waiting[start], sizes)  # not due in earlier pairs
        leave = np.empty(len(order), dtype=bool)
        leave[order] = seen == before_pair  # none waiting at or before it in its own pair
        if leave.any():
            self._imps = self._imps.filter(pl.Series(~leave))
        self._events = self._live_events_needed(watermark)

    def _live_events_needed(self, watermark: int) -> pl.DataFrame:
        """The events a visit rule can still read.

        A future impression is accepted only with ``ts >= watermark`` and a visit reads events at
        or after its impression, so an event before the watermark matters only to an *open*
        impression of its own (user, room) pair at or before it. Keeping just those (instead of
        every event after the earliest open impression) keeps the state small even when one
        long visit stays open for an hour.
        """
        ev_ts = self._events["ts"].to_numpy()
        keep = ev_ts >= watermark  # [E]
        if len(self._imps) and not keep.all():
            n = len(self._imps)
            codes, _ = pair_codes(
                np.concatenate(
                    [self._imps["user_id"].to_numpy(), self._events["user_id"].to_numpy()]
                ),
                np.concatenate(
                    [self._imps["live_id"].to_numpy(), self._events["live_id"].to_numpy()]
                ),
            )
            imp_pair, ev_pair = codes[:n], codes[n:]
            by_pair = np.lexsort((self._imps["ts"].to_numpy(), imp_pair))
            pairs, first = np.unique(imp_pair[by_pair], return_index=True)  # [P], sorted
            first_ts = self._imps["ts"].to_numpy()[by_pair][first]  # [P] earliest open impression
            at = np.minimum(np.searchsorted(pairs, ev_pair), len(pairs) - 1)  # [E]
            keep |= (pairs[at] == ev_pair) & (ev_ts >= first_ts[at])
        return self._events if keep.all() else self._events.filter(pl.Series(keep))

    def _empty(self) -> pl.DataFrame:
        return empty_rows(self.mode, behaviours=self.behaviours, window_ms=self.window_ms)
