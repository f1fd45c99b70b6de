"""Shared embedding tables of a Ranker, one logical table per table of the feature map.

Every table reserves row 0 for padding / unknown ids; that row is zero and never trained.
Ids that do not fit a table (``id < 0`` or ``id >= rows``) are mapped to row 0 instead of
crashing, and counted per table (:meth:`EmbeddingCollection.oov_counts`), so a model trained on
one vocabulary degrades gracefully on ids it has never seen (cold users or rooms at serving time).

Tables listed in ``feature_map.hash_buckets`` are *hashed*: an id ``x > 0`` goes to row
``h(x) mod (buckets - 1) + 1`` of a ``buckets``-row table, with a fixed multiply-mod hash
(deterministic across processes and machines); ``0`` stays ``0``.

Two storage layouts give the same results (up to initialisation):

* ``fused=True`` (default): all tables of the same dimension live in one ``nn.Embedding``
  (sparse, ``padding_idx=0``) with per-table row offsets, as fused embedding tables in TorchRec
  do. A module that needs several fields (``lookup_stack``, ``pooled_sum``) then makes a single
  gather and a single sparse gradient instead of one per field, and the gather touches each
  distinct row once (``layers/gather.py``), which is what costs time on CPUs.
* ``fused=False``: one ``nn.Embedding(sparse=True, padding_idx=0)`` per table.

Example::

    emb = EmbeddingCollection(feature_map, dim=16)
    user_vec = emb.lookup("user", batch["user_id"])  # [B, 16]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.layers.gather import bag_sum, gather
from liverank.models.layers.id_policy import IdPolicy, IdPolicyConfig

log = logging.getLogger(__name__)

# Multiply-mod hash over the Mersenne prime 2^61 - 1. The two 31-bit multipliers keep every
# intermediate product below 2^63, so int64 arithmetic never overflows for ids >= 0.
_HASH_A = 1_640_531_527
_HASH_B = 1_103_515_245
_HASH_P = (1 << 61) - 1
_LOW32 = (1 << 32) - 1


def hash_ids(ids: torch.Tensor, buckets: int | torch.Tensor) -> torch.Tensor:
    """Hash non-negative int64 ``ids`` into ``[1, buckets)``; ``0`` stays ``0``.

    ``buckets`` is an int or a tensor broadcastable to ``ids`` (one bucket count per column).
    """
    mixed = ((ids & _LOW32) * _HASH_A + (ids >> 32) * _HASH_B) % _HASH_P
    hashed = mixed % (buckets - 1) + 1
    return torch.where(ids == 0, torch.zeros_like(ids), hashed)


class EmbeddingCollection(nn.Module):
    """Embedding tables for every table of ``feature_map``.

    Args:
        feature_map: vocabulary sizes (``tables``) and hashed tables (``hash_buckets``).
        dim: one dimension for every table, or table -> dimension (every table must be listed).
        sparse: sparse gradients (updated by ``SparseAdam``, only the rows a batch touches).
        fused: store tables of equal dimension in one fused table (see the module docstring).
        init_std: rows (but row 0) start as ``N(0, init_std^2)``.
        policies: per table, the frequency filter and time to live of its ids
            (:mod:`liverank.models.layers.id_policy`); such a table gets one extra (OOV) row.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        dim: int | dict[str, int],
        sparse: bool = True,
        fused: bool = True,
        init_std: float = 0.1,
        policies: dict[str, IdPolicyConfig] | None = None,
    ) -> None:
        super().__init__()
        self.init_std = init_std
        self.feature_map = feature_map
        self.sparse = sparse
        self.fused = fused
        self.table_names: list[str] = sorted(
            set(feature_map.tables) | set(feature_map.hash_buckets)
        )
        self._index = {t: i for i, t in enumerate(self.table_names)}
        self._dims = self._resolve_dims(dim)
        self._rows: dict[str, int] = {}
        self._buckets: dict[str, int] = {}
        for t in self.table_names:
            rows = feature_map.table_size(t)
            if rows < 1:
                raise ConfigError(f"embedding table '{t}' has {rows} rows; need at least 1")
            if t in feature_map.hash_buckets:
                if rows < 2:
                    raise ConfigError(f"hash_buckets['{t}'] = {rows}; need at least 2 buckets")
                self._buckets[t] = rows
            self._rows[t] = rows
        # Admission / eviction: the policy's table keeps its id range (``_vocab``) and gets
        # one more storage row, the OOV row ``_vocab[t]``.
        self._vocab = dict(self._rows)
        self.policies = nn.ModuleDict()
        for t, cfg in sorted((policies or {}).items()):
            self._check_table(t)
            self.policies[t] = IdPolicy(self._rows[t], cfg)
            self._rows[t] += 1

        # Storage. Fused: one table per distinct dim; table t's row r >= 1 is global row
        # base[t] + r - 1, and every table's row 0 is the shared padding row 0.
        self.tables = nn.ModuleDict()
        self._base: dict[str, int] = {}
        self._group: dict[str, str] = {}
        if fused:
            for d in sorted(set(self._dims.values())):
                members = [t for t in self.table_names if self._dims[t] == d]
                total = 1
                for t in members:
                    self._base[t] = total
                    self._group[t] = f"dim{d}"
                    total += self._rows[t] - 1
                self.tables[f"dim{d}"] = self._make_table(total, d)
        else:
            for t in self.table_names:
                self._base[t] = 0
                self._group[t] = t
                self.tables[t] = self._make_table(self._rows[t], self._dims[t])

        # Per-table counters of ids mapped to 0 because they were out of range.
        self.register_buffer("_oov", torch.zeros(len(self.table_names), dtype=torch.int64), False)
        self._stack_cache: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}
        self._stack_hashed: dict[tuple[str, ...], bool] = {}

    # ------------------------------------------------------------------ construction helpers
    def _resolve_dims(self, dim: int | dict[str, int]) -> dict[str, int]:
        if isinstance(dim, int):
            dims = dict.fromkeys(self.table_names, dim)
        else:
            missing = [t for t in self.table_names if t not in dim]
            if missing:
                raise ConfigError(f"embedding dims given per table but missing for: {missing}")
            dims = {t: int(dim[t]) for t in self.table_names}
        bad = {t: d for t, d in dims.items() if d < 1}
        if bad:
            raise ConfigError(f"embedding dims must be >= 1, got {bad}")
        return dims

    def _make_table(self, rows: int, dim: int) -> nn.Embedding:
        table = nn.Embedding(rows, dim, padding_idx=0, sparse=self.sparse)
        nn.init.normal_(table.weight, std=self.init_std)
        with torch.no_grad():
            table.weight[0].zero_()
        return table

    # ------------------------------------------------------------------ introspection
    def dim(self, table: str) -> int:
        """Embedding dimension of ``table``."""
        return self._dims[self._check_table(table)]

    def num_rows(self, table: str) -> int:
        """Storage rows of ``table`` (vocabulary size or hash buckets, padding row included,
        plus the OOV row of a table with an id policy)."""
        return self._rows[self._check_table(table)]

    def table_weight(self, table: str) -> torch.Tensor:
        """The ``[rows, dim]`` matrix of ``table`` (row 0 = padding); a copy in fused layout."""
        t = self._check_table(table)
        weight = self.tables[self._group[t]].weight
        if not self.fused:
            return weight
        base, rows = self._base[t], self._rows[t]
        return torch.cat([weight[:1], weight[base : base + rows - 1]], dim=0)

    def oov_counts(self, reset: bool = False) -> dict[str, int]:
        """Per table, how many ids were out of range (and looked up as 0) since the last reset."""
        counts = {t: int(c) for t, c in zip(self.table_names, self._oov.tolist(), strict=True) if c}
        if reset:
            self._oov.zero_()
        return counts

    def _check_table(self, table: str) -> str:
        if table not in self._index:
            raise ConfigError(
                f"no embedding table '{table}'; the feature map has: {', '.join(self.table_names)}"
            )
        return table

    # ------------------------------------------------------------------ admission, eviction
    def set_clock(self, now_ms: int) -> None:
        """Event time stamped on the rows that training lookups touch (streaming training)."""
        for policy in self.policies.values():
            policy.clock = int(now_ms)

    def evict(self, now_ms: int, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Reset the rows of every table with a time to live whose ids were last seen more than
        ``ttl_ms`` before ``now_ms``: a fresh ``N(0, init_std^2)`` vector (drawn from a
        generator seeded with ``now_ms``, so data-parallel ranks draw the same), zero moments in
        ``optimizer``'s state, count 0. Returns the rows reset per table."""
        done: dict[str, int] = {}
        for t, policy in self.policies.items():
            rows = policy.stale(now_ms)  # [K] table-space rows
            if rows.numel() == 0:
                continue
            weight = self.tables[self._group[t]].weight
            storage = rows + (self._base[t] - 1) if self.fused and self._base[t] > 1 else rows
            gen = torch.Generator(device="cpu").manual_seed(int(now_ms) + self._index[t])
            fresh = torch.randn(len(rows), weight.shape[1], generator=gen) * self.init_std
            with torch.no_grad():
                weight[storage] = fresh.to(weight.device, weight.dtype)
            state = optimizer.state.get(weight, {}) if optimizer is not None else {}
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][storage] = 0
            policy.reset(rows)
            done[t] = int(rows.numel())
        return done

    def sync_policies(self) -> None:
        """Data-parallel ranks: agree on every policy's counts and last-seen times."""
        for policy in self.policies.values():
            policy.sync()

    # ------------------------------------------------------------------ lookups
    def rows_for(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """Storage rows of ``ids`` in ``table``: hashing, out-of-range -> 0, fused offsets."""
        t = self._check_table(table)
        if t in self._buckets:
            ids = hash_ids(ids.clamp(min=0), self._buckets[t])
        bad = (ids < 0) | (ids >= self._vocab[t])
        # Count without a host sync: the counter is a tensor.
        self._oov[self._index[t]] += bad.sum()
        ids = ids.masked_fill(bad, 0)
        if t in self.policies:
            ids = self.policies[t](ids, self.training)
        if self._base[t] > 1:
            ids = torch.where(ids > 0, ids + (self._base[t] - 1), ids)
        return ids

    def lookup(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``ids`` (any shape ``[...]``, int64) in ``table`` -> ``[..., D]``."""
        rows = self.rows_for(table, ids)
        storage = self.tables[self._group[table]]
        if not self.fused:
            return storage(rows)
        return gather(storage.weight, rows, self.sparse)

    def _stack_params(
        self, tables: tuple[str, ...], device: torch.device
    ) -> dict[str, torch.Tensor]:
        key = tables
        cached = self._stack_cache.get(key)
        if cached is None or cached["base"].device != device:
            cached = {
                "rows": torch.tensor([self._vocab[t] for t in tables], device=device),
                "buckets": torch.tensor([self._buckets.get(t, 0) for t in tables], device=device),
                "base": torch.tensor([self._base[t] for t in tables], device=device),
                "index": torch.tensor([self._index[t] for t in tables], device=device),
            }
            self._stack_cache[key] = cached
            self._stack_hashed[key] = any(t in self._buckets for t in tables)
        return cached

    def _rows_stack(self, tables: Sequence[str], ids: torch.Tensor) -> tuple[torch.Tensor, str]:
        """Fused rows for ``ids [..., F]`` whose column f belongs to ``tables[f]`` (same dim)."""
        names = tuple(self._check_table(t) for t in tables)
        if ids.shape[-1] != len(names):
            raise ValueError(f"ids have {ids.shape[-1]} columns but {len(names)} tables were given")
        groups = {self._group[t] for t in names}
        if len(groups) != 1:
            dims = {t: self._dims[t] for t in names}
            raise ConfigError(f"a stacked lookup needs tables of one dimension, got {dims}")
        p = self._stack_params(names, ids.device)
        if self._stack_hashed[names]:
            hashed = hash_ids(ids.clamp(min=0), p["buckets"].clamp(min=2))
            ids = torch.where(p["buckets"] > 0, hashed, ids)
        bad = (ids < 0) | (ids >= p["rows"])  # [..., F]
        self._oov.index_add_(0, p["index"], bad.reshape(-1, len(names)).sum(0))
        ids = ids.masked_fill(bad, 0)
        with_policy = [f for f, t in enumerate(names) if t in self.policies]
        if with_policy:
            ids = ids.clone()
            for f in with_policy:
                ids[..., f] = self.policies[names[f]](ids[..., f], self.training)
        rows = torch.where(ids > 0, ids + (p["base"] - 1), ids)  # [..., F]
        return rows, groups.pop()

    def lookup_stack(self, tables: Sequence[str], ids: torch.Tensor) -> torch.Tensor:
        """Column f of ``ids [..., F]`` looked up in ``tables[f]`` -> ``[..., F, D]``.

        All tables must have the same dimension. In the fused layout this is one gather.
        """
        if not self.fused:
            return torch.stack([self.lookup(t, ids[..., f]) for f, t in enumerate(tables)], -2)
        rows, group = self._rows_stack(tables, ids)
        return gather(self.tables[group].weight, rows, self.sparse)  # [..., F, D]

    def lookup_sum(self, tables: Sequence[str], ids: torch.Tensor) -> torch.Tensor:
        """``lookup_stack(tables, ids).sum(-2)`` for ``ids [..., F]`` -> ``[..., D]``.

        In the fused layout: one ``embedding_bag`` with a bag per leading position, so the
        ``[..., F, D]`` stack is never built (e.g. sequence item vectors = sum of side features).
        """
        if not self.fused:
            return self.lookup_stack(tables, ids).sum(-2)
        rows, group = self._rows_stack(tables, ids)  # [..., F]
        lead = rows.shape[:-1]
        out = bag_sum(
            self.tables[group].weight, rows.reshape(-1, rows.shape[-1]), None, self.sparse
        )
        return out.view(*lead, out.shape[-1])  # [..., D]

    def pooled_sum(
        self, tables: Sequence[str], ids: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sum_{l, f} w[b, l] * E[tables[f]][ids[b, l, f]]`` for ``ids [B, L, F]`` -> ``[B, D]``.

        ``weights`` is ``[B, L]`` (``None`` = 1; no gradient flows to it). In the fused layout
        this is a single ``embedding_bag`` call, which never materialises ``[B, L, F, D]``.
        """
        if not self.fused:
            vec = self.lookup_stack(tables, ids).sum(-2)  # [B, L, D]
            if weights is not None:
                vec = vec * weights.unsqueeze(-1)
            return vec.sum(1)
        rows, group = self._rows_stack(tables, ids)
        b = rows.shape[0]
        per_sample = None
        if weights is not None:
            per_sample = weights.unsqueeze(-1).expand(rows.shape).reshape(b, -1)  # [B, L*F]
            per_sample = per_sample.to(self.tables[group].weight.dtype)
        # One bag per sample over its L*F ids.
        return bag_sum(self.tables[group].weight, rows.reshape(b, -1), per_sample, self.sparse)
