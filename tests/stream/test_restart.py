"""Killing the engine after any chunk and restarting from the last checkpoint loses nothing and
duplicates nothing: the sink ends with exactly the rows of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.errors import ConfigError
from liverank.stream.checkpoint import (
    latest_checkpoint,
    load_state,
    restore_engine,
    save_checkpoint,
)
from liverank.stream.engine import StreamEngine, merge_stream
from liverank.stream.reporting import MODES
from liverank.stream.runner import run_stream
from liverank.stream.sources import (
    FrameReplaySource,
    InProcessSink,
    ParquetSink,
    StreamSource,
    read_sink_dir,
)

LONG_VIEW_MS = 60_000


class Crash(RuntimeError):
    """The simulated kill."""


class CrashingSource(StreamSource):
    """Delegates to ``inner`` and raises :class:`Crash` on read number ``crash_at`` (0-based)."""

    def __init__(self, inner: StreamSource, crash_at: int) -> None:
        self.inner, self.crash_at, self.reads = inner, crash_at, 0
        self.total_rows = inner.total_rows

    @property
    def offset(self) -> int:
        return self.inner.offset

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def read(self, max_rows=None):
        if self.reads == self.crash_at:
            raise Crash(f"killed before read {self.reads}")
        self.reads += 1
        return self.inner.read(max_rows)

    def seek(self, offset: int) -> None:
        self.inner.seek(offset)


class CrashingSink(ParquetSink):
    """A ParquetSink that dies inside write number ``crash_at`` (its rows are lost)."""

    def __init__(self, out_dir: Path, crash_at: int) -> None:
        super().__init__(out_dir, buffer_rows=300)
        self.crash_at, self.writes = crash_at, 0

    def write(self, rows: pl.DataFrame) -> None:
        if self.writes == self.crash_at:
            raise Crash(f"killed in write {self.writes}")
        self.writes += 1
        super().write(rows)


def _uninterrupted(
    stream: pl.DataFrame, make_engine, chunk: int
) -> tuple[pl.DataFrame, StreamEngine]:
    engine, sink = make_engine(), InProcessSink()
    run_stream(FrameReplaySource(stream, chunk), engine, sink, progress=False)
    return sink.frame().sort("sample_id"), engine


def _crash_and_resume(
    stream: pl.DataFrame,
    make_engine,
    tmp: Path,
    crashes: list[tuple[str, int]],
    chunk: int,
    every: int,
    resume_chunk: int,
) -> tuple[pl.DataFrame, StreamEngine, int]:
    """Run with a kill at each ``(where, k)`` in turn, restarting from the last checkpoint;
    returns the sink's rows, the last engine and the number of kills that happened."""
    ckpt, out = tmp / "ckpt", tmp / "samples"
    killed = 0
    for where, k in [*crashes, ("none", -1)]:
        last = latest_checkpoint(ckpt)
        engine, offset = restore_engine(ckpt) if last else (make_engine(), 0)
        source: StreamSource = FrameReplaySource(stream, chunk if last is None else resume_chunk)
        source.seek(offset)
        sink = CrashingSink(out, k if where == "sink" else -1)
        if where == "source":
            source = CrashingSource(source, k)
        try:
            run_stream(
                source, engine, sink, checkpoint_dir=ckpt, checkpoint_every_rows=every,
                progress=False,
            )  # fmt: skip
        except Crash:
            killed += 1
            continue
        break  # the stream ended (also when a kill point lay beyond its end)
    raw = pl.concat([pl.read_parquet(p) for p in sorted(out.glob("part-*.parquet"))])
    assert raw["sample_id"].is_unique().all(), "the sink stored a replayed row twice"
    return read_sink_dir(out).sort("sample_id"), engine, killed


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "crashes",
    [[("source", 1)], [("source", 4)], [("source", 9), ("source", 2)], [("sink", 5)]],
    ids=["after-1", "after-4", "twice", "in-sink-write"],
)
def test_restart_on_simulated_data_equals_uninterrupted_run(tiny_sim, tmp_path, mode, crashes):
    stream = merge_stream(tiny_sim["live_impressions"], tiny_sim["live_events"])

    def make_engine() -> StreamEngine:
        return StreamEngine(
            tiny_sim["rooms"], tiny_sim["long_view_ms"], mode, allowed_lateness_ms=30_000
        )

    ref, _ = _uninterrupted(stream, make_engine, 700)
    got, _, killed = _crash_and_resume(stream, make_engine, tmp_path, crashes, 700, 1500, 700)
    assert killed == len(crashes) and len(ref) > 1000
    assert got.equals(ref)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(MODES),
    crash_at=st.lists(st.integers(0, 14), min_size=1, max_size=3),
    chunk=st.integers(5, 40),
    resume_chunk=st.integers(3, 50),
    every=st.integers(1, 60),
)
def test_restart_on_random_disordered_stream(
    stream_factory, tmp_path_factory, seed, mode, crash_at, chunk, resume_chunk, every
):
    """Shuffled streams with late rows: samples *and* dead letters equal the uninterrupted run,
    whatever the kill points, checkpoint interval and the chunk size after the restart."""
    imp, ev, rooms = stream_factory(seed)
    rng = np.random.default_rng(seed)
    stream = merge_stream(imp, ev)
    key = stream["ts"].to_numpy() + rng.integers(0, 90_000, len(stream))  # jitter past lateness
    stream = stream.with_columns(pl.Series("_k", key)).sort("_k").drop("_k")

    def make_engine() -> StreamEngine:
        return StreamEngine(rooms, LONG_VIEW_MS, mode, allowed_lateness_ms=30_000)

    ref, ref_engine = _uninterrupted(stream, make_engine, chunk)
    tmp = tmp_path_factory.mktemp("restart")
    got, engine, _ = _crash_and_resume(
        stream, make_engine, tmp, [("source", k) for k in crash_at], chunk, every, resume_chunk
    )
    assert got.equals(ref)
    assert engine.stats.late == ref_engine.stats.late
    order = ["ts", "user_id", "live_id", "kind", "request_id", "position"]
    assert engine.dead_letters.sort(order).equals(ref_engine.dead_letters.sort(order))


