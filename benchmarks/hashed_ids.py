"""Quality against embedding rows: hashed id tables and the frequency filter.

Trains ``--model`` on one samples directory with the id tables ``--tables`` (default user,
author, room) stored (a) in full, (b) hashed into ``rows / k`` buckets for each ``k`` of
``--shrink``, and (c) in full but with a frequency filter (ids seen fewer than ``n`` times share
an OOV row) for each ``n`` of ``--min-count``; every arm over the same ``--seeds``. Reports test
CTR AUC and GAUC per arm (mean over seeds) and the paired difference to the full tables with a
t interval over seeds, and the embedding rows each arm stores.

Usage::

    python benchmarks/hashed_ids.py --samples runs/bench_ddp/samples --seeds 0 1 2

Writes ``benchmarks/results/hashed_ids.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--model", default="ple")
    p.add_argument("--tables", nargs="+", default=["user", "author", "room"])
    p.add_argument("--shrink", type=int, nargs="+", default=[2, 4, 16, 64])
    p.add_argument("--min-count", type=int, nargs="+", default=[3, 10])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/hashed_ids.json"))
    return p.parse_args()


def arms(args: argparse.Namespace, table_rows: dict[str, int]) -> dict[str, dict]:
    out: dict[str, dict] = {"full": {}}
    for k in args.shrink:
        out[f"hash /{k}"] = {"hash_buckets": {t: max(2, table_rows[t] // k) for t in args.tables}}
    for n in args.min_count:
        out[f"min_count {n}"] = {"id_policies": {t: {"min_count": n} for t in args.tables}}
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args()
    from liverank.config import DataConfig, ExperimentConfig, TrainConfig
    from liverank.features.spec import FeatureMap
    from liverank.train.experiment import load_splits, run_experiment

    fmap = FeatureMap.load(args.samples / "feature_map.json")
    table_rows = {t: fmap.table_size(t) for t in args.tables}
    plan = arms(args, table_rows)
    records = []
    splits = None
    with tempfile.TemporaryDirectory(prefix="liverank-hashed-") as tmp:
        for seed in args.seeds:
            for name, overrides in plan.items():
                cfg = ExperimentConfig(
                    name=args.model,
                    data=DataConfig(samples=args.samples),
                    model=args.model,
                    model_overrides=overrides,
                    train=TrainConfig(
                        epochs=args.epochs, seed=seed, threads=args.threads, progress=False
                    ),
                    out=Path(tmp) / f"{name.replace(' ', '_').replace('/', '')}-{seed}",
                )
                splits = splits or load_splits(cfg)
                start = time.perf_counter()
                res = run_experiment(cfg, splits)
                rows = sum(
                    overrides.get("hash_buckets", {}).get(t, table_rows[t])
                    + (1 if "id_policies" in overrides else 0)
                    for t in args.tables
                )
                rec = {
                    "arm": name,
                    "seed": seed,
                    "rows": rows,
                    "ctr_auc": res.test.value("ctr", "auc"),
                    "ctr_gauc": res.test.value("ctr", "gauc"),
                    "seconds": round(time.perf_counter() - start, 1),
                }
                records.append(rec)
                print(json.dumps(rec), flush=True)
    summary = summarise(records, list(plan), args.seeds)
    table = Table(
        title=f"{args.model}: id tables {', '.join(args.tables)} ({len(args.seeds)} seeds)"
    )
    for col in ("arm", "rows", "CTR AUC", "CTR GAUC", "GAUC - full [95% CI]"):
        table.add_column(col, justify="right")
    for s in summary:
        ci = s["gauc_diff"]
        cell = (
            "-" if s["arm"] == "full" else f"{ci['mean']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"
        )
        table.add_row(
            s["arm"], f"{s['rows']:,}", f"{s['ctr_auc']:.4f}", f"{s['ctr_gauc']:.4f}", cell
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "hashed_ids",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "samples": str(args.samples),
                "model": args.model,
                "tables": table_rows,
                "epochs": args.epochs,
                "seeds": args.seeds,
                "records": records,
                "summary": summary,
            },
            indent=2,
        )
    )


def summarise(records: list[dict], arm_names: list[str], seeds: list[int]) -> list[dict]:
    full = {r["seed"]: r for r in records if r["arm"] == "full"}
    out = []
    for name in arm_names:
        rs = [r for r in records if r["arm"] == name]
        diffs = np.array([r["ctr_gauc"] - full[r["seed"]]["ctr_gauc"] for r in rs])
        n = len(diffs)
        half = float(stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        out.append(
            {
                "arm": name,
                "rows": rs[0]["rows"],
                "ctr_auc": float(np.mean([r["ctr_auc"] for r in rs])),
                "ctr_gauc": float(np.mean([r["ctr_gauc"] for r in rs])),
                "gauc_diff": {
                    "mean": float(diffs.mean()),
                    "lo": float(diffs.mean() - half),
                    "hi": float(diffs.mean() + half),
                    "n": n,
                },
            }
        )
    return out


if __name__ == "__main__":
    main()
