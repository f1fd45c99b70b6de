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
  :class:`~liverank.features.store.RoomStatsSource` (``room_stats``) and, with a forecaster,
  LiveForesighter's forecast of the next windows
  (:mod:`liverank.serve.web`);
* ``GET /``: the web page (``static/index.html``, :mod:`liverank.serve.web`).

Bad input (issue #12, :mod:`liverank.serve.http_guard`): every numeric field is bounded (ids
and ``ts`` fit int64), so NaN, Infinity, 1e309 or 2**63 are a 422 naming the field; a body over
``max_body_bytes`` is a 413 before it is parsed; ``POST /rank`` reads its raw body on the event
loop and parses, validates, ranks and serialises it in the thread pool, so no request holds the
event loop (``/health`` answers while a large body is refused or a model runs).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from liverank.errors import LiverankError
from liverank.features.store import RoomStatsSource
from liverank.foresight.products import ProductForecaster
from liverank.foresight.statistics import StatisticForecaster
from liverank.serve.http_guard import INT64_MAX, BodySizeLimit, validation_details
from liverank.serve.model_holder import ModelHolder
from liverank.serve.web import add_web_routes

log = logging.getLogger(__name__)

MAX_CANDIDATES = 5_000
#: default request-body limit: MAX_CANDIDATES ids of up to 19 digits with their separators
#: (24 bytes each, room for spaces), plus 16 KiB for the other fields
MAX_BODY_BYTES = 24 * MAX_CANDIDATES + 16_384


@dataclass(frozen=True)
class DefaultTime:
    """The request time used when a request gives none, and why that one."""

    ts: int  # epoch ms
    source: str  # "watermark", "last_on_air" or "clock"
    note: str  # one line for /health


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

    def default_time(self) -> DefaultTime:
        """The request time of a request without ``ts`` (``info["ts"]`` of :meth:`assemble`)."""
        ...


class RankRequest(BaseModel):
    """``POST /rank`` body."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=1, le=INT64_MAX, description="the user to rank for")
    candidates: list[int] | None = Field(
        None,
        max_length=MAX_CANDIDATES,
        description="room ids to rank (1 .. 2**63-1); default: every room on air at ts",
    )
    ts: int | None = Field(
        None,
        ge=0,
        le=INT64_MAX,
        description="epoch ms of the request; default: the service's default time (/health)",
    )
    top_k: int | None = Field(
        None, ge=1, le=MAX_CANDIDATES, description="return only the best k rooms"
    )
    context: dict[str, Any] = Field(default_factory=dict, description="free-form, logged")

    @field_validator("candidates")
    @classmethod
    def _ids(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("candidates must not be empty (omit it to rank every room on air)")
        bad = [x for x in v if not 1 <= x <= INT64_MAX]
        if bad:
            shown = [x if x.bit_length() <= 128 else "<huge>" for x in bad[:5]]
            raise ValueError(f"room ids must be between 1 and 2**63-1, got {shown}")
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
    ts_source: str = Field(
        description="where ts came from: request, watermark (the feature store's newest "
        "event), last_on_air (the last time before the watermark with rooms on air) or clock"
    )
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
    holder: ModelHolder,
    features: FeatureService,
    room_stats: RoomStatsSource | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    forecaster: StatisticForecaster | None = None,
    product_forecaster: ProductForecaster | None = None,
) -> FastAPI:
    """The ranking service over ``holder`` and ``features`` (module doc); ``room_stats``
    serves ``GET /rooms/{live_id}/forecast`` (None: that endpoint answers 503); a request body
    over ``max_body_bytes`` is a 413; ``forecaster`` adds LiveForesighter's forecast there and
    ``product_forecaster`` the room's next product categories."""
    app = FastAPI(title="liverank ranking service", version="1")
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    metrics = _Metrics()
    # One forward pass at a time: concurrent passes from the server's thread pool only
    # oversubscribe the CPU cores; waiting requests queue here instead (benchmarks/
    # serve_latency.py at concurrency 8: p50 287 -> 252 ms when this lock was added).
    model_lock = threading.Lock()
    app.state.holder, app.state.features, app.state.metrics = holder, features, metrics

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(exc.errors())}, status_code=422)

    @app.post(
        "/rank",
        response_model=RankResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RankRequest.model_json_schema()}},
            }
        },
        responses={413: {"description": f"body over the limit ({max_body_bytes} bytes)"}},
    )
    async def rank(request: Request) -> Response:
        # only the bytes are read here (capped by BodySizeLimit); parsing, validation, the
        # model and the JSON response run in the thread pool, off the event loop
        body = await request.body()
        return await run_in_threadpool(rank_body, body)

    def rank_body(body: bytes) -> Response:
        try:
            req = RankRequest.model_validate_json(body)
        except ValidationError as exc:
            metrics.requests.labels("bad_request").inc()
            detail = validation_details(exc.errors(include_url=False), ("body",))
            return JSONResponse({"detail": detail}, status_code=422)
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
        items = ranked_items(info, order, score.numpy(), {t: v.numpy() for t, v in probs.items()})
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

    # optional on a FeatureService: the feature side's own fields (e.g. the graph store's build)
    feature_health = getattr(features, "health", dict)

    @app.get("/health")
    def health() -> dict[str, Any]:
        default = features.default_time()
        return (
            holder.health()
            | {
                "feature_watermark_ts": features.watermark_ts(),
                "default_ts": default.ts,
                "default_ts_source": default.source,
                "default_ts_note": default.note,
                "max_body_bytes": max_body_bytes,
            }
            | feature_health()
        )

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.version.clear()
        if holder.version is not None:
            metrics.version.labels(holder.name, holder.version).set(1)
        wm = features.watermark_ts()
        if wm is not None:
            metrics.lag.set(max(0.0, time.time() - wm / 1e3))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_web_routes(
        app, room_stats, lambda: features.default_time().ts, forecaster, product_forecaster
    )
    return app


