"""Latent world, authors and users: who is interested in what, and how active everybody is.

Interest model (phenomenon 1, "consistent intention" + "specific intention" of eLiveRec):
every content category ``c`` has a unit centre ``T_c`` in ``R^K``. A user draws a *consistent*
interest ``z_u`` (a mixture of two category centres, tilted by age and gender) and, per domain
``D`` in {live, video, product}, a *specific* part ``s_u^D`` (one category centre); the domain
interest is

    u^D = normalise( sqrt(rho) * z_u + sqrt(1 - rho) * s_u^D ),     rho = cross_domain_share.

With ``cross_domain_interest`` off the video and product domains use an independent
consistent part ``z'_u`` (drawn from the category prior only), so they carry no information
about the live domain. Authors sit near their category centre:
``v_a = normalise(T_{c(a)} + author_noise * g / sqrt(K))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from liverank.data.schema import AUTHOR_TYPES
from liverank.data.sim.config import SimConfig
from liverank.data.sim.periodic import Wave, make_wave
from liverank.data.sim.rng import stream

SHOPPING = AUTHOR_TYPES.index("shopping")
#: author types of non-shopping topics, in the order topics are split among them
TOPIC_TYPES = ("talent_show", "chat", "game")


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def quota(n: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``n`` proportional to ``shares`` (largest remainder)."""
    raw = n * shares / shares.sum()
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


@dataclass(frozen=True)
class World:
    """Category centres. Category code ``c`` (1-based) has centre ``centres[c - 1]``."""

    centres: np.ndarray  # [C, K] unit rows; C = n_topics + n_verticals
    topic_type: np.ndarray  # [n_topics] index into AUTHOR_TYPES of each topic's rooms
    prior: np.ndarray  # [C] popularity of categories among users (sums to 1)
    n_topics: int

    def vertical_code(self, vertical: np.ndarray) -> np.ndarray:
        """Category code of product vertical (cat1 index, 0-based)."""
        return self.n_topics + 1 + vertical


@dataclass(frozen=True)
class Authors:
    author_id: np.ndarray  # [A] int64, 1..A
    type_idx: np.ndarray  # [A] index into AUTHOR_TYPES
    category: np.ndarray  # [A] category code (>= 1)
    vertical: np.ndarray  # [A] cat1 index of shopping authors, -1 otherwise
    vec: np.ndarray  # [A, K] latent content vector (unit)
    quality: np.ndarray  # [A] appeal, enters the click logit
    sessions_per_day: np.ndarray  # [A] broadcast rate
    #: [A] log exposure weight in the logging policy and of the broadcast rate: Zipf in the
    #: author's rank with ``concentrated_traffic`` on, ``quality`` itself with it off
    popularity: np.ndarray

    @property
    def n(self) -> int:
        return len(self.author_id)

    def table(self) -> pl.DataFrame:
        fans = 1 + np.digitize(self.quality, np.quantile(self.quality, np.linspace(0, 1, 9)[1:-1]))
        return pl.DataFrame(
            {
                "author_id": self.author_id,
                "category": self.category,
                "author_type": np.array(AUTHOR_TYPES)[self.type_idx],
                "fans": fans,
            }
        )


@dataclass(frozen=True)
class Users:
    user_id: np.ndarray  # [U] int64, 1..U
    age: np.ndarray  # [U] 1..7
    gender: np.ndarray  # [U] 1..2
    device: np.ndarray  # [U] 1..5
    activity: np.ndarray  # [U] 1 low, 2 mid, 3 high
    live: np.ndarray  # [U, K] live-domain interest (unit)
    video: np.ndarray  # [U, K] short-video interest (unit)
    product: np.ndarray  # [U, K] e-commerce interest (unit)
    bias: np.ndarray  # [U] click-logit offset
    request_rate: np.ndarray  # [U] live requests per day
    interact: np.ndarray  # [U] like / comment propensity (mean ~1)
    gift: np.ndarray  # [U] gift propensity, 0 for non-gifters
    live_wave: Wave  # periodic alternation of the live interest (periodic.py)
    video_wave: Wave  # ... of the short-video interest (the same clock across domains)

    @property
    def n(self) -> int:
        return len(self.user_id)

    def table(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "user_id": self.user_id,
                "age": self.age,
                "gender": self.gender,
                "device": self.device,
                "activity": self.activity,
            }
        )


