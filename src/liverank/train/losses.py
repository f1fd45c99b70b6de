"""Training losses of the stream reporting modes: masked BCE, fast/slow with PU, L_moment.

All functions take ``[B, T]`` tensors (one column per task, in the model's task order) and
return a ``[T]`` per-task loss; :func:`stream_loss` combines them for a Ranker with its task
weights and auxiliary losses.

References (digests in ``shared/papers``):

* Masked BCE: Sliver (``sliding_window.md`` section 3),
  ``L_b = -1/N_b sum (y log p + (1 - y) log(1 - p))`` over the ``N_b`` samples labelled for b.
* Fast / slow (``moment_cross.md`` section 2.2): fast rows use BCE (eq. 2); slow rows carry
  only the positives the fast row missed and use the positive-unlabelled correction (eq. 3)
  ``L_slow = -sum_{xtr in missing} [log p - log(1 - p)]``, which cancels the false-negative
  gradient the fast row applied and adds the positive one. Since
  ``log sigmoid(z) - log(1 - sigmoid(z)) = z``, the slow term is simply ``-z`` (gradient -1).
  That term is unbounded below, and the digest (section 8) advises clipping it. We cap it:
  ``-min(z, PU_LOGIT_CAP)``, so a slow row stops pushing once its logit passes the cap
  (``p > sigmoid(cap)`` = 0.5). Measured reason: uncapped, 18 of the 20 evidence-world
  ``fast_slow`` runs of ``experiments/moment.yaml`` (code 2a38607) ended far below the exit
  arm (CTR AUC 0.54-0.69 against >= 0.80), most as near-constant predictors; in world 0,
  seed 0 the comment tower's logits reached +400 +- 2700 within 12 h of event time (nearly
  every comment positive arrives slow). Capped, the same run stays stable.
* L_moment (``moment_cross.md`` section 3.4, eq. 5): BCE over the *first* positive of each
  behaviour and the *exit* labels; every other label is masked. Given the stream's masks, this
  is the masked BCE over the moment rows.

Choice where the digests are silent (normalisation): eqs. 2, 3 and 5 are sums. Per task we
divide by the number of labelled rows in the batch (Sliver's ``N_b``), counting fast and slow
rows together for ``fast_slow``, so a slow row's PU term has the same weight as the fast
row's negative term it cancels. A task with no labelled row contributes 0.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from liverank.errors import ConfigError, DataValidationError
from liverank.models.base import Batch
from liverank.models.ranker import Ranker, RankerOutput

LossKind = Literal["bce", "fast_slow", "moment"]
LOSS_KINDS: tuple[str, ...] = ("bce", "fast_slow", "moment")
#: logit above which a slow row's PU term stops pushing (see the module docstring)
PU_LOGIT_CAP = 0.0


def _per_task_mean(terms: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """[T] sum of ``terms`` [B, T] over rows divided by ``count`` [T] (0 where count is 0)."""
    return terms.sum(0) / count.clamp(min=1.0)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[T] per-task BCE averaged over the rows with mask 1 (0 for a task without such rows).

    Args:
        logits: ``[B, T]`` raw scores. labels: ``[B, T]`` 0/1. masks: ``[B, T]`` 0/1.
    """
    _check_shapes(logits, labels, masks)
    m = masks.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return _per_task_mean(bce * m, m.sum(0))  # [T]


