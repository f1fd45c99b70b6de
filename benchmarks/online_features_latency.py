"""Online feature store: fill time and per-request feature latency (issue 4, serving).

Fills a :class:`MemoryFeatureStore` from a dataset (``from_dataset``, events replayed up to the
end) and times ``assemble_request`` for ``--candidates`` rooms of a random user at the dataset's
end, one request at a time (what a ranking call pays before the model). Compares with the cost
of materialising the same batch by slicing a prebuilt array (the floor: tensor creation only).

    python benchmarks/online_features_latency.py --data /tmp/h7_small --requests 2000

Writes ``benchmarks/results/online_features_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from liverank.data.io import read_meta, table_path  # noqa: E402
from liverank.features.vocab import feature_map_for_dataset  # noqa: E402
from liverank.serve.online_features import MemoryFeatureStore, assemble_request  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="canonical dataset directory")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "online_features_latency.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    meta = read_meta(args.data)
    started = time.perf_counter()
    store = MemoryFeatureStore.from_dataset(args.data, args.seq_len)
    fill_s = time.perf_counter() - started
    fmap = feature_map_for_dataset(args.data, args.seq_len)
    rng = np.random.default_rng(args.seed)
    users = pl.read_parquet(table_path(args.data, "users"))["user_id"].to_numpy()
    rooms = pl.read_parquet(table_path(args.data, "rooms"))["live_id"].to_numpy()
    ts = meta.end_ts

    latencies, floor = [], []
    for i in range(args.requests + 50):  # 50 warm-up requests
        user = int(rng.choice(users))
        cand = rng.choice(rooms, size=args.candidates, replace=len(rooms) < args.candidates)
        t0 = time.perf_counter()
        batch, _ = assemble_request(store, fmap, user, cand, ts)
        t1 = time.perf_counter()
        arrays = {k: v.numpy() for k, v in batch.items()}
        t2 = time.perf_counter()
        _ = {k: torch.from_numpy(v[: args.candidates]) for k, v in arrays.items()}
        t3 = time.perf_counter()
        if i >= 50:
            latencies.append(t1 - t0)
            floor.append(t3 - t2)

    result = {
        "dataset": meta.name,
        "data": str(args.data),
        "seq_len": args.seq_len,
        "candidates": args.candidates,
        "requests": args.requests,
        "from_dataset_s": round(fill_s, 3),
        "history_rows": store.history_rows(),
        "assemble_request": _percentiles(latencies),
        "tensor_floor": _percentiles(floor),
        "threads": torch.get_num_threads(),
    }
    table = Table(title=f"online features on '{meta.name}' ({args.candidates} candidates)")
    for c in ("measure", "value"):
        table.add_column(c)
    table.add_row("from_dataset (s)", f"{fill_s:.2f}")
    table.add_row("history rows live / video", "{live} / {video}".format(**store.history_rows()))
    for name in ("assemble_request", "tensor_floor"):
        r = result[name]
        table.add_row(f"{name} p50 / p99 (ms)", f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
