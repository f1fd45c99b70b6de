"""Training throughput of the baseline Rankers (forward + backward + optimiser step) on CPU.

Each named config is trained on a fixed stream of synthetic batches (``liverank.models.synthetic``)
with a KuaiLive-like vocabulary size; after warm-up steps, the timed steps give samples/s. Every
config is measured twice in the same run: with fused embedding storage (the default) and with one
table per feature (the peer), so the effect of the fused lookups is visible on the same machine.

Shared CPUs are noisy (other processes steal cores, and OpenMP threads that wait for a descheduled
sibling stall), so repeats are interleaved and the *best* repeat is the headline (as ``timeit``
does); the median and the process CPU time per step are recorded too. CPU time is the steadier
number with ``--threads 1``. On a box shared with other busy processes, run multi-threaded
measurements with ``OMP_WAIT_POLICY=PASSIVE`` (recorded in the JSON): with the default spinning
policy, 2 threads next to one busy process were 5-10x slower than 1 thread.

Usage::

    python benchmarks/train_throughput.py                       # all baselines, batch 1024
    python benchmarks/train_throughput.py --configs din --batch-size 256 --steps 10

Writes JSON (``--out``, default ``benchmarks/results/train_throughput.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config, list_configs
from liverank.train.optim import build_optimizers

log = logging.getLogger("train_throughput")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=list_configs(), help="zoo names")
    p.add_argument(
        "--long-len",
        type=int,
        default=1000,
        help="items per user per domain in the long histories (read only by moment_cross)",
    )
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--authors", type=int, default=5_000)
    p.add_argument("--no-peer", action="store_true", help="skip the unfused-embedding peer")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/train_throughput.json"))
    return p.parse_args()


def time_steps(
    model: Ranker, batches: list[dict[str, torch.Tensor]], steps: int, warmup: int
) -> tuple[float, float]:
    """(wall, process CPU) seconds for ``steps`` training steps after ``warmup`` untimed ones."""
    opt = build_optimizers(model, lr_sparse=0.02, lr_dense=0.002)

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss, _ = model.loss(batch, model(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(batches[i % len(batches)])
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(steps):
        step(batches[(warmup + i) % len(batches)])
    return time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    fm = synthetic_feature_map(
        n_users=args.users, n_authors=args.authors, seq_len=args.seq_len, long_len=args.long_len
    )
    n_batches = min(args.warmup + args.steps, 16)
    batches = synthetic_batches(fm, n_batches, args.batch_size, seed=0)
    layouts = ["fused"] if args.no_peer else ["fused", "per_table"]

    runs: dict[tuple[str, str], list[tuple[float, float]]] = {
        (c, lay): [] for c in args.configs for lay in layouts
    }
    params: dict[str, int] = {}
    for r in range(args.repeats):
        for (name, layout), times in runs.items():
            cfg = get_config(name)
            cfg.fused_embeddings = layout == "fused"
            torch.manual_seed(0)
            model = Ranker(fm, cfg)
            params[name] = sum(p.numel() for p in model.parameters())
            wall, cpu = time_steps(model, batches, args.steps, args.warmup)
            times.append((wall, cpu))
            log.info(
                "repeat %d %-5s %-9s %.1f ms/step (cpu %.1f)",
                r,
                name,
                layout,
                1e3 * wall / args.steps,
                1e3 * cpu / args.steps,
            )

    results = []
    for (name, layout), times in runs.items():
        walls = [w for w, _ in times]
        best = min(walls)
        results.append(
            {
                "config": name,
                "embeddings": layout,
                "samples_per_s": args.steps * args.batch_size / best,
                "ms_per_step": 1e3 * best / args.steps,
                "ms_per_step_median": 1e3 * statistics.median(walls) / args.steps,
                "cpu_ms_per_step": 1e3 * min(c for _, c in times) / args.steps,
                "ms_per_step_all": [1e3 * w / args.steps for w in walls],
                "parameters": params[name],
            }
        )
    by_key = {(r["config"], r["embeddings"]): r for r in results}
    for r in results:
        peer = by_key.get((r["config"], "per_table"))
        r["speedup_vs_per_table"] = peer["ms_per_step"] / r["ms_per_step"] if peer else None

    table = Table(title=f"training throughput, batch {args.batch_size}, {args.threads} threads")
    columns = (
        "config",
        "embeddings",
        "samples/s",
        "ms/step",
        "median",
        "cpu ms/step",
        "vs per-table",
    )
    for col in (*columns, "parameters"):
        table.add_column(col, justify="left" if col in ("config", "embeddings") else "right")
    for r in results:
        speedup = r["speedup_vs_per_table"]
        table.add_row(
            r["config"],
            r["embeddings"],
            f"{r['samples_per_s']:,.0f}",
            f"{r['ms_per_step']:.1f}",
            f"{r['ms_per_step_median']:.1f}",
            f"{r['cpu_ms_per_step']:.1f}",
            f"{speedup:.2f}x" if speedup else "-",
            f"{r['parameters']:,}",
        )
    Console(width=120).print(table)

    payload = {
        "benchmark": "train_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "tables": fm.tables,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
