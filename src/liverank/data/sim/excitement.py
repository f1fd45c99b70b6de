"""Highlight moments (phenomenon 3): a latent excitement process per room on the 30 s grid.

Every process below is generated for all rooms of one author type at once, on their ticks
concatenated room after room (``n_ticks[r]`` ticks for room ``r``); no loop over ticks.

Shapes (``e`` is roughly in [0, 2.5]; the effects use ``e - E_REF``):

* talent_show (dancing / PK battles): a dancing floor of 0.3 plus *episodes* that start with
  probability 1/20 per tick; an episode ramps up linearly over ``R ~ U{3..6}`` ticks to an
  amplitude ``A ~ U(0.8, 1.6)``, holds for ``P ~ U{4..10}`` ticks and decays over ``D ~ U{2..4}``.
* shopping: product *cycles* of ``m ~ U{8..20}`` ticks: introduce (first 40 %, level 0.35),
  countdown (next 40 %, linear ramp 0.35 -> 1.0), release (last 20 %, ``A ~ U(1.0, 1.8)``).
* game: *matches* of ``U{20..40}`` ticks (tension ``0.2 + 0.8 (pos / len)^2``, clutch spikes of
  +0.8 for 2 ticks with probability 0.06 per tick) separated by breaks of ``U{2..6}`` ticks at 0.1.
* chat: a slow mood (AR(1), phi = 0.97, sd 0.1 around 0.4) plus topic episodes (probability
  1/40 per tick, ramp 2-4, hold 3-6, decay 3-6, amplitude 0.6-1.2).

Every type adds AR(1) noise (phi = 0.8, innovation sd 0.08). The ramps and the persistence make
the peaks *partly foreseeable* from the room's recent statistics (LiveForesighter). With
``highlights`` off every tick of a room gets its type's mean level (a constant).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

#: reference level; click / stay / interaction effects are proportional to ``e - E_REF``
E_REF = 0.5
E_MAX = 2.5


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary-scale AR(1) path of length ``n`` (``[n]``)."""
    eps = rng.normal(0.0, sd, size=n)
    eps[:1] /= np.sqrt(1 - phi**2)  # start from the stationary distribution
    return lfilter([1.0], [1.0, -phi], eps)


def add_episodes(
    n: int,
    start: np.ndarray,
    limit: np.ndarray,
    ramp: np.ndarray,
    hold: np.ndarray,
    decay: np.ndarray,
    amp: np.ndarray,
) -> np.ndarray:
    """Sum of ramp-hold-decay episodes on a flat timeline of ``n`` ticks.

    Episode ``i`` starts at flat tick ``start[i]`` and is cut at ``limit[i]`` (its room's end).
    Returns ``[n]``.
    """
    length = ramp + hold + decay
    ep = np.repeat(np.arange(len(start)), length)  # [sum length]
    pos = np.arange(len(ep)) - np.repeat(np.cumsum(length) - length, length)
    r, h, d = ramp[ep], hold[ep], decay[ep]
    level = np.where(
        pos < r, (pos + 1) / (r + 1), np.where(pos < r + h, 1.0, 1.0 - (pos - r - h + 1) / (d + 1))
    )
    idx = start[ep] + pos
    keep = idx < limit[ep]
    return np.bincount(idx[keep], weights=(level * amp[ep])[keep], minlength=n)[:n]


def cycles(
    rng: np.random.Generator, n_ticks: np.ndarray, low: int, high: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each room's ticks into consecutive cycles of ``U{low..high}`` ticks.

    Returns, over the concatenated ticks of the given rooms (``[sum n_ticks]``): the cycle id
    (global, increasing), the position in the cycle and the cycle's length. Cycle ids of a room
    are consecutive and start at the room's first tick.
    """
    n_max = n_ticks // low + 1  # enough cycles to cover every room
    room = np.repeat(np.arange(len(n_ticks)), n_max)
    length = rng.integers(low, high + 1, size=len(room))
    end = np.cumsum(length)
    first = np.repeat(np.cumsum(n_max) - n_max, n_max)
    start_in_room = end - length - np.concatenate([[0], end])[first]
    keep = start_in_room < n_ticks[room]
    room, length, start_in_room = room[keep], length[keep], start_in_room[keep]
    # clip the last cycle of each room to the room's end
    length = np.minimum(length, n_ticks[room] - start_in_room)
    cyc = np.repeat(np.arange(len(room)), length)
    pos = np.arange(len(cyc)) - np.repeat(np.cumsum(length) - length, length)
    return cyc, pos, length[cyc]


def talent_show(rng: np.random.Generator, n_ticks: np.ndarray) -> np.ndarray:
    total = int(n_ticks.sum())
    local_end = np.repeat(np.cumsum(n_ticks), n_ticks)  # end (exclusive) of each tick's room
    start = np.flatnonzero(rng.random(total) < 1 / 20)
    k = len(start)
    e = 0.3 + add_episodes(
        total, start, local_end[start], rng.integers(3, 7, k), rng.integers(4, 11, k),
        rng.integers(2, 5, k), rng.uniform(0.8, 1.6, k),
    )  # fmt: skip
    return e


def shopping(rng: np.random.Generator, n_ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Excitement and the cycle id of every tick (a new product is introduced per cycle)."""
    cyc, pos, length = cycles(rng, n_ticks, 8, 20)
    frac = pos / length
    amp = rng.uniform(1.0, 1.8, size=int(cyc.max(initial=-1)) + 1)[cyc]
    e = np.where(frac < 0.4, 0.35, np.where(frac < 0.8, 0.35 + 0.65 * (frac - 0.4) / 0.4, amp))
    return e, cyc


def game(rng: np.random.Generator, n_ticks: np.ndarray) -> np.ndarray:
    cyc, pos, length = cycles(rng, n_ticks, 22, 46)
    n_cyc = int(cyc.max(initial=-1)) + 1
    brk = rng.integers(2, 7, size=n_cyc)[cyc]  # break at the end of each cycle
    match_len = np.maximum(length - brk, 1)
    in_match = pos < match_len
    tension = 0.2 + 0.8 * (pos / match_len) ** 2
    clutch = (rng.random(len(cyc)) < 0.06).astype(float)
    clutch = 0.8 * np.minimum(clutch + np.concatenate([[0.0], clutch[:-1]]), 1.0)
    return np.where(in_match, tension + clutch, 0.1)


def chat(rng: np.random.Generator, n_ticks: np.ndarray) -> np.ndarray:
    total = int(n_ticks.sum())
    local_end = np.repeat(np.cumsum(n_ticks), n_ticks)
    start = np.flatnonzero(rng.random(total) < 1 / 40)
    k = len(start)
    topics = add_episodes(
        total, start, local_end[start], rng.integers(2, 5, k), rng.integers(3, 7, k),
        rng.integers(3, 7, k), rng.uniform(0.6, 1.2, k),
    )  # fmt: skip
    return 0.4 + ar1(rng, total, 0.97, 0.1) + topics


def finish(rng: np.random.Generator, shape: np.ndarray, on: bool) -> np.ndarray:
    """Add AR(1) noise and clip; with ``on`` False return the constant mean level."""
    e = np.clip(shape + ar1(rng, len(shape), 0.8, 0.08), 0.0, E_MAX)
    if not on:
        e = np.full_like(e, e.mean() if len(e) else E_REF)
    return e.astype(np.float32)
