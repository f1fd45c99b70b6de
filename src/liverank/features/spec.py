"""The sample format and the feature map: the contract between sample building and models.

A *samples directory* (written by ``liverank build-samples``) holds

* ``part-00000.parquet``, ``part-00001.parquet``, ...: one row per live impression, sorted by
  ``ts``, with the columns below;
* ``feature_map.json``: a :class:`FeatureMap` (vocabulary sizes, sequence length, tasks).

Columns of a sample row (every id / code column is ``Int64``; ``0`` = padding / unknown):

============================  =====================================================
meta                           ``sample_id``, ``request_id``, ``ts``, ``day`` (days since the
                               dataset's ``start_ts``), ``hour`` (hours since ``start_ts``),
                               ``live_id``
sparse features                see ``SPARSE_FIELDS`` (user and author ids and side features,
                               room category, room age bucket, position, hour of day)
live sequence (L = seq_len)    ``live_seq_<x>`` for x in ``LIVE_SEQ_FEATURES``: the user's last
                               L live behaviours strictly before ``ts``, most recent first,
                               right-padded with 0; ``live_seq_len`` = number of real items
short-video sequence           ``video_seq_<x>`` for x in ``VIDEO_SEQ_FEATURES``, same layout
labels                         ``ctr``, ``evtr``, ``lvtr``, ``ltr``, ``cmtr``, ``gtr`` (Float32
                               0/1, defined on every impression: a non-click is negative on all),
                               ``stay_ms`` (Float32, 0 for a non-click)
label masks                    ``mask_<task>`` (Float32, 1 = the label is observed; the offline
                               builder sets 1 everywhere, the stream engine masks)
long-history index             only when built with ``long_len > 0``
                               (:mod:`liverank.features.long_history`): ``long_live_start``,
                               ``long_live_end``, ``long_video_start``, ``long_video_end``
                               (Int64): the rows ``[start, end)`` of ``long_history/<d>.parquet``
                               that are the user's history strictly before ``ts``. By default
                               batches carry only these bounds and the model reads the store
                               it was attached to (a history service); with
                               ``SampleSet.load(..., long_fields="eager")`` the loader turns
                               them into ``long_<d>_<x>`` ``[B, K]`` batch fields
                               (:data:`LONG_FIELDS`, plus ``long_<d>_lv``, ``long_<d>_dt``,
                               ``long_<d>_len``)
stream columns                 only in directories of ``build-samples --mode exit|fast_slow|
                               moment`` (:mod:`liverank.stream.samples`): ``emit_ts`` (Int64,
                               when the row is emitted), ``part`` (Int64: 0 in ``exit``, 0 fast /
                               1 slow in ``fast_slow``, the 30 s window index in ``moment``),
                               ``slow`` (Int64 0/1, the slow row of ``fast_slow``). There rows
                               are sorted by ``emit_ts`` and ``day`` / ``hour`` count from
                               ``emit_ts``: training order is emission order. Features are still
                               as of the impression ``ts``; one impression may give several rows
============================  =====================================================

Sequence columns are ``pl.Array(pl.Int64, L)`` so that a loader turns them into ``[N, L]`` arrays
without Python loops.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from liverank.errors import ConfigError

TASKS: tuple[str, ...] = ("ctr", "evtr", "lvtr", "ltr", "cmtr", "gtr")
REGRESSION_TARGETS: tuple[str, ...] = ("stay_ms",)
META_FIELDS: tuple[str, ...] = ("sample_id", "request_id", "ts", "day", "hour", "live_id")

#: sparse feature -> embedding table it looks up
SPARSE_FIELDS: dict[str, str] = {
    "user_id": "user",
    "user_age": "user_age",
    "user_gender": "user_gender",
    "user_device": "user_device",
    "user_activity": "user_activity",
    "author_id": "author",
    "author_type": "author_type",
    "author_fans": "author_fans",
    "room_category": "category",
    "room_age_bucket": "room_age_bucket",
    "position": "position",
    "hour_of_day": "hour_of_day",
}

#: side information of each behaviour in the live sequence -> embedding table
LIVE_SEQ_FEATURES: dict[str, str] = {
    "author": "author",  # room's author
    "category": "category",  # room category
    "action": "live_action",  # 1 + index in schema.LIVE_EVENTS
    "age": "time_gap",  # log2 bucket of (ts - behaviour ts) in seconds
}
#: side information of each behaviour in the short-video sequence -> embedding table
VIDEO_SEQ_FEATURES: dict[str, str] = {
    "author": "author",
    "tag": "video_tag",
    "action": "video_action",  # 1 + index in schema.VIDEO_EVENTS
    "play": "play_bucket",  # bucket of play_ms (0 for non-play events)
    "age": "time_gap",
}

#: long-history batch field -> embedding table, per domain (``FeatureMap.long_fields``); the
#: eager loader (``long_fields="eager"``) also yields ``long_<d>_lv`` (0/1), ``long_<d>_dt`` (float seconds) and ``long_<d>_len``
LONG_FIELDS: dict[str, dict[str, str]] = {
    "live": {
        "long_live_author": "author",
        "long_live_category": "category",
        "long_live_action": "live_action",  # incl. encoders.LIVE_LONG_VIEW_CODE
        "long_live_age": "time_gap",
    },
    "video": {
        "long_video_author": "author",
        "long_video_tag": "video_tag",
        "long_video_action": "video_action",
        "long_video_play": "play_bucket",
        "long_video_age": "time_gap",
    },
}
#: sample columns of the long-history row ranges
LONG_INDEX_COLUMNS: tuple[str, ...] = (
    "long_live_start",
    "long_live_end",
    "long_video_start",
    "long_video_end",
)

#: the sequence's item key (used for masks and target attention keys)
SEQ_ITEM_KEY = "author"
#: domains whose item key is another column (the product sequence of ``--shopping`` samples)
SEQ_ITEM_KEY_OF: dict[str, str] = {"product": "item"}


def seq_item_column(domain: str) -> str:
    """The column of ``domain``'s sequence whose 0 marks padding (``live_seq_author``)."""
    return f"{domain}_seq_{SEQ_ITEM_KEY_OF.get(domain, SEQ_ITEM_KEY)}"


