"""Input checking shared by every metric: 1-D arrays, equal lengths, finite values, label masks.

Metrics never drop rows silently: a row is ignored only when its mask says the label was not
observed. Anything else that cannot be scored (NaN scores, labels outside {0, 1}, probabilities
outside [0, 1]) raises :class:`~liverank.errors.DataValidationError` naming the offending rows.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from liverank.errors import DataValidationError


def as_1d(values: ArrayLike, name: str, dtype: type = np.float64) -> np.ndarray:
    """``values`` as a 1-D array of ``dtype``; raises if it is not one-dimensional."""
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise DataValidationError(f"expected a 1-D array, got shape {arr.shape}", column=name)
    return arr


def _first_bad(bad: np.ndarray, values: np.ndarray, message: str, name: str) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)[:5]
        raise DataValidationError(
            f"{message} ({int(bad.sum())} rows)",
            column=name,
            rows=rows.tolist(),
            examples=values[rows].tolist(),
        )


def check_finite(values: np.ndarray, name: str) -> None:
    """Raise if any value is NaN or infinite."""
    _first_bad(~np.isfinite(values), values, "values must be finite", name)


def check_binary(labels: np.ndarray, name: str) -> None:
    """Raise unless every label is exactly 0 or 1."""
    _first_bad((labels != 0) & (labels != 1), labels, "labels must be 0 or 1", name)


def check_probability(probs: np.ndarray, name: str) -> None:
    """Raise unless every value is a finite probability in [0, 1]."""
    _first_bad(
        ~np.isfinite(probs) | (probs < 0) | (probs > 1),
        probs,
        "probabilities must lie in [0, 1]",
        name,
    )


def observed(mask: ArrayLike | None, n: int, name: str = "mask") -> np.ndarray | None:
    """Boolean row selector from a label mask (non-zero = observed); ``None`` keeps every row."""
    if mask is None:
        return None
    m = as_1d(mask, name)
    if m.shape[0] != n:
        raise DataValidationError(f"has {m.shape[0]} rows, expected {n}", column=name)
    check_finite(m, name)
    return m != 0


def select(
    *columns: tuple[ArrayLike, str, type],
    mask: ArrayLike | None = None,
) -> list[np.ndarray]:
    """Convert ``(values, name, dtype)`` triples to 1-D arrays of one length and apply ``mask``.

    Returns the arrays restricted to the observed rows, in the order given.
    """
    arrays = [as_1d(values, name, dtype) for values, name, dtype in columns]
    n = arrays[0].shape[0]
    for arr, (_, name, _) in zip(arrays, columns, strict=True):
        if arr.shape[0] != n:
            raise DataValidationError(
                f"has {arr.shape[0]} rows, expected {n} (as '{columns[0][1]}')", column=name
            )
    keep = observed(mask, n)
    if keep is None:
        return arrays
    return [arr[keep] for arr in arrays]


def binary_scored(
    labels: ArrayLike,
    scores: ArrayLike,
    mask: ArrayLike | None = None,
    groups: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Observed ``(labels, scores, groups)`` after checking labels are 0/1 and scores finite."""
    cols: list[tuple[ArrayLike, str, type]] = [
        (labels, "labels", np.float64),
        (scores, "scores", np.float64),
    ]
    if groups is not None:
        cols.append((groups, "groups", np.int64))
    arrays = select(*cols, mask=mask)
    check_binary(arrays[0], "labels")
    check_finite(arrays[1], "scores")
    return arrays[0], arrays[1], arrays[2] if groups is not None else None
