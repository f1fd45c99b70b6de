"""The incremental engine emits exactly the rows of the vectorised reporting function."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data.visits import reconstruct_visits
from liverank.errors import ConfigError, DataValidationError
from liverank.stream.engine import STREAM_SCHEMA, StreamEngine, merge_stream
from liverank.stream.reporting import MODES, emit_rows

LONG_VIEW_MS = 60_000


def _batch(imp: pl.DataFrame, ev: pl.DataFrame, rooms: pl.DataFrame, mode: str) -> pl.DataFrame:
    return emit_rows(reconstruct_visits(imp, ev, rooms, LONG_VIEW_MS), mode).sort("sample_id")


def _jitter(stream: pl.DataFrame, lateness_ms: int, seed: int) -> pl.DataFrame:
    """Reorder so that no row comes after a row more than ``lateness_ms`` later than it."""
    rng = np.random.default_rng(seed)
    key = stream["ts"].to_numpy() + rng.integers(0, max(lateness_ms, 1), len(stream))
    return stream.with_columns(pl.Series("_k", key)).sort("_k", maintain_order=True).drop("_k")


def _run(engine: StreamEngine, stream: pl.DataFrame, chunk_sizes: list[int]) -> pl.DataFrame:
    out, start, i = [], 0, 0
    while start < len(stream):
        size = chunk_sizes[i % len(chunk_sizes)]
        out.append(engine.push(stream.slice(start, size)))
        start, i = start + size, i + 1
    out.append(engine.flush())
    return pl.concat(out)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(MODES),
    lateness_ms=st.sampled_from([0, 10_000, 120_000]),
    chunks=st.lists(st.integers(3, 60), min_size=1, max_size=4),
)
def test_chunked_engine_equals_batch(stream_factory, seed, mode, lateness_ms, chunks) -> None:
    imp, ev, rooms = stream_factory(seed)
    stream = _jitter(merge_stream(imp, ev), lateness_ms, seed)
    engine = StreamEngine(rooms, LONG_VIEW_MS, mode, allowed_lateness_ms=lateness_ms)
    got = _run(engine, stream, chunks)
    assert engine.stats.late == 0 and len(engine.dead_letters) == 0
    assert got["sample_id"].n_unique() == len(got)  # nothing emitted twice
    assert got.sort("sample_id").equals(_batch(imp, ev, rooms, mode))
    assert engine.open_impressions == 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), mode=st.sampled_from(MODES))
def test_late_rows_are_dead_lettered_and_the_rest_matches_batch(stream_factory, seed, mode):
    imp, ev, rooms = stream_factory(seed)
    stream = merge_stream(imp, ev).sample(fraction=1.0, shuffle=True, seed=seed)  # disorder
    engine = StreamEngine(rooms, LONG_VIEW_MS, mode, allowed_lateness_ms=60_000)
    got = _run(engine, stream, [7])
    dead = engine.dead_letters
    assert engine.stats.late == len(dead) and engine.stats.rows_in == len(stream)
    assert dead["reason"].str.starts_with("late").all()
    # reference: a row is late iff it is older than (max ts of every row before it) - lateness
    late = pl.col("ts") < pl.col("ts").cum_max().shift(1) - 60_000
    ref_dead = stream.filter(late.fill_null(False))
    accepted = stream.filter(~late.fill_null(False))
    assert len(ref_dead) > 0
    assert dead.select(list(STREAM_SCHEMA)).sort(pl.all()).equals(ref_dead.sort(pl.all()))
    # ``row`` is each dead letter's index in the engine's input
    rows = stream.with_row_index("row").join(dead.select("row", "ts"), on="row")
    assert len(rows) == len(dead) and (rows["ts"] == rows["ts_right"]).all()
    assert (dead["table"] == "stream").all()
    a_imp = accepted.filter(pl.col("kind") == "impression").drop("kind")
    a_ev = accepted.filter(pl.col("kind") != "impression").rename({"kind": "event"})
    assert got.sort("sample_id").equals(_batch(a_imp, a_ev, rooms, mode))


def test_rows_are_only_emitted_once_due(stream_factory) -> None:
    imp, ev, rooms = stream_factory(5)
    engine = StreamEngine(rooms, LONG_VIEW_MS, "moment", allowed_lateness_ms=30_000)
    stream = merge_stream(imp, ev)
    for start in range(0, len(stream), 10):
        rows = engine.push(stream.slice(start, 10))
        if len(rows):
            assert (rows["emit_ts"] < engine.watermark).all()


def test_dead_letters_written_as_parquet(stream_factory, tmp_path) -> None:
    imp, ev, rooms = stream_factory(1)
    stream = merge_stream(imp, ev)
    engine = StreamEngine(rooms.filter(pl.col("live_id") != 1), LONG_VIEW_MS, "exit")
    engine.push(stream.reverse())  # everything but the newest row is late
    path = engine.write_dead_letters(tmp_path / "dead.parquet")
    back = pl.read_parquet(path)
    assert len(back) == engine.stats.late + engine.stats.unknown_room > 0
    assert set(back.columns) >= {"ts", "kind", "reason"}


def test_bad_config_is_named(stream_factory) -> None:
    _, _, rooms = stream_factory(0)
    with pytest.raises(ConfigError, match="allowed_lateness_ms"):
        StreamEngine(rooms, LONG_VIEW_MS, "exit", allowed_lateness_ms=-1)
    with pytest.raises(ConfigError, match="unknown reporting mode"):
        StreamEngine(rooms, LONG_VIEW_MS, "daily")


@pytest.mark.parametrize("mode", MODES)
def test_engine_on_simulated_data_equals_batch(tiny_sim, mode: str) -> None:
    imp, ev, rooms = tiny_sim["live_impressions"], tiny_sim["live_events"], tiny_sim["rooms"]
    long_view_ms = tiny_sim["long_view_ms"]
    stream = _jitter(merge_stream(imp, ev), 20_000, seed=1)
    engine = StreamEngine(rooms, long_view_ms, mode, allowed_lateness_ms=20_000)
    got = _run(engine, stream, [997, 250])
    want = emit_rows(reconstruct_visits(imp, ev, rooms, long_view_ms), mode)
    assert engine.stats.late == 0 and len(want) >= len(imp)
    assert got.sort("sample_id").equals(want.sort("sample_id"))


def _planted() -> tuple[pl.DataFrame, pl.DataFrame]:
    """One impression at t0, enter 1 s later, exit and a like both at t0 + 10 s."""
    t0 = 1_700_000_000_007
    rooms = pl.DataFrame({"live_id": [1], "end_ts": [t0 + 3_600_000]})
    imp = pl.DataFrame(
        {"request_id": [1], "position": [0], "ts": [t0], "user_id": [1], "live_id": [1]}
    )
    ev = pl.DataFrame(
        {
            "ts": [t0 + 1_000, t0 + 10_000, t0 + 10_000, t0 + 20_000],
            "user_id": [1, 1, 1, 2],
            "live_id": [1, 1, 1, 1],
            "event": ["enter", "exit", "like", "comment"],
        }
    )
    return merge_stream(imp, ev), rooms


def test_event_at_the_watermark_still_counts() -> None:
    # the like shares the exit's ms but arrives in a later chunk: the exit row must wait for it
    stream, rooms = _planted()
    engine = StreamEngine(rooms, LONG_VIEW_MS, "exit")
    first = engine.push(stream.slice(0, 3))  # impression, enter, exit: watermark = exit ts
    assert len(first) == 0
    rows = pl.concat([first, engine.push(stream.slice(3, 2)), engine.flush()])
    assert rows["ltr"].to_list() == [1.0] and engine.stats.late == 0


def test_event_one_ms_behind_the_watermark_is_late() -> None:
    stream, rooms = _planted()
    engine = StreamEngine(rooms, LONG_VIEW_MS, "moment", allowed_lateness_ms=5_000)
    engine.push(stream)  # max ts = t0 + 20 s
    wm = engine.watermark
    assert wm is not None
    straggler = stream.slice(1, 1).with_columns(pl.lit(wm - 1, pl.Int64).alias("ts"))
    at_wm = stream.slice(1, 1).with_columns(pl.lit(wm, pl.Int64).alias("ts"))
    engine.push(pl.concat([straggler, at_wm]))
    assert engine.stats.late == 1
    assert engine.dead_letters["ts"].to_list() == [wm - 1]
    assert engine.dead_letters["reason"][0] == f"late: ts < watermark {wm}"


@pytest.mark.parametrize("mode", MODES)
def test_later_impression_leaving_first_does_not_reopen_an_earlier_click_window(mode) -> None:
    # impressions A (t0) and B (t0 + 2 s) of one room; the enter at t0 + 3 s clicks B only.
    # B's short visit is done before A's click window (t0 + 60 s) closes: if B left the state
    # first, A's window would no longer end at B and A would wrongly look clicked.
    t0 = 1_700_000_000_007
    rooms = pl.DataFrame({"live_id": [1], "end_ts": [t0 + 7_200_000]})
    imp = pl.DataFrame(
        {
            "request_id": [1, 2],
            "position": [0, 0],
            "ts": [t0, t0 + 2_000],
            "user_id": [1, 1],
            "live_id": [1, 1],
        }
    )
    ev = pl.DataFrame(
        {
            "ts": [t0 + 3_000, t0 + 4_000, t0 + 5_000] + [t0 + k * 10_000 for k in range(1, 400)],
            "user_id": [1, 1, 1] + [2] * 399,
            "live_id": [1] * 402,
            "event": ["enter", "like", "exit"] + ["comment"] * 399,
        }
    )
    engine = StreamEngine(rooms, LONG_VIEW_MS, mode)
    got = _run(engine, merge_stream(imp, ev), [1])
    assert got.sort("sample_id").equals(_batch(imp, ev, rooms, mode))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), mode=st.sampled_from(MODES))
def test_rows_of_unknown_events_users_rooms_and_null_keys_are_dead_lettered(
    stream_factory, seed, mode
) -> None:
    """Bad rows never change the output, each is dead-lettered once with its reason and row."""
    imp, ev, rooms = stream_factory(seed)
    users = pl.DataFrame({"user_id": imp["user_id"].unique()})
    ev_good = ev.filter(pl.col("user_id").is_in(users["user_id"].implode()))
    clean = merge_stream(imp, ev_good)
    bad = pl.concat(
        [
            clean.filter(pl.col("kind") == "enter").head(3).with_columns(kind=pl.lit("Enter")),
            clean.head(2).with_columns(user_id=pl.lit(999, pl.Int64)),
            clean.tail(2).with_columns(live_id=pl.lit(999, pl.Int64)),
            clean.head(1).with_columns(ts=pl.lit(None, pl.Int64)),
        ]
    )
    reasons = ["unknown event name"] * 3 + ["unknown user (not in users table)"] * 2
    reasons += ["unknown room (not in rooms table)"] * 2 + ["null ts"]
    bad = bad.with_columns(pl.Series("_why", reasons))
    stream = pl.concat([clean.with_columns(pl.lit(None, pl.String).alias("_why")), bad])
    stream = stream.sample(fraction=1.0, shuffle=True, seed=seed).sort("ts", nulls_last=True)
    engine = StreamEngine(rooms, LONG_VIEW_MS, mode, users=users)
    got = _run(engine, stream.drop("_why"), [17, 5])
    assert got.sort("sample_id").equals(_batch(imp, ev_good, rooms, mode))
    dead = engine.dead_letters
    want = stream.with_row_index("row").filter(pl.col("_why").is_not_null())
    assert (
        dead.select("row", "reason")
        .sort("row")
        .equals(want.select(pl.col("row").cast(pl.Int64), pl.col("_why").alias("reason")))
    )
    s = engine.stats
    assert (s.unknown_event, s.unknown_user, s.unknown_room, s.null_field, s.late) == (
        3,
        2,
        2,
        1,
        0,
    )


def test_unknown_events_error_mode_names_the_values() -> None:
    stream, rooms = _planted()
    engine = StreamEngine(rooms, LONG_VIEW_MS, "exit", unknown_events="error")
    bad = stream.with_columns(
        pl.when(pl.col("kind") == "like").then(pl.lit("Like")).otherwise("kind").alias("kind")
    )
    with pytest.raises(DataValidationError, match=r"column 'kind': 1 row\(s\).*'Like' x 1"):
        engine.push(bad)
    assert engine.stats.rows_in == 0  # nothing was taken in
    with pytest.raises(ConfigError, match="unknown_events"):
        StreamEngine(rooms, LONG_VIEW_MS, "exit", unknown_events="drop")
