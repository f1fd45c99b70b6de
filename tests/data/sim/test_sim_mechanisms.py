"""Unit tests of the simulator's mechanisms against naive reference implementations."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data import io
from liverank.data.sim import SimConfig
from liverank.data.sim.clock import TICK_MS
from liverank.data.sim.excitement import add_episodes, cycles
from liverank.data.sim.familiarity import Familiarity
from liverank.data.sim.gifting import GIFT_PRICES, _top_per_row, gift_values
from liverank.data.sim.population import make_authors, make_users, make_world
from liverank.data.sim.products import category_sequences, make_catalog
from liverank.data.sim.rooms import flat_ranges, schedule
from liverank.data.sim.slates import make_requests
from liverank.data.sim.writer import EventSink

pairs = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4), st.floats(0, 5)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(pairs, max_size=4),
    probe=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 4)), max_size=20),
)
def test_familiarity_matches_a_dict(batches, probe):
    fam, ref = Familiarity(n_authors=5), {}
    for batch in batches:
        u = np.array([b[0] for b in batch], dtype=np.int64)
        a = np.array([b[1] for b in batch], dtype=np.int64)
        x = np.array([b[2] for b in batch])
        fam.add(u, a, x)
        for ui, ai, xi in batch:
            ref[(ui, ai)] = ref.get((ui, ai), 0.0) + xi
    assert np.all(np.diff(fam.keys) > 0)
    if probe:
        u = np.array([p[0] for p in probe])
        a = np.array([p[1] for p in probe])
        np.testing.assert_allclose(fam.get(u, a), [ref.get(p, 0.0) for p in probe])
        # the dense [users, authors] lookup of the policy, with repeated users and authors
        dense = fam.dense(u, a)
        want = [[ref.get((ui, aj), 0.0) for aj in a] for ui in u]
        np.testing.assert_allclose(dense, np.array(want).reshape(len(u), len(a)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4), st.integers(0, 4), st.integers(1, 4),
                          st.floats(0.1, 2.0), st.integers(0, 40)), max_size=8))  # fmt: skip
def test_add_episodes_matches_a_loop(episodes):
    n = 40
    ref = np.zeros(n)
    for start, r, h, d, amp, limit in episodes:
        for pos in range(r + h + d):
            level = (
                (pos + 1) / (r + 1)
                if pos < r
                else 1.0
                if pos < r + h
                else 1 - (pos - r - h + 1) / (d + 1)
            )
            if start + pos < min(limit, n):
                ref[start + pos] += level * amp
    cols = [np.array([e[i] for e in episodes], dtype=int if i != 4 else float) for i in range(6)]
    start, ramp, hold, decay, amp, limit = cols
    out = add_episodes(n, start, np.minimum(limit, n), ramp, hold, decay, amp)
    np.testing.assert_allclose(out, ref, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=10), st.integers(0, 10_000))
def test_cycles_partition_each_room(n_ticks, seed):
    n = np.array(n_ticks)
    cyc, pos, length = cycles(np.random.default_rng(seed), n, 4, 9)
    assert len(cyc) == n.sum()
    room = np.repeat(np.arange(len(n)), n)
    # a cycle never crosses rooms, starts at position 0 and counts up
    assert np.all(np.diff(cyc) >= 0)
    for c in np.unique(cyc):
        idx = np.flatnonzero(cyc == c)
        assert len(np.unique(room[idx])) == 1
        assert pos[idx].tolist() == list(range(len(idx)))
        assert (length[idx] == len(idx)).all() and len(idx) <= 9
    firsts = np.flatnonzero(np.concatenate([[True], np.diff(room) != 0]))
    assert (pos[firsts] == 0).all()


def test_flat_ranges():
    out = flat_ranges(np.array([5, 0, 20]), np.array([2, 3, 0]))
    assert out.tolist() == [5, 6, 0, 1, 2]


def test_top_per_row_matches_argsort():
    rng = np.random.default_rng(0)
    score = rng.random((7, 12))
    count = rng.integers(1, 5, size=7)
    rows, cols = _top_per_row(score, count)
    for i in range(7):
        assert cols[rows == i].tolist() == np.argsort(-score[i])[: count[i]].tolist()


def test_schedule_has_no_overlaps_and_stays_in_the_period():
    cfg = SimConfig.preset("small", n_days=3)
    world = make_world(cfg)
    author, start, end = schedule(cfg, make_authors(cfg, world))
    assert np.all(np.diff(start) >= 0)
    assert (start % TICK_MS == 0).all() and (end > start).all()
    assert start.min() >= cfg.start_ts and end.max() < cfg.end_ts
    order = np.lexsort((start, author))
    a, s, e = author[order], start[order], end[order]
    same = a[1:] == a[:-1]
    assert (s[1:][same] >= e[:-1][same]).all()

    # evening peak: more rooms on air at 21:00 than at 05:00 UTC
    def on_air(hour: int) -> int:
        t = cfg.start_ts + 86_400_000 + hour * 3_600_000
        return int(((start <= t) & (end > t)).sum())

    assert on_air(21) > 2 * on_air(5)


def test_requests_know_the_users_next_request():
    cfg = SimConfig.preset("tiny")
    req = make_requests(cfg, make_users(cfg, make_world(cfg)))
    assert np.all(np.diff(req.ts) >= 0) and len(np.unique(req.request_id)) == len(req.ts)
    for u in np.unique(req.user)[:20]:
        ts = req.ts[req.user == u]
        nxt = req.next_ts[req.user == u]
        assert nxt[:-1].tolist() == ts[1:].tolist() and nxt[-1] == np.iinfo(np.int64).max


@pytest.mark.parametrize("style", [True, False])
def test_category_chains(style):
    cfg = SimConfig.preset("tiny", consistent_style=style)
    catalog = make_catalog(cfg, make_world(cfg))
    n_rooms, length = 400, 30
    vertical = np.arange(n_rooms) % cfg.n_verticals
    seq = category_sequences(
        cfg, catalog, np.random.default_rng(0), vertical, np.full(n_rooms, length)
    ).reshape(n_rooms, length)
    assert (catalog.cat3_cat1[seq] == vertical[:, None]).all()  # inside the vertical
    prev, nxt = seq[:, :-1].ravel(), seq[:, 1:].ravel()
    n3 = catalog.n_cat3
    counts = np.zeros((n3, n3))
    np.add.at(counts, (prev, nxt), 1)
    emp = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    seen = counts.sum(axis=1) > 200
    if style:  # transitions follow the chain
        np.testing.assert_allclose(emp[seen], catalog.transition[seen], atol=0.08)
    else:  # i.i.d.: the next category ignores the previous one
        stat = catalog.stationary[None, :] * (catalog.transition[seen] > 0)
        np.testing.assert_allclose(emp[seen], stat / stat.sum(axis=1, keepdims=True), atol=0.08)


def test_gift_values_are_positive_and_heavy_tailed():
    v = gift_values(np.random.default_rng(0), 100_000)
    assert (v > 0).all() and set(np.unique(v)) <= set(GIFT_PRICES)
    top = np.sort(v)[-1_000:].sum() / v.sum()  # top 1 % of gifts
    assert top > 0.1 and np.median(v) <= 5


def test_event_sink_sorts_across_days_and_merges_parts(tmp_path):
    sink = EventSink(tmp_path, "product_events", codes=None)
    day = 86_400_000
    rows = [
        (5, 1, 1, "click"),
        (day + 3, 2, 1, "cart"),
        (1, 3, 2, "buy"),
        (2 * day + 1, 4, 2, "click"),
    ]
    sink.add(pl.DataFrame(rows[:2], schema=["ts", "user_id", "product_id", "event"], orient="row"))
    sink.add(pl.DataFrame(rows[2:3], schema=["ts", "user_id", "product_id", "event"], orient="row"))
    sink.flush(day)  # writes ts 1 and 5, carries day + 3
    sink.add(pl.DataFrame(rows[3:], schema=["ts", "user_id", "product_id", "event"], orient="row"))
    sink.flush(2 * day)
    assert sink.close() == 4
    out = io.read_table(tmp_path, "product_events")
    assert out["ts"].to_list() == [1, 5, day + 3, 2 * day + 1]
    assert out["user_id"].to_list() == [3, 1, 2, 4]
    assert out.schema["user_id"] == pl.Int64()
    assert not (tmp_path / ".parts" / "product_events").exists()
