"""Keeping the Redis feature store up to date from ``liverank stream`` (issue 4).

:class:`StoreFeedSource` wraps the stream worker's :class:`~liverank.stream.sources.StreamSource`:
every chunk the runner reads is also written to a
:class:`~liverank.serve.redis_store.RedisFeatureStore` (its live events; impressions are not
behaviours) before the engine sees it, so ``run_stream`` needs no change. The merged stream
carries no short-video events; when given, the dataset's ``video_events`` are fed in step with
the stream's event time (every video event with ``ts <=`` the newest stream row read; all of
them once the source ends), and so are the product events and room products when the store
keeps the shopping state (:mod:`liverank.serve.redis_shopping`, eLiveRec's features).

Exactly once after a restart: each write records, in the same Redis transaction, the stream
offset (or video row count) it reached under ``applied[<feed name>]``. A restarted worker
re-reads rows since its checkpoint (at-least-once input); the feed drops the rows below the
recorded offset, so no behaviour enters a buffer twice. One feed name per stream shard (one
writer per shard, as for the engine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.io import read_table, table_path
from liverank.serve.redis_store import RedisFeatureStore
from liverank.serve.shopping_store import PRODUCT_EVENT_COLUMNS, ROOM_PRODUCT_COLUMNS
from liverank.stream.engine import IMPRESSION
from liverank.stream.sources import StreamSource

log = logging.getLogger(__name__)

#: the tables of the shopping state (kept when a new store's dataset has them all)
SHOPPING_TABLES = ("products", "product_events", "room_products")


@dataclass
class SideFeed:
    """Events outside the merged stream (short-video events, product events, room products),
    fed to the store in step with the stream's event time; ``done`` rows already applied."""

    name: str
    rows: pl.DataFrame  # sorted by ts
    observe: Callable[..., None]  # observe(rows, progress=(feed, offset))
    done: int = 0

    def advance(self, upto_ts: int | None, feed: str) -> None:
        """Apply every row with ``ts <= upto_ts`` (None: every row) not applied yet."""
        ts = self.rows["ts"].to_numpy()  # [V]
        upto = len(ts) if upto_ts is None else int(np.searchsorted(ts, upto_ts, side="right"))
        if upto > self.done:
            part = self.rows.slice(self.done, upto - self.done)
            self.observe(part, progress=(f"{feed}:{self.name}", upto))
            self.done = upto


class StoreFeedSource(StreamSource):
    """A stream source that also writes what it reads into a Redis feature store."""

    def __init__(
        self,
        source: StreamSource,
        store: RedisFeatureStore,
        name: str,
        video_events: pl.DataFrame | None = None,
        side: list[SideFeed] | None = None,
    ) -> None:
        self.source, self.store, self.name = source, store, name
        self.total_rows = source.total_rows
        self._applied = store.applied_offset(name)
        self._side = list(side or [])
        if video_events is not None:
            self._side.insert(0, SideFeed("video", video_events, store.observe_video_events))
        for feed in self._side:
            feed.rows = feed.rows.sort("ts", maintain_order=True)
            feed.done = store.applied_offset(f"{name}:{feed.name}")

    @property
    def offset(self) -> int:
        return self.source.offset

    @property
    def finished(self) -> bool:
        return self.source.finished

    def read(self, max_rows: int | None = None) -> tuple[pl.DataFrame, int]:
        chunk, offset = self.source.read(max_rows)
        start = offset - len(chunk)
        if offset > self._applied:  # rows [max(start, applied), offset) are new to the store
            new = chunk.slice(max(self._applied - start, 0))
            events = new.filter(pl.col("kind") != IMPRESSION).select(
                "ts", "user_id", "live_id", pl.col("kind").alias("event")
            )
            self.store.observe_live_events(events, progress=(self.name, offset))
            self._applied = offset
        if self.source.finished or len(chunk):
            upto = None if self.source.finished else int(chunk["ts"].max())
            for feed in self._side:
                feed.advance(upto, self.name)
        return chunk, offset

    def seek(self, offset: int) -> None:
        self.source.seek(offset)

    def commit(self, offset: int) -> None:
        self.source.commit(offset)

    def close(self) -> None:
        self.source.close()


def feed_source(
    source: StreamSource,
    store_url: str,
    data_dir: str | Path,
    name: str,
    seq_len: int,
    long_len: int = 0,
) -> StoreFeedSource:
    """``liverank stream --store URL``: open (and on first use fill the static tables of) the
    store at ``store_url`` and wrap ``source``; ``data_dir``'s video events are fed in step.
    ``long_len`` > 0 keeps long histories too (:class:`RedisFeatureStore`)."""
    store = RedisFeatureStore.from_url(store_url, seq_len=seq_len, long_len=long_len)
    if not store.loaded:  # the shopping state too when the dataset has its tables (eLiveRec)
        shopping = all(table_path(data_dir, t).exists() for t in SHOPPING_TABLES)
        store.load_static(data_dir, shopping=shopping)
    video = read_table(data_dir, "video_events").select(
        "ts", "user_id", "photo_id", "author_id", "event", "play_ms"
    )
    side = []
    if store.shopping is not None:
        side = [
            SideFeed(
                "product",
                read_table(data_dir, "product_events", list(PRODUCT_EVENT_COLUMNS)),
                store.shopping.observe_product_events,
            ),
            SideFeed(
                "room_products",
                read_table(data_dir, "room_products", list(ROOM_PRODUCT_COLUMNS)),
                store.shopping.observe_room_products,
            ),
        ]
    log.info(
        "feeding Redis feature store %s as '%s' (seq_len %d%s)",
        store_url,
        name,
        seq_len,
        ", with the shopping state" if side else "",
    )
    return StoreFeedSource(source, store, name, video, side)
