"""The streaming loader against the in-memory one, on a tiny world rewritten in small row groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from liverank.config import DataConfig, ExperimentConfig, TrainConfig
from liverank.data.loader import SampleSet, split_by_day
from liverank.data.parquet_stream import ParquetSampleStream
from liverank.data.partition import user_rank
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.train.experiment import run_experiment

GROUP_ROWS = 700  # several row groups per day


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pstream")
    simulate(SimConfig.preset("tiny", seed=5, n_days=3), root / "dataset", progress=False)
    build_samples(root / "dataset", root / "samples", seq_len=20, progress=False)
    for path in (root / "samples").glob("part-*.parquet"):  # rewrite in small row groups
        pl.read_parquet(path).write_parquet(path, statistics=True, row_group_size=GROUP_ROWS)
    return root / "samples"


def _ids(batches) -> np.ndarray:  # noqa: ANN001
    return np.concatenate([b["sample_id"].numpy() for b in batches])


def test_one_buffer_over_one_row_group_gives_the_in_memory_batches(tmp_path: Path) -> None:
    root = tmp_path
    simulate(SimConfig.preset("tiny", seed=6, n_days=1), root / "d", progress=False)
    build_samples(root / "d", root / "s", seq_len=10, progress=False)
    whole = SampleSet.load(root / "s")
    stream = ParquetSampleStream(root / "s", buffer_rows=len(whole), chunk_rows=len(whole))
    assert len(stream.units) == 1
    a = list(whole.iter_batches(256, shuffle=True, seed=4))
    b = list(stream.iter_batches(256, shuffle=True, seed=4))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype, k
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, msg=k)


def test_a_shuffled_epoch_reads_every_row_of_its_days_once(samples: Path) -> None:
    whole = SampleSet.load(samples)
    train, _, _ = split_by_day(whole)
    days = train.days()
    stream = ParquetSampleStream(samples, days, buffer_rows=1000, chunk_rows=300)
    assert len(stream) == len(train)
    assert len(stream.units) < len(ParquetSampleStream(samples).units)  # later days skipped
    batches = list(stream.iter_batches(128, shuffle=True, seed=1))
    ids = _ids(batches)
    assert len(ids) == len(train) and set(ids.tolist()) == set(train["sample_id"].tolist())
    assert all(len(b["sample_id"]) == 128 for b in batches[:-1])
    again = _ids(stream.iter_batches(128, shuffle=True, seed=2))
    assert not np.array_equal(ids, again)  # another epoch, another order
    assert not np.array_equal(ids, np.sort(ids))  # shuffled at all
    ref = train.batch(np.arange(4))
    assert set(batches[0]) == set(ref) and all(batches[0][k].dtype == ref[k].dtype for k in ref)
    dropped = _ids(stream.iter_batches(128, shuffle=True, seed=1, drop_last=True))
    assert len(dropped) == len(train) // 128 * 128


def test_unshuffled_order_is_file_order_and_matches_the_column_reads(samples: Path) -> None:
    whole = SampleSet.load(samples)
    _, _, test = split_by_day(whole)
    stream = ParquetSampleStream(samples, test.days(), buffer_rows=500, chunk_rows=200)
    ids = _ids(stream.iter_batches(300, shuffle=False))
    np.testing.assert_array_equal(ids, test["sample_id"])
    np.testing.assert_array_equal(stream["sample_id"], test["sample_id"])
    np.testing.assert_array_equal(stream["ctr"], test["ctr"])


def test_a_partitioned_stream_holds_its_users_rows(samples: Path) -> None:
    whole = SampleSet.load(samples)
    parts = [ParquetSampleStream(samples, partition=(r, 2), chunk_rows=256) for r in range(2)]
    assert sum(len(p) for p in parts) == len(whole)
    for r, p in enumerate(parts):
        users = np.concatenate([b["user_id"].numpy() for b in p.iter_batches(512, False)])
        assert len(users) == len(p) and np.all(user_rank(users, 2) == r)


def test_training_from_the_stream_loader(samples: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig(
        name="ple",
        data=DataConfig(samples=samples, loader="stream", buffer_rows=1500, chunk_rows=400),
        model="ple",
        train=TrainConfig(epochs=2, batch_size=256, progress=False),
        out=tmp_path / "run",
    )
    res = run_experiment(cfg)
    pred = pl.read_parquet(res.out_dir / "predictions.parquet")
    _, _, test = split_by_day(SampleSet.load(samples))
    np.testing.assert_array_equal(pred["sample_id"].to_numpy(), test["sample_id"])
    assert 0.5 < res.test.value("ctr", "auc") < 1.0


def test_bad_stream_settings_are_named(samples: Path) -> None:
    with pytest.raises(ValueError, match="buffer_rows"):
        ParquetSampleStream(samples, buffer_rows=0)
    with pytest.raises(ValueError, match="outside"):
        ParquetSampleStream(samples, partition=(3, 2))


def _requests_whole(batches, all_rows: dict[int, int]) -> bool:  # noqa: ANN001
    """Every request appears in at most two batches (cut only at a batch boundary), and only
    as one contiguous run of each batch."""
    seen: dict[int, list[int]] = {}
    for i, b in enumerate(batches):
        req = b["request_id"].numpy()
        starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
        if len(np.unique(req)) != len(starts):  # a request split inside one batch
            return False
        for r in np.unique(req):
            seen.setdefault(int(r), []).append(i)
    return all(len(v) == 1 or (len(v) == 2 and v[1] == v[0] + 1) for v in seen.values()) and set(
        seen
    ) == set(all_rows)


def test_request_batches_keep_requests_together_in_both_loaders(samples: Path) -> None:
    whole = SampleSet.load(samples)
    train, _, _ = split_by_day(whole)
    reqs = dict.fromkeys(int(r) for r in train["request_id"])
    mem = list(train.iter_batches(64, shuffle=True, seed=1, group_by="request_id"))
    assert sum(len(b["sample_id"]) for b in mem) == len(train)
    assert _requests_whole(mem, reqs)
    # not the storage order: the requests were shuffled
    assert not np.array_equal(_ids(mem), train["sample_id"])
    # the stream loader: whole requests too, except where a chunk boundary cuts one
    stream = ParquetSampleStream(samples, train.days(), buffer_rows=100_000, chunk_rows=100_000)
    st = list(stream.iter_batches(64, shuffle=True, seed=1, group_by="request_id"))
    assert sorted(_ids(st)) == sorted(train["sample_id"])
    # a request is cut only by a batch boundary or a row-group boundary (row groups are read in
    # a shuffled order), so the runs of equal request_id number at most requests + cuts
    runs = sum(int((np.diff(b["request_id"].numpy()) != 0).sum()) + 1 for b in st)
    assert runs <= len(reqs) + len(stream.units) + len(st)
    rows_order = list(stream.iter_batches(64, shuffle=True, seed=1))
    runs_rows = sum(int((np.diff(b["request_id"].numpy()) != 0).sum()) + 1 for b in rows_order)
    assert runs_rows > 2 * runs  # without grouping, requests are scattered
    with pytest.raises(Exception, match="grouped by 'nope'"):
        next(train.iter_batches(64, shuffle=True, group_by="nope"))


def test_farm_trains_on_request_batches_and_dedups(samples: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig(
        name="farm",
        data=DataConfig(samples=samples, batch_order="requests"),
        model="farm",
        train=TrainConfig(epochs=1, batch_size=256, progress=False),
        out=tmp_path / "run",
    )
    res = run_experiment(cfg)
    assert 0.5 < res.test.value("ctr", "auc") < 1.0
