"""Behaviours located in time (World v2, ``timed_behaviours``): inhomogeneous Poisson events
inside visits, on the room's 30 s grid.

A visit ``[enter, exit)`` of room ``r`` covers the room ticks ``k0 .. k1``; each covered tick is
cut to the visit, ``[t0, t1) = [max(enter + 1, tick start), min(exit, tick end))``, so that every
event lies strictly inside its visit. For an event type with per-visit rate ``c_i`` (per minute,
propensities included), excitement weight ``w`` and warm-up ``T``, the count on the pair
``(visit i, tick k)`` is

    N_ik ~ Poisson( c_i * exp(w * (e_k - E_REF)) * (B(tau_1) - B(tau_0)) * D(tau_mid) ),
    B(tau) = tau - T * (1 - exp(-tau / T))           (minutes; B(tau) = tau when T = 0)
    D(tau) = (1 + tau / T_d)^-alpha                   (attention decay; 1 when alpha = 0)

(``tau`` = time since the enter at ``t0``, ``t1`` and the pair's midpoint): the hazard
``c_i exp(w (e_k - E_REF)) (1 - exp(-tau / T)) D(tau)`` follows the room's state, grows over the
first minutes of the visit and, for ``alpha > 0``, fades as the visit goes on.
Each event is placed uniformly in ``[t0, t1)``. The (visit, tick) pairs are built flat with
``np.repeat`` (no loop over visits) in chunks of at most ``max_pairs`` pairs.

Used by :mod:`live` (likes, comments, gifts) and by :mod:`shopping` (cart clicks, with a
per-pair rate that depends on the product on stage).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from liverank.data.sim.clock import TICK_MS
from liverank.data.sim.excitement import E_REF
from liverank.data.sim.rooms import Rooms

#: (visit, tick) pairs built at a time: 8 int64/float64 columns, ~64 MB
MAX_PAIRS = 1_000_000


@dataclass(frozen=True)
class VisitTicks:
    """Flat ``(visit, tick)`` pairs: every 30 s room tick a visit covers, cut to the visit."""

    visit: np.ndarray  # [P] index into the visits given to visit_ticks
    tick: np.ndarray  # [P] flat room tick (index into Rooms.excitement / Rooms.product)
    t0: np.ndarray  # [P] epoch ms, first ms of the pair (>= enter + 1)
    t1: np.ndarray  # [P] epoch ms, end of the pair, exclusive (<= exit)
    since0: np.ndarray  # [P] minutes from the enter to t0
    since1: np.ndarray  # [P] minutes from the enter to t1

    def __len__(self) -> int:
        return len(self.visit)


def visit_ticks(
    rooms: Rooms,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    max_pairs: int = MAX_PAIRS,
) -> Iterator[VisitTicks]:
    """The ``(visit, tick)`` pairs of the visits ``(room, enter, exit_)`` (arrays ``[n]``), in
    chunks of consecutive visits holding at most ``max_pairs`` pairs (a visit is never split).

    Pairs of zero length (a visit shorter than 2 ms) are dropped.
    """
    first = rooms.tick_of(room, enter + 1)  # [n] flat tick of the first ms inside the visit
    last = rooms.tick_of(room, np.maximum(exit_ - 1, enter + 1))  # [n]
    count = last - first + 1  # [n] ticks covered
    ends = np.cumsum(count)
    start = 0
    while start < len(room):
        stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + max_pairs, "right"))
        stop = max(stop, start + 1)
        yield _pairs(rooms, room, enter, exit_, first, count, start, stop)
        start = stop


def _pairs(
    rooms: Rooms,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    first: np.ndarray,
    count: np.ndarray,
    start: int,
    stop: int,
) -> VisitTicks:
    n = count[start:stop]
    visit = np.repeat(np.arange(start, stop), n)  # [P]
    tick = np.repeat(first[start:stop] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
    r = room[visit]
    tick_start = rooms.start[r] + (tick - rooms.offset[r]) * TICK_MS
    t0 = np.maximum(tick_start, enter[visit] + 1)
    t1 = np.minimum(tick_start + TICK_MS, exit_[visit])
    ok = t1 > t0
    visit, tick, t0, t1 = visit[ok], tick[ok], t0[ok], t1[ok]
    return VisitTicks(
        visit, tick, t0, t1, (t0 - enter[visit]) / 60_000, (t1 - enter[visit]) / 60_000
    )


def warmup_integral(tau: np.ndarray, warmup_min: float) -> np.ndarray:
    """``B(tau) = tau - T (1 - exp(-tau / T))``: the integral of ``1 - exp(-s / T)`` over
    ``[0, tau]`` (minutes); ``tau`` itself when ``T = 0``."""
    if warmup_min <= 0:
        return tau
    return tau - warmup_min * -np.expm1(-tau / warmup_min)


def intensity(
    pairs: VisitTicks,
    excitement: np.ndarray,
    rate: np.ndarray,
    weight: float,
    warmup_min: float,
    decay: float = 0.0,
    decay_min: float = 1.0,
) -> np.ndarray:
    """Expected count of each pair (``[P]``): ``rate`` per visit-minute (``[P]``, already
    indexed by pair) times ``exp(weight (e_tick - E_REF))`` times the warm-up integral, times
    the attention decay ``(1 + tau_mid / decay_min)^-decay`` at the pair's midpoint."""
    e = excitement[pairs.tick].astype(np.float64)
    b = warmup_integral(pairs.since1, warmup_min) - warmup_integral(pairs.since0, warmup_min)
    if decay > 0:
        b = b * (1 + 0.5 * (pairs.since0 + pairs.since1) / decay_min) ** -decay
    return rate * np.exp(weight * (e - E_REF)) * b


def poisson_times(
    rng: np.random.Generator, pairs: VisitTicks, lam: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``Poisson(lam)`` events on each pair, each uniform in the pair's ``[t0, t1)``.

    Returns ``(visit, ts)`` of the events (``[E]``, grouped by pair).
    """
    count = rng.poisson(lam)
    pair = np.repeat(np.arange(len(pairs)), count)
    span = pairs.t1[pair] - pairs.t0[pair]
    ts = pairs.t0[pair] + (rng.random(len(pair)) * span).astype(np.int64)
    return pairs.visit[pair], ts
