"""Online feature store: the state the features of a ranking request are computed from.

ARCHITECTURE section 7 / issue 4 ("no train/serve skew"). The ranking service asks for the
features of ``(user, candidate rooms, ts)``; they must equal, column for column, what the sample
builder (:mod:`liverank.data.samples`) writes for an impression of those rooms to that user at
``ts``. So the store keeps exactly the state the builder reads, and
:func:`liverank.serve.online_features.assemble_request` encodes it
with the builder's own encoders (:mod:`liverank.features.encoders`,
:func:`liverank.data.samples._sequence_columns`):

* static tables: user side features, author type and fans, room author / category / on-air
  interval, video tags (joined onto short-video events as they arrive);
* per user, the last ``seq_len`` live behaviours (``live_events`` except ``exit``, goods-bag opens and in-room product clicks) and the last
  ``seq_len`` short-video behaviours (``video_events`` except ``impression``), kept
  incrementally from event chunks with :meth:`SortedHistory.concat` +
  :meth:`SortedHistory.keep_last` (as the builder does between its shards);
* the rooms on air at a time (``start_ts <= ts < end_ts``).

Incremental updates are exact in any chunking: a user's last ``n`` rows of ``A + B`` are the last
``n`` of ``last_n(A) + B`` (rows at the same ``(user, ts)`` keep arrival order, the later being
more recent, as in the builder, whose arrival order is file order). A query at ``ts`` uses only
behaviours with ``ts' < ts``; it is exact when every observed event is older than ``ts``
(serving "now"). Observed events at or after ``ts`` are never
returned, but each takes a slot of the user's ``seq_len`` buffer: keep ``seq_len`` a few items
above the model's ``feature_map.seq_len`` to absorb behaviours that land in the same ms as the
request (:func:`~liverank.serve.online_features.assemble_request` accepts any larger store).

:class:`OnlineFeatureStore` is the backend interface (a Redis backend, kept up to
date by ``liverank stream``, is to implement the same methods); :class:`MemoryFeatureStore` is the embedded
in-memory backend. Reads take one reference to an immutable :class:`SortedHistory`, and writes
swap that reference, so a request never sees a half-applied chunk.

Example::

    >>> store = MemoryFeatureStore.from_dataset("data/tiny", seq_len=50)  # doctest: +SKIP
    >>> store.rooms_on_air(ts)  # doctest: +SKIP
    array([ 3, 17, 42])
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from liverank.data.io import read_meta, table_path
from liverank.data.schema import NOT_IN_LIVE_SEQUENCE, DatasetMeta
from liverank.errors import DataValidationError
from liverank.features import encoders as enc
from liverank.features.snapshot import Snapshot, SortedHistory
from liverank.serve.shopping_store import (
    PRODUCT_EVENT_COLUMNS,
    ROOM_PRODUCT_COLUMNS,
    ShoppingSource,
    ShoppingState,
)

log = logging.getLogger(__name__)

#: history columns of each domain (the builder's ``_live_history`` / ``_video_history``)
LIVE_HISTORY_COLUMNS: dict[str, type] = {
    "author": np.int64,
    "category": np.int64,
    "action": np.int64,
}
VIDEO_HISTORY_COLUMNS: dict[str, type] = {
    "author": np.int64,
    "tag": np.int64,
    "action": np.int64,
    "play": np.int64,
}
#: user side-feature columns (sample column -> ``users`` table column)
USER_COLUMNS: dict[str, str] = {
    "user_age": "age",
    "user_gender": "gender",
    "user_device": "device",
    "user_activity": "activity",
}
#: room columns returned by :meth:`OnlineFeatureStore.rooms`
ROOM_COLUMNS: tuple[str, ...] = (
    "author_id",
    "author_type",
    "author_fans",
    "room_category",
    "start_ts",
    "end_ts",
)
_LIVE_EVENT_COLUMNS = ("ts", "user_id", "live_id", "author_id", "event")
_VIDEO_EVENT_COLUMNS = ("ts", "user_id", "photo_id", "author_id", "event", "play_ms")


@dataclass(frozen=True)
class UserRow:
    """Side features of one user (``USER_COLUMNS`` -> code, 0 = unknown) and whether it is known."""

    codes: dict[str, int]
    known: bool


@dataclass(frozen=True)
class RoomRows:
    """Side features of ``B`` rooms: ``columns[c]`` ``[B]`` int64 for c in ``ROOM_COLUMNS``
    (all 0 for unknown rooms) and ``known`` ``[B]`` bool."""

    columns: dict[str, np.ndarray]
    known: np.ndarray


class OnlineFeatureStore(ABC):
    """What the serving path reads (and the stream engine writes) per request."""

    @property
    @abstractmethod
    def meta(self) -> DatasetMeta:
        """The dataset's clock (``start_ts``, ``day_offset_ms``) for ``day``/``hour`` features."""

    @property
    @abstractmethod
    def seq_len(self) -> int:
        """How many behaviours per user and domain the store keeps."""

    @property
    @abstractmethod
    def watermark_ts(self) -> int | None:
        """Newest observed event time (ms), None before any event: the feature freshness."""

    @abstractmethod
    def user(self, user_id: int) -> UserRow:
        """One user's side features; unknown users get zeros and ``known = False``."""

    @abstractmethod
    def rooms(self, live_ids: np.ndarray) -> RoomRows:
        """Side features of ``[B]`` rooms; unknown rooms get zeros and ``known = False``."""

    @abstractmethod
    def rooms_on_air(self, ts: int) -> np.ndarray:
        """``[R]`` ids (ascending) of the rooms with ``start_ts <= ts < end_ts``."""

    @abstractmethod
    def last_on_air_ts(self, ts: int) -> int | None:
        """The latest time ``<= ts`` at which some room is on air: ``ts`` itself when a room
        is on air then, else the last millisecond of the room that ended last before it;
        None when no room was on air by ``ts``."""

    @abstractmethod
    def live_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        """The user's last ``n`` live behaviours with ``ts' < ts`` (``Q = 1`` snapshot)."""

    @abstractmethod
    def video_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        """The user's last ``n`` short-video behaviours with ``ts' < ts`` (``Q = 1``)."""

    @abstractmethod
    def observe_live_events(self, events: pl.DataFrame) -> None:
        """Ingest a chunk of ``live_events`` rows (columns ``_LIVE_EVENT_COLUMNS``)."""

    @abstractmethod
    def observe_video_events(self, events: pl.DataFrame) -> None:
        """Ingest a chunk of ``video_events`` rows (columns ``_VIDEO_EVENT_COLUMNS``)."""

    @property
    def shopping(self) -> ShoppingSource | None:
        """The product histories and room products (``--shopping`` features), if this store
        keeps them; ``None`` otherwise (the default)."""
        return None


