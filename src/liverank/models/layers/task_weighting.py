"""Adaptive weighting of auxiliary tasks by gradient similarity (eLiveRec Eqs. 14-15).

Reference: eLiveRec (Taobao Live, ICDE 2023), section IV.D. The joint loss is (Eq. 15)::

    L = L_rec + sum_i w_i L_i + L_reg,  w_i = MLP_i(cos(grad L_rec, grad L_i), L_i, type_i) (Eq. 14)

with the gradients taken w.r.t. the shared parameters, a two-layer MLP per auxiliary task and a
type embedding per task. The paper's "vanilla MTL" baseline uses fixed weights 0.3, 0.3, 0.1
(:class:`FixedTaskWeights`).

Where the paper is silent, OUR reading:

* ``w_i`` goes through a sigmoid, so it lies in (0, 1): an auxiliary task can be switched off but
  never outweigh the primary one (weight 1). The loss input is ``log(1 + L_i)``, so that a
  regression loss in squared seconds does not saturate the MLP.
* Training the weighting network. "Trained jointly" cannot mean minimising Eq. 15 w.r.t. ``w``:
  that drives every ``w_i`` to 0. The point of the weights is to help the primary task, so we
  use a first-order one-step look-ahead on it: after a step ``theta' = theta - a sum_i w_i g_i``
  (``g_i = grad L_i``), ``L_rec(theta') - L_rec(theta) ~ -a sum_i w_i <g_rec, g_i>``. We train
  the network (its own Adam) to minimise ``-sum_i w_i cos_i`` with ``cos_i`` detached (the
  normalised form of that change, insensitive to the gradients' scale): aligned tasks
  (``cos_i > 0``) are pushed up, conflicting ones (``cos_i < 0``) down. The weights returned to
  the caller are detached, so the model's loss never trains the weighting network.
* Cost: a recomputation of the cosines takes ``1 + T`` extra backward passes (``T`` auxiliary
  tasks) from the losses down to the ``shared`` parameters only, so pass the last shared layer,
  not the whole model. With ``every = k`` they are recomputed on every k-th call and the
  cached cosines are reused in between (the loss inputs are always current), dividing that cost
  by ``k``. In eval mode, or under ``torch.no_grad``, nothing is recomputed or trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from liverank.errors import ConfigError

Weights = dict[str, torch.Tensor]
Diagnostics = dict[str, float]


def _check_names(expected: Sequence[str], got: Mapping[str, object], what: str) -> None:
    if set(got) != set(expected):
        raise ConfigError(
            f"{what}: expected losses for the auxiliary tasks {sorted(expected)}, got "
            f"{sorted(got)}; the task names must match those given at construction"
        )


def gradient_cosines(
    primary: torch.Tensor, aux: Sequence[torch.Tensor], shared: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``cos(grad primary, grad aux_i)`` w.r.t. ``shared`` -> ``[T]`` (0 where a gradient is 0).

    Uses ``torch.autograd.grad(..., retain_graph=True)``: the caller's graph stays usable.
    """

    def flat(loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        parts = [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, shared, strict=True)
        ]
        return torch.cat(parts)  # [P]

    g_rec = flat(primary)  # [P]
    g_aux = torch.stack([flat(loss) for loss in aux])  # [T, P]
    dots = g_aux @ g_rec  # [T]
    norms = g_aux.norm(dim=1) * g_rec.norm()  # [T]
    return torch.where(norms > 0, dots / norms.clamp_min(1e-30), torch.zeros_like(dots)).detach()


