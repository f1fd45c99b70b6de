"""Stream-mode samples directories: the rows a reporting mode emits, with point-in-time features.

``build_stream_samples(dataset_dir, out_dir, mode)`` writes a samples directory (format:
:mod:`liverank.features.spec`, including its "stream columns") whose rows are the label rows
that ``mode`` emits (:func:`liverank.stream.reporting.emit_rows` on the output of
:func:`liverank.data.visits.reconstruct_visits`; the replay engine is tested equal to it),
each joined with the features **as of the impression** (Moment&Cross, Cao et al. 2024, 3.3).

How. The features are exactly the offline builder's: :func:`liverank.data.samples.build_samples`
is run into a temporary directory, its label / mask columns are dropped and the remaining
feature columns are joined onto the emitted rows by the impression key, i.e. the offline
``sample_id = stable_id(request_id, position)``. Nothing of the offline builder is duplicated or
refactored; the price is one extra pass and holding all offline rows in memory once (fine up to
the ``medium`` preset; a chunked join is the next step for larger data).

Ordering. Rows are sorted by ``emit_ts`` (then ``request_id, position, part``): training order is
emission order. ``day`` / ``hour`` are computed from ``emit_ts`` (not from the impression ``ts``)
so that day splits of the loader cut the stream where a streaming trainer would.

Rows set aside. The rows that the offline builder sets aside (null key column, unknown event
name, unknown user / room / video: :mod:`liverank.data.dead_letters`) are left out of the
emitted rows too, counted in ``stats.json`` (``set_aside``) and written to
``dead_letters.parquet`` of ``out_dir``.

MMBee's columns (``segments = N``, ``graph_k = K``; :mod:`liverank.data.mmbee`). ``graph_k``
adds the metapath neighbours of the impression's day (the graph of the gifts before that day's
00:00, as offline). ``segments`` is for ``moment`` rows only and is taken **as of the reported
window**, not the impression: the room's last ``N`` segments that started before ``emit_ts``
(the end of the row's 30 s window), so a gift's row carries the segment in which the gift was
sent and a negative row the segment of the exit - MMBee's segment-level first-only samples
(``papers/mmbee.txt``, section 3). The segment is the room's broadcast content, which the
ranker sees while it scores the room in that window; the user's own behaviour features stay as
of the impression. The other modes report a gift at a fixed delay or at the exit, not in the
gift's segment, so they refuse ``segments``.

``stay_ms`` is the visit's final stay (as in the offline samples) on every row; it is a
regression target, known only once the visit has ended - use it only on rows emitted at or
after the exit (e.g. ``exit`` mode), never as a feature.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from liverank.data import mmbee
from liverank.data.dead_letters import DEAD_LETTERS_FILE, RowScreen
from liverank.data.io import read_meta, read_table, table_path
from liverank.data.samples import (
    SAMPLE_ROW_GROUP_ROWS,
    SHARD_PATTERN,
    STATS_FILE,
    build_samples,
    day_summary,
)
from liverank.data.visits import DEFAULT_BEHAVIOURS, reconstruct_visits
from liverank.errors import ConfigError, DataValidationError
from liverank.features import encoders as enc
from liverank.features import long_history as lh
from liverank.features.ids import stable_id
from liverank.features.spec import TASKS, FeatureMap
from liverank.stream.emission_features import features_at_emission
from liverank.stream.reporting import MODES, emit_rows

log = logging.getLogger(__name__)

#: columns a stream samples directory adds to the offline sample columns
STREAM_COLUMNS: tuple[str, ...] = ("emit_ts", "part", "slow")
#: when the features of a row are taken (see build_stream_samples)
FEATURE_TIMES: tuple[str, ...] = ("impression", "emission")
_LABELS: tuple[str, ...] = (*TASKS, *(f"mask_{t}" for t in TASKS))
_VISIT_EVENTS = ("enter", "exit", *DEFAULT_BEHAVIOURS.values())


@dataclass
class StreamSampleStats:
    """What ``stats.json`` records about one stream-mode build."""

    mode: str
    rows: int
    impressions: int
    shards: int
    seq_len: int
    positives: dict[str, int]
    reported: dict[str, int]
    slow_rows: int
    seconds: float
    dataset: str = ""
    #: the dataset's ``start_ts`` (day 0's 00:00): where the days of ``day`` / ``hour`` start
    start_ts: int = 0
    features: str = "impression"
    order: str = "emit_ts, request_id, position, part"
    files: list[str] = field(default_factory=list)
    #: per day of ``emit_ts``: ``rows``, positives and ``reported_<task>`` of each task
    by_day: list[dict[str, int]] = field(default_factory=list)
    #: rows read per screened table (impressions, live and video events)
    rows_read: dict[str, int] = field(default_factory=dict)
    #: rows set aside ``{table: {reason: rows}}``, written to ``dead_letters``
    set_aside: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: str = DEAD_LETTERS_FILE
    unknown_events: str = "dead-letter"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def build_stream_samples(
    dataset_dir: str | Path,
    out_dir: str | Path,
    mode: str,
    seq_len: int = 50,
    progress: bool = True,
    *,
    shard_rows: int = 200_000,
    long_len: int = 0,
    features: str = "impression",
    unknown_events: str = "dead-letter",
    segments: int = 0,
    graph_k: int = 0,
) -> StreamSampleStats:
    """Build the samples directory ``out_dir`` of reporting ``mode`` from ``dataset_dir``.

    Args:
        dataset_dir: canonical dataset directory.
        out_dir: samples directory to write (existing shards, feature map and stats replaced).
        mode: ``exit``, ``fast_slow`` or ``moment`` (:data:`liverank.stream.reporting.MODES`).
        seq_len: sequence length of the features (as in the offline builder).
        progress: show progress bars.
        shard_rows: rows per output shard.
        long_len: ``K > 0`` also writes the long-history store ``long_history/`` and keeps the
            ``long_<d>_start / _end`` columns (as of the impression ``ts``), as
            :func:`liverank.data.samples.build_samples` does.
        features: ``"impression"`` (default): features as of the impression ``ts``;
            ``"emission"``: the time-dependent columns recomputed at ``emit_ts``
            (:mod:`liverank.stream.emission_features`; read its leakage caveat first).
        unknown_events: ``"dead-letter"`` (default) sets rows with an unknown event name aside;
            ``"error"`` raises :class:`DataValidationError` naming them.
        segments: ``N > 0`` (``moment`` only): the room's last ``N`` content segments as of the
            row's window (``seg_idx`` and ``segments.npy``; module doc).
        graph_k: ``K > 0``: the top-``K`` metapath neighbours of the user and the author
            (``gie_<metapath>`` and the daily stores under ``graph/``).

    Returns:
        The :class:`StreamSampleStats` also written to ``stats.json``.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown stream mode '{mode}' (expected one of {MODES})")
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    if features not in FEATURE_TIMES:
        raise ConfigError(f"features must be one of {FEATURE_TIMES}, got '{features}'")
    mmbee.check_mmbee_inputs(segments, graph_k)
    if segments and mode != "moment":
        raise ConfigError(
            f"segments: only 'moment' rows carry the segment of the reported behaviour (MMBee's "
            f"segment-level labels); '{mode}' reports at a fixed delay or at the exit"
        )
    started = time.perf_counter()
    root, out = Path(dataset_dir), Path(out_dir)
    meta = read_meta(root)
    out.mkdir(parents=True, exist_ok=True)

    screen = RowScreen.of(root, unknown_events)
    seg_table = mmbee.SegmentTable.read(root) if segments else None  # raises if it is missing
    with tempfile.TemporaryDirectory(dir=out, prefix=".offline-") as tmp:
        build_samples(
            root,
            tmp,
            seq_len=seq_len,
            progress=progress,
            long_len=long_len,
            unknown_events=unknown_events,
            screen=screen,
            segments=segments,
            graph_k=graph_k,
        )
        offline = pl.read_parquet(Path(tmp) / "part-*.parquet")
        fmap = FeatureMap.load(Path(tmp) / "feature_map.json")
        shutil.rmtree(out / lh.STORE_DIR, ignore_errors=True)
        if long_len > 0:  # same store: the index columns point into it
            shutil.move(Path(tmp) / lh.STORE_DIR, out / lh.STORE_DIR)
        shutil.move(Path(tmp) / DEAD_LETTERS_FILE, out / DEAD_LETTERS_FILE)
        for name in (mmbee.SEGMENT_FILE, mmbee.GRAPH_DIR):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            if (Path(tmp) / name).exists():
                shutil.move(Path(tmp) / name, target)
    rows = _emitted(screen, mode, meta.long_view_ms)

    feature_cols = offline.drop(*_LABELS, "day", "hour").rename({"sample_id": "_key"})
    missing = rows.join(feature_cols.select("_key"), on="_key", how="anti").height
    if missing:
        raise DataValidationError(
            f"{missing} emitted row(s) have no offline features",
            file=str(table_path(root, "live_impressions")),
        )
    rel = rows["emit_ts"] - meta.start_ts
    rows = rows.with_columns(
        (rel // enc.MS_PER_DAY).alias("day"), (rel // enc.MS_PER_HOUR).alias("hour")
    )
    columns = [*offline.columns, *STREAM_COLUMNS]

    def with_features(part: pl.DataFrame) -> pl.DataFrame:
        """The emitted rows ``part`` with their impression's features, in ``part``'s order."""
        joined = part.join(feature_cols, on="_key", how="inner", maintain_order="left")
        if seg_table is not None:  # the segments current in the reported window
            seg = seg_table.last_before(
                joined["live_id"].to_numpy(), joined["emit_ts"].to_numpy() - 1, segments
            )  # [r, N]
            joined = joined.with_columns(
                pl.Series(mmbee.SEGMENT_INDEX_COLUMN, seg, dtype=pl.Array(pl.Int32, segments))
            )
        return joined.select(*columns)  # [r, C]

    for p in [*out.glob("part-*.parquet"), out / STATS_FILE]:
        p.unlink(missing_ok=True)
    n_shards = max(1, math.ceil(len(rows) / shard_rows))
    frame: pl.DataFrame | None = None
    if features == "emission":  # recomputed over the whole stream at once
        frame = features_at_emission(root, with_features(rows), seq_len, screen=screen)
    files = []
    for k in tqdm(range(n_shards), desc=f"write {mode}", disable=None if progress else True):
        path = out / SHARD_PATTERN.format(k)
        # one shard's rows joined at a time: the features of every emitted row at once need
        # several copies of the offline samples (> 24 GB on the evidence world)
        part = (
            frame.slice(k * shard_rows, shard_rows)
            if frame is not None
            else with_features(rows.slice(k * shard_rows, shard_rows))
        )
        part.write_parquet(
            path, compression="zstd", statistics=True, row_group_size=SAMPLE_ROW_GROUP_ROWS
        )
        files.append(path.name)
    fmap.save(out / "feature_map.json")
    stats = StreamSampleStats(
        mode=mode,
        rows=len(rows),
        impressions=len(offline),
        shards=n_shards,
        seq_len=seq_len,
        positives={t: int(rows[t].sum()) for t in TASKS},
        reported={t: int(rows[f"mask_{t}"].sum()) for t in TASKS},
        slow_rows=int(rows["slow"].sum()),
        seconds=round(time.perf_counter() - started, 3),
        dataset=meta.name,
        start_ts=int(meta.start_ts),
        features=features,
        files=files,
        by_day=day_summary(rows),
        rows_read=dict(screen.read),
        set_aside=screen.set_aside,
        unknown_events=unknown_events,
    )
    stats.save(out / STATS_FILE)
    log.info("built %d %s samples in %d shard(s) at %s", len(rows), mode, n_shards, out)
    return stats


def _emitted(screen: RowScreen, mode: str, long_view_ms: int) -> pl.DataFrame:
    """``emit_rows`` of ``mode`` plus ``_key`` = the offline sample id of the impression."""
    root = screen.root
    impressions = (
        screen.scan("live_impressions")
        .select("request_id", "position", "ts", "user_id", "live_id")
        .collect()
    )
    events = (
        screen.scan("live_events")
        .filter(pl.col("event").is_in(list(_VISIT_EVENTS)))
        .select("ts", "user_id", "live_id", "event")
        .collect()
    )
    rooms = read_table(root, "rooms", ["live_id", "end_ts"])
    visits = reconstruct_visits(impressions, events, rooms, long_view_ms)
    rows = emit_rows(visits, mode)  # [R] sorted by emit_ts, request_id, position, part
    key = stable_id(rows["request_id"].to_numpy(), rows["position"].to_numpy())  # [R]
    return rows.select(
        "sample_id",
        pl.Series("_key", key, dtype=pl.Int64),
        "emit_ts",
        pl.col("part").cast(pl.Int64),
        pl.col("slow").cast(pl.Int64),
        *(pl.col(c).cast(pl.Float32) for c in _LABELS),
    )
