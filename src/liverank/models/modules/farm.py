"""FARM: frequency-aware filtering and align-before-fuse of the short-video and live sequences.

Reference: X. Li et al., "FARM: Frequency-Aware Model for Cross-Domain Live-Streaming
Recommendation", 2025 (``papers/farm.txt``), section 3. Four parts, each behind a switch (the
paper's ablations, section 4.2):

==================  ===============================================================================
embedding (Eq. 8)   per position, the concatenation of the behaviour's ID and side-info embeddings,
                    projected to ``dim`` (``combine: concat``; ``sum`` adds them instead). Video:
                    author, tag, action, play bucket, time-gap bucket; live: author, category,
                    action, time-gap bucket (``features/spec.py``). The paper also lists *page*
                    and *cluster*; the samples have no such fields, so they are not used.
V-FA / L-FA         ``F = alpha Low[V] + beta High[V]`` (Eqs. 1-5, 9-10; ``layers/frequency.py``)
(Eqs. 9-11)         then multi-head target attention with the candidate room as query (Eq. 11):
                    ``F_hat_video``, ``F_hat_live`` (``use_video_fa`` / ``use_live_fa`` = false
                    skips the *filter*: the target attention then reads ``V`` itself, so the
                    ablation isolates the DFT and the output width is unchanged).
C-PA (Eqs. 12-15)   per domain multi-head self-attention ``V_hat = MHSA(V)`` (Eq. 12), a
                    position-wise MLP and a masked mean: ``h = Mean(MLP(V_hat))`` (Eq. 13), and
                    the in-batch contrastive loss of Eq. 14 (live ``h`` fixed as the anchor, the
                    video ``h`` of the other users in the batch as negatives, dot product,
                    ``tau = 0.07``), returned as aux loss ``cl`` = ``lambda * L_cl`` (Eq. 15),
                    in training only. ``use_align: false`` drops the loss (w/o C-PA).
C-PF (Eqs. 16-18)   multi-head cross-attention, live ``V_hat`` as query over video ``V_hat``
                    (Eq. 16), then target attention with the candidate (Eq. 17): ``F_hat_cross``.
                    ``use_fuse: false`` drops it and the output narrows (w/o C-PF).
==================  ===============================================================================

Output (Eq. 18): ``concat(F_hat_video, F_hat_live[, F_hat_cross])``, ``[B, 3 * dim]`` (or ``2 *
dim`` without C-PF), into the multi-task backbone (PLE in the zoo's ``farm``).

Choices the paper leaves open (docs/models.md, "FARM"): target attentions are scaled
dot-product (``layers/search.py``'s :class:`DotTargetAttention`, the Transformer attention the
paper cites) with the candidate's field embeddings concatenated as the query, as
``moment_cross`` does; the gates read the masked mean of the sequence (one gate per user and
dimension); Eq. 13 is not legible in our copy of the paper, the text gives "MLP ... Mean";
positions are real up to ``<domain>_seq_len``; rows with an empty sequence give zero outputs and
take no part in the contrastive loss; other samples of the same user are not negatives
(``dedup_users``; Eq. 14 samples negatives "from different users"). The self-attention and the
Eq. 13 MLP exist in every variant, so that :meth:`Farm.diagnostics` can report the cosine of
``h_video`` and ``h_live`` also for w/o C-PA (the paper's Figure 3 compares exactly that); without
C-PA the MLP is never trained (as in the paper's variant, where nothing else reads ``h``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from liverank.config import validate_as
from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput, no_video_domain
from liverank.models.layers.contrastive import info_nce
from liverank.models.layers.dedup import capturing_graph, request_rows
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.frequency import FrequencyAwareFilter
from liverank.models.layers.mlp import MLP
from liverank.models.layers.pooling import SequenceItems, masked_mean
from liverank.models.layers.search import DotTargetAttention, length_mask
from liverank.models.registry import register_module

DOMAINS: tuple[str, str] = ("video", "live")


class FarmConfig(BaseModel):
    """Validated parameters of :class:`Farm` (see its docstring)."""

    model_config = ConfigDict(extra="forbid")

    dim: int | None = Field(None, ge=1)
    heads: int = Field(2, ge=1)
    cutoff: int = Field(5, ge=1)
    gate_hidden: list[int] = Field(default_factory=lambda: [32])
    align_hidden: list[int] = Field(default_factory=lambda: [32])
    temperature: float = Field(0.07, gt=0)
    contrastive_weight: float = Field(0.1, ge=0)
    similarity: Literal["dot", "cosine"] = "dot"
    dedup_users: bool = True
    combine: Literal["concat", "sum"] = "concat"
    query_fields: list[str] = Field(
        default_factory=lambda: ["author_id", "author_type", "author_fans", "room_category"],
        min_length=1,
    )
    use_video_fa: bool = True
    use_live_fa: bool = True
    use_align: bool = True
    use_fuse: bool = True
    dedup_rows: bool = True


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention (A. Vaswani et al., 2017) with a key mask.

    ``query [B, Lq, D]`` attends over ``keys [B, Lk, D]`` (keys are also the values) at the
    positions where ``key_mask [B, Lk]`` is true; ``query_mask [B, Lq]`` zeroes the padded
    query positions of the output. A row without any valid key attends over all its (padded)
    keys, never NaN, and its output is zeroed. The kernel is
    :func:`torch.nn.functional.scaled_dot_product_attention` with a boolean mask: on CPU (one
    thread, B = 1024, L = 50, two heads of width 8) forward + backward take ~57 ms against
    ~77 ms for the same computation written as two batched matmuls and a softmax, and ~106 ms
    for ``nn.MultiheadAttention``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"farm: heads ({heads}) must divide dim ({dim})")
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        query_mask: torch.Tensor,
        key_mask: torch.Tensor,
    ) -> torch.Tensor:
        b, lq, d = query.shape
        lk, h, dh = keys.shape[1], self.heads, self.head_dim
        q = self.q_proj(query * dh**-0.5).view(b, lq, h, dh).transpose(1, 2)  # [B, H, Lq, dh]
        kv = self.kv_proj(keys).view(b, lk, 2, h, dh).permute(2, 0, 3, 1, 4)  # [2, B, H, Lk, dh]
        has_key = key_mask.any(1, keepdim=True)  # [B, 1]
        # A row with no valid key would softmax over nothing (NaN): let it see every key; its
        # output is zeroed below.
        allowed = (key_mask | ~has_key)[:, None, None, :]  # [B, 1, 1, Lk]
        mixed = F.scaled_dot_product_attention(
            q, kv[0], kv[1], attn_mask=allowed, scale=1.0
        )  # [B, H, Lq, dh]; the 1/sqrt(dh) scale is applied to the query above
        out = self.out_proj(mixed.transpose(1, 2).reshape(b, lq, d))  # [B, Lq, D]
        keep = query_mask & has_key  # [B, Lq]
        return out * keep.unsqueeze(-1).to(out.dtype)


@register_module
class Farm(FeatureModule):
    """FARM's sequence modelling -> ``[B, 3 * dim]`` (``2 * dim`` without C-PF) + aux ``cl``.

    Args:
        dim: width of the sequence vectors (default: the ``author`` table's width).
        heads: heads of every attention (must divide ``dim``).
        cutoff: ``c``, rfft bins in the low-pass component (paper's grid: 1, 3, 5, 7, 9).
        gate_hidden: hidden widths of the gate MLPs of Eq. 10.
        align_hidden: hidden widths of the Eq. 13 MLP (its output width is ``dim``).
        temperature: ``tau`` of Eq. 14 (paper: 0.07).
        contrastive_weight: ``lambda`` of Eq. 15 (paper's grid: 0.1 ... 0.9).
        similarity: ``dot`` (Eq. 14) or ``cosine``.
        dedup_users: exclude other samples of the same user from the negatives.
        combine: item vector = ``concat`` of side-feature embeddings + projection (Eq. 8), or
            their ``sum``.
        query_fields: candidate-room sparse fields concatenated into the target-attention query.
        use_video_fa, use_live_fa, use_align, use_fuse: the four parts (false = the paper's
            w/o V-FA, w/o L-FA, w/o C-PA, w/o C-PF).
        dedup_rows: encode the sequences once per distinct pair of sequences in the batch
            (the rows of one request share them; :mod:`liverank.models.layers.dedup`). Exact:
            the same outputs, losses and gradients; faster on batches of whole requests.
    """

    #: eval-mode forward traces batch-size-independently: in a recorded graph the attentions
    #: run over the full window and the dedup is off unless recorded for one request, where the
    #: request's sequences are encoded once from row 0 (tests/serve/test_export.py,
    #: tests/serve/test_runtime.py)
    exportable = True
    name = "farm"

    @classmethod
    def unfed(cls, feature_map: FeatureMap, params: dict[str, Any]) -> str | None:
        if no_video_domain(feature_map):
            return "no short-video domain: FARM filters and aligns both domains"
        return None

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        dim: int | None = None,
        heads: int = 2,
        cutoff: int = 5,
        gate_hidden: list[int] | None = None,
        align_hidden: list[int] | None = None,
        temperature: float = 0.07,
        contrastive_weight: float = 0.1,
        similarity: str = "dot",
        dedup_users: bool = True,
        combine: str = "concat",
        query_fields: list[str] | None = None,
        use_video_fa: bool = True,
        use_live_fa: bool = True,
        use_align: bool = True,
        use_fuse: bool = True,
        dedup_rows: bool = True,
    ) -> None:
        super().__init__()
        raw = {
            "dim": dim,
            "heads": heads,
            "cutoff": cutoff,
            "temperature": temperature,
            "contrastive_weight": contrastive_weight,
            "similarity": similarity,
            "dedup_users": dedup_users,
            "combine": combine,
            "use_video_fa": use_video_fa,
            "use_live_fa": use_live_fa,
            "use_align": use_align,
            "use_fuse": use_fuse,
            "dedup_rows": dedup_rows,
        }
        for key, value in (
            ("gate_hidden", gate_hidden),
            ("align_hidden", align_hidden),
            ("query_fields", query_fields),
        ):
            if value is not None:
                raw[key] = value
        cfg = validate_as(FarmConfig, raw, "farm params")
        self.cfg = cfg
        missing = [d for d in DOMAINS if d not in feature_map.seq_fields]
        if missing:
            raise ConfigError(f"farm: the feature map has no {missing} sequence (seq_fields)")
        unknown = [f for f in cfg.query_fields if f not in feature_map.sparse_fields]
        if unknown:
            raise ConfigError(f"farm: query fields {unknown} are not sparse fields")
        self.query_tables = [feature_map.sparse_fields[f] for f in cfg.query_fields]

        self.seqs = nn.ModuleDict(
            {d: SequenceItems(feature_map, emb, d, cfg.combine, cfg.dim) for d in DOMAINS}
        )
        widths = {s.out_dim for s in self.seqs.values()}
        if len(widths) != 1 or (cfg.dim is not None and widths != {cfg.dim}):
            raise ConfigError(
                f"farm: both sequences need the width dim={cfg.dim}, got {sorted(widths)}; with "
                f"combine='sum' dim must equal the embedding width (or use combine='concat')"
            )
        d = widths.pop()
        if d % cfg.heads:
            raise ConfigError(f"farm: heads ({cfg.heads}) must divide dim ({d})")
        query_dim = sum(emb.dim(t) for t in self.query_tables)
        use_fa = {"video": cfg.use_video_fa, "live": cfg.use_live_fa}
        self.filters = nn.ModuleDict(
            {
                dom: FrequencyAwareFilter(d, cfg.cutoff, cfg.gate_hidden)
                for dom in DOMAINS
                if use_fa[dom]
            }
        )
        self.target = nn.ModuleDict(
            {dom: DotTargetAttention(query_dim, d, cfg.heads) for dom in DOMAINS}
        )
        self.self_attn = nn.ModuleDict({dom: MultiHeadAttention(d, cfg.heads) for dom in DOMAINS})
        self.align_mlp = nn.ModuleDict(
            {dom: MLP(d, [*cfg.align_hidden, d], last_activation=False) for dom in DOMAINS}
        )
        self.cross_attn = MultiHeadAttention(d, cfg.heads) if cfg.use_fuse else None
        self.cross_target = DotTargetAttention(query_dim, d, cfg.heads) if cfg.use_fuse else None
        self.dim = d
        self.out_dim = d * (3 if cfg.use_fuse else 2)
        self.aligned = cfg.use_align and cfg.contrastive_weight > 0
        fields = list(cfg.query_fields)
        if self.aligned and cfg.dedup_users:
            fields.append("user_id")
        seq_fields: list[str] = []
        for dom in DOMAINS:
            seq_fields += [*self.seqs[dom].required_fields, f"{dom}_seq_len"]
        #: the candidate-independent inputs: rows equal on all of them are encoded once
        self.seq_fields = tuple(dict.fromkeys(seq_fields))
        #: inputs equal in every row of one request, encoded once per request (a program
        #: recorded for serving assumes it: liverank.serve.export.shared_fields)
        self.shared_fields = self.seq_fields if self.cfg.dedup_rows else ()
        self.required_fields = tuple(dict.fromkeys(fields + seq_fields))

    # ------------------------------------------------------------------ parts
    def _query(self, batch: Batch, emb: EmbeddingCollection) -> torch.Tensor:
        """The candidate room: its field embeddings concatenated, ``[B, Q]``."""
        parts = [
            emb.lookup(t, batch[f])
            for f, t in zip(self.cfg.query_fields, self.query_tables, strict=True)
        ]
        return torch.cat(parts, dim=-1)

    def _sequence(
        self, dom: str, batch: Batch, emb: EmbeddingCollection
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 8: ``V [B, L, dim]`` (0 at padding) and the mask ``[B, L]`` from ``<dom>_seq_len``."""
        seq = self.seqs[dom]
        assert isinstance(seq, SequenceItems)
        items = seq.items(batch, emb)  # [B, L, dim]
        mask = length_mask(batch[f"{dom}_seq_len"].clamp(min=0), items.shape[1])  # [B, L]
        return items * mask.unsqueeze(-1).to(items.dtype), mask

    def _preference(self, dom: str, v_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 13: ``h = Mean(MLP(V_hat))`` over real positions -> ``[B, dim]``."""
        return masked_mean(self.align_mlp[dom](v_hat), mask)

    def _encode(
        self, batch: Batch, emb: EmbeddingCollection, need_self: bool
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Per domain: ``v``, ``mask``, the filtered ``f``, gates ``low`` / ``high`` (when the
        filter is on) and, when ``need_self``, the self-attended ``v_hat [B, S, dim]`` with its
        mask ``self_mask [B, S]``.

        ``S`` is the longest real sequence of the domain in the batch: the positions after it
        are padding in every row, so the L x L attentions skip them (exact: padded keys get no
        weight and padded queries are zeroed). Live sequences are short (on simulated ``small``
        a batch of 1,024 reaches ~38 of 50 positions, mean length 4), which saves about a third
        of the live self-attention and a quarter of the cross-attention. The filter keeps the
        full window: the DFT is defined over all ``L`` positions.
        """
        out: dict[str, dict[str, torch.Tensor]] = {}
        for dom in DOMAINS:
            v, mask = self._sequence(dom, batch, emb)
            parts = {"v": v, "mask": mask, "f": v}
            if dom in self.filters:
                parts["f"], parts["low"], parts["high"] = self.filters[dom](v, mask)  # Eq. 9-10
            if need_self:
                # longest real sequence in the batch; the full window in a recorded graph (a
                # trace must not freeze one batch's length; exact either way, see above)
                span = mask.shape[1] if capturing_graph() else max(int(mask.sum(1).max()), 1)
                vs, ms = v[:, :span], mask[:, :span]  # [B, S, dim], [B, S]
                parts["v_hat"] = self.self_attn[dom](vs, vs, ms, ms)  # Eq. 12, [B, S, dim]
                parts["self_mask"] = ms
            out[dom] = parts
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        query = self._query(batch, emb)  # [B, Q]
        align = self.aligned and self.training
        # Everything before the target attentions reads only the sequences: encode it once per
        # distinct row (U <= B; the rows of one request share their sequences) and index back.
        # (a recorded graph dedups only when recorded for one request: layers/dedup.py)
        distinct = request_rows([batch[f] for f in self.seq_fields], self.cfg.dedup_rows)
        sub = {f: distinct.take(batch[f]) for f in self.seq_fields} if distinct else batch

        def per_row(x: torch.Tensor) -> torch.Tensor:  # [U, ...] -> [B, ...]
            return distinct.expand(x) if distinct is not None else x

        seqs = self._encode(sub, emb, need_self=align or self.cfg.use_fuse)  # U rows
        outputs = [
            self.target[dom](query, per_row(seqs[dom]["f"]), per_row(seqs[dom]["mask"]))[0]
            for dom in DOMAINS
        ]  # Eq. 11, [B, dim] each
        video, live = seqs["video"], seqs["live"]
        if self.cross_attn is not None and self.cross_target is not None:
            cross = self.cross_attn(
                live["v_hat"], video["v_hat"], live["self_mask"], video["self_mask"]
            )  # Eq. 16, [U, S_live, dim]
            outputs.append(
                self.cross_target(query, per_row(cross), per_row(live["self_mask"]))[0]
            )  # Eq. 17, [B, dim]

        diagnostics: dict[str, torch.Tensor | float] = {}
        has = {dom: per_row(seqs[dom]["mask"].any(1)) for dom in DOMAINS}  # [B] each
        # diagnostics branch on the data and are no output: none in a recorded graph
        for dom, gate in () if capturing_graph() else (("video", "beta"), ("live", "delta")):
            diagnostics[f"{dom}_empty_frac"] = (~has[dom]).float().mean()
            if "high" in seqs[dom]:
                high = per_row(seqs[dom]["high"].detach().mean(1))  # [B]
                rows = has[dom]
                diagnostics[gate] = high[rows].mean() if bool(rows.any()) else float("nan")
        aux: dict[str, torch.Tensor] = {}
        if align:
            h_video = per_row(
                self._preference("video", video["v_hat"], video["self_mask"])
            )  # [B, dim]
            h_live = per_row(self._preference("live", live["v_hat"], live["self_mask"]))  # [B, dim]
            valid = has["video"] & has["live"]  # [B]
            groups = batch["user_id"] if self.cfg.dedup_users else None
            loss = info_nce(
                h_live, h_video, self.cfg.temperature, valid, groups, similarity=self.cfg.similarity
            )  # Eq. 14
            aux["cl"] = self.cfg.contrastive_weight * loss  # lambda * L_cl, Eq. 15
            cos = F.cosine_similarity(h_video.detach(), h_live.detach(), dim=-1)  # [B]
            diagnostics["cos_video_live"] = cos[valid].mean() if bool(valid.any()) else float("nan")
        if not capturing_graph():
            u = distinct.count if distinct is not None else len(query)
            diagnostics["distinct_rows_frac"] = u / max(len(query), 1)
        return ModuleOutput(torch.cat(outputs, dim=-1), aux_losses=aux, diagnostics=diagnostics)

    # ------------------------------------------------------------------ analysis
    @torch.no_grad()
    def diagnostics(self, batch: Batch, emb: EmbeddingCollection) -> dict[str, torch.Tensor]:
        """Per-row analysis values (eval mode, no gradient; the training mode is restored).

        Returns ``[B]`` tensors: ``alpha``, ``beta`` (video low- / high-pass gates, mean over
        dimensions; only with V-FA), ``gamma``, ``delta`` (live; only with L-FA), each in
        (0, 1), and the same gates per dimension, ``alpha_by_dim`` ... ``delta_by_dim``
        (``[B, dim]``: a mean over dimensions can hide gates that move in opposite directions);
        ``cos_video_live``, the cosine of ``h_video`` and ``h_live`` (Eq. 13; the paper's
        Figure 3), in [-1, 1] (0 where a sequence is empty); and ``video_nonempty``,
        ``live_nonempty`` (bool) to select the rows where those values mean something. Use
        ``model.feature_modules["farm"].diagnostics(batch, model.embeddings)``.
        """
        was_training = self.training
        self.eval()
        try:
            seqs = self._encode(batch, emb, need_self=True)
            h = {
                dom: self._preference(dom, seqs[dom]["v_hat"], seqs[dom]["self_mask"])
                for dom in DOMAINS
            }
        finally:
            self.train(was_training)
        out = {
            "cos_video_live": F.cosine_similarity(h["video"], h["live"], dim=-1),  # [B]
            "video_nonempty": seqs["video"]["mask"].any(1),
            "live_nonempty": seqs["live"]["mask"].any(1),
        }
        names = {"video": ("alpha", "beta"), "live": ("gamma", "delta")}
        for dom, (low, high) in names.items():
            if "high" in seqs[dom]:
                for gate, values in ((low, seqs[dom]["low"]), (high, seqs[dom]["high"])):
                    out[gate] = values.mean(-1)  # [B]
                    out[f"{gate}_by_dim"] = values  # [B, dim]
        return out
