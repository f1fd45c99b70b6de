"""Periodic interests (phenomenon 12, FARM): a user's taste alternates between two interests.

Every user has two interests ``A_u`` and ``B_u``: two distinct category centres drawn from
``softmax(4 u^L . T_c)`` (Gumbel top-2, so both are categories the user already likes). The
weight on ``B`` follows a slow drift plus a fast square-wave alternation, with per-user phases:

    w_u(t) = a_slow sin(2 pi t / P_slow + phi_u) + a_fast sq(2 pi t / P_fast + psi_u)  in [-1, 1]
    u^D(t) = normalise( u^D + w_u(t) * (strength / 2) * (T_B - T_A) )

(``sq = sign(sin)``; ``P_slow = periodic_slow_days``, ``P_fast = periodic_fast_min``,
``a_fast = periodic_fast_share``, ``a_slow = 1 - a_fast``, ``strength = periodic_strength``).
The live and short-video interests share one clock (the same ``A, B`` and phases), so the
cross-domain consistency stays; with ``cross_domain_interest`` off the video domain gets its own
``A, B`` and phases (from its own interest), so the domains still share nothing. A user's
behaviour sequence then carries the drift at low frequencies and the alternation at high ones,
the split FARM's DFT filter makes. With ``periodic_interests`` off the interest is ``u^D``
itself; ``A, B`` and the phases are drawn either way (common random numbers) and written to
``sim_truth/users.parquet`` for the calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverank.data.sim.config import SimConfig

_KAPPA = 4.0  # sharpness of the draw of A and B around the user's interest
_TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class Wave:
    """The alternation of one domain's interest between ``A`` and ``B`` (all users)."""

    axis: np.ndarray  # [U, K] (strength / 2) * (T_B - T_A)
    cat_a: np.ndarray  # [U] category code of interest A
    cat_b: np.ndarray  # [U] category code of interest B
    phase_slow: np.ndarray  # [U] radians
    phase_fast: np.ndarray  # [U] radians
    period_slow_ms: float
    period_fast_ms: float
    amp_slow: float
    amp_fast: float
    on: bool

    def slow(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The slow drift ``sin(2 pi t / P_slow + phi_u)`` at ``ts`` (``[N]``)."""
        cycle = np.mod(ts, self.period_slow_ms) / self.period_slow_ms
        return np.sin(_TWO_PI * cycle + self.phase_slow[user])

    def fast(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The fast alternation, +1 or -1 (``[N]``)."""
        # the fractional part first, so epoch-ms times keep their precision;
        # sin(2 pi x) >= 0 exactly when x mod 1 <= 1/2
        cycle = np.mod(ts, self.period_fast_ms) / self.period_fast_ms
        return np.where(np.mod(cycle + self.phase_fast[user] / _TWO_PI, 1.0) <= 0.5, 1.0, -1.0)

    def value(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``w_u(t)`` in [-1, 1] (``[N]``): > 0 leans to ``B``, < 0 to ``A``."""
        return self.amp_slow * self.slow(user, ts) + self.amp_fast * self.fast(user, ts)

    def interest_at(self, base: np.ndarray, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``u^D(t)`` of ``user`` at ``ts`` from the static interests ``base`` (``[N, K]``)."""
        if not self.on:
            return base[user]
        x = base[user] + self.value(user, ts)[:, None] * self.axis[user]  # [N, K]
        return x / np.maximum(np.sqrt(np.einsum("nk,nk->n", x, x)), 1e-12)[:, None]


def make_wave(
    cfg: SimConfig, centres: np.ndarray, interest: np.ndarray, rng: np.random.Generator
) -> Wave:
    """Draw ``A``, ``B`` and the phases of every user around ``interest`` (``[U, K]``)."""
    n = len(interest)
    key = _KAPPA * interest @ centres.T + rng.gumbel(size=(n, len(centres)))  # [U, C]
    top = np.argpartition(-key, 1, axis=1)[:, :2]  # two distinct categories (0-based)
    a, b = top[:, 0], top[:, 1]
    phase_slow = rng.uniform(0.0, _TWO_PI, size=n)
    phase_fast = rng.uniform(0.0, _TWO_PI, size=n)
    return Wave(
        axis=(cfg.periodic_strength / 2) * (centres[b] - centres[a]),
        cat_a=a + 1,
        cat_b=b + 1,
        phase_slow=phase_slow,
        phase_fast=phase_fast,
        period_slow_ms=cfg.periodic_slow_days * 86_400_000.0,
        period_fast_ms=cfg.periodic_fast_min * 60_000.0,
        amp_slow=1.0 - cfg.periodic_fast_share,
        amp_fast=cfg.periodic_fast_share,
        on=cfg.periodic_interests,
    )
