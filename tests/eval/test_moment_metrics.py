"""Moment metrics: highlight windows, window membership, within-room AUC, the slices.

References are direct computations: a Python loop over the ticks for the windows, a loop over
(row, window) pairs for membership, and liverank.eval.metrics.auc on hand-picked subsets for
every AUC (each room's or user's rows, weighted by their labelled rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data.sim.checks.traffic import onsets
from liverank.errors import ConfigError, DataValidationError
from liverank.eval.metrics import auc
from liverank.eval.moment_metrics import (
    HIGHLIGHT,
    OUTSIDE,
    highlight_windows,
    in_windows,
    moment_slices,
    room_auc,
    windows_from_ticks,
)

TICK = 30_000
T0 = 1_700_000_000_000


def _ticks(rooms: dict[int, list[float]], start: dict[int, int] | None = None) -> pl.DataFrame:
    rows = [
        (r, (start or {}).get(r, T0) + k * TICK, e)
        for r, series in rooms.items()
        for k, e in enumerate(series)
    ]
    return pl.DataFrame(rows, schema=["live_id", "ts", "excitement"], orient="row")


def _windows_reference(ticks: pl.DataFrame, level: float, calm: int) -> set[tuple[int, int, int]]:
    """Loop over each room's ticks: open at an elevated tick, close after `calm` calm ticks."""
    out = set()
    for (room,), part in ticks.sort("ts").group_by(["live_id"]):
        start = last = None
        quiet = 0
        for ts, e in zip(part["ts"], part["excitement"], strict=True):
            if e >= level:
                start = ts if start is None else start
                last, quiet = ts, 0
            elif start is not None:
                quiet += 1
                if quiet >= calm:
                    out.add((room, start, last + TICK))
                    start = None
        if start is not None:
            out.add((room, start, last + TICK))
    return out


def _as_set(w: pl.DataFrame) -> set[tuple[int, int, int]]:
    return set(w.select("live_id", "start_ts", "end_ts").iter_rows())


def test_windows_by_hand() -> None:
    ticks = _ticks(
        {
            1: [0.2, 1.2, 1.3, 0.5, 0.4, 1.1, 0.3, 0.3, 0.3, 0.3, 1.5, 0.2],
            2: [1.0, 0.9],  # elevated from the room's start
            3: [0.5, 0.99, 0.1],  # never elevated
        }
    )
    t = lambda k: T0 + k * TICK  # noqa: E731
    w = windows_from_ticks(ticks)  # level 1.0, merge gaps of < 4 calm ticks
    assert w.columns == ["live_id", "start_ts", "end_ts"]
    assert w.rows() == [(1, t(1), t(6)), (1, t(10), t(11)), (2, t(0), t(1))]
    no_merge = windows_from_ticks(ticks, calm_ticks=1)
    assert no_merge.rows() == [
        (1, t(1), t(3)),
        (1, t(5), t(6)),
        (1, t(10), t(11)),
        (2, t(0), t(1)),
    ]
    with pytest.raises(ConfigError):
        windows_from_ticks(ticks, calm_ticks=0)
    assert windows_from_ticks(ticks.head(0)).schema == w.schema


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from([0.2, 0.8, 1.0, 1.6]), max_size=25), min_size=1, max_size=4),
    st.integers(1, 5),
)
def test_windows_match_a_loop_and_start_at_the_simulators_onsets(
    series: list[list[float]], calm: int
) -> None:
    rooms = {r + 1: s for r, s in enumerate(series)}
    ticks = _ticks(rooms, start={r: T0 + r * 7 * TICK for r in rooms})  # rooms overlap in time
    w = windows_from_ticks(ticks, calm_ticks=calm)
    assert _as_set(w) == _windows_reference(ticks, 1.0, calm)
    # every onset of the simulator's calibration starts a window; the other windows start at a
    # room's first elevated tick, fewer than `calm` ticks after the room's start
    on = set(onsets(ticks, level=1.0, calm=calm).iter_rows())
    starts = set(w.select("live_id", "start_ts").iter_rows())
    assert on <= starts
    for room, start in starts - on:
        first_high = ticks.filter((pl.col("live_id") == room) & (pl.col("excitement") >= 1.0))
        assert start == first_high["ts"].min()
        assert (start - (T0 + room * 7 * TICK)) // TICK < calm


