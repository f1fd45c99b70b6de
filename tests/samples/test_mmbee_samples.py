"""MMBee's sample columns (``build-samples --segments N --graph-k K``): the metapath neighbours
of a row come from the graph of the gifts before its day, never from a later gift."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.loader import SampleSet
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.graph.store import NeighbourStore, build_neighbour_store


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmbee_world") / "w"
    simulate(SimConfig.preset("tiny", seed=0, n_days=3), root, progress=False)
    return root


def test_gie_columns_read_the_store_of_their_day_and_no_later_gift(
    world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s"
    build_samples(world, out, progress=False, segments=3, graph_k=5)
    data = SampleSet.load(out)
    assert data.batch(slice(0, 4))["seg_visual"].shape[1:] == (3, data.feature_map.segment_dim)
    meta = json.loads((world / "meta.json").read_text())
    day = data["day"]
    last = int(day.max())
    assert last >= 1
    rows = np.flatnonzero(day == last)
    ref = build_neighbour_store(world, tmp_path / "ref", meta["start_ts"] + last * 86_400_000, k=5)
    assert ref["counts"]["gifts"] > 0
    store = NeighbourStore.load(tmp_path / "ref")
    want = store.neighbours("u2a2a", data["user_id"][rows])[0]
    np.testing.assert_array_equal(data["gie_u2a2a"][rows], want)
    # the batch's author attributes are the row's day store's (the mean content before it)
    assert data.feature_map.author_attr_dim == data.feature_map.segment_dim
    batch = data.batch(rows[:50])
    np.testing.assert_array_equal(
        batch["gie_attr_u2a2a"].numpy(), store.attributes(data["gie_u2a2a"][rows[:50]])
    )
    assert batch["gie_attr_u2a2a"].shape == (min(50, rows.size), 5, 3 * store.author_attr.shape[2])
    assert batch["gie_attr_u2a2a"].abs().sum() > 0
    # drop every gift from the last day's start on: the columns do not change
    events = pl.read_parquet(world / "live_events.parquet")
    cut = meta["start_ts"] + last * 86_400_000
    kept = events.filter(~((pl.col("event") == "gift") & (pl.col("ts") >= cut)))
    assert kept.height < events.height
    altered = tmp_path / "altered"
    shutil.copytree(world, altered)
    kept.write_parquet(altered / "live_events.parquet")
    build_samples(altered, tmp_path / "s2", progress=False, graph_k=5)
    again = SampleSet.load(tmp_path / "s2")
    for column in ("gie_u2a2u", "gie_u2a2u2a", "gie_u2a2a", "gie_a2a", "gie_a2u2a"):
        np.testing.assert_array_equal(again[column], data[column])


def test_moment_rows_carry_the_segment_of_the_reported_window(world: Path, tmp_path: Path) -> None:
    """MMBee's segment-level first-only samples: a gift's row reads the segments that started
    before the end of the window the gift was reported in (the gift's segment first), a
    negative row those of its exit window; the other modes refuse ``segments``."""
    from liverank.data.mmbee import SegmentTable
    from liverank.errors import ConfigError
    from liverank.stream.samples import build_stream_samples

    out = tmp_path / "m"
    build_stream_samples(world, out, "moment", progress=False, segments=2, graph_k=3)
    frame = pl.read_parquet(out / "part-*.parquet")
    assert (out / "segments.npy").exists() and (out / "graph").is_dir()
    gifts = frame.filter((pl.col("mask_gtr") > 0) & (pl.col("gtr") > 0))
    assert gifts.height > 0
    table = SegmentTable.read(world)
    seg = np.stack(frame["seg_idx"].to_numpy())  # [R, 2]
    want = table.last_before(frame["live_id"].to_numpy(), frame["emit_ts"].to_numpy() - 1, 2)
    np.testing.assert_array_equal(seg, want)
    # the current segment started inside or before the row's window, never after it
    first = seg[:, 0]
    starts = table.ts[np.maximum(first - 1, 0)]
    ok = first > 0
    assert (starts[ok] < frame["emit_ts"].to_numpy()[ok]).all()
    assert (starts[ok] >= frame["emit_ts"].to_numpy()[ok] - 30_000).mean() > 0.9
    # rows differ from the impression-time index where the visit outlived a segment
    offline = tmp_path / "o"
    build_samples(world, offline, progress=False, segments=2)
    at_impression = pl.read_parquet(offline / "part-*.parquet").select(
        "request_id", "position", pl.col("seg_idx").alias("seg_at_impression")
    )
    both = frame.join(at_impression, on=["request_id", "position"])
    assert both.height == frame.height
    moved = np.stack(both["seg_idx"].to_numpy()) != np.stack(both["seg_at_impression"].to_numpy())
    assert moved.any(axis=1).mean() > 0.1  # rows reported after the impression's segment
    data = SampleSet.load(out)
    assert data.batch(slice(0, 4))["seg_visual"].shape[1:] == (2, data.feature_map.segment_dim)
    assert data.feature_map.graph_k == 3
    with pytest.raises(ConfigError, match="moment"):
        build_stream_samples(world, tmp_path / "e", "exit", progress=False, segments=2)
