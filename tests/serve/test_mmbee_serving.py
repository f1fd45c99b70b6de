"""Serving an MMBee model: a request at time ``ts`` gets the segment and neighbour columns a
training row at ``ts`` got, and a newly published graph build is picked up without a restart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from liverank.data.loader import SampleSet
from liverank.data.mmbee import AUTHOR_NODE_COLUMNS, GIE_COLUMNS, graph_store_dir
from liverank.data.samples import build_samples
from liverank.errors import ConfigError
from liverank.graph.store import META_FILE, NeighbourStore, build_neighbour_store
from liverank.models.ranker import Ranker
from liverank.models.zoo import get_config
from liverank.serve.service import build_service
from liverank.train.registry import ModelRegistry

SEGMENTS, K = 3, 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("mmbee_serve")
    simulate(SimConfig.preset("tiny", seed=0, n_days=3), root / "data", progress=False)
    build_samples(
        root / "data", root / "samples", seq_len=10, progress=False, segments=SEGMENTS, graph_k=K
    )
    data = SampleSet.load(root / "samples")
    Ranker(data.feature_map, get_config("mmbee")).save(root / "m.pt")
    ModelRegistry(root / "reg").publish("gifts", root / "m.pt")
    return root / "data", root / "samples", root / "reg"


def _last_day_row(samples: Path) -> tuple[int, int, dict[str, np.ndarray]]:
    """(day, row index, the row's batch) of a last-day training row whose user has neighbours."""
    data = SampleSet.load(samples)
    day = data["day"]
    last = int(day.max())
    rows = np.flatnonzero((day == last) & (data["gie_u2a2a"][:, 0] > 0))
    assert rows.size > 0, "no last-day row with user neighbours in the tiny world"
    i = int(rows[len(rows) // 2])
    batch = {k: v.numpy() for k, v in data.batch(np.array([i])).items()}
    return last, i, batch


def test_a_request_gets_the_training_rows_segment_and_neighbour_columns(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, samples, reg = setup
    last, _, row = _last_day_row(samples)
    graph = tmp_path / "graph"
    shutil.copytree(graph_store_dir(samples, last), graph)  # the store of the row's day
    ts, user, live = int(row["ts"][0]), int(row["user_id"][0]), int(row["live_id"][0])
    app = build_service(reg, "gifts", data, as_of_ts=ts, watch_interval_s=60, graph=graph)
    try:
        batch, _ = app.state.features.assemble(user, [live], ts)
        attrs = [c.replace("gie_", "gie_attr_", 1) for c in AUTHOR_NODE_COLUMNS]
        assert all(c in row for c in attrs)  # the tiny world has segments: authors have content
        for column in (*GIE_COLUMNS, *attrs, "seg_mask", "seg_visual", "seg_speech", "seg_text"):
            np.testing.assert_array_equal(batch[column].numpy(), row[column], err_msg=column)
        assert row["seg_mask"].sum() > 0  # the room had content at that time
        client = TestClient(app)
        r = client.post("/rank", json={"user_id": user, "ts": ts})
        assert r.status_code == 200, r.text
        assert np.isfinite([it["score"] for it in r.json()["items"]]).all()
        health = client.get("/health").json()
        assert health["graph_as_of_ts"] == json.loads((graph / META_FILE).read_text())["as_of_ts"]
        assert health["graph_reloads"] == 0 and health["graph_problem"] is None
    finally:
        app.state.holder.stop()


def test_a_published_graph_build_is_reloaded_and_a_broken_one_is_not(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, samples, reg = setup
    last, _, row = _last_day_row(samples)
    graph = tmp_path / "graph"
    shutil.copytree(graph_store_dir(samples, last), graph)
    ts, user, live = int(row["ts"][0]), int(row["user_id"][0]), int(row["live_id"][0])
    app = build_service(reg, "gifts", data, as_of_ts=ts, watch_interval_s=60, graph=graph)
    try:
        features = app.state.features
        watcher = features.mmbee.graph
        # publish a build with the gifts up to the request (a later as_of) into the same dir
        built = build_neighbour_store(data, graph, ts, k=K)
        assert watcher.refresh() is True
        want = NeighbourStore.load(graph).neighbours("u2a2a", np.array([user]))[0]
        batch, _ = features.assemble(user, [live], ts)
        np.testing.assert_array_equal(batch["gie_u2a2a"].numpy(), want)
        assert TestClient(app).get("/health").json()["graph_as_of_ts"] == built["as_of_ts"]
        # a half-written build (meta.json names a table that is missing): the old one stays
        meta = json.loads((graph / META_FILE).read_text())
        (graph / "u2a2u.parquet").unlink()
        (graph / META_FILE).write_text(json.dumps(meta | {"as_of_ts": ts + 1}))
        assert watcher.refresh() is False
        health = TestClient(app).get("/health").json()
        assert "u2a2u.parquet" in health["graph_problem"]
        assert health["graph_as_of_ts"] == built["as_of_ts"] and health["graph_reloads"] == 1
        again, _ = features.assemble(user, [live], ts)
        np.testing.assert_array_equal(again["gie_u2a2a"].numpy(), want)
    finally:
        app.state.holder.stop()


def test_a_graph_model_without_a_store_or_with_a_short_one_is_refused(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, samples, reg = setup
    with pytest.raises(ConfigError, match=r"model 'gifts' reads MMBee's metapath .*--graph DIR"):
        build_service(reg, "gifts", data, watch_interval_s=60)
    meta = json.loads((data / "meta.json").read_text())
    build_neighbour_store(data, tmp_path / "short", meta["start_ts"] + 86_400_000, k=K - 2)
    with pytest.raises(ConfigError, match=f"keeps {K - 2}; rebuild it with --k {K}"):
        build_service(reg, "gifts", data, watch_interval_s=60, graph=tmp_path / "short")
    with pytest.raises(Exception, match="not a neighbour store"):
        build_service(reg, "gifts", data, watch_interval_s=60, graph=tmp_path / "nothing")
