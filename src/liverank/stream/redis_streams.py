"""Redis Streams source and sink (redis-py): several engine workers sharing a live stream.

**Entries.** The producer writes the merged stream (``STREAM_SCHEMA``) in *batches*: one stream
entry per chunk of ``chunk_rows`` rows, field ``ipc`` = the chunk as Arrow IPC bytes (one
``XADD`` per 10k rows instead of one per row: encoding, network and Redis work are per entry,
so batching is what makes the Redis path run at engine speed). Entry ids are explicit:
``<offset_after>-0`` where ``offset_after`` is the number of rows of the shard up to and
including this entry, so the source offset of a checkpoint *is* a stream position and
``seek(offset)`` needs no lookup table. The last entry is an end-of-stream marker
``<total>-1`` with field ``eos`` (bounded replays and tests; a live producer never ends).

**Partitioning across workers.** The engine's state is per (user, room, impression) and a visit
only involves rows of one user (impressions and events of that user in one room; the rooms table
is static input), so the rows of one user must reach one engine, in order. The producer shards
rows by ``user_id mod N`` into ``N`` streams ``<key>:<shard>``. Each shard stream has a consumer
group (same group name on every shard) and is consumed by **one live consumer at a time**: a
worker owns one or more shards; a replacement worker takes a shard over by claiming its pending
entries (``XCLAIM``) under a new consumer name. Plain consumer-group load balancing of one
stream among several consumers is *not* used: it would split a user's rows across engines.
The watermark and lateness are per shard (a row is late relative to the rows of its shard).

**Delivery.** ``XREADGROUP`` delivers entries; the runner calls ``commit(offset)`` once the rows
before ``offset`` are emitted to the sink and, when checkpointing, saved in a checkpoint; only
then are the entries ``XACK``-ed. A crash before the ack leaves them pending, and the restarted
worker (restored from the checkpoint, ``seek(offset)``) gets them again: at-least-once input.
Entries up to the checkpoint offset that are still pending (crash between checkpoint and ack)
are acked without being re-read. Without checkpoints the runner acks after every chunk and a
restart starts a fresh engine (no exactly-once samples).

**Sink.** :class:`RedisStreamSink` appends emitted rows (Arrow IPC batches, auto ids) to one
output stream shared by all workers. Rows replayed after a restart come again with the same
deterministic ``sample_id``; readers dedupe on it (:func:`read_redis_sink`). Duplicates can only
be rows emitted between a worker's last checkpoint and its crash, so a live reader needs to
remember only the ids of the last few checkpoint intervals.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from liverank.errors import ConfigError, DataValidationError
from liverank.stream.engine import STREAM_SCHEMA, read_stream
from liverank.stream.sources import DEFAULT_CHUNK_ROWS, StreamSink, StreamSource
from liverank.stream.sources import validate_stream_frame as _validate

log = logging.getLogger(__name__)

try:  # redis-py is an optional dependency (extra "redis")
    import redis
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

_IPC, _EOS = b"ipc", b"eos"


def connect(url: str) -> redis.Redis:
    """A redis-py client for ``url`` (``redis://host:port/db``), bytes responses."""
    if redis is None:
        raise ConfigError("the Redis source needs redis-py: pip install 'redis>=5'")
    client = redis.Redis.from_url(url, decode_responses=False)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise ConfigError(f"cannot reach Redis at {url}: {exc} (is redis-server running?)") from exc
    return client


def shard_key(stream_key: str, shard: int) -> str:
    """The Redis key of one shard of the input stream."""
    return f"{stream_key}:{shard}"


def to_ipc(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_ipc(buf, compression="uncompressed")
    return buf.getvalue()


def from_ipc(blob: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(blob))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_offset(entry_id: bytes | str) -> tuple[int, int]:
    ms, seq = _text(entry_id).split("-")
    return int(ms), int(seq)


class RedisStreamProducer:
    """XADDs merged-stream rows to ``shards`` streams ``<stream_key>:<i>`` (rows by user_id).

    Resumable: the per-shard row offsets are read back from the streams' last entries, so a
    restarted producer continues numbering where it stopped (``produce`` must then be given the
    rows after those already produced).
    """

    def __init__(
        self,
        client: redis.Redis,
        stream_key: str,
        shards: int = 1,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        if shards < 1 or chunk_rows < 1:
            raise ConfigError(f"shards and chunk_rows must be >= 1, got {shards}, {chunk_rows}")
        self.client, self.stream_key = client, stream_key
        self.shards, self.chunk_rows = shards, chunk_rows
        self.offsets = [self._last_offset(shard_key(stream_key, i)) for i in range(shards)]

    def _last_offset(self, key: str) -> int:
        last = self.client.xrevrange(key, count=1)
        if not last:
            return 0
        ms, seq = _id_offset(last[0][0])
        if seq == 1:
            raise ConfigError(f"stream {key} already ended (end-of-stream marker); use a new key")
        return ms

    def produce(self, stream: pl.DataFrame) -> int:
        """Append ``stream`` (merged-stream rows, in order); returns the rows written."""
        stream = _validate(stream, "RedisStreamProducer.produce")
        shard_of = (pl.col("user_id") % self.shards).alias("_shard")
        parts = stream.with_columns(shard_of).partition_by("_shard", as_dict=True)
        pipe = self.client.pipeline(transaction=False)
        for (shard_value,), part in parts.items():
            shard = int(shard_value)  # type: ignore[arg-type]
            part = part.drop("_shard")
            key = shard_key(self.stream_key, shard)
            for start in range(0, len(part), self.chunk_rows):
                chunk = part.slice(start, self.chunk_rows)
                self.offsets[shard] += len(chunk)
                pipe.xadd(key, {_IPC: to_ipc(chunk)}, id=f"{self.offsets[shard]}-0")
        pipe.execute()
        return len(stream)

    def end(self) -> None:
        """Write the end-of-stream marker on every shard."""
        pipe = self.client.pipeline(transaction=False)
        for i in range(self.shards):
            pipe.xadd(shard_key(self.stream_key, i), {_EOS: b"1"}, id=f"{self.offsets[i]}-1")
        pipe.execute()


def produce_dataset(
    client: redis.Redis,
    data_dir: str | Path,
    stream_key: str,
    *,
    shards: int = 1,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> int:
    """Write a dataset's merged stream into ``shards`` streams and end them (replay into Redis).

    Does nothing when the streams already hold rows (a restarted demo); returns rows written.
    """
    producer = RedisStreamProducer(client, stream_key, shards, chunk_rows)
    if any(producer.offsets):
        log.info("%s already holds %d rows; not producing again", stream_key, sum(producer.offsets))
        return 0
    stream = read_stream(data_dir)
    n = producer.produce(stream)
    producer.end()
    log.info("produced %d rows into %d shard(s) of %s", n, shards, stream_key)
    return n


class RedisStreamSource(StreamSource):
    """One shard stream read through a consumer group (see the module doc for the semantics)."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        group: str,
        consumer: str,
        *,
        block_ms: int = 200,
        max_entries: int = 64,
    ) -> None:
        self.client, self.key, self.group, self.consumer = client, key, group, consumer
        self.block_ms, self.max_entries = block_ms, max_entries
        try:
            client.xgroup_create(key, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._offset = 0
        self._cursor: bytes | str = "0-0"
        self._pending_phase = False  # after seek: own pending entries first, then new ones
        self._unacked: list[tuple[int, bytes]] = []  # (row offset after the entry, entry id)
        self._eos = False
        self._rows_per_entry = 0
        self.redelivered_entries = 0

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def finished(self) -> bool:
        return self._eos

    def seek(self, offset: int) -> None:
        """Take the shard over from ``offset`` (a checkpoint): claim every pending entry of the
        group (XCLAIM), ack those at or before ``offset``, re-read the others before any new one."""
        for info in self.client.xinfo_consumers(self.key, self.group):
            other = _text(info["name"])
            if other == self.consumer:
                continue
            while ids := [  # take over what the other (dead) consumer holds, then drop it
                p["message_id"]
                for p in self.client.xpending_range(
                    self.key, self.group, "-", "+", 1000, consumername=other
                )
            ]:
                self.client.xclaim(self.key, self.group, self.consumer, 0, ids, justid=True)
            self.client.xgroup_delconsumer(self.key, self.group, other)
        pending = self.client.xpending_range(
            self.key, self.group, min="-", max="+", count=1_000_000, consumername=self.consumer
        )
        old = [p["message_id"] for p in pending if _id_offset(p["message_id"])[0] <= offset]
        if old:
            self.client.xack(self.key, self.group, *old)
        self._offset = offset
        self._cursor = f"{offset}-0"
        self._pending_phase = True
        self._unacked = []
        self.redelivered_entries += len(pending) - len(old)
        log.info(
            "%s/%s: resumed at row %d (%d pending entries redelivered, %d acked)",
            self.key,
            self.consumer,
            offset,
            len(pending) - len(old),
            len(old),
        )

    def _entries(self, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        if self._pending_phase:
            reply = self.client.xreadgroup(
                self.group, self.consumer, {self.key: self._cursor}, count=count
            )
            entries = reply[0][1] if reply else []
            if entries:
                self._cursor = entries[-1][0]
                return entries
            self._pending_phase = False
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.key: ">"}, count=count, block=self.block_ms
        )
        return reply[0][1] if reply else []

    def read(self, max_rows: int | None = None) -> tuple[pl.DataFrame, int]:
        want = DEFAULT_CHUNK_ROWS if max_rows is None else max(1, max_rows)
        count = min(self.max_entries, max(1, want // max(self._rows_per_entry, 1)))
        if self._rows_per_entry == 0:
            count = 1
        frames: list[pl.DataFrame] = []
        for entry_id, fields in self._entries(count):
            ms, seq = _id_offset(entry_id)
            self._unacked.append((ms, entry_id))
            if _EOS in fields:
                self._eos = True
                continue
            if ms <= self._offset:  # pending entry already inside the restored state
                continue
            chunk = _validate(from_ipc(fields[_IPC]), f"redis {self.key} {entry_id!r}")
            if ms - self._offset != len(chunk):
                raise DataValidationError(
                    f"entry {entry_id!r} holds {len(chunk)} rows but its id says "
                    f"{ms - self._offset} after offset {self._offset}: group '{self.group}' "
                    "already consumed earlier rows; resume from a checkpoint (--resume) or "
                    "use a new group",
                    file=self.key,
                )
            self._offset = ms
            self._rows_per_entry = len(chunk)
            frames.append(chunk)
        out = pl.concat(frames) if frames else pl.DataFrame(schema=STREAM_SCHEMA)
        return out, self._offset

    def commit(self, offset: int) -> None:
        """XACK every delivered entry at or before ``offset`` (its rows are safely downstream)."""
        done = [eid for ms, eid in self._unacked if ms <= offset]
        if done:
            self.client.xack(self.key, self.group, *done)
            self._unacked = [(ms, eid) for ms, eid in self._unacked if ms > offset]


class RedisStreamSink(StreamSink):
    """Appends emitted rows to the output stream ``key`` (Arrow IPC batches, auto ids)."""

    def __init__(self, client: redis.Redis, key: str, buffer_rows: int = 50_000) -> None:
        self.client, self.key, self.buffer_rows = client, key, buffer_rows
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0
        self.rows_written = 0

    def write(self, rows: pl.DataFrame) -> None:
        if len(rows):
            self._buffer.append(rows)
            self._buffered += len(rows)
            if self._buffered >= self.buffer_rows:
                self.flush()

    def flush(self) -> None:
        if self._buffered:
            self.client.xadd(self.key, {_IPC: to_ipc(pl.concat(self._buffer))})
            self.rows_written += self._buffered
        self._buffer.clear()
        self._buffered = 0


def iter_redis_sink(client: redis.Redis, key: str, page: int = 100) -> Iterator[pl.DataFrame]:
    """Every batch of the output stream ``key``, in order (duplicates included)."""
    start: bytes | str = "-"
    while True:
        entries = client.xrange(key, min=start, max="+", count=page)
        for _eid, fields in entries:
            yield from_ipc(fields[_IPC])
        if len(entries) < page:
            return
        ms, seq = _id_offset(entries[-1][0])
        start = f"{ms}-{seq + 1}"


def read_redis_sink(client: redis.Redis, key: str) -> pl.DataFrame:
    """The rows of the output stream ``key``, each ``sample_id`` once (see the module doc)."""
    frames = list(iter_redis_sink(client, key))
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames).unique("sample_id", keep="first", maintain_order=True)
