"""Calibration of the visits phenomenon (issue #13): not measured yet."""

from __future__ import annotations

from liverank.data.sim.calibration import CalibrationContext, Metric


def checks(ctx: CalibrationContext) -> list[Metric]:
    return []
