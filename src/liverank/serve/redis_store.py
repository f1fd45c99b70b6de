"""Redis backend of the online feature store (issue 4), shared by ``liverank stream`` and serve.

:class:`RedisFeatureStore` implements :class:`~liverank.serve.feature_store.OnlineFeatureStore`
with the semantics of :class:`~liverank.serve.feature_store.MemoryFeatureStore` (same encoders,
same bounded per-user buffers, behaviours strictly before ``ts``), so ``assemble_request`` gives
identical batches from either backend (``tests/serve/test_redis_store.py``). One process (the
stream worker) writes, any number of services read.

Key layout under ``<prefix>`` (ids as Redis hash fields in decimal, values packed big-endian
int64 so a reply decodes with one ``np.frombuffer``):

* ``:meta`` (DatasetMeta JSON), ``:seq_len`` (buffer size per user and domain);
* ``:users`` hash ``user_id -> [age, gender, device, activity]``; ``:rooms`` hash
  ``live_id -> ROOM_COLUMNS``; ``:rooms:end`` sorted set ``live_id`` by ``end_ts`` (rooms on
  air); ``:videos`` hash ``photo_id -> [tag, duration_ms]`` (-1: unknown) -- the static tables, written by :meth:`load_static`;
* ``:live:<user>`` / ``:video:<user>`` sorted sets, one member per behaviour: score ``ts``,
  member ``[seq, ts, codes...]`` packed. ``seq`` (from the counter ``:seq``) grows with arrival,
  so members at equal ``ts`` sort in arrival order (the later the more recent, as
  :class:`~liverank.features.snapshot.SortedHistory` does) and ``ZREMRANGEBYRANK 0 -(n+1)``
  keeps exactly the ``n`` most recent behaviours (``SortedHistory.keep_last``), also for
  events that arrive late;
* ``:long:live:<user>`` / ``:long:video:<user>`` (only with ``long_len > 0``, the Cross /
  FARM long histories, :mod:`liverank.features.long_history`): the same packing with the
  history file's columns (``lv`` last), capped at ``long_len``; live long-view rows come from
  the visits of the stream (:mod:`liverank.stream.long_views`), whose open visits are kept
  under ``:visits`` (packed ``[user, live, enter_ts, emitted]`` rows, rewritten with each
  chunk in the same transaction); ``:long_len``;
* ``:watermark`` (one member, score = newest event ts, raised with ``ZADD GT``) and ``:applied``
  (hash ``feed name -> stream offset``: what a stream feed has applied, for exactly-once
  updates after a restart, see :mod:`liverank.serve.store_feed`).

Writes: a chunk is encoded and grouped by user with numpy (one sort), then applied in one
``MULTI``/``EXEC`` pipeline (one ``ZADD`` + one ``ZREMRANGEBYRANK`` per user, watermark and
progress): a reader never sees half a chunk. Reads: ``user`` 1 round trip, ``rooms`` 1
(``HMGET``), each history 1 (``ZRANGE BYSCORE REV LIMIT``), watermark 1, ``rooms_on_air`` 2.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import polars as pl

from liverank.data.io import read_meta, table_path
from liverank.data.schema import NOT_IN_LIVE_SEQUENCE, DatasetMeta
from liverank.errors import ConfigError, DataValidationError
from liverank.features import encoders as enc
from liverank.features import long_history as lh
from liverank.features.snapshot import Snapshot
from liverank.serve import redis_shopping
from liverank.serve.feature_store import (
    _LIVE_EVENT_COLUMNS,
    _VIDEO_EVENT_COLUMNS,
    LIVE_HISTORY_COLUMNS,
    ROOM_COLUMNS,
    USER_COLUMNS,
    VIDEO_HISTORY_COLUMNS,
    OnlineFeatureStore,
    RoomRows,
    UserRow,
    _require,
    replay_events,
    rooms_with_authors,
)
from liverank.serve.shopping_store import ShoppingSource
from liverank.stream import long_views

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "liverank:features"
_HISTORY = {
    "live": tuple(LIVE_HISTORY_COLUMNS),
    "video": tuple(VIDEO_HISTORY_COLUMNS),
    **redis_shopping.HISTORY_COLUMNS,
}
_HSET_BATCH = 10_000  # hash fields per HSET command when loading static tables
#: HMGET of the space-separated ids in ARGV[2], replying two bulk strings (the values
#: concatenated, a missing one as ARGV[1] zero bytes; a "1"/"0" flag per id): redis-py encodes
#: one argument and parses two replies instead of B each way
_PACKED_HMGET = """
local ids = {}
for id in string.gmatch(ARGV[2], '%S+') do ids[#ids + 1] = id end
local vals = redis.call('HMGET', KEYS[1], unpack(ids))
local flags = {}
for i = 1, #vals do
  if vals[i] then flags[i] = '1' else vals[i] = ARGV[1]; flags[i] = '0' end
end
return {table.concat(vals), table.concat(flags)}
"""
_SCRIPT_BATCH = 4_000  # fields per script call (Lua's unpack limit is about 8,000)


def parse_store_url(url: str) -> tuple[str, str]:
    """``redis://host:port[/db[/prefix]]`` -> (redis-py URL, key prefix)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"feature store URL must be redis://host:port/DB/PREFIX, got '{url}'")
    segments = [s for s in parts.path.split("/") if s]
    db = segments[0] if segments else "0"
    if not db.isdigit():
        raise ConfigError(f"feature store URL '{url}': database '{db}' is not a number")
    prefix = "/".join(segments[1:]) or DEFAULT_PREFIX
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, "")), prefix