def make_world(cfg: SimConfig) -> World:
    rng = stream(cfg.seed, "world")
    n_cat = cfg.n_topics + cfg.n_verticals
    centres = normalise(rng.standard_normal((n_cat, cfg.latent_dim)))
    topic_type = np.concatenate(
        [np.full(len(part), AUTHOR_TYPES.index(t)) for t, part in
         zip(TOPIC_TYPES, np.array_split(np.arange(cfg.n_topics), len(TOPIC_TYPES)), strict=True)]
    )  # fmt: skip
    prior = 1.0 / np.arange(1, n_cat + 1) ** 0.6
    prior = prior[rng.permutation(n_cat)]
    return World(centres, topic_type, prior / prior.sum(), cfg.n_topics)


def make_authors(cfg: SimConfig, world: World) -> Authors:
    rng = stream(cfg.seed, "authors")
    n, k = cfg.n_authors, cfg.latent_dim
    shares = np.array([cfg.author_type_shares.get(t, 0.0) for t in AUTHOR_TYPES])
    type_idx = rng.permutation(np.repeat(np.arange(len(AUTHOR_TYPES)), quota(n, shares)))
    category = np.zeros(n, dtype=np.int64)
    vertical = np.full(n, -1, dtype=np.int64)
    shop = type_idx == SHOPPING
    vertical[shop] = rng.integers(0, cfg.n_verticals, size=int(shop.sum()))
    category[shop] = world.vertical_code(vertical[shop])
    for t in np.unique(type_idx[~shop]):
        rows = np.flatnonzero(type_idx == t)
        topics = np.flatnonzero(world.topic_type == t)
        category[rows] = 1 + rng.choice(topics, size=len(rows))
    noise = rng.standard_normal((n, k)) / np.sqrt(k)
    vec = normalise(world.centres[category - 1] + cfg.author_noise * noise)
    quality = rng.normal(0.0, 0.6, size=n)
    if cfg.concentrated_traffic:  # Zipf in the rank of the author's quality
        popularity = zipf_popularity(quality, cfg.popularity_zipf)
        busy = np.exp(popularity * cfg.popularity_broadcast / cfg.popularity_zipf)  # rank^-b
    else:
        popularity = quality
        busy = np.exp(0.5 * quality)  # popular authors broadcast more often
    sessions = cfg.sessions_per_author_day * rng.gamma(4.0, 0.25, size=n) * busy / busy.mean()
    return Authors(
        np.arange(1, n + 1, dtype=np.int64), type_idx, category, vertical, vec, quality, sessions,
        popularity,
    )  # fmt: skip


def zipf_popularity(quality: np.ndarray, exponent: float) -> np.ndarray:
    """``-exponent * log(rank)`` centred to mean 0, ``rank`` = 1 for the highest ``quality``:
    ``exp(popularity)`` is a Zipf law over the authors, in the order of their appeal."""
    rank = 1 + np.argsort(np.argsort(-quality, kind="stable"), kind="stable")
    pop = -exponent * np.log(rank)
    return pop - pop.mean()


def _mixture_interest(
    rng: np.random.Generator, world: World, logits: np.ndarray, n_parts: int, noise: float
) -> np.ndarray:
    """Unit vectors: a random convex mixture of ``n_parts`` category centres drawn from
    ``softmax(logits)`` (``[U, C]``), plus Gaussian noise. Returns ``[U, K]``."""
    n, c = logits.shape
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # [U, C]
    u = rng.random((n, n_parts))
    cats = np.minimum((cdf[:, None, :] < u[:, :, None]).sum(axis=2), c - 1)  # [U, n_parts]
    w = rng.dirichlet(np.full(n_parts, 2.0), size=n)  # [U, n_parts]
    mix = np.einsum("up,upk->uk", w, world.centres[cats])
    k = world.centres.shape[1]
    return normalise(mix + noise * rng.standard_normal((n, k)) / np.sqrt(k))


