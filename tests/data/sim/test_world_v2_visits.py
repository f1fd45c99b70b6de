"""World v2 (issue #13) points 2, 3 and 6: the visit-length mixture, behaviours located in time
and the gifting graph. Mechanism tests against references, then the direction of each switch
measured on the written tables of small dense worlds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data import io
from liverank.data.sim import SimConfig, measures
from liverank.data.sim.calibration import CalibrationContext
from liverank.data.sim.checks import behaviours as behaviour_checks
from liverank.data.sim.clock import TICK_MS
from liverank.data.sim.live import mixture_stay
from liverank.data.sim.rooms import Rooms
from liverank.data.sim.timed import (
    intensity,
    poisson_times,
    visit_ticks,
    warmup_integral,
)
from liverank.data.visits import reconstruct_visits
from liverank.stream.reporting import emit_rows

T0 = 1_746_403_200_000


def _rooms(n_ticks: list[int], excitement: np.ndarray | None = None) -> Rooms:
    n = np.array(n_ticks)
    offset = np.cumsum(n) - n
    start = T0 + np.arange(len(n)) * 3_600_000
    total = int(n.sum())
    e = np.linspace(0, 2, total).astype(np.float32) if excitement is None else excitement
    return Rooms(
        live_id=np.arange(1, len(n) + 1), author=np.arange(len(n)), start=start,
        end=start + n * TICK_MS - 7, category=np.ones(len(n), dtype=np.int64),
        type_idx=np.zeros(len(n), dtype=np.int64), offset=offset, n_ticks=n, excitement=e,
        product=np.full(total, -1), intro=np.zeros(total, dtype=bool),
        cum_excitement=np.concatenate([[0.0], np.cumsum(e, dtype=np.float64)]),
    )  # fmt: skip


# ------------------------------------------------------------------------ timed machinery
visits_st = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 20 * TICK_MS), st.integers(1, 8 * TICK_MS)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(visits=visits_st, max_pairs=st.integers(1, 30))
def test_visit_ticks_partition_each_visit_on_the_grid(visits, max_pairs):
    rooms = _rooms([25, 30, 40])
    room = np.array([v[0] for v in visits])
    enter = rooms.start[room] + np.array([v[1] for v in visits])
    exit_ = np.minimum(enter + np.array([v[2] for v in visits]), rooms.end[room])
    keep = exit_ > enter
    room, enter, exit_ = room[keep], enter[keep], exit_[keep]
    chunks = list(visit_ticks(rooms, room, enter, exit_, max_pairs=max_pairs))
    visit = np.concatenate([c.visit for c in chunks])
    assert np.all(np.diff(visit) >= 0)  # chunks of consecutive visits, never split
    for i in range(len(room)):
        parts = [(c.tick[c.visit == i], c.t0[c.visit == i], c.t1[c.visit == i]) for c in chunks]
        tick = np.concatenate([p[0] for p in parts])
        t0 = np.concatenate([p[1] for p in parts])
        t1 = np.concatenate([p[2] for p in parts])
        if exit_[i] - enter[i] < 2:
            assert len(tick) == 0
            continue
        # [enter + 1, exit) cut at the tick boundaries, each piece inside its own tick
        assert t0[0] == enter[i] + 1 and t1[-1] == exit_[i]
        assert (t0[1:] == t1[:-1]).all() and (t1 > t0).all()
        k = tick - rooms.offset[room[i]]
        assert ((t0 - rooms.start[room[i]]) // TICK_MS == k).all()
        assert ((t1 - 1 - rooms.start[room[i]]) // TICK_MS == k).all()


def test_warmup_integral_matches_numeric_integration():
    tau = np.linspace(0, 40, 2001)
    for warmup in (0.0, 0.5, 10.0):
        h = 1 - np.exp(-tau / warmup) if warmup else np.ones_like(tau)
        numeric = np.concatenate([[0], np.cumsum((h[1:] + h[:-1]) / 2 * np.diff(tau))])
        np.testing.assert_allclose(warmup_integral(tau, warmup), numeric, atol=1e-4)


def test_poisson_times_follow_the_excitement_and_stay_inside_visits():
    """Events on a long visit through a room whose excitement alternates 0 / 2 every tick:
    the count ratio of hot to cold ticks is exp(w * 2); every event is strictly inside."""
    e = np.tile([0.0, 2.0], 50).astype(np.float32)
    rooms = _rooms([100], e)
    n = 400
    room = np.zeros(n, dtype=np.int64)
    enter = np.full(n, T0 + 5_000)
    exit_ = np.full(n, T0 + 99 * TICK_MS)
    rng = np.random.default_rng(0)
    ts_all = []
    for pairs in visit_ticks(rooms, room, enter, exit_):
        lam = intensity(pairs, rooms.excitement, np.full(len(pairs), 0.05), 0.8, 0.0)
        visit, ts = poisson_times(rng, pairs, lam)
        assert ((ts > enter[visit]) & (ts < exit_[visit])).all()
        ts_all.append(ts)
    ts = np.concatenate(ts_all)
    hot = ((ts - T0) // TICK_MS) % 2 == 1
    ratio = hot.sum() / (~hot).sum()
    assert abs(np.log(ratio) - 1.6) < 0.1, ratio


def test_warmup_delays_and_decay_front_loads_events():
    rooms = _rooms([200], np.full(200, 0.5, dtype=np.float32))
    n = 2000
    room, enter = np.zeros(n, dtype=np.int64), np.full(n, T0)
    exit_ = enter + 60 * 60_000
    pairs = next(visit_ticks(rooms, room, enter, exit_, max_pairs=10**7))
    rate = np.full(len(pairs), 0.05)
    flat = intensity(pairs, rooms.excitement, rate, 1.0, 0.0)
    warm = intensity(pairs, rooms.excitement, rate, 1.0, 10.0)
    fade = intensity(pairs, rooms.excitement, rate, 1.0, 0.0, decay=0.7, decay_min=1.0)

    def mean_time(lam: np.ndarray) -> float:
        return float((lam * pairs.since0).sum() / lam.sum())

    assert mean_time(fade) < mean_time(flat) < mean_time(warm)
    one = pairs.visit == 0
    assert flat[one].sum() == pytest.approx(0.05 * 60, rel=1e-6)  # rate * minutes at E_REF


# ------------------------------------------------------------------------ the stay mixture
def test_mixture_stay_directions():
    cfg = SimConfig.preset("tiny")
    n = 20_000
    rng = np.random.default_rng

    def stays(aff=0.0, fav=False, exc=0.5, **over) -> np.ndarray:
        c = cfg.model_copy(update=over)
        return mixture_stay(
            c, np.full(n, aff), np.full(n, fav), np.full(n, exc), np.full(n, 2), rng(1)
        )

    base = stays()
    assert np.mean(base < 3_000) > 0.3  # bounces
    assert np.median(base) < 60_000 < np.quantile(base, 0.9)  # a short median, a long tail
    scaled = stays(stay_scale=3.0)
    ratio = scaled / base
    engaged = np.isclose(ratio, 3.0)
    # engaged stays are stretched, bounces and browses are left alone (same draws)
    assert (engaged | (ratio == 1.0)).all() and 0.1 < engaged.mean() < 0.6
    assert np.median(base[engaged]) > 120_000 > 30_000 > np.median(base[~engaged])
    for more in (stays(aff=0.3), stays(fav=True), stays(exc=1.5)):
        assert np.mean(more > 600_000) > np.mean(base > 600_000) + 0.02


# ------------------------------------------------------------------------ switches, measured
def _context(out) -> CalibrationContext:
    """What the calibration checks read, for every user of a small world."""
    meta = io.read_meta(out)
    imp = io.read_table(out, "live_impressions")
    events, rooms = io.read_table(out, "live_events"), io.read_table(out, "rooms")
    v = reconstruct_visits(imp, events, rooms, meta.long_view_ms)
    cfg = SimConfig.build(meta.extra["config"])
    authors, users = io.read_table(out, "authors"), io.read_table(out, "users")
    return CalibrationContext(out, cfg, {}, rooms, authors, users, imp, events, v)


def _clicks(out) -> pl.DataFrame:
    return _context(out).visits.filter("clicked")


def _metrics(out) -> dict[str, float]:
    return {m.name: m.value for m in behaviour_checks.checks(_context(out))}


def test_visit_mixture_gives_long_stays_and_stay_scale_stretches_them(variant):
    stay = {}
    for name, over in (
        ("off", {"visit_mixture": False}),
        ("on", {}),
        ("scaled", {"stay_scale": 3.0}),
    ):
        clicks = _clicks(variant(**over))
        stay[name] = clicks["stay_ms"].to_numpy() / 1000
    assert np.mean(stay["on"] > 1800) > 0.01 > np.mean(stay["off"] > 1800) * 5, stay
    nonbounce = {k: np.median(v[v >= 3]) for k, v in stay.items()}
    assert nonbounce["on"] > 120 > nonbounce["off"], nonbounce
    assert np.median(stay["on"]) < 60  # the median stays short
    assert np.mean(stay["scaled"]) > 1.5 * np.mean(stay["on"])
    assert np.mean(stay["scaled"] > 1800) > np.mean(stay["on"] > 1800) + 0.01


def test_timed_behaviours_follow_the_room_and_come_later(variant):
    on, off = _metrics(variant()), _metrics(variant(timed_behaviours=False))
    assert on["gift_excitement_lift"] > 0.2 and on["interaction_excitement_lift"] > 0.1, on
    assert abs(off["gift_excitement_lift"]) < 0.1, off  # few gifts on a one-day world
    assert abs(off["interaction_excitement_lift"]) < 0.03, off
    # the same behaviours per visit, moved inside it: gifts later (warm-up), likes earlier (fade)
    on_v, off_v = _clicks(variant()), _clicks(variant(timed_behaviours=False))
    for task in ("ltr", "cmtr"):
        assert abs(on_v[task].mean() - off_v[task].mean()) < 0.2 * on_v[task].mean(), task
    assert on["gift_late_share"] > off["gift_late_share"] + 0.1, (on, off)
    assert on["like_late_share"] < off["like_late_share"] - 0.05, (on, off)
    assert on["first_gift_delay_p50_s"] > off["first_gift_delay_p50_s"], (on, off)
    # slow rows come with long visits (visit_mixture), wherever the behaviours sit in them
    assert min(on["fast_slow_slow_per_click"], off["fast_slow_slow_per_click"]) > 0.03, (on, off)
    short = _metrics(variant(visit_mixture=False))
    assert short["fast_slow_slow_per_click"] < 0.5 * on["fast_slow_slow_per_click"], short


def test_slow_rows_of_the_calibration_are_those_of_the_reporting_code(variant):
    ctx = _context(variant())
    rows = emit_rows(ctx.visits, "fast_slow")
    got = {m.name: m.value for m in behaviour_checks.checks(ctx)}
    slow = int(rows["slow"].sum())
    assert slow > 50
    assert got["fast_slow_slow_per_fast"] == pytest.approx(slow / (rows.height - slow))


GIFTY = {"gifter_share": (0.3, 0.5, 0.8)}


def test_gifting_communities_give_swing_neighbours(variant):
    share = {}
    for name, on in (("on", True), ("off", False)):
        out = variant(**GIFTY, gifting_communities=on)
        gifts = io.read_table(out, "live_events").filter(pl.col("event") == "gift")
        share[name] = measures.gift_graph(gifts, io.read_table(out, "authors"))
    assert share["on"]["swing_authors_share"] > 0.5, share
    assert share["off"]["swing_authors_share"] < 0.5 * share["on"]["swing_authors_share"], share
