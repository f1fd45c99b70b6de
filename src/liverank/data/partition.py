"""Which training process (rank) owns a user: one fixed hash of ``user_id``, used by every rank.

Data-parallel training gives each rank the rows of its own users: the loader filters the Parquet
scan with :func:`user_rank_expr` (a rank never holds the other ranks' rows) and streaming
training keeps a user's events in order on one rank. The hash is multiplicative (Knuth's
2654435761, the high 16 of 32 bits) so that a structured id space (even ids, blocks of new
users) still spreads evenly; :func:`user_rank` (NumPy) and :func:`user_rank_expr` (Polars) give
the same answer for every id.
"""

from __future__ import annotations

import numpy as np
import polars as pl

_MULT = 2654435761  # odd, ~2^32 / golden ratio
_MASK32 = (1 << 32) - 1


def _check(world: int) -> None:
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")


def user_rank(user_ids: np.ndarray, world: int) -> np.ndarray:
    """``[N]`` rank in ``[0, world)`` of every user id (any integer ids)."""
    _check(world)
    x = np.asarray(user_ids).astype(np.uint64) & np.uint64(_MASK32)
    h = (x * np.uint64(_MULT)) & np.uint64(_MASK32)  # < 2^64: no overflow
    return ((h >> np.uint64(16)) % np.uint64(world)).astype(np.int64)


def user_rank_expr(world: int, column: str = "user_id") -> pl.Expr:
    """The Polars expression of :func:`user_rank` over ``column`` (for a lazy scan's filter)."""
    _check(world)
    x = pl.col(column).cast(pl.UInt64) & _MASK32
    h = (x * _MULT) & _MASK32
    return ((h // (1 << 16)) % world).cast(pl.Int64)
