"""Where the stream engine's input comes from and where its rows go: sources and sinks.

A :class:`StreamSource` hands out consecutive chunks of the merged stream
(:data:`liverank.stream.engine.STREAM_SCHEMA`, see :func:`~liverank.stream.engine.merge_stream`).
Its **offset** is the number of stream rows consumed so far (the index of the next row): a
checkpoint stores it next to the engine state and a restart calls ``seek(offset)``
(``stream.checkpoint``). ``commit(offset)`` tells the source that every row before ``offset`` is
safely reflected downstream (sink written and, when checkpointing, state saved); a replay source
ignores it, the Redis source acknowledges entries (``stream.redis_streams``).

* :class:`FrameReplaySource` / :class:`ParquetReplaySource` - replay of an in-memory stream or of a
  canonical dataset directory (``merge_stream(live_impressions, live_events)``; the merge is a
  deterministic sort, so row ``i`` is the same row in every run and the offset is a row index).
* :class:`InProcessSource` - embedded use: a producer thread calls ``put(df)`` / ``close()``, the
  consumer (the runner) reads. Not replayable: after a restart the producer must put again from
  the restored offset.

A sink receives the rows the engine emits. Rows are keyed by the deterministic ``sample_id``, and
after a restart the rows emitted between the last checkpoint and the crash come again with the
same ids, so sinks are idempotent on ``sample_id``:

* :class:`ParquetSink` - part files in a directory; rows whose id is already on disk (from before
  a restart) are dropped when written, and ``read()`` returns every row once.
* :class:`InProcessSink` - keeps the frames in memory (``frame()`` dedupes).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path

import polars as pl

from liverank.errors import ConfigError, DataValidationError
from liverank.stream.engine import STREAM_SCHEMA, read_stream

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 10_000
PART_PATTERN = "part-{:06d}.parquet"


def validate_stream_frame(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """``df`` restricted and cast to :data:`STREAM_SCHEMA`; names the first missing column."""
    missing = [c for c in STREAM_SCHEMA if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"stream rows lack column(s) {missing}; expected {list(STREAM_SCHEMA)} "
            "(see liverank.stream.engine.merge_stream)",
            file=where,
            column=missing[0],
        )
    try:
        return df.select(list(STREAM_SCHEMA)).cast(STREAM_SCHEMA)
    except pl.exceptions.PolarsError as exc:
        raise DataValidationError(
            f"stream rows do not cast to {STREAM_SCHEMA}: {exc}", file=where
        ) from exc


class StreamSource(ABC):
    """Consecutive chunks of the merged stream, with a row offset (see the module doc)."""

    #: rows in the whole stream when known (progress bars), else None
    total_rows: int | None = None

    @property
    @abstractmethod
    def offset(self) -> int:
        """Stream rows consumed so far = index of the next row."""

    @property
    @abstractmethod
    def finished(self) -> bool:
        """True once no row will ever come again (end of the replay, closed producer, EOS)."""

    @abstractmethod
    def read(self, max_rows: int | None = None) -> tuple[pl.DataFrame, int]:
        """Up to ``max_rows`` next rows (may be empty when none is ready) and the offset after."""

    @abstractmethod
    def seek(self, offset: int) -> None:
        """Continue from row ``offset`` (a checkpoint's offset)."""

    def commit(self, offset: int) -> None:  # noqa: B027 - optional hook
        """Every row before ``offset`` is reflected downstream; the source may forget it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections / files."""


class FrameReplaySource(StreamSource):
    """Replay of an in-memory merged stream in chunks of ``chunk_rows``."""

    def __init__(self, stream: pl.DataFrame, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.stream = validate_stream_frame(stream, "replay stream")
        self.chunk_rows = chunk_rows
        self.total_rows = len(self.stream)
        self._offset = 0

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def finished(self) -> bool:
        return self._offset >= len(self.stream)

    def read(self, max_rows: int | None = None) -> tuple[pl.DataFrame, int]:
        n = self.chunk_rows if max_rows is None else max(1, min(max_rows, self.chunk_rows))
        chunk = self.stream.slice(self._offset, n)
        self._offset += len(chunk)
        return chunk, self._offset

    def seek(self, offset: int) -> None:
        if not 0 <= offset <= len(self.stream):
            raise ConfigError(
                f"offset {offset} outside the replayed stream [0, {len(self.stream)}]"
            )
        self._offset = offset


class ParquetReplaySource(FrameReplaySource):
    """Replay ``merge_stream(live_impressions, live_events)`` of a canonical dataset directory."""

    def __init__(self, data_dir: str | Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.data_dir = Path(data_dir)
        stream = read_stream(data_dir)
        log.info("replaying %d stream rows of %s", len(stream), data_dir)
        super().__init__(stream, chunk_rows)


class InProcessSource(StreamSource):
    """A thread-safe queue of stream frames: ``put`` / ``close`` by a producer, ``read`` by the
    runner. ``read`` waits up to ``timeout_s`` for rows and returns an empty chunk otherwise."""

    def __init__(self, timeout_s: float = 0.1) -> None:
        self.timeout_s = timeout_s
        self._queue: deque[pl.DataFrame] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._offset = 0

    def put(self, df: pl.DataFrame) -> None:
        """Append rows (validated against ``STREAM_SCHEMA``)."""
        frame = validate_stream_frame(df, "InProcessSource.put")
        with self._cond:
            if self._closed:
                raise ConfigError("InProcessSource is closed; no more rows can be put")
            if len(frame):
                self._queue.append(frame)
            self._cond.notify_all()

    def close(self) -> None:
        """End of stream: the runner drains what is queued, then flushes the engine."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._closed and not self._queue

    def read(self, max_rows: int | None = None) -> tuple[pl.DataFrame, int]:
        limit = DEFAULT_CHUNK_ROWS if max_rows is None else max(1, max_rows)
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while not self._queue and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            parts, n = [], 0
            while self._queue and n < limit:
                head = self._queue.popleft()
                if n + len(head) > limit:  # split: the rest stays at the front
                    self._queue.appendleft(head.slice(limit - n))
                    head = head.slice(0, limit - n)
                parts.append(head)
                n += len(head)
        chunk = pl.concat(parts) if parts else pl.DataFrame(schema=STREAM_SCHEMA)
        self._offset += len(chunk)
        return chunk, self._offset

    def seek(self, offset: int) -> None:
        """Declare that the next row put is row ``offset`` (the producer replays from there)."""
        with self._cond:
            if self._queue:
                raise ConfigError(
                    "InProcessSource.seek needs an empty queue: seek first, then put the rows "
                    "from the restored offset"
                )
            self._offset = offset


class StreamSink(ABC):
    """Receives emitted rows; must tolerate rows whose ``sample_id`` it has seen before."""

    @abstractmethod
    def write(self, rows: pl.DataFrame) -> None:
        """Add emitted rows (any number, possibly 0)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make every written row durable (called before each checkpoint)."""

    def close(self) -> None:
        self.flush()


class InProcessSink(StreamSink):
    """Keeps every written frame in memory."""

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []

    def write(self, rows: pl.DataFrame) -> None:
        if len(rows):
            self.frames.append(rows)

    def frame(self) -> pl.DataFrame:
        """Every row once (first copy of each ``sample_id``), in write order."""
        if not self.frames:
            return pl.DataFrame()
        return pl.concat(self.frames).unique("sample_id", keep="first", maintain_order=True)


class ParquetSink(StreamSink):
    """Emitted rows as ``part-NNNNNN.parquet`` files in ``out_dir`` (buffered, atomic parts).

    On open, the ``sample_id`` of every existing part is loaded; written rows with one of those
    ids (replayed after a restart) are dropped, so the directory holds every row once. The engine
    never emits an id twice within one run, so only ids from before the (re)start are checked.
    """

    def __init__(self, out_dir: str | Path, buffer_rows: int = 100_000) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.buffer_rows = buffer_rows
        parts = sorted(self.out_dir.glob("part-*.parquet"))
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)
        self._seen = (
            pl.concat([pl.read_parquet(p, columns=["sample_id"]) for p in parts])["sample_id"]
            if parts
            else pl.Series("sample_id", [], pl.Int64)
        )
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0
        self.rows_written = 0
        self.duplicates_dropped = 0

    @property
    def existing_rows(self) -> int:
        """Rows that were on disk when the sink was opened."""
        return len(self._seen)

    def write(self, rows: pl.DataFrame) -> None:
        if not len(rows):
            return
        if len(self._seen):
            fresh = rows.filter(~pl.col("sample_id").is_in(self._seen.implode()))
            self.duplicates_dropped += len(rows) - len(fresh)
            rows = fresh
        self._buffer.append(rows)
        self._buffered += len(rows)
        if self._buffered >= self.buffer_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffered:
            self._buffer.clear()
            return
        path = self.out_dir / PART_PATTERN.format(self._next)
        tmp = path.with_suffix(".tmp")
        pl.concat(self._buffer).write_parquet(tmp)
        tmp.replace(path)  # atomic: a part is either complete or absent
        self._next += 1
        self.rows_written += self._buffered
        self._buffer.clear()
        self._buffered = 0

    def read(self) -> pl.DataFrame:
        """Every row in the directory (flushes first)."""
        self.flush()
        return read_sink_dir(self.out_dir)


def read_sink_dir(out_dir: str | Path) -> pl.DataFrame:
    """The rows of a :class:`ParquetSink` directory, each ``sample_id`` once."""
    parts = sorted(Path(out_dir).glob("part-*.parquet"))
    if not parts:
        return pl.DataFrame()
    return pl.concat([pl.read_parquet(p) for p in parts]).unique(
        "sample_id", keep="first", maintain_order=True
    )
