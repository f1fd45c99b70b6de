"""Visit reconstruction against a brute-force reference of the schema's visit rule."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from samples_reference import reference_visits

from liverank.data.schema import CLICK_WINDOW_MS, EFFECTIVE_VIEW_MS
from liverank.data.visits import (
    reconstruct_visits,
    reconstruct_visits_with_stats,
    time_columns,
)
from liverank.errors import DataValidationError

COMPARED = (
    "clicked", "enter_ts", "exit_ts", "stay_ms",
    "t_click", "t_evtr", "t_lvtr", "t_ltr", "t_cmtr", "t_gtr",
    "ctr", "evtr", "lvtr", "ltr", "cmtr", "gtr",
)  # fmt: skip


def _visits(data):
    """Reconstruct from the dataset, with live events shuffled: the input order must not matter."""
    t = data.tables
    events = t["live_events"].sample(fraction=1.0, shuffle=True, seed=1)
    return reconstruct_visits_with_stats(
        t["live_impressions"], events, t["rooms"], data.meta.long_view_ms
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_requests=st.integers(1, 40),
    grid_ms=st.sampled_from([1_000, 10_000, 30_000]),
)
def test_matches_reference(dataset_factory, seed: int, n_requests: int, grid_ms: int) -> None:
    data = dataset_factory(seed, n_requests=n_requests, grid_ms=grid_ms, days=1)
    visits, stats = _visits(data)
    t = data.tables
    expected = reference_visits(
        t["live_impressions"], t["live_events"], t["rooms"], data.meta.long_view_ms
    )
    assert len(visits) == len(expected)
    # same order and keys as the input
    keep = ["request_id", "position", "ts", "user_id", "live_id"]
    assert visits.select(keep).equals(t["live_impressions"].select(keep))
    got = visits.select(COMPARED).to_dicts()
    for row, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"impression row {row}: {g} != {e}"

    # every enter is either a visit's enter or counted as unmatched
    n_enters = int((t["live_events"]["event"] == "enter").sum())
    assert stats.clicks == int(visits["ctr"].sum())
    assert stats.enters == n_enters
    assert stats.unmatched_enters == n_enters - stats.clicks
    assert stats.reentries >= 0 and stats.orphan_enters >= 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_labels_are_consistent(dataset_factory, seed: int) -> None:
    data = dataset_factory(seed, n_requests=40)
    v, _ = _visits(data)
    long_view = data.meta.long_view_ms
    # gtr / ltr / cmtr / evtr => ctr ; lvtr => evtr (long view >= effective view)
    for task in ("evtr", "lvtr", "ltr", "cmtr", "gtr"):
        assert (v[task] <= v["ctr"]).all(), task
    assert (v["lvtr"] <= v["evtr"]).all()
    clicked = v.filter(pl.col("clicked"))
    assert (clicked["stay_ms"] == clicked["exit_ts"] - clicked["enter_ts"]).all()
    assert (clicked["stay_ms"] >= 0).all()
    assert (
        (clicked["enter_ts"] >= clicked["ts"])
        & (clicked["enter_ts"] < clicked["ts"] + CLICK_WINDOW_MS)
    ).all()
    skipped = v.filter(~pl.col("clicked"))
    assert (skipped["stay_ms"] == 0).all() and skipped["enter_ts"].null_count() == len(skipped)
    assert ((v["evtr"] == 1) == (v["stay_ms"] >= EFFECTIVE_VIEW_MS) & v["clicked"]).all()
    assert ((v["lvtr"] == 1) == (v["stay_ms"] >= long_view) & v["clicked"]).all()
    for task in ("ltr", "cmtr", "gtr"):
        inside = clicked.filter(pl.col(f"t_{task}").is_not_null())
        assert (inside[f"t_{task}"] >= inside["enter_ts"]).all()
        assert (inside[f"t_{task}"] <= inside["exit_ts"]).all()


def _frames(imps, events, rooms):
    impressions = pl.DataFrame(
        imps, schema=["request_id", "position", "ts", "user_id", "live_id"], orient="row"
    )
    live_events = pl.DataFrame(events, schema=["ts", "user_id", "live_id", "event"], orient="row")
    room_frame = pl.DataFrame(rooms, schema=["live_id", "end_ts"], orient="row")
    return impressions, live_events, room_frame


def test_hand_written_cases() -> None:
    W = CLICK_WINDOW_MS
    imps = [
        (1, 0, 1_000, 1, 7),  # next impression of (1, 7) at 5_000 -> window [1_000, 5_000)
        (2, 0, 5_000, 1, 7),  # clicked by the enter at 6_000
        (3, 0, 100_000, 1, 8),  # same ms as the next one: empty window
        (4, 1, 100_000, 1, 8),  # enter exactly at the impression time; no exit -> room end
        (5, 0, 200_000, 2, 8),  # enter exactly at ts + CLICK_WINDOW_MS: not a click
    ]
    events = [
        (6_000, 1, 7, "enter"), (6_000, 1, 7, "enter"), (7_000, 1, 7, "like"),
        (9_000, 1, 7, "gift"), (20_000, 1, 7, "exit"), (20_000, 1, 7, "comment"),
        (20_001, 1, 7, "like"), (100_000, 1, 8, "enter"), (100_500, 1, 8, "comment"),
        (200_000 + W, 2, 8, "enter"), (50, 1, 8, "enter"),
    ]  # fmt: skip
    v, stats = reconstruct_visits_with_stats(
        *_frames(imps, events, [(7, 10**6), (8, 500_000)]), 10_000
    )
    assert v["clicked"].to_list() == [False, True, False, True, False]
    row = v.row(1, named=True)
    assert (row["enter_ts"], row["exit_ts"], row["stay_ms"]) == (6_000, 20_000, 14_000)
    assert (row["t_ltr"], row["t_gtr"], row["t_cmtr"]) == (7_000, 9_000, 20_000)  # exit included
    assert (row["t_evtr"], row["t_lvtr"]) == (6_000 + EFFECTIVE_VIEW_MS, 16_000)
    row = v.row(3, named=True)
    assert (row["enter_ts"], row["exit_ts"], row["t_cmtr"]) == (100_000, 500_000, 100_500)
    # enters: 2 visits + 1 duplicate enter (re-entry) + 2 orphans (out of window, before)
    assert (stats.clicks, stats.reentries, stats.orphan_enters) == (2, 1, 2)
    assert stats.closed_at_room_end == 1


def test_zero_length_visit_and_exit_at_enter() -> None:
    imps = [(1, 0, 0, 1, 1)]
    events = [(10, 1, 1, "enter"), (10, 1, 1, "exit"), (10, 1, 1, "gift"), (11, 1, 1, "like")]
    v = reconstruct_visits(*_frames(imps, events, [(1, 1_000)]), 60_000)
    row = v.row(0, named=True)
    assert (row["stay_ms"], row["gtr"], row["ltr"], row["evtr"]) == (0, 1, 0, 0)


def test_extra_behaviours_are_general() -> None:
    imps = [(1, 0, 0, 1, 1)]
    events = [(10, 1, 1, "enter"), (500, 1, 1, "follow"), (900, 1, 1, "exit"), (950, 1, 1, "buy")]
    frames = _frames(imps, events, [(1, 1_000)])
    behaviours = {"ftr": "follow", "cvr": "buy"}
    v = reconstruct_visits(*frames, 60_000, behaviours=behaviours)
    assert time_columns(behaviours)["ftr"] == "t_ftr"
    assert (v["t_ftr"][0], v["ftr"][0], v["t_cvr"][0], v["cvr"][0]) == (500, 1, None, 0)


def test_errors_name_the_problem() -> None:
    imps, events, rooms = _frames([(1, 0, 0, 1, 9)], [(10, 1, 9, "enter")], [(1, 1_000)])
    with pytest.raises(DataValidationError, match="live_id"):
        reconstruct_visits(imps, events, rooms, 60_000)
    with pytest.raises(DataValidationError, match="event"):
        reconstruct_visits(imps, events.drop("event"), rooms, 60_000)


def test_null_keys_are_named() -> None:
    imps, events, rooms = _frames([(1, 0, 0, 1, 9)], [(10, 1, 9, "enter")], [(9, 1_000)])
    with pytest.raises(DataValidationError, match="live_impressions.*user_id"):
        reconstruct_visits(
            imps.with_columns(pl.lit(None, pl.Int64).alias("user_id")), events, rooms, 60_000
        )
    with pytest.raises(DataValidationError, match="live_events.*ts"):
        reconstruct_visits(
            imps, events.with_columns(pl.lit(None, pl.Int64).alias("ts")), rooms, 60_000
        )
