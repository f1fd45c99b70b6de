"""Where a model trains: ``cpu`` (the default, what CI and the demo use), ``cuda`` or ``auto``.

Batches are built on the CPU (the loaders gather numpy arrays) and moved to the model's device
right before the forward pass; predictions come back to the CPU for the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from liverank.errors import ConfigError

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``auto`` (CUDA when available) as a :class:`torch.device`."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device '{name}'; choose from {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device here")
    return torch.device(name)


def batch_to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on ``device`` (the same dict contents when it is the CPU)."""
    if device.type == "cpu":
        return dict(batch)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
