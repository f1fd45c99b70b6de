"""Training and evaluation on data larger than a memory cap: the streaming loader vs in memory.

Each arm runs in its own process: it builds the day split of ``--samples`` with one loader
(``memory``: :class:`SampleSet`, every row of the split in RAM; ``stream``:
:class:`ParquetSampleStream`, a buffer shuffle of ``--buffer-rows``), trains ``--model`` for
``--steps`` steps, predicts the validation day, and reports samples/s of training, prediction
rows/s, and the process's peak resident memory (``ru_maxrss``).

With ``--cap-mb`` and a writable cgroup-v1 memory controller (``/sys/fs/cgroup/memory``, as
root), each capped arm runs inside a cgroup whose ``memory.limit_in_bytes`` is the cap, so the
cap is enforced by the kernel (the in-memory arm is expected to be killed when its data does not
fit); without one, the cap is only compared with the measured peak.

Usage::

    python benchmarks/larger_than_memory.py --samples runs/samples_big --cap-mb 1536

Writes ``benchmarks/results/larger_than_memory.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--model", default="ple")
    p.add_argument("--steps", type=int, default=300, help="training steps per arm")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--buffer-rows", type=int, default=65_536)
    p.add_argument(
        "--eval-batch-size",
        type=int,
        default=2048,
        help="prediction batch (the model's activations at 8192 rows are ~300 MB on their own)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cap-mb", type=int, default=0, help="memory cap (0: none)")
    p.add_argument("--arms", nargs="+", default=["stream", "memory"])
    p.add_argument("--uncapped", nargs="*", default=["memory"], help="arms also run uncapped")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/larger_than_memory.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """One arm, in this process: prints one JSON line."""
    import torch

    from liverank.config import DataConfig, ExperimentConfig, TrainConfig
    from liverank.models.ranker import Ranker
    from liverank.models.zoo import get_config
    from liverank.train.experiment import load_splits
    from liverank.train.trainer import Trainer, predict_frame

    cfg = ExperimentConfig(
        name=args.model,
        data=DataConfig(samples=args.samples, loader=args.child, buffer_rows=args.buffer_rows),
        model=args.model,
        train=TrainConfig(
            epochs=1,
            batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size,
            threads=args.threads,
            max_batches_per_epoch=args.steps,
            progress=False,
        ),
        out=Path("/tmp/liverank-ltm"),
    )
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    fmap, train, val, _ = load_splits(cfg)
    load_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = Ranker(fmap, get_config(args.model))
    trainer = Trainer(cfg, fmap, model)
    loss, sps = trainer.train_epoch(train, epoch=1)
    start = time.perf_counter()
    frame = predict_frame(model, val, cfg.train.eval_batch_size)
    pred_s = time.perf_counter() - start
    rec = {
        "loader": args.child,
        "train_rows": len(train),
        "val_rows": len(val),
        "load_seconds": round(load_s, 2),
        "train_samples_per_s": round(sps, 1),
        "train_loss": round(loss, 5),
        "predict_rows_per_s": round(frame.height / pred_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print("RESULT " + json.dumps(rec), flush=True)


def cgroup_available() -> bool:
    return (CGROUP_ROOT / "cgroup.procs").exists() and os.access(CGROUP_ROOT, os.W_OK)


def run_arm(args: argparse.Namespace, loader: str, cap_mb: int) -> dict:
    cmd = [sys.executable, __file__, "--child", loader, "--samples", str(args.samples)]
    cmd += ["--model", args.model, "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    cmd += ["--buffer-rows", str(args.buffer_rows), "--threads", str(args.threads)]
    cmd += ["--eval-batch-size", str(args.eval_batch_size)]
    group = None
    preexec = None
    if cap_mb and cgroup_available():
        group = CGROUP_ROOT / f"liverank-ltm-{os.getpid()}-{loader}"
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(cap_mb * 1024 * 1024))
        swap = group / "memory.memsw.limit_in_bytes"
        if swap.exists():  # no escape into swap
            with contextlib.suppress(OSError):
                swap.write_text(str(cap_mb * 1024 * 1024))
        procs = group / "cgroup.procs"

        def preexec() -> None:  # the child joins the cgroup before it starts
            procs.write_text(str(os.getpid()))

    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=preexec, check=False)
    wall = time.perf_counter() - start
    if group is not None:
        with contextlib.suppress(OSError):
            group.rmdir()
    rec: dict = {"loader": loader, "cap_mb": cap_mb or None, "enforced": group is not None}
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode == 0 and line:
        rec |= json.loads(line[len("RESULT ") :])
        rec["status"] = "ok"
    else:
        rec["status"] = f"failed (exit {proc.returncode})"
        rec["stderr_tail"] = proc.stderr[-600:]
    rec["wall_seconds"] = round(wall, 1)
    return rec


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    from liverank.data.parquet_stream import ParquetSampleStream

    whole = ParquetSampleStream(args.samples, long_len=0)
    data_mb = len(whole) * whole.row_bytes / 2**20
    records = []
    plan = [(a, args.cap_mb) for a in args.arms]
    plan += [(a, 0) for a in args.uncapped if args.cap_mb]
    for loader, cap in plan:
        rec = run_arm(args, loader, cap)
        print(json.dumps(rec), flush=True)
        records.append(rec)
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{args.model}: {len(whole):,} samples = {data_mb:,.0f} MB in memory; "
        f"cap {args.cap_mb or '-'} MB"
    )
    for col in ("loader", "cap MB", "status", "peak RSS MB", "train samples/s", "predict rows/s"):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(
            r["loader"],
            str(r["cap_mb"] or "-") + (" (enforced)" if r["enforced"] else ""),
            r["status"],
            str(r.get("peak_rss_mb", "-")),
            f"{r['train_samples_per_s']:,.0f}" if "train_samples_per_s" in r else "-",
            f"{r['predict_rows_per_s']:,.0f}" if "predict_rows_per_s" in r else "-",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "larger_than_memory",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "samples": str(args.samples),
                "rows": len(whole),
                "data_mb_in_memory": round(data_mb, 1),
                "model": args.model,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "buffer_rows": args.buffer_rows,
                "eval_batch_size": args.eval_batch_size,
                "threads": args.threads,
                "records": records,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
