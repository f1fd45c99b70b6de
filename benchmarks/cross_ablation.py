"""Cross (Moment&Cross section 4) vs the same PLE without it, and the five one-sequence ablations.

For every dataset seed: simulate a platform, build samples with long histories
(``build_samples(..., long_len=K)``), then train each experiment config on the same samples
(early stopping on the validation day, never on the test day) and evaluate on the test day.
Reports CTR / LVTR GAUC pooled and hour-averaged, overall and for low-activity users.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cross_ablation.py --size small --data-seeds 0

Configs (default): ``configs/ple.yaml``, ``configs/moment_cross.yaml`` and every
``configs/ablations/moment_cross_no_*.yaml``. Writes ``benchmarks/results/cross_ablation.json``.
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

from liverank.config import load_config  # noqa: E402
from liverank.data.samples import build_samples  # noqa: E402
from liverank.data.sim import SimConfig, simulate  # noqa: E402
from liverank.train.experiment import run_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = [
    ROOT / "configs" / "ple.yaml",
    ROOT / "configs" / "moment_cross.yaml",
    *sorted((ROOT / "configs" / "ablations").glob("moment_cross_no_*.yaml")),
]
METRICS = (
    ("ctr", "gauc", "all"),
    ("ctr", "gauc", "hour-avg"),
    ("ctr", "gauc", "activity=low"),
    ("lvtr", "gauc", "all"),
    ("lvtr", "gauc", "hour-avg"),
    ("lvtr", "gauc", "activity=low"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--model-seed", type=int, default=0)
    ap.add_argument("--long-len", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--configs", type=Path, nargs="+", default=DEFAULT_CONFIGS)
    ap.add_argument("--work", type=Path, default=Path("/tmp/liverank-cross"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cross_ablation.json")
    args = ap.parse_args()

    rows: list[dict] = []
    for data_seed in args.data_seeds:
        root = args.work / f"{args.size}-seed{data_seed}"
        samples = root / f"samples-long{args.long_len}"
        if not (samples / "feature_map.json").exists():
            if not (root / "dataset" / "meta.json").exists():
                simulate(SimConfig.preset(args.size, seed=data_seed), root / "dataset")
            build_samples(root / "dataset", samples, long_len=args.long_len)
        for path in args.configs:
            cfg = load_config(
                path,
                {
                    "data.samples": str(samples),
                    "out": str(root / "runs" / path.stem),
                    "registry": None,
                    "train.epochs": args.epochs,
                    "train.seed": args.model_seed,
                    "train.progress": False,
                },
            )
            start = time.perf_counter()
            res = run_experiment(cfg)
            row = {
                "data_seed": data_seed,
                "config": path.stem,
                "long_len": cfg.data.long_len,
                "best_epoch": res.fit.best_epoch,
                "seconds": round(time.perf_counter() - start, 1),
            }
            for task, metric, sl in METRICS:
                row[f"{task}_{metric}_{sl}"] = res.test.value(task, metric, sl)
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(_record(args, rows), indent=2))

    table = Table(title=f"test day, simulated '{args.size}', data seeds {args.data_seeds}")
    table.add_column("config")
    keys = [f"{t}_{m}_{s}" for t, m, s in METRICS]
    for k in keys:
        table.add_column(k.replace("_", " "), justify="right")
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        cells = []
        for k in keys:
            vals = [r[k] for r in mine]
            spread = f" ±{statistics.pstdev(vals):.4f}" if len(vals) > 1 else ""
            cells.append(f"{statistics.mean(vals):.4f}{spread}")
        table.add_row(name, *cells)
    Console(width=220).print(table)


def _record(args: argparse.Namespace, rows: list[dict]) -> dict:
    return {
        "size": args.size,
        "epochs": args.epochs,
        "long_len": args.long_len,
        "model_seed": args.model_seed,
        "rows": rows,
    }


if __name__ == "__main__":
    main()
