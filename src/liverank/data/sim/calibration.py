"""The calibration report: measured properties of a simulated dataset next to their targets.

Everything is measured on the written tables (read back with polars); visits are rebuilt with
:func:`liverank.data.visits.reconstruct_visits`, the rule every consumer uses. Only the
community and multi-modal checks read the ground truth in ``sim_truth/``. Per-user rates use the
users with ``user_id <= MAX_USERS`` (all of them up to ``medium``), so memory stays bounded.
Targets that depend on a switch are stated for the switch's value; a metric without a target is
reported for information (``passed`` is None).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from liverank.data import io
from liverank.data.schema import TABLES
from liverank.data.sim import measures
from liverank.data.sim.config import SimConfig
from liverank.data.visits import reconstruct_visits

log = logging.getLogger(__name__)
TRUTH_DIR = "sim_truth"
_R2_ROWS = 200_000  # segments used for the multi-modal R^2
#: per-user rates are measured on the users with id <= this (ids are assigned independently of
#: every latent trait), so that large datasets calibrate in bounded memory
MAX_USERS = 50_000
#: the source of a target that is not a public figure or a paper's statement
CHOSEN = "chosen so the phenomenon is measurable"
#: the tables whose rows count as generated events (simulation speed)
EVENT_TABLES = ("live_impressions", "live_events", "video_events", "product_events", "segments")


@dataclass
class Metric:
    name: str
    value: float
    #: inclusive target range; None = no bound on that side; both None = informational
    lo: float | None = None
    hi: float | None = None
    note: str = ""
    #: where the target comes from: a public figure, a paper's statement, or "chosen so the
    #: phenomenon is measurable" (:data:`CHOSEN`); empty for informational metrics
    source: str = ""

    @property
    def passed(self) -> bool | None:
        if self.lo is None and self.hi is None:
            return None
        if self.value is None or math.isnan(self.value):
            return False
        return (self.lo is None or self.value >= self.lo) and (
            self.hi is None or self.value <= self.hi
        )

    @property
    def target(self) -> str:
        if self.lo is None and self.hi is None:
            return "-"
        if self.hi is None:
            return f">= {self.lo:g}"
        if self.lo is None:
            return f"<= {self.hi:g}"
        return f"{self.lo:g} - {self.hi:g}"


@dataclass
class CalibrationReport:
    """Measured value, target range and pass / fail of every calibration metric."""

    size: str
    seed: int
    switches: dict[str, bool]
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every metric with a target meets it."""
        return all(m.passed is not False for m in self.metrics)

    @property
    def failures(self) -> list[Metric]:
        return [m for m in self.metrics if m.passed is False]

    @property
    def generated_events(self) -> int:
        """Rows of the event tables (impressions, live / video / product events, segments)."""
        return sum(n for t, n in self.rows.items() if t in EVENT_TABLES)

    @property
    def events_per_second(self) -> float:
        """Generation speed: :attr:`generated_events` per second of generation."""
        return self.generated_events / self.seconds if self.seconds > 0 else math.nan

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"no calibration metric '{name}'; known: {[m.name for m in self.metrics]}")

    def value(self, name: str) -> float:
        return self.metric(name).value

    def to_markdown(self) -> str:
        off = [k for k, v in self.switches.items() if not v]
        lines = [
            f"# Calibration: simulator size '{self.size}', seed {self.seed}",
            "",
            f"Generated in {self.seconds:.1f} s ({self.generated_events:,} events, "
            f"{self.events_per_second / 1e3:,.0f}k events/s). "
            f"Phenomena off: {', '.join(off) or 'none'}.",
            "",
            "| metric | measured | target | ok | what is measured | source of the target |",
            "|---|---:|---|:-:|---|---|",
        ]
        for m in self.metrics:
            ok = {True: "yes", False: "**NO**", None: ""}[m.passed]
            lines.append(
                f"| {m.name} | {format_metric_value(m.value)} | {m.target} | {ok} | {m.note} "
                f"| {m.source} |"
            )
        lines += ["", "| table | rows |", "|---|---:|"]
        lines += [f"| {t} | {n:,} |" for t, n in self.rows.items()]
        status = "all targets met" if self.passed else f"{len(self.failures)} target(s) missed"
        return "\n".join([*lines, "", f"Result: {status}.", ""])

    def to_json(self) -> str:
        out = {k: v for k, v in asdict(self).items() if k != "metrics"}
        out["passed"] = self.passed
        out["generated_events"] = self.generated_events
        out["events_per_second"] = self.events_per_second
        out["metrics"] = [
            {**asdict(m), "value": None if _nan(m.value) else m.value, "passed": m.passed}
            for m in self.metrics
        ]
        return json.dumps(out, indent=2)


def _nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_metric_value(x: float) -> str:
    """A calibration value as the reports print it (``n/a`` when undefined)."""
    if _nan(x):
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


