"""BST: a Transformer over each behaviour sequence, then the candidate's attention over it.

Reference: Q. Chen et al., "Behavior Sequence Transformer for E-commerce Recommendation in
Alibaba", DLP-KDD 2019 (arXiv:1905.06874). eLiveRec compares against it with one sequence
("single CTR model") and with both the watched-channel and the product sequences side by side
("dual CTR model", section VI-A, Table II); the strongest dual baselines there (BST, ETA) are
multi-head attention over each sequence, which this module is: per domain, stacked Transformer
blocks over the item vectors (sum of side-feature embeddings), then a softmax target attention
with the candidate (sum of its author and room-category embeddings) as the query. The domains'
outputs are concatenated. (BST puts the candidate inside the sequence and reads its output
position; the target attention is ETA's reading of the same encoded sequence, and the one
eLiveRec's own encoder uses, so the comparison isolates the disentangling.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.dedup import request_rows
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.pooling import SequenceItems
from liverank.models.registry import register_module


@register_module
class BST(FeatureModule):
    """``[B, n_domains * D]``: per domain, Transformer blocks then target attention.

    Args:
        domains: sequence domains (default ``live``; ``[live, product]`` is the dual model).
        query_fields: sparse fields whose embeddings are summed into the query.
        layers, heads: Transformer blocks per domain and their heads (heads divides D).
        dedup_rows: encode each distinct sequence of the batch once (the rows of one request
            share theirs; :mod:`liverank.models.layers.dedup`); exact, as in eLiveRec's
            encoders, so that the two compare at equal cost per request.
    """

    name = "bst"
    #: traces to TorchScript with exact parity (tests/serve/test_export.py)
    exportable = True

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        domains: Sequence[str] = ("live",),
        query_fields: Sequence[str] = ("author_id", "room_category"),
        layers: int = 1,
        heads: int = 2,
        dedup_rows: bool = True,
    ) -> None:
        super().__init__()
        missing = [f for f in query_fields if f not in feature_map.sparse_fields]
        if missing or not query_fields or not domains:
            raise ConfigError(f"bst: needs domains and sparse query fields, got {missing}")
        self.query_fields = list(query_fields)
        self.query_tables = [feature_map.sparse_fields[f] for f in query_fields]
        self.seqs = nn.ModuleList(SequenceItems(feature_map, emb, d, "sum") for d in domains)
        dims = {s.out_dim for s in self.seqs} | {emb.dim(t) for t in self.query_tables}
        if len(dims) != 1:
            raise ConfigError(f"bst: query and item vectors need one dimension, got {dims}")
        d = dims.pop()
        if layers < 1 or heads < 1 or d % heads:
            raise ConfigError(f"bst: layers >= 1 and heads dividing {d}, got {layers}, {heads}")
        block = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True)
        self.encoders = nn.ModuleList(
            nn.TransformerEncoder(block, layers, enable_nested_tensor=False) for _ in domains
        )
        self.out_dim = d * len(domains)
        seq_fields = tuple(c for s in self.seqs for c in s.required_fields)
        self.required_fields = (*self.query_fields, *seq_fields)
        self.seq_fields, self.dedup_rows = tuple(dict.fromkeys(seq_fields)), dedup_rows
        #: inputs equal in every row of one request, encoded once per request (a program
        #: recorded for serving assumes it: liverank.serve.export.shared_fields)
        self.shared_fields = self.seq_fields if dedup_rows else ()

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last feed-forward layer of every domain's encoder: shared by all task heads,
        what an adaptive task weighting takes gradient cosines over (eLiveRec Table IV)."""
        return [p for enc in self.encoders for p in enc.layers[-1].linear2.parameters()]

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        ids = torch.stack([batch[f] for f in self.query_fields], dim=-1)  # [B, Q]
        query = emb.lookup_sum(self.query_tables, ids)  # [B, D]
        outputs = []
        # the sequences and their encoders are candidate-free: once per distinct row
        distinct = request_rows([batch[f] for f in self.seq_fields], self.dedup_rows)
        sub = {f: distinct.take(batch[f]) for f in self.seq_fields} if distinct else batch
        for seq, enc in zip(self.seqs, self.encoders, strict=True):
            e = seq.items(sub, emb)  # [U, L, D] (U = B without dedup)
            mask = seq.mask(sub)  # [U, L]
            pad = ~mask
            pad[:, 0] &= mask.any(1)  # an empty row attends to its first slot, masked below
            h = enc(e, src_key_padding_mask=pad)  # [U, L, D]
            if distinct is not None:  # per batch row: the attention reads the candidate
                mask, h = distinct.expand(mask), distinct.expand(h)  # [B, L], [B, L, D]
            logits = torch.einsum("bld,bd->bl", h, query) / math.sqrt(h.shape[-1])  # [B, L]
            att = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
            outputs.append(torch.einsum("bl,bld->bd", att * mask, h))  # [B, D]
        return ModuleOutput(torch.cat(outputs, dim=-1))
