"""MMBee's metapath-guided neighbours (section 5.3, Definitions 1-2, Eq. 10-11).

For every user and every author, the top-``k`` nodes reached along five metapaths over the U2A
gifting graph ``W [U + 1, A + 1]`` (:mod:`.gifting`) and the A2A Swing graph ``S [A + 1, A + 1]``
(:mod:`.swing`):

============  ===============================  ================================================
metapath      walk                              neighbours
============  ===============================  ================================================
``u2a2u``     user -> author -> user           users who gifted the same authors (not u itself)
``u2a2u2a``   user -> author -> user -> author  authors those users gifted, **minus the authors
                                                u already gifted** (the paper's exclusion)
``u2a2a``     user -> author -> author         authors Swing-similar to u's gifted authors
                                                (u's own authors may appear: no exclusion)
``a2a``       author -> author                 Swing neighbours (the paper's rho_a2a2a, step 1)
``a2u2a``     author -> user -> author         authors gifted by a's gifters (not a itself)
============  ===============================  ================================================

**Weight of a neighbour** = the probability that a random walk from the node, following the
metapath and taking each edge with probability proportional to its weight, ends there: the sum
over paths of the product of row-normalised edge weights, i.e. an entry of a product of
transition matrices ``P_ua = rownorm(W)``, ``P_au = rownorm(W^T)``, ``P_aa = rownorm(S)``
(``u2a2u = P_ua P_au``, ``u2a2u2a = P_ua P_au P_ua``, ``u2a2a = P_ua P_aa``, ``a2a = P_aa``,
``a2u2a = P_au P_ua``). Why: it is Definition 2's walk made quantitative; money decides where a
walk goes (a user's big gift counts more than a token one, as the U2A weights intend), every
node's weights sum to at most 1 whatever its degree, so a whale or a star author does not
dominate everyone's list by sheer volume, and a path through a node with few edges (a specific
taste) counts more than one through a hub. Excluded nodes are removed after the product (the
remaining weights are not renormalised). Ties: weight descending, then the smaller id.

**Fanout.** ``fanout=F`` follows only the ``F`` heaviest edges out of each node in every hop
(each transition matrix keeps its top-``F`` entries per row, not renormalised), so a weight is
the exact probability of the walks through those edges, a lower bound of the exact one. The cost
of ``u2a2u`` is ``sum_a |U_a|^2`` exactly (a star author's gifters are all each other's
neighbours) and at most ``F`` per first-hop edge with the fanout. Default ``None``: exact.

All nodes are computed at once with sparse products, by blocks of rows sized so a block's product
stays under ``BLOCK_ENTRIES`` entries (the only Python loop), then a vectorised top-``k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from liverank.errors import ConfigError
from liverank.graph.swing import top_k, top_k_triplets

#: metapath name -> (source node type, neighbour node type)
METAPATHS: dict[str, tuple[str, str]] = {
    "u2a2u": ("user", "user"),
    "u2a2u2a": ("user", "author"),
    "u2a2a": ("user", "author"),
    "a2a": ("author", "author"),
    "a2u2a": ("author", "author"),
}
#: upper bound on the entries of one row block's product (about 16 bytes each, plus scipy's)
BLOCK_ENTRIES = 1 << 23
#: refuse a metapath whose products would hold more entries than this in all (about 160 ns
#: each on the benchmark machine: 2e9 is some 5 minutes); the error names ``fanout``
MAX_ENTRIES = 2_000_000_000


def row_normalise(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Each row divided by its sum (empty rows stay empty)."""
    m = sp.csr_matrix(matrix, dtype=np.float64)
    sums = np.asarray(m.sum(axis=1)).ravel()  # [R]
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    out = sp.csr_matrix(sp.diags(inv) @ m)
    out.sort_indices()
    return out


def keep_top(matrix: sp.csr_matrix, fanout: int | None) -> sp.csr_matrix:
    """``matrix`` with only its ``fanout`` heaviest entries per row (ties: smaller column)."""
    if fanout is None:
        return matrix
    if fanout < 1:
        raise ConfigError(f"fanout must be >= 1, got {fanout}")
    ids, weights = top_k(matrix, fanout)  # [R, F]
    rows = np.repeat(np.arange(matrix.shape[0]), fanout)
    live = weights.ravel() > 0
    out = sp.csr_matrix(
        (weights.ravel()[live], (rows[live], ids.ravel()[live])), shape=matrix.shape
    )
    out.sort_indices()
    return out


