"""End to end on the simulator's tiny preset: totals, cold start, batched == single queries."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from liverank.data.io import read_table
from liverank.data.sim import SimConfig, simulate
from liverank.features.store import RoomStatsStore
from liverank.stream.room_stats import ROOM_STATS, WINDOW_MS, room_stats


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tiny")
    simulate(SimConfig.preset("tiny", seed=0), root, progress=False)
    return root


def test_tiny_dataset_totals_and_queries(tiny):
    rooms = read_table(tiny, "rooms")
    imps = read_table(tiny, "live_impressions")
    events = read_table(tiny, "live_events")
    dense = room_stats(rooms, imps, events)
    assert dense["exposure"].sum() == imps.height
    for stat, event in (("entering", "enter"), ("likes", "like"), ("orders", "buy")):
        assert dense[stat].sum() == (events["event"] == event).sum()
    gifts = events.filter(pl.col("event") == "gift")["value"].sum()
    assert dense["gift_value"].sum() == pytest.approx(gifts)
    assert dense["watchers"].min() >= 0

    store = RoomStatsStore.from_dataset(tiny)
    assert store.n_dropped_cells == 0
    rng = np.random.default_rng(0)
    ids = rng.choice(rooms["live_id"].to_numpy(), 50)
    ts = rng.integers(rooms["start_ts"].min(), rooms["end_ts"].max(), 50)
    batch, known = store.history_batch(ids, ts, 12)
    assert known.all()
    for b in range(50):
        single, _ = store.history(int(ids[b]), int(ts[b]), 12)
        np.testing.assert_array_equal(batch[b], single)
    # a query at a room's end sees the last complete windows of the dense table
    room = rooms.row(0, named=True)
    k_last = room["end_ts"] // WINDOW_MS - 1
    last, _ = store.history(room["live_id"], room["end_ts"], 3)
    want = dense.filter(
        (pl.col("live_id") == room["live_id"])
        & (pl.col("window_start") // WINDOW_MS).is_between(k_last - 2, k_last)
    )
    np.testing.assert_allclose(last[-want.height :], want.select(ROOM_STATS).to_numpy())
    products, known = store.products_batch(ids, ts, 8)
    assert products.shape == (50, 8, 4) and known.all()
