"""Simulated datasets shared by the simulator tests (generated once per session, in tmp dirs).

* ``tiny``: the ``tiny`` preset with its calibration report;
* ``variant(name, **overrides)``: a small custom platform, generated once per distinct
  (name, overrides) and cached for the session; the configurations are dense enough (many
  requests on few rooms) for the switch tests to see their effect in one simulated day.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liverank.data.sim import CalibrationReport, SimConfig, generate, simulate

#: a dense one-day platform: few rooms on air, many requests, few videos
DENSE: dict[str, Any] = {
    "n_users": 1500,
    "n_authors": 80,
    "n_days": 1,
    "sessions_per_author_day": 2.0,
    "session_median_min": 150.0,
    "slate_max": 6,
    "live_requests_per_day": (8.0, 20.0, 45.0),
    "video_exposure_ratio": 0.5,
    "videos_per_author": 4.0,
    "products_per_cat3": 3,
    "community_size": 60,
    "segment_dim": 8,
}


@pytest.fixture(scope="session")
def dense() -> dict[str, Any]:
    return dict(DENSE)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CalibrationReport]:
    out = tmp_path_factory.mktemp("sim-tiny")
    report = simulate(SimConfig.preset("tiny", seed=0), out, progress=False)
    return out, report


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    cache: dict[str, Path] = {}

    def make(base: dict[str, Any] | None = None, **overrides: Any) -> Path:
        values = {**(DENSE if base is None else base), **overrides}
        key = repr(sorted(values.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("sim-variant")
            generate(SimConfig.build(values), out, progress=False)
            cache[key] = out
        return cache[key]

    return make
