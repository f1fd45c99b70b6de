"""Random small canonical tables for the room-statistics tests (hypothesis strategies)."""

from __future__ import annotations

import polars as pl
from hypothesis import strategies as st

from liverank.data.schema import LIVE_EVENTS
from liverank.stream.room_stats import WINDOW_MS

HORIZON_MS = 8 * WINDOW_MS


@st.composite
def room_tables(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``(rooms, live_impressions, live_events)`` with every event inside its room's on-air
    interval; few distinct timestamps so that ties (same ts) are common."""
    n_rooms = draw(st.integers(1, 3))
    rooms = []
    for live_id in range(1, n_rooms + 1):
        start = draw(st.integers(0, HORIZON_MS // 2))
        end = draw(st.integers(start + 1, HORIZON_MS))
        rooms.append((live_id, start, end))
    room_df = pl.DataFrame(rooms, schema=["live_id", "start_ts", "end_ts"], orient="row")

    def stamp(live_id: int) -> st.SearchStrategy[int]:
        _, start, end = rooms[live_id - 1]
        # half the time a window-boundary-adjacent value, to exercise the edges
        edge = st.sampled_from(
            [t for t in (start, end, (start // WINDOW_MS + 1) * WINDOW_MS) if start <= t <= end]
        )
        return st.one_of(st.integers(start, end), edge)

    live = st.integers(1, n_rooms)
    imps = draw(st.lists(live.flatmap(lambda r: st.tuples(st.just(r), stamp(r))), max_size=30))
    events = draw(
        st.lists(
            live.flatmap(
                lambda r: st.tuples(
                    st.just(r),
                    stamp(r),
                    st.integers(1, 4),
                    st.sampled_from(LIVE_EVENTS + ("enter", "exit", "enter", "exit")),
                    st.integers(0, 50).map(float),
                )
            ),
            max_size=60,
        )
    )
    imp_df = pl.DataFrame(imps, schema={"live_id": pl.Int64, "ts": pl.Int64}, orient="row")
    ev_df = pl.DataFrame(
        events,
        schema={
            "live_id": pl.Int64,
            "ts": pl.Int64,
            "user_id": pl.Int64,
            "event": pl.Utf8,
            "value": pl.Float64,
        },
        orient="row",
    )
    return room_df, imp_df, ev_df
