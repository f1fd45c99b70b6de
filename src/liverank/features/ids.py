"""Deterministic sample ids: a stable 63-bit hash of integer key columns.

The offline builder uses ``stable_id(request_id, position)`` as ``sample_id``; the stream engine
can derive its ids the same way from the same keys (plus, e.g., a window index), so a rebuild or
a restart reproduces the same ids, independent of row order, chunking and process.

The mix is the SplitMix64 finaliser (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014), applied to each column in turn. It is not Python's ``hash`` nor
polars' hash, whose values may change between versions or processes.

Example::

    >>> stable_id(np.array([7, 7]), np.array([0, 1]))  # doctest: +SKIP
    array([..., ...])  # two distinct non-negative int64
"""

from __future__ import annotations

import numpy as np

_SEED = np.uint64(0x4C49_5645_5241_4E4B)  # "LIVERANK"
_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)
_M1 = np.uint64(0xBF58_476D_1CE4_E5B9)
_M2 = np.uint64(0x94D0_49BB_1331_11EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def stable_id(*columns: np.ndarray) -> np.ndarray:
    """Hash ``k`` int columns of length ``N`` into ``[N]`` non-negative int64 ids.

    The same key tuple always gives the same id; distinct tuples collide with probability about
    ``N**2 / 2**64`` (callers that need uniqueness check it).
    """
    if not columns:
        raise ValueError("stable_id needs at least one key column")
    n = len(columns[0])
    h = np.full(n, _SEED, dtype=np.uint64)  # [N]
    with np.errstate(over="ignore"):
        for col in columns:
            if len(col) != n:
                raise ValueError(f"key columns differ in length: {n} vs {len(col)}")
            h = _mix(h ^ (np.asarray(col).astype(np.int64).view(np.uint64) + _GOLDEN))
    return (h >> np.uint64(1)).astype(np.int64)
