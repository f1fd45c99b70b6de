"""Fixed-rate load on ``POST /rank``, optionally hot-swapping the model during the run (issue #4).

Starts ``liverank serve`` in a subprocess (as ``serve_latency.py`` does), then sends requests at
``--rate`` per second for ``--duration`` seconds from this process (open loop: a request is sent
on schedule whatever the previous ones did; ``--clients`` threads share the schedule). With
``--swaps N`` it publishes N new model versions to the registry at even intervals during the run
and checks that the served version changed each time. Any non-200 answer or transport error
counts as a failure; the run fails (exit 1) on any failure.

    python benchmarks/serve_load.py --size small --rate 20 --duration 60
    python benchmarks/serve_load.py --size small --rate 20 --duration 60 --swaps 3
    python benchmarks/serve_load.py --size small --rate 20 --duration 120 --swaps 3 \
        --runtime aoti --precompile    # packages compiled at publish, not by the server

With ``--precompile`` (``--runtime aoti``) each swapped-in version's AOTInductor package is
compiled into the registry's ``.aoti`` cache before the run, as ``liverank train --registry R
--compile-aoti`` does before it publishes; the server then loads it instead of compiling.
Writes ``benchmarks/results/serve_load[_swaps].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from serve_latency import _prepare, start_server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--model", default="ple")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--swaps", type=int, default=0, help="model versions published during the run")
    ap.add_argument("--runtime", default="auto", help="the server's --runtime (auto, aoti, ...)")
    ap.add_argument(
        "--precompile",
        action="store_true",
        help="compile the swapped-in versions' AOTInductor packages before the run (as "
        "`liverank train --compile-aoti` does at publish); needs --runtime aoti",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.precompile and args.runtime != "aoti":
        ap.error("--precompile compiles AOTInductor packages: it needs --runtime aoti")

    import polars as pl
    import torch

    from liverank.data.io import read_table
    from liverank.features.spec import FeatureMap
    from liverank.models.ranker import Ranker
    from liverank.models.zoo import get_config
    from liverank.serve.export_aoti import precompile
    from liverank.train.registry import AOTI_CACHE, ModelRegistry

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        data, reg = _prepare(args, work, args.model)
        # the versions published during the run, made (and with --precompile compiled) first
        fmap = FeatureMap.load(work / "samples-long0")
        swap_paths = []
        for s in range(args.swaps):
            torch.manual_seed(100 + s)
            path = work / f"swap{s}.pt"
            Ranker(fmap, get_config(args.model)).save(path)
            swap_paths.append(path)
            if args.precompile:
                precompile(Ranker.load(path), reg / AOTI_CACHE)
        imp = read_table(data, "live_impressions").sort("ts")
        as_of = int(imp["ts"][int(len(imp) * 0.8)])
        rooms = read_table(data, "rooms")["live_id"].to_numpy()
        users = imp.filter(pl.col("ts") < as_of)["user_id"].unique().to_numpy()
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        server, url = start_server(
            reg, args.model, data, as_of, env, "--watch-interval", "0.5", "--runtime", args.runtime
        )
        try:
            n = int(args.rate * args.duration)
            rng = np.random.default_rng(0)
            bodies = [
                {
                    "user_id": int(rng.choice(users)),
                    "candidates": rng.choice(rooms, args.candidates, replace=False).tolist(),
                    "ts": as_of,
                }
                for _ in range(n)
            ]
            start = time.perf_counter() + 0.5
            lat = np.full(n, np.nan)
            versions: list[str | None] = [None] * n
            errors: list[str] = []
            lock = threading.Lock()

            def worker(k: int) -> None:
                with httpx.Client(timeout=30.0) as c:
                    for i in range(k, n, args.clients):
                        due = start + i / args.rate
                        wait = due - time.perf_counter()
                        if wait > 0:
                            time.sleep(wait)
                        t = time.perf_counter()
                        try:
                            r = c.post(f"{url}/rank", json=bodies[i])
                            ok = r.status_code == 200
                            if ok:
                                versions[i] = r.json()["model_version"]
                            else:
                                with lock:
                                    errors.append(f"{r.status_code}: {r.text[:120]}")
                        except httpx.HTTPError as exc:
                            with lock:
                                errors.append(repr(exc))
                        lat[i] = time.perf_counter() - t  # from send, not from schedule

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
            for t in threads:
                t.start()
            swapped: list[dict] = []
            for s, path in enumerate(swap_paths):
                time.sleep(args.duration / (args.swaps + 1) - (0.0 if s else -0.5))
                v = ModelRegistry(reg).publish(args.model, path)
                swapped.append(
                    {"version": v.version, "at_s": round(time.perf_counter() - start, 2)}
                )
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            health = httpx.get(f"{url}/health", timeout=5).json()
        finally:
            server.terminate()
            server.wait(timeout=30)

    ms = lat[~np.isnan(lat)] * 1e3
    served_versions = sorted({v for v in versions if v})
    record = {
        "benchmark": "serve_load",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "model": args.model,
        "size": args.size,
        "rate_rps": args.rate,
        "duration_s": args.duration,
        "candidates": args.candidates,
        "requests": n,
        "errors": len(errors),
        "error_examples": errors[:5],
        "achieved_rps": round(n / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "swaps": swapped,
        "versions_served": served_versions,
        # when each version answered first (s after the start, by schedule): publish -> served
        "first_served_s": {
            v: round(min(i for i, x in enumerate(versions) if x == v) / args.rate, 2)
            for v in served_versions
        },
        "final_version": health.get("model_version"),
        "runtime": health.get("runtime"),
        "precompiled": args.precompile,
    }
    print(json.dumps(record, indent=2))
    suffix = "_swaps" if args.swaps else ""
    out = args.out or Path(__file__).parent / "results" / f"serve_load{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    ok = not errors and (not args.swaps or len(served_versions) == args.swaps + 1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
