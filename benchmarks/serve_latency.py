"""Latency of ``POST /rank`` from a separate client process on loopback (issue #4).

Starts ``liverank serve`` in a subprocess (uvicorn, one worker) over a registry holding the
model (weights as initialised: latency does not depend on training) and a feature store
replayed from a simulated dataset, then from this process sends requests with ``--candidates``
rooms each at every ``--concurrency`` level (one thread and one keep-alive connection per
client). Reports p50 / p99 latency, throughput, and the server's own split of each request
into feature assembly, model and response building (``timings_ms`` of the responses); at one
client also the ``GET /health`` round trip (``health_floor_ms``), the HTTP floor under it.

    python benchmarks/serve_latency.py --size small --models ple --concurrency 1 8 32
    python benchmarks/serve_latency.py --models ple --runtimes auto eager   # trace vs eager

``--client``: ``http.client`` (default, one stdlib keep-alive connection per client thread) or
``httpx`` (the client of the figures before 2026-12-07, ~0.4-0.5 ms slower per request).

``--runtimes``: the server's ``--runtime`` (``auto`` = TorchScript when the model can be traced,
the default of ``liverank serve``); each row records the runtime the responses report.

Writes ``benchmarks/results/serve_latency.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

#: build_samples options of the flagship's samples (every paper module fed)
FLAGSHIP_SAMPLES = {
    "shopping": True,
    "segments": 5,
    "graph_k": 10,
    "room_stats": 63,
    "room_products": 21,
}


def serving_time(data: Path) -> int:
    """The service's ``--as-of``: the time of the impression at 80 % of the log."""
    from liverank.data.io import read_table

    ts = read_table(data, "live_impressions", ["ts"])["ts"].sort()
    return int(ts[int(len(ts) * 0.8)])


#: a request slower than this fails the run (a flagship request took 3.5 s at p50 under load)
CLIENT_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(args: argparse.Namespace, work: Path, model: str) -> tuple[Path, Path]:
    from liverank.data.samples import build_samples
    from liverank.data.sim import SimConfig, simulate
    from liverank.features.spec import FeatureMap
    from liverank.models.ranker import Ranker
    from liverank.models.zoo import get_config
    from liverank.train.registry import ModelRegistry

    data = args.data or work / "data"
    if not (data / "meta.json").exists():
        simulate(SimConfig.preset(args.size, seed=0), data, progress=False)
    long_len = getattr(args, "long_len", 0) if model in ("moment_cross", "liverank") else 0
    every = model == "liverank"  # the flagship: samples with every column, a neighbour store
    samples = work / f"samples-long{long_len}{'-all' if every else ''}"
    if not (samples / "feature_map.json").exists():
        extra = FLAGSHIP_SAMPLES if every else {}
        build_samples(data, samples, progress=False, long_len=long_len, **extra)
    if every and not (work / "graph").exists():  # gifts before the serving time only
        from liverank.graph.store import build_neighbour_store

        build_neighbour_store(
            data, work / "graph", serving_time(data), k=FLAGSHIP_SAMPLES["graph_k"]
        )
    reg = work / "registry"
    model_obj = Ranker(FeatureMap.load(samples), get_config(model))
    if model_obj.switched_off:
        raise RuntimeError(f"{model}: modules switched off {model_obj.switched_off}")
    model_obj.save(work / f"{model}.pt")
    ModelRegistry(reg).publish(model, work / f"{model}.pt")
    return data, reg


