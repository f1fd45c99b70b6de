"""Keeping the Redis feature store up to date from ``liverank stream`` (issue 4).

:class:`StoreFeedSource` wraps the stream worker's :class:`~liverank.stream.sources.StreamSource`:
every chunk the runner reads is also written to a
:class:`~liverank.serve.redis_store.RedisFeatureStore` (its live events; impressions are not
behaviours) before the engine sees it, so ``run_stream`` needs no change. The merged stream
carries no short-video events; when given, the dataset's ``video_events`` are fed in step with
the stream's event time (every video event with ``ts <=`` the newest stream row read; all of
them once the source ends).

Exactly once after a restart: each write records, in the same Redis transaction, the stream
offset (or video row count) it reached under ``applied[<feed name>]``. A restarted worker
re-reads rows since its checkpoint (at-least-once input); the feed drops the rows below the
recorded offset, so no behaviour enters a buffer twice. One feed name per stream shard (one
writer per shard, as for the engine).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.io import read_table
from liverank.serve.redis_store import RedisFeatureStore
from liverank.stream.engine import IMPRESSION
from liverank.stream.sources import StreamSource

log = logging.getLogger(__name__)


class StoreFeedSource(StreamSource):
    """A stream source that also writes what it reads into a Redis feature store."""

    def __init__(
        self,
        source: StreamSource,
        store: RedisFeatureStore,
        name: str,
        video_events: pl.DataFrame | None = None,
    ) -> None:
        self.source, self.store, self.name = source, store, name
        self.total_rows = source.total_rows
        self._applied = store.applied_offset(name)
        self._video = None if video_events is None else video_events.sort("ts", maintain_order=True)
        self._video_ts = None if self._video is None else self._video["ts"].to_numpy()  # [V]
        self._video_done = store.applied_offset(f"{name}:video")

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
        if self._video_ts is not None:
            upto = self._video_done
            if self.source.finished:
                upto = len(self._video_ts)
            elif len(chunk):
                upto = int(np.searchsorted(self._video_ts, int(chunk["ts"].max()), side="right"))
            if upto > self._video_done:
                rows = self._video.slice(self._video_done, upto - self._video_done)  # type: ignore[union-attr]
                self.store.observe_video_events(rows, progress=(f"{self.name}:video", upto))
                self._video_done = upto
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
    if not store.loaded:
        store.load_static(data_dir)
    video = read_table(data_dir, "video_events").select(
        "ts", "user_id", "photo_id", "author_id", "event", "play_ms"
    )
    log.info("feeding Redis feature store %s as '%s' (seq_len %d)", store_url, name, seq_len)
    return StoreFeedSource(source, store, name, video)
