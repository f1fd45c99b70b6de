"""Dataset validation: one test per kind of problem, the valid fixture, and reference properties."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data import io
from liverank.data.schema import TABLES, DatasetMeta
from liverank.data.validate import (
    ValidationContext,
    ValidationReport,
    validate_dataset,
    validate_table,
)
from liverank.errors import ConfigError, DataValidationError


def set_value(df: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    """``df`` with ``df[row, column] = value`` (the dtype widens if ``value`` needs it)."""
    values = df[column].to_list()
    values[row] = value
    return df.with_columns(pl.Series(column, values, strict=False))


def expect_error(
    root: Path, table: str, column: str | None, row: int | None, *words: str
) -> DataValidationError:
    """Validation fails naming ``table``'s file, ``column`` and first offending ``row``."""
    with pytest.raises(DataValidationError) as info:
        validate_dataset(root)
    err = info.value
    assert err.file is not None and Path(err.file).name == f"{table}", str(err)
    assert err.column == column, str(err)
    if row is not None:
        assert err.rows and err.rows[0] == row, str(err)
        assert f"first offending rows: {row}" in str(err)
    for word in words:
        assert word in str(err), str(err)
    return err


def test_valid_dataset_passes(valid_dataset: Path) -> None:
    report = validate_dataset(valid_dataset)
    assert report.ok and not report.problems
    assert set(report.tables) == set(TABLES)
    assert report.tables["live_events"].rows == 12
    assert {"foreign keys", "author agreement", "on air", "time order"} <= set(
        report.tables["live_events"].checks
    )
    assert "vectors" in report.tables["segments"].checks
    assert all(not t.notes for t in report.tables.values())
    text = report.to_text()
    assert "OK" in text and "live_events" in text and "problems:" not in text


def test_optional_tables_may_be_absent(make_dataset) -> None:
    root = make_dataset(products=None, product_events=None, room_products=None, segments=None)
    report = validate_dataset(root)
    assert report.ok
    assert report.absent_optional == ["products", "product_events", "room_products", "segments"]
    assert "absent optional tables" in report.to_text()


def test_missing_required_table(make_dataset) -> None:
    err = expect_error(make_dataset(rooms=None), "rooms.parquet", None, None, "missing")
    assert "'rooms'" in str(err)


def test_table_referencing_an_absent_optional_table(make_dataset) -> None:
    root = make_dataset(products=None, room_products=None)
    expect_error(root, "products.parquet", None, None, "product_events", "missing")


def test_missing_column(make_dataset, canonical) -> None:
    root = make_dataset(live_events=canonical["live_events"].drop("value"))
    expect_error(root, "live_events.parquet", "value", None, "missing column")


def test_wrong_dtype_names_expected_and_found(make_dataset, canonical) -> None:
    df = canonical["live_events"].with_columns(pl.col("user_id").cast(pl.String))
    root = make_dataset(live_events=df)
    expect_error(root, "live_events.parquet", "user_id", None, "expected Int64", "found String")


def test_float_ids_and_datetime_timestamps_are_rejected(make_dataset, canonical) -> None:
    df = canonical["users"].with_columns(pl.col("user_id").cast(pl.Float64))
    expect_error(make_dataset(users=df), "users.parquet", "user_id", None, "found Float64")
    df = canonical["rooms"].with_columns(pl.col("start_ts").cast(pl.Datetime("ms")))
    expect_error(make_dataset(rooms=df), "rooms.parquet", "start_ts", None, ".dt.epoch('ms')")


def test_integer_widening_is_accepted_and_noted(make_dataset, canonical) -> None:
    impressions = canonical["live_impressions"].with_columns(
        pl.col("user_id").cast(pl.Int32), pl.col("position").cast(pl.Int64)
    )
    events = canonical["live_events"].with_columns(pl.col("value").cast(pl.Int64))
    report = validate_dataset(make_dataset(live_impressions=impressions, live_events=events))
    assert report.ok
    assert len(report.tables["live_impressions"].notes) == 2
    assert "Int32" in report.to_text()


def test_integer_values_that_do_not_fit_are_rejected(make_dataset, canonical) -> None:
    df = canonical["users"].with_columns(pl.col("age").cast(pl.Int64))
    df = set_value(df, 2, "age", 2**40)
    expect_error(make_dataset(users=df), "users.parquet", "age", 2, "do not fit Int32")


def test_nulls(make_dataset, canonical) -> None:
    df = set_value(canonical["live_events"], 3, "user_id", None)
    expect_error(make_dataset(live_events=df), "live_events.parquet", "user_id", 3, "null")


