"""``liverank ingest kuailive``: small KuaiLive directories written here in each naming variant
(no real data is committed), the canonical output, the accounting of every row, the visit
labels rebuilt by build-samples, and the malformed variants' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.cli import main
from liverank.data.ingest.common import (
    OFF_AIR,
    OTHER_STREAMER,
    REPORT_FILE,
    SET_ASIDE_FILE,
    UNKNOWN_USER,
)
from liverank.data.ingest.kuailive import (
    BAD_ROOM,
    NEGATIVE_WATCH,
    UNKNOWN_ROOM,
    bucket_codes,
    ingest_kuailive,
)
from liverank.data.io import read_meta, read_table
from liverank.data.validate import validate_dataset
from liverank.errors import DataValidationError

T0 = 1_746_374_400_000 + 10 * 3_600_000  # 2025-05-05 10:00 Beijing time
MIN = 60_000

#: the naming variants of SCHEMAS.md section 1.1: current documentation, first release
#: (July 2025), and the homepage's spellings
VARIANTS = {
    "current": {
        "streamer_file": "streamer.csv",
        "room_file": "room.csv",
        "sid": "streamer_id",
        "flags": ("is_live_streamer", "is_photo_author"),
        "fans": "fans_user_num",
        "titles": "title_embeddings.npy",
    },
    "first": {
        "streamer_file": "author.csv",
        "room_file": "mapped_room.csv",
        "sid": "author_id",
        "flags": ("is_live_author", "is_photo_author"),
        "fans": "fans_num",
        "titles": "title_embeddings_pca128.npy",
    },
    "homepage": {
        "streamer_file": "streamer.csv",
        "room_file": "room.csv",
        "sid": "streamer_id",
        "flags": ("is_live_author", "is_video_author"),
        "fans": "fans_num",
        "titles": "title_embeddings.npz",
    },
}

# clicks: (user, room, streamer, ts, watch ms); the comment says what becomes of the row
CLICKS = [
    (1, 1000, 100, T0 + 10 * MIN, 5 * MIN),  # used: visit [10, 15) min
    (2, 1001, 101, T0 + 20 * MIN, 120 * MIN),  # used: exit clipped at the room's end (60 min)
    (3, 9999, 100, T0 + 5 * MIN, 1_000),  # unknown room
    (99, 1000, 100, T0 + 5 * MIN, 1_000),  # unknown user
    (1, 1000, 101, T0 + 5 * MIN, 1_000),  # not the room's streamer
    (4, 1001, 101, T0 + 120 * MIN, 1_000),  # after the room's end
    (5, 1002, 103, T0 + 40 * MIN, -5),  # negative watch time
    (2, 1002, 103, T0 + 40 * MIN, 10 * MIN),  # used: visit [40, 50) min
    (1, 1003, 102, T0 + 5 * MIN, 1_000),  # its room is set aside (ends as it starts)
]
NEGATIVES = [
    (1, 1001, 101, T0 + 5 * MIN),  # used
    (3, 1000, 100, T0 + 15 * MIN),  # used
    (1, 1000, 100, T0 - 60 * MIN),  # before the room's start
]
COMMENTS = [(1, 1000, 100, T0 + 12 * MIN), (2, 1000, 100, T0 + 50 * MIN)]  # inside; outside
LIKES = [(2, 1001, 101, T0 + 30 * MIN)]  # inside visit 2
GIFTS = [(1, 1000, 100, T0 + 14 * MIN, 10), (77, 1000, 100, T0 + 14 * MIN, 3)]  # ok; unknown user


def _csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def write_kuailive(root: Path, variant: str = "current") -> Path:
    v = VARIANTS[variant]
    root.mkdir(parents=True, exist_ok=True)
    sid = v["sid"]
    live_flag, photo_flag = v["flags"]
    _csv(
        root / "user.csv",
        ["user_id", "age", "gender", "country", "device_brand", "device_price", "reg_timestamp",
         "fans_num", "follow_num", live_flag, photo_flag, "onehot_feat0"],
        [
            (1, "18-23", "M", "China", "APPLE", "5000+", "2023-05-03", "0-10", "10-100", 0, 1, 0),
            (2, "24-30", "F", "China", "OPPO", "1000-2000", "2023-05-03", "0-10", "10-100", 1, 0, 1),
            (3, "", "", "China", "", "", "2023-05-03", "0-10", "10-100", "", "", 0),
            (4, "31-40", "M", "China", "VIVO", "0", "2023-05-03", "0-10", "10-100", 0, 0, 0),
            (5, "18-23", "F", "China", "APPLE", "5000+", "2023-05-03", "0-10", "10-100", 0, 0, 0),
            (6, "50+", "U", "China", "APPLE", "5000+", "2023-05-03", "0-10", "10-100", 0, 0, 0),
        ],
    )  # fmt: skip
    _csv(
        root / v["streamer_file"],
        [sid, "gender", "age", "live_operation_tag", v["fans"], "first_live_timestamp"],
        [
            (100, "M", "24-30", "Shopping", "10000-100000", "2018-02-04"),
            (101, "F", "18-23", "Relationship", "0-10", "2019-01-01"),
            (102, "F", "18-23", "", "100-1000", "2019-01-01"),
        ],
    )
    _csv(
        root / v["room_file"],
        ["p_date", "live_id", sid, "live_type", "start_timestamp", "end_timestamp",
         "live_content_category", "live_name_id"],
        [
            (20250505, 1000, 100, 1, T0, T0 + 120 * MIN, "shop", 0),
            (20250505, 1001, 101, 1, T0, T0 + 60 * MIN, "Talent", 1),
            (20250505, 1002, 103, 2, T0 + 30 * MIN, T0 + 180 * MIN, "game", 5),
            (20250505, 1003, 102, 1, T0, T0, "chat", 2),
        ],
    )  # fmt: skip
    ev = ["user_id", "live_id", sid, "timestamp"]
    _csv(root / "click.csv", [*ev, "watch_live_time"], CLICKS)
    _csv(root / "negative.csv", ev, NEGATIVES)
    _csv(root / "comment.csv", ev, COMMENTS)
    _csv(root / "like.csv", ev, LIKES)
    _csv(root / "gift.csv", [*ev, "gift_price"], GIFTS)
    titles = np.arange(3 * 4, dtype=np.float64).reshape(3, 4)
    if v["titles"].endswith(".npz"):
        np.savez(root / v["titles"], titles)
    else:
        np.save(root / v["titles"], titles)
    return root


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_row_is_accounted_for(tmp_path: Path, variant: str) -> None:
    src = write_kuailive(tmp_path / "src", variant)
    report = ingest_kuailive(src, tmp_path / "out")
    v = VARIANTS[variant]
    files = report.files
    assert files["click.csv"].read == 9 and files["click.csv"].used == 3
    assert files["click.csv"].set_aside == {
        UNKNOWN_ROOM: 2,
        UNKNOWN_USER: 1,
        OTHER_STREAMER: 1,
        OFF_AIR: 1,
        NEGATIVE_WATCH: 1,
    }
    assert files["click.csv"].notes["exits clipped to 1 ms before the room's end"] == 1
    assert files["negative.csv"].used == 2 and files["negative.csv"].set_aside == {OFF_AIR: 1}
    assert files["comment.csv"].notes == {
        "inside a visit of the same user and room": 1,
        "outside every visit (kept)": 1,
    }
    assert files["gift.csv"].set_aside == {UNKNOWN_USER: 1}
    assert files[v["room_file"]].set_aside == {BAD_ROOM: 1}
    assert files[v["room_file"]].notes["rooms without a title row"] == 1  # id 5 of 3 rows
    assert report.tables["live_impressions"] == 5
    assert report.tables["live_events"] == 3 + 3 + 2 + 1 + 1
    out = tmp_path / "out"
    aside = pl.read_parquet(out / SET_ASIDE_FILE)
    assert aside.height == 6 + 1 + 1 + 1  # clicks, negative, gift, room
    assert aside.filter(pl.col("reason") == NEGATIVE_WATCH)["line"].to_list() == [8]
    assert aside.filter(pl.col("file") == "gift.csv")["value"].to_list() == [3.0]
    validate_dataset(out)  # the output is a valid canonical dataset
    saved = (out / REPORT_FILE).read_text()
    assert '"click.csv"' in saved and NEGATIVE_WATCH in saved


def test_the_canonical_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest_kuailive(write_kuailive(tmp_path / "src"), out)
    meta = read_meta(out)
    assert meta.source == "kuailive" and meta.day_offset_ms == 8 * 3_600_000
    assert meta.start_ts == 1_746_374_400_000  # 2025-05-05 00:00 Beijing time
    assert meta.end_ts == meta.start_ts + 86_400_000
    rooms = read_table(out, "rooms").sort("live_id")
    assert rooms["live_id"].to_list() == [1000, 1001, 1002]
    assert rooms["title_id"].to_list() == [0, 1, -1]
    np.testing.assert_array_equal(
        np.load(out / "title_embeddings.npy"), np.arange(12, dtype=np.float32).reshape(3, 4)
    )
    authors = read_table(out, "authors").sort("author_id")
    assert authors["author_id"].to_list() == [100, 101, 102, 103]  # 103 from room.csv
    assert authors["author_type"].to_list() == ["shopping", "talent_show", "talent_show", "game"]
    assert authors["category"].to_list()[3] == 1  # no profile: unknown
    users = read_table(out, "users").sort("user_id")
    assert users["gender"].to_list() == [1, 2, 0, 1, 2, 0]
    assert users["device"].to_list() == [3, 2, 0, 1, 3, 3]  # 0 < 1000-2000 < 5000+
    assert users["activity"].to_list()[5] == 0  # user 6 never clicked
    assert users["is_live_streamer"].to_list()[:2] == [0, 1]
    imp = read_table(out, "live_impressions")
    assert sorted(imp["surface"].to_list()) == ["click"] * 3 + ["negative"] * 2
    assert imp["request_id"].n_unique() == 5 and set(imp["position"].to_list()) == {0}
    ev = read_table(out, "live_events")
    exits = ev.filter(pl.col("event") == "exit").sort("ts")
    assert exits.filter(pl.col("live_id") == 1001)["ts"].to_list() == [T0 + 60 * MIN - 1]
    gift = ev.filter(pl.col("event") == "gift")
    assert gift["value"].to_list() == [10.0] and gift["product_id"].to_list() == [0]


def test_build_samples_rebuilds_the_visits(tmp_path: Path) -> None:
    """The canonical visit rule over the ingested tables gives each clicked impression its
    visit's labels: the comment and gift inside user 1's visit, the like inside user 2's."""
    from liverank.data.loader import SampleSet
    from liverank.data.samples import build_samples

    out = tmp_path / "out"
    ingest_kuailive(write_kuailive(tmp_path / "src"), out, long_view_ms=8 * MIN)
    build_samples(out, tmp_path / "samples", seq_len=5, progress=False)
    data = SampleSet.load(tmp_path / "samples")
    rows = pl.DataFrame(
        {k: data[k] for k in ("user_id", "live_id", "ctr", "lvtr", "cmtr", "ltr", "gtr")}
    ).sort("user_id", "live_id")
    got = {(r[0], r[1]): r[2:] for r in rows.iter_rows()}
    assert got[(1, 1000)] == (1, 0, 1, 0, 1)  # 5 min < 8 min; comment and gift inside
    assert got[(2, 1001)] == (1, 1, 0, 1, 0)  # 40 min to the clipped exit; the like inside
    assert got[(2, 1002)] == (1, 1, 0, 0, 0)
    assert got[(1, 1001)] == (0, 0, 0, 0, 0) and got[(3, 1000)] == (0, 0, 0, 0, 0)


