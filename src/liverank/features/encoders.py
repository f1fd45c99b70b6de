"""Side-feature encoders: raw values -> small integer codes (``0`` = padding / unknown).

Every encoder is vectorised (numpy or polars), pure, and shared by the offline sample builder
(:mod:`liverank.data.samples`), the stream engine and the serving path, so that a feature means
the same thing in training and in serving. The vocabulary size of each code is a module
constant (``*_VOCAB``); the feature map records it.

Buckets are logarithmic: ``1 + bit_length(x)`` (= ``2 + floor(log2 x)`` for ``x >= 1``) for a
non-negative quantity ``x`` in whole units (seconds or minutes), clipped to the vocabulary. So a
gap of 0 s is bucket 1, 1 s bucket 2, 2-3 s bucket 3, 4-7 s bucket 4, ...

Example::

    >>> time_gap_bucket(np.array([500, 1_000, 3_999, 0]))
    array([1, 2, 3, 0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from liverank.data.schema import AUTHOR_TYPES, LIVE_EVENTS, PRODUCT_EVENTS, VIDEO_EVENTS

MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000

#: live action code of a derived long-view row of the long histories (not an event of the
#: table: a visit's stay reaching ``long_view_ms``; :mod:`liverank.features.long_history`)
LIVE_LONG_VIEW_CODE = len(LIVE_EVENTS) + 1
#: live action codes: 1 + index in ``schema.LIVE_EVENTS``, plus ``LIVE_LONG_VIEW_CODE``
LIVE_ACTION_VOCAB = len(LIVE_EVENTS) + 2
#: short-video action codes: 1 + index in ``schema.VIDEO_EVENTS``
VIDEO_ACTION_VOCAB = len(VIDEO_EVENTS) + 1
#: product action codes: 1 + index in ``schema.PRODUCT_EVENTS``
PRODUCT_ACTION_VOCAB = len(PRODUCT_EVENTS) + 1
#: author type codes: 1 + index in ``schema.AUTHOR_TYPES``
AUTHOR_TYPE_VOCAB = len(AUTHOR_TYPES) + 1
#: play-time buckets (log2 of seconds; 0 = not a play). The last bucket holds >= 2**9 s.
PLAY_BUCKET_VOCAB = 12
#: time-gap buckets (log2 of seconds since the behaviour). The last bucket holds >= 2**21 s.
TIME_GAP_VOCAB = 24
#: room age buckets (log2 of minutes since the room started). The last holds >= 2**13 min.
ROOM_AGE_VOCAB = 16
#: hour of day codes 1..24 (0 = unknown)
HOUR_OF_DAY_VOCAB = 25

StrValues = pl.Series | np.ndarray | Sequence[str]


def _log2_bucket(units: np.ndarray, vocab: int) -> np.ndarray:
    """``1 + bit_length(units)`` clipped to ``[1, vocab - 1]``; ``units`` >= 0, int."""
    # The exponent field of an integer-valued float32 is its bit length + 126 (0 for 0). Clipping
    # to 2**(vocab - 1) first keeps every value exact in float32 (vocab <= 25) and changes no
    # code (all clipped values land in the last bucket either way). Reading the field through
    # an int32 view is 2.5x faster than frexp on the [Q, L] sequence arrays (same codes, tested).
    if vocab > 25:
        raise ValueError(f"_log2_bucket supports vocab <= 25, got {vocab}")
    clipped = np.minimum(units, 1 << (vocab - 1)).astype(np.float32)
    bit_length = np.clip((clipped.view(np.int32) >> 23) - 126, 0, vocab - 2)
    return (bit_length + 1).astype(np.int64)


def _code_of(values: StrValues, vocabulary: Sequence[str]) -> np.ndarray:
    series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.Utf8)
    codes = series.replace_strict(
        list(vocabulary), list(range(1, len(vocabulary) + 1)), default=0, return_dtype=pl.Int64
    )
    return codes.fill_null(0).to_numpy()


def live_action_code(events: StrValues) -> np.ndarray:
    """``[N]`` str -> ``[N]`` int64: 1 + index in ``LIVE_EVENTS``; unknown / null -> 0."""
    return _code_of(events, LIVE_EVENTS)


def video_action_code(events: StrValues) -> np.ndarray:
    """``[N]`` str -> ``[N]`` int64: 1 + index in ``VIDEO_EVENTS``; unknown / null -> 0."""
    return _code_of(events, VIDEO_EVENTS)


def product_action_code(events: StrValues) -> np.ndarray:
    """``[N]`` str -> ``[N]`` int64: 1 + index in ``PRODUCT_EVENTS``; unknown / null -> 0."""
    return _code_of(events, PRODUCT_EVENTS)


def author_type_code(types: StrValues) -> np.ndarray:
    """``[N]`` str -> ``[N]`` int64: 1 + index in ``AUTHOR_TYPES``; unknown / null -> 0."""
    return _code_of(types, AUTHOR_TYPES)


def play_bucket(play_ms: np.ndarray) -> np.ndarray:
    """``[...]`` watch time (ms) -> ``[...]`` int64: 0 if ``play_ms <= 0``, else log2 seconds."""
    play_ms = np.asarray(play_ms, dtype=np.int64)
    seconds = np.maximum(play_ms, 0) // MS_PER_SECOND
    return np.where(play_ms > 0, _log2_bucket(seconds, PLAY_BUCKET_VOCAB), 0)


def time_gap_bucket(gap_ms: np.ndarray) -> np.ndarray:
    """``[...]`` ms since a behaviour -> ``[...]`` int64 code; ``gap_ms <= 0`` -> 0.

    A behaviour in a point-in-time sequence is strictly older than the query, so its gap is
    >= 1 ms and its code >= 1; code 0 is left for padding.
    """
    gap_ms = np.asarray(gap_ms, dtype=np.int64)
    seconds = np.maximum(gap_ms, 0) // MS_PER_SECOND
    return np.where(gap_ms > 0, _log2_bucket(seconds, TIME_GAP_VOCAB), 0)


def room_age_bucket(ts: np.ndarray, start_ts: np.ndarray) -> np.ndarray:
    """``[N]`` query time and room start (ms) -> ``[N]`` int64 log2-minutes bucket.

    Unknown start (negative age, e.g. a missing room filled with a sentinel) -> 0.
    """
    age_ms = np.asarray(ts, dtype=np.int64) - np.asarray(start_ts, dtype=np.int64)
    minutes = np.maximum(age_ms, 0) // MS_PER_MINUTE
    return np.where(age_ms >= 0, _log2_bucket(minutes, ROOM_AGE_VOCAB), 0)


def hour_of_day(ts: np.ndarray, day_offset_ms: int = 0) -> np.ndarray:
    """``[N]`` epoch ms -> ``[N]`` int64 local hour code in 1..24 (hour ``h`` -> ``h + 1``).

    ``day_offset_ms`` is ``DatasetMeta.day_offset_ms`` (added to UTC to get local time).
    """
    local = np.asarray(ts, dtype=np.int64) + int(day_offset_ms)
    return (local // MS_PER_HOUR) % 24 + 1


def position_code(position: np.ndarray) -> np.ndarray:
    """``[N]`` 0-based slate slot -> ``[N]`` int64 code ``slot + 1`` (0 = unknown position)."""
    return np.asarray(position, dtype=np.int64) + 1
