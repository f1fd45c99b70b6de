"""``liverank <command>``: the command-line entry point.

Every :class:`~liverank.errors.LiverankError` and every bad argument becomes a one-line message
on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# On small shared CPU boxes OpenMP's default spin-waiting makes torch 5-10x slower whenever another
# process is busy (measured in benchmarks/train_throughput.py); must be set before torch starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from liverank import __version__
from liverank.cli_args import (
    OneLineParser,
    add_unknown_events,
    non_negative_int,
    one_line,
    positive_int,
)
from liverank.cli_experiment import add_experiment
from liverank.cli_foresight import add_foresight
from liverank.cli_graph import add_graph
from liverank.cli_ingest import add_ingest
from liverank.cli_serve import add_serve
from liverank.cli_stream import add_stream, add_train_stream
from liverank.data.sim.config import SWITCHES
from liverank.errors import ConfigError, LiverankError

console = Console(stderr=True)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="generate a simulated live-streaming platform dataset")
    p.add_argument(
        "--size", choices=["tiny", "small", "medium", "large", "evidence"], default="small"
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    p.add_argument(
        "--off",
        action="append",
        default=[],
        choices=SWITCHES,
        metavar="SWITCH",
        help=f"turn a phenomenon off (repeatable): {', '.join(SWITCHES)}",
    )
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from liverank.data.sim import SimConfig, simulate

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is an existing file; give a dataset directory")
    overrides = {name: False for name in args.off}
    cfg = SimConfig.preset(args.size, seed=args.seed, **overrides)
    start = time.perf_counter()
    report = simulate(cfg, args.out)
    table = Table(title=f"calibration of '{args.size}', seed {args.seed}")
    for col in ("metric", "measured", "target", "ok"):
        table.add_column(col, justify="right" if col == "measured" else "left")
    for m in report.metrics:
        ok = {True: "yes", False: "[bold red]NO[/]", None: ""}[m.passed]
        table.add_row(m.name, f"{m.value:.4g}", m.target, ok)
    Console().print(table)
    verdict = "all targets met" if report.passed else f"{len(report.failures)} target(s) missed"
    console.print(
        f"wrote {args.out} in {time.perf_counter() - start:.1f} s: generated "
        f"{report.generated_events:,} events in {report.seconds:.1f} s "
        f"({report.events_per_second / 1e3:,.0f}k events/s), then calibrated; {verdict} "
        "(see calibration.md)"
    )
    return 0


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a canonical dataset directory")
    p.add_argument("dataset", type=Path)
    p.add_argument(
        "--all", action="store_true", help="collect every problem instead of stopping at the first"
    )
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from liverank.data.validate import validate_dataset

    report = validate_dataset(args.dataset, collect=args.all)
    print(report.to_text())
    return 0 if report.ok else 2


def _add_build_samples(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-samples", help="build training samples (one per live impression)")
    p.add_argument("--data", type=Path, required=True, help="canonical dataset directory")
    p.add_argument("--out", type=Path, required=True, help="samples directory to write")
    p.add_argument("--seq-len", type=positive_int, default=50)
    p.add_argument(
        "--mode",
        choices=["offline", "exit", "fast_slow", "moment"],
        default="offline",
        help="offline: one row per impression; else the rows of a stream reporting mode",
    )
    p.add_argument(
        "--long-len",
        type=non_negative_int,
        default=0,
        help="also write the long-history store; batches carry the last K items per domain",
    )
    p.add_argument(
        "--features",
        choices=["impression", "emission"],
        default="impression",
        help="stream modes: features as of the impression (default) or as of emission "
        "(leaks the reported behaviours into the features; see docs/streaming.md)",
    )
    p.add_argument(
        "--shopping",
        action="store_true",
        help="offline: also the product sequence, the room's product context and the goods-bag"
        " / product-click labels (what eLiveRec reads; docs/data.md)",
    )
    p.add_argument(
        "--segments",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also the room's last N 30 s content segments (MMBee's MFQ reads them): as of the "
        "impression offline, as of the reported window with --mode moment (MMBee's "
        "segment-level gift samples); not with exit / fast_slow",
    )
    p.add_argument(
        "--graph-k",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="also the top-K metapath neighbours of the user and the author, from a "
        "gifting graph rebuilt daily (MMBee's GIE reads them; docs/graph.md)",
    )
    p.add_argument(
        "--room-stats",
        type=non_negative_int,
        default=0,
        metavar="T",
        help="(offline) also the room's last T windows of 30 s statistics as of the impression "
        "(LiveForesighter; docs/foresight.md)",
    )
    p.add_argument(
        "--room-products",
        type=non_negative_int,
        default=0,
        metavar="L",
        help="(offline) also the room's last L products before the impression (LiveForesighter)",
    )
    add_unknown_events(p)
    p.set_defaults(func=cmd_build_samples)


def cmd_build_samples(args: argparse.Namespace) -> int:
    from liverank.data.samples_summary import print_samples_summary

    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is an existing file; give a samples directory")
    if args.mode != "offline":
        from liverank.stream.samples import build_stream_samples

        if args.segments and args.mode != "moment":
            raise ConfigError(
                f"--segments with a stream mode needs --mode moment (the rows that report a "
                f"gift in its own 30 s segment), not --mode {args.mode}"
            )
        if args.shopping:
            raise ConfigError(
                "--shopping is built for --mode offline only (the stream modes do not report "
                "the goods-bag / product-click labels yet)"
            )
        if args.room_stats or args.room_products:
            raise ConfigError("--room-stats / --room-products are built for --mode offline only")
        stats = build_stream_samples(
            args.data,
            args.out,
            args.mode,
            seq_len=args.seq_len,
            long_len=args.long_len,
            features=args.features,
            unknown_events=args.unknown_events,
            segments=args.segments,
            graph_k=args.graph_k,
        )
    else:
        from liverank.data.samples import build_samples

        if args.features != "impression":
            raise ConfigError("--features emission applies to the stream modes only")
        stats = build_samples(
            args.data,
            args.out,
            seq_len=args.seq_len,
            long_len=args.long_len,
            unknown_events=args.unknown_events,
            shopping=args.shopping,
            segments=args.segments,
            graph_k=args.graph_k,
            room_stats=args.room_stats,
            room_products=args.room_products,
        )
    print_samples_summary(stats, args.out)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a ranker from an experiment YAML")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--samples", type=Path, help="override data.samples")
    p.add_argument("--out", type=Path, help="override the run directory")
    p.add_argument("--registry", type=Path, help="publish the best checkpoint to this registry")
    p.add_argument(
        "--compile-aoti",
        action="store_true",
        help="with --registry: compile the version's AOTInductor package into <registry>/.aoti "
        "before publishing it, so that `liverank serve --runtime aoti` loads it without "
        "compiling on its serving cores",
    )
    p.add_argument("--epochs", type=positive_int, help="override train.epochs")
    p.add_argument("--seed", type=non_negative_int, help="override train.seed")
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        help="data-parallel processes on this machine (torchrun + DDP; train.batch_size is "
        "the global batch); see docs/scaling.md for several machines",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from liverank.config import load_config
    from liverank.eval.summary import print_comparison
    from liverank.train import distributed as ddp
    from liverank.train.experiment import run_experiment

    if args.nproc > 1 and not ddp.launched():
        from liverank.train.launch import run_ranks

        console.print(f"torchrun: {args.nproc} ranks on this machine")
        return run_ranks(args.argv, args.nproc)

    overrides = {}
    for key, value in (
        ("data.samples", args.samples),
        ("out", args.out),
        ("registry", args.registry),
        ("train.epochs", args.epochs),
        ("train.seed", args.seed),
    ):
        if value is not None:
            overrides[key] = str(value) if isinstance(value, Path) else value
    if args.compile_aoti:
        overrides["registry_aoti"] = True
    cfg = load_config(args.config, overrides)
    try:
        result = run_experiment(cfg)
    finally:
        ddp.shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        print_comparison({cfg.name: result.test})
        console.print(f"run directory: {result.out_dir}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a saved model on the test days of a samples directory"
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="a checkpoint file or a registry version directory",
    )
    p.add_argument("--samples", type=Path, required=True)
    p.add_argument("--test-days", type=positive_int, default=1)
    p.add_argument("--out", type=Path, help="write metrics.json and predictions.parquet here")
    p.add_argument(
        "--slice",
        action="append",
        default=[],
        help="also print every metric of a slice: all, hour-avg, hour=H, activity=low|mid|high",
    )
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from liverank.eval.summary import evaluate_checkpoint, print_comparison

    result = evaluate_checkpoint(args.model, args.samples, args.test_days, args.out)
    m = args.model
    label = f"{m.parent.name} {m.name}" if m.is_dir() else m.stem
    print_comparison({label: result})
    for name in args.slice:
        Console(width=160).print(result.to_table(name))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="simulate → build samples → train mlp and ple → evaluate → report"
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--size", choices=["tiny", "small", "medium"], default="small")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--models", default="mlp,ple", help="comma-separated zoo names")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from liverank.demo import run_demo
    from liverank.models.zoo import list_configs

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_configs()]
    if unknown or not models:
        raise ConfigError(
            f"--models: unknown model(s) {unknown or [args.models]}; known: "
            f"{', '.join(list_configs())}"
        )
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is an existing file; give a directory")
    run_demo(args.out, size=args.size, seed=args.seed, models=models, epochs=args.epochs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="liverank", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"liverank {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_simulate,
        _add_validate,
        _add_build_samples,
        _add_train,
        _add_evaluate,
        _add_demo,
        add_stream,
        add_train_stream,
        add_serve,
        add_experiment,
        add_graph,
        add_foresight,
        add_ingest,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quiet_rank = int(os.environ.get("RANK", "0")) > 0  # under torchrun: rank 0 reports
    logging.basicConfig(
        level=logging.WARNING if quiet_rank else logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    try:
        return int(args.func(args) or 0)
    except LiverankError as exc:
        # escape: a message may hold brackets (e.g. "liverank[serve]") that rich would read as
        # markup; soft_wrap: one line however narrow the terminal
        # (one_line: polars and pydantic messages may hold newlines)
        text = escape(one_line(exc))
        console.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
