"""Wiring of the ranking service: online features for the served model, and ``liverank serve``.

:class:`StoreFeatureService` adapts an :class:`~liverank.serve.feature_store.OnlineFeatureStore`
to the app's :class:`~liverank.serve.app.FeatureService`: it assembles the request batch with
:func:`~liverank.serve.online_features.assemble_request` against the *served model's* feature
map (so codes outside that model's vocabulary are mapped to 0 and counted), and reads the
model's map from the :class:`~liverank.serve.model_holder.ModelHolder` at every request so that
a hot swap is picked up.

Request time: ``ts`` given in the request, else the store's watermark (the newest event it
has seen: with a replayed dataset this is the "now" of the data), else the wall clock.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverank.errors import ConfigError
from liverank.serve.app import create_app
from liverank.serve.feature_store import MemoryFeatureStore, OnlineFeatureStore
from liverank.serve.model_holder import ModelHolder
from liverank.serve.online_features import assemble_request

log = logging.getLogger(__name__)


class StoreFeatureService:
    """:class:`~liverank.serve.app.FeatureService` over an online feature store."""

    def __init__(self, store: OnlineFeatureStore, holder: ModelHolder) -> None:
        self.store = store
        self.holder = holder

    def watermark_ts(self) -> int | None:
        return self.store.watermark_ts

    def assemble(
        self, user_id: int, live_ids: list[int] | None, ts: int | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if ts is None:
            wm = self.store.watermark_ts
            ts = int(wm) if wm is not None else int(time.time() * 1000)
        ids = (
            self.store.rooms_on_air(ts)
            if live_ids is None
            else np.asarray(live_ids, dtype=np.int64)
        )
        info: dict[str, Any] = {"live_ids": ids, "ts": ts}
        if len(ids) == 0:
            return {}, info | {"user_known": False, "room_known": [], "on_air": []}
        fmap = self.holder.current().model.feature_map
        batch, req = assemble_request(self.store, fmap, user_id, ids, ts)
        unknown, off = set(req.unknown_rooms), set(req.off_air_rooms)
        return batch, info | {
            "user_known": req.user_known,
            "room_known": np.array([i not in unknown for i in ids.tolist()]),
            "on_air": np.array([i not in off and i not in unknown for i in ids.tolist()]),
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
):
    """The FastAPI app of ``liverank serve`` (store filled by replaying ``data``)."""
    holder = ModelHolder(registry, model, interval_s=watch_interval_s)
    holder.start()
    if holder.version is None:
        raise ConfigError(
            f"registry {registry}: no servable version of model '{model}'"
            + (f" (rejected: {holder.rejected})" if holder.rejected else "")
        )
    # a few slots more than the model reads: events in the request's own millisecond take a
    # buffer slot but are not returned (feature_store.py)
    n = seq_len or holder.current().model.feature_map.seq_len + 5
    store = MemoryFeatureStore.from_dataset(data, seq_len=n, as_of_ts=as_of_ts)
    log.info("feature store filled from %s as of %s", data, store.watermark_ts)
    return create_app(holder, StoreFeatureService(store, holder))
