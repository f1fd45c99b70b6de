"""Validation of canonical dataset directories (ARCHITECTURE section 2; rules in docs/data.md).

Every check is a vectorised polars expression over whole columns, so a table of tens of millions
of rows validates in seconds. A problem names the file, the column and the first offending rows
(0-based row positions in the Parquet file) with their values. By default the first problem raises
:class:`~liverank.errors.DataValidationError`; with ``collect=True`` every problem is gathered in
the :class:`ValidationReport`. Validation only reads: nothing is ever dropped or rewritten.

Dtype policy: an integer column (``Int64`` / ``Int32``) accepts any integer type whose values fit
the canonical type; a float column accepts any float or integer type; a string column accepts
``String``, ``Categorical`` or ``Enum``; a vector column accepts ``List`` or ``Array`` of floats.
Everything else (strings or floats for ids, datetimes for timestamps, ...) is rejected. Accepted
non-canonical types are listed in the report's notes; readers cast to the canonical types.

Example::

    report = validate_dataset("runs/sim-small")  # raises on the first problem
    print(report.to_text())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_origin, get_type_hints

import numpy as np
import polars as pl

from liverank.data import io
from liverank.data.schema import EVENTS, ON_AIR_TABLES, TABLES, Column, DatasetMeta
from liverank.data.validation_report import Problem, TableReport, ValidationReport
from liverank.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5
_ROW = "__liverank_row"
_BAD = "__liverank_bad"
#: id columns where 0 means "none" (every other ``*_id`` column must be >= 1)
ZERO_MEANS_NONE: frozenset[tuple[str, str]] = frozenset({("live_events", "product_id")})
#: codes that must be >= 1 (every other numeric column must be >= 0)
POSITIVE_CODES: frozenset[tuple[str, str]] = frozenset({("authors", "category")})
#: foreign keys checked on non-zero values when the referenced (optional) table is present
OPTIONAL_REFERENCES: dict[tuple[str, str], tuple[str, str]] = {
    ("live_events", "product_id"): ("products", "product_id"),
}


@dataclass
class ValidationContext:
    """What checks across tables need: meta.json and the referenced (dimension) tables."""

    meta: DatasetMeta | None = None
    #: referenced tables by name (users, authors, rooms, videos, products)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    _lookups: dict[tuple[str, ...], pl.DataFrame] = field(default_factory=dict, repr=False)

    def lookup(self, table: str, key: str, columns: Sequence[str]) -> pl.DataFrame | None:
        """``table[[key, *columns]]`` as Int64 with one row per key, or None if not usable."""
        cache_key = (table, key, *columns)
        if cache_key not in self._lookups:
            df = self.tables.get(table)
            cols = [key, *columns]
            if df is None or any(c not in df.columns or not df[c].dtype.is_integer() for c in cols):
                return None
            out = df.select(pl.col(c).cast(pl.Int64, strict=False) for c in cols)
            if out[key].n_unique() != out.height:
                out = out.unique(subset=[key], keep="first", maintain_order=True)
            self._lookups[cache_key] = out
        return self._lookups[cache_key]


class _Checker:
    """Runs the checks of one table; raises on the first problem unless ``collect``."""

    def __init__(self, name: str, df: pl.DataFrame, file: str, collect: bool) -> None:
        self.name, self.df, self.file, self.collect = name, df, file, collect
        self.report = TableReport(name=name, file=file, rows=df.height)

    def ran(self, check: str) -> None:
        if check not in self.report.checks:
            self.report.checks.append(check)

    def problem(self, check: str, column: str | None, message: str, rows=(), examples=()) -> None:
        p = Problem(check, self.name, self.file, column, message, tuple(rows), tuple(examples))
        if not self.collect:
            raise p.to_error()
        self.report.problems.append(p)

    def mask(
        self,
        check: str,
        column: str,
        bad: pl.Expr,
        what: str,
        show: Sequence[str | pl.Expr] | None = None,
        frame: pl.DataFrame | None = None,
    ) -> int:
        """Report the rows where ``bad`` is true (nulls count as fine) with the ``show`` values.

        Returns the number of offending rows.
        """
        self.ran(check)
        frame = self.df if frame is None else frame
        bad = bad.fill_null(False)
        count = int(frame.select(bad.sum()).item())
        if count == 0:
            return 0
        show = list(show or [column])
        hits = (
            frame.lazy()
            .with_row_index(_ROW)
            .select(pl.col(_ROW), *show, bad.alias(_BAD))
            .filter(pl.col(_BAD))
            .head(MAX_EXAMPLES)
            .collect()
        )
        values = hits.drop(_ROW, _BAD)
        examples = values.to_series().to_list() if values.width == 1 else values.to_dicts()
        self.problem(check, column, f"{count:,} row(s) {what}", hits[_ROW].to_list(), examples)
        return count


def dtype_problem(col: Column, found: pl.DataType) -> str | None:
    """Why ``found`` is not an accepted dtype for ``col`` (module doc), or None if it is."""
    expected = col.dtype
    if col.vector:
        ok = isinstance(found, pl.List | pl.Array) and found.inner.is_float()
    elif expected.is_integer():
        ok = found.is_integer()
    elif expected.is_float():
        ok = found.is_float() or found.is_integer()
    else:
        ok = found == pl.String or isinstance(found, pl.Categorical | pl.Enum)
    if ok:
        return None
    hint = ""
    if found.is_temporal() and expected.is_integer():
        hint = "; timestamps are epoch milliseconds: convert with .dt.epoch('ms')"
    elif expected.is_integer():
        hint = "; ids, codes and timestamps must be integers: map or cast them first"
    return f"wrong dtype: expected {expected}, found {found}{hint}"


def check_columns(root: str | Path, table: str, columns: Sequence[str]) -> dict[str, pl.DataType]:
    """The Parquet schema of ``table`` after checking that it is readable and that ``columns``
    are present with accepted dtypes; raises :class:`DataValidationError` naming the file and
    column otherwise (what the builders and the stream engine check before reading)."""
    path = io.table_path(root, table)
    if not path.exists():
        raise DataValidationError(f"required table '{table}' is missing", file=str(path))
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars / OS errors on truncated or non-Parquet files
        reason = " ".join(str(exc).split())
        raise DataValidationError(
            f"cannot read Parquet file (truncated or not Parquet?): {reason}", file=str(path)
        ) from exc
    for c in columns:
        if c not in schema:
            raise DataValidationError(
                f"required column is missing from table '{table}' (has {list(schema)})",
                file=str(path),
                column=c,
            )
        problem = dtype_problem(TABLES[table].column(c), schema[c])
        if problem is not None:
            raise DataValidationError(problem, file=str(path), column=c)
    return dict(schema)


def _check_dtype(c: _Checker, col: Column) -> bool:
    """Whether ``col`` has an accepted dtype (see the module docstring); reports it otherwise."""
    found, expected = c.df.schema[col.name], col.dtype
    c.ran("dtypes")
    problem = dtype_problem(col, found)
    if problem is not None:
        c.problem("dtypes", col.name, problem)
        return False
    if found != expected:
        c.report.notes.append(f"column '{col.name}' is {found} (canonical {expected}); accepted")
    if expected.is_integer() and found.is_integer():
        lo, hi = np.iinfo(str(expected).lower()).min, np.iinfo(str(expected).lower()).max
        flo, fhi = np.iinfo(str(found).lower()).min, np.iinfo(str(found).lower()).max
        if flo < lo or fhi > hi:
            x = pl.col(col.name)
            what = f"do not fit {expected} (found {found}, values must be in [{lo}, {hi}])"
            return c.mask("dtypes", col.name, (x < lo) | (x > hi), what) == 0
    return True


def _check_values(c: _Checker, col: Column, dim: int) -> None:
    """Nulls / NaN, minimum values, closed string sets and vector lengths of one column."""
    name, x, dtype = col.name, pl.col(col.name), c.df.schema[col.name]
    null = x.is_null() | x.is_nan() if dtype.is_float() else x.is_null()
    c.mask("nulls", name, null, "are null" + (" or NaN" if dtype.is_float() else ""))
    if col.vector:
        as_list = x.cast(pl.List(dtype.inner)) if isinstance(dtype, pl.Array) else x
        inner = as_list.list.eval(pl.element().is_null() | pl.element().is_nan()).list.any()
        c.mask("nulls", name, inner, "have null or NaN vector elements")
        lengths = as_list.list.len().alias(f"{name}_length")
        if dim <= 0:  # no meta.segment_dim: require one length throughout
            dim = int(c.df.select(lengths.first()).item() or 0)
            c.report.notes.append(f"no meta.segment_dim; checked '{name}' against row 0 ({dim})")
        c.mask("vectors", name, lengths != dim, f"have length != segment_dim {dim}", [lengths])
    elif (c.name, name) in EVENTS:
        allowed = EVENTS[(c.name, name)]
        bad = ~x.cast(pl.String).is_in(pl.Series(allowed).implode())
        c.mask("closed sets", name, bad, f"are not one of {list(allowed)}")
    elif dtype.is_numeric():
        time_cols = {TABLES[c.name].time_column, "start_ts", "end_ts"}
        if name in time_cols:
            c.mask("timestamps", name, x < 0, "are negative timestamps (epoch ms must be >= 0)")
        elif name.endswith("_id") and (c.name, name) not in ZERO_MEANS_NONE:
            c.mask("ids", name, x < 1, "are ids < 1 (ids start at 1; 0 means none)")
        else:
            low = 1 if (c.name, name) in POSITIVE_CODES else 0
            c.mask("ranges", name, x < low, f"are < {low}")


def _check_time(c: _Checker, ok: set[str], meta: DatasetMeta | None) -> None:
    """Event tables sorted by time, inside the dataset's range; rooms end after they start."""
    table, ts = TABLES[c.name], TABLES[c.name].time_column
    if ts in ok:
        x = pl.col(ts)
        prev = x.shift(1).alias(f"previous_{ts}")
        c.mask("time order", ts, x < x.shift(1), f"break the order by {ts}", [prev, ts])
        if meta is not None:
            what = (
                f"are outside the dataset's [meta.start_ts, meta.end_ts) = "
                f"[{meta.start_ts}, {meta.end_ts}) (are timestamps epoch milliseconds?)"
            )
            bad = (x < meta.start_ts) | (x >= meta.end_ts)
            c.mask("time range", ts, bad, what)
    if table.name == "rooms" and {"start_ts", "end_ts"} <= ok:
        bad = pl.col("end_ts") <= pl.col("start_ts")
        shown = [col for col in ("live_id", "start_ts", "end_ts") if col in ok]
        c.mask("time order", "end_ts", bad, "have end_ts <= start_ts", shown)


