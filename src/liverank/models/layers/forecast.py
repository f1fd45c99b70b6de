"""LiveForesighter's sequence models (``papers/liveforesighter.txt`` sections 2.2-2.3).

* :class:`RevIN` - reversible instance normalisation (Kim et al. 2022, the paper's [17]): each
  variate of each instance is standardised over its time steps, optionally with a learned
  per-variate affine map, and forecasts are mapped back with the same statistics (Eq. 2-3).
* :class:`StatisticTransformer` - the iTransformer reading (Liu et al. 2024, the paper's [21])
  of Eq. 2-3: each of the ``N`` statistic sequences is one token (its ``T`` values embedded by a
  shared linear map), a Transformer encoder attends across variates, and a linear head predicts
  the next ``k`` steps of every variate. Returns the forecast and the token encodings
  ``E^Stat [B, N, D]``.
* :class:`ProductTransformer` - Eq. 4-5: the room's previous products, each the concatenation
  of its product and three category embeddings (``[L, 4 D]``, projected to ``D``), a Transformer
  encoder with a causal mask, and a softmax head over the finest category of the next product,
  read at the last real position. Returns the logits and the encodings ``E^Prod [B, L, D]``.

neuralforecast ships an iTransformer, but bound to its own training loop and without
covariates; these are a hundred-odd lines and train inside the ranker (stop-gradient) or alone.
"""

from __future__ import annotations

import torch
from torch import nn


class RevIN(nn.Module):
    """Reversible instance normalisation over the last (time) axis of ``x [B, N, T]``.

    Args:
        n_variates: ``N``.
        affine: learn a per-variate scale and shift applied after standardising.
        eps: added to the variance (a constant sequence normalises to 0, not NaN).
    """

    def __init__(self, n_variates: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        self.weight = nn.Parameter(torch.ones(n_variates)) if affine else None
        self.bias = nn.Parameter(torch.zeros(n_variates)) if affine else None

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_bar [B, N, T], mean [B, N, 1], std [B, N, 1])``."""
        mean = x.mean(dim=-1, keepdim=True)  # [B, N, 1]
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + self.eps)  # [B, N, 1]
        out = (x - mean) / std
        if self.weight is not None and self.bias is not None:
            out = out * self.weight[:, None] + self.bias[:, None]
        return out, mean, std

    def denormalise(self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise` for ``y [B, N, k]`` with that instance's statistics."""
        if self.weight is not None and self.bias is not None:
            y = (y - self.bias[:, None]) / (self.weight[:, None] + self.eps * self.eps)
        return y * std + mean


class StatisticTransformer(nn.Module):
    """iTransformer over ``N`` variates of ``T`` steps, predicting ``k`` steps (module doc).

    Args:
        n_variates: ``N``. window: ``T``. horizon: ``k``.
        dim: ``D`` of the variate tokens. layers, heads: of the encoder.
        dropout: inside the encoder.
        revin_affine: :class:`RevIN`'s learned affine map.
    """

    def __init__(
        self,
        n_variates: int,
        window: int,
        horizon: int,
        dim: int = 32,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.0,
        revin_affine: bool = True,
    ) -> None:
        super().__init__()
        self.n_variates, self.window, self.horizon, self.dim = n_variates, window, horizon, dim
        self.revin = RevIN(n_variates, affine=revin_affine)
        self.embed = nn.Linear(window, dim)  # a variate's whole series -> its token
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, horizon)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, N, T]`` raw statistics -> ``(forecast [B, N, k] raw scale, E [B, N, D])``."""
        x_bar, mean, std = self.revin.normalise(x)  # [B, N, T]
        tokens = self.embed(x_bar)  # [B, N, D]
        enc = self.encoder(tokens)  # [B, N, D]
        y_bar = self.head(enc)  # [B, N, k]
        return self.revin.denormalise(y_bar, mean, std), enc


class ProductTransformer(nn.Module):
    """Next finest category of a room's product sequence (Eq. 4-5; module doc).

    Args:
        sizes: embedding table sizes ``(products, cat1, cat2, cat3)`` (ids ``0`` = padding; a
            larger id is an error, raised by the embedding lookup).
        length: ``L``, the longest sequence (learned positions).
        dim: ``D``. layers, heads, dropout: of the encoder.
    """

    def __init__(
        self,
        sizes: tuple[int, int, int, int],
        length: int,
        dim: int = 32,
        layers: int = 1,
        heads: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.sizes, self.length, self.dim = tuple(sizes), length, dim
        self.tables = nn.ModuleList(nn.Embedding(n, dim, padding_idx=0) for n in sizes)
        self.project = nn.Linear(4 * dim, dim)  # I [L, 4 D] -> [L, D]
        self.position = nn.Embedding(length, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, sizes[3])
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``seq [B, L, 4]`` (product, cat1, cat2, cat3; left-padded with 0, most recent last)
        -> ``(logits [B, C3] of the next product's finest category, E [B, L, D])``.

        A row without any product gets logits 0 (a uniform distribution); padding positions
        get encodings 0.
        """
        b, n, _ = seq.shape
        if n > self.length:
            raise ValueError(f"product sequences of {n} steps; the model reads {self.length}")
        emb = torch.cat([t(seq[..., i]) for i, t in enumerate(self.tables)], dim=-1)  # [B, L, 4D]
        h = self.project(emb) + self.position.weight[self.length - n :]  # [B, L, D]
        pad = seq[..., 0] == 0  # [B, L]
        empty = pad.all(dim=1)  # [B]
        # query i may read key j <= i that is a product, and always itself (no all-masked row)
        causal = self.causal[self.length - n :, self.length - n :]  # [L, L]
        eye = torch.eye(n, dtype=torch.bool, device=seq.device)
        blocked = causal[None] | (pad[:, None, :] & ~eye[None])  # [B, L, L]
        heads = self.encoder.layers[0].self_attn.num_heads
        mask = blocked.repeat_interleave(heads, dim=0)  # [B * heads, L, L]
        # is_causal=False: the mask is per sample (padding), never the plain causal one; saying
        # so skips torch's check that compares it with one, which torch.export records as a
        # guard on the batch size (B * heads != L) and then refuses the dynamic batch axis
        enc = self.encoder(h, mask=mask, is_causal=False)  # [B, L, D]
        enc = enc.masked_fill(pad[..., None], 0.0)  # padding positions carry nothing
        logits = self.head(enc[:, -1])  # [B, C3]: the last position is the most recent product
        return logits.masked_fill(empty[:, None], 0.0), enc
