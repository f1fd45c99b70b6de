"""``build-samples --shopping``: the product sequence, the room's product context and the
goods-bag / product-click labels, each checked against a direct computation on the tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.loader import SampleSet
from liverank.data.samples import build_samples
from liverank.data.schema import PRODUCT_EVENTS
from liverank.data.sim.config import SimConfig
from liverank.data.sim.simulate import simulate
from liverank.errors import DataValidationError
from liverank.features.encoders import time_gap_bucket

SEQ = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop_world")
    simulate(SimConfig.preset("tiny", seed=3), out, progress=False)
    return out


@pytest.fixture(scope="module")
def shop(world: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    out = tmp_path_factory.mktemp("shop_samples")
    build_samples(world, out, seq_len=SEQ, shard_rows=700, progress=False, shopping=True)
    return SampleSet.load(out)


def test_the_feature_map_lists_the_shopping_columns(world: Path, shop: SampleSet) -> None:
    fmap = shop.feature_map
    assert fmap is not None
    assert fmap.tasks[-2:] == ["btr", "pctr"]
    assert set(fmap.seq_fields) == {"live", "video", "product"}
    assert fmap.sparse_fields["room_product"] == "product"
    products = pl.read_parquet(world / "products.parquet")
    assert fmap.tables["product"] == products["product_id"].max() + 1
    assert fmap.tables["product_action"] == len(PRODUCT_EVENTS) + 1
    for col in ("product_seq_item", "product_seq_cat", "product_seq_action", "product_seq_age"):
        assert shop[col].shape == (len(shop), SEQ)
    # the plain build has none of them
    assert "product_seq_item" not in SampleSet.load(_plain(world, shop)).columns


def _plain(world: Path, shop: SampleSet) -> Path:
    out = world.parent / "plain_samples"
    if not out.exists():
        build_samples(world, out, seq_len=SEQ, progress=False)
    return out


def test_product_sequences_are_the_last_behaviours_strictly_before_the_impression(
    world: Path, shop: SampleSet
) -> None:
    ev = pl.read_parquet(world / "product_events.parquet").join(
        pl.read_parquet(world / "products.parquet").select("product_id", "cat3"), on="product_id"
    )
    rng = np.random.default_rng(0)
    rows = rng.choice(len(shop), size=60, replace=False)
    checked = 0
    for r in rows:
        user, ts = int(shop["user_id"][r]), int(shop["ts"][r])
        before = (
            ev.with_row_index("_i")
            .filter((pl.col("user_id") == user) & (pl.col("ts") < ts))
            .sort(["ts", "_i"], descending=True)
            .head(SEQ)
        )
        n = len(before)
        assert shop["product_seq_len"][r] == n
        np.testing.assert_array_equal(shop["product_seq_item"][r, :n], before["product_id"])
        np.testing.assert_array_equal(shop["product_seq_cat"][r, :n], before["cat3"])
        codes = [PRODUCT_EVENTS.index(e) + 1 for e in before["event"]]
        np.testing.assert_array_equal(shop["product_seq_action"][r, :n], codes)
        gaps = time_gap_bucket(ts - before["ts"].to_numpy())
        np.testing.assert_array_equal(shop["product_seq_age"][r, :n], gaps)
        assert not shop["product_seq_item"][r, n:].any()  # right-padded with 0
        checked += n > 0
    assert checked > 5  # the check saw real sequences


def test_the_room_product_is_the_last_one_introduced_before_the_impression(
    world: Path, shop: SampleSet
) -> None:
    intro = pl.read_parquet(world / "room_products.parquet")
    cat = dict(pl.read_parquet(world / "products.parquet").select("product_id", "cat3").iter_rows())
    seen = 0
    for r in np.random.default_rng(1).choice(len(shop), size=120, replace=False):
        room, ts = int(shop["live_id"][r]), int(shop["ts"][r])
        before = intro.filter((pl.col("live_id") == room) & (pl.col("ts") < ts)).sort("ts")
        want = int(before["product_id"][-1]) if len(before) else 0
        assert shop["room_product"][r] == want
        assert shop["room_product_cat"][r] == (cat[want] if want else 0)
        seen += want > 0
    assert seen > 5


def test_shopping_labels_are_behaviours_inside_the_clicked_visit(
    world: Path, shop: SampleSet
) -> None:
    events = pl.read_parquet(world / "live_events.parquet")
    for task, event in (("btr", "bag_open"), ("pctr", "product_click")):
        y = shop[task]
        assert y.sum() > 0, task
        assert np.all(shop["ctr"][y > 0] == 1)  # only a visit can open the bag
        assert np.all(shop[f"mask_{task}"] == 1)
        ev = events.filter(pl.col("event") == event)
        for r in np.flatnonzero(y)[:20]:
            user, room, ts = (int(shop[c][r]) for c in ("user_id", "live_id", "ts"))
            stay = float(shop["stay_ms"][r])
            hit = ev.filter(
                (pl.col("user_id") == user)
                & (pl.col("live_id") == room)
                & (pl.col("ts") >= ts)
                & (pl.col("ts") <= ts + 600_000 + stay)
            )
            assert len(hit) >= 1, (task, r)
    # the six Kuaishou labels are the plain build's
    plain = SampleSet.load(_plain(world, shop))
    for t in ("ctr", "lvtr", "gtr"):
        np.testing.assert_array_equal(plain[t], shop[t])


def test_a_dataset_without_shopping_tables_is_refused_by_name(world: Path, tmp_path: Path) -> None:
    copy = tmp_path / "world"
    shutil.copytree(world, copy)
    (copy / "room_products.parquet").unlink()
    with pytest.raises(DataValidationError, match="room_products"):
        build_samples(copy, tmp_path / "s", seq_len=SEQ, progress=False, shopping=True)


def test_an_unknown_product_in_product_events_is_an_error_not_a_drop(
    world: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "world"
    shutil.copytree(world, copy)
    ev = pl.read_parquet(copy / "product_events.parquet")
    ev = ev.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(99_999)
        .otherwise("product_id")
        .alias("product_id")
    )
    ev.write_parquet(copy / "product_events.parquet")
    with pytest.raises(DataValidationError, match="missing from the products table"):
        build_samples(copy, tmp_path / "s", seq_len=SEQ, progress=False, shopping=True)
