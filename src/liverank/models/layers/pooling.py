"""Behaviour-sequence item vectors and masked pooling.

A behaviour sequence of domain ``live`` or ``video`` is a set of ``[B, L]`` id columns (the
item's author, category / tag, action, time gap, ...; see ``features/spec.py``). Position ``l``
of sample ``b`` is real when its item key (``<domain>_seq_author``) is not 0.

:class:`SequenceItems` turns those columns into item vectors ``[B, L, D]``, either as the *sum*
of the side-feature embeddings (all tables of one dimension) or as their *concatenation*
followed by a linear projection to ``dim``. With ``combine="sum"``, the masked mean over
positions is a weighted sum over (position, feature) pairs, computed by
:meth:`SequenceItems.mean` in one fused ``embedding_bag`` call.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap, seq_item_column
from liverank.models.base import Batch
from liverank.models.layers.embedding import EmbeddingCollection

Combine = Literal["sum", "concat"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, L, D]`` over positions where ``mask [B, L]`` is true -> ``[B, D]``.

    Rows without a valid position give zeros.
    """
    m = mask.to(x.dtype).unsqueeze(-1)  # [B, L, 1]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class SequenceItems(nn.Module):
    """Item vectors of one behaviour-sequence domain.

    Args:
        feature_map: gives the domain's columns and their tables (``seq_fields[domain]``).
        emb: the shared embeddings.
        domain: ``"live"`` or ``"video"`` (any key of ``feature_map.seq_fields``).
        combine: ``"sum"`` of side-feature embeddings, or ``"concat"`` + projection.
        dim: output width for ``"concat"`` (default: the item-key table's dimension).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        domain: str,
        combine: Combine = "sum",
        dim: int | None = None,
    ) -> None:
        super().__init__()
        if domain not in feature_map.seq_fields:
            raise ConfigError(
                f"unknown sequence domain '{domain}'; the feature map has "
                f"{sorted(feature_map.seq_fields)}"
            )
        fields = feature_map.seq_fields[domain]
        self.domain = domain
        self.columns: list[str] = list(fields)
        self.tables: list[str] = [fields[c] for c in self.columns]
        self.mask_column = seq_item_column(domain)
        if self.mask_column not in fields:
            raise ConfigError(
                f"sequence domain '{domain}' has no item key column '{self.mask_column}'"
            )
        self.combine = combine
        dims = [emb.dim(t) for t in self.tables]
        if combine == "sum":
            if len(set(dims)) != 1:
                raise ConfigError(
                    f"combine='sum' over the {domain} sequence needs one embedding dimension, "
                    f"got {dict(zip(self.tables, dims, strict=True))}; use combine='concat'"
                )
            self.proj = None
            self.out_dim = dims[0]
        elif combine == "concat":
            self.out_dim = dim or emb.dim(fields[self.mask_column])
            self.proj = nn.Linear(sum(dims), self.out_dim)
        else:
            raise ConfigError(f"combine must be 'sum' or 'concat', got '{combine}'")

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def mask(self, batch: Batch) -> torch.Tensor:
        """``[B, L]`` bool, true at real positions."""
        return batch[self.mask_column] != 0

    def _ids(self, batch: Batch) -> torch.Tensor:
        return torch.stack([batch[c] for c in self.columns], dim=-1)  # [B, L, F]

    def items(self, batch: Batch, emb: EmbeddingCollection) -> torch.Tensor:
        """Item vectors ``[B, L, out_dim]`` (padding positions are zero for ``sum``)."""
        ids = self._ids(batch)  # [B, L, F]
        if self.proj is None:
            return emb.lookup_sum(self.tables, ids)  # [B, L, D]
        parts = [emb.lookup(t, ids[..., f]) for f, t in enumerate(self.tables)]
        return self.proj(torch.cat(parts, dim=-1))  # [B, L, D]

    def mean(
        self, batch: Batch, emb: EmbeddingCollection, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Masked mean of the item vectors over real positions -> ``[B, out_dim]``.

        ``mask`` (``[B, L]`` bool) defaults to :meth:`mask`; pass it when already computed.
        """
        mask = self.mask(batch) if mask is None else mask  # [B, L]
        if self.proj is not None:
            return masked_mean(self.items(batch, emb), mask)
        m = mask.to(torch.float32)
        weights = m / m.sum(1, keepdim=True).clamp(min=1.0)  # [B, L]
        return emb.pooled_sum(self.tables, self._ids(batch), weights)
