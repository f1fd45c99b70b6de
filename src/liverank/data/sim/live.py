"""Users' response to a live slate: clicks, visits and the behaviours inside a visit (phenomena 2-5).

For an impression of room ``r`` (author ``a``, excitement ``e`` now) at slate position ``p``:

    logit P(click) = ctr_bias + b_u + w_affinity * (u^L . v_a) + q_a - w_position * p
                     + w_familiarity * log(1 + F(u, a)) + w_community * [a favoured by u]
                     + w_excitement * (e - E_REF) + 0.3 * [surface = slide]

A user enters at most one room per request (the best-placed click), ``0.5 + min(Exp(2.5), 30)`` s
after the impression. ``aff`` = affinity minus 0.2 (the interest at the request time).

**Stay, ``visit_mixture`` on** (World v2): a bounce with probability
``sigmoid(logit(mixture_bounce) - 2 aff)``, stay ``U(0.3, 2.9)`` s; otherwise *engaged* with
probability

    sigmoid(engaged_bias + w_engaged_affinity aff + w_engaged_favourite [a favoured by u]
            + w_engaged_excitement (e_enter - E_REF))

and *browse* else. With one ``z ~ N(0, 1)`` and ``s = 0.3 (activity - 2)``:

    browse   stay = exp(log(browse_median_s) + s + browse_sigma z)
    engaged  stay = stay_scale * exp(log(engaged_median_s) + s + engaged_sigma z)

**Stay, ``visit_mixture`` off** (World v1): a bounce (probability
``sigmoid(logit(bounce_rate) - 2 aff)``) or ``LogNormal(log(stay_median_s) + 1.2 aff +
w_stay_excitement (e - E_REF) + 0.3 (activity - 2), stay_sigma)``.

Stays are capped at 6 h. The exit is cut at the room's end and 1 ms before the user's next
request, so a user is in one room at a time and a visit ends before the next impression.

**Behaviours, ``timed_behaviours`` on** (World v2, :mod:`timed`): likes, comments and gifts are
inhomogeneous Poisson processes on the room's 30 s grid, with rate per visit-minute

    like     timed_like_rate    * i_u * exp(1.5 aff) * exp(w_like_excitement (e(t) - E_REF))
             * (1 - exp(-tau / like_warmup)) * (1 + tau / interaction_decay_s)^-like_decay
    comment  the same with the comment knobs
    gift     timed_gift_rate * g_u * (1 if a favoured by u else off_favourite_gift)
             * exp(w_gift_excitement (e(t) - E_REF)) * (1 - exp(-tau / gift_warmup))

(``tau`` time since the enter, ``e(t)`` the room's excitement now): likes and comments peak at
highlights and fade as the visit goes on; gifts sit at peaks and come minutes into a visit.

**Behaviours, ``timed_behaviours`` off**: each visit gets one Poisson count per behaviour with
the same mean as above (the hazard summed over the visit's ticks), at uniform times inside the
visit: the same behaviours per visit, no longer located in it.

**World v1 behaviours** (``world_v1_interactions``, for comparisons with World v1): inside a
visit of ``m`` minutes with mean excitement ``e_v`` a behaviour happens with probability
``1 - exp(-lambda)``,

    like     lambda = like_rate    * i_u * m^0.7 * exp(w_ie (e_v - E_REF) + 1.5 aff)
    comment  lambda = comment_rate * i_u * m^0.7 * exp(w_ie (e_v - E_REF) + 1.5 aff)
    gift     lambda = gift_rate * g_u * (1 or off_favourite_gift) * m^0.8 * exp(w_ie (e_v - E_REF))

``1 + Poisson(lambda)`` times, at uniform times inside the visit. Either way a follow happens
with probability ``1 - exp(-follow_rate m^0.5 exp(2.5 aff))`` at a uniform time, and the
shopping events of a shopping room come from :mod:`shopping`. (``i_u`` interaction propensity,
``g_u`` gift propensity.)

Random streams: the hour's stream draws the clicks; five children of it (``Generator.spawn``,
independent of how many draws came before) draw the enters, the stay mixture, the behaviours at
uniform times (follows; likes, comments and gifts with ``timed_behaviours`` off), the behaviours
located in time and World v1 shopping, so a switch changes its own draws only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from liverank.data.schema import EFFECTIVE_VIEW_MS, LIVE_EVENTS
from liverank.data.sim.config import SimConfig
from liverank.data.sim.excitement import E_REF
from liverank.data.sim.familiarity import Familiarity
from liverank.data.sim.gifting import GiftGraph, gift_values
from liverank.data.sim.population import Authors, Users, live_interest_at
from liverank.data.sim.products import Catalog
from liverank.data.sim.rooms import Rooms
from liverank.data.sim.shopping import in_room_shopping
from liverank.data.sim.slates import Requests
from liverank.data.sim.timed import intensity, poisson_times, visit_ticks

_AFF_CENTRE = 0.2
_MAX_STAY_MS = 6 * 3_600_000
_EVENT = {name: i for i, name in enumerate(LIVE_EVENTS)}


@dataclass
class LiveContext:
    """Everything a live response needs (read-only, except the familiarity map)."""

    cfg: SimConfig
    users: Users
    authors: Authors
    rooms: Rooms
    catalog: Catalog
    gifts: GiftGraph
    familiarity: Familiarity


@dataclass(frozen=True)
class LiveEvents:
    """Columns of ``live_events`` rows (``event`` as an index into LIVE_EVENTS)."""

    ts: np.ndarray
    user: np.ndarray  # 0-based
    room: np.ndarray  # 0-based
    event: np.ndarray
    value: np.ndarray
    product: np.ndarray  # 0-based product index, -1 for none


@dataclass(frozen=True)
class BehaviourStreams:
    """Random streams of the behaviours inside visits (one per mechanism, so that a switch
    changes the draws of its own mechanism only)."""

    uniform: np.random.Generator  # follows; likes, comments, gifts with timed_behaviours off
    timed: np.random.Generator  # likes, comments, gifts located in time
    shopping: np.random.Generator  # cart clicks and buys


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def click(
    w: LiveContext,
    req: Requests,
    row: np.ndarray,
    room: np.ndarray,
    position: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of the clicked impressions (at most one per request)."""
    cfg, users, authors = w.cfg, w.users, w.authors
    user, author = req.user[row], w.rooms.author[room]
    ts = req.ts[row]
    interest = live_interest_at(users, user, ts)  # time-varying (periodic.py)
    aff = np.einsum("nk,nk->n", interest, authors.vec[author])
    exc = w.rooms.excitement[w.rooms.tick_of(room, ts)]
    logit = (
        cfg.ctr_bias
        + users.bias[user]
        + cfg.w_affinity * aff
        + authors.quality[author]
        - cfg.w_position * position
        + cfg.w_familiarity * np.log1p(w.familiarity.get(user, author))
        + cfg.w_community * w.gifts.is_favourite(user, author)
        + cfg.w_excitement * (exc - E_REF)
        + 0.3 * (req.surface[row] == 1)
    )
    hit = np.flatnonzero(rng.random(len(row)) < _sigmoid(logit))
    # impressions come ordered by (request, position): keep each request's first click
    _, first = np.unique(row[hit], return_index=True)
    return hit[first]


