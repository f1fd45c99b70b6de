"""Serving a model that reads long user histories (moment_cross): the request's history
windows hold exactly the items the sample builder gives an impression at the same time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from liverank.data.samples import build_samples
from liverank.features import long_history as lh
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker
from liverank.models.zoo import get_config
from liverank.serve.service import build_service
from liverank.train.registry import ModelRegistry

LONG = 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("long_serve")
    simulate(SimConfig.preset("tiny", seed=0), root / "data", progress=False)
    build_samples(root / "data", root / "samples", seq_len=10, long_len=LONG, progress=False)
    fmap = FeatureMap.load(root / "samples")
    Ranker(fmap, get_config("moment_cross")).save(root / "m.pt")
    ModelRegistry(root / "reg").publish("cross", root / "m.pt")
    return root / "data", root / "samples", root / "reg"


def test_moment_cross_is_served_with_point_in_time_long_histories(
    setup: tuple[Path, Path, Path],
) -> None:
    data, samples, reg = setup
    rows = pl.read_parquet(samples / "part-*.parquet").sort("ts")
    row = rows.row(int(len(rows) * 0.7), named=True)
    app = build_service(reg, "cross", data, as_of_ts=row["ts"], watch_interval_s=60)
    try:
        service = app.state.features
        batch, _ = service.assemble(row["user_id"], [row["live_id"]], row["ts"])
        built = lh.LongHistory.load(samples)
        assert row["long_video_end"] - row["long_video_start"] > 0  # a non-trivial window
        # the request's window fields are the builder's window of the same impression
        arrays = {"ts": np.array([row["ts"]], dtype=np.int64)}
        for domain in ("live", "video"):
            for c in lh.index_columns(domain):
                arrays[c] = np.array([row[c]], dtype=np.int64)
        k = app.state.holder.current().model.feature_map.long_len
        want = built.batch_fields(arrays, k)
        assert set(want) <= set(batch)
        for name, values in want.items():
            np.testing.assert_array_equal(batch[name][0].numpy(), values[0], err_msg=name)
        # served traced, recorded for one request (the windows are read once per request)
        assert app.state.holder.current().runtime == "torchscript"
        r = TestClient(app).post("/rank", json={"user_id": row["user_id"], "ts": row["ts"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) > 0
        assert np.isfinite([it["score"] for it in r.json()["items"]]).all()
    finally:
        app.state.holder.stop()
