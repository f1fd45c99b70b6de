"""Writing event tables day by day, so that memory stays bounded at any size.

An :class:`EventSink` collects the rows of one event table. At the end of each simulated day it
writes the rows whose time falls in that day, sorted by time, as a part file (through
:func:`liverank.data.io.write_table`, which casts to the canonical types), and carries the rest
(e.g. the exit of a visit that runs past midnight) into the next day. :meth:`EventSink.close`
concatenates the parts, in order, into ``<out>/<table>.parquet`` with a streaming sink, so the
final file is sorted by time without ever being held in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from liverank.data import io
from liverank.data.schema import TABLES

PARTS_DIR = ".parts"


def labels(codes: pl.Expr, names: tuple[str, ...]) -> pl.Expr:
    """Integer codes -> their names (``names[code]``) as strings."""
    return codes.replace_strict(list(range(len(names))), list(names), return_dtype=pl.String)


class EventSink:
    """Day-partitioned writer of one event table (see the module docstring).

    Args:
        out_dir: the dataset directory.
        table: canonical table name (must have a time column).
        codes: integer-coded string columns -> their names, decoded when a part is written.
    """

    def __init__(self, out_dir: Path, table: str, codes: dict[str, tuple[str, ...]] | None = None):
        self.out_dir, self.table = Path(out_dir), table
        self.time = TABLES[table].time_column
        if self.time is None:
            raise ValueError(f"table '{table}' is not an event table")
        self.codes = codes or {}
        self.buffer: list[pl.DataFrame] = []
        self.parts: list[Path] = []
        self.rows = 0

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.buffer.append(frame)

    def flush(self, until: int | None) -> None:
        """Write the buffered rows with time ``< until`` (all rows if ``until`` is None)."""
        if not self.buffer:
            return
        frame = pl.concat(self.buffer, how="vertical_relaxed")
        if until is None:
            now, later = frame, frame.clear()
        else:
            due = pl.col(self.time) < until
            now, later = frame.filter(due), frame.filter(~due)
        self.buffer = [later] if later.height else []
        if now.height == 0:
            return
        now = now.sort(self.time, maintain_order=True).with_columns(
            labels(pl.col(c), names).alias(c) for c, names in self.codes.items()
        )
        root = self.out_dir / PARTS_DIR / self.table / f"{len(self.parts):05d}"
        self.parts.append(io.write_table(root, self.table, now))
        self.rows += now.height

    def close(self) -> int:
        """Write what is left and merge the parts into the table's file; returns the row count."""
        self.flush(None)
        target = io.table_path(self.out_dir, self.table)
        if not self.parts:
            io.write_table(self.out_dir, self.table, _empty(self.table))
        elif len(self.parts) == 1:
            shutil.move(self.parts[0], target)
        else:
            pl.scan_parquet(self.parts).sink_parquet(target, compression="zstd", statistics=True)
        shutil.rmtree(self.out_dir / PARTS_DIR / self.table, ignore_errors=True)
        return self.rows


def _empty(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=TABLES[table].polars_schema)


def cleanup(out_dir: Path) -> None:
    """Remove the part directory (after every sink is closed, or after a failure)."""
    shutil.rmtree(Path(out_dir) / PARTS_DIR, ignore_errors=True)
