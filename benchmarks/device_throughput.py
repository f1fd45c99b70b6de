"""Training throughput of PLE and FARM on CPU (one thread) and on a CUDA device (issue #14).

Simulates the ``small`` world, builds its samples, and trains one epoch capped at a number of
batches with ``train.device`` cpu and cuda (the same code path as ``liverank train`` and the
experiment runner), recording the trainer's own samples/s. Run where a GPU is (the CUDA rows fail
with a message otherwise)::

    PYTHONPATH=src python benchmarks/device_throughput.py --out benchmarks/results/device_throughput.json

The committed ``device_throughput.json`` was measured on one NVIDIA H200 (16 CPU cores) on
2026-12-04, with torch 2.11.0+cu130, by an earlier form of this script that also tried 12
concurrent processes (that part failed: every process simulated the same world directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from liverank.config import load_config
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig
from liverank.data.sim.simulate import generate
from liverank.train.experiment import run_experiment


def one(samples: Path, config: str, device: str, batches: int, work: Path) -> dict[str, Any]:
    """One capped epoch of ``config`` on ``device``; the trainer's samples/s and the test AUC."""
    cfg = load_config(
        config,
        {
            "data.samples": str(samples),
            "out": str(work / f"{Path(config).stem}-{device}"),
            "train.epochs": 1,
            "train.max_batches_per_epoch": batches,
            "train.progress": False,
            "train.device": device,
            "train.threads": 1,
            "registry": None,
        },
    )
    started = time.perf_counter()
    result = run_experiment(cfg)
    return {
        "sps": result.fit.history[0].samples_per_s if result.fit else None,
        "total_s": time.perf_counter() - started,
        "auc": result.test.to_dict()["slices"]["all"]["ctr"]["auc"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/device_throughput"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/device_throughput.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    res: dict[str, Any] = {
        "cuda": torch.cuda.is_available(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }
    started = time.perf_counter()
    world, samples = args.work / "world", args.work / "samples"
    generate(SimConfig.preset("small", seed=0), world, progress=False)
    res["sim_small_s"] = time.perf_counter() - started
    started = time.perf_counter()
    build_samples(world, samples, progress=False)
    res["samples_small_s"] = time.perf_counter() - started
    for device, batches in (("cuda", 150), ("cpu", 40)):
        for config in ("configs/ple.yaml", "configs/farm.yaml"):
            key = f"{Path(config).stem}_{device}"
            try:
                res[key] = one(samples, config, device, batches, args.work)
            except Exception as exc:  # noqa: BLE001 - a missing device is a row, not a crash
                res[key] = repr(exc)[:500]
            print(key, res[key], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