def _require(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{what} chunk lacks column(s) {missing} (has {df.columns})", column=missing[0]
        )


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each id in ``sorted_ids`` (clipped) and whether it is there: ``[B]``, ``[B]``."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == ids


def replay_events(
    store: OnlineFeatureStore, root: Path, as_of: int, chunk_rows: int = 2_000_000
) -> None:
    """Feed ``store`` the dataset's live and video events (and, for a store with shopping
    state, its product events and room products) with ``ts < as_of``, in file order,
    ``chunk_rows`` at a time (what both backends do to fill themselves from a dataset)."""
    tables = [
        ("live_events", _LIVE_EVENT_COLUMNS, store.observe_live_events),
        ("video_events", _VIDEO_EVENT_COLUMNS, store.observe_video_events),
    ]
    if store.shopping is not None:  # the shopping tables, when the store keeps them
        tables += [
            ("product_events", PRODUCT_EVENT_COLUMNS, store.shopping.observe_product_events),
            ("room_products", ROOM_PRODUCT_COLUMNS, store.shopping.observe_room_products),
        ]
    for name, columns, observe in tables:
        path = table_path(root, name)
        if not path.exists():
            raise DataValidationError(f"required table '{name}' is missing", file=str(path))
        for batch in pq.ParquetFile(path).iter_batches(chunk_rows, columns=list(columns)):
            chunk = pl.from_arrow(batch)
            assert isinstance(chunk, pl.DataFrame)
            observe(chunk.filter(pl.col("ts") < as_of))


