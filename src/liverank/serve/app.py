"""The FastAPI ranking service (issue #4, ARCHITECTURE section 7).

``create_app(holder, features)`` wires

* a :class:`~liverank.serve.model_holder.ModelHolder` (the hot-reloaded model), and
* a :class:`FeatureService`: builds the model's feature batch for (user, candidate rooms, time)
  with the same feature code as the sample builder (``liverank.serve.feature_store``),

into the endpoints

* ``POST /rank``: validated :class:`RankRequest` -> :class:`RankResponse` (rooms sorted by the
  model's ranking score, Moment&Cross eq. 4 with its config's exponents; per-task
  probabilities; model version; feature freshness; cold-start flags). Invalid requests get a
  422 whose body names the field; unknown users / rooms are served with cold-start features
  and flagged, never an error;
* ``GET /health`` and ``GET /metrics`` (Prometheus text: requests by outcome, latency
  histogram by stage, model version, feature lag);
* ``GET /rooms/{live_id}/forecast``: a room's 30 s statistic history from a
  :class:`~liverank.features.store.RoomStatsSource` (``room_stats``), forecast still null
  (:mod:`liverank.serve.web`);
* ``GET /``: the web page (``static/index.html``, :mod:`liverank.serve.web`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from liverank.errors import LiverankError
from liverank.features.store import RoomStatsSource
from liverank.serve.model_holder import ModelHolder
from liverank.serve.web import add_web_routes

log = logging.getLogger(__name__)

MAX_CANDIDATES = 5_000


class FeatureService(Protocol):
    """What the service needs from the online features."""

    def assemble(
        self, user_id: int, live_ids: list[int] | None, ts: int | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The feature batch ``[C]`` for ranking ``live_ids`` (None: every room on air at
        ``ts``) for ``user_id`` at ``ts`` (None: the store's current time), and ``info`` with
        ``live_ids`` (np.ndarray [C]), ``user_known`` (bool), ``room_known`` and ``on_air``
        (bool arrays [C]), ``ts`` (int) and ``freshness_ms`` (int | None)."""
        ...

    def watermark_ts(self) -> int | None: ...


class RankRequest(BaseModel):
    """``POST /rank`` body."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=1, description="the user to rank for")
    candidates: list[int] | None = Field(
        None,
        max_length=MAX_CANDIDATES,
        description="room ids to rank; default: every room on air at ts",
    )
    ts: int | None = Field(None, ge=0, description="epoch ms of the request; default: now")
    top_k: int | None = Field(None, ge=1, description="return only the best k rooms")
    context: dict[str, Any] = Field(default_factory=dict, description="free-form, logged")

    @field_validator("candidates")
    @classmethod
    def _ids(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("candidates must not be empty (omit it to rank every room on air)")
        bad = [x for x in v if x < 1]
        if bad:
            raise ValueError(f"room ids must be >= 1, got {bad[:5]}")
        return v


class RankedRoom(BaseModel):
    live_id: int
    score: float
    probs: dict[str, float]
    known: bool = Field(description="False: unknown room, cold-start features")
    on_air: bool


class RankResponse(BaseModel):
    model: str
    model_version: str
    runtime: str = Field(description="what ran the forward pass: eager or torchscript")
    user_known: bool
    ts: int
    feature_freshness_ms: int | None = Field(
        description="request ts minus the newest event the features have seen"
    )
    items: list[RankedRoom]
    timings_ms: dict[str, float]


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "liverank_rank_requests",
            "rank requests by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "liverank_rank_seconds",
            "rank latency by stage",
            ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.version = Gauge(
            "liverank_model_info",
            "served model version",
            ["model", "version"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "liverank_feature_lag_seconds",
            "now minus the newest event seen by the feature store",
            registry=self.registry,
        )


def create_app(
    holder: ModelHolder, features: FeatureService, room_stats: RoomStatsSource | None = None
) -> FastAPI:
    """The ranking service over ``holder`` and ``features`` (module doc); ``room_stats``
    serves ``GET /rooms/{live_id}/forecast`` (None: that endpoint answers 503)."""
    app = FastAPI(title="liverank ranking service", version="1")
    metrics = _Metrics()
    # One forward pass at a time: concurrent passes from the server's thread pool only
    # oversubscribe the CPU cores; waiting requests queue here instead (benchmarks/
    # serve_latency.py at concurrency 8: p50 287 -> 252 ms when this lock was added).
    model_lock = threading.Lock()
    app.state.holder, app.state.features, app.state.metrics = holder, features, metrics

    @app.post("/rank", response_model=RankResponse)
    def rank(req: RankRequest) -> RankResponse:
        t0 = time.perf_counter()
        try:
            served = holder.current()
        except LiverankError as exc:
            metrics.requests.labels("no_model").inc()
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        try:
            batch, info = features.assemble(req.user_id, req.candidates, req.ts)
        except LiverankError as exc:
            metrics.requests.labels("bad_request").inc()
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        t1 = time.perf_counter()
        if len(info["live_ids"]) == 0:
            metrics.requests.labels("ok").inc()
            return _response(served, info, [], {"features": (t1 - t0) * 1e3})
        with model_lock, torch.inference_mode():
            run = served.run  # eager or TorchScript (serve/runtime.py)
            probs = run.predict_proba(batch)
            score = run.score_from_proba(probs)  # [C], no second forward pass
        t2 = time.perf_counter()
        order = torch.argsort(score, descending=True).numpy()
        if req.top_k is not None:
            order = order[: req.top_k]
        p = {t: v.numpy() for t, v in probs.items()}
        s = score.numpy()
        items = [
            RankedRoom(
                live_id=int(info["live_ids"][i]),
                score=float(s[i]),
                probs={t: float(v[i]) for t, v in p.items()},
                known=bool(info["room_known"][i]),
                on_air=bool(info["on_air"][i]),
            )
            for i in order
        ]
        t3 = time.perf_counter()
        timings = {
            "features": (t1 - t0) * 1e3,
            "model": (t2 - t1) * 1e3,
            "response": (t3 - t2) * 1e3,
        }
        for stage, ms in timings.items():
            metrics.latency.labels(stage).observe(ms / 1e3)
        metrics.latency.labels("total").observe(t3 - t0)
        metrics.requests.labels("ok").inc()
        log.debug("rank user=%d context=%s", req.user_id, req.context)
        return _response(served, info, items, timings)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok" if holder.version is not None else "no_model",
            "model": holder.name,
            "model_version": holder.version,
            "runtime": None if holder.version is None else holder.current().runtime,
            "rejected_versions": holder.rejected,
            "feature_watermark_ts": features.watermark_ts(),
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.version.clear()
        if holder.version is not None:
            metrics.version.labels(holder.name, holder.version).set(1)
        wm = features.watermark_ts()
        if wm is not None:
            metrics.lag.set(max(0.0, time.time() - wm / 1e3))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_web_routes(app, room_stats, features.watermark_ts)
    return app


def _response(served, info: dict[str, Any], items: list[RankedRoom], timings) -> RankResponse:
    return RankResponse(
        model=served.name,
        model_version=served.version,
        runtime=served.runtime,
        user_known=bool(info["user_known"]),
        ts=int(info["ts"]),
        feature_freshness_ms=info.get("freshness_ms"),
        items=items,
        timings_ms={k: round(v, 3) for k, v in timings.items()},
    )
