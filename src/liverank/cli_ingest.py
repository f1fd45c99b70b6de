"""``liverank ingest``: public datasets to the canonical tables (docs/datasets.md).
Registered in :mod:`liverank.cli`.

* ``liverank ingest kuailive DIR --out DATASET [--long-view-ms MS] [--force]``: KuaiLive
  (:mod:`liverank.data.ingest.kuailive`); prints what became of every source file's rows
  (used, set aside by reason) and writes ``ingest_report.json`` and ``set_aside.parquet``
  beside the tables.
* ``liverank ingest klm3 DIR --out DATASET [--long-view-ms MS] [--force]``: KuaiLive-M3, both
  domains, the segment embeddings, the questionnaire table as it is
  (:mod:`liverank.data.ingest.klm3`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from liverank.cli_args import positive_int


def add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="convert a public dataset to the canonical tables")
    sources = p.add_subparsers(dest="source", required=True)
    k = sources.add_parser("kuailive", help="KuaiLive (Zenodo 16565801), unzipped")
    k.add_argument("dir", type=Path, help="the directory holding click.csv, room.csv, ...")
    k.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    k.add_argument(
        "--long-view-ms", type=positive_int, default=60_000, help="long-view threshold (meta.json)"
    )
    k.add_argument("--force", action="store_true", help="replace a dataset already at --out")
    k.set_defaults(func=cmd_ingest, loader="kuailive")
    m = sources.add_parser("klm3", help="KuaiLive-M3 (Hugging Face imgkkk2004/KuaiLive-M3)")
    m.add_argument("dir", type=Path, help="the directory holding live_interaction.csv, ...")
    m.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    m.add_argument(
        "--long-view-ms", type=positive_int, default=60_000, help="long-view threshold (meta.json)"
    )
    m.add_argument("--force", action="store_true", help="replace a dataset already at --out")
    m.set_defaults(func=cmd_ingest, loader="klm3")


def cmd_ingest(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from liverank.data.ingest.common import remove_output
    from liverank.data.ingest.klm3 import ingest_klm3
    from liverank.data.ingest.kuailive import ingest_kuailive
    from liverank.errors import ConfigError

    ingest, title = {
        "kuailive": (ingest_kuailive, "KuaiLive"),
        "klm3": (ingest_klm3, "KuaiLive-M3"),
    }[args.loader]
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file; give a directory")
    if (out / "meta.json").exists():
        if not args.force:
            raise ConfigError(f"--out {out} already holds a dataset; pass --force to replace it")
        remove_output(out)
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(title, total=None)
        report = ingest(
            args.dir,
            out,
            long_view_ms=args.long_view_ms,
            progress=lambda step: bar.update(task, description=f"{title}: {step}"),
        )
    table = Table(title=f"{title} {args.dir} -> {out}")
    for col in ("file", "rows read", "used", "set aside", "why", "notes"):
        table.add_column(
            col, justify="right" if col.startswith(("rows", "used", "set")) else "left"
        )
    for name, c in report.files.items():
        aside = sum(c.set_aside.values())
        why = "; ".join(f"{r}: {n:,}" for r, n in c.set_aside.items())
        notes = "; ".join(f"{k}: {v:,}" for k, v in c.notes.items())
        table.add_row(name, f"{c.read:,}", f"{c.used:,}", f"{aside:,}", why, notes)
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: do not wrap the file names
        console = Console(width=160)
    console.print(table)
    console.print("tables: " + ", ".join(f"{t} {n:,}" for t, n in report.tables.items()))
    for note in report.notes:
        console.print(note)
    console.print(f"set-aside rows in {out / 'set_aside.parquet'}; report in ingest_report.json")
    return 0
