"""Multi-task backbones: ``[B, D_in]`` -> one ``[B, H]`` representation per task.

* ``mlp``: shared-bottom MLP (R. Caruana, "Multitask Learning", Machine Learning 1997): one
  MLP whose output every task head reads.
* ``mmoe``: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018), see ``layers/moe.py``.
* ``ple``: Progressive Layered Extraction, stacked CGC levels (Tang et al., RecSys 2020);
  ``levels: 1`` is a single CGC (task gates only), the zoo's ``cgc``.
* ``intra_inter``: eLiveRec's two-part network (``papers/eliverec.txt`` sections IV-B3 and C):
  the *primary* (intra-channel) tasks read the intra-channel embedding through one MLP tower
  (eq. 11, three layers), the other (inter-channel) tasks read the gated inter-channel embedding
  through an MMoE (eq. 13). Which input columns are "intra" and "inter" comes from the feature
  modules (``FeatureModule.output_parts``); columns of modules that declare no part feed both.

A backbone's config is data (a pydantic model discriminated by ``type``), so a YAML file picks
and sizes it; :func:`build_backbone` turns the config into the module. Every backbone returns
``(task_reprs, diagnostics)``; MoE backbones report the mean gate weight of each expert per task
(``gate/<task>/<expert>``), which shows expert collapse at a glance.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from liverank.errors import ConfigError
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


class IntraInterBackboneConfig(_Strict):
    type: Literal["intra_inter"] = "intra_inter"
    #: the intra-channel tasks (the paper: watching the channel, our ``ctr``)
    primary: list[str] = Field(default_factory=lambda: ["ctr"], min_length=1)
    #: the primary tower (eq. 11: "three MLP layers"); its last width is the head input
    primary_hidden: list[int] = Field(default_factory=lambda: [128, 64, 32], min_length=1)
    n_experts: int = Field(4, ge=1)
    #: the MMoE experts of the inter-channel tasks; the last width must equal primary_hidden's
    expert_hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    activation: str = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _same_head_width(self) -> IntraInterBackboneConfig:
        if self.primary_hidden[-1] != self.expert_hidden[-1]:
            raise ValueError(
                "primary_hidden and expert_hidden must end with the same width (every task head "
                f"reads one width), got {self.primary_hidden[-1]} and {self.expert_hidden[-1]}"
            )
        return self


BackboneConfig = Annotated[
    MLPBackboneConfig | MMoEBackboneConfig | PLEBackboneConfig | IntraInterBackboneConfig,
    Field(discriminator="type"),
]
#: input column ranges per part name ("intra", "inter"; "shared" = read by every part)
InputParts = dict[str, list[tuple[int, int]]]


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


class IntraInterBackbone(Backbone):
    """eLiveRec's primary MLP tower over the intra part and MMoE over the inter part."""

    def __init__(
        self, in_dim: int, tasks: list[str], cfg: IntraInterBackboneConfig, parts: InputParts
    ) -> None:
        super().__init__()
        unknown = [t for t in cfg.primary if t not in tasks]
        if unknown:
            raise ConfigError(f"intra_inter: primary tasks {unknown} are not model tasks {tasks}")
        self.tasks = list(tasks)
        self.primary = [t in cfg.primary for t in tasks]
        self.aux_tasks = [t for t in tasks if t not in cfg.primary]
        intra = _columns(parts, "intra", in_dim)  # [D_intra]
        inter = _columns(parts, "inter", in_dim)  # [D_inter]
        self.register_buffer("_intra", intra, persistent=False)
        self.register_buffer("_inter", inter, persistent=False)
        self.tower = MLP(len(intra), cfg.primary_hidden, cfg.activation, cfg.dropout)
        self.moe = (
            MMoE(
                len(inter),
                len(self.aux_tasks),
                cfg.n_experts,
                cfg.expert_hidden,
                cfg.activation,
                cfg.dropout,
            )
            if self.aux_tasks
            else None
        )
        self.out_dim = self.tower.out_dim

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        h = self.tower(x.index_select(1, self._intra))  # [B, H]
        aux: list[torch.Tensor] = []
        diagnostics: dict[str, torch.Tensor] = {}
        if self.moe is not None:
            aux, gates = self.moe(x.index_select(1, self._inter))  # A x [B, H]
            diagnostics = _gate_diagnostics(self.aux_tasks, gates)
        it = iter(aux)
        return [h if p else next(it) for p in self.primary], diagnostics


def _columns(parts: InputParts, name: str, in_dim: int) -> torch.Tensor:
    """The input columns of part ``name`` plus the shared ones (all columns when no module
    declares parts), ascending."""
    if not any(k != "shared" for k in parts):
        return torch.arange(in_dim)
    ranges = parts.get("shared", []) + parts.get(name, [])
    if not ranges:
        raise ConfigError(f"intra_inter: no feature module gives an '{name}' input part")
    return torch.cat([torch.arange(a, b) for a, b in sorted(ranges)])


def build_backbone(
    cfg: MLPBackboneConfig | MMoEBackboneConfig | PLEBackboneConfig | IntraInterBackboneConfig,
    in_dim: int,
    tasks: list[str],
    parts: InputParts | None = None,
) -> Backbone:
    """The backbone that ``cfg`` describes, reading ``[B, in_dim]``, with one output per task;
    ``parts`` (the feature modules' named input ranges) matters to ``intra_inter`` only."""
    if isinstance(cfg, MLPBackboneConfig):
        return SharedBottom(in_dim, tasks, cfg)
    if isinstance(cfg, MMoEBackboneConfig):
        return MMoEBackbone(in_dim, tasks, cfg)
    if isinstance(cfg, IntraInterBackboneConfig):
        return IntraInterBackbone(in_dim, tasks, cfg, parts or {"shared": [(0, in_dim)]})
    return PLEBackbone(in_dim, tasks, cfg)
