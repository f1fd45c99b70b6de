"""The evaluator: a prediction frame -> :class:`EvalResult` per slice (all, hour, activity group).

The prediction frame has one row per scored test impression:

==================  ===========================================================================
``user_id``          Int64, groups UAUC / GAUC
``request_id``       Int64, groups the top-K metrics (one slate)
``hour``             Int64, hours since the dataset start (``samples.hour``); by_hour only
``user_activity``    Int64, 1 low, 2 mid, 3 high, 0 unknown; by_activity only
``<task>``           label 0/1 (Float32) for every binary task
``mask_<task>``      1 = label observed, 0 or null = not (optional: absent = all observed)
``p_<task>``         predicted probability
``<target>``         regression target (e.g. ``stay_ms``) and ``p_<target>``, optional
==================  ===========================================================================

Per slice and task it computes AUC, UAUC, GAUC (users with both classes), logloss, ``count``
(observed labels), ``pos_rate``, ``n_users`` (users used by UAUC / GAUC), and per request
Prec@K, Recall@K, NDCG@K, HitRate@K with ``n_requests`` (requests with a positive).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import polars as pl

from liverank.errors import ConfigError, DataValidationError
from liverank.eval.inputs import check_binary, check_finite, check_probability
from liverank.eval.metrics import auc, grouped_auc, logloss, mse
from liverank.eval.ranking import ranking_at_k
from liverank.eval.result import (
    ALL,
    COUNT_METRICS,
    HOUR_AVG,
    EvalResult,
    activity_slice,
    hour_slice,
)

log = logging.getLogger(__name__)


def required_columns(
    tasks: Sequence[str],
    regression: Sequence[str] = (),
    by_hour: bool = True,
    by_activity: bool = True,
) -> list[str]:
    """Columns a prediction frame must have (``mask_<task>`` columns are optional)."""
    cols = ["user_id", "request_id"]
    cols += ["hour"] if by_hour else []
    cols += ["user_activity"] if by_activity else []
    for t in [*tasks, *regression]:
        cols += [t, f"p_{t}"]
    return cols


class _Columns:
    """The prediction frame as numpy arrays, checked once."""

    def __init__(
        self, pred: pl.DataFrame, tasks: Sequence[str], regression: Sequence[str], keys: list[str]
    ) -> None:
        required = [*keys, *required_columns(tasks, regression, by_hour=False, by_activity=False)]
        missing = [c for c in dict.fromkeys(required) if c not in pred.columns]
        if missing:
            raise DataValidationError(
                f"prediction frame lacks columns {missing} (has {pred.columns})",
                column=missing[0],
            )
        self.keys = {c: self._ints(pred, c) for c in keys}  # each [N]
        self.label: dict[str, np.ndarray] = {}  # task -> [N], 0 where unobserved
        self.prob: dict[str, np.ndarray] = {}  # task -> [N], 0 where unobserved
        self.mask: dict[str, np.ndarray] = {}  # task -> [N] bool
        for t in [*tasks, *regression]:
            label = pred.get_column(t).cast(pl.Float64).to_numpy()
            prob = pred.get_column(f"p_{t}").cast(pl.Float64).to_numpy()
            if f"mask_{t}" in pred.columns:
                m = pred.get_column(f"mask_{t}").cast(pl.Float64).fill_null(0.0).to_numpy()
                check_finite(m, f"mask_{t}")
                observed = m != 0
            else:
                observed = np.ones(pred.height, dtype=bool)
            # Unobserved rows may hold anything (often null): neutralise them before checking.
            label = np.where(observed, label, 0.0)
            prob = np.where(observed, prob, 0.0)
            if t in regression:
                check_finite(label, t)
                check_finite(prob, f"p_{t}")
            else:
                check_binary(label, t)
                check_probability(prob, f"p_{t}")
            self.label[t], self.prob[t], self.mask[t] = label, prob, observed

    @staticmethod
    def _ints(pred: pl.DataFrame, name: str) -> np.ndarray:
        col = pred.get_column(name)
        if not col.dtype.is_integer():
            raise DataValidationError(f"must be an integer column, got {col.dtype}", column=name)
        if col.null_count():
            rows = np.flatnonzero(col.is_null().to_numpy())[:5]
            raise DataValidationError("must not be null", column=name, rows=rows.tolist())
        return col.cast(pl.Int64).to_numpy()


def _split(codes: np.ndarray) -> dict[int, np.ndarray]:
    """``{code: row indices}`` for every distinct value of ``codes``; each index array keeps the
    original row order (the sort is stable)."""
    order = np.argsort(codes, kind="stable")  # [N]
    values, starts = np.unique(codes[order], return_index=True)
    return {int(v): idx for v, idx in zip(values, np.split(order, starts[1:]), strict=True)}


class _TaskView:
    """The observed rows of one task, sorted by predicted score, descending.

    Sorting once per task makes the score sorts inside every metric call nearly free (a stable
    sort of sorted data is linear), which halves the evaluator's run time.
    """

    def __init__(self, cols: _Columns, task: str) -> None:
        rows = np.flatnonzero(cols.mask[task])  # [M] observed rows
        rows = rows[np.argsort(-cols.prob[task][rows], kind="stable")]
        self.label = cols.label[task][rows]  # [M]
        self.prob = cols.prob[task][rows]  # [M]
        self.keys = {c: a[rows] for c, a in cols.keys.items()}  # each [M]

    def parts(self, key: str) -> dict[int, np.ndarray]:
        """``{code: rows of this view}`` for a key column (rows stay score-sorted)."""
        return _split(self.keys[key])

    def take(self, rows: np.ndarray | None, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(labels, scores, key column)`` of ``rows`` (``None`` = all rows)."""
        if rows is None:
            return self.label, self.prob, self.keys[key]
        return self.label[rows], self.prob[rows], self.keys[key][rows]


