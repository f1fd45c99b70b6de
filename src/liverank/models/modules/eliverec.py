"""eLiveRec's intra-channel encoder and embedding gate (Taobao Live, ICDE 2023).

Reference: ``papers/eliverec.txt``, section IV (Fig. 3). For an impression of channel ``v_t`` the
module builds

* the **sequence encoders** (eq. 3-4): stacked Transformer blocks over the watched-channel
  sequence ``V`` (our ``live`` sequence) and the product-click sequence ``S`` (the ``product``
  sequence of ``--shopping`` samples), item vectors = sum of their side-feature embeddings;
* the **disentangled encoder** of each domain (eqs. 5-7,
  :class:`~liverank.models.layers.disentangle.DisentangledEncoder`): consistent and specific
  intentions ``z_c,V, z_s,V, z_c,S, z_s,S``, retrieved with the target channel as the query;
* the **self-supervised regulariser** (eq. 10) ``lambda_1 L_cor + lambda_2 L_nce``: distance
  correlation between the consistent and specific intention of each domain (eq. 8,
  :func:`~liverank.models.layers.dcor.distance_correlation`) and InfoNCE between the two
  domains' consistent intentions (eq. 9: cosine, tau 0.5, the other users of the batch as
  negatives; :func:`~liverank.models.layers.contrastive.info_nce`), returned as the module's
  auxiliary losses ``cor`` and ``nce`` (already multiplied by the lambdas);
* the **intra-channel embedding** ``F = (e_c, e_vt, z_c,V, z_s,V, z_c,S, z_s,S)`` (static
  context, target channel, four intentions), which the primary task reads (eq. 11);
* the **embedding gate** (eq. 12): ``w_i = sigmoid(MLP(e_d))_i``, one weight per group of ``F``
  from the channel's real-time context ``e_d`` (the product it is selling now, its age), and
  the **inter-channel embedding** ``(w_i F_i)_i ++ e_d``, which the MMoE of the auxiliary tasks
  reads (eq. 13).

The representation is ``F ++ inter``, with ``output_parts`` ``intra`` and ``inter`` so that the
``intra_inter`` backbone (:mod:`liverank.models.backbones`) routes each part to its tasks.

Ablations (Table III) are parameters: ``prototypes="learnable"`` (wo.P), ``dcor=False`` (wo.C),
``regularizer="none"`` (wo.N), ``"cosine"`` / ``"euclidean"`` (Cos / Enc: one minus the cosine,
the squared distance of the L2-normalised vectors), ``disentangle=False`` (wo.D: one target
attention per domain, no regulariser), ``gate=False`` (the inter part is ``F ++ e_d``).
:meth:`ELiveRec.shared_parameters` (the last layer of both sequence encoders) is what the
adaptive task weighting (eqs. 14-15) differentiates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.contrastive import info_nce
from liverank.models.layers.dcor import distance_correlation
from liverank.models.layers.dedup import request_rows
from liverank.models.layers.disentangle import DisentangledEncoder
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.pooling import SequenceItems
from liverank.models.registry import register_module

Regularizer = Literal["infonce", "cosine", "euclidean", "none"]
STATIC_FIELDS = ("user_id", "user_age", "user_gender", "user_activity", "hour_of_day")
TARGET_FIELDS = ("author_id", "room_category")
DYNAMIC_FIELDS = ("room_product", "room_product_cat", "room_age_bucket")


@register_module
class ELiveRec(FeatureModule):
    """eLiveRec's encoders, disentangling, regulariser and embedding gate (module doc).

    Args:
        feature_map: needs the ``live`` and ``product`` sequence domains and the fields below
            (``--shopping`` samples).
        emb: the shared embeddings; every table read here must have one dimension ``d``.
        domains: ``(V, S)``, the watched-channel and the product sequence domains.
        layers, heads: Transformer blocks per domain and their heads (paper: 8 heads, d 128).
        prototypes: ``pooled`` (paper) or ``learnable`` (wo.P).
        disentangle: ``False`` replaces the disentangled encoders by one target attention per
            domain (wo.D).
        dcor: add the distance-correlation term (``False``: wo.C).
        regularizer: cross-domain term on the consistent intentions.
        lambda_cor, lambda_nce: eq. 10's weights (paper: chosen from 0.001 ... 1.0).
        temperature: InfoNCE tau (paper: 0.5).
        gate: apply the embedding gate (eq. 12).
        static_fields, target_fields, dynamic_fields: sparse fields of ``e_c``, ``e_vt``, ``e_d``.
        gate_hidden: hidden width of the gate's two-layer MLP.
        dedup_rows: run the sequence encoders once per distinct pair of sequences of the batch
            (the rows of one request share theirs; :mod:`liverank.models.layers.dedup`): the
            Transformers do not see the candidate, only the disentangled encoder's retrieval
            (eq. 6) does. Exact up to float summation order; off gives the per-row reference.
    """

    name = "eliverec"
    #: traces to TorchScript with exact parity (tests/serve/test_export.py)
    exportable = True

    @classmethod
    def unfed(cls, feature_map: FeatureMap, params: dict[str, Any]) -> str | None:
        if "product" not in feature_map.seq_fields:
            return "no shopping fields in the samples (build-samples --shopping)"
        return None

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        domains: Sequence[str] = ("live", "product"),
        layers: int = 1,
        heads: int = 2,
        prototypes: Literal["pooled", "learnable"] = "pooled",
        disentangle: bool = True,
        dcor: bool = True,
        regularizer: Regularizer = "infonce",
        lambda_cor: float = 0.1,
        lambda_nce: float = 0.1,
        temperature: float = 0.5,
        gate: bool = True,
        static_fields: Sequence[str] = STATIC_FIELDS,
        target_fields: Sequence[str] = TARGET_FIELDS,
        dynamic_fields: Sequence[str] = DYNAMIC_FIELDS,
        gate_hidden: int = 16,
        dedup_rows: bool = True,
    ) -> None:
        super().__init__()
        if len(domains) != 2:
            raise ConfigError(f"eliverec: domains must be (V, S), two domains, got {domains}")
        if regularizer not in ("infonce", "cosine", "euclidean", "none"):
            raise ConfigError(f"eliverec: unknown regularizer '{regularizer}'")
        if layers < 1 or heads < 1 or temperature <= 0 or min(lambda_cor, lambda_nce) < 0:
            raise ConfigError("eliverec: layers, heads, temperature > 0 and lambdas >= 0")
        fields = {"static": static_fields, "target": target_fields, "dynamic": dynamic_fields}
        for what, names in fields.items():
            missing = [f for f in names if f not in feature_map.sparse_fields]
            if missing or not names:
                raise ConfigError(
                    f"eliverec: {what} fields {missing or list(names)} are not sparse fields of "
                    "the feature map (the shopping fields need `build-samples --shopping`)"
                )
        self.static_fields, self.target_fields = list(static_fields), list(target_fields)
        self.dynamic_fields = list(dynamic_fields)
        self.table_of = {
            f: feature_map.sparse_fields[f] for names in fields.values() for f in names
        }
        self.seqs = nn.ModuleList(SequenceItems(feature_map, emb, d, "sum") for d in domains)
        tables = [feature_map.sparse_fields[f] for f in (*static_fields, *target_fields)]
        dims = {s.out_dim for s in self.seqs} | {emb.dim(t) for t in tables}
        dims |= {emb.dim(feature_map.sparse_fields[f]) for f in dynamic_fields}
        if len(dims) != 1:
            raise ConfigError(f"eliverec: every table it reads needs one dimension, got {dims}")
        d = dims.pop()
        if d % heads:
            raise ConfigError(f"eliverec: embedding dim {d} is not divisible by heads {heads}")
        self.dim = d
        self.encoders = nn.ModuleList(_transformer(d, heads, layers) for _ in domains)
        self.disentangle = disentangle
        self.dis = nn.ModuleList(DisentangledEncoder(d, prototypes) for _ in domains)
        self.dcor, self.regularizer = dcor and disentangle, regularizer if disentangle else "none"
        self.lambda_cor, self.lambda_nce, self.temperature = lambda_cor, lambda_nce, temperature
        n_intent = 4 if disentangle else 2
        self.groups = [len(static_fields) * d, d] + [d] * n_intent  # widths of F's groups
        f_dim = sum(self.groups)
        e_d = len(dynamic_fields) * d
        self.gate = (
            nn.Sequential(
                nn.Linear(e_d, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, len(self.groups))
            )
            if gate
            else None
        )
        self.out_dim = 2 * f_dim + e_d
        self.output_parts = {"intra": (0, f_dim), "inter": (f_dim, self.out_dim)}
        seq_fields = tuple(c for s in self.seqs for c in s.required_fields)
        self.required_fields = (*static_fields, *target_fields, *dynamic_fields, *seq_fields)
        self.seq_fields, self.dedup_rows = seq_fields, dedup_rows
        #: fields encoded once per request (a program recorded for one request assumes it:
        #: liverank.serve.export.shared_fields)
        self.shared_fields = seq_fields if dedup_rows else ()

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last layer of both sequence encoders: what the primary and the auxiliary tasks
        share, and what the adaptive weighting's gradient cosines are taken over."""
        return [p for enc in self.encoders for p in enc.layers[-1].linear2.parameters()]

    def _fields(self, batch: Batch, emb: EmbeddingCollection, names: list[str]) -> torch.Tensor:
        tables = [self.table_of[f] for f in names]
        ids = torch.stack([batch[f] for f in names], dim=-1)  # [B, F]
        return emb.lookup_stack(tables, ids)  # [B, F, d]

    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        static = self._fields(batch, emb, self.static_fields).flatten(1)  # [B, n_c * d]
        target = self._fields(batch, emb, self.target_fields).sum(1)  # [B, d]
        dynamic = self._fields(batch, emb, self.dynamic_fields).flatten(1)  # [B, n_d * d]
        intents: list[torch.Tensor] = []
        z: list[tuple[torch.Tensor, torch.Tensor]] = []
        diagnostics: dict[str, torch.Tensor | float] = {}
        nonempty = []
        # the sequences and their encoders are candidate-free: once per distinct row
        distinct = request_rows([batch[f] for f in self.seq_fields], self.dedup_rows)
        sub = {f: distinct.take(batch[f]) for f in self.seq_fields} if distinct else batch
        for k, (seq, enc) in enumerate(zip(self.seqs, self.encoders, strict=True)):
            e = seq.items(sub, emb)  # [U, L, d] (U = B without dedup)
            mask = seq.mask(sub)  # [U, L]
            # an all-padding row would give NaN attention: let it attend to its first slot
            # (its outputs are masked out below)
            pad = ~mask
            pad[:, 0] &= mask.any(1)
            h = enc(e, src_key_padding_mask=pad)  # [U, L, d]
            rows = distinct.inverse if distinct is not None else None
            if self.disentangle:  # its target-free half runs on the U sequences
                out = self.dis[k](h, e, mask, target, rows)
                nonempty.append(out.mask.any(1))
                z.append((out.z_c, out.z_s))
                intents += [out.z_c, out.z_s]
                diagnostics[f"consistent_share/{seq.domain}"] = out.consistent_share().detach()
            else:
                if distinct is not None:  # per batch row: the retrieval reads the candidate
                    mask, h = distinct.expand(mask), distinct.expand(h)
                nonempty.append(mask.any(1))
                intents.append(_target_attention(h, mask, target))  # [B, d]
        f = torch.cat([static, target, *intents], dim=-1)  # [B, F]
        if self.gate is not None:
            w = torch.sigmoid(self.gate(dynamic))  # [B, G]
            gated = torch.cat(
                [part * w[:, i : i + 1] for i, part in enumerate(f.split(self.groups, dim=-1))],
                dim=-1,
            )  # [B, F]
            for i, name in enumerate(("static", "target", *self._intent_names())):
                diagnostics[f"gate/{name}"] = w[:, i].mean().detach()
        else:
            gated = f
        # the regulariser shapes training only: not computed in eval mode (scoring, export)
        train_reg = z and self.training
        aux = self._regularizer(z, batch, nonempty[0] & nonempty[1]) if train_reg else {}
        for name, value in aux.items():
            diagnostics[name] = value.detach()
        rep = torch.cat([f, gated, dynamic], dim=-1)  # [B, out_dim]
        return ModuleOutput(rep, aux, diagnostics)

    def _intent_names(self) -> list[str]:
        v, s = (seq.domain for seq in self.seqs)
        if not self.disentangle:
            return [v, s]
        return [f"c_{v}", f"s_{v}", f"c_{s}", f"s_{s}"]

    def _regularizer(
        self, z: list[tuple[torch.Tensor, torch.Tensor]], batch: Batch, both: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Eq. 10's two terms, each already multiplied by its lambda."""
        out: dict[str, torch.Tensor] = {}
        if self.dcor and self.lambda_cor > 0:
            cor = sum(distance_correlation(zc, zs) for zc, zs in z)
            out["cor"] = self.lambda_cor * cor  # type: ignore[operator]
        if self.regularizer != "none" and self.lambda_nce > 0:
            (zc_v, _), (zc_s, _) = z
            if self.regularizer == "infonce":
                term = info_nce(zc_v, zc_s, self.temperature, both, batch["user_id"])
            else:
                a, b = F.normalize(zc_v[both], dim=-1), F.normalize(zc_s[both], dim=-1)
                if self.regularizer == "cosine":
                    term = (1 - (a * b).sum(-1)).mean() if len(a) else zc_v.sum() * 0.0
                else:
                    term = (a - b).pow(2).sum(-1).mean() if len(a) else zc_v.sum() * 0.0
            out["nce"] = self.lambda_nce * term
        return out


def _transformer(d: int, heads: int, layers: int) -> nn.TransformerEncoder:
    """Eq. 3's stacked blocks (with the residuals and layer norms the paper omits for brevity)."""
    block = nn.TransformerEncoderLayer(
        d, heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True
    )
    return nn.TransformerEncoder(block, layers, enable_nested_tensor=False)


def _target_attention(h: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """wo.D: ``softmax_i(e_t . h_i / sqrt(d))``-weighted sum of ``h [B, L, d]`` -> ``[B, d]``."""
    logits = torch.einsum("bld,bd->bl", h, target) / math.sqrt(h.shape[-1])  # [B, L]
    logits = logits.masked_fill(~mask, float("-inf"))
    att = torch.softmax(logits, dim=-1).nan_to_num(0.0) * mask  # [B, L]
    return torch.einsum("bl,bld->bd", att, h)
