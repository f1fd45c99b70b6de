"""MMBee's and LiveForesighter's request features: content segments, metapath neighbours and
the room sequences.

A model trained on ``build-samples --segments N --graph-k K`` rows (:mod:`liverank.data.mmbee`)
reads two kinds of columns besides the usual ones. The service builds them the way the sample
builder does, so that a request at time ``ts`` sees what a training row at ``ts`` saw:

* **segments** ``seg_<modality> [C, N, D]`` and ``seg_mask [C, N]``: the last ``N`` segments of
  each candidate room that started at or before ``ts`` (:meth:`SegmentTable.last_before`, the
  builder's own lookup), from the dataset's ``segments`` table. A training row takes them as of
  its reported 30 s window; a request is scored at its own time, so it takes them as of ``ts``.
* **neighbours** ``gie_<metapath> [C, K]``: the top-``K`` neighbours of the user and of each
  room's author, read from a neighbour store (``liverank graph build --as-of T --out DIR``:
  MMBee's pre-requested expansion, section 5.4, never a graph walk at request time).
  :class:`NeighbourStoreWatcher` reloads the store when a new build is published into ``DIR``
  (a build writes ``meta.json`` last, so a changed ``meta.json`` marks a complete build); a
  build that cannot be read leaves the previous one in service and is reported by ``/health``.
  With ``feature_map.author_attr_dim > 0`` the author-node columns also get their authors'
  multi-modal attributes ``gie_attr_<metapath> [C, K, 3 D]`` from the same store.

LiveForesighter's ``room_stats [C, 12, T]`` and ``room_products [C, L, 4]`` come from the
service's room statistics store (:func:`liverank.serve.service.room_stats_as_of`, the events
before ``--as-of``), read as of the request time exactly as the sample builder reads them
(:mod:`liverank.data.room_sequences`); with ``--store redis://`` that store is not updated
after the start.

Ids the model has no row for (newer than its feature map) become padding (0), as the service
does for every other id column (:func:`liverank.serve.online_features.request_arrays`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liverank.data.mmbee import (
    AUTHOR_METAPATHS,
    GIE_COLUMNS,
    USER_METAPATHS,
    SegmentTable,
)
from liverank.errors import ConfigError, DataValidationError
from liverank.features.spec import FeatureMap
from liverank.features.store import RoomStatsSource
from liverank.graph.store import META_FILE, NeighbourStore
from liverank.serve.model_holder import one_line

log = logging.getLogger(__name__)


class NeighbourStoreWatcher:
    """The neighbour store of a directory, reloaded when a new build lands there.

    :meth:`current` checks ``meta.json`` at most every ``interval_s`` seconds (a ``stat``, no
    thread) and reloads on a change of its modification time or size.
    """

    def __init__(self, path: str | Path, interval_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ConfigError(f"the graph store poll interval must be > 0 s, got {interval_s}")
        self.path = Path(path)
        self.interval_s = interval_s
        self.problem: str | None = None
        self.reloads = 0
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._meta_stamp()
        if self._stamp is None:
            raise DataValidationError(
                "not a neighbour store (no meta.json); build one with "
                "`liverank graph build --as-of TS --out DIR`",
                file=str(self.path / META_FILE),
            )
        self._store = NeighbourStore.load(self.path)  # errors here are the caller's to see

    def _meta_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.path / META_FILE).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> NeighbourStore:
        """The store in service (reloaded first if a new build was published)."""
        now = time.monotonic()
        if now - self._checked >= self.interval_s:
            self.refresh()
        return self._store

    def refresh(self) -> bool:
        """Reload now if ``meta.json`` changed; True when a new build was swapped in."""
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._meta_stamp()
            if stamp is None or stamp == self._stamp:
                return False
            try:
                store = NeighbourStore.load(self.path)
            except DataValidationError as exc:
                self.problem = f"graph store {self.path}: {one_line(exc)}; keeping as_of " + str(
                    self._store.meta.get("as_of_ts")
                )
                log.warning("%s", self.problem)
                return False
            self._stamp = stamp
            self._store = store  # one reference: safe across request threads
            self.problem = None
            self.reloads += 1
            log.info("graph store reloaded: as of %s", store.meta.get("as_of_ts"))
            return True

    def health(self) -> dict[str, Any]:
        store = self._store
        return {
            "graph_store": str(self.path),
            "graph_as_of_ts": store.meta.get("as_of_ts"),
            "graph_k": store.k,
            "graph_reloads": self.reloads,
            "graph_problem": self.problem,
        }


class MMBeeFeatures:
    """Builds the ``seg_*`` / ``gie_*`` request columns for models whose feature map reads them.

    Args:
        data: the dataset directory (its ``segments`` table is read on first need).
        graph: a :class:`NeighbourStoreWatcher`, or ``None`` when no store was given.
    """

    def __init__(
        self,
        data: str | Path | None,
        graph: NeighbourStoreWatcher | None,
        room_stats: RoomStatsSource | None = None,
    ) -> None:
        self.data = None if data is None else Path(data)
        self.graph = graph
        self.room_stats = room_stats
        self._segments: SegmentTable | None = None
        self._segments_lock = threading.Lock()

    def check(self, feature_map: FeatureMap, name: str) -> None:
        """:class:`ConfigError` now (not at the first request) when ``name`` reads a feature
        this service has no source for; loads the segment table if it is needed."""
        if (feature_map.room_stats_window or feature_map.room_products_len) and (
            self.room_stats is None
        ):
            raise ConfigError(
                f"model '{name}' reads LiveForesighter's room sequences (room_stats / "
                "room_products) but this service has no room statistics store"
            )
        if feature_map.segments:
            self.segments()
        if feature_map.graph_k:
            if self.graph is None:
                raise ConfigError(
                    f"model '{name}' reads MMBee's metapath neighbours (graph_k = "
                    f"{feature_map.graph_k}): start the service with --graph DIR, a store "
                    "written by `liverank graph build --as-of TS --out DIR`"
                )
            store = self.graph.current()
            k = store.k
            have = 0 if store.author_attr is None else int(store.author_attr.shape[2])
            if have != feature_map.author_attr_dim and feature_map.author_attr_dim:
                raise ConfigError(
                    f"model '{name}' reads author attributes of dimension "
                    f"{feature_map.author_attr_dim} but the graph store {self.graph.path} has "
                    + ("none (built from a dataset without segments)" if not have else str(have))
                )
            if k < feature_map.graph_k:
                raise ConfigError(
                    f"model '{name}' reads {feature_map.graph_k} neighbours per metapath but "
                    f"the graph store {self.graph.path} keeps {k}; rebuild it with --k "
                    f"{feature_map.graph_k} or more"
                )

    def segments(self) -> SegmentTable:
        with self._segments_lock:
            if self._segments is None:
                if self.data is None:
                    raise ConfigError("MMBee's content segments need --data DATASET")
                self._segments = SegmentTable.read(self.data)
                log.info("segment table: %s segments", f"{self._segments.ts.size:,}")
            return self._segments

    def columns(
        self, feature_map: FeatureMap, batch: dict[str, torch.Tensor], ts: int
    ) -> dict[str, torch.Tensor]:
        """The MMBee / LiveForesighter columns of a request batch of ``C`` candidates (empty
        when the map reads none): ``batch`` is the request's assembled batch (its ``user_id``,
        0 when unknown, ``author_id [C]`` and ``live_id [C]``), ``ts`` the request time.
        """
        out: dict[str, torch.Tensor] = {}
        live_ids = batch["live_id"].numpy()  # [C]
        c = len(live_ids)
        if feature_map.room_stats_window or feature_map.room_products_len:
            if self.room_stats is None:
                raise ConfigError("the served model reads room sequences: no room store")
            ids, when = np.asarray(live_ids, np.int64), np.full(c, ts, np.int64)
            if feature_map.room_stats_window:
                hist, _ = self.room_stats.history_batch(ids, when, feature_map.room_stats_window)
                out["room_stats"] = torch.from_numpy(
                    np.ascontiguousarray(hist.transpose(0, 2, 1), dtype=np.float32)
                )  # [C, 12, T]
            if feature_map.room_products_len:
                seq, _ = self.room_stats.products_batch(ids, when, feature_map.room_products_len)
                out["room_products"] = torch.from_numpy(seq.astype(np.int64))  # [C, L, 4]
        if feature_map.segments:
            table = self.segments()
            if table.dim != feature_map.segment_dim:
                raise ConfigError(
                    f"the dataset's segment vectors have {table.dim} dimensions but the model "
                    f"was trained on {feature_map.segment_dim}"
                )
            seg_idx = table.last_before(
                np.asarray(live_ids, np.int64), np.full(c, ts, np.int64), feature_map.segments
            )  # [C, N]
            out |= SegmentTable.gather(table.vectors, seg_idx)
        if feature_map.graph_k:
            if self.graph is None:
                raise ConfigError("the served model reads metapath neighbours: use --graph DIR")
            store = self.graph.current()
            k = feature_map.graph_k
            users = np.full(c, int(batch["user_id"][0]), np.int64)  # [C]
            authors = batch["author_id"].numpy().astype(np.int64)  # [C]
            for m in (*USER_METAPATHS, *AUTHOR_METAPATHS):
                ids = users if m in USER_METAPATHS else authors
                nb = store.neighbours(m, ids)[0][:, :k]  # [C, K]
                column = f"gie_{m}"
                size = feature_map.table_size(GIE_COLUMNS[column])
                nb = np.where((nb > 0) & (nb < size), nb, 0)
                out[column] = torch.from_numpy(np.ascontiguousarray(nb))
                if feature_map.author_attr_dim and GIE_COLUMNS[column] == "author":
                    attr = store.attributes(nb)  # [C, K, 3 D]
                    out[f"gie_attr_{m}"] = torch.from_numpy(np.ascontiguousarray(attr))
        return out

    def health(self) -> dict[str, Any]:
        return {} if self.graph is None else self.graph.health()
