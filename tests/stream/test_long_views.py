"""Long views found as the events arrive (stream/long_views.py): the rules on hand-made visits,
and on a simulated world the same rows as the offline builder's, whatever the chunking."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from liverank.data.io import read_meta, read_table
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.stream.long_views import advance, empty_state

LV = 1_000  # long_view_ms of the hand-made cases


def _events(*rows: tuple[int, int, int, str]) -> pl.DataFrame:
    ts, user, live, event = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pl.DataFrame(
        {"ts": list(ts), "user_id": list(user), "live_id": list(live), "event": list(event)},
        schema={"ts": pl.Int64, "user_id": pl.Int64, "live_id": pl.Int64, "event": pl.String},
    )


ROOMS = pl.DataFrame({"live_id": [7, 8], "end_ts": [10_000, 1_500]})


def _run(chunks: list[pl.DataFrame], watermarks: list[int]) -> tuple[pl.DataFrame, list[int]]:
    state, out = empty_state(), []
    for chunk, wm in zip(chunks, watermarks, strict=True):
        state, lv = advance(state, chunk, ROOMS, wm, LV)
        out += lv["ts"].to_list()
    return state, out


def test_a_visit_is_long_when_the_stay_reaches_the_threshold() -> None:
    # stays of 1,000 (long, at the exit), 999 (short), and a re-entry inside the first visit
    ev = _events(
        (100, 1, 7, "enter"), (300, 1, 7, "enter"), (1_100, 1, 7, "exit"),
        (2_000, 2, 7, "enter"), (2_999, 2, 7, "exit"),
    )  # fmt: skip
    state, out = _run([ev], [3_000])
    assert out == [1_100] and state.is_empty()


def test_the_long_view_is_emitted_when_the_watermark_passes_it() -> None:
    enter = _events((100, 1, 7, "enter"))
    state, out = _run([enter, _events(), _events()], [100, 1_099, 1_100])
    assert out == [1_100]
    assert state["emitted"].to_list() == [True]  # still in the room: a re-entry stays one visit
    state, lv = advance(state, _events((1_200, 1, 7, "enter")), ROOMS, 5_000, LV)
    assert lv.is_empty()
    state, lv = advance(state, _events((6_000, 1, 7, "exit")), ROOMS, 6_000, LV)
    assert lv.is_empty() and state.is_empty()  # the exit closes it, nothing twice


def test_a_room_that_ends_first_makes_no_long_view() -> None:
    # room 8 ends at 1,500: an enter at 600 would reach 1,000 ms only at 1,600
    state, out = _run([_events((600, 1, 8, "enter")), _events()], [600, 2_000])
    assert out == [] and state.is_empty()
    state, out = _run([_events((400, 1, 8, "enter")), _events()], [400, 2_000])
    assert out == [1_400] and state.is_empty()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("long_views")
    simulate(SimConfig.preset("tiny", seed=1), root / "data", progress=False)
    build_samples(root / "data", root / "samples", seq_len=10, long_len=20, progress=False)
    return root


@pytest.mark.parametrize("chunk_rows", [1_000, 7_777, 10**9])
def test_same_long_views_as_the_builder(world: Path, chunk_rows: int) -> None:
    data = world / "data"
    meta = read_meta(data)
    built = (
        pl.read_parquet(world / "samples" / "long_history" / "live.parquet")
        .filter(pl.col("lv") == 1)
        .select("user_id", "ts")
        .sort(["user_id", "ts"])
    )
    events = read_table(data, "live_events").select("ts", "user_id", "live_id", "event")
    rooms = read_table(data, "rooms").select("live_id", "end_ts")
    state, found = empty_state(), []
    for chunk in events.iter_slices(chunk_rows):
        state, lv = advance(state, chunk, rooms, int(chunk["ts"].max()), meta.long_view_ms)
        found.append(lv)
    state, lv = advance(state, events.clear(), rooms, meta.end_ts, meta.long_view_ms)
    found.append(lv)
    got = pl.concat(found).select("user_id", "ts").sort(["user_id", "ts"])
    assert len(built) > 50, "too few long views for the comparison to mean anything"
    assert got.equals(built)
    assert state.is_empty()  # every room has ended: no visit is left open
