"""Sortable int64 keys of ``(user, room, time)`` for vectorised "first event at or after".

The visit rule (:mod:`liverank.data.visits`) asks, for millions of impressions at once, "the
first event of type X of the same (user, room) at or after time t". With one int64 key per row
that orders rows exactly as the tuple ``(user_id, live_id, ts)`` does, that question is a
``np.searchsorted`` over the sorted keys of the events of type X, followed by a check that the
found event belongs to the same pair: no join, no per-pair Python.

:func:`pair_time_keys` builds the keys over *all* rows that will be compared (impressions and
events concatenated), so keys from both sides live in one order. It packs the raw values when
they fit in 62 bits (``pair * span + (ts - ts_min)``: the usual case, ids below ~2^31 and
spans of weeks) and falls back to dense ranks (``np.unique``) of the pairs, then of the times,
when they do not: the order is the same either way, only the key values differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_LIMIT = 1 << 62  # keys stay below this (and products of two ranges are checked against it)


@dataclass(frozen=True)
class PairTimeKeys:
    """Per row: ``pair`` (int64 code of ``(user, room)``; equal iff the pairs are equal) and
    ``key`` (int64, ordered as ``(user, room, ts)``; equal iff all three are)."""

    pair: np.ndarray  # [N] int64
    key: np.ndarray  # [N] int64


def _dense(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ranks ``[N]`` of ``values`` (order-preserving) and the number of distinct ones."""
    uniq, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64, copy=False), len(uniq)


def pair_codes(user: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, int]:
    """Order-preserving int64 codes of ``(user, live)`` ``[N]`` and an exclusive upper bound."""
    if len(user) == 0:
        return np.zeros(0, dtype=np.int64), 1
    lo = min(int(user.min()), int(live.min()))
    n_live = int(live.max()) + 1
    if lo >= 0 and (int(user.max()) + 1) * n_live < _LIMIT:
        return user * n_live + live, (int(user.max()) + 1) * n_live
    ru, nu = _dense(user)
    rl, nl = _dense(live)
    return ru * nl + rl, nu * nl  # nu * nl <= N^2: fits for any N that fits in memory


def pair_time_keys(user: np.ndarray, live: np.ndarray, ts: np.ndarray) -> PairTimeKeys:
    """Keys ordered as ``(user, live, ts)`` for the rows given (all ``[N]`` int64).

    Rows compared with each other must be keyed in one call (concatenate, then split).
    """
    pair, n_pairs = pair_codes(user, live)
    if len(ts) == 0:
        return PairTimeKeys(pair, pair.copy())
    t0 = int(ts.min())
    span = int(ts.max()) - t0 + 1
    if n_pairs * span >= _LIMIT:
        ranked, n_pairs = _dense(pair)
        if n_pairs * span >= _LIMIT:  # both ranked: n_pairs * n_times <= N^2
            t_rank, n_times = _dense(ts)
            return PairTimeKeys(pair, ranked * n_times + t_rank)
        return PairTimeKeys(pair, ranked * span + (ts - t0))
    return PairTimeKeys(pair, pair * span + (ts - t0))


def pair_order(key: np.ndarray, request: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Permutation ``[N]`` sorting impressions by ``(user, room, ts, request_id, position)``,
    from their :func:`pair_time_keys` ``key`` and their request / position columns.

    ``key`` orders the first three; ties (one pair shown twice at one ms) are rare, so a sort
    by ``key`` alone is tried first and the three-key sort runs only when it finds one.
    """
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    if len(key) and (ordered[1:] == ordered[:-1]).any():
        order = np.lexsort((position, request, key))
    return order


@dataclass(frozen=True)
class SortedEvents:
    """Events of one type sorted by key, searched by :meth:`first_at_or_after`."""

    key: np.ndarray  # [E] sorted
    pair: np.ndarray  # [E]
    ts: np.ndarray  # [E]

    @classmethod
    def of(cls, keys: PairTimeKeys, ts: np.ndarray, select: np.ndarray) -> SortedEvents:
        """The rows of ``select`` (bool ``[N]``) sorted by key."""
        key = keys.key[select]
        order = np.argsort(key, kind="stable")
        return cls(key[order], keys.pair[select][order], ts[select][order])

    def first_at_or_after(self, key: np.ndarray, pair: np.ndarray) -> Match:
        """For each query ``(pair, key)`` ``[Q]``: the first event of the same pair whose key is
        ``>= key`` (an event at the query's own time counts)."""
        n, q = len(self.key), len(key)
        if n == 0:
            zeros = np.zeros(q, dtype=np.int64)
            return Match(np.zeros(q, dtype=bool), zeros, zeros)
        idx = np.searchsorted(self.key, key, side="left")  # [Q]
        safe = np.minimum(idx, n - 1)
        found = (idx < n) & (self.pair[safe] == pair)  # [Q]
        return Match(found, np.where(found, self.ts[safe], 0), np.where(found, self.key[safe], 0))


@dataclass(frozen=True)
class Match:
    """Result of :meth:`SortedEvents.first_at_or_after`, per query (``[Q]`` each)."""

    found: np.ndarray  # bool
    ts: np.ndarray  # int64, the event's time (0 where not found)
    key: np.ndarray  # int64, the event's key (0 where not found)
