"""Long user histories for serving models that read them (``moment_cross``; issue #4).

Training reads a samples directory's long-history store through window bounds
(``long_<d>_start / _end``, :mod:`liverank.features.long_history`). Serving builds the same
store from the dataset with the sample builder's own code (visit labels for the long-view rows,
:func:`liverank.data.samples._long_history_frames`), keeps the rows known before ``as_of``, and
gives each request the window fields of its user's last ``K`` rows strictly before the request
``ts`` (:func:`store_fields`: exactly what the builder gives an impression at ``ts``, ``[C, K]``
views of one row). The served model reads those fields, not an attached store, so the same
model runs eagerly or as a compiled program recorded for one request (docs/serving.md).

That store is fixed at start. With a Redis feature store that keeps long histories (``liverank
stream --store URL --store-long-len K``) the histories follow the event stream instead: each
request reads its user's last ``K`` rows before ``ts`` from Redis
(:meth:`~liverank.serve.redis_store.RedisFeatureStore.long_history`) and
:func:`realtime_fields` turns them into the ``[C, K]`` window fields the model reads when no store
is attached (the same fields ``LongHistory.batch_fields`` gives training's eager path), so an
event written by the stream worker reaches the next request.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from liverank.data.dead_letters import RowScreen
from liverank.data.io import read_meta, table_path
from liverank.data.samples import (
    REQUIRED_COLUMNS,
    _long_history_frames,
    _static_tables,
    _visit_labels,
)
from liverank.features import long_history as lh

log = logging.getLogger(__name__)


def long_history_as_of(data_dir: str | Path, as_of_ts: int | None = None) -> lh.LongHistory:
    """The long-history store of the dataset with the rows known before ``as_of_ts``."""
    started = time.perf_counter()
    root = Path(data_dir)
    meta = read_meta(root)
    # the rows the sample builder uses (its dead letters are left out here too), so that the
    # served histories are the ones the model was trained on
    screen = RowScreen.of(root)
    impressions = (
        screen.scan("live_impressions")
        .select(REQUIRED_COLUMNS["live_impressions"])
        .collect()
        .sort(["ts", "request_id", "position"])
    )
    rooms = pl.read_parquet(table_path(root, "rooms"), columns=list(REQUIRED_COLUMNS["rooms"]))
    labels, _ = _visit_labels(screen, impressions, rooms, meta, 5_000_000)
    frames = _long_history_frames(screen, impressions, labels, _static_tables(root, rooms))
    if as_of_ts is not None:
        frames = {d: f.filter(pl.col("ts") < as_of_ts) for d, f in frames.items()}
    store = lh.LongHistory.from_frames(frames)
    log.info(
        "long histories for serving: %s rows in %.1f s",
        {d: t.size for d, t in store.tables.items()},
        time.perf_counter() - started,
    )
    return store


def store_fields(
    store: lh.LongHistory, user_id: int, ts: int, n: int, k: int
) -> dict[str, torch.Tensor]:
    """The ``long_<d>_*`` window fields of one request from the fixed store: the user's last
    ``k`` rows strictly before ``ts`` (``[n, K]``, ``[n]`` for ``long_<d>_len``), expanded views
    of one row, exactly what the sample builder gives an impression at ``ts``."""
    arrays: dict[str, np.ndarray] = {"ts": np.array([ts], dtype=np.int64)}
    user = np.array([user_id], dtype=np.int64)
    for domain, table in store.tables.items():
        start, end = table.bounds(user, arrays["ts"])
        c_start, c_end = lh.index_columns(domain)
        arrays[c_start], arrays[c_end] = start, end
    fields = store.batch_fields(arrays, k)  # [1, K] each, [1] for the lengths
    return {name: torch.from_numpy(v).expand(n, *v.shape[1:]) for name, v in fields.items()}


def realtime_fields(
    frames: dict[str, pl.DataFrame], user_id: int, ts: int, n: int, k: int
) -> dict[str, torch.Tensor]:
    """The ``long_<d>_*`` window fields of one request from its user's rows.

    Args:
        frames: per domain the user's rows before ``ts`` (``user_id, ts`` and the history
            file's columns), oldest first, as the Redis store returns them.
        user_id, ts: the request.
        n: candidates in the request (rows of the batch; the window is shared, not copied).
        k: the model's window length.

    Returns ``[n, K]`` tensors (``[n]`` for ``long_<d>_len``), expanded views of one row.
    """
    return store_fields(lh.LongHistory.from_frames(frames), user_id, ts, n, k)
