"""Encode what the rows of a batch share once: exact deduplication of candidate-independent inputs.

The impressions of one request carry the same user, time and behaviour sequences; only the
candidate room differs. A module whose expensive part reads only the candidate-independent
fields (FARM's filters, self- and cross-attention over the sequences) can run that part on the
*distinct* rows of the batch and index the results back to every row: the outputs, the losses
and the gradients are the same as encoding every row (the index's backward adds the gradients of
the rows that share a distinct row), up to floating-point summation order.

How much it saves depends on the batch: ~5x on batches of whole requests (``data.batch_order:
requests``; the streaming trainer's time-ordered slices; evaluation in storage order; a serving
request), nothing on uniformly shuffled batches (where :func:`distinct_rows` returns None and the
module runs as before).

Serving records a forward once and runs it on every request (TorchScript, AOTInductor), and a
recorded graph cannot keep a data-dependent dedup. But a served batch *is* one request: recorded
under :func:`one_request`, :func:`request_rows` returns the static answer "every row is row 0"
(``first = [0]``, ``inverse = zeros(B)``), so the compiled program encodes the user's sequences
once per request as the eager forward does. The program is then only valid on batches whose
candidate-independent fields are equal in every row; the exports record those fields
(:func:`liverank.serve.export.shared_fields`) and their loaders check every batch.

Distinct rows are found by hashing each row's values to one int64 (a fixed random linear form,
wrapping) and :func:`torch.unique` over the ``[B]`` hashes; every row is then compared with its
representative, and on any hash collision the dedup is abandoned (None): the result is exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

#: dedup only when the distinct rows are at most this share of the batch (else the gathers
#: cost more than they save)
MAX_DISTINCT_SHARE = 0.7

_COEFFS: dict[int, torch.Tensor] = {}

#: set by :func:`one_request` while a serving program is recorded
_ONE_REQUEST = False


def capturing_graph() -> bool:
    """True while a tracer or exporter records the forward (``torch.jit.trace``,
    ``torch.export`` / the ONNX exporter, ``torch.compile``): a data-dependent dedup must stay out
    of a recorded graph, which would freeze one batch's choice (and ``torch.unique`` has no
    static shape to export)."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


@contextmanager
def one_request() -> Iterator[None]:
    """Record a forward for batches that are each one request: inside, a recorded graph
    (:func:`capturing_graph`) takes :func:`request_rows` to be "all rows share row 0" instead of
    running no dedup. Outside a recording it changes nothing."""
    global _ONE_REQUEST
    before, _ONE_REQUEST = _ONE_REQUEST, True
    try:
        yield
    finally:
        _ONE_REQUEST = before


def request_rows(tensors: Sequence[torch.Tensor], enabled: bool = True) -> DistinctRows | None:
    """The distinct rows a module encodes its candidate-independent ``tensors`` on: None when
    ``enabled`` is False; in a recorded graph, one row for the whole batch under
    :func:`one_request` (static: ``first [1]``, ``inverse [B]`` of zeros) and None otherwise;
    else :func:`distinct_rows` of the batch's values."""
    if not enabled:
        return None
    if capturing_graph():
        if not _ONE_REQUEST:
            return None
        b = tensors[0].shape[0]
        inverse = torch.zeros_like(tensors[0].reshape(b, -1)[:, 0], dtype=torch.int64)  # [B]
        first = torch.zeros(1, dtype=torch.int64, device=inverse.device)  # [1]
        return DistinctRows(first=first, inverse=inverse)
    return distinct_rows(list(tensors))


def _coefficients(width: int) -> torch.Tensor:
    """``[width]`` fixed odd int64 multipliers (deterministic; cached per width)."""
    if width not in _COEFFS:
        gen = torch.Generator().manual_seed(0x5EED)
        raw = torch.randint(-(2**62), 2**62, (width,), generator=gen, dtype=torch.int64)
        _COEFFS[width] = raw | 1
    return _COEFFS[width]


@dataclass(frozen=True)
class DistinctRows:
    """The distinct rows of a batch: ``first [U]`` (index of each distinct row's first
    occurrence, ascending) and ``inverse [B]`` (which distinct row each batch row is), so
    ``x[first][inverse] == x`` for every deduplicated input ``x``."""

    first: torch.Tensor
    inverse: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.first.numel())

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, ...]`` -> its distinct rows ``[U, ...]``."""
        return x.index_select(0, self.first)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """``x [U, ...]`` (per distinct row) -> ``[B, ...]`` (per batch row)."""
        return x.index_select(0, self.inverse)


def distinct_rows(
    tensors: list[torch.Tensor], max_share: float = MAX_DISTINCT_SHARE
) -> DistinctRows | None:
    """The distinct rows over ``tensors`` (integer ``[B]`` or ``[B, ...]``, all with ``B``
    rows; two rows are equal when they are equal in every tensor), or None when fewer than
    ``1 - max_share`` of the rows are duplicates (nothing worth saving) or a hash collision
    makes the cheap test inexact."""
    if not tensors:
        raise ValueError("distinct_rows needs at least one tensor")
    b = tensors[0].shape[0]
    if b < 2:
        return None
    key = torch.cat([t.reshape(b, -1).to(torch.int64) for t in tensors], dim=1)  # [B, K]
    h = (key * _coefficients(key.shape[1]).to(key.device)).sum(1)  # [B], wraps mod 2^64
    uniq, inverse = torch.unique(h, return_inverse=True)  # [U], [B]
    u = uniq.numel()
    if u > max_share * b:
        return None
    rows = torch.arange(b, device=key.device)
    first = torch.full((u,), b, dtype=torch.int64, device=key.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")  # [U]
    if not bool((key.index_select(0, first).index_select(0, inverse) == key).all()):
        return None  # two different rows share a hash: do not deduplicate
    # torch.unique sorts by hash; order the distinct rows by first occurrence instead
    order = torch.argsort(first)  # [U]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(u, device=key.device)
    return DistinctRows(first=first[order], inverse=rank[inverse])
