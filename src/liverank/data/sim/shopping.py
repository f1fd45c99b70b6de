"""Shopping inside live rooms (phenomenon 1's product domain; eLiveRec): what a visitor of a
shopping room does with the products on sale.

A visit of ``m`` minutes to a shopping room, with ``fit = u^P . w_cat3`` of the product on
stage at a uniform time inside the visit, gives a cart click with probability
``1 - exp(-lambda)``,

    lambda = cart_rate * m^0.7 * exp(3 (fit - 0.3) + w_interact_excitement (e_visit - E_REF)),

on that product; a buy follows with probability ``buy_given_cart``, 2-60 s later (before the
exit), of value ``price * (1 + Poisson(0.3))``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from liverank.data.sim.population import SHOPPING

if TYPE_CHECKING:
    from liverank.data.sim.live import LiveContext

#: ``(visit index, ts, event name, value or None, product index or None)`` of emitted events
Emitted = tuple[np.ndarray, np.ndarray, str, np.ndarray | None, np.ndarray | None]


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
    enough to hold an event."""
    cfg, rooms = w.cfg, w.rooms
    minutes = (exit_ - enter) / 60_000
    shop = np.flatnonzero(room_events & (rooms.type_idx[room] == SHOPPING))
    span = exit_[shop] - enter[shop] - 1
    at = enter[shop] + 1 + (rng.random(len(shop)) * span).astype(np.int64)  # inside the visit
    product = rooms.product[rooms.tick_of(room[shop], at)]
    fit = np.einsum(
        "nk,nk->n",
        w.users.product[user[shop]],
        w.catalog.cat3_vec[w.catalog.cat3_of_product[product]],
    )
    rate = (
        cfg.cart_rate
        * minutes[shop] ** 0.7
        * np.exp(3 * (fit - 0.3) + cfg.w_interact_excitement * exc[shop])
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
