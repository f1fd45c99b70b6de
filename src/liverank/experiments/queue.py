"""``liverank experiment queue``: run the arms of several grids in a priority order, within a
memory budget.

The planned grids add up to days of compute on a small machine (``docs/experiments.md``, "What
runs next"), and which runs may share it is decided by memory more than by cores: a stream arm
holds ~14 GB, a PLE arm ~6 GB. A queue file names the arms to run, most important first::

    memory_gb: 22        # optional; --memory-gb overrides it
    entries:
      - {experiment: experiments/cross_nodup.yaml, configs: [ple_nodup, moment_cross_nodup]}
      - {experiment: experiments/moment_cross.yaml, configs: [moment_cross]}
      - {experiment: experiments/mmbee.yaml, configs: [sim, sim_mmbee],
         model_seeds: [0], world_seeds: [0], memory_gb: 16}

Each entry selects runs of one experiment file (every run of the grid by default; ``configs``,
``variants``, ``model_seeds``, ``world_seeds`` filter; ``limit`` caps how many), in the grid's
own order (:meth:`ExperimentSpec.runs`). A run already recorded under the results root (by this
experiment or a sibling with the same content hash) or selected by an earlier entry is not run
again (checked again just before a run starts: another runner on the same results may have
made it meanwhile), or being made by another live queue on the same results: a queue claims
each run before it starts (``RESULTS/<experiment>/.claims/<hash>``, created exclusively, holding
the queue's pid and host) and releases it when the run is recorded or fails, so that several
queues with overlapping entries can share one results root without making a run twice; a claim
whose process has ended (a killed queue) is taken over. Records go to
``RESULTS/<experiment name>/results.jsonl``, as ``liverank experiment run`` writes them
(resumable: a killed queue, started again, runs what is left).

Scheduling: up to ``jobs`` runs at a time, each in a fresh worker process (memory is returned
between runs); when a slot is free, the head of the queue starts if its memory estimate fits
what the running ones leave of the budget, else the queue waits for a run to end (the order is
the priority: a large run is never overtaken). ``backfill=True`` starts the first run that
fits instead (first fit: no idle slot, but a large run may wait for long). With nothing
running, the head starts whatever its estimate. A run's world and samples are built (when not cached) in a short-lived
process of their own, just before it starts, inside its share of the budget. The estimate of a run is the entry's ``memory_gb``, else the largest
``peak_rss_gb`` recorded for its experiment config (any variant), else ``default_gb`` until the
config's first run in the queue records its peak, which the config's later runs then take
("learned").
A run that fails is logged with its error and the queue goes on; the command exits non-zero
at the end if any failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from liverank.config import read_yaml_mapping, validate_as
from liverank.errors import ConfigError
from liverank.experiments.runner import (
    RESULTS,
    _drop_torn_tail,
    _worker,
    append_record,
    check_configs,
    prepare,
    read_results,
    reuse_records,
    worker_pool,
)
from liverank.experiments.spec import ExperimentSpec, RunKey
from liverank.experiments.status import recorded

log = logging.getLogger(__name__)

#: the memory estimate (GB) of a run whose config has no recorded run yet: a stream arm's
DEFAULT_GB = 14.0


class QueueEntry(BaseModel):
    """Runs of one experiment file, in the grid's order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: Path
    configs: list[str] | None = None
    variants: list[str] | None = None
    model_seeds: list[int] | None = None
    world_seeds: list[int] | None = None
    limit: int | None = Field(default=None, ge=1)
    #: memory estimate of each of these runs, GB (default: the recorded peak, see module doc)
    memory_gb: float | None = Field(default=None, gt=0)


