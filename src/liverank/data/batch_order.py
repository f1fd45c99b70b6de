"""The order in which training rows are shuffled into batches: by row, or by request.

``batch_order: rows`` (the default) draws a uniform permutation of the rows. ``batch_order:
requests`` permutes *requests* and keeps the impressions of one request together: a batch then
holds whole requests (one straddles the boundary between two batches at most), as a serving
log is read. The impressions of one request share everything that does not depend on the
candidate -- the user, the time, and so the user's behaviour sequences -- so a model can encode
those once per request instead of once per impression (:mod:`liverank.models.layers.dedup`;
FARM's three L x L attentions, the filters and the sequence lookups). On the simulated worlds a
request shows ~5 rooms; the saving in FARM's step time is measured in ``docs/scaling.md``.

What changes for learning: the rows of one batch are no longer independent draws (~200
requests of ~5 rows rather than 1,024 rows of ~1,000 requests). The gradient is the same in
expectation; in-batch losses see fewer distinct users per batch (FARM's contrastive negatives
are other users' sequences). The quality cost is measured next to the speed, not assumed.

A request is a run of equal ``request_id`` values in storage order (the sample builder writes
rows sorted by time, request and position, so a request is one run); a request cut by a shard
or stream-chunk boundary becomes two groups, which only costs some of the saving.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BatchOrder = Literal["rows", "requests"]

#: the column whose runs of equal values form one group, per batch order
GROUP_COLUMN: dict[str, str] = {"requests": "request_id"}


def group_starts(keys: np.ndarray) -> np.ndarray:
    """``[G]`` start index of every run of equal values in ``keys [N]`` (ascending)."""
    keys = np.asarray(keys)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def shuffled_order(
    n: int, rng: np.random.Generator, groups: np.ndarray | None = None
) -> np.ndarray:
    """``[n]`` row order: a uniform permutation, or with ``groups`` (``[n]`` group keys) a
    permutation of the runs of equal keys, each run's rows kept contiguous and in order."""
    if groups is None:
        return rng.permutation(n)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} values for {n} rows")
    starts = group_starts(groups)  # [G]
    lengths = np.diff(np.r_[starts, n])  # [G]
    perm = rng.permutation(len(starts))  # [G]
    lens = lengths[perm]  # [G]
    new_starts = np.r_[0, np.cumsum(lens)[:-1]]  # [G] where each group lands
    # row k of the output belongs to group g: old index = starts[g] + (k - new_starts[g])
    return np.arange(n) + np.repeat(starts[perm] - new_starts, lens)
