"""Rooms on air (phenomenon 8) and each room's latent timeline on the 30 s grid.

Schedules: author ``a`` starts ``Poisson(lambda_a)`` broadcasts a day (``lambda_a`` =
``sessions_per_author_day * Gamma(4, 1/4)``, at most 3), at hours drawn from an evening-heavy
profile, lasting ``LogNormal(log(session_median_min), 0.5)`` minutes clipped to [15 min, 8 h].
Starts are snapped to the 30 s grid; a broadcast that would overlap an earlier one of the same
author is dropped. With ``on_air_schedule`` off every author has one room that is on air for the
whole period, so every author is a candidate of every request.

Timeline: room ``r`` owns ticks ``offset[r] .. offset[r] + n_ticks[r] - 1`` of flat arrays that
hold its excitement (see :mod:`excitement`) and, for shopping rooms, the product on stage (see
:mod:`products`; a new product is introduced at the first tick of each cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from liverank.data.schema import AUTHOR_TYPES
from liverank.data.sim import excitement as ex
from liverank.data.sim.clock import DAY_MS, START_HOURLY, TICK_MS, sample_in_day
from liverank.data.sim.config import SimConfig
from liverank.data.sim.population import SHOPPING, Authors
from liverank.data.sim.products import Catalog, category_sequences
from liverank.data.sim.rng import stream

_MIN_MS, _MAX_MS = 15 * 60_000, 8 * 3_600_000


def flat_ranges(offset: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(offset[i], offset[i] + n[i])`` over ``i`` (``[sum n]``)."""
    return np.repeat(offset - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))


