"""EvalResult: the metrics of one model on one test set, by slice, task and metric.

A *slice* is a subset of the test rows:

* ``"all"`` — every test row;
* ``"hour=H"`` — rows of test hour ``H`` (hours since the dataset start);
* ``"hour-avg"`` — not a subset: each metric averaged with equal weight over the hour slices
  where it is defined (counts are summed), as the papers report (FARM sec. 4.1, MMBee sec. 5.1);
* ``"activity=low|mid|high|unknown"`` — rows of users of one activity group.

Values are stored as ``slices[slice][task][metric] -> float`` (NaN = undefined) and serialise
to JSON (NaN as ``null``), a long polars DataFrame, or a rich Table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

from liverank.errors import ConfigError, UnknownIdError

ALL = "all"
HOUR_AVG = "hour-avg"
HOUR_PREFIX = "hour="
ACTIVITY_PREFIX = "activity="
#: user_activity code -> name of its slice
ACTIVITY_NAMES: dict[int, str] = {1: "low", 2: "mid", 3: "high", 0: "unknown"}
#: metrics whose hour-avg is a sum over hours instead of a mean
COUNT_METRICS: frozenset[str] = frozenset({"count", "n_users", "n_requests"})
#: pointwise metrics of every binary task, in display order
POINT_METRICS: tuple[str, ...] = ("auc", "uauc", "gauc", "logloss", "count", "pos_rate")

FORMAT_VERSION = 1


def hour_slice(hour: int) -> str:
    return f"{HOUR_PREFIX}{hour}"


def activity_slice(code: int) -> str:
    return f"{ACTIVITY_PREFIX}{ACTIVITY_NAMES.get(code, str(code))}"


def format_value(metric: str, value: float) -> str:
    """Human formatting: counts as integers, everything else with 4 decimals; NaN as '-'."""
    if value is None or math.isnan(value):
        return "-"
    if metric in COUNT_METRICS:
        return f"{int(round(value)):,}"
    return f"{value:.4f}"


@dataclass
class EvalResult:
    """Metrics of one model: ``slices[slice][task][metric]``.

    Example:
        >>> r = EvalResult(tasks=["ctr"], ks=[3], slices={"all": {"ctr": {"auc": 0.7}}})
        >>> r.value("ctr", "auc")
        0.7
    """

    tasks: list[str]
    ks: list[int]
    slices: dict[str, dict[str, dict[str, float]]]
    regression: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- access ----------------------------------------------------------------------------

    def value(self, task: str, metric: str, slice: str = ALL) -> float:
        """One metric; NaN if the metric is undefined, ``UnknownIdError`` if never computed."""
        try:
            return self.slices[slice][task][metric]
        except KeyError:
            raise UnknownIdError(
                f"no metric '{metric}' for task '{task}' in slice '{slice}' "
                f"(slices: {', '.join(self.slices)})"
            ) from None

    def hours(self) -> list[int]:
        """Test hours present, ascending."""
        return sorted(int(s[len(HOUR_PREFIX) :]) for s in self.slices if s.startswith(HOUR_PREFIX))

    def hourly(self, task: str, metric: str) -> tuple[list[int], list[float]]:
        """``(hours, values)`` of one metric over the test hours."""
        hours = self.hours()
        return hours, [self.value(task, metric, hour_slice(h)) for h in hours]

    def activity_slices(self) -> list[str]:
        """Activity slices present, in the order low, mid, high, unknown."""
        order = [activity_slice(c) for c in (1, 2, 3, 0)]
        present = [s for s in order if s in self.slices]
        others = sorted(s for s in self.slices if s.startswith(ACTIVITY_PREFIX) and s not in order)
        return present + others

    def metrics(self, task: str, slice: str = ALL) -> list[str]:
        """Metric names computed for ``task`` in ``slice``."""
        return list(self.slices.get(slice, {}).get(task, {}))

    def main_slice(self) -> str:
        """``"hour-avg"`` when there are hour slices, else ``"all"``."""
        return HOUR_AVG if HOUR_AVG in self.slices else ALL

    # -- tables ----------------------------------------------------------------------------

    def to_frame(self) -> pl.DataFrame:
        """Long format: one row per (slice, task, metric) with its ``value``."""
        rows = [
            (s, t, m, float(v))
            for s, tasks in self.slices.items()
            for t, metrics in tasks.items()
            for m, v in metrics.items()
        ]
        return pl.DataFrame(
            rows,
            schema={
                "slice": pl.String,
                "task": pl.String,
                "metric": pl.String,
                "value": pl.Float64,
            },
            orient="row",
        )

    def wide(self, slice: str = ALL) -> pl.DataFrame:
        """One row per task of ``slice``, one column per metric (nulls where undefined)."""
        if slice not in self.slices:
            raise UnknownIdError(f"no slice '{slice}' (slices: {', '.join(self.slices)})")
        tasks = self.slices[slice]
        columns: list[str] = []
        for metrics in tasks.values():
            columns += [m for m in metrics if m not in columns]
        data: dict[str, list[Any]] = {"task": list(tasks)}
        for m in columns:
            data[m] = [_nan_to_none(tasks[t].get(m, math.nan)) for t in tasks]
        return pl.DataFrame(data, schema={"task": pl.String, **dict.fromkeys(columns, pl.Float64)})

    def default_metrics(self) -> list[str]:
        """Pointwise metrics, then Prec@K and NDCG@K for every K."""
        ranking = [f"{name}@{k}" for k in self.ks for name in ("prec", "ndcg")]
        return [*POINT_METRICS, *ranking]

    def to_table(
        self,
        slice: str | None = None,
        metrics: Sequence[str] | None = None,
        title: str | None = None,
    ) -> Table:
        """A rich Table of ``slice`` (default: hour-avg if present), one row per task."""
        slice = slice or self.main_slice()
        if slice not in self.slices:
            raise UnknownIdError(f"no slice '{slice}' (slices: {', '.join(self.slices)})")
        metrics = list(metrics or self.default_metrics())
        name = self.meta.get("name", "")
        table = Table(title=title or f"{name + ' — ' if name else ''}{slice}")
        table.add_column("task", style="bold")
        for m in metrics:
            table.add_column(m, justify="right")
        for task, values in self.slices[slice].items():
            table.add_row(task, *(format_value(m, values.get(m, math.nan)) for m in metrics))
        return table

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "tasks": list(self.tasks),
            "regression": list(self.regression),
            "ks": list(self.ks),
            "meta": self.meta,
            "slices": {
                s: {t: {m: _nan_to_none(v) for m, v in ms.items()} for t, ms in ts.items()}
                for s, ts in self.slices.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"evaluation result has format version {version!r}; this liverank reads "
                f"version {FORMAT_VERSION}"
            )
        try:
            slices = {
                s: {
                    t: {m: math.nan if v is None else float(v) for m, v in ms.items()}
                    for t, ms in ts.items()
                }
                for s, ts in data["slices"].items()
            }
            return cls(
                tasks=list(data["tasks"]),
                ks=[int(k) for k in data["ks"]],
                slices=slices,
                regression=list(data.get("regression", [])),
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed evaluation result: {exc!r}") from None

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (NaN written as ``null``)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"evaluation result is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json())
        return p

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no evaluation result (run `liverank evaluate` first)")
        try:
            return cls.from_json(p.read_text())
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