class QueueSpec(BaseModel):
    """A queue file: entries, most important first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entries: list[QueueEntry] = Field(min_length=1)
    memory_gb: float | None = Field(default=None, gt=0)

    @classmethod
    def load(cls, path: str | Path) -> QueueSpec:
        """Read and validate a queue YAML; relative experiment paths are taken from the
        working directory (as ``liverank experiment run`` takes its file)."""
        return validate_as(cls, read_yaml_mapping(path, "queue file"), str(path))


@dataclass(frozen=True)
class QueuedRun:
    """One run to make, with where its record goes and what memory it is expected to take."""

    spec: ExperimentSpec
    key: RunKey
    out: Path  # RESULTS/<experiment name>
    memory_gb: float
    memory_from: str  # "entry", "recorded", "default" or "learned"

    @property
    def label(self) -> str:
        k = self.key
        return f"{k.experiment}/{k.config}/{k.variant} world {k.world_seed} seed {k.model_seed}"

    @property
    def hash(self) -> str:
        """The run's content hash (its record's ``hash``, its claim's file name)."""
        return self.key.hash(self.spec)


def _check_filter(entry: QueueEntry, spec: ExperimentSpec) -> None:
    """Every name or seed an entry filters on must exist in its grid (a typo selects nothing)."""
    checks = {
        "configs": (entry.configs, list(spec.configs)),
        "variants": (entry.variants, list(spec.grid.variants)),
        "model_seeds": (entry.model_seeds, list(spec.grid.model_seeds)),
        "world_seeds": (entry.world_seeds, list(spec.grid.world.seeds)),
    }
    for name, (wanted, have) in checks.items():
        unknown = [w for w in (wanted or []) if w not in have]
        if unknown:
            raise ConfigError(
                f"queue entry for {entry.experiment}: {name} {unknown} are not in the "
                f"experiment's {have}"
            )


def _selected(entry: QueueEntry, key: RunKey) -> bool:
    return (
        (entry.configs is None or key.config in entry.configs)
        and (entry.variants is None or key.variant in entry.variants)
        and (entry.model_seeds is None or key.model_seed in entry.model_seeds)
        and (entry.world_seeds is None or key.world_seed in entry.world_seeds)
    )


def _recorded_peaks(hashes: dict[RunKey, str], records: dict[str, dict]) -> dict[str, float]:
    """The largest recorded ``peak_rss_gb`` per config among the runs ``hashes`` (key -> hash)."""
    peaks: dict[str, float] = {}
    for key, run_hash in hashes.items():
        peak = records.get(run_hash, {}).get("peak_rss_gb")
        if peak is not None:
            peaks[key.config] = max(peaks.get(key.config, 0.0), float(peak))
    return peaks


def plan_queue(
    queue: QueueSpec, results_root: str | Path, default_gb: float = DEFAULT_GB
) -> list[QueuedRun]:
    """The runs the queue still has to make, in order (nothing is run or written).

    Raises :class:`ConfigError` for an unreadable experiment file or a filter naming something
    its grid does not have."""
    root = Path(results_root)
    records = recorded(root)
    seen: set[str] = set(records)
    runs: list[QueuedRun] = []
    for entry in queue.entries:
        spec = ExperimentSpec.load(entry.experiment)
        _check_filter(entry, spec)
        hashes = {key: key.hash(spec) for key in spec.runs()}  # in grid order
        peaks = _recorded_peaks(hashes, records)
        chosen = 0
        for key, run_hash in hashes.items():
            if entry.limit is not None and chosen >= entry.limit:
                break
            if not _selected(entry, key) or run_hash in seen:
                continue
            seen.add(run_hash)
            chosen += 1
            if entry.memory_gb is not None:
                memory, source = entry.memory_gb, "entry"
            elif key.config in peaks:
                memory, source = peaks[key.config], "recorded"
            else:
                memory, source = default_gb, "default"
            runs.append(QueuedRun(spec, key, root / spec.name, memory, source))
    return runs


