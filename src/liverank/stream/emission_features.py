"""Features **as of emission**: the time-dependent feature columns recomputed at ``emit_ts``.

The default of a stream-mode samples directory is features as of the impression (what the
ranker saw when it served the room, Moment&Cross 3.3). This module is the option
``features="emission"`` of :func:`liverank.stream.samples.build_stream_samples`: the columns that
depend on *when* they are computed are recomputed at the row's ``emit_ts`` with the offline
builder's own feature code (:mod:`liverank.data.samples` histories and sequence encoding):

* ``live_seq_*`` / ``video_seq_*`` and their lengths: the user's last ``seq_len`` behaviours
  strictly before ``emit_ts``;
* ``hour_of_day`` and ``room_age_bucket`` at ``emit_ts``.

Static fields (user, author, room ids and side information, position) are the same at both
times and are kept from the impression.

**Leakage caveat.** A row emitted at ``emit_ts`` labels behaviours that happened before
``emit_ts``; with emission-time features the live sequence *contains those very behaviours*
(the enter that a positive CTR label reports, the like that a positive LTR label reports). A
model trained on such rows learns to read its labels from its features and is miscalibrated
when served at impression time, where those behaviours do not exist yet. This option exists to
measure that effect (and for emission-time *online* feature logging, where the serving snapshot
was lost); never evaluate a model on emission-time rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.dead_letters import RowScreen
from liverank.data.io import read_meta, read_table
from liverank.data.samples import (
    REQUIRED_COLUMNS,
    _live_history,
    _sequence_columns,
    _static_tables,
    _video_history,
)
from liverank.features import encoders as enc
from liverank.features.snapshot import SortedHistory
from liverank.features.spec import LIVE_SEQ_FEATURES, VIDEO_SEQ_FEATURES

#: the feature columns whose value depends on the time they are computed at
TIME_DEPENDENT: tuple[str, ...] = (
    "hour_of_day",
    "room_age_bucket",
    "live_seq_len",
    "video_seq_len",
    *(f"live_seq_{x}" for x in LIVE_SEQ_FEATURES),
    *(f"video_seq_{x}" for x in VIDEO_SEQ_FEATURES),
)


def features_at_emission(
    dataset_dir: str | Path,
    rows: pl.DataFrame,
    seq_len: int,
    *,
    chunk_rows: int = 200_000,
    screen: RowScreen | None = None,
) -> pl.DataFrame:
    """Recompute :data:`TIME_DEPENDENT` columns of ``rows`` at their ``emit_ts``.

    Args:
        dataset_dir: the canonical dataset the rows come from.
        rows: sample rows sorted by ``emit_ts`` with at least ``emit_ts``, ``user_id``,
            ``live_id`` and the :data:`TIME_DEPENDENT` columns (their impression-time values).
        seq_len: the samples directory's sequence length.
        chunk_rows: rows per chunk (histories are read incrementally, as in the offline builder).
        screen: the dataset's :class:`~liverank.data.dead_letters.RowScreen` (set-aside rows
            are left out of the histories); built here when None.

    Returns:
        ``rows`` with the :data:`TIME_DEPENDENT` columns replaced, same order and dtypes.
    """
    root = Path(dataset_dir)
    meta = read_meta(root)
    if screen is None:
        screen = RowScreen.of(root)
    emit = rows["emit_ts"].to_numpy()
    if len(emit) > 1 and bool(np.any(np.diff(emit) < 0)):
        raise ValueError("features_at_emission needs rows sorted by emit_ts")
    rooms = read_table(root, "rooms", list(REQUIRED_COLUMNS["rooms"]))
    static = _static_tables(root, rooms)
    room_start = rows.select("live_id").join(
        rooms.select("live_id", "start_ts"), on="live_id", how="left", maintain_order="left"
    )["start_ts"]

    live_hist = SortedHistory.empty({"author": np.int64, "category": np.int64, "action": np.int64})
    video_hist = SortedHistory.empty(
        {"author": np.int64, "tag": np.int64, "action": np.int64, "play": np.int64}
    )
    parts: list[pl.DataFrame] = []
    t_lo: int | None = None
    for lo in range(0, len(rows), chunk_rows):
        chunk = rows.slice(lo, chunk_rows)
        q_user = chunk["user_id"].to_numpy()
        q_ts = chunk["emit_ts"].to_numpy()  # [Q]
        t_hi = int(q_ts.max()) + 1
        live_hist = live_hist.concat(_live_history(screen, t_lo, t_hi, static["room_category"]))
        video_hist = video_hist.concat(_video_history(screen, t_lo, t_hi, static["video_tag"]))
        live = live_hist.last_n_before(q_user, q_ts, seq_len)
        video = video_hist.last_n_before(q_user, q_ts, seq_len)
        live_hist, video_hist = live_hist.keep_last(seq_len), video_hist.keep_last(seq_len)
        t_lo = t_hi

        cols: dict[str, np.ndarray] = {
            "hour_of_day": enc.hour_of_day(q_ts, meta.day_offset_ms),
            "room_age_bucket": enc.room_age_bucket(
                q_ts, room_start.slice(lo, len(chunk)).to_numpy()
            ),
        }
        cols |= _sequence_columns("live", tuple(LIVE_SEQ_FEATURES), live, q_ts)
        cols |= _sequence_columns("video", tuple(VIDEO_SEQ_FEATURES), video, q_ts)
        parts.append(
            chunk.with_columns(
                pl.Series(name, v, dtype=chunk.schema[name]) for name, v in cols.items()
            )
        )
    if not parts:
        return rows
    return pl.concat(parts)
