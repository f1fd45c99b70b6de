"""Argument parsing shared by the ``liverank`` commands: one-line usage errors, checked numbers.

A bad argument must end like any other bad input: exit code 2 and one line on stderr naming the
problem (argparse's default prints the whole usage block first).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``<prog>: error: <what> (see --help)``.

    Sub-command parsers made by ``add_subparsers`` are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see `{self.prog} --help`)\n")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in some messages
    return parse


def add_unknown_events(p: argparse.ArgumentParser) -> None:
    """``--unknown-events``: what to do with rows whose event name is not in the closed set
    (:mod:`liverank.data.dead_letters`)."""
    p.add_argument(
        "--unknown-events",
        choices=["dead-letter", "error"],
        default="dead-letter",
        help="rows with an event name outside the closed set: set them aside in "
        "OUT/dead_letters.parquet (default) or stop with an error naming the file, the "
        "column, the values and their count",
    )


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


#: integers >= 0 (seeds, lengths that may be 0) and >= 1 (sizes, counts)
non_negative_int = int_at_least(0)
positive_int = int_at_least(1)


def one_line(text: object) -> str:
    """``text`` on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(text).split())
