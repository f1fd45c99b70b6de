"""A small random event factory for the stream tests (times on a coarse grid so ties happen).

``make_stream(seed)`` returns ``(impressions, live_events, rooms)`` frames with the columns that
``reconstruct_visits`` and the stream engine need. Events come in random order (not sorted by
ts) on purpose; rooms end after every event in them.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

T0 = 1_700_000_000_000  # an epoch ms (not a multiple of the 30 s grid on purpose + offset)
EVENTS = ("enter", "exit", "like", "comment", "gift")


def make_stream(
    seed: int,
    *,
    n_users: int = 4,
    n_rooms: int = 3,
    n_impressions: int = 40,
    n_events: int = 120,
    span_ms: int = 2 * 3_600_000,
    grid_ms: int = 5_000,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    slots = span_ms // grid_ms
    imp_ts = T0 + 7 + rng.integers(0, slots, n_impressions) * grid_ms  # [I]
    imp_user = rng.integers(1, n_users + 1, n_impressions)  # [I]
    imp_room = rng.integers(1, n_rooms + 1, n_impressions)  # [I]
    # a third of the impressions repeat the previous one's (user, room) a few seconds later
    again = np.flatnonzero(rng.random(n_impressions) < 0.33)
    again = again[again > 0]
    imp_ts[again] = imp_ts[again - 1] + rng.integers(0, 4, len(again)) * (grid_ms // 5)
    imp_user[again], imp_room[again] = imp_user[again - 1], imp_room[again - 1]
    impressions = pl.DataFrame(
        {
            "request_id": np.arange(1, n_impressions + 1, dtype=np.int64),
            "position": rng.integers(0, 3, n_impressions).astype(np.int64),
            "ts": imp_ts.astype(np.int64),
            "user_id": imp_user.astype(np.int64),
            "live_id": imp_room.astype(np.int64),
        }
    )
    # planted visits: an enter shortly after an impression (sometimes just outside the click
    # window), an exit after a random stay (sometimes none: closed at room end), behaviours
    # inside and around the visit; plus uniform noise events
    users_i = impressions["user_id"].to_numpy()
    rooms_i = impressions["live_id"].to_numpy()
    anchor = rng.integers(0, n_impressions, n_events)
    kind_ix = rng.choice(len(EVENTS), n_events, p=[0.3, 0.2, 0.25, 0.15, 0.1])
    delay = rng.integers(0, 16, n_events) * grid_ms  # [E] enters: 0 .. 75 s after impression
    stay = rng.integers(0, 400, n_events) * (grid_ms // 5)  # [E] up to ~6.7 min
    ev_ts = imp_ts[anchor] + np.where(
        kind_ix == 0, delay, np.where(kind_ix == 1, delay + stay, stay)
    )
    noise = rng.random(n_events) < 0.15
    ev_ts = np.where(noise, T0 + rng.integers(0, slots, n_events) * grid_ms, ev_ts)
    users = np.where(noise, rng.integers(1, n_users + 1, n_events), users_i[anchor])
    rooms_ = np.where(noise, rng.integers(1, n_rooms + 1, n_events), rooms_i[anchor])
    kind = np.array(EVENTS)[kind_ix]
    events = pl.DataFrame(
        {
            "ts": ev_ts.astype(np.int64),
            "user_id": users.astype(np.int64),
            "live_id": rooms_.astype(np.int64),
            "event": kind,
        }
    ).sample(fraction=1.0, shuffle=True, seed=seed)
    end = max(int(ev_ts.max()), int(imp_ts.max())) + 3_600_000
    rooms = pl.DataFrame(
        {
            "live_id": np.arange(1, n_rooms + 1, dtype=np.int64),
            "end_ts": np.full(n_rooms, end, dtype=np.int64) - rng.integers(0, 10, n_rooms) * 1000,
        }
    )
    return impressions, events, rooms


@pytest.fixture(scope="session")
def stream_factory():
    """``make_stream`` as a fixture (test modules do not import conftest)."""
    return make_stream


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame | int]:
    """The simulator's ``tiny`` preset (seed 0): its live tables and long-view threshold."""
    from liverank.data.io import read_meta, read_table
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("tiny_sim")
    simulate(SimConfig.preset("tiny", seed=0), root, progress=False)
    tables = {n: read_table(root, n) for n in ("live_impressions", "live_events", "rooms")}
    return tables | {"long_view_ms": read_meta(root).long_view_ms}
