"""MMBee's Author-to-Author (A2A) graph: Swing similarity over the U2A gifting graph (Eq. 8).

    s(i, j) = sum_{u in U_i ∩ U_j} sum_{v in U_i ∩ U_j} 1 / (alpha + |I_u ∩ I_v|),   i != j

``U_i``: the users who gifted author ``i``; ``I_u``: the authors user ``u`` gifted (the edge
weights do not enter Swing, only the edges).

**Pairs.** ``pairs="all"`` (default) is Eq. 8 as printed: both sums run over all users, so the
``u = v`` terms ``1 / (alpha + |I_u|)`` are included. ``pairs="distinct"`` keeps only ``u != v``
(ordered pairs, so each unordered pair counts twice), as in the original Swing paper (Yang et
al., 2020), where one user gifting both authors is no "swing" at all. ``all = distinct +
sum_{u in U_i ∩ U_j} 1 / (alpha + |I_u|)``.

**Cap.** ``max_users_per_author=K`` keeps, for each author, only its ``K`` heaviest gifters
(largest total gift value, ties to the smaller user id) and computes Eq. 8 exactly on that
pruned graph (``U_i`` and ``I_u`` both from the pruned graph). Default ``None``: exact.

**Algorithm** (vectorised NumPy; one Python loop over chunks of users). Only user pairs that
share two authors add anything, so the work is the useful terms only, never the user-user
co-gift matrix ``B B^T`` (size ``sum_a |U_a|^2``, mostly pairs sharing a single author):

1. triples ``(u, i, j)``, ``i < j`` both in ``I_u``: ``T = sum_u |I_u| (|I_u| - 1) / 2``,
   sorted into groups by author pair;
2. the ``u = v`` terms: a weighted count per group;
3. quadruples ``(u, v, i, j)``, ``u < v`` both in the group of ``(i, j)``: ``Q = sum_{i<j}
   |U_i ∩ U_j| (|U_i ∩ U_j| - 1) / 2``, enumerated in chunks of ``u`` so that every pair
   ``(u, v)`` is inside one chunk. The pair appears in exactly ``c (c - 1) / 2`` groups,
   ``c = |I_u ∩ I_v|``, so counting its quadruples in the chunk gives ``c`` with no lookup;
   each quadruple adds ``2 / (alpha + c)`` to its group.

Time ``O(T log T + Q log C)`` (sorts; ``C`` the chunk size), memory ``O(T)`` plus one chunk of
``CHUNK_QUADRUPLES``. ``Q`` is the cost: it grows with the square of the audiences that authors
share, which ``max_users_per_author = K`` bounds (``Q <= T (K - 1) / 2``).

:func:`top_k` keeps the ``k`` heaviest entries of each row of any sparse matrix.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse as sp

from liverank.errors import ConfigError

PairMode = Literal["all", "distinct"]
#: default limit on the quadruples of step 3 (their memory is bounded by chunks; about 50 ns
#: each on the benchmark machine: 1e10 is some 8 minutes)
MAX_QUADRUPLES = 10_000_000_000
#: quadruples enumerated at once (bounds the working memory of step 3 to a few hundred MB)
CHUNK_QUADRUPLES = 1 << 22


def segment_pairs(indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All positions ``(p, q)``, ``p < q``, inside each segment ``[indptr[s], indptr[s+1])``.

    Returns ``(p [P], q [P], segment [P])``, ordered by segment then ``p`` then ``q``;
    ``P = sum_s n_s (n_s - 1) / 2``.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    sizes = np.diff(indptr)  # [S]
    seg_of = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)  # [N] segment of a position
    pos = np.arange(indptr[0], indptr[-1], dtype=np.int64)  # [N]
    partners = indptr[seg_of + 1] - pos - 1 if pos.size else pos  # [N] later positions in segment
    p = np.repeat(pos, partners)  # [P]
    first = np.cumsum(partners) - partners  # [N] first pair of each position
    q = p + 1 + (np.arange(p.size, dtype=np.int64) - np.repeat(first, partners))  # [P]
    return p, q, seg_of[p - indptr[0]]


def binary_u2a(u2a: sp.spmatrix, max_users_per_author: int | None = None) -> sp.csr_matrix:
    """The 0/1 matrix of the U2A edges ``[U + 1, A + 1]`` (sorted indices), optionally keeping
    only each author's ``max_users_per_author`` heaviest gifters (ties: smaller user id)."""
    W = sp.csr_matrix(u2a, dtype=np.float64)
    W.sum_duplicates()
    W.eliminate_zeros()
    if max_users_per_author is not None:
        if max_users_per_author < 1:
            raise ConfigError(f"max_users_per_author must be >= 1, got {max_users_per_author}")
        coo = W.tocoo()
        order = np.lexsort((coo.row, -coo.data, coo.col))  # by author, weight desc, user asc
        col = coo.col[order]
        starts = np.searchsorted(col, col, side="left")  # first entry of the author's run
        keep = order[(np.arange(col.size) - starts) < max_users_per_author]
        W = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=W.shape)
    B = sp.csr_matrix((np.ones(W.nnz), W.indices, W.indptr), shape=W.shape)
    B.sort_indices()
    return B


