"""The MLP layer."""

from __future__ import annotations

import pytest
import torch

from liverank.errors import ConfigError
from liverank.models.layers.mlp import MLP


def test_shapes_and_layers() -> None:
    mlp = MLP(6, [8, 4], activation="gelu", dropout=0.1, batch_norm=True)
    assert mlp(torch.randn(5, 6)).shape == (5, 4) and mlp.out_dim == 4
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Dropout"] * 2


def test_last_activation_off_gives_a_linear_output_layer() -> None:
    torch.manual_seed(0)  # unseeded, the RNG state left by earlier tests decided the weights
    mlp = MLP(3, [5, 2], last_activation=False)
    assert type(mlp.net[-1]).__name__ == "Linear"
    out = mlp(torch.randn(200, 3))
    assert (out < 0).any()  # a ReLU output could never be negative


def test_empty_hidden_is_identity() -> None:
    x = torch.randn(2, 3)
    assert torch.equal(MLP(3, [])(x), x)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown activation 'swishy'"):
        MLP(3, [4], activation="swishy")
    with pytest.raises(ConfigError, match="dropout"):
        MLP(3, [4], dropout=1.5)
    with pytest.raises(ConfigError, match=">= 1"):
        MLP(3, [0])
