"""Moment's mechanism on a synthetic stream: one room's CTR jumps, and a model trained on the
30 s first-only stream follows it within a few windows, while one trained on exit labels only
follows once the visits that began after the jump have ended (Moment&Cross section 3; issue #14).

The world. ``ROOMS`` rooms, identical in every feature but ``live_id``, each shown about once a
second to random users from ``T0``; every impression is clicked with probability 0.05, except
room 1's from ``JUMP`` on (0.5). A click comes 1-10 s after its impression and the visit lasts
``STAY`` (10 min). The rows each mode emits come from the real reporting code
(:func:`liverank.stream.reporting.emit_rows` on these visits): ``moment`` reports a click at the
end of its 30 s window, ``exit`` when the visit ends (non-clicks, in both, 60 s after the
impression). The same small model (``sparse_features`` over user and author plus the room-id
embedding, an MLP, a CTR head) is trained on each stream by the interleaved prequential trainer
in 30 s slices, and a probe (32 fixed users) scores room 1 and the other rooms at every slice
start. The only feature that tells room 1 apart is its id, so its rise is its own embedding row.

Request ids are a random permutation (time-ordered ids would sort the rows that share one
moment ``emit_ts`` negatives first, positives last, and the slice's mini-batches by label).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest
import torch

from liverank.data.loader import SampleSet
from liverank.data.visits import time_columns
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.synthetic import synthetic_feature_map
from liverank.stream.reporting import WINDOW_MS, emit_rows
from liverank.train.optim import build_optimizers
from liverank.train.stream_eval import InterleavedTrainer, gather
from liverank.train.streaming import PrequentialTrainer

MIN = 60_000
T0 = 1_700_000_000_000 // WINDOW_MS * WINDOW_MS
JUMP = T0 + 20 * MIN  # room 1's CTR: 0.05 -> 0.5
END = JUMP + 15 * MIN
STAY = 10 * MIN
ROOMS, USERS, EVERY_MS = 4, 100, 250  # an impression every 250 ms, rooms in turn
CTR_BEFORE, CTR_AFTER = 0.05, 0.5
PROBE_USERS = 32
#: a room "has reacted" once its probed CTR passes this (between 0.05 and 0.5 in logit terms)
REACTED = 0.25


def _world(seed: int = 0) -> tuple[FeatureMap, SampleSet, pl.DataFrame]:
    """Impressions (features, final labels) and their visits (reconstruct_visits' columns)."""
    rng = np.random.default_rng(seed)
    ts = np.arange(T0, END, EVERY_MS, dtype=np.int64)  # [N]
    n = ts.size
    room = np.arange(n, dtype=np.int64) % ROOMS + 1  # [N]
    ctr = np.where((room == 1) & (ts >= JUMP), CTR_AFTER, CTR_BEFORE)
    clicked = rng.random(n) < ctr  # [N]
    t_click = ts + rng.integers(1_000, 10_000, n)
    base = synthetic_feature_map(n_users=USERS, n_authors=8, n_categories=2, tasks=["ctr"])
    fm = base.model_copy(update={"tables": {**base.tables, "room": ROOMS + 1}})
    request_id = rng.permutation(n).astype(np.int64)
    arrays = {
        "sample_id": np.arange(n, dtype=np.int64),
        "request_id": request_id,
        "position": np.ones(n, dtype=np.int64),
        "ts": ts,
        "user_id": rng.integers(1, USERS + 1, n),
        "author_id": np.ones(n, dtype=np.int64),  # one author: only live_id tells rooms apart
        "live_id": room,
        "ctr": clicked.astype(np.float32),
        "mask_ctr": np.ones(n, dtype=np.float32),
    }
    visits = pl.DataFrame(
        {k: arrays[k] for k in ("request_id", "position", "ts", "user_id", "live_id")}
    ).with_columns(
        clicked=pl.Series(clicked),
        t_click=pl.Series(np.where(clicked, t_click, 0)),
        exit_ts=pl.Series(np.where(clicked, t_click + STAY, 0)),
    )
    visits = visits.with_columns(
        pl.when(pl.col("clicked")).then(pl.col(c)).otherwise(None).alias(c)
        for c in ("t_click", "exit_ts")
    ).with_columns(pl.lit(None, pl.Int64).alias(c) for t, c in time_columns().items() if t != "ctr")
    return fm, SampleSet(arrays, fm), visits


def _stream(impressions: SampleSet, visits: pl.DataFrame, mode: str) -> SampleSet:
    """The rows ``mode`` emits, with the features of their impression."""
    rows = emit_rows(visits, mode)  # sorted by emit_ts
    by_request = np.argsort(impressions["request_id"])
    out = impressions.subset(by_request[rows["request_id"].to_numpy()])
    for c in ("sample_id", "emit_ts", "part", "slow", "ctr", "mask_ctr"):
        out.arrays[c] = rows[c].to_numpy()
    return out


def _model(fm: FeatureMap) -> Ranker:
    cfg = RankerConfig.parse(
        {
            "name": "room_mlp",
            "modules": [
                {"name": "sparse_features", "params": {"fields": ["user_id", "author_id"]}}
            ],
            "backbone": {"type": "mlp", "hidden": [32]},
            "tasks": ["ctr"],
            "embedding_dim": 8,
            "head_hidden": [],
            "room_id_embedding": True,
        }
    )
    return Ranker(fm, cfg)


def _probed_run(mode: str, seed: int = 0) -> np.ndarray:
    """``[S, 3]``: slice start, room 1's mean probed CTR, the other rooms' mean."""
    fm, impressions, visits = _world(seed)
    torch.manual_seed(seed)
    model = _model(fm)
    trainer = PrequentialTrainer(
        model,
        build_optimizers(model, lr_sparse=0.05, lr_dense=0.01),
        mode if mode == "moment" else "bce",
    )
    probe = gather(impressions.arrays, np.arange(PROBE_USERS))
    series: list[tuple[float, float, float]] = []

    def hook(t0: int, m: Ranker) -> None:
        p = [
            m.predict_proba({**probe, "live_id": torch.full((PROBE_USERS,), r)})["ctr"].mean()
            for r in range(1, ROOMS + 1)
        ]
        series.append((t0, float(p[0]), float(torch.stack(p[1:]).mean())))

    InterleavedTrainer(trainer, slice_ms=WINDOW_MS, batch_size=16, hooks=[hook]).run(
        _stream(impressions, visits, mode), impressions
    )
    return np.array(series)


@pytest.fixture(scope="module")
def probed() -> Iterator[dict[str, np.ndarray]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield {mode: _probed_run(mode) for mode in ("moment", "exit")}
    finally:
        torch.set_num_threads(threads)


def _at(series: np.ndarray, t: int) -> np.ndarray:
    return series[np.flatnonzero(series[:, 0] == t)[0]]


def _delay(series: np.ndarray) -> int:
    """ms from the jump to the first slice start where room 1's probed CTR passes REACTED."""
    after = series[(series[:, 0] >= JUMP) & (series[:, 1] > REACTED)]
    return int(after[0, 0] - JUMP) if len(after) else END - JUMP


def test_both_modes_learn_the_base_rate_before_the_jump(probed: dict[str, np.ndarray]) -> None:
    for series in probed.values():
        before = series[(series[:, 0] >= JUMP - 5 * MIN) & (series[:, 0] < JUMP)]
        assert before[:, 1].mean() < 0.15 and before[:, 2].mean() < 0.15


def test_moment_follows_the_room_within_a_few_windows(probed: dict[str, np.ndarray]) -> None:
    moment, exit_ = probed["moment"], probed["exit"]
    assert _delay(moment) <= 6 * WINDOW_MS  # 3 minutes
    _, p_moment, _ = _at(moment, JUMP + 2 * MIN)
    _, p_exit, _ = _at(exit_, JUMP + 2 * MIN)
    assert p_moment > 0.2 and p_moment > 2 * p_exit
    _, room1, others = _at(moment, JUMP + 3 * MIN)
    assert room1 > 3 * others  # the room's own row moved, not the model-wide bias


def test_exit_follows_only_after_the_visits_end(probed: dict[str, np.ndarray]) -> None:
    exit_ = probed["exit"]
    during = exit_[(exit_[:, 0] >= JUMP) & (exit_[:, 0] <= JUMP + STAY)]
    assert during[:, 1].max() < REACTED  # no post-jump click has been reported yet
    assert STAY <= _delay(exit_) <= STAY + 3 * MIN
    _, room1, others = _at(exit_, JUMP + STAY + 3 * MIN)
    assert room1 > 0.3 and room1 > 3 * others  # caught up
    _, moment_then, _ = _at(probed["moment"], JUMP + STAY + 3 * MIN)
    assert abs(room1 - moment_then) < 0.2
