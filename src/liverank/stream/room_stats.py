"""Room statistic sequences on the global 30 s grid, and room product sequences.

These feed the forecasting / product models of later issues (LiveForesighter: RevIN +
iTransformer forecasting of a room's 30 s statistics and of the next product category) and are
maintained by the stream engine (ARCHITECTURE section 4, Moment&Cross: 30 s global grid).

Grid. Window ``k`` covers ``[k * WINDOW_MS, (k + 1) * WINDOW_MS)`` in epoch ms, aligned to the
epoch, identical for every room. A room has a row for every window that intersects its on-air
interval ``[start_ts, end_ts]`` (both ends included, the on-air rule of
:mod:`liverank.data.schema`): windows ``floor(start_ts / W) .. floor(end_ts / W)``, with zeros
where nothing happened.

Statistics (:data:`ROOM_STATS`), per room and window:

* ``exposure`` - impressions of the room (``live_impressions`` rows) in the window;
* ``entering`` - ``enter`` events in the window;
* ``watchers`` - users inside the room at the window end. A user is *inside* after an ``enter``
  and *outside* after an ``exit``; only state changes count (a repeated ``enter`` or an ``exit``
  without an ``enter`` changes nothing). The events of one (user, room) are taken in ``ts``
  order, an ``enter`` before an ``exit`` at the same ``ts``. ``watchers`` of window ``k`` counts
  the users whose last enter/exit with ``ts < (k + 1) * W`` left them inside. There is no
  implicit exit at the room's ``end_ts``: a user with no ``exit`` stays counted until the last
  window of the room;
* ``likes``, ``comments``, ``gifts``, ``cart_clicks``, ``orders`` (``buy``), ``bag_opens``
  (``bag_open``), ``product_clicks`` (``product_click``) - event counts;
* ``gift_value`` / ``gmv`` - sum of ``value`` over gifts / buys.

With ``room_products`` (the products on sale so far), ``gmv`` / ``orders`` and the goods-bag
counts they make eLiveRec's "target channel real-time context" (products on sale, revenue in a
recent window), read point-in-time through :mod:`liverank.features.store`.

Every statistic except ``watchers`` is additive over events, and ``watchers`` is the running sum
of per-window *watcher deltas* (+1 for an outside -> inside change, -1 for the reverse), so
the incremental path (:func:`window_deltas` on successive chunks, carrying a
:class:`WatcherState`) gives exactly the batch result (:func:`room_stats`). Events outside their
room's on-air windows (or of rooms not in ``rooms``) are counted, logged and left out.

Everything is vectorised with polars ``group_by`` on ``ts // WINDOW_MS``; no loop over events.
"""

from __future__ import annotations

import logging

import polars as pl

from liverank.errors import DataValidationError

log = logging.getLogger(__name__)

#: Length of one grid window (Moment&Cross global 30 s grid).
WINDOW_MS = 30_000

#: Statistic columns of :func:`room_stats`, in this order (also the store's column order).
ROOM_STATS: tuple[str, ...] = (
    "exposure",
    "entering",
    "watchers",
    "likes",
    "comments",
    "gifts",
    "gift_value",
    "orders",
    "gmv",
    "cart_clicks",
    "bag_opens",
    "product_clicks",
)

#: LiveForesighter's four statistic families (section 2.2) over :data:`ROOM_STATS`
FAMILIES: dict[str, tuple[str, ...]] = {
    "out_room": ("exposure", "entering", "watchers"),
    "convert": ("gifts", "gift_value", "orders", "gmv"),
    "interaction": ("likes", "comments"),
    "in_room": ("cart_clicks", "bag_opens", "product_clicks"),
}

#: Additive per-window columns produced by :func:`window_deltas` (``watchers`` -> its delta).
DELTA_COLUMNS: tuple[str, ...] = tuple(
    "watcher_delta" if s == "watchers" else s for s in ROOM_STATS
)

#: Room product sequence columns, in the store's order (after ``live_id`` / ``ts``).
PRODUCT_FIELDS: tuple[str, ...] = ("product_id", "cat1", "cat2", "cat3")