def test_bucket_codes_order_by_lower_bound() -> None:
    s = pl.Series(["10-100", "0", "1w-10w", "5000+", "", "unknown", None, "100-1000"])
    assert bucket_codes(s).to_list() == [2, 1, 5, 4, 0, 0, 0, 3]


def _malformed(tmp_path: Path, edit) -> str:
    src = write_kuailive(tmp_path / "src")
    edit(src)
    with pytest.raises(DataValidationError) as info:
        ingest_kuailive(src, tmp_path / "out")
    return str(info.value)


def test_truncated_csv(tmp_path: Path) -> None:
    def cut(src: Path) -> None:
        text = (src / "click.csv").read_text()
        (src / "click.csv").write_text(text[: text.rstrip().rfind(",")])  # last field cut off

    msg = _malformed(tmp_path, cut)
    assert "click.csv" in msg and "'watch_live_time'" in msg and "empty value" in msg
    assert "first offending rows: 10" in msg  # the header is line 1, the 9th row line 10


def test_wrong_delimiter(tmp_path: Path) -> None:
    def semicolons(src: Path) -> None:
        p = src / "like.csv"
        p.write_text(p.read_text().replace(",", ";"))

    msg = _malformed(tmp_path, semicolons)
    assert "like.csv" in msg and "semicolon" in msg


