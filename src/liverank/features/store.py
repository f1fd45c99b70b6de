"""Point-in-time feature store for room statistic sequences and room product sequences.

:class:`RoomStatsSource` is the read interface the models and the serving path use; it is
abstract so that a Redis-backed store can implement it later. :class:`RoomStatsStore` is the
in-memory implementation: one dense block of 30 s windows per room (numpy), built from the
canonical tables in one go (:meth:`RoomStatsStore.from_tables`) or incrementally as events
arrive (:meth:`RoomStatsStore.update`); both give the same arrays.

Point in time. ``history(live_id, as_of_ts, n)`` returns the ``n`` grid windows that end at or
before ``as_of_ts``: row ``i`` is window ``k_last - n + 1 + i`` with
``k_last = as_of_ts // WINDOW_MS - 1``, so a window still open at ``as_of_ts`` is never seen and
every statistic comes from events with ``ts < as_of_ts``. Windows outside the room's on-air
windows are zeros (left padding before the room starts). ``products(live_id, as_of_ts, n)``
returns the last ``n`` products introduced with ``ts < as_of_ts``, most recent last, zero-padded
on the left. An unknown ``live_id`` gives zeros and ``known = False`` (cold start), never an
exception. The store returns what it has ingested: a window is only as complete as the events
fed to it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.io import has_table, read_table
from liverank.errors import DataValidationError
from liverank.stream.room_stats import (
    DELTA_COLUMNS,
    PRODUCT_FIELDS,
    ROOM_STATS,
    WINDOW_MS,
    WatcherState,
    empty_watcher_state,
    on_air_windows,
    room_product_sequence,
    window_deltas,
)

log = logging.getLogger(__name__)

_WATCHERS = ROOM_STATS.index("watchers")
_EMPTY_IMPRESSIONS = pl.DataFrame(schema={"ts": pl.Int64, "live_id": pl.Int64})
_EMPTY_EVENTS = pl.DataFrame(
    schema={
        "ts": pl.Int64,
        "user_id": pl.Int64,
        "live_id": pl.Int64,
        "event": pl.Utf8,
        "value": pl.Float64,
    }
)


class RoomStatsSource(ABC):
    """Read interface of room features; implement it for another backend (e.g. Redis)."""

    stat_names: tuple[str, ...] = ROOM_STATS
    product_fields: tuple[str, ...] = PRODUCT_FIELDS

    @abstractmethod
    def history_batch(
        self, live_ids: np.ndarray, as_of_ts: np.ndarray, n_windows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Statistics ``[B, n_windows, n_stats]`` (float64) of the complete windows ending at or
        before each ``as_of_ts``, and ``known`` ``[B]`` (bool, False for unknown rooms)."""

    @abstractmethod
    def products_batch(
        self, live_ids: np.ndarray, as_of_ts: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Products ``[B, n, 4]`` (int64: product_id, cat1, cat2, cat3) introduced before each
        ``as_of_ts``, most recent last, zero-padded on the left, and ``known`` ``[B]``."""

    def history(self, live_id: int, as_of_ts: int, n_windows: int) -> tuple[np.ndarray, bool]:
        """One query of :meth:`history_batch`: ``[n_windows, n_stats]`` and ``known``."""
        values, known = self.history_batch(np.array([live_id]), np.array([as_of_ts]), n_windows)
        return values[0], bool(known[0])

    def products(self, live_id: int, as_of_ts: int, n: int) -> tuple[np.ndarray, bool]:
        """One query of :meth:`products_batch`: ``[n, 4]`` and ``known``."""
        values, known = self.products_batch(np.array([live_id]), np.array([as_of_ts]), n)
        return values[0], bool(known[0])


#: The feature-store interface of this issue is the room-statistics source.
FeatureStore = RoomStatsSource


class RoomStatsStore(RoomStatsSource):
    """In-memory :class:`RoomStatsSource` with an incremental :meth:`update` path.

    Example::

        store = RoomStatsStore(rooms, products)
        store.update(live_impressions=chunk_imp, live_events=chunk_ev)
        stats, known = store.history(live_id=7, as_of_ts=t, n_windows=20)  # [20, 10]
    """

    def __init__(self, rooms: pl.DataFrame, products: pl.DataFrame | None = None) -> None:
        grid = on_air_windows(rooms).sort("live_id")
        if grid["live_id"].is_duplicated().any():
            raise DataValidationError("rooms has duplicate live_id", column="live_id")
        self._live_ids = grid["live_id"].to_numpy()  # [R]
        self._first = grid["first_window"].to_numpy()  # [R]
        self._len = grid["n_windows"].to_numpy()  # [R]
        self._offset = np.concatenate([[0], np.cumsum(self._len)[:-1]]).astype(np.int64)  # [R]
        total = int(self._len.sum())
        # one row per (room, on-air window) + a trailing all-zero padding row; the watchers
        # column holds the running sum of the watcher deltas kept in _watcher_delta
        self._values = np.zeros((total + 1, len(DELTA_COLUMNS)), dtype=np.float64)  # [T+1, S]
        self._watcher_delta = np.zeros(total, dtype=np.float64)  # [T]
        self._watchers_stale = False  # recomputed lazily on the next read
        self._pad = total
        self._state: WatcherState = empty_watcher_state()
        self._last_ts: dict[str, int] = {}
        self.n_dropped_cells = 0
        self._catalog = products if products is not None else _empty_catalog()
        self._product_seq = room_product_sequence(_empty_room_products(), self._catalog)
        self._index_products()

    # ----------------------------------------------------------------------------- building
    @classmethod
    def from_tables(
        cls,
        rooms: pl.DataFrame,
        live_impressions: pl.DataFrame,
        live_events: pl.DataFrame,
        room_products: pl.DataFrame | None = None,
        products: pl.DataFrame | None = None,
    ) -> RoomStatsStore:
        """Build from whole canonical tables (one :meth:`update` over everything)."""
        store = cls(rooms, products)
        store.update(live_impressions, live_events, room_products, check_order=False)
        return store

    @classmethod
    def from_dataset(cls, root: str | Path) -> RoomStatsStore:
        """Build from a dataset directory; ``room_products`` / ``products`` are optional."""
        rp = read_table(root, "room_products") if has_table(root, "room_products") else None
        prod = read_table(root, "products") if has_table(root, "products") else None
        return cls.from_tables(
            read_table(root, "rooms"),
            read_table(root, "live_impressions"),
            read_table(root, "live_events"),
            rp,
            prod,
        )

    def update(
        self,
        live_impressions: pl.DataFrame | None = None,
        live_events: pl.DataFrame | None = None,
        room_products: pl.DataFrame | None = None,
        check_order: bool = True,
    ) -> None:
        """Add one chunk of events. Chunks must come in time order: each table's earliest
        ``ts`` must not precede the latest ``ts`` of that table in earlier chunks (rows inside a
        chunk may be in any order). Raises :class:`DataValidationError` otherwise."""
        tables = {
            "live_impressions": live_impressions,
            "live_events": live_events,
            "room_products": room_products,
        }
        for name, df in tables.items():
            if df is None or df.height == 0:
                continue
            lo, hi = int(df["ts"].min()), int(df["ts"].max())
            if check_order and lo < self._last_ts.get(name, lo):
                raise DataValidationError(
                    f"chunk of '{name}' goes back in time: earliest ts {lo} < latest ts "
                    f"{self._last_ts[name]} of an earlier chunk; feed chunks in time order",
                    column="ts",
                )
            self._last_ts[name] = max(hi, self._last_ts.get(name, hi))
        imp = _EMPTY_IMPRESSIONS if live_impressions is None else live_impressions
        ev = _EMPTY_EVENTS if live_events is None else live_events
        deltas, self._state = window_deltas(imp, ev, self._state)
        self._add(deltas)
        if room_products is not None and room_products.height:
            new = room_product_sequence(room_products, self._catalog)
            self._product_seq = pl.concat([self._product_seq, new]).sort(
                ["live_id", "ts", "product_id"]
            )
            self._index_products()

    def _flat_index(self, live_ids: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Row of each (room, window) in the flat arrays (the padding row where there is none),
        and whether the room is known. ``windows`` may have more dimensions than ``live_ids``."""
        n_rooms = len(self._live_ids)
        shape = (len(live_ids),) + (1,) * (windows.ndim - 1)
        if n_rooms == 0:
            nowhere = np.zeros(windows.shape, dtype=bool)
            return np.full(windows.shape, self._pad), np.zeros(len(live_ids), dtype=bool), nowhere
        idx = np.minimum(np.searchsorted(self._live_ids, live_ids), n_rooms - 1)  # [B]
        known = self._live_ids[idx] == live_ids  # [B]
        rel = windows - self._first[idx].reshape(shape)  # window index inside the room's block
        inside = known.reshape(shape) & (rel >= 0) & (rel < self._len[idx].reshape(shape))
        flat = np.where(inside, self._offset[idx].reshape(shape) + rel, self._pad)
        return flat, known, inside

    def _add(self, deltas: pl.DataFrame) -> None:
        if deltas.height == 0:
            return
        flat, _, inside = self._flat_index(
            deltas["live_id"].to_numpy(), deltas["window"].to_numpy()
        )
        dropped = int((~inside).sum())
        if dropped:
            self.n_dropped_cells += dropped
            log.warning(
                "%d (room, window) cells fall outside their room's on-air windows or belong to "
                "unknown rooms and are left out (%d so far)",
                dropped,
                self.n_dropped_cells,
            )
        values = deltas.select(DELTA_COLUMNS).to_numpy().astype(np.float64)  # [N, S]
        rows, values = flat[inside], values[inside]
        np.add.at(self._watcher_delta, rows, values[:, _WATCHERS])
        values[:, _WATCHERS] = 0.0
        np.add.at(self._values, rows, values)
        self._watchers_stale = True

    def _refresh_watchers(self) -> None:
        """Watchers = running sum of watcher deltas within each room's block."""
        if not self._watchers_stale:
            return
        running = np.cumsum(self._watcher_delta)  # [T]
        before = np.concatenate([[0.0], running])[self._offset]  # [R] sum before each block
        self._values[:-1, _WATCHERS] = running - np.repeat(before, self._len)
        self._watchers_stale = False

    def _index_products(self) -> None:
        seq = self._product_seq
        self._p_ts = seq["ts"].to_numpy()  # [P]
        self._p_fields = seq.select(PRODUCT_FIELDS).to_numpy().astype(np.int64)  # [P, 4]
        rooms, starts = np.unique(seq["live_id"].to_numpy(), return_index=True)
        self._p_rooms, self._p_start = rooms, starts.astype(np.int64)  # [Rp], [Rp]
        self._p_t0 = int(self._p_ts.min()) if len(self._p_ts) else 0
        self._p_span = (int(self._p_ts.max()) - self._p_t0 + 2) if len(self._p_ts) else 2
        if len(rooms) * self._p_span >= 2**62:
            raise DataValidationError("room_products spans too long a time range to index")
        room_of = np.repeat(np.arange(len(rooms)), np.diff(np.append(starts, len(self._p_ts))))
        self._p_key = room_of * self._p_span + (self._p_ts - self._p_t0)  # [P], sorted

    def flat(self) -> FlatRoomTables:
        """The statistics and product arrays as they stand (watchers refreshed), read-only."""
        self._refresh_watchers()
        return FlatRoomTables(
            stats=self._values[:-1],
            live_ids=self._live_ids,
            first_window=self._first,
            n_windows=self._len,
            offset=self._offset,
            products=self._p_fields,
            product_rooms=self._p_rooms,
            product_start=self._p_start,
            product_key=self._p_key,
            product_t0=self._p_t0,
            product_span=self._p_span,
        )

    # ------------------------------------------------------------------------------ reading
    def history_batch(
        self, live_ids: np.ndarray, as_of_ts: np.ndarray, n_windows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        live_ids = np.asarray(live_ids, dtype=np.int64)  # [B]
        as_of_ts = np.asarray(as_of_ts, dtype=np.int64)  # [B]
        k_last = as_of_ts // WINDOW_MS - 1  # [B] last window complete at as_of_ts
        windows = k_last[:, None] + np.arange(-n_windows + 1, 1)[None, :]  # [B, n]
        flat, known, _ = self._flat_index(live_ids, windows)
        self._refresh_watchers()
        return self._values[flat], known  # [B, n, S], [B]

    def products_batch(
        self, live_ids: np.ndarray, as_of_ts: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        live_ids = np.asarray(live_ids, dtype=np.int64)  # [B]
        as_of_ts = np.asarray(as_of_ts, dtype=np.int64)  # [B]
        _, known, _ = self._flat_index(live_ids, np.zeros((len(live_ids), 1), dtype=np.int64))
        out = np.zeros((len(live_ids), n, len(PRODUCT_FIELDS)), dtype=np.int64)  # [B, n, 4]
        n_rooms = len(self._p_rooms)
        if n_rooms == 0 or n == 0:
            return out, known
        j = np.searchsorted(self._p_rooms, live_ids)  # [B]
        j_c = np.minimum(j, n_rooms - 1)
        has = (j < n_rooms) & (self._p_rooms[j_c] == live_ids)
        rel = np.clip(as_of_ts - self._p_t0, 0, self._p_span - 1)
        end = np.searchsorted(self._p_key, j_c * self._p_span + rel, side="left")  # [B]
        pos = end[:, None] + np.arange(-n, 0)[None, :]  # [B, n]
        valid = has[:, None] & (pos >= self._p_start[j_c][:, None])
        out[valid] = self._p_fields[pos[valid]]
        return out, known


def _empty_catalog() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"product_id": pl.Int64, "cat1": pl.Int32, "cat2": pl.Int32, "cat3": pl.Int32}
    )


def _empty_room_products() -> pl.DataFrame:
    return pl.DataFrame(schema={"live_id": pl.Int64, "ts": pl.Int64, "product_id": pl.Int64})


@dataclass(frozen=True)
class FlatRoomTables:
    """The store's arrays, for sample builders that index them (:mod:`liverank.data.room_sequences`).

    ``stats [W, S]`` one row per (room, on-air window), rooms in ``live_ids`` order, a room's
    windows contiguous from ``offset``; ``products [P, 4]`` the room product sequence sorted by
    (room, ts) with ``product_key`` (room rank * span + ts - t0) and each room's ``product_start``.
    """

    stats: np.ndarray
    live_ids: np.ndarray
    first_window: np.ndarray
    n_windows: np.ndarray
    offset: np.ndarray
    products: np.ndarray
    product_rooms: np.ndarray
    product_start: np.ndarray
    product_key: np.ndarray
    product_t0: int
    product_span: int
