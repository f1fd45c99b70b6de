"""How far each experiment grid has run: runs recorded vs planned, per arm and variant.

``liverank experiment status experiments/*.yaml [--results DIR] [--into DOC]`` reads every
grid's records (``DIR/<name>/results.jsonl``) and, for each experiment file, counts the runs of
each arm (config x variant) that have a record, by content hash: a run recorded by a sibling
experiment (the same config, overrides, world and seed; :func:`liverank.experiments.runner.
reuse_records`) counts as done, since ``experiment run`` would copy it rather than train it.
It estimates the compute left from the recorded wall time of the arm's runs (any variant of
the same config; none recorded: unknown). Nothing is trained or written except ``--into``'s
table between ``<!-- grid:status:start -->`` and ``<!-- grid:status:end -->``.

Example::

    >>> rows = grid_status(ExperimentSpec.load("experiments/farm.yaml"), Path("results"))  # doctest: +SKIP
    >>> rows[0].config, rows[0].variant, rows[0].done, rows[0].planned  # doctest: +SKIP
    ('ple', 'base', 10, 10)
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from liverank.experiments.runner import read_results
from liverank.experiments.spec import ExperimentSpec


@dataclass(frozen=True)
class ArmStatus:
    """One arm (config x variant) of a grid."""

    experiment: str
    config: str
    variant: str
    done: int
    planned: int
    #: mean wall seconds of the config's recorded runs (any variant); None: none recorded
    mean_seconds: float | None

    @property
    def remaining(self) -> int:
        return self.planned - self.done

    @property
    def remaining_hours(self) -> float | None:
        """Wall hours of one process to run the rest, at the recorded mean (None: unknown)."""
        if self.remaining == 0:
            return 0.0
        return None if self.mean_seconds is None else self.remaining * self.mean_seconds / 3600


def recorded(results_root: Path) -> dict[str, dict]:
    """Every record under ``results_root/*/results.jsonl`` by run hash (the first one seen)."""
    out: dict[str, dict] = {}
    for path in sorted(Path(results_root).glob("*/results.jsonl")):
        for record in read_results(path.parent):
            out.setdefault(record.get("hash", ""), record)
    return out


def grid_status(
    spec: ExperimentSpec, results_root: Path, records: dict[str, dict] | None = None
) -> list[ArmStatus]:
    """The arms of ``spec`` in grid order, with their recorded and planned runs."""
    records = recorded(results_root) if records is None else records
    planned: dict[tuple[str, str], int] = defaultdict(int)
    done: dict[tuple[str, str], int] = defaultdict(int)
    seconds: dict[str, list[float]] = defaultdict(list)
    for key in spec.runs():
        arm = (key.config, key.variant)
        planned[arm] += 1
        record = records.get(key.hash(spec))
        if record is not None:
            done[arm] += 1
            if record.get("seconds") is not None:
                seconds[key.config].append(float(record["seconds"]))
    return [
        ArmStatus(
            spec.name,
            config,
            variant,
            done[(config, variant)],
            n,
            statistics.fmean(seconds[config]) if seconds[config] else None,
        )
        for (config, variant), n in planned.items()
    ]


def markdown(arms_by_file: dict[str, list[ArmStatus]]) -> str:
    """One row per experiment: runs done / planned, the arms that are complete, partly run and
    not started, and the single-process wall hours left at the recorded means."""
    lines = [
        "| experiment | runs recorded | complete arms | partly run | not started | "
        "wall hours left (one process) |",
        "|---|---|---|---|---|---|",
    ]
    for file, arms in arms_by_file.items():
        done, planned = sum(a.done for a in arms), sum(a.planned for a in arms)

        def names(sel: list[ArmStatus], counts: bool = False) -> str:
            if not sel:
                return "-"
            return ", ".join(
                f"{a.config}/{a.variant}" + (f" {a.done}/{a.planned}" if counts else "")
                for a in sel
            )

        complete = [a for a in arms if a.done == a.planned]
        partly = [a for a in arms if 0 < a.done < a.planned]
        none = [a for a in arms if a.done == 0]
        known = [a.remaining_hours for a in arms]
        left = sum(h for h in known if h is not None)
        unknown = sum(1 for h in known if h is None)
        if unknown == len(arms) and done < planned:
            left_text = "? (no run of these configs yet)"
        else:
            left_text = f"{left:.1f} h" + (f" + {unknown} arms unknown" if unknown else "")
        lines.append(
            f"| `{file}` | {done} / {planned} | {names(complete)} | {names(partly, True)} | "
            f"{names(none)} | {left_text} |"
        )
    return "\n".join(lines)
