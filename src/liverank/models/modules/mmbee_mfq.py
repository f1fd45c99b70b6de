"""MMBee's Multi-modal Fusion with Learnable Query (MFQ), Kuaishou, KDD 2024.

Reference: ``papers/mmbee.txt``, section 4 (Eqs. 3-7). The room's real-time content is the
multi-modal vectors of its last ``N`` 30 s segments (``--segments N`` samples,
:mod:`liverank.data.mmbee`): ``X_v, X_s, X_t [B, N, d]`` after one linear projection per
modality (the paper's vectors come from a frozen 8B model; ours from the simulator) and a
LayerNorm per modality (``normalize``, ours, not the paper's). Without it training diverged
(``results/mmbee/diverged_trace.txt``): Eq. 3 multiplies two learned projections inside a
softmax, so the softmax's input grows with the square of the projection weights; on the
simulator's segment vectors (mean L2 norms 7 / 14 / 23 for visual / speech / text) the
projection gradients exploded around step 1,300-1,900 and by step 2,000 every logit was
constant. LayerNorm holds each ``X_m`` at unit scale per segment whatever the weights are.

* **Orthogonal projection** (Eqs. 3-4), for each target modality ``m`` and the others ``o``::

      Corr_mo = Softmax(X_m * X_o)            # over the feature axis, per segment
      Y_m     = X_m + sum_o X_o * (1 - Corr_mo)

  Our reading: ``X_m . X_o`` is the element-wise product and the softmax runs over the ``d``
  features, so ``1 - Corr`` is the "dissimilarity vector" the paper names (a ``[N, d]`` weight
  that keeps the features of ``o`` least aligned with ``m``); a matrix product would give an
  ``[N, N]`` map that cannot multiply ``X_o`` element-wise as Eq. 4 writes.
* **Hybrid fusion** (Eq. 5): ``h_m = CrossAttention(X_m W^Q, Y_m W^K, Y_m W^V)`` per modality,
  the three concatenated along the token axis ``h'_f [B, 3N, d]``, then
  ``h_f = SelfAttention(h'_f)``.
* **Learnable queries** (Eqs. 6-7): each author owns ``Q`` query tokens ``q_a [Q, d]`` (an
  embedding table with sparse gradients, randomly initialised), which cross-attend to ``h_f``
  and then self-attend: ``h_m [B, Q, d]``, flattened into the representation ``[B, Q * d]``.

Padding segments (a room younger than ``N`` segments) are masked in every attention; a room with
no segment yet gives a zero representation. Ablations: ``queries=0`` is the paper's ``q_m(-)``
(no learnable query and no cross-attention to it: the representation is the masked mean of
``h_f``, ``[B, d]``); ``modalities`` drops modalities (Table 5); removing the module is
``h_m(-)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from liverank.data.mmbee import MODALITIES
from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput, check_choices
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.pooling import masked_mean
from liverank.models.registry import register_module


def orthogonal_projection(target: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eqs. 3-4: ``Y = X_m + sum_o X_o * (1 - softmax(X_m * X_o))``, all ``[B, N, d]``."""
    out = target
    for other in others:
        corr = torch.softmax(target * other, dim=-1)  # [B, N, d]
        out = out + other * (1.0 - corr)
    return out


