"""Sample builder v0: one training sample per live impression, features as of the impression.

``build_samples(dataset_dir, out_dir)`` writes a samples directory (format:
:mod:`liverank.features.spec`):

* labels come from the reconstructed visits (:mod:`liverank.data.visits`); every label is
  observed (``mask_* = 1``): this is the offline, "exit"-like view of each visit;
* features are taken strictly before the impression time ``ts``: static side features, room
  category and age, hour of day, position, and the user's last ``seq_len`` live behaviours
  (``live_events`` except ``schema.NOT_IN_LIVE_SEQUENCE``: exits, goods-bag opens and
  in-room product clicks) and short-video behaviours (``video_events`` except
  ``impression``) with ``ts < impression ts`` (:mod:`liverank.features.snapshot`);
* ``sample_id = stable_id(request_id, position)`` (:func:`liverank.features.ids.stable_id`), a
  hash of the impression key, so it does not depend on row order, chunking or what else is in
  the dataset, and the stream engine can reproduce it;
* every impression and event row is either used or set aside with a reason (null key column,
  unknown event name, unknown user / room / video; :mod:`liverank.data.dead_letters`): the
  set-aside rows are counted in ``stats.json`` (``set_aside``) and written to
  ``dead_letters.parquet``; they influence no sample. ``unknown_events="error"`` makes an
  unknown event name an error instead.

Memory. Impressions are processed in time order, ``shard_rows`` at a time (one chunk = one
shard). For chunk ``k`` covering impression times ``[B_k, B_{k+1}]`` only the events with
``B_k <= ts < B_{k+1}`` are read, and a per-user buffer keeps the last ``seq_len`` older events:
exact, because no query of a later chunk needs more than a user's last ``seq_len`` events before
it. Visits are reconstructed per user partition (a visit never spans users), with at most about
``visit_partition_events`` live events in memory at once.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from liverank.data import mmbee, room_sequences
from liverank.data import shopping as shop
from liverank.data.dead_letters import DEAD_LETTERS_FILE, RowScreen, check_policy
from liverank.data.io import read_meta, read_table, table_path
from liverank.data.schema import NOT_IN_LIVE_SEQUENCE, DatasetMeta
from liverank.data.validate import check_columns
from liverank.data.visits import DEFAULT_BEHAVIOURS, VisitStats, reconstruct_visits_with_stats
from liverank.errors import ConfigError, DataValidationError
from liverank.features import encoders as enc
from liverank.features import long_history as lh
from liverank.features.ids import stable_id
from liverank.features.snapshot import Snapshot, SortedHistory
from liverank.features.spec import LIVE_SEQ_FEATURES, TASKS, VIDEO_SEQ_FEATURES
from liverank.features.vocab import feature_map_for_dataset

log = logging.getLogger(__name__)

SAMPLE_ID_RULE = "stable_id(request_id, position): SplitMix64 hash, liverank.features.ids"
SHARD_PATTERN = "part-{:05d}.parquet"
#: rows per Parquet row group of a sample shard: what a streaming reader decodes at once
#: (``data.loader: stream``; ~1 KB a row with 50-item sequences, so ~16 MB of int16 ids and
#: ~80 MB as read); the in-memory loader reads whole shards either way
SAMPLE_ROW_GROUP_ROWS = 16_384
STATS_FILE = "stats.json"

#: the tables and columns the builder reads
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id", "age", "gender", "device", "activity"),
    "authors": ("author_id", "author_type", "fans"),
    "rooms": ("live_id", "start_ts", "end_ts", "category"),
    "live_impressions": ("request_id", "ts", "user_id", "live_id", "author_id", "position"),
    "live_events": ("ts", "user_id", "live_id", "author_id", "event"),
    "videos": ("photo_id", "tag"),
    "video_events": ("ts", "user_id", "photo_id", "author_id", "event", "play_ms"),
}


@dataclass
class SampleStats:
    """What ``stats.json`` records about one build."""

    rows: int
    shards: int
    seq_len: int
    positives: dict[str, int]
    visits: dict[str, int]
    mean_live_seq_len: float
    mean_video_seq_len: float
    seconds: float
    long_len: int = 0
    #: rows per domain of the long-history store (empty when long_len = 0)
    long_history_rows: dict[str, int] = field(default_factory=dict)
    dataset: str = ""
    sample_id_rule: str = SAMPLE_ID_RULE
    files: list[str] = field(default_factory=list)
    #: per day of the samples: ``day``, ``rows`` and the positives of each task
    by_day: list[dict[str, int]] = field(default_factory=list)
    #: rows read per screened table (impressions, live and video events)
    rows_read: dict[str, int] = field(default_factory=dict)
    #: rows set aside ``{table: {reason: rows}}``, written to ``dead_letters``
    set_aside: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: str = DEAD_LETTERS_FILE
    unknown_events: str = "dead-letter"
    #: mean length of the product sequence (``shopping=True`` builds only)
    mean_product_seq_len: float | None = None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def build_samples(
    dataset_dir: str | Path,
    out_dir: str | Path,
    seq_len: int = 50,
    shard_rows: int = 200_000,
    progress: bool = True,
    *,
    visit_partition_events: int = 5_000_000,
    long_len: int = 0,
    unknown_events: str = "dead-letter",
    screen: RowScreen | None = None,
    shopping: bool = False,
    segments: int = 0,
    graph_k: int = 0,
    room_stats: int = 0,
    room_products: int = 0,
) -> SampleStats:
    """Build the samples directory ``out_dir`` from the canonical dataset at ``dataset_dir``.

    With ``long_len = K > 0`` the long-history store ``long_history/`` and the sample columns
    ``long_<d>_start / _end`` are written too (:mod:`liverank.features.long_history`) and the
    feature map records ``long_len = K`` (the loader's default window). Existing
    ``part-*.parquet``, ``feature_map.json``, ``stats.json`` and ``long_history/`` in
    ``out_dir`` are replaced. Rows set aside (module doc) go to ``out_dir/dead_letters.parquet``
    (written also when empty); ``unknown_events="error"`` raises on an unknown event name
    instead. ``screen`` reuses a :class:`RowScreen` of the dataset (the stream-mode builder's).
    ``shopping=True`` adds the product sequence, the room's product context and the goods-bag /
    product-click labels (:mod:`liverank.data.shopping`, what eLiveRec reads); the dataset then
    needs its ``products``, ``product_events`` and ``room_products`` tables.
    ``segments = N > 0`` adds the room's last ``N`` content segments (``seg_idx``, and the
    segment table ``segments.npy``) and ``graph_k = K > 0`` the top-``K`` metapath neighbours
    of the user and the author from a graph rebuilt daily (``gie_*``, stores under ``graph/``):
    what MMBee reads (:mod:`liverank.data.mmbee`). ``room_stats = T > 0`` / ``room_products =
    L > 0`` add the room's last ``T`` windows of statistics and last ``L`` products as of the
    impression (pointers into ``room_stats.npy`` / ``room_products.npy``): what LiveForesighter
    reads (:mod:`liverank.data.room_sequences`).
    Raises :class:`ConfigError` on a bad argument and :class:`DataValidationError` if a required
    table or column is missing, unreadable or of a wrong dtype, or an impression key
    ``(request_id, position)`` is duplicated.
    """
    if seq_len < 1 or shard_rows < 1:
        raise ConfigError(f"seq_len and shard_rows must be >= 1, got {seq_len}, {shard_rows}")
    if long_len < 0 or room_stats < 0 or room_products < 0:
        raise ConfigError(
            f"long_len, room_stats and room_products must be >= 0, got {long_len}, "
            f"{room_stats}, {room_products}"
        )
    check_policy(unknown_events)
    started = time.perf_counter()
    root, out = Path(dataset_dir), Path(out_dir)
    meta = read_meta(root)
    _check_inputs(root)
    if shopping:
        shop.check_shopping_tables(root)
    mmbee.check_mmbee_inputs(segments, graph_k)
    seg_table = mmbee.SegmentTable.read(root) if segments else None  # raises if it is missing
    if screen is None:
        screen = RowScreen.of(root, unknown_events)

    impressions = (
        screen.scan("live_impressions")
        .select(REQUIRED_COLUMNS["live_impressions"])
        .collect()
        .sort(["ts", "request_id", "position"])
    )
    sample_ids = _sample_ids(impressions, root)
    rooms = read_table(root, "rooms", list(REQUIRED_COLUMNS["rooms"]))
    behaviours = {**DEFAULT_BEHAVIOURS, **(shop.SHOP_BEHAVIOURS if shopping else {})}
    labels, visit_stats = _visit_labels(
        screen, impressions, rooms, meta, visit_partition_events, behaviours
    )
    fmap = feature_map_for_dataset(root, seq_len)
    if shopping:
        fmap = shop.shopping_feature_map(fmap, root)
        categories = shop.product_categories(root)
    tasks = list(fmap.tasks)
    fmap.long_len = long_len
    if seg_table is not None:
        fmap.segments, fmap.segment_dim = segments, seg_table.dim
    fmap.graph_k = graph_k
    fmap.room_stats_window, fmap.room_products_len = room_stats, room_products
    if room_products:  # the product model's table sizes (ids 0 = padding)
        for name, column in room_sequences.PRODUCT_TABLES.items():
            fmap.tables.setdefault(name, room_sequences.max_id(root, column) + 1)
    static = _static_tables(root, rooms)

    _clear_outputs(out)
    store, store_files = None, []
    if long_len > 0:
        frames = _long_history_frames(screen, impressions, labels, static)
        store_files = lh.write_store(out, frames)
        store = lh.LongHistory.from_frames(frames)
    if seg_table is not None:
        np.save(out / mmbee.SEGMENT_FILE, seg_table.vectors)
        store_files.append(mmbee.SEGMENT_FILE)
    flat = None
    if room_stats or room_products:
        flat = room_sequences.room_store(root).flat()
        store_files += room_sequences.write_tables(out, flat, room_stats > 0, room_products > 0)
    ts_all = impressions["ts"].to_numpy()
    days = (ts_all - meta.start_ts) // enc.MS_PER_DAY  # [N]
    graphs = mmbee.build_graph_stores(root, out, meta, days, graph_k) if graph_k else {}
    if graphs:
        attr = next(iter(graphs.values())).author_attr
        fmap.author_attr_dim = 0 if attr is None else int(attr.shape[2])
    n_shards = max(1, math.ceil(len(impressions) / shard_rows))
    live_hist = SortedHistory.empty({"author": np.int64, "category": np.int64, "action": np.int64})
    video_hist = SortedHistory.empty(
        {"author": np.int64, "tag": np.int64, "action": np.int64, "play": np.int64}
    )
    product_hist = shop.empty_product_history()
    files, seq_len_sums = [], np.zeros(3)
    for k in tqdm(
        range(n_shards), desc="build samples", unit="shard", disable=None if progress else True
    ):
        lo, hi = k * shard_rows, min((k + 1) * shard_rows, len(impressions))
        t_lo, t_hi = _event_range(ts_all, lo, hi)
        chunk = impressions.slice(lo, hi - lo)
        q_user, q_ts = chunk["user_id"].to_numpy(), chunk["ts"].to_numpy()

        live_hist = live_hist.concat(_live_history(screen, t_lo, t_hi, static["room_category"]))
        live = live_hist.last_n_before(q_user, q_ts, seq_len)
        live_hist = live_hist.keep_last(seq_len)
        video_hist = video_hist.concat(_video_history(screen, t_lo, t_hi, static["video_tag"]))
        video = video_hist.last_n_before(q_user, q_ts, seq_len)
        video_hist = video_hist.keep_last(seq_len)
        seq_len_sums[:2] += (live.lengths.sum(), video.lengths.sum())

        extra = {} if store is None else _long_index(store, q_user, q_ts)
        if shopping:
            product_hist = product_hist.concat(shop.product_history(root, t_lo, t_hi, categories))
            product = product_hist.last_n_before(q_user, q_ts, seq_len)
            product_hist = product_hist.keep_last(seq_len)
            seq_len_sums[2] += product.lengths.sum()
            room = shop.room_product_context(root, chunk["live_id"].to_numpy(), q_ts, categories)
            extra = {
                **room,
                **_sequence_columns("product", tuple(shop.PRODUCT_SEQ_FEATURES), product, q_ts),
                **extra,
            }
        if seg_table is not None:
            live_ids = chunk["live_id"].to_numpy()
            extra[mmbee.SEGMENT_INDEX_COLUMN] = seg_table.last_before(live_ids, q_ts, segments)
        if flat is not None and room_stats:
            extra |= room_sequences.stat_rows(flat, chunk["live_id"].to_numpy(), q_ts)
        if flat is not None and room_products:
            extra |= room_sequences.product_rows(flat, chunk["live_id"].to_numpy(), q_ts)
        if graphs:
            extra |= mmbee.gie_columns(
                graphs,
                days[lo:hi],
                q_user,
                chunk["author_id"].to_numpy(),
            )
        frame = _assemble(
            chunk,
            sample_ids[lo:hi],
            labels.slice(lo, hi - lo),
            live,
            video,
            static,
            meta,
            extra,
            tasks,
        )
        path = out / SHARD_PATTERN.format(k)
        frame.write_parquet(
            path, compression="zstd", statistics=True, row_group_size=SAMPLE_ROW_GROUP_ROWS
        )
        files.append(path.name)

    fmap.save(out / "feature_map.json")
    screen.write(out)
    n = len(impressions)
    stats = SampleStats(
        rows=n,
        shards=n_shards,
        seq_len=seq_len,
        positives={t: int(labels[t].sum()) for t in tasks},
        visits=visit_stats.to_dict(),
        mean_live_seq_len=float(seq_len_sums[0] / max(n, 1)),
        mean_video_seq_len=float(seq_len_sums[1] / max(n, 1)),
        mean_product_seq_len=float(seq_len_sums[2] / max(n, 1)) if shopping else None,
        seconds=round(time.perf_counter() - started, 3),
        dataset=meta.name,
        files=files + store_files,
        long_len=long_len,
        long_history_rows={} if store is None else {d: t.size for d, t in store.tables.items()},
        by_day=day_summary(labels.select(tasks).with_columns(pl.Series("day", days))),
        rows_read=dict(screen.read),
        set_aside=screen.set_aside,
        unknown_events=unknown_events,
    )
    stats.save(out / STATS_FILE)
    log.info("built %d samples in %d shard(s) at %s in %.1f s", n, n_shards, out, stats.seconds)
    return stats


def day_summary(frame: pl.DataFrame) -> list[dict[str, int]]:
    """Per ``day`` of sample rows: ``rows``, the positives of each task and, when the frame has
    masks, ``reported_<task>`` (rows whose label is reported)."""
    tasks = [t for t in (*TASKS, *shop.SHOP_TASKS) if t in frame.columns]
    masks = [f"mask_{t}" for t in tasks if f"mask_{t}" in frame.columns]
    agg = (
        frame.group_by("day")
        .agg(
            pl.len().alias("rows"),
            *(pl.col(t).sum().cast(pl.Int64) for t in tasks),
            *(pl.col(m).sum().cast(pl.Int64).alias(f"reported_{m[5:]}") for m in masks),
        )
        .sort("day")
    )
    return [{k: int(v) for k, v in row.items()} for row in agg.iter_rows(named=True)]


# ---------------------------------------------------------------------------------- inputs
def _check_inputs(root: Path) -> None:
    """Every required table readable, with its columns present and of accepted dtypes."""
    for table, columns in REQUIRED_COLUMNS.items():
        check_columns(root, table, columns)


def _sample_ids(impressions: pl.DataFrame, root: Path) -> np.ndarray:
    """``[N]`` sample ids; raises on a duplicated impression key."""
    keys = impressions.select("request_id", "position")
    dup = keys.with_row_index("_row").filter(keys.is_duplicated())
    if len(dup):
        raise DataValidationError(
            "duplicate impression key (request_id, position)",
            file=str(table_path(root, "live_impressions")),
            column="request_id, position",
            rows=dup["_row"].head(5).to_list(),
            examples=list(zip(dup["request_id"].head(5), dup["position"].head(5), strict=True)),
        )
    ids = stable_id(keys["request_id"].to_numpy(), keys["position"].to_numpy())  # [N]
    if len(np.unique(ids)) != len(ids):  # ~N^2 / 2^64: practically never
        raise DataValidationError("sample_id hash collision; please report this as a bug")
    return ids


def _visit_labels(
    screen: RowScreen,
    impressions: pl.DataFrame,
    rooms: pl.DataFrame,
    meta: DatasetMeta,
    part_events: int,
    behaviours: dict[str, str] = DEFAULT_BEHAVIOURS,
) -> tuple[pl.DataFrame, VisitStats]:
    """Labels aligned with ``impressions`` rows, computed per user partition."""
    visit_events = list(dict.fromkeys(["enter", "exit", *behaviours.values()]))
    label_tasks = [*TASKS, *(t for t in behaviours if t not in TASKS)]
    n_events = screen.read["live_events"] - screen.rows_set_aside("live_events")
    parts = max(1, math.ceil(n_events / max(part_events, 1)))
    imp = impressions.with_row_index("_row")
    frames, totals = [], None
    for p in range(parts):
        in_part = (pl.col("user_id") % parts) == p
        events = (
            screen.scan("live_events")
            .filter(in_part & pl.col("event").is_in(visit_events))
            .select("ts", "user_id", "live_id", "event")
            .collect()
        )
        part_imp = imp.filter(in_part)
        visits, stats = reconstruct_visits_with_stats(
            part_imp.drop("_row"), events, rooms, meta.long_view_ms, behaviours=behaviours
        )
        frames.append(
            visits.select(*label_tasks, "stay_ms", "t_lvtr").with_columns(part_imp["_row"])
        )
        d = stats.to_dict()
        totals = d if totals is None else {k: totals[k] + v for k, v in d.items()}
    labels = pl.concat(frames).sort("_row").drop("_row")
    return labels, VisitStats(**{k: v for k, v in totals.items() if k != "unmatched_enters"})


def _static_tables(root: Path, rooms: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Small lookup tables joined onto impressions and events."""
    users = read_table(root, "users").select(
        "user_id",
        *(
            pl.col(c).cast(pl.Int64).alias(f"user_{c}")
            for c in ("age", "gender", "device", "activity")
        ),
    )
    authors = read_table(root, "authors")
    authors = authors.select(
        "author_id",
        pl.Series("author_type", enc.author_type_code(authors["author_type"])),
        pl.col("fans").cast(pl.Int64).alias("author_fans"),
    )
    videos = read_table(root, "videos", ["photo_id", "tag"])
    return {
        "users": users,
        "authors": authors,
        "rooms": rooms.select(
            "live_id", pl.col("category").cast(pl.Int64).alias("room_category"), "start_ts"
        ),
        "room_category": rooms.select("live_id", pl.col("category").cast(pl.Int64)),
        "video_tag": videos.select("photo_id", pl.col("tag").cast(pl.Int64)),
    }


def _event_range(ts: np.ndarray, lo: int, hi: int) -> tuple[int | None, int]:
    """Events to read for impression rows ``lo:hi`` (``ts`` sorted): ``[t_lo, t_hi)``.

    From the chunk's first ts (no lower bound for the first chunk) to the next chunk's first
    ts; the last chunk stops at its own last ts, as no query needs an event at or after it.
    """
    t_lo = int(ts[lo]) if lo > 0 else None
    if hi < len(ts):
        return t_lo, int(ts[hi])
    return t_lo, int(ts[-1]) if len(ts) else 0


def _scan_range(lf: pl.LazyFrame, t_lo: int | None, t_hi: int) -> pl.LazyFrame:
    """Rows with ``t_lo <= ts < t_hi`` (no lower bound if ``t_lo`` is None), in file order."""
    cond = pl.col("ts") < t_hi
    if t_lo is not None:
        cond = cond & (pl.col("ts") >= t_lo)
    return lf.filter(cond)


def _live_history(
    screen: RowScreen, t_lo: int | None, t_hi: int, room_category: pl.DataFrame
) -> SortedHistory:
    ev = (
        _scan_range(screen.scan("live_events"), t_lo, t_hi)
        .filter(~pl.col("event").is_in(NOT_IN_LIVE_SEQUENCE))
        .select("ts", "user_id", "live_id", "author_id", "event")
        .collect()
        .join(room_category, on="live_id", how="left", maintain_order="left")
    )
    cols = {
        "author": ev["author_id"].to_numpy(),
        "category": ev["category"].fill_null(0).to_numpy(),
        "action": enc.live_action_code(ev["event"]),
    }
    return SortedHistory.build(ev["user_id"].to_numpy(), ev["ts"].to_numpy(), cols)


def _video_history(
    screen: RowScreen, t_lo: int | None, t_hi: int, video_tag: pl.DataFrame
) -> SortedHistory:
    ev = (
        _scan_range(screen.scan("video_events"), t_lo, t_hi)
        .filter(pl.col("event") != "impression")
        .select("ts", "user_id", "photo_id", "author_id", "event", "play_ms")
        .collect()
        .join(video_tag, on="photo_id", how="left", maintain_order="left")
    )
    cols = {
        "author": ev["author_id"].to_numpy(),
        "tag": ev["tag"].fill_null(0).to_numpy(),
        "action": enc.video_action_code(ev["event"]),
        "play": enc.play_bucket(ev["play_ms"].fill_null(0).to_numpy()),
    }
    return SortedHistory.build(ev["user_id"].to_numpy(), ev["ts"].to_numpy(), cols)


# ---------------------------------------------------------------------------------- output
def _sequence_columns(
    domain: str, features: tuple[str, ...], snap: Snapshot, q_ts: np.ndarray
) -> dict[str, np.ndarray]:
    """``<domain>_seq_<x>`` ``[Q, L]`` arrays in spec order, plus ``<domain>_seq_len`` ``[Q]``."""
    gap = np.where(snap.mask, enc.time_gap_bucket(q_ts[:, None] - snap.ts), 0)  # [Q, L]
    out = {}
    for x in features:
        arr = gap if x == "age" else snap.columns[x]
        out[f"{domain}_seq_{x}"] = np.ascontiguousarray(arr, dtype=np.int64)
    out[f"{domain}_seq_len"] = snap.lengths
    return out


def _assemble(
    chunk: pl.DataFrame,
    sample_ids: np.ndarray,
    labels: pl.DataFrame,
    live: Snapshot,
    video: Snapshot,
    static: dict[str, pl.DataFrame],
    meta: DatasetMeta,
    extra: dict[str, np.ndarray],
    tasks: list[str],
) -> pl.DataFrame:
    """One shard: meta, sparse features, sequences, ``extra`` columns (the shopping columns and
    the long-history index, when built), labels and masks (spec column order)."""
    side = (
        chunk.select("user_id", "author_id", "live_id")
        .join(static["users"], on="user_id", how="left", maintain_order="left")
        .join(static["authors"], on="author_id", how="left", maintain_order="left")
        .join(static["rooms"], on="live_id", how="left", maintain_order="left")
        .fill_null(0)
    )
    ts = chunk["ts"].to_numpy()  # [Q]
    rel = ts - meta.start_ts
    cols: dict[str, np.ndarray | pl.Series] = {
        "sample_id": sample_ids,
        "request_id": chunk["request_id"].to_numpy(),
        "ts": ts,
        "day": rel // enc.MS_PER_DAY,
        "hour": rel // enc.MS_PER_HOUR,
        "live_id": chunk["live_id"].to_numpy(),
        "user_id": chunk["user_id"].to_numpy(),
    }
    for c in ("user_age", "user_gender", "user_device", "user_activity"):
        cols[c] = side[c].to_numpy()
    cols["author_id"] = chunk["author_id"].to_numpy()
    cols["author_type"] = side["author_type"].to_numpy()
    cols["author_fans"] = side["author_fans"].to_numpy()
    cols["room_category"] = side["room_category"].to_numpy()
    # every impressed room exists (reconstruct_visits raises otherwise), so start_ts is known
    cols["room_age_bucket"] = enc.room_age_bucket(ts, side["start_ts"].to_numpy())
    cols["position"] = enc.position_code(chunk["position"].to_numpy())
    cols["hour_of_day"] = enc.hour_of_day(ts, meta.day_offset_ms)
    cols |= _sequence_columns("live", tuple(LIVE_SEQ_FEATURES), live, ts)
    cols |= _sequence_columns("video", tuple(VIDEO_SEQ_FEATURES), video, ts)
    cols |= extra
    for t in tasks:
        cols[t] = labels[t].cast(pl.Float32).to_numpy()
    cols["stay_ms"] = labels["stay_ms"].cast(pl.Float32).to_numpy()
    for t in tasks:
        cols[f"mask_{t}"] = np.ones(len(ts), dtype=np.float32)
    return pl.DataFrame(
        {
            name: pl.Series(name, v, dtype=pl.Array(pl.Int64, v.shape[1]))
            if isinstance(v, np.ndarray) and v.ndim == 2
            else pl.Series(name, v, dtype=pl.Float32 if v.dtype == np.float32 else pl.Int64)
            for name, v in cols.items()
        }
    )


def _clear_outputs(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stale = [*out.glob("part-*.parquet"), out / "feature_map.json", out / STATS_FILE]
    stale.append(out / DEAD_LETTERS_FILE)
    stale += [lh.store_path(out, d) for d in lh.DOMAIN_COLUMNS]
    stale += [out / mmbee.SEGMENT_FILE, out / mmbee.GRAPH_DIR]
    removed = [p for p in stale if p.exists()]
    for p in removed:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if removed:
        log.info("removed %d file(s) of a previous build in %s", len(removed), out)


# ---------------------------------------------------------------------------------- long history
def _long_history_frames(
    screen: RowScreen,
    impressions: pl.DataFrame,
    labels: pl.DataFrame,
    static: dict[str, pl.DataFrame],
) -> dict[str, pl.DataFrame]:
    """The whole live and video histories, with one long-view row per long visit (t_lvtr)."""
    long_views = (
        impressions.select("user_id", "live_id", "author_id")
        .with_columns(labels["t_lvtr"].alias("ts"))
        .filter(pl.col("ts").is_not_null())
    )
    return lh.read_history_frames(
        screen.root, long_views, static["room_category"], scan=screen.scan
    )


def _long_index(
    store: lh.LongHistory, q_user: np.ndarray, q_ts: np.ndarray
) -> dict[str, np.ndarray]:
    """``long_<d>_start / _end`` ``[Q]`` of one chunk."""
    out = {}
    for domain, table in store.tables.items():
        start, end = table.bounds(q_user, q_ts)
        c_start, c_end = lh.index_columns(domain)
        out[c_start], out[c_end] = start, end
    return out
