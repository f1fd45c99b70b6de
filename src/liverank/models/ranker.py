"""The Ranker: shared embeddings -> FeatureModules -> multi-task backbone -> one head per task.

ARCHITECTURE section 5. A Ranker is fully described by a :class:`RankerConfig` (data: which
modules with which params, which backbone, which tasks and weights) and a feature map
(vocabularies). ``save`` writes both next to the weights in one file, and ``load`` rebuilds the
model from that file alone.

Example::

    model = Ranker(feature_map, get_config("din"))
    out = model(batch)                      # out.logits["ctr"]: [B]
    loss, parts = model.loss(batch, out)    # masked multi-task BCE + auxiliary losses
    proba = model.predict_proba(batch)      # {task: [B]} in (0, 1)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from liverank.config import validate_as
from liverank.errors import ConfigError, DataValidationError
from liverank.features.spec import FeatureMap
from liverank.models.backbones import BackboneConfig, MLPBackboneConfig, build_backbone
from liverank.models.base import Batch, FeatureModule
from liverank.models.fusion import ranking_score
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.id_policy import IdPolicyConfig
from liverank.models.layers.mlp import MLP
from liverank.models.layers.task_weighting import AdaptiveTaskWeighting, FixedTaskWeights
from liverank.models.modules.sparse_features import room_id_params, with_room_id
from liverank.models.registry import build_module, get_module_class

if TYPE_CHECKING:
    from liverank.features.long_history import LongHistory

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "liverank.ranker"
CHECKPOINT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModuleSpec(_Strict):
    """One FeatureModule of a Ranker: its registered ``name`` and constructor ``params``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: key of the module inside the Ranker (default: ``name``); prefixes its aux losses
    key: str | None = None
    #: switch the module off (logged, ``Ranker.switched_off``) when the samples cannot feed it
    #: (``FeatureModule.unfed``: no long histories, no segments, ...) instead of failing
    optional: bool = False

    @property
    def module_key(self) -> str:
        return self.key or self.name


class TaskWeightingConfig(_Strict):
    """How the auxiliary tasks' losses are weighted against the primary one (eLiveRec
    section IV-D, eqs. 14-15; ``models/layers/task_weighting.py``)."""

    #: ``fixed``: the constant ``weights`` (the paper's vanilla MTL); ``adaptive``: a weighting
    #: network on the cosine between each auxiliary task's and the primary task's gradients
    type: Literal["fixed", "adaptive"]
    #: the primary task (weight 1); every other task and regression target is auxiliary
    primary: str = "ctr"
    #: fixed: auxiliary task -> weight (every auxiliary task, nothing else)
    weights: dict[str, float] = Field(default_factory=dict)
    #: adaptive: the module whose ``shared_parameters()`` the gradients are taken over
    shared_module: str = "eliverec"
    #: adaptive: recompute the gradient cosines every ``every`` steps (cost / ``every``)
    every: int = Field(1, ge=1)
    hidden: int = Field(16, ge=1)
    type_dim: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)


#: regression targets a Ranker can predict: the sample column and what the head regresses
REGRESSION_TARGETS = {"stay_ms": "log(1 + stay seconds)"}


