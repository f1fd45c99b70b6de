"""Rows set aside (dead letters): their file format, their reasons, and the screen of the builders.

Every row a builder or the stream engine reads is either used or *set aside* with a reason:
counted, logged and written to ``dead_letters.parquet`` in the output directory, never silently
dropped. One format (:data:`DEAD_SCHEMA`) serves ``liverank build-samples`` and ``liverank
stream``:

* the merged-stream columns ``ts, user_id, live_id, kind, request_id, position``
  (:data:`liverank.stream.engine.STREAM_SCHEMA`; ``kind`` = ``"impression"`` or the event name),
* ``photo_id`` (video events only), ``table`` (the table the row came from, or ``"stream"`` for
  the engine's input), ``row`` (its 0-based row in that table's Parquet file, or its index in
  the engine's input) and ``reason``.

Reasons (:func:`reason_kind` is the part before ``":"``, used for counting):

* ``null <column>`` - a column the row cannot be used without is null;
* ``unknown event name`` - the event is not in the table's closed set (``schema.EVENTS``);
  with ``unknown_events="error"`` this is an error instead (:func:`check_event_names`);
* ``unknown user (not in users table)``, ``unknown room (not in rooms table)``, ``unknown video
  (not in videos table)`` - the user / room / video the row is about does not exist;
* ``late: ts < watermark <wm>`` - stream engine only (:mod:`liverank.stream.engine`).

A row gets the first reason that applies, in this order. Unknown *authors* are not a reason: the
author's side features become code 0 (unknown), as for any missing side information.

:class:`RowScreen` applies these rules to ``live_impressions``, ``live_events`` and
``video_events`` of a dataset directory in one vectorised pass per table, and hands the builders
scans that leave the set-aside rows out (:meth:`RowScreen.scan`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from liverank.data.io import read_table, table_path
from liverank.data.schema import EVENTS
from liverank.data.validate import check_columns
from liverank.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

DEAD_LETTERS_FILE = "dead_letters.parquet"

#: columns of the stream engine's merged stream (request_id / position are null on live
#: events): defined here because a dead-letter row starts with them
STREAM_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),
    "user_id": pl.Int64(),
    "live_id": pl.Int64(),
    "kind": pl.String(),
    "request_id": pl.Int64(),
    "position": pl.Int64(),
}
#: columns of a dead-letter file (see the module doc): the merged stream's, then where the row
#: came from and why it was set aside
DEAD_SCHEMA: dict[str, pl.DataType] = {
    **STREAM_SCHEMA,
    "photo_id": pl.Int64(),
    "table": pl.String(),
    "row": pl.Int64(),
    "reason": pl.String(),
}

UNKNOWN_EVENT = "unknown event name"
UNKNOWN_USER = "unknown user (not in users table)"
UNKNOWN_ROOM = "unknown room (not in rooms table)"
UNKNOWN_VIDEO = "unknown video (not in videos table)"
LATE = "late"

#: what to do with rows whose event name is not in the closed set
UnknownEvents = Literal["dead-letter", "error"]
UNKNOWN_EVENT_POLICIES: tuple[str, ...] = ("dead-letter", "error")

#: the tables the builders screen: columns that must not be null, the event column, the
#: references checked (column -> referenced table, reason) and other columns the builders read
SCREENED: dict[str, dict] = {
    "live_impressions": {
        "required": ("request_id", "ts", "user_id", "live_id", "author_id", "position"),
        "event": None,
        "refs": {"user_id": ("users", UNKNOWN_USER), "live_id": ("rooms", UNKNOWN_ROOM)},
        "also_read": (),
    },
    "live_events": {
        "required": ("ts", "user_id", "live_id", "author_id", "event"),
        "event": "event",
        "refs": {"user_id": ("users", UNKNOWN_USER), "live_id": ("rooms", UNKNOWN_ROOM)},
        "also_read": (),
    },
    "video_events": {
        "required": ("ts", "user_id", "photo_id", "author_id", "event"),
        "event": "event",
        "refs": {"user_id": ("users", UNKNOWN_USER), "photo_id": ("videos", UNKNOWN_VIDEO)},
        "also_read": ("play_ms",),
    },
}


def reason_kind(reason: pl.Expr) -> pl.Expr:
    """The countable part of a reason: the text before ``":"`` (``late: ...`` -> ``late``)."""
    return reason.str.split(":").list.first()


def count_reasons(dead: pl.DataFrame) -> dict[str, int]:
    """``{reason kind: rows}`` of a dead-letter frame, largest first."""
    if not len(dead):
        return {}
    counts = dead.group_by(reason_kind(pl.col("reason")).alias("r")).len().sort("len", "r")
    return {r: int(n) for r, n in reversed(list(counts.iter_rows()))}


def check_policy(unknown_events: str) -> None:
    if unknown_events not in UNKNOWN_EVENT_POLICIES:
        raise ConfigError(
            f"unknown_events must be one of {list(UNKNOWN_EVENT_POLICIES)}, got '{unknown_events}'"
        )


def unknown_event_error(
    file: str, column: str, values: pl.Series, allowed: tuple[str, ...], rows: list[int]
) -> DataValidationError:
    """The one-line error for unknown event names: the bad values with their counts."""
    counts = values.value_counts(sort=True)
    listed = ", ".join(f"{v!r} x {n:,}" for v, n in counts.head(8).iter_rows())
    more = f" and {len(counts) - 8} more" if len(counts) > 8 else ""
    return DataValidationError(
        f"{len(values):,} row(s) have unknown event names: {listed}{more}; expected one of "
        f"{list(allowed)} (fix them, or set them aside with --unknown-events dead-letter)",
        file=file,
        column=column,
        rows=rows,
    )


def empty_dead_letters() -> pl.DataFrame:
    return pl.DataFrame(schema=DEAD_SCHEMA)


def to_dead_letters(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """``frame`` (with ``row`` and ``reason``) in :data:`DEAD_SCHEMA`; absent columns are null."""
    if "event" in frame.columns:
        frame = frame.rename({"event": "kind"})
    elif table == "live_impressions":
        frame = frame.with_columns(pl.lit("impression").alias("kind"))
    frame = frame.with_columns(pl.lit(table).alias("table"))
    return frame.select(
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in DEAD_SCHEMA.items()
    )


@dataclass
class RowScreen:
    """Which rows of the screened tables a builder uses; the others are dead letters.

    Build it with :meth:`of`. ``known`` holds the ids of ``users``, ``rooms`` and ``videos``;
    ``read`` the rows read per screened table; ``dead`` the set-aside rows (:data:`DEAD_SCHEMA`).
    """

    root: Path
    known: dict[str, pl.Series]
    read: dict[str, int] = field(default_factory=dict)
    dead: pl.DataFrame = field(default_factory=empty_dead_letters)

    @classmethod
    def of(cls, dataset_dir: str | Path, unknown_events: str = "dead-letter") -> RowScreen:
        """Screen the dataset at ``dataset_dir`` (one pass over each screened table).

        With ``unknown_events="error"`` an unknown event name raises
        :class:`DataValidationError` naming the file, the column, the bad values and their
        counts; with ``"dead-letter"`` (default) those rows are set aside.
        """
        check_policy(unknown_events)
        root = Path(dataset_dir)
        keys = {"users": "user_id", "rooms": "live_id", "videos": "photo_id"}
        for table, key in keys.items():
            check_columns(root, table, [key])
        for table, rule in SCREENED.items():
            check_columns(root, table, rule["required"])
        known = {t: read_table(root, t, [k])[k].drop_nulls() for t, k in keys.items()}
        screen = cls(root, known)
        frames = []
        for table, rule in SCREENED.items():
            path = table_path(root, table)
            screen.read[table] = pl.scan_parquet(path).select(pl.len()).collect().item()
            if unknown_events == "error" and rule["event"] is not None:
                check_event_names(path, rule["event"], EVENTS[(table, rule["event"])])
            cols = list(dict.fromkeys([*rule["required"], *rule["also_read"]]))
            try:  # the first full read of these columns: corrupt pages show up here
                bad = (
                    pl.scan_parquet(path)
                    .select(cols)
                    .with_row_index("row")
                    .with_columns(screen.reason(table).alias("reason"))
                    .filter(pl.col("reason").is_not_null())
                    .collect()
                )
            except pl.exceptions.ComputeError as exc:
                raise DataValidationError(
                    f"cannot read Parquet file: {' '.join(str(exc).split())}", file=str(path)
                ) from exc
            if len(bad):
                frames.append(to_dead_letters(bad, table))
        if frames:
            screen.dead = pl.concat(frames)
            log.warning(
                "set aside %d row(s) (written to %s): %s",
                len(screen.dead),
                DEAD_LETTERS_FILE,
                screen.set_aside,
            )
        return screen

    def reason(self, table: str) -> pl.Expr:
        """Why a row of ``table`` is set aside (null = the row is used); see the module doc."""
        rule = SCREENED[table]
        rules = [(pl.col(c).is_null(), f"null {c}") for c in rule["required"]]
        if rule["event"] is not None:
            allowed = list(EVENTS[(table, rule["event"])])
            rules.append((~pl.col(rule["event"]).cast(pl.String).is_in(allowed), UNKNOWN_EVENT))
        for col, (ref, why) in rule["refs"].items():
            rules.append((~pl.col(col).is_in(self.known[ref].implode()), why))
        cond, why = rules[0]
        expr = pl.when(cond).then(pl.lit(why))
        for cond, why in rules[1:]:
            expr = expr.when(cond).then(pl.lit(why))
        return expr.otherwise(pl.lit(None, pl.String))

    def scan(self, table: str) -> pl.LazyFrame:
        """``table`` without its set-aside rows (a plain scan when none is set aside)."""
        lf = pl.scan_parquet(table_path(self.root, table))
        if table in SCREENED and self.rows_set_aside(table):
            lf = lf.filter(self.reason(table).is_null())
        return lf

    def rows_set_aside(self, table: str) -> int:
        return int((self.dead["table"] == table).sum())

    @property
    def set_aside(self) -> dict[str, dict[str, int]]:
        """``{table: {reason kind: rows}}`` (tables with no set-aside row are left out)."""
        out = {}
        for table in SCREENED:
            counts = count_reasons(self.dead.filter(pl.col("table") == table))
            if counts:
                out[table] = counts
        return out

    def write(self, out_dir: str | Path) -> Path:
        """Write the dead letters to ``out_dir/dead_letters.parquet`` (also when there are none)."""
        path = Path(out_dir) / DEAD_LETTERS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.dead.write_parquet(path)
        return path


def check_event_names(path: str | Path, column: str, allowed: tuple[str, ...]) -> None:
    """Raise :func:`unknown_event_error` when ``column`` of the Parquet file ``path`` holds a
    value outside ``allowed`` (nulls are left to the screen)."""
    bad = (
        pl.scan_parquet(path)
        .select(column)
        .with_row_index("row")
        .filter(pl.col(column).is_not_null() & ~pl.col(column).cast(pl.String).is_in(allowed))
        .collect()
    )
    if len(bad):
        raise unknown_event_error(
            str(path), column, bad[column].cast(pl.String), allowed, bad["row"].head(5).to_list()
        )