def test_renamed_column(tmp_path: Path) -> None:
    def rename(src: Path) -> None:
        p = src / "click.csv"
        p.write_text(p.read_text().replace("watch_live_time", "watch_time", 1))

    msg = _malformed(tmp_path, rename)
    assert "click.csv" in msg and "'watch_live_time'" in msg and "watch_time" in msg


def test_mixed_types(tmp_path: Path) -> None:
    def text_id(src: Path) -> None:
        p = src / "gift.csv"
        lines = p.read_text().splitlines()
        lines[2] = "abc" + lines[2][lines[2].find(",") :]
        p.write_text("\n".join(lines) + "\n")

    msg = _malformed(tmp_path, text_id)
    assert "gift.csv" in msg and "'user_id'" in msg and "not an integer" in msg
    assert "rows: 3" in msg and "'abc'" in msg


def test_timestamps_in_seconds(tmp_path: Path) -> None:
    def seconds(src: Path) -> None:
        p = src / "comment.csv"
        p.write_text(p.read_text().replace(str(T0 + 12 * MIN), str((T0 + 12 * MIN) // 1000)))

    msg = _malformed(tmp_path, seconds)
    assert "comment.csv" in msg and "'ts'" in msg and "seconds instead of milliseconds" in msg


def test_duplicate_room(tmp_path: Path) -> None:
    def dup(src: Path) -> None:
        p = src / "room.csv"
        lines = p.read_text().splitlines()
        p.write_text("\n".join([*lines, lines[1]]) + "\n")

    msg = _malformed(tmp_path, dup)
    assert "room.csv" in msg and "'live_id'" in msg and "duplicate key" in msg
    assert "rows: 2, 6" in msg


def test_missing_file_and_bad_titles(tmp_path: Path) -> None:
    msg = _malformed(tmp_path / "a", lambda src: (src / "negative.csv").unlink())
    assert "negative.csv" in msg and "no negative file" in msg
    msg = _malformed(tmp_path / "b", lambda src: (src / "room.csv").unlink())
    assert "room.csv, mapped_room.csv" in msg

    def two_arrays(src: Path) -> None:
        (src / "title_embeddings.npy").unlink()
        np.savez(src / "title_embeddings.npz", a=np.ones((2, 2)), b=np.ones((2, 2)))

    assert "one array" in _malformed(tmp_path / "c", two_arrays)


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_kuailive(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["ingest", "kuailive", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "click.csv" in printed and "live_impressions 5" in printed
    assert main(["ingest", "kuailive", str(src), "--out", str(out)]) == 2  # would overwrite
    assert "--force" in capsys.readouterr().err
    assert main(["ingest", "kuailive", str(src), "--out", str(out), "--force"]) == 0
    (src / "click.csv").write_text("user_id;live_id\n1;2\n")
    assert main(["ingest", "kuailive", str(src), "--out", str(tmp_path / "o2")]) == 2
    assert "semicolon" in capsys.readouterr().err
