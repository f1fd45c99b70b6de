"""Quality of the baselines on simulated data: popularity vs mlp / din / mmoe / ple.

For every dataset seed: simulate a platform, build samples, then train each model (early
stopping on the validation day, never on the test day) and evaluate on the test day.
Prints CTR GAUC / AUC (hour-averaged and pooled) per model and seed, and writes JSON.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/quality_baselines.py --size small --data-seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from liverank.config import DataConfig, ExperimentConfig, TrainConfig  # noqa: E402
from liverank.data.samples import build_samples  # noqa: E402
from liverank.data.sim import SimConfig, simulate  # noqa: E402
from liverank.train.experiment import load_splits, run_experiment, run_popularity  # noqa: E402

METRICS = (
    ("ctr", "gauc", "hour-avg"),
    ("ctr", "gauc", "all"),
    ("ctr", "auc", "hour-avg"),
    ("lvtr", "gauc", "hour-avg"),
    ("gtr", "auc", "all"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--model-seed", type=int, default=0)
    ap.add_argument("--models", default="mlp,din,mmoe,ple")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/liverank-quality"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_baselines.json"))
    args = ap.parse_args()

    rows: list[dict] = []
    for data_seed in args.data_seeds:
        root = args.work / f"{args.size}-seed{data_seed}"
        if not (root / "samples" / "feature_map.json").exists():
            simulate(SimConfig.preset(args.size, seed=data_seed), root / "dataset", progress=False)
            build_samples(root / "dataset", root / "samples", progress=False)
        base = ExperimentConfig(
            name="popularity",
            data=DataConfig(samples=root / "samples"),
            train=TrainConfig(epochs=args.epochs, patience=1, seed=args.model_seed, progress=False),
            out=root / "runs" / "popularity",
        )
        splits = load_splits(base)
        for name in ["popularity", *args.models.split(",")]:
            start = time.perf_counter()
            if name == "popularity":
                res = run_popularity(base, splits)
                best_epoch = None
            else:
                cfg = base.model_copy(
                    update={"name": name, "model": name, "out": root / "runs" / name}
                )
                res = run_experiment(cfg, splits)
                best_epoch = res.fit.best_epoch
            row = {
                "data_seed": data_seed,
                "model": name,
                "best_epoch": best_epoch,
                "seconds": time.perf_counter() - start,
            }
            for task, metric, sl in METRICS:
                row[f"{task}_{metric}_{sl}"] = res.test.value(task, metric, sl)
            rows.append(row)
            print(json.dumps(row))

    table = Table(
        title=f"test metrics on simulated '{args.size}' (mean over data seeds {args.data_seeds})"
    )
    table.add_column("model")
    keys = [f"{t}_{m}_{s}" for t, m, s in METRICS]
    for k in keys:
        table.add_column(k.replace("_", " "), justify="right")
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        cells = []
        for k in keys:
            vals = [r[k] for r in mine]
            spread = f" ±{statistics.pstdev(vals):.4f}" if len(vals) > 1 else ""
            cells.append(f"{statistics.mean(vals):.4f}{spread}")
        table.add_row(name, *cells)
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"size": args.size, "epochs": args.epochs, "model_seed": args.model_seed, "rows": rows},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
