"""Search over long behaviour histories: GSU selection and ESU target attention.

A two-stage *search-then-extract* scheme, as in SIM (Q. Pi et al., "Search-based User Interest
Modeling with Lifelong Sequential Behavior Data for CTR Prediction", CIKM 2020) and in the Cross
part of Moment&Cross (Jiangxia Cao et al., 2024, section 4; digest in ``papers/moment_cross.md``):

* a **GSU** (general search unit) picks at most ``k`` positions of a long history ``[B, K]``
  that are relevant to the candidate. Three selection rules cover the paper's five sequences:
  :func:`select_top_scores` (soft search: largest relevance score), :func:`select_recent`
  (hard search: the most recent positions that satisfy a condition) and the same rule over a
  concatenation of two domains ordered by recency (:func:`select_most_recent_by_age`).
  Selections are index tensors ``[B, k]`` plus a validity mask ``[B, k]``; they carry no
  gradient (indices are integers), so nothing is learnt *through* a selection.
* an **ESU** (exact search unit) pools the selected items into one vector with the candidate as
  query: :class:`DotTargetAttention` (eq. 7 of Moment&Cross: scaled dot-product attention of
  ``q W^q`` over ``V W^k`` / ``V W^v``).

Every function is vectorised (``topk`` / ``gather`` / masks); invalid positions are never
selected: a selected slot whose mask is False must be ignored by the caller (its index points at
an arbitrary position).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from liverank.errors import ConfigError


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B]`` int lengths -> ``[B, max_len]`` bool, true at the first ``lengths[b]`` positions."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)  # [B, K]


#: tie ranks below this are positions; the second window of a merged pair starts here
SECOND_WINDOW_RANK = 1 << 30


#: float32 bits: the 2^23 mantissa steps per exponent, the exponent bias, +-inf's magnitude
_MANTISSA = 1 << 23
_INF_BITS = 255 << 23


def float_order(x: torch.Tensor) -> torch.Tensor:
    """``[...]`` float32 -> int64 in ``[-2^31, 2^31)``, strictly monotone in the value (``-inf``
    lowest, ``-0.0`` just below ``+0.0``): the IEEE bit pattern read as sign and magnitude.

    It is the bit pattern itself (``Tensor.view(torch.int32)``), eagerly and in a ``torch.export``
    / ``torch.compile`` graph (AOTInductor compiles it to a bit cast). A TorchScript trace gets
    the same integers by arithmetic (``frexp``): ``torch.jit.trace`` cannot record a dtype view
    (an internal assert in its alias analysis, torch 2.13), and the arithmetic cost ~3 ms of a
    200 x 1,000 one-request moment_cross program when AOTInductor ran it (A/B, one session).
    Tested equal on every kind of float.
    """
    if not torch.jit.is_tracing():
        bits = x.contiguous().view(torch.int32)
        # negative floats: flip the magnitude bits (-1 - magnitude); int32 ops, then widen
        return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)
    return float_order_arithmetic(x)


def float_order_arithmetic(x: torch.Tensor) -> torch.Tensor:
    """:func:`float_order` by arithmetic (``frexp``), for a TorchScript trace (no dtype view)."""
    a = x.abs()
    mantissa, exponent = torch.frexp(a)  # a = mantissa * 2^exponent, mantissa in [0.5, 1)
    normal = (exponent.to(torch.int64) + 126) * _MANTISSA
    normal = normal + (mantissa * (2 * _MANTISSA)).to(torch.int64) - _MANTISSA
    subnormal = (a.to(torch.float64) * 2.0**149).to(torch.int64)  # exact: a power of two
    magnitude = torch.where(a >= 2.0**-126, normal, subnormal)
    magnitude = torch.where(torch.isinf(a), torch.full_like(magnitude, _INF_BITS), magnitude)
    return torch.where(torch.signbit(x), -magnitude - 1, magnitude)


def _top_k_ties_by_rank(
    key: torch.Tensor, k: int, rank: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices ``[B, k]`` of the ``k`` largest float32 ``key [B, K]``, equal keys ordered by
    ``rank`` (``[K]`` or ``[B, K]`` ints in ``[0, 2^32)``, smaller first; default: position).

    ``torch.topk`` breaks ties arbitrarily, and differently for different widths: with ties
    broken by a rank that does not depend on the width, a window trimmed of its padding columns
    (``layers/history.py``) selects exactly what the full window selects. The float is mapped
    to an order-preserving int (``-inf`` lowest) and combined with the rank in one int64 key.
    """
    order = float_order(key.detach().to(torch.float32))  # [B, K] monotone in the float
    if rank is None:
        rank = torch.arange(key.shape[1], device=key.device)  # [K]
    combined = order * (1 << 32) + ((1 << 32) - 1 - rank)  # [B, K], distinct per row
    return torch.topk(combined, k, dim=1).indices  # [B, k]