class RankerConfig(_Strict):
    """Everything that defines a Ranker besides the feature map (validated; YAML-friendly)."""

    name: str = "custom"
    modules: list[ModuleSpec] = Field(min_length=1)
    backbone: BackboneConfig = Field(default_factory=MLPBackboneConfig)
    #: tasks with a head (default: every task of the feature map)
    tasks: list[str] | None = None
    #: per-task loss weight (default 1.0)
    task_weights: dict[str, float] = Field(default_factory=dict)
    embedding_dim: int = Field(16, ge=1)
    #: standard deviation of the initial embedding rows
    embedding_init_std: float = Field(0.1, gt=0)
    #: per-table dimension overrides
    embedding_dims: dict[str, int] = Field(default_factory=dict)
    #: extra hashed tables (table -> buckets), on top of the feature map's ``hash_buckets``
    hash_buckets: dict[str, int] = Field(default_factory=dict)
    #: per table: frequency filter and time to live of its ids (``layers/id_policy.py``), e.g.
    #: ``{user: {min_count: 2, ttl_ms: 86400000}}``; such a table gets one shared OOV row
    id_policies: dict[str, IdPolicyConfig] = Field(default_factory=dict)
    #: fused embedding storage (see layers/embedding.py); same model, faster on CPU
    fused_embeddings: bool = True
    sparse_embeddings: bool = True
    head_hidden: list[int] = Field(default_factory=lambda: [32])
    head_activation: str = "relu"
    #: multiplier of each auxiliary loss, by ``<module key>.<loss name>`` or ``<module key>``
    aux_loss_weights: dict[str, float] = Field(default_factory=dict)
    #: exponents of the multiplicative ranking score (Moment&Cross eq. 4; ``models/fusion.py``),
    #: task -> alpha; empty = rank by ``p_ctr`` alone
    score_exponents: dict[str, float] = Field(default_factory=dict)
    #: embed the room id ``live_id`` (table ``room``) as one more field of the
    #: ``sparse_features`` module, trained by the sparse optimiser at ``lr_sparse``: the room's
    #: own vector, which fresh labels move within seconds (Moment&Cross section 3;
    #: ``modules/sparse_features.py``). Needs a feature map with a ``room`` table.
    room_id_embedding: bool = False
    #: regression heads (eLiveRec's stay time): ``stay_ms``, trained by MSE on
    #: ``log(1 + seconds)`` over every impression (0 for a non-click)
    regression_targets: list[Literal["stay_ms"]] = Field(default_factory=list)
    #: eLiveRec's adaptive (or fixed) weighting of the auxiliary tasks; ``None``: every task
    #: summed with ``task_weights``
    task_weighting: TaskWeightingConfig | None = None

    @model_validator(mode="after")
    def _unique_keys(self) -> RankerConfig:
        keys = [m.module_key for m in self.modules]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(
                f"module keys must be unique, repeated: {dup} (set 'key' to tell apart)"
            )
        bad = [k for k in keys if "." in k or "/" in k]
        if bad:
            raise ValueError(f"module keys may not contain '.' or '/': {bad}")
        return self

    @classmethod
    def parse(cls, raw: dict[str, Any], source: str = "<model config>") -> RankerConfig:
        """``model_validate`` that raises :class:`ConfigError` naming the offending field."""
        return validate_as(cls, raw, source)


@dataclass
class RankerOutput:
    logits: dict[str, torch.Tensor]  # task -> [B]
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # "<key>.<name>" -> scalar
    diagnostics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    regression: dict[str, torch.Tensor] = field(default_factory=dict)  # target -> [B]


