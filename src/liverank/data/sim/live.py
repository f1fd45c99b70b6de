"""Users' response to a live slate: clicks, visits and the behaviours inside a visit (phenomena 2-5).

For an impression of room ``r`` (author ``a``, excitement ``e`` now) at slate position ``p``:

    logit P(click) = ctr_bias + b_u + w_affinity * (u^L . v_a) + q_a - w_position * p
                     + w_familiarity * log(1 + F(u, a)) + w_community * [a favoured by u]
                     + w_excitement * (e - E_REF) + 0.3 * [surface = slide]

A user enters at most one room per request (the best-placed click). Visit: the user enters
``0.5 + min(Exp(2.5), 30)`` s after the impression and either bounces (probability
``sigmoid(logit(bounce_rate) - 2 aff)``, stay ``U(0.3, 2.9)`` s) or stays
``LogNormal(log(stay_median_s) + 1.2 aff + w_stay_excitement (e - E_REF) + 0.3 (activity - 2),
stay_sigma)``. The exit is cut at the room's end and 1 ms before the user's next request, so a
user is in one room at a time and a visit ends before the next impression.

Inside a visit of ``m`` minutes with mean excitement ``e_v``, a behaviour happens with
probability ``1 - exp(-lambda)``:

    like     lambda = like_rate    * i_u * m^0.7 * exp(w_ie (e_v - E_REF) + 1.5 aff)
    comment  lambda = comment_rate * i_u * m^0.7 * exp(w_ie (e_v - E_REF) + 1.5 aff)
    follow   lambda = follow_rate  * m^0.5 * exp(2.5 aff)
    gift     see gifting.py
    cart     lambda = cart_rate * m^0.7 * exp(3 (u^P . w_cat3 - 0.3) + w_ie (e_v - E_REF))

(``i_u`` interaction propensity, ``aff`` = affinity minus 0.2). Likes, comments and gifts come
``1 + Poisson(lambda)`` times, at uniform times inside the visit. A cart click in a shopping
room is on the product on stage at that moment; a buy follows with probability
``buy_given_cart`` and has value ``price * (1 + Poisson(0.3))``.
"""

from __future__ import annotations

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

_AFF_CENTRE = 0.2
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
    w: LiveContext, req: Requests, row: np.ndarray, room: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Enter and exit times of clicked impressions; ``keep`` marks clicks that became visits."""
    cfg, users, rooms = w.cfg, w.users, w.rooms
    user, ts = req.user[row], req.ts[row]
    interest = live_interest_at(users, user, ts)  # time-varying (periodic.py)
    aff = np.einsum("nk,nk->n", interest, w.authors.vec[rooms.author[room]]) - _AFF_CENTRE
    delay = np.minimum(rng.exponential(2_500, size=len(row)), 30_000)  # << CLICK_WINDOW_MS
    enter = ts + 500 + delay.astype(np.int64)
    exc = rooms.excitement[rooms.tick_of(room, enter)]
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
    stay = np.minimum(stay, 6 * 3_600_000).astype(np.int64)
    limit = np.minimum(rooms.end[room], req.next_ts[row] - 1)
    exit_ = np.minimum(enter + np.maximum(stay, 1), limit)
    keep = exit_ > enter  # the room ended, or the next request came, before the user got in
    return enter, exit_, keep


def behave(
    w: LiveContext,
    req: Requests,
    row: np.ndarray,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    rng: np.random.Generator,
) -> LiveEvents:
    """Every live event of the visits ``(row, room, enter, exit)`` (enter and exit included)."""
    cfg, users, authors, rooms = w.cfg, w.users, w.authors, w.rooms
    user, author = req.user[row], rooms.author[room]
    n = len(row)
    minutes = (exit_ - enter) / 60_000
    aff = np.einsum("nk,nk->n", users.live[user], authors.vec[author]) - _AFF_CENTRE
    exc = rooms.mean_excitement(room, enter, exit_) - E_REF
    boost = np.exp(cfg.w_interact_excitement * exc)
    room_events = minutes >= 2 / 60_000  # at least 2 ms inside to place an event
    fav = w.gifts.is_favourite(user, author)
    lam = {
        "like": cfg.like_rate * users.interact[user] * minutes**0.7 * boost * np.exp(1.5 * aff),
        "comment": cfg.comment_rate * users.interact[user] * minutes**0.7 * boost * np.exp(1.5 * aff),
        "follow": cfg.follow_rate * minutes**0.5 * np.exp(2.5 * aff),
        "gift": cfg.gift_rate * users.gift[user] * np.where(fav, 1.0, cfg.off_favourite_gift)
        * minutes**0.8 * boost,
    }  # fmt: skip
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("i", "ts", "event", "value", "product")}

    def emit(i: np.ndarray, ts: np.ndarray, event: str, value=None, product=None) -> None:
        cols["i"].append(i)
        cols["ts"].append(ts)
        cols["event"].append(np.full(len(i), _EVENT[event]))
        cols["value"].append(np.zeros(len(i)) if value is None else value)
        cols["product"].append(np.full(len(i), -1) if product is None else product)

    def inside(i: np.ndarray) -> np.ndarray:
        """A uniform time strictly between the enter and the exit of visits ``i``."""
        span = exit_[i] - enter[i] - 1
        return enter[i] + 1 + (rng.random(len(i)) * span).astype(np.int64)

    emit(np.arange(n), enter, "enter")
    emit(np.arange(n), exit_, "exit")
    for event, rate in lam.items():
        happens = room_events & (rng.random(n) < 1 - np.exp(-rate))
        times = 1 if event == "follow" else 1 + rng.poisson(np.minimum(rate, 20.0))
        i = np.repeat(np.arange(n), np.where(happens, times, 0))
        value = gift_values(rng, len(i)) if event == "gift" else None
        emit(i, inside(i), event, value)

    for i, ts, event, value, product in in_room_shopping(
        w, user, room, enter, exit_, exc, room_events, rng
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
    hit = click(w, req, row, room, position, rng)
    row, room = row[hit], room[hit]
    enter, exit_, keep = visits(w, req, row, room, rng)
    row, room, enter, exit_ = row[keep], room[keep], enter[keep], exit_[keep]
    events = behave(w, req, row, room, enter, exit_, rng)
    stay = exit_ - enter
    user, author = req.user[row], w.rooms.author[room]
    gain = (stay >= EFFECTIVE_VIEW_MS) + (stay >= w.cfg.long_view_ms).astype(float)
    w.familiarity.add(user, author, gain)
    strong = np.isin(events.event, [_EVENT["follow"], _EVENT["gift"]])
    w.familiarity.add(
        events.user[strong], w.rooms.author[events.room[strong]], np.full(int(strong.sum()), 3.0)
    )
    return events
