"""The end-of-build summary of ``liverank build-samples``, for a person (not a dataclass dump).

It shows the rows and label rates per day (with the split ``liverank train`` makes by default),
the rows set aside by table and reason (and where the dead letters are), the output directory
and the time taken; ``stats.json`` keeps the same numbers for programs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from liverank.features.spec import TASKS

#: the default split of ``liverank train`` (``DataConfig.val_days`` / ``test_days``)
DEFAULT_VAL_DAYS, DEFAULT_TEST_DAYS = 1, 1


class BuildStats(Protocol):
    """What :class:`~liverank.data.samples.SampleStats` and ``StreamSampleStats`` share."""

    rows: int
    shards: int
    seconds: float
    by_day: list[dict[str, int]]
    rows_read: dict[str, int]
    set_aside: dict[str, dict[str, int]]
    dead_letters: str


def split_of_days(days: list[int]) -> dict[int, str]:
    """``day -> train | validation | test`` under the default split (empty when too few days)."""
    if len(days) < DEFAULT_VAL_DAYS + DEFAULT_TEST_DAYS + 1:
        return {}
    ordered = sorted(days)
    test = set(ordered[len(ordered) - DEFAULT_TEST_DAYS :])
    val = set(ordered[len(ordered) - DEFAULT_TEST_DAYS - DEFAULT_VAL_DAYS :]) - test
    return {d: "test" if d in test else "validation" if d in val else "train" for d in ordered}


def _rate(row: dict[str, int], task: str) -> str:
    reported = row.get(f"reported_{task}", row["rows"])
    return "-" if reported == 0 else f"{100 * row.get(task, 0) / reported:.2f}%"


def days_table(stats: BuildStats) -> Table:
    """Rows and label rates per day, with a total row."""
    stream = any(k.startswith("reported_") for row in stats.by_day for k in row)
    split = split_of_days([row["day"] for row in stats.by_day])
    notes = ["split: the default of `liverank train` (last day test, the day before validation)"]
    notes = notes if split else []
    if stream:
        notes.append("label rate = positives / rows where the label is reported (mask 1)")
    table = Table(title="samples per day: rows and label rates", caption="; ".join(notes) or None)
    for col in ("day", *(["split"] if split else []), "rows", *TASKS):
        table.add_column(col, justify="left" if col == "split" else "right")
    for row in stats.by_day:
        cells = [str(row["day"]), *([split[row["day"]]] if split else []), f"{row['rows']:,}"]
        table.add_row(*cells, *(_rate(row, t) for t in TASKS))
    total: dict[str, int] = {}
    for row in stats.by_day:
        for k, v in row.items():
            total[k] = total.get(k, 0) + v
    if len(stats.by_day) > 1:
        cells = ["all", *([""] if split else []), f"{total.get('rows', 0):,}"]
        table.add_row(*cells, *(_rate(total, t) for t in TASKS), style="bold")
    return table


def set_aside_table(stats: BuildStats) -> Table:
    """Rows set aside by table and reason, as a share of the rows read from the table."""
    table = Table(title="rows set aside (not used; see the dead letters)")
    for col in ("table", "reason", "rows", "of rows read"):
        table.add_column(col, justify="right" if col in ("rows", "of rows read") else "left")
    for name, reasons in stats.set_aside.items():
        read = stats.rows_read.get(name, 0)
        for reason, n in reasons.items():
            share = f"{100 * n / read:.2f}%" if read else "-"
            table.add_row(name, escape(reason), f"{n:,}", share)
    return table


def print_samples_summary(
    stats: BuildStats, out: str | Path, console: Console | None = None
) -> None:
    """Print the summary of one build (``stats``) that wrote ``out``."""
    out = Path(out)
    console = console or Console()

    def line(text: str) -> None:  # paths stay whole: no wrapping at the console width
        console.print(text, soft_wrap=True, highlight=False)

    console.print(days_table(stats))
    read = ", ".join(f"{t} {n:,}" for t, n in stats.rows_read.items())
    dead = escape(str(out / stats.dead_letters))
    if stats.set_aside:
        console.print(set_aside_table(stats))
        total = sum(n for reasons in stats.set_aside.values() for n in reasons.values())
        line(f"rows read: {read}; {total:,} set aside (dead letters: {dead}), every other used")
    else:
        line(f"rows read: {read}; none set aside ({dead} is empty)")
    what = f"{stats.rows:,} samples"
    mode = getattr(stats, "mode", None)
    if mode is not None:
        what = f"{stats.rows:,} {mode} rows for {getattr(stats, 'impressions', 0):,} impressions"
    line(f"wrote {what} in {stats.shards} shard(s) to {escape(str(out))} in {stats.seconds:.1f} s")
