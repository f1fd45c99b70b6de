"""The ranking service's HTTP contract, over a fake feature service (no train/serve code)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.app import MAX_BODY_BYTES, DefaultTime, create_app
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

    def default_time(self) -> DefaultTime:
        return DefaultTime(1_700_000_000_000, "watermark", "the feature watermark")


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


# ----------------------------------------------------------------------- bad input (#12)
INT64_OVER = str(2**63)  # one past the largest int64


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"user_id": NaN}', "user_id"),
        (b'{"user_id": Infinity}', "user_id"),
        (b'{"user_id": -Infinity}', "user_id"),
        (b'{"user_id": 1e309}', "user_id"),
        (b'{"user_id": %s}' % INT64_OVER.encode(), "user_id"),
        (b'{"user_id": 3, "ts": NaN}', "ts"),
        (b'{"user_id": 3, "ts": 1e309}', "ts"),
        (b'{"user_id": 3, "ts": %s}' % INT64_OVER.encode(), "ts"),
        (b'{"user_id": 3, "candidates": [1, NaN]}', "candidates"),
        (b'{"user_id": 3, "candidates": [Infinity]}', "candidates"),
        (b'{"user_id": 3, "candidates": [1, %s]}' % INT64_OVER.encode(), "candidates"),
        (b'{"user_id": 3, "top_k": NaN}', "top_k"),
        (b'{"user_id": 3, "top_k": %s}' % INT64_OVER.encode(), "top_k"),
        (b'{"user_id": 3, "top_k": 5001}', "top_k"),
        (b'{"user_id": 3', "body"),  # not JSON at all
    ],
)
def test_out_of_range_numbers_are_a_422_naming_the_field(
    client: TestClient, raw: bytes, field: str
) -> None:
    r = client.post("/rank", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]  # a valid JSON body, also for NaN input
    assert field in detail[0]["loc"], detail


def test_the_largest_int64_ids_and_ts_are_accepted(client: TestClient) -> None:
    top = 2**63 - 1
    r = client.post("/rank", json={"user_id": top, "candidates": [top], "ts": top, "top_k": 1})
    assert r.status_code == 200, r.text
    assert r.json()["ts"] == top and r.json()["items"][0]["live_id"] == top


def test_a_422_never_echoes_a_large_input(client: TestClient) -> None:
    ids = ",".join(["1"] * 5_001)  # one too many
    raw = f'{{"user_id": 3, "candidates": [{ids}], "junk": "{"x" * 20_000}"}}'.encode()
    r = client.post("/rank", content=raw)
    assert r.status_code == 422
    assert len(r.content) < 2_000, r.text[:500]
    locs = [d["loc"] for d in r.json()["detail"]]
    assert ["body", "candidates"] in locs and ["body", "junk"] in locs
    many = '{"user_id": 3, "candidates": [' + ",".join(['"x"'] * 1_000) + "]}"
    r = client.post("/rank", content=many.encode())
    assert r.status_code == 422 and len(r.json()["detail"]) == 11  # 10 listed, then a count
    assert r.json()["detail"][-1]["msg"] == "990 more errors not shown"


def test_a_body_over_the_limit_is_a_413_and_health_answers_meanwhile(
    client: TestClient, live_server
) -> None:
    """The issue's stall: 10 MB of 5 M ids. It is refused unparsed, with Content-Length and
    chunked (slowly at first), while this thread times ``/health`` on the same real server."""
    body = b'{"user_id": 3, "candidates": [' + b",".join([b"1"] * 5_000_000) + b"]}"
    assert len(body) > 10_000_000

    def chunked() -> Iterator[bytes]:
        """No Content-Length, so the server must count; a slow start (100 KB, under the
        limit, over ~1 s) keeps the upload in flight while /health is timed."""
        trickle = 100_000
        for start in range(0, trickle, 2_000):
            yield body[start : start + 2_000]
            time.sleep(0.02)
        for start in range(trickle, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    with live_server(client.app) as url:
        for content in (body, chunked()):
            answer: dict[str, Any] = {}

            def upload(content=content, answer=answer) -> None:
                answer["r"] = httpx.post(
                    f"{url}/rank",
                    content=content,
                    headers={"content-type": "application/json"},
                    timeout=120,
                )

            thread = threading.Thread(target=upload)
            thread.start()
            waits = []
            while thread.is_alive() or len(waits) < 3:
                t0 = time.perf_counter()
                assert httpx.get(f"{url}/health", timeout=30).status_code == 200
                waits.append(time.perf_counter() - t0)
            thread.join()
            assert max(waits) < 1.0, f"/health waited {max(waits):.2f} s"
            assert len(waits) >= 3
            r = answer["r"]
            assert r.status_code == 413, r.text[:300]
            assert f"at most {MAX_BODY_BYTES:,} bytes" in r.json()["detail"]
        assert httpx.get(f"{url}/health").json()["max_body_bytes"] == MAX_BODY_BYTES
        # the limit is configurable, and a body at the limit is parsed as usual
        small = TestClient(create_app(client.app.state.holder, FakeFeatures(), max_body_bytes=64))
        assert small.post("/rank", json={"user_id": 3, "candidates": [1] * 40}).status_code == 413
        assert small.post("/rank", json={"user_id": 3}).status_code == 200
