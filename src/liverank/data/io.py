"""Read and write canonical dataset directories (one Parquet file per table + ``meta.json``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl

from liverank.data.schema import TABLES, DatasetMeta
from liverank.errors import DataValidationError

META_FILE = "meta.json"


def table_path(root: str | Path, table: str) -> Path:
    return Path(root) / f"{table}.parquet"


def write_table(root: str | Path, table: str, df: pl.DataFrame) -> Path:
    """Write ``df`` as ``<root>/<table>.parquet``, cast to the canonical column types and order.

    Raises :class:`DataValidationError` if a canonical column is missing; extra columns are kept
    after the canonical ones (a source may carry more side information).
    """
    spec = TABLES[table]
    missing = [c.name for c in spec.columns if c.name not in df.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing} for table '{table}'", file=str(table_path(root, table))
        )
    canonical = [pl.col(c.name).cast(c.dtype) for c in spec.columns]
    extra = [c for c in df.columns if c not in spec.polars_schema]
    out = df.select(canonical + extra)
    path = table_path(root, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_parquet(path, compression="zstd", statistics=True)
    return path


def write_meta(root: str | Path, meta: DatasetMeta) -> Path:
    path = Path(root) / META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(meta), indent=2, sort_keys=True))
    return path


def read_meta(root: str | Path) -> DatasetMeta:
    path = Path(root) / META_FILE
    if not path.exists():
        raise DataValidationError(
            "not a liverank dataset directory (no meta.json); create one with `liverank simulate`",
            file=str(path),
        )
    try:
        raw = json.loads(path.read_text())
        return DatasetMeta(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataValidationError(f"malformed meta.json: {exc}", file=str(path)) from exc


def has_table(root: str | Path, table: str) -> bool:
    return table_path(root, table).exists()


def read_table(root: str | Path, table: str, columns: list[str] | None = None) -> pl.DataFrame:
    """Read one canonical table. Does not validate: call :func:`liverank.data.validate` for that."""
    if table not in TABLES:
        raise DataValidationError(f"unknown table '{table}'; known: {sorted(TABLES)}")
    path = table_path(root, table)
    if not path.exists():
        raise DataValidationError(f"table '{table}' is missing", file=str(path))
    try:
        return pl.read_parquet(path, columns=columns)
    except Exception as exc:  # polars raises several types for corrupt files
        raise DataValidationError(f"cannot read Parquet file: {exc}", file=str(path)) from exc
