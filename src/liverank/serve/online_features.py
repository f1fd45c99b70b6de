"""The feature batch of a ranking request, equal to the sample builder's rows (no skew).

``assemble_request(store, feature_map, user_id, live_ids, ts)`` returns the
:data:`liverank.models.base.Batch` for ranking ``live_ids`` for ``user_id`` at ``ts``: one row
per candidate with exactly the feature columns, encodings and dtypes that
:func:`liverank.data.samples.build_samples` writes for an impression of that room to that user at
``ts`` (ARCHITECTURE section 7, issue 4). The same encoders are called
(:mod:`liverank.features.encoders`, the builder's ``_sequence_columns``) on the same state
(:mod:`liverank.serve.feature_store`); ``tests/serve/test_online_features.py`` replays the
simulated platform and checks every column against the built samples.

Columns (builder order): ``ts``, ``day``, ``hour``, ``live_id``, ``user_id``, the user side
features, ``author_id``, ``author_type``, ``author_fans``, ``room_category``,
``room_age_bucket``, ``position``, ``hour_of_day`` (``[B]`` int64) and the ``live_seq_*`` /
``video_seq_*`` sequences (``[B, L]`` int64, the same user history on every row) with their
``*_seq_len`` (``[B]``). Not produced: ``sample_id`` / ``request_id`` (row keys, not features),
labels and masks, and the long-history row ranges (``long_<d>_start / _end``; they index a
samples directory's long-history store, which the online store does not hold yet).

Position. The serving slot is the rank, unknown before ranking. By default every candidate is
scored as if shown in the first slot, ``position = 0`` (code ``position_code(0) = 1``), the
usual choice for a position feature learnt as a bias; pass ``position`` to score a known slate.

Cold start, never an exception: a user missing from the store gets ``user_id = 0`` and zero side
features (its history, if the store has one, is still used); a room missing from the store gets
zeros for ``author_*``, ``room_category`` and ``room_age_bucket`` (``live_id`` keeps the
requested id, a key for room-statistic lookups); rooms known but not on air at ``ts`` keep their
features and are flagged. Any code outside the model's vocabulary (``feature_map`` table sizes,
e.g. a user who joined after training) is mapped to 0 and counted in :class:`RequestInfo`.

Example::

    >>> batch, info = assemble_request(store, fmap, user_id=7, live_ids=np.array([3, 9]),
    ...                                ts=now_ms)  # doctest: +SKIP
    >>> batch["live_seq_author"].shape, info.unknown_rooms  # doctest: +SKIP
    (torch.Size([2, 50]), [])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from liverank.data.samples import _sequence_columns
from liverank.data.shopping import PRODUCT_SEQ_FEATURES
from liverank.errors import ConfigError
from liverank.features import encoders as enc
from liverank.features.spec import LIVE_SEQ_FEATURES, VIDEO_SEQ_FEATURES, FeatureMap
from liverank.serve.feature_store import (
    USER_COLUMNS,
    MemoryFeatureStore,
    OnlineFeatureStore,
    RoomRows,
    UserRow,
)

__all__ = [
    "DEFAULT_POSITION",
    "MemoryFeatureStore",
    "OnlineFeatureStore",
    "RequestInfo",
    "RoomRows",
    "UserRow",
    "assemble_request",
    "request_arrays",
]

#: serving slot used when the caller gives none (the first slot; see the module docstring)
DEFAULT_POSITION = 0


@dataclass
class RequestInfo:
    """What :func:`assemble_request` had to default, and how fresh the store was."""

    user_id: int
    ts: int
    user_known: bool
    #: requested rooms the store does not know (cold-start features)
    unknown_rooms: list[int] = field(default_factory=list)
    #: known rooms that are not on air at ``ts`` (``start_ts <= ts < end_ts`` fails)
    off_air_rooms: list[int] = field(default_factory=list)
    #: feature column -> number of values outside the model's vocabulary, mapped to 0 (the user's
    #: fields and sequences counted once per request, not once per room)
    oov: dict[str, int] = field(default_factory=dict)
    live_seq_len: int = 0
    video_seq_len: int = 0
    #: True when ``position`` was not given and ``DEFAULT_POSITION`` was used
    position_defaulted: bool = True
    #: newest event the store has seen (None: none yet) and ``ts`` minus it
    watermark_ts: int | None = None
    feature_lag_ms: int | None = None


def assemble_request(
    store: OnlineFeatureStore,
    feature_map: FeatureMap,
    user_id: int,
    live_ids: np.ndarray | list[int],
    ts: int,
    position: int | np.ndarray | None = None,
) -> tuple[dict[str, torch.Tensor], RequestInfo]:
    """The feature batch ``{column: tensor}`` (``B = len(live_ids)`` rows) and its info.

    Raises ``ValueError`` for an empty or non-1-D ``live_ids`` or a ``position`` of the wrong
    shape, and :class:`ConfigError` when the store keeps fewer behaviours than
    ``feature_map.seq_len``.
    """
    arrays, info = request_arrays(store, feature_map, user_id, live_ids, ts, position)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, info


def request_arrays(
    store: OnlineFeatureStore,
    feature_map: FeatureMap,
    user_id: int,
    live_ids: np.ndarray | list[int],
    ts: int,
    position: int | np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], RequestInfo]:
    """:func:`assemble_request` as numpy arrays (``[B]`` / ``[B, L]`` int64)."""
    ids = np.asarray(live_ids, dtype=np.int64)  # [B]
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(
            f"live_ids must be a non-empty 1-D list of room ids, got shape {ids.shape}"
        )
    n_seq = feature_map.seq_len
    if store.seq_len < n_seq:
        raise ConfigError(
            f"the feature store keeps {store.seq_len} behaviours per user but the model's "
            f"feature map needs seq_len = {n_seq}; rebuild the store with seq_len >= {n_seq}"
        )
    b, ts, user_id = len(ids), int(ts), int(user_id)
    slots = _positions(position, b)
    meta = store.meta
    user: UserRow = store.user(user_id)
    rooms: RoomRows = store.rooms(ids)
    ts_b = np.full(b, ts, dtype=np.int64)  # [B]
    rel = ts_b - meta.start_ts

    cols: dict[str, np.ndarray] = {
        "ts": ts_b,
        "day": rel // enc.MS_PER_DAY,
        "hour": rel // enc.MS_PER_HOUR,
        "live_id": ids.copy(),
    }
    for c in ("author_id", "author_type", "author_fans", "room_category"):
        cols[c] = rooms.columns[c].astype(np.int64, copy=True)
    age = enc.room_age_bucket(ts_b, rooms.columns["start_ts"])  # [B]
    cols["room_age_bucket"] = np.where(rooms.known, age, 0)
    cols["position"] = enc.position_code(slots)
    cols["hour_of_day"] = enc.hour_of_day(ts_b, meta.day_offset_ms)

    # the user's fields, equal in every row: built, checked against the vocabulary once as
    # [1] / [1, L], then repeated to [B] / [B, L]
    own: dict[str, np.ndarray] = {
        "user_id": np.array([user_id if user.known else 0], dtype=np.int64),
        **{c: np.array([user.codes[c]], dtype=np.int64) for c in USER_COLUMNS},
    }
    q_ts = np.array([ts], dtype=np.int64)  # [1]
    live = store.live_history(user_id, ts, n_seq)
    video = store.video_history(user_id, ts, n_seq)
    for domain, feats, snap in (
        ("live", LIVE_SEQ_FEATURES, live),
        ("video", VIDEO_SEQ_FEATURES, video),
    ):
        own |= _sequence_columns(domain, tuple(feats), snap, q_ts)
    if "product" in feature_map.seq_fields:  # a --shopping model (eLiveRec)
        room_cols, product_seq = _shopping_columns(store, user_id, ids, ts, n_seq)
        cols |= room_cols
        own |= product_seq

    oov = _clip_to_vocabulary(cols, feature_map) | _clip_to_vocabulary(own, feature_map)
    for name, arr in own.items():
        cols[name] = np.repeat(arr, b, axis=0)  # [1, ...] -> [B, ...]
    on_air = (rooms.columns["start_ts"] <= ts) & (ts < rooms.columns["end_ts"])  # [B]
    watermark = store.watermark_ts
    info = RequestInfo(
        user_id=user_id,
        ts=ts,
        user_known=user.known,
        unknown_rooms=ids[~rooms.known].tolist(),
        off_air_rooms=ids[rooms.known & ~on_air].tolist(),
        oov=oov,
        live_seq_len=int(live.lengths[0]),
        video_seq_len=int(video.lengths[0]),
        position_defaulted=position is None,
        watermark_ts=watermark,
        feature_lag_ms=None if watermark is None else ts - watermark,
    )
    return cols, info


def _shopping_columns(
    store: OnlineFeatureStore, user_id: int, ids: np.ndarray, ts: int, n_seq: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ``--shopping`` columns of a request (:mod:`liverank.data.shopping`): the rooms'
    product context ``[B]`` and the user's product sequence ``[1, L]`` / ``[1]``."""
    shop = store.shopping
    if shop is None:
        raise ConfigError(
            f"the model reads the shopping features (a 'product' sequence) but the "
            f"{type(store).__name__} keeps none; serve it from the in-memory store of a "
            "dataset with products, product_events and room_products, or from a Redis store "
            "filled by `liverank stream --store` from such a dataset (a new prefix)"
        )
    q_ts = np.array([ts], dtype=np.int64)  # [1]
    snap = shop.product_history(user_id, ts, n_seq)
    seq = _sequence_columns("product", tuple(PRODUCT_SEQ_FEATURES), snap, q_ts)
    return dict(shop.room_products(ids, ts)), seq


