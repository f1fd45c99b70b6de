"""Stream-mode samples directories: features equal the offline ones, labels equal emit_rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.cli import main
from liverank.data.io import read_meta, read_table
from liverank.data.loader import SampleSet
from liverank.data.samples import build_samples
from liverank.data.visits import reconstruct_visits
from liverank.features.ids import stable_id
from liverank.features.spec import TASKS
from liverank.stream.reporting import emit_rows
from liverank.stream.samples import STREAM_COLUMNS, build_stream_samples

SEQ_LEN = 8
LABELS = [*TASKS, *(f"mask_{t}" for t in TASKS)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("stream_samples_data")
    simulate(SimConfig.preset("tiny", seed=0), root, progress=False)
    return root


@pytest.fixture(scope="module")
def offline(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("offline")
    build_samples(dataset, out, seq_len=SEQ_LEN, progress=False)
    return pl.read_parquet(out / "part-*.parquet")


@pytest.fixture(scope="module")
def built(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for mode in ("exit", "fast_slow", "moment"):
        out = tmp_path_factory.mktemp(mode)
        build_stream_samples(dataset, out, mode, seq_len=SEQ_LEN, progress=False, shard_rows=5_000)
        dirs[mode] = out
    return dirs


def _read(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path / "part-*.parquet")


def _reference_rows(dataset: Path, mode: str) -> pl.DataFrame:
    imp = read_table(dataset, "live_impressions")
    visits = reconstruct_visits(
        imp,
        read_table(dataset, "live_events"),
        read_table(dataset, "rooms"),
        read_meta(dataset).long_view_ms,
    )
    return emit_rows(visits, mode)


@pytest.mark.parametrize("mode", ["exit", "fast_slow", "moment"])
def test_features_equal_offline_sample_of_the_impression(
    mode: str, built: dict[str, Path], offline: pl.DataFrame, dataset: Path
) -> None:
    rows = _read(built[mode])
    assert rows.columns[: len(offline.columns)] == offline.columns
    assert rows.columns[len(offline.columns) :] == list(STREAM_COLUMNS)
    # sample columns hold the encoded position: take the raw one from the emitted rows
    ref_rows = _reference_rows(dataset, mode)
    assert np.array_equal(rows["sample_id"].to_numpy(), ref_rows["sample_id"].to_numpy())
    key = stable_id(ref_rows["request_id"].to_numpy(), ref_rows["position"].to_numpy())
    feature_cols = [c for c in offline.columns if c not in (*LABELS, "sample_id", "day", "hour")]
    ref = offline.rename({"sample_id": "_key"}).select("_key", *feature_cols)
    got = rows.with_columns(pl.Series("_key", key)).select("_key", *feature_cols)
    expected = got.select("_key").join(ref, on="_key", how="left", maintain_order="left")
    assert expected["ts"].null_count() == 0
    assert got.equals(expected)


@pytest.mark.parametrize("mode", ["exit", "fast_slow", "moment"])
def test_labels_masks_and_order_equal_emit_rows(
    mode: str, built: dict[str, Path], dataset: Path
) -> None:
    rows = _read(built[mode])
    ref = _reference_rows(dataset, mode)
    assert len(rows) == len(ref)
    assert np.array_equal(rows["sample_id"].to_numpy(), ref["sample_id"].to_numpy())
    assert np.array_equal(rows["emit_ts"].to_numpy(), ref["emit_ts"].to_numpy())
    assert np.array_equal(rows["part"].to_numpy(), ref["part"].to_numpy())
    assert np.array_equal(rows["slow"].to_numpy(), ref["slow"].to_numpy())
    for c in LABELS:
        assert np.array_equal(rows[c].to_numpy(), ref[c].to_numpy()), c
    assert np.all(np.diff(rows["emit_ts"].to_numpy()) >= 0)


def test_day_and_hour_follow_emit_ts(built: dict[str, Path], dataset: Path) -> None:
    meta = read_meta(dataset)
    rows = _read(built["fast_slow"])
    rel = rows["emit_ts"].to_numpy() - meta.start_ts
    assert np.array_equal(rows["day"].to_numpy(), rel // 86_400_000)
    assert np.array_equal(rows["hour"].to_numpy(), rel // 3_600_000)
    # fast_slow emits at ts + 5 min at the earliest: hour is never before the impression's
    assert np.all(rows["emit_ts"].to_numpy() > rows["ts"].to_numpy())


def test_moment_reports_each_task_exactly_once(
    built: dict[str, Path], offline: pl.DataFrame
) -> None:
    exit_rows, moment = _read(built["exit"]), _read(built["moment"])
    assert len(exit_rows) == len(offline)
    assert len(moment) > len(exit_rows)
    per_imp = moment.group_by("request_id", "user_id", "ts", "live_id", "position").agg(
        *(pl.col(f"mask_{t}").sum() for t in TASKS), *(pl.col(t).sum() for t in TASKS)
    )
    assert len(per_imp) == len(offline)
    for t in TASKS:
        assert (per_imp[f"mask_{t}"] == 1).all(), t
    # each task's label, summed over the impression's rows, is the offline (exit) label
    ex = exit_rows.group_by("request_id", "user_id", "ts", "live_id", "position").agg(
        *(pl.col(t).sum().alias(f"exit_{t}") for t in TASKS)
    )
    both = per_imp.join(ex, on=["request_id", "user_id", "ts", "live_id", "position"])
    for t in TASKS:
        assert (both[t] == both[f"exit_{t}"]).all(), t


def test_loader_reads_stream_directory(built: dict[str, Path]) -> None:
    s = SampleSet.load(built["moment"])
    assert len(s) == len(_read(built["moment"]))
    assert np.array_equal(s["emit_ts"], _read(built["moment"])["emit_ts"].to_numpy())
    assert s["live_seq_author"].shape == (len(s), SEQ_LEN)


def test_cli_round_trip(dataset: Path, tmp_path: Path, built: dict[str, Path]) -> None:
    out = tmp_path / "cli_exit"
    code = main(
        [
            "build-samples",
            "--data",
            str(dataset),
            "--out",
            str(out),
            "--mode",
            "exit",
            "--seq-len",
            str(SEQ_LEN),
        ]
    )
    assert code == 0
    assert (out / "feature_map.json").exists() and (out / "stats.json").exists()
    assert _read(out).equals(_read(built["exit"]))
