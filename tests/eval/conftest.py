"""Shared fixtures: a small synthetic prediction frame with a planted signal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest


def make_pred(
    n_requests: int = 400,
    slate: int = 6,
    n_users: int = 60,
    hours: tuple[int, ...] = (100, 101, 102),
    tasks: tuple[str, ...] = ("ctr", "gtr"),
    seed: int = 0,
    signal: float = 1.5,
) -> pl.DataFrame:
    """Requests of ``slate`` rows; each request has one user and one hour; labels follow the
    scores (``signal`` = logit slope), so AUC > 0.5."""
    rng = np.random.default_rng(seed)
    req_user = rng.integers(1, n_users + 1, n_requests)  # [R]
    req_hour = rng.choice(np.array(hours), n_requests)  # [R]
    n = n_requests * slate
    frame: dict[str, np.ndarray] = {
        "user_id": np.repeat(req_user, slate),
        "request_id": np.repeat(np.arange(1000, 1000 + n_requests), slate),
        "hour": np.repeat(req_hour, slate),
        "user_activity": np.repeat(req_user % 4, slate),
    }
    for i, task in enumerate(tasks):
        z = rng.normal(size=n)
        p_true = 1.0 / (1.0 + np.exp(-(signal * z - 0.5 - i)))
        frame[task] = (rng.random(n) < p_true).astype(np.float32)
        frame[f"mask_{task}"] = np.ones(n, dtype=np.float32)
        # rounded predictions create ties on purpose
        frame[f"p_{task}"] = np.round(p_true, 2).astype(np.float32)
    return pl.DataFrame(frame)


@pytest.fixture
def pred_factory() -> Callable[..., pl.DataFrame]:
    return make_pred
