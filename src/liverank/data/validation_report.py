"""What validation found: problems with their first offending rows, per-table and dataset reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from liverank.errors import DataValidationError


@dataclass(frozen=True)
class Problem:
    """One broken rule: where it is and the first offending rows (0-based) with their values."""

    check: str
    table: str
    file: str
    column: str | None
    message: str
    rows: tuple[int, ...] = ()
    examples: tuple[object, ...] = ()

    def to_error(self) -> DataValidationError:
        return DataValidationError(
            self.message, file=self.file, column=self.column, rows=self.rows, examples=self.examples
        )


@dataclass
class TableReport:
    """One table's rows, the checks that ran, notes (accepted dtypes, skips) and problems."""

    name: str
    file: str
    rows: int = 0
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ValidationReport:
    """What was validated: rows per table, checks run, notes and problems."""

    root: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    absent_optional: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self) -> None:
        if self.problems:
            raise self.problems[0].to_error()

    def to_text(self) -> str:
        status = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        total = sum(t.rows for t in self.tables.values())
        lines = [f"dataset {self.root}: {status}; {total:,} rows in {self.seconds:.2f} s", ""]
        width = max([len(n) for n in self.tables] + [5])
        lines.append(f"{'table':<{width}}  {'rows':>12}  {'problems':>8}  checks")
        for t in self.tables.values():
            checks = ", ".join(t.checks)
            lines.append(f"{t.name:<{width}}  {t.rows:>12,}  {len(t.problems):>8}  {checks}")
        if self.absent_optional:
            lines += ["", f"absent optional tables: {', '.join(self.absent_optional)}"]
        notes = [f"{t.name}: {n}" for t in self.tables.values() for n in t.notes]
        lines += (["", "notes:"] + [f"  - {n}" for n in notes]) if notes else []
        if self.problems:
            lines += ["", "problems:"]
            lines += [f"  {i}. {p.to_error()}" for i, p in enumerate(self.problems, 1)]
        return "\n".join(lines)
