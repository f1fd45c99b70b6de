"""``liverank stream`` and ``liverank train-stream``: the real-time commands (issue #3).

Kept apart from :mod:`liverank.cli` so that the offline commands stay short; registered there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from liverank.cli_args import add_unknown_events, non_negative_int, positive_int
from liverank.stream.reporting import MODES


def _print_stats(title: str, stats: dict[str, object]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key, f"{value:,.1f}" if isinstance(value, float) else str(value))
    Console().print(table)


def add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="run the stream engine live: consume, emit samples")
    p.add_argument("--data", type=Path, required=True, help="dataset dir (rooms, long view)")
    p.add_argument("--mode", choices=list(MODES), default="moment")
    p.add_argument("--out", type=Path, required=True, help="output dir (samples, dead letters)")
    p.add_argument("--source", choices=["parquet", "redis"], default="parquet")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--stream-key", default="liverank:stream", help="input streams KEY:<shard>")
    p.add_argument("--group", default="liverank", help="Redis consumer group")
    p.add_argument("--consumer", default="worker-0", help="Redis consumer name")
    p.add_argument(
        "--shard", type=non_negative_int, default=0, help="input shard this worker consumes"
    )
    p.add_argument("--shards", type=positive_int, default=1, help="shards written by --produce")
    p.add_argument("--produce", action="store_true", help="first write --data into Redis")
    p.add_argument("--sink", choices=["parquet", "redis"], default="parquet")
    p.add_argument("--out-key", default=None, help="Redis output stream (--sink redis)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--lateness-ms", type=non_negative_int, default=30_000)
    p.add_argument("--chunk-rows", type=positive_int, default=10_000)
    p.add_argument("--checkpoint-every-rows", type=positive_int, default=100_000)
    p.add_argument(
        "--store",
        default=None,
        help="also keep this Redis feature store up to date: redis://host:port/DB/PREFIX",
    )
    p.add_argument(
        "--store-seq-len", type=positive_int, default=55, help="behaviours kept per user and domain"
    )
    p.add_argument(
        "--store-long-len",
        type=non_negative_int,
        default=0,
        help="also keep this many long-history rows per user and domain in the store (the "
        "Cross / FARM histories a served moment_cross reads in real time; 0: none)",
    )
    p.add_argument("--max-rows", type=positive_int, default=None, help="stop early (no flush)")
    add_unknown_events(p)
    p.set_defaults(func=cmd_stream)


def cmd_stream(args: argparse.Namespace) -> int:
    from liverank.stream.runner import DEAD_LETTERS_FILE, stream_main

    stats = stream_main(
        args.data,
        args.out,
        mode=args.mode,
        source=args.source,
        redis_url=args.redis_url,
        stream_key=args.stream_key,
        group=args.group,
        consumer=args.consumer,
        shard=args.shard,
        shards=args.shards,
        produce=args.produce,
        sink=args.sink,
        out_key=args.out_key,
        checkpoint=args.checkpoint,
        resume=args.resume,
        lateness_ms=args.lateness_ms,
        chunk_rows=args.chunk_rows,
        checkpoint_every_rows=args.checkpoint_every_rows,
        max_rows=args.max_rows,
        store=args.store,
        store_seq_len=args.store_seq_len,
        store_long_len=args.store_long_len,
        unknown_events=args.unknown_events,
    )
    _print_stats(f"liverank stream ({args.mode})", stats.to_dict())
    reasons = {
        "late": stats.late,
        "unknown event name": stats.unknown_event,
        "unknown user": stats.unknown_user,
        "unknown room": stats.unknown_room,
        "null key column": stats.null_field,
    }
    counted = ", ".join(f"{why} {n:,}" for why, n in reasons.items() if n)
    set_aside = f"{sum(reasons.values()):,} row(s) set aside ({counted})" if counted else "none"
    Console().print(
        f"rows set aside: {set_aside}; dead letters in {args.out / DEAD_LETTERS_FILE}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def add_train_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-stream",
        help="prequential (test-then-train) training on a stream-mode samples directory",
    )
    p.add_argument("--samples", type=Path, required=True, help="stream-mode samples dir")
    p.add_argument("--model", default="ple", help="zoo name (liverank.models.zoo)")
    p.add_argument("--mode", required=True, choices=list(MODES), help="loss of this mode")
    p.add_argument(
        "--eval-samples",
        type=Path,
        default=None,
        help="evaluation stream: an exit or offline samples dir (default: folded from --samples)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--checkpoint-every-min", type=positive_int, default=10, help="event-time minutes"
    )
    p.add_argument("--registry", type=Path, default=None, help="publish checkpoints here")
    p.add_argument("--slice-sec", type=positive_int, default=60, help="event-time slice length")
    p.add_argument("--batch-size", type=positive_int, default=1024)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--warmup-hours", type=non_negative_int, default=24, help="hours left out of the metrics"
    )
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        help="data-parallel ranks on this machine, users partitioned across them "
        "(--batch-size is the global batch); see docs/scaling.md",
    )
    p.set_defaults(func=cmd_train_stream)


def cmd_train_stream(args: argparse.Namespace) -> int:
    import os

    from liverank.train import distributed as ddp
    from liverank.train.stream_run import run_stream_training

    if args.nproc > 1 and not ddp.launched():
        from liverank.train.launch import run_ranks

        Console(stderr=True).print(f"torchrun: {args.nproc} ranks on this machine")
        return run_ranks(args.argv, args.nproc)
    try:
        run = run_stream_training(
            args.samples,
            args.model,
            args.mode,
            args.out,
            eval_dir=args.eval_samples,
            slice_ms=args.slice_sec * 1000,
            batch_size=args.batch_size,
            seed=args.seed,
            warmup_ms=args.warmup_hours * 3_600_000,
            checkpoint_every_ms=args.checkpoint_every_min * 60_000,
            registry=args.registry,
        )
    finally:
        ddp.shutdown()
    if int(os.environ.get("RANK", "0")) > 0:
        return 0  # rank 0 reports
    table = Table(title=f"train-stream {args.model} ({args.mode}), after {args.warmup_hours} h")
    for col in ("task", "auc (hour-avg)", "gauc (hour-avg)", "auc (pooled)", "gauc (pooled)", "n"):
        table.add_column(col, justify="right")
    for task, m in run.summary["tasks"].items():
        cells = [m.get(k) for k in ("auc", "gauc", "auc_pooled", "gauc_pooled")]
        table.add_row(
            task,
            *("-" if v is None else f"{v:.4f}" for v in cells),
            f"{int(m.get('n', 0)):,}",
        )
    Console().print(table)
    Console().print(f"run directory: {args.out}")
    return 0
