"""Shopping inside live rooms (phenomenon 13, eLiveRec's inter-channel behaviours): what a visitor
of a shopping room does with the products on sale.

With ``live_shopping`` on, a visit of ``m`` minutes to a shopping room runs a funnel
goods bag -> product -> cart -> buy. ``fit(p) = u^P . w_cat3(p)`` is the user's product interest
in product ``p``, ``e(t)`` the room's excitement at time ``t`` and ``fit_v`` the mean fit of the
products on stage at ``N_MOMENTS`` uniform moments of the visit:

* goods-bag opens (``bag_open``): at least one with probability ``1 - exp(-lambda)``,
  ``1 + Poisson(lambda)`` in all, with

      lambda = bag_rate * m^0.7 * exp(3 (fit_v - 0.3) + w_interact_excitement (e_visit - E_REF));

* when in the visit: each open takes one of ``N_MOMENTS`` uniform moments, chosen with
  probability ``proportional to exp(w_shop_excitement e(t) + 2 fit(on stage at t))`` (with
  ``timed_behaviours`` off: uniformly), so opens cluster at countdowns / releases of products
  the user likes;
* product clicks (``product_click``): ``Poisson(clicks_per_bag * exp(2 (fit - 0.3)))`` per open
  (``fit`` of the product on stage then), each ``1 + Exp(8 s)`` after the open, on one of three
  candidates - the product on stage and two uniformly drawn earlier introductions of the room -
  chosen with probability ``proportional to exp(log 2 [on stage] + 3 fit)``: always a product
  the room has introduced at or before the click;
* a click carts the product (``cart_click``) with probability
  ``min(0.95, cart_given_product_click * exp(2 (fit - 0.3)))``, 2-30 s later; a buy follows a
  cart with probability ``buy_given_cart``, 2-60 s later, of value ``price * (1 + Poisson(0.3))``.

Every event lies strictly inside the visit (later ones are cut to 1 ms before the exit). Draws
come from the shopping stream of the hour (``rng``, its own child stream in :mod:`live`), so
the switch changes no other draw; ``timed_behaviours`` changes only which moment an open takes.

With ``live_shopping`` off (World v1): no bag or product click; a visit ``m`` minutes long with
``fit`` of the product on stage at a uniform moment gives a cart click on that product with
probability ``1 - exp(-lambda)``,
``lambda = cart_rate * m^0.7 * exp(3 (fit - 0.3) + w_interact_excitement (e_visit - E_REF))``,
then a buy as above.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from liverank.data.sim.population import SHOPPING

if TYPE_CHECKING:
    from liverank.data.sim.live import LiveContext
    from liverank.data.sim.rooms import Rooms

#: ``(visit index, ts, event name, value or None, product index or None)`` of emitted events
Emitted = tuple[np.ndarray, np.ndarray, str, np.ndarray | None, np.ndarray | None]

#: uniform moments of a visit among which a goods-bag open picks its time
N_MOMENTS = 8
#: weight of the product on stage against an earlier introduction (product choice)
_ON_STAGE = np.log(2.0)
_FIT_REF = 0.3


def in_room_shopping(
    w: LiveContext,
    user: np.ndarray,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    exc: np.ndarray,
    room_events: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[Emitted]:
    """The shopping events of the visits ``(user, room, enter, exit_)`` (arrays ``[n]``);
    ``exc`` is each visit's mean excitement minus ``E_REF``, ``room_events`` marks visits long
    enough to hold an event; ``rng`` is the shopping stream (no other mechanism draws from it)."""
    shop = np.flatnonzero(room_events & (w.rooms.type_idx[room] == SHOPPING))
    if not w.cfg.live_shopping:
        yield from _cart_on_stage(w, user, room, enter, exit_, exc, shop, rng)
    else:
        yield from _goods_bag(w, user, room, enter, exit_, exc, shop, rng)


def _fit(w: LiveContext, user: np.ndarray, product: np.ndarray) -> np.ndarray:
    """``u^P . w_cat3`` of users ``user`` and products ``product`` (``[n]`` each)."""
    cat = w.catalog.cat3_vec[w.catalog.cat3_of_product[np.maximum(product, 0)]]
    return np.einsum("nk,nk->n", w.users.product[user], cat)


def _inside(rng: np.random.Generator, t0: np.ndarray, t1: np.ndarray, shape=None) -> np.ndarray:
    """Uniform epoch ms strictly between ``t0`` and ``t1`` (``[n]`` or ``[n, c]``)."""
    span = (t1 - t0 - 1).astype(np.float64)
    u = rng.random(len(t0) if shape is None else (len(t0), shape))
    if shape is not None:
        return t0[:, None] + 1 + (u * span[:, None]).astype(np.int64)
    return t0 + 1 + (u * span).astype(np.int64)


def _after(
    rng: np.random.Generator, ts: np.ndarray, lo: int, hi: int, exit_: np.ndarray
) -> np.ndarray:
    """``ts`` + U[lo, hi) ms, cut to 1 ms before the exit and never before ``ts``."""
    later = np.minimum(ts + rng.integers(lo, hi, size=len(ts)), exit_ - 1)
    return np.maximum(later, ts)


def _goods_bag(
    w: LiveContext,
    user: np.ndarray,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    exc: np.ndarray,
    shop: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[Emitted]:
    cfg, rooms = w.cfg, w.rooms
    minutes = (exit_[shop] - enter[shop]) / 60_000
    # the visit's mean fit over N_MOMENTS uniform moments
    moments = _inside(rng, enter[shop], exit_[shop], N_MOMENTS)  # [S, M]
    r_m = np.repeat(room[shop], N_MOMENTS)
    on_stage = rooms.product[rooms.tick_of(r_m, moments.reshape(-1))]
    fit_v = _fit(w, np.repeat(user[shop], N_MOMENTS), on_stage).reshape(-1, N_MOMENTS).mean(1)
    lam = (
        cfg.bag_rate
        * minutes**0.7
        * np.exp(3 * (fit_v - _FIT_REF) + cfg.w_interact_excitement * exc[shop])
    )
    opens = np.where(
        rng.random(len(shop)) < 1 - np.exp(-lam), 1 + rng.poisson(np.minimum(lam, 20.0)), 0
    )
    i = np.repeat(shop, opens)  # [O] visit of each open
    # when: one of N_MOMENTS uniform moments, weighted by excitement and fit on stage
    cand = _inside(rng, enter[i], exit_[i], N_MOMENTS)  # [O, M]
    tick = rooms.tick_of(np.repeat(room[i], N_MOMENTS), cand.reshape(-1))
    score = cfg.w_shop_excitement * rooms.excitement[tick] + 2 * _fit(
        w, np.repeat(user[i], N_MOMENTS), rooms.product[tick]
    )
    gumbel = rng.gumbel(size=(len(i), N_MOMENTS))
    if cfg.timed_behaviours:
        pick = np.argmax(score.reshape(-1, N_MOMENTS) + gumbel, axis=1)
    else:
        pick = np.zeros(len(i), dtype=np.int64)
    open_ts = cand[np.arange(len(i)), pick]
    yield i, open_ts, "bag_open", None, None

    fit_o = _fit(w, user[i], rooms.product[rooms.tick_of(room[i], open_ts)])
    n_click = rng.poisson(cfg.clicks_per_bag * np.exp(2 * (fit_o - _FIT_REF)))
    j = np.repeat(np.arange(len(i)), n_click)  # [P] open of each click
    v = i[j]  # visit of each click
    delay = 1_000 + rng.exponential(8_000, size=len(j)).astype(np.int64)
    click_ts = np.maximum(np.minimum(open_ts[j] + delay, exit_[v] - 1), open_ts[j])
    product = _choose_product(w, rooms, user[v], room[v], click_ts, rng)
    yield v, click_ts, "product_click", None, product

    fit_c = _fit(w, user[v], product)
    cart = rng.random(len(v)) < np.minimum(
        0.95, cfg.cart_given_product_click * np.exp(2 * (fit_c - _FIT_REF))
    )
    v, product = v[cart], product[cart]
    cart_ts = _after(rng, click_ts[cart], 2_000, 30_000, exit_[v])
    yield v, cart_ts, "cart_click", None, product

    buy = rng.random(len(v)) < cfg.buy_given_cart
    v, product = v[buy], product[buy]
    buy_ts = _after(rng, cart_ts[buy], 2_000, 60_000, exit_[v])
    value = w.catalog.price[product] * (1 + rng.poisson(0.3, size=len(v)))
    yield v, buy_ts, "buy", value, product


def _choose_product(
    w: LiveContext,
    rooms: Rooms,
    user: np.ndarray,
    room: np.ndarray,
    ts: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The product each click is on (``[n]``, 0-based): the one on stage at ``ts`` or one of
    two uniformly drawn earlier introductions of the room, by ``log 2 [on stage] + 3 fit``."""
    n = len(room)
    intro_ticks, intros_before = rooms.intro_index
    tick = rooms.tick_of(room, ts)  # [n]
    first = intros_before[rooms.offset[room]]  # ordinal of the room's first introduction
    last = intros_before[tick + 1] - 1  # ordinal of the latest introduction at or before ts
    last = np.maximum(last, first)
    earlier = first[:, None] + (rng.random((n, 2)) * (last - first + 1)[:, None]).astype(np.int64)
    cand = np.column_stack([rooms.product[tick], rooms.product[intro_ticks[earlier]]])  # [n, 3]
    fit = _fit(w, np.repeat(user, 3), cand.reshape(-1)).reshape(n, 3)
    score = 3 * fit + rng.gumbel(size=(n, 3))
    score[:, 0] += _ON_STAGE
    return cand[np.arange(n), np.argmax(score, axis=1)]


