"""Data-parallel training throughput: ``liverank train --nproc N`` for several N, same data.

Each arm trains the same model for one epoch (or ``--max-batches`` steps) on the same samples
directory with the same global batch and the same machine thread budget (``train.threads``,
split between the ranks of one machine), through the real command line, and reports the
epoch's samples/s (summed over ranks, from ``history.json``) and the wall time of the whole
command (start-up, loading and evaluation included). Arms are interleaved over ``--repeats``
and the best repeat is the headline (shared machines are noisy).

Usage::

    python benchmarks/ddp_throughput.py --samples runs/samples --model ple --nproc 1 2

Without ``--samples`` a ``small`` world is simulated and built once under ``--work``.
Writes ``benchmarks/results/ddp_throughput.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, help="samples directory (default: simulate one)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_ddp"))
    p.add_argument("--model", default="ple")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=1024, help="global batch")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="machine budget")
    p.add_argument("--max-batches", type=int, default=0, help="steps per epoch (0: all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ddp_throughput.json"))
    return p.parse_args()


def samples_dir(args: argparse.Namespace) -> Path:
    if args.samples is not None:
        return args.samples
    out = args.work / "samples"
    if not (out / "feature_map.json").exists():
        from liverank.data.samples import build_samples
        from liverank.data.sim import SimConfig, simulate

        simulate(SimConfig.preset("small", seed=0), args.work / "data", progress=False)
        build_samples(args.work / "data", out, progress=False)
    return out


def run_arm(args: argparse.Namespace, samples: Path, nproc: int, repeat: int) -> dict:
    run = args.work / f"{args.model}-n{nproc}-r{repeat}"
    config = args.work / f"{args.model}-n{nproc}.yaml"
    config.write_text(
        json.dumps(
            {
                "name": args.model,
                "data": {"samples": str(samples)},
                "model": args.model,
                "train": {
                    "epochs": 1,
                    "batch_size": args.batch_size,
                    "threads": args.threads,
                    "max_batches_per_epoch": args.max_batches,
                    "progress": False,
                },
                "out": str(run),
            }
        )
    )
    cmd = [sys.executable, "-m", "liverank.cli", "train", "--config", str(config)]
    cmd += ["--nproc", str(nproc)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"nproc {nproc} failed:\n{proc.stderr[-3000:]}")
    history = json.loads((run / "history.json").read_text())
    epoch = history["fit"][0]
    return {
        "nproc": nproc,
        "repeat": repeat,
        "samples_per_s": epoch["samples_per_s"],
        "epoch_seconds": epoch["seconds"],
        "wall_seconds": round(wall, 2),
    }


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    samples = samples_dir(args)
    records = []
    for r in range(args.repeats):
        for n in args.nproc:
            rec = run_arm(args, samples, n, r)
            records.append(rec)
            print(json.dumps(rec), flush=True)
    best = {n: max(x["samples_per_s"] for x in records if x["nproc"] == n) for n in args.nproc}
    base = best[args.nproc[0]]
    table = Table(title=f"{args.model}: data-parallel training throughput (best of {args.repeats})")
    for col in ("ranks", "samples/s", f"x {args.nproc[0]} rank(s)", "wall s (best)"):
        table.add_column(col, justify="right")
    for n in args.nproc:
        wall = min(x["wall_seconds"] for x in records if x["nproc"] == n)
        table.add_row(str(n), f"{best[n]:,.0f}", f"{best[n] / base:.2f}", f"{wall:.1f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "ddp_throughput",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "samples": str(samples),
                "model": args.model,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "max_batches": args.max_batches,
                "records": records,
                "best_samples_per_s": {str(k): v for k, v in best.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
