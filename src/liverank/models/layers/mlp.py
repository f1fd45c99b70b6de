"""Multi-layer perceptron: ``Linear -> [BatchNorm] -> activation -> [Dropout]`` per hidden size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from liverank.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "prelu": nn.PReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


class MLP(nn.Module):
    """``[..., in_dim] -> [..., hidden[-1]]`` (identity when ``hidden`` is empty).

    Args:
        in_dim: input width.
        hidden: output width of each layer.
        activation: name in ``ACTIVATIONS``; applied after every layer, the last included,
            unless ``last_activation`` is False (use that for a layer that produces logits).
        dropout: dropout probability after each activation (0 = none).
        batch_norm: ``BatchNorm1d`` between each linear layer and its activation (inputs must
            be 2-D ``[B, in_dim]``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        last_activation: bool = True,
    ) -> None:
        super().__init__()
        if in_dim < 1 or any(h < 1 for h in hidden):
            raise ConfigError(f"MLP sizes must be >= 1, got in_dim={in_dim}, hidden={list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_dim
        for i, h in enumerate(hidden):
            layers.append(nn.Linear(width, h))
            is_last = i == len(hidden) - 1
            if is_last and not last_activation:
                break
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = hidden[-1] if hidden else in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
