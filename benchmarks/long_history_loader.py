"""Long user histories for the Cross GSUs: loader and module cost, eager vs history service.

Issue 3 asks that the long histories behind the GSUs allow >= 1,000 items per user and domain
without slowing the loader down by more than 2x versus the 50-item sequences. Two designs:

* **eager** (``SampleSet.load(..., long_fields="eager")``, the test reference): the loader
  gathers every feature of the last ``K`` rows of both domains (``[B, K]`` x 11 arrays);
* **lazy** (default): batches carry only each sample's row range ``long_<d>_start / _end``; the
  Cross module reads the store (a history service; the online feature store in serving): the
  GSU keys over the ``K``-window, every other feature only for the ``gsu_len`` selected rows.

Part 1 times ``SampleSet.iter_batches`` (shuffle on) for the 50-item sequences only, lazy
``K = 1000`` (on the simulation's own store and on a *synthetic* store where every user has
``--synthetic-items`` rows per domain, all before the first sample, so every window is full) and
eager ``K = 1000`` on the synthetic store. Shared CPUs are noisy, so the configs are interleaved
batch by batch and a config's headline is its median batch time (the minimum is recorded too).

Part 2 times one ``moment_cross`` module forward + backward (batch 1024, ``K = 1000``,
``gsu_len = 50``, embedding width 16) on the synthetic store, eager batch vs lazy batch,
interleaved, after checking that both give the same outputs; "eager end to end" adds the
eager loader's own batch time.

Usage::

    liverank simulate --size small --seed 0 --out /tmp/h2_small
    python -c "from liverank.data.samples import build_samples; \\
        build_samples('/tmp/h2_small', '/tmp/h2_samples', long_len=1000)"
    python benchmarks/long_history_loader.py --samples /tmp/h2_samples

Writes JSON (``--out``, default ``benchmarks/results/long_history_loader.json``), prints tables.
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
import torch
from rich.console import Console
from rich.table import Table

from liverank.data.loader import SampleSet
from liverank.features import long_history as lh
from liverank.features.spec import FeatureMap
from liverank.models.layers.embedding import EmbeddingCollection
from liverank.models.modules.moment_cross import MomentCross

log = logging.getLogger("long_history_loader")
BASE = "50-item sequences only"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, default=Path("/tmp/h2_samples"))
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=100, help="loader rounds (a batch per config)")
    p.add_argument("--long-len", type=int, default=1000)
    p.add_argument("--gsu-len", type=int, default=50)
    p.add_argument("--model-rounds", type=int, default=10, help="module steps per path")
    p.add_argument("--synthetic-items", type=int, default=1_100)
    p.add_argument("--threads", type=int, default=2)
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
    names = list(sets)
    for r in range(rounds):
        # rotate the order: no config always follows the eager one (whose freed [B, K] arrays
        # make the next allocations page-fault)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            s = sets[name]
            started = time.perf_counter()
            batch = next(iters[name], None)
            if batch is None:  # epoch over: start another one
                iters[name] = s.iter_batches(batch_size, shuffle=True, seed=r + 1)
                started = time.perf_counter()
                batch = next(iters[name])
            times[name][r] = time.perf_counter() - started
    return times


def synthetic_store(samples: SampleSet, items: int, seed: int = 0) -> lh.LongHistory:
    """Every user of ``samples`` with ``items`` rows per domain, all before the first sample.

    Codes are drawn inside the feature map's tables (the module embeds them).
    """
    assert samples.feature_map is not None
    tables = samples.feature_map.tables
    top = {
        "author": tables["author"],
        "category": tables["category"],
        "tag": tables["video_tag"],
        "play": tables["play_bucket"],
        "lv": 2,
    }
    rng = np.random.default_rng(seed)
    users = np.unique(samples["user_id"])
    first = int(samples["ts"].min())
    user = np.repeat(users, items)  # [U * items]
    ts = first - 1 - np.sort(rng.integers(0, 30 * 86_400_000, (len(users), items)), axis=1)[:, ::-1]
    frames = {}
    for domain, cols in lh.DOMAIN_COLUMNS.items():
        top["action"] = tables["live_action" if domain == "live" else "video_action"]
        data = {"user_id": user, "ts": ts.ravel()}
        data |= {c: rng.integers(0, top[c], len(user)) for c in cols}
        frames[domain] = pl.DataFrame(data)
    return lh.LongHistory.from_frames(frames)


def with_store(samples: SampleSet, store: lh.LongHistory, k: int, fields: str) -> SampleSet:
    arrays = dict(samples.arrays)
    for domain, table in store.tables.items():
        c_start, c_end = lh.index_columns(domain)
        arrays[c_start], arrays[c_end] = table.bounds(samples["user_id"], samples["ts"])
    return SampleSet(arrays, samples.feature_map, store, k, fields)  # type: ignore[arg-type]


def module_times(
    fm: FeatureMap, lazy: SampleSet, store: lh.LongHistory, args: argparse.Namespace
) -> dict[str, float]:
    """Median (and min) ms of one module forward + backward, eager vs lazy batch, interleaved."""
    rows = np.sort(np.random.default_rng(2).permutation(len(lazy))[: args.batch_size])
    lazy_batch = lazy.batch(rows)
    arrays = {c: lazy[c].take(rows) for c in ("ts", *lazy.columns) if c.startswith(("long_", "ts"))}
    eager_batch = lazy_batch | {
        k: torch.from_numpy(v) for k, v in store.batch_fields(arrays, args.long_len).items()
    }
    torch.manual_seed(0)
    emb = EmbeddingCollection(fm, 16, sparse=True)
    module = MomentCross(fm, emb, gsu_len=args.gsu_len)
    module.attach_long_history(store, args.long_len)
    with torch.no_grad():  # same samples, same parameters -> same outputs
        want, got = module(eager_batch, emb), module(lazy_batch, emb)
    torch.testing.assert_close(got.representation, want.representation, rtol=1e-6, atol=1e-6)

    def step(batch: dict[str, torch.Tensor]) -> float:
        started = time.perf_counter()
        out = module(batch, emb)
        loss = out.representation.pow(2).mean() + sum(out.aux_losses.values())
        loss.backward()
        module.zero_grad(set_to_none=True)
        emb.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step(eager_batch), step(lazy_batch)  # warm-up
    times: dict[str, list[float]] = {"eager": [], "lazy": []}
    for _ in range(args.model_rounds):
        times["eager"].append(step(eager_batch))
        times["lazy"].append(step(lazy_batch))
    out = {k: round(1e3 * float(np.median(v)), 1) for k, v in times.items()}
    return out | {f"{k}_min": round(1e3 * float(np.min(v)), 1) for k, v in times.items()}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    k = args.long_len
    base = SampleSet.load(args.samples, long_len=0)
    fm = FeatureMap.load(args.samples / "feature_map.json").model_copy(update={"long_len": k})
    base.feature_map = fm
    sim_store = lh.LongHistory.load(args.samples)
    syn_store = synthetic_store(base, args.synthetic_items)
    sets: dict[str, SampleSet] = {
        BASE: base,
        f"lazy, sim store, K={k}": with_store(base, sim_store, k, "lazy"),
        f"lazy, synthetic store, K={k}": with_store(base, syn_store, k, "lazy"),
        f"eager, synthetic store, K={k}": with_store(base, syn_store, k, "eager"),
    }
    times = time_interleaved(sets, args.batch_size, args.batches)
    median = {name: float(np.median(t)) for name, t in times.items()}
    fastest = {name: float(np.min(t)) for name, t in times.items()}
    rows = [
        {
            "config": name,
            "samples_per_s": round(args.batch_size / median[name]),
            "loader_ms_per_batch": round(1e3 * median[name], 2),
            "slowdown_vs_50_only": round(median[name] / median[BASE], 2),
            "min_ms_per_batch": round(1e3 * fastest[name], 2),
            "slowdown_vs_50_only_min": round(fastest[name] / fastest[BASE], 2),
        }
        for name in sets
    ]
    module_ms = module_times(fm, sets[f"lazy, synthetic store, K={k}"], syn_store, args)
    eager_loader_ms = 1e3 * median[f"eager, synthetic store, K={k}"]
    lazy_loader_ms = 1e3 * median[f"lazy, synthetic store, K={k}"]
    module_row = {
        "batch_size": args.batch_size,
        "long_len": k,
        "gsu_len": args.gsu_len,
        "module_fwd_bwd_ms": module_ms,
        "loader_plus_module_ms": {
            "eager": round(eager_loader_ms + module_ms["eager"], 1),
            "lazy": round(lazy_loader_ms + module_ms["lazy"], 1),
            "eager_min": round(
                1e3 * fastest[f"eager, synthetic store, K={k}"] + module_ms["eager_min"], 1
            ),
            "lazy_min": round(
                1e3 * fastest[f"lazy, synthetic store, K={k}"] + module_ms["lazy_min"], 1
            ),
        },
    }

    console = Console()
    table = Table(title=f"iter_batches, batch {args.batch_size}, shuffle on, {args.batches} rounds")
    for c in ("config", "samples/s", "ms/batch", "slowdown", "min ms", "min slowdown"):
        table.add_column(c)
    for row in rows:
        table.add_row(
            row["config"],
            f"{row['samples_per_s']:,}",
            f"{row['loader_ms_per_batch']:.1f}",
            f"{row['slowdown_vs_50_only']:.2f}x",
            f"{row['min_ms_per_batch']:.1f}",
            f"{row['slowdown_vs_50_only_min']:.2f}x",
        )
    console.print(table)
    console.print(f"moment_cross forward + backward (K={k}, gsu_len={args.gsu_len}): {module_row}")
    result = {
        "benchmark": "long_history_loader",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average": os.getloadavg(),
        },
        "samples": str(args.samples),
        "rows": len(base),
        "batch_size": args.batch_size,
        "rounds": args.batches,
        "timing": "median (and min) seconds per batch, configs interleaved batch by batch",
        "synthetic_items_per_user_and_domain": args.synthetic_items,
        "loader": rows,
        "module": module_row,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
