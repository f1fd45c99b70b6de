"""Loader throughput with long user histories (Cross GSUs) vs the 50-item sequences only.

Times ``SampleSet.iter_batches`` (shuffle on) on a samples directory built with
``build_samples(..., long_len=K)``, for the loader without long history (the baseline: the
50-item sequences only) and with ``long_len`` = 50, 200 and 1000. The ``small`` simulation has
few live items per user (~10) and ~540 short-video items on average, so the windows are mostly
padding; the run therefore also swaps in a *synthetic* store in which every user has
``--synthetic-items`` rows per domain, all before the first sample (every window full): the
gather cost at K = 1000 is what matters.

Shared CPUs are noisy (on the 2-core dev box the same loop ran anywhere between 15k and 1M
samples/s within minutes, CPU time included, as steal time counts as run time), so the configs
are interleaved *batch by batch*: each round draws one shuffled batch of every config, and a
config's headline is its median batch time (the minimum, the least-disturbed batch, is recorded
too). Ratios of medians taken in the same rounds are much steadier than separate runs.
A breakdown of one K = 1000 batch on the synthetic store shows where the time goes. For scale,
the loader's milliseconds per batch are also set against one PLE training step at batch 1024
(``ms_per_step`` of ``benchmarks/results/train_throughput.json``, 50-item sequences, when that
file exists): ``(train + loader_K) / (train + loader_50-only)`` is the slowdown of a training
epoch that waits for the loader, before the model's own cost of the longer sequences.

Usage::

    liverank simulate --size small --seed 0 --out /tmp/h2_small
    python -c "from liverank.data.samples import build_samples; \\
        build_samples('/tmp/h2_small', '/tmp/h2_samples', long_len=1000)"
    python benchmarks/long_history_loader.py --samples /tmp/h2_samples

Writes JSON (``--out``, default ``benchmarks/results/long_history_loader.json``), prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from liverank.data.loader import SampleSet
from liverank.features import long_history as lh

log = logging.getLogger("long_history_loader")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, default=Path("/tmp/h2_samples"))
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=150, help="timed rounds (one batch per config)")
    p.add_argument("--long-lens", type=int, nargs="+", default=[50, 200, 1000])
    p.add_argument("--synthetic-items", type=int, default=1_100)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/long_history_loader.json"))
    return p.parse_args()


def time_interleaved(
    sets: dict[str, SampleSet], batch_size: int, rounds: int
) -> dict[str, np.ndarray]:
    """Per config, ``[rounds]`` seconds per shuffled batch, configs interleaved batch by batch."""
    iters = {name: s.iter_batches(batch_size, shuffle=True, seed=0) for name, s in sets.items()}
    for it in iters.values():
        next(it)  # warm-up (permutation, first allocations)
    times = {name: np.zeros(rounds) for name in sets}
    for r in range(rounds):
        for name, s in sets.items():
            started = time.perf_counter()
            batch = next(iters[name], None)
            if batch is None:  # epoch over: start another one
                iters[name] = s.iter_batches(batch_size, shuffle=True, seed=r + 1)
                started = time.perf_counter()
                batch = next(iters[name])
            times[name][r] = time.perf_counter() - started
    return times


def synthetic_store(samples: SampleSet, items: int, seed: int = 0) -> lh.LongHistory:
    """Every user of ``samples`` with ``items`` rows per domain, all before the first sample."""
    rng = np.random.default_rng(seed)
    users = np.unique(samples["user_id"])
    first = int(samples["ts"].min())
    user = np.repeat(users, items)  # [U * items]
    ts = first - 1 - np.sort(rng.integers(0, 30 * 86_400_000, (len(users), items)), axis=1)[:, ::-1]
    frames = {}
    for domain, cols in lh.DOMAIN_COLUMNS.items():
        data = {"user_id": user, "ts": ts.ravel()}
        data |= {c: rng.integers(0, 1_000 if c == "author" else 8, len(user)) for c in cols}
        frames[domain] = pl.DataFrame(data)
    return lh.LongHistory.from_frames(frames)


def with_store(samples: SampleSet, store: lh.LongHistory, k: int) -> SampleSet:
    arrays = dict(samples.arrays)
    for domain, table in store.tables.items():
        c_start, c_end = lh.index_columns(domain)
        arrays[c_start], arrays[c_end] = table.bounds(samples["user_id"], samples["ts"])
    return SampleSet(arrays, samples.feature_map, store, k)


def breakdown(store: lh.LongHistory, samples: SampleSet, k: int, b: int) -> dict[str, float]:
    """Milliseconds per batch of each step of ``LongHistory.batch_fields`` (both domains)."""
    rows = np.sort(np.random.default_rng(0).permutation(len(samples))[:b])
    arrays = {c: samples[c].take(rows) for c in ("ts", *samples.columns) if c.startswith("long_")}
    arrays["ts"] = samples["ts"].take(rows)
    times = dict.fromkeys(("window index", "feature gathers", "age codes", "dt"), 0.0)
    reps = 10
    for _ in range(reps):
        for domain, table in store.tables.items():
            start, end = arrays[f"long_{domain}_start"], arrays[f"long_{domain}_end"]
            t0 = time.perf_counter()
            idx, padded, lengths = table.window(start, end, k)
            t1 = time.perf_counter()
            for c in lh.BATCH_FEATURES[domain]:
                table.columns[c].take(idx).astype(np.int64)
            t2 = time.perf_counter()
            table.age_codes(start, end, arrays["ts"], lengths, k)
            t3 = time.perf_counter()
            gap = table.ts_seconds.take(idx)
            np.subtract(arrays["ts"][:, None] / 1000.0, gap, out=gap)
            dt = gap.astype(np.float32)
            np.copyto(dt, np.float32(0.0), where=padded)
            t4 = time.perf_counter()
            for key, d in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key] += d * 1e3 / reps
    return {k2: round(v, 2) for k2, v in times.items()}


def ple_step_ms(path: Path, batch_size: int) -> float | None:
    """``ms_per_step`` of the fused PLE in a train_throughput result at ``batch_size``, if any."""
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    if result.get("batch_size") != batch_size:
        return None
    for row in result.get("results", []):
        if row.get("config") == "ple" and row.get("embeddings") == "fused":
            return round(float(row["ms_per_step"]), 1)
    return None


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = SampleSet.load(args.samples, long_len=0)
    sets: dict[str, SampleSet] = {"50-item sequences only": base}
    sim_store = lh.LongHistory.load(args.samples)
    syn_store = synthetic_store(base, args.synthetic_items)
    for k in args.long_lens:
        sets[f"sim store, long_len={k}"] = with_store(base, sim_store, k)
    for k in args.long_lens:
        sets[f"synthetic store, long_len={k}"] = with_store(base, syn_store, k)

    times = time_interleaved(sets, args.batch_size, args.batches)
    median = {name: float(np.median(t)) for name, t in times.items()}
    fastest = {name: float(np.min(t)) for name, t in times.items()}
    mean_len = {}
    for name, s in sets.items():
        if s.long_len:
            rows = np.sort(np.random.default_rng(1).permutation(len(s))[:4096])
            batch = s.batch(rows)
            mean_len[name] = {
                d: round(float(batch[f"long_{d}_len"].float().mean()), 1) for d in ("live", "video")
            }
    ref = "50-item sequences only"
    rows = [
        {
            "config": name,
            "samples_per_s": round(args.batch_size / median[name]),
            "loader_ms_per_batch": round(1e3 * median[name], 2),
            "slowdown_vs_50_only": round(median[name] / median[ref], 2),
            "min_ms_per_batch": round(1e3 * fastest[name], 2),
            "slowdown_vs_50_only_min": round(fastest[name] / fastest[ref], 2),
            "mean_window_len": mean_len.get(name, {}),
        }
        for name in sets
    ]
    train_ms = ple_step_ms(Path("benchmarks/results/train_throughput.json"), args.batch_size)
    base_ms = 1e3 * median[ref]
    for row in rows:
        if train_ms is not None:
            ratio = (train_ms + row["loader_ms_per_batch"]) / (train_ms + base_ms)
            row["step_slowdown_with_ple_train"] = round(ratio, 3)
    parts = breakdown(syn_store, with_store(base, syn_store, 1000), 1000, args.batch_size)

    table = Table(title=f"iter_batches, batch {args.batch_size}, shuffle on, {args.batches} rounds")
    for c in ("config", "samples/s", "ms/batch", "slowdown", "min ms", "min slowdown", "items"):
        table.add_column(c)
    for row in rows:
        lens = row["mean_window_len"]
        table.add_row(
            row["config"],
            f"{row['samples_per_s']:,}",
            f"{row['loader_ms_per_batch']:.1f}",
            f"{row['slowdown_vs_50_only']:.2f}x",
            f"{row['min_ms_per_batch']:.1f}",
            f"{row['slowdown_vs_50_only_min']:.2f}x",
            f"{lens.get('live', '-')}, {lens.get('video', '-')}" if lens else "-",
        )
    console = Console()
    console.print(table)
    console.print(f"one K=1000 batch on the synthetic store, ms per step: {parts}")
    if train_ms is not None:
        console.print(
            f"with a PLE training step of {train_ms:.0f} ms: step slowdown "
            + ", ".join(f"{r['config']}: {r['step_slowdown_with_ple_train']}x" for r in rows)
        )
    result = {
        "benchmark": "long_history_loader",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "samples": str(args.samples),
        "rows": len(base),
        "batch_size": args.batch_size,
        "rounds": args.batches,
        "timing": "median (and min) seconds per batch, configs interleaved batch by batch",
        "synthetic_items_per_user_and_domain": args.synthetic_items,
        "results": rows,
        "k1000_synthetic_breakdown_ms": parts,
        "ple_train_ms_per_step": train_ms,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