def seq_fields(domain: str) -> dict[str, str]:
    """Column name -> embedding table, for ``domain`` in {"live", "video"}."""
    feats = LIVE_SEQ_FEATURES if domain == "live" else VIDEO_SEQ_FEATURES
    return {f"{domain}_seq_{k}": v for k, v in feats.items()}


class FeatureMap(BaseModel):
    """Vocabularies of a samples directory (saved as ``feature_map.json``)."""

    version: int = 1
    seq_len: int = Field(50, ge=1)
    tasks: list[str] = Field(default_factory=lambda: list(TASKS))
    #: embedding table -> number of rows (max code + 1; row 0 is padding / unknown)
    tables: dict[str, int]
    #: sparse field -> table
    sparse_fields: dict[str, str] = Field(default_factory=lambda: dict(SPARSE_FIELDS))
    #: sequence domain ("live", "video") -> {column -> table}
    seq_fields: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"live": seq_fields("live"), "video": seq_fields("video")}
    )
    #: long-history window length K of the batches (0 = no long history)
    long_len: int = Field(0, ge=0)
    #: long-history domain -> {batch field -> table}
    long_fields: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {d: dict(f) for d, f in LONG_FIELDS.items()}
    )
    #: table -> hash bucket count, for tables whose ids are hashed instead of looked up directly
    hash_buckets: dict[str, int] = Field(default_factory=dict)
    long_view_ms: int = 60_000
    dataset: str = ""
    #: MMBee (:mod:`liverank.data.mmbee`): segments per sample in ``seg_idx`` (0 = none), the
    #: length of each modality's vector, and the metapath neighbours per ``gie_*`` column
    segments: int = Field(0, ge=0)
    segment_dim: int = Field(0, ge=0)
    graph_k: int = Field(0, ge=0)
    #: MMBee's author attributes beside the ``gie_*`` columns (the per-day stores' ``D``; 0 =
    #: none): batches then carry ``gie_attr_<metapath> [B, K, 3 D]`` for author metapaths
    author_attr_dim: int = Field(0, ge=0)
    #: LiveForesighter (:mod:`liverank.data.room_sequences`): the room statistic windows ``T``
    #: and room products ``L`` of ``room_stats [B, 12, T]`` / ``room_products [B, L, 4]`` (0 = none)
    room_stats_window: int = Field(0, ge=0)
    room_products_len: int = Field(0, ge=0)

    def table_size(self, table: str) -> int:
        if table in self.hash_buckets:
            return self.hash_buckets[table]
        try:
            return self.tables[table]
        except KeyError:
            raise ConfigError(f"feature map has no embedding table '{table}'") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        p = Path(path)
        if p.is_dir():
            p = p / "feature_map.json"
        if not p.exists():
            raise ConfigError(f"{p}: no feature map (run `liverank build-samples` first)")
        return cls.model_validate(json.loads(p.read_text()))
