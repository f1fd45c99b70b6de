"""Serving the flagship (``liverank serve --model liverank``): with samples that feed every
paper module, the service assembles every module's columns and ranks; each module's columns
are checked against the training rows by its own serving test (long histories, shopping,
MMBee, room sequences), this one checks that they come together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from liverank.data.loader import SampleSet
from liverank.data.samples import build_samples
from liverank.graph.store import build_neighbour_store
from liverank.models.ranker import Ranker
from liverank.models.zoo import get_config
from liverank.serve.service import build_service
from liverank.train.registry import ModelRegistry

PAPER_MODULES = ["farm", "moment_cross", "eliverec", "mmbee_mfq", "mmbee_gie", "foresighter"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Ranker]:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("flagship_serve")
    simulate(SimConfig.preset("tiny", seed=3, n_days=3), root / "data", progress=False)
    build_samples(
        root / "data", root / "samples", seq_len=10, progress=False, long_len=30,
        shopping=True, segments=5, graph_k=5, room_stats=8, room_products=4,
    )  # fmt: skip
    fm = SampleSet.load(root / "samples").feature_map
    torch.manual_seed(0)
    model = Ranker(fm, get_config("liverank"))
    model.save(root / "m.pt")
    ModelRegistry(root / "reg").publish("liverank", root / "m.pt")
    build_neighbour_store(root / "data", root / "graph", 10**13, k=5)
    app = build_service(root / "reg", "liverank", root / "data", graph=root / "graph")
    return TestClient(app), model


def test_every_module_is_served(service: tuple[TestClient, Ranker]) -> None:
    client, model = service
    assert model.switched_off == {}
    served = client.app.state.holder.current().model
    assert list(served.feature_modules) == ["sparse_features", "din", *PAPER_MODULES]
    # every module exports: served traced, recorded for one request, parity-gated on a request
    assert client.app.state.holder.current().runtime == "torchscript"
    r = client.post("/rank", json={"user_id": 3, "top_k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "liverank" and 0 < len(body["items"]) <= 10
    scores = [it["score"] for it in body["items"]]
    assert np.all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    assert set(body["items"][0]["probs"]) >= {"ctr", "gtr", "btr"}
