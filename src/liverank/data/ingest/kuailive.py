"""KuaiLive (Kuaishou, SIGIR 2026; ``shared/data/SCHEMAS.md`` section 1) to the canonical tables.

``liverank ingest kuailive DIR --out DATASET``. The mapping:

* **users** (``user.csv``): ``age``, ``gender``, ``device`` (``device_price``) as codes (a
  bucket's code is the rank of its lower bound, 0 = empty or unknown); ``activity`` the tercile
  of the user's clicks in the log (1 low, 2 mid, 3 high; 0 = no click). The two flags are kept
  as ``is_live_streamer`` / ``is_photo_author`` (either spelling accepted).
* **authors** (``streamer.csv``): ``category`` from ``live_operation_tag`` (1 = empty, then one
  code per tag), ``fans`` from ``fans_user_num`` (or ``fans_num``); ``author_type`` from the
  content category of most of the streamer's rooms (``shop`` -> shopping, a category naming
  games -> game, chat -> chat, anything else -> talent_show: KuaiLive documents no other
  value). A streamer that owns rooms but has no profile row is added with unknown features
  (counted).
* **rooms** (``room.csv``): ``live_id, author_id, start_ts, end_ts``, ``category`` from
  ``live_content_category``, and ``title_id`` (``live_name_id``: the row of the room's title in
  ``title_embeddings.npy``, copied beside the tables; -1 when the room has none). A room that
  ends at or before it starts is set aside.
* **live_impressions**: one per ``click.csv`` row (clicked) and one per ``negative.csv`` row
  (shown, not clicked), each its own request (KuaiLive has no slates: ``position`` 0,
  ``surface`` ``click`` / ``negative``).
* **live_events**: per click an ``enter`` at its time and an ``exit`` after ``watch_live_time``
  (clipped to 1 ms before the room's end: counted), so the canonical visit rule rebuilds the
  visit; ``comment`` / ``like`` / ``gift`` (``value`` = ``gift_price``) at their own times. The
  share of those inside a visit of the same (user, room) is counted; the others are kept (they
  are real behaviour; no visit claims them).
* **videos** / **video_events**: empty (KuaiLive has no short-video domain).

An event row is set aside (``set_aside.parquet``, counted by reason) when its room is not in
``room.csv`` (or was set aside), its user is not in ``user.csv``, its streamer is not the room's,
it falls outside the room's air time ``[start, end)``, or (clicks) its watch time is negative.
Days are Beijing days (``day_offset_ms`` = 8 h).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.ingest.common import (
    BEIJING_MS,
    LINE,
    SET_ASIDE_FILE,
    SET_ASIDE_SCHEMA,
    Field,
    IngestReport,
    Progress,
    check_unique,
    check_values,
    find_file,
    local_midnight,
    scan_csv,
    screen_events,
    set_aside_rows,
    typed,
    write_by_day,
)
from liverank.data.io import write_meta, write_table
from liverank.data.schema import TABLES, DatasetMeta
from liverank.errors import ConfigError, DataValidationError
from liverank.features.encoders import MS_PER_DAY

log = logging.getLogger(__name__)

TITLE_FILE = "title_embeddings.npy"
SCRATCH = ".ingest_scratch"
#: naming variants of each file, the current documentation's first
FILES: dict[str, tuple[str, ...]] = {
    "user": ("user.csv",),
    "streamer": ("streamer.csv", "author.csv"),
    "room": ("room.csv", "mapped_room.csv"),
    "click": ("click.csv",),
    "comment": ("comment.csv",),
    "like": ("like.csv",),
    "gift": ("gift.csv",),
    "negative": ("negative.csv",),
}
TITLES = ("title_embeddings.npy", "title_embeddings.npz", "title_embeddings_pca128.npy")
STREAMER = Field("author_id", "int", ("streamer_id",))
EVENT_FIELDS = (
    Field("user_id", "int"),
    Field("live_id", "int"),
    STREAMER,
    Field("ts", "ts", ("timestamp",)),
)
FIELDS: dict[str, tuple[Field, ...]] = {
    "user": (
        Field("user_id", "int"),
        Field("age", "str", nullable=True),
        Field("gender", "str", nullable=True),
        Field("device_price", "str", nullable=True),
        Field("is_live_streamer", "int", ("is_live_author",), nullable=True),
        Field("is_photo_author", "int", ("is_video_author",), nullable=True),
    ),
    "streamer": (
        STREAMER,
        Field("live_operation_tag", "str", nullable=True),
        Field("fans_user_num", "str", ("fans_num",), nullable=True),
    ),
    "room": (
        Field("live_id", "int"),
        STREAMER,
        Field("start_ts", "ts", ("start_timestamp",)),
        Field("end_ts", "ts", ("end_timestamp",)),
        Field("live_content_category", "str", nullable=True),
        Field("live_name_id", "int", nullable=True),
    ),
    "click": (*EVENT_FIELDS, Field("watch_live_time", "int")),
    "comment": EVENT_FIELDS,
    "like": EVENT_FIELDS,
    "gift": (*EVENT_FIELDS, Field("gift_price", "float")),
    "negative": EVENT_FIELDS,
}
UNKNOWN_ROOM = "unknown room (not in room.csv, or set aside)"
NEGATIVE_WATCH = "negative watch_live_time"
BAD_ROOM = "room ends at or before it starts"


def bucket_codes(values: pl.Series) -> pl.Series:
    """Ordinal codes of bucket strings (``"10-100"``, ``"5000+"``, ``"0"``, ``"1w-10w"``): the
    rank of each bucket's lower bound among the distinct buckets, from 1; 0 for an empty or
    unparseable value (``"unknown"``)."""
    text = values.cast(pl.String).str.strip_chars()
    distinct = [v for v in text.unique().to_list() if v]
    bounds = {v: _lower_bound(v) for v in distinct}
    ranked = sorted((b, v) for v, b in bounds.items() if b is not None)
    codes = {v: i + 1 for i, (_, v) in enumerate(ranked)}
    return text.replace_strict(codes, default=0, return_dtype=pl.Int32)


_UNITS = {"": 1.0, "k": 1e3, "w": 1e4, "m": 1e6}


def _lower_bound(text: str) -> float | None:
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kwm]?)", text.lower())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def category_codes(values: pl.Series, first: int) -> pl.Series:
    """One code per distinct non-empty string (sorted), from ``first``; ``first - 1`` for an
    empty value."""
    text = values.cast(pl.String).str.strip_chars().fill_null("")
    distinct = sorted(v for v in text.unique().to_list() if v)
    codes = {v: first + i for i, v in enumerate(distinct)}
    return text.replace_strict(codes, default=first - 1, return_dtype=pl.Int32)


def gender_codes(values: pl.Series) -> pl.Series:
    text = values.cast(pl.String).str.strip_chars().str.to_uppercase().fill_null("")
    return (
        pl.select(
            pl.when(text == "M")
            .then(1)
            .when(text == "F")
            .then(2)
            .when(text.is_in(["", "U", "UNKNOWN"]))
            .then(0)
            .otherwise(3)
            .cast(pl.Int32)
        )
        .to_series()
        .alias(values.name)
    )


def author_type(category: str | None) -> str:
    c = (category or "").lower()
    if c == "shop" or "shop" in c:
        return "shopping"
    if "game" in c:
        return "game"
    if "chat" in c:
        return "chat"
    return "talent_show"


def _read_dimension(root: Path, name: str, report: IngestReport) -> tuple[Path, pl.DataFrame]:
    path = find_file(root, FILES[name], name)
    fields = FIELDS[name]
    lf = scan_csv(path, fields)
    report.file(path.name).read = check_values(path, lf, fields)
    return path, typed(lf, fields).collect(engine="streaming")


def _load_titles(root: Path, out: Path, report: IngestReport) -> int:
    """Copy the title-embedding matrix (any of its three names) to ``out``; its row count."""
    path = next((root / n for n in TITLES if (root / n).exists()), None)
    if path is None:
        report.notes.append(f"no title embeddings ({', '.join(TITLES)}): title_id only")
        return 0
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                keys = list(archive.keys())
                if len(keys) != 1:
                    raise DataValidationError(
                        f"expected one array in the archive, found {keys}", file=str(path)
                    )
                matrix = archive[keys[0]]
        else:
            matrix = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataValidationError(
            f"cannot read the title embeddings: {exc}", file=str(path)
        ) from exc
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DataValidationError(
            f"title embeddings must be a 2-d float matrix, found {matrix.dtype} {matrix.shape}",
            file=str(path),
        )
    np.save(out / TITLE_FILE, matrix.astype(np.float32))
    report.notes.append(f"title embeddings {matrix.shape} from {path.name} -> {TITLE_FILE}")
    return int(matrix.shape[0])


def _rooms(root: Path, report: IngestReport, n_titles: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The kept rooms (canonical columns, ``title_id``, ``live_content_category``) and the set
    aside ones."""
    path, raw = _read_dimension(root, "room", report)
    check_unique(path, raw, "live_id")
    count = report.file(path.name)
    bad = raw.filter(pl.col("end_ts") <= pl.col("start_ts"))
    rooms = raw.filter(pl.col("end_ts") > pl.col("start_ts"))
    title = pl.col("live_name_id")
    has_title = title.is_not_null() & (title >= 0) & (title < n_titles) if n_titles else False
    rooms = rooms.with_columns(
        pl.when(has_title).then(title).otherwise(-1).cast(pl.Int64).alias("title_id"),
        category_codes(rooms["live_content_category"], 1).alias("category"),
    )
    if n_titles:
        count.notes["rooms without a title row"] = int((rooms["title_id"] < 0).sum())
    count.used = rooms.height
    if bad.height:
        count.set_aside[BAD_ROOM] = bad.height
    aside = set_aside_rows(
        bad.with_columns(pl.lit(BAD_ROOM).alias("reason"), pl.col("start_ts").alias("ts")),
        path.name,
    )
    return rooms, aside


