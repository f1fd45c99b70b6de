"""Acceptance of issue #17: the statistic forecaster beats the last-value forecast on a world
with highlights on.

The issue asks for the evidence world; simulating it takes minutes, too long for the suite, so
this test uses the ``small`` preset (highlights on by default, ~25 s to simulate here) and the
evidence-world comparison is ``experiments/foresight_stats.yaml`` (10 paired units,
docs/results.md). Margin from a run (2026-12-05, 2 shared cores, this exact setting: stride 4,
3 epochs, seed 0): test-day standardised MSE 0.631 (forecaster) against 1.131 (last value) and
0.652 (window mean); the test asks for at least 20 % below the last value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from liverank.foresight.statistics import ForecastConfig, train_and_evaluate


@pytest.mark.slow
def test_the_forecaster_beats_the_last_value_with_highlights_on(tmp_path: Path) -> None:
    from liverank.data.sim import SimConfig, simulate

    cfg = SimConfig.preset("small", seed=0)
    assert cfg.highlights
    simulate(cfg, tmp_path / "w", progress=False)
    report = train_and_evaluate(
        tmp_path / "w", None, ForecastConfig(stride=4, epochs=3, seed=0), progress=False
    )
    mse = {name: err["mse"] for name, err in report["test"].items()}
    assert mse["foresighter"] < 0.8 * mse["last_value"], mse
