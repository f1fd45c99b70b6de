"""In-batch InfoNCE between two views of the same samples.

Reference: A. van den Oord et al., "Representation Learning with Contrastive Predictive Coding"
(arXiv:1807.03748), the InfoNCE loss; used with in-batch negatives by Moment&Cross (section 4.2,
eq. 6) to align each pooled behaviour sequence to the mixed anchor sequence.

For anchors ``a_i`` and positives ``p_i`` (L2-normalised), with ``s_ij = a_i . p_j / tau``::

    L = -1/n sum_i log( exp(s_ii) / sum_{j allowed} exp(s_ij) )

over the rows ``i`` marked valid. ``groups`` (e.g. user ids) removes *false negatives*: a pair
``(i, j != i)`` of the same group is not used as a negative, because two samples of one user in
a batch share most of their history. The loss is one-directional (anchor -> positives).

``similarity="dot"`` uses the raw dot product ``s_ij = a_i . p_j / tau`` (no normalisation), as
FARM's Eq. (14) does (X. Li et al., 2025, section 3.3.1: live preference fixed as the anchor,
short-video preferences of the other users in the batch as negatives).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    temperature: float,
    valid: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    *,
    similarity: Literal["cosine", "dot"] = "cosine",
) -> torch.Tensor:
    """In-batch InfoNCE of ``anchor [B, D]`` against ``positive [B, D]`` -> scalar.

    Args:
        anchor, positive: row ``i`` of each is a view of sample ``i``.
        temperature: ``tau`` > 0.
        valid: ``[B]`` bool, rows that take part (as anchors and as negatives); default all.
        groups: ``[B]`` ids; off-diagonal pairs of equal id are excluded from the negatives.
        similarity: ``cosine`` (rows L2-normalised first) or ``dot`` (raw dot product).

    Returns:
        The mean loss over valid rows; exactly 0 (with a graph) when fewer than two rows are
        valid, since there is then no negative to contrast with.
    """
    if valid is not None:
        anchor, positive = anchor[valid], positive[valid]  # [n, D]
        groups = groups[valid] if groups is not None else None
    n = anchor.shape[0]
    if n < 2:
        return (anchor.sum() + positive.sum()) * 0.0
    if similarity == "cosine":
        a, p = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
    elif similarity == "dot":
        a, p = anchor, positive
    else:
        raise ValueError(f"similarity must be 'cosine' or 'dot', got '{similarity}'")
    logits = a @ p.t() / temperature  # [n, n]
    if groups is not None:
        same = groups.unsqueeze(0) == groups.unsqueeze(1)  # [n, n]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(n, device=logits.device)
    return F.cross_entropy(logits, target)
