"""Sources (replay, in-process), sinks (Parquet, in-process), the runner and ``stream_main``."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import polars as pl
import pytest

from liverank.data.io import write_meta, write_table
from liverank.data.schema import DatasetMeta
from liverank.data.visits import reconstruct_visits
from liverank.errors import ConfigError, DataValidationError
from liverank.stream.engine import DEAD_SCHEMA, StreamEngine, merge_stream
from liverank.stream.reporting import emit_rows
from liverank.stream.runner import DEAD_LETTERS_FILE, STATS_FILE, run_stream, stream_main
from liverank.stream.sources import (
    FrameReplaySource,
    InProcessSink,
    InProcessSource,
    ParquetReplaySource,
    ParquetSink,
    read_sink_dir,
)

LONG_VIEW_MS = 60_000


@pytest.fixture(scope="module")
def tiny_dir(tiny_sim, tmp_path_factory) -> Path:
    """The tiny simulated live tables as a dataset directory."""
    root = tmp_path_factory.mktemp("tiny_dir")
    for name in ("live_impressions", "live_events", "rooms"):
        write_table(root, name, tiny_sim[name])
    ts = tiny_sim["live_impressions"]["ts"]
    write_meta(
        root, DatasetMeta("tiny", int(ts.min()), int(ts.max()) + 1, tiny_sim["long_view_ms"])
    )
    return root


def _reference(tiny_sim, mode: str) -> pl.DataFrame:
    visits = reconstruct_visits(
        tiny_sim["live_impressions"],
        tiny_sim["live_events"],
        tiny_sim["rooms"],
        tiny_sim["long_view_ms"],
    )
    return emit_rows(visits, mode).sort("sample_id")


def test_replay_source_chunks_offsets_and_seek(stream_factory) -> None:
    imp, ev, _ = stream_factory(0)
    stream = merge_stream(imp, ev)
    src = FrameReplaySource(stream, chunk_rows=7)
    parts, offsets = [], []
    while not src.finished:
        chunk, off = src.read(5 if len(parts) % 2 else None)  # 7, 5, 7, 5 ...
        parts.append(chunk)
        offsets.append(off)
    assert pl.concat(parts).equals(stream)
    assert offsets == list(pl.Series([len(p) for p in parts]).cum_sum())
    assert [len(p) for p in parts[:4]] == [7, 5, 7, 5]
    src.seek(12)
    assert src.read(3)[0].equals(stream.slice(12, 3)) and src.offset == 15
    with pytest.raises(ConfigError, match="outside"):
        src.seek(len(stream) + 1)


def test_parquet_replay_source_is_the_merged_stream(tiny_sim, tiny_dir) -> None:
    src = ParquetReplaySource(tiny_dir, chunk_rows=1000)
    assert src.total_rows == len(tiny_sim["live_impressions"]) + len(tiny_sim["live_events"])
    again = ParquetReplaySource(tiny_dir, chunk_rows=1000)
    assert src.stream.equals(again.stream)  # deterministic order: offsets mean the same rows
    assert src.stream["ts"].is_sorted()


def test_in_process_source_validates_and_splits(stream_factory) -> None:
    imp, ev, _ = stream_factory(1)
    stream = merge_stream(imp, ev)
    src = InProcessSource(timeout_s=0.01)
    with pytest.raises(DataValidationError, match="column 'kind'"):
        src.put(stream.drop("kind"))
    src.put(stream.slice(0, 10))
    src.put(stream.slice(10, 10))
    chunk, off = src.read(15)  # spans two puts, splits the second
    assert chunk.equals(stream.slice(0, 15)) and off == 15
    with pytest.raises(ConfigError, match="empty queue"):
        src.seek(0)
    assert src.read(100)[0].equals(stream.slice(15, 5))
    assert len(src.read(100)[0]) == 0 and not src.finished  # nothing ready: waits, empty chunk
    src.close()
    assert src.finished
    with pytest.raises(ConfigError, match="closed"):
        src.put(stream.slice(20, 1))


def test_in_process_source_with_a_producer_thread(stream_factory) -> None:
    imp, ev, rooms = stream_factory(2)
    stream = merge_stream(imp, ev)
    src, sink = InProcessSource(timeout_s=0.05), InProcessSink()

    def produce() -> None:
        for start in range(0, len(stream), 13):
            src.put(stream.slice(start, 13))
        src.close()

    producer = threading.Thread(target=produce)
    producer.start()
    engine = StreamEngine(rooms, LONG_VIEW_MS, "moment")
    stats = run_stream(src, engine, sink, chunk_rows=20, progress=False)
    producer.join()
    ref = emit_rows(reconstruct_visits(imp, ev, rooms, LONG_VIEW_MS), "moment")
    assert stats.finished and stats.rows_in == len(stream)
    assert sink.frame().sort("sample_id").equals(ref.sort("sample_id"))


def test_parquet_sink_is_idempotent_on_sample_id(tmp_path) -> None:
    rows = pl.DataFrame({"sample_id": [1, 2, 3, 4], "x": [1.0, 2.0, 3.0, 4.0]})
    sink = ParquetSink(tmp_path, buffer_rows=2)
    sink.write(rows.slice(0, 3))  # over the buffer: one part
    sink.write(rows.slice(3, 1))
    sink.close()
    reopened = ParquetSink(tmp_path)  # a restart: rows 3, 4 are replayed, 5 is new
    assert reopened.existing_rows == 4
    reopened.write(pl.DataFrame({"sample_id": [3, 4, 5], "x": [3.0, 4.0, 5.0]}))
    reopened.close()
    assert reopened.duplicates_dropped == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
        "part-000002.parquet",
    ]
    raw = pl.concat([pl.read_parquet(p) for p in sorted(tmp_path.glob("part-*"))])
    assert raw["sample_id"].sort().to_list() == [1, 2, 3, 4, 5]
    assert read_sink_dir(tmp_path).sort("sample_id")["x"].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_max_rows_stops_without_flush_and_a_second_call_continues(stream_factory) -> None:
    imp, ev, rooms = stream_factory(4)
    stream = merge_stream(imp, ev)
    engine, sink = StreamEngine(rooms, LONG_VIEW_MS, "exit"), InProcessSink()
    src = FrameReplaySource(stream, chunk_rows=10)
    first = run_stream(src, engine, sink, max_rows=35, progress=False)
    assert (first.rows_in, first.end_offset, first.finished) == (35, 35, False)
    assert engine.open_impressions > 0  # not flushed
    second = run_stream(src, engine, sink, progress=False)
    assert second.finished and second.start_offset == 35
    ref = emit_rows(reconstruct_visits(imp, ev, rooms, LONG_VIEW_MS), "exit")
    assert sink.frame().sort("sample_id").equals(ref.sort("sample_id"))


def test_stream_main_parquet_end_to_end_and_resume(tiny_sim, tiny_dir, tmp_path) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    kw = {"mode": "moment", "checkpoint": ckpt, "chunk_rows": 900, "progress": False}
    part = stream_main(tiny_dir, out, max_rows=4000, checkpoint_every_rows=2000, **kw)
    assert not part.finished and part.end_offset == 4000
    with pytest.raises(ConfigError, match="already holds"):
        stream_main(tiny_dir, out, **kw)  # neither --resume nor a new directory
    with pytest.raises(ConfigError, match="asked for mode=exit"):
        stream_main(tiny_dir, out, resume=True, **(kw | {"mode": "exit"}))
    rest = stream_main(tiny_dir, out, resume=True, **kw)
    assert rest.finished and rest.start_offset == 4000
    got = read_sink_dir(out / "samples").sort("sample_id")
    assert got.select(_reference(tiny_sim, "moment").columns).equals(_reference(tiny_sim, "moment"))
    assert (out / STATS_FILE).exists()
    assert pl.read_parquet(out / DEAD_LETTERS_FILE).schema == DEAD_SCHEMA
    with pytest.raises(ConfigError, match="no checkpoint"):
        stream_main(tiny_dir, tmp_path / "o2", resume=True, **(kw | {"checkpoint": tmp_path / "x"}))


def test_stream_stats_report_throughput(tiny_dir) -> None:
    src = ParquetReplaySource(tiny_dir, chunk_rows=5000)
    stats = run_stream(
        src,
        StreamEngine(pl.read_parquet(tiny_dir / "rooms.parquet"), LONG_VIEW_MS, "exit"),
        InProcessSink(),
        progress=False,
    )
    d = stats.to_dict()
    assert d["rows_in"] == src.total_rows and d["events_per_s"] > 0 and d["chunks"] == 2
    assert dataclasses.asdict(stats)["finished"] is True
