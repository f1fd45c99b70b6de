"""Invariants of the reporting modes on random visits (events shuffled in the input)."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data.schema import CLICK_WINDOW_MS
from liverank.data.visits import reconstruct_visits, time_columns
from liverank.errors import ConfigError
from liverank.stream.reporting import FAST_MS, SLOW_MS, emit_rows

TIMES = time_columns()
TASKS = tuple(TIMES)
IMP = ["request_id", "position"]
LONG_VIEW_MS = 60_000


def _visits(factory, seed: int) -> pl.DataFrame:
    imp, ev, rooms = factory(seed)
    return reconstruct_visits(imp, ev, rooms, LONG_VIEW_MS)


def _end() -> pl.Expr:
    return pl.when("clicked").then("exit_ts").otherwise(pl.col("ts") + CLICK_WINDOW_MS)


def _long(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per reported (impression, task): emit_ts and label."""
    return pl.concat(
        [
            rows.filter(pl.col(f"mask_{t}") == 1).select(
                *IMP, "emit_ts", pl.lit(t).alias("task"), pl.col(t).alias("label")
            )
            for t in TASKS
        ]
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), window_ms=st.sampled_from([30_000, 7_000, 1]))
def test_moment_labels_each_behaviour_once_never_early(
    stream_factory, seed: int, window_ms: int
) -> None:
    v = _visits(stream_factory, seed).with_columns(_end().alias("_end"))
    rows = emit_rows(v, "moment", window_ms=window_ms)
    assert rows["sample_id"].n_unique() == len(rows)
    assert ((rows["emit_ts"] % window_ms) == 0).all()
    long = _long(rows)
    # exactly once: (impression, task) is unique and covers every task of every impression
    assert len(long) == len(v) * len(TASKS)
    assert long.select(*IMP, "task").n_unique() == len(long)
    ref = pl.concat(
        [
            v.select(*IMP, "_end", pl.lit(t).alias("task"), pl.col(c).alias("t_first"))
            for t, c in TIMES.items()
        ]
    )
    j = long.join(ref, on=[*IMP, "task"], how="left")
    pos = j.filter(pl.col("label") == 1)
    neg = j.filter(pl.col("label") == 0)
    # labels agree with the offline labels
    assert pos["t_first"].null_count() == 0 and neg["t_first"].null_count() == len(neg)
    # a positive: at the end of the window containing its first occurrence
    assert (pos["emit_ts"] == (pos["t_first"] // window_ms + 1) * window_ms).all()
    assert (pos["emit_ts"] > pos["t_first"]).all()
    # a negative: at the end of the window containing the visit's end
    assert (neg["emit_ts"] > neg["_end"]).all()
    assert (neg["emit_ts"] == (neg["_end"] // window_ms + 1) * window_ms).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fast_slow_positives_are_the_positives_within_one_hour(stream_factory, seed: int) -> None:
    v = _visits(stream_factory, seed)
    rows = emit_rows(v, "fast_slow")
    fast = rows.filter(pl.col("slow") == 0)
    slow = rows.filter(pl.col("slow") == 1)
    assert len(fast) == len(v) and rows["sample_id"].n_unique() == len(rows)
    assert (fast["emit_ts"] == fast["ts"] + FAST_MS).all()
    assert (slow["emit_ts"] == slow["ts"] + SLOW_MS).all()
    # slow rows only unmask their positives, and at least one
    for t in TASKS:
        assert (slow[t] == slow[f"mask_{t}"]).all()
        assert (fast[f"mask_{t}"] == 1).all()
    assert (slow.select(pl.sum_horizontal(*TASKS).alias("n"))["n"] >= 1).all()
    for t, c in TIMES.items():
        want = v.filter(pl.col(c) <= pl.col("ts") + SLOW_MS).select(IMP).sort(IMP)
        got = pl.concat([fast.filter(pl.col(t) == 1), slow.filter(pl.col(t) == 1)])
        assert got.select(IMP).n_unique() == len(got)  # never reported twice
        assert got.select(IMP).sort(IMP).equals(want)
        early = v.filter(pl.col(c) <= pl.col("ts") + FAST_MS).select(IMP).sort(IMP)
        assert fast.filter(pl.col(t) == 1).select(IMP).sort(IMP).equals(early)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_exit_mode_is_the_offline_labels_at_visit_end(stream_factory, seed: int) -> None:
    v = _visits(stream_factory, seed).with_columns(_end().alias("_end"))
    rows = emit_rows(v, "exit")
    j = rows.join(v, on=IMP, suffix="_v")
    assert len(j) == len(v)
    assert (j["emit_ts"] == j["_end"]).all()
    for t in TASKS:
        assert (j[t] == j[f"{t}_v"].cast(pl.Float32)).all()


def test_ids_are_deterministic_and_independent_of_row_order(stream_factory) -> None:
    v = _visits(stream_factory, 3)
    a = emit_rows(v, "moment")
    b = emit_rows(v.sample(fraction=1.0, shuffle=True, seed=1), "moment")
    assert a.equals(b)
    ids = set(a["sample_id"]) | set(emit_rows(v, "exit")["sample_id"])
    assert len(ids) == len(a) + len(v)


def test_bad_mode_and_missing_columns_are_named(stream_factory) -> None:
    v = _visits(stream_factory, 0)
    with pytest.raises(ConfigError, match="unknown reporting mode 'hourly'"):
        emit_rows(v, "hourly")
    with pytest.raises(Exception, match="t_gtr"):
        emit_rows(v.drop("t_gtr"), "exit")
