"""RoomStatsStore: point-in-time history, incremental == batch, products, unknown rooms."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liverank.errors import DataValidationError
from liverank.features.store import FeatureStore, RoomStatsSource, RoomStatsStore
from liverank.stream.room_stats import ROOM_STATS, WINDOW_MS, room_stats

from .conftest import HORIZON_MS, room_tables
from .reference import reference_history

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(room_tables(), st.integers(-WINDOW_MS, HORIZON_MS + 2 * WINDOW_MS), st.integers(1, 6))
def test_history_matches_reference_and_is_point_in_time(tables, as_of, n):
    rooms, imps, events = tables
    store = RoomStatsStore.from_tables(rooms, imps, events)
    # only the events before as_of: a store that never saw the future must answer the same
    past = RoomStatsStore.from_tables(
        rooms, imps.filter(pl.col("ts") < as_of), events.filter(pl.col("ts") < as_of)
    )
    ids = np.array([1, 2, 3, 99])
    got, known = store.history_batch(ids, np.full(4, as_of), n)
    got_past, _ = past.history_batch(ids, np.full(4, as_of), n)
    assert got.shape == (4, n, len(ROOM_STATS))
    np.testing.assert_allclose(got, got_past)
    assert known.tolist() == [i in rooms["live_id"].to_list() for i in ids]
    for b, live_id in enumerate(ids):
        ref = reference_history(rooms, imps, events, int(live_id), as_of, n)
        np.testing.assert_allclose(got[b], ref, err_msg=f"room {live_id}")


@FAST
@given(room_tables(), st.lists(st.integers(0, HORIZON_MS), max_size=4))
def test_incremental_chunks_equal_batch(tables, cuts):
    rooms, imps, events = tables
    batch = RoomStatsStore.from_tables(rooms, imps, events)
    incremental = RoomStatsStore(rooms)
    bounds = [-1, *sorted(set(cuts)), HORIZON_MS + 1]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        in_chunk = (pl.col("ts") >= lo) & (pl.col("ts") < hi)
        incremental.update(imps.filter(in_chunk), events.filter(in_chunk))
    # every window of every room, read back through the public API
    as_of = np.full(3, (HORIZON_MS // WINDOW_MS + 1) * WINDOW_MS)
    n = HORIZON_MS // WINDOW_MS + 1
    got, _ = incremental.history_batch(np.array([1, 2, 3]), as_of, n)
    want, _ = batch.history_batch(np.array([1, 2, 3]), as_of, n)
    np.testing.assert_allclose(got, want)
    # and the store agrees with the dense long table of room_stats
    dense = room_stats(rooms, imps, events)
    for b, live_id in enumerate(rooms["live_id"].to_list()):
        rows = dense.filter(pl.col("live_id") == live_id)
        k = rows["window_start"].to_numpy() // WINDOW_MS
        np.testing.assert_allclose(got[b][k - (as_of[0] // WINDOW_MS - n)], rows.select(ROOM_STATS))


def test_open_window_is_never_seen():
    rooms = pl.DataFrame({"live_id": [1], "start_ts": [0], "end_ts": [10 * WINDOW_MS]})
    imps = pl.DataFrame({"ts": [WINDOW_MS - 1, WINDOW_MS, 2 * WINDOW_MS - 1], "live_id": [1] * 3})
    store = RoomStatsStore.from_tables(rooms, imps, _no_events())
    exposure = ROOM_STATS.index("exposure")
    assert store.history(1, WINDOW_MS - 1, 2)[0][:, exposure].tolist() == [0, 0]
    assert store.history(1, WINDOW_MS, 2)[0][:, exposure].tolist() == [0, 1]
    assert store.history(1, 2 * WINDOW_MS - 1, 2)[0][:, exposure].tolist() == [0, 1]
    assert store.history(1, 2 * WINDOW_MS, 2)[0][:, exposure].tolist() == [1, 2]


def test_unknown_room_gives_zeros_and_flag():
    rooms = pl.DataFrame({"live_id": [5], "start_ts": [0], "end_ts": [WINDOW_MS]})
    store = RoomStatsStore(rooms)
    values, known = store.history(6, 10 * WINDOW_MS, 4)
    assert not known and values.shape == (4, len(ROOM_STATS)) and not values.any()
    products, known = store.products(6, 10 * WINDOW_MS, 3)
    assert not known and products.shape == (3, 4) and not products.any()
    assert store.history(5, 10 * WINDOW_MS, 1)[1]
    assert isinstance(store, RoomStatsSource) and FeatureStore is RoomStatsSource


def test_empty_store_answers_cold_start():
    store = RoomStatsStore(
        pl.DataFrame(schema={"live_id": pl.Int64, "start_ts": pl.Int64, "end_ts": pl.Int64})
    )
    values, known = store.history_batch(np.array([1, 2]), np.array([0, WINDOW_MS]), 3)
    assert values.shape == (2, 3, len(ROOM_STATS)) and not values.any() and not known.any()


def test_chunk_going_back_in_time_is_rejected():
    rooms = pl.DataFrame({"live_id": [1], "start_ts": [0], "end_ts": [10 * WINDOW_MS]})
    store = RoomStatsStore(rooms)
    store.update(pl.DataFrame({"ts": [500], "live_id": [1]}))
    with pytest.raises(DataValidationError, match="back in time"):
        store.update(pl.DataFrame({"ts": [499], "live_id": [1]}))


@FAST
@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(0, 1_000), st.integers(1, 9)), max_size=25),
    st.integers(-5, 1_100),
    st.integers(1, 5),
)
def test_products_match_bruteforce(rows, as_of, n):
    rp = pl.DataFrame(rows, schema=["live_id", "ts", "product_id"], orient="row")
    catalog = pl.DataFrame(
        {
            "product_id": range(1, 10),
            "cat1": range(11, 20),
            "cat2": range(21, 30),
            "cat3": range(31, 40),
        }
    )
    rooms = pl.DataFrame({"live_id": [1, 2, 3], "start_ts": [0] * 3, "end_ts": [2_000] * 3})
    store = RoomStatsStore(rooms, catalog)
    # two chunks, in time order
    store.update(room_products=rp.filter(pl.col("ts") < 500))
    store.update(room_products=rp.filter(pl.col("ts") >= 500))
    got, known = store.products_batch(np.array([1, 2, 3]), np.full(3, as_of), n)
    assert known.all()
    for b, live_id in enumerate((1, 2, 3)):
        seen = sorted((t, p) for r, t, p in rows if r == live_id and t < as_of)[-n:]
        want = np.zeros((n, 4), dtype=np.int64)
        for i, (_, p) in enumerate(seen):
            want[n - len(seen) + i] = [p, p + 10, p + 20, p + 30]
        np.testing.assert_array_equal(got[b], want)


def _no_events() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "ts": pl.Int64,
            "user_id": pl.Int64,
            "live_id": pl.Int64,
            "event": pl.Utf8,
            "value": pl.Float64,
        }
    )
