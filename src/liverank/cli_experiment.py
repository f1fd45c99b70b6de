"""``liverank experiment``: run the grid of an experiment file and report it (issue #14).
Registered in :mod:`liverank.cli`.

* ``liverank experiment run experiments/NAME.yaml [--out DIR] [--jobs N] [--threads T]
  [--device D] [--configs A B] [--limit N] [--cache DIR]``
* ``liverank experiment report experiments/NAME.yaml [--out DIR] [--into DOC]`` →
  ``DIR/summary.md`` (pasted into DOC between ``<!-- experiment:NAME:start/end -->``),
  ``DIR/report.html`` and ``DIR/plots/`` from ``DIR/results.jsonl``.
* ``liverank experiment status experiments/*.yaml [--results DIR] [--into DOC]``: runs
  recorded vs planned per arm, and the compute left (:mod:`liverank.experiments.status`).
* ``liverank experiment queue QUEUE.yaml [--jobs N] [--memory-gb G] [--results DIR]
  [--cache DIR] [--backfill] [--dry-run]``: the arms of several grids in a priority order, within a memory
  budget (:mod:`liverank.experiments.queue`).

``DIR`` defaults to ``results/<name>`` for both: the records are committed with the code, so
a grid run across sessions or machines accumulates and every table in the docs can be
regenerated from them. The world / sample cache (large, rebuilt from seeds) defaults to
``runs/experiments/cache``, outside version control.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from liverank.cli_args import positive_float, positive_int

DEVICES = ("cpu", "cuda", "auto")


def add_experiment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run an experiment grid (experiments/NAME.yaml)")
    actions = p.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run every cell without a result yet (resumable)")
    run.add_argument("file", type=Path, help="experiment YAML")
    run.add_argument("--out", type=Path, help="results directory (default: results/<name>)")
    run.add_argument("--jobs", type=positive_int, default=1, help="runs in parallel (default 1)")
    run.add_argument(
        "--device", choices=DEVICES, default="cpu", help="where runs train (default cpu)"
    )
    run.add_argument(
        "--configs", nargs="+", help="run only these arms (split a grid across machines)"
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        help="torch threads per run (default: cores // jobs)",
    )
    run.add_argument("--limit", type=positive_int, help="stop after this many runs (resumable)")
    run.add_argument(
        "--cache",
        type=Path,
        help="world/sample cache (default: runs/experiments/cache; OUT/../cache with --out)",
    )
    run.set_defaults(func=cmd_experiment_run)
    report = actions.add_parser(
        "report", help="summary.md + report.html from the results: paired deltas and verdicts"
    )
    report.add_argument("file", type=Path, help="experiment YAML")
    report.add_argument("--out", type=Path, help="results directory (default: results/<name>)")
    report.add_argument(
        "--into",
        type=Path,
        help="also paste summary.md between <!-- experiment:NAME:start/end --> in this file",
    )
    report.add_argument(
        "--claim-into",
        type=Path,
        help="paste the one-row claim.md between <!-- claim:NAME:start/end --> in this file",
    )
    report.set_defaults(func=cmd_experiment_report)
    status = actions.add_parser(
        "status", help="runs recorded vs planned per arm, and the compute left"
    )
    status.add_argument("files", type=Path, nargs="+", help="experiment YAML files")
    status.add_argument(
        "--results", type=Path, help="the results root (default: results): DIR/<name>/"
    )
    status.add_argument(
        "--into",
        type=Path,
        help="also paste the table between <!-- grid:status:start/end --> in this file",
    )
    status.set_defaults(func=cmd_experiment_status)
    queue = actions.add_parser(
        "queue", help="run the arms of several grids in priority order within a memory budget"
    )
    queue.add_argument("file", type=Path, help="queue YAML (liverank.experiments.queue)")
    queue.add_argument("--jobs", type=positive_int, default=1, help="runs at a time (default 1)")
    queue.add_argument(
        "--memory-gb",
        type=positive_float,
        help="memory the runs may take together (default: the file's memory_gb)",
    )
    queue.add_argument(
        "--default-gb",
        type=positive_float,
        default=14.0,
        help="estimate for a config with no recorded run (default 14, a stream arm)",
    )
    queue.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads per run (default 1)"
    )
    queue.add_argument(
        "--device", choices=DEVICES, default="cpu", help="where runs train (default cpu)"
    )
    queue.add_argument(
        "--results", type=Path, help="the results root (default: results): DIR/<name>/"
    )
    queue.add_argument(
        "--cache", type=Path, help="world/sample cache (default: runs/experiments/cache)"
    )
    queue.add_argument(
        "--backfill",
        action="store_true",
        help="start the first run that fits when the head does not (default: wait for it)",
    )
    queue.add_argument(
        "--dry-run", action="store_true", help="list the runs left and their estimates; run none"
    )
    queue.set_defaults(func=cmd_experiment_queue)


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    return args.out or RESULTS_ROOT / name


#: where results are written unless --out says otherwise (tracked by git, see module doc)
RESULTS_ROOT = Path("results")
#: the default world / sample cache (ignored by git)
DEFAULT_CACHE = Path("runs/experiments/cache")


def cmd_experiment_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from liverank.experiments.runner import RESULTS, read_results, run_grid
    from liverank.experiments.spec import ExperimentSpec

    spec = ExperimentSpec.load(args.file)
    out = _out_dir(args, spec.name)
    ran = run_grid(
        spec,
        out,
        jobs=args.jobs,
        device=args.device,
        configs=args.configs,
        limit=args.limit,
        threads=args.threads,
        cache_dir=args.cache or (None if args.out else DEFAULT_CACHE),
    )
    records = read_results(out)
    Console(stderr=True).print(
        f"experiment {spec.name}: ran {ran}, {len(records)} of {len(spec.runs())} runs "
        f"recorded in {out / RESULTS}"
    )
    return 0


def cmd_experiment_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from liverank.experiments.report import (
        load_analysis,
        metric_label,
        splice_summary,
        write_report,
    )
    from liverank.experiments.report_page import warning_lines
    from liverank.experiments.spec import ExperimentSpec

    spec = ExperimentSpec.load(args.file)
    out = _out_dir(args, spec.name)
    analysis = load_analysis(spec, out)
    summary, page = write_report(analysis, out)
    label = metric_label(spec.metric)
    table = Table(title=f"{spec.name}: {label}, candidate − {spec.baseline}")
    for column in ("variant", "config", "Δ", "interval", "n", "verdict"):
        table.add_column(column, justify="right" if column in ("Δ", "n") else "left")
    for r in analysis.main[label]:
        d = r.delta
        tag = " (headline)" if r.label == spec.headline else ""
        interval = f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]" if d.n >= 2 else "-"
        verdict = f"{d.verdict} ({d.direction})" if d.direction else d.verdict
        table.add_row(r.variant, r.label + tag, f"{d.mean:+.4f}", interval, str(d.n), verdict)
    console = Console()
    console.print(table)
    for line in warning_lines(analysis):
        console.print(f"[bold red]{escape(line)}[/]", highlight=False)
    console.print(f"wrote {summary} and {page}")
    if args.into is not None:
        splice_summary(args.into, spec.name, summary.read_text())
        console.print(f"pasted {summary.name} into {args.into}")
    if args.claim_into is not None:
        claim = summary.with_name("claim.md").read_text()
        splice_summary(args.claim_into, spec.name, claim, kind="claim")
        console.print(f"pasted claim.md into {args.claim_into}")
    return 0


def cmd_experiment_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from liverank.experiments.report import splice_summary
    from liverank.experiments.spec import ExperimentSpec
    from liverank.experiments.status import grid_status, markdown, recorded

    root = args.results or RESULTS_ROOT
    records = recorded(root)
    arms_by_file = {}
    table = Table(title=f"experiment grids ({len(records)} distinct runs recorded under {root})")
    for column in ("experiment", "config", "variant", "recorded", "min / run", "hours left"):
        table.add_column(
            column, justify="left" if column in ("experiment", "config", "variant") else "right"
        )
    for file in args.files:
        spec = ExperimentSpec.load(file)
        arms = grid_status(spec, root, records)
        arms_by_file[file.as_posix()] = arms
        for a in arms:
            table.add_row(
                spec.name,
                a.config,
                a.variant,
                f"{a.done}/{a.planned}",
                "-" if a.mean_seconds is None else f"{a.mean_seconds / 60:.0f}",
                "-" if a.remaining_hours is None else f"{a.remaining_hours:.1f}",
            )
    console = Console()
    console.print(table)
    if args.into is not None:
        splice_summary(args.into, "status", markdown(arms_by_file) + "\n", kind="grid")
        console.print(f"pasted the status table into {args.into}")
    return 0


def cmd_experiment_queue(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from liverank.experiments.queue import QueueSpec, plan_queue, run_queue

    queue = QueueSpec.load(args.file)
    root = args.results or RESULTS_ROOT
    console = Console(stderr=True)
    if args.dry_run:
        from rich.table import Table

        runs = plan_queue(queue, root, args.default_gb)
        arms: dict[tuple[str, str, str], list] = {}
        for run in runs:  # in queue order, one row per arm
            arms.setdefault((run.key.experiment, run.key.config, run.key.variant), []).append(run)
        table = Table(title=f"{args.file}: {len(runs)} runs left, in this order")
        for column in ("experiment", "config", "variant", "runs", "GB each"):
            table.add_column(column, justify="right" if column in ("runs", "GB each") else "left")
        for (experiment, config, variant), group in arms.items():
            gb = f"{group[0].memory_gb:.1f} ({group[0].memory_from})"
            table.add_row(experiment, config, variant, str(len(group)), gb)
        Console().print(table)
        console.print(f"{len(runs)} runs left in {args.file}")
        return 0
    result = run_queue(
        queue,
        root,
        args.cache or DEFAULT_CACHE,
        jobs=args.jobs,
        memory_gb=args.memory_gb,
        default_gb=args.default_gb,
        threads=args.threads,
        device=args.device,
        backfill=args.backfill,
        on_event=lambda line: console.print(
            f"{time.strftime('%H:%M:%S')} {escape(line)}", highlight=False
        ),
    )
    console.print(
        f"queue {args.file}: {len(result.ran)} runs recorded, {len(result.failed)} failed"
    )
    for label, error in result.failed:
        console.print(f"[bold red]failed[/] {escape(label)}: {escape(error)}", highlight=False)
    return 1 if result.failed else 0
