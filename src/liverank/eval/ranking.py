"""Per-request top-K metrics: Prec@K, Recall@K, NDCG@K and HitRate@K (eLiveRec sec. V, MMBee).

A *request* is one slate served to one user (``groups = request_id``). Rows of a request are
ranked by score, descending. For each request with at least one positive label:

* ``Prec@K   = E[#positives in the top K] / min(K, n)`` (``n`` = rows in the request, so a slate
  shorter than K is not penalised for the empty slots);
* ``Recall@K = E[#positives in the top K] / #positives``;
* ``NDCG@K   = E[DCG@K] / IDCG@K`` with ``DCG@K = sum_{i<K} rel_i / log2(i + 2)`` (``i``
  0-based) and ``IDCG@K = sum_{i < min(K, #positives)} 1 / log2(i + 2)``;
* ``HitRate@K = P(at least one positive in the top K)``.

Ties: ``E`` and ``P`` are taken over a uniformly random order of rows with equal scores, so the
result is deterministic, independent of row order, and a constant predictor scores the value of
a random ranking. NDCG@K equals ``sklearn.metrics.ndcg_score(..., k=K)`` (``ignore_ties=False``)
for every request with a positive. Requests without a positive are excluded (their metrics are
undefined), then the per-request values are averaged with equal weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln

from liverank.errors import ConfigError
from liverank.eval.inputs import binary_scored
from liverank.eval.ranks import RankedGroups, rank_within_groups

RANKING_METRICS: tuple[str, ...] = ("prec", "recall", "ndcg", "hit")


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ConfigError(f"K of a top-K metric must be a positive integer, got {k!r}")
    return int(k)


def _miss_probability(m: np.ndarray, p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """P(no positive among ``s`` rows drawn without replacement from ``m`` rows, ``p`` positive).

    ``C(m - p, s) / C(m, s)``, computed with log-gamma; 0 where ``m - p < s``.
    """
    free = m - p
    out = np.zeros(m.shape[0])
    ok = free >= s
    f, mm, ss = free[ok], m[ok], s[ok]
    out[ok] = np.exp(gammaln(f + 1) - gammaln(f - ss + 1) - gammaln(mm + 1) + gammaln(mm - ss + 1))
    return out


def per_request_at_k(r: RankedGroups, k: int) -> dict[str, np.ndarray]:
    """``{metric: [G]}`` for ``metric`` in :data:`RANKING_METRICS`, NaN for requests without a
    positive."""
    k = _check_k(k)
    g = r.block_group  # [T]
    n_groups = r.n_groups
    block_end = r.block_start + r.block_size  # [T] exclusive
    mean_gain = r.block_pos / r.block_size  # [T] tie-averaged label of each row in the block

    inside = np.clip(k - r.block_start, 0, r.block_size)  # [T] rows of the block in the top K
    hits = np.bincount(g, weights=mean_gain * inside, minlength=n_groups)  # [G]

    # cum_discount[i] = sum of the discounts of positions 0 .. i-1, positions beyond K worth 0
    cum_discount = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])  # [K+1]
    block_discount = (
        cum_discount[np.minimum(block_end, k)] - cum_discount[np.minimum(r.block_start, k)]
    )  # [T]
    dcg = np.bincount(g, weights=mean_gain * block_discount, minlength=n_groups)  # [G]
    n_pos = r.group_pos
    idcg = cum_discount[np.minimum(n_pos, k).astype(np.int64)]  # [G]

    # Hit: any positive in a block entirely inside the top K, else a draw from the block
    # that straddles position K (at most one per request).
    pos_full = np.bincount(g, weights=r.block_pos * (block_end <= k), minlength=n_groups)  # [G]
    straddle = (r.block_start < k) & (block_end > k)  # [T]
    hit_straddle = np.zeros(n_groups)  # [G]
    hit_straddle[g[straddle]] = 1.0 - _miss_probability(
        r.block_size[straddle].astype(np.float64),
        r.block_pos[straddle],
        (k - r.block_start[straddle]).astype(np.float64),
    )
    hit = np.where(pos_full > 0, 1.0, hit_straddle)

    valid = n_pos > 0
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["prec"] = hits / np.minimum(r.group_size, k)
        out["recall"] = hits / n_pos
        out["ndcg"] = dcg / idcg
    out["hit"] = hit
    for name in out:
        out[name] = np.where(valid, out[name], np.nan)
    return out


def ranking_at_k(
    labels: ArrayLike,
    scores: ArrayLike,
    groups: ArrayLike,
    ks: Sequence[int] = (1, 3, 5),
    mask: ArrayLike | None = None,
) -> dict[str, float]:
    """All top-K metrics for every K in ``ks`` from one sort.

    Returns:
        ``{"prec@K", "recall@K", "ndcg@K", "hit@K" for K in ks} | {"n_requests": ...}`` where
        ``n_requests`` counts the requests with at least one positive (the ones averaged).
        Metrics are NaN when no request has a positive.
    """
    ks = [_check_k(k) for k in ks]
    y, s, grp = binary_scored(labels, scores, mask, groups)
    r = rank_within_groups(y, s, grp)
    n_valid = int((r.group_pos > 0).sum())
    out: dict[str, float] = {}
    for k in ks:
        per = per_request_at_k(r, k)
        for name in RANKING_METRICS:
            out[f"{name}@{k}"] = float(np.nanmean(per[name])) if n_valid else float("nan")
    out["n_requests"] = float(n_valid)
    return out


def precision_at_k(
    labels: ArrayLike, scores: ArrayLike, groups: ArrayLike, k: int, mask: ArrayLike | None = None
) -> float:
    """Mean over requests with a positive of E[#positives in the top K] / min(K, slate size)."""
    return ranking_at_k(labels, scores, groups, (k,), mask)[f"prec@{k}"]


def recall_at_k(
    labels: ArrayLike, scores: ArrayLike, groups: ArrayLike, k: int, mask: ArrayLike | None = None
) -> float:
    """Mean over requests with a positive of E[#positives in the top K] / #positives."""
    return ranking_at_k(labels, scores, groups, (k,), mask)[f"recall@{k}"]


def ndcg_at_k(
    labels: ArrayLike, scores: ArrayLike, groups: ArrayLike, k: int, mask: ArrayLike | None = None
) -> float:
    """Mean over requests with a positive of the tie-averaged NDCG@K (binary gains)."""
    return ranking_at_k(labels, scores, groups, (k,), mask)[f"ndcg@{k}"]


def hit_rate_at_k(
    labels: ArrayLike, scores: ArrayLike, groups: ArrayLike, k: int, mask: ArrayLike | None = None
) -> float:
    """Mean over requests with a positive of P(at least one positive in the top K)."""
    return ranking_at_k(labels, scores, groups, (k,), mask)[f"hit@{k}"]
