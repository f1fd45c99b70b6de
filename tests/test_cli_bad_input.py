"""Every ``liverank`` command on bad input: exit code 2, one line naming the problem, no traceback.

Each case runs the real command line in a subprocess (``python -m liverank.cli``) on tiny data
made once per session: a simulated ``tiny`` dataset and broken copies of it (a truncated Parquet
file, a wrong dtype, a missing column, renamed events). ``test_every_command_has_a_case`` keeps
the list complete when a command is added.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from liverank.cli import build_parser


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``tiny`` (a valid dataset) and its broken copies, a few small files, and ``enters``: the
    number of enter events (renamed in ``renamed``)."""
    from liverank.data.sim import SimConfig, simulate

    root = tmp_path_factory.mktemp("cli_bad_input")
    tiny = root / "tiny"
    simulate(SimConfig.preset("tiny", seed=0), tiny, progress=False)

    def broken(name: str, table: str, change) -> Path:
        copy = root / name
        shutil.copytree(tiny, copy)
        change(copy / f"{table}.parquet")
        return copy

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def rewrite(fn):
        return lambda path: fn(pl.read_parquet(path)).write_parquet(path)

    renamed = pl.when(pl.col("event") == "enter").then(pl.lit("Enter")).otherwise("event")
    config = root / "config.yaml"
    config.write_text(f"name: bad\ndata:\n  samples: {root / 'no_samples'}\n")
    a_file = root / "a_file.txt"
    a_file.write_text("not a directory\n")
    experiment = root / "experiment.yaml"  # a valid experiment file that was never run
    experiment.write_text(
        "name: never_run\nclaim: smoke\nbaseline: a\nheadline: b\n"
        "configs: {a: {config: config.yaml}, b: {config: config.yaml}}\n"
        "grid: {model_seeds: [0], world: {preset: tiny, seeds: [0]}}\nunderpowered_ok: true\n"
    )
    return {
        "tiny": tiny,
        "truncated": broken("truncated", "live_events", truncate),
        "dtype": broken(
            "dtype", "live_events", rewrite(lambda d: d.with_columns(pl.col("user_id").cast(str)))
        ),
        "no_event": broken("no_event", "live_events", rewrite(lambda d: d.drop("event"))),
        "renamed": broken(
            "renamed", "live_events", rewrite(lambda d: d.with_columns(renamed.alias("event")))
        ),
        "config": config,
        "file": a_file,
        "experiment": experiment,
        "root": root,
        "enters": pl.read_parquet(tiny / "live_events.parquet")["event"].eq("enter").sum(),
    }


