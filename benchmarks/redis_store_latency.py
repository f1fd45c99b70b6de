"""Redis feature store: fill time and per-request feature latency vs the in-memory store.

Starts a ``redis-server`` on a free loopback port (or uses ``--redis``), writes the dataset's
static tables and replays its events into a :class:`RedisFeatureStore` (as ``liverank stream
--store`` would, in ``--chunk-rows`` chunks), then times ``assemble_request`` for
``--candidates`` rooms of a random user at the dataset's end, one request at a time, on both the
Redis and the in-memory store (same requests). With ``--long-len K`` the store also keeps the
users' long histories (the Cross / FARM histories that follow the stream), and the per-request
read of the user's ``K`` rows per domain plus the ``[C, K]`` window fields
(``serve/long_features.realtime_fields``) is timed too.

    python benchmarks/redis_store_latency.py --data /tmp/h7_small --requests 2000
    python benchmarks/redis_store_latency.py --data DATA --long-len 1000 \
        --out benchmarks/results/redis_long_history_latency.json

Writes ``benchmarks/results/redis_store_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import redis  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from liverank.data.io import read_meta, table_path  # noqa: E402
from liverank.features.vocab import feature_map_for_dataset  # noqa: E402
from liverank.serve.feature_store import MemoryFeatureStore  # noqa: E402
from liverank.serve.long_features import realtime_fields  # noqa: E402
from liverank.serve.online_features import assemble_request  # noqa: E402
from liverank.serve.redis_store import RedisFeatureStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _start_server(workdir: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="canonical dataset directory")
    parser.add_argument("--redis", default=None, help="redis://host:port/db (default: start one)")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long-len", type=int, default=0, help="long-history rows kept per user")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "redis_store_latency.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    proc, url = None, args.redis
    tmp = tempfile.TemporaryDirectory()
    if url is None:
        proc, url = _start_server(tmp.name)
    try:
        client = redis.Redis.from_url(url)
        client.delete(*client.keys("bench:redis_store:*") or ["_"])
        meta = read_meta(args.data)
        store = RedisFeatureStore(
            client, "bench:redis_store", seq_len=args.seq_len, long_len=args.long_len
        )
        t0 = time.perf_counter()
        store.load_static(args.data)
        t1 = time.perf_counter()
        store.replay_dataset(args.data, chunk_rows=args.chunk_rows)
        t2 = time.perf_counter()
        mem = MemoryFeatureStore.from_dataset(args.data, args.seq_len)
        fmap = feature_map_for_dataset(args.data, args.seq_len)
        rng = np.random.default_rng(args.seed)
        users = pl.read_parquet(table_path(args.data, "users"))["user_id"].to_numpy()
        rooms = pl.read_parquet(table_path(args.data, "rooms"))["live_id"].to_numpy()
        ts = meta.end_ts

        lat: dict[str, list[float]] = {"redis": [], "memory": [], "long": []}
        long_rows: list[int] = []
        for i in range(args.requests + 50):  # 50 warm-up requests
            user = int(rng.choice(users))
            cand = rng.choice(rooms, size=args.candidates, replace=len(rooms) < args.candidates)
            for name, s in (("redis", store), ("memory", mem)):
                t = time.perf_counter()
                assemble_request(s, fmap, user, cand, ts)
                if i >= 50:
                    lat[name].append(time.perf_counter() - t)
            if args.long_len:
                t = time.perf_counter()
                frames = store.long_history(user, ts)
                fields = realtime_fields(frames, user, ts, args.candidates, args.long_len)
                if i >= 50:
                    lat["long"].append(time.perf_counter() - t)
                    long_rows.append(int(fields["long_live_len"][0] + fields["long_video_len"][0]))
        t = time.perf_counter()
        on_air = [store.rooms_on_air(ts - k * 60_000) for k in range(200)]
        on_air_ms = (time.perf_counter() - t) / 200 * 1e3
        result = {
            "dataset": meta.name,
            "data": str(args.data),
            "seq_len": args.seq_len,
            "candidates": args.candidates,
            "requests": args.requests,
            "load_static_s": round(t1 - t0, 3),
            "replay_s": round(t2 - t1, 3),
            "chunk_rows": args.chunk_rows,
            "redis_used_memory_mb": round(client.info("memory")["used_memory"] / 2**20, 1),
            "assemble_request_redis": _percentiles(lat["redis"]),
            "assemble_request_memory": _percentiles(lat["memory"]),
            "rooms_on_air_redis_ms": round(on_air_ms, 3),
            "rooms_on_air_mean_rooms": float(np.mean([len(r) for r in on_air])),
            "long_len": args.long_len,
        }
        if args.long_len:
            result["long_history_redis"] = _percentiles(lat["long"])
            result["long_rows_per_request_mean"] = float(np.mean(long_rows))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        tmp.cleanup()
    table = Table(title=f"Redis feature store on '{meta.name}' ({args.candidates} candidates)")
    for c in ("measure", "value"):
        table.add_column(c)
    table.add_row("load_static / replay (s)", f"{result['load_static_s']} / {result['replay_s']}")
    table.add_row("Redis used memory (MB)", str(result["redis_used_memory_mb"]))
    for name in ("assemble_request_redis", "assemble_request_memory", "long_history_redis"):
        if name not in result:
            continue
        r = result[name]
        table.add_row(f"{name} p50 / p99 (ms)", f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f}")
    table.add_row("rooms_on_air (Redis, ms)", str(result["rooms_on_air_redis_ms"]))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