def test_nan_in_a_float_column(make_dataset, canonical) -> None:
    df = set_value(canonical["products"], 1, "price", float("nan"))
    expect_error(make_dataset(products=df), "products.parquet", "price", 1, "NaN")


def test_ids_below_one(make_dataset, canonical) -> None:
    df = set_value(canonical["users"], 2, "user_id", 0)
    expect_error(make_dataset(users=df), "users.parquet", "user_id", 2, "ids < 1")


def test_zero_product_id_means_none_but_negative_is_rejected(make_dataset, canonical) -> None:
    assert (canonical["live_events"]["product_id"] == 0).any()  # the valid fixture uses 0 = none
    df = set_value(canonical["live_events"], 4, "product_id", -1)
    expect_error(make_dataset(live_events=df), "live_events.parquet", "product_id", 4, "< 0")


def test_event_outside_closed_set(make_dataset, canonical) -> None:
    df = set_value(canonical["live_events"], 4, "event", "dance")
    err = expect_error(make_dataset(live_events=df), "live_events.parquet", "event", 4, "'enter'")
    assert err.examples == ["dance"]


def test_author_type_outside_closed_set(make_dataset, canonical) -> None:
    df = set_value(canonical["authors"], 1, "author_type", "Shopping")
    expect_error(make_dataset(authors=df), "authors.parquet", "author_type", 1)


def test_vector_of_wrong_length(make_dataset, canonical) -> None:
    df = set_value(canonical["segments"], 2, "speech", [0.5, 0.5, 0.5])
    err = expect_error(make_dataset(segments=df), "segments.parquet", "speech", 2, "segment_dim 4")
    assert err.examples == [3]


def test_segments_need_segment_dim_in_meta(make_dataset, canonical_meta) -> None:
    root = make_dataset(meta=dataclasses.replace(canonical_meta, segment_dim=0))
    expect_error(root, "meta.json", "segment_dim", None)


def test_negative_timestamp(make_dataset, canonical) -> None:
    df = set_value(canonical["rooms"], 0, "start_ts", -5)
    expect_error(make_dataset(rooms=df), "rooms.parquet", "start_ts", 0, "negative")


def test_unordered_event_timestamps(make_dataset, canonical) -> None:
    df = canonical["live_events"]
    order = list(range(df.height))
    order[5], order[6] = order[6], order[5]  # swap rows 5 and 6: row 6 goes back in time
    err = expect_error(make_dataset(live_events=df[order]), "live_events.parquet", "ts", 6, "order")
    assert err.examples[0] == {"previous_ts": df["ts"][6], "ts": df["ts"][5]}


def test_room_ending_before_it_starts(make_dataset, canonical) -> None:
    df = set_value(canonical["rooms"], 1, "end_ts", canonical["rooms"]["start_ts"][1])
    expect_error(make_dataset(rooms=df), "rooms.parquet", "end_ts", 1, "end_ts <= start_ts")


