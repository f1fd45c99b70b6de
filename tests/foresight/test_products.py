"""The next-product examples (strictly earlier products), the baselines' rankings, hit rates and
one model arm on the tiny world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.io import read_table
from liverank.errors import ConfigError
from liverank.foresight.arms import load_arm_config, run_forecast_arm
from liverank.foresight.products import (
    ProductConfig,
    baseline_ranking,
    build_examples,
    hit_rates,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("products") / "w"
    simulate(SimConfig.preset("tiny", seed=1, n_days=3), root, progress=False)
    return root


def test_baselines_rank_the_rooms_past_categories() -> None:
    # one room's history, most recent last: cat3 5, 7, 5, 9 (and two padding slots)
    cats = [0, 0, 5, 7, 5, 9]
    seq = np.zeros((1, 6, 4), dtype=np.int64)
    seq[0, :, 3] = cats
    seq[0, :, 0] = [0, 0, 1, 2, 3, 4]
    assert baseline_ranking(seq, "latest", 3).tolist() == [[9, 5, 7]]
    assert baseline_ranking(seq, "most_frequent", 4).tolist() == [[5, 9, 7, 0]]
    ranked = np.array([[9, 5], [1, 2], [3, 4]])
    assert hit_rates(ranked, np.array([5, 1, 8])) == {
        "hit@1": pytest.approx(1 / 3),
        "hit@5": pytest.approx(2 / 3),
    }


def test_examples_read_only_earlier_products(world: Path) -> None:
    cfg = ProductConfig(length=4)
    examples, firsts = build_examples(world, cfg)
    intro = read_table(world, "room_products").sort("live_id", "ts")
    assert len(examples) + firsts == intro.height and len(examples) > 0
    catalog = read_table(world, "products")
    i = len(examples) // 2
    live, ts = int(examples.live_id[i]), int(examples.ts[i])
    earlier = (
        intro.filter((pl.col("live_id") == live) & (pl.col("ts") < ts))
        .join(catalog, on="product_id")
        .sort("ts")
        .tail(4)
    )
    got = examples.seq[i][examples.seq[i][:, 0] > 0]
    assert got[:, 0].tolist() == earlier["product_id"].to_list()
    assert got[:, 3].tolist() == earlier["cat3"].to_list()


def test_a_model_arm_and_its_config(world: Path) -> None:
    cfg = load_arm_config(ROOT / "configs/foresight/products.yaml", {"epochs": 2, "length": 5})
    assert isinstance(cfg, ProductConfig)
    body = run_forecast_arm(world, cfg, None)
    m = body["metrics"]["all"]["next_category"]
    assert 0 <= m["hit@1"] <= m["hit@5"] <= 1 and m["count"] > 0
    assert body["epochs_run"] == 2
    with pytest.raises(ConfigError, match="cat3 ids reach"):
        run_forecast_arm(world, cfg.model_copy(update={"categories": (50, 1000, 2)}), None)
