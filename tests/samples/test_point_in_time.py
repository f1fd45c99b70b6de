"""Point-in-time queries (features.snapshot) against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.features.snapshot import SortedHistory, last_n_before


def brute_force(hist_user, hist_ts, item, query_user, query_ts, n):
    """Per query: the items of the last n rows with ts < query ts (ties: later row = newer)."""
    out, lengths = np.zeros((len(query_user), n), dtype=np.int64), []
    for q, (u, t) in enumerate(zip(query_user, query_ts, strict=True)):
        rows = [i for i in range(len(hist_user)) if hist_user[i] == u and hist_ts[i] < t]
        rows.sort(key=lambda i: (hist_ts[i], i))
        last = rows[::-1][:n]
        out[q, : len(last)] = item[last]
        lengths.append(len(last))
    return out, np.array(lengths)


histories = st.integers(0, 40).flatmap(
    lambda h: st.tuples(
        st.lists(st.integers(1, 4), min_size=h, max_size=h),  # users
        st.lists(st.integers(0, 10), min_size=h, max_size=h),  # ts: small range -> many ties
    )
)
queries = st.lists(st.tuples(st.integers(0, 5), st.integers(-2, 13)), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(hist=histories, q=queries, n=st.integers(1, 6))
def test_last_n_before_matches_brute_force(hist, q, n) -> None:
    hist_user, hist_ts = (np.array(x, dtype=np.int64) for x in hist)
    item = np.arange(1, len(hist_user) + 1) * 10  # unique, non-zero
    query_user, query_ts = (np.array(x, dtype=np.int64) for x in zip(*q, strict=True))
    cols, lengths = last_n_before(hist_user, hist_ts, {"item": item}, query_user, query_ts, n)
    expected, exp_len = brute_force(hist_user, hist_ts, item, query_user, query_ts, n)
    np.testing.assert_array_equal(cols["item"], expected)
    np.testing.assert_array_equal(lengths, exp_len)
    assert cols["item"].shape == (len(q), n) and cols["ts"].shape == (len(q), n)
    # no returned row is at or after its query
    real = np.arange(n)[None, :] < lengths[:, None]
    assert (cols["ts"][real] < np.broadcast_to(query_ts[:, None], real.shape)[real]).all()


@settings(max_examples=100, deadline=None)
@given(hist=histories, cuts=st.lists(st.integers(0, 11), max_size=3), n=st.integers(1, 4))
def test_bounded_buffer_equals_full_history(hist, cuts, n) -> None:
    """concat + keep_last over time chunks answers like the full history (the builder's loop)."""
    hist_user, hist_ts = (np.array(x, dtype=np.int64) for x in hist)
    item = np.arange(1, len(hist_user) + 1)
    full = SortedHistory.build(hist_user, hist_ts, {"item": item})
    bounds = [-1, *sorted(set(cuts)), 100]
    buf = SortedHistory.empty({"item": np.int64})
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sel = (hist_ts >= lo) & (hist_ts < hi)
        buf = buf.concat(SortedHistory.build(hist_user[sel], hist_ts[sel], {"item": item[sel]}))
        # queries at or after every appended row (ts in [hi - 1, hi + 1]) see the same answer
        qu = np.repeat(np.arange(0, 6), 3)
        qt = np.tile(np.array([hi - 1, hi, hi + 1]), 6)
        qt = np.maximum(qt, hist_ts[sel].max(initial=-1))
        got = buf.last_n_before(qu, qt, n)
        ref = full.last_n_before(qu, np.minimum(qt, hi), n)  # full history cut at hi
        np.testing.assert_array_equal(got.columns["item"], ref.columns["item"])
        buf = buf.keep_last(n)
        assert np.all(np.bincount(buf.user, minlength=6) <= n)


def test_empty_history_and_unknown_users() -> None:
    empty = SortedHistory.empty({"a": np.int64})
    snap = empty.last_n_before(np.array([1, 2]), np.array([5, 6]), 3)
    assert snap.columns["a"].shape == (2, 3) and not snap.columns["a"].any()
    assert not snap.lengths.any()
    h = SortedHistory.build(np.array([5]), np.array([1]), {"a": np.array([9])})
    snap = h.last_n_before(np.array([1, 5, 9]), np.array([10, 10, 10]), 2)
    np.testing.assert_array_equal(snap.lengths, [0, 1, 0])
    np.testing.assert_array_equal(snap.mask, [[False, False], [True, False], [False, False]])


def test_rejects_bad_arguments() -> None:
    h = SortedHistory.build(np.array([1]), np.array([1]), {"a": np.array([1])})
    with pytest.raises(ValueError, match="n must be"):
        h.last_n_before(np.array([1]), np.array([2]), 0)
    with pytest.raises(ValueError, match="rows"):
        SortedHistory.build(np.array([1, 2]), np.array([1, 2]), {"a": np.array([1])})


def test_the_sort_order_is_lexsorts_ties_included() -> None:
    """The one-key stable argsort orders rows exactly as ``np.lexsort((ts, user))`` (equal
    ``(user, ts)`` in input order), on random rows, on two sorted runs (``concat``) and when the
    key would overflow (then lexsort itself)."""
    from liverank.features.snapshot import _stable_order

    rng = np.random.default_rng(0)
    user, ts = rng.integers(-5, 50, 20_000), rng.integers(0, 300, 20_000)  # many ties
    np.testing.assert_array_equal(_stable_order(user, ts), np.lexsort((ts, user)))
    runs = np.concatenate([np.lexsort((ts[:9000], user[:9000])), 9000 + np.arange(11_000)])
    u, t = user[runs], ts[runs]
    np.testing.assert_array_equal(_stable_order(u, t), np.lexsort((t, u)))
    wide_user = np.array([0, 2**40, 0, 2**40])
    wide_ts = np.array([2**30, 0, 0, 2**30])
    np.testing.assert_array_equal(_stable_order(wide_user, wide_ts), [2, 0, 1, 3])
