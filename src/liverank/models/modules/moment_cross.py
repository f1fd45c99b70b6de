"""Cross: five searched behaviour sequences, target attention and anchor-based alignment.

Reference: Jiangxia Cao et al., "Moment&Cross: Next-Generation Real-Time Cross-Domain CTR
Prediction for Live-Streaming Recommendation at Kuaishou", 2024, section 4 (digest:
``papers/moment_cross.md``). The user's much richer short-video behaviour helps the sparse live
domain through five GSU sequences (section 4.1), each pooled by an ESU target attention with the
candidate room as query (eq. 7), plus in-batch contrastive alignment of every pooled sequence to
the mixed long-view sequence (eq. 6):

==========  ===================================================================================
short       recent short videos: the ``video_seq_*`` fields (L = ``seq_len``)
long        long-term short videos: top-``gsu_len`` of ``long_video_*`` by dot product with the
            candidate room (soft search)
aidhard     short videos of the candidate's author: ``long_video_*`` items with
            ``author == author_id``, most recent first (hard search)
livelong    long-term live: top-``gsu_len`` of ``long_live_*`` by dot product (soft search)
mixed       long-view behaviours (``lv == 1``) of both domains merged most recent first by
            ``long_<d>_dt`` (hard search); the anchor of the contrastive terms
==========  ===================================================================================

The long histories are read through ``models/layers/history.py``: ``[B, K]`` ``long_<d>_*``
batch fields when the batch has them (synthetic batches, ``long_fields="eager"``), otherwise the
history service attached with :meth:`MomentCross.attach_long_history` (``Ranker.
attach_long_history``): the full ``K``-window is read only for the GSU keys (author, category /
tag, ``lv``, row time); every other feature only at the ``gsu_len`` selected positions. Both
paths give identical outputs.

Choices the paper leaves open (documented in docs/models.md, "Cross"):

* GSU embeddings: the soft searches score items with the *shared* embedding tables, looked up
  without gradient: ``score = (e_author(c) + e_category(c)) . (e_author(i) + e_category/tag(i))``
  for candidate ``c`` and history item ``i``. Selection is discrete, so no gradient could flow
  through it anyway; detaching also skips a ``[B, K, D]`` backward over the whole history. The
  ESU trains the same tables on the selected items, so the search improves as the model learns.
* ESU: multi-head scaled dot-product attention (``layers/search.py``), one set of ``W^q, W^k,
  W^v`` per sequence; the query is the concatenation of the candidate room's field embeddings
  (``query_fields``). An item vector is the sum of its side-feature embeddings; mixed items add
  a learnt domain vector (live / video).
* Contrastive: one-directional InfoNCE (mixed anchor -> sequence) over the rows where both
  sequences are non-empty, in-batch negatives, other samples of the same user excluded as
  negatives (``dedup_users``); one weight per term.

**Mean-pooling control** (``search: mean``; issue #14): separates "Cross's search and attention"
from "more history". Each sequence is the plain masked mean of the item vectors of *every* item
its GSU would search over, with no candidate in sight:

==========  ===================================================================================
short       mean of the ``video_seq_*`` items (the window ``short`` attends over)
long        mean of all ``long_len`` items of the long video window
livelong    mean of all ``long_len`` items of the long live window
mixed       mean of *every* long-view item of both windows (not the most recent ``gsu_len``),
            with the learnt domain vectors, as in ``gsu``
aidhard     not allowed: its search space is ``long``'s (the author filter *is* the
            candidate-dependent search), so its mean would repeat ``long``'s vector
==========  ===================================================================================

It keeps the long histories, the item vectors (shared tables, trained through the means), the
output width ``D`` per sequence and the contrastive loss (switchable: ``contrastive_weight: 0``
removes it; with a weight the same InfoNCE aligns the means). It removes every candidate-
dependent part: the soft top-``gsu_len`` searches, the author hard search, the ``gsu_len`` cut
and the ESU target attention (no ``W^q, W^k, W^v``: the control has no parameters of its own
besides the mixed domain vectors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from liverank.config import validate_as
from liverank.errors import ConfigError
from liverank.features.long_history import index_columns
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch, FeatureModule, ModuleOutput
from liverank.models.layers.contrastive import info_nce
from liverank.models.layers.dedup import (
    DistinctRows,
    capturing_graph,
    distinct_rows,
    request_rows,
)
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.layers.gather import unique_rows
from liverank.models.layers.history import (
    EagerWindow,
    ExpandedWindow,
    LongDomain,
    ServiceWindow,
    Window,
)
from liverank.models.layers.pooling import SequenceItems, masked_mean
from liverank.models.layers.search import (
    SECOND_WINDOW_RANK,
    DotTargetAttention,
    select_most_recent_by_age,
    select_recent,
    select_recent_matches,
    select_top_scores,
)
from liverank.models.registry import register_module

if TYPE_CHECKING:
    from liverank.features.long_history import DomainTensors, LongHistory

SequenceName = Literal["short", "long", "aidhard", "livelong", "mixed"]
SEQUENCES: tuple[str, ...] = ("short", "long", "aidhard", "livelong", "mixed")
#: the sequences aligned to the mixed anchor (each gives an aux loss ``cl_<name>``)
ALIGNED: tuple[str, ...] = ("short", "long", "aidhard", "livelong")
#: the long-history windows each sequence searches (``short`` reads none)
LONG_DOMAINS: dict[str, tuple[str, ...]] = {
    "long": ("video",),
    "aidhard": ("video",),
    "livelong": ("live",),
    "mixed": ("live", "video"),
}
#: the sequences whose GSU never looks at the candidate (selected once per distinct row)
CANDIDATE_FREE: frozenset[str] = frozenset({"short", "mixed"})
#: ``gsu``: the paper's search + target attention; ``mean``: the mean-pooling control
SearchMode = Literal["gsu", "mean"]


class MomentCrossConfig(BaseModel):
    """Validated parameters of :class:`MomentCross` (see its docstring)."""

    model_config = ConfigDict(extra="forbid")

    gsu_len: int = Field(50, ge=1)
    heads: int = Field(2, ge=1)
    temperature: float = Field(0.1, gt=0)
    sequences: list[SequenceName] = Field(default_factory=lambda: list(SEQUENCES), min_length=1)
    contrastive_weight: float | dict[str, float] = 0.1
    query_fields: list[str] = Field(
        default_factory=lambda: ["author_id", "author_type", "author_fans", "room_category"],
        min_length=1,
    )
    gsu_query_fields: list[str] = Field(
        default_factory=lambda: ["author_id", "room_category"], min_length=1
    )
    dedup_users: bool = True
    search: SearchMode = "gsu"
    dedup_rows: bool = True

    @field_validator("sequences")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"sequences are repeated: {value}")
        return value

    @field_validator("contrastive_weight")
    @classmethod
    def _weights(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        weights = value if isinstance(value, dict) else dict.fromkeys(ALIGNED, value)
        unknown = sorted(set(weights) - set(ALIGNED))
        if unknown:
            raise ValueError(f"unknown contrastive terms {unknown}; terms are {list(ALIGNED)}")
        negative = {k: w for k, w in weights.items() if w < 0}
        if negative:
            raise ValueError(f"contrastive weights must be >= 0, got {negative}")
        return value

    @model_validator(mode="after")
    def _mean_has_no_aidhard(self) -> MomentCrossConfig:
        if self.search == "mean" and "aidhard" in self.sequences:
            raise ValueError(
                "search: mean pools each sequence over every item its GSU searches; aidhard "
                "searches the same long video window as long (its author filter is the "
                "candidate-dependent search the control removes), so its mean would repeat "
                "long's: drop aidhard from sequences"
            )
        return self

    def weight(self, name: str) -> float:
        """Weight of the contrastive term ``cl_<name>`` (a missing dict entry is 0)."""
        if isinstance(self.contrastive_weight, dict):
            return self.contrastive_weight.get(name, 0.0)
        return self.contrastive_weight


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@register_module
class MomentCross(FeatureModule):
    """Five GSU sequences -> ESU target attention -> ``[B, n_sequences * D]`` (+ InfoNCE losses).

    Args:
        gsu_len: items each GSU keeps (the paper: "hundreds").
        heads: ESU attention heads (must divide the embedding width).
        temperature: InfoNCE temperature.
        sequences: subset of ``short, long, aidhard, livelong, mixed`` (ablations: dropping one
            drops its GSU, its ESU and its contrastive term; without ``mixed`` there is none).
        contrastive_weight: weight of every ``cl_<x>`` term, or ``{x: weight}`` (missing = 0).
        query_fields: candidate-room sparse fields concatenated into the ESU query.
        gsu_query_fields: candidate fields whose embeddings are summed into the GSU query.
        dedup_users: exclude other samples of the same user from the in-batch negatives.
        search: ``gsu`` (default: GSU search + ESU target attention) or ``mean`` (the
            mean-pooling control of the module docstring: every sequence is the masked mean of
            all the items its GSU searches; no search, no attention; ``aidhard`` not allowed).
        dedup_rows: read the long windows and build the candidate-independent sequences
            (``short``, ``mixed``; every sequence of the ``mean`` control) once per distinct
            (sample time, history range, short sequence) of the batch, i.e. once per request on
            request batches (``data.batch_order: requests``), and index them back to the rows;
            exact (:mod:`liverank.models.layers.dedup`). On the history-service path (training),
            on eager windows broadcast from one row (the service's requests) and in a program
            recorded for one request; other eager ``[B, K]`` fields are the reference it is
            tested against.
    """

    name = "moment_cross"
    #: traced and exported on the ``[B, K]`` window fields (no store attached:
    #: :meth:`export_blocker`); in a recorded graph the GSU scores every window position
    #: without the distinct-id shortcut, a one-request recording reads row 0's windows once
    #: (tests/serve/test_export_moment_cross.py)
    exportable = True

    @classmethod
    def unfed(cls, feature_map: FeatureMap, params: dict[str, Any]) -> str | None:
        if feature_map.long_len < 1:
            return "no long histories in the samples (build-samples --long-len K)"
        return None

    def __init__(
        self,
        feature_map: FeatureMap,
        emb: EmbeddingCollection,
        gsu_len: int = 50,
        heads: int = 2,
        temperature: float = 0.1,
        sequences: list[str] | None = None,
        contrastive_weight: float | dict[str, float] = 0.1,
        query_fields: list[str] | None = None,
        gsu_query_fields: list[str] | None = None,
        dedup_users: bool = True,
        search: str = "gsu",
        dedup_rows: bool = True,
    ) -> None:
        super().__init__()
        raw = {
            "gsu_len": gsu_len,
            "heads": heads,
            "temperature": temperature,
            "contrastive_weight": contrastive_weight,
            "dedup_users": dedup_users,
            "search": search,
            "dedup_rows": dedup_rows,
        }
        for key, value in (
            ("sequences", sequences),
            ("query_fields", query_fields),
            ("gsu_query_fields", gsu_query_fields),
        ):
            if value is not None:
                raw[key] = value
        cfg = validate_as(MomentCrossConfig, raw, "moment_cross params")
        self.cfg = cfg
        self.sequences: list[str] = [s for s in SEQUENCES if s in cfg.sequences]
        for fields in (cfg.query_fields, cfg.gsu_query_fields):
            unknown = [f for f in fields if f not in feature_map.sparse_fields]
            if unknown:
                raise ConfigError(f"moment_cross: query fields {unknown} are not sparse fields")
        self.query_tables = [feature_map.sparse_fields[f] for f in cfg.query_fields]
        self.gsu_query_tables = [feature_map.sparse_fields[f] for f in cfg.gsu_query_fields]

        long_seqs = [s for s in self.sequences if s in LONG_DOMAINS]
        if long_seqs and feature_map.long_len <= 0:
            raise ConfigError(
                f"moment_cross: sequences {long_seqs} need long histories, but the feature map "
                f"has long_len = 0; build the samples with long_len > 0 (data.long_len in the "
                f"experiment config) or use sequences: [short]"
            )
        domains = {d for s in long_seqs for d in LONG_DOMAINS[s]}
        self.long = nn.ModuleDict({d: LongDomain(feature_map, emb, d) for d in sorted(domains)})
        self.short = SequenceItems(feature_map, emb, "video") if "short" in self.sequences else None

        widths = {emb.dim(t) for t in self.query_tables + self.gsu_query_tables}
        widths |= {self._domain(d).dim for d in self.long}
        if self.short is not None:
            widths.add(self.short.out_dim)
        if len(widths) != 1:
            raise ConfigError(f"moment_cross: every table it reads needs one width, got {widths}")
        dim = widths.pop()
        query_dim = dim * len(self.query_tables)
        # ESU per sequence; the mean-pooling control has none (no target attention).
        self.esu = nn.ModuleDict(
            {}
            if cfg.search == "mean"
            else {s: DotTargetAttention(query_dim, dim, cfg.heads) for s in self.sequences}
        )
        # Learnt domain vectors of the mixed sequence's items: [2, D] (0 = live, 1 = video).
        self.domain_vec = (
            nn.Parameter(torch.randn(2, dim) * 0.1) if "mixed" in self.sequences else None
        )
        self.aligned = [
            s
            for s in ALIGNED
            if s in self.sequences and "mixed" in self.sequences and cfg.weight(s) > 0
        ]
        self.out_dim = dim * len(self.sequences)
        # The history service (data, not parameters: never in the state dict).
        self._history: dict[str, DomainTensors] | None = None
        self._history_len = 0
        self.required_fields = self._fields()

    def _fields(self) -> tuple[str, ...]:
        """Batch fields: the ``[B, K]`` windows, or with a store only their row ranges."""
        mean = self.cfg.search == "mean"
        fields = [] if mean else self.cfg.query_fields + self.cfg.gsu_query_fields
        if "aidhard" in self.sequences:
            fields.append("author_id")
        if self.aligned and self.cfg.dedup_users:
            fields.append("user_id")
        if self.short is not None:
            fields += self.short.required_fields
        for d in self.long:
            if self._history is not None:
                fields += ["ts", *index_columns(d)]
                continue
            fields += [f"long_{d}_{s}" for s in self._window_suffixes(d)]
        return tuple(dict.fromkeys(fields))

    def _window_suffixes(self, domain: str) -> list[str]:
        # the mixed GSU merges two windows by row time; the mean control needs only lv
        merge = ["lv", "dt"] if self.cfg.search == "gsu" else ["lv"]
        extra = merge if "mixed" in self.sequences else []
        return [*self._domain(domain).suffixes, "len", *extra]

    def field_hint(self, field: str) -> str:
        """What to do when the batch lacks ``field`` (appended to the Ranker's error)."""
        if not field.startswith("long_") or self._history is not None:
            return ""
        return (
            "; moment_cross reads long histories from the samples' store: after loading the "
            "samples call model.attach_long_history(samples.long_history, samples.long_len), or "
            "load them with SampleSet.load(..., long_fields='eager')"
        )

    @property
    def shared_fields(self) -> tuple[str, ...]:
        """The fields a program recorded for one request reads from row 0 only (equal in every
        row of a request: liverank.serve.export.shared_fields); none without ``dedup_rows``."""
        if not self.cfg.dedup_rows:
            return ()
        return tuple(self._user_fields(eager=self._history is None))

    def export_blocker(self) -> str | None:
        """Why this instance cannot be exported now (None: it can)."""
        if self._history is not None:
            return (
                "it reads its long histories from an attached store, which a program cannot "
                "hold; export it on the [B, K] window fields: model.attach_long_history(None, 0)"
            )
        return None

    def _domain(self, domain: str) -> LongDomain:
        dom = self.long[domain]
        assert isinstance(dom, LongDomain)
        return dom

    # ------------------------------------------------------------------ history service
    def attach_long_history(self, store: LongHistory | None, long_len: int) -> None:
        """Read the long histories of batches without ``[B, K]`` fields from ``store``.

        Args:
            store: the samples' long-history store (``SampleSet.long_history``); ``None``
                detaches it.
            long_len: window length ``K`` (``SampleSet.long_len``).

        The store is held by reference (its torch views are made once), never saved.
        """
        if store is None:
            self._history, self._history_len = None, 0
            self.required_fields = self._fields()
            return
        if long_len < 1:
            raise ConfigError(
                f"moment_cross: attach a long history with long_len >= 1, got {long_len}"
            )
        tensors = store.tensors()
        for d in self.long:
            dom = self._domain(d)
            have = set(tensors[d].columns) if d in tensors else set()
            missing = [s for s in dom.suffixes if s != "age" and s not in have]
            if d not in tensors or missing:
                raise ConfigError(
                    f"moment_cross: the long-history store cannot serve the {d} features "
                    f"{missing or dom.suffixes} (store domains: {sorted(tensors)})"
                )
        self._history, self._history_len = tensors, long_len
        self.required_fields = self._fields()

    def _eager(self, batch: Batch) -> bool:
        """Whether ``batch`` carries the ``[B, K]`` window fields (else the store is read)."""
        return any(f"long_{d}_author" in batch for d in self.long)

    def _user_fields(self, eager: bool = False) -> list[str]:
        """The candidate-independent fields the sequences read: the short sequence's, and per
        long domain its row range and ``ts`` (a store attached) or its window fields."""
        fields = list(self.short.required_fields) if self.short is not None else []
        if eager:
            fields += self._window_fields()
        else:
            for d in self.long:
                fields += ["ts", *index_columns(d)]
        return list(dict.fromkeys(fields))

    def _window_fields(self) -> list[str]:
        """The ``[B, K]`` window fields of every long domain, in domain order."""
        return [f"long_{d}_{s}" for d in self.long for s in self._window_suffixes(d)]

    def _distinct(self, batch: Batch, eager: bool | None = None) -> DistinctRows | None:
        """The batch's distinct rows over :meth:`_user_fields`, or None (no dedup: off, eager
        windows outside a recorded graph, or too few repeats to pay). In a graph recorded for
        one request (:func:`~liverank.models.layers.dedup.one_request`), row 0 is every row's
        (eager windows: what an exported program reads); in any other recorded graph, None."""
        if not self.cfg.dedup_rows:
            return None
        if eager is None:
            eager = self._eager(batch)
        fields = self._user_fields(eager)
        if capturing_graph():
            return request_rows([batch[f] for f in fields])
        if eager and self._broadcast_windows(batch):
            # one request's windows as views of one row (the service's batches): the rows
            # differ at most in the short sequence
            short = [batch[f] for f in self.short.required_fields] if self.short else []
            if short:
                return distinct_rows(short)
            b = batch[fields[0]].shape[0]
            zeros = torch.zeros(b, dtype=torch.int64, device=batch[fields[0]].device)
            return DistinctRows(first=zeros[:1], inverse=zeros)
        if self._history is None or eager:
            return None  # eager [B, K] fields: the reference path
        return distinct_rows([batch[f] for f in fields])

    def _broadcast_windows(self, batch: Batch) -> bool:
        """Whether every long-history window field is one row broadcast to the batch (stride 0
        on the batch axis), which makes the windows equal in every row by construction."""
        fields = self._window_fields()
        return batch[fields[0]].shape[0] > 1 and all(batch[f].stride(0) == 0 for f in fields)

    def _windows(self, batch: Batch) -> dict[str, Window]:
        """One reader per long domain: the batch's ``[B, K]`` fields or the history service."""
        windows: dict[str, Window] = {}
        for d in self.long:
            if f"long_{d}_author" in batch:
                windows[d] = EagerWindow(batch, d, self._window_suffixes(d))
            elif self._history is not None:
                # trimmed to the batch's longest window (exact; off while a graph is recorded)
                trim = not capturing_graph()
                windows[d] = ServiceWindow(batch, d, self._history[d], self._history_len, trim)
            else:
                raise ConfigError(
                    f"moment_cross: the batch has no long {d} history fields and no long-history "
                    f"store is attached; after loading the samples call "
                    f"model.attach_long_history(samples.long_history, samples.long_len) "
                    f"(Ranker.attach_long_history), or load them with long_fields='eager'"
                )
        return windows

    def _slots(self, name: str, batch: Batch) -> int:
        """Slots of sequence ``name`` on an untrimmed window: ``min(gsu_len, searched width)``."""
        if name == "short":
            assert self.short is not None
            return self.short.mask(batch).shape[1]
        width = 0
        for d in LONG_DOMAINS[name]:  # mixed: both windows
            field = f"long_{d}_author"
            width += batch[field].shape[1] if field in batch else self._history_len
        return min(self.cfg.gsu_len, width)

    # ------------------------------------------------------------------ GSU
    def _select(
        self,
        name: str,
        batch: Batch,
        windows: dict[str, Window],
        emb: EmbeddingCollection,
        gsu_query: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item vectors ``[B, G, D]`` and mask ``[B, G]`` of sequence ``name``."""
        k = self.cfg.gsu_len
        if name == "short":
            assert self.short is not None
            return self.short.items(batch, emb), self.short.mask(batch)  # [B, L, D], [B, L]
        if name in ("long", "livelong"):
            domain = "video" if name == "long" else "live"
            dom, window = self._domain(domain), windows[domain]
            assert gsu_query is not None
            scores = dom.scores(window, emb, gsu_query)  # [B, K], no grad
            index, mask = select_top_scores(scores, window.valid, k)
            return dom.items(window, emb, index, mask), mask
        if name == "aidhard":
            dom, window = self._domain("video"), windows["video"]
            if isinstance(window, ExpandedWindow) and window.single_row:
                # one request: one [K] sort of the window's authors, a binary search per
                # candidate (the same selection as below, without a top-k over [B, K])
                inner = window.inner
                keys, valid = inner.full("author")[0], inner.valid[0]  # [K], [K]
                index, mask = select_recent_matches(keys, valid, batch["author_id"], k)
            else:
                author = batch["author_id"].unsqueeze(1)  # [B, 1]
                same = (window.full("author") == author) & window.valid  # [B, K]
                index, mask = select_recent(same, k)
            return dom.items(window, emb, index, mask), mask
        return self._select_mixed(windows, emb, k)

    def _select_mixed(
        self, windows: dict[str, Window], emb: EmbeddingCollection, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        wins = (windows["live"], windows["video"])
        k_live = wins[0].width
        cond = torch.cat([(w.full("lv") != 0) & w.valid for w in wins], 1)  # [B, K_l + K_v]
        age = torch.cat([w.dt() for w in wins], dim=1)  # [B, K_live + K_video]
        # equal times: live before video, then by position (whatever the windows' widths)
        rank = torch.cat(
            [
                torch.arange(k_live, device=age.device),
                SECOND_WINDOW_RANK + torch.arange(wins[1].width, device=age.device),
            ]
        )  # [K_live + K_video]
        index, mask = select_most_recent_by_age(age, cond, k, rank)  # [B, G]
        is_video = index >= k_live  # [B, G]
        live, video = self._domain("live"), self._domain("video")
        items = live.items(wins[0], emb, index.clamp(max=k_live - 1), mask & ~is_video)
        items = items + video.items(wins[1], emb, (index - k_live).clamp(min=0), mask & is_video)
        assert self.domain_vec is not None
        domain = self.domain_vec[is_video.long()] * mask.unsqueeze(-1)  # [B, G, D]
        return items + domain, mask

    # ------------------------------------------------------------------ mean-pooling control
    def _window_sum(
        self, domain: str, window: Window, emb: EmbeddingCollection, weights: torch.Tensor
    ) -> torch.Tensor:
        """``sum_k weights[b, k] * item_k`` over the whole window -> ``[B, D]``.

        ``weights [B, K]`` must be 0 at padding. An item vector is a sum over side features, so
        per feature the weights of each *distinct* id of the batch are added up (``[B, U]``)
        and multiplied by those ids' embeddings: the backward touches ``U`` rows, not ``B x K``
        (an ``embedding_bag`` over the window took ~4x the whole GSU step at ``K = 1000``).
        When ``U > K`` the feature falls back to that bag.
        """
        dom = self._domain(domain)
        keep = weights != 0  # [B, K]
        total = torch.zeros(weights.shape[0], dom.dim, device=weights.device)
        for suffix, table in zip(dom.suffixes, dom.tables, strict=True):
            ids = window.full(suffix).clamp(min=0) * keep  # [B, K]; dropped slots -> row 0
            if capturing_graph():  # no data-dependent distinct ids in a recorded graph
                total = total + emb.pooled_sum([table], ids.unsqueeze(-1), weights)  # [B, D]
                continue
            uniq, position = unique_rows(ids, int(ids.max()) + 1)  # [U], [B, K]
            if uniq.numel() <= ids.shape[1]:
                per_id = weights.new_zeros(weights.shape[0], uniq.numel())  # [B, U]
                per_id.scatter_add_(1, position, weights)
                total = total + per_id @ emb.lookup(table, uniq)  # [B, D]
            else:
                total = total + emb.pooled_sum([table], ids.unsqueeze(-1), weights)  # [B, D]
        return total

    def _mean(
        self, name: str, batch: Batch, windows: dict[str, Window], emb: EmbeddingCollection
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Control: the mean of every item the GSU of ``name`` searches.

        Returns ``(mean [B, D], items pooled [B])``; rows without an item give zeros.
        """
        if name == "short":
            assert self.short is not None
            mask = self.short.mask(batch)  # [B, L]
            return self.short.mean(batch, emb, mask), mask.sum(1)
        if name in ("long", "livelong"):
            domain = "video" if name == "long" else "live"
            valid = windows[domain].valid  # [B, K]
            count = valid.sum(1)  # [B]
            weights = valid.float() / count.clamp(min=1).unsqueeze(1)  # [B, K]
            return self._window_sum(domain, windows[domain], emb, weights), count
        # mixed: every long-view row of both windows (no recency cut), plus the domain vectors
        conds = [(windows[d].full("lv") != 0) & windows[d].valid for d in ("live", "video")]
        per_domain = torch.stack([c.sum(1) for c in conds], 1)  # [B, 2]: live, video
        count = per_domain.sum(1)  # [B]
        denom = count.clamp(min=1).unsqueeze(1).float()  # [B, 1]
        vec = sum(
            self._window_sum(d, windows[d], emb, c.float() / denom)
            for d, c in zip(("live", "video"), conds, strict=True)
        )
        assert self.domain_vec is not None
        return vec + (per_domain / denom) @ self.domain_vec, count  # [B, D]

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch, emb: EmbeddingCollection) -> ModuleOutput:
        # Per distinct (time, histories, short sequence) of the batch when the rows repeat them
        # (a request's rows): ``sub`` holds those rows and ``expand`` maps [U, ...] -> [B, ...].
        eager = self._eager(batch)
        distinct = self._distinct(batch, eager)
        if distinct is None:
            sub, expand = batch, _identity
        else:
            sub = {f: distinct.take(batch[f]) for f in self._user_fields(eager)}
            expand = distinct.expand
        windows = self._windows(sub)  # [U, W] windows (U = B without dedup)
        outputs: list[torch.Tensor] = []
        pooled: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> mean [B, D], ok [B]
        diagnostics: dict[str, torch.Tensor | float] = {}
        if distinct is not None and not capturing_graph():  # a float of B would fix B
            diagnostics["distinct_rows_frac"] = distinct.count / max(len(distinct.inverse), 1)
        if self.cfg.search == "mean":  # candidate-independent throughout
            for name in self.sequences:
                vec, count = self._mean(name, sub, windows, emb)  # [U, D], [U]
                vec, count = expand(vec), expand(count)  # [B, D], [B]
                outputs.append(vec)
                pooled[name] = (vec, count > 0)
                diagnostics[f"{name}_items"] = count.float().mean().detach()
            return self._aligned(batch, outputs, pooled, diagnostics)
        # the candidate-dependent GSUs read every row's window (from the distinct reads)
        row_windows: dict[str, Window] = (
            windows
            if distinct is None
            else {d: ExpandedWindow(w, distinct.inverse) for d, w in windows.items()}  # type: ignore[arg-type]
        )

        ids = torch.stack([batch[f] for f in self.cfg.query_fields], dim=-1)  # [B, Q]
        query = emb.lookup_stack(self.query_tables, ids).flatten(1)  # [B, Q * D]
        gsu_query = None
        if "long" in self.sequences or "livelong" in self.sequences:
            with torch.no_grad():
                gids = torch.stack([batch[f] for f in self.cfg.gsu_query_fields], dim=-1)
                gsu_query = emb.lookup_sum(self.gsu_query_tables, gids)  # [B, D]
        for name in self.sequences:
            if name in CANDIDATE_FREE:  # selected and pooled once per distinct row
                items, mask = self._select(name, sub, windows, emb, None)  # [U, G, D], [U, G]
                mean, ok = expand(masked_mean(items, mask)), expand(mask.any(1))  # [B, D], [B]
                items, mask = expand(items), expand(mask)  # [B, G, D], [B, G]
            else:
                items, mask = self._select(name, batch, row_windows, emb, gsu_query)
                mean, ok = masked_mean(items, mask), mask.any(1)  # [B, D], [B]
            out, _ = self.esu[name](query, items, mask)  # [B, D]
            outputs.append(out)
            pooled[name] = (mean, ok)
            # share of the min(gsu_len, K) slots filled, whatever width the window was read at
            slots = mask.shape[0] * self._slots(name, batch)
            diagnostics[f"{name}_fill"] = mask.sum().detach().float() / max(slots, 1)
        return self._aligned(batch, outputs, pooled, diagnostics)

    def _aligned(
        self,
        batch: Batch,
        outputs: list[torch.Tensor],
        pooled: dict[str, tuple[torch.Tensor, torch.Tensor]],
        diagnostics: dict[str, torch.Tensor | float],
    ) -> ModuleOutput:
        """Concatenated outputs ``[B, n * D]`` plus the InfoNCE terms of eq. 6 (when on, and in
        training only, as FARM's: scoring needs no loss, and the terms were ~13 % of a
        200-candidate request's eager forward)."""
        aux: dict[str, torch.Tensor] = {}
        if self.aligned and self.training:
            anchor, anchor_ok = pooled["mixed"]
            groups = batch["user_id"] if self.cfg.dedup_users else None
            for name in self.aligned:
                vec, ok = pooled[name]
                loss = info_nce(anchor, vec, self.cfg.temperature, anchor_ok & ok, groups)
                aux[f"cl_{name}"] = self.cfg.weight(name) * loss
        return ModuleOutput(torch.cat(outputs, dim=-1), aux_losses=aux, diagnostics=diagnostics)
