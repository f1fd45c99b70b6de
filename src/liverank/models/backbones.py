"""Multi-task backbones: ``[B, D_in]`` -> one ``[B, H]`` representation per task.

* ``mlp``: shared-bottom MLP (R. Caruana, "Multitask Learning", Machine Learning 1997): one
  MLP whose output every task head reads.
* ``mmoe``: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018), see ``layers/moe.py``.
* ``ple``: Progressive Layered Extraction, stacked CGC levels (Tang et al., RecSys 2020);
  ``levels: 1`` is a single CGC (task gates only), the zoo's ``cgc``.

A backbone's config is data (a pydantic model discriminated by ``type``), so a YAML file picks
and sizes it; :func:`build_backbone` turns the config into the module. Every backbone returns
``(task_reprs, diagnostics)``; MoE backbones report the mean gate weight of each expert per task
(``gate/<task>/<expert>``), which shows expert collapse at a glance.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from liverank.models.layers.mlp import MLP
from liverank.models.layers.moe import PLE, MMoE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MLPBackboneConfig(_Strict):
    type: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [128, 64])
    activation: str = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False


class MMoEBackboneConfig(_Strict):
    type: Literal["mmoe"] = "mmoe"
    n_experts: int = Field(4, ge=1)
    expert_hidden: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    activation: str = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class PLEBackboneConfig(_Strict):
    type: Literal["ple"] = "ple"
    levels: int = Field(2, ge=1)
    n_specific: int = Field(1, ge=0)
    n_shared: int = Field(2, ge=0)
    expert_hidden: list[int] = Field(default_factory=lambda: [64], min_length=1)
    activation: str = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


BackboneConfig = Annotated[
    MLPBackboneConfig | MMoEBackboneConfig | PLEBackboneConfig, Field(discriminator="type")
]


class Backbone(nn.Module):
    """Base: ``forward(x [B, D_in]) -> (list of [B, out_dim] per task, diagnostics)``."""

    out_dim: int

    def forward(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError


class SharedBottom(Backbone):
    """One MLP shared by every task (every task gets the same tensor)."""

    def __init__(self, in_dim: int, tasks: list[str], cfg: MLPBackboneConfig) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, cfg.hidden, cfg.activation, cfg.dropout, cfg.batch_norm)
        self.n_tasks = len(tasks)
        self.out_dim = self.mlp.out_dim

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        h = self.mlp(x)  # [B, H]
        return [h] * self.n_tasks, {}


def _gate_diagnostics(tasks: list[str], gates: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean gate weight of each expert, per task: ``gate/<task>`` -> ``[E]`` (detached)."""
    return {f"gate/{t}": g.detach().mean(0) for t, g in zip(tasks, gates, strict=True)}


class MMoEBackbone(Backbone):
    def __init__(self, in_dim: int, tasks: list[str], cfg: MMoEBackboneConfig) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.moe = MMoE(
            in_dim, len(tasks), cfg.n_experts, cfg.expert_hidden, cfg.activation, cfg.dropout
        )
        self.out_dim = self.moe.out_dim

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        outputs, gates = self.moe(x)
        return outputs, _gate_diagnostics(self.tasks, gates)


class PLEBackbone(Backbone):
    def __init__(self, in_dim: int, tasks: list[str], cfg: PLEBackboneConfig) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.ple = PLE(
            in_dim,
            len(tasks),
            cfg.levels,
            cfg.n_specific,
            cfg.n_shared,
            cfg.expert_hidden,
            cfg.activation,
            cfg.dropout,
        )
        self.out_dim = self.ple.out_dim

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        outputs, gates = self.ple(x)
        return outputs, _gate_diagnostics(self.tasks, gates)


def build_backbone(
    cfg: MLPBackboneConfig | MMoEBackboneConfig | PLEBackboneConfig, in_dim: int, tasks: list[str]
) -> Backbone:
    """The backbone that ``cfg`` describes, reading ``[B, in_dim]``, with one output per task."""
    if isinstance(cfg, MLPBackboneConfig):
        return SharedBottom(in_dim, tasks, cfg)
    if isinstance(cfg, MMoEBackboneConfig):
        return MMoEBackbone(in_dim, tasks, cfg)
    return PLEBackbone(in_dim, tasks, cfg)