class Ranker(nn.Module):
    """Embeddings -> FeatureModules (concatenated) -> backbone -> per-task logit heads."""

    def __init__(self, feature_map: FeatureMap, config: RankerConfig) -> None:
        super().__init__()
        self.feature_map = feature_map
        self.config = config
        self.tasks: list[str] = list(config.tasks or feature_map.tasks)
        if not self.tasks:
            raise ConfigError("the Ranker has no task: set 'tasks' or use a feature map with tasks")
        no_head = [t for t in config.score_exponents if t not in self.tasks]
        if no_head:
            raise ConfigError(f"score_exponents name tasks without a head: {no_head}")
        unknown_tasks = [t for t in self.tasks if t not in feature_map.tasks]
        if unknown_tasks:
            raise ConfigError(
                f"config tasks {unknown_tasks} are not tasks of the feature map {feature_map.tasks}"
            )
        unknown = [t for t in config.task_weights if t not in self.tasks]
        if unknown:
            raise ConfigError(f"task_weights names tasks the model does not have: {unknown}")

        effective_map = feature_map.model_copy(
            update={"hash_buckets": {**feature_map.hash_buckets, **config.hash_buckets}}
        )
        specs = list(config.modules)
        if config.room_id_embedding:
            effective_map = with_room_id(effective_map)
            specs = _room_id_specs(specs)
        #: optional modules the samples cannot feed: module key -> why
        self.switched_off: dict[str, str] = {}
        kept = []
        for spec in specs:
            reason = (
                get_module_class(spec.name).unfed(effective_map, dict(spec.params))
                if spec.optional
                else None
            )
            if reason is None:
                kept.append(spec)
                continue
            self.switched_off[spec.module_key] = reason
            log.warning("%s: module '%s' switched off: %s", config.name, spec.module_key, reason)
        if not kept:
            raise ConfigError(f"{config.name}: every module is switched off {self.switched_off}")
        specs = kept
        tables = sorted(set(effective_map.tables) | set(effective_map.hash_buckets))
        unknown_tables = sorted(set(config.embedding_dims) - set(tables))
        if unknown_tables:
            raise ConfigError(f"embedding_dims names unknown tables {unknown_tables}")
        dims = {t: config.embedding_dims.get(t, config.embedding_dim) for t in tables}
        self.embeddings = EmbeddingCollection(
            effective_map,
            dims,
            sparse=config.sparse_embeddings,
            fused=config.fused_embeddings,
            init_std=config.embedding_init_std,
            policies=config.id_policies,
        )
        self.feature_modules = nn.ModuleDict()
        for spec in specs:
            self.feature_modules[spec.module_key] = build_module(
                spec.name, effective_map, self.embeddings, dict(spec.params)
            )
        self.regression: list[str] = list(config.regression_targets)
        heads = [*self.tasks, *self.regression]
        in_dim = sum(m.out_dim for m in self._modules_list())
        self.backbone = build_backbone(
            config.backbone, in_dim, heads, _input_parts(self._modules_list())
        )
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(
                    MLP(self.backbone.out_dim, config.head_hidden, config.head_activation),
                    nn.Linear(
                        config.head_hidden[-1] if config.head_hidden else self.backbone.out_dim, 1
                    ),
                )
                for t in heads
            }
        )
        self.weighting = self._build_weighting(config.task_weighting)
        weights = [config.task_weights.get(t, 1.0) for t in self.tasks]
        self.register_buffer("_task_weights", torch.tensor(weights), persistent=False)
        self.required_fields: dict[str, tuple[str, ...]] = {
            key: tuple(m.required_fields) for key, m in self.feature_modules.items()
        }
        log.debug("Ranker %s: input width %d, tasks %s", config.name, in_dim, self.tasks)

    def _build_weighting(
        self, cfg: TaskWeightingConfig | None
    ) -> AdaptiveTaskWeighting | FixedTaskWeights | None:
        if cfg is None:
            return None
        heads = [*self.tasks, *self.regression]
        if cfg.primary not in heads:
            raise ConfigError(f"task_weighting.primary '{cfg.primary}' is not a task {heads}")
        aux = [t for t in heads if t != cfg.primary]
        if not aux:
            raise ConfigError("task_weighting needs at least one auxiliary task")
        if cfg.type == "fixed":
            if sorted(cfg.weights) != sorted(aux):
                raise ConfigError(
                    f"task_weighting.weights must give every auxiliary task {aux}, "
                    f"got {sorted(cfg.weights)}"
                )
            return FixedTaskWeights({t: cfg.weights[t] for t in aux})
        module = dict(self.feature_modules.items()).get(cfg.shared_module)
        if module is None or not hasattr(module, "shared_parameters"):
            raise ConfigError(
                f"task_weighting.shared_module '{cfg.shared_module}' is not a module of this "
                "model with shared_parameters() (e.g. eliverec)"
            )
        return AdaptiveTaskWeighting(aux, cfg.type_dim, cfg.hidden, cfg.every, cfg.lr)

    def _modules_list(self) -> list[FeatureModule]:
        return list(self.feature_modules.values())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ forward
    def check_batch(self, batch: Batch) -> None:
        """Raise :class:`ConfigError` naming the first missing field and the module needing it."""
        for key, fields in self.required_fields.items():
            for f in fields:
                if f not in batch:
                    hint = getattr(self.feature_modules[key], "field_hint", lambda _: "")(f)
                    raise ConfigError(
                        f"module '{key}' needs batch field '{f}', which the batch does not have "
                        f"(batch fields: {', '.join(sorted(batch))}); rebuild the samples with "
                        f"that feature or remove the module from the model config{hint}"
                    )

    def forward(self, batch: Batch) -> RankerOutput:
        self.check_batch(batch)
        reps: list[torch.Tensor] = []
        aux: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, torch.Tensor | float] = {}
        for key, module in self.feature_modules.items():
            out = module(batch, self.embeddings)
            reps.append(out.representation)  # [B, d_m]
            for name, value in out.aux_losses.items():
                aux[f"{key}.{name}"] = value
            for name, value in out.diagnostics.items():
                diagnostics[f"{key}/{name}"] = value
        x = torch.cat(reps, dim=-1) if len(reps) > 1 else reps[0]  # [B, D_in]
        task_reprs, backbone_diag = self.backbone(x)  # T x [B, H]
        diagnostics.update({f"backbone/{k}": v for k, v in backbone_diag.items()})
        heads = [*self.tasks, *self.regression]
        outputs = {
            t: self.heads[t](h).squeeze(-1)  # [B]
            for t, h in zip(heads, task_reprs, strict=True)
        }
        logits = {t: outputs[t] for t in self.tasks}
        regression = {t: outputs[t] for t in self.regression}
        return RankerOutput(logits, aux, diagnostics, regression)

    def aux_weight(self, name: str) -> float:
        """Weight of auxiliary loss ``name``: its own entry, else its module's (prefix before "."), else 1."""
        w = self.config.aux_loss_weights
        if name in w:
            return w[name]
        return w.get(name.split(".", 1)[0], 1.0)

    def loss(self, batch: Batch, out: RankerOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Masked multi-task BCE plus weighted auxiliary losses.

        Per task: mean BCE over samples whose ``mask_<task>`` is 1 (a batch without that mask
        column counts every label as observed; a task with no observed label contributes 0);
        per regression target: MSE on ``log(1 + seconds)``. Tasks are summed with
        ``task_weights`` (regression targets with weight 1), or, with ``task_weighting``, the
        primary task with weight 1 and every other with the weighting's (eLiveRec eq. 15; the
        adaptive weighting updates its own network here, in training mode). Auxiliary losses
        are added with ``aux_loss_weights``. Returns ``(total, parts)``, parts detached:
        ``task/<task>``, ``aux/<name>``, ``weight/<task>`` (with a weighting) and ``total``.
        """
        parts: dict[str, torch.Tensor] = {}
        losses: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self._task_weights.device)
        for t in self.tasks:
            if t not in batch:
                raise DataValidationError(
                    f"batch has no label column for task '{t}' (fields: {', '.join(sorted(batch))})",
                    column=t,
                )
            logit = out.logits[t]  # [B]
            label = batch[t].to(logit.dtype)
            mask = batch.get(f"mask_{t}")
            bce = F.binary_cross_entropy_with_logits(logit, label, reduction="none")  # [B]
            if mask is None:
                task_loss = bce.mean()
            else:
                m = mask.to(logit.dtype)
                task_loss = (bce * m).sum() / m.sum().clamp(min=1.0)
            parts[f"task/{t}"] = task_loss.detach()
            losses[t] = task_loss
        for t in self.regression:
            if t not in batch:
                raise DataValidationError(f"batch has no regression target '{t}'", column=t)
            pred = out.regression[t]  # [B]
            target = torch.log1p(batch[t].to(pred.dtype).clamp(min=0) / 1000.0)  # [B]
            losses[t] = F.mse_loss(pred, target)
            parts[f"task/{t}"] = losses[t].detach()
        total = total + self._weighted(losses, parts)
        for name, value in out.aux_losses.items():
            weighted = self.aux_weight(name) * value
            parts[f"aux/{name}"] = weighted.detach()
            total = total + weighted
        parts["total"] = total.detach()
        return total, parts

    def _weighted(self, losses: dict[str, torch.Tensor], parts: dict[str, torch.Tensor]):
        """The tasks' losses combined: ``task_weights``, or the task weighting (eq. 15)."""
        if self.weighting is None:
            weights = dict(zip(self.tasks, self._task_weights, strict=True))
            return sum(weights.get(t, 1.0) * v for t, v in losses.items())
        primary = self.config.task_weighting.primary  # type: ignore[union-attr]
        aux = {t: v for t, v in losses.items() if t != primary}
        shared: list[torch.Tensor] = []
        if isinstance(self.weighting, AdaptiveTaskWeighting):
            key = self.config.task_weighting.shared_module  # type: ignore[union-attr]
            shared = list(self.feature_modules[key].shared_parameters())  # type: ignore[operator]
        weights, diag = self.weighting(losses[primary], aux, shared)
        for t, w in weights.items():
            parts[f"weight/{t}"] = w.detach()
        for name, value in diag.items():  # cos/T: the gradient cosines the weights came from
            if name.startswith("cos/"):
                parts[f"weight_{name}"] = torch.tensor(value)
        return losses[primary] + sum(weights[t] * v for t, v in aux.items())

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-task probabilities ``{task: [B]}``, computed in eval mode (mode is restored)."""
        was_training = self.training
        if was_training:  # Module.train/eval walks every submodule: only when it changes
            self.eval()
        try:
            out = self(batch)
        finally:
            if was_training:
                self.train()
        return {t: torch.sigmoid(v) for t, v in out.logits.items()}

    def ranking_score(self, batch: Batch) -> torch.Tensor:
        """The score a ranking service sorts by, ``[B]``: Moment&Cross eq. 4 with the config's
        ``score_exponents`` (``prod_t (1 + p_t)^alpha_t``), or ``p_ctr`` when none are set."""
        return self.score_from_proba(self.predict_proba(batch))

    def score_from_proba(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`ranking_score` from already computed :meth:`predict_proba` output."""
        return ranking_score(probs, self.config.score_exponents or {"ctr": 1.0})

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(sparse, dense)``: embedding weights with sparse gradients (the shared tables and
        any ``nn.Embedding(sparse=True)`` a module owns, e.g. MMBee's per-author query tokens),
        and everything else."""
        sparse: list[nn.Parameter] = []
        if self.embeddings.sparse:
            sparse = list(self.embeddings.parameters())
        sparse_ids = {id(p) for p in sparse}
        for module in self.modules():
            is_sparse = isinstance(module, nn.Embedding) and module.sparse
            if is_sparse and id(module.weight) not in sparse_ids:
                sparse.append(module.weight)
                sparse_ids.add(id(module.weight))
        dense = [p for p in self.parameters() if id(p) not in sparse_ids]
        return sparse, dense

    def pretrain(self, samples_dir: str | Path, as_of_day: int, seed: int = 0) -> dict[str, Any]:
        """Run the self-supervised pre-training of every module that has one (MMBee's GraphCL
        in ``mmbee_gie``) on the data before day ``as_of_day`` of ``samples_dir``; returns
        ``{module: summary}`` (empty when no module pre-trains)."""
        done: dict[str, Any] = {}
        for key, module in self.feature_modules.items():
            hook = getattr(module, "pretrain", None)
            if hook is not None:
                summary = hook(Path(samples_dir), as_of_day, seed)
                if summary:
                    done[key] = summary
        return done

    def attach_long_history(self, store: LongHistory | None, long_len: int = 0) -> int:
        """Give every module that reads long histories (e.g. ``moment_cross``) the store.

        Call it right after loading the samples: ``model.attach_long_history(
        samples.long_history, samples.long_len)``. The store is data, not parameters: it is
        not saved in checkpoints (attach it again after :meth:`load`). ``None`` detaches it
        (samples without long history). Returns how many modules read long histories.
        """
        taken = 0
        for module in self._modules_list():
            attach = getattr(module, "attach_long_history", None)
            if attach is not None:
                attach(store, long_len)
                taken += 1
        self.required_fields = {
            key: tuple(m.required_fields) for key, m in self.feature_modules.items()
        }
        return taken

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """One file: format tag, config, feature map and state dict."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "feature_map": self.feature_map.model_dump(mode="json"),
            "state_dict": self.state_dict(),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)  # atomic: a reader never sees half a checkpoint

    @classmethod
    def load(
        cls, path: str | Path, feature_map: FeatureMap | None = None, map_location: str = "cpu"
    ) -> Ranker:
        """Rebuild a Ranker saved by :meth:`save`.

        With ``feature_map`` (e.g. the map of the samples about to be scored), check that its
        tasks and table sizes match the checkpoint's; any mismatch raises :class:`ConfigError`.
        """
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such model checkpoint")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # any unpickling failure means "not a checkpoint"
            raise ConfigError(
                f"{path}: not a readable liverank checkpoint ({_load_failure(exc, path)})"
            ) from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{path}: not a liverank Ranker checkpoint")
        if payload.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(
                f"{path}: checkpoint version {payload.get('version')} is not supported "
                f"(this liverank reads version {CHECKPOINT_VERSION})"
            )
        saved_map = FeatureMap.model_validate(payload["feature_map"])
        config = RankerConfig.parse(payload["config"], source=str(path))
        if feature_map is not None:
            _check_compatible(saved_map, feature_map, set(config.hash_buckets), path)
        model = cls(saved_map, config)
        _load_state(model, payload["state_dict"], path)
        return model


