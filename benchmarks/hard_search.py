"""Cross's author hard search (``aidhard``) for one request: the top-k rule over the broadcast
``[B, K]`` condition (``select_recent``) against one sort of the shared window plus a binary
search per candidate (``select_recent_matches``), issue #20's serving path.

200 candidates, a window of 1,000 short videos from 300 authors (Zipf-like: a user watches some
authors often), k = 50, one thread; both give the same selection (tested in
``tests/models/test_moment_cross.py``)::

    PYTHONPATH=src python benchmarks/hard_search.py --out benchmarks/results/hard_search.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from liverank.models.layers.search import select_recent, select_recent_matches


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--authors", type=int, default=300)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    return p.parse_args()


def timed(fn, runs: int) -> float:
    for _ in range(10):
        fn()
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1e3  # ms


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, args.authors + 1)
    keys = torch.from_numpy(rng.choice(args.authors, args.window, p=weights / weights.sum()))
    valid = torch.ones(args.window, dtype=torch.bool)
    valid[int(args.window * 0.9) :] = False  # a window not yet full
    query = torch.from_numpy(rng.choice(args.authors, args.candidates))

    def top_k() -> None:
        same = (keys[None, :] == query[:, None]) & valid  # [B, K], as the broadcast window
        select_recent(same, args.k)

    def binary_search() -> None:
        select_recent_matches(keys, valid, query, args.k)

    a, b = select_recent((keys[None, :] == query[:, None]) & valid, args.k)
    c, d = select_recent_matches(keys, valid, query, args.k)
    assert torch.equal(b, d) and torch.equal(a[b], c[d])
    rows = {
        "top-k over [B, K] (select_recent)": [],
        "sort + binary search (select_recent_matches)": [],
    }
    for _ in range(args.repeats):  # interleaved, so that drift of a shared machine hits both
        rows["top-k over [B, K] (select_recent)"].append(timed(top_k, args.runs))
        rows["sort + binary search (select_recent_matches)"].append(timed(binary_search, args.runs))
    for name, ms in rows.items():
        print(f"{name}: {min(ms):.3f} ms (runs {', '.join(f'{m:.3f}' for m in ms)})")
    if args.out:
        record = {
            "benchmark": "hard_search",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "load_avg_1min": os.getloadavg()[0],  # other processes on the machine
            },
            "threads": 1,
            "torch": torch.__version__,
            "args": {k: v for k, v in vars(args).items() if k != "out"},
            "kept_slots_mean": float(d.sum(1).float().mean()),
            "ms_min": {name: min(ms) for name, ms in rows.items()},
            "ms_all": rows,
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
