"""``liverank experiment``: run the grid of an experiment file (issue #14). Registered in
:mod:`liverank.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_experiment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run an experiment grid (experiments/NAME.yaml)")
    actions = p.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run every cell without a result yet (resumable)")
    run.add_argument("file", type=Path, help="experiment YAML")
    run.add_argument(
        "--out", type=Path, help="results directory (default: runs/experiments/<name>)"
    )
    run.set_defaults(func=cmd_experiment_run)


def cmd_experiment_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from liverank.experiments.runner import RESULTS, read_results, run_grid
    from liverank.experiments.spec import ExperimentSpec

    spec = ExperimentSpec.load(args.file)
    out = args.out or Path("runs/experiments") / spec.name
    ran = run_grid(spec, out)
    records = read_results(out)
    Console(stderr=True).print(
        f"experiment {spec.name}: ran {ran}, {len(records)} of {len(spec.runs())} runs "
        f"recorded in {out / RESULTS}"
    )
    return 0