class AdaptiveTaskWeighting(nn.Module):
    """Per-task weights ``w_i in (0, 1)`` from gradient cosines, loss values and task types.

    Args:
        tasks: the auxiliary task names (the keys of ``aux_losses``), unique.
        type_dim: width of the learned type embedding of each task.
        hidden: width of the hidden layer of each task's two-layer MLP.
        every: recompute the gradient cosines on every ``every``-th training call.
        lr: learning rate of the weighting network's own Adam.

    Call ``weights, diag = weighting(primary_loss, aux_losses, shared)`` in a training step, then
    ``loss = primary_loss + sum(weights[t] * aux_losses[t] for t in weights) (+ L_reg)`` and
    backward as usual. ``weights`` are detached scalars; ``diag`` holds ``cos/<task>`` and
    ``w/<task>`` floats. The call updates the weighting network itself: keep its parameters
    out of the model's optimizer (their ``.grad`` is always left ``None``, so a model optimizer
    that does hold them does not move them).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        type_dim: int = 4,
        hidden: int = 16,
        every: int = 1,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        tasks = list(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"tasks must be unique, non-empty names, got {tasks}")
        if every < 1:
            raise ConfigError(
                f"every must be >= 1 (recompute the cosines every k calls), got {every}"
            )
        if type_dim < 1 or hidden < 1 or not lr > 0:
            raise ConfigError(
                f"need type_dim >= 1, hidden >= 1, lr > 0; got {type_dim}, {hidden}, {lr}"
            )
        self.tasks, self.every = tasks, every
        self.types = nn.Parameter(torch.randn(len(tasks), type_dim) / math.sqrt(type_dim))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(2 + type_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            for _ in tasks
        )
        self.register_buffer("cosines", torch.zeros(len(tasks)))  # [T], the last computed
        self.calls = 0  # training calls so far
        self.cosine_updates = 0  # of which recomputed the cosines
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)

    def weights_for(self, cosines: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Eq. 14: ``[T]`` cosines and ``[T]`` loss values (both detached) -> ``[T]`` weights."""
        loss_in = torch.log1p(losses.clamp_min(0.0))  # [T]
        out = [
            mlp(torch.cat([cosines[i : i + 1], loss_in[i : i + 1], self.types[i]]))
            for i, mlp in enumerate(self.mlps)
        ]  # T x [1]
        return torch.sigmoid(torch.cat(out))  # [T]

    def forward(
        self,
        primary_loss: torch.Tensor,
        aux_losses: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
    ) -> tuple[Weights, Diagnostics]:
        _check_names(self.tasks, aux_losses, "AdaptiveTaskWeighting")
        aux = [aux_losses[t] for t in self.tasks]
        losses = torch.stack([loss.detach().reshape(()) for loss in aux]).to(self.cosines)  # [T]
        train = self.training and torch.is_grad_enabled()
        if train:
            if self.calls % self.every == 0:
                self.cosines.copy_(gradient_cosines(primary_loss, aux, list(shared)))
                self.cosine_updates += 1
            self.calls += 1
        cos = self.cosines.clone()  # [T]
        w = self.weights_for(cos, losses)  # [T], graph over the weighting network only
        if train:
            # One-step look-ahead on L_rec, first order (module docstring).
            objective = -(w * cos).sum()
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        w = w.detach()
        weights = {t: w[i] for i, t in enumerate(self.tasks)}
        diag = {f"cos/{t}": float(cos[i]) for i, t in enumerate(self.tasks)}
        diag.update({f"w/{t}": float(w[i]) for i, t in enumerate(self.tasks)})
        return weights, diag


class FixedTaskWeights(nn.Module):
    """Constant weights with :class:`AdaptiveTaskWeighting`'s interface (the paper's vanilla MTL).

    ``FixedTaskWeights({"stay_time": 0.3, "click_bag": 0.3, "click_item": 0.1})`` is the paper's
    setting, if those are the three auxiliary tasks in that order.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        if not weights or any(not isinstance(t, str) for t in weights):
            raise ConfigError(f"weights must map task names to floats, got {dict(weights)}")
        bad = {t: w for t, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ConfigError(f"task weights must be finite and >= 0, got {bad}")
        self.tasks = list(weights)
        self.values = {t: float(w) for t, w in weights.items()}

    def forward(
        self,
        primary_loss: torch.Tensor,
        aux_losses: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor] = (),
    ) -> tuple[Weights, Diagnostics]:
        _check_names(self.tasks, aux_losses, "FixedTaskWeights")
        weights = {
            t: torch.tensor(w, dtype=aux_losses[t].dtype, device=aux_losses[t].device)
            for t, w in self.values.items()
        }
        return weights, {f"w/{t}": w for t, w in self.values.items()}
