"""The shopping features (eLiveRec's product sequences, rooms' products) in the Redis store.

The Redis twin of :class:`~liverank.serve.shopping_store.ShoppingState`, with its encoding
(:func:`~liverank.serve.shopping_store.encode_product_events` /
:func:`~liverank.serve.shopping_store.encode_room_products`), so a request reads the same
columns from either backend (``tests/serve/test_redis_shopping.py``). Keys under the store's
prefix (see :mod:`liverank.serve.redis_store`):

* ``:products`` hash ``product_id -> [cat3]`` (written with the static tables);
* ``:product:<user>`` sorted sets, the user's last ``seq_len`` product behaviours, member
  ``[seq, ts, item, cat, action]`` (the packing and capping of the live sequences);
* ``:roomprod:<live_id>`` sorted sets, the room's last ``seq_len`` product introductions,
  member ``[seq, ts, product, cat]``.

Writes go through the store's one-transaction ``_write`` (with the feed's progress, for
exactly-once updates from ``liverank stream --store``); they do not move the store's watermark,
which is the newest live or video event as in the in-memory store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from liverank.features.snapshot import Snapshot
from liverank.serve.shopping_store import encode_product_events, encode_room_products

if TYPE_CHECKING:
    from liverank.serve.redis_store import RedisFeatureStore

PRODUCT = "product"
ROOM_PRODUCTS = "roomprod"
#: history key domain -> member columns after ``[seq, ts]``
HISTORY_COLUMNS = {PRODUCT: ("item", "cat", "action"), ROOM_PRODUCTS: ("product", "cat")}


class RedisShoppingState:
    """Product histories and room products kept in a :class:`RedisFeatureStore`."""

    def __init__(self, store: RedisFeatureStore) -> None:
        self.store = store

    def _category_of(self, product_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, known = self.store._hmget("products", np.asarray(product_ids, np.int64), 1)
        return values[:, 0], known

    def observe_product_events(
        self, events: pl.DataFrame, *, progress: tuple[str, int] | None = None
    ) -> None:
        """Append ``product_events`` rows (an unknown product or event name is an error)."""
        user, ts, cols = encode_product_events(events, self._category_of)
        part = (PRODUCT, user, ts, [cols[c] for c in HISTORY_COLUMNS[PRODUCT]], self.store.seq_len)
        self.store._write([part], None, progress)

    def observe_room_products(
        self, intros: pl.DataFrame, *, progress: tuple[str, int] | None = None
    ) -> None:
        """Append ``room_products`` rows (a room's product introductions)."""
        live, ts, cols = encode_room_products(intros, self._category_of)
        columns = [cols[c] for c in HISTORY_COLUMNS[ROOM_PRODUCTS]]
        self.store._write([(ROOM_PRODUCTS, live, ts, columns, self.store.seq_len)], None, progress)

    def product_history(self, user_id: int, ts: int, n: int) -> Snapshot:
        """The user's last ``n`` product behaviours with ``ts' < ts`` (``Q = 1``)."""
        return self.store._history(PRODUCT, user_id, ts, n)

    def room_products(self, live_ids: np.ndarray, ts: int) -> dict[str, np.ndarray]:
        """``room_product`` / ``room_product_cat`` ``[B]``: each room's last introduction
        strictly before ``ts`` (0 when none); one round trip for the ``B`` rooms."""
        ids = np.asarray(live_ids, dtype=np.int64)  # [B]
        pipe = self.store.client.pipeline(transaction=False)
        for live in ids.tolist():
            pipe.zrevrangebyscore(
                self.store._key(ROOM_PRODUCTS, live), f"({int(ts)}", "-inf", start=0, num=1
            )
        out = np.zeros((len(ids), 2), dtype=np.int64)  # [B, (product, cat)]
        for i, members in enumerate(pipe.execute() if len(ids) else []):
            if members:
                out[i] = np.frombuffer(members[0], dtype=">i8")[2:]
        return {"room_product": out[:, 0].copy(), "room_product_cat": out[:, 1].copy()}
