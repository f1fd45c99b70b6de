"""Sortable (user, room, time) keys: same order as the tuples, whatever the id and time ranges."""

from __future__ import annotations

import numpy as np
import pytest

from liverank.data.pair_keys import SortedEvents, pair_order, pair_time_keys

CASES = {  # (lowest id, id range, time span)
    "packed": (0, 50, 10_000),  # small ids and span: raw values packed into one int64
    "ranked_pairs": (0, 2**40, 10_000),  # ids too large to pack: dense pair ranks
    "ranked_both": (0, 2**40, 2**61),  # and a span too large for the ranks: time ranks too
    "negative_ids": (-(2**62), 2**62, 2**40),
}


def _rows(rng: np.random.Generator, low: int, id_range: int, span: int, n: int = 400):
    users = rng.choice(rng.integers(low, low + id_range, 12), n)
    lives = rng.choice(rng.integers(low, low + id_range, 6), n)
    ts = rng.choice(rng.integers(0, span, 30), n)  # repeated values: ties on every level
    return users.astype(np.int64), lives.astype(np.int64), ts.astype(np.int64)


@pytest.mark.parametrize("case", list(CASES))
def test_keys_order_rows_as_tuples(case: str) -> None:
    rng = np.random.default_rng(0)
    users, lives, ts = _rows(rng, *CASES[case])
    keys = pair_time_keys(users, lives, ts)
    tuples = list(zip(users.tolist(), lives.tolist(), ts.tolist(), strict=True))
    for i in range(0, len(tuples), 7):
        for j in range(len(tuples)):
            assert (keys.key[i] < keys.key[j]) == (tuples[i] < tuples[j])
            assert (keys.key[i] == keys.key[j]) == (tuples[i] == tuples[j])
            assert (keys.pair[i] == keys.pair[j]) == (tuples[i][:2] == tuples[j][:2])


@pytest.mark.parametrize("case", list(CASES))
def test_first_at_or_after_matches_a_scan(case: str) -> None:
    rng = np.random.default_rng(1)
    users, lives, ts = _rows(rng, *CASES[case])
    keys = pair_time_keys(users, lives, ts)
    is_event = rng.random(len(ts)) < 0.5
    events = SortedEvents.of(keys, ts, is_event)
    match = events.first_at_or_after(keys.key, keys.pair)
    for q in range(len(ts)):
        later = [
            t
            for u, v, t, e in zip(users, lives, ts, is_event, strict=True)
            if e and (u, v) == (users[q], lives[q]) and t >= ts[q]
        ]
        assert bool(match.found[q]) == bool(later)
        if later:
            assert match.ts[q] == min(later)


def test_pair_order_breaks_ties_by_request_and_position() -> None:
    users = np.array([1, 1, 1, 0], dtype=np.int64)
    lives = np.array([2, 2, 2, 5], dtype=np.int64)
    ts = np.array([7, 7, 3, 9], dtype=np.int64)
    request = np.array([9, 4, 1, 0], dtype=np.int64)
    position = np.zeros(4, dtype=np.int64)
    keys = pair_time_keys(users, lives, ts)
    assert pair_order(keys.key, request, position).tolist() == [3, 2, 1, 0]


def test_empty_inputs() -> None:
    empty = np.zeros(0, dtype=np.int64)
    keys = pair_time_keys(empty, empty, empty)
    assert len(keys.key) == 0
    match = SortedEvents.of(keys, empty, np.zeros(0, dtype=bool)).first_at_or_after(
        np.array([5]), np.array([1])
    )
    assert not match.found.any()
