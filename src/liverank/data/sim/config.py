"""Simulator configuration: validated data (pydantic), named size presets, one switch per phenomenon.

Every number of the generative model that a user may want to change lives here, grouped by the
mechanism that uses it; ``docs/simulator.md`` gives the equations each parameter enters.

Example::

    cfg = SimConfig.preset("tiny", seed=3, highlights=False)
    report = simulate(cfg, Path("runs/sim-tiny"))
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from liverank.config import validate_as
from liverank.data.schema import AUTHOR_TYPES, DEFAULT_LONG_VIEW_MS
from liverank.errors import ConfigError

Size = Literal["tiny", "small", "medium", "large", "evidence"]

#: names of the phenomenon switches (ARCHITECTURE section 3), in the order of the docs
SWITCHES: tuple[str, ...] = (
    "cross_domain_interest",
    "activity_groups",
    "highlights",
    "consistent_style",
    "gifting_communities",
    "multimodal",
    "logging_policy_slates",
    "on_air_schedule",
    # World v2 (issue #13)
    "concentrated_traffic",
    "visit_mixture",
    "timed_behaviours",
    "periodic_interests",
    "live_shopping",
)

#: per-size overrides on top of the defaults below
PRESETS: dict[str, dict[str, Any]] = {
    # unit tests: about a second
    "tiny": {
        "n_users": 200,
        "n_authors": 40,
        "n_days": 1,
        "sessions_per_author_day": 2.5,
        "session_median_min": 150.0,
        "products_per_cat3": 4,
        "videos_per_author": 8.0,
        "community_size": 25,
        "live_requests_per_day": (3.0, 8.0, 20.0),
    },
    # the demo: ~300k live impressions, < 60 s on 2 cores
    "small": {"n_users": 5_000, "n_authors": 400, "n_days": 5},
    # benchmarks
    "medium": {"n_users": 50_000, "n_authors": 2_500, "n_days": 7, "community_size": 200},
    "large": {
        "n_users": 200_000,
        "n_authors": 8_000,
        "n_days": 14,
        "community_size": 250,
        "segment_dim": 16,
    },
    # World v2 (issue #13): the world every evidence run uses; traffic concentrated enough
    # that a room's fresh labels move its score (docs/simulator.md "Evidence preset")
    "evidence": {
        "n_users": 30_000,
        "n_authors": 400,
        "n_days": 5,
        "community_size": 120,
        "live_requests_per_day": (1.5, 4.5, 12.0),
    },
}


class SimConfig(BaseModel):
    """All parameters of one simulated platform. Build one with :meth:`preset`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ------------------------------------------------------------------ identity and size
    size: Size | Literal["custom"] = "custom"
    seed: int = 0
    start_date: date = date(2025, 5, 5)  # the period starts at 00:00 UTC of this day
    n_days: int = Field(5, ge=1, le=366)
    n_users: int = Field(5_000, ge=10)
    n_authors: int = Field(400, ge=8)

    # ------------------------------------------------------------------ latent world
    latent_dim: int = Field(16, ge=4)
    #: content categories of non-shopping rooms (split among talent_show, chat, game)
    n_topics: int = Field(9, ge=3)
    #: product verticals (cat1); each is also the content category of shopping rooms
    n_verticals: int = Field(6, ge=2)
    cat2_per_cat1: int = Field(3, ge=1)
    cat3_per_cat2: int = Field(3, ge=1)
    products_per_cat3: int = Field(12, ge=1)
    videos_per_author: float = Field(20.0, gt=0)
    author_type_shares: dict[str, float] = Field(
        default_factory=lambda: {"talent_show": 0.3, "shopping": 0.25, "chat": 0.25, "game": 0.2}
    )
    #: spread of an author's latent vector around its category centre
    author_noise: float = Field(0.6, ge=0)
    #: weight of the consistent (cross-domain) component of a user's interest, rho in the docs
    cross_domain_share: float = Field(0.7, ge=0, le=1)

    # ------------------------------------------------------------------ users and traffic
    #: shares of activity groups (low, mid, high)
    activity_shares: tuple[float, float, float] = (0.5, 0.35, 0.15)
    #: live ranking requests per user per day, by activity group
    live_requests_per_day: tuple[float, float, float] = (0.8, 2.5, 7.0)
    #: multiplier of like / comment propensity, by activity group
    interaction_mult: tuple[float, float, float] = (0.6, 1.0, 1.8)
    #: probability that a user is a gifter at all, by activity group
    gifter_share: tuple[float, float, float] = (0.06, 0.2, 0.5)
    #: log-normal spread of a gifter's propensity (mean 1): the heavy tail of gifting
    gift_sigma: float = Field(1.5, ge=0)
    slate_min: int = Field(4, ge=1)
    slate_max: int = Field(8, ge=1)
    #: short-video impressions per live impression (each hour; spread over users by request rate)
    video_exposure_ratio: float = Field(9.0, gt=0)
    #: e-commerce product clicks per user per day (scaled by the user's relative request rate)
    product_clicks_per_day: float = Field(1.0, ge=0)

    # ------------------------------------------------------------------ rooms on air
    sessions_per_author_day: float = Field(0.8, gt=0)
    session_median_min: float = Field(90.0, gt=1)

    # ------------------------------------------------------------------ logging policy
    policy_relevance: float = 3.0  # weight of the (noisy) user-author relevance
    policy_noise: float = 0.5  # std of the relevance estimate's noise
    policy_popularity: float = 1.0  # weight of author popularity
    policy_heat: float = 1.5  # weight of the room's current excitement ("heat")
    policy_familiarity: float = 1.0  # weight of log(1 + familiarity): follows, past visits

    # ------------------------------------------------------------------ behaviour model
    ctr_bias: float = -3.9  # click logit intercept
    w_affinity: float = 2.5  # click logit per unit of user-author cosine affinity
    w_position: float = 0.12  # click logit lost per slate position
    w_familiarity: float = 0.6  # click logit per log(1 + familiarity with the author)
    w_community: float = 0.5  # click logit for an author in the user's favourite (gift) set
    w_excitement: float = 1.3  # click logit per unit of excitement above its reference
    stay_median_s: float = 18.0  # median stay of a non-bounce visit (at zero affinity)
    stay_sigma: float = 1.1  # log-normal spread of the stay
    bounce_rate: float = 0.18  # share of clicks that bounce (< 3 s) at zero affinity
    w_stay_excitement: float = 0.5  # log-stay per unit of excitement at entry
    like_rate: float = 0.012  # like intensity per visit-minute (before propensities)
    comment_rate: float = 0.009
    follow_rate: float = 0.012
    gift_rate: float = 0.3  # for a gifter with propensity 1 on a favoured author
    w_interact_excitement: float = 0.8  # log-intensity per unit of visit excitement
    cart_rate: float = 0.06  # cart-click intensity per visit-minute in a shopping room
    buy_given_cart: float = 0.4

    # ------------------------------------------------------------------ gifting graph
    community_size: int = Field(150, ge=2)
    favourites_per_community: tuple[int, int] = (3, 6)
    #: gift intensity on an author outside the favoured set, relative to a favoured one
    #: (World v1: 0.03; gifts to strangers scatter over authors no one else gifts)
    off_favourite_gift: float = Field(0.0005, ge=0)
    #: familiarity every user starts with for its favourite authors (it follows them already;
    #: World v1: 3; it raises the favourites' exposure and clicks)
    favourite_familiarity: float = Field(12.0, ge=0)
    #: World v2: weight of -log(author's popularity rank) in a community's favourite score, so
    #: communities favour authors the platform shows (0 = World v1)
    favourite_popularity: float = Field(0.5, ge=0)

    # ------------------------------------------------------------------ content
    segment_dim: int = Field(32, ge=2)
    long_view_ms: int = Field(DEFAULT_LONG_VIEW_MS, gt=0)

    # ------------------------------------------------------------------ phenomena (switches)
    cross_domain_interest: bool = True
    activity_groups: bool = True
    highlights: bool = True
    consistent_style: bool = True
    gifting_communities: bool = True
    multimodal: bool = True
    logging_policy_slates: bool = True
    on_air_schedule: bool = True
    # World v2 (issue #13)
    concentrated_traffic: bool = True
    visit_mixture: bool = True
    timed_behaviours: bool = True
    periodic_interests: bool = True
    live_shopping: bool = True

    # ------------------------------------------------------------------ World v2 knobs
    # (issue #13; each phenomenon's knobs under its heading)
    # -- concentrated traffic
    #: Zipf exponent of author popularity: exposure weight exp(popularity) = rank^-popularity_zipf
    popularity_zipf: float = Field(2.0, gt=0, le=4)
    #: Zipf exponent of the broadcast rate: popular authors stream more often (rank^-b, capped)
    popularity_broadcast: float = Field(0.3, ge=0, le=2)
    #: policy weight of the room's excitement added to policy_heat (the head is shown whatever
    #: its state otherwise; with it, a highlight still moves a popular room's exposure)
    popularity_heat: float = Field(1.0, ge=0)
    # -- visit-length mixture
    #: probability of a bounce (< 3 s) at zero affinity, minus 2 aff on its logit
    mixture_bounce: float = Field(0.5, gt=0, lt=1)
    #: median (s) and log-normal spread of a browse stay
    browse_median_s: float = Field(15.0, gt=0)
    browse_sigma: float = Field(0.7, ge=0)
    #: median (s) and log-normal spread of an engaged stay (the heavy tail), before stay_scale
    engaged_median_s: float = Field(480.0, gt=0)
    engaged_sigma: float = Field(1.2, ge=0)
    #: multiplies every engaged stay (dose-response experiments on visit length)
    stay_scale: float = Field(1.0, gt=0, le=100)
    #: logit of P(engaged | no bounce) at zero affinity, off-favourite, reference excitement
    engaged_bias: float = -0.7
    #: engaged logit per unit of affinity, for a favourite author, per unit of excitement at entry
    w_engaged_affinity: float = 2.0
    w_engaged_favourite: float = 1.5
    w_engaged_excitement: float = 0.8
    # -- behaviours located in time
    #: like / comment / gift intensity per visit-minute once warmed up (before propensities)
    timed_like_rate: float = Field(0.025, ge=0)
    timed_comment_rate: float = Field(0.009, ge=0)
    timed_gift_rate: float = Field(0.1, ge=0)
    #: warm-up (s) of each hazard: it grows as 1 - exp(-time in the visit / warm-up)
    like_warmup_s: float = Field(60.0, ge=0)
    comment_warmup_s: float = Field(120.0, ge=0)
    gift_warmup_s: float = Field(600.0, ge=0)
    #: like / comment hazards fade as (1 + time in the visit / interaction_decay_s)^-decay
    like_decay: float = Field(0.7, ge=0)
    comment_decay: float = Field(0.0, ge=0)
    interaction_decay_s: float = Field(60.0, gt=0)
    #: log-hazard per unit of the room's excitement at that moment (minus E_REF)
    w_like_excitement: float = 1.2
    w_comment_excitement: float = 1.2
    w_gift_excitement: float = 2.0
    #: World v1 likes / comments / gifts instead (like_rate, comment_rate, gift_rate: counts
    #: from the visit's length and mean excitement, uniform times); for comparisons with v1
    world_v1_interactions: bool = False
    # -- periodic interests
    #: size of the swing between a user's two interests A and B (offset = w(t) strength/2 (B-A))
    periodic_strength: float = Field(1.25, ge=0, le=10)
    #: period of the fast alternation between A and B (minutes)
    periodic_fast_min: float = Field(120.0, gt=0)
    #: period of the slow drift between A and B (days)
    periodic_slow_days: float = Field(2.0, gt=0)
    #: share of the swing on the fast alternation (the rest is the slow drift)
    periodic_fast_share: float = Field(0.6, ge=0, le=1)
    # -- live shopping
    #: multiplier of product_clicks_per_day with live_shopping on (1 = the sparse World v1 domain)
    product_click_mult: float = Field(5.0, ge=0)
    #: goods-bag opens per visit-minute of a shopping room (at fit 0.3, excitement E_REF)
    bag_rate: float = Field(0.08, ge=0)
    #: mean product clicks inside one goods-bag opening (at fit 0.3)
    clicks_per_bag: float = Field(0.8, ge=0)
    #: probability that an in-room product click puts the product in the cart (at fit 0.3)
    cart_given_product_click: float = Field(0.08, ge=0, le=1)
    #: log-weight per unit of excitement of when in a visit the shopping behaviours happen
    w_shop_excitement: float = Field(1.5, ge=0)
    # -- multi-modal noise
    #: multiplier of every modality's noise sd (1 = World v1: visual excitement R^2 ~0.96)
    multimodal_noise: float = Field(4.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if self.slate_min > self.slate_max:
            raise ValueError(f"slate_min {self.slate_min} > slate_max {self.slate_max}")
        if set(self.author_type_shares) - set(AUTHOR_TYPES):
            raise ValueError(f"author_type_shares keys must be in {AUTHOR_TYPES}")
        if sum(self.author_type_shares.values()) <= 0:
            raise ValueError("author_type_shares must have a positive sum")
        if abs(sum(self.activity_shares) - 1.0) > 1e-6:
            raise ValueError(f"activity_shares must sum to 1, got {self.activity_shares}")
        lo, hi = self.favourites_per_community
        if not 1 <= lo <= hi:
            raise ValueError(f"favourites_per_community must be 1 <= lo <= hi, got {(lo, hi)}")
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def start_ts(self) -> int:
        """Epoch ms of 00:00 UTC on ``start_date``."""
        d = self.start_date
        return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)

    @property
    def end_ts(self) -> int:
        return self.start_ts + self.n_days * 86_400_000

    @property
    def switches(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in SWITCHES}

    @classmethod
    def preset(cls, size: Size, seed: int = 0, **overrides: Any) -> SimConfig:
        """The named size with ``seed`` and field ``overrides`` (e.g. ``highlights=False``).

        Raises :class:`ConfigError` naming the field when a value is invalid or unknown.
        """
        if size not in PRESETS:
            raise ConfigError(f"unknown simulator size '{size}'; choose one of {list(PRESETS)}")
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise ConfigError(
                f"unknown simulator option(s) {unknown}; switches are {list(SWITCHES)}"
            )
        values = {**PRESETS[size], **overrides, "size": size, "seed": seed}
        return cls.build(values)

    @classmethod
    def build(cls, values: dict[str, Any]) -> SimConfig:
        """Validate a mapping; errors become :class:`ConfigError` naming the first bad field."""
        return validate_as(cls, values, "simulator config")
