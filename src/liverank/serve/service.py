"""Wiring of the ranking service: online features for the served model, and ``liverank serve``.

:class:`StoreFeatureService` adapts an :class:`~liverank.serve.feature_store.OnlineFeatureStore`
to the app's :class:`~liverank.serve.app.FeatureService`: it assembles the request batch with
:func:`~liverank.serve.online_features.assemble_request` against the *served model's* feature
map (so codes outside that model's vocabulary are mapped to 0 and counted), and reads the
model's map from the :class:`~liverank.serve.model_holder.ModelHolder` at every request so that
a hot swap is picked up.

Request time: ``ts`` given in the request, else :meth:`StoreFeatureService.default_time`: the
store's watermark (the newest event it has seen: with a replayed dataset this is the "now" of
the data) when a room is on air then; when none is (a replayed dataset ends after its last room
went off air), the last millisecond before the watermark at which rooms were on air, so that a
request without ``ts`` ranks rooms; with no event seen yet, the wall clock. The response's
``ts_source`` and ``/health`` say which.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from liverank.data.io import has_table, read_meta, read_table
from liverank.errors import ConfigError
from liverank.features.long_history import LongHistory
from liverank.features.spec import FeatureMap
from liverank.features.store import RoomStatsStore
from liverank.models.ranker import Ranker
from liverank.serve.app import MAX_BODY_BYTES, DefaultTime, create_app
from liverank.serve.feature_store import MemoryFeatureStore, OnlineFeatureStore
from liverank.serve.long_features import long_history_as_of, realtime_fields, store_fields
from liverank.serve.mmbee_features import MMBeeFeatures, NeighbourStoreWatcher
from liverank.serve.model_holder import ModelHolder
from liverank.serve.online_features import assemble_request
from liverank.serve.runtime import RUNTIMES, ModelRunner, make_runner
from liverank.train.registry import AOTI_CACHE

log = logging.getLogger(__name__)


class StoreFeatureService:
    """:class:`~liverank.serve.app.FeatureService` over an online feature store."""

    def __init__(
        self,
        store: OnlineFeatureStore,
        holder: ModelHolder,
        long_history: LongHistory | None = None,
        mmbee: MMBeeFeatures | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self.long_history = long_history
        self.mmbee = mmbee or MMBeeFeatures(None, None)
        self._default: tuple[int, DefaultTime] | None = None  # (watermark, its default time)

    def watermark_ts(self) -> int | None:
        return self.store.watermark_ts

    def health(self) -> dict[str, Any]:
        """Feature-side fields of ``/health`` (the graph store's build and reloads)."""
        return self.mmbee.health()

    def default_time(self) -> DefaultTime:
        wm = self.store.watermark_ts
        if wm is None:
            now = int(time.time() * 1000)
            return DefaultTime(now, "clock", "the feature store has seen no event: wall clock")
        cached = self._default
        if cached is not None and cached[0] == wm:
            return cached[1]
        last = self.store.last_on_air_ts(int(wm))
        if last is None or last == wm:
            why = "no room has been on air yet" if last is None else "rooms are on air then"
            default = DefaultTime(int(wm), "watermark", f"the feature watermark: {why}")
        else:
            default = DefaultTime(
                last,
                "last_on_air",
                f"no room is on air at the feature watermark {wm} (a replayed dataset's end?): "
                f"requests without ts use the last time rooms were on air, {wm - last} ms "
                "before it",
            )
            log.info("requests without ts are served at %d: %s", last, default.note)
        self._default = (wm, default)  # one reference: safe across request threads
        return default

    def assemble(
        self, user_id: int, live_ids: list[int] | None, ts: int | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        source = "request"
        if ts is None:
            default = self.default_time()
            ts, source = default.ts, default.source
        ids = (
            self.store.rooms_on_air(ts)
            if live_ids is None
            else np.asarray(live_ids, dtype=np.int64)
        )
        info: dict[str, Any] = {"live_ids": ids, "ts": ts, "ts_source": source}
        if len(ids) == 0:
            known_user = self.store.user(user_id).known
            return {}, info | {"user_known": known_user, "room_known": [], "on_air": []}
        fmap = self.holder.current().model.feature_map
        batch, req = assemble_request(self.store, fmap, user_id, ids, ts)
        batch |= long_window_fields(self.store, self.long_history, fmap, user_id, ts, len(ids))
        batch |= self.mmbee.columns(fmap, batch, ts)
        known = ~np.isin(ids, req.unknown_rooms)  # [C]
        return batch, info | {
            "user_known": req.user_known,
            "room_known": known,
            "on_air": known & ~np.isin(ids, req.off_air_rooms),
            "freshness_ms": req.feature_lag_ms,
        }


def build_service(
    registry: str | Path,
    model: str,
    data: str | Path,
    *,
    as_of_ts: int | None = None,
    seq_len: int | None = None,
    watch_interval_s: float = 2.0,
    store: str = "memory",
    runtime: str = "auto",
    max_body_bytes: int = MAX_BODY_BYTES,
    graph: str | Path | None = None,
    forecaster: str | Path | None = None,
    product_forecaster: str | Path | None = None,
):
    """The FastAPI app of ``liverank serve`` (store filled by replaying ``data``).

    ``store="redis://host:port/DB/PREFIX"`` reads the Redis feature store that
    ``liverank stream --store`` keeps up to date instead (:func:`open_feature_store`).
    ``runtime``: ``auto``, ``eager`` or ``torchscript`` (:mod:`liverank.serve.runtime`).
    When the registry's ``LATEST`` cannot be served, the newest servable version before it is
    (``/health`` says ``degraded`` and why); no servable version at all is a ConfigError.
    ``max_body_bytes``: larger request bodies are refused with a 413.
    ``graph``: a neighbour store directory (``liverank graph build --out``) for models that
    read MMBee's metapath neighbours; polled every ``watch_interval_s`` and reloaded when a new
    build is published there (:mod:`liverank.serve.mmbee_features`).
    ``forecaster``: a ``liverank foresight train`` output; ``GET /rooms/{id}/forecast`` then
    returns LiveForesighter's forecast of the next windows; ``product_forecaster`` (a
    ``foresight train --config configs/foresight/products.yaml`` output) its next categories.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{runtime}'; choose one of {list(RUNTIMES)}")
    holder = ModelHolder(registry, model, interval_s=watch_interval_s)
    holder.refresh()
    if holder.version is None:
        raise ConfigError(
            f"registry {registry}: no servable version of model '{model}'"
            + (f": {holder.problem}" if holder.problem else "")
        )
    first = holder.current().model
    room_stats = room_stats_as_of(data, as_of_ts)
    mmbee = MMBeeFeatures(
        data,
        None if graph is None else NeighbourStoreWatcher(graph, watch_interval_s),
        room_stats,
    )
    mmbee.check(first.feature_map, model)
    # a few slots more than the model reads: events in the request's own millisecond take a
    # buffer slot but are not returned (feature_store.py)
    n = seq_len or first.feature_map.seq_len + 5
    shopping = "product" in first.feature_map.seq_fields
    backend = open_feature_store(store, data, n, as_of_ts, shopping=shopping)
    long_store = None
    realtime_long = getattr(backend, "long_len", 0)
    if first.feature_map.long_len > 0 and realtime_long:
        if realtime_long < first.feature_map.long_len:
            raise ConfigError(
                f"the feature store keeps {realtime_long} long-history rows per user, the model "
                f"reads {first.feature_map.long_len}; restart `liverank stream --store` with "
                f"--store-long-len >= {first.feature_map.long_len} on a new prefix"
            )
        log.info("long user histories: read per request from %s (real time)", store)
    elif first.feature_map.long_len > 0:
        # a model that reads long user histories (moment_cross): build them as of as_of and
        # give them to this and every later version before it is swapped in (a Redis store
        # with long histories keeps them up to date instead, see long_features.py)
        long_store = long_history_as_of(data, as_of_ts)

    def attach(m: Ranker) -> None:
        # every version before it is swapped in: a version that reads MMBee features this
        # service has no source for is rejected (the one serving stays)
        mmbee.check(m.feature_map, model)
        if m.feature_map.long_len > 0:  # it reads the requests' window fields (long_features.py)
            m.attach_long_history(None, 0)

    def runner(m: Ranker) -> ModelRunner:
        example = example_request(backend, m, mmbee=mmbee, long_history=long_store)
        return make_runner(m, runtime, example, aoti_cache=Path(registry) / AOTI_CACHE)

    holder.prepare(attach, runner)  # the first version too: its runner is built now
    log.info("serving %s/%s on %s", model, holder.version, holder.current().runtime)
    holder.start()
    features = StoreFeatureService(backend, holder, long_store, mmbee)
    foresight = None
    if forecaster is not None:
        from liverank.foresight.statistics import StatisticForecaster

        foresight = StatisticForecaster.load(forecaster)
    products = None
    if product_forecaster is not None:
        from liverank.foresight.products import ProductForecaster

        products = ProductForecaster.load(product_forecaster)
    return create_app(
        holder,
        features,
        room_stats,
        max_body_bytes=max_body_bytes,
        forecaster=foresight,
        product_forecaster=products,
    )


def long_window_fields(
    store: OnlineFeatureStore,
    long_history: LongHistory | None,
    fmap: FeatureMap,
    user_id: int,
    ts: int,
    n: int,
) -> dict[str, torch.Tensor]:
    """The ``long_<d>_*`` window fields of one request of ``n`` rows (none when the model reads
    no long histories): from the feature store when it keeps them up to date (real time), else
    from ``long_history``, the store built at start."""
    if fmap.long_len <= 0:
        return {}
    if getattr(store, "long_len", 0) > 0:  # histories kept up to date by the stream worker
        frames = store.long_history(user_id, ts)  # type: ignore[attr-defined]
        return realtime_fields(frames, user_id, ts, n, fmap.long_len)
    if long_history is None:
        raise ConfigError(
            "the served model reads long user histories but the service has none "
            "(restart liverank serve so that it builds them from --data)"
        )
    return store_fields(long_history, user_id, ts, n, fmap.long_len)


def example_request(
    store: OnlineFeatureStore,
    model: Ranker,
    n: int = 8,
    mmbee: MMBeeFeatures | None = None,
    long_history: LongHistory | None = None,
) -> dict[str, torch.Tensor]:
    """A request batch for ``model`` from ``store`` (up to ``n`` rooms on air at the store's
    watermark, or at the last time rooms were on air before it, else room ids 1..n as
    cold-start rooms) for user 1 (simulated and KuaiLive ids start at 1; cold-start defaults
    if unknown): what a trace is built with and checked on
    (:func:`liverank.serve.runtime.make_runner`)."""
    wm = store.watermark_ts
    ts = int(wm) if wm is not None else int(time.time() * 1000)
    if wm is not None:
        ts = store.last_on_air_ts(ts) or ts
    ids = store.rooms_on_air(ts)[:n]
    if len(ids) == 0:
        ids = np.arange(1, n + 1, dtype=np.int64)
    fmap = model.feature_map
    batch, _ = assemble_request(store, fmap, 1, np.asarray(ids, np.int64), ts)
    batch |= long_window_fields(store, long_history, fmap, 1, ts, len(ids))
    if mmbee is not None:
        batch |= mmbee.columns(fmap, batch, ts)
    return batch


def room_stats_as_of(data: str | Path, as_of_ts: int | None = None) -> RoomStatsStore:
    """The room statistic store of ``data`` from its events with ``ts < as_of_ts`` (default:
    the dataset's end), the same cut as the online feature store."""
    as_of = read_meta(data).end_ts if as_of_ts is None else int(as_of_ts)

    def before(name: str) -> pl.DataFrame:
        return read_table(data, name).filter(pl.col("ts") < as_of)

    with_products = has_table(data, "room_products")
    return RoomStatsStore.from_tables(
        read_table(data, "rooms"),
        before("live_impressions"),
        before("live_events"),
        before("room_products") if with_products else None,
        read_table(data, "products") if has_table(data, "products") else None,
    )


def open_feature_store(
    store: str,
    data: str | Path | None,
    seq_len: int,
    as_of_ts: int | None = None,
    shopping: bool = False,
) -> OnlineFeatureStore:
    """``store="memory"``: replay ``data`` before ``as_of_ts`` into a store of ``seq_len``
    (with the product histories and room products when ``shopping``, for models whose feature
    map reads them).
    ``store="redis://host:port/DB/PREFIX"``: the Redis store ``liverank stream --store`` writes
    (its ``seq_len`` is the writer's; ``assemble_request`` checks it covers the model's)."""
    if store == "memory":
        if data is None:
            raise ConfigError("the in-memory feature store needs --data DATASET to replay")
        mem = MemoryFeatureStore.from_dataset(
            data, seq_len=seq_len, as_of_ts=as_of_ts, shopping=shopping
        )
        log.info("feature store filled from %s as of %s", data, mem.watermark_ts)
        return mem
    if store.startswith(("redis://", "rediss://", "unix://")):
        from liverank.serve.redis_store import RedisFeatureStore

        redis_store = RedisFeatureStore.from_url(store)
        log.info("feature store %s: watermark %s", store, redis_store.watermark_ts)
        return redis_store
    raise ConfigError(f"unknown feature store '{store}': memory or redis://host:port/DB/PREFIX")
