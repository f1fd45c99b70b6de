"""Samples read from Parquet batch by batch, for data larger than memory.

:class:`SampleSet` holds every row of its days in memory (~1.1 KB a row with 50-item
sequences: 10M rows are 11 GB). :class:`ParquetSampleStream` holds at most a shuffle buffer of
rows plus one chunk being decoded, whatever the size of the data: it walks the shards' Parquet
row groups (skipping those whose ``day`` statistics miss the wanted days), decodes
``chunk_rows`` rows at a time, filters them by day (and by user, for a data-parallel rank) and
turns them into batches with the same code, dtypes and side tables as the in-memory set
(:meth:`SampleSet.batch`), so a model cannot tell the two apart.

Shuffling is a **buffer shuffle** (as ``tf.data``'s ``shuffle(buffer_size)`` or WebDataset's):
each epoch visits the row groups in a random order, fills a buffer of ``buffer_rows`` rows,
permutes it and emits its full batches, carrying the remainder into the next fill. A row can
therefore only meet rows of nearby row groups in a batch, unlike the in-memory loader's global
permutation; with row groups sorted by time this is a sliding window of a few hours of data.
``buffer_rows`` is the memory knob: resident memory is about ``buffer_rows`` x bytes per row
(``row_bytes``) plus one chunk, plus the model.

Evaluation reads without shuffling, in file order, and the key / label columns of the
prediction frame are read on their own (``__getitem__``: one column of the wanted rows, a few
bytes a row).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch

from liverank.data.batch_order import shuffled_order
from liverank.data.loader import (
    SampleSet,
    SideTables,
    allocate,
    copy_columns,
    shard_paths,
)
from liverank.data.partition import user_rank_expr
from liverank.errors import DataValidationError
from liverank.features.spec import FeatureMap

log = logging.getLogger(__name__)

#: rows decoded at a time (one pyarrow record batch; Parquet's int64 sequence ids are ~3.6 KB
#: a row as decoded, so ~15 MB)
DEFAULT_CHUNK_ROWS = 4_096
#: rows held for shuffling (~1.1 KB a row in memory: ~70 MB)
DEFAULT_BUFFER_ROWS = 65_536


class ParquetSampleStream:
    """The samples of ``days`` in ``samples_dir``, read chunk by chunk (never all at once).

    Args:
        samples_dir: a samples directory (``part-*.parquet``, ``feature_map.json``).
        days: the days to read (``None``: all).
        long_len: long-history window (``None``: the feature map's), as :meth:`SampleSet.load`.
        partition: ``(rank, world)``: only the rows of that rank's users.
        chunk_rows: rows decoded at a time.
        buffer_rows: rows held for the buffer shuffle of :meth:`iter_batches`.
        side: side tables already loaded for the same directory (shared, not reloaded).
    """

    def __init__(
        self,
        samples_dir: str | Path,
        days: Sequence[int] | None = None,
        *,
        long_len: int | None = None,
        partition: tuple[int, int] | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
        side: SideTables | None = None,
    ) -> None:
        if chunk_rows < 1 or buffer_rows < 1:
            raise ValueError(
                f"chunk_rows and buffer_rows must be >= 1: {chunk_rows}, {buffer_rows}"
            )
        self.samples_dir = Path(samples_dir)
        self.paths = shard_paths(samples_dir)
        self.schema = pl.read_parquet_schema(self.paths[0])
        fmap_path = self.samples_dir / "feature_map.json"
        fmap = FeatureMap.load(fmap_path) if fmap_path.exists() else None
        if long_len is None:
            long_len = fmap.long_len if fmap is not None else 0
        self.long_len = long_len
        self.feature_map = fmap.model_copy(update={"long_len": long_len}) if fmap else None
        self.wanted = list(self.schema)
        self.side = side or SideTables.load(samples_dir, fmap, self.wanted, long_len)
        self.long_history = self.side.long_history if long_len > 0 else None
        self.chunk_rows = chunk_rows
        self.buffer_rows = buffer_rows
        self._days = None if days is None else sorted(int(d) for d in days)
        self.partition = partition
        self._filters: list[pl.Expr] = []
        if self._days is not None:
            self._filters.append(pl.col("day").is_in(self._days))
        if partition is not None:
            rank, world = partition
            if not 0 <= rank < world:
                raise ValueError(f"partition rank {rank} outside [0, {world})")
            self._filters.append(user_rank_expr(world) == rank)
        self.units = self._row_groups()  # [(path, row group)] that can hold wanted rows
        self._n = self._count()
        log.info(
            "streaming %d samples from %d row group(s) of %d shard(s) (buffer %d rows)",
            self._n,
            len(self.units),
            len(self.paths),
            buffer_rows,
        )

    # ------------------------------------------------------------------ structure
    def _row_groups(self) -> list[tuple[Path, int]]:
        units = []
        for path in self.paths:
            meta = pq.ParquetFile(path).metadata
            day_col = meta.schema.names.index("day") if "day" in meta.schema.names else None
            for g in range(meta.num_row_groups):
                if self._days is not None and day_col is not None:
                    stats = meta.row_group(g).column(day_col).statistics
                    if stats is not None and stats.has_min_max:
                        lo, hi = int(stats.min), int(stats.max)
                        if not any(lo <= d <= hi for d in self._days):
                            continue
                units.append((path, g))
        return units

    def _count(self) -> int:
        n = 0
        for path in self.paths:
            lf = pl.scan_parquet(path)
            n += int(
                (lf.filter(*self._filters) if self._filters else lf)
                .select(pl.len())
                .collect()
                .item()
            )
        return n

    def __len__(self) -> int:
        return self._n

    def days(self) -> list[int]:
        if self._days is not None:
            return list(self._days)
        return [int(d) for d in np.unique(self["day"])]

    @property
    def columns(self) -> list[str]:
        return list(self.wanted)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row in memory (the in-memory loader's compact dtypes)."""
        one = allocate(self.schema, self.wanted, 1, self.feature_map)
        return int(sum(a.nbytes for a in one.values()))

    # ------------------------------------------------------------------ reading
    def _chunks(self, order: Sequence[int] | None = None) -> Iterator[tuple[pl.DataFrame, Path]]:
        """The wanted rows, one decoded chunk at a time (row groups in ``order``)."""
        units = self.units if order is None else [self.units[i] for i in order]
        read_cols = list(dict.fromkeys([*self.wanted, "day", "user_id"]))
        read_cols = [c for c in read_cols if c in self.schema]
        for path, group in units:
            try:
                batches = pq.ParquetFile(path).iter_batches(
                    batch_size=self.chunk_rows, row_groups=[group], columns=read_cols
                )
                for rb in batches:
                    frame = pl.from_arrow(rb)
                    assert isinstance(frame, pl.DataFrame)
                    if self._filters:
                        frame = frame.filter(*self._filters)
                    if frame.height:
                        yield frame, path
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise DataValidationError(
                    f"cannot read sample shard: {exc}", file=str(path)
                ) from exc

    def _set(self, arrays: dict[str, np.ndarray]) -> SampleSet:
        return SampleSet(
            arrays,
            self.feature_map,
            self.long_history,
            self.long_len,
            "lazy",
            self.side.segments,
            self.side.author_attr,
            self.side.room_tables,
        )

    def __getitem__(self, column: str) -> np.ndarray:
        """One column of every wanted row, in file order (the order of unshuffled batches)."""
        if column not in self.schema:
            raise DataValidationError(f"unknown sample column (has {self.wanted})", column=column)
        parts = []
        for path in self.paths:
            lf = pl.scan_parquet(path)
            lf = lf.filter(*self._filters) if self._filters else lf
            parts.append(lf.select(column).collect()[column].to_numpy())
        return np.concatenate(parts) if parts else np.zeros(0)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        group_by: str | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``{column: tensor}`` as :meth:`SampleSet.iter_batches` yields them; with
        ``shuffle`` a buffer shuffle (module docstring), else file order. With ``group_by``
        the buffer shuffle permutes runs of equal values of that column (a run cut by a chunk
        boundary becomes two; :mod:`liverank.data.batch_order`).

        One buffer of ``max(buffer_rows, batch_size) + chunk_rows`` rows is allocated per call
        and chunks are decoded straight into it: nothing else grows with the data.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if group_by is not None and group_by not in self.wanted:
            raise DataValidationError(
                f"batches grouped by {group_by!r} need that column, and this stream does not "
                f"read it"
            )
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.units)) if shuffle else None
        target = max(self.buffer_rows, batch_size) if shuffle else batch_size
        buffer = allocate(self.schema, self.wanted, target + self.chunk_rows, self.feature_map)
        held = 0
        for frame, path in self._chunks(order):
            rows = frame.height
            if held + rows > len(buffer["day"]):  # a chunk larger than chunk_rows (never)
                raise AssertionError(f"chunk of {rows} rows over the buffer")
            copy_columns(frame, buffer, held, self.wanted, path)
            held += rows
            if held < target:
                continue
            yield from self._emit(
                buffer, held, batch_size, rng if shuffle else None, group_by=group_by
            )
            held %= batch_size  # the remainder was moved to the buffer's front
        if held:
            last = held // batch_size * batch_size if drop_last else held
            yield from self._emit(
                buffer, held, batch_size, rng if shuffle else None, last, group_by
            )

    def _emit(
        self,
        buffer: dict[str, np.ndarray],
        held: int,
        batch_size: int,
        rng: np.random.Generator | None,
        last: int | None = None,
        group_by: str | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of ``buffer[:held]`` (copies: the buffer is reused). Without ``last``
        only the full batches, the remaining rows moved to the buffer's front; with it, the
        rows up to ``last`` (the end of the data)."""
        data = self._set({k: v[:held] for k, v in buffer.items()})  # views
        groups = buffer[group_by][:held] if group_by is not None else None
        rows = shuffled_order(held, rng, groups) if rng is not None else np.arange(held)
        full = held // batch_size * batch_size if last is None else last
        for lo in range(0, full, batch_size):
            hi = min(lo + batch_size, full)
            yield data.batch(np.sort(rows[lo:hi]))
        if last is None and full < held:
            rest = np.sort(rows[full:])
            for v in buffer.values():
                v[: len(rest)] = v[rest]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return self._n // batch_size if drop_last else -(-self._n // batch_size)
