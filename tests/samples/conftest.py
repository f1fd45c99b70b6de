"""A small random canonical-dataset factory for the sample-building tests.

``make_dataset(seed, ...)`` returns tables that satisfy ``liverank.data.schema`` and pass
``liverank.data.validate`` (ids from 1, every room event on air, closed event sets, event tables
sorted by ts with ties in random order), and that stress the point-in-time and visit rules on
purpose: enters exactly at the impression time and just outside the click window, repeated
impressions of the same room (also at the same ms), visits without an exit (closed at room
end), behaviours exactly at enter / exit and after the exit, re-entries, orphan enters, and
short-video events at exactly an impression time. Times lie on a coarse grid so that ties are
common.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.dead_letters import UNKNOWN_EVENT, UNKNOWN_ROOM, UNKNOWN_USER, UNKNOWN_VIDEO
from liverank.data.io import write_meta, write_table
from liverank.data.schema import (
    AUTHOR_TYPES,
    CLICK_WINDOW_MS,
    EFFECTIVE_VIEW_MS,
    VIDEO_EVENTS,
    DatasetMeta,
)

DAY_MS = 86_400_000
#: in-room shopping events: in the live event table, not in the live behaviour sequence
SHOP = ("bag_open", "product_click")
START_TS = 19_675 * DAY_MS  # a UTC midnight


@dataclass
class Canonical:
    tables: dict[str, pl.DataFrame]
    meta: DatasetMeta

    def write(self, root: str | Path) -> Path:
        root = Path(root)
        for name, df in self.tables.items():
            write_table(root, name, df)
        write_meta(root, self.meta)
        return root


def make_dataset(
    seed: int = 0,
    *,
    n_users: int = 6,
    n_authors: int = 5,
    n_rooms: int = 6,
    n_requests: int = 30,
    slate: int = 3,
    n_videos: int = 8,
    n_video_events: int = 80,
    days: int = 2,
    grid_ms: int = 1_000,
    long_view_ms: int = 20_000,
    day_offset_ms: int = 0,
) -> Canonical:
    """A random canonical dataset (see the module docstring)."""
    rng = np.random.default_rng(seed)
    end_ts = START_TS + days * DAY_MS

    def on_grid(x: np.ndarray | int) -> np.ndarray:
        return (np.asarray(x) // grid_ms) * grid_ms

    users = pl.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1),
            "age": rng.integers(0, 6, n_users),
            "gender": rng.integers(0, 3, n_users),
            "device": rng.integers(0, 5, n_users),
            "activity": rng.integers(0, 4, n_users),
        }
    )
    authors = pl.DataFrame(
        {
            "author_id": np.arange(1, n_authors + 1),
            "category": rng.integers(1, 5, n_authors),
            "author_type": rng.choice(AUTHOR_TYPES, n_authors),
            "fans": rng.integers(0, 6, n_authors),
        }
    )
    # rooms: on air for 10 min .. 6 h, inside the dataset period; clustered to overlap
    room_start = on_grid(START_TS + rng.integers(0, days * DAY_MS // 4, n_rooms) * 4)
    room_end = np.minimum(
        room_start + on_grid(rng.integers(600_000, 6 * 3_600_000, n_rooms)), end_ts - 1
    )
    rooms = pl.DataFrame(
        {
            "live_id": np.arange(1, n_rooms + 1),
            "author_id": rng.integers(1, n_authors + 1, n_rooms),
            "start_ts": room_start,
            "end_ts": room_end,
            "category": rng.integers(1, 6, n_rooms),
        }
    )
    room_author = dict(zip(rooms["live_id"], rooms["author_id"], strict=True))
    bounds = {
        r: (int(s), int(e)) for r, s, e in zip(rooms["live_id"], room_start, room_end, strict=True)
    }

    def on_air(r: int, t: int) -> bool:
        s, e = bounds[r]
        return s <= t < e

    # impressions: requests at a room's on-air time; some requests are repeated soon after
    imp_rows: list[tuple[int, int, int, int, int]] = []  # request, ts, user, live, position
    request_id = 0
    for _ in range(n_requests):
        user = int(rng.integers(1, n_users + 1))
        anchor = int(rng.integers(1, n_rooms + 1))
        s, e = bounds[anchor]
        ts = int(on_grid(rng.integers(s, e)))
        times = [ts]
        if rng.random() < 0.4:  # repeat: same ms, within the click window, or after it
            times.append(ts + int(rng.choice([0, grid_ms, 30_000, CLICK_WINDOW_MS, 90_000])))
        live = [r for r in range(1, n_rooms + 1) if on_air(r, ts)]
        shown = list(rng.permutation(live)[: min(slate, len(live))])
        for t in times:
            request_id += 1
            slot = [r for r in shown if on_air(int(r), t)]
            for pos, r in enumerate(slot):
                imp_rows.append((request_id, t, user, int(r), pos))
    imp = (
        pl.DataFrame(
            imp_rows, schema=["request_id", "ts", "user_id", "live_id", "position"], orient="row"
        )
        .with_columns(
            pl.col("live_id").replace_strict(room_author).alias("author_id"),
            pl.lit("slide").alias("surface"),
        )
        .sort("ts", maintain_order=True)
    )

    # live events: visits after impressions, plus orphan enters
    ev: list[tuple[int, int, int, str, float]] = []  # ts, user, live, event, value

    def add(t: int, u: int, r: int, event: str) -> None:
        if on_air(r, t):
            ev.append((t, u, r, event, 5.0 if event == "gift" else 0.0))

    for _, t, u, r, _ in imp_rows:
        if rng.random() < 0.5:
            continue
        delay = int(rng.choice([0, 0, grid_ms, 30_000, CLICK_WINDOW_MS - grid_ms, CLICK_WINDOW_MS]))
        enter = t + delay
        stays = [0, grid_ms, EFFECTIVE_VIEW_MS - 1, EFFECTIVE_VIEW_MS, long_view_ms - 1,
                 long_view_ms, long_view_ms + 5 * grid_ms, 600_000]  # fmt: skip
        stay = int(rng.choice(stays))
        add(enter, u, r, "enter")
        if rng.random() < 0.8:  # otherwise the visit lasts until the room ends
            add(enter + stay, u, r, "exit")
        for _ in range(int(rng.integers(0, 4))):
            when = int(
                rng.choice([0, stay, stay + grid_ms, int(on_grid(rng.integers(0, stay + 1)))])
            )
            event = str(rng.choice(["like", "comment", "gift", "follow", "cart_click", *SHOP]))
            add(enter + when, u, r, event)
        if rng.random() < 0.2:  # a re-entry
            add(enter + int(on_grid(rng.integers(0, stay + 1))), u, r, "enter")
    for _ in range(3):  # orphan enters (no impression)
        r = int(rng.integers(1, n_rooms + 1))
        s, e = bounds[r]
        add(int(on_grid(rng.integers(s, e))), int(rng.integers(1, n_users + 1)), r, "enter")
    live_events = pl.DataFrame(
        ev, schema=["ts", "user_id", "live_id", "event", "value"], orient="row"
    ).with_columns(
        pl.col("live_id").replace_strict(room_author).alias("author_id"),
        pl.lit(0).alias("product_id"),
    )
    # canonical event tables are sorted by ts; shuffle first so that ties come in random order
    live_events = live_events.sample(fraction=1.0, shuffle=True, seed=seed).sort(
        "ts", maintain_order=True
    )

    videos = pl.DataFrame(
        {
            "photo_id": np.arange(1, n_videos + 1),
            "author_id": rng.integers(1, n_authors + 1, n_videos),
            "tag": rng.integers(1, 7, n_videos),
            "cluster": rng.integers(1, 4, n_videos),
            "duration_ms": rng.integers(5_000, 120_000, n_videos),
        }
    )
    # short-video events: some exactly at an impression time of the same user
    v_user = rng.integers(1, n_users + 1, n_video_events)
    v_ts = on_grid(START_TS + rng.integers(0, days * DAY_MS, n_video_events))
    if imp_rows:
        pick = rng.integers(0, len(imp_rows), n_video_events)
        copy = rng.random(n_video_events) < 0.4
        v_ts = np.where(copy, [imp_rows[i][1] for i in pick], v_ts)
        v_user = np.where(copy, [imp_rows[i][2] for i in pick], v_user)
    v_photo = rng.integers(1, n_videos + 1, n_video_events)
    v_event = rng.choice(VIDEO_EVENTS, n_video_events)
    video_events = pl.DataFrame(
        {
            "ts": v_ts,
            "user_id": v_user,
            "photo_id": v_photo,
            "author_id": videos["author_id"].to_numpy()[v_photo - 1],
            "event": v_event,
            "play_ms": np.where(v_event == "play", rng.integers(0, 200_000, n_video_events), 0),
        }
    ).sort("ts", maintain_order=True)
    meta = DatasetMeta(
        name=f"test-{seed}",
        start_ts=START_TS,
        end_ts=end_ts,
        long_view_ms=long_view_ms,
        day_offset_ms=day_offset_ms,
        source="tests",
    )
    tables = {
        "users": users,
        "authors": authors,
        "rooms": rooms,
        "live_impressions": imp,
        "live_events": live_events,
        "videos": videos,
        "video_events": video_events,
    }
    return Canonical(tables, meta)


@pytest.fixture(scope="session")
def dataset_factory():
    """The :func:`make_dataset` function (session scope, usable inside hypothesis tests)."""
    return make_dataset


@pytest.fixture(scope="session")
def small_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-day dataset written once per session."""
    data = make_dataset(
        7,
        n_users=20,
        n_rooms=12,
        n_requests=300,
        n_video_events=600,
        days=4,
        day_offset_ms=8 * 3_600_000,
    )
    return data.write(tmp_path_factory.mktemp("dataset"))


