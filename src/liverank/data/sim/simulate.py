"""``simulate(config, out_dir)``: build the latent world, run the platform hour by hour, write
every canonical table + ``meta.json`` + the calibration report (ARCHITECTURE section 3).

Order of work: latent world and entities (users, authors, catalogue, videos, rooms with their
timelines, gifting graph, all requests) → for each hour: slates of the hour's requests, users'
live responses, short-video exposures, familiarity updates → per day: e-commerce events,
content segments, and the day's part of every event table → merge parts, meta.json, ground truth
(``sim_truth/``, for tests and diagnostics only) and the calibration report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from liverank.data import io
from liverank.data.schema import LIVE_EVENTS, VIDEO_EVENTS, DatasetMeta
from liverank.data.sim.calibration import TRUTH_DIR, CalibrationReport, calibrate
from liverank.data.sim.clock import DAY_MS, HOUR_MS, TICK_MS
from liverank.data.sim.config import SimConfig
from liverank.data.sim.familiarity import Familiarity
from liverank.data.sim.gifting import GiftGraph, make_gift_graph
from liverank.data.sim.live import LiveContext, LiveEvents, respond
from liverank.data.sim.population import Authors, Users, World, make_authors, make_users, make_world
from liverank.data.sim.products import Catalog, make_catalog, product_events
from liverank.data.sim.rng import stream
from liverank.data.sim.rooms import Rooms, make_rooms
from liverank.data.sim.segments import SegmentEncoder
from liverank.data.sim.slates import SURFACES, Requests, make_requests, serve_slates
from liverank.data.sim.video import TagChoice, Videos, make_videos, tag_cdf, watch
from liverank.data.sim.writer import EventSink, cleanup

log = logging.getLogger(__name__)


def simulate(config: SimConfig, out_dir: Path, progress: bool = True) -> CalibrationReport:
    """Generate the dataset of ``config`` into ``out_dir`` and return its calibration report.

    Writes every table of :data:`liverank.data.schema.TABLES`, ``meta.json``, ``calibration.md``
    and ``calibration.json``, and the latent ground truth under ``sim_truth/``. The output is a
    deterministic function of ``config`` (including its seed).
    """
    out = Path(out_dir)
    t_start = time.perf_counter()
    generate(config, out, progress)
    seconds = time.perf_counter() - t_start
    report = calibrate(out, config, seconds=seconds)
    (out / "calibration.md").write_text(report.to_markdown())
    (out / "calibration.json").write_text(report.to_json())
    log.info("calibration written: %s", "all targets met" if report.passed else
             f"missed {[m.name for m in report.failures]}")  # fmt: skip
    return report


def generate(config: SimConfig, out_dir: Path, progress: bool = True) -> dict[str, int]:
    """Write the tables, ``meta.json`` and ``sim_truth/`` of ``config`` into ``out_dir``
    (no calibration report); returns the row count of each event table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        counts = _generate(config, out, progress)
    finally:
        cleanup(out)
    log.info(
        "simulated '%s' (seed %d) in %.1f s into %s",
        config.size, config.seed, time.perf_counter() - t_start, out,
    )  # fmt: skip
    return counts


@dataclass(frozen=True)
class Platform:
    """The latent world and every entity of one simulated platform (before any behaviour)."""

    world: World
    authors: Authors
    users: Users
    catalog: Catalog
    videos: Videos
    rooms: Rooms
    gifts: GiftGraph
    requests: Requests


def build_platform(cfg: SimConfig) -> Platform:
    t0 = time.perf_counter()
    world = make_world(cfg)
    authors = make_authors(cfg, world)
    users = make_users(cfg, world)
    catalog = make_catalog(cfg, world)
    p = Platform(
        world, authors, users, catalog, make_videos(cfg, world, authors),
        make_rooms(cfg, authors, catalog), make_gift_graph(cfg, world, users, authors),
        make_requests(cfg, users),
    )  # fmt: skip
    log.info(
        "world: %d users, %d authors, %d rooms, %d videos, %d products, %d requests (%.1f s)",
        users.n, authors.n, p.rooms.n, len(p.videos.photo_id), len(catalog.product_id),
        len(p.requests.ts), time.perf_counter() - t0,
    )  # fmt: skip
    return p