def select_top_scores(
    scores: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft search: the ``k`` valid positions of largest ``scores``.

    Args:
        scores: ``[B, K]`` relevance of every position (no gradient is taken through it).
        valid: ``[B, K]`` bool, true at real positions.
        k: how many to keep (``min(k, K)`` slots are returned).

    Returns:
        ``(index [B, k'], mask [B, k'])``, highest score first, equal scores most recent
        (lowest position) first; ``mask`` is false for slots left empty because a row has fewer
        than ``k'`` valid positions.
    """
    k = min(k, scores.shape[1])
    filled = scores.detach().masked_fill(~valid, float("-inf"))  # [B, K]
    index = _top_k_ties_by_rank(filled, k)  # [B, k]
    mask = torch.gather(valid, 1, index)  # [B, k]
    return index, mask


def select_recent(condition: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard search: the first (= most recent) ``k`` positions where ``condition`` holds.

    ``condition`` is ``[B, K]`` bool over a history stored most recent first (so it must already
    be false at padding). Returns ``(index [B, k'], mask [B, k'])`` in history order.
    """
    length = condition.shape[1]
    k = min(k, length)
    # Key K - position for a match (earlier = larger), 0 otherwise; topk keeps history order.
    recency = torch.arange(length, 0, -1, device=condition.device)  # [K]: K, K-1, ..., 1
    key = torch.where(condition, recency, torch.zeros_like(recency))  # [B, K]
    top, index = torch.topk(key, k, dim=1)  # [B, k]
    return index, top > 0


def select_recent_matches(
    keys: torch.Tensor, valid: torch.Tensor, query: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard search of many candidates in *one* history: for each ``query[b]``, the first (=
    most recent) ``k`` valid positions whose key equals it.

    The same selection as ``select_recent((keys == query[:, None]) & valid, k)`` (equal
    indices at every kept slot, equal masks), for a window shared by every row (one request):
    the window is sorted once by key (stably, so positions stay in history order within a key)
    and each query finds its run with two binary searches, instead of a top-k over
    ``[B, K]``. A serving program at 200 candidates and ``K = 1,000`` does a ``[1,000]`` sort
    and ``[200]`` searches rather than a top-k over 200,000 keys.

    Args:
        keys: ``[K]`` int64, the history's key per position (most recent first).
        valid: ``[K]`` bool, true at real positions.
        query: ``[B]`` int64, each row's key.
        k: how many to keep (``min(k, K)`` slots are returned).

    Returns:
        ``(index [B, k'], mask [B, k'])`` in history order.
    """
    length = keys.shape[0]
    k = min(k, length)
    # padding gets a key below every key and query: it never matches
    none = torch.minimum(keys.min(), query.min()) - 1
    keyed = torch.where(valid, keys, none)  # [K]
    sorted_keys, perm = torch.sort(keyed, stable=True)  # [K], [K]
    lo = torch.searchsorted(sorted_keys, query, right=False)  # [B]
    hi = torch.searchsorted(sorted_keys, query, right=True)  # [B]
    slot = torch.arange(k, device=keys.device)  # [k]
    pos = (lo.unsqueeze(1) + slot).clamp(max=length - 1)  # [B, k]
    return perm[pos], slot < (hi - lo).unsqueeze(1)  # [B, k], [B, k]


def select_most_recent_by_age(
    age: torch.Tensor, condition: torch.Tensor, k: int, rank: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard search by recency when positions are not in time order (e.g. two merged domains).

    Args:
        age: ``[B, K]`` time since each behaviour (smaller = more recent; any unit).
        condition: ``[B, K]`` bool, which positions may be selected (false at padding).
        k: how many to keep.
        rank: ``[K]`` ints in ``[0, 2^32)``: equal ages are taken in increasing rank (default:
            position; two merged windows pass ``position`` and ``SECOND_WINDOW_RANK +
            position``, so the order does not depend on the first window's width).

    Returns:
        ``(index [B, k'], mask [B, k'])``, most recent first.
    """
    k = min(k, age.shape[1])
    key = (-age.float()).masked_fill(~condition, float("-inf"))  # [B, K]
    index = _top_k_ties_by_rank(key, k, rank)  # [B, k]
    return index, torch.gather(condition, 1, index)


def gather_positions(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values [B, K]`` (or ``[B, K, ...]``) at ``index [B, k]`` -> ``[B, k]`` (``[B, k, ...]``)."""
    if values.dim() == 2:
        return torch.gather(values, 1, index)
    expanded = index.view(*index.shape, *([1] * (values.dim() - 2))).expand(
        -1, -1, *values.shape[2:]
    )
    return torch.gather(values, 1, expanded)


class DotTargetAttention(nn.Module):
    """Multi-head scaled dot-product target attention (Moment&Cross eq. 7).

    ``out = concat_h softmax_l((q W^q)_h . (v_l W^k)_h / sqrt(d_h)) (v_l W^v)_h`` over the valid
    positions ``l``. The query may be wider than the items (e.g. the concatenated embeddings of
    every candidate-room field); ``W^q`` maps it to the items' width. A row with no valid
    position gives zeros (never NaN).

    Args:
        query_dim: width of the query vector.
        dim: width ``D`` of the items and of the output.
        heads: number of heads; must divide ``dim``.
    """

    def __init__(self, query_dim: int, dim: int, heads: int = 2) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"attention heads ({heads}) must divide the item dimension ({dim})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.w_q = nn.Linear(query_dim, dim)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)

    def forward(
        self, query: torch.Tensor, items: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query ``[B, Dq]``, items ``[B, L, D]``, mask ``[B, L]`` -> (``[B, D]``, weights ``[B, L, H]``)."""
        # Evaluated by associativity, never projecting the L items: (q W^q)_h . (v_l W^k)_h =
        # v_l . (W^k_h^T (q W^q)_h), and sum_l w_lh (v_l W^v)_h = (sum_l w_lh v_l) W^v_h^T.
        # Same values up to float summation order; 1.7x faster forward + backward at
        # B = 1024, L = 50, D = 16 (measured), as W^k and W^v have no bias.
        b = items.shape[0]
        q = self.w_q(query).view(b, self.heads, self.head_dim)  # [B, H, dh]
        w_k = self.w_k.weight.view(self.heads, self.head_dim, self.dim)  # [H, dh, D]
        q_items = torch.einsum("bhe,hed->bdh", q, w_k)  # [B, D, H]: the query in item space
        scores = torch.bmm(items, q_items) / math.sqrt(self.head_dim)  # [B, L, H]
        valid = mask.unsqueeze(-1)  # [B, L, 1]
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        # Multiplying by the mask zeroes rows without any valid position (their softmax is uniform).
        weights = torch.softmax(scores, dim=1) * valid.to(scores.dtype)  # [B, L, H]
        pooled = torch.bmm(weights.transpose(1, 2), items)  # [B, H, D]
        w_v = self.w_v.weight.view(self.heads, self.head_dim, self.dim)  # [H, dh, D]
        out = torch.einsum("bhd,hed->bhe", pooled, w_v).reshape(b, self.dim)  # [B, D]
        return out, weights
