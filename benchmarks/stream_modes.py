"""Streaming training with exit / fast_slow / moment reporting, highlights on vs off (issue #3).

End to end:

1. simulate the platform twice, with highlights on and off (``--off highlights``); the room
   schedules are identical (checked), only the excitement dynamics differ;
2. build the stream-mode samples of every mode (``liverank build-samples --mode M``);
3. for every dataset x mode, the interleaved prequential run of
   :mod:`liverank.train.stream_eval`: train on the mode's rows in ``emit_ts`` order, score the
   shared eval stream (the ``exit`` rows: every impression once, final labels) at each
   impression's ``ts``; same model config, seed, learning rates and batch size everywhere;
4. the highlight-reaction probe of :mod:`liverank.eval.reaction` on the onsets of the
   highlights-on ground truth. On the highlights-off data the same (room, time) pairs are a
   *placebo*: nothing happens there, so a "reaction" is noise (the false-positive rate).

Usage::

    python benchmarks/stream_modes.py --size small --model ple --seed 0 --out /tmp/h4

Writes ``benchmarks/results/stream_modes_<size>.json`` (``..._seed<k>`` for seed k != 0) and a
markdown table next to it; prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from liverank.data.io import read_meta
from liverank.data.loader import SampleSet
from liverank.data.sim.config import SimConfig
from liverank.data.sim.simulate import simulate
from liverank.eval.reaction import (
    ReactionProbe,
    load_onsets,
    reaction_delays,
    rise_curve,
    summarize_reactions,
)
from liverank.stream.samples import build_stream_samples
from liverank.train.stream_eval import DAY_MS, HOUR_MS
from liverank.train.stream_run import run_stream_training

log = logging.getLogger("stream_modes")
MODES = ("exit", "fast_slow", "moment")
DATASETS = {"on": {}, "off": {"highlights": False}}
TASK_COLS = ("ctr", "lvtr", "ltr", "gtr")  # shown in the markdown table (all six are in JSON)
MARGINS = (0.05, 0.10, 0.25, 0.50)  # reaction margins reported in the JSON
CURVE_OFFSETS = (0, 60_000, 120_000, 300_000, 600_000, 840_000)  # rise curve (ms after onset)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="small")
    p.add_argument("--model", default="ple", help="zoo name")
    p.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    p.add_argument("--sim-seed", type=int, default=0, help="simulator seed")
    p.add_argument("--out", type=Path, required=True, help="work dir: datasets, samples, runs")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--slice-ms", type=int, default=60_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr-sparse", type=float, default=0.02)
    p.add_argument("--lr-dense", type=float, default=0.002)
    p.add_argument("--warmup-hours", type=int, default=24)
    p.add_argument("--probe-users", type=int, default=64)
    p.add_argument("--max-onsets", type=int, default=500)
    p.add_argument("--control-rooms", type=int, default=8, help="0: no drift normalisation")
    p.add_argument("--margin", type=float, default=0.10, help="relative CTR rise = reaction")
    p.add_argument("--censor-min", type=int, default=15)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 torch thread each)")
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument(
        "--analyse-only", action="store_true", help="recompute tables from existing run dirs"
    )
    return p.parse_args()


def prepare(args: argparse.Namespace) -> None:
    """Simulate and build samples where missing (delete a directory to rebuild it)."""
    for name in args.datasets:
        data = args.out / name
        if not (data / "meta.json").exists():
            cfg = SimConfig.preset(args.size, seed=args.sim_seed, **DATASETS[name])
            log.info("simulating %s into %s", name, data)
            simulate(cfg, data, progress=False)
        for mode in sorted({"exit", *args.modes}):
            samples = args.out / f"{name}-s-{mode}"
            if not (samples / "stats.json").exists():
                log.info("building %s samples of %s", mode, name)
                build_stream_samples(data, samples, mode, progress=False)
    if {"on", "off"} <= set(args.datasets):
        rooms = [
            pl.read_parquet(args.out / n / "rooms.parquet").select("live_id", "start_ts", "end_ts")
            for n in ("on", "off")
        ]
        if not rooms[0].equals(rooms[1]):
            raise SystemExit("on / off datasets have different rooms: the placebo needs equal ones")


def run_one(args: argparse.Namespace, name: str, mode: str) -> None:
    """One interleaved run with the reaction probe; writes its run directory."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    evaluation = SampleSet.load(args.out / f"{name}-s-exit")
    start_ts = read_meta(args.out / name).start_ts
    onsets = load_onsets(args.out / "on")  # highlights-on truth; a placebo on "off"
    probe = ReactionProbe.build(
        evaluation,
        onsets,
        n_users=args.probe_users,
        seed=args.seed,
        max_onsets=args.max_onsets,
        after_ts=start_ts + args.warmup_hours * HOUR_MS,
        censor_ms=args.censor_min * 60_000,
        n_control_rooms=args.control_rooms,
    )
    run_dir = args.out / "runs" / f"{args.model}-seed{args.seed}" / f"{name}-{mode}"
    run = run_stream_training(
        args.out / f"{name}-s-{mode}",
        args.model,
        mode,
        run_dir,
        slice_ms=args.slice_ms,
        batch_size=args.batch_size,
        lr_sparse=args.lr_sparse,
        lr_dense=args.lr_dense,
        seed=args.seed,
        warmup_ms=args.warmup_hours * HOUR_MS,
        threads=1,
        hooks=[probe],
        evaluation=evaluation,
    )
    probe.delays(args.margin).write_parquet(run_dir / "reaction.parquet")
    probe.series().write_parquet(run_dir / "reaction_series.parquet")
    log.info("%s / %s done in %.0f s", name, mode, run.summary["seconds"])