def _generate(cfg: SimConfig, out: Path, progress: bool) -> dict[str, int]:
    p = build_platform(cfg)
    io.write_table(out, "users", p.users.table())
    io.write_table(out, "authors", p.authors.table())
    io.write_table(out, "rooms", p.rooms.table(p.authors.author_id))
    io.write_table(out, "videos", p.videos.table(p.authors.author_id))
    io.write_table(out, "products", p.catalog.table())
    io.write_table(out, "room_products", p.rooms.room_products(p.catalog.product_id))

    sinks = {
        "live_impressions": EventSink(out, "live_impressions", {"surface": SURFACES}),
        "live_events": EventSink(out, "live_events", {"event": LIVE_EVENTS}),
        "video_events": EventSink(out, "video_events", {"event": VIDEO_EVENTS}),
        "product_events": EventSink(out, "product_events"),
        "segments": EventSink(out, "segments"),
    }
    familiarity = Familiarity(p.authors.n)
    fav = p.gifts.favourite_keys  # users already follow their favourite authors
    familiarity.add(
        fav // p.authors.n, fav % p.authors.n, np.full(len(fav), cfg.favourite_familiarity)
    )
    ctx = LiveContext(cfg, p.users, p.authors, p.rooms, p.catalog, p.gifts, familiarity)
    encoder = SegmentEncoder(cfg, p.world, p.catalog)
    user_tags = tag_cdf(p.world, p.videos, p.users)
    columns = [TextColumn("simulating {task.description}"), BarColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{cfg.size} platform", total=cfg.n_days * 24)
        for day in range(cfg.n_days):
            day_start = cfg.start_ts + day * DAY_MS
            for hour in range(24):
                _run_hour(p, ctx, sinks, user_tags, day * 24 + hour)
                bar.advance(task)
            sinks["product_events"].add(product_events(cfg, p.catalog, p.users, day, day_start))
            sinks["segments"].add(encoder.encode(p.rooms, day_start, day_start + DAY_MS, day))
            for sink in sinks.values():
                sink.flush(day_start + DAY_MS)
    counts = {name: sink.close() for name, sink in sinks.items()}
    log.info("rows written: %s", counts)

    meta = DatasetMeta(
        name=f"sim-{cfg.size}-seed{cfg.seed}",
        start_ts=cfg.start_ts,
        end_ts=cfg.end_ts,
        long_view_ms=cfg.long_view_ms,
        segment_dim=cfg.segment_dim,
        source="simulator",
        extra={"seed": cfg.seed, "config": cfg.model_dump(mode="json")},
    )
    io.write_meta(out, meta)
    _write_truth(out / TRUTH_DIR, p.users, p.gifts, p.rooms, p.authors, p.catalog)
    return counts


def _run_hour(
    p: Platform,
    ctx: LiveContext,
    sinks: dict[str, EventSink],
    user_tags: TagChoice,
    h: int,
) -> None:
    """Hour ``h`` of the period: slates of its requests, live responses, short-video watching."""
    cfg, req = ctx.cfg, p.requests
    t0 = cfg.start_ts + h * HOUR_MS
    rng = stream(cfg.seed, "live", h)
    rows = req.window(t0, t0 + HOUR_MS)
    row, room, position = serve_slates(
        cfg, req, rows, p.rooms, p.authors, p.users, ctx.familiarity, rng
    )
    sinks["live_impressions"].add(
        pl.DataFrame(
            {
                "request_id": req.request_id[row],
                "ts": req.ts[row],
                "user_id": p.users.user_id[req.user[row]],
                "live_id": p.rooms.live_id[room],
                "author_id": p.authors.author_id[p.rooms.author[room]],
                "position": position,
                "surface": req.surface[row],
            }
        )
    )
    events = respond(ctx, req, row, room, position, rng)
    sinks["live_events"].add(_live_frame(events, p.users, p.authors, p.rooms, p.catalog))
    n_video = int(round(cfg.video_exposure_ratio * len(row)))
    frame, (user, author, amount) = watch(cfg, p.videos, p.users, user_tags, n_video, t0, h)
    sinks["video_events"].add(frame)
    if cfg.cross_domain_interest:  # video history feeds live familiarity only across domains
        ctx.familiarity.add(user, author, amount)


def _live_frame(
    events: LiveEvents, users: Users, authors: Authors, rooms: Rooms, catalog: Catalog
) -> pl.DataFrame:
    product = np.where(events.product >= 0, catalog.product_id[np.maximum(events.product, 0)], 0)
    return pl.DataFrame(
        {
            "ts": events.ts,
            "user_id": users.user_id[events.user],
            "live_id": rooms.live_id[events.room],
            "author_id": authors.author_id[rooms.author[events.room]],
            "event": events.event,
            "value": events.value,
            "product_id": product,
        }
    )


def _write_truth(
    root: Path, users: Users, gifts: GiftGraph, rooms: Rooms, authors: Authors, catalog: Catalog
) -> None:
    """Latent ground truth for tests and diagnostics (not part of the canonical dataset)."""
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "user_id": users.user_id,
            "community": gifts.community,
            "main_category": gifts.main_category,
            "gift_propensity": users.gift,
            "live_interest": users.live.astype(np.float32),
            "video_interest": users.video.astype(np.float32),
            # periodic interests (periodic.py): the live interests A, B and the phases
            "periodic_cat_a": users.live_wave.cat_a,
            "periodic_cat_b": users.live_wave.cat_b,
            "periodic_phase_slow": users.live_wave.phase_slow,
            "periodic_phase_fast": users.live_wave.phase_fast,
        }
    ).write_parquet(root / "users.parquet")
    keys = gifts.favourite_keys
    pl.DataFrame(
        {
            "user_id": users.user_id[keys // authors.n],
            "author_id": authors.author_id[keys % authors.n],
        }
    ).write_parquet(root / "favourites.parquet")
    room = np.repeat(np.arange(rooms.n), rooms.n_ticks)
    k = np.arange(len(room)) - rooms.offset[room]
    product = np.where(rooms.product >= 0, catalog.product_id[np.maximum(rooms.product, 0)], 0)
    pl.DataFrame(
        {
            "live_id": rooms.live_id[room],
            "ts": rooms.start[room] + k * TICK_MS,
            "excitement": rooms.excitement,
            "product_id": product,
        }
    ).write_parquet(root / "room_ticks.parquet")
