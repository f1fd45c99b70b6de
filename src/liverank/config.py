"""Experiment configuration: one YAML file pins data, model and training (validated by pydantic).

Example (``configs/ple.yaml``)::

    name: ple
    data:
      samples: runs/samples
      val_days: 1
      test_days: 1
    model: ple            # a name from liverank.models.zoo, or a full RankerConfig mapping
    train:
      epochs: 4
      batch_size: 1024

Relative paths are resolved against the current working directory; command-line options of
``liverank train`` override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from liverank.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    samples: Path = Path("runs/samples")
    val_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)
    #: training days: the last ``train_days`` before validation (None: every earlier day). The
    #: earlier days still feed the behaviour sequences and long histories, but are no training
    #: rows: histories that reach before the training data, as in production
    train_days: int | None = Field(None, ge=1)
    #: items per user and domain of the long histories loaded into batches (0 = none); the
    #: ``moment_cross`` module needs it > 0 and samples built with long histories
    long_len: int = Field(0, ge=0)
    #: samples with the shopping columns (``build-samples --shopping``: product sequence, room
    #: product context, goods-bag / product-click labels); what ``eliverec`` reads
    shopping: bool = False
    #: MMBee's columns (``build-samples --segments N --graph-k K``): the room's last N content
    #: segments and the top-K metapath neighbours of the user and author (0 = none)
    segments: int = Field(0, ge=0)
    graph_k: int = Field(0, ge=0)
    #: LiveForesighter's columns (``build-samples --room-stats T --room-products L``): the
    #: room's last T windows of statistics and last L products as of the impression (0 = none)
    room_stats: int = Field(0, ge=0)
    room_products: int = Field(0, ge=0)
    #: the rows of the samples: "impression" (one per impression, labels over the whole
    #: visit) or "moment" (the first-only rows of the moment stream, one per impression and
    #: 30 s window with something to report; with ``segments``, MMBee's segment-level gift
    #: samples). The experiment runner builds them; ``liverank train`` checks them.
    rows: Literal["impression", "moment"] = "impression"
    #: how samples reach the trainer: "memory" (every row of the split in RAM, a global
    #: shuffle) or "stream" (Parquet row groups read chunk by chunk with a buffer shuffle of
    #: ``buffer_rows`` rows: bounded memory for data larger than RAM; docs/scaling.md)
    loader: Literal["memory", "stream"] = "memory"
    buffer_rows: int = Field(65_536, ge=1)
    #: rows decoded at a time by the stream loader
    chunk_rows: int = Field(4_096, ge=1)
    #: how training rows are shuffled into batches: "rows" (uniformly) or "requests" (whole
    #: requests kept together, so a model encodes a request's shared sequences once;
    #: :mod:`liverank.data.batch_order`, docs/scaling.md)
    batch_order: Literal["rows", "requests"] = "rows"


class TrainConfig(_Strict):
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(1024, ge=1)
    eval_batch_size: int = Field(8192, ge=1)
    lr_sparse: float = Field(0.02, gt=0)
    lr_dense: float = Field(0.002, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(1, ge=0)
    #: validation metric for early stopping: "<task>_<auc|gauc|uauc>" or "mean_auc"
    monitor: str = "ctr_gauc"
    seed: int = 0
    threads: int = Field(2, ge=1)
    #: stop an epoch after this many batches (0 = no limit); for quick runs and tests
    max_batches_per_epoch: int = Field(0, ge=0)
    progress: bool = True
    #: where the model trains: "cpu", "cuda" or "auto" (CUDA when torch sees one)
    device: Literal["cpu", "cuda", "auto"] = "cpu"


class ExperimentConfig(_Strict):
    name: str
    data: DataConfig = Field(default_factory=DataConfig)
    #: a zoo name ("mlp", "din", "mmoe", "ple") or a RankerConfig mapping
    model: str | dict[str, Any] = "mlp"
    #: shallow overrides applied on top of a zoo config (e.g. {"embedding_dim": 32})
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: Path = Path("runs/out")
    #: model registry directory; the best checkpoint is published there when set
    registry: Path | None = None
    #: compile the version's AOTInductor package into ``<registry>/.aoti`` before publishing
    #: it, so that ``liverank serve --runtime aoti`` loads it without compiling on its serving
    #: cores (``liverank train --compile-aoti``; needs ``registry`` and a C++ compiler)
    registry_aoti: bool = False

    @model_validator(mode="after")
    def _aoti_needs_a_registry(self) -> ExperimentConfig:
        if self.registry_aoti and self.registry is None:
            raise ValueError(
                "--compile-aoti needs a registry to publish to (registry_aoti: true without "
                "registry; set registry: DIR or --registry DIR)"
            )
        return self


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: ``{}``); :class:`ConfigError` naming
    the file when it is missing (``"<path>: <what> not found"``), not YAML, or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML; errors name the file and the offending field."""
    p = Path(path)
    raw = read_yaml_mapping(p)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return parse_config(raw, source=str(p))


def validate_as(model: type[M], raw: Any, source: str) -> M:
    """``model.model_validate(raw)``, raising :class:`ConfigError` naming the first bad field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "<root>"
        raise ConfigError(f"{source}: field '{loc}': {first['msg']}") from exc


def parse_config(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    return validate_as(ExperimentConfig, raw, source)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot override '{dotted}': '{k}' is not a mapping")
    node[keys[-1]] = value