def analyse_one(args: argparse.Namespace, name: str, mode: str) -> dict[str, Any]:
    """The run's summary plus its reaction statistics (from the files ``run_one`` wrote)."""
    run_dir = args.out / "runs" / f"{args.model}-seed{args.seed}" / f"{name}-{mode}"
    summary = json.loads((run_dir / "summary.json").read_text())
    onsets = pl.read_parquet(run_dir / "reaction.parquet").select("onset_id", "onset_ts")
    series = pl.read_parquet(run_dir / "reaction_series.parquet")
    censor = args.censor_min * 60_000
    summary["dataset"] = name
    # runs made before the control batch existed only have the raw series
    summary["reaction_normalised"] = "control" in series.columns and bool(
        series["control"].is_not_nan().any()
    )
    summary["reaction"] = summarize_reactions(
        reaction_delays(series, onsets, args.margin, censor_ms=censor)
    )
    summary["reaction_by_margin"] = {
        str(m): summarize_reactions(reaction_delays(series, onsets, m, censor_ms=censor))
        for m in MARGINS
    }
    summary["rise_curve"] = rise_curve(series, onsets, CURVE_OFFSETS).to_dicts()
    if "raw" in series.columns:  # without the control normalisation, for comparison
        raw = series.with_columns(pl.col("raw").alias("value"))
        summary["reaction_raw"] = summarize_reactions(
            reaction_delays(raw, onsets, args.margin, censor_ms=censor)
        )
        summary["rise_curve_raw"] = rise_curve(raw, onsets, CURVE_OFFSETS).to_dicts()
    return summary