#: live event -> (count column, value-sum column or None)
_COUNTED: dict[str, tuple[str, str | None]] = {
    "enter": ("entering", None),
    "like": ("likes", None),
    "comment": ("comments", None),
    "gift": ("gifts", "gift_value"),
    "buy": ("orders", "gmv"),
    "cart_click": ("cart_clicks", None),
    "bag_open": ("bag_opens", None),
    "product_click": ("product_clicks", None),
}

_STATE_SCHEMA = {"user_id": pl.Int64, "live_id": pl.Int64, "inside": pl.Boolean}


def empty_watcher_state() -> pl.DataFrame:
    """A :class:`WatcherState` with nobody inside any room."""
    return pl.DataFrame(schema=_STATE_SCHEMA)


#: Per (user, room): whether the user is inside after their last enter/exit seen so far.
WatcherState = pl.DataFrame


def _require(df: pl.DataFrame, table: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataValidationError(f"table '{table}' lacks column(s) {missing}", column=missing[0])


def on_air_windows(rooms: pl.DataFrame) -> pl.DataFrame:
    """``(live_id, first_window, n_windows)``: the grid windows intersecting each room's
    on-air interval ``[start_ts, end_ts]``."""
    _require(rooms, "rooms", ("live_id", "start_ts", "end_ts"))
    first = pl.col("start_ts") // WINDOW_MS
    last = pl.col("end_ts") // WINDOW_MS
    return rooms.select(
        pl.col("live_id").cast(pl.Int64),
        first.cast(pl.Int64).alias("first_window"),
        (last - first + 1).cast(pl.Int64).alias("n_windows"),
    )


def _watcher_changes(
    events: pl.DataFrame, state: WatcherState
) -> tuple[pl.DataFrame, WatcherState]:
    """Per-window watcher deltas of one chunk of enter/exit events, and the updated state."""
    moves = (
        events.filter(pl.col("event").is_in(["enter", "exit"]))
        .select(
            "user_id",
            "live_id",
            "ts",
            (pl.col("event") == "enter").alias("inside"),
        )
        # enter before exit at the same ts (descending bool puts True first)
        .sort(["user_id", "live_id", "ts", "inside"], descending=[False, False, False, True])
    )
    prev_state = state.rename({"inside": "inside_before_chunk"})
    moves = moves.join(prev_state, on=["user_id", "live_id"], how="left").with_columns(
        pl.col("inside")
        .shift(1)
        .over(["user_id", "live_id"])
        .fill_null(pl.col("inside_before_chunk"))
        .fill_null(False)
        .alias("before")
    )
    delta = pl.col("inside").cast(pl.Int64) - pl.col("before").cast(pl.Int64)
    changes = (
        moves.filter(pl.col("inside") != pl.col("before"))
        .group_by("live_id", (pl.col("ts") // WINDOW_MS).alias("window"))
        .agg(delta.sum().alias("watcher_delta"))
    )
    last = moves.group_by(["user_id", "live_id"]).agg(pl.col("inside").last())
    new_state = (
        pl.concat([state.join(last, on=["user_id", "live_id"], how="anti"), last])
        .select(list(_STATE_SCHEMA))
        .cast(_STATE_SCHEMA)
    )
    return changes, new_state


def window_deltas(
    live_impressions: pl.DataFrame,
    live_events: pl.DataFrame,
    state: WatcherState | None = None,
) -> tuple[pl.DataFrame, WatcherState]:
    """Additive per-window statistics of one chunk of events (only non-empty windows).

    Returns a long table ``(live_id, window, *DELTA_COLUMNS)`` (``window`` = ``ts // WINDOW_MS``)
    and the watcher state after the chunk. Feeding successive time-ordered chunks with the state
    of the previous call and summing the tables gives the result for the concatenation.
    """
    _require(live_impressions, "live_impressions", ("ts", "live_id"))
    _require(live_events, "live_events", ("ts", "user_id", "live_id", "event", "value"))
    state = empty_watcher_state() if state is None else state
    window = (pl.col("ts") // WINDOW_MS).alias("window")
    exposure = live_impressions.group_by("live_id", window).agg(pl.len().alias("exposure"))
    aggs: list[pl.Expr] = []
    for event, (count_col, value_col) in _COUNTED.items():
        is_event = pl.col("event") == event
        aggs.append(is_event.sum().alias(count_col))
        if value_col is not None:
            aggs.append(pl.col("value").filter(is_event).sum().alias(value_col))
    counts = live_events.group_by("live_id", window).agg(aggs)
    watchers, new_state = _watcher_changes(live_events, state)
    keys = ["live_id", "window"]
    parts = [
        p.with_columns(pl.col("live_id").cast(pl.Int64), pl.col("window").cast(pl.Int64))
        for p in (exposure, counts, watchers)
    ]
    out = parts[0].join(parts[1], on=keys, how="full", coalesce=True)
    out = out.join(parts[2], on=keys, how="full", coalesce=True)
    floats = {"gift_value", "gmv"}
    out = out.select(
        *keys,
        *[
            pl.col(c).fill_null(0).cast(pl.Float64 if c in floats else pl.Int64)
            for c in DELTA_COLUMNS
        ],
    )
    return out.sort(keys), new_state


def room_stats(
    rooms: pl.DataFrame, live_impressions: pl.DataFrame, live_events: pl.DataFrame
) -> pl.DataFrame:
    """Dense long table ``(live_id, window_start, *ROOM_STATS)``: one row per room and on-air
    window, zeros where nothing happened, sorted by ``(live_id, window_start)``."""
    deltas, _ = window_deltas(live_impressions, live_events)
    return densify(rooms, deltas)


def densify(rooms: pl.DataFrame, deltas: pl.DataFrame) -> pl.DataFrame:
    """Turn summed :func:`window_deltas` rows into the dense :func:`room_stats` table."""
    grid = (
        on_air_windows(rooms)
        .with_columns(
            pl.int_ranges(
                pl.col("first_window"), pl.col("first_window") + pl.col("n_windows")
            ).alias("window")
        )
        .explode("window")
        .select("live_id", pl.col("window").cast(pl.Int64))
    )
    outside = deltas.join(grid, on=["live_id", "window"], how="anti")
    if outside.height:
        log.warning(
            "%d (room, window) cells with events fall outside their room's on-air windows "
            "(or belong to rooms not in the rooms table) and are left out; examples: %s",
            outside.height,
            outside.select("live_id", "window").head(3).rows(),
        )
    dense = grid.join(deltas, on=["live_id", "window"], how="left").sort(["live_id", "window"])
    dense = dense.with_columns(pl.col(c).fill_null(0) for c in DELTA_COLUMNS)
    return dense.select(
        "live_id",
        (pl.col("window") * WINDOW_MS).alias("window_start"),
        *[
            pl.col("watcher_delta").cum_sum().over("live_id").alias("watchers")
            if s == "watchers"
            else pl.col(s)
            for s in ROOM_STATS
        ],
    )


def room_product_sequence(room_products: pl.DataFrame, products: pl.DataFrame) -> pl.DataFrame:
    """``(live_id, ts, product_id, cat1, cat2, cat3)`` ordered by ``(live_id, ts, product_id)``.

    Categories come from ``products``; a product missing there gets category ``0`` (unknown).
    """
    _require(room_products, "room_products", ("live_id", "ts", "product_id"))
    _require(products, "products", ("product_id", "cat1", "cat2", "cat3"))
    cats = products.select(
        pl.col("product_id").cast(pl.Int64), *[pl.col(c).cast(pl.Int32) for c in PRODUCT_FIELDS[1:]]
    )
    seq = room_products.select(
        pl.col("live_id").cast(pl.Int64),
        pl.col("ts").cast(pl.Int64),
        pl.col("product_id").cast(pl.Int64),
    ).join(cats, on="product_id", how="left")
    return seq.with_columns(pl.col(c).fill_null(0) for c in PRODUCT_FIELDS[1:]).sort(
        ["live_id", "ts", "product_id"]
    )
