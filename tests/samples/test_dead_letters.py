"""Rows the builders cannot use are set aside with a counted reason, never silently dropped.

The ``damaged`` dataset (conftest: renamed enters, rows of unknown users / rooms / videos, a
null id) is built next to the same dataset without the bad rows: the samples must be identical,
and every bad row must be in ``dead_letters.parquet`` with its table, row and reason, and
counted in the stats.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from liverank.data.dead_letters import DEAD_LETTERS_FILE, DEAD_SCHEMA
from liverank.data.samples import build_samples
from liverank.errors import DataValidationError
from liverank.stream.runner import stream_main
from liverank.stream.samples import build_stream_samples

BAD = "_bad"  # marker column of the damaged fixture: the reason a row must be set aside


def _shards(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "part-*.parquet")


def _counts(expected: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
    return {
        t: {r: int(n) for r, n in df.group_by(BAD).len().iter_rows()}
        for t, df in expected.items()
        if len(df)
    }


def test_set_aside_rows_are_counted_written_and_change_no_sample(damaged, tmp_path) -> None:
    stats = build_samples(damaged["bad"], tmp_path / "bad", seq_len=4, progress=False)
    build_samples(damaged["clean"], tmp_path / "clean", seq_len=4, progress=False)
    assert _shards(tmp_path / "bad").equals(_shards(tmp_path / "clean"))

    assert stats.set_aside == _counts(damaged["expected"])
    tables = damaged["tables"]
    assert stats.rows_read == {t: len(tables[t]) for t in stats.rows_read}
    dead = pl.read_parquet(tmp_path / "bad" / DEAD_LETTERS_FILE)
    assert dead.schema == DEAD_SCHEMA
    for table, want in damaged["expected"].items():
        got = dead.filter(pl.col("table") == table).select("row", pl.col("reason").alias(BAD))
        assert got.sort("row").equals(want.sort("row")), table
    # the values of a dead letter are those of its row in the file (here: live events)
    ev = tables["live_events"].with_row_index("row")
    back = dead.filter(pl.col("table") == "live_events").join(ev, on="row")
    assert (back["ts"] == back["ts_right"]).all() and (back["kind"] == back["event"]).all()


def test_clean_data_writes_an_empty_dead_letter_file(damaged, tmp_path) -> None:
    stats = build_samples(damaged["clean"], tmp_path / "s", seq_len=2, progress=False)
    assert stats.set_aside == {}
    assert pl.read_parquet(tmp_path / "s" / DEAD_LETTERS_FILE).schema == DEAD_SCHEMA
    assert len(pl.read_parquet(tmp_path / "s" / DEAD_LETTERS_FILE)) == 0


def test_unknown_events_error_names_file_column_values_and_count(damaged, tmp_path) -> None:
    with pytest.raises(DataValidationError) as info:
        build_samples(damaged["bad"], tmp_path / "s", unknown_events="error", progress=False)
    err = info.value
    assert err.file.endswith("live_events.parquet") and err.column == "event"
    assert "5 row(s) have unknown event names: 'Enter' x 5" in str(err)
    assert "\n" not in str(err)
    with pytest.raises(DataValidationError, match="unknown event names"):
        build_stream_samples(damaged["bad"], tmp_path / "x", "exit", unknown_events="error")


@pytest.mark.parametrize("mode", ["exit", "moment"])
def test_stream_mode_builds_set_aside_the_same_rows(damaged, tmp_path, mode: str) -> None:
    stats = build_stream_samples(damaged["bad"], tmp_path / "bad", mode, seq_len=3, progress=False)
    build_stream_samples(damaged["clean"], tmp_path / "clean", mode, seq_len=3, progress=False)
    assert _shards(tmp_path / "bad").equals(_shards(tmp_path / "clean"))
    assert stats.set_aside == _counts(damaged["expected"])
    assert len(pl.read_parquet(tmp_path / "bad" / DEAD_LETTERS_FILE)) == sum(
        len(df) for df in damaged["expected"].values()
    )


def test_stream_engine_sets_aside_the_live_rows_the_builder_does(damaged, tmp_path) -> None:
    """``liverank stream`` on the damaged dataset: same samples as on the clean one, and every
    bad live row (impressions and live events) dead-lettered with the builder's reason."""
    kw = {"mode": "exit", "progress": False, "chunk_rows": 50}
    bad = stream_main(damaged["bad"], tmp_path / "bad", **kw)
    stream_main(damaged["clean"], tmp_path / "clean", **kw)
    got = pl.read_parquet(tmp_path / "bad" / "samples" / "*.parquet").sort("sample_id")
    want = pl.read_parquet(tmp_path / "clean" / "samples" / "*.parquet").sort("sample_id")
    assert got.equals(want)
    dead = pl.read_parquet(tmp_path / "bad" / DEAD_LETTERS_FILE)
    expected = pl.concat([damaged["expected"][t] for t in ("live_impressions", "live_events")])
    assert sorted(dead["reason"].to_list()) == sorted(expected[BAD].to_list())
    assert (bad.unknown_event, bad.unknown_user, bad.unknown_room) == (5, 6, 4)
    assert bad.null_field == 1 and bad.late == 0
    with pytest.raises(DataValidationError, match=r"live_events\.parquet: column 'event'"):
        stream_main(damaged["bad"], tmp_path / "strict", unknown_events="error", **kw)
