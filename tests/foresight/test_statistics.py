"""The statistic forecaster's examples (point in time), baselines, training round trip and the
``liverank foresight`` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.cli import main
from liverank.data.io import read_meta, read_table, write_table
from liverank.errors import DataValidationError
from liverank.features.store import RoomStatsStore
from liverank.foresight.statistics import (
    ForecastConfig,
    StatisticForecaster,
    anchors,
    build_examples,
    forecast_room,
    last_value,
    mean_value,
    split_days,
    train_and_evaluate,
)
from liverank.stream.room_stats import ROOM_STATS, WINDOW_MS

CFG = ForecastConfig(window=10, horizon=3, stride=1, epochs=1, dim=8, layers=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("foresight") / "w"
    simulate(SimConfig.preset("tiny", seed=0, n_days=3), root, progress=False)
    return root


def test_anchors_leave_room_for_the_horizon_and_follow_the_stride() -> None:
    w = WINDOW_MS
    rooms = pl.DataFrame(
        {"live_id": [7, 8], "start_ts": [10 * w, 100 * w], "end_ts": [15 * w, 101 * w]}
    )
    live, k = anchors(rooms, horizon=2, stride=1)
    # room 7: windows 10..15 (6), anchors 10..13 (their next 2 windows are on air); room 8: none
    assert live.tolist() == [7] * 4 and k.tolist() == [10, 11, 12, 13]
    live, k = anchors(rooms, horizon=2, stride=3)
    assert k.tolist() == [10, 13]


def test_examples_are_point_in_time_and_baselines_repeat_the_input(
    world: Path, tmp_path: Path
) -> None:
    meta = read_meta(world)
    rooms = read_table(world, "rooms")
    ex = build_examples(RoomStatsStore.from_dataset(world), rooms, CFG, meta.start_ts)
    assert ex.x.shape[1:] == (len(ROOM_STATS), 10) and ex.y.shape[1:] == (len(ROOM_STATS), 3)
    busy = int(np.argmax(ex.x[:, 0].sum(1) + ex.y[:, 0].sum(1)))
    live, ts = int(ex.live_id[busy]), int(ex.ts[busy])
    # the input is the store's history as of the anchor time; the target the next 3 windows
    store = RoomStatsStore.from_dataset(world)
    hist, _ = store.history(live, ts, 10)
    np.testing.assert_array_equal(ex.x[busy], hist.T)
    after, _ = store.history(live, ts + 3 * WINDOW_MS, 3)
    np.testing.assert_array_equal(ex.y[busy], after.T)
    # dropping every event at or after the anchor time changes no input, only targets
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("meta.json",):
        (cut / name).write_bytes((world / name).read_bytes())
    for table in ("rooms", "users", "authors", "live_impressions", "live_events"):
        frame = read_table(world, table)
        if "ts" in frame.columns and table != "rooms":
            frame = frame.filter(~((pl.col("live_id") == live) & (pl.col("ts") >= ts)))
        write_table(cut, table, frame)
    again = build_examples(RoomStatsStore.from_dataset(cut), rooms, CFG, meta.start_ts)
    np.testing.assert_array_equal(again.x[busy], ex.x[busy])
    # baselines
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(last_value(x, 2), np.repeat(x[:, :, -1:], 2, axis=2))
    np.testing.assert_allclose(mean_value(x, 2)[:, :, 1], x.mean(axis=2))


def test_split_needs_enough_days() -> None:
    train, val, test = split_days(np.array([0, 0, 1, 2, 2]), 1, 1)
    assert train.tolist() == [True, True, False, False, False] and test.tolist()[-2:] == [
        True,
        True,
    ]
    with pytest.raises(DataValidationError, match="more than val_days"):
        split_days(np.array([0, 1]), 1, 1)


def test_train_save_load_and_forecast_a_room(world: Path, tmp_path: Path) -> None:
    report = train_and_evaluate(world, tmp_path / "fc", CFG, progress=False)
    assert report["examples"]["test"] > 0 and len(report["history"]) == 1
    assert set(report["test"]) == {"foresighter", "last_value", "mean_value"}
    loaded = StatisticForecaster.load(tmp_path / "fc")
    meta = read_meta(world)
    ex = build_examples(
        RoomStatsStore.from_dataset(world), read_table(world, "rooms"), CFG, meta.start_ts
    )
    np.testing.assert_allclose(
        loaded.predict(ex.x[:50])[0], loaded.predict(ex.x[:50], batch_size=7)[0], rtol=1e-5
    )
    view = forecast_room(
        loaded, RoomStatsStore.from_dataset(world), int(ex.live_id[0]), int(ex.ts[0])
    )
    assert view["known"] and len(view["windows"]) == 10 and len(view["forecast_windows"]) == 3
    np.testing.assert_allclose(
        [view["forecast"][s] for s in ROOM_STATS], loaded.predict(ex.x[:1])[0][0], rtol=1e-5
    )
    # the commands
    assert main(["foresight", "show", "--model", str(tmp_path / "fc"), "--data", str(world),
                 "--live-id", str(int(ex.live_id[0]))]) == 0  # fmt: skip
    assert main(["foresight", "train", "--data", str(world), "--out", str(tmp_path / "cli"),
                 "--window", "10", "--epochs", "1"]) == 0  # fmt: skip
    assert (tmp_path / "cli" / "report.json").exists()