def _cart_on_stage(
    w: LiveContext,
    user: np.ndarray,
    room: np.ndarray,
    enter: np.ndarray,
    exit_: np.ndarray,
    exc: np.ndarray,
    shop: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[Emitted]:
    """World v1: a cart click on the product on stage at a uniform moment, then a buy."""
    cfg, rooms = w.cfg, w.rooms
    minutes = (exit_ - enter) / 60_000
    span = exit_[shop] - enter[shop] - 1
    at = enter[shop] + 1 + (rng.random(len(shop)) * span).astype(np.int64)  # inside the visit
    product = rooms.product[rooms.tick_of(room[shop], at)]
    fit = _fit(w, user[shop], product)
    rate = (
        cfg.cart_rate
        * minutes[shop] ** 0.7
        * np.exp(3 * (fit - _FIT_REF) + cfg.w_interact_excitement * exc[shop])
    )
    cart = (product >= 0) & (rng.random(len(shop)) < 1 - np.exp(-rate))
    shop, at, product = shop[cart], at[cart], product[cart]
    yield shop, at, "cart_click", None, product
    buy = rng.random(len(shop)) < cfg.buy_given_cart
    shop, at, product = shop[buy], at[buy], product[buy]
    buy_at = np.minimum(at + rng.integers(2_000, 60_000, size=len(shop)), exit_[shop] - 1)
    buy_at = np.maximum(buy_at, at)
    value = w.catalog.price[product] * (1 + rng.poisson(0.3, size=len(shop)))
    yield shop, buy_at, "buy", value, product
