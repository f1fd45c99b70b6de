"""The in-memory loader: round trip, day filter, chronological split, batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from liverank.data.loader import SampleSet, split_by_day
from liverank.data.samples import build_samples
from liverank.errors import ConfigError, DataValidationError
from liverank.features.spec import TASKS, seq_fields


@pytest.fixture(scope="session")
def samples_dir(small_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    build_samples(small_dataset_dir, out, seq_len=6, shard_rows=90, progress=False)
    return out


@pytest.fixture(scope="session")
def samples(samples_dir: Path) -> SampleSet:
    return SampleSet.load(samples_dir)


def test_round_trip(samples_dir: Path, samples: SampleSet) -> None:
    frame = pl.concat([pl.read_parquet(p) for p in sorted(samples_dir.glob("part-*.parquet"))])
    assert len(samples) == len(frame) and samples.columns == frame.columns
    for col in frame.columns:
        arr = samples[col]
        if col in seq_fields("live") or col in seq_fields("video"):
            assert arr.shape == (len(frame), 6) and arr.dtype == np.int16  # compact in memory
            assert arr.flags["C_CONTIGUOUS"]
            np.testing.assert_array_equal(arr, np.array(frame[col].to_list()))
        else:
            np.testing.assert_array_equal(arr, frame[col].to_numpy())
        expected = (
            np.float32 if col in TASKS or col == "stay_ms" or col.startswith("mask_") else np.int64
        )
        if arr.ndim == 1:
            assert arr.dtype == expected, col
    assert samples.feature_map is not None and samples.feature_map.seq_len == 6


def test_day_filter_and_columns(samples_dir: Path, samples: SampleSet) -> None:
    days = samples.days()
    assert days == sorted(set(samples["day"].tolist())) and len(days) >= 3
    part = SampleSet.load(samples_dir, days=days[1:3], columns=["sample_id", "live_seq_author"])
    assert part.columns == ["day", "sample_id", "live_seq_author"]
    keep = np.isin(samples["day"], days[1:3])
    np.testing.assert_array_equal(part["sample_id"], samples["sample_id"][keep])
    np.testing.assert_array_equal(part["live_seq_author"], samples["live_seq_author"][keep])
    assert len(SampleSet.load(samples_dir, days=[10_000])) == 0
    with pytest.raises(DataValidationError, match="no_such"):
        SampleSet.load(samples_dir, columns=["no_such"])
    with pytest.raises(DataValidationError, match="no sample shards"):
        SampleSet.load(samples_dir / "nothing-here")


def test_split_by_day_is_chronological(samples: SampleSet) -> None:
    train, val, test = split_by_day(samples, val_days=1, test_days=1)
    days = samples.days()
    assert test.days() == days[-1:] and val.days() == days[-2:-1] and train.days() == days[:-2]
    assert len(train) + len(val) + len(test) == len(samples)
    assert train["ts"].max() < val["ts"].min() <= val["ts"].max() < test["ts"].min()
    train2, val2, test2 = split_by_day(samples, val_days=2, test_days=1)
    assert val2.days() == days[-3:-1]
    with pytest.raises(ConfigError, match="needs at least"):
        split_by_day(samples, val_days=len(days), test_days=1)
    # unsorted days (e.g. a shuffled subset) take the copying path and give the same parts
    shuffled = samples.subset(np.random.default_rng(0).permutation(len(samples)))
    for part, other in zip(split_by_day(shuffled), (train, val, test), strict=True):
        assert sorted(part["sample_id"].tolist()) == sorted(other["sample_id"].tolist())


def test_train_days_keeps_only_the_last_training_days(samples: SampleSet) -> None:
    """data.train_days: the earlier days feed the histories but are no training rows; the
    validation and test days do not move."""
    days = samples.days()
    assert len(days) >= 4, "the fixture needs two training days for this test to mean anything"
    train, val, test = split_by_day(samples, val_days=1, test_days=1)
    for shuffle in (False, True):
        data = samples
        if shuffle:  # the copying path
            data = samples.subset(np.random.default_rng(1).permutation(len(samples)))
        train1, val1, test1 = split_by_day(data, val_days=1, test_days=1, train_days=1)
        assert train1.days() == days[-3:-2] and val1.days() == val.days()
        assert sorted(test1["sample_id"].tolist()) == sorted(test["sample_id"].tolist())
        assert len(train1) == int((samples["day"] == days[-3]).sum()) < len(train)
    # more training days than there are: every earlier day, as without the option
    many = split_by_day(samples, val_days=1, test_days=1, train_days=len(days))[0]
    assert many.days() == train.days() and len(many) == len(train)
    with pytest.raises(ConfigError, match="train_days >= 1"):
        split_by_day(samples, train_days=0)


def test_subset(samples: SampleSet) -> None:
    mask = samples["ctr"] == 1
    clicked = samples.subset(mask)
    assert len(clicked) == int(mask.sum()) and (clicked["ctr"] == 1).all()
    picked = samples.subset(np.array([3, 1]))
    np.testing.assert_array_equal(picked["sample_id"], samples["sample_id"][[3, 1]])
    with pytest.raises(ValueError, match="mask has"):
        samples.subset(np.ones(2, dtype=bool))


def test_batches_cover_every_row_once(samples: SampleSet) -> None:
    n = len(samples)
    plain = list(samples.iter_batches(64, shuffle=False))
    assert len(plain) == samples.num_batches(64) == -(-n // 64)
    np.testing.assert_array_equal(
        torch.cat([b["sample_id"] for b in plain]).numpy(), samples["sample_id"]
    )
    batch = plain[0]
    assert (
        batch["live_seq_author"].shape == (64, 6) and batch["live_seq_author"].dtype == torch.int64
    )
    assert batch["ctr"].dtype == torch.float32 and batch["mask_gtr"].dtype == torch.float32

    shuffled = list(samples.iter_batches(64, shuffle=True, seed=3))
    ids = torch.cat([b["sample_id"] for b in shuffled]).numpy()
    assert sorted(ids.tolist()) == sorted(samples["sample_id"].tolist())
    assert not np.array_equal(ids, samples["sample_id"])
    again = torch.cat([b["sample_id"] for b in samples.iter_batches(64, shuffle=True, seed=3)])
    other = torch.cat([b["sample_id"] for b in samples.iter_batches(64, shuffle=True, seed=4)])
    assert np.array_equal(again.numpy(), ids) and not np.array_equal(other.numpy(), ids)
    # rows stay aligned across columns inside a shuffled batch
    row = {int(s): i for i, s in enumerate(samples["sample_id"])}
    b = shuffled[0]
    idx = [row[int(s)] for s in b["sample_id"]]
    np.testing.assert_array_equal(b["video_seq_tag"].numpy(), samples["video_seq_tag"][idx])

    dropped = list(samples.iter_batches(64, shuffle=True, seed=0, drop_last=True))
    assert len(dropped) == n // 64 and all(len(b["ts"]) == 64 for b in dropped)


def test_sequence_ids_beyond_int32_are_rejected_not_wrapped(
    samples_dir: Path, tmp_path: Path
) -> None:
    shards = sorted(samples_dir.glob("part-*.parquet"))
    frame = pl.read_parquet(shards[0])
    seq = frame["live_seq_author"].to_list()
    seq[0][0] = 2**40
    frame = frame.with_columns(
        pl.Series("live_seq_author", seq, dtype=frame.schema["live_seq_author"])
    )
    frame.write_parquet(tmp_path / "part-00000.parquet")
    with pytest.raises(DataValidationError, match="live_seq_author.*cannot be stored compactly"):
        SampleSet.load(tmp_path)


def test_sequence_ids_outside_the_feature_maps_table_are_rejected(
    samples_dir: Path, tmp_path: Path
) -> None:
    """int16 is chosen from feature_map.json: a shard whose ids exceed its table is an error
    naming the column, never a silent wrap-around."""
    shards = sorted(samples_dir.glob("part-*.parquet"))
    frame = pl.read_parquet(shards[0])
    seq = frame["live_seq_author"].to_list()
    seq[0][0] = 40_000  # beyond int16, inside int32
    frame = frame.with_columns(
        pl.Series("live_seq_author", seq, dtype=frame.schema["live_seq_author"])
    )
    frame.write_parquet(tmp_path / "part-00000.parquet")
    (tmp_path / "feature_map.json").write_text((samples_dir / "feature_map.json").read_text())
    with pytest.raises(DataValidationError, match="live_seq_author.*feature map disagree"):
        SampleSet.load(tmp_path)
    batch = next(SampleSet.load(samples_dir).iter_batches(8, shuffle=False))
    assert batch["live_seq_author"].dtype == torch.int64  # widened per batch
