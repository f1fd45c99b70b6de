"""Calibration checks of the World v2 phenomena (issue #13), one module per phenomenon.

Each module exposes ``checks(ctx: CalibrationContext) -> list[Metric]``: the measured values
of its phenomenon with their targets (stated for the switch's value: a target that holds with
the phenomenon on, and one that shows it gone with the switch off) and each target's
``source``. :func:`liverank.data.sim.calibration.calibrate` runs them after the original checks.
"""

from __future__ import annotations

from collections.abc import Callable

from liverank.data.sim.calibration import CalibrationContext, Metric
from liverank.data.sim.checks import behaviours, periodic, shopping, traffic, visits

PHENOMENON_CHECKS: tuple[Callable[[CalibrationContext], list[Metric]], ...] = (
    traffic.checks,
    visits.checks,
    behaviours.checks,
    periodic.checks,
    shopping.checks,
)
