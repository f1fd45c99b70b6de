"""Multiplicative ranking-score fusion of per-task probabilities (Moment&Cross eq. 4).

Reference: Jiangxia Cao et al., "Moment&Cross", 2024, eq. 4 (digest: ``papers/moment_cross.md``)::

    Ranking_Score = (1 + p_ctr)^alpha * (1 + p_lvtr)^beta * (1 + p_ltr)^gamma * ...

Each factor lies in ``[1, 2^alpha]``, so a task with exponent 0 has no effect and a larger
exponent makes the ranking more sensitive to that task. Since every factor is positive and
increasing in its probability, the score is monotone in each task. The exponents are hand-tuned
in the paper (values not published); here they are configuration. Computed as
``exp(sum_t alpha_t * log1p(p_t))`` for numerical stability.

Example::

    score = ranking_score(model.predict_proba(batch), {"ctr": 1.0, "lvtr": 0.5})  # [B]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from liverank.errors import ConfigError


def ranking_score(
    probs: Mapping[str, torch.Tensor], exponents: Mapping[str, float]
) -> torch.Tensor:
    """``prod_t (1 + probs[t]) ** exponents[t]`` over the tasks of ``exponents`` -> ``[B]``.

    Args:
        probs: task -> probabilities (any common shape, values in ``[0, 1]``); tasks without an
            exponent are ignored.
        exponents: task -> exponent ``alpha_t`` (finite, ``>= 0``; at least one task).

    Raises:
        ConfigError: no exponent, a negative or non-finite exponent, or an exponent for a task
            that ``probs`` lacks.
        ValueError: probabilities outside ``[0, 1]`` (or NaN), or shapes that differ.
    """
    if not exponents:
        raise ConfigError("ranking_score needs at least one task exponent")
    missing = [t for t in exponents if t not in probs]
    if missing:
        raise ConfigError(
            f"ranking_score: exponents name tasks {missing} without probabilities "
            f"(tasks with probabilities: {sorted(probs)})"
        )
    bad = {t: a for t, a in exponents.items() if not math.isfinite(a) or a < 0}
    if bad:
        raise ConfigError(f"ranking_score: exponents must be finite and >= 0, got {bad}")
    shape = None
    log_score: torch.Tensor | None = None
    for task, alpha in exponents.items():
        p = probs[task]
        if shape is None:
            shape = p.shape
        elif p.shape != shape:
            raise ValueError(
                f"ranking_score: '{task}' has shape {tuple(p.shape)}, not {tuple(shape)}"
            )
        if not bool(((p >= 0) & (p <= 1)).all()):
            raise ValueError(f"ranking_score: '{task}' probabilities outside [0, 1] (or NaN)")
        term = alpha * torch.log1p(p.to(torch.float64))
        log_score = term if log_score is None else log_score + term
    assert log_score is not None
    return torch.exp(log_score).to(probs[next(iter(exponents))].dtype)
