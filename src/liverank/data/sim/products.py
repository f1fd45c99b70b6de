"""The product domain: category tree, catalogue, shopping-room category chains, e-commerce events.

* Category tree: ``n_verticals`` cat1 ⊃ ``cat2_per_cat1`` cat2 ⊃ ``cat3_per_cat2`` cat3. A fine
  category has a latent vector near its vertical's centre,
  ``w_c3 = normalise(T_v + 0.5 g_c2 + 0.4 g_c3)``.
* Consistent style (phenomenon 4, LiveForesighter's "authors have consistent style"): a shopping
  room introduces products whose cat3 follows a first-order Markov chain inside the author's
  vertical, ``P[i, sigma(i)] += 0.55``, ``P[i, sigma^2(i)] += 0.15`` for a random cyclic order
  ``sigma`` of the vertical's cat3s, and 0.30 spread by a Dirichlet(1) draw. With
  ``consistent_style`` off the cat3s are drawn i.i.d. from the chain's stationary distribution,
  so the most-frequent-category baseline is the same in both cases.
* E-commerce events (outside rooms): a user clicks ``Poisson(product_clicks_per_day * mult *
  rate_u / mean rate)`` products a day (``mult`` = ``product_click_mult`` with ``live_shopping``
  on, the dense product domain of eLiveRec; 1 off); a click picks cat3 with probability
  ``softmax(4 * u^P . w_c3)`` and a product uniformly inside it; a cart follows with probability
  ``0.12 * (1 + u^P . w_c3)``, a buy follows a cart with probability 0.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from liverank.data.sim.clock import sample_in_day
from liverank.data.sim.config import SimConfig
from liverank.data.sim.population import Users, World, normalise
from liverank.data.sim.rng import stream

PRODUCT_EVENT_CODES = {"click": 0, "cart": 1, "buy": 2}


@dataclass(frozen=True)
class Catalog:
    product_id: np.ndarray  # [P] int64, 1..P, grouped by cat3 (per_cat3 consecutive ids)
    cat3_of_product: np.ndarray  # [P] 0-based cat3 index
    price: np.ndarray  # [P]
    per_cat3: int
    cat3_cat1: np.ndarray  # [n3] 0-based vertical of each cat3
    cat3_cat2: np.ndarray  # [n3] 0-based global cat2 index of each cat3
    cat3_vec: np.ndarray  # [n3, K] unit
    transition: np.ndarray  # [n3, n3] block-diagonal Markov chain (rows sum to 1)
    stationary: np.ndarray  # [n3] stationary distribution, per vertical block summing to 1

    @property
    def n_cat3(self) -> int:
        return len(self.cat3_cat1)

    def table(self) -> pl.DataFrame:
        c3 = self.cat3_of_product
        return pl.DataFrame(
            {
                "product_id": self.product_id,
                "cat1": self.cat3_cat1[c3] + 1,
                "cat2": self.cat3_cat2[c3] + 1,
                "cat3": c3 + 1,
                "price": self.price,
            }
        )

    def pick_product(self, rng: np.random.Generator, cat3: np.ndarray) -> np.ndarray:
        """A uniformly random product index (0-based) of each cat3 in ``cat3``."""
        return cat3 * self.per_cat3 + rng.integers(0, self.per_cat3, size=len(cat3))


def _chain(rng: np.random.Generator, n: int) -> np.ndarray:
    """A peaked ``[n, n]`` transition matrix: a random cycle, its square, and a diffuse rest."""
    order = rng.permutation(n)
    nxt = np.empty(n, dtype=np.int64)
    nxt[order] = np.roll(order, -1)
    p = 0.30 * rng.dirichlet(np.ones(n), size=n)
    p[np.arange(n), nxt] += 0.55
    p[np.arange(n), nxt[nxt]] += 0.15
    return p / p.sum(axis=1, keepdims=True)


def _stationary(p: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eig(p.T)
    v = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1.0))]))
    return v / v.sum()


def make_catalog(cfg: SimConfig, world: World) -> Catalog:
    rng = stream(cfg.seed, "catalog")
    n1, n2, n3 = cfg.n_verticals, cfg.cat2_per_cat1, cfg.cat3_per_cat2
    k = cfg.latent_dim
    cat3_cat2 = np.repeat(np.arange(n1 * n2), n3)
    cat3_cat1 = cat3_cat2 // n2
    vert = world.centres[world.vertical_code(cat3_cat1) - 1]
    g2 = rng.standard_normal((n1 * n2, k))[cat3_cat2] / np.sqrt(k)
    g3 = rng.standard_normal((len(cat3_cat1), k)) / np.sqrt(k)
    cat3_vec = normalise(vert + 0.5 * g2 + 0.4 * g3)
    per_vertical = n2 * n3
    transition = np.zeros((len(cat3_cat1), len(cat3_cat1)))
    stationary = np.zeros(len(cat3_cat1))
    for v in range(n1):
        block = slice(v * per_vertical, (v + 1) * per_vertical)
        transition[block, block] = _chain(rng, per_vertical)
        stationary[block] = _stationary(transition[block, block])
    per = cfg.products_per_cat3
    cat3_of_product = np.repeat(np.arange(len(cat3_cat1)), per)
    median = np.exp(rng.uniform(np.log(15), np.log(200), size=n1))[cat3_cat1[cat3_of_product]]
    price = np.round(median * rng.lognormal(0.0, 0.6, size=len(cat3_of_product)), 2) + 0.99
    product_id = np.arange(1, len(cat3_of_product) + 1, dtype=np.int64)
    return Catalog(
        product_id, cat3_of_product, price, per, cat3_cat1, cat3_cat2, cat3_vec,
        transition, stationary,
    )  # fmt: skip


def category_sequences(
    cfg: SimConfig,
    catalog: Catalog,
    rng: np.random.Generator,
    vertical: np.ndarray,
    lengths: np.ndarray,
) -> np.ndarray:
    """Cat3 sequences of ``len(vertical)`` shopping rooms (vertical = cat1 index per room).

    Returns the 0-based cat3 of every product cycle, rooms concatenated in order (``[sum L]``).
    Vectorised over rooms: one numpy step per position in the sequence.
    """
    n3 = catalog.n_cat3
    per_vertical = n3 // cfg.n_verticals
    lengths = np.asarray(lengths, dtype=np.int64)
    max_len = int(lengths.max(initial=0))
    out = np.zeros((len(vertical), max_len), dtype=np.int64)  # [R, Lmax]
    if max_len == 0:
        return out.reshape(-1)
    start = vertical * per_vertical
    stat = catalog.stationary.reshape(cfg.n_verticals, per_vertical)
    stat_cdf = np.cumsum(stat, axis=1)[vertical]  # [R, per_vertical]
    u = rng.random((len(vertical), max_len))
    iid = start[:, None] + np.minimum(
        (stat_cdf[:, None, :] < u[:, :, None]).sum(axis=2), per_vertical - 1
    )  # [R, Lmax]
    if not cfg.consistent_style:
        out = iid
    else:
        cdf = np.cumsum(catalog.transition, axis=1)  # [n3, n3]
        out[:, 0] = iid[:, 0]
        for j in range(1, max_len):
            rows = cdf[out[:, j - 1]]  # [R, n3]
            out[:, j] = np.minimum((rows < u[:, j : j + 1]).sum(axis=1), n3 - 1)
    keep = np.arange(max_len)[None, :] < lengths[:, None]
    return out[keep]


def product_events(
    cfg: SimConfig, catalog: Catalog, users: Users, day: int, day_start: int
) -> pl.DataFrame:
    """E-commerce clicks, carts and buys of one day (columns of ``product_events``)."""
    rng = stream(cfg.seed, "product-events", day)
    mean_rate = float(np.mean(users.request_rate))
    mult = cfg.product_click_mult if cfg.live_shopping else 1.0
    rate = cfg.product_clicks_per_day * mult * users.request_rate / max(mean_rate, 1e-9)
    counts = rng.poisson(rate)
    user_idx = np.repeat(np.arange(users.n), counts)  # [E]
    ts = sample_in_day(rng, len(user_idx), day_start)
    n3 = catalog.n_cat3
    match = users.product @ catalog.cat3_vec.T  # [U, n3], per user (not per event: memory)
    logits = 4.0 * match
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # [U, n3]
    # inverse-cdf draw on every user's row at once: row u is shifted by u, so one sorted array
    flat = (cdf + np.arange(users.n)[:, None]).reshape(-1)  # [U * n3], increasing
    u = rng.random((len(user_idx), 1))[:, 0]
    cat3 = np.searchsorted(flat, user_idx + u, side="left") - user_idx * n3
    cat3 = np.clip(cat3, 0, n3 - 1)
    product = catalog.pick_product(rng, cat3)
    fit = match[user_idx, cat3]
    cart = rng.random(len(user_idx)) < 0.12 * (1.0 + fit)
    buy = cart & (rng.random(len(user_idx)) < 0.4)
    last = cfg.end_ts - 1  # cut to the period's end
    cart_ts = np.minimum(ts + rng.integers(5_000, 300_000, size=len(ts)), last)
    buy_ts = np.minimum(cart_ts + rng.integers(30_000, 1_800_000, size=len(ts)), last)
    return pl.DataFrame(
        {
            "ts": np.concatenate([ts, cart_ts[cart], buy_ts[buy]]),
            "user_id": users.user_id[np.concatenate([user_idx, user_idx[cart], user_idx[buy]])],
            "product_id": catalog.product_id[
                np.concatenate([product, product[cart], product[buy]])
            ],
            "event": np.repeat(
                np.array(list(PRODUCT_EVENT_CODES), dtype=object),
                [len(ts), int(cart.sum()), int(buy.sum())],
            ).astype(str),
        }
    )