def visits(
    w: LiveContext,
    req: Requests,
    row: np.ndarray,
    room: np.ndarray,
    rng: np.random.Generator,
    mix_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Enter and exit times of clicked impressions; ``keep`` marks clicks that became visits.

    ``rng`` draws the enter delay (and today's stay model with ``visit_mixture`` off),
    ``mix_rng`` the stay mixture, so the enters do not depend on the switch.
    """
    cfg, users, rooms = w.cfg, w.users, w.rooms
    user, ts = req.user[row], req.ts[row]
    author = rooms.author[room]
    interest = live_interest_at(users, user, ts)  # time-varying (periodic.py)
    aff = np.einsum("nk,nk->n", interest, w.authors.vec[author]) - _AFF_CENTRE
    delay = np.minimum(rng.exponential(2_500, size=len(row)), 30_000)  # << CLICK_WINDOW_MS
    enter = ts + 500 + delay.astype(np.int64)
    exc = rooms.excitement[rooms.tick_of(room, enter)]
    if cfg.visit_mixture:
        fav = w.gifts.is_favourite(user, author)
        stay = mixture_stay(cfg, aff, fav, exc, users.activity[user], mix_rng)
    else:
        bounce = rng.random(len(row)) < _sigmoid(
            np.log(cfg.bounce_rate / (1 - cfg.bounce_rate)) - 2 * aff
        )
        log_stay = (
            np.log(cfg.stay_median_s * 1000)
            + 1.2 * aff
            + cfg.w_stay_excitement * (exc - E_REF)
            + 0.3 * (users.activity[user] - 2)
            + cfg.stay_sigma * rng.standard_normal(len(row))
        )
        stay = np.where(bounce, rng.integers(300, 2_900, size=len(row)), np.exp(log_stay))
    stay = np.minimum(stay, _MAX_STAY_MS).astype(np.int64)
    limit = np.minimum(rooms.end[room], req.next_ts[row] - 1)
    exit_ = np.minimum(enter + np.maximum(stay, 1), limit)
    keep = exit_ > enter  # the room ended, or the next request came, before the user got in
    return enter, exit_, keep


def mixture_stay(
    cfg: SimConfig,
    aff: np.ndarray,
    fav: np.ndarray,
    exc: np.ndarray,
    activity: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Stays (ms, ``[n]``) from the bounce / browse / engaged mixture (module docstring).

    ``aff`` is the centred affinity, ``fav`` whether the author is a favourite, ``exc`` the
    excitement at the enter. Browse and engaged stays share one normal draw, so ``stay_scale``
    stretches the same visits (common random numbers for dose-response runs).
    """
    n = len(aff)
    logit_bounce = np.log(cfg.mixture_bounce / (1 - cfg.mixture_bounce)) - 2 * aff
    bounce = rng.random(n) < _sigmoid(logit_bounce)
    p_engaged = _sigmoid(
        cfg.engaged_bias
        + cfg.w_engaged_affinity * aff
        + cfg.w_engaged_favourite * fav
        + cfg.w_engaged_excitement * (exc - E_REF)
    )
    engaged = rng.random(n) < p_engaged
    z = rng.standard_normal(n)
    shift = 0.3 * (activity - 2)
    browse = np.exp(np.log(cfg.browse_median_s * 1000) + shift + cfg.browse_sigma * z)
    long = cfg.stay_scale * np.exp(
        np.log(cfg.engaged_median_s * 1000) + shift + cfg.engaged_sigma * z
    )
    short = rng.integers(300, 2_900, size=n)
    return np.where(bounce, short, np.where(engaged, long, browse))


def behave(
    w: LiveContext,
    req: Requests,
    row: np.ndarray,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    rngs: BehaviourStreams,
) -> LiveEvents:
    """Every live event of the visits ``(row, room, enter, exit)`` (enter and exit included)."""
    cfg, users, authors, rooms = w.cfg, w.users, w.authors, w.rooms
    user, author = req.user[row], rooms.author[room]
    n = len(row)
    minutes = (exit_ - enter) / 60_000
    interest = live_interest_at(users, user, req.ts[row])  # time-varying (periodic.py)
    aff = np.einsum("nk,nk->n", interest, authors.vec[author]) - _AFF_CENTRE
    exc = rooms.mean_excitement(room, enter, exit_) - E_REF
    room_events = minutes >= 2 / 60_000  # at least 2 ms inside to place an event
    fav = w.gifts.is_favourite(user, author)
    gift_mult = users.gift[user] * np.where(fav, 1.0, cfg.off_favourite_gift)  # [n]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("i", "ts", "event", "value", "product")}

    def emit(i: np.ndarray, ts: np.ndarray, event: str, value=None, product=None) -> None:
        cols["i"].append(i)
        cols["ts"].append(ts)
        cols["event"].append(np.full(len(i), _EVENT[event]))
        cols["value"].append(np.zeros(len(i)) if value is None else value)
        cols["product"].append(np.full(len(i), -1) if product is None else product)

    emit(np.arange(n), enter, "enter")
    emit(np.arange(n), exit_, "exit")
    rng = rngs.uniform
    follow = cfg.follow_rate * minutes**0.5 * np.exp(2.5 * aff)
    i = np.flatnonzero(room_events & (rng.random(n) < -np.expm1(-follow)))
    emit(i, _inside(rng, enter[i], exit_[i]), "follow")
    if cfg.world_v1_interactions:
        boost = np.exp(cfg.w_interact_excitement * exc)
        inter = users.interact[user] * minutes**0.7 * boost * np.exp(1.5 * aff)
        lam = {
            "like": cfg.like_rate * inter,
            "comment": cfg.comment_rate * inter,
            "gift": cfg.gift_rate * gift_mult * minutes**0.8 * boost,
        }
        for event, rate in lam.items():
            happens = room_events & (rng.random(n) < -np.expm1(-rate))
            times = 1 + rng.poisson(np.minimum(rate, 20.0))
            i = np.repeat(np.arange(n), np.where(happens, times, 0))
            value = gift_values(rng, len(i)) if event == "gift" else None
            emit(i, _inside(rng, enter[i], exit_[i]), event, value)
    else:
        located = cfg.timed_behaviours
        own = rngs.timed if located else rng
        for event, i, ts in interactions(w, user, room, enter, exit_, aff, gift_mult, located, own):
            emit(i, ts, event, gift_values(own, len(i)) if event == "gift" else None)

    for i, ts, event, value, product in in_room_shopping(
        w, user, room, enter, exit_, exc, room_events, rngs.shopping
    ):
        emit(i, ts, event, value, product)

    i = np.concatenate(cols["i"])
    return LiveEvents(
        ts=np.concatenate(cols["ts"]),
        user=user[i],
        room=room[i],
        event=np.concatenate(cols["event"]),
        value=np.concatenate(cols["value"]),
        product=np.concatenate(cols["product"]),
    )


def _inside(rng: np.random.Generator, enter: np.ndarray, exit_: np.ndarray) -> np.ndarray:
    """A uniform time strictly between each ``enter`` and ``exit_`` (visits of >= 2 ms)."""
    return enter + 1 + (rng.random(len(enter)) * (exit_ - enter - 1)).astype(np.int64)


def interactions(
    w: LiveContext,
    user: np.ndarray,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    aff: np.ndarray,
    gift_mult: np.ndarray,
    located: bool,
    rng: np.random.Generator,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Likes, comments and gifts (module docstring): ``(event, visit, ts)``.

    ``located``: a Poisson count on every (visit, tick) pair, placed in its tick; otherwise one
    Poisson count per visit with the same mean (the sum over its pairs), at uniform times inside
    the visit, so that the switch moves the behaviours inside their visits and nothing else.
    """
    cfg, users = w.cfg, w.users
    inter = users.interact[user] * np.exp(1.5 * aff)  # [n]
    decay_min = cfg.interaction_decay_s / 60
    spec = {  # event: (rate per visit-minute [n], excitement weight, warm-up (min), decay)
        "like": (cfg.timed_like_rate * inter, cfg.w_like_excitement, cfg.like_warmup_s / 60,
                 (cfg.like_decay, decay_min)),
        "comment": (cfg.timed_comment_rate * inter, cfg.w_comment_excitement,
                    cfg.comment_warmup_s / 60, (cfg.comment_decay, decay_min)),
        "gift": (cfg.timed_gift_rate * gift_mult, cfg.w_gift_excitement, cfg.gift_warmup_s / 60,
                 (0.0, 1.0)),
    }  # fmt: skip
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {e: [] for e in spec}
    total = {e: np.zeros(len(user)) for e in spec}  # [n] expected count of each visit
    for pairs in visit_ticks(w.rooms, room, enter, exit_):
        for event, (rate, weight, warmup, (decay, decay_min)) in spec.items():
            lam = intensity(
                pairs, w.rooms.excitement, rate[pairs.visit], weight, warmup, decay, decay_min
            )
            if located:
                out[event].append(poisson_times(rng, pairs, lam))
            else:
                total[event] += np.bincount(pairs.visit, weights=lam, minlength=len(user))
    for event in spec:
        if located:
            parts = out[event]
            visit = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
            ts = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        else:
            visit = np.repeat(np.arange(len(user)), rng.poisson(total[event]))
            ts = _inside(rng, enter[visit], exit_[visit])
        yield event, visit, ts


def respond(
    w: LiveContext,
    req: Requests,
    row: np.ndarray,
    room: np.ndarray,
    position: np.ndarray,
    rng: np.random.Generator,
) -> LiveEvents:
    """Clicks, visits and behaviours for the impressions ``(row, room, position)``; updates the
    familiarity map with what the visits taught the users."""
    streams = rng.spawn(5)  # children of the hour's stream: independent of the draws above
    hit = click(w, req, row, room, position, rng)
    row, room = row[hit], room[hit]
    enter, exit_, keep = visits(w, req, row, room, streams[0], streams[1])
    row, room, enter, exit_ = row[keep], room[keep], enter[keep], exit_[keep]
    events = behave(w, req, row, room, enter, exit_, BehaviourStreams(*streams[2:]))
    stay = exit_ - enter
    user, author = req.user[row], w.rooms.author[room]
    gain = (stay >= EFFECTIVE_VIEW_MS) + (stay >= w.cfg.long_view_ms).astype(float)
    w.familiarity.add(user, author, gain)
    strong = np.isin(events.event, [_EVENT["follow"], _EVENT["gift"]])
    w.familiarity.add(
        events.user[strong], w.rooms.author[events.room[strong]], np.full(int(strong.sum()), 3.0)
    )
    return events
