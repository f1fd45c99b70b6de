"""Optimisers of a Ranker: sparse Adam for embedding tables, AdamW for everything else.

Embedding tables have sparse gradients (only the rows a batch looked up), and
``torch.optim.SparseAdam`` updates exactly those rows (its moment estimates are lazy: a row's
moments only move when the row is touched). Dense AdamW over a 1M-row table would instead read
and write every row at every step. Weight decay applies to dense weight matrices only (not to
biases, norms or embeddings).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.models.ranker import Ranker


@dataclass
class Optimizers:
    """A pair of optimisers stepped together (either may be ``None`` if it has no params)."""

    sparse: torch.optim.SparseAdam | None
    dense: torch.optim.AdamW | None

    def _all(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.sparse, self.dense) if o is not None]

    def zero_grad(self) -> None:
        for opt in self._all():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self._all():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "sparse": self.sparse.state_dict() if self.sparse is not None else None,
            "dense": self.dense.state_dict() if self.dense is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("sparse", "dense"):
            opt, saved = getattr(self, name), state.get(name)
            if (opt is None) != (saved is None):
                raise ConfigError(
                    f"optimizer state has {'no' if saved is None else 'a'} '{name}' part but the "
                    f"model has {'no' if opt is None else 'a'} {name} optimizer"
                )
            if opt is not None:
                # torch keeps the loaded tensors (e.g. Adam's ``step``) when dtype and device
                # match, so two optimisers would share and double-step them; copy first.
                opt.load_state_dict(copy.deepcopy(saved))

    @property
    def lrs(self) -> dict[str, float]:
        """Current learning rates (for logging and schedulers)."""
        return {
            name: opt.param_groups[0]["lr"]
            for name, opt in (("sparse", self.sparse), ("dense", self.dense))
            if opt is not None
        }


def _decay_split(params: list[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return decay, no_decay


def build_optimizers(
    model: Ranker,
    lr_sparse: float = 0.02,
    lr_dense: float = 0.002,
    weight_decay: float = 0.0,
) -> Optimizers:
    """SparseAdam over ``model``'s sparse embedding tables, AdamW over its dense parameters."""
    if lr_sparse <= 0 or lr_dense <= 0 or weight_decay < 0:
        raise ConfigError(
            f"need lr_sparse > 0, lr_dense > 0, weight_decay >= 0; got {lr_sparse}, {lr_dense}, "
            f"{weight_decay}"
        )
    sparse, dense = model.parameter_groups()
    sparse = [p for p in sparse if p.requires_grad]
    dense = [p for p in dense if p.requires_grad]
    sparse_opt = torch.optim.SparseAdam(sparse, lr=lr_sparse) if sparse else None
    dense_opt = None
    if dense:
        decay, no_decay = _decay_split(dense)
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        # fused=True: one kernel over all parameters instead of a Python loop per tensor.
        dense_opt = torch.optim.AdamW(groups, lr=lr_dense, fused=True)
    return Optimizers(sparse=sparse_opt, dense=dense_opt)