def test_timestamps_outside_the_dataset_range(make_dataset, canonical) -> None:
    df = canonical["video_events"].with_columns(pl.col("ts") // 1000)  # seconds, not ms
    err = expect_error(
        make_dataset(video_events=df), "video_events.parquet", "ts", 0, "milliseconds"
    )
    assert "4 row(s)" in str(err)


def test_duplicate_primary_key(make_dataset, canonical) -> None:
    df = set_value(canonical["users"], 3, "user_id", 2)
    expect_error(make_dataset(users=df), "users.parquet", "user_id", 3, "repeat a primary key")


def test_duplicate_composite_key(make_dataset, canonical) -> None:
    df = set_value(canonical["live_impressions"], 4, "position", 0)  # request 3 has two position 0
    err = expect_error(
        make_dataset(live_impressions=df), "live_impressions.parquet", "request_id, position", 4
    )
    assert err.examples == [{"request_id": 3, "position": 0}]


def test_unknown_user(make_dataset, canonical) -> None:
    df = set_value(canonical["live_events"], 5, "user_id", 99)
    err = expect_error(make_dataset(live_events=df), "live_events.parquet", "user_id", 5, "users")
    assert err.examples == [99]


def test_unknown_room_author_video_and_product(make_dataset, canonical) -> None:
    df = set_value(canonical["live_impressions"], 2, "live_id", 999)
    expect_error(make_dataset(live_impressions=df), "live_impressions.parquet", "live_id", 2)
    df = set_value(canonical["rooms"], 1, "author_id", 7)
    expect_error(make_dataset(rooms=df), "rooms.parquet", "author_id", 1, "authors")
    df = set_value(canonical["video_events"], 3, "photo_id", 203)
    expect_error(make_dataset(video_events=df), "video_events.parquet", "photo_id", 3, "videos")
    df = set_value(canonical["room_products"], 1, "product_id", 13)
    expect_error(make_dataset(room_products=df), "room_products.parquet", "product_id", 1)
    df = set_value(canonical["live_events"], 6, "product_id", 13)  # non-zero product of a buy
    expect_error(make_dataset(live_events=df), "live_events.parquet", "product_id", 6)


def test_author_disagreeing_with_the_room(make_dataset, canonical) -> None:
    df = set_value(canonical["live_events"], 2, "author_id", 3)
    err = expect_error(
        make_dataset(live_events=df), "live_events.parquet", "author_id", 2, "author of their rooms"
    )
    assert err.examples == [{"live_id": 101, "author_id": 3, "rooms_author_id": 1}]


def test_author_disagreeing_with_the_video(make_dataset, canonical) -> None:
    df = set_value(canonical["video_events"], 1, "author_id", 2)
    expect_error(make_dataset(video_events=df), "video_events.parquet", "author_id", 1, "videos")


def test_event_outside_the_room_on_air_interval(make_dataset, canonical) -> None:
    # row 1 (at 700 s) now shows room 103, which goes on air at 1800 s
    df = set_value(canonical["live_impressions"], 1, "live_id", 103)
    df = set_value(df, 1, "author_id", 3)
    expect_error(make_dataset(live_impressions=df), "live_impressions.parquet", "ts", 1, "on-air")


def test_segment_before_the_room_started(make_dataset, canonical) -> None:
    start = canonical["segments"]["ts"][4] + 50_000  # room 103 now starts 50 s after its segment
    assert start < canonical["live_impressions"]["ts"][3]  # ... but before its impressions
    rooms = set_value(canonical["rooms"], 2, "start_ts", start)
    expect_error(make_dataset(rooms=rooms), "segments.parquet", "ts", 4, "on-air")


def test_malformed_meta(make_dataset, canonical_meta: DatasetMeta) -> None:
    expect_error(make_dataset(meta="{not json"), "meta.json", None, None, "malformed meta.json")
    expect_error(make_dataset(meta='{"name": "x"}'), "meta.json", None, None, "malformed")
    root = make_dataset(meta=dataclasses.replace(canonical_meta, start_ts="yesterday"))
    expect_error(root, "meta.json", "start_ts", None, "must be int")
    root = make_dataset(meta=dataclasses.replace(canonical_meta, end_ts=canonical_meta.start_ts))
    expect_error(root, "meta.json", "end_ts", None)


def test_missing_meta(valid_dataset: Path) -> None:
    (valid_dataset / io.META_FILE).unlink()
    expect_error(valid_dataset, "meta.json", None, None, "no meta.json")


def test_unreadable_parquet(valid_dataset: Path) -> None:
    io.table_path(valid_dataset, "video_events").write_bytes(b"PAR1 this is not parquet")
    expect_error(valid_dataset, "video_events.parquet", None, None, "cannot read Parquet")


def test_collect_gathers_every_problem_and_fail_fast_raises_the_first(
    make_dataset, canonical
) -> None:
    events = set_value(canonical["live_events"], 4, "event", "dance")
    events = set_value(events, 5, "user_id", 99)
    users = pl.concat([canonical["users"], canonical["users"][1]])  # row 4 repeats user 2
    root = make_dataset(live_events=events, users=users, video_events=None)
    report = validate_dataset(root, collect=True)
    assert not report.ok
    found = {(Path(p.file).name, p.column, p.rows[:1]) for p in report.problems}
    assert found == {
        ("video_events.parquet", None, ()),
        ("users.parquet", "user_id", (4,)),
        ("live_events.parquet", "event", (4,)),
        ("live_events.parquet", "user_id", (5,)),
    }
    text = report.to_text()
    assert "FAILED (4 problem(s))" in text and "values: 'dance'" in text
    with pytest.raises(DataValidationError) as info:
        report.raise_if_failed()
    assert str(info.value) == str(report.problems[0].to_error())
    with pytest.raises(DataValidationError):
        validate_dataset(root)  # fail-fast default


def test_subset_of_tables_still_checks_references(make_dataset, canonical) -> None:
    df = set_value(canonical["live_events"], 5, "user_id", 99)
    root = make_dataset(live_events=df)
    assert validate_dataset(root, tables=["rooms", "video_events"]).ok
    report = validate_dataset(root, tables=["live_events"], collect=True)
    assert list(report.tables) == ["live_events"]
    assert [(p.column, p.rows[0]) for p in report.problems] == [("user_id", 5)]
    with pytest.raises(ConfigError):
        validate_dataset(root, tables=["sessions"])


def test_validate_table_without_context_skips_cross_table_checks(canonical) -> None:
    report = validate_table("live_events", canonical["live_events"], "x.parquet")
    assert not report.problems and "foreign keys" not in report.checks
    assert any("skipped" in n for n in report.notes)
    report = validate_table("segments", canonical["segments"], "s.parquet", ValidationContext())
    assert any("row 0 (4)" in n for n in report.notes)


def test_validation_never_modifies_the_files(make_dataset, canonical) -> None:
    root = make_dataset(live_events=set_value(canonical["live_events"], 4, "event", "dance"))
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    validate_dataset(root, collect=True)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before


@settings(max_examples=60, deadline=None)
@given(
    ts=st.lists(st.integers(0, 50), min_size=1, max_size=40),
    users=st.lists(st.integers(-2, 8), min_size=40, max_size=40),
)
def test_row_level_checks_match_a_reference(ts: list[int], users: list[int]) -> None:
    """First offending row and count of time order, ids and foreign keys equal a plain loop."""
    n = len(ts)
    df = pl.DataFrame(
        {"ts": ts, "user_id": users[:n], "product_id": [1] * n, "event": ["click"] * n}
    )
    known = pl.DataFrame({"user_id": [1, 2, 3, 5, 8]})
    ctx = ValidationContext(tables={"users": known, "products": pl.DataFrame({"product_id": [1]})})
    report = validate_table("product_events", df, "p.parquet", ctx, collect=True)
    by_check = {p.check: p for p in report.problems}
    expected = {
        "time order": [i for i in range(1, n) if ts[i] < ts[i - 1]],
        "ids": [i for i in range(n) if users[i] < 1],
        "foreign keys": [i for i in range(n) if users[i] not in {1, 2, 3, 5, 8}],
    }
    for check, rows in expected.items():
        if not rows:
            assert check not in by_check
            continue
        problem = by_check[check]
        assert list(problem.rows) == rows[:5]
        assert problem.message.startswith(f"{len(rows):,} row(s)")


@settings(max_examples=40, deadline=None)
@given(keys=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3)), min_size=1, max_size=30))
def test_duplicate_keys_match_a_reference(keys: list[tuple[int, int]]) -> None:
    seen: set[tuple[int, int]] = set()
    repeats = []
    for i, key in enumerate(keys):
        if key in seen:
            repeats.append(i)
        seen.add(key)
    df = pl.DataFrame(
        {
            "request_id": [k[0] for k in keys],
            "ts": np.zeros(len(keys), dtype=np.int64),
            "user_id": 1,
            "live_id": 1,
            "author_id": 1,
            "position": [k[1] for k in keys],
            "surface": "slide",
        }
    )
    report = validate_table("live_impressions", df, "i.parquet", collect=True)
    problems = [p for p in report.problems if p.check == "primary key"]
    assert [list(p.rows) for p in problems] == ([repeats[:5]] if repeats else [])


