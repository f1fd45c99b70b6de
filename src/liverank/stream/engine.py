"""Incremental event-time engine: a merged event stream in, the rows of a reporting mode out.

The input is one merged stream (:func:`merge_stream`) of ``live_impressions`` and
``live_events`` rows, pushed in chunks in (roughly) event-time order. The engine keeps

* a **watermark** ``max event ts seen - allowed_lateness_ms``. A row that arrives with
  ``ts < watermark`` is *late*: it goes to the dead-letter table with its reason (and is
  counted), never silently dropped; so every row with ``ts < watermark`` that the engine will
  ever use is already in its state;
* the open **visit state**: the impressions whose last emission is not yet due, and the events
  a visit rule can still look at: those at or after the watermark, and older ones of a
  (user, room) pair only from that pair's earliest open impression on (enter, exit and
  behaviours of a visit all come at or after its impression).

On each push the engine re-derives the visits of its open state with
:func:`liverank.data.visits.reconstruct_visits`, computes the rows of
:func:`liverank.stream.reporting.emit_rows` and emits those with ``emit_ts < watermark`` that it
has not emitted yet. Because a row due before the watermark depends only on events before it
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

import polars as pl

from liverank.data.visits import DEFAULT_BEHAVIOURS, reconstruct_visits, time_columns
from liverank.errors import ConfigError, DataValidationError
from liverank.stream.reporting import KEYS, WINDOW_MS, emit_rows, final_emit_ts

log = logging.getLogger(__name__)

IMPRESSION = "impression"
#: columns of the merged stream (request_id / position are null on live events)
STREAM_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),
    "user_id": pl.Int64(),
    "live_id": pl.Int64(),
    "kind": pl.String(),
    "request_id": pl.Int64(),
    "position": pl.Int64(),
}
DEAD_SCHEMA: dict[str, pl.DataType] = STREAM_SCHEMA | {"reason": pl.String()}
_IDS = ("sample_id", "request_id", "position")
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


@dataclass
class EngineStats:
    """Counters of one engine run."""

    rows_in: int = 0
    late: int = 0
    unknown_room: int = 0
    emitted: int = 0
    pushes: int = 0


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
    ) -> None:
        if allowed_lateness_ms < 0:
            raise ConfigError(f"allowed_lateness_ms must be >= 0, got {allowed_lateness_ms}")
        final_emit_ts(mode)  # validates the mode
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
        self._emitted = pl.DataFrame(schema=dict.fromkeys(_IDS, pl.Int64()))
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
        self.stats.pushes += 1
        self.stats.rows_in += len(chunk)
        if len(chunk) == 0:
            return self._emit(self.watermark)
        chunk = self._reject_late(chunk)
        chunk = self._reject_unknown_rooms(chunk)
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
            "emitted": self._emitted,
            "dead_letters": self.dead_letters,
        }

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
        for name in ("rooms", "impressions", "events", "emitted", "dead_letters"):
            frame = state[name]
            if not isinstance(frame, pl.DataFrame):
                raise DataValidationError(f"engine state '{name}' is not a DataFrame")
            frames[name] = frame
        self.rooms = frames["rooms"].select("live_id", "end_ts")
        self._imps = frames["impressions"].select(list(STREAM_SCHEMA)).cast(STREAM_SCHEMA)
        self._events = frames["events"].select(list(STREAM_SCHEMA)).cast(STREAM_SCHEMA)
        self._emitted = frames["emitted"].select(_IDS).cast(dict.fromkeys(_IDS, pl.Int64()))
        dead = frames["dead_letters"].select(list(DEAD_SCHEMA)).cast(DEAD_SCHEMA)
        self._dead = [dead] if len(dead) else []
        max_ts = state["max_ts"]
        self._max_ts = None if max_ts is None else int(max_ts)  # type: ignore[call-overload]
        self.stats = EngineStats(**dict(state["stats"]))  # type: ignore[call-overload]

    def flush(self) -> pl.DataFrame:
        """End of stream: emit every remaining row and clear the state."""
        out = self._emit(_NEVER)
        log.info("stream engine (%s) flushed: %s", self.mode, self.stats)
        return out

    # ------------------------------------------------------------------------------ steps
    def _reject_late(self, chunk: pl.DataFrame) -> pl.DataFrame:
        # the watermark each row meets on arrival: max ts before it (this chunk and earlier)
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
            self._dead.append(
                late.select(
                    *STREAM_SCHEMA,
                    pl.concat_str(
                        pl.lit("late: ts < watermark "), pl.col("_wm").cast(pl.String)
                    ).alias("reason"),
                )
            )
            log.warning("stream engine: %d late rows to the dead-letter table", len(late))
        return flagged.filter(~is_late).drop("_wm")

    def _reject_unknown_rooms(self, chunk: pl.DataFrame) -> pl.DataFrame:
        known = pl.col("live_id").is_in(self.rooms["live_id"].implode())
        bad = chunk.filter(~known & (pl.col("kind") == IMPRESSION))
        if len(bad):
            self.stats.unknown_room += len(bad)
            self._dead.append(
                bad.with_columns(pl.lit("unknown room (not in rooms table)").alias("reason"))
            )
            log.warning("stream engine: %d impressions of unknown rooms dead-lettered", len(bad))
        return chunk.filter(known | (pl.col("kind") != IMPRESSION))

    def _emit(self, watermark: int | None) -> pl.DataFrame:
        if watermark is None:
            return self._empty()
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
        rows = emit_rows(visits, self.mode, behaviours=self.behaviours, window_ms=self.window_ms)
        due = rows.filter(pl.col("emit_ts") < watermark).join(
            self._emitted, on="sample_id", how="anti"
        )
        self._emitted = pl.concat([self._emitted, due.select(_IDS)])
        self.stats.emitted += len(due)
        self._retire(visits, watermark)
        return due

    def _retire(self, visits: pl.DataFrame, watermark: int) -> None:
        """Drop impressions whose last row is emitted, their ids and the events no one needs."""
        # An impression's click window ends at the *next* impression of the same (user, room),
        # so an impression may only leave once every earlier one of its pair has left too.
        order = ["user_id", "live_id", "ts", "request_id", "position"]
        due = (final_emit_ts(self.mode, self.window_ms) < watermark).cast(pl.Int8)
        done = (
            visits.sort(order)
            .filter(due.cum_min().over("user_id", "live_id") == 1)
            .select("request_id", "position")
        )
        if len(done):
            self._imps = self._imps.join(done, on=["request_id", "position"], how="anti")
            # rows of retired impressions cannot come back: forget their ids
            self._emitted = self._emitted.join(done, on=["request_id", "position"], how="anti")
        self._events = self._live_events_needed(watermark)

    def _live_events_needed(self, watermark: int) -> pl.DataFrame:
        """The events a visit rule can still read.

        A future impression is accepted only with ``ts >= watermark`` and a visit reads events at
        or after its impression, so an event before the watermark matters only to an *open*
        impression of its own (user, room) pair at or before it. Keeping just those (instead of
        every event after the earliest open impression) keeps the state small even when one
        long visit stays open for an hour.
        """
        late_enough = pl.col("ts") >= watermark
        if len(self._imps) == 0:
            return self._events.filter(late_enough)
        first = self._imps.group_by("user_id", "live_id").agg(pl.col("ts").min().alias("_first"))
        return (
            self._events.join(first, on=["user_id", "live_id"], how="left", maintain_order="left")
            .filter(late_enough | (pl.col("ts") >= pl.col("_first")).fill_null(False))
            .drop("_first")
        )

    def _empty(self) -> pl.DataFrame:
        cols = {c: pl.Int64() for c in (*KEYS, "exit_ts", *time_columns(self.behaviours).values())}
        visits = pl.DataFrame(schema=cols | {"clicked": pl.Boolean()})
        return emit_rows(visits, self.mode, behaviours=self.behaviours, window_ms=self.window_ms)