def start_server(
    reg: Path, model: str, data: Path, as_of: int, env: dict[str, str], *extra: str
) -> tuple[subprocess.Popen, str]:
    """``liverank serve`` in a subprocess on a free loopback port, once ``/health`` answers."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "liverank.cli", "serve", "--registry", str(reg),
         "--model", model, "--data", str(data), "--as-of", str(as_of),
         "--port", str(port), *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.time() > deadline:
            server.terminate()
            raise RuntimeError(f"server did not start: {server.stderr.read()[-2000:]}")
        time.sleep(0.5)


class _Connection:
    """One keep-alive HTTP/1.1 connection of a client thread.

    ``http.client`` (the default): the standard library's connection, about the per-request
    cost of a compiled caller's client; ``httpx``: the Python client the earlier figures used,
    which adds ~0.4-0.5 ms per request on this machine (measured 2026-12-07 on the same server:
    PLE p50 4.4 ms with ``http.client``, 4.8 ms with ``httpx``)."""

    def __init__(self, base: str, kind: str = "http.client") -> None:
        self.kind = kind
        if kind == "httpx":
            self._httpx = httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S)
        else:
            u = urlsplit(base)
            self._conn = http.client.HTTPConnection(u.hostname, u.port, timeout=CLIENT_TIMEOUT_S)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """``(status, body bytes)``; raises ``OSError`` / ``http.client.HTTPException`` /
        ``httpx.HTTPError`` on a transport failure."""
        if self.kind == "httpx":
            r = self._httpx.request(method, path, json=body)
            return r.status_code, r.content
        payload = None if body is None else json.dumps(body).encode()
        headers = {} if payload is None else {"Content-Type": "application/json"}
        self._conn.request(method, path, payload, headers)
        r = self._conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        (self._httpx if self.kind == "httpx" else self._conn).close()


#: transport failures of either client
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, httpx.HTTPError)


def _client(
    url: str,
    bodies: list[dict],
    out: list[float],
    timings: list[dict],
    errors: list[str],
    kind: str = "http.client",
) -> None:
    """Send ``bodies`` to ``POST /rank`` one after another on one keep-alive connection; a
    failed request (transport error, timeout, non-200) is recorded in ``errors`` and ends this
    client, so the run still reports what it measured."""
    conn = _Connection(url, kind)
    try:
        for body in bodies:
            t = time.perf_counter()
            try:
                status, content = conn.request("POST", "/rank", body)
            except TRANSPORT_ERRORS as exc:
                errors.append(f"{type(exc).__name__} after {time.perf_counter() - t:.0f} s")
                return
            out.append(time.perf_counter() - t)
            if status != 200:
                errors.append(f"{status}: {content[:200]!r}")
                return
            answer = json.loads(content)
            timings.append(answer["timings_ms"] | {"runtime": answer["runtime"]})
    finally:
        conn.close()


def _health_floor(url: str, n: int = 200, kind: str = "http.client") -> dict[str, float]:
    """p50 / p99 of ``GET /health`` from one keep-alive client: the HTTP round trip of this
    client and server on this machine with no ranking work, the floor under every ``/rank``."""
    ms = []
    conn = _Connection(url, kind)
    try:
        for i in range(n + 20):
            t = time.perf_counter()
            status, content = conn.request("GET", "/health")
            if status != 200:
                raise RuntimeError(f"GET /health: {status} {content[:200]!r}")
            if i >= 20:  # the first 20 warm the connection up
                ms.append((time.perf_counter() - t) * 1e3)
    finally:
        conn.close()
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--models", nargs="+", default=["ple"])
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--long-len", type=int, default=1000, help="long histories of moment_cross")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=400, help="per concurrency level")
    ap.add_argument("--omp-wait-policy", default="PASSIVE", help="server's OMP_WAIT_POLICY")
    ap.add_argument(
        "--torch-threads", type=int, default=1, help="server's --torch-threads (its default: 1)"
    )
    ap.add_argument("--runtimes", nargs="+", default=["auto"], help="server's --runtime values")
    ap.add_argument(
        "--client",
        choices=["http.client", "httpx"],
        default="http.client",
        help="the load generator's HTTP client (see _Connection)",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_latency.json"))
    args = ap.parse_args()

    import polars as pl

    from liverank.data.io import read_table

    results = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        for model, runtime in [(m, r) for m in args.models for r in args.runtimes]:
            data, reg = _prepare(args, work, model)
            imp = read_table(data, "live_impressions").sort("ts")
            as_of = serving_time(data)
            rooms = read_table(data, "rooms")["live_id"].to_numpy()
            users = imp.filter(pl.col("ts") < as_of)["user_id"].unique().to_numpy()
            rng = np.random.default_rng(0)
            env = dict(os.environ, OMP_WAIT_POLICY=args.omp_wait_policy)
            graph = ("--graph", str(work / "graph")) if model == "liverank" else ()
            server, url = start_server(
                reg, model, data, as_of, env,
                "--torch-threads", str(args.torch_threads), "--runtime", runtime, *graph,
            )  # fmt: skip
            try:
                for conc in args.concurrency:
                    n = max(args.requests, conc * 10)
                    bodies = [
                        {
                            "user_id": int(rng.choice(users)),
                            "candidates": rng.choice(
                                rooms, args.candidates, replace=False
                            ).tolist(),
                            "ts": as_of,
                        }
                        for _ in range(n)
                    ]
                    _client(url, bodies[:20], [], [], [], args.client)  # warm-up
                    floor = _health_floor(url, kind=args.client) if conc == 1 else None
                    lat: list[float] = []
                    timings: list[dict] = []
                    errors: list[str] = []
                    parts = [bodies[i::conc] for i in range(conc)]
                    threads = [
                        threading.Thread(
                            target=_client, args=(url, p, lat, timings, errors, args.client)
                        )
                        for p in parts
                    ]
                    t0 = time.perf_counter()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    wall = time.perf_counter() - t0
                    if not timings:
                        row = {"model": model, "concurrency": conc, "errors": errors}
                        results.append(row)
                        print(json.dumps(row), flush=True)
                        continue
                    ms = np.array(lat) * 1e3
                    row = {
                        "errors": errors,
                        "model": model,
                        "runtime": timings[-1]["runtime"],
                        "concurrency": conc,
                        "candidates": args.candidates,
                        "requests": len(lat),
                        "p50_ms": round(float(np.percentile(ms, 50)), 2),
                        "p99_ms": round(float(np.percentile(ms, 99)), 2),
                        "throughput_rps": round(len(lat) / wall, 1),
                        "health_floor_ms": floor,
                        "server_ms_mean": {
                            k: round(statistics.fmean(t[k] for t in timings), 3)
                            for k in ("features", "model", "response")
                        },
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.terminate()
                server.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "serve_latency",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "size": args.size,
                "server_omp_wait_policy": args.omp_wait_policy,
                "server_torch_threads": args.torch_threads,
                "client": args.client,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
