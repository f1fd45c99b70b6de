"""The ranking service's HTTP contract, over a fake feature service (no train/serve code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.app import create_app
from liverank.serve.model_holder import ModelHolder
from liverank.train.registry import ModelRegistry

FM = synthetic_feature_map()


class FakeFeatures:
    """Synthetic rows; room ids 900+ are 'unknown' and flagged."""

    def __init__(self) -> None:
        self.rows = synthetic_batches(FM, 1, 64, seed=3)[0]

    def assemble(self, user_id: int, live_ids: list[int] | None, ts: int | None):
        ids = np.array(live_ids if live_ids is not None else list(range(1, 11)), dtype=np.int64)
        batch = {k: v[: len(ids)] for k, v in self.rows.items()}
        info: dict[str, Any] = {
            "live_ids": ids,
            "user_known": user_id < 1000,
            "room_known": ids < 900,
            "on_air": np.ones(len(ids), dtype=bool),
            "ts": ts or 0,
            "freshness_ms": 1234,
        }
        return batch, info

    def watermark_ts(self) -> int | None:
        return 1_700_000_000_000


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    reg = ModelRegistry(tmp_path / "reg")
    torch.manual_seed(0)
    cfg = get_config("mlp")
    cfg.score_exponents = {"ctr": 1.0, "lvtr": 0.5}
    Ranker(FM, cfg).save(tmp_path / "m.pt")
    reg.publish("ple", tmp_path / "m.pt")
    holder = ModelHolder(reg.root, "ple", FM)
    holder.refresh()
    return TestClient(create_app(holder, FakeFeatures()))


def test_rank_sorts_by_the_fused_score_and_flags_cold_start(client: TestClient) -> None:
    r = client.post("/rank", json={"user_id": 5, "candidates": [3, 1, 2, 901, 7]})
    assert r.status_code == 200, r.text
    body = r.json()
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    assert body["model_version"] == "v0001" and body["user_known"]
    it = body["items"][0]
    assert it["score"] == pytest.approx((1 + it["probs"]["ctr"]) * (1 + it["probs"]["lvtr"]) ** 0.5)
    unknown = [it for it in body["items"] if it["live_id"] == 901]
    assert unknown and unknown[0]["known"] is False
    assert body["feature_freshness_ms"] == 1234


def test_default_candidates_and_top_k(client: TestClient) -> None:
    r = client.post("/rank", json={"user_id": 5000, "top_k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    assert r.json()["user_known"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": 0}, "user_id"),
        ({"user_id": 3, "candidates": []}, "candidates"),
        ({"user_id": 3, "candidates": [1, -4]}, "candidates"),
        ({"user_id": 3, "unknown_field": 1}, "unknown_field"),
        ({"candidates": [1]}, "user_id"),
        ({"user_id": "abc"}, "user_id"),
    ],
)
def test_bad_requests_get_a_422_that_names_the_field(
    client: TestClient, body: dict, field: str
) -> None:
    r = client.post("/rank", json=body)
    assert r.status_code == 422
    assert field in r.text


def test_no_model_is_a_503_and_health_says_so(tmp_path: Path) -> None:
    holder = ModelHolder(tmp_path / "empty", "ple", FM)
    c = TestClient(create_app(holder, FakeFeatures()))
    r = c.post("/rank", json={"user_id": 3})
    assert r.status_code == 503 and "no servable version" in r.json()["detail"]
    assert c.get("/health").json()["status"] == "no_model"


def test_metrics_count_requests_and_expose_the_model_version(client: TestClient) -> None:
    client.post("/rank", json={"user_id": 3, "candidates": [1, 2]})
    client.post("/rank", json={"user_id": 0})
    text = client.get("/metrics").text
    assert 'liverank_rank_requests_total{outcome="ok"} 1.0' in text
    assert 'liverank_model_info{model="ple",version="v0001"} 1.0' in text
    assert "liverank_rank_seconds_bucket" in text
    assert client.get("/health").json()["model_version"] == "v0001"
