"""What every public-dataset loader shares: reading a source CSV against its expected columns
(naming variants, delimiter, types, truncation, time range), and the accounting of every row
read (written, or set aside with a reason).

Errors (:class:`~liverank.errors.DataValidationError`) name the file, the column and the first
offending lines (1-based line numbers of the CSV file, the header being line 1):

* a missing file: the names looked for (every naming variant);
* a wrong delimiter (the header is one field holding ``;``, a tab or ``|``);
* a missing column: the names accepted for it, and the header found;
* a value that is not of its column's type (e.g. ``"abc"`` in an integer column);
* a missing value in a column that cannot be empty (a truncated or ragged file);
* a timestamp outside 2000-01-01 .. 2100-01-01 in epoch milliseconds (seconds, say);
* a duplicate key in a dimension table.

Rows that are well formed but cannot be used (an event of a room the room table does not have,
one outside the room's air time, ...) are *set aside*: counted per reason in the
:class:`IngestReport` and written to ``set_aside.parquet`` with their file, line and reason.
Nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow.parquet as pq

from liverank.data.schema import TABLES
from liverank.errors import DataValidationError
from liverank.features.encoders import MS_PER_DAY

#: epoch-ms bounds of a plausible timestamp (a value in seconds falls below the lower one)
TS_MIN, TS_MAX = 946_684_800_000, 4_102_444_800_000  # 2000-01-01, 2100-01-01 UTC
BEIJING_MS = 8 * 3_600_000  # Kuaishou's days are Beijing days (UTC+8)
LINE = "__line"  # 1-based line of a CSV row (header = line 1)
REPORT_FILE = "ingest_report.json"
SET_ASIDE_FILE = "set_aside.parquet"
#: columns of ``set_aside.parquet``: where the row came from, why, and its event columns
SET_ASIDE_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
    "user_id": pl.Int64(),
    "live_id": pl.Int64(),
    "author_id": pl.Int64(),
    "ts": pl.Int64(),
    "value": pl.Float64(),
}
FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)
_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
MAX_SHOWN = 5
#: called with the name of each step of a long ingest (a progress display)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Field:
    """An expected source column: its canonical name, the names accepted for it (first = the
    current documentation's), its kind (``int``, ``float``, ``str``, ``ts``) and whether a
    value may be empty."""

    name: str
    kind: str
    aliases: tuple[str, ...] = ()
    nullable: bool = False

    @property
    def accepted(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def find_file(root: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` present in ``root`` (naming variants); a clear error if none."""
    for name in names:
        if (root / name).exists():
            return root / name
    raise DataValidationError(
        f"no {what} file: looked for {', '.join(names)}", file=str(root / names[0])
    )


def _header(path: Path) -> list[str]:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            line = fh.readline().rstrip("\r\n")
    except OSError as exc:
        raise DataValidationError(f"cannot read: {exc}", file=str(path)) from exc
    if not line:
        raise DataValidationError("empty file (no header line)", file=str(path))
    fields = line.split(",")
    if len(fields) == 1:
        for sep, name in _DELIMITERS.items():
            if sep in line:
                raise DataValidationError(
                    f"the header is split by a {name}, not a comma: {line[:80]!r} "
                    "(the dataset's CSV files are comma-separated)",
                    file=str(path),
                )
    return [f.strip() for f in fields]


def scan_csv(path: Path, fields: Sequence[Field]) -> pl.LazyFrame:
    """A lazy scan of ``path`` with each field under its canonical name and type, plus the
    line number (``__line``). Checks the header now (delimiter, missing columns); types,
    empty values and timestamp ranges are checked by :func:`check_values` (one streaming pass).
    Columns not in ``fields`` are not read."""
    header = _header(path)
    rename: dict[str, str] = {}
    for f in fields:
        found = next((a for a in f.accepted if a in header), None)
        if found is None:
            raise DataValidationError(
                f"missing column (accepted names: {', '.join(f.accepted)}); the header has "
                f"{header}",
                file=str(path),
                column=f.name,
            )
        rename[found] = f.name
    lf = pl.scan_csv(
        path,
        infer_schema=False,  # every column as text: the types are checked with line numbers
        quote_char='"',
        truncate_ragged_lines=False,
        row_index_name=LINE,
        row_index_offset=2,
    )
    return lf.select(LINE, *[pl.col(src).alias(dst) for src, dst in rename.items()])


def _typed(f: Field) -> pl.Expr:
    col = pl.col(f.name).str.strip_chars()
    if f.kind == "ts":  # epoch ms, or an ISO date-time read as UTC (KLM3's CSV and Parquet)
        return (
            pl.when(col.str.contains(r"^-?\d+$"))
            .then(col.cast(pl.Int64, strict=False))
            .otherwise(
                col.str.to_datetime(strict=False, time_unit="ms", time_zone="UTC").dt.epoch("ms")
            )
        )
    if f.kind == "int":
        return col.cast(pl.Int64, strict=False)
    if f.kind == "float":
        return col.cast(pl.Float64, strict=False)
    return col


def typed(lf: pl.LazyFrame, fields: Sequence[Field]) -> pl.LazyFrame:
    """``lf`` (from :func:`scan_csv`) with each field cast to its kind (no checks)."""
    return lf.with_columns(*[_typed(f).alias(f.name) for f in fields])


def scan_parquet(paths: Path | Sequence[Path], fields: Sequence[Field]) -> pl.LazyFrame:
    """:func:`scan_csv` for Parquet files (one file, or the shards of one table): each field
    under its canonical name as text (a date-time column as its ISO text), and the 0-based
    row (``__line``; for shards, the row over the shards in the order given), so the same
    :func:`check_values` / :func:`typed` apply. Missing columns are named now."""
    files = [paths] if isinstance(paths, Path) else list(paths)
    if not files:
        raise DataValidationError("no Parquet files")
    frames = []
    for path in files:
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as exc:  # polars raises several types for a corrupt file
            raise DataValidationError(f"cannot read Parquet file: {exc}", file=str(path)) from exc
        cols = []
        for f in fields:
            found = next((a for a in f.accepted if a in schema), None)
            if found is None:
                raise DataValidationError(
                    f"missing column (accepted names: {', '.join(f.accepted)}); the file has "
                    f"{list(schema)}",
                    file=str(path),
                    column=f.name,
                )
            cols.append(pl.col(found).cast(pl.String).alias(f.name))
        frames.append(pl.scan_parquet(path).select(cols))
    return pl.concat(frames).with_row_index(LINE).with_columns(pl.col(LINE).cast(pl.Int64))


def check_values(path: Path, lf: pl.LazyFrame, fields: Sequence[Field]) -> int:
    """One pass over the file: raise on the first type error, empty required value or
    timestamp out of range (module doc); returns the number of data rows."""
    problems: list[pl.Expr] = []
    labels: list[tuple[str, str, str]] = []
    for f in fields:
        raw = pl.col(f.name).str.strip_chars()
        empty = raw.is_null() | (raw == "")
        value = _typed(f)
        if not f.nullable:
            problems.append(empty)
            labels.append((f.name, "empty value (a truncated or ragged file?)", "missing"))
        if f.kind != "str":
            problems.append(~empty & value.is_null())
            kind = {"int": "n integer", "float": " number", "ts": " timestamp"}[f.kind]
            labels.append((f.name, f"not a{kind}", ""))
        if f.kind == "ts":
            problems.append(~empty & ((value < TS_MIN) | (value >= TS_MAX)))
            labels.append(
                (
                    f.name,
                    "timestamp not a date-time nor epoch ms in 2000-01-01 .. 2100-01-01 "
                    "(seconds instead of milliseconds?)",
                    "",
                )
            )
    flags = [p.alias(f"__bad{i}") for i, p in enumerate(problems)]
    try:
        counts = lf.select(pl.len().alias("__rows"), *[f.sum() for f in flags]).collect(
            engine="streaming"
        )
    except pl.exceptions.PolarsError as exc:
        raise DataValidationError(f"cannot parse the CSV file: {exc}", file=str(path)) from exc
    for i, (column, message, _) in enumerate(labels):
        if counts[f"__bad{i}"][0]:
            bad = (
                lf.filter(problems[i])
                .select(LINE, pl.col(column))
                .head(MAX_SHOWN)
                .collect(engine="streaming")
            )
            where = (
                "lines are 1-based, the header is line 1"
                if path.suffix == ".csv"
                else "rows are 0-based"
            )
            raise DataValidationError(
                f"{message}: {counts[f'__bad{i}'][0]:,} row(s); {where}",
                file=str(path),
                column=column,
                rows=bad[LINE].to_list(),
                examples=bad[column].to_list(),
            )
    return int(counts["__rows"][0])


def check_unique(path: Path, df: pl.DataFrame, key: str) -> None:
    """Raise naming the lines of the first duplicated values of ``key``."""
    dup = df.filter(pl.col(key).is_duplicated())
    if dup.height:
        dup = dup.sort(key, LINE).head(MAX_SHOWN)
        raise DataValidationError(
            f"duplicate key: {df.height - df[key].n_unique():,} repeated value(s)",
            file=str(path),
            column=key,
            rows=dup[LINE].to_list(),
            examples=dup[key].to_list(),
        )


@dataclass
class FileCount:
    """What became of one source file's rows."""

    read: int = 0
    used: int = 0  # rows that became output rows (each once, whatever it produced)
    written: dict[str, int] = field(default_factory=dict)  # table -> rows
    set_aside: dict[str, int] = field(default_factory=dict)  # reason -> rows
    notes: dict[str, int] = field(default_factory=dict)  # counted, not set aside

    @property
    def accounted(self) -> int:
        return sum(self.set_aside.values()) + self.used


@dataclass
class IngestReport:
    """The accounting of one ingest: per source file, rows read, used, set aside by reason."""

    source: str
    files: dict[str, FileCount] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)  # written rows per canonical table
    notes: list[str] = field(default_factory=list)

    def file(self, name: str) -> FileCount:
        return self.files.setdefault(name, FileCount())

    def check_accounted(self) -> None:
        """Every row read is used or set aside (a loader bug otherwise)."""
        for name, c in self.files.items():
            if c.accounted != c.read:
                raise AssertionError(
                    f"{name}: {c.read} rows read, {c.used} used + "
                    f"{sum(c.set_aside.values())} set aside"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": {
                k: {
                    "read": v.read,
                    "used": v.used,
                    "set_aside": v.set_aside,
                    "written": v.written,
                    "notes": v.notes,
                }
                for k, v in self.files.items()
            },
            "tables": self.tables,
            "notes": self.notes,
        }

    def save(self, out: Path) -> None:
        (out / REPORT_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def set_aside_rows(frame: FrameT, file: str) -> FrameT:
    """``frame`` (with ``__line``, ``reason`` and some event columns) in the set-aside schema
    (eager or lazy, as given)."""
    cols = [
        pl.lit(file).alias("file"),
        pl.col(LINE).cast(pl.Int64).alias("line"),
        pl.col("reason"),
    ]
    for name, dtype in SET_ASIDE_SCHEMA.items():
        if name in ("file", "line", "reason"):
            continue
        cols.append(
            (pl.col(name) if name in frame.collect_schema() else pl.lit(None))
            .cast(dtype)
            .alias(name)
        )
    return frame.select(cols)


def local_midnight(ts: int, offset_ms: int) -> int:
    """Epoch ms of the local midnight at or before ``ts`` (local = UTC + ``offset_ms``)."""
    return (ts + offset_ms) // MS_PER_DAY * MS_PER_DAY - offset_ms


def write_by_day(
    rows: pl.LazyFrame,
    dest: Path,
    table: str,
    start: int,
    end: int,
    step: Progress,
    request_ids: bool = False,
) -> int:
    """Write ``rows`` as the canonical ``table``, one day at a time in ``ts`` order (one
    Parquet row group per day); ``request_ids`` numbers the rows from 1 in that order."""
    spec = TABLES[table]
    schema = spec.polars_schema
    path = dest / f"{table}.parquet"
    keys = [k for k in ("live_id", "photo_id") if k in schema]
    written = 0
    writer: pq.ParquetWriter | None = None
    try:
        for day_start in range(start, max(end, start + MS_PER_DAY), MS_PER_DAY):
            step(f"{table}: day {(day_start - start) // MS_PER_DAY + 1}")
            day = (
                rows.filter(pl.col("ts").is_between(day_start, day_start + MS_PER_DAY, "left"))
                .collect(engine="streaming")
                .sort("ts", "user_id", *keys, maintain_order=True)
            )
            if request_ids:
                day = day.with_columns(
                    pl.int_range(written + 1, written + day.height + 1, dtype=pl.Int64).alias(
                        "request_id"
                    ),
                    pl.lit(0, dtype=pl.Int32).alias("position"),
                )
            frame = day.select([pl.col(c).cast(t) for c, t in schema.items()]).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, frame.schema, compression="zstd")
            writer.write_table(frame)
            written += day.height
    finally:
        if writer is not None:
            writer.close()
    return written


