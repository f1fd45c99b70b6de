"""The room history endpoint and the web page at ``/``, the page in a real headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from liverank.data.io import read_table
from liverank.features.store import RoomStatsStore
from liverank.foresight.products import ProductConfig, ProductForecaster
from liverank.foresight.statistics import ForecastConfig, StatisticForecaster
from liverank.models.layers.forecast import ProductTransformer, StatisticTransformer
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.app import DefaultTime, create_app
from liverank.serve.model_holder import ModelHolder
from liverank.serve.service import room_stats_as_of
from liverank.serve.web import FORECAST_NOTE, add_web_routes
from liverank.stream.room_stats import ROOM_STATS, WINDOW_MS, room_stats
from liverank.train.registry import ModelRegistry

FM = synthetic_feature_map()


class FakeFeatures:
    """Synthetic feature rows for the given rooms (default: ``on_air``) at ``now``."""

    def __init__(self, on_air: list[int], now: int) -> None:
        self.rows = synthetic_batches(FM, 1, 64, seed=5)[0]
        self.on_air, self.now = on_air, now

    def assemble(self, user_id: int, live_ids: list[int] | None, ts: int | None):
        ids = np.array(live_ids if live_ids is not None else self.on_air, dtype=np.int64)
        info: dict[str, Any] = {
            "live_ids": ids,
            "user_known": True,
            "room_known": np.ones(len(ids), dtype=bool),
            "on_air": np.ones(len(ids), dtype=bool),
            "ts": ts or self.now,
            "freshness_ms": 0,
        }
        return {k: v[: len(ids)] for k, v in self.rows.items()}, info

    def watermark_ts(self) -> int | None:
        return self.now

    def default_time(self) -> DefaultTime:
        return DefaultTime(self.now, "watermark", "the feature watermark")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny simulated dataset cut at a mid-data impression, an mlp model, the app."""
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("web")
    simulate(SimConfig.preset("tiny", seed=0), root / "data", progress=False)
    imp = read_table(root / "data", "live_impressions").sort("ts")
    as_of = int(imp["ts"][len(imp) // 2])
    rooms = read_table(root / "data", "rooms")
    on_air = rooms.filter((pl.col("start_ts") <= as_of) & (pl.col("end_ts") > as_of))
    on_air_ids = on_air["live_id"].to_list()[:40]
    torch.manual_seed(0)
    Ranker(FM, get_config("mlp")).save(root / "m.pt")
    reg = ModelRegistry(root / "reg")
    reg.publish("mlp", root / "m.pt")
    holder = ModelHolder(reg.root, "mlp", FM)
    holder.refresh()
    stats = room_stats_as_of(root / "data", as_of)
    cfg = ForecastConfig(window=10, horizon=3, dim=8, layers=1)
    net = StatisticTransformer(len(ROOM_STATS), 10, 3, dim=8, layers=1)
    forecaster = StatisticForecaster(net, np.ones(len(ROOM_STATS), np.float32), cfg)
    n_products = int(read_table(root / "data", "products")["product_id"].max()) + 1
    pcfg = ProductConfig(length=4, dim=8)
    sizes = (n_products, *pcfg.categories)
    products = ProductForecaster(ProductTransformer(sizes, 4, 8, 1), pcfg, sizes)
    app = create_app(
        holder,
        FakeFeatures(on_air_ids, as_of),
        stats,
        forecaster=forecaster,
        product_forecaster=products,
    )
    shop = [r for r in on_air["live_id"].to_list() if stats.products(r, as_of, 4)[0][-1, 0] > 0]
    assert shop, "no room on air in the tiny world has shown a product before as_of"
    return {
        "shop_room": shop[0],
        "products": products,
        "data": root / "data",
        "as_of": as_of,
        "on_air": on_air_ids,
        "app": app,
        "stats": stats,
        "forecaster": forecaster,
    }


def test_history_matches_the_batch_room_stats_before_as_of(world: dict[str, Any]) -> None:
    c = TestClient(world["app"])
    as_of, live_id = world["as_of"], world["on_air"][0]
    r = c.get(f"/rooms/{live_id}/forecast", params={"n": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["as_of_ts"] == as_of and body["window_ms"] == WINDOW_MS
    starts = body["window_start"]
    assert len(starts) == 30 and starts[-1] + WINDOW_MS <= as_of < starts[-1] + 2 * WINDOW_MS
    assert np.all(np.diff(starts) == WINDOW_MS)
    # reference: the batch statistics over the events strictly before as_of
    data = world["data"]
    ref = room_stats(
        read_table(data, "rooms"),
        read_table(data, "live_impressions").filter(pl.col("ts") < as_of),
        read_table(data, "live_events").filter(pl.col("ts") < as_of),
    ).filter(pl.col("live_id") == live_id)
    got = pl.DataFrame({"window_start": starts, **body["stats"]})
    joined = got.join(ref, on="window_start", how="left", suffix="_ref")
    for s in ROOM_STATS:
        expected = joined[f"{s}_ref"].fill_null(0).cast(pl.Float64).to_numpy()
        np.testing.assert_allclose(joined[s].to_numpy(), expected, err_msg=s)
    assert sum(body["stats"]["exposure"]) > 0  # a room on air at a busy time was shown
    # the forecast: the forecaster on the room's last T = 10 windows, clamped at 0, for the
    # 3 windows after the last complete one
    hist, _ = world["stats"].history(live_id, as_of, 10)  # [10, N]
    want = world["forecaster"].predict(np.ascontiguousarray(hist.T[None], dtype=np.float32))[0][0]
    got = np.array([body["forecast"][s] for s in ROOM_STATS])  # [N, 3]
    np.testing.assert_allclose(got, np.maximum(want, 0.0), rtol=1e-5, atol=1e-6)
    assert body["forecast_window_start"] == [starts[-1] + (j + 1) * WINDOW_MS for j in range(3)]
    assert body["forecast_note"].startswith("LiveForesighter: the next 3 windows")


def test_next_categories_of_a_shopping_room(world: dict[str, Any]) -> None:
    """The room's products before as_of (the store's, most recent last) and the next-product
    model's five most likely finest categories; a room with no product gets none."""
    c = TestClient(world["app"])
    room, as_of = world["shop_room"], world["as_of"]
    body = c.get(f"/rooms/{room}/forecast", params={"n": 5}).json()
    seq, _ = world["stats"].products(room, as_of, 4)  # [4, 4]
    assert body["recent_products"] == [r for r in seq.tolist() if r[0] > 0]
    prob = world["products"].probabilities(seq[None])[0]
    best = np.argsort(-prob, kind="stable")[:5]
    assert [n["cat3"] for n in body["next_categories"]] == best.tolist()
    np.testing.assert_allclose([n["probability"] for n in body["next_categories"]], prob[best])
    assert body["next_note"].startswith("LiveForesighter: the next product's")
    quiet = [r for r in world["on_air"] if world["stats"].products(r, as_of, 4)[0][-1, 0] == 0]
    body = c.get(f"/rooms/{quiet[0]}/forecast", params={"n": 5}).json()
    assert body["recent_products"] == [] and body["next_categories"] == []
    assert "no product yet" in body["next_note"]


def test_history_errors(world: dict[str, Any], tmp_path: Path) -> None:
    c = TestClient(world["app"])
    r = c.get("/rooms/987654321/forecast")
    assert r.status_code == 404 and "987654321" in r.json()["detail"]
    assert c.get(f"/rooms/{world['on_air'][0]}/forecast", params={"n": 0}).status_code == 422
    no_stats = TestClient(create_app(world["app"].state.holder, FakeFeatures([1], 0)))
    r = no_stats.get("/rooms/1/forecast")
    assert r.status_code == 503 and "not loaded" in r.json()["detail"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"/rooms/{2**63}/forecast", "live_id"),
        ("/rooms/0/forecast", "live_id"),
        (f"/rooms/1/forecast?ts={2**63}", "ts"),
        ("/rooms/1/forecast?ts=NaN", "ts"),
        ("/rooms/1/forecast?ts=1e309", "ts"),
        ("/rooms/1/forecast?n=Infinity", "n"),
    ],
)
def test_history_out_of_range_numbers_are_a_422(
    world: dict[str, Any], query: str, field: str
) -> None:
    r = TestClient(world["app"]).get(query)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field, r.text


def test_history_at_the_largest_int64_time(world: dict[str, Any]) -> None:
    c = TestClient(world["app"])
    r = c.get(f"/rooms/{world['on_air'][0]}/forecast", params={"n": 3, "ts": 2**63 - 1})
    assert r.status_code == 200 and r.json()["as_of_ts"] == 2**63 - 1
    assert c.get(f"/rooms/{2**63 - 1}/forecast").status_code == 404  # unknown room


def test_history_explicit_ts_and_store_cut() -> None:
    """A planted room: 3 impressions in window 2, nothing at or after as_of is seen."""
    t0 = 1_000 * WINDOW_MS
    rooms = pl.DataFrame({"live_id": [7], "start_ts": [t0], "end_ts": [t0 + 10 * WINDOW_MS]})
    imp = pl.DataFrame({"ts": [t0 + 2 * WINDOW_MS + d for d in (0, 5, 29_999)], "live_id": [7] * 3})
    ev = pl.DataFrame(
        schema={
            "ts": pl.Int64,
            "user_id": pl.Int64,
            "live_id": pl.Int64,
            "event": pl.Utf8,
            "value": pl.Float64,
        }
    )
    store = RoomStatsStore.from_tables(rooms, imp, ev)
    app = FastAPI()
    add_web_routes(app, store, lambda: None)
    c = TestClient(app)
    body = c.get("/rooms/7/forecast", params={"n": 4, "ts": t0 + 3 * WINDOW_MS}).json()
    assert body["window_start"] == [t0 + (k - 1) * WINDOW_MS for k in range(4)]
    assert body["stats"]["exposure"] == [0.0, 0.0, 0.0, 3.0]
    body = c.get("/rooms/7/forecast", params={"n": 4, "ts": t0 + 3 * WINDOW_MS - 1}).json()
    assert body["stats"]["exposure"] == [0.0, 0.0, 0.0, 0.0]  # window 2 still open
    # no forecaster in this app: history only, and the note says how to get a forecast
    assert body["forecast"] is None and body["forecast_note"] == FORECAST_NOTE


# ------------------------------------------------------------------------- the browser page
@pytest.fixture()
def server(world: dict[str, Any], live_server) -> Iterator[str]:
    with live_server(world["app"]) as url:
        yield url


def test_the_page_is_served_without_external_resources(world: dict[str, Any]) -> None:
    html = TestClient(world["app"]).get("/").text
    assert "<script>" in html and "/rank" in html and "/forecast" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no CDN: offline machines


def test_page_in_headless_chromium(
    server: str, world: dict[str, Any], tmp_path: Path, headless_chromium
) -> None:
    room = world["shop_room"]
    url = f"{server}/?user=5&room={room}&n=60"
    dom, png = headless_chromium(
        url, tmp_path, size="1000,1400", timeout=60, extra=("--virtual-time-budget=5000",)
    )
    # the ranked rows, in the order POST /rank returns them
    expected = TestClient(world["app"]).post("/rank", json={"user_id": 5, "top_k": 20}).json()
    rows = re.findall(r'<tr class="rank-row[^"]*" data-live-id="(\d+)"', dom)
    assert rows == [str(it["live_id"]) for it in expected["items"]], dom[:3000]
    assert "p_ctr" in dom and f"{expected['items'][0]['probs']['ctr']:.4f}" in dom
    assert "rooms on air at " in dom  # the request time the ranking is for
    # the history plot: one polyline point per window; the forecast continues it (the last
    # complete window, then the 3 forecast windows), and the note names the forecaster
    points = re.search(r'id="history-line"[^>]*points="([^"]*)"', dom)
    assert points is not None, dom[-3000:]
    assert len(points.group(1).split()) == 60
    ahead = re.search(r'id="forecast-line"[^>]*points="([^"]*)"', dom)
    assert ahead is not None, dom[-3000:]
    hist_pts, ahead_pts = points.group(1).split(), ahead.group(1).split()
    assert len(ahead_pts) == 4 and ahead_pts[0] == hist_pts[-1]
    assert float(ahead_pts[-1].split(",")[0]) > float(hist_pts[-1].split(",")[0])
    assert "LiveForesighter: the next 3 windows" in dom
    assert "next category, most likely first: " in dom  # the next-product model's line
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