def next_fitting(
    pending: list[QueuedRun], in_use_gb: float, budget_gb: float, backfill: bool = False
) -> int | None:
    """Index of the run of ``pending`` to start beside ``in_use_gb``, or None (wait).

    In order (the default), only the head may start, when it fits: a large run is never
    overtaken, at the price of a slot left idle while it waits. With ``backfill`` the first
    run that fits starts (first fit: more throughput, but a large run can wait as long as
    smaller ones keep the other slots busy). With nothing running (``in_use_gb == 0``) the head
    starts whatever its estimate."""
    if not pending:
        return None
    if in_use_gb <= 0:
        return 0
    candidates = pending if backfill else pending[:1]
    for i, run in enumerate(candidates):
        if in_use_gb + run.memory_gb <= budget_gb:
            return i
    return None


def learn_estimate(pending: list[QueuedRun], done: QueuedRun, peak_gb: float | None) -> int:
    """After ``done`` recorded ``peak_gb``: the pending runs of the same experiment config whose
    estimate was the default (no run of it recorded when the queue was planned) take it
    instead, so the config's first run sizes the rest. Returns how many changed."""
    if peak_gb is None:
        return 0
    changed = 0
    for i, run in enumerate(pending):
        same = run.key.experiment == done.key.experiment and run.key.config == done.key.config
        if same and run.memory_from in ("default", "learned"):
            learned = max(peak_gb, run.memory_gb) if run.memory_from == "learned" else peak_gb
            pending[i] = dataclasses.replace(run, memory_gb=learned, memory_from="learned")
            changed += 1
    return changed


@dataclass
class QueueResult:
    """What a queue call did."""

    ran: list[str] = field(default_factory=list)  # labels of the runs recorded
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, error)


def _recorded_meanwhile(run: QueuedRun) -> bool:
    """Whether ``run`` has a record in its results file now (another runner on the same results,
    e.g. a second queue or an ``experiment run`` split by ``--configs``, made it after this
    queue was planned)."""
    return any(r.get("hash") == run.hash for r in read_results(run.out))


#: the folder of a results directory where queues claim the runs they are making
CLAIMS = ".claims"


def _claim_alive(path: Path) -> bool:
    """Whether the queue that wrote claim ``path`` (``"<pid> <host>"``) may still be running."""
    try:
        pid, host = path.read_text().split()
    except (OSError, ValueError):  # being written, or unreadable: treat as held
        return True
    if host != socket.gethostname():  # another machine's: its process cannot be checked
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def claim_run(out: Path, run_hash: str) -> bool:
    """Claim the run ``run_hash`` of results directory ``out`` for this process: ``False`` when a
    live runner holds it. A claim left by a process that has ended is taken over."""
    claims = out / CLAIMS
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / run_hash
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _claim_alive(path):
                return False
            path.unlink(missing_ok=True)  # stale: its queue was killed before releasing it
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        return True
    return False


def release_run(out: Path, run_hash: str) -> None:
    """Drop this process's claim on ``run_hash`` (nothing if there is none)."""
    (out / CLAIMS / run_hash).unlink(missing_ok=True)


def _prepare_apart(run: QueuedRun, cache: Path) -> dict[str, Path]:
    """:func:`~liverank.experiments.runner.prepare` in a process of its own, so that the memory
    of a world or sample build (GBs at the ``evidence`` scale) is returned when it ends instead
    of staying with the queue's process beside the running workers."""
    with worker_pool(1, max_tasks_per_child=1) as one:
        return one.submit(prepare, run.spec, run.key, cache).result()


