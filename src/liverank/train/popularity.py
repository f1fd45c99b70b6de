"""Popularity baseline: every task's probability is the candidate author's smoothed training rate.

    p_t(author) = (positives_t(author) + m * global_rate_t) / (labelled_t(author) + m)

It uses no user information, so it is the floor every personalised model must clear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class PopularityBaseline:
    def __init__(self, tasks: Sequence[str], smoothing: float = 20.0) -> None:
        self.tasks = list(tasks)
        self.smoothing = smoothing
        self.rates: dict[str, np.ndarray] = {}
        self.global_rate: dict[str, float] = {}

    def fit(self, columns: Mapping[str, np.ndarray], key: str = "author_id") -> PopularityBaseline:
        ids = np.asarray(columns[key], dtype=np.int64)  # [N]
        size = int(ids.max()) + 1 if ids.size else 1
        for t in self.tasks:
            y = np.asarray(columns[t], dtype=np.float64)
            m = np.asarray(columns.get(f"mask_{t}", np.ones_like(y)), dtype=np.float64)
            pos = np.bincount(ids, weights=y * m, minlength=size)
            cnt = np.bincount(ids, weights=m, minlength=size)
            g = float((y * m).sum() / max(m.sum(), 1.0))
            self.global_rate[t] = g
            self.rates[t] = (pos + self.smoothing * g) / (cnt + self.smoothing)
        self.key = key
        return self

    def predict_proba(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(columns[self.key], dtype=np.int64)
        out = {}
        for t in self.tasks:
            table = self.rates[t]
            known = (ids >= 0) & (ids < table.size)
            p = np.full(ids.shape, self.global_rate[t])
            p[known] = table[ids[known]]
            out[t] = p
        return out
