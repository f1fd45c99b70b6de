"""A fast in-memory loader for a samples directory (format: :mod:`liverank.features.spec`).

:meth:`SampleSet.load` reads the Parquet shards into one contiguous numpy array per column
(``[N]`` for scalars, ``[N, L]`` compact ids for sequence columns (int16 or int32, widened to int64 per batch), float32 for labels, masks and
regression targets) without Python loops over rows: a first pass counts the selected rows per
shard, the arrays are allocated once, and each shard is copied into its slice, so the peak
memory is the arrays plus one shard. :meth:`SampleSet.iter_batches` yields
``dict[str, torch.Tensor]`` batches (a :data:`liverank.models.base.Batch`) made with
``torch.from_numpy`` on index slices. With a long history (``long_len = K > 0``, see
:mod:`liverank.features.long_history`) the set holds the store of the samples directory
(:attr:`SampleSet.long_history`) and every batch carries each sample's row range
``long_<d>_start / _end`` and ``ts``: the model reads the rows it needs from the store (attach
it with ``Ranker.attach_long_history(samples.long_history, samples.long_len)``), so a batch
costs the same as without long history. ``long_fields="eager"`` instead gathers every
``long_<d>_*`` ``[B, K]`` field per batch (the reference the tests compare against).

Example::

    >>> samples = SampleSet.load("runs/samples")  # doctest: +SKIP
    >>> train, val, test = split_by_day(samples, val_days=1, test_days=1)  # doctest: +SKIP
    >>> for batch in train.iter_batches(1024, shuffle=True, seed=0):  # doctest: +SKIP
    ...     batch["live_seq_author"].shape  # torch.Size([1024, 50])
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch

from liverank.data import room_sequences
from liverank.data.batch_order import shuffled_order
from liverank.data.mmbee import (
    AUTHOR_NODE_COLUMNS,
    GIE_COLUMNS,
    SEGMENT_INDEX_COLUMN,
    SegmentTable,
    gather_author_attributes,
    load_author_attributes,
)
from liverank.data.partition import user_rank_expr
from liverank.data.shopping import SHOP_TASKS
from liverank.errors import ConfigError, DataValidationError
from liverank.features.long_history import LongHistory
from liverank.features.spec import LONG_INDEX_COLUMNS, REGRESSION_TARGETS, TASKS, FeatureMap

log = logging.getLogger(__name__)

#: how batches carry long histories: ``lazy`` = row ranges only, ``eager`` = ``[B, K]`` fields
LongFields = Literal["lazy", "eager"]

#: columns loaded as float32; every other column is int64
FLOAT_COLUMNS: frozenset[str] = frozenset(
    (*TASKS, *SHOP_TASKS, *REGRESSION_TARGETS, *(f"mask_{t}" for t in (*TASKS, *SHOP_TASKS)))
)


def shard_paths(samples_dir: str | Path) -> list[Path]:
    """The ``part-*.parquet`` files of a samples directory, in order."""
    root = Path(samples_dir)
    paths = sorted(root.glob("part-*.parquet"))
    if not paths:
        raise DataValidationError(
            "no sample shards (part-*.parquet); build them with `liverank build-samples`",
            file=str(root),
        )
    return paths


class SampleSet:
    """Samples held in memory as ``{column: np.ndarray}`` with one row per sample."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        feature_map: FeatureMap | None = None,
        long_history: LongHistory | None = None,
        long_len: int = 0,
        long_fields: LongFields = "lazy",
        segments: np.ndarray | None = None,
        author_attr: np.ndarray | None = None,
        room_tables: dict[str, np.ndarray] | None = None,
    ) -> None:
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length: {lengths}")
        if long_len > 0:
            missing = [c for c in ("ts", *LONG_INDEX_COLUMNS) if c not in arrays]
            if long_history is None or missing:
                raise ValueError(
                    f"long_len={long_len} needs a long-history store and the columns {missing}"
                )
        self.arrays = arrays
        self.feature_map = feature_map
        #: shared, read-only store of the long histories (None without long history)
        self.long_history = long_history if long_len > 0 else None
        #: window length K of the ``long_<d>_*`` batch fields (0 = none)
        self.long_len = long_len
        if long_fields not in ("lazy", "eager"):
            raise ValueError(f"long_fields must be 'lazy' or 'eager', got {long_fields!r}")
        #: ``lazy``: batches carry row ranges; ``eager``: also the ``[B, K]`` fields
        self.long_fields: LongFields = long_fields
        #: MMBee's segment table ``[S + 1, 3, D]`` (shared, read-only); with it every batch
        #: turns ``seg_idx`` into ``seg_<modality>`` and ``seg_mask`` (:mod:`liverank.data.mmbee`)
        self.segments = segments if SEGMENT_INDEX_COLUMN in arrays else None
        #: MMBee's per-day author attributes ``[days, A + 1, 3, D]`` (shared, read-only); with
        #: them every batch adds ``gie_attr_<metapath>`` for the author-node ``gie_*`` columns
        self.author_attr = author_attr if "day" in arrays else None
        #: LiveForesighter's room tables (``stats`` / ``products``, shared, read-only): batches
        #: then add ``room_stats`` / ``room_products`` (:mod:`liverank.data.room_sequences`)
        self.room_tables = room_tables or {}
        self._n = next(iter(lengths.values()), 0)

    def _like(self, arrays: dict[str, np.ndarray]) -> SampleSet:
        return SampleSet(
            arrays,
            self.feature_map,
            self.long_history,
            self.long_len,
            self.long_fields,
            self.segments,
            self.author_attr,
            self.room_tables,
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        samples_dir: str | Path,
        days: Sequence[int] | None = None,
        columns: Sequence[str] | None = None,
        long_len: int | None = None,
        long_fields: LongFields = "lazy",
        partition: tuple[int, int] | None = None,
    ) -> SampleSet:
        """Read the shards of ``samples_dir`` (optionally only ``days`` and ``columns``).

        ``day`` is always loaded (it drives :func:`split_by_day`). ``long_len = K > 0`` also
        loads the long-history store (``ts`` and the ``long_<d>_start / _end`` columns are then
        always loaded); ``None`` takes ``feature_map.long_len`` (0 when the directory has no
        long history). The set's ``feature_map.long_len`` is set to ``K``. ``long_fields``:
        ``"lazy"`` (batches carry the row ranges; the model reads the store) or ``"eager"``
        (every batch also carries the ``long_<d>_*`` ``[B, K]`` fields; a test reference).
        ``partition = (rank, world)`` reads only the rows of the users that rank owns
        (:func:`liverank.data.partition.user_rank`; the filter runs in the Parquet scan, so the
        other ranks' rows are never held). Raises :class:`DataValidationError` naming the shard
        and column when a column is missing.
        """
        paths = shard_paths(samples_dir)
        schema = pl.read_parquet_schema(paths[0])
        fmap_path = Path(samples_dir) / "feature_map.json"
        fmap = FeatureMap.load(fmap_path) if fmap_path.exists() else None
        if long_len is None:
            long_len = fmap.long_len if fmap is not None else 0
        if long_len < 0:
            raise ValueError(f"long_len must be >= 0, got {long_len}")
        extra = ("ts", *LONG_INDEX_COLUMNS) if long_len > 0 else ()
        wanted = list(schema) if columns is None else list(dict.fromkeys(["day", *columns, *extra]))
        for c in wanted:
            if c not in schema:
                raise DataValidationError(
                    f"unknown sample column (has {list(schema)})", file=str(paths[0]), column=c
                )
        filters = [] if days is None else [pl.col("day").is_in([int(d) for d in days])]
        if partition is not None:
            rank, world = partition
            if not 0 <= rank < world:
                raise ValueError(f"partition rank {rank} outside [0, {world})")
            if "user_id" not in schema:
                raise DataValidationError(
                    "a partitioned read needs the user_id column", file=str(paths[0])
                )
            filters.append(user_rank_expr(world) == rank)

        def scan(path: Path) -> pl.LazyFrame:
            lf = pl.scan_parquet(path)
            return lf.filter(*filters) if filters else lf

        counts = [scan(p).select(pl.len()).collect().item() for p in paths]  # pass 1
        n = int(sum(counts))
        arrays = allocate(schema, wanted, n, fmap)
        offset = 0
        for path, count in zip(paths, counts, strict=True):  # pass 2: copy into slices
            if count == 0:
                continue
            try:
                frame = scan(path).select(wanted).collect()
            except pl.exceptions.PolarsError as exc:
                raise DataValidationError(
                    f"cannot read sample shard: {exc}", file=str(path)
                ) from exc
            copy_columns(frame, arrays, offset, wanted, path)
            offset += count
        side = SideTables.load(samples_dir, fmap, list(arrays), long_len)
        if fmap is not None:
            fmap = fmap.model_copy(update={"long_len": long_len})
        part = "" if partition is None else f" (rank {partition[0]} of {partition[1]})"
        log.info(
            "loaded %d samples x %d columns from %d shard(s)%s", n, len(wanted), len(paths), part
        )
        return cls(
            arrays,
            fmap,
            side.long_history,
            long_len,
            long_fields,
            side.segments,
            side.author_attr,
            side.room_tables,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return self._n

    def __getitem__(self, column: str) -> np.ndarray:
        return self.arrays[column]

    @property
    def columns(self) -> list[str]:
        return list(self.arrays)

    def days(self) -> list[int]:
        """The distinct values of ``day``, ascending."""
        return [int(d) for d in np.unique(self.arrays["day"])]

    def subset(self, mask: np.ndarray) -> SampleSet:
        """Rows selected by a ``[N]`` bool mask or an index array (copies)."""
        mask = np.asarray(mask)
        if mask.dtype == bool and len(mask) != self._n:
            raise ValueError(f"mask has {len(mask)} rows, the sample set {self._n}")
        return self._like({k: v[mask] for k, v in self.arrays.items()})

    def slice(self, start: int, stop: int) -> SampleSet:
        """Rows ``start:stop`` as views (no copy; shares memory with this set)."""
        return self._like({k: v[start:stop] for k, v in self.arrays.items()})

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return self._n // batch_size if drop_last else -(-self._n // batch_size)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        group_by: str | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield batches ``{column: tensor}``: ids ``[B]`` / ``[B, L]`` int64, labels float32.

        Without shuffling the tensors share memory with the arrays (do not modify them in
        place). With shuffling, the order is a permutation drawn from ``seed``; rows inside
        one batch are in ascending index order (same batch content, faster gathers). With
        ``group_by`` (a column, e.g. ``request_id``) the shuffle permutes runs of equal values
        of that column and keeps each run's rows together (:mod:`liverank.data.batch_order`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = None
        if shuffle:
            groups = self.group_keys(group_by)
            order = shuffled_order(self._n, np.random.default_rng(seed), groups)
        for b in range(self.num_batches(batch_size, drop_last)):
            lo, hi = b * batch_size, min((b + 1) * batch_size, self._n)
            yield self.batch(slice(lo, hi) if order is None else np.sort(order[lo:hi]))

    def group_keys(self, group_by: str | None) -> np.ndarray | None:
        """The ``[N]`` values of the column ``group_by`` (None for None); a clear error when
        the samples were loaded without it."""
        if group_by is None:
            return None
        if group_by not in self.arrays:
            raise DataValidationError(
                f"batches grouped by {group_by!r} need that column, and these samples were "
                f"loaded without it (columns: {sorted(self.arrays)[:12]}...)"
            )
        return self.arrays[group_by]

    def batch(self, rows: slice | np.ndarray) -> dict[str, torch.Tensor]:
        """One batch ``{column: tensor}`` of the rows ``rows`` (a slice or a ``[B]`` index).

        A slice gives tensors sharing memory with the arrays; with ``long_len > 0`` and
        ``long_fields="eager"`` the ``long_<d>_*`` fields are added
        (:meth:`LongHistory.batch_fields`).
        """
        if isinstance(rows, slice):
            arrays = {k: v[rows] for k, v in self.arrays.items()}
        else:
            arrays = {k: v.take(rows, axis=0) for k, v in self.arrays.items()}
        out = {k: _tensor(v) for k, v in arrays.items()}
        if self.long_history is not None and self.long_fields == "eager":
            fields = self.long_history.batch_fields(arrays, self.long_len)
            out |= {k: torch.from_numpy(v) for k, v in fields.items()}
        if self.segments is not None:
            out |= SegmentTable.gather(self.segments, arrays[SEGMENT_INDEX_COLUMN])
        if self.author_attr is not None:
            out |= gather_author_attributes(self.author_attr, arrays["day"], arrays)
        fmap = self.feature_map
        if "stats" in self.room_tables and fmap is not None:
            out["room_stats"] = room_sequences.gather_stats(
                self.room_tables["stats"],
                arrays["rs_end"],
                arrays["rs_first"],
                fmap.room_stats_window,
            )
        if "products" in self.room_tables and fmap is not None:
            out["room_products"] = room_sequences.gather_products(
                self.room_tables["products"],
                arrays["rp_end"],
                arrays["rp_first"],
                fmap.room_products_len,
            )
        return out


@dataclass
class SideTables:
    """The shared, read-only tables batches gather from (loaded once per samples directory)."""

    long_history: LongHistory | None = None
    segments: np.ndarray | None = None
    author_attr: np.ndarray | None = None
    room_tables: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(
        cls, samples_dir: str | Path, fmap: FeatureMap | None, columns: list[str], long_len: int
    ) -> SideTables:
        """The tables that samples with ``columns`` (and long window ``long_len``) need."""
        store = LongHistory.load(samples_dir) if long_len > 0 else None
        segments = (
            SegmentTable.load_vectors(samples_dir) if SEGMENT_INDEX_COLUMN in columns else None
        )
        with_attr = fmap is not None and fmap.author_attr_dim > 0
        with_attr = with_attr and any(c in columns for c in AUTHOR_NODE_COLUMNS)
        author_attr = load_author_attributes(samples_dir) if with_attr else None
        room_tables = {}
        if fmap is not None and fmap.room_stats_window and "rs_end" in columns:
            room_tables["stats"] = room_sequences.load_table(samples_dir, room_sequences.STATS_FILE)
        if fmap is not None and fmap.room_products_len and "rp_end" in columns:
            room_tables["products"] = room_sequences.load_table(
                samples_dir, room_sequences.PRODUCTS_FILE
            )
        return cls(store, segments, author_attr, room_tables)


def copy_columns(
    frame: pl.DataFrame,
    arrays: dict[str, np.ndarray],
    offset: int,
    columns: Sequence[str],
    path: Path,
) -> None:
    """Copy ``frame``'s ``columns`` into ``arrays[c][offset : offset + height]`` (arrays from
    :func:`allocate`), checking that sequence ids fit the compact in-memory dtype."""
    count = frame.height
    for c in columns:
        values = frame[c].to_numpy()
        compact = arrays[c].dtype
        if compact in (np.int16, np.int32) and values.size:
            top = int(np.iinfo(compact).max)
            if values.max() > top and compact == np.int32:
                raise DataValidationError(
                    f"sequence ids above {INT32_MAX} cannot be stored compactly; "
                    "hash the table (feature_map.hash_buckets) or remap its ids",
                    file=str(path),
                    column=c,
                )
            if values.max() > top or values.min() < 0:
                raise DataValidationError(
                    f"sequence ids outside [0, {top}], the range of the column's "
                    "table in feature_map.json: the shard and its feature map disagree",
                    file=str(path),
                    column=c,
                )
        arrays[c][offset : offset + count] = values


def allocate(
    schema: pl.Schema | dict[str, pl.DataType],
    columns: Sequence[str],
    n: int,
    fmap: FeatureMap | None,
) -> dict[str, np.ndarray]:
    """Empty ``[n]`` / ``[n, L]`` arrays for ``columns`` in the in-memory sample format."""
    return {c: _allocate(c, schema[c], n, _table_rows(fmap, c)) for c in columns}


#: the compact in-memory id dtypes of sequence columns, widened to int64 per batch
COMPACT_ID_DTYPES = (torch.int16, torch.int32)


def _tensor(values: np.ndarray) -> torch.Tensor:
    """Batch tensor in the sample format: ids int64, labels / masks float32."""
    t = torch.from_numpy(values)
    return t.long() if t.dtype in COMPACT_ID_DTYPES else t


INT32_MAX = np.iinfo(np.int32).max
INT16_ROWS = int(np.iinfo(np.int16).max) + 1


def _table_rows(fmap: FeatureMap | None, column: str) -> int | None:
    """Rows of the embedding table a sequence column indexes (``None``: not known)."""
    if fmap is None:
        return None
    tables = [GIE_COLUMNS.get(column)] + [f.get(column) for f in fmap.seq_fields.values()]
    table = next((t for t in tables if t is not None), None)
    if table is None:
        return None
    try:
        return fmap.table_size(table)
    except ConfigError:
        return None


def _allocate(column: str, dtype: pl.DataType, n: int, table_rows: int | None) -> np.ndarray:
    np_dtype = np.float32 if column in FLOAT_COLUMNS else np.int64
    if isinstance(dtype, pl.Array):
        # sequences are ~90% of a sample's bytes: keep their ids compact in memory (int16 when
        # the column's table has at most 32768 rows, else int32; a quarter / half of int64)
        # and widen each batch to int64 (_tensor)
        if np_dtype == np.float32:
            seq_dtype: type = np.float32
        elif table_rows is not None and table_rows <= INT16_ROWS:
            seq_dtype = np.int16
        else:
            seq_dtype = np.int32
        return np.empty((n, dtype.size), dtype=seq_dtype)  # [N, L]
    return np.empty(n, dtype=np_dtype)  # [N]


def split_days(
    days: Sequence[int], val_days: int = 1, test_days: int = 1, train_days: int | None = None
) -> tuple[list[int], list[int], list[int]]:
    """The ascending ``days`` cut into (train, validation, test) days: the last ``test_days``,
    the ``val_days`` before, the rest (or only the last ``train_days`` of the rest: the
    earlier days then feed the behaviour histories but are no training rows).
    :class:`ConfigError` when no training day is left."""
    if val_days < 0 or test_days < 1:
        raise ConfigError(f"need val_days >= 0 and test_days >= 1, got {val_days}, {test_days}")
    if train_days is not None and train_days < 1:
        raise ConfigError(f"need train_days >= 1 (or none: every earlier day), got {train_days}")
    days = sorted(int(d) for d in days)
    if len(days) < val_days + test_days + 1:
        raise ConfigError(
            f"the samples cover {len(days)} day(s) ({days}); a split with {val_days} validation "
            f"and {test_days} test day(s) needs at least {val_days + test_days + 1}"
        )
    test_at = len(days) - test_days
    val_at = test_at - val_days
    train_at = 0 if train_days is None else max(0, val_at - train_days)
    return days[train_at:val_at], days[val_at:test_at], days[test_at:]


def split_by_day(
    sample_set: SampleSet, val_days: int = 1, test_days: int = 1, train_days: int | None = None
) -> tuple[SampleSet, SampleSet, SampleSet]:
    """Chronological split: the last ``test_days`` days, the ``val_days`` before, the rest (or
    its last ``train_days``, see :func:`split_days`).

    Samples are sorted by ``ts`` (so by ``day``): the three parts are then views on contiguous
    row ranges and cost no memory; otherwise they are copies. Raises :class:`ConfigError` when
    there are not enough days for a non-empty train set.
    """
    train, val, test = split_days(sample_set.days(), val_days, test_days, train_days)
    day = sample_set["day"]
    test_start = test[0]
    val_start = val[0] if val else test_start
    train_start = train[0]
    if np.all(day[1:] >= day[:-1]):
        train_row, val_row, test_row = np.searchsorted(day, [train_start, val_start, test_start])
        return (
            sample_set.slice(train_row, val_row),
            sample_set.slice(val_row, test_row),
            sample_set.slice(test_row, len(sample_set)),
        )
    train = sample_set.subset((day >= train_start) & (day < val_start))
    val = sample_set.subset((day >= val_start) & (day < test_start))
    test = sample_set.subset(day >= test_start)
    return train, val, test
