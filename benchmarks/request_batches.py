"""Batches of whole requests: FARM's step time and quality, rows shuffled vs requests kept together.

The impressions of one request share their user's behaviour sequences; FARM's most expensive
work (two self-attentions and a cross-attention over the sequences, the DFT filters, the
sequence lookups) reads nothing else, and ``layers/dedup.py`` encodes it once per distinct row.
That saves work only when a batch holds whole requests (``data.batch_order: requests``).
Cross (``moment_cross``) does the same for its long-history windows and its candidate-free
sequences (``short``, ``mixed``); give ``--long-len K`` and samples built with long histories
to time it (the store is attached as in training). eLiveRec (``eliverec``, on samples built with
``--shopping``) runs its two sequence Transformers once per request the same way.

Two parts, on one samples directory (real simulated rows, not synthetic batches):

1. **speed**: training steps (forward, backward, optimiser) of ``--configs`` on batches drawn
   from the training days with ``batch_order`` rows and requests; FARM also with its dedup off
   on request batches (the control: ordering alone saves nothing). Repeats interleaved, best
   repeat reported (as ``train_throughput.py``); process CPU time per step recorded.
2. **quality** (``--quality-seeds``): ``farm`` trained and tested with each batch order over
   the same model seeds; test CTR AUC / GAUC and the paired difference (requests - rows) with a
   t interval over seeds. Batches of requests hold fewer distinct users, so in-batch losses
   (FARM's contrastive term) see fewer negatives: this part measures what that costs.

Usage::

    python benchmarks/request_batches.py --samples runs/bench_ddp/samples --quality-seeds 0 1 2
    python benchmarks/request_batches.py --samples runs/bench_ddp/samples --quality-seeds  # speed
                                                   # only; keeps the file's earlier quality part
    python benchmarks/request_batches.py --samples <evidence-s0 samples with K = 1000> \
        --long-len 1000 --configs ple moment_cross --quality-seeds \
        --out benchmarks/results/request_batches_moment_cross.json
    python benchmarks/request_batches.py --samples <evidence-s0 samples, --shopping> \
        --configs eliverec --quality-seeds --out benchmarks/results/request_batches_eliverec.json

Writes ``benchmarks/results/request_batches.json`` (``--out``) and prints the tables.
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
import torch
from rich.console import Console
from rich.table import Table
from scipy import stats


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--configs", nargs="+", default=["ple", "farm"])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--long-len", type=int, default=0, help="long-history window K (moment_cross; 0 = none)"
    )
    p.add_argument("--quality-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--quality-model", default="farm")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--no-speed", action="store_true", help="only the quality part")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/request_batches.json"))
    return p.parse_args()


#: modules with a ``dedup_rows`` switch (timed with it off on request batches: the control)
DEDUP_MODULES = ("farm", "moment_cross", "eliverec")


def _stepper(model, opt, fracs: list[float]):  # noqa: ANN001, ANN202
    """A training step of ``model`` that records FARM's distinct-row share in ``fracs``."""

    def step(batch: dict[str, torch.Tensor]) -> None:
        out = model(batch)
        loss, _ = model.loss(batch, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for k, v in out.diagnostics.items():
            if k.endswith("distinct_rows_frac"):
                fracs.append(float(v))

    return step


def speed(args: argparse.Namespace, train) -> list[dict]:  # noqa: ANN001 (SampleSet)
    from liverank.data.batch_order import GROUP_COLUMN
    from liverank.models.ranker import Ranker
    from liverank.models.zoo import get_config
    from liverank.train.optim import build_optimizers

    n = args.warmup + args.steps
    batches = {}
    for order in ("rows", "requests"):
        it = train.iter_batches(
            args.batch_size, shuffle=True, seed=0, group_by=GROUP_COLUMN.get(order)
        )
        batches[order] = [next(it) for _ in range(n)]
    arms = []
    for name in args.configs:
        for order in ("rows", "requests"):
            arms.append((name, order, True))
        if name in DEDUP_MODULES:
            arms.append((name, "requests", False))
    times: dict[tuple, list[tuple[float, float]]] = {a: [] for a in arms}
    distinct: dict[tuple, float] = {}
    for _ in range(args.repeats):
        for arm in arms:
            name, order, dedup = arm
            cfg = get_config(name)
            if not dedup:
                for spec in cfg.modules:
                    if spec.name in DEDUP_MODULES:
                        spec.params["dedup_rows"] = False
            torch.manual_seed(0)
            model = Ranker(train.feature_map, cfg)
            model.attach_long_history(train.long_history, train.long_len)
            model.train()
            opt = build_optimizers(model, lr_sparse=0.02, lr_dense=0.002)
            fracs: list[float] = []
            step = _stepper(model, opt, fracs)
            for b in batches[order][: args.warmup]:
                step(b)
            start, cpu = time.perf_counter(), time.process_time()
            for b in batches[order][args.warmup :]:
                step(b)
            times[arm].append((time.perf_counter() - start, time.process_time() - cpu))
            if fracs:
                distinct[arm] = float(np.mean(fracs))
            logging.info(
                "%s %s dedup=%s %.1f ms/step",
                name,
                order,
                dedup,
                1e3 * times[arm][-1][0] / args.steps,
            )
    out = []
    for arm, ts in times.items():
        name, order, dedup = arm
        best = min(w for w, _ in ts)
        out.append(
            {
                "config": name,
                "batch_order": order,
                "dedup": dedup,
                "ms_per_step": 1e3 * best / args.steps,
                "cpu_ms_per_step": 1e3 * min(c for _, c in ts) / args.steps,
                "ms_per_step_all": [1e3 * w / args.steps for w, _ in ts],
                "samples_per_s": args.steps * args.batch_size / best,
                "distinct_rows_frac": distinct.get(arm),
            }
        )
    return out


def quality(args: argparse.Namespace, splits) -> tuple[list[dict], dict]:  # noqa: ANN001
    from liverank.config import DataConfig, ExperimentConfig, TrainConfig
    from liverank.train.experiment import run_experiment

    records = []
    with tempfile.TemporaryDirectory(prefix="liverank-requests-") as tmp:
        for seed in args.quality_seeds:
            for order in ("rows", "requests"):
                cfg = ExperimentConfig(
                    name=args.quality_model,
                    data=DataConfig(samples=args.samples, batch_order=order),
                    model=args.quality_model,
                    train=TrainConfig(
                        epochs=args.epochs, seed=seed, threads=args.threads, progress=False
                    ),
                    out=Path(tmp) / f"{order}-{seed}",
                )
                start = time.perf_counter()
                res = run_experiment(cfg, splits)
                rec = {
                    "batch_order": order,
                    "seed": seed,
                    "ctr_auc": res.test.value("ctr", "auc"),
                    "ctr_gauc": res.test.value("ctr", "gauc"),
                    "mean_auc": float(np.mean([res.test.value(t, "auc") for t in res.test.tasks])),
                    "seconds": round(time.perf_counter() - start, 1),
                }
                records.append(rec)
                print(json.dumps(rec), flush=True)
    summary = {}
    for metric in ("ctr_auc", "ctr_gauc", "mean_auc"):
        by = {(r["batch_order"], r["seed"]): r[metric] for r in records}
        diffs = np.array([by["requests", s] - by["rows", s] for s in args.quality_seeds])
        n = len(diffs)
        half = float(stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        summary[metric] = {
            "rows": float(np.mean([by["rows", s] for s in args.quality_seeds])),
            "requests": float(np.mean([by["requests", s] for s in args.quality_seeds])),
            "mean": float(diffs.mean()),
            "lo": float(diffs.mean() - half),
            "hi": float(diffs.mean() + half),
            "n": n,
        }
    return records, summary


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("liverank", "liverank.train", "liverank.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args = parse_args()
    torch.set_num_threads(args.threads)
    from liverank.config import DataConfig, ExperimentConfig
    from liverank.train.experiment import load_splits

    cfg = ExperimentConfig(
        name="x", data=DataConfig(samples=args.samples, long_len=args.long_len), model="ple"
    )
    splits = load_splits(cfg)
    train = splits[1]
    console = Console()

    sp = [] if args.no_speed else speed(args, train)
    table = Table(
        title=f"training step on real batches, batch {args.batch_size}, {args.threads} thread(s)"
    )
    for col in (
        "config",
        "batch order",
        "dedup",
        "ms/step",
        "cpu ms/step",
        "samples/s",
        "distinct rows",
    ):
        table.add_column(col, justify="right")
    for r in sp:
        frac = r["distinct_rows_frac"]
        table.add_row(
            r["config"],
            r["batch_order"],
            "on" if r["dedup"] else "off",
            f"{r['ms_per_step']:.1f}",
            f"{r['cpu_ms_per_step']:.1f}",
            f"{r['samples_per_s']:,.0f}",
            "-" if frac is None else f"{frac:.2f}",
        )
    console.print(table)

    records, summary = quality(args, splits) if args.quality_seeds else ([], {})
    quality_when = datetime.now(UTC).isoformat(timespec="seconds")
    if not args.quality_seeds and args.out.exists():  # speed only: keep the earlier quality part
        earlier = json.loads(args.out.read_text())
        records, summary = earlier.get("quality", []), earlier.get("quality_summary", {})
        quality_when = earlier.get("quality_when", earlier.get("when"))
        args.quality_seeds, args.epochs = earlier.get("quality_seeds", []), earlier.get("epochs")
    if summary:
        qt = Table(
            title=f"{args.quality_model}: test quality by batch order "
            f"({len(args.quality_seeds)} seeds, {args.epochs} epochs)"
        )
        for col in ("metric", "rows", "requests", "requests - rows [95% CI]"):
            qt.add_column(col, justify="right")
        for m, s in summary.items():
            qt.add_row(
                m,
                f"{s['rows']:.4f}",
                f"{s['requests']:.4f}",
                f"{s['mean']:+.4f} [{s['lo']:+.4f}, {s['hi']:+.4f}]",
            )
        console.print(qt)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "request_batches",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "torch": torch.__version__,
                "samples": str(args.samples),
                "batch_size": args.batch_size,
                "threads": args.threads,
                "long_len": args.long_len,
                "steps": args.steps,
                "repeats": args.repeats,
                "speed": sp,
                "quality_model": args.quality_model,
                "epochs": args.epochs,
                "quality_seeds": args.quality_seeds,
                "quality_when": quality_when,
                "quality": records,
                "quality_summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
