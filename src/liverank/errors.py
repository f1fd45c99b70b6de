"""Typed exceptions. The CLI turns every ``LiverankError`` into a one-line message and exit code 2."""

from __future__ import annotations

from collections.abc import Sequence


class LiverankError(Exception):
    """Base class of every error liverank raises on purpose."""


class ConfigError(LiverankError):
    """A configuration file or value is invalid."""


class DataValidationError(LiverankError):
    """Input data breaks the canonical schema.

    The message names the file, the column and the first offending rows, so that the user can
    find and fix them.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        rows: Sequence[int] = (),
        examples: Sequence[object] = (),
    ) -> None:
        self.file = file
        self.column = column
        self.rows = list(rows)
        self.examples = list(examples)
        parts = []
        if file is not None:
            parts.append(f"{file}")
        if column is not None:
            parts.append(f"column '{column}'")
        where = ": ".join(parts)
        text = f"{where}: {message}" if where else message
        if self.rows:
            text += f" (first offending rows: {', '.join(str(r) for r in self.rows[:5])}"
            if self.examples:
                text += f"; values: {', '.join(repr(e) for e in self.examples[:5])}"
            text += ")"
        super().__init__(text)


class UnknownIdError(LiverankError, KeyError):
    """An id (user, room, model version, ...) is not known."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown id"