def _check_key(c: _Checker, ok: set[str]) -> None:
    key = list(TABLES[c.name].key)
    if not key or not set(key) <= ok:
        return
    c.ran("primary key")
    cols = pl.col(key[0]) if len(key) == 1 else pl.struct(key).hash(7)
    if c.df.select(cols.n_unique()).item() == c.df.height:  # hash collisions fall through
        return
    repeat = ~(pl.col(key[0]) if len(key) == 1 else pl.struct(key)).is_first_distinct()
    c.mask("primary key", ", ".join(key), repeat, f"repeat a primary key ({', '.join(key)})", key)


def _check_references(c: _Checker, ok: set[str], ctx: ValidationContext) -> None:
    """Foreign keys; author agreement with the referenced room / video; on-air intervals.

    One left join per reference brings the referenced row's author and on-air interval.
    """
    table, ts = TABLES[c.name], TABLES[c.name].time_column
    refs = {col: (ref, False) for col, ref in table.references.items()}
    refs |= {col: (ref, True) for (t, col), ref in OPTIONAL_REFERENCES.items() if t == c.name}
    for col, ((ref_table, ref_col), optional) in refs.items():
        keys = ctx.lookup(ref_table, ref_col, [])
        if col not in ok or keys is None:
            if col in ok and not optional:
                c.report.notes.append(f"skipped {col} -> {ref_table}: not loaded or unusable")
            continue
        bad = ~pl.col(col).cast(pl.Int64).is_in(keys[ref_col].implode())
        bad = (pl.col(col) != 0) & bad if optional else bad
        c.mask("foreign keys", col, bad, f"reference unknown {ref_table}.{ref_col}")
        agree = ref_col != "author_id" and "author_id" in ok
        agree = agree and "author_id" in ctx.tables[ref_table].columns
        on_air = ref_table == "rooms" and c.name in ON_AIR_TABLES and ts in ok
        extra = ["author_id"] * agree + ["start_ts", "end_ts"] * on_air
        lookup = ctx.lookup(ref_table, ref_col, extra) if extra else None
        if lookup is None:
            continue
        other = f"{ref_table}_author_id"
        left = [col, *(["author_id"] * agree), *([ts] * on_air)]
        joined = c.df.select(pl.col(left).cast(pl.Int64)).join(
            lookup.rename({"author_id": other} if agree else {}),
            left_on=col,
            right_on=ref_col,
            how="left",
            maintain_order="left",
        )  # one row per row of c.df, in order: row positions are kept
        if agree:
            what = f"have an author_id that differs from the author of their {ref_table} row"
            bad = pl.col("author_id") != pl.col(other)
            c.mask("author agreement", "author_id", bad, what, [col, "author_id", other], joined)
        if on_air:
            bad = (pl.col(ts) < pl.col("start_ts")) | (pl.col(ts) > pl.col("end_ts"))
            what = "fall outside their room's on-air interval [start_ts, end_ts]"
            c.mask("on air", ts, bad, what, [ts, col, "start_ts", "end_ts"], joined)