@dataclass(frozen=True)
class Rooms:
    live_id: np.ndarray  # [R] int64, 1..R in order of start
    author: np.ndarray  # [R] 0-based author index
    start: np.ndarray  # [R] epoch ms, on the 30 s grid
    end: np.ndarray  # [R] epoch ms
    category: np.ndarray  # [R] category code
    type_idx: np.ndarray  # [R] index into AUTHOR_TYPES
    offset: np.ndarray  # [R] first flat tick
    n_ticks: np.ndarray  # [R]
    excitement: np.ndarray  # [T] float32
    product: np.ndarray  # [T] 0-based product index on stage, -1 if none
    intro: np.ndarray  # [T] bool, a product is introduced at this tick
    cum_excitement: np.ndarray  # [T + 1] prefix sums of excitement

    @property
    def n(self) -> int:
        return len(self.live_id)

    def table(self, author_ids: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "live_id": self.live_id,
                "author_id": author_ids[self.author],
                "start_ts": self.start,
                "end_ts": self.end,
                "category": self.category,
            }
        )

    @cached_property
    def intro_index(self) -> tuple[np.ndarray, np.ndarray]:
        """``(intro_ticks [I], intros_before [T + 1])``: the flat ticks that introduce a
        product, and the number of introductions at flat ticks ``< k`` (computed once)."""
        before = np.concatenate([[0], np.cumsum(self.intro, dtype=np.int64)])
        return np.flatnonzero(self.intro), before

    def tick_of(self, room: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Flat tick of time ``ts`` in ``room`` (clipped to the room's ticks)."""
        k = np.clip((ts - self.start[room]) // TICK_MS, 0, self.n_ticks[room] - 1)
        return self.offset[room] + k

    def mean_excitement(self, room: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Mean excitement of ``room`` over the ticks of ``[t0, t1]``."""
        a, b = self.tick_of(room, t0), self.tick_of(room, t1) + 1
        return (self.cum_excitement[b] - self.cum_excitement[a]) / (b - a)

    def on_air_during(self, t0: int, t1: int) -> np.ndarray:
        """Indices of rooms on air at some time in ``[t0, t1)``."""
        return np.flatnonzero((self.start < t1) & (self.end > t0))

    def room_products(self, product_ids: np.ndarray) -> pl.DataFrame:
        """The ``room_products`` table: one row per product introduction, sorted by ts."""
        tick = np.flatnonzero(self.intro)
        room = np.searchsorted(self.offset, tick, side="right") - 1
        ts = self.start[room] + (tick - self.offset[room]) * TICK_MS
        order = np.argsort(ts, kind="stable")
        return pl.DataFrame(
            {
                "live_id": self.live_id[room][order],
                "ts": ts[order],
                "product_id": product_ids[self.product[tick]][order],
            }
        )


def schedule(cfg: SimConfig, authors: Authors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(author, start, end)`` of every broadcast, sorted by start."""
    period_end = cfg.end_ts - 1_000  # events at a room's end_ts stay inside the period
    if not cfg.on_air_schedule:
        n = authors.n
        return np.arange(n), np.full(n, cfg.start_ts), np.full(n, period_end)
    rng = stream(cfg.seed, "schedule")
    parts = []
    for day in range(cfg.n_days):
        count = np.minimum(rng.poisson(authors.sessions_per_day), 3)
        author = np.repeat(np.arange(authors.n), count)
        start = sample_in_day(rng, len(author), cfg.start_ts + day * DAY_MS, START_HOURLY)
        minutes = rng.lognormal(np.log(cfg.session_median_min), 0.5, size=len(author))
        parts.append((author, start, np.clip(minutes * 60_000, _MIN_MS, _MAX_MS).astype(np.int64)))
    author = np.concatenate([p[0] for p in parts])
    start = np.concatenate([p[1] for p in parts]) // TICK_MS * TICK_MS
    end = np.minimum(start + np.concatenate([p[2] for p in parts]), period_end)
    # drop broadcasts that overlap an earlier one of the same author
    order = np.lexsort((start, author))
    author, start, end = author[order], start[order], end[order]
    big = np.int64(1) << 50  # > any epoch ms; separates authors in one running maximum
    running = np.maximum.accumulate(author * big + end) - author * big
    prev_end = np.concatenate([[np.iinfo(np.int64).min], running[:-1]])
    first = np.concatenate([[True], author[1:] != author[:-1]])
    keep = (first | (start >= prev_end)) & (end - start >= 2 * TICK_MS)
    author, start, end = author[keep], start[keep], end[keep]
    order = np.lexsort((author, start))
    return author[order], start[order], end[order]


def make_rooms(cfg: SimConfig, authors: Authors, catalog: Catalog) -> Rooms:
    author, start, end = schedule(cfg, authors)
    n_ticks = -(-(end - start) // TICK_MS)  # ceil
    offset = np.cumsum(n_ticks) - n_ticks
    total = int(n_ticks.sum())
    type_idx = authors.type_idx[author]
    product = np.full(total, -1, dtype=np.int64)
    intro = np.zeros(total, dtype=bool)
    generators = {"talent_show": ex.talent_show, "chat": ex.chat, "game": ex.game}
    e = np.zeros(total, dtype=np.float32)
    for t, name in enumerate(AUTHOR_TYPES):
        rooms = np.flatnonzero(type_idx == t)
        if len(rooms) == 0:
            continue
        ticks = flat_ranges(offset[rooms], n_ticks[rooms])
        rng = stream(cfg.seed, f"excitement-{name}")
        if t == SHOPPING:
            shape, cyc = ex.shopping(rng, n_ticks[rooms])
            first_tick = np.concatenate([[True], cyc[1:] != cyc[:-1]])
            per_room = np.bincount(
                np.repeat(np.arange(len(rooms)), n_ticks[rooms])[first_tick], minlength=len(rooms)
            )
            seq_rng = stream(cfg.seed, "room-categories")
            cat3 = category_sequences(
                cfg, catalog, seq_rng, authors.vertical[author[rooms]], per_room
            )
            product[ticks] = catalog.pick_product(seq_rng, cat3)[cyc]
            intro[ticks] = first_tick
        else:
            shape = generators[name](rng, n_ticks[rooms])
        e[ticks] = ex.finish(stream(cfg.seed, f"excitement-noise-{name}"), shape, cfg.highlights)
    return Rooms(
        live_id=np.arange(1, len(author) + 1, dtype=np.int64),
        author=author,
        start=start,
        end=end,
        category=authors.category[author],
        type_idx=type_idx,
        offset=offset,
        n_ticks=n_ticks,
        excitement=e,
        product=product,
        intro=intro,
        cum_excitement=np.concatenate([[0.0], np.cumsum(e, dtype=np.float64)]),
    )
