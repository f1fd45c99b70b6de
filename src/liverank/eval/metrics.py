"""Vectorised evaluation metrics: AUC, UAUC, GAUC, logloss, MSE and the per-request @K metrics.

Definitions (formulas, tie handling, exclusions) are in ``docs/metrics.md``; in short:

* ``auc``: ROC AUC over all labelled rows, Mann–Whitney U with average ranks for ties (a tied
  positive/negative pair counts 1/2). NaN when only one class is present.
* ``grouped_auc``: per-group AUC over groups (users) that have both classes; **UAUC** is their
  unweighted mean, **GAUC** their mean weighted by the group's number of labelled rows
  (FARM eq. 19, MMBee eq. 13; FuxiCTR calls them avgAUC and gAUC).
* ``logloss``: mean binary cross-entropy with probabilities clipped to ``[eps, 1 - eps]``.
* ``precision_at_k`` / ``recall_at_k`` / ``ndcg_at_k`` / ``hit_rate_at_k`` (in
  :mod:`liverank.eval.ranking`, re-exported here): per request, averaged over requests with at
  least one positive.

Every function takes an optional ``mask`` (non-zero = label observed); masked rows are ignored.
Empty inputs give NaN, never an exception.

Example:
    >>> auc([0, 1, 0, 1], [0.1, 0.8, 0.8, 0.9])
    0.875
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from liverank.eval.inputs import binary_scored, check_finite, check_probability, select
from liverank.eval.ranking import (
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_at_k,
    recall_at_k,
)
from liverank.eval.ranks import RankedGroups, rank_within_groups

__all__ = [
    "auc",
    "grouped_auc",
    "hit_rate_at_k",
    "logloss",
    "mse",
    "ndcg_at_k",
    "per_group_auc",
    "precision_at_k",
    "ranking_at_k",
    "recall_at_k",
]

DEFAULT_EPS = 1e-7


def _auc_per_group(r: RankedGroups) -> np.ndarray:
    """[G] Mann–Whitney AUC of every group; NaN where a group lacks one of the classes."""
    size = r.group_size[r.block_group]  # [T]
    # 1-based average rank of each block in descending order, then in ascending order.
    desc_rank = r.block_start + (r.block_size + 1) / 2.0  # [T]
    asc_rank = size + 1 - desc_rank  # [T]
    rank_sum_pos = np.bincount(
        r.block_group, weights=r.block_pos * asc_rank, minlength=r.n_groups
    )  # [G]
    n_pos = r.group_pos
    n_neg = r.group_neg
    both = (n_pos > 0) & (n_neg > 0)
    out = np.full(r.n_groups, np.nan)
    out[both] = (rank_sum_pos[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (
        n_pos[both] * n_neg[both]
    )
    return out


def auc(labels: ArrayLike, scores: ArrayLike, mask: ArrayLike | None = None) -> float:
    """ROC AUC of ``scores`` for 0/1 ``labels`` (average ranks for ties).

    Returns NaN when the observed rows hold only one class (or none).
    """
    y, s, _ = binary_scored(labels, scores, mask)
    r = rank_within_groups(y, s)
    return float(_auc_per_group(r)[0]) if r.n_groups else float("nan")


def per_group_auc(
    labels: ArrayLike,
    scores: ArrayLike,
    groups: ArrayLike,
    mask: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group.

    Returns:
        ``(keys [G], auc [G], n_labelled [G])`` for every group with at least one observed row,
        keys sorted ascending; ``auc`` is NaN for groups with a single class.
    """
    y, s, g = binary_scored(labels, scores, mask, groups)
    r = rank_within_groups(y, s, g)
    return r.group_keys, _auc_per_group(r), r.group_size


def grouped_auc(
    labels: ArrayLike,
    scores: ArrayLike,
    groups: ArrayLike,
    mask: ArrayLike | None = None,
) -> tuple[float, float, int]:
    """UAUC and GAUC over groups (users) that have both classes among their observed rows.

    ``UAUC = mean_u AUC_u`` and ``GAUC = sum_u n_u AUC_u / sum_u n_u``, where ``n_u`` is the
    number of observed rows of user ``u`` and the sums run over users with both classes.

    Returns:
        ``(uauc, gauc, n_groups_used)``; NaN, NaN, 0 when no group has both classes.
    """
    _, group_auc, n = per_group_auc(labels, scores, groups, mask)
    used = ~np.isnan(group_auc)
    n_used = int(used.sum())
    if n_used == 0:
        return float("nan"), float("nan"), 0
    weights = n[used].astype(np.float64)
    uauc = float(group_auc[used].mean())
    gauc = float((group_auc[used] * weights).sum() / weights.sum())
    return uauc, gauc, n_used


def logloss(
    labels: ArrayLike,
    probs: ArrayLike,
    eps: float = DEFAULT_EPS,
    mask: ArrayLike | None = None,
) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[eps, 1 - eps]`` (natural log).

    Raises:
        DataValidationError: a label is not 0/1 or a probability is outside [0, 1].
    """
    y, p, _ = binary_scored(labels, probs, mask)
    check_probability(p, "probs")
    if y.shape[0] == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def mse(targets: ArrayLike, preds: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean squared error of a regression target (e.g. stay time); NaN when nothing observed."""
    t, p = select((targets, "targets", np.float64), (preds, "preds", np.float64), mask=mask)
    check_finite(t, "targets")
    check_finite(p, "preds")
    if t.shape[0] == 0:
        return float("nan")
    return float(np.mean((t - p) ** 2))
