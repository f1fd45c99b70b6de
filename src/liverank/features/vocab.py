"""Size the embedding tables of a dataset: the :class:`FeatureMap` written by build-samples.

Each id table has ``max id + 1`` rows, the maximum taken over the *entity table and every table
that refers to it* (so a model can embed any id of the dataset, not only those that happen to
appear in the samples, and an unknown id can never index out of range). Code tables of the
encoders have their fixed vocabulary sizes (:mod:`liverank.features.encoders`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from liverank.data.io import read_meta, table_path
from liverank.features.encoders import (
    AUTHOR_TYPE_VOCAB,
    HOUR_OF_DAY_VOCAB,
    LIVE_ACTION_VOCAB,
    PLAY_BUCKET_VOCAB,
    ROOM_AGE_VOCAB,
    TIME_GAP_VOCAB,
    VIDEO_ACTION_VOCAB,
)
from liverank.features.spec import SPARSE_FIELDS, FeatureMap, seq_fields

#: id table -> the (table, column) pairs that hold its ids
ID_SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "user": (
        ("users", "user_id"),
        ("live_impressions", "user_id"),
        ("live_events", "user_id"),
        ("video_events", "user_id"),
    ),
    "author": (
        ("authors", "author_id"),
        ("rooms", "author_id"),
        ("videos", "author_id"),
        ("live_impressions", "author_id"),
        ("live_events", "author_id"),
        ("video_events", "author_id"),
    ),
    "room": (("rooms", "live_id"), ("live_impressions", "live_id"), ("live_events", "live_id")),
    "category": (("rooms", "category"), ("authors", "category")),
    "user_age": (("users", "age"),),
    "user_gender": (("users", "gender"),),
    "user_device": (("users", "device"),),
    "user_activity": (("users", "activity"),),
    "author_fans": (("authors", "fans"),),
    "video_tag": (("videos", "tag"),),
}

#: code table -> fixed vocabulary size
CODE_TABLES: dict[str, int] = {
    "author_type": AUTHOR_TYPE_VOCAB,
    "room_age_bucket": ROOM_AGE_VOCAB,
    "hour_of_day": HOUR_OF_DAY_VOCAB,
    "live_action": LIVE_ACTION_VOCAB,
    "video_action": VIDEO_ACTION_VOCAB,
    "play_bucket": PLAY_BUCKET_VOCAB,
    "time_gap": TIME_GAP_VOCAB,
}


def _column_max(dataset_dir: Path, table: str, column: str) -> int:
    path = table_path(dataset_dir, table)
    if not path.exists():
        return 0
    value = pl.scan_parquet(path).select(pl.col(column).max()).collect().item()
    return int(value) if value is not None else 0


def table_sizes(dataset_dir: str | Path) -> dict[str, int]:
    """Embedding table -> number of rows for the dataset at ``dataset_dir``."""
    root = Path(dataset_dir)
    sizes = {
        name: max(_column_max(root, t, c) for t, c in sources) + 1
        for name, sources in ID_SOURCES.items()
    }
    # positions are stored as slot + 1 (encoders.position_code)
    sizes["position"] = _column_max(root, "live_impressions", "position") + 2
    sizes.update(CODE_TABLES)
    return sizes


def feature_map_for_dataset(dataset_dir: str | Path, seq_len: int) -> FeatureMap:
    """The :class:`FeatureMap` of samples built from ``dataset_dir`` with ``seq_len``."""
    meta = read_meta(dataset_dir)
    fmap = FeatureMap(
        seq_len=seq_len,
        tables=table_sizes(dataset_dir),
        long_view_ms=meta.long_view_ms,
        dataset=meta.name,
    )
    needed = set(SPARSE_FIELDS.values()) | set(seq_fields("live").values())
    needed |= set(seq_fields("video").values())
    missing = needed - set(fmap.tables)
    if missing:  # a spec change that this module does not know yet
        raise RuntimeError(f"feature map has no size for table(s) {sorted(missing)}")
    return fmap
