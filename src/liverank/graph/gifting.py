"""MMBee's User-to-Author (U2A) gifting graph (Lin et al., KDD 2024, section 5.1).

"If a user has previously made a donation, an edge exists between the user and the donated author
in this graph. The weight of the edge is the amount of donated money." Here the graph is a SciPy
CSR matrix ``W [n_users + 1, n_authors + 1]`` indexed by the dense canonical ids (row / column 0
are unused: id 0 means "none"), ``W[u, a]`` = the total ``value`` of the ``gift`` events of user
``u`` in rooms of author ``a`` with ``ts < as_of_ts``.

**No leak.** Only gifts strictly before ``as_of_ts`` are read: a graph used for a sample at time
``t`` is built with ``as_of_ts <= t`` and holds no gift at or after ``t``.

**Gifts without a price.** A gift whose ``value`` is 0, null or NaN (a free gift, or a log that
lost the price) still makes the edge, because the user did gift: it counts with weight
``free_gift_value`` (default 1.0, the cheapest gift of the simulator's price list), so the edge
is present with a positive weight and no explicit zero can vanish from a sparse product. A
negative value (a refund is not a gift) raises :class:`DataValidationError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from liverank.data import io
from liverank.errors import ConfigError, DataValidationError


@dataclass(frozen=True)
class GiftGraph:
    """The U2A graph as of ``as_of_ts`` (exclusive)."""

    weights: sp.csr_matrix  # [n_users + 1, n_authors + 1] total gift value, float64
    n_gifts: int  # gift events read (ts < as_of_ts)
    as_of_ts: int

    @property
    def n_users(self) -> int:
        return self.weights.shape[0] - 1

    @property
    def n_authors(self) -> int:
        return self.weights.shape[1] - 1

    @property
    def n_edges(self) -> int:
        return int(self.weights.nnz)


def u2a_from_arrays(
    user_ids: np.ndarray,
    author_ids: np.ndarray,
    values: np.ndarray,
    n_users: int,
    n_authors: int,
    *,
    free_gift_value: float = 1.0,
) -> sp.csr_matrix:
    """``W [n_users + 1, n_authors + 1]``: the summed ``values`` of the gifts ``[G]``.

    Duplicate (user, author) pairs are summed (COO -> CSR); a 0 or NaN value counts as
    ``free_gift_value``. Rows have sorted column indices.

    >>> W = u2a_from_arrays(np.array([1, 1, 2]), np.array([3, 3, 1]), np.array([5.0, 0.0, 2.0]), 2, 3)
    >>> W.toarray()[1:, 1:].tolist()
    [[0.0, 0.0, 6.0], [2.0, 0.0, 0.0]]
    """
    users = np.asarray(user_ids, dtype=np.int64)  # [G]
    authors = np.asarray(author_ids, dtype=np.int64)  # [G]
    vals = np.asarray(values, dtype=np.float64).copy()  # [G]
    if not (users.shape == authors.shape == vals.shape and users.ndim == 1):
        raise ConfigError("user_ids, author_ids and values must be 1-d arrays of the same length")
    if not (math.isfinite(free_gift_value) and free_gift_value > 0):
        raise ConfigError(f"free_gift_value must be a finite number > 0, got {free_gift_value}")
    for name, ids, high in (("user_id", users, n_users), ("author_id", authors, n_authors)):
        bad = np.flatnonzero((ids < 1) | (ids > high))
        if bad.size:
            raise DataValidationError(
                f"gift {name} outside 1..{high}", column=name, rows=bad[:5], examples=ids[bad[:5]]
            )
    negative = np.flatnonzero(vals < 0)
    if negative.size:
        raise DataValidationError(
            "gift value < 0 (a refund is not a gift; drop or fix these rows)",
            column="value",
            rows=negative[:5],
            examples=vals[negative[:5]],
        )
    vals[np.isnan(vals) | (vals == 0)] = free_gift_value
    coo = sp.coo_matrix((vals, (users, authors)), shape=(n_users + 1, n_authors + 1))
    W = coo.tocsr()  # sums duplicates
    W.sort_indices()
    return W


def _max_id(root: Path, table: str, column: str) -> int:
    path = io.table_path(root, table)
    if not path.exists():
        raise DataValidationError(f"table '{table}' is missing", file=str(path))
    value = pl.scan_parquet(path).select(pl.col(column).max()).collect().item()
    return int(value or 0)


def build_u2a(dataset_dir: str | Path, as_of_ts: int, *, free_gift_value: float = 1.0) -> GiftGraph:
    """The U2A graph of the canonical dataset at ``dataset_dir`` from its gifts with
    ``ts < as_of_ts``.

    The matrix covers every id of ``users.parquet`` / ``authors.parquet`` (and any larger id
    that a gift carries), so a user or author without gifts is an empty row / column.
    """
    root = Path(dataset_dir)
    path = io.table_path(root, "live_events")
    if not path.exists():
        raise DataValidationError("table 'live_events' is missing", file=str(path))
    try:
        gifts = (
            pl.scan_parquet(path)
            .select("ts", "event", "user_id", "author_id", "value")
            .filter((pl.col("event") == "gift") & (pl.col("ts") < as_of_ts))
            .select("user_id", "author_id", pl.col("value").cast(pl.Float64))
            .collect()
        )
    except pl.exceptions.PolarsError as exc:
        raise DataValidationError(f"cannot read the gift events: {exc}", file=str(path)) from exc
    for column in ("user_id", "author_id"):
        nulls = gifts[column].is_null()
        if nulls.any():
            rows = np.flatnonzero(nulls.to_numpy())[:5]
            raise DataValidationError(
                "null id in a gift event (row numbers among the gifts read)",
                file=str(path),
                column=column,
                rows=rows,
            )
    users = gifts["user_id"].to_numpy()  # [G]
    authors = gifts["author_id"].to_numpy()  # [G]
    n_users = max(_max_id(root, "users", "user_id"), int(users.max(initial=0)))
    n_authors = max(_max_id(root, "authors", "author_id"), int(authors.max(initial=0)))
    values = gifts["value"].fill_null(0.0).to_numpy()  # [G]
    try:
        W = u2a_from_arrays(
            users, authors, values, n_users, n_authors, free_gift_value=free_gift_value
        )
    except DataValidationError as exc:
        raise DataValidationError(f"{path}: {exc}") from exc
    return GiftGraph(weights=W, n_gifts=gifts.height, as_of_ts=int(as_of_ts))
