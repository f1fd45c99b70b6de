"""Gifting graph structure (phenomenon 5): communities of users that favour the same few authors.

* Communities: a user's *main category* is ``argmax_c u^L . T_c``; the users of a main category
  are split at random into ``round(n_c / community_size)`` communities.
* Favourites: community ``g`` (main category ``c``) favours ``n_g ~ U{lo..hi}`` authors, the
  top of ``v_a . T_c + 0.3 q_a - favourite_popularity log(rank_a) + 0.3 Gumbel``
  (``favourites_per_community``; ``rank_a`` the author's rank by appeal ``q_a``, the order in
  which the platform exposes authors). Every member's favourite set is its community's set.
  World v2's ``favourite_popularity`` (0.5; 0 = World v1) makes communities favour authors that
  are on screen, so members visit, and gift, several of their favourites and the favourites of
  one community share gifters: Swing (MMBee's A2A metapaths) finds neighbours. With
  ``gifting_communities`` off each user draws an own set of the same size, the top of ``2 u^L . v_a + Gumbel`` (its own taste, not shared,
  without the popularity term).
* Gifts: a user with gift propensity ``g_u`` gifts in a visit with intensity
  ``gift_rate * g_u * (1 if the author is a favourite else off_favourite_gift) * minutes^0.8 *
  exp(w_interact_excitement * (e_visit - E_REF))`` (World v1; with ``timed_behaviours`` on the
  hazard of :mod:`live` located in time); the favourites also get ``+w_community`` on the click
  logit and start with familiarity ``favourite_familiarity`` (users follow, visit and are shown
  the authors they gift to). Most users have ``g_u = 0``.
* Gift value: a price from ``GIFT_PRICES`` with probability proportional to ``price^-0.9``
  (heavy tail), one price per gift event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverank.data.sim.config import SimConfig
from liverank.data.sim.population import Authors, Users, World
from liverank.data.sim.rng import stream

GIFT_PRICES = np.array([1.0, 2.0, 5.0, 10.0, 20.0, 52.0, 66.0, 99.0, 199.0, 520.0, 1314.0])
_GIFT_P = GIFT_PRICES**-0.9 / (GIFT_PRICES**-0.9).sum()
_CHUNK = 8192


@dataclass(frozen=True)
class GiftGraph:
    community: np.ndarray  # [U] community index of each user
    main_category: np.ndarray  # [U] category code the community is built on
    favourite_keys: np.ndarray  # sorted int64 keys user_idx * n_authors + author_idx
    n_authors: int

    def is_favourite(self, user: np.ndarray, author: np.ndarray) -> np.ndarray:
        """Whether ``author`` is in ``user``'s favourite set (elementwise, 0-based indices)."""
        key = user.astype(np.int64) * self.n_authors + author
        pos = np.searchsorted(self.favourite_keys, key)
        pos = np.minimum(pos, len(self.favourite_keys) - 1)
        return self.favourite_keys[pos] == key


def _top_per_row(score: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the ``count[row]`` largest entries of each row of ``score`` ``[N, A]``."""
    hi = int(count.max())
    top = np.argpartition(-score, hi - 1, axis=1)[:, :hi] if hi < score.shape[1] else None
    if top is None:
        top = np.argsort(-score, axis=1)
    rank = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1)
    top = np.take_along_axis(top, rank, axis=1)[:, :hi]  # [N, hi] best first
    keep = np.arange(top.shape[1])[None, :] < count[:, None]
    rows = np.broadcast_to(np.arange(len(score))[:, None], top.shape)
    return rows[keep], top[keep]


def make_gift_graph(cfg: SimConfig, world: World, users: Users, authors: Authors) -> GiftGraph:
    rng = stream(cfg.seed, "gifting")
    main = 1 + np.argmax(users.live @ world.centres.T, axis=1)  # [U] category code
    community = np.zeros(users.n, dtype=np.int64)
    comm_category: list[int] = []
    for c in np.unique(main):
        members = rng.permutation(np.flatnonzero(main == c))
        n_groups = max(1, int(round(len(members) / cfg.community_size)))
        community[members] = len(comm_category) + np.arange(len(members)) % n_groups
        comm_category += [int(c)] * n_groups
    lo, hi = cfg.favourites_per_community
    hi = min(hi, authors.n)
    lo = min(lo, hi)
    gumbel = stream(cfg.seed, "gifting-gumbel")
    if cfg.gifting_communities:
        centres = world.centres[np.array(comm_category) - 1]  # [G, K]
        score = centres @ authors.vec.T + 0.3 * authors.quality[None, :]
        score = score + cfg.favourite_popularity * log_rank(authors.quality)[None, :]
        score = score + gumbel.gumbel(size=score.shape) * 0.3
        count = rng.integers(lo, hi + 1, size=len(comm_category))
        g, a = _top_per_row(score, count)  # sorted by community g
        first = np.cumsum(count) - count  # [G] first (g, a) row of each community
        n_fav = count[community]  # [U]
        user = np.repeat(np.arange(users.n), n_fav)
        within = np.arange(len(user)) - np.repeat(np.cumsum(n_fav) - n_fav, n_fav)
        author = a[first[community][user] + within]
    else:
        count = rng.integers(lo, hi + 1, size=users.n)
        parts = []
        for s in range(0, users.n, _CHUNK):  # [chunk, A] at a time
            score = 2.0 * users.live[s : s + _CHUNK] @ authors.vec.T
            score = score + gumbel.gumbel(size=score.shape)
            r, a = _top_per_row(score, count[s : s + _CHUNK])
            parts.append((r + s, a))
        user = np.concatenate([p[0] for p in parts])
        author = np.concatenate([p[1] for p in parts])
    keys = np.unique(user.astype(np.int64) * authors.n + author)
    return GiftGraph(community, main, keys, authors.n)


def log_rank(quality: np.ndarray) -> np.ndarray:
    """``-log(rank)`` of each author by ``quality`` (0 for the most appealing author): the
    order in which the platform exposes authors (``population.zipf_popularity``)."""
    return -np.log(1 + np.argsort(np.argsort(-quality, kind="stable"), kind="stable"))


def gift_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` gift prices (heavy-tailed, all > 0)."""
    return GIFT_PRICES[rng.choice(len(GIFT_PRICES), size=n, p=_GIFT_P)]
