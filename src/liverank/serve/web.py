"""The web page at ``/`` and the room history endpoint ``GET /rooms/{live_id}/forecast``.

* ``GET /`` serves ``static/index.html``: vanilla JavaScript, no external resources. A user id
  -> ``POST /rank`` -> a table of the ranked rooms on air with their task probabilities; a room
  id -> ``GET /rooms/{id}/forecast`` -> an inline SVG plot of one statistic's history. The
  page reads ``?user=`` / ``?room=`` query parameters and renders them on load.
* ``GET /rooms/{live_id}/forecast?n=120&ts=...``: the room's last ``n`` complete 30 s windows
  (ROOM_STATS, :mod:`liverank.stream.room_stats`) before ``ts`` (default: the service's default
  request time, the one ``POST /rank`` uses, see ``/health``), read point-in-time from a
  :class:`~liverank.features.store.RoomStatsSource`, and, when the service has a forecaster
  (``liverank serve --forecaster DIR``, a ``liverank foresight train`` output), LiveForesighter's
  forecast of the next ``K`` windows from the room's last ``T`` (Eq. 3; clamped at 0, the
  statistics are counts and sums) with their window starts. Without one ``"forecast": null``
  and ``forecast_note`` says how to get it. With a next-product model (``liverank serve
  --product-forecaster DIR``) also the room's products so far (``recent_products``, most recent
  last) and its most likely next finest categories (``next_categories``, Eq. 4; empty for a
  room that has shown no product). Unknown room: 404; ``live_id`` outside
  1 .. 2**63-1 or ``ts`` outside 0 .. 2**63-1: 422.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from liverank.features.store import RoomStatsSource
from liverank.foresight.products import ProductForecaster, next_categories
from liverank.foresight.statistics import StatisticForecaster, forecast_room
from liverank.serve.http_guard import INT64_MAX
from liverank.stream.room_stats import WINDOW_MS

STATIC_DIR = Path(__file__).parent / "static"
FORECAST_NOTE = (
    "no forecaster loaded: history only (start liverank serve with --forecaster DIR, "
    "a `liverank foresight train` output)"
)
NEXT_NOTE = (
    "no next-product model loaded (start liverank serve with --product-forecaster DIR, a "
    "`liverank foresight train --config configs/foresight/products.yaml` output)"
)
MAX_WINDOWS = 2_880  # one day of 30 s windows


class NextCategory(BaseModel):
    cat3: int = Field(description="finest product category")
    probability: float


class RoomHistory(BaseModel):
    """``GET /rooms/{live_id}/forecast`` response."""

    live_id: int
    as_of_ts: int = Field(description="epoch ms; only windows ending at or before it")
    window_ms: int
    window_start: list[int] = Field(description="epoch ms of each window, oldest first")
    stats: dict[str, list[float]] = Field(description="statistic -> [n] values per window")
    forecast: dict[str, list[float]] | None = Field(
        None, description="statistic -> [K] forecast of the next windows (null: no forecaster)"
    )
    forecast_window_start: list[int] | None = Field(
        None, description="epoch ms of each forecast window"
    )
    forecast_note: str = FORECAST_NOTE
    recent_products: list[list[int]] | None = Field(
        None, description="[product, cat1, cat2, cat3] shown so far, most recent last"
    )
    next_categories: list[NextCategory] | None = Field(
        None, description="most likely next finest categories (null: no next-product model)"
    )
    next_note: str = NEXT_NOTE


def add_web_routes(
    app: FastAPI,
    room_stats: RoomStatsSource | None,
    now_ts: Callable[[], int | None],
    forecaster: StatisticForecaster | None = None,
    product_forecaster: ProductForecaster | None = None,
) -> None:
    """Register ``GET /`` and ``GET /rooms/{live_id}/forecast`` on ``app``; ``now_ts`` gives
    the default history time (the service's default request time; None: the wall clock);
    ``forecaster`` adds the forecast, ``product_forecaster`` the next categories."""
    app.state.room_stats = room_stats
    app.state.forecaster = forecaster
    app.state.product_forecaster = product_forecaster

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/rooms/{live_id}/forecast", response_model=RoomHistory)
    def forecast(
        live_id: int = PathParam(ge=1, le=INT64_MAX),
        n: int = Query(120, ge=1, le=MAX_WINDOWS, description="number of 30 s windows"),
        ts: int | None = Query(
            None, ge=0, le=INT64_MAX, description="epoch ms; default: the service's time"
        ),
    ) -> RoomHistory:
        if room_stats is None:
            raise HTTPException(503, "room statistics are not loaded in this service")
        if ts is None:
            wm = now_ts()
            ts = int(wm) if wm is not None else int(time.time() * 1000)
        values, known = room_stats.history(live_id, ts, n)  # [n, S], bool
        if not known:
            raise HTTPException(404, f"unknown room live_id={live_id}: not in the room store")
        k_last = ts // WINDOW_MS - 1  # last window complete at ts (features/store.py)
        starts = (np.arange(k_last - n + 1, k_last + 1, dtype=np.int64) * WINDOW_MS).tolist()
        out = RoomHistory(
            live_id=live_id,
            as_of_ts=ts,
            window_ms=WINDOW_MS,
            window_start=starts,
            stats={s: values[:, j].tolist() for j, s in enumerate(room_stats.stat_names)},
        )
        if forecaster is not None:
            view = forecast_room(forecaster, room_stats, live_id, ts)
            cfg = forecaster.cfg
            out.forecast = {s: [max(0.0, x) for x in v] for s, v in view["forecast"].items()}
            out.forecast_window_start = [w * WINDOW_MS for w in view["forecast_windows"]]
            out.forecast_note = (
                f"LiveForesighter: the next {cfg.horizon} windows forecast from the last "
                f"{cfg.window} (clamped at 0)"
            )
        if product_forecaster is not None:
            nxt = next_categories(product_forecaster, room_stats, live_id, ts)
            out.recent_products = nxt["recent"]
            out.next_categories = [NextCategory(**n) for n in nxt["next"]]
            out.next_note = (
                f"LiveForesighter: the next product's finest category from the room's last "
                f"{product_forecaster.cfg.length} products"
                if nxt["recent"]
                else "the room has shown no product yet: no next category"
            )
        return out
