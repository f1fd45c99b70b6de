"""Ranking requests and the logging policy that fills their slates (phenomenon 7).

Requests: user ``u`` sends ``Poisson(request_rate_u)`` live requests a day at hours drawn from
the evening-heavy profile. A request is served on surface ``explore`` (two-column feed, 70 %,
slate of ``U{slate_min..slate_max}`` rooms) or ``slide`` (30 %, ``slate_min`` rooms). Request ids
follow time order.

Logging policy (Gumbel top-k = sampling without replacement from ``softmax(s)``) over the rooms
on air at the request time:

    s(u, r) = policy_relevance * (u^L(t) . v_a(r) + policy_noise * eps)
              + policy_popularity * p_a(r) + policy_heat * e_r(t)
              + policy_familiarity * log(1 + F(u, a(r)))

(``F`` = familiarity, see familiarity.py: the platform knows whom the user follows and watched;
``p_a`` = the author's popularity, Zipf in its rank with ``concentrated_traffic`` on, see
population.py; ``u^L(t)`` = the live interest at the request time, see periodic.py).

Positions follow the sampled order (position 0 = the policy's first pick). With
``logging_policy_slates`` off ``s = 0``: slates are uniform random subsets of the rooms on air.
A request sees ``min(k, rooms on air)`` rooms; a request with no room on air is not served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverank.data.sim.clock import DAY_MS, TICK_MS, sample_in_day
from liverank.data.sim.config import SimConfig
from liverank.data.sim.familiarity import Familiarity
from liverank.data.sim.population import Authors, Users, live_interest_at
from liverank.data.sim.rng import stream
from liverank.data.sim.rooms import Rooms

SURFACES = ("explore", "slide")
_SUB = 4096  # requests scored at a time: [_SUB, rooms on air] matrices


@dataclass(frozen=True)
class Requests:
    request_id: np.ndarray  # [Q] int64, 1.. in time order
    ts: np.ndarray  # [Q] epoch ms, sorted
    user: np.ndarray  # [Q] 0-based user index
    size: np.ndarray  # [Q] slate size asked for
    surface: np.ndarray  # [Q] index into SURFACES
    next_ts: np.ndarray  # [Q] the same user's next request time (int64 max if none)

    def window(self, t0: int, t1: int) -> slice:
        """Rows with ``t0 <= ts < t1``."""
        return slice(*np.searchsorted(self.ts, [t0, t1]))


def make_requests(cfg: SimConfig, users: Users) -> Requests:
    rng = stream(cfg.seed, "requests")
    users_parts, ts_parts = [], []
    for day in range(cfg.n_days):
        user = np.repeat(np.arange(users.n), rng.poisson(users.request_rate))
        users_parts.append(user)
        ts_parts.append(sample_in_day(rng, len(user), cfg.start_ts + day * DAY_MS))
    user, ts = np.concatenate(users_parts), np.concatenate(ts_parts)
    order = np.lexsort((user, ts))
    user, ts = user[order], ts[order]
    n = len(ts)
    surface = (rng.random(n) < 0.3).astype(np.int64)  # 0 explore, 1 slide
    size = np.where(
        surface == 0, rng.integers(cfg.slate_min, cfg.slate_max + 1, size=n), cfg.slate_min
    )
    by_user = np.lexsort((ts, user))
    next_ts = np.full(n, np.iinfo(np.int64).max)
    same = user[by_user][1:] == user[by_user][:-1]
    next_ts[by_user[:-1][same]] = ts[by_user][1:][same]
    return Requests(np.arange(1, n + 1, dtype=np.int64), ts, user, size, surface, next_ts)


def serve_slates(
    cfg: SimConfig,
    requests: Requests,
    rows: slice,
    rooms: Rooms,
    authors: Authors,
    users: Users,
    familiarity: Familiarity,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slates of the requests ``rows``: ``(request_row, room, position)``, one entry per
    impression, ordered by request then position (``request_row`` indexes ``requests``)."""
    idx = np.arange(rows.start, rows.stop)
    if len(idx) == 0:
        return (np.zeros(0, dtype=np.int64),) * 3
    cand = rooms.on_air_during(int(requests.ts[idx[0]]), int(requests.ts[idx[-1]]) + 1)  # [C]
    if len(cand) == 0:
        return (np.zeros(0, dtype=np.int64),) * 3
    author = rooms.author[cand]
    heat_weight = cfg.policy_heat + cfg.popularity_heat * cfg.concentrated_traffic
    out = []
    for s in range(0, len(idx), _SUB):
        q = idx[s : s + _SUB]
        ts = requests.ts[q][:, None]  # [Q, 1]
        on_air = (rooms.start[cand][None, :] <= ts) & (rooms.end[cand][None, :] > ts)  # [Q, C]
        score = np.zeros(on_air.shape)
        if cfg.logging_policy_slates:
            interest = live_interest_at(users, requests.user[q], requests.ts[q])  # [Q, K]
            rel = interest @ authors.vec[author].T  # [Q, C]
            rel = rel + cfg.policy_noise * rng.standard_normal(rel.shape)
            tick = rooms.offset[cand][None, :] + np.clip(
                (ts - rooms.start[cand][None, :]) // TICK_MS, 0, rooms.n_ticks[cand][None, :] - 1
            )
            heat = rooms.excitement[tick]  # [Q, C]
            fam = familiarity.dense(requests.user[q], author)  # [Q, C]
            score = (
                cfg.policy_relevance * rel
                + cfg.policy_popularity * authors.popularity[author][None, :]
                + heat_weight * heat
                + cfg.policy_familiarity * np.log1p(fam)
            )
        key = np.where(on_air, score + rng.gumbel(size=score.shape), -np.inf)
        k_max = min(cfg.slate_max, len(cand))
        top = (
            np.argpartition(-key, k_max - 1, axis=1)[:, :k_max]
            if k_max < len(cand)
            else (np.broadcast_to(np.arange(len(cand)), key.shape))
        )
        order = np.argsort(-np.take_along_axis(key, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)  # [Q, k_max] best first
        shown = np.isfinite(np.take_along_axis(key, top, axis=1))
        shown &= np.arange(k_max)[None, :] < requests.size[q][:, None]
        r, p = np.nonzero(shown)
        out.append((q[r], cand[top[r, p]], p))
    return tuple(np.concatenate([o[i] for o in out]) for i in range(3))  # type: ignore[return-value]