#: files an ingest writes beside the canonical tables
EXTRA_OUTPUTS = (
    SET_ASIDE_FILE,
    REPORT_FILE,
    "title_embeddings.npy",
    "live_questionnaire.parquet",
)


def remove_output(out: Path) -> None:
    """Remove a previous ingest's files from ``out`` (only the files an ingest writes)."""
    for name in TABLES:
        (out / f"{name}.parquet").unlink(missing_ok=True)
    for name in (*EXTRA_OUTPUTS, "meta.json"):
        (out / name).unlink(missing_ok=True)


#: set-aside reasons every event screen shares (the unknown-room reason names the loader's file)
UNKNOWN_USER = "unknown user (not in user.csv)"
OTHER_STREAMER = "streamer differs from the room's"
OFF_AIR = "outside the room's air time"


def screen_events(
    lf: pl.LazyFrame,
    rooms: pl.DataFrame,
    users: pl.DataFrame,
    unknown_room: str,
    *,
    author: bool = True,
    extra: Sequence[tuple[pl.Expr, str]] = (),
    unknown_user: str = UNKNOWN_USER,
) -> pl.LazyFrame:
    """``lf`` (events with ``user_id, live_id, ts`` and, with ``author``, ``author_id``) joined
    to its room (``__room_author, __start, __end``) and user, with a ``reason`` (null =
    usable): the first rule that applies of unknown room, unknown user, another author than
    the room's, outside the room's air time, then ``extra``. Without ``author`` the file has
    no author column: the room's is taken."""
    r = rooms.lazy().select(
        "live_id",
        pl.col("author_id").alias("__room_author"),
        pl.col("start_ts").alias("__start"),
        pl.col("end_ts").alias("__end"),
    )
    u = users.lazy().select("user_id", pl.lit(True).alias("__user"))
    out = lf.join(r, on="live_id", how="left").join(u, on="user_id", how="left")
    if not author:
        out = out.with_columns(pl.col("__room_author").alias("author_id"))
    reason = (
        pl.when(pl.col("__room_author").is_null())
        .then(pl.lit(unknown_room))
        .when(pl.col("__user").is_null())
        .then(pl.lit(unknown_user))
        .when(pl.col("author_id") != pl.col("__room_author"))
        .then(pl.lit(OTHER_STREAMER))
        .when((pl.col("ts") < pl.col("__start")) | (pl.col("ts") >= pl.col("__end")))
        .then(pl.lit(OFF_AIR))
    )
    for cond, why in extra:
        reason = reason.when(cond).then(pl.lit(why))
    return out.with_columns(reason.otherwise(None).alias("reason"))