def rooms_with_authors(rooms: pl.DataFrame, authors: pl.DataFrame) -> pl.DataFrame:
    """Rooms with their author's side features, encoded as the sample builder does (it joins
    authors on the impression's author_id, which the validator requires to be the room's)."""
    authors = authors.select(
        "author_id",
        pl.Series("author_type", enc.author_type_code(authors["author_type"])),
        pl.col("fans").cast(pl.Int64).alias("author_fans"),
    )
    return (
        rooms.select(
            pl.col("live_id").cast(pl.Int64),
            pl.col("author_id").cast(pl.Int64),
            pl.col("category").cast(pl.Int64).alias("room_category"),
            pl.col("start_ts").cast(pl.Int64),
            pl.col("end_ts").cast(pl.Int64),
        )
        .join(authors, on="author_id", how="left")
        .fill_null(0)
    )


class MemoryFeatureStore(OnlineFeatureStore):
    """The embedded in-memory backend (numpy arrays + two :class:`SortedHistory` buffers)."""

    def __init__(
        self,
        meta: DatasetMeta,
        users: pl.DataFrame,
        authors: pl.DataFrame,
        rooms: pl.DataFrame,
        videos: pl.DataFrame,
        seq_len: int = 50,
        products: pl.DataFrame | None = None,
    ) -> None:
        """Static tables in the canonical schema (``liverank.data.schema``); no events yet.
        With ``products`` the store also keeps the shopping state (:attr:`shopping`)."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        for df, cols, name in (
            (users, ("user_id", *USER_COLUMNS.values()), "users"),
            (authors, ("author_id", "author_type", "fans"), "authors"),
            (rooms, ("live_id", "author_id", "start_ts", "end_ts", "category"), "rooms"),
            (videos, ("photo_id", "tag"), "videos"),
        ):
            _require(df, cols, f"'{name}' table")
        self._meta, self._seq_len = meta, seq_len
        users = users.sort("user_id")
        self._user_ids = users["user_id"].cast(pl.Int64).to_numpy()  # [U]
        self._user_codes = {
            c: users[src].cast(pl.Int64).fill_null(0).to_numpy() for c, src in USER_COLUMNS.items()
        }
        rooms = rooms_with_authors(rooms, authors).sort("live_id")
        self._room_ids = rooms["live_id"].to_numpy()  # [R]
        self._room_cols = {c: rooms[c].cast(pl.Int64).to_numpy() for c in ROOM_COLUMNS}
        self._room_category = rooms.select("live_id", pl.col("room_category").alias("category"))
        self._video_tag = videos.select(
            pl.col("photo_id").cast(pl.Int64), pl.col("tag").cast(pl.Int64)
        )
        self._live = SortedHistory.empty(LIVE_HISTORY_COLUMNS)
        self._video = SortedHistory.empty(VIDEO_HISTORY_COLUMNS)
        self._watermark: int | None = None
        self._shopping = ShoppingState(products, seq_len) if products is not None else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dataset(
        cls,
        data_dir: str | Path,
        seq_len: int = 50,
        as_of_ts: int | None = None,
        *,
        chunk_rows: int = 2_000_000,
        shopping: bool = False,
    ) -> MemoryFeatureStore:
        """A store holding the dataset at ``data_dir`` as of ``as_of_ts`` (default: its end).

        Replays ``live_events`` and ``video_events`` with ``ts < as_of_ts`` in file order,
        ``chunk_rows`` rows at a time (memory: one chunk plus ``users x seq_len`` rows); with
        ``shopping`` also ``product_events`` and ``room_products`` into :attr:`shopping`.
        """
        root = Path(data_dir)
        meta = read_meta(root)
        as_of = meta.end_ts if as_of_ts is None else int(as_of_ts)
        started = time.perf_counter()

        def table(name: str) -> pl.DataFrame:
            path = table_path(root, name)
            if not path.exists():
                raise DataValidationError(f"required table '{name}' is missing", file=str(path))
            return pl.read_parquet(path)

        if shopping:  # the --shopping features: product histories and room products
            for t in ("products", "product_events", "room_products"):
                if not table_path(root, t).exists():
                    raise DataValidationError(
                        f"the shopping features need the '{t}' table, which this dataset "
                        "does not have",
                        file=str(table_path(root, t)),
                    )
        products = table("products") if shopping else None
        store = cls(
            meta,
            table("users"),
            table("authors"),
            table("rooms"),
            table("videos"),
            seq_len,
            products,
        )
        replay_events(store, root, as_of, chunk_rows)
        log.info(
            "online feature store of %s as of %d: %d live + %d video rows in %.2f s",
            meta.name,
            as_of,
            len(store._live),
            len(store._video),
            time.perf_counter() - started,
        )
        return store

    # ------------------------------------------------------------------ writes
    def observe_live_events(self, events: pl.DataFrame) -> None:
        """Append live behaviours (every event but ``NOT_IN_LIVE_SEQUENCE``), encoded like the
        builder."""
        _require(events, _LIVE_EVENT_COLUMNS, "live_events")
        ev = (
            events.filter(~pl.col("event").is_in(NOT_IN_LIVE_SEQUENCE))
            .select(_LIVE_EVENT_COLUMNS)
            .join(self._room_category, on="live_id", how="left", maintain_order="left")
        )
        cols = {
            "author": ev["author_id"].cast(pl.Int64).to_numpy(),
            "category": ev["category"].fill_null(0).to_numpy(),
            "action": enc.live_action_code(ev["event"]),
        }
        new = SortedHistory.build(ev["user_id"].to_numpy(), ev["ts"].to_numpy(), cols)
        self._live = self._live.concat(new).keep_last(self._seq_len)
        self._advance(events)

    def observe_video_events(self, events: pl.DataFrame) -> None:
        """Append short-video behaviours (every event but ``impression``)."""
        _require(events, _VIDEO_EVENT_COLUMNS, "video_events")
        ev = (
            events.filter(pl.col("event") != "impression")
            .select(_VIDEO_EVENT_COLUMNS)
            .join(self._video_tag, on="photo_id", how="left", maintain_order="left")
        )
        cols = {
            "author": ev["author_id"].cast(pl.Int64).to_numpy(),
            "tag": ev["tag"].fill_null(0).to_numpy(),
            "action": enc.video_action_code(ev["event"]),
            "play": enc.play_bucket(ev["play_ms"].fill_null(0).to_numpy()),
        }
        new = SortedHistory.build(ev["user_id"].to_numpy(), ev["ts"].to_numpy(), cols)
        self._video = self._video.concat(new).keep_last(self._seq_len)
        self._advance(events)

    def _advance(self, events: pl.DataFrame) -> None:
        if len(events):
            newest = int(events["ts"].max())
            self._watermark = newest if self._watermark is None else max(self._watermark, newest)

    # ------------------------------------------------------------------ reads
    @property
    def meta(self) -> DatasetMeta:
        return self._meta

    @property
    def seq_len(self) -> int:
        return self._seq_len

    @property
    def watermark_ts(self) -> int | None:
        return self._watermark

    def user(self, user_id: int) -> UserRow:
        pos, known = _lookup(self._user_ids, np.array([user_id], dtype=np.int64))
        if not known[0]:
            return UserRow({c: 0 for c in USER_COLUMNS}, False)
        return UserRow({c: int(v[pos[0]]) for c, v in self._user_codes.items()}, True)

    def rooms(self, live_ids: np.ndarray) -> RoomRows:
        ids = np.asarray(live_ids, dtype=np.int64)  # [B]
        pos, known = _lookup(self._room_ids, ids)
        if len(self._room_ids) == 0:
            return RoomRows({c: np.zeros(len(ids), np.int64) for c in ROOM_COLUMNS}, known)
        cols = {c: np.where(known, v[pos], 0) for c, v in self._room_cols.items()}  # [B] each
        return RoomRows(cols, known)

    def rooms_on_air(self, ts: int) -> np.ndarray:
        on = (self._room_cols["start_ts"] <= ts) & (ts < self._room_cols["end_ts"])  # [R]
        return self._room_ids[on]

    def last_on_air_ts(self, ts: int) -> int | None:
        start, end = self._room_cols["start_ts"], self._room_cols["end_ts"]  # [R]
        aired = (start <= ts) & (start < end)  # [R] rooms that went on air by ts
        if not aired.any():
            return None
        return int(min(ts, int(end[aired].max()) - 1))

    def live_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        return self._live.last_n_before(np.array([user_id]), np.array([ts]), n)

    def video_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        return self._video.last_n_before(np.array([user_id]), np.array([ts]), n)

    @property
    def shopping(self) -> ShoppingSource | None:
        return self._shopping

    def history_rows(self) -> dict[str, int]:
        """Rows held per domain (at most ``users x seq_len`` each)."""
        rows = {"live": len(self._live), "video": len(self._video)}
        return rows | (self._shopping.rows() if self._shopping is not None else {})
