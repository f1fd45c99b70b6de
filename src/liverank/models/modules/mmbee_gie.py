"""MMBee's Graph-guided Interest Expansion (GIE), the end-to-end part (section 5.3, Eqs. 10-12).

The offline part (the U2A and Swing A2A graphs, the metapath neighbours rebuilt daily) is
:mod:`liverank.graph` and :mod:`liverank.data.mmbee`: a sample of ``--graph-k K`` samples
carries the top-``K`` neighbours of its user along ``u2a2u``, ``u2a2u2a``, ``u2a2a`` and of its
author along ``a2a``, ``a2u2a`` (``gie_<metapath> [B, K]``, 0 = padding). This module embeds
them with its own graph node tables ``Theta`` (one for users, one for authors, sparse
gradients) and mean-pools (Eq. 12)::

    h_u = MeanPooling({Theta(v) : v in N_u2a2u(u) U N_u2a2u2a(u) U N_u2a2a(u)})     # Eq. 10
    h_a = MeanPooling({Theta(v) : v in N_a2a(a) U N_a2u2a(a)})                       # Eq. 11

and returns ``h_u ++ h_a [B, 2 d]``, trained end to end with the ranker's tasks. A node without
any neighbour (no gift before the day of the sample) pools to zero.

**GraphCL pre-training** (section 5.2, Algorithm 1; :mod:`liverank.graph.graphcl`): with
``pretrain=True`` the tables are initialised, before the ranker trains, from node embeddings
pre-trained on the graph of the training days (the store the first held-out day reads: gifts
before it, so nothing of the validation or test days), :meth:`pretrain` being called by the
trainer. ``pretrain=False`` is Table 4's "no pre-training" row.

**Author attributes.** ``Theta`` is "the graph node embedding layer operation and author
multi-modal attribute retrieval operation" (Eq. 10-11): an author node also carries "the
attribute of aggregated multi-modal feature" (section 5.1). With samples that have them
(``feature_map.author_attr_dim = D > 0``: the mean visual / speech / text vector of the author's
segments before the store's day, :func:`liverank.graph.store.author_attributes`), an author
node is ``Theta(a) = e_a + W x_a`` with ``x_a [3 D]`` and ``W`` a learned ``3 D -> d``
projection; a user node is ``e_u``. The sum (not a concatenation) is our reading: the union of
Eq. 10 mixes users and authors, so every node needs one width. ``author_attributes=False``
switches it off.

Our reading where the paper is silent: a union holds duplicates if two metapaths reach the
same node (it then counts twice in the mean, as a multiset).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverank.data.mmbee import AUTHOR_METAPATHS, GIE_COLUMNS, MODALITIES, USER_METAPATHS
from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput, check_choices
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.pooling import masked_mean
from liverank.models.registry import register_module

log = logging.getLogger(__name__)
METAPATHS = (*USER_METAPATHS, *AUTHOR_METAPATHS)


@register_module
class MMBeeGIE(FeatureModule):
    """GIE's expanded-behaviour pooling (module doc).

    Args:
        feature_map: samples built with ``--graph-k K``.
        emb: the shared embeddings (unused: the node tables are this module's own).
        dim: ``d`` of the graph node embeddings.
        metapaths: the metapaths read (Table 4 removes one at a time).
        pretrain: initialise the node tables by GraphCL before training (:meth:`pretrain`).
        pretrain_epochs, pretrain_negatives, pretrain_lambda: Algorithm 1's ``gamma``, the
            random negatives per node and ``lambda`` of ``L_CE + lambda L_NCE``.
        author_attributes: add ``W x_a`` to author nodes when the samples carry attributes.
    """

    name = "mmbee_gie"
    #: its eval forward (pooling of the metapath neighbours) has no data-dependent
    #: Python; exact at other batch sizes and with users / authors without neighbours
    #: (tests/serve/test_export.py)
    exportable = True

    @classmethod
    def unfed(cls, feature_map: FeatureMap, params: dict[str, Any]) -> str | None:
        if feature_map.graph_k < 1:
            return "no metapath neighbours in the samples (build-samples --graph-k K)"
        return None

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        dim: int = 32,
        metapaths: Sequence[str] = METAPATHS,
        pretrain: bool = True,
        pretrain_epochs: int = 5,
        pretrain_negatives: int = 10,
        pretrain_lambda: float = 1.0,
        author_attributes: bool = True,
    ) -> None:
        super().__init__()
        if feature_map.graph_k < 1:
            raise ConfigError(
                "mmbee_gie reads metapath neighbours: build the samples with "
                "`liverank build-samples --graph-k K` (data.graph_k in a config)"
            )
        metapaths = check_choices("mmbee_gie", "metapaths", metapaths, METAPATHS)
        if dim < 1 or pretrain_epochs < 1 or pretrain_negatives < 1 or pretrain_lambda < 0:
            raise ConfigError(
                "mmbee_gie: need dim, pretrain_epochs, pretrain_negatives >= 1 and "
                "pretrain_lambda >= 0"
            )
        self.dim = dim
        self.user_paths = tuple(m for m in USER_METAPATHS if m in metapaths)
        self.author_paths = tuple(m for m in AUTHOR_METAPATHS if m in metapaths)
        self.pretrain_enabled = pretrain
        self.pretrain_params = {
            "epochs": pretrain_epochs,
            "negatives": pretrain_negatives,
            "lam": pretrain_lambda,
        }
        self.nodes = nn.ModuleDict(
            {
                kind: nn.Embedding(feature_map.table_size(kind), dim, padding_idx=0, sparse=True)
                for kind in ("user", "author")
            }
        )
        for table in self.nodes.values():
            nn.init.normal_(table.weight, std=dim**-0.5)
            with torch.no_grad():
                table.weight[0].zero_()
        used = (*self.user_paths, *self.author_paths)
        self.required_fields = tuple(f"gie_{m}" for m in used)
        #: ``W`` of ``Theta(a) = e_a + W x_a`` (None: no author attributes)
        self.attr_proj: nn.Linear | None = None
        if author_attributes and feature_map.author_attr_dim > 0:
            width = len(MODALITIES) * feature_map.author_attr_dim
            self.attr_proj = nn.Linear(width, dim, bias=False)
            self.required_fields += tuple(
                f"gie_attr_{m}" for m in used if GIE_COLUMNS[f"gie_{m}"] == "author"
            )
        elif author_attributes:
            log.info("mmbee_gie: the samples have no author attributes (no segments table)")
        self.out_dim = 2 * dim

    def _side(self, batch: Batch, paths: tuple[str, ...]) -> torch.Tensor:
        """Eq. 10 / 11 + 12: the mean of the node embeddings of the union of ``paths``."""
        ids = [batch[f"gie_{m}"] for m in paths]  # each [B, K]
        vectors = []
        for m, i in zip(paths, ids, strict=True):
            kind = GIE_COLUMNS[f"gie_{m}"]
            v = self.nodes[kind](i)  # [B, K, d]
            if self.attr_proj is not None and kind == "author":
                v = v + self.attr_proj(batch[f"gie_attr_{m}"])  # + W x_a: [B, K, d]
            vectors.append(v)
        return masked_mean(torch.cat(vectors, 1), torch.cat(ids, 1) > 0)  # [B, d]

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        sides = [self._side(batch, p) if p else None for p in (self.user_paths, self.author_paths)]
        present = next(h for h in sides if h is not None)  # [B, d] (metapaths is non-empty)
        h_u, h_a = (torch.zeros_like(present) if h is None else h for h in sides)
        return ModuleOutput(torch.cat([h_u, h_a], dim=1))  # [B, 2 d]

    def pretrain(self, samples_dir: Path, as_of_day: int, seed: int = 0) -> dict[str, float]:
        """GraphCL on the neighbour store of ``as_of_day`` (gifts before that day), copied into
        the node tables; returns the pre-training's summary. A no-op (``{}``) with
        ``pretrain=False``."""
        if not self.pretrain_enabled:
            return {}
        from liverank.data.mmbee import graph_store_dir
        from liverank.graph.graphcl import graphcl_pretrain
        from liverank.graph.store import NeighbourStore

        store = NeighbourStore.load(graph_store_dir(samples_dir, as_of_day))
        users, authors = (self.nodes[k].num_embeddings for k in ("user", "author"))
        result = graphcl_pretrain(
            store, users, authors, self.dim, seed=seed, **self.pretrain_params
        )
        with torch.no_grad():
            self.nodes["user"].weight.copy_(result.user)
            self.nodes["author"].weight.copy_(result.author)
        log.info("GraphCL pre-training: %s", result.summary)
        return result.summary
