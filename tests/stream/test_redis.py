"""Redis Streams end to end against a real ``redis-server`` started on a loopback port."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import polars as pl
import pytest

from liverank.stream.checkpoint import latest_checkpoint, restore_engine
from liverank.stream.engine import StreamEngine, merge_stream
from liverank.stream.runner import run_stream
from liverank.stream.sources import FrameReplaySource, InProcessSink, StreamSource

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=5')")
if shutil.which("redis-server") is None:
    pytest.skip("the redis-server binary is not installed", allow_module_level=True)

from liverank.stream.redis_streams import (  # noqa: E402 - after the skips
    RedisStreamProducer,
    RedisStreamSink,
    RedisStreamSource,
    read_redis_sink,
    shard_key,
)

MODE = "moment"


@pytest.fixture(scope="module")
def redis_url(redis_server_url: str) -> str:
    return redis_server_url


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    c.flushdb()
    yield c
    c.close()


class CrashBeforeAck(RuntimeError):
    """The simulated kill: rows processed and emitted, entries not acked."""


class CrashingRedisSource(RedisStreamSource):
    """Dies on read number ``crash_at`` (earlier reads' entries stay pending if not committed)."""

    def __init__(self, *args, crash_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at, self.reads = crash_at, 0

    def read(self, max_rows=None):
        if self.reads == self.crash_at:
            raise CrashBeforeAck(f"killed before read {self.reads}")
        self.reads += 1
        return super().read(max_rows)


def _engine(tiny_sim) -> StreamEngine:
    return StreamEngine(
        tiny_sim["rooms"], tiny_sim["long_view_ms"], MODE, allowed_lateness_ms=30_000
    )


def _worker(url, tiny_sim, shard, consumer, ckpt: Path, crash_at: int | None, errors) -> None:
    """One engine worker owning one shard; restarts itself from its checkpoint after a crash."""
    c = redis.Redis.from_url(url)
    try:
        key = shard_key("live", shard)
        source: StreamSource
        if crash_at is not None:
            source = CrashingRedisSource(c, key, "G", consumer, block_ms=50, crash_at=crash_at)
            try:
                run_stream(
                    source, _engine(tiny_sim), RedisStreamSink(c, "samples", buffer_rows=1),
                    checkpoint_dir=ckpt, checkpoint_every_rows=1200, chunk_rows=400,
                    progress=False,
                )  # fmt: skip
                raise AssertionError("the simulated crash did not happen")
            except CrashBeforeAck:
                pending = c.xpending(key, "G")["pending"]
                assert pending > 0, "a crash before XACK must leave entries pending"
            # the replacement: restore, take the shard over under a new consumer name
            engine, offset = restore_engine(ckpt)
            source = RedisStreamSource(c, key, "G", f"{consumer}-restarted", block_ms=50)
            source.seek(offset)
            assert source.redelivered_entries > 0
        else:
            engine = _engine(tiny_sim)
            source = RedisStreamSource(c, key, "G", consumer, block_ms=50)
        stats = run_stream(
            source, engine, RedisStreamSink(c, "samples", buffer_rows=500),
            checkpoint_dir=ckpt, checkpoint_every_rows=1200, chunk_rows=400, progress=False,
        )  # fmt: skip
        assert stats.finished
        assert c.xpending(key, "G")["pending"] == 0  # everything acked at the end
    except BaseException as exc:  # surfaced by the main thread
        errors.append(exc)
    finally:
        c.close()


def test_producer_shards_by_user_and_numbers_entries_by_offset(client, tiny_sim) -> None:
    stream = merge_stream(tiny_sim["live_impressions"], tiny_sim["live_events"])
    producer = RedisStreamProducer(client, "live", shards=2, chunk_rows=500)
    producer.produce(stream.slice(0, 3000))
    producer.produce(stream.slice(3000))  # appended, offsets continue
    producer.end()
    assert RedisStreamProducer(client, "other", shards=2).offsets == [0, 0]
    for shard in range(2):
        part = stream.filter(pl.col("user_id") % 2 == shard)
        src = RedisStreamSource(client, shard_key("live", shard), "G", "c", block_ms=10)
        frames = []
        while not src.finished:
            chunk, off = src.read(1000)
            frames.append(chunk)
            assert off == sum(len(f) for f in frames)  # offset = rows of the shard so far
        assert pl.concat(frames).equals(part)  # order within the shard kept
        assert producer.offsets[shard] == len(part)


def test_two_workers_with_a_crash_before_ack_equal_the_parquet_replay(
    client, redis_url, tiny_sim, tmp_path
) -> None:
    stream = merge_stream(tiny_sim["live_impressions"], tiny_sim["live_events"])
    ref_sink = InProcessSink()
    run_stream(FrameReplaySource(stream, 1000), _engine(tiny_sim), ref_sink, progress=False)
    ref = ref_sink.frame().sort("sample_id")

    producer = RedisStreamProducer(client, "live", shards=2, chunk_rows=400)
    producer.produce(stream)
    producer.end()
    errors: list[BaseException] = []
    workers = [
        threading.Thread(
            target=_worker,
            args=(redis_url, tiny_sim, 0, "w0", tmp_path / "ckpt0", 7, errors),
        ),
        threading.Thread(
            target=_worker,
            args=(redis_url, tiny_sim, 1, "w1", tmp_path / "ckpt1", None, errors),
        ),
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    if errors:
        raise errors[0]
    assert latest_checkpoint(tmp_path / "ckpt0") is not None
    total = sum(len(pl.read_ipc(f[b"ipc"])) for _id, f in client.xrange("samples"))
    got = read_redis_sink(client, "samples").sort("sample_id")
    assert total > len(got)  # the crashed worker's post-checkpoint rows were emitted twice ...
    assert got.equals(ref)  # ... and deduping on sample_id gives exactly the replay's rows
