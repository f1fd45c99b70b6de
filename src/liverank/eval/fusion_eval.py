"""The eq. 4 score fusion scored by a ranking metric: NDCG@K of a fused relevance, p_ctr vs fused.

Moment&Cross (Jiangxia Cao et al., 2024, eq. 4; digest ``papers/moment_cross.md``) ranks a
request's candidates by ``prod_t (1 + p_t)^alpha_t`` (``models/fusion.py``). Per-task AUC / GAUC
cannot say whether that ranking beats ranking by ``p_ctr`` alone; this module ranks each
request's candidates both ways and scores both against one graded relevance label.

**Fused relevance** (defined here, before any result):

    rel = 1 * click + 1 * long view + 1 * like + 1 * comment + 1 * gift

from the label columns ``ctr, lvtr, ltr, cmtr, gtr`` (:data:`RELEVANCE_WEIGHTS`): the number of
valuable behaviours of the visit, 0 to 5. Labels are nested (a non-click is negative on every
task), so ``rel = 0`` is exactly "no click". Equal weights: no behaviour is valued above another
without a measured value to say by how much (a gift-heavy weighting would let ~1 % of the rows
decide the metric).

**NDCG@K** per request, with linear gains (``gain = rel``, as ``sklearn.metrics.ndcg_score``):
``DCG@K = sum_{i<K} rel_i / log2(i + 2)`` over the request's rows ranked by score (``i``
0-based), ``IDCG@K`` the same over the relevances sorted descending, ``NDCG@K = DCG@K /
IDCG@K``. Ties in the score are averaged over a uniformly random order of the tied rows (as in
:mod:`liverank.eval.ranking`; equals sklearn's ``ignore_ties=False``). Requests without a relevant
candidate (all ``rel = 0``) are excluded; the others are averaged with equal weight.

**Exponents chosen a priori** (:data:`A_PRIORI_EXPONENTS`): ``alpha_t = w_t``, the relevance
weights. Then ``log score = sum_t w_t log(1 + p_t) ~= sum_t w_t p_t = E[rel | x]`` for small
probabilities (expectation is linear, so nesting does not matter), and sorting by expected gain
maximises the expected DCG. So the fused score approximates the ranking this metric rewards,
derived from the metric's definition, not tuned on any result. The fused ranking is computed
from the log score ``sum_t alpha_t log1p(p_t)``, which orders rows exactly as the score does.

Example::

    pred = pl.read_parquet("runs/moment_cross/predictions.parquet")
    fusion_ranking_metrics(pred, {"ctr": 1, "lvtr": 1, "ltr": 1, "cmtr": 1, "gtr": 1}, ks=(3,))
    # {"ndcg@3_ctr": ..., "ndcg@3_fused": ..., "ndcg@3_delta": ..., "n_requests": ..., ...}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from numpy.typing import ArrayLike

from liverank.errors import ConfigError, DataValidationError
from liverank.eval.inputs import as_1d, check_binary, check_finite, check_probability
from liverank.eval.ranks import RankedGroups, rank_within_groups

#: weight of each label in the fused relevance (task -> weight)
RELEVANCE_WEIGHTS: dict[str, float] = {"ctr": 1.0, "lvtr": 1.0, "ltr": 1.0, "cmtr": 1.0, "gtr": 1.0}
#: eq. 4 exponents fixed before any result: alpha_t = the relevance weight w_t (module docstring)
A_PRIORI_EXPONENTS: dict[str, float] = dict(RELEVANCE_WEIGHTS)


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ConfigError(f"K of NDCG@K must be a positive integer, got {k!r}")
    return int(k)


def _dcg(r: RankedGroups, k: int) -> np.ndarray:
    """``[G]`` tie-averaged DCG@K with linear gains (``block_pos`` = sum of gains per block)."""
    cum_discount = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])  # [K+1]
    block_end = r.block_start + r.block_size  # [T]
    discount = cum_discount[np.minimum(block_end, k)] - cum_discount[np.minimum(r.block_start, k)]
    mean_gain = r.block_pos / r.block_size  # [T] tie-averaged gain of each row in the block
    return np.bincount(r.block_group, weights=mean_gain * discount, minlength=r.n_groups)  # [G]


def graded_ndcg_per_request(
    relevance: ArrayLike, scores: ArrayLike, groups: ArrayLike, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """NDCG@K with graded (linear) gains, per request.

    Args:
        relevance: ``[N]`` gains, finite and ``>= 0``.
        scores: ``[N]`` finite scores; higher ranks first.
        groups: ``[N]`` int request ids.
        k: the cut-off.

    Returns:
        ``(request ids [G] sorted ascending, ndcg [G])``; NaN for requests with no relevant row.
    """
    k = _check_k(k)
    rel = as_1d(relevance, "relevance")
    s = as_1d(scores, "scores")
    g = as_1d(groups, "groups", np.int64)
    if not rel.shape == s.shape == g.shape:
        raise DataValidationError(
            f"relevance, scores and groups differ in length: {rel.shape[0]}, {s.shape[0]}, "
            f"{g.shape[0]}"
        )
    check_finite(rel, "relevance")
    check_finite(s, "scores")
    if (rel < 0).any():
        raise DataValidationError("relevance must be >= 0", column="relevance")
    ranked = rank_within_groups(rel, s, g)  # [G] groups sorted by id
    ideal = rank_within_groups(rel, rel, g)  # the same groups, ranked by the relevance itself
    dcg, idcg = _dcg(ranked, k), _dcg(ideal, k)  # [G], [G]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndcg = np.where(ranked.group_pos > 0, dcg / idcg, np.nan)
    return ranked.group_keys, ndcg


def fused_relevance(
    frame: pl.DataFrame, weights: Mapping[str, float] = RELEVANCE_WEIGHTS
) -> np.ndarray:
    """``[N]`` relevance ``sum_t weights[t] * label_t`` from the frame's 0/1 label columns."""
    missing = [t for t in weights if t not in frame.columns]
    if missing:
        raise DataValidationError(
            f"the prediction frame lacks the label columns {missing} of the fused relevance "
            f"(has {sorted(frame.columns)})"
        )
    bad = {t: w for t, w in weights.items() if not math.isfinite(w) or w < 0}
    if bad or not weights:
        raise ConfigError(f"relevance weights must be finite and >= 0 (at least one), got {bad}")
    rel = np.zeros(frame.height)
    for task, w in weights.items():
        label = frame[task].to_numpy().astype(np.float64)
        check_binary(label, task)
        rel += w * label
    return rel


