"""Calibration of shopping inside live rooms and of the dense product domain (``live_shopping``,
docs/simulator.md section 13; eLiveRec).

* the goods-bag funnel of shopping-room visits (visits rebuilt with ``reconstruct_visits`` from
  the sampled users' impressions of shopping rooms): bag opens per visit, the share of visits
  with a bag open and with a product click (eLiveRec's "click goods bag" / "click products"
  tasks), that every in-room product click is on a product the room introduced before, and
  where in the visit the goods bag is opened (the room's true excitement then minus its visit's
  time-averaged excitement, as for the other behaviours located in time);
* product clicks (``product_events`` clicks + in-room ``product_click``) per user of the highest
  activity group in the training window (the days before the last two), against eLiveRec's
  Table I (47.47 products per sequence, truncated at 50), and against the live sequence of the
  same users (Table I: 47.47 product vs 41.29 channel items: the product domain is the denser);
* cross-domain consistency: the outside product clicks' cat1 profile of a user against the
  verticals of the shopping rooms the user enters, same user minus shuffled users (what
  eLiveRec's consistent intention rests on; set by ``cross_domain_interest``), and the in-room
  product clicks' cat3 profile against the outside one (in-room clicks follow product interest).
"""

from __future__ import annotations

import polars as pl

from liverank.data.schema import NOT_IN_LIVE_SEQUENCE
from liverank.data.sim import measures
from liverank.data.sim.calibration import CHOSEN, MAX_USERS, CalibrationContext, Metric
from liverank.data.sim.checks.behaviours import RoomExcitement
from liverank.data.sim.clock import DAY_MS
from liverank.data.visits import reconstruct_visits

ELIVEREC = "eLiveRec Table I: 47.47 products per sequence (truncated at 50)"
ELIVEREC_RATIO = "eLiveRec Table I: 47.47 product vs 41.29 channel sequence items"
#: product clicks of an active user over a training window of (at least) this many days
ACTIVE_CLICKS = 30.0
_WINDOW_DAYS = 3
_BAG = {"bag": "bag_open", "pclick": "product_click"}


def checks(ctx: CalibrationContext) -> list[Metric]:
    return _funnel(ctx) + _density(ctx) + _consistency(ctx)


def _shopping_rooms(ctx: CalibrationContext) -> pl.DataFrame:
    shop = ctx.authors.filter(pl.col("author_type") == "shopping").select("author_id")
    return ctx.rooms.join(shop, on="author_id")


def _funnel(ctx: CalibrationContext) -> list[Metric]:
    on = ctx.cfg.live_shopping
    rooms = _shopping_rooms(ctx)
    ids = rooms["live_id"].implode()
    imp = ctx.impressions.filter(pl.col("live_id").is_in(ids))
    sampled = ctx.events.filter((pl.col("user_id") <= MAX_USERS) & pl.col("live_id").is_in(ids))
    v = reconstruct_visits(imp, sampled, rooms, ctx.cfg.long_view_ms, behaviours=_BAG)
    visits = v.filter("clicked")
    n = visits.height
    lift = _open_lift(ctx, visits, sampled)
    opens = sampled.filter(pl.col("event") == "bag_open").height
    nan = float("nan")
    off = (None, 0.0)
    out = [
        Metric("bag_opens_per_shop_visit", opens / n if n else nan,
               *((0.1, 2.0) if on else off),
               "goods-bag opens / visits of shopping rooms", CHOSEN),
        Metric("shop_visit_bag_open_share", visits["bag"].mean() if n else nan,
               *((0.05, 0.6) if on else off),
               "shopping-room visits with a goods-bag open (eLiveRec 'click goods bag' task)",
               CHOSEN),
        Metric("shop_visit_product_click_share", visits["pclick"].mean() if n else nan,
               *((0.05, 0.5) if on else off),
               "shopping-room visits with a product click (eLiveRec 'click products' task)",
               CHOSEN),
        lift,
    ]  # fmt: skip
    clicks = ctx.events.filter(pl.col("event") == "product_click").select(
        "live_id", "product_id", "ts"
    )
    if clicks.height:
        intro = ctx.scan("room_products").select("live_id", "product_id", "ts").collect()
        on_sale = clicks.sort("ts").join_asof(
            intro.sort("ts").with_columns(pl.col("ts").alias("intro_ts")),
            on="ts",
            by=["live_id", "product_id"],
            strategy="backward",
            check_sortedness=False,
        )
        share = float(on_sale["intro_ts"].is_not_null().mean())
        out.append(Metric("product_click_on_sale_share", share, 1.0, None,
                          "in-room product clicks on a product the room introduced before",
                          "eLiveRec: products mounted in the channel's goods bag"))  # fmt: skip
    return out


