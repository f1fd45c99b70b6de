"""room_stats / window_deltas against a brute-force reference, and the product sequence."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings

from liverank.stream.room_stats import (
    ROOM_STATS,
    WINDOW_MS,
    room_product_sequence,
    room_stats,
    window_deltas,
)

from .conftest import room_tables
from .reference import reference_window

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(room_tables())
def test_room_stats_matches_bruteforce(tables):
    rooms, imps, events = tables
    out = room_stats(rooms, imps, events)
    imp_rows = imps.select("live_id", "ts").rows()
    ev_rows = events.select("live_id", "ts", "user_id", "event", "value").rows()
    expected_rows = 0
    for live_id, start, end in rooms.select("live_id", "start_ts", "end_ts").rows():
        windows = range(start // WINDOW_MS, end // WINDOW_MS + 1)
        expected_rows += len(windows)
        got = out.filter(pl.col("live_id") == live_id)
        assert got["window_start"].to_list() == [k * WINDOW_MS for k in windows]
        for row, k in zip(got.iter_rows(named=True), windows, strict=True):
            ref = reference_window(live_id, k, imp_rows, ev_rows)
            assert {s: row[s] for s in ROOM_STATS} == pytest.approx(ref), (live_id, k)
    assert out.height == expected_rows
    assert out.columns == ["live_id", "window_start", *ROOM_STATS]


def test_watcher_state_rules():
    """Repeated enters, exit without enter, same-ts enter+exit, state across chunks."""
    rooms = pl.DataFrame({"live_id": [1], "start_ts": [0], "end_ts": [4 * WINDOW_MS]})
    ev = pl.DataFrame(
        {
            "ts": [10, 20, 30, WINDOW_MS + 5, WINDOW_MS + 5, 2 * WINDOW_MS, 3 * WINDOW_MS],
            "user_id": [1, 1, 2, 3, 3, 2, 1],
            "live_id": [1] * 7,
            "event": ["enter", "enter", "exit", "enter", "exit", "enter", "exit"],
            "value": [0.0] * 7,
        }
    )
    imps = pl.DataFrame(schema={"ts": pl.Int64, "live_id": pl.Int64})
    watchers = room_stats(rooms, imps, ev)["watchers"].to_list()
    # w0: user 1 in (double enter counts once), user 2 exit-without-enter ignored
    # w1: user 3 enters and exits at the same ts -> out; w2: user 2 enters; w3: user 1 exits
    assert watchers == [1, 1, 2, 1, 1]
    first, state = window_deltas(imps, ev.filter(pl.col("ts") < 2 * WINDOW_MS))
    second, _ = window_deltas(imps, ev.filter(pl.col("ts") >= 2 * WINDOW_MS), state)
    assert second["watcher_delta"].to_list() == [1, -1]
    assert first["watcher_delta"].sum() == 1


def test_events_outside_on_air_are_logged_and_left_out(caplog):
    rooms = pl.DataFrame({"live_id": [1], "start_ts": [WINDOW_MS], "end_ts": [2 * WINDOW_MS - 1]})
    imps = pl.DataFrame({"ts": [WINDOW_MS + 1, 10 * WINDOW_MS], "live_id": [1, 1]})
    ev = pl.DataFrame(
        {"ts": [5], "user_id": [1], "live_id": [7], "event": ["like"], "value": [0.0]}
    )
    with caplog.at_level("WARNING"):
        out = room_stats(rooms, imps, ev)
    assert out["exposure"].to_list() == [1]
    assert "left out" in caplog.text


def test_room_product_sequence_orders_and_joins_categories():
    rp = pl.DataFrame({"live_id": [2, 1, 1, 1], "ts": [5, 9, 3, 3], "product_id": [7, 8, 9, 4]})
    products = pl.DataFrame(
        {"product_id": [4, 7, 8], "cat1": [1, 2, 3], "cat2": [11, 12, 13], "cat3": [21, 22, 23]}
    )
    seq = room_product_sequence(rp, products)
    assert seq.rows() == [
        (1, 3, 4, 1, 11, 21),
        (1, 3, 9, 0, 0, 0),  # product 9 is not in the catalogue: unknown categories
        (1, 9, 8, 3, 13, 23),
        (2, 5, 7, 2, 12, 22),
    ]