def swing(
    u2a: sp.spmatrix,
    alpha: float = 1.0,
    *,
    pairs: PairMode = "all",
    max_users_per_author: int | None = None,
    max_quadruples: int | None = MAX_QUADRUPLES,
) -> sp.csr_matrix:
    """Swing similarity ``S [A + 1, A + 1]`` (symmetric, zero diagonal) of the U2A graph
    ``u2a [U + 1, A + 1]`` (weights are used only by ``max_users_per_author``).

    Raises :class:`ConfigError` before the quadruple stage when it would enumerate more than
    ``max_quadruples`` terms (``None``: no limit), naming the count and the cap to set.
    """
    if pairs not in ("all", "distinct"):
        raise ConfigError(f"pairs must be 'all' (Eq. 8 as printed) or 'distinct', got {pairs!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ConfigError(f"alpha must be a finite number >= 0, got {alpha}")
    B = binary_u2a(u2a, max_users_per_author)
    n_users, n_authors = B.shape
    degree = np.diff(B.indptr)  # [U+1] |I_u|
    # 1. triples (u, i, j), i < j, user-major; then sorted by author pair (users ascend within)
    p, q, tri_user = segment_pairs(B.indptr)  # [T]
    pair_key = B.indices[p].astype(np.int64) * n_authors + B.indices[q]  # [T]
    del p, q
    order = np.argsort(pair_key, kind="stable")  # [T] sorted position -> triple
    pair_key = pair_key[order]
    new = np.r_[True, pair_key[1:] != pair_key[:-1]] if pair_key.size else np.zeros(0, bool)
    group_ptr = np.r_[np.flatnonzero(new), pair_key.size].astype(np.int64)  # [G+1]
    keys = pair_key[group_ptr[:-1]]  # [G] i * (A + 1) + j of each author pair with co-gifters
    group_of = np.cumsum(new) - 1  # [T] group of each sorted position
    del pair_key, new
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)  # [T] triple -> sorted position
    sorted_user = tri_user[order]  # [T]
    del order
    # 2. the u = v terms
    score = np.zeros(keys.size)  # [G]
    if pairs == "all":
        weight = 1.0 / (alpha + degree[sorted_user])
        score += np.bincount(group_of, weights=weight, minlength=keys.size)
    # 3. quadruples (u < v, i < j), by chunks of u: c = |I_u ∩ I_v| from the pair's count
    partners = group_ptr[group_of[rank] + 1] - rank - 1  # [T] later users in the triple's group
    for t0, t1 in _user_chunks(tri_user, partners, max_quadruples):
        n = partners[t0:t1]
        first = np.cumsum(n) - n
        pos = np.repeat(rank[t0:t1], n)  # [Qc] sorted position of u's triple
        pos += 1 + np.arange(pos.size) - np.repeat(first, n)  # ... of v's triple
        uv = np.repeat(tri_user[t0:t1], n) * n_users + sorted_user[pos]  # [Qc]
        _, inverse, count = np.unique(uv, return_inverse=True, return_counts=True)
        common = np.rint((1.0 + np.sqrt(1.0 + 8.0 * count)) / 2.0)  # [Pc] c(c-1)/2 = count
        term = (2.0 / (alpha + common))[inverse.ravel()]  # [Qc] orders (u, v) and (v, u)
        score += np.bincount(group_of[pos], weights=term, minlength=keys.size)
    i, j = keys // n_authors, keys % n_authors  # [G] i < j
    keep = score > 0
    rows = np.r_[i[keep], j[keep]]
    cols = np.r_[j[keep], i[keep]]
    S = sp.csr_matrix((np.r_[score[keep], score[keep]], (rows, cols)), shape=(n_authors, n_authors))
    S.sort_indices()
    return S


