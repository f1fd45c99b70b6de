"""LiveForesighter's sample columns: a row's room statistic window and room product sequence.

``build-samples --room-stats T --room-products L`` gives every row the room's last ``T``
complete 30 s windows of the twelve statistics (``S [12, T]``, section 2.2) and the room's last
``L`` products (``I [L, 4]``, section 2.3) *as of the impression*, the way
:class:`~liverank.features.store.RoomStatsStore` reads them (windows that ended at or before
``ts``; products introduced strictly before ``ts``). A row would otherwise carry ``12 x 60``
floats, so it stores two pointers per sequence into tables kept once beside the shards:

* ``room_stats.npy [W + 1, 12]`` float32: one row per (room, on-air window) (row 0 = padding);
  ``rs_end`` = 1 + the row of the room's last complete window (0: none yet), ``rs_first`` = 1 +
  the row of the room's first window. The batch field ``room_stats [B, 12, T]`` is rows
  ``rs_end - T + 1 .. rs_end``, zero where a row lies before ``rs_first`` (the room was not on
  air), exactly :meth:`RoomStatsStore.history_batch` (tested).
* ``room_products.npy [P + 1, 4]`` int64 (``product_id, cat1, cat2, cat3``; row 0 = padding):
  ``rp_end`` = 1 + the row of the room's last product before ``ts`` (0: none), ``rp_first``;
  the batch field ``room_products [B, L, 4]``, most recent last, zero-padded on the left.

Point in time: a window's statistics count only its own events (``watchers`` is the running
count at the window's end), and a row reads only windows that ended before its ``ts``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from liverank.errors import DataValidationError
from liverank.features.store import FlatRoomTables, RoomStatsStore
from liverank.stream.room_stats import WINDOW_MS

STATS_FILE = "room_stats.npy"
PRODUCTS_FILE = "room_products.npy"
#: feature-map tables the product model sizes its embeddings from -> the products column
PRODUCT_TABLES = {"product": "product_id", "product_cat1": "cat1", "product_cat2": "cat2",
                  "product_cat": "cat3"}  # fmt: skip
STATS_COLUMNS = ("rs_end", "rs_first")
PRODUCT_COLUMNS = ("rp_end", "rp_first")


def max_id(root: str | Path, column: str) -> int:
    """The largest ``column`` of the dataset's ``products`` table (0 without one)."""
    from liverank.data.io import has_table, read_table

    if not has_table(root, "products"):
        return 0
    values = read_table(root, "products", [column])[column]
    return int(values.max()) if values.len() else 0


def stat_rows(flat: FlatRoomTables, live_id: np.ndarray, ts: np.ndarray) -> dict[str, np.ndarray]:
    """``rs_end`` / ``rs_first`` ``[Q]`` int32 of rows ``(live_id, ts)`` (module doc)."""
    live = np.asarray(live_id, np.int64)
    k_last = np.asarray(ts, np.int64) // WINDOW_MS - 1  # [Q] the last window complete at ts
    n = flat.live_ids.size
    idx = np.minimum(np.searchsorted(flat.live_ids, live), max(n - 1, 0))  # [Q]
    known = (flat.live_ids[idx] == live) if n else np.zeros(live.shape, bool)
    rel = np.minimum(k_last - flat.first_window[idx], flat.n_windows[idx] - 1)  # [Q]
    has = known & (rel >= 0)
    end = np.where(has, flat.offset[idx] + rel + 1, 0)
    first = np.where(known, flat.offset[idx] + 1, 0)
    return {"rs_end": end.astype(np.int32), "rs_first": first.astype(np.int32)}


def product_rows(
    flat: FlatRoomTables, live_id: np.ndarray, ts: np.ndarray
) -> dict[str, np.ndarray]:
    """``rp_end`` / ``rp_first`` ``[Q]`` int32: products introduced strictly before ``ts``."""
    live = np.asarray(live_id, np.int64)
    q = np.zeros(live.shape, np.int32)
    n = flat.product_rooms.size
    if n == 0:
        return {"rp_end": q, "rp_first": q.copy()}
    j = np.minimum(np.searchsorted(flat.product_rooms, live), n - 1)  # [Q]
    has = flat.product_rooms[j] == live
    rel = np.clip(np.asarray(ts, np.int64) - flat.product_t0, 0, flat.product_span - 1)
    end = np.searchsorted(flat.product_key, j * flat.product_span + rel, side="left")  # [Q]
    start = flat.product_start[j]
    some = has & (end > start)
    return {
        "rp_end": np.where(some, end, 0).astype(np.int32),  # 1 + (end - 1)
        "rp_first": np.where(has, start + 1, 0).astype(np.int32),
    }


def write_tables(out: Path, flat: FlatRoomTables, stats: bool, products: bool) -> list[str]:
    """Write the tables the columns point into; returns the file names."""
    files = []
    if stats:
        table = np.concatenate([np.zeros((1, flat.stats.shape[1])), flat.stats]).astype(np.float32)
        np.save(out / STATS_FILE, table)
        files.append(STATS_FILE)
    if products:
        table = np.concatenate([np.zeros((1, 4), np.int64), flat.products.astype(np.int64)])
        np.save(out / PRODUCTS_FILE, table)
        files.append(PRODUCTS_FILE)
    return files


def load_table(samples_dir: str | Path, name: str) -> np.ndarray:
    path = Path(samples_dir) / name
    if not path.exists():
        raise DataValidationError(
            "the samples point into a room sequence table that is missing; rebuild them with "
            "--room-stats / --room-products",
            file=str(path),
        )
    return np.load(path)


def gather_stats(
    table: np.ndarray, end: np.ndarray, first: np.ndarray, window: int
) -> torch.Tensor:
    """``room_stats [B, S, T]`` float32 (module doc)."""
    end = np.asarray(end, np.int64)[:, None]  # [B, 1]
    rows = end - window + 1 + np.arange(window)[None, :]  # [B, T]
    valid = (end > 0) & (rows >= np.asarray(first, np.int64)[:, None])
    picked = table[np.where(valid, rows, 0)]  # [B, T, S]; row 0 is zeros
    return torch.from_numpy(np.ascontiguousarray(picked.transpose(0, 2, 1)))


def gather_products(
    table: np.ndarray, end: np.ndarray, first: np.ndarray, length: int
) -> torch.Tensor:
    """``room_products [B, L, 4]`` int64, most recent last, zero-padded on the left."""
    end = np.asarray(end, np.int64)[:, None]
    rows = end - length + 1 + np.arange(length)[None, :]  # [B, L]
    valid = (end > 0) & (rows >= np.asarray(first, np.int64)[:, None])
    return torch.from_numpy(table[np.where(valid, rows, 0)])


def room_store(root: str | Path) -> RoomStatsStore:
    """The dataset's room statistics and product sequences (every event: the columns' pointers
    keep each row point in time)."""
    return RoomStatsStore.from_dataset(root)
