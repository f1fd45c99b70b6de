"""Experiment arms of ``mode: forecast`` (:mod:`liverank.experiments.runner`): a forecaster
YAML names its ``target`` (``statistics``, the default, or ``products``) and its ``method``
(the model or a baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liverank.config import _set_dotted, read_yaml_mapping, validate_as
from liverank.errors import ConfigError
from liverank.foresight import products, statistics

ArmConfig = statistics.ForecastConfig | products.ProductConfig


def load_arm_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ArmConfig:
    """The validated config of a forecast arm (errors name the file and the field)."""
    raw = read_yaml_mapping(path, "forecaster config")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    target = raw.get("target", "statistics")
    if target == "statistics":
        return validate_as(statistics.ForecastConfig, raw, str(path))
    if target == "products":
        return validate_as(products.ProductConfig, raw, str(path))
    raise ConfigError(f"{path}: target must be 'statistics' or 'products', got {target!r}")


def run_forecast_arm(world: Path, cfg: ArmConfig, windows_world: Path | None) -> dict[str, Any]:
    """The record body of one forecast arm."""
    if isinstance(cfg, products.ProductConfig):
        return products.run_arm(world, cfg)
    return statistics.run_arm(world, cfg, windows_world)
