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


def test_train_save_load_and_the_commands(world: Path, tmp_path: Path) -> None:
    """``foresight train --config products.yaml`` trains, compares and saves; the loaded model
    gives the same probabilities; ``next_categories`` reads the room's earlier products; ``show
    --product-model`` prints them."""
    from liverank.cli import main
    from liverank.features.store import RoomStatsStore
    from liverank.foresight.products import ProductForecaster, next_categories

    cfg_path = str(ROOT / "configs/foresight/products.yaml")
    out = tmp_path / "pm"
    assert main(["foresight", "train", "--data", str(world), "--out", str(out),
                 "--config", cfg_path, "--epochs", "2"]) == 0  # fmt: skip
    report = (out / "report.json").read_text()
    assert '"most_frequent"' in report and '"latest"' in report
    loaded = ProductForecaster.load(out)
    assert loaded.cfg.epochs == 2
    ex, _ = build_examples(world, loaded.cfg)
    p = loaded.probabilities(ex.seq[:20])  # [20, C3]
    assert p.shape == (20, loaded.sizes[3]) and np.allclose(p.sum(1), 1, atol=1e-5)
    again = ProductForecaster.load(out).probabilities(ex.seq[:20])
    np.testing.assert_allclose(p, again, rtol=1e-6)
    # a room as of an introduction: its earlier products, the model's most likely categories
    store = RoomStatsStore.from_dataset(world)
    live, ts = int(ex.live_id[0]), int(ex.ts[0])
    view = next_categories(loaded, store, live, ts, top=3)
    assert view["recent"] == [r for r in ex.seq[0].tolist() if r[0] > 0]
    assert [n["cat3"] for n in view["next"]] == np.argsort(-p[0], kind="stable")[:3].tolist()
    # before the room's first product there is nothing to go on
    first = read_table(world, "room_products").filter(pl.col("live_id") == live)["ts"].min()
    assert next_categories(loaded, store, live, int(first))["next"] == []
    assert (
        main(
            ["foresight", "show", "--model", str(out), "--data", str(world), "--live-id", str(live)]
        )
        != 0
    )  # a product model is not a statistic forecaster
    assert main(["foresight", "train", "--data", str(world), "--out", str(tmp_path / "fc"),
                 "--window", "10", "--epochs", "1"]) == 0  # fmt: skip
    assert (
        main(
            [
                "foresight",
                "show",
                "--model",
                str(tmp_path / "fc"),
                "--data",
                str(world),
                "--live-id",
                str(live),
                "--ts",
                str(ts),
                "--product-model",
                str(out),
            ]
        )
        == 0
    )
    with pytest.raises(Exception, match="next-product forecaster directory"):
        ProductForecaster.load(tmp_path)
    assert main(["foresight", "train", "--data", str(world), "--out", str(tmp_path / "x"),
                 "--config", cfg_path, "--window", "5"]) != 0  # fmt: skip
