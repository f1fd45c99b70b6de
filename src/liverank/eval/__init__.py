"""Evaluation: metrics (AUC, UAUC, GAUC, logloss, MSE, Prec/Recall/NDCG/HitRate@K), the
evaluator (per test hour, hour-avg and per user-activity group) and the HTML report.

Definitions: ``docs/metrics.md``.
"""

from liverank.eval.evaluate import evaluate, required_columns
from liverank.eval.metrics import (
    auc,
    grouped_auc,
    hit_rate_at_k,
    logloss,
    mse,
    ndcg_at_k,
    per_group_auc,
    precision_at_k,
    ranking_at_k,
    recall_at_k,
)
from liverank.eval.result import EvalResult

__all__ = [
    "EvalResult",
    "auc",
    "evaluate",
    "grouped_auc",
    "hit_rate_at_k",
    "logloss",
    "mse",
    "ndcg_at_k",
    "per_group_auc",
    "precision_at_k",
    "ranking_at_k",
    "recall_at_k",
    "required_columns",
]