def fused_log_score(frame: pl.DataFrame, exponents: Mapping[str, float]) -> np.ndarray:
    """``[N]`` ``log prod_t (1 + p_t)^alpha_t = sum_t alpha_t log1p(p_t)`` from ``p_<task>``.

    Orders rows exactly as :func:`liverank.models.fusion.ranking_score` does (``exp`` is
    increasing); the log avoids distinct scores rounding to one float.
    """
    if not exponents:
        raise ConfigError("the fused score needs at least one task exponent")
    bad = {t: a for t, a in exponents.items() if not math.isfinite(a) or a < 0}
    if bad:
        raise ConfigError(f"score exponents must be finite and >= 0, got {bad}")
    missing = [f"p_{t}" for t in exponents if f"p_{t}" not in frame.columns]
    if missing:
        raise DataValidationError(
            f"the prediction frame lacks {missing} for the score exponents {dict(exponents)}"
        )
    log_score = np.zeros(frame.height)
    for task, alpha in exponents.items():
        p = frame[f"p_{task}"].to_numpy().astype(np.float64)
        check_probability(p, f"p_{task}")
        log_score += alpha * np.log1p(p)
    return log_score


def fusion_ranking_metrics(
    frame: pl.DataFrame,
    exponents: Mapping[str, float] | None = None,
    ks: Sequence[int] = (1, 3, 5),
    relevance_weights: Mapping[str, float] = RELEVANCE_WEIGHTS,
) -> dict[str, float]:
    """NDCG@K of the fused relevance when ranking by ``p_ctr`` and by the eq. 4 fused score.

    Args:
        frame: a prediction frame (``trainer.predict_frame``, ``predictions.parquet``):
            ``request_id``, the label columns of ``relevance_weights``, ``p_ctr`` and
            ``p_<task>`` for every task of ``exponents``; ``mask_<task>`` columns, when present,
            drop the rows where any relevance label was not observed (stream rows before exit).
        exponents: eq. 4 exponents (task -> alpha); ``None`` = :data:`A_PRIORI_EXPONENTS`.
        ks: the cut-offs.
        relevance_weights: the fused relevance (module docstring).

    Returns:
        ``{"ndcg@K_ctr", "ndcg@K_fused", "ndcg@K_delta" (fused - ctr) for K in ks,
        "n_requests": requests with a relevant candidate (the ones averaged),
        "n_rows": rows scored, "n_rows_unobserved": rows dropped by a mask}``.
        Metrics are NaN when no request has a relevant candidate.
    """
    exponents = A_PRIORI_EXPONENTS if exponents is None else exponents
    ks = [_check_k(k) for k in ks]
    for column in ("request_id", "p_ctr"):
        if column not in frame.columns:
            raise DataValidationError(f"the prediction frame has no '{column}' column")
    masks = [f"mask_{t}" for t in relevance_weights if f"mask_{t}" in frame.columns]
    unobserved = 0
    if masks:
        seen = pl.all_horizontal([pl.col(m) != 0 for m in masks])
        unobserved = frame.height - int(frame.select(seen.sum()).item())
        frame = frame.filter(seen)
    rel = fused_relevance(frame, relevance_weights)  # [N]
    fused = fused_log_score(frame, exponents)  # [N]
    ctr = fused_log_score(frame, {"ctr": 1.0})  # [N], the same order as p_ctr
    groups = frame["request_id"].to_numpy()  # [N]
    out: dict[str, float] = {}
    n_requests = 0
    for k in ks:
        _, by_ctr = graded_ndcg_per_request(rel, ctr, groups, k)  # [G]
        _, by_fused = graded_ndcg_per_request(rel, fused, groups, k)  # [G]
        n_requests = int(np.isfinite(by_ctr).sum())
        empty = n_requests == 0
        out[f"ndcg@{k}_ctr"] = float("nan") if empty else float(np.nanmean(by_ctr))
        out[f"ndcg@{k}_fused"] = float("nan") if empty else float(np.nanmean(by_fused))
        out[f"ndcg@{k}_delta"] = out[f"ndcg@{k}_fused"] - out[f"ndcg@{k}_ctr"]
    out["n_requests"] = float(n_requests)
    out["n_rows"] = float(frame.height)
    out["n_rows_unobserved"] = float(unobserved)
    return out
