"""The live loop: consume a source, push into the engine, emit to a sink, checkpoint, flush.

:func:`run_stream` is the loop for any source / engine / sink; :func:`stream_main` is the
``liverank stream`` command without argparse (the CLI only parses flags and calls it).

Order of operations per chunk: ``read -> engine.push -> sink.write``; every
``checkpoint_every_rows`` consumed rows: ``sink.flush -> save_checkpoint(engine, offset) ->
source.commit(offset)``. So a checkpoint never refers to rows the sink has not stored, and a
source forgets (Redis: acks) input only once it is covered by a checkpoint; a crash at any
point is recovered by :func:`liverank.stream.checkpoint.restore_engine` + ``source.seek``
(the restart guarantee, see ``stream.checkpoint``). At the end of the source the engine is
flushed (every remaining row is emitted); dead letters (late rows, and rows with a null key, an
unknown event name, room or user: :mod:`liverank.stream.engine`) go to a Parquet file and are
counted by reason in the run's stats.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from liverank.data import dead_letters as dl
from liverank.data.io import has_table, read_meta, read_table, table_path
from liverank.data.schema import LIVE_EVENTS
from liverank.data.validate import check_columns
from liverank.errors import ConfigError
from liverank.stream.checkpoint import latest_checkpoint, restore_engine, save_checkpoint
from liverank.stream.engine import StreamEngine
from liverank.stream.sources import (
    DEFAULT_CHUNK_ROWS,
    ParquetReplaySource,
    ParquetSink,
    StreamSink,
    StreamSource,
)

log = logging.getLogger(__name__)

DEAD_LETTERS_FILE = dl.DEAD_LETTERS_FILE
STATS_FILE = "stream_stats.json"
SAMPLES_DIR = "samples"


@dataclass
class StreamRunStats:
    """What one :func:`run_stream` call did."""

    mode: str
    start_offset: int
    end_offset: int
    rows_in: int = 0
    rows_emitted: int = 0
    chunks: int = 0
    checkpoints: int = 0
    late: int = 0
    unknown_room: int = 0
    unknown_user: int = 0
    unknown_event: int = 0
    null_field: int = 0
    finished: bool = False
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self) | {"events_per_s": round(self.events_per_s, 1)}


def run_stream(
    source: StreamSource,
    engine: StreamEngine,
    sink: StreamSink,
    *,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every_rows: int = 100_000,
    chunk_rows: int | None = None,
    max_rows: int | None = None,
    dead_letters_path: str | Path | None = None,
    progress: bool = True,
) -> StreamRunStats:
    """Run ``engine`` over ``source`` into ``sink`` until the source ends or ``max_rows``.

    ``max_rows`` stops after that many rows of this call (more when a source reads whole
    batches, e.g. Redis entries) *without* flushing the engine (the stream is not over: a later
    call or ``--resume`` continues). ``checkpoint_dir`` enables checkpoints every ``checkpoint_every_rows`` rows and
    at the stop; the source is committed at the same points (after every chunk of
    ``checkpoint_every_rows`` rows also without checkpoints).
    """
    if checkpoint_every_rows < 1:
        raise ConfigError(f"checkpoint_every_rows must be >= 1, got {checkpoint_every_rows}")
    stats = StreamRunStats(engine.mode, source.offset, source.offset)
    counted = ("late", "unknown_room", "unknown_user", "unknown_event", "null_field")
    before = {k: getattr(engine.stats, k) for k in counted}
    start, since = time.perf_counter(), 0
    bar = tqdm(
        total=source.total_rows,
        initial=source.offset,
        unit="row",
        unit_scale=True,
        desc=f"stream {engine.mode}",
        disable=not progress,
    )

    def commit() -> None:
        sink.flush()
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, engine, source.offset)
            stats.checkpoints += 1
        source.commit(source.offset)

    with bar:
        while not source.finished:
            want = chunk_rows
            if max_rows is not None:
                left = max_rows - stats.rows_in
                if left <= 0:
                    break
                want = left if want is None else min(want, left)
            chunk, _ = source.read(want)
            if not len(chunk):
                continue  # a live source with nothing ready (it waited inside read)
            out = engine.push(chunk)
            sink.write(out)
            stats.rows_in += len(chunk)
            stats.rows_emitted += len(out)
            stats.chunks += 1
            since += len(chunk)
            bar.update(len(chunk))
            if since >= checkpoint_every_rows:
                commit()
                since = 0
        if source.finished:
            out = engine.flush()
            sink.write(out)
            stats.rows_emitted += len(out)
            stats.finished = True
        commit()
    stats.end_offset = source.offset
    for k in counted:
        setattr(stats, k, getattr(engine.stats, k) - before[k])
    stats.seconds = time.perf_counter() - start
    if dead_letters_path is not None:
        engine.write_dead_letters(dead_letters_path)
    log.info("stream run: %s", stats.to_dict())
    return stats


def stream_main(
    data: str | Path,
    out: str | Path,
    *,
    mode: str = "moment",
    source: str = "parquet",
    redis_url: str = "redis://127.0.0.1:6379/0",
    stream_key: str = "liverank:stream",
    group: str = "liverank",
    consumer: str = "worker-0",
    shard: int = 0,
    shards: int = 1,
    produce: bool = False,
    sink: str = "parquet",
    out_key: str | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    lateness_ms: int = 30_000,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    checkpoint_every_rows: int = 100_000,
    max_rows: int | None = None,
    progress: bool = True,
    store: str | None = None,
    store_seq_len: int = 55,
    store_long_len: int = 0,
    unknown_events: str = "dead-letter",
) -> StreamRunStats:
    """``liverank stream``: run the engine of ``mode`` live and write its rows to ``out``.

    ``data`` is a canonical dataset directory: its rooms table and long-view threshold configure
    the engine, and with ``source="parquet"`` its merged stream is replayed. With
    ``source="redis"`` the worker consumes shard ``shard`` of ``stream_key`` in consumer group
    ``group`` as ``consumer`` (``produce=True`` first writes ``data``'s stream into ``shards``
    shards, for demos). Rows go to ``out/samples`` (``sink="parquet"``) or to the Redis stream
    ``out_key`` (``sink="redis"``); ``out`` also gets ``dead_letters.parquet`` and
    ``stream_stats.json``. ``resume`` continues from the newest checkpoint in ``checkpoint``.
    ``store`` (``redis://host:port/DB/PREFIX``) also keeps that online feature store up to date
    (:mod:`liverank.serve.store_feed`, ``store_seq_len`` behaviours per user and domain; ``store_long_len`` > 0 also keeps that many
    long-history rows per user and domain for the Cross / FARM long histories).
    Rows of unknown users (not in ``data``'s users table), rooms or event names are
    dead-lettered; ``unknown_events="error"`` makes an unknown event name an error instead
    (checked on the whole ``live_events`` table first with a Parquet source).
    """
    dl.check_policy(unknown_events)
    out_dir = Path(out)
    client = None
    if source == "redis" or sink == "redis":
        from liverank.stream.redis_streams import connect

        client = connect(redis_url)
    engine = _engine(data, checkpoint, resume, mode=mode, lateness_ms=lateness_ms)
    engine.unknown_events = unknown_events
    src = _source(data, source, client, chunk_rows, stream_key, group, consumer, shard)
    if source == "parquet" and unknown_events == "error":  # name the file, not a chunk
        dl.check_event_names(table_path(data, "live_events"), "event", LIVE_EVENTS)
    if produce:
        from liverank.stream.redis_streams import produce_dataset

        if client is None:
            raise ConfigError("--produce writes to Redis: use it with --source redis")
        produce_dataset(client, data, stream_key, shards=shards, chunk_rows=chunk_rows)
    if resume:
        src.seek(latest_checkpoint(checkpoint).offset)  # type: ignore[arg-type, union-attr]
    if store is not None:
        from liverank.serve.store_feed import feed_source

        feed = f"{stream_key}:{shard}" if source == "redis" else "replay"
        src = feed_source(src, store, data, feed, store_seq_len, store_long_len)
    if sink == "parquet":
        dst: StreamSink = ParquetSink(out_dir / SAMPLES_DIR)
        if not resume and dst.existing_rows:  # type: ignore[attr-defined]
            raise ConfigError(
                f"{out_dir / SAMPLES_DIR} already holds samples: --resume or new --out"
            )
    elif sink == "redis":
        from liverank.stream.redis_streams import RedisStreamSink

        dst = RedisStreamSink(client, out_key or f"{stream_key}:samples:{mode}")  # type: ignore[arg-type]
    else:
        raise ConfigError(f"unknown sink '{sink}': parquet or redis")
    stats = run_stream(
        src,
        engine,
        dst,
        checkpoint_dir=checkpoint,
        checkpoint_every_rows=checkpoint_every_rows,
        chunk_rows=chunk_rows,
        max_rows=max_rows,
        dead_letters_path=out_dir / DEAD_LETTERS_FILE,
        progress=progress,
    )
    dst.close()
    src.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATS_FILE).write_text(json.dumps(stats.to_dict(), indent=2))
    return stats


def _engine(
    data: str | Path, checkpoint: str | Path | None, resume: bool, *, mode: str, lateness_ms: int
) -> StreamEngine:
    if resume:
        if checkpoint is None:
            raise ConfigError("--resume needs --checkpoint DIR")
        engine, _ = restore_engine(checkpoint)
        if (engine.mode, engine.lateness) != (mode, lateness_ms):
            raise ConfigError(
                f"checkpoint in {checkpoint} is mode={engine.mode}, lateness={engine.lateness} "
                f"ms; asked for mode={mode}, lateness={lateness_ms} ms"
            )
        return engine
    if checkpoint is not None and latest_checkpoint(checkpoint) is not None:
        raise ConfigError(f"{checkpoint} already holds checkpoints: pass --resume or a new dir")
    meta = read_meta(data)
    check_columns(data, "rooms", ["live_id", "end_ts"])
    rooms = read_table(data, "rooms", ["live_id", "end_ts"])
    users = None
    if has_table(data, "users"):
        check_columns(data, "users", ["user_id"])
        users = read_table(data, "users", ["user_id"])
    else:
        log.warning("%s has no users table: rows of unknown users are not checked", data)
    return StreamEngine(
        rooms, meta.long_view_ms, mode, allowed_lateness_ms=lateness_ms, users=users
    )


def _source(
    data: str | Path,
    kind: str,
    client: object,
    chunk_rows: int,
    stream_key: str,
    group: str,
    consumer: str,
    shard: int,
) -> StreamSource:
    if kind == "parquet":
        return ParquetReplaySource(data, chunk_rows)
    if kind == "redis":
        from liverank.stream.redis_streams import RedisStreamSource, shard_key

        return RedisStreamSource(client, shard_key(stream_key, shard), group, consumer)  # type: ignore[arg-type]
    raise ConfigError(f"unknown source '{kind}': parquet or redis")
