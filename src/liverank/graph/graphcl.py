"""MMBee's GraphCL node pre-training (section 5.2, Algorithm 1, Eq. 9).

One embedding ``Theta`` per node of the U2A graph (users and authors). For every node ``v_t``
(shuffled, ``gamma`` epochs; mini-batches of nodes instead of one node per step), the positives
``V_p`` are its metapath-guided neighbours of its own type (users: ``u2a2u``, authors:
``a2u2a``, read from a neighbour store, :mod:`.store`) and the negatives ``V_n`` nodes of the
same type drawn uniformly at random. The loss is ``L_CE + lambda L_NCE`` with

* ``L_CE``: binary cross-entropy of ``sigmoid(Theta(v_t)^T Theta(v))``, 1 for the positives and 0
  for the negatives (each averaged over its pairs);
* ``L_NCE`` (Eq. 9): ``-1/|V_p| sum_i log(exp(s_ti) / (exp(s_ti) + sum_j exp(s_tj)))``, the
  scores being dot products, the negatives shared by all positives of ``v_t``.

A node without positives (no gift before the store's ``as_of_ts``) keeps its random
initialisation: the ranker's fine-tuning is its only training signal, as for a new node in the
paper. The result initialises :class:`liverank.models.modules.mmbee_gie.MMBeeGIE`'s tables.

>>> result = graphcl_pretrain(store, n_users=30_001, n_authors=401, dim=32)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from liverank.errors import ConfigError
from liverank.graph.store import NeighbourStore


@dataclass(frozen=True)
class GraphCLResult:
    user: torch.Tensor  # [n_users, d] (row 0 = padding, zero)
    author: torch.Tensor  # [n_authors, d]
    summary: dict[str, float]


def _positives(store: NeighbourStore, metapath: str, n: int, offset: int) -> np.ndarray:
    """``[n, k]`` global node ids of each node's positives (``-1`` = none)."""
    ids, weights = store.neighbours(metapath, np.arange(n))  # [n, k]
    return np.where(weights > 0, ids + offset, -1)


def graphcl_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    mask: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_CE, L_NCE)`` of anchors ``[B, d]``, positives ``[B, P, d]`` (valid where
    ``mask [B, P]``) and negatives ``[B, N, d]``."""
    s_pos = torch.einsum("bd,bpd->bp", anchor, positive)  # [B, P]
    s_neg = torch.einsum("bd,bnd->bn", anchor, negative)  # [B, N]
    m = mask.float()
    ce_pos = F.binary_cross_entropy_with_logits(s_pos, torch.ones_like(s_pos), reduction="none")
    ce = (ce_pos * m).sum() / m.sum().clamp_min(1.0)
    ce = ce + F.binary_cross_entropy_with_logits(s_neg, torch.zeros_like(s_neg))
    neg_lse = torch.logsumexp(s_neg, dim=1, keepdim=True)  # [B, 1]
    nce_each = -(s_pos - torch.logaddexp(s_pos, neg_lse))  # [B, P]
    per_node = (nce_each * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B]
    has = (m.sum(1) > 0).float()
    nce = (per_node * has).sum() / has.sum().clamp_min(1.0)
    return ce, lam * nce


def graphcl_pretrain(
    store: NeighbourStore,
    n_users: int,
    n_authors: int,
    dim: int,
    *,
    epochs: int = 5,
    negatives: int = 10,
    lam: float = 1.0,
    batch_size: int = 512,
    lr: float = 0.01,
    seed: int = 0,
) -> GraphCLResult:
    """Algorithm 1 on ``store`` for node tables of ``n_users`` / ``n_authors`` rows (ids are
    rows; row 0 is padding and never trained)."""
    if min(n_users, n_authors) < 2 or dim < 1 or epochs < 1 or negatives < 1 or lam < 0:
        raise ConfigError(
            "graphcl: need >= 2 rows per node type, dim, epochs, negatives >= 1 and lambda >= 0"
        )
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    theta = torch.nn.Parameter(torch.randn(n_users + n_authors, dim, generator=gen) * dim**-0.5)
    pos = np.concatenate(
        [_positives(store, "u2a2u", n_users, 0), _positives(store, "a2u2a", n_authors, n_users)]
    )  # [U + A, k]
    is_author = np.arange(n_users + n_authors) >= n_users
    padding = np.isin(np.arange(len(pos)), [0, n_users])  # row 0 of each type
    trainable = np.flatnonzero((pos >= 0).any(1) & ~padding)
    optimiser = torch.optim.Adam([theta], lr=lr)
    losses: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(trainable)
        total, batches = 0.0, 0
        for lo in range(0, len(order), batch_size):
            nodes = order[lo : lo + batch_size]  # [B]
            p = pos[nodes]  # [B, k]
            author = is_author[nodes]
            low = np.where(author, n_users + 1, 1)
            high = np.where(author, n_users + n_authors, n_users)
            neg = rng.integers(low[:, None], high[:, None], (len(nodes), negatives))  # [B, N]
            mask = torch.from_numpy(p >= 0)
            anchor = theta[torch.from_numpy(nodes)]
            positive = theta[torch.from_numpy(np.maximum(p, 0))]
            ce, nce = graphcl_loss(anchor, positive, theta[torch.from_numpy(neg)], mask, lam)
            loss = ce + nce
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, batches = total + float(loss.detach()), batches + 1
        losses.append(total / max(batches, 1))
    weights = theta.detach().clone()
    weights[0] = 0.0
    weights[n_users] = 0.0
    summary = {
        "nodes_with_positives": float(len(trainable)),
        "loss_first_epoch": losses[0] if losses else float("nan"),
        "loss_last_epoch": losses[-1] if losses else float("nan"),
        "epochs": float(epochs),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return GraphCLResult(weights[:n_users], weights[n_users:], summary)
