"""The service end to end on the simulated platform: store replayed from the data, model from
the registry, POST /rank over real features."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from liverank.cli import build_parser
from liverank.data.io import read_table
from liverank.data.samples import build_samples
from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker
from liverank.models.zoo import get_config
from liverank.serve.app import RankedRoom, RankResponse, ranked_items
from liverank.serve.service import build_service
from liverank.train.registry import ModelRegistry


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("serve")
    simulate(SimConfig.preset("tiny", seed=0), root / "data", progress=False)
    build_samples(root / "data", root / "samples", seq_len=10, progress=False)
    fmap = FeatureMap.load(root / "samples")
    Ranker(fmap, get_config("ple")).save(root / "m.pt")
    ModelRegistry(root / "reg").publish("ple", root / "m.pt")
    return root / "data", root / "reg"


def test_rank_a_known_user_over_the_rooms_on_air(setup: tuple[Path, Path]) -> None:
    data, reg = setup
    imp = read_table(data, "live_impressions").sort("ts")
    row = imp.row(len(imp) // 2, named=True)
    app = build_service(reg, "ple", data, as_of_ts=row["ts"], watch_interval_s=60)
    c = TestClient(app)
    r = c.post("/rank", json={"user_id": row["user_id"], "ts": row["ts"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_known"] and body["model_version"] == "v0001"
    assert len(body["items"]) > 0 and all(it["on_air"] for it in body["items"])
    assert row["live_id"] in {it["live_id"] for it in body["items"]}  # the impressed room
    rooms = read_table(data, "rooms").filter(
        (pl.col("start_ts") <= row["ts"]) & (pl.col("end_ts") > row["ts"])
    )
    assert len(body["items"]) == len(rooms)
    # serialised from plain data (app.ranked_items), the body has RankResponse's exact schema
    parsed = RankResponse.model_validate_json(r.content)
    assert set(body) == set(RankResponse.model_fields)
    assert all(set(it) == set(RankedRoom.model_fields) for it in body["items"])
    assert parsed.model_dump(mode="json") == body
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    top = c.post("/rank", json={"user_id": row["user_id"], "ts": row["ts"], "top_k": 3}).json()
    assert [it["live_id"] for it in top["items"]] == [it["live_id"] for it in body["items"][:3]]
    # an unknown user and an unknown room are served with cold-start features, flagged
    r = c.post("/rank", json={"user_id": 10**9, "candidates": [row["live_id"], 10**9]})
    assert r.status_code == 200, r.text
    flags = {it["live_id"]: it["known"] for it in r.json()["items"]}
    assert r.json()["user_known"] is False and flags == {row["live_id"]: True, 10**9: False}
    app.state.holder.stop()


def test_torchscript_runtime_serves_what_eager_serves(setup: tuple[Path, Path]) -> None:
    """``auto`` serves PLE from its TorchScript trace; rankings and probabilities match eager."""
    data, reg = setup
    imp = read_table(data, "live_impressions").sort("ts")
    row = imp.row(len(imp) // 3, named=True)
    bodies = {}
    for runtime in ("auto", "eager"):
        app = build_service(
            reg, "ple", data, as_of_ts=row["ts"], watch_interval_s=60, runtime=runtime
        )
        r = TestClient(app).post("/rank", json={"user_id": row["user_id"], "ts": row["ts"]})
        app.state.holder.stop()
        assert r.status_code == 200, r.text
        bodies[runtime] = r.json()
    assert bodies["auto"]["runtime"] == "torchscript" and bodies["eager"]["runtime"] == "eager"
    got = {it["live_id"]: it for it in bodies["auto"]["items"]}
    want = {it["live_id"]: it for it in bodies["eager"]["items"]}
    assert set(got) == set(want) and len(got) > 1
    for live_id, it in want.items():
        assert got[live_id]["score"] == pytest.approx(it["score"], abs=1e-5)
        for task, p in it["probs"].items():
            assert got[live_id]["probs"][task] == pytest.approx(p, abs=1e-5)
    with pytest.raises(ConfigError, match="unknown runtime"):
        build_service(reg, "ple", data, runtime="onnx")


def test_serve_command_is_registered() -> None:
    args = build_parser().parse_args(["serve", "--registry", "r", "--data", "d"])
    assert args.model == "ple" and args.port == 8000 and args.runtime == "auto"


def test_requests_without_ts_default_to_a_time_with_rooms_on_air(
    setup: tuple[Path, Path],
) -> None:
    """Replayed to its end, the data has no room on air at the watermark: a request without
    ts is served at the last time rooms were on air, and says so (#12.4)."""
    data, reg = setup
    app = build_service(reg, "ple", data, watch_interval_s=60)
    try:
        c = TestClient(app)
        wm = app.state.features.watermark_ts()
        rooms = read_table(data, "rooms")
        assert not len(rooms.filter((pl.col("start_ts") <= wm) & (pl.col("end_ts") > wm)))
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["default_ts_source"] == "last_on_air"
        default = health["default_ts"]
        assert default == int(rooms.filter(pl.col("end_ts") <= wm)["end_ts"].max()) - 1
        assert str(wm) in health["default_ts_note"]
        user = int(read_table(data, "live_impressions")["user_id"][0])  # a known user
        body = c.post("/rank", json={"user_id": user}).json()
        assert body["ts"] == default and body["ts_source"] == "last_on_air"
        assert len(body["items"]) > 0 and body["user_known"] is True
        live_id = body["items"][0]["live_id"]
        assert c.get(f"/rooms/{live_id}/forecast").json()["as_of_ts"] == default
        # at a time when no room is on air the ranking is empty, and the user still known
        body = c.post("/rank", json={"user_id": user, "ts": wm}).json()
        assert body["items"] == [] and body["user_known"] is True
        assert body["ts_source"] == "request"
        assert c.post("/rank", json={"user_id": 10**9, "ts": wm}).json()["user_known"] is False
    finally:
        app.state.holder.stop()


def test_restart_with_a_corrupt_latest_serves_the_previous_version(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    """``liverank serve`` after a bad publish starts on v0001 and says why in /health."""
    data, reg = setup
    shutil.copytree(reg, tmp_path / "reg")
    (tmp_path / "bad.pt").write_bytes(b"truncated")
    ModelRegistry(tmp_path / "reg").publish("ple", tmp_path / "bad.pt")  # v0002, LATEST
    app = build_service(tmp_path / "reg", "ple", data, watch_interval_s=60)
    try:
        c = TestClient(app)
        health = c.get("/health").json()
        assert health["status"] == "degraded" and health["model_version"] == "v0001"
        assert health["registry_latest"] == "v0002"
        assert "LATEST names v0002" in health["degraded_reason"]
        assert "weights_only" not in str(health["rejected_versions"])
        r = c.post("/rank", json={"user_id": 1})
        assert r.status_code == 200 and r.json()["model_version"] == "v0001"
    finally:
        app.state.holder.stop()
    (tmp_path / "reg" / "ple" / "v0001" / "model.pt").write_bytes(b"also bad")
    with pytest.raises(ConfigError, match="no servable version of model 'ple'"):
        build_service(tmp_path / "reg", "ple", data, watch_interval_s=60)


def test_a_model_reading_room_sequences_needs_a_room_store() -> None:
    from liverank.errors import ConfigError
    from liverank.models.synthetic import synthetic_feature_map
    from liverank.serve.mmbee_features import MMBeeFeatures

    with pytest.raises(ConfigError, match="model 'fs' reads LiveForesighter's room sequences"):
        MMBeeFeatures(None, None).check(synthetic_feature_map(foresight=True), "fs")  # no store
    MMBeeFeatures(None, None).check(synthetic_feature_map(), "plain")


def test_ranked_items_equal_one_model_per_room() -> None:
    """The column-wise items are the values a RankedRoom per room gives (same floats, order)."""
    import numpy as np

    rng = np.random.default_rng(0)
    info = {
        "live_ids": np.array([11, 12, 13, 14], dtype=np.int64),
        "room_known": np.array([True, False, True, True]),
        "on_air": np.array([True, True, False, True]),
    }
    score = rng.random(4).astype(np.float32)
    probs = {"ctr": rng.random(4).astype(np.float32), "gtr": rng.random(4).astype(np.float32)}
    order = np.argsort(-score)[:3]
    want = [
        RankedRoom(
            live_id=int(info["live_ids"][i]),
            score=float(score[i]),
            probs={t: float(v[i]) for t, v in probs.items()},
            known=bool(info["room_known"][i]),
            on_air=bool(info["on_air"][i]),
        ).model_dump()
        for i in order
    ]
    assert ranked_items(info, order, score, probs) == want
