"""Online state of the shopping features (``build-samples --shopping``, what eLiveRec reads).

The serving twin of :mod:`liverank.data.shopping`: per user the last ``seq_len`` product
behaviours (``product_events``), per room the products it introduced (``room_products``), and
the product -> fine-category table, kept incrementally from event chunks exactly as the
builder reads them, so that a request's shopping columns equal the sample rows
(``tests/serve/test_shopping_serving.py``). A :class:`MemoryFeatureStore` built from a dataset
with the shopping tables holds one (``store.shopping``); a backend without one cannot serve a
model whose feature map has the ``product`` domain and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import polars as pl

from liverank.data.schema import PRODUCT_EVENTS
from liverank.errors import DataValidationError
from liverank.features import encoders as enc
from liverank.features.snapshot import Snapshot, SortedHistory

PRODUCT_EVENT_COLUMNS = ("ts", "user_id", "product_id", "event")
ROOM_PRODUCT_COLUMNS = ("live_id", "ts", "product_id")
_PRODUCT_HISTORY = {"item": np.int64, "cat": np.int64, "action": np.int64}
_ROOM_HISTORY = {"product": np.int64, "cat": np.int64}


class ShoppingSource(Protocol):
    """What a feature store offers for the shopping features: writes from event chunks and
    point-in-time reads (:class:`ShoppingState` in memory, ``RedisShoppingState`` in Redis)."""

    def observe_product_events(self, events: pl.DataFrame) -> None: ...

    def observe_room_products(self, intros: pl.DataFrame) -> None: ...

    def product_history(self, user_id: int, ts: int, n: int) -> Snapshot: ...

    def room_products(self, live_ids: np.ndarray, ts: int) -> dict[str, np.ndarray]: ...


#: product ids ``[N]`` -> their fine category ``[N]`` and whether each is known ``[N]``
CategoryOf = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _categories(product_ids: np.ndarray, category_of: CategoryOf, what: str) -> np.ndarray:
    """Fine categories ``[N]`` (0 for product id 0); an unknown product is an error."""
    cat, known = category_of(product_ids)
    unknown = ~known & (product_ids != 0)
    if unknown.any():
        raise DataValidationError(
            f"{what} refer to products missing from the products table",
            column="product_id",
            examples=np.unique(product_ids[unknown])[:5].tolist(),
        )
    return np.where(known, cat, 0).astype(np.int64)


def encode_product_events(
    events: pl.DataFrame, category_of: CategoryOf
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``product_events`` rows -> ``user [N]``, ``ts [N]`` and the history columns (``item``,
    ``cat``, ``action``), encoded as the sample builder does; bad rows are errors."""
    _require(events, PRODUCT_EVENT_COLUMNS, "product_events")
    bad = events.filter(~pl.col("event").is_in(list(PRODUCT_EVENTS)))
    if len(bad):
        raise DataValidationError(
            f"unknown product event names (known: {list(PRODUCT_EVENTS)})",
            column="event",
            examples=bad["event"].unique().head(5).to_list(),
        )
    items = events["product_id"].cast(pl.Int64).to_numpy()
    cols = {
        "item": items,
        "cat": _categories(items, category_of, "product events"),
        "action": enc.product_action_code(events["event"]),
    }
    return events["user_id"].to_numpy(), events["ts"].to_numpy(), cols


def encode_room_products(
    intros: pl.DataFrame, category_of: CategoryOf
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``room_products`` rows -> ``live_id [N]``, ``ts [N]`` and ``product``, ``cat``."""
    _require(intros, ROOM_PRODUCT_COLUMNS, "room_products")
    products = intros["product_id"].cast(pl.Int64).to_numpy()
    cols = {"product": products, "cat": _categories(products, category_of, "room products")}
    return intros["live_id"].to_numpy(), intros["ts"].to_numpy(), cols


class ShoppingState:
    """Product histories and room product introductions, as of the events observed so far.

    Args:
        products: the ``products`` table (``product_id``, ``cat3``).
        seq_len: product behaviours kept per user (and introductions per room).
    """

    def __init__(self, products: pl.DataFrame, seq_len: int) -> None:
        for c in ("product_id", "cat3"):
            if c not in products.columns:
                raise DataValidationError(f"'products' table has no column '{c}'", column=c)
        ids = products["product_id"].cast(pl.Int64).to_numpy()
        order = np.argsort(ids, kind="stable")
        self._ids, self._cats = ids[order], products["cat3"].cast(pl.Int64).to_numpy()[order]
        self._seq_len = seq_len
        self._products = SortedHistory.empty(_PRODUCT_HISTORY)
        self._rooms = SortedHistory.empty(_ROOM_HISTORY)  # "user" = live_id

    def _category_of(self, product_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self._ids):
            return np.zeros(len(product_ids), dtype=np.int64), np.zeros(len(product_ids), bool)
        at = np.minimum(np.searchsorted(self._ids, product_ids), len(self._ids) - 1)
        return self._cats[at], self._ids[at] == product_ids

    def observe_product_events(self, events: pl.DataFrame) -> None:
        """Append ``product_events`` rows (an unknown product or event name is an error)."""
        user, ts, cols = encode_product_events(events, self._category_of)
        new = SortedHistory.build(user, ts, cols)
        self._products = self._products.concat(new).keep_last(self._seq_len)

    def observe_room_products(self, intros: pl.DataFrame) -> None:
        """Append ``room_products`` rows (a room's product introductions)."""
        live, ts, cols = encode_room_products(intros, self._category_of)
        new = SortedHistory.build(live, ts, cols)
        self._rooms = self._rooms.concat(new).keep_last(self._seq_len)

    def product_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        """The user's last ``n`` product behaviours with ``ts' < ts`` (``Q = 1``)."""
        return self._products.last_n_before(np.array([user_id]), np.array([ts]), n)

    def room_products(self, live_ids: np.ndarray, ts: int) -> dict[str, np.ndarray]:
        """``room_product`` / ``room_product_cat`` ``[B]``: each room's last introduction
        strictly before ``ts`` (0 when none)."""
        ids = np.asarray(live_ids, dtype=np.int64)  # [B]
        snap = self._rooms.last_n_before(ids, np.full(len(ids), ts, dtype=np.int64), 1)
        return {
            "room_product": snap.columns["product"][:, 0].astype(np.int64),
            "room_product_cat": snap.columns["cat"][:, 0].astype(np.int64),
        }

    def rows(self) -> dict[str, int]:
        return {"product": len(self._products), "room_products": len(self._rooms)}


def _require(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataValidationError(f"{what} rows lack columns {missing}", column=missing[0])