def ingest_kuailive(
    src: str | Path,
    out: str | Path,
    long_view_ms: int = 60_000,
    progress: Progress | None = None,
) -> IngestReport:
    """Convert the KuaiLive directory ``src`` to a canonical dataset at ``out`` (module doc).
    Returns the accounting (also ``out/ingest_report.json``); set-aside rows go to
    ``out/set_aside.parquet``. ``progress`` is called with the name of each step.

    Memory: each event file is checked and screened in streaming passes into a scratch
    Parquet file; the impressions and events are then written one Beijing day at a time (each
    day sorted by time), so the peak holds the dimension tables, the clicks' visit intervals
    and one day of rows, not the whole log."""
    root, dest = Path(src), Path(out)
    if not root.is_dir():
        raise DataValidationError("not a directory", file=str(root))
    if long_view_ms <= 0:
        raise ConfigError(f"long_view_ms must be > 0, got {long_view_ms}")
    step = progress or (lambda name: None)
    started = time.perf_counter()
    report = IngestReport(source="kuailive")
    dest.mkdir(parents=True, exist_ok=True)
    scratch = dest / SCRATCH
    scratch.mkdir(exist_ok=True)
    try:
        return _ingest(root, dest, scratch, report, long_view_ms, step, started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ingest(
    root: Path,
    dest: Path,
    scratch: Path,
    report: IngestReport,
    long_view_ms: int,
    step: Progress,
    started: float,
) -> IngestReport:
    step("users")
    upath, users = _read_dimension(root, "user", report)
    check_unique(upath, users, "user_id")
    report.file(upath.name).used = users.height
    step("title embeddings")
    n_titles = _load_titles(root, dest, report)
    step("rooms")
    rooms, room_aside = _rooms(root, report, n_titles)

    # each event file: checked, then screened into scratch/<name>.parquet (streaming passes)
    names: dict[str, str] = {}  # source -> file name
    for name in ("click", "negative", "comment", "like", "gift"):
        step(f"{name}: checking")
        path = find_file(root, FILES[name], name)
        names[name] = path.name
        fields = FIELDS[name]
        lf = scan_csv(path, fields)
        count = report.file(path.name)
        count.read = check_values(path, lf, fields)
        step(f"{name}: screening")
        extra = [(pl.col("watch_live_time") < 0, NEGATIVE_WATCH)] if name == "click" else []
        keep = [LINE, "user_id", "live_id", "author_id", "ts"]
        keep += {"click": ["watch_live_time", "__end"], "gift": ["gift_price"]}.get(name, [])
        screen_events(typed(lf, fields), rooms, users, UNKNOWN_ROOM, extra=extra).select(
            *keep, "reason"
        ).sink_parquet(scratch / f"{name}.parquet")
        reasons = (
            _scan(scratch, name).group_by("reason").len().collect(engine="streaming").iter_rows()
        )
        for reason, n in reasons:
            if reason is None:
                count.used = int(n)
            else:
                count.set_aside[str(reason)] = int(n)
    report.file(names["click"]).written = {
        "live_impressions": report.file(names["click"]).used,
        "live_events": 2 * report.file(names["click"]).used,
    }
    report.file(names["negative"]).written = {
        "live_impressions": report.file(names["negative"]).used
    }
    for name in ("comment", "like", "gift"):
        report.file(names[name]).written = {"live_events": report.file(names[name]).used}

    step("visits")
    clicks = _usable(scratch, "click").with_columns(
        (pl.col("ts") + pl.col("watch_live_time")).alias("__exit")
    )
    report.file(names["click"]).notes["exits clipped to 1 ms before the room's end"] = int(
        clicks.filter(pl.col("__exit") >= pl.col("__end")).select(pl.len()).collect()[0, 0]
    )
    clicks = clicks.with_columns(pl.min_horizontal("__exit", pl.col("__end") - 1).alias("__exit"))
    visits = (
        clicks.select("user_id", "live_id", pl.col("ts").alias("__enter"), "__exit")
        .collect(engine="streaming")
        .sort("__enter")
    )
    for name in ("comment", "like", "gift"):
        rows = _usable(scratch, name).select("user_id", "live_id", "ts").collect()
        inside = _inside_visits(rows, visits)
        c = report.file(names[name])
        c.notes["inside a visit of the same user and room"] = inside
        c.notes["outside every visit (kept)"] = rows.height - inside

    step("users and authors")
    users_out = _users(users, visits)
    del visits
    authors_out, added = _authors(root, report, rooms)
    if added:
        report.notes.append(f"{added:,} streamers own rooms but have no profile row: added")

    imp_cols = ["ts", "user_id", "live_id", "author_id"]
    impressions = pl.concat(
        [
            clicks.select(*imp_cols, pl.lit("click").alias("surface")),
            _usable(scratch, "negative").select(*imp_cols, pl.lit("negative").alias("surface")),
        ]
    )
    parts = [
        clicks.select(*imp_cols, pl.lit("enter").alias("event"), pl.lit(0.0).alias("value")),
        clicks.select(
            pl.col("__exit").alias("ts"),
            "user_id",
            "live_id",
            "author_id",
            pl.lit("exit").alias("event"),
            pl.lit(0.0).alias("value"),
        ),
    ]
    for name in ("comment", "like", "gift"):
        value = pl.col("gift_price") if name == "gift" else pl.lit(0.0)
        parts.append(
            _usable(scratch, name).select(
                *imp_cols, pl.lit(name).alias("event"), value.cast(pl.Float64).alias("value")
            )
        )
    events = pl.concat(parts).with_columns(pl.lit(0, dtype=pl.Int64).alias("product_id"))

    step("time range")
    bounds = pl.concat([impressions.select("ts"), events.select("ts")]).select(
        pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi")
    )
    lo, hi = bounds.collect(engine="streaming").row(0)
    lo, hi = (0, 0) if lo is None else (int(lo), int(hi))
    start = local_midnight(lo, BEIJING_MS)
    end = local_midnight(hi, BEIJING_MS) + MS_PER_DAY

    n_imp = write_by_day(impressions, dest, "live_impressions", start, end, step, request_ids=True)
    n_ev = write_by_day(events, dest, "live_events", start, end, step)
    report.tables.update(live_impressions=n_imp, live_events=n_ev)
    step("writing")
    tables = {
        "users": users_out,
        "authors": authors_out,
        "rooms": rooms.select("live_id", "author_id", "start_ts", "end_ts", "category", "title_id"),
        "videos": pl.DataFrame(schema=TABLES["videos"].polars_schema),
        "video_events": pl.DataFrame(schema=TABLES["video_events"].polars_schema),
    }
    for name, df in tables.items():
        write_table(dest, name, df)
        report.tables[name] = df.height
    asides = [room_aside.lazy()]
    for name in ("click", "negative", "comment", "like", "gift"):
        rows = _scan(scratch, name).filter(pl.col("reason").is_not_null())
        value = pl.col("gift_price") if name == "gift" else pl.lit(None)
        asides.append(
            set_aside_rows(rows.with_columns(value.cast(pl.Float64).alias("value")), names[name])
        )
    pl.concat(asides).cast(SET_ASIDE_SCHEMA).sink_parquet(dest / SET_ASIDE_FILE)  # type: ignore[arg-type]
    write_meta(
        dest,
        DatasetMeta(
            name="kuailive",
            start_ts=start,
            end_ts=end,
            long_view_ms=long_view_ms,
            day_offset_ms=BEIJING_MS,
            source="kuailive",
            extra={
                "source_dir": str(root),
                "title_embeddings": TITLE_FILE if n_titles else None,
                "ingest_seconds": round(time.perf_counter() - started, 2),
            },
        ),
    )
    report.check_accounted()
    report.save(dest)
    return report


def _scan(scratch: Path, name: str) -> pl.LazyFrame:
    return pl.scan_parquet(scratch / f"{name}.parquet")


def _usable(scratch: Path, name: str) -> pl.LazyFrame:
    return _scan(scratch, name).filter(pl.col("reason").is_null())


def _inside_visits(rows: pl.DataFrame, visits: pl.DataFrame) -> int:
    """How many of ``rows`` (events) fall in ``[enter, exit]`` of the latest visit of the same
    (user, room) that started at or before them."""
    if rows.height == 0 or visits.height == 0:
        return 0
    hit = (
        rows.select("user_id", "live_id", "ts")
        .sort("ts")
        .join_asof(
            visits,
            left_on="ts",
            right_on="__enter",
            by=["user_id", "live_id"],
            strategy="backward",
            check_sortedness=False,
        )
    )
    return int((hit["__exit"].is_not_null() & (hit["ts"] <= hit["__exit"])).sum())


def _users(users: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    n = visits.group_by("user_id").len()
    ranked = n.with_columns(
        (pl.col("len").rank("ordinal") * 3 / (pl.len() + 1)).floor().cast(pl.Int32) + 1
    ).select("user_id", pl.col("len").alias("activity"))
    return (
        users.join(ranked, on="user_id", how="left")
        .with_columns(
            bucket_codes(users["age"]).alias("age"),
            gender_codes(users["gender"]).alias("gender"),
            bucket_codes(users["device_price"]).alias("device"),
            pl.col("activity").fill_null(0).cast(pl.Int32),
            pl.col("is_live_streamer").fill_null(0).cast(pl.Int32),
            pl.col("is_photo_author").fill_null(0).cast(pl.Int32),
        )
        .select(
            "user_id", "age", "gender", "device", "activity", "is_live_streamer", "is_photo_author"
        )
    )


def _authors(root: Path, report: IngestReport, rooms: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    path, raw = _read_dimension(root, "streamer", report)
    check_unique(path, raw, "author_id")
    report.file(path.name).used = raw.height
    # the content category of most of each streamer's rooms (ties: the smallest name)
    major = (
        rooms.with_columns(pl.col("live_content_category").fill_null(""))
        .group_by("author_id", "live_content_category")
        .len()
        .sort(["author_id", "len", "live_content_category"], descending=[False, True, False])
        .group_by("author_id", maintain_order=True)
        .first()
        .select("author_id", "live_content_category")
    )
    authors = raw.with_columns(
        category_codes(raw["live_operation_tag"], 2).alias("category"),
        bucket_codes(raw["fans_user_num"]).alias("fans"),
    ).select("author_id", "category", "fans")
    missing = (
        rooms.select("author_id")
        .unique()
        .join(authors.select("author_id"), on="author_id", how="anti")
        .with_columns(pl.lit(1, pl.Int32).alias("category"), pl.lit(0, pl.Int32).alias("fans"))
    )
    authors = pl.concat([authors, missing]).join(major, on="author_id", how="left")
    names = authors["live_content_category"].fill_null("")
    types = names.replace_strict(
        {c: author_type(c) for c in names.unique().to_list()}, return_dtype=pl.String
    )
    authors = authors.with_columns(types.alias("author_type")).select(
        "author_id", "category", "author_type", "fans"
    )
    return authors.sort("author_id"), missing.height