#: (command line with {placeholders} from the ``data`` fixture, text the error line must hold)
CASES: list[tuple[str, str]] = [
    ("simulate --size tiny --seed -1 --out {root}/s1", "--seed: must be >= 0, got -1"),
    ("simulate --size tiny --out {file}", "is an existing file"),
    ("validate {root}/missing", "no meta.json"),
    ("validate {truncated}", "live_events.parquet: cannot read Parquet file"),
    ("build-samples --data {root}/missing --out {root}/b0", "no meta.json"),
    ("build-samples --data {tiny} --out {root}/b1 --seq-len 0", "--seq-len: must be >= 1, got 0"),
    ("build-samples --data {tiny} --out {root}/b2 --long-len -1", "--long-len: must be >= 0"),
    ("build-samples --data {tiny} --out {root}/b3 --seq-len x", "expected an integer, got 'x'"),
    ("build-samples --data {truncated} --out {root}/b4", "live_events.parquet: cannot read"),
    ("build-samples --data {dtype} --out {root}/b5", "column 'user_id': wrong dtype"),
    ("build-samples --data {dtype} --out {root}/b6 --mode exit", "column 'user_id': wrong dtype"),
    ("build-samples --data {no_event} --out {root}/b7", "column 'event': required column is"),
    (
        "build-samples --data {renamed} --out {root}/b8 --unknown-events error",
        "live_events.parquet: column 'event': {enters:,} row(s) have unknown event names: "
        "'Enter' x {enters:,}",
    ),
    ("build-samples --data {tiny} --out {file}", "is an existing file"),
    (
        "build-samples --data {tiny} --out {root}/b9 --mode exit --segments 5",
        "--segments with a stream mode needs --mode moment",
    ),
    ("train --config {root}/missing.yaml", "config file not found"),
    ("train --config {config}", "no_samples"),
    ("train --config {config} --epochs 0", "--epochs: must be >= 1, got 0"),
    ("evaluate --model {root}/missing.pt --samples {tiny}", "no such model checkpoint"),
    ("evaluate --model {root}/m.pt --samples {tiny} --test-days 0", "--test-days: must be >= 1"),
    ("demo --models mlp,nosuch --out {root}/d1", "unknown model(s) ['nosuch']"),
    ("demo --epochs 0 --out {root}/d2", "--epochs: must be >= 1, got 0"),
    ("stream --data {root}/missing --out {root}/t1", "no meta.json"),
    ("stream --data {no_event} --out {root}/t2", "column 'event': required column is missing"),
    ("stream --data {truncated} --out {root}/t3", "live_events.parquet: cannot read Parquet"),
    ("stream --data {tiny} --out {root}/t4 --chunk-rows 0", "--chunk-rows: must be >= 1"),
    (
        "stream --data {renamed} --out {root}/t6 --unknown-events error",
        "column 'event': {enters:,} row(s) have unknown event names",
    ),
    ("train-stream --samples {root}/missing --mode moment --out {root}/r1", "no sample shards"),
    ("train-stream --samples {tiny} --mode moment --out {root}/r2 --batch-size 0", "--batch-size"),
    ("serve --registry {root}/missing", "the following arguments are required: --data"),
    ("serve --registry {root}/missing --data {tiny} --torch-threads 0", "--torch-threads"),
    ("serve --registry {root}/missing --data {tiny}", "registry {root}/missing"),
    ("graph build --data {root}/missing --out {root}/g0", "no meta.json"),
    ("graph build --data {truncated} --out {root}/g1", "live_events.parquet: cannot read"),
    ("graph build --data {tiny} --out {root}/g2 --k 0", "--k: must be >= 1, got 0"),
    ("graph build --data {tiny} --out {root}/g3 --alpha -1", "--alpha: must be a finite number"),
    ("graph build --data {tiny} --out {file}", "is an existing file"),
    ("graph", "the following arguments are required: action"),
    ("experiment run {root}/missing.yaml", "experiment file not found"),
    ("experiment run {experiment} --jobs 0", "--jobs: must be >= 1, got 0"),
    ("experiment report {root}/missing.yaml", "experiment file not found"),
    ("experiment report {experiment} --out {root}/x0", "x0/results.jsonl: no results file"),
    ("experiment status {root}/missing.yaml", "experiment file not found"),
    ("experiment status {experiment} --into {root}/nodoc.md", "nodoc.md: document not found"),
    ("experiment queue {root}/missing.yaml", "queue file not found"),
    ("experiment queue {root}/missing.yaml --memory-gb 0", "--memory-gb: must be a finite number"),
    ("experiment queue {experiment}", "entries"),
    ("experiment", "the following arguments are required: action"),
    ("foresight train --data {root}/missing --out {root}/f0", "no meta.json"),
    ("foresight train --data {tiny} --out {root}/f1 --window 0", "--window: must be >= 1, got 0"),
    ("foresight train --data {tiny} --out {file}", "is an existing file"),
    ("foresight show --model {root}/missing --data {tiny} --live-id 1", "not a forecaster"),
    ("foresight", "the following arguments are required: action"),
    (
        "foresight trace --with {root}/a --without {root}/b --samples {tiny} --data {tiny} "
        "--out {root}/tr --rooms 0",
        "--rooms: must be >= 1, got 0",
    ),
    ("ingest kuailive {root}/missing --out {root}/k0", "missing: not a directory"),
    ("ingest kuailive {tiny} --out {root}/k1", "no user file: looked for user.csv"),
    ("ingest kuailive {tiny} --out {file}", "is an existing file"),
    ("ingest klm3 {tiny} --out {root}/k2", "not a KuaiLive-M3 directory: missing user_id_set"),
    ("ingest klm3 {root}/missing --out {root}/k3", "missing: not a directory"),
    ("ingest", "the following arguments are required: source"),
    ("no-such-command", "invalid choice: 'no-such-command'"),
]


def _run(command: str, data: dict[str, object]) -> subprocess.CompletedProcess[str]:
    args = command.format(**data).split()
    env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "liverank.cli", *args],
        cwd=data["root"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("command", "names"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_exits_2_with_one_line(command: str, names: str, data) -> None:
    done = _run(command, data)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 2, output
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr  # one line: not wrapped, no usage block
    assert names.format(**data) in errors[0], errors[0]
    assert done.stderr.rstrip().endswith(errors[0].rstrip()), "the error is the last line"


def test_every_command_has_a_case() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set(sub.choices)
    covered = {c.split()[0] for c, _ in CASES}
    assert commands <= covered, f"add a bad-input case for {sorted(commands - covered)}"
