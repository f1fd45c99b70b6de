"""Long user histories (>= 1,000 items per user and domain) for the Cross GSUs.

Moment&Cross (Cao et al. 2024, section 4.1) searches each user's *long* live and short-video
histories (the paper: the latest 10,000 items) with General Search Units. A sample row cannot
carry 1,000 items per domain (a ``[N, 1000]`` column per feature would multiply the samples by
~25), so a samples directory keeps one copy of every history row in a store and each sample
only carries the row range of its user's past:

* ``long_history/live.parquet``: ``user_id, ts, author, category, action, lv``;
  ``long_history/video.parquet``: ``user_id, ts, author, tag, action, play, lv``. Every history
  row of every user, sorted by ``(user_id, ts)`` (ties keep the order of the event table), with
  the codes of the 50-item sequences (:mod:`liverank.features.encoders`).
* sample columns ``long_<d>_start, long_<d>_end``: the rows of the sample's user with
  ``ts < sample ts`` are ``[start, end)`` (:meth:`HistoryTable.bounds`).

Long-view rows (``lv = 1``, the mixed GSU's "strong positives"):

* live: one *derived* row per reconstructed visit whose stay reaches ``long_view_ms``, stamped at
  ``enter_ts + long_view_ms`` (the moment the long view becomes known, so it never leaks into an
  earlier sample) with action :data:`~liverank.features.encoders.LIVE_LONG_VIEW_CODE`;
* video: a ``play`` with ``play_ms >= LONG_PLAY_FRACTION x duration_ms`` (or ``>=
  LONG_PLAY_FALLBACK_MS`` when the video's duration is unknown). Plays are logged when the play
  ends (the sequences already use ``play_ms`` at the play's ``ts``), so the play row itself is
  the long-view row.

The store is a *history service*: the loader's batches carry only each sample's row range, and
the Cross module (``models/modules/moment_cross.py``) reads the store through
:meth:`LongHistory.tensors` (torch views of the int32 columns, made once, never copied per
batch) -- the item keys of the whole ``K``-window for the GSU searches, every other feature only
for the ``gsu_len`` selected rows (``models/layers/history.py``). In serving, the online feature
store plays this role. Attach it with ``Ranker.attach_long_history(store, K)``.

:meth:`LongHistory.batch_fields` (the *eager* reference, ``SampleSet.load(...,
long_fields="eager")``) gathers every feature of the last ``K`` rows before each sample, most
recent first: one ``[B, K]`` row index shared by every feature (padding points at a zero sentinel
row), int32 gathers widened to int64, and the time-gap bucket computed from ``B x 22`` threshold
searches instead of per-item arithmetic. It costs ~16x a batch without long history at K = 1000
(``benchmarks/results/long_history_loader.json``), which is why training uses the service.

Example::

    >>> store = LongHistory.load("runs/samples")  # doctest: +SKIP
    >>> model.attach_long_history(store, 1000)  # doctest: +SKIP
    >>> f = store.batch_fields(batch_arrays, k=1000)  # doctest: +SKIP (eager reference)
    >>> f["long_video_author"].shape  # (B, 1000), int64
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from liverank.data.io import table_path
from liverank.data.schema import NOT_IN_LIVE_SEQUENCE
from liverank.errors import DataValidationError
from liverank.features import encoders as enc

if TYPE_CHECKING:  # torch is imported where tensors are made: the builders do not need it
    import torch

log = logging.getLogger(__name__)

STORE_DIR = "long_history"
#: domain -> feature columns of its history file (after ``user_id, ts``)
DOMAIN_COLUMNS: dict[str, tuple[str, ...]] = {
    "live": ("author", "category", "action", "lv"),
    "video": ("author", "tag", "action", "play", "lv"),
}
#: domain -> (file column -> batch feature suffix): ``long_<d>_<suffix>``
BATCH_FEATURES: dict[str, dict[str, str]] = {
    "live": {"author": "author", "category": "category", "action": "action", "lv": "lv"},
    "video": {"author": "author", "tag": "tag", "action": "action", "play": "play", "lv": "lv"},
}
#: a play is a long view when ``play_ms >= LONG_PLAY_FRACTION x duration_ms``
LONG_PLAY_FRACTION = 0.8
#: ... or, for a video of unknown duration, when ``play_ms >= LONG_PLAY_FALLBACK_MS``
LONG_PLAY_FALLBACK_MS = 30_000
#: time-gap thresholds: ``bit_length(gap_s) >= j + 1`` iff ``gap_ms >= 1000 * 2**j``; codes cap
#: at ``TIME_GAP_VOCAB - 1``, so only ``j < TIME_GAP_VOCAB - 2`` matter
_GAP_THRESHOLDS_MS = enc.MS_PER_SECOND * (1 << np.arange(enc.TIME_GAP_VOCAB - 2, dtype=np.int64))
_INT64_MAX = np.iinfo(np.int64).max


def index_columns(domain: str) -> tuple[str, str]:
    """The sample columns holding a sample's row range in ``domain``'s history file."""
    return f"long_{domain}_start", f"long_{domain}_end"


def store_path(samples_dir: str | Path, domain: str) -> Path:
    return Path(samples_dir) / STORE_DIR / f"{domain}.parquet"


class HistoryTable:
    """One domain's history, sorted by ``(user, ts)``, held as compact arrays.

    ``columns[name]`` is ``[H + 1]`` int32 whose last entry is a zero *sentinel* row: padded
    window slots point at it. ``ts_seconds`` is ``[H + 1]`` float64 (``ts / 1000``; exact enough
    for a float32 ``dt``) with a 0 sentinel.
    """

    def __init__(self, frame: pl.DataFrame, feature_columns: tuple[str, ...]) -> None:
        self.feature_columns = feature_columns
        self.user = frame["user_id"].to_numpy().astype(np.int64, copy=False)  # [H]
        ts = frame["ts"].to_numpy().astype(np.int64, copy=False)  # [H]
        h = len(ts)
        self.size = h
        #: ``[H + 1]`` int64 row times (ms) with a 0 sentinel
        self.ts_ms = np.append(ts, 0)
        self._ts = self.ts_ms[:h]  # [H] view
        self.ts_seconds = np.append(ts / 1000.0, 0.0)  # [H + 1]
        self.columns: dict[str, np.ndarray] = {}
        for c in feature_columns:
            values = frame[c].to_numpy()
            if h and (values.min() < 0 or values.max() > np.iinfo(np.int32).max):
                raise DataValidationError(
                    "history codes must lie in [0, 2**31)", file=STORE_DIR, column=c
                )
            self.columns[c] = np.append(values, 0).astype(np.int32)  # [H + 1]
        if h and np.any(np.diff(self.user) < 0):
            raise DataValidationError("history not sorted by user_id", file=STORE_DIR)
        self._users, self._block_start = np.unique(self.user, return_index=True)  # [U], [U]
        self._ts_min = int(ts.min()) if h else 0
        self._span = (int(ts.max()) - self._ts_min + 2) if h else 1
        if len(self._users) * self._span >= _INT64_MAX:
            raise ValueError("history too wide for an int64 (user, ts) key")
        counts = np.diff(np.append(self._block_start, h))  # [U]
        rank = np.repeat(np.arange(len(self._users), dtype=np.int64), counts)  # [H]
        self._key = rank * self._span + (ts - self._ts_min)  # [H] sorted
        if h and np.any(np.diff(self._key) < 0):
            raise DataValidationError("history not sorted by (user_id, ts)", file=STORE_DIR)

    def _query_key(self, pos: np.ndarray, ts: np.ndarray) -> np.ndarray:
        # clipped into [-1, span - 1]: -1 sits between this user's block and the previous one
        return pos * self._span + np.clip(ts - self._ts_min, -1, self._span - 1)

    def bounds(self, user: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[Q]`` start / end (exclusive) of each user's rows with ``row ts < ts``.

        A user without history gets ``start = end = 0``.
        """
        user = np.asarray(user, dtype=np.int64)  # [Q]
        ts = np.asarray(ts, dtype=np.int64)  # [Q]
        if self.size == 0:
            zero = np.zeros(len(user), dtype=np.int64)
            return zero, zero.copy()
        pos = np.minimum(np.searchsorted(self._users, user), len(self._users) - 1)  # [Q]
        known = self._users[pos] == user
        end = np.searchsorted(self._key, self._query_key(pos, ts), side="left")  # [Q]
        start = self._block_start[pos]
        return np.where(known, start, 0), np.where(known, end, 0)

    def window(
        self, start: np.ndarray, end: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row index ``[B, K]`` of the last ``k`` rows of ``[start, end)``, most recent first.

        Padded slots hold the sentinel index ``H``. Also returns the padding mask ``[B, K]``
        (True = padded) and the lengths ``[B]``.
        """
        lengths = np.minimum(np.maximum(end - start, 0), k)  # [B]
        steps = np.arange(1, k + 1, dtype=np.int64)  # [K]
        idx = np.subtract(end[:, None], steps[None, :])  # [B, K]
        padded = steps[None, :] > lengths[:, None]  # [B, K]
        np.copyto(idx, self.size, where=padded)
        return idx, padded, lengths

    def age_codes(
        self, start: np.ndarray, end: np.ndarray, query_ts: np.ndarray, lengths: np.ndarray, k: int
    ) -> np.ndarray:
        """``[B, K]`` int64 ``time_gap_bucket(query_ts - row ts)`` of the window, 0 at padding.

        Within a window the gap grows with the slot, so the code is a step function of the slot:
        for each threshold ``1000 * 2**j`` ms a bisection inside the window (``log2 K`` vectorised
        steps over ``[B, 22]``) finds the first slot whose gap reaches it, and one ``np.repeat``
        of the codes by their run lengths fills ``[B, K]``.
        """
        b = len(start)
        if self.size == 0 or b == 0:
            return np.zeros((b, k), dtype=np.int64)
        cut = query_ts[:, None] - _GAP_THRESHOLDS_MS[None, :]  # [B, T]: rows with ts <= cut
        last = self._last_at_or_before(np.maximum(start, end - k), end, cut)  # [B, T]
        # slot of the first row whose gap reaches threshold j (non-decreasing in j), cut at the
        # window's length: slots [f_{j-1}, f_j) have code j + 1
        first_slot = np.clip(end[:, None] - last, 0, lengths[:, None])  # [B, T]
        zeros = np.zeros((b, 1), dtype=np.int64)
        bounds = np.concatenate([zeros, first_slot, lengths[:, None], zeros + k], axis=1)
        runs = np.diff(bounds, axis=1)  # [B, T + 2]: codes 1 .. T + 1, then padding 0
        values = np.append(np.arange(1, len(_GAP_THRESHOLDS_MS) + 2, dtype=np.int64), 0)
        codes = np.repeat(np.tile(values, b), runs.ravel()).reshape(b, k)  # [B, K]
        return codes

    def _last_at_or_before(self, lo: np.ndarray, hi: np.ndarray, cut: np.ndarray) -> np.ndarray:
        """``[B, T]``: first row in ``[lo, hi)`` with ``ts > cut`` (``hi`` if none).

        Rows ``[lo, hi)`` are one user's, sorted by ``ts``; a bisection with all ``B x T``
        searches advanced together (``[B]`` bounds, ``[B, T]`` cuts).
        """
        t = cut.shape[1]
        lo = np.repeat(lo[:, None], t, axis=1)  # [B, T]
        hi = np.repeat(hi[:, None], t, axis=1)  # [B, T]
        width = int((hi - lo).max(initial=0))
        for _ in range(max(width, 1).bit_length()):
            active = lo < hi
            mid = (lo + hi) >> 1
            right = self._ts.take(np.minimum(mid, self.size - 1)) <= cut
            np.copyto(hi, mid, where=active & ~right)
            right &= active
            np.copyto(lo, mid + 1, where=right)
        return lo


@dataclass(frozen=True)
class DomainTensors:
    """Torch views (no copy) of one :class:`HistoryTable`, for the history service.

    ``columns[name]`` is ``[H + 1]`` int32, ``ts_ms`` ``[H + 1]`` int64 (row ``H`` is the zero
    sentinel that padded window slots point at); ``size`` is ``H``.
    """

    columns: dict[str, torch.Tensor]
    ts_ms: torch.Tensor
    size: int


class LongHistory:
    """The long-history store of a samples directory: one :class:`HistoryTable` per domain."""

    def __init__(self, tables: Mapping[str, HistoryTable]) -> None:
        self.tables = dict(tables)
        self._tensors: dict[str, DomainTensors] | None = None

    def tensors(self) -> dict[str, DomainTensors]:
        """Per domain, torch views of the columns (``torch.from_numpy``, made once and cached).

        They share memory with the numpy arrays: a store of ``H`` rows costs ``H x (4 x
        columns + 8)`` bytes once, whatever the number of batches.
        """
        if self._tensors is None:
            import torch

            self._tensors = {
                d: DomainTensors(
                    columns={c: torch.from_numpy(v) for c, v in t.columns.items()},
                    ts_ms=torch.from_numpy(t.ts_ms),
                    size=t.size,
                )
                for d, t in self.tables.items()
            }
        return self._tensors

    @classmethod
    def from_frames(cls, frames: Mapping[str, pl.DataFrame]) -> LongHistory:
        return cls({d: HistoryTable(f, DOMAIN_COLUMNS[d]) for d, f in frames.items()})

    @classmethod
    def load(cls, samples_dir: str | Path) -> LongHistory:
        """Read ``<samples_dir>/long_history/{live,video}.parquet``."""
        frames = {}
        for domain, cols in DOMAIN_COLUMNS.items():
            path = store_path(samples_dir, domain)
            if not path.exists():
                raise DataValidationError(
                    "no long-history store; build the samples with long_len > 0 "
                    "(`liverank build-samples --long-len K`)",
                    file=str(path),
                )
            frames[domain] = pl.read_parquet(path, columns=["user_id", "ts", *cols])
        store = cls.from_frames(frames)
        log.info(
            "loaded long histories: %s",
            {d: t.size for d, t in store.tables.items()},
        )
        return store

    def batch_fields(self, arrays: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
        """The ``long_<d>_*`` batch fields of ``B`` samples (see ``docs/samples.md``).

        Args:
            arrays: the batch's ``ts`` and ``long_<d>_start`` / ``long_<d>_end`` (``[B]``).
            k: window length ``K``.

        Returns:
            per domain ``d``: ``long_<d>_<x>`` ``[B, K]`` int64 for each feature and ``age``,
            ``long_<d>_lv`` ``[B, K]`` int64, ``long_<d>_dt`` ``[B, K]`` float32 seconds,
            ``long_<d>_len`` ``[B]`` int64.
        """
        ts = np.asarray(arrays["ts"], dtype=np.int64)  # [B]
        ts_seconds = ts / 1000.0  # [B]
        out: dict[str, np.ndarray] = {}
        for domain, table in self.tables.items():
            c_start, c_end = index_columns(domain)
            start = np.asarray(arrays[c_start], dtype=np.int64)  # [B]
            end = np.asarray(arrays[c_end], dtype=np.int64)  # [B]
            idx, padded, lengths = table.window(start, end, k)  # [B, K], [B, K], [B]
            for col, suffix in BATCH_FEATURES[domain].items():
                out[f"long_{domain}_{suffix}"] = table.columns[col].take(idx).astype(np.int64)
            out[f"long_{domain}_age"] = table.age_codes(start, end, ts, lengths, k)
            gap = table.ts_seconds.take(idx)  # [B, K]
            np.subtract(ts_seconds[:, None], gap, out=gap)
            dt = gap.astype(np.float32)
            np.copyto(dt, np.float32(0.0), where=padded)
            out[f"long_{domain}_dt"] = dt
            out[f"long_{domain}_len"] = lengths
        return out


# ---------------------------------------------------------------------------------- building
def live_history_frame(events: pl.DataFrame, long_views: pl.DataFrame) -> pl.DataFrame:
    """The live history file: behaviours plus one long-view row per long visit.

    Args:
        events: ``live_events`` other than ``exit``, in table order, with ``ts, user_id,
            author_id, category, event``.
        long_views: one row per visit whose stay reaches ``long_view_ms``, with ``user_id,
            author_id, category`` and ``ts`` = ``enter_ts + long_view_ms``.
    """
    base = events.select(
        "user_id",
        "ts",
        pl.col("author_id").alias("author"),
        pl.col("category").fill_null(0).cast(pl.Int64),
        pl.Series("action", enc.live_action_code(events["event"])),
        pl.lit(0, dtype=pl.Int64).alias("lv"),
    )
    derived = long_views.select(
        "user_id",
        "ts",
        pl.col("author_id").alias("author"),
        pl.col("category").fill_null(0).cast(pl.Int64),
        pl.lit(enc.LIVE_LONG_VIEW_CODE, dtype=pl.Int64).alias("action"),
        pl.lit(1, dtype=pl.Int64).alias("lv"),
    )
    # stable sort: ties keep table order, a derived row comes after behaviours at the same ms
    return pl.concat([base, derived]).sort(["user_id", "ts"], maintain_order=True)


def long_play(
    event: pl.Series, play_ms: np.ndarray, duration_ms: pl.Series | np.ndarray | None
) -> np.ndarray:
    """``[N]`` int64 1 where a video event is a long view (the rule in the module doc).

    ``duration_ms``: the video's duration per event, null or negative where unknown (the
    fallback threshold applies); None when no duration is known at all.
    """
    n = len(event)
    need = np.full(n, float(LONG_PLAY_FALLBACK_MS))  # [N]
    if duration_ms is not None:
        dur = pl.Series(duration_ms).cast(pl.Float64).fill_null(-1.0).to_numpy()  # [N]
        known = dur >= 0
        need[known] = dur[known] * LONG_PLAY_FRACTION
    play = np.asarray(play_ms, dtype=np.float64)  # [N]
    is_play = (event == "play").fill_null(False).to_numpy()
    return (is_play & (play > 0) & (play >= need)).astype(np.int64)


def video_history_frame(events: pl.DataFrame, videos: pl.DataFrame) -> pl.DataFrame:
    """The video history file from ``video_events`` other than ``impression`` (table order).

    ``videos`` has ``photo_id, tag`` and optionally ``duration_ms`` (long-play rule above).
    """
    ev = events.join(videos, on="photo_id", how="left", maintain_order="left")
    play_ms = ev["play_ms"].fill_null(0)
    duration = ev["duration_ms"] if "duration_ms" in videos.columns else None
    lv = pl.Series(long_play(ev["event"], play_ms.to_numpy(), duration))
    frame = pl.DataFrame(
        {
            "user_id": ev["user_id"],
            "ts": ev["ts"],
            "author": ev["author_id"],
            "tag": ev["tag"].fill_null(0).cast(pl.Int64),
            "action": enc.video_action_code(ev["event"]),
            "play": enc.play_bucket(play_ms.to_numpy()),
            "lv": lv,
        }
    )
    return frame.sort(["user_id", "ts"], maintain_order=True)


def read_history_frames(
    dataset_dir: str | Path,
    long_views: pl.DataFrame,
    room_category: pl.DataFrame,
    *,
    scan: Callable[[str], pl.LazyFrame] | None = None,
) -> dict[str, pl.DataFrame]:
    """Both history files of the canonical dataset at ``dataset_dir``.

    Args:
        dataset_dir: canonical dataset directory.
        long_views: one row per long visit: ``user_id, live_id, author_id`` and ``ts`` =
            ``enter_ts + long_view_ms`` (the visit's ``t_lvtr``).
        room_category: ``live_id, category``.
        scan: ``table -> LazyFrame`` of the event tables (the builders pass
            :meth:`liverank.data.dead_letters.RowScreen.scan`, which leaves set-aside rows
            out); default: the whole Parquet file.
    """
    root = Path(dataset_dir)
    if scan is None:

        def scan(table: str) -> pl.LazyFrame:
            return pl.scan_parquet(table_path(root, table))

    live_events = (
        scan("live_events")
        .filter(~pl.col("event").is_in(NOT_IN_LIVE_SEQUENCE))
        .select("ts", "user_id", "live_id", "author_id", "event")
        .collect()
        .join(room_category, on="live_id", how="left", maintain_order="left")
    )
    long_views = long_views.join(room_category, on="live_id", how="left", maintain_order="left")
    videos_path = table_path(root, "videos")
    video_cols = ["photo_id", "tag"]
    if "duration_ms" in pl.read_parquet_schema(videos_path):
        video_cols.append("duration_ms")
    video_events = (
        scan("video_events")
        .filter(pl.col("event") != "impression")
        .select("ts", "user_id", "photo_id", "author_id", "event", "play_ms")
        .collect()
    )
    videos = pl.read_parquet(videos_path, columns=video_cols)
    return {
        "live": live_history_frame(live_events, long_views),
        "video": video_history_frame(video_events, videos),
    }


def write_store(samples_dir: str | Path, frames: Mapping[str, pl.DataFrame]) -> list[str]:
    """Write ``long_history/<domain>.parquet``; returns the relative paths written."""
    root = Path(samples_dir) / STORE_DIR
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for domain, frame in frames.items():
        path = root / f"{domain}.parquet"
        frame.select("user_id", "ts", *DOMAIN_COLUMNS[domain]).write_parquet(
            path, compression="zstd", statistics=True
        )
        written.append(f"{STORE_DIR}/{path.name}")
    return written
