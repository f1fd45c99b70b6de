"""Admission and eviction of ids in an embedding table: the frequency filter and the time to live.

A platform's id spaces never stop growing (new users and rooms every second, most seen once), so
industrial embedding stores do not give every id a trained row (Monolith's "frequency filter"
and "expirable embeddings"; TorchRec's managed collision modules with eviction):

- **frequency filter** (``min_count``): an id takes its own row only once it has been seen
  ``min_count`` times in training; until then it shares the table's single **OOV row** (an
  extra trainable row, so rare ids still learn a common "rare id" vector);
- **eviction** (``ttl_ms``): in streaming training, a row whose id has not been seen for
  ``ttl_ms`` of event time is reset: its vector back to a fresh initialisation, its optimiser
  moments to zero, its count to zero (it must be admitted again).

Counts and last-seen times are kept per row of the table's own space: per id for a plain table,
per hash bucket for a hashed one (``feature_map.hash_buckets``; ids that collide into a bucket
are counted together, a one-row count-min sketch). Both are buffers, saved with the model, so a
served model admits exactly the ids it was trained to admit. Counting happens in training mode
only; lookups in evaluation mode read the counts without changing them.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class IdPolicyConfig(BaseModel):
    """Per table: ``min_count`` (1 = every id admitted at once) and ``ttl_ms`` (0 = never
    evicted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_count: int = Field(1, ge=1)
    ttl_ms: int = Field(0, ge=0)


class IdPolicy(nn.Module):
    """Counts and last-seen times of the ``rows`` rows of one table, and its OOV row.

    Args:
        rows: rows of the table's own space (vocabulary incl. the padding row 0, or buckets);
            the OOV row is row ``rows`` (the table gets one extra row).
        config: ``min_count`` and ``ttl_ms``.
    """

    def __init__(self, rows: int, config: IdPolicyConfig) -> None:
        super().__init__()
        self.min_count = config.min_count
        self.ttl_ms = config.ttl_ms
        self.oov_row = rows
        self.register_buffer("counts", torch.zeros(rows + 1, dtype=torch.int32))  # [rows + 1]
        self.register_buffer("last_seen", torch.zeros(rows + 1, dtype=torch.int64))  # [rows + 1]
        #: counts as of the last synchronisation of data-parallel ranks
        self.register_buffer("synced", torch.zeros(rows + 1, dtype=torch.int32), persistent=False)
        #: event time (ms) stamped on the rows a training lookup touches
        self.clock = 0

    def forward(self, ids: torch.Tensor, training: bool) -> torch.Tensor:
        """Table-space rows ``ids`` (any shape; 0 = padding) -> the rows to look up: the OOV
        row for an id seen fewer than ``min_count`` times (this lookup included)."""
        if training:
            flat = ids.reshape(-1)
            self.counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
            if self.ttl_ms:
                self.last_seen[flat] = self.clock
        if self.min_count > 1:
            admitted = (self.counts[ids] >= self.min_count) | (ids == 0)
            ids = torch.where(admitted, ids, torch.full_like(ids, self.oov_row))
        return ids

    def stale(self, now_ms: int) -> torch.Tensor:
        """``[K]`` rows last seen more than ``ttl_ms`` before ``now_ms`` (never row 0 or the
        OOV row, never a row not seen since its last reset)."""
        if not self.ttl_ms:
            return torch.zeros(0, dtype=torch.int64, device=self.counts.device)
        seen = self.last_seen > 0
        old = self.last_seen < now_ms - self.ttl_ms
        rows = torch.nonzero(seen & old).squeeze(1)
        return rows[(rows > 0) & (rows != self.oov_row)]

    def reset(self, rows: torch.Tensor) -> None:
        """Forget ``rows``: count 0, never seen."""
        self.counts[rows] = 0
        self.synced[rows] = 0
        self.last_seen[rows] = 0

    def sync(self) -> None:
        """Data-parallel ranks: add up the counts every rank made since the last sync and take
        the latest last-seen time, so that every rank admits and evicts the same rows."""
        import torch.distributed as dist

        delta = self.counts - self.synced
        dist.all_reduce(delta)
        self.counts.copy_(self.synced + delta)
        self.synced.copy_(self.counts)
        dist.all_reduce(self.last_seen, op=dist.ReduceOp.MAX)
