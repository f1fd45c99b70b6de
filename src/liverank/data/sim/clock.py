"""Time base of the simulator: the 30 s grid, days, and daily activity profiles (UTC hours)."""

from __future__ import annotations

import numpy as np

TICK_MS = 30_000  #: the 30 s grid of excitement, segments and room statistics
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
TICKS_PER_DAY = DAY_MS // TICK_MS

#: relative request intensity of users by hour of day (evening peak, night trough)
USER_HOURLY = np.array(
    [0.6, 0.35, 0.2, 0.12, 0.1, 0.12, 0.25, 0.45, 0.6, 0.65, 0.7, 0.8,
     0.9, 0.8, 0.75, 0.75, 0.8, 0.9, 1.0, 1.2, 1.4, 1.5, 1.35, 1.0],
)  # fmt: skip
#: relative intensity of broadcast starts by hour of day (streamers start before the peak)
START_HOURLY = np.array(
    [0.5, 0.3, 0.15, 0.1, 0.1, 0.15, 0.3, 0.5, 0.7, 0.8, 0.8, 0.8,
     0.9, 0.9, 0.8, 0.8, 0.9, 1.1, 1.4, 1.6, 1.6, 1.3, 0.9, 0.7],
)  # fmt: skip


def hour_probs(profile: np.ndarray) -> np.ndarray:
    """A 24-value profile normalised to probabilities."""
    return profile / profile.sum()


def sample_in_day(
    rng: np.random.Generator, n: int, day_start: int, profile: np.ndarray = USER_HOURLY
) -> np.ndarray:
    """``n`` epoch-ms times in the day starting at ``day_start``, distributed by ``profile``.

    Returns int64 ``[n]`` (unsorted).
    """
    hours = rng.choice(24, size=n, p=hour_probs(profile))
    return day_start + hours * HOUR_MS + rng.integers(0, HOUR_MS, size=n)