def validate_table(
    name: str,
    df: pl.DataFrame,
    file: str,
    context: ValidationContext | None = None,
    *,
    collect: bool = False,
) -> TableReport:
    """Validate one canonical table ``df`` (read from ``file``).

    Cross-table checks (foreign keys, author agreement, on-air, time range, vector length) use
    ``context``; those whose inputs are absent are skipped with a note. Raises
    :class:`DataValidationError` on the first problem unless ``collect``.
    """
    if name not in TABLES:
        raise ConfigError(f"unknown table '{name}'; known: {sorted(TABLES)}")
    t0, ctx = time.perf_counter(), context or ValidationContext()
    c, spec = _Checker(name, df, file, collect), TABLES[name]
    c.ran("columns")
    missing = [col.name for col in spec.columns if col.name not in df.columns]
    if missing:
        c.problem("columns", missing[0], f"missing column(s) {missing}; found {df.columns}")
    dim = ctx.meta.segment_dim if ctx.meta is not None else 0
    ok = {col.name for col in spec.columns if col.name in df.columns and _check_dtype(c, col)}
    for col in spec.columns:
        if col.name in ok:
            _check_values(c, col, dim)
    _check_time(c, ok, ctx.meta)
    _check_key(c, ok)
    _check_references(c, ok, ctx)
    c.report.seconds = time.perf_counter() - t0
    log.debug("validated %s: %d rows in %.2f s", name, df.height, c.report.seconds)
    return c.report


