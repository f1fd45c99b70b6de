"""What a trained model's loss is made of: the loss parts and scalar diagnostics of a run's best
checkpoint on its own training batches, without a step (a diagnosis, not a speed benchmark).

Written for eLiveRec (issue #15), whose runs before 2026-12-08 recorded only the total loss:
the parts are its tasks (``task/T``), the adaptive weights (``weight/T``) and their gradient
cosines (``weight_cos/T``), the regularisers (``aux/...``) and the embedding gate's means
(``diag/eliverec/gate/...``). Runs from 2026-12-08 carry the same means per epoch in their
records (``history[].parts``, averaged while training)::

    PYTHONPATH=src python benchmarks/loss_parts.py --run results/eliverec/runs/51b397f53ac9 \
        --out benchmarks/results/loss_parts_eliverec.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from liverank.config import load_config
from liverank.data.batch_order import GROUP_COLUMN
from liverank.models.ranker import Ranker
from liverank.train.experiment import load_splits
from liverank.train.trainer import LossPartMeans


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, nargs="+", required=True, help="run directories")
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path)
    return p.parse_args()


def loss_parts(run: Path, n_batches: int, seed: int) -> dict[str, float]:
    cfg = load_config(run / "config.yaml", {})
    _, train, _, _ = load_splits(cfg)
    model = Ranker.load(run / "checkpoints" / "best.pt")
    model.train()  # the training-time losses (regularisers, weights) are what is asked
    optimizer = getattr(model.weighting, "optimizer", None)
    if optimizer is not None:  # an adaptive weighting trains itself in forward: hold it still
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    means = LossPartMeans()
    group_by = GROUP_COLUMN.get(cfg.data.batch_order)
    batches = train.iter_batches(cfg.train.batch_size, shuffle=True, seed=seed, group_by=group_by)
    for i, batch in enumerate(batches):
        if i == n_batches:
            break
        out = model(batch)
        _, parts = model.loss(batch, out)  # no backward, no step: the weights stay as trained
        means.add_step(batch, out, parts)
    return means.means()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    runs = {}
    for run in args.run:
        runs[str(run)] = {
            k: round(v, 5) for k, v in loss_parts(run, args.batches, args.seed).items()
        }
        print(run, json.dumps(runs[str(run)], indent=1))
    if args.out:
        record = {
            "benchmark": "loss_parts",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "batches": args.batches,
            "seed": args.seed,
            "runs": runs,
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