# ---------------------------------------------------------------------------------- bad rows
GHOST = 10_000  # an id no dimension table has
BAD = "_bad"  # marker column: the reason a row must be set aside (null = a good row)


def _mark(df: pl.DataFrame, rows: pl.Expr, reason: str, **values: object) -> pl.DataFrame:
    """Copies of the rows selected by ``rows`` with ``values`` overwritten, marked ``reason``."""
    return df.filter(rows).with_columns(
        *(pl.lit(v, dtype=df.schema[c]).alias(c) for c, v in values.items()),
        pl.lit(reason).alias(BAD),
    )


def _damaged_tables(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The tables with bad rows added (``_bad`` = expected reason), still sorted by ts."""
    out = dict(tables)
    ev = tables["live_events"].with_columns(pl.lit(None, pl.String).alias(BAD))
    first = pl.int_range(pl.len()) < 5
    renamed = _mark(ev.filter(pl.col("event") == "enter"), first, UNKNOWN_EVENT, event="Enter")
    likes = ev.filter(pl.col("event") != "exit")
    ev = pl.concat(
        [
            ev,
            renamed,
            _mark(likes, pl.int_range(pl.len()) < 3, UNKNOWN_USER, user_id=GHOST),
            _mark(likes, pl.int_range(pl.len()) < 2, UNKNOWN_ROOM, live_id=GHOST),
            _mark(likes, pl.int_range(pl.len()) < 1, "null user_id", user_id=None),
        ]
    )
    out["live_events"] = ev.sort("ts", maintain_order=True)
    vev = tables["video_events"].with_columns(pl.lit(None, pl.String).alias(BAD))
    out["video_events"] = pl.concat(
        [
            vev,
            _mark(vev, pl.int_range(pl.len()) < 4, UNKNOWN_EVENT, event="Play"),
            _mark(vev, pl.int_range(pl.len()) < 2, UNKNOWN_VIDEO, photo_id=GHOST),
            _mark(vev, pl.int_range(pl.len()) < 3, UNKNOWN_USER, user_id=GHOST),
        ]
    ).sort("ts", maintain_order=True)
    imp = tables["live_impressions"].with_columns(pl.lit(None, pl.String).alias(BAD))
    top = int(imp["request_id"].max())
    ghost_user = _mark(imp, pl.int_range(pl.len()) < 3, UNKNOWN_USER, user_id=GHOST)
    ghost_room = _mark(imp, pl.int_range(pl.len()) < 2, UNKNOWN_ROOM, live_id=GHOST)
    extra = pl.concat([ghost_user, ghost_room])
    extra = extra.with_columns((top + 1 + pl.int_range(pl.len())).alias("request_id"))
    out["live_impressions"] = pl.concat([imp, extra]).sort("ts", maintain_order=True)
    return out


@pytest.fixture(scope="session")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A dataset with bad rows (``bad``), the same without them (``clean``), the expected dead
    letters per table (``expected``: ``row``, ``_bad`` = reason) and the damaged ``tables``."""
    data = make_dataset(5, n_requests=60, n_video_events=200)
    tables = _damaged_tables(data.tables)
    expected = {
        t: df.with_row_index("row").filter(pl.col(BAD).is_not_null()).select("row", BAD)
        for t, df in tables.items()
        if BAD in df.columns
    }
    bad_root = tmp_path_factory.mktemp("damaged")
    clean_root = tmp_path_factory.mktemp("clean")
    Canonical({t: df.drop(BAD, strict=False) for t, df in tables.items()}, data.meta).write(
        bad_root
    )
    clean = {
        t: df.filter(pl.col(BAD).is_null()).drop(BAD) if BAD in df.columns else df
        for t, df in tables.items()
    }
    Canonical(clean, data.meta).write(clean_root)
    return {"bad": bad_root, "clean": clean_root, "expected": expected, "tables": tables}
