"""Calibration measures on planted data (against brute-force references) and the report."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data.sim import measures
from liverank.data.sim.calibration import CalibrationReport, Metric

T0 = 1_746_403_200_000


def _rooms(n_rooms: int, n_ticks: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "live_id": np.arange(1, n_rooms + 1),
            "start_ts": np.full(n_rooms, T0),
            "end_ts": np.full(n_rooms, T0 + n_ticks * 30_000),
            "category": np.ones(n_rooms, dtype=np.int64),
        }
    )


def _enters(counts: np.ndarray) -> pl.DataFrame:
    """Enter events from a ``[rooms, ticks]`` count matrix."""
    room, tick = np.nonzero(counts)
    reps = counts[room, tick]
    return pl.DataFrame(
        {"live_id": np.repeat(room + 1, reps), "ts": T0 + np.repeat(tick, reps) * 30_000 + 7}
    )


def _reference_forecast(counts: np.ndarray) -> tuple[float, float]:
    last, mean = [], []
    for x in counts:
        h = len(x) // 2
        for k in range(h, len(x)):
            last.append(abs(x[k] - x[k - 1]))
            mean.append(abs(x[k] - x[:h].mean()))
    return float(np.mean(last)), float(np.mean(mean))


def test_forecastability_matches_reference_and_separates_regimes():
    rng = np.random.default_rng(0)
    iid = rng.poisson(0.5, size=(30, 80))
    regime = np.repeat(rng.random((30, 8)) < 0.3, 10, axis=1) * 2.5 + 0.05  # 5 min bursts
    bursty = rng.poisson(regime)
    for counts in (iid, bursty):
        got = measures.forecastability(_rooms(30, 80), _enters(counts))
        ref = _reference_forecast(counts)
        assert math.isclose(got["mae_last"], ref[0]) and math.isclose(got["mae_mean"], ref[1])
    assert measures.forecastability(_rooms(30, 80), _enters(iid))["ratio"] > 1.0
    assert measures.forecastability(_rooms(30, 80), _enters(bursty))["ratio"] < 0.8


def test_next_category_on_a_planted_cycle():
    # vertical 1: cat3 1 -> 2 -> 3 -> 1 ...; every room starts at a random point of the cycle
    rng = np.random.default_rng(0)
    rows = []
    for room in range(1, 41):
        first = rng.integers(0, 3)
        rows += [(room, T0 + room * 1000 + i, int((first + i) % 3) + 1) for i in range(10)]
    rp = pl.DataFrame(rows, schema=["live_id", "ts", "product_id"], orient="row")
    products = pl.DataFrame({"product_id": [1, 2, 3], "cat1": [1, 1, 1], "cat3": [1, 2, 3]})
    out = measures.next_category(rp, products, split_ts=T0 + 25_000)
    assert out["markov"] == 1.0 and 0.2 < out["baseline"] < 0.5


def _brute_swing(edges: set[tuple[int, int]], alpha: float) -> dict[tuple[int, int], float]:
    items: dict[int, set[int]] = {}
    for u, a in edges:
        items.setdefault(u, set()).add(a)
    authors = sorted({a for _, a in edges})
    sim = {}
    for i, j in itertools.combinations(authors, 2):
        users = [u for u, s in items.items() if i in s and j in s]
        total = sum(
            1 / (alpha + len(items[u] & items[v])) for u, v in itertools.combinations(users, 2)
        )
        if total > 0:
            sim[(i, j)] = total
    return sim


@settings(max_examples=40, deadline=None)
@given(st.sets(st.tuples(st.integers(1, 8), st.integers(1, 6)), min_size=1, max_size=30))
def test_swing_neighbours_match_brute_force(edges):
    gifts = pl.DataFrame(sorted(edges), schema=["user_id", "author_id"], orient="row")
    authors = pl.DataFrame({"author_id": np.arange(1, 7), "category": [1, 1, 2, 2, 3, 3]})
    got = measures.gift_graph(gifts, authors, alpha=1.0)
    sim = _brute_swing(edges, 1.0)
    gifted = {a for _, a in edges}
    neighbours = {a: {b for p in sim for b in p if a in p and b != a} for a in gifted}
    assert math.isclose(
        got["swing_neighbours_mean"], sum(map(len, neighbours.values())) / len(gifted)
    )
    assert math.isclose(
        got["swing_authors_share"], sum(1 for v in neighbours.values() if v) / len(gifted)
    )
    degrees = [len({a for u2, a in edges if u2 == u}) for u in {u for u, _ in edges}]
    assert math.isclose(got["authors_per_gifter_mean"], float(np.mean(degrees)))


def test_community_concentration():
    gifts = pl.DataFrame({"user_id": [1, 2, 3, 4, 4], "author_id": [10, 10, 11, 12, 10]})
    community = pl.DataFrame({"user_id": [1, 2, 3, 4], "community": [0, 0, 0, 1]})
    # user 1 and 2 share author 10 in community 0; users 3 and 4 gift alone
    assert measures.community_concentration(gifts, community) == 2 / 5


def test_cross_domain_and_r2():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 201), 5)
    cats = rng.integers(1, 6, size=len(users))
    enters = pl.DataFrame({"user_id": users, "category": cats})
    same = measures.cross_domain(enters, enters, 5)
    assert math.isclose(same["same_user"], 1.0) and same["gap"] > 0.3
    other = pl.DataFrame({"user_id": users, "category": rng.integers(1, 6, size=len(users))})
    assert abs(measures.cross_domain(enters, other, 5)["gap"]) < 0.05
    x = rng.standard_normal((2000, 4))
    assert (
        measures.modality_r2(
            x, x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.01 * rng.standard_normal(2000)
        )
        > 0.99
    )
    assert abs(measures.modality_r2(x, rng.standard_normal(2000))) < 0.02


def test_slate_skew_uniform_versus_biased():
    rng = np.random.default_rng(0)
    rooms = _rooms(20, 200)
    for biased in (False, True):
        p = np.linspace(3, 0.1, 20) if biased else np.ones(20)
        rows = []
        for q in range(3000):
            shown = rng.choice(20, size=4, replace=False, p=p / p.sum())
            rows += [(q + 1, T0 + q * 1000, int(r) + 1, pos) for pos, r in enumerate(shown)]
        imp = pl.DataFrame(rows, schema=["request_id", "ts", "live_id", "position"], orient="row")
        sk = measures.slate_skew(imp, rooms)
        if biased:
            assert sk["tv"] > 0.15
        else:
            assert sk["tv"] < 2 * sk["noise_tv"] + 0.01
        assert sk["rooms_on_air_mean"] == 20


def test_metric_targets_and_report_formats():
    assert Metric("a", 0.5, 0.1, 0.9).passed is True
    assert Metric("a", 0.05, 0.1, None).passed is False
    assert Metric("a", float("nan"), 0.1, None).passed is False
    assert Metric("a", 3.0).passed is None and Metric("a", 3.0).target == "-"
    rep = CalibrationReport("tiny", 0, {"highlights": False}, 1.5,
                            {"users": 3, "live_events": 2_000, "segments": 1_000},
                            [Metric("ctr", 0.07, 0.03, 0.15, "clicks", source="KuaiLive"),
                             Metric("x", float("nan"))])  # fmt: skip
    md = rep.to_markdown()
    assert "| ctr | 0.07 | 0.03 - 0.15 | yes | clicks | KuaiLive |" in md and "highlights" in md
    # the generation speed counts event rows only (not the 3 users)
    assert rep.generated_events == 3_000 and rep.events_per_second == 2_000
    assert "(3,000 events, 2k events/s)" in md
    data = json.loads(rep.to_json())
    assert data["passed"] is True and data["metrics"][1]["value"] is None
    assert data["events_per_second"] == 2_000 and data["metrics"][0]["source"] == "KuaiLive"
    assert rep.value("ctr") == 0.07


def test_tiny_calibration_meets_the_meaningful_targets(tiny):
    out, report = tiny
    for name in ("exposure_ratio", "ctr", "evtr_given_click", "lvtr_given_click", "ltr_given_click",
                 "cmtr_given_click", "gtr_given_click", "users_without_gift", "activity_high_low_ratio",
                 "next_cat3_gap", "cross_domain_gap", "visual_excitement_r2"):  # fmt: skip
        assert report.metric(name).passed, report.metric(name)
    assert (
        report.value("evtr_given_click")
        > report.value("lvtr_given_click")
        > report.value("gtr_given_click")
    )
    saved = json.loads((out / "calibration.json").read_text())
    assert {m["name"] for m in saved["metrics"]} == {m.name for m in report.metrics}
    assert (out / "calibration.md").read_text() == report.to_markdown()
