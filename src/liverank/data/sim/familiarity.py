"""Familiarity: what a user's history with an author adds to the next click (habit, revisits).

``F(u, a)`` accumulates over time (never decays within the period):

* live: +1 per visit of at least 3 s, +1 more for a long view, +3 per follow or gift event;
* short video (only with ``cross_domain_interest`` on, so that the switch makes the domains
  independent): +0.2 per completed play (>= 90 % of the video), +0.5 per like or share,
  +3 per follow.

The click logit gets ``w_familiarity * log(1 + F(u, a))``, so users revisit authors they liked
and a sequence model that sees the history of both domains can predict the next click.
The map is stored as sorted int64 keys ``u * n_authors + a`` with float values; updates merge
sorted arrays (no Python loop over events).
"""

from __future__ import annotations

import numpy as np


class Familiarity:
    """A sparse, growing map ``(user, author) -> familiarity``."""

    def __init__(self, n_authors: int) -> None:
        self.n_authors = n_authors
        self.keys = np.zeros(0, dtype=np.int64)
        self.values = np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    def _key(self, user: np.ndarray, author: np.ndarray) -> np.ndarray:
        return user.astype(np.int64) * self.n_authors + author

    def get(self, user: np.ndarray, author: np.ndarray) -> np.ndarray:
        """Familiarity of each ``(user[i], author[i])`` (0 when unseen)."""
        if len(self.keys) == 0:
            return np.zeros(len(user))
        key = self._key(user, author)
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        return np.where(self.keys[pos] == key, self.values[pos], 0.0)

    def dense(self, user: np.ndarray, author: np.ndarray) -> np.ndarray:
        """``[len(user), len(author)]`` matrix of familiarities (rows: users, columns: authors).

        Reads each user's contiguous run of keys once (no search per pair), so it costs
        ``O(len(user) log n + entries of those users)``.
        """
        distinct, inverse = np.unique(author, return_inverse=True)
        if len(distinct) < len(author):  # an author may own two candidate rooms
            return self.dense(user, distinct)[:, inverse]
        out = np.zeros((len(user), len(author)))
        if len(self.keys) == 0 or len(user) == 0:
            return out
        base = user.astype(np.int64) * self.n_authors
        lo = np.searchsorted(self.keys, base)
        count = np.searchsorted(self.keys, base + self.n_authors) - lo
        row = np.repeat(np.arange(len(user)), count)
        idx = np.repeat(lo - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        column = np.full(self.n_authors, -1)
        column[author] = np.arange(len(author))
        col = column[self.keys[idx] % self.n_authors]
        hit = col >= 0
        out[row[hit], col[hit]] = self.values[idx[hit]]
        return out

    def add(self, user: np.ndarray, author: np.ndarray, amount: np.ndarray) -> None:
        """Add ``amount[i]`` to ``(user[i], author[i])``."""
        if len(user) == 0:
            return
        key, inverse = np.unique(self._key(user, author), return_inverse=True)
        total = np.bincount(inverse, weights=np.broadcast_to(amount, inverse.shape))
        pos = np.searchsorted(self.keys, key)
        found = np.zeros(len(key), dtype=bool)
        if len(self.keys):
            found = self.keys[np.minimum(pos, len(self.keys) - 1)] == key
        self.values[pos[found]] += total[found]  # keys are unique: no repeated index
        new = ~found
        if new.any():
            self.keys = np.insert(self.keys, pos[new], key[new])
            self.values = np.insert(self.values, pos[new], total[new])
