"""Serving a foresighter ranker: a request at a training row's time gets that row's room
statistic window and room products (the sample builder's point-in-time reads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from liverank.data.loader import SampleSet
from liverank.data.samples import build_samples
from liverank.models.ranker import Ranker
from liverank.models.zoo import get_config
from liverank.serve.service import build_service
from liverank.train.registry import ModelRegistry


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("foresight_serve")
    simulate(SimConfig.preset("tiny", seed=1, n_days=2), root / "data", progress=False)
    build_samples(
        root / "data", root / "samples", seq_len=10, progress=False, room_stats=8, room_products=4
    )
    fmap = SampleSet.load(root / "samples").feature_map
    cfg = get_config("foresighter")
    tables = fmap.tables
    cats = (tables["product_cat1"], tables["product_cat2"], tables["product_cat"])
    cfg.modules[-1].params = {"horizon": 3, "dim": 8, "layers": 1, "categories": cats}
    Ranker(fmap, cfg).save(root / "m.pt")
    ModelRegistry(root / "reg").publish("fs", root / "m.pt")
    return root / "data", root / "samples", root / "reg"


def test_a_request_gets_the_rows_room_sequences(setup: tuple[Path, Path, Path]) -> None:
    data, samples, reg = setup
    rows = SampleSet.load(samples)
    busy = np.flatnonzero(rows["rp_end"] > 0)
    assert busy.size > 0, "no row of a shopping room with an earlier product"
    i = int(busy[len(busy) // 2])
    row = {k: v.numpy() for k, v in rows.batch(np.array([i])).items()}
    ts, user, live = int(row["ts"][0]), int(row["user_id"][0]), int(row["live_id"][0])
    app = build_service(reg, "fs", data, as_of_ts=ts, watch_interval_s=60)
    try:
        batch, _ = app.state.features.assemble(user, [live], ts)
        np.testing.assert_allclose(batch["room_stats"].numpy(), row["room_stats"], rtol=1e-6)
        np.testing.assert_array_equal(batch["room_products"].numpy(), row["room_products"])
        assert row["room_stats"].sum() > 0
        r = TestClient(app).post("/rank", json={"user_id": user, "ts": ts})
        assert r.status_code == 200, r.text
        assert np.isfinite([it["score"] for it in r.json()["items"]]).all()
    finally:
        app.state.holder.stop()