@register_module
class MMBeeMFQ(FeatureModule):
    """MFQ (module doc).

    Args:
        feature_map: samples built with ``--segments N`` (``segments`` and ``segment_dim``).
        emb: the shared embeddings (unused: the query tokens are this module's own table).
        dim: ``d`` of every attention (paper: 64).
        queries: learnable query tokens per author ``Q`` (0 = the ``q_m(-)`` ablation).
        heads: attention heads.
        modalities: the modalities read (Table 5 drops one at a time).
        author_field: the sparse field whose id picks the query tokens.
        normalize: LayerNorm each projected modality before Eqs. 3-7 (module doc; ``False``
            is the unnormalised reading that diverged, kept to reproduce it).
    """

    name = "mmbee_mfq"
    #: its eval forward (learnable queries over the room's segments) has no data-dependent
    #: Python; exact at other batch sizes and with rooms that have no segment
    #: (tests/serve/test_export.py)
    exportable = True

    @classmethod
    def unfed(cls, feature_map: FeatureMap, params: dict[str, Any]) -> str | None:
        if feature_map.segments < 1 or feature_map.segment_dim < 1:
            return "no content segments in the samples (build-samples --segments N)"
        return None

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        dim: int = 64,
        queries: int = 4,
        heads: int = 4,
        modalities: Sequence[str] = MODALITIES,
        author_field: str = "author_id",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if feature_map.segments < 1 or feature_map.segment_dim < 1:
            raise ConfigError(
                "mmbee_mfq reads the room's content segments: build the samples with "
                "`liverank build-samples --segments N` (data.segments in a config)"
            )
        modalities = check_choices("mmbee_mfq", "modalities", modalities, MODALITIES)
        if dim < 1 or queries < 0 or heads < 1 or dim % heads:
            raise ConfigError(
                f"mmbee_mfq: need dim >= 1 divisible by heads >= 1 and queries >= 0, got dim "
                f"{dim}, heads {heads}, queries {queries}"
            )
        self.modalities = modalities
        self.dim, self.n_queries = dim, queries
        self.author_field = author_field
        self.project = nn.ModuleDict(
            {m: nn.Linear(feature_map.segment_dim, dim) for m in self.modalities}
        )
        self.norm = nn.ModuleDict(
            {m: nn.LayerNorm(dim) if normalize else nn.Identity() for m in self.modalities}
        )

        def attention() -> nn.MultiheadAttention:
            return nn.MultiheadAttention(dim, heads, batch_first=True)

        self.cross = nn.ModuleDict({m: attention() for m in self.modalities})  # Eq. 5
        self.fuse = attention()  # Eq. 5, self-attention over h'_f
        self.required_fields = (*(f"seg_{m}" for m in self.modalities), "seg_mask")
        if queries:
            authors = feature_map.table_size(feature_map.sparse_fields[author_field])
            self.query_tokens = nn.Embedding(authors, queries * dim, sparse=True)
            nn.init.normal_(self.query_tokens.weight, std=dim**-0.5)
            self.query_cross = attention()  # Eq. 6
            self.query_self = attention()  # Eq. 7
            self.required_fields = (*self.required_fields, author_field)
            self.out_dim = queries * dim
        else:
            self.out_dim = dim

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        valid = batch["seg_mask"] > 0  # [B, N]
        has_any = valid.any(dim=1)  # [B]
        # a room with no segment yet: attend to its first (zero) slot, then zero the output
        keep = valid.clone()
        keep[:, 0] |= ~has_any
        pad = ~keep  # [B, N] True = ignore
        x = {
            m: self.norm[m](self.project[m](batch[f"seg_{m}"].float())) for m in self.modalities
        }  # [B, N, d]
        parts = []
        for m in self.modalities:
            y = orthogonal_projection(x[m], [x[o] for o in self.modalities if o != m])
            h, _ = self.cross[m](x[m], y, y, key_padding_mask=pad, need_weights=False)
            parts.append(h)  # [B, N, d]
        fused_in = torch.cat(parts, dim=1)  # [B, M * N, d]
        fused_pad = pad.repeat(1, len(self.modalities))  # [B, M * N]
        fused, _ = self.fuse(
            fused_in, fused_in, fused_in, key_padding_mask=fused_pad, need_weights=False
        )
        gate = has_any.float()[:, None]  # [B, 1]
        if not self.n_queries:
            return ModuleOutput(masked_mean(fused, ~fused_pad) * gate)  # [B, d]
        author = batch[self.author_field]
        q = self.query_tokens(author).view(-1, self.n_queries, self.dim)  # [B, Q, d]
        h, _ = self.query_cross(q, fused, fused, key_padding_mask=fused_pad, need_weights=False)
        h, _ = self.query_self(h, h, h, need_weights=False)  # [B, Q, d]
        return ModuleOutput(h.flatten(1) * gate)  # [B, Q * d]
