"""Highlight onsets, reaction delays and the frozen probe of liverank.eval.reaction."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data.loader import SampleSet
from liverank.errors import ConfigError
from liverank.eval.reaction import (
    CANDIDATE_FIELDS,
    ReactionProbe,
    find_onsets,
    reaction_delays,
    rise_curve,
    summarize_reactions,
)
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map

MIN = 60_000


def _series(onset_ts: int, values: dict[int, float], onset_id: int) -> pl.DataFrame:
    """Values at ``onset_ts + m minutes`` for each key m."""
    return pl.DataFrame(
        {
            "onset_id": [onset_id] * len(values),
            "ts": [onset_ts + m * MIN for m in values],
            "value": list(values.values()),
        }
    )


def test_delays_on_a_hand_made_series() -> None:
    t = 100 * MIN
    base = {-5: 0.10, -4: 0.12, -3: 0.08, -2: 0.10, -1: 0.10}  # mean 0.10 -> threshold 0.11
    series = pl.concat(
        [
            # rises above 0.11 two minutes after the onset (0.11 itself is not above)
            _series(t, {**base, -6: 5.0, 0: 0.105, 1: 0.11, 2: 0.115, 3: 0.2}, 0),
            _series(t, {**base, 0: 0.1, 5: 0.109, 15: 0.1}, 1),  # never: censored
            _series(t, {**base, 14: 0.1, 16: 0.5}, 2),  # only after 15 min: censored
            _series(t, {0: 0.5, 1: 0.6}, 3),  # no value before the onset: no baseline
            _series(t, {-1: 0.10, 0: 0.2}, 4),  # reacts at once (delay 0)
        ]
    )
    onsets = pl.DataFrame({"onset_id": [0, 1, 2, 3, 4], "onset_ts": [t] * 5})
    d = reaction_delays(series, onsets, margin=0.10, baseline_ms=5 * MIN, censor_ms=15 * MIN)
    assert d["baseline"].to_list()[:3] == pytest.approx([0.10, 0.10, 0.10])  # -6 min ignored
    assert d["baseline"][3] is None
    assert d["delay_ms"].to_list() == [2 * MIN, None, None, None, 0]
    assert d["reacted"].to_list() == [True, False, False, False, True]
    s = summarize_reactions(d)
    assert s["n_onsets"] == 4  # onset 3 has no baseline
    assert s["share_reacting"] == 0.5
    assert np.isnan(s["median_delay_s"])  # median of (0, 120, inf, inf) is inf: undefined
    assert s["median_delay_reacting_s"] == pytest.approx(60.0)


def test_median_counts_censored_onsets_as_never() -> None:
    onsets = pl.DataFrame({"onset_id": [0, 1, 2], "onset_ts": [0, 0, 0]})
    d = onsets.with_columns(
        pl.Series("baseline", [0.1, 0.1, 0.1]),
        pl.Series("delay_ms", [60_000, 180_000, None], dtype=pl.Int64),
    )
    s = summarize_reactions(d)
    assert s["median_delay_s"] == 180.0  # (60, 180, inf) -> 180
    assert s["share_reacting"] == pytest.approx(2 / 3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.01, 1.0), min_size=1, max_size=30),
    st.integers(-8, 4),
    st.floats(0.0, 0.5),
)
def test_delays_match_a_loop_reference(values: list[float], start: int, margin: float) -> None:
    t = 50 * MIN
    series = pl.DataFrame(
        {
            "onset_id": [0] * len(values),
            "ts": [t + (start + i) * MIN for i in range(len(values))],
            "value": values,
        }
    )
    onsets = pl.DataFrame({"onset_id": [0], "onset_ts": [t]})
    d = reaction_delays(series, onsets, margin, 5 * MIN, 15 * MIN)
    pre = [v for i, v in enumerate(values) if -5 <= start + i < 0]
    if not pre:
        assert d["baseline"][0] is None and d["delay_ms"][0] is None
        return
    base = sum(pre) / len(pre)
    want = None
    for i, v in enumerate(values):
        m = start + i
        if 0 <= m <= 15 and v > base * (1 + margin):
            want = m * MIN
            break
    assert d["delay_ms"][0] == want


def test_rejects_bad_parameters() -> None:
    empty = pl.DataFrame(schema={"onset_id": pl.Int64, "ts": pl.Int64, "value": pl.Float64})
    with pytest.raises(ConfigError):
        reaction_delays(empty, pl.DataFrame({"onset_id": [0], "onset_ts": [0]}), margin=-1)
    with pytest.raises(ConfigError):
        find_onsets(pl.DataFrame({"live_id": [1], "ts": [0], "excitement": [0.1]}), 0.5, 0.9)


def test_find_onsets_on_hand_made_ticks() -> None:
    tick = 30_000
    calm = [0.3] * 10
    rooms = {
        1: [*calm, 0.5, 1.1, 1.3, 1.4, 0.9, 0.4, 1.2],  # onset at tick 11; tick 16: mean 0.68
        2: [1.2] * 10 + [0.9, 1.3],  # never calm before: no onset
        3: [0.3] * 5 + [1.2],  # crosses with only 5 ticks of history: no full baseline
        4: [*calm, 1.0],  # exactly at ``high`` counts
    }
    frames = [
        pl.DataFrame(
            {
                "live_id": [r] * len(e),
                "ts": [10_000 * r + k * tick for k in range(len(e))],
                "excitement": e,
            }
        )
        for r, e in rooms.items()
    ]
    onsets = find_onsets(pl.concat(frames), high=1.0, low=0.6, baseline_ms=5 * MIN, tick_ms=tick)
    assert onsets["live_id"].to_list() == [1, 4]
    assert onsets["onset_ts"].to_list() == [10_000 + 11 * tick, 40_000 + 10 * tick]


def _eval_set(n: int = 400) -> SampleSet:
    fm = synthetic_feature_map()
    (batch,) = synthetic_batches(fm, 1, n, seed=4)
    return SampleSet({k: v.numpy() for k, v in batch.items()}, fm)


class _StepModel:
    """A fake model: p_ctr = 0.1 * drift(now), doubled for room ``live_id`` from ``switch_ts``.

    ``drift`` (a rise of every room alike, 5 % a minute) is what the control batch removes.
    """

    def __init__(self, switch_ts: int, live_id: int, drift: bool) -> None:
        self.now = 0
        self.switch_ts, self.live_id, self.drift = switch_ts, live_id, drift
        self.sizes: list[int] = []

    def predict_proba(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.sizes.append(batch["user_id"].shape[0])
        jump = (batch["live_id"] == self.live_id) & (self.now >= self.switch_ts)
        level = 1.0 + 0.05 * (self.now - self.switch_ts) / MIN if self.drift else 1.0
        return {"ctr": (0.1 + 0.1 * jump.double()) * level}


def _probe_run(drift: bool) -> tuple[ReactionProbe, _StepModel, SampleSet, int, int]:
    ev = _eval_set()
    ts, live = ev["ts"], ev["live_id"]
    target, onset_ts = int(live[200]), int(ts[300])
    onsets = pl.DataFrame({"live_id": [target], "onset_ts": [onset_ts]})
    probe = ReactionProbe.build(ev, onsets, n_users=8, seed=0, max_onsets=None, n_control_rooms=4)
    assert probe.control is not None and target not in probe.control["live_id"]
    model = _StepModel(onset_ts + 3 * MIN, target, drift)
    for t0 in range(onset_ts - 10 * MIN, onset_ts + 20 * MIN, MIN):
        model.now = t0
        probe(t0, model)  # type: ignore[arg-type]
    return probe, model, ev, target, onset_ts


def test_probe_rows_and_recorded_delays() -> None:
    probe, model, ev, target, onset_ts = _probe_run(drift=False)
    ts, live = ev["ts"], ev["live_id"]
    assert len(probe.probe) == 8
    # candidate side = the room's last eval impression before the onset
    room_row = int(np.flatnonzero((live == target) & (ts <= onset_ts))[-1])
    for f in CANDIDATE_FIELDS:
        assert np.all(probe.probe[f] == ev[f][room_row])
    # user side = each probe user's last row before the baseline period (or their first row)
    for i, u in enumerate(probe.probe["user_id"]):
        mine = np.flatnonzero(ev["user_id"] == u)
        before = mine[ts[mine] <= onset_ts - probe.baseline_ms]
        row = before[-1] if before.size else mine[0]
        np.testing.assert_array_equal(probe.probe["live_seq_author"][i], ev["live_seq_author"][row])
        assert probe.probe["user_age"][i] == ev["user_age"][row]
    # scored only while the onset is in range; delay = first scoring at or after the switch
    series = probe.series()
    assert series["ts"].min() == onset_ts - 5 * MIN and series["ts"].max() == onset_ts + 15 * MIN
    assert set(model.sizes) == {8, 8 * 4}  # probe rows, control rows
    d = probe.delays(margin=0.5)
    assert d["delay_ms"].to_list() == [3 * MIN]
    assert summarize_reactions(d)["share_reacting"] == 1.0


def test_control_batch_removes_a_drift_common_to_all_rooms() -> None:
    probe, *_ = _probe_run(drift=True)
    # raw: the drift alone (levels 0.6 .. 0.8 in the baseline, mean 0.7; 0.9 at 1 min) crosses
    # +25 % before the room's own jump at 3 min
    assert probe.delays(margin=0.25, normalised=False)["delay_ms"].to_list() == [1 * MIN]
    # normalised by the control rooms: only the room's own jump counts
    assert probe.delays(margin=0.25)["delay_ms"].to_list() == [3 * MIN]
    series = probe.series()
    np.testing.assert_allclose(series["value"], series["raw"] / series["control"])


def test_probe_keeps_at_most_max_onsets_after_the_warm_up() -> None:
    ev = _eval_set()
    live = np.unique(ev["live_id"])[:30]
    onsets = pl.DataFrame({"live_id": live, "onset_ts": ev["ts"][np.arange(30) * 10]})
    probe = ReactionProbe.build(
        ev, onsets, n_users=4, max_onsets=5, after_ts=int(ev["ts"][50]), seed=1
    )
    assert probe.onsets.height == 5
    assert probe.onsets["onset_ts"].min() >= int(ev["ts"][50])
    assert probe.onsets["onset_ts"].is_sorted()
    assert len(probe.probe) == 5 * 4


def test_rise_curve_on_a_hand_made_series() -> None:
    t = 100 * MIN + 30_000  # onsets sit on the 30 s grid, scorings on minutes
    a = _series(100 * MIN, {-4: 0.1, -3: 0.1, 0: 0.1, 1: 0.1, 2: 0.15, 5: 0.2}, 0)
    b = _series(100 * MIN, {-2: 0.2, 1: 0.2, 2: 0.2, 5: 0.1}, 1)
    onsets = pl.DataFrame({"onset_id": [0, 1], "onset_ts": [t, t]})
    curve = rise_curve(pl.concat([a, b]), onsets, offsets_ms=(0, MIN, 4 * MIN, 9 * MIN))
    # offset 0 -> value at minute 1; offset 1 min -> minute 2; 4 min -> minute 5; 9: none
    assert curve["offset_min"].to_list() == [0.0, 1.0, 4.0]
    assert curve["mean_rise"].to_list() == pytest.approx([0.0, 0.25, 0.25])
    assert curve["n"].to_list() == [2, 2, 2]
