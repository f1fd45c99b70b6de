"""``liverank foresight``: LiveForesighter's room statistic forecaster (docs/foresight.md).
Registered in :mod:`liverank.cli`.

* ``liverank foresight train --data DATASET --out DIR [--config configs/foresight/statistics.yaml]
  [--window T] [--horizon K] [--epochs E] [--seed S]``: train on the dataset's rooms (every
  ``stride``-th on-air window, days split train / validation / test) and print the test
  day's standardised MSE next to the last-value and mean-value forecasts; writes the
  forecaster and ``report.json`` to ``DIR``.
  With ``--config configs/foresight/products.yaml`` it trains the next-product model instead
  and prints its hit rates next to the most-frequent and latest category.
* ``liverank foresight show --model DIR --data DATASET --live-id ID [--ts MS] [--product-model
  DIR]``: a room's last windows of every statistic (point in time: events before ``ts``;
  default the middle of the room's show) and the forecast of the next ``K`` windows; with a
  product model also the room's most likely next categories.
* ``liverank foresight trace --with MODEL --without MODEL --samples S --data DATASET --out DIR
  [--live-id ID ...] [--rooms N] [--bin-minutes M]``: the paper's Figure 5, ours: a few rooms'
  empirical and predicted CTR over the test day(s) with and without the ``foresighter``
  module, their ground-truth excitement and highlight windows; ``trace.png``,
  ``trace.parquet`` and ``summary.json`` in ``DIR`` (:mod:`liverank.foresight.trace`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from liverank.cli_args import non_negative_int, positive_int


def add_foresight(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("foresight", help="LiveForesighter: forecast room statistic sequences")
    actions = p.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train the statistic forecaster and compare it")
    train.add_argument("--data", type=Path, required=True, help="canonical dataset directory")
    train.add_argument("--out", type=Path, required=True, help="forecaster directory to write")
    train.add_argument(
        "--config", type=Path, help="configs/foresight/statistics.yaml (default) or products.yaml"
    )
    train.add_argument("--window", type=positive_int, help="T: input windows of 30 s")
    train.add_argument("--horizon", type=positive_int, help="K: windows to forecast")
    train.add_argument("--epochs", type=positive_int, help="training epochs (early stopping)")
    train.add_argument("--seed", type=non_negative_int, help="model seed")
    train.set_defaults(func=cmd_foresight_train)
    show = actions.add_parser("show", help="a room's recent statistics and their forecast")
    show.add_argument("--model", type=Path, required=True, help="a `foresight train` --out")
    show.add_argument("--data", type=Path, required=True, help="canonical dataset directory")
    show.add_argument("--live-id", type=positive_int, required=True, help="the room")
    show.add_argument(
        "--ts", type=non_negative_int, help="epoch ms (default: the middle of the room's show)"
    )
    show.add_argument(
        "--product-model", type=Path, help="a next-product `foresight train` --out (optional)"
    )
    show.set_defaults(func=cmd_foresight_show)
    trace = actions.add_parser(
        "trace", help="Figure 5: rooms' true and predicted CTR with and without the module"
    )
    trace.add_argument("--with", dest="model_with", type=Path, required=True, help="a ranker")
    trace.add_argument("--without", dest="model_without", type=Path, required=True)
    trace.add_argument("--samples", type=Path, required=True, help="samples both models read")
    trace.add_argument("--data", type=Path, required=True, help="the simulated dataset")
    trace.add_argument("--out", type=Path, required=True, help="directory to write")
    trace.add_argument("--live-id", type=positive_int, nargs="+", help="rooms (default: busiest)")
    trace.add_argument("--rooms", type=positive_int, default=3, help="how many (default 3)")
    trace.add_argument("--bin-minutes", type=positive_int, default=3, help="bin (default 3)")
    trace.add_argument("--test-days", type=positive_int, default=1)
    trace.set_defaults(func=cmd_foresight_trace)


def cmd_foresight_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from liverank.errors import ConfigError
    from liverank.foresight.statistics import (
        FAMILIES,
        ForecastConfig,
        train_and_evaluate,
    )

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is an existing file; give a directory")
    overrides = {
        k: v
        for k, v in (
            ("window", args.window),
            ("horizon", args.horizon),
            ("epochs", args.epochs),
            ("seed", args.seed),
        )
        if v is not None
    }
    if args.config is not None:
        from liverank.foresight.arms import load_arm_config
        from liverank.foresight.products import ProductConfig

        cfg = load_arm_config(args.config, overrides)
        if isinstance(cfg, ProductConfig):
            return _train_products(args, cfg)
    else:
        cfg = ForecastConfig(**overrides)
    if cfg.method != "foresighter":
        raise ConfigError(f"{args.config}: method '{cfg.method}' is a baseline; nothing to train")
    report = train_and_evaluate(args.data, args.out, cfg)
    table = Table(title=f"test day(s) {report['test_days']}: standardised MSE (lower is better)")
    table.add_column("forecast")
    table.add_column("all", justify="right")
    for family in FAMILIES:
        table.add_column(family, justify="right")
    for step in range(cfg.horizon):
        table.add_column(f"t+{step + 1}", justify="right")
    for name, err in report["test"].items():
        cells = [err["mse"], *err["families"].values(), *err["steps"]]
        table.add_row(name, *(f"{x:.4f}" for x in cells))
    console = Console()
    console.print(table)
    n = report["examples"]
    console.print(
        f"examples: {n['train']:,} train, {n['val']:,} validation, {n['test']:,} test; "
        f"{len(report['history'])} epochs; forecaster and report.json in {args.out}"
    )
    return 0


def _train_products(args: argparse.Namespace, cfg: object) -> int:
    from rich.console import Console
    from rich.table import Table

    from liverank.foresight.products import HITS_AT, ProductConfig, train_and_save

    assert isinstance(cfg, ProductConfig)  # --window / --horizon were refused by its loader
    report = train_and_save(args.data, args.out, cfg)
    table = Table(title=f"test day(s) {report['test_days']}: next finest category hit rate")
    table.add_column("forecast")
    for k in HITS_AT:
        table.add_column(f"hit@{k}", justify="right")
    for name, hits in report["test"].items():
        table.add_row(name, *(f"{hits[f'hit@{k}']:.3f}" for k in HITS_AT))
    console = Console()
    console.print(table)
    n = report["examples"]
    console.print(
        f"examples: {n['train']:,} train, {n['val']:,} validation, {n['test']:,} test "
        f"({n['first_products_left_out']:,} first products left out); "
        f"{len(report['history'])} epochs; forecaster and report.json in {args.out}"
    )
    return 0


def cmd_foresight_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from liverank.foresight.statistics import StatisticForecaster, room_forecast

    forecaster = StatisticForecaster.load(args.model)
    view = room_forecast(forecaster, args.data, args.live_id, args.ts)
    shown = 5  # the last few windows of history, then the forecast
    table = Table(
        title=f"room {args.live_id} as of {view['as_of_ts']}: the last {shown} windows of 30 s "
        f"(0 = the last complete one) and the forecast (+1..+{forecaster.cfg.horizon}, "
        "clamped at 0)"
    )
    table.add_column("statistic")
    for j in range(-shown + 1, 1):
        table.add_column(str(j), justify="right")
    for j in range(1, forecaster.cfg.horizon + 1):
        table.add_column(f"+{j}", justify="right", style="bold")
    for name, hist in view["history"].items():
        cells = [f"{x:g}" for x in hist[-shown:]]
        cells += [f"{max(x, 0.0):.1f}" for x in view["forecast"][name]]
        table.add_row(name, *cells)
    Console().print(table)
    if not view["known"]:
        Console().print(f"room {args.live_id} has no statistics in the store (all zeros)")
    if args.product_model is not None:
        from liverank.features.store import RoomStatsStore
        from liverank.foresight.products import ProductForecaster, next_categories

        products = ProductForecaster.load(args.product_model)
        nxt = next_categories(
            products, RoomStatsStore.from_dataset(args.data), args.live_id, view["as_of_ts"]
        )
        if not nxt["recent"]:
            Console().print(f"room {args.live_id} has shown no product yet: no next category")
        else:
            recent = ", ".join(str(r[3]) for r in nxt["recent"][-5:])
            best = ", ".join(f"{n['cat3']} ({n['probability']:.3f})" for n in nxt["next"])
            Console().print(f"last categories (cat3, most recent last): {recent}")
            Console().print(f"next category, most likely first: {best}")
    return 0


def cmd_foresight_trace(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from liverank.errors import ConfigError
    from liverank.foresight.trace import MINUTE_MS, trace_rooms

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is an existing file; give a directory")
    traces = trace_rooms(
        args.model_with,
        args.model_without,
        args.samples,
        args.data,
        rooms=args.live_id,
        n_rooms=args.rooms,
        bin_ms=args.bin_minutes * MINUTE_MS,
        test_days=args.test_days,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    traces.figure().savefig(args.out / "trace.png", dpi=110)
    traces.bins.write_parquet(args.out / "trace.parquet")
    summary = {"with": str(args.model_with), "without": str(args.model_without), **traces.summary}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = Table(
        title=f"within-room temporal CTR AUC and bin correlation ({args.bin_minutes} min)"
    )
    for col in ("room", "impressions", "AUC with", "AUC without", "corr with", "corr without"):
        table.add_column(col, justify="right")
    for r in traces.summary["rooms"]:
        table.add_row(
            str(r["live_id"]),
            f"{r['impressions']:,}",
            *(f"{r[k]:.3f}" for k in ("room_auc_with", "room_auc_without")),
            *(f"{r[k]:.3f}" for k in ("bin_corr_with", "bin_corr_without")),
        )
    a = traces.summary["all_rooms"]
    table.add_row(
        "all", f"{a['impressions']:,}", f"{a['room_auc_with']:.3f}", f"{a['room_auc_without']:.3f}"
    )
    console = Console()
    console.print(table)
    console.print(f"trace.png, trace.parquet and summary.json in {args.out}")
    return 0