def test_state_dict_round_trip_and_config_mismatch(stream_factory, tmp_path) -> None:
    imp, ev, rooms = stream_factory(3)
    stream = merge_stream(imp, ev)
    engine = StreamEngine(rooms, LONG_VIEW_MS, "moment", allowed_lateness_ms=10_000)
    engine.push(stream.slice(0, 60))
    ckpt = save_checkpoint(tmp_path, engine, offset=60)
    state, offset = load_state(ckpt.path)
    assert offset == 60
    for name, value in engine.state_dict().items():
        if isinstance(value, pl.DataFrame):
            assert state[name].equals(value), name
        else:
            assert state[name] == value, name
    other = StreamEngine(rooms, LONG_VIEW_MS, "exit", allowed_lateness_ms=10_000)
    with pytest.raises(ConfigError, match="mode"):
        other.load_state_dict(state)
    # the restored engine continues exactly like the original one
    restored, _ = restore_engine(tmp_path)
    rest = stream.slice(60)
    a = pl.concat([engine.push(rest), engine.flush()]).sort("sample_id")
    b = pl.concat([restored.push(rest), restored.flush()]).sort("sample_id")
    assert len(a) > 0 and a.equals(b)


def test_checkpoints_are_atomic_and_pruned(stream_factory, tmp_path) -> None:
    imp, ev, rooms = stream_factory(1)
    engine = StreamEngine(rooms, LONG_VIEW_MS, "exit")
    engine.push(merge_stream(imp, ev).slice(0, 30))
    for off in (10, 20, 30):
        save_checkpoint(tmp_path, engine, off, keep=2)
    (tmp_path / ".tmp-ckpt-000000000009").mkdir()  # a checkpoint killed half-way
    (tmp_path / "ckpt-000000000010").mkdir()  # ... or renamed without a manifest
    assert len(list(tmp_path.glob("ckpt-*"))) == 3
    last = latest_checkpoint(tmp_path)
    assert last is not None and last.offset == 30 and last.seq == 2
    with pytest.raises(ConfigError, match="no checkpoint"):
        restore_engine(tmp_path / "empty")


def test_checkpoint_keeps_users_and_dead_letters(stream_factory, tmp_path) -> None:
    """An engine checking users restores with them; its dead letters (with their new columns)
    survive the round trip, and a checkpoint from before those columns still loads."""
    imp, ev, rooms = stream_factory(2)
    stream = merge_stream(imp, ev)
    users = pl.DataFrame({"user_id": [1, 2]})
    engine = StreamEngine(rooms, LONG_VIEW_MS, "exit", users=users)
    engine.push(stream.slice(0, 40))
    assert engine.stats.unknown_user > 0
    save_checkpoint(tmp_path, engine, offset=40)
    restored, offset = restore_engine(tmp_path)
    assert offset == 40 and restored.users is not None
    assert restored.users.equals(engine.users)
    assert restored.dead_letters.equals(engine.dead_letters)
    rest = stream.slice(40)
    a = pl.concat([engine.push(rest), engine.flush()]).sort("sample_id")
    b = pl.concat([restored.push(rest), restored.flush()]).sort("sample_id")
    assert a.equals(b) and restored.dead_letters.equals(engine.dead_letters)

    old = engine.state_dict()
    old["dead_letters"] = engine.dead_letters.select("ts", "kind", "reason")  # an older format
    again = StreamEngine(rooms, LONG_VIEW_MS, "exit")
    again.load_state_dict(old)
    assert again.dead_letters["row"].null_count() == len(again.dead_letters) > 0


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_of_the_emitted_ids_format_still_continues(stream_factory, mode) -> None:
    """Checkpoints written before ``emitted_below`` kept the emitted ids (an ``emitted`` frame)
    instead: restoring one emits every remaining row once, like an uninterrupted engine."""
    imp, ev, rooms = stream_factory(4)
    stream = merge_stream(imp, ev)
    whole = StreamEngine(rooms, LONG_VIEW_MS, mode, allowed_lateness_ms=10_000)
    first = whole.push(stream.slice(0, 50))
    old = whole.state_dict()
    del old["emitted_below"]
    old["emitted"] = first.select("sample_id", "request_id", "position")
    again = StreamEngine(rooms, LONG_VIEW_MS, mode, allowed_lateness_ms=10_000)
    again.load_state_dict(old)
    rest = stream.slice(50)
    a = pl.concat([whole.push(rest), whole.flush()]).sort("sample_id")
    b = pl.concat([again.push(rest), again.flush()]).sort("sample_id")
    assert len(a) > 0 and a.equals(b)
