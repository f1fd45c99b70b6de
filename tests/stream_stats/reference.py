"""Brute-force, loop-based reference of the room statistics (slow; for tests only)."""

from __future__ import annotations

import numpy as np
import polars as pl

from liverank.stream.room_stats import ROOM_STATS, WINDOW_MS

_COUNT = {"entering": "enter", "likes": "like", "comments": "comment", "gifts": "gift"}
_COUNT |= {"orders": "buy", "cart_clicks": "cart_click"}
_COUNT |= {"bag_opens": "bag_open", "product_clicks": "product_click"}
_VALUE = {"gift_value": "gift", "gmv": "buy"}


def reference_window(
    live_id: int, k: int, imps: list[tuple], events: list[tuple]
) -> dict[str, float]:
    """Statistics of room ``live_id`` in window ``k`` by direct counting.

    ``imps``: ``(live_id, ts)`` rows; ``events``: ``(live_id, ts, user_id, event, value)`` rows.
    """
    lo, hi = k * WINDOW_MS, (k + 1) * WINDOW_MS
    mine = [e for e in events if e[0] == live_id]
    in_window = [e for e in mine if lo <= e[1] < hi]
    out: dict[str, float] = {"exposure": sum(1 for r, t in imps if r == live_id and lo <= t < hi)}
    for stat, event in _COUNT.items():
        out[stat] = sum(1 for e in in_window if e[3] == event)
    for stat, event in _VALUE.items():
        out[stat] = sum(e[4] for e in in_window if e[3] == event)
    # watchers: users whose last enter/exit before the window end (enter first on ties) is enter
    inside = 0
    for user in {e[2] for e in mine}:
        moves = [e for e in mine if e[2] == user and e[3] in ("enter", "exit") and e[1] < hi]
        moves.sort(key=lambda e: (e[1], e[3] == "exit"))
        inside += bool(moves) and moves[-1][3] == "enter"
    out["watchers"] = inside
    return out


def reference_history(
    rooms: pl.DataFrame,
    imps: pl.DataFrame,
    events: pl.DataFrame,
    live_id: int,
    as_of_ts: int,
    n: int,
) -> np.ndarray:
    """``[n, n_stats]`` history by the store's point-in-time rule, computed directly."""
    room = rooms.filter(pl.col("live_id") == live_id)
    out = np.zeros((n, len(ROOM_STATS)))
    if room.height == 0:
        return out
    first, last = room["start_ts"][0] // WINDOW_MS, room["end_ts"][0] // WINDOW_MS
    k_last = as_of_ts // WINDOW_MS - 1
    imp_rows = imps.select("live_id", "ts").rows()
    ev_rows = events.select("live_id", "ts", "user_id", "event", "value").rows()
    for i, k in enumerate(range(k_last - n + 1, k_last + 1)):
        if first <= k <= last:
            stats = reference_window(live_id, k, imp_rows, ev_rows)
            out[i] = [stats[s] for s in ROOM_STATS]
    return out
