"""The shopping columns of a sample (``build-samples --shopping``): what eLiveRec reads.

eLiveRec (``papers/eliverec.txt``, section III-IV) represents a user of Taobao Live by two
sequences, the products she clicked ``S`` and the channels she watched ``V``; it predicts the
channel click (intra-channel) and, inside the channel, stay time, goods-bag clicks and product
clicks (inter-channel), with the channel's *real-time context* (the products it is selling now)
gating the user's long-term interests. In a samples directory built with ``shopping=True`` each
impression gets, besides the columns of :mod:`liverank.features.spec`:

* the **product sequence** ``product_seq_<x>`` for x in :data:`PRODUCT_SEQ_FEATURES`: the user's
  last ``seq_len`` e-commerce behaviours outside live rooms (``product_events``: click, cart,
  buy) strictly before ``ts``, most recent first, with the product's fine category and the time
  gap; ``product_seq_len``. (``V`` is the existing live sequence.) In-room product clicks are
  *labels* of the live domain, not part of ``S``;
* the room's **real-time product context** :data:`ROOM_PRODUCT_FIELDS`: the product the room
  introduced last strictly before ``ts`` (``room_products``) and its fine category, 0 when it has
  introduced none (non-shopping rooms);
* the **inter-channel labels** :data:`SHOP_TASKS`: ``btr`` = the user opened the goods bag during
  the visit, ``pctr`` = she clicked a product in the room during the visit (first occurrence
  inside the visit, :mod:`liverank.data.visits`), with their masks; ``stay_ms`` is already
  there.

The feature map of such a directory lists the product tables, the ``product`` sequence domain,
the two sparse fields and the two tasks (:func:`shopping_feature_map`). Models choose what they
read: the Kuaishou-style models keep their six tasks and, unless their config names the
``product`` domain, their two sequences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from liverank.data.io import read_table, table_path
from liverank.data.schema import PRODUCT_EVENTS
from liverank.errors import DataValidationError
from liverank.features import encoders as enc
from liverank.features.snapshot import SortedHistory
from liverank.features.spec import FeatureMap

#: inter-channel task -> the in-room event whose first occurrence in the visit is the label
SHOP_BEHAVIOURS: dict[str, str] = {"btr": "bag_open", "pctr": "product_click"}
SHOP_TASKS: tuple[str, ...] = tuple(SHOP_BEHAVIOURS)
#: side information of each behaviour in the product sequence -> embedding table
PRODUCT_SEQ_FEATURES: dict[str, str] = {
    "item": "product",
    "cat": "product_cat",  # products.cat3 (fine category, globally numbered)
    "action": "product_action",  # 1 + index in schema.PRODUCT_EVENTS
    "age": "time_gap",
}
#: the room's real-time product context -> embedding table
ROOM_PRODUCT_FIELDS: dict[str, str] = {"room_product": "product", "room_product_cat": "product_cat"}
_TABLES = ("products", "product_events", "room_products")


def check_shopping_tables(root: Path) -> None:
    """Raise :class:`DataValidationError` naming the first shopping table that is missing."""
    for table in _TABLES:
        if not table_path(root, table).exists():
            raise DataValidationError(
                f"--shopping needs the '{table}' table, which this dataset does not have",
                file=str(table_path(root, table)),
            )


def product_categories(root: Path) -> pl.DataFrame:
    """``product_id -> cat`` (the fine category ``cat3``) of every product."""
    products = read_table(root, "products", ["product_id", "cat3"])
    return products.select("product_id", pl.col("cat3").cast(pl.Int64).alias("cat"))


def product_history(
    root: Path, t_lo: int | None, t_hi: int, categories: pl.DataFrame
) -> SortedHistory:
    """Product behaviours with ``t_lo <= ts < t_hi`` as a :class:`SortedHistory`.

    Raises :class:`DataValidationError` when an event name is not one of
    ``schema.PRODUCT_EVENTS`` or a product is missing from ``products`` (nothing is dropped).
    """
    lf = pl.scan_parquet(table_path(root, "product_events"))
    cond = pl.col("ts") < t_hi
    if t_lo is not None:
        cond = cond & (pl.col("ts") >= t_lo)
    ev = (
        lf.filter(cond)
        .select("ts", "user_id", "product_id", "event")
        .collect()
        .join(categories, on="product_id", how="left", maintain_order="left")
    )
    bad_event = ev.filter(~pl.col("event").is_in(list(PRODUCT_EVENTS)))
    if len(bad_event):
        raise DataValidationError(
            f"unknown product event names (known: {list(PRODUCT_EVENTS)})",
            file=str(table_path(root, "product_events")),
            column="event",
            examples=bad_event["event"].unique().head(5).to_list(),
        )
    unknown = ev.filter(pl.col("cat").is_null())
    if len(unknown):
        raise DataValidationError(
            "product events refer to products missing from the products table",
            file=str(table_path(root, "product_events")),
            column="product_id",
            examples=unknown["product_id"].unique().head(5).to_list(),
        )
    cols = {
        "item": ev["product_id"].to_numpy(),
        "cat": ev["cat"].to_numpy(),
        "action": enc.product_action_code(ev["event"]),
    }
    return SortedHistory.build(ev["user_id"].to_numpy(), ev["ts"].to_numpy(), cols)


def empty_product_history() -> SortedHistory:
    return SortedHistory.empty({"item": np.int64, "cat": np.int64, "action": np.int64})


def room_product_context(
    root: Path, live_id: np.ndarray, ts: np.ndarray, categories: pl.DataFrame
) -> dict[str, np.ndarray]:
    """The product each room introduced last strictly before ``ts``, and its category.

    Args:
        live_id, ts: ``[Q]`` the impressions' rooms and times.

    Returns:
        ``room_product`` and ``room_product_cat``, ``[Q]`` int64 (0 = none yet).
    """
    intro = (
        read_table(root, "room_products", ["live_id", "ts", "product_id"])
        .join(categories, on="product_id", how="left", maintain_order="left")
        .with_columns(pl.col("cat").fill_null(0))
        .sort("ts")
    )
    query = pl.DataFrame({"live_id": live_id, "_q": ts, "_row": np.arange(len(ts))})
    # strictly before (an introduction at the impression's ms is not yet seen); both sides are
    # sorted by time, hence within every room too
    joined = query.sort("_q").join_asof(
        intro.rename({"ts": "_q"}),
        on="_q",
        by="live_id",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    joined = joined.sort("_row")
    return {
        "room_product": joined["product_id"].fill_null(0).to_numpy().astype(np.int64),
        "room_product_cat": joined["cat"].fill_null(0).to_numpy().astype(np.int64),
    }


def shopping_feature_map(fmap: FeatureMap, root: Path) -> FeatureMap:
    """``fmap`` with the product tables, the ``product`` sequence domain, the room product
    fields and the shopping tasks."""
    products = max(
        _max(root, "products", "product_id"),
        _max(root, "product_events", "product_id"),
        _max(root, "room_products", "product_id"),
    )
    tables = dict(fmap.tables)
    tables["product"] = products + 1
    tables["product_cat"] = _max(root, "products", "cat3") + 1
    tables["product_action"] = enc.PRODUCT_ACTION_VOCAB
    seq = {d: dict(f) for d, f in fmap.seq_fields.items()}
    seq["product"] = {f"product_seq_{k}": v for k, v in PRODUCT_SEQ_FEATURES.items()}
    return fmap.model_copy(
        update={
            "tables": tables,
            "seq_fields": seq,
            "sparse_fields": {**fmap.sparse_fields, **ROOM_PRODUCT_FIELDS},
            "tasks": [*fmap.tasks, *SHOP_TASKS],
        }
    )


def _max(root: Path, table: str, column: str) -> int:
    value = pl.scan_parquet(table_path(root, table)).select(pl.col(column).max()).collect().item()
    return int(value) if value is not None else 0