def make_users(cfg: SimConfig, world: World) -> Users:
    rng = stream(cfg.seed, "users")
    n, n_cat = cfg.n_users, len(world.prior)
    age = rng.integers(1, 8, size=n)
    gender = rng.integers(1, 3, size=n)
    device = rng.integers(1, 6, size=n)
    shares = np.array(cfg.activity_shares)
    if cfg.activity_groups:
        activity = rng.permutation(np.repeat(np.arange(1, 4), quota(n, shares)))
    else:
        activity = np.full(n, 2)

    # side features tilt the consistent interest (so they carry some signal)
    tilt_gender = rng.normal(0, 0.6, size=(3, n_cat))
    tilt_age = rng.normal(0, 0.4, size=(8, n_cat))
    prior = np.log(world.prior)[None, :]
    consistent = _mixture_interest(rng, world, prior + tilt_gender[gender] + tilt_age[age], 2, 0.35)
    rho = cfg.cross_domain_share
    flat = np.repeat(prior, n, axis=0)

    def domain(name: str, shared: np.ndarray) -> np.ndarray:
        specific = _mixture_interest(stream(cfg.seed, f"interest-{name}"), world, flat, 1, 0.35)
        return normalise(np.sqrt(rho) * shared + np.sqrt(1 - rho) * specific)

    live = domain("live", consistent)
    if cfg.cross_domain_interest:
        video, product = domain("video", consistent), domain("product", consistent)
    else:  # independent consistent parts: the domains share nothing
        other = _mixture_interest(stream(cfg.seed, "interest-independent"), world, flat, 2, 0.35)
        video, product = domain("video", other), domain("product", other)

    bias = rng.normal(0.0, 0.4, size=n)
    interact = rng.lognormal(-0.18, 0.6, size=n)  # mean ~1
    is_gifter = rng.random(n)
    gift_level = rng.lognormal(-(cfg.gift_sigma**2) / 2, cfg.gift_sigma, size=n)  # mean 1
    idx = activity - 1
    if cfg.activity_groups:
        rate = np.array(cfg.live_requests_per_day)[idx]
        interact = interact * np.array(cfg.interaction_mult)[idx]
        gift = np.where(is_gifter < np.array(cfg.gifter_share)[idx], gift_level, 0.0)
    else:  # one homogeneous population with the same mean rates
        rate = np.full(n, float(shares @ np.array(cfg.live_requests_per_day)))
        interact = interact * float(shares @ np.array(cfg.interaction_mult))
        gift = np.full(n, float(shares @ np.array(cfg.gifter_share)))
    live_wave = make_wave(cfg, world.centres, live, stream(cfg.seed, "periodic"))
    video_wave = (
        live_wave if cfg.cross_domain_interest  # one clock for both domains
        else make_wave(cfg, world.centres, video, stream(cfg.seed, "periodic-independent"))
    )  # fmt: skip
    return Users(
        np.arange(1, n + 1, dtype=np.int64), age, gender, device, activity,
        live, video, product, bias, rate, interact, gift, live_wave, video_wave,
    )  # fmt: skip


def live_interest_at(users: Users, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Live interest ``u^L(t)`` of ``user`` at ``ts`` (``[N, K]``, unit rows); the static
    ``users.live[user]`` with ``periodic_interests`` off."""
    return users.live_wave.interest_at(users.live, user, ts)


def video_interest_at(users: Users, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Short-video interest ``u^V(t)`` (``[N, K]``); ``users.video[user]`` when off."""
    return users.video_wave.interest_at(users.video, user, ts)