@dataclass(frozen=True)
class CalibrationContext:
    """What every calibration check reads, loaded once (per-user tables cut to the sampled
    users, ``user_id <= MAX_USERS``)."""

    dir: Path
    cfg: SimConfig
    rows: dict[str, int]  # table -> row count
    rooms: pl.DataFrame
    authors: pl.DataFrame
    users: pl.DataFrame  # sampled users
    impressions: pl.DataFrame  # live impressions of the sampled users
    events: pl.DataFrame  # every live event
    visits: pl.DataFrame  # reconstruct_visits() of the sampled impressions

    def scan(self, table: str) -> pl.LazyFrame:
        return pl.scan_parquet(io.table_path(self.dir, table))

    @property
    def truth(self) -> Path:
        """The simulator's latent ground truth (``sim_truth/``)."""
        return self.dir / TRUTH_DIR


def calibrate(out_dir: Path, cfg: SimConfig, seconds: float = 0.0) -> CalibrationReport:
    """Measure the dataset in ``out_dir`` (written from ``cfg``) against the targets."""
    d = Path(out_dir)
    rep = CalibrationReport(cfg.size, cfg.seed, cfg.switches, seconds)
    rep.rows = {
        t: pl.scan_parquet(io.table_path(d, t)).select(pl.len()).collect().item() for t in TABLES
    }
    add = rep.metrics.append
    rooms, authors = io.read_table(d, "rooms"), io.read_table(d, "authors")
    sampled = pl.col("user_id") <= MAX_USERS

    def scan(table: str) -> pl.LazyFrame:
        return pl.scan_parquet(io.table_path(d, table))

    n_live = rep.rows["live_impressions"]
    n_video = (
        scan("video_events")
        .filter(pl.col("event") == "impression")
        .select(pl.len())
        .collect()
        .item()
    )
    add(Metric("exposure_ratio", n_video / max(n_live, 1), 8, 10, "short-video / live impressions"))
    imp = scan("live_impressions").filter(sampled).collect()
    events = io.read_table(d, "live_events")

    v = reconstruct_visits(imp, events.filter(sampled), rooms, cfg.long_view_ms)
    clicks = v.filter("clicked")
    add(Metric("ctr", v["ctr"].mean(), 0.03, 0.15, "clicked impressions / impressions"))
    for task, lo, hi, what in (
        ("evtr", 0.5, 0.98, "stay >= 3 s"),
        ("lvtr", 0.10, 0.40, f"stay >= {cfg.long_view_ms // 1000} s"),
        ("ltr", 0.01, 0.10, "visit with a like"),
        ("cmtr", 0.01, 0.10, "visit with a comment"),
        ("gtr", 0.001, 0.02, "visit with a gift"),
    ):
        add(Metric(f"{task}_given_click", clicks[task].mean() if clicks.height else math.nan, lo, hi,
                   f"share of clicks: {what}"))  # fmt: skip

    users = io.read_table(d, "users").filter(sampled)
    ctx = CalibrationContext(d, cfg, rep.rows, rooms, authors, users, imp, events, v)
    gifts = events.filter(pl.col("event") == "gift")
    no_gift = 1 - gifts.filter(sampled)["user_id"].n_unique() / users.height
    add(
        Metric(
            "users_without_gift", no_gift, 0.60, None, "share of users with no gift in the period"
        )
    )
    per_user = users.join(imp.group_by("user_id").len(), on="user_id", how="left").fill_null(0)
    by_group = per_user.group_by("activity").agg(pl.col("len").mean()).sort("activity")
    means = dict(zip(by_group["activity"].to_list(), by_group["len"].to_list(), strict=True))
    if cfg.activity_groups and 1 in means and 3 in means:
        add(Metric("activity_high_low_ratio", means[3] / max(means[1], 1e-9), 3, None,
                   "impressions per user, high / low activity group"))  # fmt: skip
    counts = per_user["len"].to_numpy().astype(float)
    add(Metric("impressions_per_user_dispersion", counts.var() / max(counts.mean(), 1e-9),
               note="variance / mean of impressions per user (1 = Poisson)"))  # fmt: skip
    if gifts.height:
        value = gifts.group_by("user_id").agg(pl.col("value").sum())["value"].sort(descending=True)
        top = max(1, value.len() // 10)
        add(Metric("gift_value_top10pct_share", float(value[:top].sum() / value.sum()),
                   note="share of gift value from the top 10 % of gifting users"))  # fmt: skip

    g = measures.gift_graph(gifts, authors)
    add(Metric("gift_authors_per_gifter_mean", g["authors_per_gifter_mean"], 1, 5,
               "distinct authors a gifting user gifts to (mean)"))  # fmt: skip
    add(Metric("gift_authors_per_gifter_median", g["authors_per_gifter_median"], 1, 3,
               "distinct authors a gifting user gifts to (median)"))  # fmt: skip
    # the level is stated for the evidence preset, sized for it; smaller worlds have fewer gifters
    lo = 0.5 if cfg.size == "evidence" else 0.3
    lo, hi = (lo, None) if cfg.gifting_communities else (None, 0.1)
    add(Metric("swing_authors_share", g["swing_authors_share"], lo, hi,
               "gifted authors with >= 1 Swing neighbour",
               "MMBee: A2A Swing metapaths need gift neighbours (level chosen)"))  # fmt: skip
    add(Metric("swing_neighbours_mean", g["swing_neighbours_mean"],
               note="Swing neighbours per gifted author"))  # fmt: skip
    add(Metric("swing_top1_same_category", g["swing_top1_same_category"],
               note="top-1 Swing neighbour has the author's category"))  # fmt: skip
    truth = d / TRUTH_DIR
    community = pl.read_parquet(truth / "users.parquet", columns=["user_id", "community"])
    conc = measures.community_concentration(gifts, community)
    lo, hi = (0.35, None) if cfg.gifting_communities else (None, 0.25)
    add(Metric("gift_community_concentration", conc, lo, hi,
               "gifts to an author that another member of the giver's community also gifts"))  # fmt: skip

    split = cfg.start_ts + int(0.6 * (cfg.end_ts - cfg.start_ts))
    fc = measures.forecastability(rooms, events.filter(pl.col("event") == "enter"))
    lo, hi = (None, 0.995) if cfg.highlights else (0.99, None)
    add(Metric("forecast_mae_ratio", fc["ratio"], lo, hi,
               "30 s enter counts per room, 2nd half of its air time: MAE(last value) / "
               "MAE(mean of the room's 1st half); < 1: the last value wins"))  # fmt: skip
    add(Metric("forecast_mae_last", fc["mae_last"], note="MAE of the last-value forecast"))
    add(Metric("forecast_mae_mean", fc["mae_mean"], note="MAE of the train-half mean"))

    nc = measures.next_category(
        io.read_table(d, "room_products"), io.read_table(d, "products"), split
    )
    add(Metric("next_cat3_markov_acc", nc["markov"],
               note="first-order Markov on cat3, fit on the first 60 % of the period"))  # fmt: skip
    add(Metric("next_cat3_baseline_acc", nc["baseline"], note="most frequent cat3 of the vertical"))
    lo, hi = (0.10, None) if cfg.consistent_style else (None, 0.03)
    add(Metric("next_cat3_gap", nc["gap"], lo, hi, "Markov accuracy - baseline accuracy"))

    n_cat = cfg.n_topics + cfg.n_verticals
    enters = events.filter(sampled & (pl.col("event") == "enter")).join(
        rooms.select("live_id", "category"), on="live_id"
    )
    plays = (
        scan("video_events").filter(sampled & (pl.col("event") == "play"))
        .select("user_id", "photo_id").collect()
        .join(io.read_table(d, "videos", ["photo_id", "tag"]), on="photo_id")
        .rename({"tag": "category"})
    )  # fmt: skip
    cd = measures.cross_domain(enters, plays, n_cat, seed=cfg.seed)
    lo, hi = (0.05, None) if cfg.cross_domain_interest else (None, 0.03)
    add(Metric("cross_domain_gap", cd["gap"], lo, hi,
               "cosine(live enter, video play category profiles): same user - shuffled users"))  # fmt: skip

    segs = scan("segments").head(_R2_ROWS).collect()
    ticks = pl.read_parquet(truth / "room_ticks.parquet", columns=["live_id", "ts", "excitement"])
    segs = segs.join(ticks, on=["live_id", "ts"])
    y = segs["excitement"].to_numpy().astype(np.float64)
    for m in ("visual", "speech", "text"):
        x = segs[m].cast(pl.Array(pl.Float32, cfg.segment_dim)).to_numpy().astype(np.float64)
        r2 = measures.modality_r2(x, y)
        lo, hi, source = None, None, ""
        if m == "visual" and cfg.highlights:
            # noisy enough that a linear probe does not solve what a fusion model should earn
            lo, hi = (0.4, 0.7) if cfg.multimodal else (None, 0.05)
            source = CHOSEN
        add(Metric(f"{m}_excitement_r2", r2, lo, hi,
                   f"out-of-sample R^2 of excitement from the {m} vector (linear)", source))  # fmt: skip

    sk = measures.slate_skew(imp, rooms)
    lo, hi = (0.10, None) if cfg.logging_policy_slates else (None, 2 * sk["noise_tv"] + 0.01)
    add(Metric("slate_tv_from_uniform", sk["tv"], lo, hi,
               "total variation between rooms' impression shares and uniform slates over rooms on air"))  # fmt: skip
    add(
        Metric("slate_tv_noise", sk["noise_tv"], note="the same distance under sampling noise only")
    )
    add(Metric("rooms_on_air_mean", sk["rooms_on_air_mean"], note="rooms on air at a request"))
    from liverank.data.sim.checks import PHENOMENON_CHECKS  # they import this module

    for check in PHENOMENON_CHECKS:
        rep.metrics += check(ctx)
    log.info("calibration: %d metrics, %d missed", len(rep.metrics), len(rep.failures))
    return rep