def _room_id_specs(specs: list[ModuleSpec]) -> list[ModuleSpec]:
    """``specs`` with every ``sparse_features`` module reading ``live_id`` too (its params get
    the field when they list ``fields``); raises ConfigError when there is no such module."""
    if not any(s.name == "sparse_features" for s in specs):
        raise ConfigError(
            "room_id_embedding feeds the room's vector through the 'sparse_features' module, "
            f"which this config does not have (modules: {[s.name for s in specs]}); add it or "
            "set room_id_embedding: false"
        )
    return [
        s.model_copy(update={"params": room_id_params(s.params)})
        if s.name == "sparse_features"
        else s
        for s in specs
    ]


def _load_failure(exc: Exception, path: Path) -> str:
    """Why ``torch.load`` failed, in one short line. torch's own message is several lines of
    advice about ``weights_only=False``, which does not apply: Ranker.save writes only tensors
    and plain data, so a file the weights-only unpickler refuses is not a Ranker checkpoint."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].strip().splitlines()
        first = detail[0].split(". ")[0].rstrip(".") if detail else ""
        return f"unpickling failed: {first}" if first else "unpickling failed"
    if path.exists() and path.stat().st_size == 0:
        return "empty file"
    first = text.strip().splitlines()[0].split(". ")[0].rstrip(".") if text.strip() else ""
    return first or type(exc).__name__


def _check_compatible(saved: FeatureMap, given: FeatureMap, hashed: set[str], path: Path) -> None:
    """Raise ConfigError if ``given`` would index the model's tables differently from ``saved``.

    ``hashed``: tables the model config hashes, whose vocabulary size does not matter.
    """
    if saved.tasks != given.tasks:
        raise ConfigError(f"{path}: model tasks {saved.tasks} != feature map tasks {given.tasks}")
    hashed = hashed | set(saved.hash_buckets)
    for table in sorted(set(saved.tables) | set(given.tables)):
        a, b = saved.tables.get(table), given.tables.get(table)
        if a != b and table not in hashed:
            raise ConfigError(
                f"{path}: embedding table '{table}' has {a} rows in the model but {b} in the "
                f"feature map; retrain on these samples or use the model's feature map"
            )
    if saved.hash_buckets != given.hash_buckets:
        raise ConfigError(
            f"{path}: hash buckets differ: model {saved.hash_buckets}, feature map "
            f"{given.hash_buckets}"
        )
    if saved.seq_len != given.seq_len:
        log.warning(
            "%s: seq_len %d in the model, %d in the feature map", path, saved.seq_len, given.seq_len
        )


def _load_state(model: Ranker, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ConfigError(
            f"{path}: state dict does not match the config: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ConfigError(
                f"{path}: parameter '{key}' has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model built from its config"
            )
    model.load_state_dict(state)


def _input_parts(modules: list[FeatureModule]) -> dict[str, list[tuple[int, int]]]:
    """The backbone input's named column ranges: each module's ``output_parts`` shifted to its
    offset in the concatenation; a module without parts is one ``shared`` range."""
    parts: dict[str, list[tuple[int, int]]] = {}
    offset = 0
    for m in modules:
        own = getattr(m, "output_parts", {}) or {"shared": (0, m.out_dim)}
        for name, (a, b) in own.items():
            if not 0 <= a < b <= m.out_dim:
                raise ConfigError(f"module '{m.name}': output part {name} [{a}, {b}) is outside")
            parts.setdefault(name, []).append((offset + a, offset + b))
        offset += m.out_dim
    return parts
