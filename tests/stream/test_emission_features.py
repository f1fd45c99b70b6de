"""Features as of emission: the offline feature code evaluated at ``emit_ts``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.samples import build_samples
from liverank.stream.emission_features import TIME_DEPENDENT, features_at_emission
from liverank.stream.samples import build_stream_samples

SEQ_LEN = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("emission_data")
    simulate(SimConfig.preset("tiny", seed=1), root, progress=False)
    return root


@pytest.fixture(scope="module")
def moment_rows(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("moment")
    build_stream_samples(dataset, out, "moment", seq_len=SEQ_LEN, progress=False)
    return pl.read_parquet(out / "part-*.parquet")


def test_at_impression_time_it_reproduces_the_offline_features(
    dataset: Path, tmp_path: Path
) -> None:
    build_samples(dataset, tmp_path, seq_len=SEQ_LEN, progress=False)
    offline = pl.read_parquet(tmp_path / "part-*.parquet")
    # scramble the time-dependent columns, then recompute them "at emission" = at ts
    zeros = np.zeros((len(offline), SEQ_LEN), dtype=np.int64)
    scrambled = offline.with_columns(
        pl.col("ts").alias("emit_ts"),
        pl.lit(0, pl.Int64).alias("hour_of_day"),
        pl.lit(0, pl.Int64).alias("live_seq_len"),
        pl.Series("live_seq_author", zeros, dtype=offline.schema["live_seq_author"]),
    )
    got = features_at_emission(dataset, scrambled, SEQ_LEN, chunk_rows=997)
    for c in TIME_DEPENDENT:
        assert got[c].equals(offline[c]), c


def test_sequences_at_emission_are_newer_and_contain_the_reported_enter(
    dataset: Path, moment_rows: pl.DataFrame
) -> None:
    got = features_at_emission(dataset, moment_rows, SEQ_LEN)
    assert got.columns == moment_rows.columns and len(got) == len(moment_rows)
    # more history is available at emit_ts > ts (lengths never shrink)
    assert (got["live_seq_len"].to_numpy() >= moment_rows["live_seq_len"].to_numpy()).all()
    assert (got["emit_ts"] > got["ts"]).all()
    # the leak the docs warn about: a moment row reporting a click has the enter into this
    # room's author in its emission-time live sequence, never in its impression-time one
    clicks = got.filter((pl.col("mask_ctr") == 1) & (pl.col("ctr") == 1))
    assert len(clicks) > 0
    seq = np.stack(clicks["live_seq_author"].to_numpy())  # [C, L]
    has_author = (seq == clicks["author_id"].to_numpy()[:, None]).any(axis=1)
    assert has_author.mean() > 0.99


def test_rows_must_be_sorted_by_emit_ts(dataset: Path, moment_rows: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="sorted by emit_ts"):
        features_at_emission(dataset, moment_rows.reverse(), SEQ_LEN)


def test_build_stream_samples_option_writes_emission_time_features(
    dataset: Path, moment_rows: pl.DataFrame, tmp_path: Path
) -> None:
    from liverank.cli import main

    out = tmp_path / "em"
    args = ["build-samples", "--data", str(dataset), "--out", str(out), "--mode", "moment"]
    assert main([*args, "--seq-len", str(SEQ_LEN), "--features", "emission"]) == 0
    got = pl.read_parquet(out / "part-*.parquet")
    want = features_at_emission(dataset, moment_rows, SEQ_LEN)
    assert got.equals(want)
    off = ["build-samples", "--data", str(dataset), "--out", str(tmp_path / "off")]
    assert main([*off, "--features", "emission"]) == 2