def test_highlight_windows_reads_the_ground_truth(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="no highlight ground truth"):
        highlight_windows(tmp_path)
    ticks = _ticks({4: [0.1, 1.4, 1.2, 0.3]}).with_columns(product_id=pl.lit(0))
    (tmp_path / "sim_truth").mkdir()
    ticks.write_parquet(tmp_path / "sim_truth" / "room_ticks.parquet")
    assert highlight_windows(tmp_path).rows() == [(4, T0 + TICK, T0 + 3 * TICK)]
    assert highlight_windows(tmp_path, level=1.3).rows() == [(4, T0 + TICK, T0 + 2 * TICK)]


def _random_windows(rng: np.random.Generator, rooms: int, per_room: int) -> pl.DataFrame:
    rows = []
    for r in range(1, rooms + 1):
        edges = np.sort(rng.choice(np.arange(0, 10_000, 10), 2 * per_room, replace=False))
        rows += [(r, int(a), int(b)) for a, b in edges.reshape(-1, 2)]
    return pl.DataFrame(rows, schema=["live_id", "start_ts", "end_ts"], orient="row")


@pytest.mark.parametrize("seed", range(5))
def test_in_windows_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = _random_windows(rng, rooms=6, per_room=5).sample(fraction=1.0, shuffle=True, seed=seed)
    n = 2_000
    room = rng.integers(0, 8, n)  # rooms 0 and 7 have no windows
    ts = rng.integers(-100, 10_100, n)
    ts[:50] = w["start_ts"].to_numpy()[rng.integers(0, w.height, 50)]  # edges: start is in ...
    ts[50:100] = w["end_ts"].to_numpy()[rng.integers(0, w.height, 50)]  # ... end is out
    got = in_windows(room, ts, w)
    wr, ws, we = (w[c].to_numpy() for c in ("live_id", "start_ts", "end_ts"))
    want = ((room[:, None] == wr) & (ts[:, None] >= ws) & (ts[:, None] < we)).any(1)
    np.testing.assert_array_equal(got, want)
    assert 0 < want.sum() < n


def test_in_windows_edge_cases() -> None:
    w = pl.DataFrame({"live_id": [1, 1], "start_ts": [0, 10], "end_ts": [10, 20]})
    assert in_windows(np.array([1, 1, 1, 2]), np.array([9, 10, 20, 5]), w).tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert in_windows(np.zeros(0, np.int64), np.zeros(0, np.int64), w).shape == (0,)
    assert not in_windows(np.array([1]), np.array([5]), w.head(0)).any()
    overlapping = pl.DataFrame({"live_id": [1, 1], "start_ts": [0, 5], "end_ts": [10, 20]})
    with pytest.raises(DataValidationError, match="overlap"):
        in_windows(np.array([1]), np.array([5]), overlapping)
    empty = pl.DataFrame({"live_id": [1], "start_ts": [5], "end_ts": [5]})
    with pytest.raises(DataValidationError, match="end at or before"):
        in_windows(np.array([1]), np.array([5]), empty)
    with pytest.raises(ValueError, match="one length"):
        in_windows(np.array([1, 2]), np.array([5]), w)


def _weighted_group_auc(y: np.ndarray, p: np.ndarray, g: np.ndarray, m: np.ndarray) -> float:
    """Direct: the AUC of each group's labelled rows, weighted by their count (both classes)."""
    num = den = 0.0
    for key in np.unique(g):
        rows = (g == key) & m
        if rows.sum() and 0 < y[rows].sum() < rows.sum():
            num += auc(y[rows], p[rows]) * rows.sum()
            den += rows.sum()
    return num / den if den else float("nan")