@dataclass(frozen=True)
class Transitions:
    """The walk's transition matrices (row-normalised, pruned to ``fanout``)."""

    ua: sp.csr_matrix  # [U + 1, A + 1] user -> author
    au: sp.csr_matrix  # [A + 1, U + 1] author -> user
    aa: sp.csr_matrix  # [A + 1, A + 1] author -> author (Swing)
    gifted: sp.csr_matrix  # [U + 1, A + 1] 0/1 edges of the U2A graph (for the exclusion)

    @classmethod
    def build(
        cls, u2a: sp.spmatrix, swing_matrix: sp.spmatrix, fanout: int | None = None
    ) -> Transitions:
        W = sp.csr_matrix(u2a, dtype=np.float64)
        S = sp.csr_matrix(swing_matrix, dtype=np.float64)
        if S.shape != (W.shape[1], W.shape[1]):
            raise ConfigError(f"swing matrix {S.shape} does not match the U2A graph {W.shape}")
        if (W.data < 0).any() or (S.data < 0).any():
            raise ConfigError("graph weights must be >= 0")
        W.eliminate_zeros()
        gifted = sp.csr_matrix((np.ones(W.nnz), W.indices, W.indptr), shape=W.shape)
        gifted.sort_indices()
        return cls(
            ua=keep_top(row_normalise(W), fanout),
            au=keep_top(row_normalise(W.T), fanout),
            aa=keep_top(row_normalise(S), fanout),
            gifted=gifted,
        )

    def chain(self, metapath: str) -> list[sp.csr_matrix]:
        """The transition matrices multiplied along ``metapath``."""
        chains = {
            "u2a2u": [self.ua, self.au],
            "u2a2u2a": [self.ua, self.au, self.ua],
            "u2a2a": [self.ua, self.aa],
            "a2a": [self.aa],
            "a2u2a": [self.au, self.ua],
        }
        if metapath not in chains:
            raise ConfigError(f"unknown metapath {metapath!r}; known: {', '.join(METAPATHS)}")
        return chains[metapath]


def _row_blocks(chain: list[sp.csr_matrix], metapath: str) -> list[tuple[int, int]]:
    """Row ranges whose product has at most about ``BLOCK_ENTRIES`` entries (an upper bound:
    the number of paths, counted right to left with 0/1 matrices, at most the columns)."""
    paths = np.ones(chain[-1].shape[1])  # [C]
    for m in reversed(chain):
        paths = (m != 0).astype(np.float64) @ paths  # [rows of m] number of paths
    n_rows = chain[0].shape[0]
    before = np.r_[0.0, np.cumsum(np.minimum(paths, chain[-1].shape[1]))]  # [R + 1]
    if before[-1] > MAX_ENTRIES:
        raise ConfigError(
            f"metapath {metapath} would rank up to {before[-1]:,.0f} entries (> MAX_ENTRIES="
            f"{MAX_ENTRIES:,}): authors with very large audiences; pass fanout (e.g. 100; "
            "`liverank graph build --fanout 100`)"
        )
    cuts = np.searchsorted(before, np.arange(BLOCK_ENTRIES, before[-1], BLOCK_ENTRIES), "right")
    bounds = np.unique(np.r_[0, np.clip(cuts - 1, 1, n_rows), n_rows])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def neighbours(
    transitions: Transitions, metapath: str, k: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of every node along ``metapath``: ``(ids [R, k], weights [R, k])``
    (``R`` = n_users + 1 or n_authors + 1), weight descending, ties to the smaller id, 0-padded."""
    chain = transitions.chain(metapath)
    source, target = METAPATHS[metapath]
    n_rows = chain[0].shape[0]
    ids = np.zeros((n_rows, k), dtype=np.int64)
    weights = np.zeros((n_rows, k))
    gifted = transitions.gifted
    for r0, r1 in _row_blocks(chain, metapath):
        block = chain[0][r0:r1]
        for m in chain[1:]:
            block = block @ m  # [r1 - r0, next node type]
        coo = block.tocoo()
        rows, cols, vals = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
        if source == target:  # exclude the node itself
            keep = cols != rows + r0
        elif metapath == "u2a2u2a":  # exclude the authors the user already gifted
            edges = gifted[r0:r1].tocoo()
            known = np.sort(edges.row.astype(np.int64) * gifted.shape[1] + edges.col)
            key = rows * gifted.shape[1] + cols
            at = np.minimum(np.searchsorted(known, key), max(known.size - 1, 0))
            keep = known[at] != key if known.size else np.ones(key.size, bool)
        else:
            keep = np.ones(rows.size, bool)
        i, w = top_k_triplets(rows[keep], cols[keep], vals[keep], r1 - r0, k)
        ids[r0:r1], weights[r0:r1] = i, w
    return ids, weights


def metapath_neighbours(
    u2a: sp.spmatrix,
    swing_matrix: sp.spmatrix,
    k: int = 20,
    *,
    metapaths: tuple[str, ...] = tuple(METAPATHS),
    fanout: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All ``metapaths`` at once: name -> ``(ids [R, k], weights [R, k])``."""
    transitions = Transitions.build(u2a, swing_matrix, fanout)
    return {name: neighbours(transitions, name, k) for name in metapaths}
