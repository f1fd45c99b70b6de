"""``liverank experiment queue``: the plan (filters, order, what is already recorded, memory
estimates), first-fit admission, and a tiny queue end to end."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
import yaml

from liverank.cli import main
from liverank.errors import ConfigError
from liverank.experiments.queue import (
    CLAIMS,
    QueuedRun,
    QueueSpec,
    claim_run,
    learn_estimate,
    next_fitting,
    plan_queue,
    release_run,
    run_queue,
)
from liverank.experiments.runner import RESULTS, read_results
from liverank.experiments.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[2]
QUICK = {"train.epochs": 1, "train.max_batches_per_epoch": 5, "train.batch_size": 256}


def _experiment(tmp_path: Path, name: str, seeds=(0, 1), worlds=(3,)) -> Path:
    raw = {
        "name": name,
        "claim": "smoke test of the queue",
        "baseline": "mlp",
        "headline": "din",
        "configs": {
            "mlp": {"config": str(ROOT / "configs/mlp.yaml"), "overrides": QUICK},
            "din": {"config": str(ROOT / "configs/din.yaml"), "overrides": QUICK},
        },
        "grid": {
            "model_seeds": list(seeds),
            "world": {"preset": "tiny", "seeds": list(worlds)},
            "variants": {"base": {"n_days": 3}, "short": {"n_days": 3, "session_median_min": 60.0}},
        },
        "underpowered_ok": True,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _queue(tmp_path: Path, entries: list[dict], **extra) -> QueueSpec:
    path = tmp_path / "queue.yaml"
    path.write_text(yaml.safe_dump({"entries": entries, **extra}, sort_keys=False))
    return QueueSpec.load(path)


def _record(root: Path, spec: ExperimentSpec, key, peak: float | None) -> None:
    out = root / spec.name
    out.mkdir(parents=True, exist_ok=True)
    line = {"hash": key.hash(spec), "experiment": spec.name, "config": key.config}
    if peak is not None:
        line["peak_rss_gb"] = peak
    with (out / RESULTS).open("a") as f:
        f.write(json.dumps(line) + "\n")


def test_the_plan_follows_the_entries_filters_and_grid_order(tmp_path):
    a = _experiment(tmp_path, "first")
    queue = _queue(
        tmp_path,
        [
            {"experiment": str(a), "configs": ["din"], "variants": ["short"], "limit": 1},
            {"experiment": str(a), "model_seeds": [1], "variants": ["base"]},
        ],
    )
    runs = plan_queue(queue, tmp_path / "results", default_gb=3.0)
    got = [(r.key.config, r.key.variant, r.key.model_seed) for r in runs]
    # entry 1: din on 'short', the grid's first such run only; entry 2: seed 1 on base, the
    # baseline and the headline side by side (the grid's order)
    assert got == [("din", "short", 0), ("mlp", "base", 1), ("din", "base", 1)]
    assert {r.memory_from for r in runs} == {"default"} and {r.memory_gb for r in runs} == {3.0}
    assert {r.out for r in runs} == {tmp_path / "results" / "first"}


def test_recorded_and_repeated_runs_are_skipped_and_peaks_become_estimates(tmp_path):
    a = _experiment(tmp_path, "first")
    spec = ExperimentSpec.load(a)
    root = tmp_path / "results"
    keys = spec.runs()
    mlp_keys = [k for k in keys if k.config == "mlp"]
    _record(root, spec, mlp_keys[0], peak=2.5)
    _record(root, spec, mlp_keys[1], peak=4.0)
    # the same grid under another name counts too (same content hash)
    twin_path = _experiment(tmp_path, "twin")
    twin = ExperimentSpec.load(twin_path)
    _record(root, twin, [k for k in twin.runs() if k.config == "din"][0], peak=None)
    queue = _queue(
        tmp_path,
        [
            {"experiment": str(a), "variants": ["base"]},
            {"experiment": str(a), "configs": ["mlp"], "memory_gb": 1.5},  # base ones repeat
        ],
    )
    runs = plan_queue(queue, root, default_gb=9.0)
    labels = [(r.key.config, r.key.variant, r.key.model_seed) for r in runs]
    assert ("mlp", "base", 0) not in labels and ("mlp", "base", 1) not in labels  # recorded
    assert ("din", "base", 0) not in labels  # recorded by the twin
    assert labels.count(("din", "base", 1)) == 1
    by_label = {(r.key.config, r.key.variant, r.key.model_seed): r for r in runs}
    # din has no peak recorded: the default; mlp's 'short' runs come from entry 2 (memory_gb)
    assert by_label[("din", "base", 1)].memory_from == "default"
    assert by_label[("mlp", "short", 0)].memory_gb == 1.5
    assert by_label[("mlp", "short", 0)].memory_from == "entry"
    # an entry without memory_gb takes the config's largest recorded peak
    runs = plan_queue(_queue(tmp_path, [{"experiment": str(a), "configs": ["mlp"]}]), root)
    assert {(r.memory_gb, r.memory_from) for r in runs} == {(4.0, "recorded")}


@pytest.mark.parametrize(
    "entry, named",
    [
        ({"configs": ["dinn"]}, "configs ['dinn']"),
        ({"variants": ["long"]}, "variants ['long']"),
        ({"model_seeds": [7]}, "model_seeds [7]"),
        ({"world_seeds": [0]}, "world_seeds [0]"),
    ],
)
def test_a_filter_naming_what_the_grid_lacks_is_refused(tmp_path, entry, named):
    a = _experiment(tmp_path, "first")
    with pytest.raises(ConfigError, match=re.escape(named) + ".*are not in"):
        plan_queue(_queue(tmp_path, [{"experiment": str(a), **entry}]), tmp_path / "results")


def test_a_malformed_queue_file_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text(yaml.safe_dump({"entries": [{"experiment": "x.yaml", "limit": 0}]}))
    with pytest.raises(ConfigError, match="limit"):
        QueueSpec.load(path)
    path.write_text(yaml.safe_dump({"entries": [{"experiment": "x.yaml", "config": ["a"]}]}))
    with pytest.raises(ConfigError, match="config"):
        QueueSpec.load(path)
    path.write_text(yaml.safe_dump({"entries": []}))
    with pytest.raises(ConfigError, match="entries"):
        QueueSpec.load(path)


def _fake(memory: float) -> QueuedRun:
    return QueuedRun(spec=None, key=None, out=Path("."), memory_gb=memory, memory_from="entry")  # type: ignore[arg-type]


def test_admission_in_order_and_with_backfill():
    big, small = _fake(14.0), _fake(6.0)
    for backfill in (False, True):
        assert next_fitting([big, small], 0.0, 10.0, backfill) == 0  # idle: the head
        assert next_fitting([big, small], 6.0, 21.0, backfill) == 0
        assert next_fitting([big, small], 16.0, 21.0, backfill) is None
        assert next_fitting([], 0.0, 21.0, backfill) is None
    # the head does not fit beside 8 GB: in order it waits, with backfill the small run starts
    assert next_fitting([big, small], 8.0, 21.0) is None
    assert next_fitting([big, small], 8.0, 21.0, backfill=True) == 1


@pytest.mark.slow
def test_a_tiny_queue_runs_two_experiments_in_order_and_resumes(tmp_path, capsys):
    a, b = _experiment(tmp_path, "first", seeds=(0,)), _experiment(tmp_path, "second", seeds=(0,))
    queue = _queue(
        tmp_path,
        [
            {"experiment": str(a), "configs": ["din"], "variants": ["base"]},
            {"experiment": str(b), "configs": ["mlp"], "variants": ["base"]},
        ],
    )
    root, cache = tmp_path / "results", tmp_path / "cache"
    events: list[str] = []
    result = run_queue(
        queue, root, cache, jobs=2, memory_gb=8.0, default_gb=1.0, on_event=events.append
    )
    assert result.failed == [] and len(result.ran) == 2
    first, second = read_results(root / "first"), read_results(root / "second")
    assert [(r["config"], r["experiment"]) for r in first] == [("din", "first")]
    assert [(r["config"], r["experiment"]) for r in second] == [("mlp", "second")]
    assert 0.0 < first[0]["metrics"]["all"]["ctr"]["auc"] < 1.0
    # every claim was released with its record
    assert not any(list((root / name / CLAIMS).iterdir()) for name in ("first", "second"))
    assert any(e.startswith("start first/din/base") for e in events)
    assert sum(e.startswith("recorded") for e in events) == 2
    # nothing left: a second call plans nothing, and the CLI's dry run says so
    assert plan_queue(queue, root) == []
    assert run_queue(queue, root, cache, memory_gb=8.0).ran == []
    path = tmp_path / "queue.yaml"
    assert main(["experiment", "queue", str(path), "--results", str(root), "--dry-run"]) == 0
    assert "0 runs left" in capsys.readouterr().err


def test_the_cli_refuses_a_queue_without_a_memory_budget(tmp_path, capsys):
    a = _experiment(tmp_path, "first")
    _queue(tmp_path, [{"experiment": str(a)}])
    code = main(["experiment", "queue", str(tmp_path / "queue.yaml"), "--results", str(tmp_path)])
    assert code != 0 and "memory budget" in capsys.readouterr().err


def test_the_committed_queue_names_only_what_its_grids_have(monkeypatch):
    """experiments/queues/next.yaml (docs/experiments.md, "What runs next") plans without error."""
    monkeypatch.chdir(ROOT)
    queue = QueueSpec.load(ROOT / "experiments/queues/next.yaml")
    runs = plan_queue(queue, ROOT / "results")
    assert len(
        {
            (r.key.experiment, r.key.config, r.key.variant, r.key.model_seed, r.key.world_seed)
            for r in runs
        }
    ) == len(runs)


def test_a_configs_first_recorded_peak_sizes_its_later_runs(tmp_path):
    a = _experiment(tmp_path, "first")
    runs = plan_queue(_queue(tmp_path, [{"experiment": str(a)}]), tmp_path / "results", 14.0)
    din = [r for r in runs if r.key.config == "din"]
    mlp = [r for r in runs if r.key.config == "mlp"]
    pending = din[1:] + mlp
    assert learn_estimate(pending, din[0], None) == 0  # no peak recorded: nothing learned
    assert learn_estimate(pending, din[0], 3.0) == len(din) - 1
    assert {(r.memory_gb, r.memory_from) for r in pending if r.key.config == "din"} == {
        (3.0, "learned")
    }
    assert {(r.memory_gb, r.memory_from) for r in pending if r.key.config == "mlp"} == {
        (14.0, "default")
    }
    learn_estimate(pending, din[1], 5.0)  # a larger peak later: the estimate is the largest
    learn_estimate(pending, din[2], 4.0)
    assert {r.memory_gb for r in pending if r.key.config == "din"} == {5.0}
    # an estimate the entry gave is kept
    fixed = plan_queue(
        _queue(tmp_path, [{"experiment": str(a), "memory_gb": 2.0}]), tmp_path / "results"
    )
    assert learn_estimate(fixed[1:], fixed[0], 9.0) == 0


def test_a_run_recorded_by_another_runner_after_planning_is_seen(tmp_path):
    from liverank.experiments.queue import _recorded_meanwhile

    a = _experiment(tmp_path, "first")
    root = tmp_path / "results"
    runs = plan_queue(_queue(tmp_path, [{"experiment": str(a)}]), root)
    assert not _recorded_meanwhile(runs[0]) and not _recorded_meanwhile(runs[1])
    _record(root, runs[0].spec, runs[0].key, peak=1.0)
    assert _recorded_meanwhile(runs[0]) and not _recorded_meanwhile(runs[1])


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` from /proc (None when there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_end_when_their_runner_is_killed() -> None:
    """A queue or grid killed from outside cannot shut its pool down: its workers must not train
    on with nobody left to record their results."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    import liverank

    code = textwrap.dedent(
        """
        import time
        from liverank.experiments.runner import worker_pool
        pool = worker_pool(1)
        future = pool.submit(time.sleep, 300)
        while not pool._processes:
            time.sleep(0.05)
        print(*pool._processes, flush=True)
        future.result()
        """
    )
    src = str(Path(liverank.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    runner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert runner.stdout is not None
        worker = int(runner.stdout.readline().split()[0])
        time.sleep(0.5)
        assert _state(worker) not in (None, "Z")  # the worker is running
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    deadline = time.monotonic() + 30
    while _state(worker) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.2)
    outlived = _state(worker) not in (None, "Z")
    if outlived:  # leave no orphan behind a failing test
        os.kill(worker, signal.SIGKILL)
    assert not outlived, "the worker outlived its runner"


def test_a_run_claimed_by_a_live_runner_is_left_to_it_and_a_dead_ones_claim_is_taken(tmp_path):
    """Two queues on one results root never make the same run: each claims a run before it
    starts; a claim whose process has ended (a killed queue) is taken over."""
    import subprocess
    import sys

    out = tmp_path / "results" / "first"
    assert claim_run(out, "abc") and not claim_run(out, "abc")  # held by a live process
    release_run(out, "abc")
    assert claim_run(out, "abc")
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    (out / CLAIMS / "dead").write_text(f"{ended.stdout.strip()} {socket.gethostname()}\n")
    assert claim_run(out, "dead")  # its queue is gone
    assert (out / CLAIMS / "dead").read_text().split()[0] == str(os.getpid())
    # a queue whose runs are all claimed by a live runner makes none of them
    a = _experiment(tmp_path, "first", seeds=(0,))
    queue = _queue(tmp_path, [{"experiment": str(a), "variants": ["base"]}])
    root = tmp_path / "results"
    for run in plan_queue(queue, root):
        assert claim_run(run.out, run.key.hash(run.spec))
    events: list[str] = []
    result = run_queue(queue, root, tmp_path / "cache", memory_gb=8.0, on_event=events.append)
    assert result.ran == [] and result.failed == []
    assert sum("being made by another runner" in e for e in events) == 2