def _positions(position: int | np.ndarray | None, b: int) -> np.ndarray:
    """``[B]`` 0-based serving slots."""
    if position is None:
        return np.full(b, DEFAULT_POSITION, dtype=np.int64)
    slots = np.asarray(position, dtype=np.int64)
    if slots.ndim == 0:
        slots = np.full(b, int(slots), dtype=np.int64)
    if slots.shape != (b,):
        raise ValueError(
            f"position must be an int or have one slot per room ({b}), got {slots.shape}"
        )
    if (slots < 0).any():
        raise ValueError(f"positions are 0-based slots, got {slots[slots < 0][:5].tolist()}")
    return slots


def _clip_to_vocabulary(cols: dict[str, np.ndarray], feature_map: FeatureMap) -> dict[str, int]:
    """Map codes outside each field's embedding table to 0 in place; counts per column (the
    user's fields are checked once per request, before they are repeated over the rooms).

    Hashed tables (``feature_map.hash_buckets``) take any id and are left alone. The builder's
    rows are always inside the vocabulary (the feature map is sized from the whole dataset), so
    this changes nothing there; it guards serving against ids newer than the model.
    """
    fields = dict(feature_map.sparse_fields)
    for seq in feature_map.seq_fields.values():
        fields |= seq
    counts = {}
    for column, table in fields.items():
        if column not in cols or table in feature_map.hash_buckets:
            continue
        values = cols[column]
        bad = (values < 0) | (values >= feature_map.table_size(table))
        n_bad = int(bad.sum())
        if n_bad:
            values[bad] = 0
            counts[column] = n_bad
    return counts
