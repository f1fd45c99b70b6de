"""``liverank ingest klm3``: a small KuaiLive-M3 directory written here (CSV with ISO date-times,
Parquet with date-time columns, the segment shards), the canonical output of both domains,
the accounting, the visit labels rebuilt by build-samples, and malformed variants."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.cli import main
from liverank.data.ingest.common import OFF_AIR, OTHER_STREAMER, SET_ASIDE_FILE, UNKNOWN_USER
from liverank.data.ingest.klm3 import (
    AUTHORS_DISAGREE,
    ENTERED,
    NEGATIVE_DURATION,
    NO_END,
    SAME_WINDOW,
    UNKNOWN_ROOM,
    UNKNOWN_VIDEO,
    ingest_klm3,
)
from liverank.data.io import read_meta, read_table
from liverank.data.validate import validate_dataset
from liverank.errors import DataValidationError

T0 = 1_748_772_000_000  # 2025-06-01 10:00 UTC
MIN = 60_000
DIM = 8


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _when(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)


def _csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_klm3(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _csv(root / "user_id_set.csv", ["user_id"], [(u,) for u in range(1, 6)])
    _csv(
        root / "author_profile.csv",
        [
            "author_id",
            "is_photo_author",
            "is_live_author",
            "gender",
            "age_segment",
            "fans_user_num",
        ],
        [(10, 1, 1, "F", "24-30", "1w-10w"), (11, 0, 1, "M", "unknown", "0-1k")],
    )
    pl.DataFrame(
        {
            "live_id": [500, 501, 501, 502, 502, 503],
            "author_id": [10, 11, 11, 10, 11, 10],
            "live_name": ["a", "b", "b", "c", "c", "d"],
            "start_timestamp": [_when(t) for t in (T0, T0, T0 + 60 * MIN, T0, T0, T0)],
            "end_timestamp": [
                _when(T0 + 120 * MIN), None, _when(T0 + 180 * MIN), _when(T0 + MIN),
                _when(T0 + MIN), None,
            ],
            "live_duration": [7_200_000, 3_600_000, 7_200_000, 60_000, 60_000, None],
        }
    ).write_parquet(root / "live_room_meta.parquet")  # fmt: skip
    header = [
        "user_id",
        "author_id",
        "live_id",
        "live_play_start_timestamp",
        "live_play_end_timestamp",
        "p_date",
        "live_source_category",
        "play_duration",
        "like_cnt",
        "comment_cnt",
        "send_gift_cnt",
        "send_gift_num",
        "follow_author_cnt",
    ]
    rows = [
        (1, 10, 500, _iso(T0 + 10 * MIN), _iso(T0 + 20 * MIN), 20250601, "feed", 600_000, 2, 1, 1, 5, 1),
        (2, 11, 501, _iso(T0 + 30 * MIN), "", 20250601, "feed", 180 * MIN, 0, 0, 0, 0, 0),
        (3, 10, 502, _iso(T0 + 10 * MIN), "", 20250601, "feed", 1000, 0, 0, 0, 0, 0),
        (9, 10, 500, _iso(T0 + 10 * MIN), "", 20250601, "feed", 1000, 0, 0, 0, 0, 0),
        (1, 11, 500, _iso(T0 + 10 * MIN), "", 20250601, "feed", 1000, 0, 0, 0, 0, 0),
        (4, 10, 500, _iso(T0 + 180 * MIN), "", 20250601, "feed", 1000, 0, 0, 0, 0, 0),
        (5, 10, 500, _iso(T0 + 15 * MIN), "", 20250601, "feed", -1, 0, 0, 0, 0, 0),
    ]  # fmt: skip
    _csv(root / "live_interaction.csv", header, rows)
    pl.DataFrame(
        {
            "live_id": [500, 501, 500, 999],
            "user_id": [1, 1, 3, 2],
            "author_id": [10, 11, 10, 10],
            "show_timestamp": [_when(T0 + m * MIN) for m in (5, 6, 7, 8)],
        }
    ).write_parquet(root / "live_show.parquet")
    _csv(
        root / "live_comment.csv",
        ["live_stream_id", "user_id", "author_id", "content", "comment_ts"],
        [(500, 1, 10, "主播好", T0 + 12 * MIN), (500, 1, 11, "hi", T0 + 12 * MIN)],
    )
    pl.DataFrame(
        {"photo_id": [700, 701], "author_id": [20, 10], "duration": [15_000, 30_000],
         "cover_title": ["x", "y"]}
    ).write_parquet(root / "photo_meta.parquet")  # fmt: skip
    _csv(
        root / "photo_tag.csv",
        ["photo_id", "first_level_category_name", "second_level_category_name",
         "third_level_category_name", "fourth_level_category_name"],
        [(700, "美食", "家常菜", "川菜", "麻婆豆腐"), (702, "旅行", "城市", "a", "b")],
    )  # fmt: skip
    pl.DataFrame(
        {
            "user_id": [1, 2, 1],
            "photo_id": [700, 701, 799],
            "author_id": [20, 10, 20],
            "enter_timestamp": [_when(T0 - 60 * MIN)] * 3,
            "leave_timestamp": [_when(T0 - 60 * MIN + 5_000), _when(T0 - 61 * MIN),
                                _when(T0 - 59 * MIN)],
            "is_follow_before_play": [0, 0, 0],
            "is_follow_after_play": [1, 0, 0],
        }
    ).write_parquet(root / "photo_play.parquet")  # fmt: skip
    shards = root / "live_emb_128_ts"
    shards.mkdir()
    vec = [np.full(DIM, i, np.float32).tolist() for i in range(4)]
    pl.DataFrame(
        {
            "live_stream_id": ["500", "500"],
            "segment_id": ["s1", "s2"],
            "feature_128": vec[:2],
            "timestamp": [T0 + 40_000, T0 + 50_000],
        }
    ).write_parquet(shards / "live_emb_128_ts_part0.parquet")
    pl.DataFrame(
        {
            "live_stream_id": ["500", "999"],
            "segment_id": ["s3", "s9"],
            "feature_128": vec[2:],
            "timestamp": [T0 + 100_000, T0 + 40_000],
        }
    ).write_parquet(shards / "live_emb_128_ts_part1.parquet")
    _csv(
        root / "live_questionnaire.csv",
        ["author_id", "live_stream_id", "user_id", "selection_option", "second_select_option"],
        [(10, 500, 1, '"[""开播就推""]"', '"[]"')],
    )
    return root


def test_both_domains_and_the_accounting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = ingest_klm3(write_klm3(tmp_path / "src"), out)
    f = report.files
    assert f["live_room_meta.parquet"].read == 6 and f["live_room_meta.parquet"].used == 3
    assert f["live_room_meta.parquet"].set_aside == {AUTHORS_DISAGREE: 2, NO_END: 1}
    assert f["live_room_meta.parquet"].notes["rooms split over several rows (merged)"] == 2
    assert f["live_interaction.csv"].used == 2
    assert f["live_interaction.csv"].set_aside == {
        UNKNOWN_ROOM: 1, UNKNOWN_USER: 1, OTHER_STREAMER: 1, OFF_AIR: 1, NEGATIVE_DURATION: 1,
    }  # fmt: skip
    assert f["live_interaction.csv"].notes["exits clipped to 1 ms before the room's end"] == 1
    assert f["live_show.parquet"].used == 2
    assert f["live_show.parquet"].set_aside == {ENTERED: 1, UNKNOWN_ROOM: 1}
    assert f["live_comment.csv"].used == 1 and f["live_comment.csv"].set_aside == {
        OTHER_STREAMER: 1
    }
    assert f["photo_tag.csv"].set_aside == {UNKNOWN_VIDEO: 1}
    assert f["photo_play.parquet"].set_aside == {NEGATIVE_DURATION: 1, UNKNOWN_VIDEO: 1}
    seg = f["live_emb_128_ts/"]
    assert seg.read == 4 and seg.used == 2 and seg.set_aside == {SAME_WINDOW: 1, UNKNOWN_ROOM: 1}
    assert any("likes from the sessions' like_cnt" in n for n in report.notes)
    assert report.tables["live_impressions"] == 4
    assert report.tables["live_events"] == 2 + 2 + 1 + 1 + 1 + 1  # enter, exit, gift, follow,
    assert report.tables["video_events"] == 2  # comment, like; play + follow
    validate_dataset(out)
    meta = read_meta(out)
    assert meta.source == "klm3" and meta.segment_dim == DIM
    aside = pl.read_parquet(out / SET_ASIDE_FILE)
    assert aside.height == 3 + 5 + 2 + 1 + 1 + 2 + 2  # rooms, sessions, shows, comment, tag,
    assert aside.filter(pl.col("reason") == NEGATIVE_DURATION)["line"].to_list()[0] == 8


def test_the_canonical_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest_klm3(write_klm3(tmp_path / "src"), out)
    rooms = read_table(out, "rooms").sort("live_id")
    assert rooms.rows() == [(500, 10, T0, T0 + 120 * MIN, 0), (501, 11, T0, T0 + 180 * MIN, 0)]
    ev = read_table(out, "live_events")
    got = {
        (r["event"], r["user_id"], r["live_id"]): (r["ts"], r["value"])
        for r in ev.iter_rows(named=True)
    }
    assert got[("enter", 1, 500)] == (T0 + 10 * MIN, 0.0)
    assert got[("exit", 1, 500)] == (T0 + 20 * MIN, 0.0)
    assert got[("gift", 1, 500)] == (T0 + 20 * MIN - 1, 5.0)  # items, 1 ms before the end
    assert got[("like", 1, 500)][0] == T0 + 20 * MIN - 1
    assert got[("comment", 1, 500)][0] == T0 + 12 * MIN
    assert got[("exit", 2, 501)][0] == T0 + 180 * MIN - 1  # start + 3 h, clipped
    imp = read_table(out, "live_impressions").sort("ts")
    assert imp.select("user_id", "live_id", "surface").rows() == [
        (1, 501, "show"), (3, 500, "show"), (1, 500, "interaction"), (2, 501, "interaction"),
    ]  # fmt: skip
    videos = read_table(out, "videos").sort("photo_id")
    assert videos.rows() == [(700, 20, 1, 1, 15_000), (701, 10, 0, 0, 30_000)]
    vev = read_table(out, "video_events").sort("event")
    assert vev.select("event", "play_ms").rows() == [("follow", 0), ("play", 5_000)]
    seg = read_table(out, "segments").sort("ts")
    assert seg["ts"].to_list() == [T0, T0 + 60_000]  # starts T0 and T0 + 50 s, ceiled
    assert seg["visual"].to_list()[1] == [2.0] * DIM and seg["text"].to_list()[1] == [0.0] * DIM
    authors = read_table(out, "authors").sort("author_id")
    assert authors["author_id"].to_list() == [10, 11, 20]  # 20 owns a video, no profile
    q = pl.read_parquet(out / "live_questionnaire.parquet")
    assert q["selection_option"].to_list() == ['["开播就推"]']


def test_build_samples_rebuilds_the_sessions(tmp_path: Path) -> None:
    from liverank.data.loader import SampleSet
    from liverank.data.samples import build_samples

    out = tmp_path / "out"
    ingest_klm3(write_klm3(tmp_path / "src"), out, long_view_ms=5 * MIN)
    build_samples(out, tmp_path / "samples", seq_len=5, progress=False)
    data = SampleSet.load(tmp_path / "samples")
    rows = pl.DataFrame(
        {k: data[k] for k in ("user_id", "live_id", "ctr", "lvtr", "cmtr", "ltr", "gtr")}
    )
    got = {(r[0], r[1]): r[2:] for r in rows.iter_rows()}
    assert got[(1, 500)] == (1, 1, 1, 1, 1)
    assert got[(2, 501)] == (1, 1, 0, 0, 0)
    assert got[(1, 501)] == (0, 0, 0, 0, 0) and got[(3, 500)] == (0, 0, 0, 0, 0)


def _malformed(tmp_path: Path, edit) -> str:
    src = write_klm3(tmp_path / "src")
    edit(src)
    with pytest.raises(DataValidationError) as info:
        ingest_klm3(src, tmp_path / "out")
    return str(info.value)


def test_malformed_inputs(tmp_path: Path) -> None:
    msg = _malformed(tmp_path / "a", lambda s: (s / "live_interaction.csv").unlink())
    assert "missing live_interaction.csv" in msg

    def bad_time(src: Path) -> None:
        p = src / "live_interaction.csv"
        p.write_text(p.read_text(encoding="utf-8").replace(_iso(T0 + 30 * MIN), "yesterday"))

    msg = _malformed(tmp_path / "b", bad_time)
    assert "live_interaction.csv" in msg and "'ts'" in msg and "'yesterday'" in msg

    def renamed(src: Path) -> None:
        df = pl.read_parquet(src / "live_show.parquet").rename({"show_timestamp": "shown_at"})
        df.write_parquet(src / "live_show.parquet")

    msg = _malformed(tmp_path / "c", renamed)
    assert "live_show.parquet" in msg and "'ts'" in msg and "show_timestamp" in msg

    def ragged_vectors(src: Path) -> None:
        p = src / "live_emb_128_ts" / "live_emb_128_ts_part1.parquet"
        df = pl.read_parquet(p).with_columns(pl.Series("feature_128", [[1.0] * 3, [1.0] * 3]))
        df.write_parquet(p)

    assert "segment vectors of length 3" in _malformed(tmp_path / "d", ragged_vectors)

    def dup_user(src: Path) -> None:
        p = src / "user_id_set.csv"
        p.write_text(p.read_text() + "3\n")

    msg = _malformed(tmp_path / "e", dup_user)
    assert "user_id_set.csv" in msg and "duplicate key" in msg and "rows: 4, 7" in msg


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_klm3(tmp_path / "src")
    assert main(["ingest", "klm3", str(src), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "live_interaction.csv" in printed and "segments 2" in printed
    saved = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert saved["source"] == "klm3"
