"""``liverank stream`` and ``liverank train-stream``: the real-time commands (issue #3).

Kept apart from :mod:`liverank.cli` so that the offline commands stay short; registered there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

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
    p.add_argument("--shard", type=int, default=0, help="input shard this worker consumes")
    p.add_argument("--shards", type=int, default=1, help="shards written by --produce")
    p.add_argument("--produce", action="store_true", help="first write --data into Redis")
    p.add_argument("--sink", choices=["parquet", "redis"], default="parquet")
    p.add_argument("--out-key", default=None, help="Redis output stream (--sink redis)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--lateness-ms", type=int, default=30_000)
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--checkpoint-every-rows", type=int, default=100_000)
    p.add_argument("--max-rows", type=int, default=None, help="stop early (no flush)")
    p.set_defaults(func=cmd_stream)


def cmd_stream(args: argparse.Namespace) -> int:
    from liverank.stream.runner import stream_main

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
    )
    _print_stats(f"liverank stream ({args.mode})", stats.to_dict())
    return 0
