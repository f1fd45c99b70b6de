"""The short-video domain: the video catalogue and users' short-video behaviour (phenomenon 1).

* Videos: author ``a`` has ``1 + Poisson(videos_per_author - 1)`` videos with latent vectors
  ``x = normalise(v_a + 0.5 g)``, tag = the author's category (90 %) or a random one, cluster =
  the nearest of 64 random centroids, duration ``LogNormal(log 20 s, 0.7)`` clipped to [5, 180] s.
* Exposures: per hour, ``video_exposure_ratio`` times the hour's live impressions, spread over
  users in proportion to their request rate. A user's video is drawn by tag with probability
  ``softmax(5 u^V(t) . T_tag)`` and then by author appeal ``exp(q_a)`` inside the tag
  (``u^V(t)``: the interest at the exposure time, see periodic.py).
* Behaviour, with match ``m = u^V(t) . x``: completion ``c = 1.3 sigmoid(-1 + 3 m + eps)``,
  ``play_ms = c * duration`` (a ``play`` event, logged when the play ends, if ``play_ms >= 3 s``);
  like / comment / follow / share with probability ``sigmoid(b + 3 m + 1.5 c)`` for
  ``b = -6.0, -7.5, -8.7, -8.2``, at a uniform time during the play. Events that would fall
  after the period's end are cut to its last millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from liverank.data.schema import VIDEO_EVENTS
from liverank.data.sim.clock import HOUR_MS
from liverank.data.sim.config import SimConfig
from liverank.data.sim.population import Authors, Users, World, normalise
from liverank.data.sim.rng import stream

_ACTIONS = {"like": -6.0, "comment": -7.5, "follow": -8.7, "share": -8.2}
#: familiarity with the author added by each video behaviour (see familiarity.py)
_MIN_PLAY_MS = 3_000
FAMILIARITY = {"complete": 0.2, "like": 0.5, "share": 0.5, "follow": 3.0}


@dataclass(frozen=True)
class Videos:
    photo_id: np.ndarray  # [V] int64, 1..V
    author: np.ndarray  # [V] 0-based author index
    tag: np.ndarray  # [V] category code
    cluster: np.ndarray  # [V] 1..64
    duration_ms: np.ndarray  # [V]
    vec: np.ndarray  # [V, K]
    by_tag: np.ndarray  # [V] video indices sorted by tag
    tag_cdf: np.ndarray  # [V] tag + cumulative popularity share inside the tag, in by_tag order
    has_tag: np.ndarray  # [C] whether a category has videos

    def table(self, author_ids: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "photo_id": self.photo_id,
                "author_id": author_ids[self.author],
                "tag": self.tag,
                "cluster": self.cluster,
                "duration_ms": self.duration_ms,
            }
        )


def make_videos(cfg: SimConfig, world: World, authors: Authors) -> Videos:
    rng = stream(cfg.seed, "videos")
    k, n_cat = cfg.latent_dim, len(world.prior)
    per_author = 1 + rng.poisson(max(cfg.videos_per_author - 1, 0), size=authors.n)
    author = np.repeat(np.arange(authors.n), per_author)
    n = len(author)
    vec = normalise(authors.vec[author] + 0.5 * rng.standard_normal((n, k)) / np.sqrt(k))
    tag = np.where(rng.random(n) < 0.9, authors.category[author], rng.integers(1, n_cat + 1, n))
    centroids = normalise(rng.standard_normal((64, k)))
    cluster = 1 + np.argmax(vec @ centroids.T, axis=1)
    duration = np.clip(rng.lognormal(np.log(20_000), 0.7, size=n), 5_000, 180_000).astype(np.int64)
    by_tag = np.lexsort((np.arange(n), tag))
    weight = np.exp(authors.quality[author[by_tag]])
    sorted_tag = tag[by_tag]
    totals = np.bincount(sorted_tag, weights=weight, minlength=n_cat + 1)
    within = np.cumsum(weight) - np.concatenate([[0.0], np.cumsum(totals)])[sorted_tag]
    tag_cdf = sorted_tag + within / totals[sorted_tag]
    has_tag = np.bincount(tag, minlength=n_cat + 1)[1:] > 0
    return Videos(
        np.arange(1, n + 1, dtype=np.int64), author, tag, cluster, duration, vec,
        by_tag, tag_cdf, has_tag,
    )  # fmt: skip


@dataclass(frozen=True)
class TagChoice:
    """How users pick a video's tag: ``softmax(5 u^V(t) . T_tag)`` over tags with videos.

    With periodic interests ``u^V(t) = (u + w a) / |u + w a|`` (periodic.py; ``u`` unit,
    ``a`` the swing axis, ``w = w_u(t)``), so a dot product with it is
    ``(x . u + w x . a) / |u + w a|`` and ``|u + w a|^2 = 1 + 2 w u . a + w^2 |a|^2``: the users'
    dot products with the tag centres are computed once here, not per exposure.
    """

    has_tag: np.ndarray  # [C] whether a category has videos
    static: np.ndarray  # [U, C] cumulative probabilities at the static interests (switch off)
    base: np.ndarray  # [U, C] float32 5 u^V . T_c, -inf for tags without videos
    swing: np.ndarray  # [U, C] float32 5 a . T_c, 0 for tags without videos
    base_axis: np.ndarray  # [U] u^V . a
    axis_sq: np.ndarray  # [U] |a|^2

    def scale(
        self, users: Users, user: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(w, 1 / |u + w a|)`` of each exposure (``[E]`` each)."""
        w = users.video_wave.value(user, ts)
        return w, 1.0 / np.sqrt(1.0 + 2.0 * w * self.base_axis[user] + w * w * self.axis_sq[user])

    def draw(
        self, user: np.ndarray, u: np.ndarray, wave: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        """Tag codes of exposures of ``user`` from uniforms ``u`` (``[E]``; inverse-cdf
        sampling); ``wave`` = :meth:`scale` with periodic interests, None without."""
        if wave is None:
            below = (self.static[user] < u[:, None]).sum(axis=1)
        else:  # an unnormalised cdf, compared with u times its total
            w, inv = (x.astype(np.float32) for x in wave)
            logits = (self.base[user] + w[:, None] * self.swing[user]) * inv[:, None]  # [E, C]
            cum = np.exp(logits)  # tags without videos: exp(-inf) = 0
            for c in range(1, cum.shape[1]):  # in place: faster than np.cumsum on short rows
                cum[:, c] += cum[:, c - 1]
            below = (cum < (u.astype(np.float32) * cum[:, -1])[:, None]).sum(axis=1)
        return 1 + np.minimum(below, len(self.has_tag) - 1)


def tag_cdf(world: World, videos: Videos, users: Users) -> TagChoice:
    """The users' tag choice (tags without videos excluded)."""
    base = 5.0 * users.video @ world.centres.T
    p = np.exp(base - base.max(axis=1, keepdims=True)) * videos.has_tag[None, :]
    axis = users.video_wave.axis
    return TagChoice(
        has_tag=videos.has_tag,
        static=np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1),
        base=np.where(videos.has_tag, base, -np.inf).astype(np.float32),
        swing=np.where(videos.has_tag, 5.0 * axis @ world.centres.T, 0.0).astype(np.float32),
        base_axis=np.einsum("uk,uk->u", users.video, axis),
        axis_sq=np.einsum("uk,uk->u", axis, axis),
    )


