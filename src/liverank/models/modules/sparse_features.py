"""Embeddings of the sparse (single-id) fields, concatenated: the input of every baseline.

Every field of ``feature_map.sparse_fields`` (user and author ids and side features, room
category, position, hour of day, ...) is looked up in its table; the vectors are concatenated
into ``[B, sum of dims]``. With equal dimensions and fused embeddings this is one gather.
"""

from __future__ import annotations

import torch

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.registry import register_module


@register_module
class SparseFeatures(FeatureModule):
    """Concatenated embeddings of sparse fields -> ``[B, sum_f dim(table_f)]``.

    Args:
        fields: the sparse fields to use (default: every field of the feature map).
    """

    name = "sparse_features"

    def __init__(
        self, feature_map: FeatureMap, emb: EmbeddingCollection, fields: list[str] | None = None
    ) -> None:
        super().__init__()
        fields = list(feature_map.sparse_fields) if fields is None else list(fields)
        unknown = [f for f in fields if f not in feature_map.sparse_fields]
        if unknown or not fields:
            raise ConfigError(
                f"sparse_features: unknown or no fields {unknown}; "
                f"the feature map has {list(feature_map.sparse_fields)}"
            )
        self.fields = fields
        self.tables = [feature_map.sparse_fields[f] for f in fields]
        dims = [emb.dim(t) for t in self.tables]
        self.uniform = len(set(dims)) == 1
        self.required_fields = tuple(fields)
        self.out_dim = sum(dims)

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        ids = torch.stack([batch[f] for f in self.fields], dim=-1)  # [B, F]
        if self.uniform:
            vecs = emb.lookup_stack(self.tables, ids)  # [B, F, D]
            return ModuleOutput(vecs.flatten(1))  # [B, F*D]
        parts = [emb.lookup(t, ids[:, i]) for i, t in enumerate(self.tables)]
        return ModuleOutput(torch.cat(parts, dim=-1))