def _open_lift(ctx: CalibrationContext, visits: pl.DataFrame, events: pl.DataFrame) -> Metric:
    """Excitement at the goods-bag opens (carts with ``live_shopping`` off) minus the time
    average of the excitement over their visits."""
    cfg = ctx.cfg
    event = "bag_open" if cfg.live_shopping else "cart_click"
    rows = (
        events.filter(pl.col("event") == event)
        .select("user_id", "live_id", "ts")
        .sort("ts")
        .join_asof(
            visits.filter(pl.col("stay_ms") > 0)
            .select("user_id", "live_id", "enter_ts", "exit_ts")
            .sort("enter_ts"),
            left_on="ts",
            right_on="enter_ts",
            by=["user_id", "live_id"],
            check_sortedness=False,
        )
        .filter(pl.col("ts") <= pl.col("exit_ts"))
    )
    value = float("nan")
    if rows.height:
        ex = RoomExcitement(ctx.truth)
        live_id = rows["live_id"].to_numpy()
        at = ex.at(live_id, rows["ts"].to_numpy())
        mean = ex.mean(live_id, rows["enter_ts"].to_numpy(), rows["exit_ts"].to_numpy())
        value = float((at - mean).mean())
    lo, hi = None, None
    if cfg.live_shopping and cfg.highlights:
        lo, hi = (0.1, None) if cfg.timed_behaviours else (-0.03, 0.03)
    what = "goods-bag opens" if cfg.live_shopping else "cart clicks (World v1, uniform)"
    return Metric("shop_excitement_lift", value, lo, hi,
                  f"{what}: excitement at the event - its visit's mean excitement",
                  CHOSEN if lo is not None or hi is not None else "")  # fmt: skip


def _window(ctx: CalibrationContext) -> tuple[int, int]:
    """End of the training window (the days before the last two; the whole period when it
    has at most two days) and its length in days."""
    days = ctx.cfg.n_days - 2 if ctx.cfg.n_days > 2 else ctx.cfg.n_days
    return ctx.cfg.start_ts + days * DAY_MS, days


def _density(ctx: CalibrationContext) -> list[Metric]:
    on = ctx.cfg.live_shopping
    end, days = _window(ctx)
    early = (pl.col("ts") < end) & (pl.col("user_id") <= MAX_USERS)
    outside = (
        ctx.scan("product_events")
        .filter(early & (pl.col("event") == "click"))
        .group_by("user_id")
        .agg(pl.len().alias("outside"))
        .collect()
    )
    events = ctx.events.filter(early)
    inside = (
        events.filter(pl.col("event") == "product_click")
        .group_by("user_id")
        .agg(pl.len().alias("inside"))
    )
    live = (
        events.filter(~pl.col("event").is_in(NOT_IN_LIVE_SEQUENCE))
        .group_by("user_id")
        .agg(pl.len().alias("live"))
    )
    top = int(ctx.users["activity"].max())
    users = ctx.users.filter(pl.col("activity") == top).select("user_id")
    for part in (outside, inside, live):
        users = users.join(part, on="user_id", how="left")
    users = users.fill_null(0)
    product = float((users["outside"] + users["inside"]).mean())
    lo = ACTIVE_CLICKS * min(days, _WINDOW_DAYS) / _WINDOW_DAYS
    where = f"activity-{top} users, first {days} day(s)"
    live_items = float(users["live"].mean())
    return [
        Metric("product_clicks_per_active_user", product, *((lo, None) if on else (None, lo / 2)),
               f"product clicks (outside + in-room) per user, {where}",
               ELIVEREC if on else CHOSEN),
        Metric("inroom_product_clicks_per_active_user", float(users["inside"].mean()),
               note=f"in-room product clicks per user, {where}"),
        Metric("live_seq_items_per_active_user", live_items,
               note=f"live sequence items (live events but {', '.join(NOT_IN_LIVE_SEQUENCE)}) "
               f"per user, {where}"),
        Metric("product_live_seq_ratio", product / live_items if live_items else float("nan"),
               *((1.0, None) if on else (None, None)),
               f"product clicks / live sequence items, {where}", ELIVEREC_RATIO if on else ""),
    ]  # fmt: skip


def _consistency(ctx: CalibrationContext) -> list[Metric]:
    cfg = ctx.cfg
    sampled = pl.col("user_id") <= MAX_USERS
    products = ctx.scan("products").select("product_id", "cat1", "cat3").collect()
    outside = (
        ctx.scan("product_events")
        .filter(sampled & (pl.col("event") == "click"))
        .select("user_id", "product_id")
        .collect()
        .join(products, on="product_id")
    )
    rooms = _shopping_rooms(ctx).select(
        "live_id", (pl.col("category") - cfg.n_topics).alias("category")
    )
    enters = ctx.events.filter(sampled & (pl.col("event") == "enter")).join(rooms, on="live_id")
    gap = measures.cross_domain(
        enters.select("user_id", "category"),
        outside.select("user_id", pl.col("cat1").alias("category")),
        cfg.n_verticals,
        seed=cfg.seed,
    )["gap"]
    lo, hi = (0.05, None) if cfg.cross_domain_interest else (None, 0.03)
    out = [
        Metric("product_live_gap", gap, lo, hi,
               "cosine(outside product-click cat1, shopping-room enter vertical profiles): "
               "same user - shuffled users", CHOSEN),
    ]  # fmt: skip
    inside = (
        ctx.events.filter(sampled & (pl.col("event") == "product_click"))
        .select("user_id", "product_id")
        .join(products, on="product_id")
    )
    if inside.height:
        n3 = int(products["cat3"].max())
        same = measures.cross_domain(
            inside.select("user_id", pl.col("cat3").alias("category")),
            outside.select("user_id", pl.col("cat3").alias("category")),
            n3,
            seed=cfg.seed,
        )["gap"]
        out.append(Metric("inroom_product_consistency", same, 0.05, None,
                          "cosine(in-room, outside product-click cat3 profiles): same user - "
                          "shuffled users", CHOSEN))  # fmt: skip
    return out
