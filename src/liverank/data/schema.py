"""The canonical data model (ARCHITECTURE section 2).

Every source (the simulator, KuaiLive loaders, a user's own logs) is converted to these Parquet
tables. Conventions:

* ids are ``Int64`` and start at 1; ``0`` means "none" (no product, padding);
* timestamps are epoch milliseconds, ``Int64``, UTC;
* categorical side features are small integer codes (``Int32``), ``0`` = unknown;
* ``event`` columns are strings from a closed set (``EVENTS``);
* a dataset directory holds one ``<table>.parquet`` per table plus ``meta.json``
  (see :class:`DatasetMeta`).

Visits. There is no session id in real logs, so a visit is reconstructed: an impression of room
``r`` to user ``u`` at time ``t`` is *clicked* when ``u`` has an ``enter`` event in ``r`` at a time
in ``[t, t + CLICK_WINDOW_MS)`` that comes before the next impression of ``r`` to ``u``. The visit
lasts from that ``enter`` to the next ``exit`` of ``u`` in ``r`` (or the room's ``end_ts`` if
none); every behaviour of ``u`` in ``r`` inside that interval belongs to the visit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

#: Maximum delay between an impression and the ``enter`` that makes it a click.
CLICK_WINDOW_MS = 60_000
#: Watch time that makes an effective view (evtr).
EFFECTIVE_VIEW_MS = 3_000
#: Default watch time that makes a long view (lvtr); datasets may override it in meta.json.
DEFAULT_LONG_VIEW_MS = 60_000

#: live behaviours; new events are appended (a code is 1 + the index, so codes never move).
#: ``bag_open`` / ``product_click``: the goods bag opened, a product in it clicked (eLiveRec)
LIVE_EVENTS = (
    "enter",
    "exit",
    "like",
    "comment",
    "gift",
    "follow",
    "cart_click",
    "buy",
    "bag_open",
    "product_click",
)
#: live events that are not part of a user's live behaviour sequence: ``exit`` closes a visit,
#: goods-bag opens and product clicks belong to the product domain (eLiveRec's product-click
#: sequence, not the watched-channel one)
NOT_IN_LIVE_SEQUENCE = ("exit", "bag_open", "product_click")
VIDEO_EVENTS = ("impression", "play", "like", "comment", "follow", "share")
PRODUCT_EVENTS = ("click", "cart", "buy")
AUTHOR_TYPES = ("talent_show", "shopping", "chat", "game")

#: Closed sets of string values, by (table, column).
EVENTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("live_events", "event"): LIVE_EVENTS,
    ("video_events", "event"): VIDEO_EVENTS,
    ("product_events", "event"): PRODUCT_EVENTS,
    ("authors", "author_type"): AUTHOR_TYPES,
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    doc: str
    #: float-vector columns: ``pl.List(pl.Float32)`` with this many elements (set in meta.json).
    vector: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    #: columns that must be unique (primary key)
    key: tuple[str, ...] = ()
    #: the event-time column, if the table is an event log (must be >= 0)
    time_column: str | None = None
    #: whether a dataset may omit the table (e.g. no product domain)
    optional: bool = False
    #: foreign keys: column -> (table, column)
    references: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


I64, I32, F64, F32, STR = pl.Int64(), pl.Int32(), pl.Float64(), pl.Float32(), pl.Utf8()
VEC = pl.List(pl.Float32())

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "users",
            "one row per user",
            (
                Column("user_id", I64, "user id (>= 1)"),
                Column("age", I32, "age bucket code, 0 = unknown"),
                Column("gender", I32, "gender code, 0 = unknown"),
                Column("device", I32, "device price band code, 0 = unknown"),
                Column("activity", I32, "activity group: 1 low, 2 mid, 3 high; 0 = unknown"),
            ),
            key=("user_id",),
        ),
        Table(
            "authors",
            "one row per streamer / short-video creator (one id space)",
            (
                Column("author_id", I64, "author id (>= 1)"),
                Column("category", I32, "content category code (>= 1)"),
                Column("author_type", STR, "talent_show | shopping | chat | game"),
                Column("fans", I32, "follower-count bucket code, 0 = unknown"),
            ),
            key=("author_id",),
        ),
        Table(
            "rooms",
            "one row per live broadcast",
            (
                Column("live_id", I64, "room id (>= 1)"),
                Column("author_id", I64, "owner"),
                Column("start_ts", I64, "on-air start, epoch ms"),
                Column("end_ts", I64, "on-air end, epoch ms (> start_ts)"),
                Column("category", I32, "room category code"),
            ),
            key=("live_id",),
            references={"author_id": ("authors", "author_id")},
        ),
        Table(
            "live_impressions",
            "one exposure of a room to a user; a request's impressions form its slate",
            (
                Column("request_id", I64, "ranking request id"),
                Column("ts", I64, "exposure time, epoch ms"),
                Column("user_id", I64, "user"),
                Column("live_id", I64, "room shown"),
                Column("author_id", I64, "room's author"),
                Column("position", I32, "slot in the slate, 0-based"),
                Column("surface", STR, "where the slate was shown (e.g. 'slide', 'explore')"),
            ),
            key=("request_id", "position"),
            time_column="ts",
            references={
                "user_id": ("users", "user_id"),
                "live_id": ("rooms", "live_id"),
                "author_id": ("authors", "author_id"),
            },
        ),
        Table(
            "live_events",
            "one behaviour in a room",
            (
                Column("ts", I64, "event time, epoch ms"),
                Column("user_id", I64, "user"),
                Column("live_id", I64, "room"),
                Column("author_id", I64, "room's author"),
                Column(
                    "event",
                    STR,
                    "enter | exit | like | comment | gift | follow | cart_click | buy | bag_open "
                    "| product_click",
                ),
                Column("value", F64, "gift price or order amount; 0 otherwise"),
                Column(
                    "product_id", I64, "product of a product_click / cart_click / buy; 0 otherwise"
                ),
            ),
            time_column="ts",
            references={
                "user_id": ("users", "user_id"),
                "live_id": ("rooms", "live_id"),
                "author_id": ("authors", "author_id"),
            },
        ),
        Table(
            "videos",
            "one short video",
            (
                Column("photo_id", I64, "video id (>= 1)"),
                Column("author_id", I64, "creator"),
                Column("tag", I32, "content tag code"),
                Column("cluster", I32, "content cluster code"),
                Column("duration_ms", I64, "length, ms"),
            ),
            key=("photo_id",),
            references={"author_id": ("authors", "author_id")},
        ),
        Table(
            "video_events",
            "one short-video behaviour",
            (
                Column("ts", I64, "event time, epoch ms"),
                Column("user_id", I64, "user"),
                Column("photo_id", I64, "video"),
                Column("author_id", I64, "video's creator"),
                Column("event", STR, "impression | play | like | comment | follow | share"),
                Column("play_ms", I64, "watch time of a play; 0 otherwise"),
            ),
            time_column="ts",
            references={
                "user_id": ("users", "user_id"),
                "photo_id": ("videos", "photo_id"),
                "author_id": ("authors", "author_id"),
            },
        ),
        Table(
            "products",
            "one product",
            (
                Column("product_id", I64, "product id (>= 1)"),
                Column("cat1", I32, "top-level category"),
                Column("cat2", I32, "second-level category"),
                Column("cat3", I32, "fine category"),
                Column("price", F64, "price"),
            ),
            key=("product_id",),
            optional=True,
        ),
        Table(
            "product_events",
            "one e-commerce behaviour outside live rooms",
            (
                Column("ts", I64, "event time, epoch ms"),
                Column("user_id", I64, "user"),
                Column("product_id", I64, "product"),
                Column("event", STR, "click | cart | buy"),
            ),
            time_column="ts",
            optional=True,
            references={
                "user_id": ("users", "user_id"),
                "product_id": ("products", "product_id"),
            },
        ),
        Table(
            "room_products",
            "one product introduced in a room",
            (
                Column("live_id", I64, "room"),
                Column("ts", I64, "introduction time, epoch ms"),
                Column("product_id", I64, "product"),
            ),
            time_column="ts",
            optional=True,
            references={"live_id": ("rooms", "live_id"), "product_id": ("products", "product_id")},
        ),
        Table(
            "segments",
            "one 30 s content segment of a room (multi-modal vectors)",
            (
                Column("live_id", I64, "room"),
                Column("ts", I64, "segment start, epoch ms (on the 30 s grid)"),
                Column("visual", VEC, "visual embedding", vector=True),
                Column("speech", VEC, "speech embedding", vector=True),
                Column("text", VEC, "text embedding", vector=True),
            ),
            key=("live_id", "ts"),
            time_column="ts",
            optional=True,
            references={"live_id": ("rooms", "live_id")},
        ),
    )
}

#: Event tables whose rows refer to a room and must fall inside its on-air interval.
ON_AIR_TABLES = ("live_impressions", "live_events", "room_products", "segments")


@dataclass
class DatasetMeta:
    """Contents of ``meta.json`` in a dataset directory."""

    name: str
    start_ts: int  # epoch ms of the first day's 00:00 (day boundaries for splits)
    end_ts: int  # epoch ms, exclusive
    long_view_ms: int = DEFAULT_LONG_VIEW_MS
    day_offset_ms: int = 0  # add to UTC to get local time for day logic (KuaiLive: +8 h)
    segment_dim: int = 0  # length of each vector in segments.parquet (0 if no segments)
    source: str = ""  # "simulator", "kuailive", ...
    extra: dict = field(default_factory=dict)  # e.g. simulator config and seed
