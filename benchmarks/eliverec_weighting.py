"""What eLiveRec's adaptive task weighting costs in training throughput (issue #15).

Trains the zoo's eLiveRec configurations on synthetic ``--shopping`` batches (one CPU thread,
batch 1024, sequences of 50) and reports samples/s of: the primary task alone
(``eliverec_single``), fixed weights (``eliverec_vanilla``), and the adaptive weighting
recomputing the gradient cosines every step (``eliverec``, ``every: 1``) and every 4th step.
The baseline of the comparison is the vanilla MTL (same model, same tasks, no cosines)::

    PYTHONPATH=src python benchmarks/eliverec_weighting.py --out benchmarks/results/eliverec_weighting.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.optim import build_optimizers


def variants() -> dict[str, RankerConfig]:
    every4 = get_config("eliverec")
    assert every4.task_weighting is not None
    every4.task_weighting.every = 4
    return {
        "single task (wo.M)": get_config("eliverec_single"),
        "vanilla MTL (fixed weights)": get_config("eliverec_vanilla"),
        "adaptive, cosines every step": get_config("eliverec"),
        "adaptive, cosines every 4th step": every4,
    }


def throughput(cfg: RankerConfig, batches: list, warmup: int = 2) -> float:
    torch.manual_seed(0)
    fm = synthetic_feature_map(seq_len=50, shopping=True)
    model = Ranker(fm, cfg)
    opt = build_optimizers(model)
    start, n = 0.0, 0
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad()
        loss, _ = model.loss(batch, model(batch))
        loss.backward()
        opt.step()
        n += len(batch["ctr"]) if i >= warmup else 0
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=14)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    fm = synthetic_feature_map(seq_len=50, shopping=True)
    batches = synthetic_batches(fm, args.batches, 1024, seed=0)
    rows = []
    for name, cfg in variants().items():
        rate = throughput(cfg, batches)
        rows.append({"variant": name, "samples_per_s": round(rate)})
    base = next(r["samples_per_s"] for r in rows if r["variant"].startswith("vanilla"))
    print(f"{'variant':36s} {'samples/s':>10s} {'vs vanilla':>11s}")
    for r in rows:
        r["vs_vanilla"] = round(r["samples_per_s"] / base, 3)
        print(f"{r['variant']:36s} {r['samples_per_s']:10d} {r['vs_vanilla']:10.2f}x")
    if args.out:
        meta = {
            "torch": torch.__version__,
            "machine": platform.machine(),
            "threads": 1,
            "batch": 1024,
            "seq_len": 50,
            "note": "2 shared cores, other work running (the evidence runs)",
        }
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