def _pack(columns: list[np.ndarray]) -> list[bytes]:
    """``k`` ``[N]`` int arrays -> ``N`` values of ``8k`` bytes (big-endian int64 rows)."""
    rows = np.empty((len(columns[0]), len(columns)), dtype=">i8")  # [N, k]
    for j, col in enumerate(columns):
        rows[:, j] = col
    return rows.view(f"V{8 * len(columns)}").ravel().tolist()


def _unpack(values: list[bytes | None], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Replies of packed rows (None = missing) -> ``[N, k]`` int64 (0 where missing), ``[N]``."""
    zero = bytes(8 * k)
    known = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))  # [N]
    blob = b"".join(v if v is not None else zero for v in values)
    return np.frombuffer(blob, dtype=">i8").reshape(len(values), k).astype(np.int64), known


class RedisFeatureStore(OnlineFeatureStore):
    """Online feature store in Redis (see the module doc for the key layout)."""

    def __init__(
        self,
        client,
        prefix: str = DEFAULT_PREFIX,
        seq_len: int | None = None,
        long_len: int | None = None,
    ) -> None:
        """A store at ``prefix``. ``seq_len`` is required before :meth:`load_static` and must
        match the stored one after (None: take the stored one). ``long_len`` > 0 also keeps
        each user's last ``long_len`` long-history rows per domain (the module doc); it too must
        match the stored one (None: the stored one, or 0 for a new store)."""
        self.client, self.prefix = client, prefix
        stored_long = client.get(self._key("long_len"))
        if stored_long is not None and long_len is not None and int(stored_long) != long_len:
            raise ConfigError(
                f"Redis feature store '{prefix}' keeps {int(stored_long)} long-history rows per "
                f"user, asked for {long_len}; use another prefix or long_len={int(stored_long)}"
            )
        self._long_len = int(long_len) if long_len is not None else int(stored_long or 0)
        if self._long_len < 0:
            raise ValueError(f"long_len must be >= 0, got {self._long_len}")
        self._visits: pl.DataFrame | None = None  # open visits, read on the first live chunk
        stored = client.get(self._key("seq_len"))
        if stored is not None and seq_len is not None and int(stored) != seq_len:
            raise ConfigError(
                f"Redis feature store '{prefix}' keeps {int(stored)} behaviours per user, "
                f"asked for {seq_len}; use another prefix or seq_len={int(stored)}"
            )
        if seq_len is None and stored is None:
            raise ConfigError(
                f"no feature store at Redis prefix '{prefix}': run `liverank stream --store` "
                "(or RedisFeatureStore(...).load_static) first"
            )
        n = seq_len if seq_len is not None else int(stored)
        if n < 1:
            raise ValueError(f"seq_len must be >= 1, got {n}")
        self._seq_len = n
        self._meta: DatasetMeta | None = None
        self._packed_hmget = client.register_script(_PACKED_HMGET)
        self._shopping = (
            redis_shopping.RedisShoppingState(self)
            if client.exists(self._key("products"))
            else None
        )

    @classmethod
    def from_url(
        cls, url: str, seq_len: int | None = None, long_len: int | None = None
    ) -> RedisFeatureStore:
        """Connect to ``redis://host:port/DB/PREFIX`` (see :func:`parse_store_url`)."""
        from liverank.stream.redis_streams import connect

        redis_url, prefix = parse_store_url(url)
        return cls(connect(redis_url), prefix, seq_len, long_len)

    @property
    def long_len(self) -> int:
        """Long-history rows kept per user and domain (0: none kept)."""
        return self._long_len

    def _key(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    @property
    def loaded(self) -> bool:
        """True once :meth:`load_static` has written the static tables."""
        return bool(self.client.exists(self._key("meta")))

    # ------------------------------------------------------------------ static tables
    def load_static(self, data_dir: str | Path, *, shopping: bool = False) -> None:
        """Write the dataset's static tables (users, authors, rooms, videos) and its meta;
        with ``shopping`` also the products table, so that the store keeps the shopping state
        (:attr:`shopping`, :mod:`liverank.serve.redis_shopping`)."""
        root = Path(data_dir)
        tables = {}
        for name in ("users", "authors", "rooms", "videos", *(("products",) if shopping else ())):
            path = table_path(root, name)
            if not path.exists():
                raise DataValidationError(f"required table '{name}' is missing", file=str(path))
            tables[name] = pl.read_parquet(path)
        users, authors, rooms, videos = (tables[n] for n in ("users", "authors", "rooms", "videos"))
        for df, cols, name in (
            (users, ("user_id", *USER_COLUMNS.values()), "users"),
            (authors, ("author_id", "author_type", "fans"), "authors"),
            (rooms, ("live_id", "author_id", "start_ts", "end_ts", "category"), "rooms"),
            (videos, ("photo_id", "tag"), "videos"),
        ):
            _require(df, cols, f"'{name}' table")
        rooms = rooms_with_authors(rooms, authors)  # the same join as MemoryFeatureStore
        user_codes = [
            users[s].cast(pl.Int64).fill_null(0).to_numpy() for s in USER_COLUMNS.values()
        ]
        pipe = self.client.pipeline(transaction=True)
        for key in ("users", "rooms", "rooms:end", "videos", "products"):
            pipe.delete(self._key(key))
        if shopping:
            products = tables["products"]
            _require(products, ("product_id", "cat3"), "'products' table")
            cats = products["cat3"].cast(pl.Int64).fill_null(0).to_numpy()
            self._hset(pipe, "products", products["product_id"].to_numpy(), _pack([cats]))
        self._hset(pipe, "users", users["user_id"].to_numpy(), _pack(user_codes))
        room_ids = rooms["live_id"].to_numpy()  # [R]
        self._hset(pipe, "rooms", room_ids, _pack([rooms[c].to_numpy() for c in ROOM_COLUMNS]))
        if len(rooms):
            end_member = _pack([room_ids])
            pipe.zadd(
                self._key("rooms:end"),
                dict(zip(end_member, rooms["end_ts"].to_list(), strict=True)),
            )
        tags = videos["tag"].cast(pl.Int64).fill_null(0).to_numpy()
        if "duration_ms" in videos.columns:
            duration = videos["duration_ms"].cast(pl.Int64).fill_null(-1).to_numpy()
        else:
            duration = np.full(len(videos), -1, dtype=np.int64)
        self._hset(pipe, "videos", videos["photo_id"].to_numpy(), _pack([tags, duration]))
        meta = read_meta(root)
        pipe.set(self._key("meta"), json.dumps(asdict(meta)))
        pipe.set(self._key("seq_len"), self._seq_len)
        pipe.set(self._key("long_len"), self._long_len)
        pipe.execute()
        self._meta = meta
        self._shopping = redis_shopping.RedisShoppingState(self) if shopping else None
        log.info(
            "Redis feature store '%s': static tables of %s written (%d users, %d rooms, %d videos)",
            self.prefix, meta.name, len(users), len(rooms), len(videos),
        )  # fmt: skip

    def _hset(self, pipe, name: str, ids: np.ndarray, values: list[bytes]) -> None:
        keys = ids.astype(np.int64).tolist()
        for start in range(0, len(keys), _HSET_BATCH):
            end = start + _HSET_BATCH
            pipe.hset(
                self._key(name), mapping=dict(zip(keys[start:end], values[start:end], strict=True))
            )

    def replay_dataset(
        self, data_dir: str | Path, as_of_ts: int | None = None, *, chunk_rows: int = 2_000_000
    ) -> None:
        """Observe the dataset's events with ``ts < as_of_ts`` (default: its end) in file order,
        as :meth:`MemoryFeatureStore.from_dataset` does (load the static tables first); with
        long histories, the long views known at ``as_of_ts - 1`` are then emitted too."""
        root = Path(data_dir)
        as_of = self.meta.end_ts if as_of_ts is None else int(as_of_ts)
        started = time.perf_counter()
        replay_events(self, root, as_of, chunk_rows)
        if self._long_len:
            self.advance_long_views(as_of - 1)
        log.info("Redis feature store replayed %s in %.2f s", root, time.perf_counter() - started)

    # ------------------------------------------------------------------ writes
    def observe_live_events(
        self, events: pl.DataFrame, *, progress: tuple[str, int] | None = None
    ) -> None:
        """Append live behaviours (every event but ``NOT_IN_LIVE_SEQUENCE``), encoded like the
        builder; with long histories also their long-history rows and the long views the chunk
        makes known (:mod:`liverank.stream.long_views`).

        ``author_id`` may be missing (stream rows): it is then the room's author. ``progress =
        (feed, offset)`` is recorded in the same transaction (:meth:`applied_offset`).
        """
        _require(events, tuple(c for c in _LIVE_EVENT_COLUMNS if c != "author_id"), "live_events")
        ev = events.filter(~pl.col("event").is_in(NOT_IN_LIVE_SEQUENCE))
        room = self._room_frame(ev["live_id"].unique().to_numpy())
        ev = ev.join(room, on="live_id", how="left", maintain_order="left")
        author = ev["author_id"] if "author_id" in events.columns else ev["room_author"]
        user, ts = ev["user_id"].to_numpy(), ev["ts"].to_numpy()
        cols = [
            author.cast(pl.Int64).fill_null(0).to_numpy(),
            ev["category"].fill_null(0).to_numpy(),
            enc.live_action_code(ev["event"]),
        ]
        rows = [("live", user, ts, cols, self._seq_len)]
        state = None
        if self._long_len:
            wm = int(events["ts"].max()) if len(events) else None
            state, lv = self._long_views(events, wm)
            lv_zero = np.zeros(len(user), dtype=np.int64)
            rows += [("long:live", user, ts, [*cols, lv_zero], self._long_len),
                     self._long_view_part(lv)]  # fmt: skip
        self._write(rows, events, progress, visits=state)

    def observe_video_events(
        self, events: pl.DataFrame, *, progress: tuple[str, int] | None = None
    ) -> None:
        """Append short-video behaviours (every event but ``impression``)."""
        _require(events, _VIDEO_EVENT_COLUMNS, "video_events")
        ev = events.filter(pl.col("event") != "impression")
        photos = ev["photo_id"].unique().cast(pl.Int64).to_numpy()
        values = self._hmget("videos", photos, 2)[0]  # [P, 2]: tag, duration_ms (-1 unknown)
        videos = pl.DataFrame({"photo_id": photos, "tag": values[:, 0], "dur": values[:, 1]})
        ev = ev.join(videos, on="photo_id", how="left", maintain_order="left")
        play_ms = ev["play_ms"].fill_null(0).to_numpy()
        user, ts = ev["user_id"].to_numpy(), ev["ts"].to_numpy()
        cols = [
            ev["author_id"].cast(pl.Int64).to_numpy(),
            ev["tag"].fill_null(0).to_numpy(),
            enc.video_action_code(ev["event"]),
            enc.play_bucket(play_ms),
        ]
        rows = [("video", user, ts, cols, self._seq_len)]
        if self._long_len:
            lv = lh.long_play(ev["event"], play_ms, ev["dur"])
            rows.append(("long:video", user, ts, [*cols, lv], self._long_len))
        self._write(rows, events, progress)

    def advance_long_views(self, watermark: int) -> None:
        """Emit the long views known at ``watermark`` (every event up to it has been observed):
        users still in a room ``long_view_ms`` after entering it. The stream does this with
        every chunk; a replay that stops at ``as_of`` calls it once for ``as_of - 1``."""
        if not self._long_len:
            return
        state, lv = self._long_views(None, watermark)
        self._write([self._long_view_part(lv)], None, None, visits=state)

    def _long_view_part(
        self, lv: pl.DataFrame
    ) -> tuple[str, np.ndarray, np.ndarray, list[np.ndarray], int]:
        """The ``_write`` part of long views (``user_id, live_id, ts``): history rows with the
        room's author and category, the long-view action and ``lv = 1``."""
        lv = lv.join(
            self._room_frame(lv["live_id"].unique().to_numpy()),
            on="live_id",
            how="left",
            maintain_order="left",
        )
        n = len(lv)
        cols = [
            lv["room_author"].fill_null(0).to_numpy(),
            lv["category"].fill_null(0).to_numpy(),
            np.full(n, enc.LIVE_LONG_VIEW_CODE, dtype=np.int64),
            np.ones(n, dtype=np.int64),
        ]
        return "long:live", lv["user_id"].to_numpy(), lv["ts"].to_numpy(), cols, self._long_len

    def _long_views(
        self, events: pl.DataFrame | None, watermark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Run a chunk through the visit rules: (open visits after it, its long views)."""
        if self._visits is None:
            raw = self.client.get(self._key("visits"))
            got = np.frombuffer(raw or b"", dtype=">i8").reshape(-1, 4).astype(np.int64)
            self._visits = pl.DataFrame(
                {
                    "user_id": got[:, 0],
                    "live_id": got[:, 1],
                    "enter_ts": got[:, 2],
                    "emitted": got[:, 3].astype(bool),
                },
                schema=long_views.OPEN_COLUMNS,
            )
        visits = self._visits
        if events is None:
            events = pl.DataFrame(
                schema={
                    "ts": pl.Int64,
                    "user_id": pl.Int64,
                    "live_id": pl.Int64,
                    "event": pl.String,
                }
            )
        if watermark is None:  # an empty chunk: nothing new is known
            none = pl.DataFrame(schema={"user_id": pl.Int64, "live_id": pl.Int64, "ts": pl.Int64})
            return visits, none
        lives = np.unique(
            np.concatenate([visits["live_id"].to_numpy(), events["live_id"].to_numpy()])
        ).astype(np.int64)
        rooms = self.rooms(lives)
        room_end = pl.DataFrame(
            {"live_id": lives[rooms.known], "end_ts": rooms.columns["end_ts"][rooms.known]}
        )
        return long_views.advance(
            visits, events.select("ts", "user_id", "live_id", "event"), room_end, watermark,
            self.meta.long_view_ms,
        )  # fmt: skip

    def _room_frame(self, live_ids: np.ndarray) -> pl.DataFrame:
        """``live_id``, ``room_author``, ``category`` of the given rooms (known ones)."""
        ids = np.asarray(live_ids, dtype=np.int64)
        values, known = self._hmget("rooms", ids, len(ROOM_COLUMNS))  # [B, 6], [B]
        return pl.DataFrame(
            {
                "live_id": ids[known],
                "room_author": values[known, ROOM_COLUMNS.index("author_id")],
                "category": values[known, ROOM_COLUMNS.index("room_category")],
            },
            schema={"live_id": pl.Int64, "room_author": pl.Int64, "category": pl.Int64},
        )

    def _write(
        self,
        parts: list[tuple[str, np.ndarray, np.ndarray, list[np.ndarray], int]],
        events: pl.DataFrame | None,
        progress: tuple[str, int] | None,
        visits: pl.DataFrame | None = None,
    ) -> None:
        """Add behaviours to the users' sorted sets, capped, in one transaction.

        ``parts``: ``(key domain, user [M], ts [M], columns [M] each, cap)``; members get
        arrival numbers in the order of ``parts`` (so equal-``ts`` rows keep it). The watermark
        (from ``events``), the feed's progress and the open visits are written with them.
        """
        total = sum(len(p[1]) for p in parts)
        pipe = self.client.pipeline(transaction=True)
        if total:
            base = int(self.client.incrby(self._key("seq"), total)) - total
            for name, user, ts, cols, cap in parts:
                user = np.asarray(user, dtype=np.int64)  # [M]
                ts = np.asarray(ts, dtype=np.int64)  # [M]
                m = len(user)
                if not m:
                    continue
                seq = base + np.arange(m, dtype=np.int64)  # arrival order
                base += m
                order = np.argsort(user, kind="stable")  # group by user, arrival order kept
                members = _pack([seq[order], ts[order], *(c[order] for c in cols)])
                users, starts = np.unique(user[order], return_index=True)  # [U], [U]
                ends = np.append(starts[1:], m)
                scores = ts[order].tolist()
                for u, s, e in zip(users.tolist(), starts.tolist(), ends.tolist(), strict=True):
                    key = self._key(name, u)
                    pipe.zadd(key, dict(zip(members[s:e], scores[s:e], strict=True)))
                    pipe.zremrangebyrank(key, 0, -(cap + 1))
        if events is not None and len(events):
            pipe.zadd(self._key("watermark"), {"ts": int(events["ts"].max())}, gt=True)
        if progress is not None:
            pipe.hset(self._key("applied"), progress[0], int(progress[1]))
        if visits is not None:
            packed = np.stack(
                [visits[c].cast(pl.Int64).to_numpy() for c in long_views.OPEN_COLUMNS], axis=1
            ).astype(">i8")  # [V, 4]
            pipe.set(self._key("visits"), packed.tobytes())
        if len(pipe):
            pipe.execute()
        if visits is not None:
            self._visits = visits

    def applied_offset(self, feed: str) -> int:
        """The progress a stream feed recorded with its last write (0: none)."""
        value = self.client.hget(self._key("applied"), feed)
        return 0 if value is None else int(value)

    # ------------------------------------------------------------------ reads
    @property
    def meta(self) -> DatasetMeta:
        if self._meta is None:
            raw = self.client.get(self._key("meta"))
            if raw is None:
                raise ConfigError(f"Redis feature store '{self.prefix}' has no static tables yet")
            self._meta = DatasetMeta(**json.loads(raw))
        return self._meta

    @property
    def seq_len(self) -> int:
        return self._seq_len

    @property
    def watermark_ts(self) -> int | None:
        score = self.client.zscore(self._key("watermark"), "ts")
        return None if score is None else int(score)

    def _hmget(self, name: str, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Packed values of ``[B]`` ids in hash ``name``: ``[B, k]`` int64 (0: missing), ``[B]``."""
        values, known = [], []
        for start in range(0, len(ids), _SCRIPT_BATCH):
            part = ids[start : start + _SCRIPT_BATCH]
            joined = " ".join(map(str, part.tolist()))
            blob, flags = self._packed_hmget(keys=[self._key(name)], args=[bytes(8 * k), joined])
            values.append(np.frombuffer(blob, dtype=">i8").reshape(len(part), k))
            known.append(np.frombuffer(flags, dtype=np.uint8) == ord("1"))
        if not values:
            return np.zeros((0, k), dtype=np.int64), np.zeros(0, dtype=bool)
        return np.concatenate(values).astype(np.int64), np.concatenate(known)

    def user(self, user_id: int) -> UserRow:
        values, known = _unpack([self.client.hget(self._key("users"), int(user_id))], 4)
        return UserRow(dict(zip(USER_COLUMNS, values[0].tolist(), strict=True)), bool(known[0]))

    def rooms(self, live_ids: np.ndarray) -> RoomRows:
        ids = np.asarray(live_ids, dtype=np.int64)  # [B]
        values, known = self._hmget("rooms", ids, len(ROOM_COLUMNS))  # [B, 6], [B]
        return RoomRows({c: values[:, j].copy() for j, c in enumerate(ROOM_COLUMNS)}, known)

    def rooms_on_air(self, ts: int) -> np.ndarray:
        ending = self.client.zrangebyscore(self._key("rooms:end"), f"({int(ts)}", "+inf")
        ids = np.frombuffer(b"".join(ending), dtype=">i8").astype(np.int64)  # [R'] end > ts
        rows = self.rooms(ids)
        return np.sort(ids[rows.known & (rows.columns["start_ts"] <= ts)])

    def last_on_air_ts(self, ts: int) -> int | None:
        if len(self.rooms_on_air(ts)):
            return int(ts)
        # none on air at ts: the room that ended last at or before ts (rooms:end is by end_ts)
        last = self.client.zrevrangebyscore(
            self._key("rooms:end"), int(ts), "-inf", start=0, num=1, withscores=True
        )
        return int(last[0][1]) - 1 if last else None

    def _history(self, domain: str, user_id: int, ts: int, n: int) -> Snapshot:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        names = _HISTORY[domain]
        members = self.client.zrevrangebyscore(
            self._key(domain, int(user_id)), f"({int(ts)}", "-inf", start=0, num=n
        )  # most recent first, strictly before ts
        got = np.frombuffer(b"".join(members), dtype=">i8").reshape(len(members), 2 + len(names))
        out = np.zeros((2 + len(names), 1, n), dtype=np.int64)  # [2 + k, Q = 1, n]
        out[:, 0, : len(members)] = got.T
        cols = {name: out[2 + j] for j, name in enumerate(names)}
        return Snapshot(cols, out[1], np.array([len(members)], dtype=np.int64))

    def live_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        return self._history("live", user_id, ts, n)

    def video_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        return self._history("video", user_id, ts, n)

    @property
    def shopping(self) -> ShoppingSource | None:
        """The product histories and room products, when the static tables were written with
        ``shopping`` (:mod:`liverank.serve.redis_shopping`); ``None`` otherwise."""
        return self._shopping

    def long_history(self, user_id: int, ts: int) -> dict[str, pl.DataFrame]:
        """The user's long-history rows strictly before ``ts``, per domain: at most
        ``long_len`` (the most recent), oldest first, with ``user_id, ts`` and the history
        file's columns (:data:`~liverank.features.long_history.DOMAIN_COLUMNS`)."""
        if not self._long_len:
            raise ConfigError(
                f"Redis feature store '{self.prefix}' keeps no long histories (long_len 0): "
                "run `liverank stream --store URL --store-long-len K`"
            )
        pipe = self.client.pipeline(transaction=False)
        for domain in lh.DOMAIN_COLUMNS:
            pipe.zrevrangebyscore(
                self._key("long", domain, int(user_id)), f"({int(ts)}", "-inf", 0, self._long_len
            )  # most recent first, strictly before ts
        out = {}
        for (domain, names), members in zip(lh.DOMAIN_COLUMNS.items(), pipe.execute(), strict=True):
            got = np.frombuffer(b"".join(members), dtype=">i8").reshape(-1, 2 + len(names))[::-1]
            out[domain] = pl.DataFrame(
                {
                    "user_id": np.full(len(got), int(user_id), dtype=np.int64),
                    "ts": got[:, 1].astype(np.int64),
                    **{c: got[:, 2 + j].astype(np.int64) for j, c in enumerate(names)},
                }
            )
        return out