def run_queue(
    queue: QueueSpec,
    results_root: str | Path,
    cache_dir: str | Path,
    *,
    jobs: int = 1,
    memory_gb: float | None = None,
    default_gb: float = DEFAULT_GB,
    threads: int = 1,
    device: str = "cpu",
    backfill: bool = False,
    on_event: Callable[[str], None] | None = None,
) -> QueueResult:
    """Make every run of :func:`plan_queue`, ``jobs`` at a time within ``memory_gb`` (module
    doc). ``on_event`` receives one line per start, record and failure (the CLI prints them)."""
    if jobs < 1 or threads < 1:
        raise ConfigError(f"jobs and threads must be >= 1, got {jobs}, {threads}")
    budget = memory_gb if memory_gb is not None else queue.memory_gb
    if budget is None or not budget > 0:
        raise ConfigError("give the memory budget: --memory-gb, or memory_gb in the queue file")
    from liverank.train.device import resolve_device

    resolve_device(device)
    say = on_event or (lambda line: log.info("%s", line))
    cache = Path(cache_dir)
    specs: dict[str, ExperimentSpec] = {}
    for entry in queue.entries:  # every file and filter checked before anything is written
        spec = ExperimentSpec.load(entry.experiment)
        _check_filter(entry, spec)
        specs.setdefault(spec.name, spec)
    # as `experiment run` does for its grid: a torn last line dropped, sibling records copied
    for spec in specs.values():
        out = Path(results_root) / spec.name
        out.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(out / RESULTS)
        reuse_records(spec, out)
    pending = plan_queue(queue, results_root, default_gb)
    for spec in {r.spec.name: r.spec for r in pending}.values():  # a bad config fails now
        check_configs(spec, [r.key for r in pending if r.spec.name == spec.name])
    say(f"queue: {len(pending)} runs to make, {jobs} at a time within {budget:g} GB")
    result = QueueResult()
    running: dict[Future, QueuedRun] = {}
    # spawned workers that end with this process (a queue killed from outside leaves none)
    pool = worker_pool(jobs, max_tasks_per_child=1)
    try:
        while pending or running:
            while len(running) < jobs:
                in_use = sum(r.memory_gb for r in running.values())
                i = next_fitting(pending, in_use, budget, backfill)
                if i is None:
                    break
                run = pending.pop(i)
                if not claim_run(run.out, run.hash):
                    say(f"skip {run.label}: being made by another runner")
                    continue
                if _recorded_meanwhile(run):
                    release_run(run.out, run.hash)
                    say(f"skip {run.label}: recorded by another runner meanwhile")
                    continue
                try:
                    paths = _prepare_apart(run, cache)
                except Exception as exc:  # a world or sample build that fails: report, go on
                    release_run(run.out, run.hash)
                    result.failed.append((run.label, f"{type(exc).__name__}: {exc}"))
                    say(f"FAILED (preparing) {run.label}: {type(exc).__name__}: {exc}")
                    continue
                say(f"start {run.label} (~{run.memory_gb:.1f} GB, {run.memory_from})")
                future = pool.submit(_worker, run.spec, run.key, run.out, paths, device, threads)
                running[future] = run
            if not running:
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                run = running.pop(future)
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - one failed run must not stop the rest
                    release_run(run.out, run.hash)
                    # a worker killed from outside (out of memory) breaks the pool and every
                    # run in it: those are reported as failed, the pool is made anew
                    broken |= isinstance(exc, BrokenProcessPool)
                    result.failed.append((run.label, f"{type(exc).__name__}: {exc}"))
                    say(f"FAILED {run.label}: {type(exc).__name__}: {exc}")
                    continue
                append_record(run.out, record)
                release_run(run.out, run.hash)
                result.ran.append(run.label)
                seconds, peak = record.get("seconds"), record.get("peak_rss_gb")
                learn_estimate(pending, run, peak)
                say(f"recorded {run.label} in {seconds} s, peak {peak} GB ({len(pending)} left)")
            if broken:
                for run in running.values():
                    release_run(run.out, run.hash)
                    result.failed.append((run.label, "BrokenProcessPool: its worker pool died"))
                    say(f"FAILED {run.label}: its worker pool died")
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = worker_pool(jobs, max_tasks_per_child=1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for run in running.values():  # interrupted: the runs still held are not being made
            release_run(run.out, run.hash)
    return result
