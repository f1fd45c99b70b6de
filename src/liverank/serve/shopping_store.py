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
        table = products.select(
            pl.col("product_id").cast(pl.Int64), pl.col("cat3").cast(pl.Int64).alias("cat")
        )
        self._categories = table
        self._seq_len = seq_len
        self._products = SortedHistory.empty(_PRODUCT_HISTORY)
        self._rooms = SortedHistory.empty(_ROOM_HISTORY)  # "user" = live_id

    def _with_category(self, events: pl.DataFrame, what: str) -> pl.DataFrame:
        out = events.join(self._categories, on="product_id", how="left", maintain_order="left")
        unknown = out.filter(pl.col("cat").is_null() & (pl.col("product_id") != 0))
        if len(unknown):
            raise DataValidationError(
                f"{what} refer to products missing from the products table",
                column="product_id",
                examples=unknown["product_id"].unique().head(5).to_list(),
            )
        return out.with_columns(pl.col("cat").fill_null(0))

    def observe_product_events(self, events: pl.DataFrame) -> None:
        """Append ``product_events`` rows (an unknown product or event name is an error)."""
        _require(events, PRODUCT_EVENT_COLUMNS, "product_events")
        bad = events.filter(~pl.col("event").is_in(list(PRODUCT_EVENTS)))
        if len(bad):
            raise DataValidationError(
                f"unknown product event names (known: {list(PRODUCT_EVENTS)})",
                column="event",
                examples=bad["event"].unique().head(5).to_list(),
            )
        ev = self._with_category(events.select(PRODUCT_EVENT_COLUMNS), "product events")
        cols = {
            "item": ev["product_id"].cast(pl.Int64).to_numpy(),
            "cat": ev["cat"].to_numpy(),
            "action": enc.product_action_code(ev["event"]),
        }
        new = SortedHistory.build(ev["user_id"].to_numpy(), ev["ts"].to_numpy(), cols)
        self._products = self._products.concat(new).keep_last(self._seq_len)

    def observe_room_products(self, intros: pl.DataFrame) -> None:
        """Append ``room_products`` rows (a room's product introductions)."""
        _require(intros, ROOM_PRODUCT_COLUMNS, "room_products")
        ev = self._with_category(intros.select(ROOM_PRODUCT_COLUMNS), "room products")
        cols = {"product": ev["product_id"].cast(pl.Int64).to_numpy(), "cat": ev["cat"].to_numpy()}
        new = SortedHistory.build(ev["live_id"].to_numpy(), ev["ts"].to_numpy(), cols)
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