def _meta_problems(meta: DatasetMeta, file: str) -> list[Problem]:
    """Field types and ranges of meta.json (io.read_meta checks only JSON and field names)."""
    out = []
    for name, kind in get_type_hints(DatasetMeta).items():
        value, kind = getattr(meta, name), get_origin(kind) or kind
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            msg = f"must be {kind.__name__}, found {type(value).__name__} {value!r}"
            out.append(Problem("meta", "meta", file, name, msg))
    if not out:
        rules = (
            ("end_ts", meta.end_ts > meta.start_ts >= 0, "need 0 <= start_ts < end_ts"),
            ("long_view_ms", meta.long_view_ms > 0, "must be > 0"),
            ("segment_dim", meta.segment_dim >= 0, "must be >= 0"),
        )
        out += [Problem("meta", "meta", file, col, msg) for col, good, msg in rules if not good]
    return out


def _from_error(check: str, table: str, exc: DataValidationError) -> Problem:
    text, prefix = str(exc), f"{exc.file}: "
    text = text[len(prefix) :] if exc.file and text.startswith(prefix) else text
    return Problem(check, table, exc.file or "", exc.column, text)


def validate_dataset(
    root: str | Path, tables: Sequence[str] | None = None, *, collect: bool = False
) -> ValidationReport:
    """Validate the dataset directory ``root`` (meta.json and every table, or only ``tables``).

    Raises :class:`DataValidationError` on the first problem; with ``collect=True`` returns a
    report holding every problem instead (check ``report.ok``).
    """
    t0, root = time.perf_counter(), Path(root)
    selected = list(TABLES) if tables is None else list(tables)
    unknown = [t for t in selected if t not in TABLES]
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown}; known: {sorted(TABLES)}")
    report, ctx = ValidationReport(root=str(root)), ValidationContext()

    def add(problem: Problem) -> None:
        if not collect:
            raise problem.to_error()
        report.problems.append(problem)

    meta_file = str(root / io.META_FILE)
    try:
        ctx.meta = io.read_meta(root)
        for p in _meta_problems(ctx.meta, meta_file):
            add(p)
    except DataValidationError as exc:
        add(_from_error("meta", "meta", exc))
    if report.problems:
        ctx.meta = None  # do not check tables against a broken meta.json

    present = {t for t in TABLES if io.has_table(root, t)}
    for t in selected:
        if t not in present and TABLES[t].optional:
            report.absent_optional.append(t)
        elif t not in present:
            add(Problem("tables", t, str(io.table_path(root, t)), None, f"table '{t}' is missing"))
    targets = {ref for t in selected for ref, _ in TABLES[t].references.values()}
    targets |= {ref for (t, _), (ref, _) in OPTIONAL_REFERENCES.items() if t in selected}
    for t in selected:
        absent = [r for r, _ in TABLES[t].references.values() if r not in present]
        for ref in absent if t in present else []:
            if ref not in selected or TABLES[ref].optional:
                msg = f"table '{t}' references '{ref}', which is missing"
                add(Problem("tables", ref, str(io.table_path(root, ref)), None, msg))
    if "segments" in selected and "segments" in present and ctx.meta and ctx.meta.segment_dim < 1:
        add(Problem("meta", "meta", meta_file, "segment_dim", "must be >= 1 with segments"))

    # referenced (dimension) tables first, so that their keys are in the context
    order = [t for t in TABLES if t in targets | set(selected) and t in present]
    order.sort(key=lambda t: t not in targets)
    for t in order:
        file = str(io.table_path(root, t))
        try:
            df = io.read_table(root, t)
        except DataValidationError as exc:
            if t in selected:
                add(_from_error("readable", t, exc))
            continue
        if t in targets:
            ctx.tables[t] = df
        if t in selected:
            table_report = validate_table(t, df, file, ctx, collect=collect)
            report.tables[t] = table_report
            report.problems += table_report.problems
    report.seconds = time.perf_counter() - t0
    rows = sum(t.rows for t in report.tables.values())
    counts = (len(report.tables), rows, len(report.problems), report.seconds)
    log.info("validated %s: %d tables, %d rows, %d problem(s) in %.2f s", root, *counts)
    return report