def ranked_items(
    info: dict[str, Any],
    order: np.ndarray,
    score: np.ndarray,
    probs: dict[str, np.ndarray],
) -> list[dict[str, Any]]:
    """The response's items (:class:`RankedRoom` fields) for the candidates ``order [K]``, best
    first, as plain dicts built column by column: ``score [C]``, ``probs`` task -> ``[C]``.

    One ``tolist`` per column instead of a pydantic model and ``float(v[i])`` per room and task
    (0.75 -> ~0.2 ms for 200 rooms and 6 tasks); the values are the same Python floats and ints.
    """
    tasks = list(probs)  # a ranker has >= 1 task
    task_values = zip(*(probs[t][order].tolist() for t in tasks), strict=True)  # [K] tuples
    return [
        {
            "live_id": i,
            "score": s,
            "probs": dict(zip(tasks, p, strict=True)),
            "known": k,
            "on_air": a,
        }
        for i, s, p, k, a in zip(
            np.asarray(info["live_ids"])[order].tolist(),
            score[order].tolist(),
            task_values,
            np.asarray(info["room_known"], dtype=bool)[order].tolist(),
            np.asarray(info["on_air"], dtype=bool)[order].tolist(),
            strict=True,
        )
    ]


def _response(served, info: dict[str, Any], items: list[dict[str, Any]], timings) -> Response:
    """The JSON response of :class:`RankResponse`'s schema, serialised here (in the thread
    pool) by pydantic's serialiser from plain data, not through a model per room
    (``tests/serve/test_service.py`` validates it against :class:`RankResponse`)."""
    body = {
        "model": served.name,
        "model_version": served.version,
        "runtime": served.runtime,
        "user_known": bool(info["user_known"]),
        "ts": int(info["ts"]),
        "ts_source": str(info.get("ts_source", "request")),
        "feature_freshness_ms": info.get("freshness_ms"),
        "items": items,
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
    }
    return Response(to_json(body), media_type="application/json")
