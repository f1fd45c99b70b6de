"""No train/serve skew for the ``--shopping`` columns (eLiveRec): a store replaying the events
in time order gives, at sampled requests, the sample builder's product sequence, room product
and every other feature column; a backend without shopping state refuses such a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.io import table_path
from liverank.data.samples import build_samples
from liverank.data.shopping import SHOP_TASKS
from liverank.data.sim import SimConfig, simulate
from liverank.errors import ConfigError, DataValidationError
from liverank.features.spec import TASKS, FeatureMap
from liverank.serve.online_features import MemoryFeatureStore, assemble_request

SEQ_LEN = 12
LABELS = (*TASKS, *SHOP_TASKS)
NOT_FEATURES = {"sample_id", "request_id", "stay_ms", *LABELS, *(f"mask_{t}" for t in LABELS)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, FeatureMap]:
    root = tmp_path_factory.mktemp("shop_online")
    simulate(SimConfig.preset("tiny", seed=1), root / "data", progress=False)
    build_samples(root / "data", root / "samples", seq_len=SEQ_LEN, progress=False, shopping=True)
    samples = pl.read_parquet(sorted((root / "samples").glob("part-*.parquet")))
    return root / "data", samples, FeatureMap.load(root / "samples")


def test_online_shopping_features_equal_sample_rows_on_replay(built) -> None:
    data, samples, fmap = built
    chosen = np.random.default_rng(0).choice(
        samples["request_id"].unique().to_numpy(), size=80, replace=False
    )
    picked = samples.filter(pl.col("request_id").is_in(chosen.tolist())).sort("ts", "request_id")
    store = MemoryFeatureStore.from_dataset(data, SEQ_LEN + 5, as_of_ts=0, shopping=True)
    assert store.shopping is not None
    tables = {
        name: pl.read_parquet(table_path(data, name))
        for name in ("live_events", "video_events", "product_events", "room_products")
    }
    observe = {
        "live_events": store.observe_live_events,
        "video_events": store.observe_video_events,
        "product_events": store.shopping.observe_product_events,
        "room_products": store.shopping.observe_room_products,
    }
    seen, n_products, n_room = -1, 0, 0
    for (request_id,), rows in picked.group_by("request_id", maintain_order=True):
        ts = int(rows["ts"][0])
        for name, frame in tables.items():  # every event up to and including ts
            observe[name](frame.filter((pl.col("ts") > seen) & (pl.col("ts") <= ts)))
        seen = ts
        rows = rows.sort("position")
        batch, _ = assemble_request(
            store,
            fmap,
            int(rows["user_id"][0]),
            rows["live_id"].to_numpy(),
            ts,
            position=rows["position"].to_numpy() - 1,
        )
        for c in [c for c in rows.columns if c not in NOT_FEATURES]:
            values = rows[c]
            want = (
                np.stack(values.to_numpy())
                if isinstance(values.dtype, pl.Array)
                else values.to_numpy()
            )
            np.testing.assert_array_equal(batch[c].numpy(), want, err_msg=f"{request_id}: {c}")
        n_products += int(rows["product_seq_len"][0])
        n_room += int((rows["room_product"] > 0).sum())
    assert n_products > 40 and n_room > 5, "the replay compared (almost) empty shopping columns"


def test_a_store_without_shopping_state_refuses_a_shopping_model(built) -> None:
    data, samples, fmap = built
    store = MemoryFeatureStore.from_dataset(data, SEQ_LEN + 5)
    assert store.shopping is None
    row = samples.row(0, named=True)
    with pytest.raises(ConfigError, match="shopping features"):
        assemble_request(store, fmap, row["user_id"], [row["live_id"]], row["ts"])


def test_shopping_serving_needs_the_shopping_tables(built, tmp_path: Path) -> None:
    import shutil

    data, _, _ = built
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    table_path(copy, "room_products").unlink()
    with pytest.raises(DataValidationError, match="room_products"):
        MemoryFeatureStore.from_dataset(copy, SEQ_LEN, shopping=True)


def test_the_service_ranks_with_eliverec(built, tmp_path: Path) -> None:
    """``liverank serve`` of an eLiveRec checkpoint: the store keeps the shopping state by
    itself (the model's feature map asks for it) and POST /rank answers from the TorchScript
    trace, as eager does."""
    from fastapi.testclient import TestClient

    from liverank.data.io import read_table
    from liverank.models.ranker import Ranker
    from liverank.models.zoo import get_config
    from liverank.serve.service import build_service
    from liverank.train.registry import ModelRegistry

    data, _, fmap = built
    Ranker(fmap, get_config("eliverec")).save(tmp_path / "m.pt")
    ModelRegistry(tmp_path / "reg").publish("eliverec", tmp_path / "m.pt")
    imp = read_table(data, "live_impressions").sort("ts")
    row = imp.row(len(imp) // 2, named=True)
    bodies = {}
    for runtime in ("eager", "torchscript"):
        app = build_service(
            tmp_path / "reg", "eliverec", data, as_of_ts=row["ts"], runtime=runtime,
            watch_interval_s=60,
        )  # fmt: skip
        r = TestClient(app).post("/rank", json={"user_id": row["user_id"], "ts": row["ts"]})
        app.state.holder.stop()
        assert r.status_code == 200, r.text
        bodies[runtime] = r.json()
    eager, traced = bodies["eager"]["items"], bodies["torchscript"]["items"]
    assert [it["live_id"] for it in eager] == [it["live_id"] for it in traced] and eager
    for a, b in zip(eager, traced, strict=True):
        assert abs(a["probs"]["ctr"] - b["probs"]["ctr"]) < 1e-5
