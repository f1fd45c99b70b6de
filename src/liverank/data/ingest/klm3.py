"""KuaiLive-M3 (KLM3; ``shared/data/SCHEMAS.md`` section 2) to the canonical tables, both domains.

``liverank ingest klm3 DIR --out DATASET``. Required: ``user_id_set.csv``,
``author_profile.csv``, ``live_room_meta.parquet``, ``live_interaction.csv``. Read when present
(each absence is a note in the report): ``live_show.parquet``, ``live_comment.csv``,
``live_like.csv``, ``photo_meta.parquet`` + ``photo_play.parquet`` (+ ``photo_tag.csv``),
``live_emb_128_ts/*.parquet``, ``live_questionnaire.csv``. Not read: the id universes
(``live_room_set``, ``photo_id_set``: ids only), ``photo_interaction`` (daily aggregates
without a time; the official CDR benchmark uses ``photo_play`` too), ``live_share`` (no
canonical live event), ``live_emb_64`` (room level; no module reads it).

Timestamps are epoch ms or ISO date-times (CSV text or Parquet date-times), read as UTC; days
are Beijing days (``day_offset_ms`` = 8 h).

* **users**: ``user_id_set`` (no side features: codes 0); ``activity`` the tercile of the
  user's live sessions.
* **authors**: ``author_profile`` (gender, age segment, fans band as codes; KLM3 has no
  content category: ``category`` 1, ``author_type`` talent_show; the flags kept). Authors of
  rooms or videos without a profile are added with unknown features (counted).
* **rooms**: ``live_room_meta``; a room crossing midnight has one row per date: its rows are
  merged (first start, last end). A missing end is start + ``live_duration``; a room with
  neither, or whose rows disagree on the author, or that ends as it starts, is set aside.
* **live_impressions**: one per ``live_interaction`` row (surface ``interaction``: the user
  entered) and one per ``live_show`` row (surface ``show``) of a room the user never entered
  (the official negatives, "shown minus interacted"; a show of an entered room is set aside
  with that reason: the session row is its impression).
* **live_events**: per session an ``enter`` at its start and an ``exit`` at its end (or start +
  ``play_duration``; clipped to the room's end); ``comment`` / ``like`` events from
  ``live_comment`` / ``live_like`` at their times (when a file is absent, one event per
  session with a count > 0, at 1 ms before the session's end); ``gift`` (value = the number of
  gift items, ``send_gift_num``: KLM3 has no price) and ``follow`` from the session's counts,
  at 1 ms before its end: the latest they can have happened, so no stream reports them early.
* **videos**: ``photo_meta`` (duration), ``tag`` / ``cluster`` the codes of the first- and
  second-level category of ``photo_tag`` (0 when absent). **video_events**: ``play`` per
  ``photo_play`` row (``play_ms`` = leave - enter), ``follow`` when the play turned a
  non-follower into a follower. ``like_status_type``'s codes are undocumented: not read.
* **segments**: ``live_emb_128_ts`` shards. A segment's ``timestamp`` is its end and it starts
  at the room's previous segment's end (the first at the room's start); its ``ts`` is the
  first 30 s grid time at or after that start. Several segments mapping to one grid time: the
  latest kept (the content on air at that time), the others set aside. The one fused 128-d
  vector is stored as ``visual``; ``speech`` and ``text`` are zeros (KLM3 has no per-modality
  vectors: a modality ablation means nothing on it).
* **live_questionnaire**: written as it is (every column as text) to
  ``live_questionnaire.parquet``; ``selection_option`` is accepted for ``select_option``.

Every event row whose user, room (or video) is unknown, whose author is not the room's (the
video's), or that falls outside its room's air time is set aside (``set_aside.parquet``).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from liverank.data.ingest.common import (
    BEIJING_MS,
    LINE,
    OFF_AIR,
    SET_ASIDE_FILE,
    SET_ASIDE_SCHEMA,
    UNKNOWN_USER,
    Field,
    IngestReport,
    Progress,
    check_unique,
    check_values,
    local_midnight,
    scan_csv,
    scan_parquet,
    screen_events,
    set_aside_rows,
    typed,
    write_by_day,
)
from liverank.data.ingest.kuailive import (
    bucket_codes,
    category_codes,
    gender_codes,
)
from liverank.data.io import write_meta, write_table
from liverank.data.schema import TABLES, DatasetMeta
from liverank.errors import ConfigError, DataValidationError
from liverank.features.encoders import MS_PER_DAY
from liverank.stream.room_stats import WINDOW_MS

log = logging.getLogger(__name__)

SCRATCH = ".ingest_scratch"
QUESTIONNAIRE_FILE = "live_questionnaire.parquet"
UNKNOWN_ROOM = "unknown room (not in live_room_meta, or set aside)"
UNKNOWN_VIDEO = "unknown video (not in photo_meta)"
ENTERED = "the user entered this room: the session row is its impression"
NEGATIVE_DURATION = "negative duration"
NO_END = "no end time and no duration"
AUTHORS_DISAGREE = "the room's rows disagree on its author"
BAD_ROOM = "room ends at or before it starts"
SAME_WINDOW = "a later segment of the room maps to the same 30 s grid time"
SEGMENTS_DIR = "live_emb_128_ts"

ROOM_ID = Field("live_id", "int", ("live_stream_id",))
FIELDS: dict[str, tuple[Field, ...]] = {
    "user_id_set.csv": (Field("user_id", "int"),),
    "author_profile.csv": (
        Field("author_id", "int"),
        Field("gender", "str", nullable=True),
        Field("age_segment", "str", nullable=True),
        Field("fans_user_num", "str", nullable=True),
        Field("is_live_author", "int", nullable=True),
        Field("is_photo_author", "int", nullable=True),
    ),
    "live_room_meta.parquet": (
        Field("live_id", "int"),
        Field("author_id", "int"),
        Field("start_ts", "ts", ("start_timestamp",)),
        Field("end_ts", "ts", ("end_timestamp",), nullable=True),
        Field("live_duration", "int", nullable=True),
    ),
    "live_interaction.csv": (
        Field("user_id", "int"),
        Field("author_id", "int"),
        Field("live_id", "int"),
        Field("ts", "ts", ("live_play_start_timestamp",)),
        Field("end", "ts", ("live_play_end_timestamp",), nullable=True),
        Field("play_duration", "int"),
        Field("like_cnt", "int", nullable=True),
        Field("comment_cnt", "int", nullable=True),
        Field("send_gift_cnt", "int", nullable=True),
        Field("send_gift_num", "int", nullable=True),
        Field("follow_author_cnt", "int", nullable=True),
    ),
    "live_show.parquet": (
        Field("live_id", "int"),
        Field("user_id", "int"),
        Field("author_id", "int"),
        Field("ts", "ts", ("show_timestamp",)),
    ),
    "live_comment.csv": (
        ROOM_ID,
        Field("user_id", "int"),
        Field("author_id", "int"),
        Field("ts", "ts", ("comment_ts",)),
    ),
    "live_like.csv": (
        Field("user_id", "int"),
        Field("live_id", "int"),
        Field("ts", "ts", ("like_timestamp",)),
    ),
    "photo_meta.parquet": (
        Field("photo_id", "int"),
        Field("author_id", "int"),
        Field("duration", "int", nullable=True),
    ),
    "photo_tag.csv": (
        Field("photo_id", "int"),
        Field("first_level_category_name", "str", nullable=True),
        Field("second_level_category_name", "str", nullable=True),
    ),
    "photo_play.parquet": (
        Field("user_id", "int"),
        Field("photo_id", "int"),
        Field("author_id", "int"),
        Field("ts", "ts", ("enter_timestamp",)),
        Field("leave", "ts", ("leave_timestamp",)),
        Field("is_follow_before_play", "int", nullable=True),
        Field("is_follow_after_play", "int", nullable=True),
    ),
    SEGMENTS_DIR: (ROOM_ID, Field("end", "ts", ("timestamp",))),
}
REQUIRED = (
    "user_id_set.csv",
    "author_profile.csv",
    "live_room_meta.parquet",
    "live_interaction.csv",
)


def _scan(root: Path, name: str) -> tuple[Path, pl.LazyFrame]:
    path = root / name
    if name.endswith(".csv"):
        return path, scan_csv(path, FIELDS[name])
    return path, scan_parquet(path, FIELDS[name])


def _checked(root: Path, name: str, report: IngestReport) -> pl.LazyFrame:
    """The typed lazy frame of ``name`` after one checking pass (rows read counted)."""
    path, lf = _scan(root, name)
    report.file(name).read = check_values(path, lf, FIELDS[name])
    return typed(lf, FIELDS[name])


def ingest_klm3(
    src: str | Path,
    out: str | Path,
    long_view_ms: int = 60_000,
    progress: Progress | None = None,
) -> IngestReport:
    """Convert the KLM3 directory ``src`` to a canonical dataset at ``out`` (module doc).
    Returns the accounting (also ``out/ingest_report.json``); set-aside rows go to
    ``out/set_aside.parquet``. Memory: as :func:`~liverank.data.ingest.kuailive.ingest_kuailive`
    (streaming passes, one day of rows at a time); the segments are written one shard at a
    time (their start times need only their rooms' ids and end times in memory)."""
    root, dest = Path(src), Path(out)
    if not root.is_dir():
        raise DataValidationError("not a directory", file=str(root))
    missing = [n for n in REQUIRED if not (root / n).exists()]
    if missing:
        raise DataValidationError(
            f"not a KuaiLive-M3 directory: missing {', '.join(missing)}", file=str(root)
        )
    if long_view_ms <= 0:
        raise ConfigError(f"long_view_ms must be > 0, got {long_view_ms}")
    step = progress or (lambda name: None)
    report = IngestReport(source="klm3")
    dest.mkdir(parents=True, exist_ok=True)
    scratch = dest / SCRATCH
    scratch.mkdir(exist_ok=True)
    started = time.perf_counter()
    try:
        return _ingest(root, dest, scratch, report, long_view_ms, step, started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _rooms(root: Path, report: IngestReport) -> tuple[pl.DataFrame, pl.LazyFrame]:
    name = "live_room_meta.parquet"
    raw = _checked(root, name, report).collect(engine="streaming")
    merged = raw.group_by("live_id").agg(
        pl.col(LINE).min(),
        pl.len().alias("__rows"),
        pl.col("author_id").n_unique().alias("__authors"),
        pl.col("author_id").first(),
        pl.col("start_ts").min(),
        pl.col("end_ts").max(),
        (pl.col("start_ts") + pl.col("live_duration")).max().alias("__by_duration"),
    )
    merged = merged.with_columns(pl.coalesce("end_ts", "__by_duration").alias("end_ts"))
    reason = (
        pl.when(pl.col("__authors") > 1)
        .then(pl.lit(AUTHORS_DISAGREE))
        .when(pl.col("end_ts").is_null())
        .then(pl.lit(NO_END))
        .when(pl.col("end_ts") <= pl.col("start_ts"))
        .then(pl.lit(BAD_ROOM))
    )
    merged = merged.with_columns(reason.otherwise(None).alias("reason"))
    rooms = merged.filter(pl.col("reason").is_null())
    bad = merged.filter(pl.col("reason").is_not_null())
    c = report.file(name)
    c.notes["rooms split over several rows (merged)"] = int((merged["__rows"] > 1).sum())
    # every row of a kept room is used; the rows of a set-aside room are set aside
    c.used = int(rooms["__rows"].sum())
    for why, n in bad.group_by("reason").agg(pl.col("__rows").sum()).iter_rows():
        c.set_aside[str(why)] = int(n)
    aside = raw.join(bad.select("live_id", "reason"), on="live_id").with_columns(
        pl.col("start_ts").alias("ts")
    )
    rooms = rooms.with_columns(pl.lit(0, pl.Int32).alias("category")).select(
        "live_id", "author_id", "start_ts", "end_ts", "category"
    )
    return rooms.sort("live_id"), set_aside_rows(aside, name).lazy()


def _sink_screened(
    frame: pl.LazyFrame, scratch: Path, name: str, keep: list[str], report: IngestReport
) -> None:
    """Write ``frame`` (with ``reason``) to ``scratch/name.parquet`` and count its reasons."""
    frame.select(LINE, *keep, "reason").sink_parquet(scratch / f"{name}.parquet")
    c = report.file(name)
    counts = pl.scan_parquet(scratch / f"{name}.parquet").group_by("reason").len()
    for why, n in counts.collect(engine="streaming").iter_rows():
        if why is None:
            c.used = int(n)
        else:
            c.set_aside[str(why)] = int(n)


def _usable(scratch: Path, name: str) -> pl.LazyFrame:
    return pl.scan_parquet(scratch / f"{name}.parquet").filter(pl.col("reason").is_null())


def _ingest(
    root: Path,
    dest: Path,
    scratch: Path,
    report: IngestReport,
    long_view_ms: int,
    step: Progress,
    started: float,
) -> IngestReport:
    present = {n: (root / n).exists() for n in FIELDS}
    for name, here in present.items():
        if not here and name not in REQUIRED:
            report.notes.append(f"{name} absent: not read")
    asides: list[pl.LazyFrame] = []

    step("users, authors, rooms")
    users = _checked(root, "user_id_set.csv", report).collect(engine="streaming")
    check_unique(root / "user_id_set.csv", users, "user_id")
    report.file("user_id_set.csv").used = users.height
    profiles = _checked(root, "author_profile.csv", report).collect(engine="streaming")
    check_unique(root / "author_profile.csv", profiles, "author_id")
    report.file("author_profile.csv").used = profiles.height
    rooms, room_aside = _rooms(root, report)
    asides.append(room_aside)

    step("sessions")
    name = "live_interaction.csv"
    sessions = screen_events(
        _checked(root, name, report),
        rooms,
        users,
        UNKNOWN_ROOM,
        extra=((pl.col("play_duration") < 0, NEGATIVE_DURATION),),
    ).with_columns(
        pl.coalesce("end", pl.col("ts") + pl.col("play_duration")).alias("__exit"),
    )
    counts = ["like_cnt", "comment_cnt", "send_gift_cnt", "send_gift_num", "follow_author_cnt"]
    keep = ["user_id", "live_id", "author_id", "ts", "__exit", "__end", *counts]
    _sink_screened(sessions, scratch, name, keep, report)
    s = _usable(scratch, name)
    c = report.file(name)
    c.notes["exits clipped to 1 ms before the room's end"] = int(
        s.filter(pl.col("__exit") >= pl.col("__end")).select(pl.len()).collect()[0, 0]
    )
    s = s.with_columns(
        pl.max_horizontal("ts", pl.min_horizontal("__exit", pl.col("__end") - 1)).alias("__exit")
    )
    entered = s.select("user_id", "live_id").unique()

    step("shows")
    if present["live_show.parquet"]:
        name = "live_show.parquet"
        shows = screen_events(_checked(root, name, report), rooms, users, UNKNOWN_ROOM).join(
            entered.with_columns(pl.lit(True).alias("__entered")),
            on=["user_id", "live_id"],
            how="left",
        )
        shows = shows.with_columns(
            pl.when(pl.col("reason").is_null() & pl.col("__entered").is_not_null())
            .then(pl.lit(ENTERED))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
        _sink_screened(shows, scratch, name, ["user_id", "live_id", "author_id", "ts"], report)
    else:
        report.notes.append("no live_show.parquet: every impression is a session (no negatives)")

    step("comments and likes")
    for name, has_author in (("live_comment.csv", True), ("live_like.csv", False)):
        if present[name]:
            frame = screen_events(
                _checked(root, name, report), rooms, users, UNKNOWN_ROOM, author=has_author
            )
            _sink_screened(frame, scratch, name, ["user_id", "live_id", "author_id", "ts"], report)

    imp_cols = ["ts", "user_id", "live_id", "author_id"]
    impressions = [s.select(*imp_cols, pl.lit("interaction").alias("surface"))]
    if present["live_show.parquet"]:
        impressions.append(
            _usable(scratch, "live_show.parquet").select(*imp_cols, pl.lit("show").alias("surface"))
        )

    def at(ts: pl.Expr, event: str, value: pl.Expr = pl.lit(0.0)) -> list[pl.Expr]:
        return [
            ts.alias("ts"),
            "user_id",
            "live_id",
            "author_id",
            pl.lit(event).alias("event"),
            value.cast(pl.Float64).alias("value"),
        ]

    last = pl.max_horizontal("ts", pl.col("__exit") - 1)  # 1 ms before the session's end
    events = [
        s.select(at(pl.col("ts"), "enter")),
        s.select(at(pl.col("__exit"), "exit")),
        s.filter(pl.col("send_gift_cnt").fill_null(0) > 0).select(
            at(last, "gift", pl.col("send_gift_num").fill_null(pl.col("send_gift_cnt")))
        ),
        s.filter(pl.col("follow_author_cnt").fill_null(0) > 0).select(at(last, "follow")),
    ]
    for name, event, count in (
        ("live_comment.csv", "comment", "comment_cnt"),
        ("live_like.csv", "like", "like_cnt"),
    ):
        if present[name]:
            events.append(_usable(scratch, name).select(at(pl.col("ts"), event)))
        else:
            events.append(s.filter(pl.col(count).fill_null(0) > 0).select(at(last, event)))
            report.notes.append(f"{event}s from the sessions' {count} (no {name})")
    events_lf = pl.concat(events).with_columns(pl.lit(0, pl.Int64).alias("product_id"))
    impressions_lf = pl.concat(impressions)

    step("videos")
    videos, video_events = _video_domain(root, scratch, users, report, present, asides)

    step("time range")
    frames = [impressions_lf.select("ts"), events_lf.select("ts")]
    if video_events is not None:
        frames.append(video_events.select("ts"))
    lo, hi = (
        pl.concat(frames)
        .select(pl.col("ts").min(), pl.col("ts").max().alias("hi"))
        .collect(engine="streaming")
        .row(0)
    )
    lo, hi = (0, 0) if lo is None else (int(lo), int(hi))
    start = local_midnight(lo, BEIJING_MS)
    end = local_midnight(hi, BEIJING_MS) + MS_PER_DAY
    report.tables["live_impressions"] = write_by_day(
        impressions_lf, dest, "live_impressions", start, end, step, request_ids=True
    )
    report.tables["live_events"] = write_by_day(events_lf, dest, "live_events", start, end, step)
    if video_events is not None:
        report.tables["video_events"] = write_by_day(
            video_events, dest, "video_events", start, end, step
        )
    else:
        write_table(dest, "video_events", pl.DataFrame(schema=TABLES["video_events"].polars_schema))
        report.tables["video_events"] = 0
    c = report.file("live_interaction.csv")
    c.written = {"live_impressions": c.used, "live_events": 2 * c.used}
    for name in ("live_show.parquet", "live_comment.csv", "live_like.csv"):
        if present[name]:
            c = report.file(name)
            c.written = {"live_impressions" if "show" in name else "live_events": c.used}

    step("segments")
    segment_dim = _segments(root, dest, rooms, report, asides) if present[SEGMENTS_DIR] else 0

    step("questionnaire")
    if (root / "live_questionnaire.csv").exists():
        _questionnaire(root, dest, report)
    else:
        report.notes.append("live_questionnaire.csv absent: not read")

    step("writing")
    activity = (
        _usable(scratch, "live_interaction.csv")
        .group_by("user_id")
        .len()
        .collect(engine="streaming")
    )
    tables = {
        "users": _users(users, activity),
        "authors": _authors(profiles, rooms, videos, report),
        "rooms": rooms,
        "videos": videos,
    }
    for name, df in tables.items():
        write_table(dest, name, df)
        report.tables[name] = df.height
    for name in (
        "live_interaction.csv",
        "live_show.parquet",
        "live_comment.csv",
        "live_like.csv",
        "photo_play.parquet",
    ):
        if (scratch / f"{name}.parquet").exists():
            rows = pl.scan_parquet(scratch / f"{name}.parquet").filter(
                pl.col("reason").is_not_null()
            )
            if "live_id" not in rows.collect_schema():
                rows = rows.with_columns(pl.lit(None, pl.Int64).alias("live_id"))
            asides.append(set_aside_rows(rows, name))
    pl.concat(asides).cast(SET_ASIDE_SCHEMA).sink_parquet(dest / SET_ASIDE_FILE)  # type: ignore[arg-type]
    write_meta(
        dest,
        DatasetMeta(
            name="klm3",
            start_ts=start,
            end_ts=end,
            long_view_ms=long_view_ms,
            day_offset_ms=BEIJING_MS,
            segment_dim=segment_dim,
            source="klm3",
            extra={
                "source_dir": str(root),
                "gift_value": "number of gift items (send_gift_num): KLM3 has no price",
                "segments": "the fused 128-d vector as visual; speech and text are zeros",
                "questionnaire": QUESTIONNAIRE_FILE
                if (root / "live_questionnaire.csv").exists()
                else None,
                "ingest_seconds": round(time.perf_counter() - started, 2),
            },
        ),
    )
    report.check_accounted()
    report.save(dest)
    return report


def _video_domain(
    root: Path,
    scratch: Path,
    users: pl.DataFrame,
    report: IngestReport,
    present: dict[str, bool],
    asides: list[pl.LazyFrame],
) -> tuple[pl.DataFrame, pl.LazyFrame | None]:
    """``videos`` and the lazy ``video_events`` (None without ``photo_play``)."""
    empty = pl.DataFrame(schema=TABLES["videos"].polars_schema)
    if not present["photo_meta.parquet"]:
        if present["photo_play.parquet"]:
            raise DataValidationError(
                "photo_play.parquet without photo_meta.parquet: the plays' videos are unknown",
                file=str(root / "photo_meta.parquet"),
            )
        return empty, None
    name = "photo_meta.parquet"
    meta = _checked(root, name, report).collect(engine="streaming")
    check_unique(root / name, meta, "photo_id")
    report.file(name).used = meta.height
    videos = meta.with_columns(pl.col("duration").fill_null(0).alias("duration_ms"))
    if present["photo_tag.csv"]:
        name = "photo_tag.csv"
        tags = _checked(root, name, report).collect(engine="streaming")
        check_unique(root / name, tags, "photo_id")
        known = tags.join(videos.select("photo_id"), on="photo_id", how="semi")
        known = known.with_columns(  # codes over the tags of known videos only
            category_codes(known["first_level_category_name"], 1).alias("tag"),
            category_codes(known["second_level_category_name"], 1).alias("cluster"),
        )
        c = report.file(name)
        c.used = known.height
        if tags.height > known.height:
            c.set_aside[UNKNOWN_VIDEO] = tags.height - known.height
            unknown = tags.join(videos.select("photo_id"), on="photo_id", how="anti")
            unknown = unknown.with_columns(pl.lit(UNKNOWN_VIDEO).alias("reason"))
            asides.append(set_aside_rows(unknown, name).lazy())
        videos = videos.join(known.select("photo_id", "tag", "cluster"), on="photo_id", how="left")
    else:
        videos = videos.with_columns(pl.lit(None).alias("tag"), pl.lit(None).alias("cluster"))
    videos = videos.with_columns(
        pl.col("tag").fill_null(0).cast(pl.Int32), pl.col("cluster").fill_null(0).cast(pl.Int32)
    ).select("photo_id", "author_id", "tag", "cluster", "duration_ms")
    if not present["photo_play.parquet"]:
        return videos.sort("photo_id"), None
    name = "photo_play.parquet"
    v = videos.lazy().select("photo_id", pl.col("author_id").alias("__video_author"))
    u = users.lazy().select("user_id", pl.lit(True).alias("__user"))
    plays = (
        _checked(root, name, report)
        .join(v, on="photo_id", how="left")
        .join(u, on="user_id", how="left")
    )
    reason = (
        pl.when(pl.col("__video_author").is_null())
        .then(pl.lit(UNKNOWN_VIDEO))
        .when(pl.col("__user").is_null())
        .then(pl.lit(UNKNOWN_USER))
        .when(pl.col("author_id") != pl.col("__video_author"))
        .then(pl.lit("author differs from the video's"))
        .when(pl.col("leave") < pl.col("ts"))
        .then(pl.lit(NEGATIVE_DURATION))
    )
    plays = plays.with_columns(reason.otherwise(None).alias("reason"))
    keep = ["user_id", "photo_id", "author_id", "ts", "leave"]
    keep += ["is_follow_before_play", "is_follow_after_play"]
    _sink_screened(plays, scratch, name, keep, report)
    p = _usable(scratch, name)
    cols = ["ts", "user_id", "photo_id", "author_id"]
    follows = (pl.col("is_follow_after_play").fill_null(0) > 0) & (
        pl.col("is_follow_before_play").fill_null(0) == 0
    )
    events = pl.concat(
        [
            p.select(
                *cols,
                pl.lit("play").alias("event"),
                (pl.col("leave") - pl.col("ts")).alias("play_ms"),
            ),
            p.filter(follows).select(
                *cols, pl.lit("follow").alias("event"), pl.lit(0, pl.Int64).alias("play_ms")
            ),
        ]
    )
    c = report.file(name)
    c.written = {"video_events": c.used}
    c.notes["plays that turned a viewer into a follower (follow events)"] = int(
        p.filter(follows).select(pl.len()).collect()[0, 0]
    )
    return videos.sort("photo_id"), events


def _segments(
    root: Path, dest: Path, rooms: pl.DataFrame, report: IngestReport, asides: list[pl.LazyFrame]
) -> int:
    """Write ``segments.parquet`` from the shards (module doc); returns the vector length."""
    shards = sorted((root / SEGMENTS_DIR).glob("*.parquet"))
    if not shards:
        raise DataValidationError("no Parquet shards", file=str(root / SEGMENTS_DIR))
    label = f"{SEGMENTS_DIR}/"
    # pass 1 (ids and end times only): each segment's start, its window, and whether it is kept
    lf = scan_parquet(shards, FIELDS[SEGMENTS_DIR])
    report.file(label).read = check_values(root / SEGMENTS_DIR, lf, FIELDS[SEGMENTS_DIR])
    r = rooms.lazy().select(
        "live_id",
        "author_id",
        pl.col("start_ts").alias("__start"),
        pl.col("end_ts").alias("__end"),
    )
    seg = (
        typed(lf, FIELDS[SEGMENTS_DIR])
        .join(r, on="live_id", how="left")
        .sort("live_id", "end", LINE)
        .with_columns(
            pl.coalesce(pl.col("end").shift(1).over("live_id"), pl.col("__start")).alias("__begin")
        )
        .with_columns((-(-pl.col("__begin") // WINDOW_MS) * WINDOW_MS).alias("ts"))  # ceil
        .collect(engine="streaming")
    )
    later = pl.col("ts") == pl.col("ts").shift(-1).over("live_id")
    reason = (
        pl.when(pl.col("__end").is_null())
        .then(pl.lit(UNKNOWN_ROOM))
        .when((pl.col("ts") < pl.col("__start")) | (pl.col("ts") >= pl.col("__end")))
        .then(pl.lit(OFF_AIR))
        .when(later.fill_null(False))
        .then(pl.lit(SAME_WINDOW))
        .otherwise(None)
    )
    seg = seg.with_columns(reason.alias("reason"))
    # on-air rows only compete for a window: recompute the duplicates among them
    ok = seg.filter(pl.col("reason").is_null() | (pl.col("reason") == SAME_WINDOW))
    ok = ok.with_columns(
        pl.when(pl.col("ts") == pl.col("ts").shift(-1).over("live_id"))
        .then(pl.lit(SAME_WINDOW))
        .otherwise(None)
        .alias("reason")
    )
    seg = pl.concat(
        [seg.filter(~(pl.col("reason").is_null() | (pl.col("reason") == SAME_WINDOW))), ok]
    )
    c = report.file(label)
    for why, n in seg.group_by("reason").len().iter_rows():
        if why is None:
            c.used = int(n)
        else:
            c.set_aside[str(why)] = int(n)
    c.written = {"segments": c.used}
    bad = seg.filter(pl.col("reason").is_not_null()).with_columns(pl.col("end").alias("ts"))
    asides.append(set_aside_rows(bad, label).lazy())
    kept = seg.filter(pl.col("reason").is_null()).select(LINE, "live_id", "ts").sort(LINE)
    del seg
    # pass 2: one shard at a time, the kept rows with their vectors
    vec_field = "feature_128"
    dim = 0
    writer: pq.ParquetWriter | None = None
    offset = 0
    schema = TABLES["segments"].polars_schema
    try:
        for shard in shards:
            n = pq.ParquetFile(shard).metadata.num_rows
            rows = kept.filter(pl.col(LINE).is_between(offset, offset + n, "left"))
            offset += n
            if rows.height == 0:
                continue
            table = pq.read_table(shard, columns=[vec_field])
            vectors = np.asarray(table.column(vec_field).to_pylist(), dtype=np.float32)
            if vectors.ndim != 2:
                raise DataValidationError(
                    "segment vectors of different lengths", file=str(shard), column=vec_field
                )
            if dim and vectors.shape[1] != dim:
                raise DataValidationError(
                    f"segment vectors of length {vectors.shape[1]}, earlier shards {dim}",
                    file=str(shard),
                    column=vec_field,
                )
            dim = vectors.shape[1]
            local = (rows[LINE].to_numpy() - (offset - n)).astype(np.int64)
            visual = vectors[local]  # [M, dim]
            zeros = np.zeros_like(visual)
            frame = pl.DataFrame(
                {
                    "live_id": rows["live_id"],
                    "ts": rows["ts"],
                    "visual": visual,
                    "speech": zeros,
                    "text": zeros,
                }
            )
            frame = frame.select([pl.col(k).cast(t) for k, t in schema.items()]).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(
                    dest / "segments.parquet", frame.schema, compression="zstd"
                )
            writer.write_table(frame)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        write_table(dest, "segments", pl.DataFrame(schema=schema))
    report.tables["segments"] = c.used
    return dim or 128


def _questionnaire(root: Path, dest: Path, report: IngestReport) -> None:
    path = root / "live_questionnaire.csv"
    try:
        table = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise DataValidationError(f"cannot parse the CSV file: {exc}", file=str(path)) from exc
    if "select_option" not in table.columns and "selection_option" not in table.columns:
        raise DataValidationError(
            f"missing column (accepted names: select_option, selection_option); the header "
            f"has {table.columns}",
            file=str(path),
            column="select_option",
        )
    table.write_parquet(dest / QUESTIONNAIRE_FILE)
    c = report.file(path.name)
    c.read = c.used = table.height
    c.written = {QUESTIONNAIRE_FILE: table.height}


def _users(users: pl.DataFrame, sessions: pl.DataFrame) -> pl.DataFrame:
    ranked = sessions.with_columns(
        (pl.col("len").rank("ordinal") * 3 / (pl.len() + 1)).floor().cast(pl.Int32) + 1
    ).select("user_id", pl.col("len").alias("activity"))
    zero = pl.lit(0, pl.Int32)
    return (
        users.select("user_id")
        .join(ranked, on="user_id", how="left")
        .select(
            "user_id",
            zero.alias("age"),
            zero.alias("gender"),
            zero.alias("device"),
            pl.col("activity").fill_null(0).cast(pl.Int32),
        )
        .sort("user_id")
    )


def _authors(
    profiles: pl.DataFrame, rooms: pl.DataFrame, videos: pl.DataFrame, report: IngestReport
) -> pl.DataFrame:
    authors = profiles.with_columns(
        pl.lit(1, pl.Int32).alias("category"),
        pl.lit("talent_show").alias("author_type"),
        bucket_codes(profiles["fans_user_num"]).alias("fans"),
        gender_codes(profiles["gender"]).alias("gender"),
        bucket_codes(profiles["age_segment"]).alias("age"),
        pl.col("is_live_author").fill_null(0).cast(pl.Int32),
        pl.col("is_photo_author").fill_null(0).cast(pl.Int32),
    ).select(
        "author_id", "category", "author_type", "fans", "gender", "age", "is_live_author",
        "is_photo_author",
    )  # fmt: skip
    owners = pl.concat([rooms.select("author_id"), videos.select("author_id")]).unique()
    missing = owners.join(authors.select("author_id"), on="author_id", how="anti")
    if missing.height:
        report.notes.append(
            f"{missing.height:,} authors own rooms or videos but have no profile row: added"
        )
        zero = pl.lit(0, pl.Int32)
        missing = missing.select(
            "author_id",
            pl.lit(1, pl.Int32).alias("category"),
            pl.lit("talent_show").alias("author_type"),
            zero.alias("fans"),
            zero.alias("gender"),
            zero.alias("age"),
            zero.alias("is_live_author"),
            zero.alias("is_photo_author"),
        )
        authors = pl.concat([authors, missing])
    return authors.sort("author_id")