def paired_vs_exit(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per dataset, mode and task: mean over post-warm-up hours of ``AUC(mode) - AUC(exit)``
    (and GAUC) with its standard error over hours (the hours are the pairing unit)."""
    out: list[dict[str, Any]] = []
    root = args.out / "runs" / f"{args.model}-seed{args.seed}"
    for name in args.datasets:
        if "exit" not in args.modes:
            break
        base = pl.read_csv(root / f"{name}-exit" / "hourly.csv")
        for mode in [m for m in args.modes if m != "exit"]:
            other = pl.read_csv(root / f"{name}-{mode}" / "hourly.csv")
            both = base.join(other, on=["hour", "task"], suffix="_m").filter(
                pl.col("hour") >= args.warmup_hours
            )
            for (task,), g in both.group_by(["task"], maintain_order=True):
                row: dict[str, Any] = {"dataset": name, "mode": mode, "task": task}
                for metric in ("auc", "gauc"):
                    d = (g[f"{metric}_m"] - g[metric]).drop_nulls().drop_nans().to_numpy()
                    row[f"d_{metric}"] = float(d.mean()) if d.size else float("nan")
                    se = d.std(ddof=1) / d.size**0.5 if d.size > 1 else float("nan")
                    row[f"se_{metric}"] = float(se)
                    row["hours"] = int(d.size)
                out.append(row)
    return out


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = [
        "highlights",
        "mode",
        "rows",
        *(f"{t} AUC / GAUC" for t in TASK_COLS),
        "probe",
        "react share",
        "median delay",
        "median delay (reacting)",
        "run s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.4f}"

    def s(v: float | None) -> str:
        return "censored" if v is None or v != v else f"{v:.0f} s"

    for r in results:
        t = r["tasks"]
        re = r["reaction"]
        cells = [r["dataset"], r["mode"], f"{r['train_rows']:,}"]
        cells += [f"{f(t[k]['auc'])} / {f(t[k]['gauc'])}" for k in TASK_COLS]
        cells += [
            "norm" if r["reaction_normalised"] else "raw",
            f"{re['share_reacting']:.2f}",
            s(re["median_delay_s"]),
            s(re["median_delay_reacting_s"]),
            f"{r['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    pooled = [
        "",
        "Pooled over all post-warm-up impressions (AUC / GAUC):",
        "",
        "| highlights | mode | " + " | ".join(TASK_COLS) + " |",
        "|---|---|" + "---|" * len(TASK_COLS),
    ]
    for r in results:
        cells = [
            f"{f(r['tasks'][k]['auc_pooled'])} / {f(r['tasks'][k]['gauc_pooled'])}"
            for k in TASK_COLS
        ]
        pooled.append(f"| {r['dataset']} | {r['mode']} | " + " | ".join(cells) + " |")
    curve = [
        "",
        "Mean relative rise of the room's predicted CTR over its pre-onset baseline (`norm`: ",
        "divided by the control rooms' predicted CTR at the same time; `raw`: not):",
        "",
        "| highlights | mode | series | "
        + " | ".join(f"+{o // 60_000} min" for o in CURVE_OFFSETS)
        + " |",
        "|---|---|---|" + "---|" * len(CURVE_OFFSETS),
    ]
    for r in results:
        kinds = [("norm" if r["reaction_normalised"] else "raw", "rise_curve")]
        if r["reaction_normalised"]:
            kinds.append(("raw", "rise_curve_raw"))
        for label, key in kinds:
            by = {int(round(c["offset_min"])): c["mean_rise"] for c in r[key]}
            cells = [f"{by[o // 60_000]:+.1%}" if o // 60_000 in by else "-" for o in CURVE_OFFSETS]
            curve.append(f"| {r['dataset']} | {r['mode']} | {label} | " + " | ".join(cells) + " |")
    note = (
        f"\nModel `{args.model}`, seed {args.seed}, simulator `{args.size}` seed {args.sim_seed}; "
        f"slices of {args.slice_ms // 1000} s, batch <= {args.batch_size}, lr sparse "
        f"{args.lr_sparse} / dense {args.lr_dense}; metrics averaged over hours >= "
        f"{args.warmup_hours} (hour of the impression ts). Reaction: {args.probe_users} probe "
        f"users, <= {args.max_onsets} onsets after the warm-up, {args.control_rooms} control "
        f"rooms (for the runs marked norm), margin +{args.margin:.0%}, "
        f"censored at {args.censor_min} min.\n"
    )
    return "\n".join(lines + pooled + curve) + "\n" + note


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepare(args)
    jobs = [(name, mode) for name in args.datasets for mode in args.modes]
    # spawn, not fork: polars / torch thread pools do not survive a fork (workers hang)
    ctx = multiprocessing.get_context("spawn")
    if not args.analyse_only:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            for fut in [pool.submit(run_one, args, name, mode) for name, mode in jobs]:
                fut.result()
    results = [analyse_one(args, name, mode) for name, mode in jobs]
    paired = paired_vs_exit(args)
    suffix = "" if args.seed == 0 else f"_seed{args.seed}"
    stem = args.results / f"stream_modes_{args.size}{suffix}"
    args.results.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "stream_modes",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "warmup_ms": args.warmup_hours * HOUR_MS,
        "day_ms": DAY_MS,
        "results": results,
        "paired_vs_exit": paired,
        "seconds": round(time.perf_counter() - started, 1),
    }
    stem.with_suffix(".json").write_text(json.dumps(_json_safe(payload), indent=2))
    table = markdown(results, args) + paired_markdown(paired)
    stem.with_suffix(".md").write_text(table)
    print(table)


def paired_markdown(paired: list[dict[str, Any]]) -> str:
    if not paired:
        return ""
    lines = [
        "",
        "Paired by hour, mode minus `exit` (mean over post-warm-up hours +- 1.96 SE):",
        "",
        "| highlights | mode | task | d AUC | d GAUC |",
        "|---|---|---|---|---|",
    ]
    for r in paired:
        if r["task"] not in TASK_COLS:
            continue
        cells = [f"{r[f'd_{m}']:+.4f} +- {1.96 * r[f'se_{m}']:.4f}" for m in ("auc", "gauc")]
        lines.append(f"| {r['dataset']} | {r['mode']} | {r['task']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


if __name__ == "__main__":
    main()
