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


def _window(store: lh.LongHistory, domain: str, start: int, end: int) -> list[int]:
    return store.tables[domain].columns["author"][start:end].tolist()


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
        for domain in ("live", "video"):
            c_start, c_end = lh.index_columns(domain)
            got = _window(
                service.long_history, domain, int(batch[c_start][0]), int(batch[c_end][0])
            )
            want = _window(built, domain, row[c_start], row[c_end])
            assert got == want, domain
        r = TestClient(app).post("/rank", json={"user_id": row["user_id"], "ts": row["ts"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) > 0
        assert np.isfinite([it["score"] for it in r.json()["items"]]).all()
    finally:
        app.state.holder.stop()
