"""Paired differences with confidence intervals and a verdict (issue #14).

A claim compares a candidate with a named baseline on the same units (world, model seed and,
where a metric is per hour, hour): ``d_i = candidate_i - baseline_i``. The interval is the
Student-t interval of the mean paired difference,

    mean(d) +- t_{(1 + confidence) / 2, n - 1} * sd(d) / sqrt(n),

and the verdict, fixed before any run, is

* ``effect``: the interval excludes 0 (``direction`` says which way);
* ``no effect``: the interval lies inside ``[-margin, +margin]``, the smallest difference that
  would matter (equivalence);
* ``inconclusive``: neither, or fewer than two pairs.

Pairs with a missing value (NaN) on either side are left out and counted in ``n_missing``.

Example::

    >>> cand = [0.712, 0.721, 0.703, 0.716, 0.709]  # e.g. GAUC of 5 (world, seed) runs
    >>> base = [0.701, 0.709, 0.694, 0.705, 0.699]
    >>> d = paired_delta(cand, base, margin=0.002)
    >>> d.verdict, d.direction, round(d.ci_low, 4), round(d.ci_high, 4)
    ('effect', '+', 0.0092, 0.012)
    >>> paired_delta([0.71, 0.72, 0.70], [0.70, 0.70, 0.69], margin=0.002).verdict
    'inconclusive'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from liverank.errors import ConfigError

VERDICTS: tuple[str, ...] = ("effect", "no effect", "inconclusive")


@dataclass(frozen=True)
class PairedDelta:
    """The paired comparison of a candidate with its baseline (module doc)."""

    n: int  # pairs used
    n_missing: int  # pairs left out for a NaN on either side
    mean: float  # mean of candidate - baseline
    sd: float  # standard deviation of the differences (ddof 1)
    ci_low: float
    ci_high: float
    confidence: float
    margin: float
    verdict: str  # one of VERDICTS
    direction: str  # "+", "-" or "" (no effect / inconclusive)

    def to_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def paired_delta(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    margin: float,
    confidence: float = 0.95,
) -> PairedDelta:
    """Compare ``candidate`` with ``baseline``, aligned pair by pair (module doc).

    Raises:
        ConfigError: the sequences differ in length, ``margin`` < 0, or ``confidence`` is not
            in (0, 1).
    """
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape or c.ndim != 1:
        raise ConfigError(
            f"paired_delta needs two 1-D sequences of equal length, got {c.shape} and {b.shape}"
        )
    if margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    ok = np.isfinite(c) & np.isfinite(b)
    d = (c - b)[ok]  # [n]
    n = int(len(d))
    if n < 2:
        mean = float(d.mean()) if n else math.nan
        return PairedDelta(
            n, int((~ok).sum()), mean, math.nan, math.nan, math.nan, confidence, margin,
            "inconclusive", "",
        )  # fmt: skip
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if low > 0 or high < 0:
        verdict, direction = "effect", "+" if mean > 0 else "-"
    elif -margin <= low and high <= margin:
        verdict, direction = "no effect", ""
    else:
        verdict, direction = "inconclusive", ""
    return PairedDelta(
        n, int((~ok).sum()), mean, sd, low, high, confidence, margin, verdict, direction
    )
