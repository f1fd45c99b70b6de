"""``liverank graph``: MMBee's offline graph part (docs/graph.md). Registered in
:mod:`liverank.cli`.

* ``liverank graph build --data DATASET --out DIR [--as-of TS] [--k 20] [--alpha 1.0]
  [--pairs all|distinct] [--max-users-per-author K] [--fanout F]``: the U2A gifting graph of
  the gifts before ``TS`` (default: the dataset's end), the A2A Swing graph and the top-k
  neighbours of every user and author along the five metapaths, written as a neighbour store.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from liverank.cli_args import non_negative_int, positive_int


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_graph(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="MMBee's gifting graphs and metapath neighbour store")
    actions = p.add_subparsers(dest="action", required=True)
    build = actions.add_parser(
        "build", help="U2A + Swing A2A graphs -> top-k metapath neighbours of every node"
    )
    build.add_argument("--data", type=Path, required=True, help="canonical dataset directory")
    build.add_argument("--out", type=Path, required=True, help="store directory to write")
    build.add_argument(
        "--as-of",
        type=non_negative_int,
        help="epoch ms: only gifts with ts < this (default: the dataset's end_ts)",
    )
    build.add_argument("--k", type=positive_int, default=20, help="neighbours per node")
    build.add_argument("--alpha", type=_alpha, default=1.0, help="Swing's alpha (Eq. 8)")
    build.add_argument(
        "--pairs",
        choices=["all", "distinct"],
        default="all",
        help="Swing user pairs: all (Eq. 8 as printed, u = v included) or distinct (u != v)",
    )
    build.add_argument(
        "--max-users-per-author",
        type=positive_int,
        help="Swing on each author's K heaviest gifters only (default: exact)",
    )
    build.add_argument(
        "--fanout",
        type=positive_int,
        help="metapath walks follow each node's F heaviest edges only (default: exact)",
    )
    build.set_defaults(func=cmd_graph_build)


def cmd_graph_build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from liverank.data.io import read_meta
    from liverank.graph.store import build_neighbour_store

    as_of = args.as_of if args.as_of is not None else read_meta(args.data).end_ts
    meta = build_neighbour_store(
        args.data,
        args.out,
        as_of,
        k=args.k,
        alpha=args.alpha,
        pairs=args.pairs,
        max_users_per_author=args.max_users_per_author,
        fanout=args.fanout,
    )
    counts = meta["counts"]
    table = Table(title=f"graph store of '{meta['dataset']}' as of {as_of}")
    for column in ("step", "result", "seconds"):
        table.add_column(column, justify="left" if column == "step" else "right")
    results = {
        "u2a": f"{counts['gifts']:,} gifts -> {counts['u2a_edges']:,} edges "
        f"({counts['gifting_users']:,} users, {counts['gifted_authors']:,} authors)",
        "swing": f"{counts['swing_pairs']:,} author pairs",
        "transitions": "",
        "write": str(args.out),
    }
    for step, seconds in meta["seconds"].items():
        result = results.get(step, f"{counts.get(f'{step}_rows', 0):,} neighbours")
        table.add_row(step, result, f"{seconds:.2f}")
    Console().print(table)
    return 0