def test_report_text_lists_rows_and_checks(valid_dataset: Path) -> None:
    report: ValidationReport = validate_dataset(valid_dataset)
    lines = report.to_text().splitlines()
    row = next(line for line in lines if line.startswith("live_impressions"))
    assert " 6 " in row and "primary key" in row


def test_other_accepted_dtypes_and_empty_event_tables(make_dataset, canonical) -> None:
    segments = canonical["segments"].with_columns(
        pl.col("visual").cast(pl.Array(pl.Float64, 4)), pl.col("text").cast(pl.List(pl.Float64))
    )
    events = canonical["video_events"].with_columns(pl.col("event").cast(pl.Categorical))
    products = canonical["product_events"].clear()
    root = make_dataset(segments=segments, video_events=events, product_events=products)
    report = validate_dataset(root)
    assert report.ok and report.tables["product_events"].rows == 0
    assert len(report.tables["segments"].notes) == 2


def test_unsigned_overflow_is_reported_without_crashing_later_checks(canonical) -> None:
    df = canonical["live_events"].with_columns(pl.col("user_id").cast(pl.UInt64))
    df = set_value(df, 7, "user_id", 2**63 + 5)
    ctx = ValidationContext(tables={"users": canonical["users"]})
    report = validate_table("live_events", df, "e.parquet", ctx, collect=True)
    assert [(p.check, p.column, p.rows) for p in report.problems] == [("dtypes", "user_id", (7,))]