def moment_loss(logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[T] L_moment (Moment&Cross eq. 5): BCE over first-positive and exit labels only.

    The ``moment`` stream already masks every label that is not a first positive or an exit
    label, so this is :func:`masked_bce` on those rows; kept as its own name so the training
    mode reads as the paper's loss.
    """
    return masked_bce(logits, labels, masks)


def fast_slow_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    slow: torch.Tensor,
    pu_cap: float | None = PU_LOGIT_CAP,
) -> torch.Tensor:
    """[T] fast BCE (eq. 2) on fast rows plus the capped PU correction (eq. 3) on slow rows.

    Args:
        logits, labels, masks: ``[B, T]``.
        slow: ``[B]``, 1 for a slow row (carries only missed positives, label 1 mask 1).
        pu_cap: the slow term is ``-min(z, pu_cap)``; ``None`` is the paper's uncapped ``-z``.

    Raises:
        DataValidationError: a slow row has a labelled negative (the PU term is only defined
            for missed positives).
    """
    _check_shapes(logits, labels, masks)
    m = masks.to(logits.dtype)
    y = labels.to(logits.dtype)
    is_slow = slow.to(torch.bool).unsqueeze(1)  # [B, 1]
    bad = is_slow & (m > 0) & (y < 0.5)
    if bool(bad.any()):
        raise DataValidationError(
            f"{int(bad.sum())} slow-row labels are negatives; slow rows may only carry the "
            "missed positives (label 1, mask 1)",
            column="slow",
        )
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")  # [B, T]
    # [B, T]: -(log p - log(1 - p)) = -z, capped so it is bounded below
    pu = -(logits if pu_cap is None else logits.clamp(max=pu_cap))
    terms = torch.where(is_slow, pu, bce) * m
    return _per_task_mean(terms, m.sum(0))  # [T]


def _check_shapes(logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> None:
    if logits.dim() != 2 or labels.shape != logits.shape or masks.shape != logits.shape:
        raise DataValidationError(
            f"losses need [B, T] logits, labels and masks of one shape; got "
            f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(masks.shape)}"
        )


def stack_tasks(batch: Batch, out: RankerOutput, tasks: list[str]) -> tuple[torch.Tensor, ...]:
    """``(logits, labels, masks)``, each ``[B, T]``, from a batch and a Ranker output."""
    missing = [t for t in tasks if t not in batch]
    if missing:
        raise DataValidationError(
            f"batch has no label column for tasks {missing} (fields: {', '.join(sorted(batch))})",
            column=missing[0],
        )
    logits = torch.stack([out.logits[t] for t in tasks], dim=1)  # [B, T]
    labels = torch.stack([batch[t].to(logits.dtype) for t in tasks], dim=1)  # [B, T]
    ones = torch.ones_like(logits[:, 0])
    masks = torch.stack([batch.get(f"mask_{t}", ones).to(logits.dtype) for t in tasks], dim=1)
    return logits, labels, masks


def stream_loss(
    model: Ranker, batch: Batch, out: RankerOutput, kind: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss of ``kind`` for a Ranker: task-weighted per-task loss + weighted aux losses.

    ``fast_slow`` reads the batch's ``slow`` column (all rows fast when absent). Returns
    ``(total, parts)`` like :meth:`Ranker.loss`: ``task/<task>``, ``aux/<name>``, ``total``.
    """
    if kind not in LOSS_KINDS:
        raise ConfigError(f"unknown loss kind '{kind}'; known: {', '.join(LOSS_KINDS)}")
    logits, labels, masks = stack_tasks(batch, out, model.tasks)
    if kind == "fast_slow":
        slow = batch.get("slow", torch.zeros(logits.shape[0], dtype=torch.long))
        per_task = fast_slow_loss(logits, labels, masks, slow)
    elif kind == "moment":
        per_task = moment_loss(logits, labels, masks)
    else:
        per_task = masked_bce(logits, labels, masks)
    weights = torch.tensor(
        [model.config.task_weights.get(t, 1.0) for t in model.tasks], dtype=logits.dtype
    )
    total = (weights * per_task).sum()
    parts = {f"task/{t}": per_task[i].detach() for i, t in enumerate(model.tasks)}
    for name, value in out.aux_losses.items():
        w = model.aux_weight(name)
        parts[f"aux/{name}"] = (w * value).detach()
        total = total + w * value
    parts["total"] = total.detach()
    return total, parts