def watch(
    cfg: SimConfig,
    videos: Videos,
    users: Users,
    tags: TagChoice,
    n_exposures: int,
    hour_start: int,
    hour_index: int,
) -> tuple[pl.DataFrame, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n_exposures`` short-video exposures in the hour starting at ``hour_start``.

    Returns the ``video_events`` rows and the familiarity increments ``(user, author, amount)``.
    """
    rng = stream(cfg.seed, "video-events", hour_index)
    p_user = users.request_rate / users.request_rate.sum()
    counts = rng.multinomial(n_exposures, p_user)
    user = np.repeat(np.arange(users.n), counts)  # [E]
    ts = hour_start + rng.integers(0, HOUR_MS, size=len(user))
    wave = tags.scale(users, user, ts) if users.video_wave.on else None  # u^V(t), periodic.py
    tag = tags.draw(user, rng.random(len(user)), wave)
    pos = np.searchsorted(videos.tag_cdf, tag + rng.random(len(user)) * (1 - 1e-9))
    video = videos.by_tag[np.minimum(pos, len(videos.by_tag) - 1)]
    match = np.einsum("ek,ek->e", users.video[user], videos.vec[video])
    if wave is not None:  # u^V(t) . x
        swing = np.einsum("ek,ek->e", users.video_wave.axis[user], videos.vec[video])
        match = (match + wave[0] * swing) * wave[1]
    completion = 1.3 / (1 + np.exp(-(-1.0 + 3.0 * match + rng.standard_normal(len(user)))))
    play_ms = (completion * videos.duration_ms[video]).astype(np.int64)
    played = play_ms >= _MIN_PLAY_MS
    last = cfg.end_ts - 1  # events after the period's end are cut to its last millisecond
    parts = {"impression": (np.arange(len(user)), ts, np.zeros(len(user), dtype=np.int64))}
    parts["play"] = (
        np.flatnonzero(played),
        np.minimum(ts + play_ms, last)[played],
        play_ms[played],
    )
    fam_user, fam_video, fam_amount = [], [], []
    complete = np.flatnonzero(completion >= 0.9)
    fam_user.append(user[complete])
    fam_video.append(video[complete])
    fam_amount.append(np.full(len(complete), FAMILIARITY["complete"]))
    for action, bias in _ACTIONS.items():
        prob = 1 / (1 + np.exp(-(bias + 3.0 * match + 1.5 * completion)))
        hit = np.flatnonzero(played & (rng.random(len(user)) < prob))
        at = np.minimum(ts[hit] + (rng.random(len(hit)) * play_ms[hit]).astype(np.int64), last)
        parts[action] = (hit, at, np.zeros(len(hit), dtype=np.int64))
        if action in FAMILIARITY:
            fam_user.append(user[hit])
            fam_video.append(video[hit])
            fam_amount.append(np.full(len(hit), FAMILIARITY[action]))
    rows = np.concatenate([p[0] for p in parts.values()])
    code = np.repeat(
        [VIDEO_EVENTS.index(e) for e in parts], [len(p[0]) for p in parts.values()]
    ).astype(np.int64)
    frame = pl.DataFrame(  # compact dtypes in memory; write_table casts to the canonical ones
        {
            "ts": np.concatenate([p[1] for p in parts.values()]),
            "user_id": users.user_id[user[rows]].astype(np.int32),
            "photo_id": videos.photo_id[video[rows]].astype(np.int32),
            "author_id": (videos.author[video[rows]] + 1).astype(np.int32),  # author id = index + 1
            "event": code.astype(np.uint8),
            "play_ms": np.concatenate([p[2] for p in parts.values()]).astype(np.int32),
        }
    )
    fv = np.concatenate(fam_video)
    return frame, (np.concatenate(fam_user), videos.author[fv], np.concatenate(fam_amount))
