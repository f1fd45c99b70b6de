"""Masked mean pooling of behaviour sequences (the sequence input of the MLP baseline).

Each domain's item vector is the sum (or concat + projection) of the side-feature embeddings of
a position (see ``layers/pooling.py``); the vectors of real positions are averaged, and the
domains' means are concatenated: ``[B, n_domains * D]``. An empty sequence gives zeros.
"""

from __future__ import annotations

import torch

from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.pooling import Combine, SequenceItems
from liverank.models.registry import register_module


@register_module
class SeqPool(FeatureModule):
    """Mean-pooled behaviour sequences -> ``[B, sum of domain dims]``.

    Args:
        domains: sequence domains to pool (default: every domain of the feature map).
        combine: ``"sum"`` of side-feature embeddings per position, or ``"concat"`` + projection.
        dim: item width for ``combine="concat"``.
    """

    name = "seq_pool"

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        domains: list[str] | None = None,
        combine: Combine = "sum",
        dim: int | None = None,
    ) -> None:
        super().__init__()
        domains = list(feature_map.seq_fields) if domains is None else list(domains)
        self.seqs = torch.nn.ModuleList(
            SequenceItems(feature_map, emb, d, combine, dim) for d in domains
        )
        self.required_fields = tuple(f for s in self.seqs for f in s.required_fields)
        self.out_dim = sum(s.out_dim for s in self.seqs)

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        pooled: list[torch.Tensor] = []
        diagnostics: dict[str, torch.Tensor | float] = {}
        for seq in self.seqs:
            mask = seq.mask(batch)  # [B, L]
            pooled.append(seq.mean(batch, emb, mask))  # [B, D]
            diagnostics[f"{seq.domain}_empty_frac"] = (~mask.any(1)).float().mean()
        return ModuleOutput(torch.cat(pooled, dim=-1), diagnostics=diagnostics)