def _binary_metrics(
    view: _TaskView, rows: np.ndarray | None, ks: Sequence[int]
) -> dict[str, float]:
    """Every metric of one binary task on ``rows`` of its view (``None`` = all rows)."""
    y, p, users = view.take(rows, "user_id")
    requests = view.take(rows, "request_id")[2]
    uauc, gauc, n_users = grouped_auc(y, p, users)
    out = {
        "auc": auc(y, p),
        "uauc": uauc,
        "gauc": gauc,
        "logloss": logloss(y, p),
        "count": float(y.shape[0]),
        "pos_rate": float(y.mean()) if y.shape[0] else math.nan,
        "n_users": float(n_users),
    }
    out |= ranking_at_k(y, p, requests, ks)
    return out


def _regression_metrics(view: _TaskView, rows: np.ndarray | None) -> dict[str, float]:
    y, p, _ = view.take(rows, "user_id")
    return {"mse": mse(y, p), "count": float(y.shape[0])}


def _metrics(
    view: _TaskView, rows: np.ndarray | None, ks: Sequence[int], is_regression: bool
) -> dict[str, float]:
    if is_regression:
        return _regression_metrics(view, rows)
    return _binary_metrics(view, rows, ks)


def _hour_average(hourly: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean over hours of every metric where defined (sum for counts)."""
    out: dict[str, dict[str, float]] = {}
    for task in hourly[0]:
        out[task] = {}
        for metric in hourly[0][task]:
            values = np.array([h[task][metric] for h in hourly], dtype=np.float64)  # [H]
            defined = values[~np.isnan(values)]
            if metric in COUNT_METRICS:
                out[task][metric] = float(defined.sum())
            else:
                out[task][metric] = float(defined.mean()) if defined.size else math.nan
    return out


def evaluate(
    pred: pl.DataFrame,
    tasks: Sequence[str],
    ks: Sequence[int] = (1, 3, 5),
    *,
    regression: Sequence[str] = (),
    by_hour: bool = True,
    by_activity: bool = True,
    name: str = "",
) -> EvalResult:
    """Evaluate predictions on the whole test set, per test hour (+ hour-avg) and per
    user-activity group.

    Args:
        pred: the prediction frame (see the module docstring).
        tasks: binary tasks to evaluate (e.g. ``("ctr", "evtr", "gtr")``).
        ks: cut-offs of the top-K metrics.
        regression: regression targets scored with MSE (e.g. ``("stay_ms",)``).
        by_hour / by_activity: add the ``hour=H`` + ``hour-avg`` / ``activity=...`` slices.
        name: model name stored in ``meta["name"]``.

    Raises:
        DataValidationError: a column is missing, a key is null, a label is not 0/1 or a
            probability is outside [0, 1] on an observed row.
        ConfigError: no task, or a bad K.
    """
    if not tasks:
        raise ConfigError("evaluate() needs at least one task")
    if pred.height == 0:
        raise DataValidationError("prediction frame is empty")
    started = time.perf_counter()
    tasks, regression = list(tasks), list(regression)
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers, got {ks}")
    keys = required_columns([], (), by_hour, by_activity)
    cols = _Columns(pred, tasks, regression, keys)

    hours = sorted(_split(cols.keys["hour"])) if by_hour else []
    codes = set(_split(cols.keys["user_activity"])) if by_activity else set()
    activity = [c for c in (1, 2, 3, 0) if c in codes] + sorted(codes - {0, 1, 2, 3})
    names = [
        ALL,
        *([HOUR_AVG] if hours else []),
        *(hour_slice(h) for h in hours),
        *(activity_slice(c) for c in activity),
    ]
    slices: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names}
    empty = np.zeros(0, dtype=np.int64)
    for task in [*tasks, *regression]:
        view = _TaskView(cols, task)
        is_regression = task in regression
        slices[ALL][task] = _metrics(view, None, ks, is_regression)
        for key, slice_codes, slice_name in (
            ("hour", hours, hour_slice),
            ("user_activity", activity, activity_slice),
        ):
            parts = view.parts(key) if slice_codes else {}
            for code in slice_codes:
                rows = parts.get(code, empty)
                slices[slice_name(code)][task] = _metrics(view, rows, ks, is_regression)
    if hours:
        slices[HOUR_AVG] = _hour_average([slices[hour_slice(h)] for h in hours])

    elapsed = time.perf_counter() - started
    log.info(
        "evaluated %d rows, %d tasks, %d slices in %.2f s",
        pred.height,
        len(tasks),
        len(slices),
        elapsed,
    )
    meta = {"name": name, "n_rows": pred.height, "hours": hours, "seconds": round(elapsed, 3)}
    return EvalResult(tasks=tasks, ks=ks, slices=slices, regression=regression, meta=meta)