def test_room_auc_is_the_weighted_within_room_auc() -> None:
    y = np.array([1, 0, 0, 1, 1, 0, 1, 1, 0, 0], dtype=float)
    p = np.array([0.9, 0.1, 0.5, 0.4, 0.6, 0.7, 0.2, 0.3, 0.8, 0.1])
    room = np.array([1, 1, 1, 2, 2, 2, 3, 3, 4, 4])  # room 3 all positive, room 4 all negative
    m = np.ones(10, dtype=bool)
    # room 1: 1 positive above 2 negatives -> 1.0 (3 rows); room 2: 0.4, 0.6 vs 0.7 -> 0.0
    assert room_auc(y, p, room) == pytest.approx((1.0 * 3 + 0.0 * 3) / 6)
    m[2] = False  # room 1 keeps 2 labelled rows
    assert room_auc(y, p, room, m) == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)
    assert np.isnan(room_auc(y[6:], p[6:], room[6:]))
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 500).astype(float), rng.random(500)
    room, m = rng.integers(0, 30, 500), rng.random(500) < 0.8
    assert room_auc(y, p, room, m) == pytest.approx(_weighted_group_auc(y, p, room, m))


def _pred(seed: int, n: int = 3_000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {
        "user_id": rng.integers(1, 60, n),
        "live_id": rng.integers(1, 9, n),
        "ts": rng.integers(0, 10_000, n),
        "slow": (rng.random(n) < 0.1).astype(np.int64),
    }
    for t in ("ctr", "lvtr"):
        cols[t] = rng.integers(0, 2, n).astype(np.float32)
        cols[f"p_{t}"] = np.clip(0.3 * cols[t] + rng.random(n), 0, 1).astype(np.float32)
    cols["mask_ctr"] = (rng.random(n) < 0.9).astype(np.float32)  # lvtr: no mask column
    return pl.DataFrame(cols)


@pytest.mark.parametrize("seed", range(3))
def test_moment_slices_match_direct_computation(seed: int) -> None:
    pred = _pred(seed)
    w = _random_windows(np.random.default_rng(seed + 10), rooms=8, per_room=10)
    got = moment_slices(pred, ["ctr", "lvtr"], w)
    assert set(got) == {"all", HIGHLIGHT, OUTSIDE}
    fast = pred.filter(pl.col("slow") == 0)  # slow rows are never scored
    room, user, ts = (fast[c].to_numpy() for c in ("live_id", "user_id", "ts"))
    wr, ws, we = (w[c].to_numpy() for c in ("live_id", "start_ts", "end_ts"))
    inside = ((room[:, None] == wr) & (ts[:, None] >= ws) & (ts[:, None] < we)).any(1)
    for t in ("ctr", "lvtr"):
        y, p = fast[t].to_numpy().astype(float), fast[f"p_{t}"].to_numpy().astype(float)
        m = (
            fast[f"mask_{t}"].to_numpy() > 0
            if f"mask_{t}" in fast.columns
            else np.ones_like(y, bool)
        )
        assert got["all"][t]["room_auc"] == pytest.approx(_weighted_group_auc(y, p, room, m))
        for name, rows in ((HIGHLIGHT, inside), (OUTSIDE, ~inside)):
            s = got[name][t]
            sel = rows & m
            assert s["count"] == sel.sum() > 100
            assert s["auc"] == pytest.approx(auc(y[sel], p[sel]))
            assert s["gauc"] == pytest.approx(_weighted_group_auc(y, p, user, sel))
            assert s["room_auc"] == pytest.approx(_weighted_group_auc(y, p, room, sel))
            assert s["n_rooms"] == len(np.unique(room[sel]))


def test_moment_slices_without_windows_or_columns() -> None:
    pred = _pred(0).drop("slow")
    empty = pl.DataFrame(schema={"live_id": pl.Int64, "start_ts": pl.Int64, "end_ts": pl.Int64})
    got = moment_slices(pred, ["ctr"], empty)
    assert got[HIGHLIGHT]["ctr"]["count"] == 0 and np.isnan(got[HIGHLIGHT]["ctr"]["auc"])
    assert got[OUTSIDE]["ctr"]["count"] == (pred["mask_ctr"] > 0).sum()
    with pytest.raises(DataValidationError, match="live_id"):
        moment_slices(pred.drop("live_id"), ["ctr"], empty)
