"""``liverank build-samples`` ends with a summary a person can read, not a dataclass dump."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from liverank.cli import main
from liverank.data.samples import build_samples
from liverank.data.samples_summary import print_samples_summary, split_of_days


def _summary(stats, out: Path) -> str:
    buffer = io.StringIO()
    print_samples_summary(stats, out, Console(file=buffer, width=120))
    return buffer.getvalue()


def test_cli_prints_days_label_rates_set_aside_rows_path_and_time(
    damaged, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert main(["build-samples", "--data", str(damaged["bad"]), "--out", str(out)]) == 0
    text = capsys.readouterr()
    printed = text.out + text.err
    assert "SampleStats(" not in printed and "by_day=" not in printed
    assert "samples per day" in printed
    assert re.search(r"unknown event name\s*│\s*5 ", printed)  # live_events renamed enters
    assert "dead_letters.parquet" in printed
    assert re.search(r"wrote [\d,]+ samples in 1 shard\(s\) to .* in \d+\.\d s", printed)


def test_summary_numbers_equal_the_stats(small_dataset_dir, tmp_path) -> None:
    stats = build_samples(small_dataset_dir, tmp_path / "s", seq_len=2, progress=False)
    text = _summary(stats, tmp_path / "s")
    days = [row["day"] for row in stats.by_day]
    assert len(days) == 4 and sum(row["rows"] for row in stats.by_day) == stats.rows
    split = split_of_days(days)
    assert [split[d] for d in days] == ["train", "train", "validation", "test"]
    for row in stats.by_day:
        ctr = f"{100 * row['ctr'] / row['rows']:.2f}%"
        assert re.search(
            rf"│\s+{row['day']} │ {split[row['day']]}\s+│\s+{row['rows']:,} │ {ctr}", text
        )
    all_ctr = f"{100 * stats.positives['ctr'] / stats.rows:.2f}%"
    assert re.search(rf"all\s+│\s+│\s+{stats.rows:,} │ {all_ctr}", text)
    assert "none set aside" in text


def test_stream_mode_summary_rates_are_over_reported_labels(damaged, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    args = ["build-samples", "--data", str(damaged["clean"]), "--out", str(out)]
    assert main([*args, "--mode", "moment", "--seq-len", "2"]) == 0
    printed = capsys.readouterr().out
    assert "StreamSampleStats(" not in printed
    assert "positives / rows where the label is reported" in printed
    assert re.search(r"wrote [\d,]+ moment rows for [\d,]+ impressions", printed)
