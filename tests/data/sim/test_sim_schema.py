"""Every table the simulator writes conforms to the canonical schema and its rules."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from liverank.data import io
from liverank.data.schema import CLICK_WINDOW_MS, TABLES
from liverank.data.sim import SimConfig
from liverank.data.validate import validate_dataset
from liverank.data.visits import reconstruct_visits_with_stats


@pytest.fixture(scope="module")
def tables(tiny) -> dict[str, pl.DataFrame]:
    out, _ = tiny
    return {t: io.read_table(out, t) for t in TABLES}


def test_every_table_has_the_canonical_columns_and_dtypes(tables):
    for name, spec in TABLES.items():
        assert tables[name].schema == pl.Schema(spec.polars_schema), name
        assert tables[name].height > 0, f"{name} is empty"


def test_the_shared_validator_accepts_the_dataset(tiny):
    out, _ = tiny
    report = validate_dataset(out, collect=True)
    assert report.ok, report.to_text()


def test_meta(tiny):
    out, _ = tiny
    meta = io.read_meta(out)
    cfg = SimConfig.preset("tiny", seed=0)
    assert meta.source == "simulator"
    assert (meta.start_ts, meta.end_ts) == (1_746_403_200_000, 1_746_403_200_000 + 86_400_000)
    assert meta.segment_dim == cfg.segment_dim and meta.long_view_ms == cfg.long_view_ms
    assert meta.extra["seed"] == 0 and SimConfig.build(meta.extra["config"]) == cfg


def test_ids_start_at_one_and_keys_are_unique(tables):
    for name, spec in TABLES.items():
        df = tables[name]
        for col in df.columns:
            if col.endswith("_id") and not (name == "live_events" and col == "product_id"):
                assert df[col].min() >= 1, f"{name}.{col}"
        if spec.key:
            assert df.select(spec.key).is_duplicated().sum() == 0, name


def test_event_tables_sorted_and_rooms_sorted_by_start(tables):
    for name, spec in TABLES.items():
        if spec.time_column:
            assert tables[name][spec.time_column].is_sorted(), name
    assert tables["rooms"]["start_ts"].is_sorted()


def test_foreign_keys(tables):
    for name, spec in TABLES.items():
        for col, (ref, ref_col) in spec.references.items():
            missing = ~tables[name][col].is_in(tables[ref][ref_col].implode())
            assert missing.sum() == 0, f"{name}.{col} -> {ref}.{ref_col}"


def _with_room(df: pl.DataFrame, rooms: pl.DataFrame) -> pl.DataFrame:
    return df.join(rooms.select("live_id", "start_ts", "end_ts"), on="live_id")


def test_impressions_only_of_rooms_on_air_and_events_inside_the_room(tables):
    imp = _with_room(tables["live_impressions"], tables["rooms"])
    assert ((imp["ts"] >= imp["start_ts"]) & (imp["ts"] < imp["end_ts"])).all()
    for name in ("live_events", "room_products", "segments"):
        df = _with_room(tables[name], tables["rooms"])
        assert ((df["ts"] >= df["start_ts"]) & (df["ts"] <= df["end_ts"])).all(), name
    seg = _with_room(tables["segments"], tables["rooms"])
    assert ((seg["ts"] - seg["start_ts"]) % 30_000 == 0).all()


def test_slates(tables):
    imp = tables["live_impressions"]
    per_req = imp.group_by("request_id").agg(
        pl.len().alias("k"), pl.col("position").sort(), pl.col("ts").n_unique().alias("ts"),
        pl.col("user_id").n_unique().alias("users"), pl.col("live_id").n_unique().alias("rooms"),
    )  # fmt: skip
    cfg = SimConfig.preset("tiny")
    assert per_req["k"].max() <= cfg.slate_max
    assert (per_req["ts"] == 1).all() and (per_req["users"] == 1).all()
    assert (per_req["rooms"] == per_req["k"]).all()  # a room appears once per slate
    for k, positions in zip(per_req["k"], per_req["position"], strict=True):
        assert positions.to_list() == list(range(k))
    assert set(imp["surface"].unique()) <= {"explore", "slide"}


def test_visits_are_reconstructable(tiny, tables):
    out, _ = tiny
    ev = tables["live_events"]
    visits, stats = reconstruct_visits_with_stats(
        tables["live_impressions"], ev, tables["rooms"], io.read_meta(out).long_view_ms
    )
    # every enter clicks exactly one impression and every visit has its own exit
    assert stats.orphan_enters == 0 and stats.reentries == 0
    assert stats.clicks == stats.enters == ev.filter(pl.col("event") == "exit").height
    assert stats.closed_at_room_end == 0
    clicked = visits.filter("clicked")
    assert ((clicked["enter_ts"] - clicked["ts"]) < CLICK_WINDOW_MS).all()
    assert (clicked["stay_ms"] > 0).all()


def test_a_user_is_in_one_room_at_a_time_and_leaves_before_the_next_impression(tables):
    ev = tables["live_events"].filter(pl.col("event").is_in(["enter", "exit"]))
    # per user, enters and exits alternate in time: enter, exit, enter, exit, ...
    seq = ev.sort("user_id", "ts", maintain_order=True).group_by("user_id", maintain_order=True)
    for _, g in seq:
        kinds = g["event"].to_list()
        assert kinds == ["enter", "exit"] * (len(kinds) // 2)
        lives = g["live_id"].to_list()
        assert lives[0::2] == lives[1::2]
    # a visit ends before the user's next impression of any room
    visits = (
        ev.sort("user_id", "ts", maintain_order=True)
        .with_columns(pl.col("ts").shift(-1).over("user_id").alias("exit_ts"))
        .filter(pl.col("event") == "enter")
    )
    imp = tables["live_impressions"].select("user_id", pl.col("ts").alias("imp_ts")).sort("imp_ts")
    nxt = visits.sort("ts").join_asof(
        imp, left_on="ts", right_on="imp_ts", by="user_id", strategy="forward",
        allow_exact_matches=False, check_sortedness=False,
    )  # fmt: skip
    nxt = nxt.drop_nulls("imp_ts")
    assert (nxt["exit_ts"] < nxt["imp_ts"]).all()


def test_gift_and_buy_values(tables):
    ev = tables["live_events"]
    gifts = ev.filter(pl.col("event") == "gift")
    assert gifts.height > 0 and (gifts["value"] > 0).all()
    other = ev.filter(~pl.col("event").is_in(["gift", "buy"]))
    assert (other["value"] == 0).all()
    buys = ev.filter(pl.col("event").is_in(["buy", "cart_click"]))
    assert buys.height > 0 and (buys["product_id"] >= 1).all()
    assert (buys.filter(pl.col("event") == "buy")["value"] > 0).all()
    # the product was introduced in that room before the event
    intro = tables["room_products"].rename({"ts": "intro_ts"})
    first = intro.group_by("live_id", "product_id").agg(pl.col("intro_ts").min())
    joined = buys.join(first, on=["live_id", "product_id"], how="left")
    assert joined["intro_ts"].null_count() == 0
    assert (joined["intro_ts"] <= joined["ts"]).all()
    shopping = tables["authors"].filter(pl.col("author_type") == "shopping")["author_id"]
    assert buys["author_id"].is_in(shopping.implode()).all()
    # rooms sell products of the author's vertical (cat1 = category - n_topics)
    n_topics = SimConfig.preset("tiny").n_topics
    sold = (
        tables["room_products"].join(tables["rooms"].select("live_id", "category"), on="live_id")
        .join(tables["products"].select("product_id", "cat1"), on="product_id")
    )  # fmt: skip
    assert (sold["cat1"] == sold["category"] - n_topics).all()


def test_video_events(tables):
    v = tables["video_events"]
    plays = v.filter(pl.col("event") == "play")
    assert (plays["play_ms"] > 0).all()
    assert (v.filter(pl.col("event") != "play")["play_ms"] == 0).all()
    videos = tables["videos"]
    assert (videos["duration_ms"] > 0).all()


def test_segment_vectors_have_the_meta_dimension(tiny, tables):
    out, _ = tiny
    dim = io.read_meta(out).segment_dim
    seg = tables["segments"]
    for m in ("visual", "speech", "text"):
        assert (seg[m].list.len() == dim).all()
        assert np.isfinite(seg[m].explode().to_numpy()).all()
