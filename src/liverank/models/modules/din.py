"""DIN: target attention of the candidate over the user's behaviour sequences.

Reference: G. Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018
(arXiv:1706.06978). The query is the candidate (sum of the embeddings of its author and room
category); the keys and values are the item vectors of each sequence domain (sum of the
side-feature embeddings of a position, see ``layers/pooling.py``). One multi-head activation-
unit attention per domain (``layers/attention.py``); the domains' outputs are concatenated.
"""

from __future__ import annotations

import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.attention import TargetAttention, WeightNorm
from liverank.models.layers.dedup import request_rows
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.pooling import Combine, SequenceItems
from liverank.models.registry import register_module


@register_module
class DIN(FeatureModule):
    """Candidate-aware interest vectors -> ``[B, n_domains * D]``.

    Args:
        domains: sequence domains to attend over (default: every domain of the feature map).
        query_fields: sparse fields whose embeddings are summed into the query.
        heads: attention heads (must divide D).
        unit_hidden: hidden width of the activation units.
        weight_norm: ``none`` (default: raw activation-unit scores, as in the DIN paper, so the
            output's size carries how much of the history matches), ``softmax`` or ``sigmoid``.
            On the planted synthetic signal ``none`` learns clearly faster than ``softmax``.
        combine: how side features make an item vector (``sum`` or ``concat``).
        dedup_rows: look up and project each distinct sequence of the batch once (the rows of
            one request share theirs; :mod:`liverank.models.layers.dedup`); exact, and off
            while tracing for export (a trace must not freeze a data-dependent choice).
    """

    name = "din"

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        domains: list[str] | None = None,
        query_fields: list[str] | None = None,
        heads: int = 2,
        unit_hidden: int = 16,
        weight_norm: WeightNorm = "none",
        combine: Combine = "sum",
        dedup_rows: bool = True,
    ) -> None:
        super().__init__()
        domains = list(feature_map.seq_fields) if domains is None else list(domains)
        query_fields = ["author_id", "room_category"] if query_fields is None else query_fields
        missing = [f for f in query_fields if f not in feature_map.sparse_fields]
        if missing or not query_fields:
            raise ConfigError(f"din: query fields {missing or query_fields} are not sparse fields")
        self.query_fields = list(query_fields)
        self.query_tables = [feature_map.sparse_fields[f] for f in query_fields]
        self.seqs = nn.ModuleList(SequenceItems(feature_map, emb, d, combine) for d in domains)
        dims = {s.out_dim for s in self.seqs} | {emb.dim(t) for t in self.query_tables}
        if len(dims) != 1:
            raise ConfigError(f"din: query and item vectors need one dimension, got {sorted(dims)}")
        dim = dims.pop()
        self.attention = nn.ModuleList(
            TargetAttention(dim, heads, unit_hidden, weight_norm=weight_norm) for _ in self.seqs
        )
        seq_fields = tuple(f for s in self.seqs for f in s.required_fields)
        self.required_fields = tuple(self.query_fields) + seq_fields
        #: the candidate-free inputs: rows equal on all of them share their sequences
        self.seq_fields = tuple(dict.fromkeys(seq_fields))
        self.dedup_rows = dedup_rows
        #: inputs equal in every row of one request, encoded once per request (a program
        #: recorded for serving assumes it: liverank.serve.export.shared_fields)
        self.shared_fields = self.seq_fields if dedup_rows else ()
        self.out_dim = dim * len(self.seqs)

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        ids = torch.stack([batch[f] for f in self.query_fields], dim=-1)  # [B, Q]
        query = emb.lookup_sum(self.query_tables, ids)  # [B, D]
        outputs: list[torch.Tensor] = []
        diagnostics: dict[str, torch.Tensor | float] = {}
        distinct = request_rows([batch[f] for f in self.seq_fields], self.dedup_rows)
        sub = {f: distinct.take(batch[f]) for f in self.seq_fields} if distinct else batch
        rows = distinct.inverse if distinct is not None else None
        for seq, attention in zip(self.seqs, self.attention, strict=True):
            mask = seq.mask(sub)  # [U, L] (U = B without dedup)
            keys = seq.items(sub, emb)  # [U, L, D]
            out, w = attention(query, keys, mask=mask, return_weights=True, rows=rows)
            outputs.append(out)
            if rows is not None:
                mask = mask.index_select(0, rows)  # [B, L]
            # How peaked attention is: mean over rows with a sequence of the max weight.
            has_seq = mask.any(1).float()  # [B]
            peak = w.detach().amax(dim=(1, 2))  # [B]
            diagnostics[f"{seq.domain}_attn_peak"] = (peak * has_seq).sum() / has_seq.sum().clamp(
                min=1.0
            )
        return ModuleOutput(torch.cat(outputs, dim=-1), diagnostics=diagnostics)