def _user_chunks(
    tri_user: np.ndarray, partners: np.ndarray, max_quadruples: int | None
) -> list[tuple[int, int]]:
    """Ranges of the user-major triples ``[T]`` holding about ``CHUNK_QUADRUPLES`` quadruples,
    cut only between users (all pairs ``(u, v)`` of one ``u`` fall in one chunk)."""
    total = int(partners.sum())
    if max_quadruples is not None and total > max_quadruples:
        raise ConfigError(
            f"exact Swing needs {total:,} user-pair terms (> max_quadruples={max_quadruples:,}): "
            "some author pairs share very large audiences; set max_users_per_author (e.g. 1000) "
            "or raise max_quadruples"
        )
    if total == 0:
        return []
    starts = np.flatnonzero(np.r_[True, tri_user[1:] != tri_user[:-1]])  # [Un] first triple
    before = np.r_[0, np.cumsum(partners)][starts]  # [Un] quadruples before each user
    at = np.searchsorted(before, np.arange(CHUNK_QUADRUPLES, total, CHUNK_QUADRUPLES))
    cuts = np.where(at < starts.size, starts[np.minimum(at, starts.size - 1)], partners.size)
    bounds = np.unique(np.r_[0, cuts, partners.size])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _run_start(sorted_values: np.ndarray) -> np.ndarray:
    """For each position of a sorted array, the first position holding the same value."""
    if not sorted_values.size:
        return np.zeros(0, dtype=np.int64)
    change = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    return np.maximum.accumulate(np.where(change, np.arange(sorted_values.size), 0))


def top_k_triplets(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` heaviest ``(col, val)`` of each row from entries ``[N]`` (no duplicate
    ``(row, col)``): ``(ids [n_rows, k] int64, weights [n_rows, k] float64)``, 0-padded.

    Order: weight descending, ties to the smaller column id (deterministic). Entries with a
    weight <= 0 are dropped.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    ids = np.zeros((n_rows, k), dtype=np.int64)
    weights = np.zeros((n_rows, k))
    live = vals > 0
    rows, cols, vals = rows[live], cols[live], vals[live]
    # weight rank (0 = heaviest, equal weights share one) and one integer sort by (row, rank);
    # cheaper than a 3-key lexsort of everything: only the candidates (rank < k in the row, plus
    # the ties of the k-th) are then ordered by column
    _, wrank = np.unique(-vals, return_inverse=True)  # [N]
    wrank = wrank.ravel().astype(np.int64)
    key = rows * (int(wrank.max(initial=0)) + 1) + wrank  # [N] row, then weight descending
    order = np.argsort(key, kind="stable")
    heavier = _run_start(key[order]) - _run_start(rows[order])  # strictly heavier in the row
    cand = order[heavier < k]
    order = cand[np.lexsort((cols[cand], wrank[cand], rows[cand]))]
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(rows.size) - _run_start(rows)  # [N'] rank in its row
    top = rank < k
    ids[rows[top], rank[top]] = cols[top]
    weights[rows[top], rank[top]] = vals[top]
    return ids, weights


def top_k(matrix: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` heaviest entries of each row of ``matrix [R, C]``: ``(ids [R, k], weights
    [R, k])``, weight descending, ties to the smaller column id, 0-padded (id 0, weight 0).

    >>> S = sp.csr_matrix(np.array([[0, 0, 0, 0], [0, 0, 2.0, 2.0], [0, 2.0, 0, 3.0], [0, 2.0, 3.0, 0]]))
    >>> top_k(S, 3)[0].tolist()
    [[0, 0, 0], [2, 3, 0], [3, 1, 0], [2, 1, 0]]
    """
    coo = sp.coo_matrix(matrix)
    coo.sum_duplicates()
    return top_k_triplets(
        coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data, coo.shape[0], k
    )
