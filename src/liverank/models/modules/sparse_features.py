"""Embeddings of the sparse (single-id) fields, concatenated: the input of every baseline.

Every field of ``feature_map.sparse_fields`` (user and author ids and side features, room
category, position, hour of day, ...) is looked up in its table; the vectors are concatenated
into ``[B, sum of dims]``. With equal dimensions and fused embeddings this is one gather.

**Room id** (``RankerConfig.room_id_embedding``). The room itself, ``live_id``, is not one of
the default fields: rooms live about an hour, so an offline model gains little from their ids.
Moment&Cross (Cao et al. 2024, section 3.1) argues the opposite for a model trained on the 30 s
stream: a room's highlight shows up within a minute in its fresh labels, and the fastest
parameter to follow it is the room's own embedding row, which the sparse optimiser updates at
``lr_sparse`` whenever the room's rows arrive. :func:`with_room_id` adds ``live_id`` (table
``room``, sized by :mod:`liverank.features.vocab` from every live id of the dataset) to the
sparse fields, so its vector enters the model exactly like the author's or the user's. A room
the model has not seen (a live id beyond the table, e.g. at serving time) is looked up as the
padding row 0 (:mod:`liverank.models.layers.embedding`).
"""

from __future__ import annotations

from typing import Any

import torch

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.registry import register_module

#: the room-id batch field and the embedding table it looks up (``room_id_embedding``)
ROOM_ID_FIELD = "live_id"
ROOM_TABLE = "room"


def with_room_id(feature_map: FeatureMap) -> FeatureMap:
    """``feature_map`` with ``live_id`` as one more sparse field, looked up in table ``room``.

    Raises :class:`ConfigError` when the map has no ``room`` table (a hand-made map, or samples
    written by a builder that did not size it): rebuild the samples or turn the option off.
    """
    if ROOM_TABLE not in feature_map.tables and ROOM_TABLE not in feature_map.hash_buckets:
        raise ConfigError(
            f"room_id_embedding needs a '{ROOM_TABLE}' embedding table (rows = largest live_id "
            f"+ 1) in the feature map, which has only {sorted(feature_map.tables)}; rebuild the "
            "samples with `liverank build-samples` (any --mode), add the table to a hand-made "
            "map, or set room_id_embedding: false"
        )
    fields = {**feature_map.sparse_fields, ROOM_ID_FIELD: ROOM_TABLE}
    return feature_map.model_copy(update={"sparse_fields": fields})


def room_id_params(params: dict[str, Any]) -> dict[str, Any]:
    """``sparse_features`` params that read ``live_id`` too: an explicit ``fields`` list gets it
    appended (absent ``fields`` means every sparse field, which :func:`with_room_id` extends)."""
    fields = params.get("fields")
    if fields is None or ROOM_ID_FIELD in fields:
        return dict(params)
    return {**params, "fields": [*fields, ROOM_ID_FIELD]}


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
