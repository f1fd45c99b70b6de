"""``liverank experiment run``: run an experiment grid, one record per run in ``results.jsonl``.

For each :class:`~liverank.experiments.spec.RunKey` of the grid whose hash is not yet in
``OUT/results.jsonl``:

1. the world (preset, seed, variant overrides) is simulated once into ``OUT/cache/worlds/``,
   named by the hash of its configuration, and reused by every run on it;
2. its samples are built once into ``OUT/cache/samples/``;
3. the model config is trained with the run's model seed (``liverank train``'s code: early
   stopping on the validation day, test on the last day);
4. one JSON line is appended: the run's key and hash, the code version, the test metrics by
   slice / task / metric, the epochs used, training samples/s, seconds and peak RSS.

A killed grid resumes where it stopped: records are appended (and flushed) one at a time, and a
run with a record is skipped. Only ``offline`` stream mode runs in this increment; a grid with
another mode is refused with a message (the stream modes follow).
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from liverank.config import load_config
from liverank.errors import ConfigError
from liverank.experiments.spec import ExperimentSpec, RunKey

log = logging.getLogger(__name__)
RESULTS = "results.jsonl"


def code_version() -> str:
    """``git describe`` of the package's checkout ("unknown" outside a git checkout)."""
    here = Path(__file__).resolve().parent
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def read_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``OUT/results.jsonl`` (a torn last line, from a kill, is ignored)."""
    path = Path(out_dir) / RESULTS
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a torn last line (a killed run)", path)
                continue
            raise ConfigError(f"{path}: line {i + 1} is not JSON ({exc})") from exc
    return records


def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (a record a kill interrupted) so appends start clean."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def world_dir(spec: ExperimentSpec, key: RunKey, cache: Path) -> Path:
    """The cached dataset of ``key``'s world, simulated on first use."""
    from liverank.data.sim import SimConfig
    from liverank.data.sim.simulate import generate

    overrides = spec.grid.variants[key.variant]
    cfg = SimConfig.preset(key.preset, seed=key.world_seed, **overrides)  # type: ignore[arg-type]
    digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
    path = cache / "worlds" / f"{key.preset}-s{key.world_seed}-{key.variant}-{digest}"
    if not (path / "meta.json").exists():
        log.info("simulating world %s", path.name)
        generate(cfg, path, progress=False)
    return path


def samples_dir(world: Path, cache: Path, seq_len: int = 50) -> Path:
    """The cached offline samples of ``world``, built on first use."""
    from liverank.data.samples import build_samples

    path = cache / "samples" / f"{world.name}-offline-L{seq_len}"
    if not (path / "feature_map.json").exists():
        log.info("building samples %s", path.name)
        build_samples(world, path, seq_len=seq_len, progress=False)
    return path


def run_one(spec: ExperimentSpec, key: RunKey, out: Path) -> dict[str, Any]:
    """Train and test one cell of the grid; returns its record (not written)."""
    from liverank.train.experiment import run_experiment

    if key.stream_mode != "offline":
        raise ConfigError(
            f"stream mode '{key.stream_mode}' is not run by liverank experiment yet (offline only)"
        )
    cache = out / "cache"
    samples = samples_dir(world_dir(spec, key, cache), cache)
    entry = spec.configs[key.config]
    run_hash = key.hash(spec)
    overrides = {
        **entry.overrides,
        "data.samples": str(samples),
        "out": str(out / "runs" / run_hash),
        "train.seed": key.model_seed,
        "train.progress": False,
        "registry": None,
    }
    cfg = load_config(entry.config, overrides)
    started = time.perf_counter()
    result = run_experiment(cfg)
    history = result.fit.history if result.fit else []
    return {
        "hash": run_hash,
        "experiment": key.experiment,
        "config": key.config,
        "model_seed": key.model_seed,
        "preset": key.preset,
        "world_seed": key.world_seed,
        "variant": key.variant,
        "stream_mode": key.stream_mode,
        "code": code_version(),
        "metrics": result.test.to_dict()["slices"],
        "epochs_run": len(history),
        "best_epoch": result.fit.best_epoch if result.fit else None,
        "train_samples_per_s": (
            sum(h.samples_per_s for h in history) / len(history) if history else None
        ),
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
    }


def run_grid(spec: ExperimentSpec, out_dir: str | Path, progress: bool = True) -> int:
    """Run every cell of ``spec`` without a record in ``OUT/results.jsonl``; returns how many
    ran. Records are appended and flushed one at a time (module doc)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = {r["hash"] for r in read_results(out)}
    _drop_torn_tail(out / RESULTS)
    todo = [k for k in spec.runs() if k.hash(spec) not in done]
    log.info("%s: %d runs, %d done, %d to run", spec.name, len(spec.runs()), len(done), len(todo))
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with (
        Progress(*columns, disable=not progress, transient=True) as bar,
        (out / RESULTS).open("a") as f,
    ):
        task = bar.add_task(f"experiment {spec.name}", total=len(todo))
        for key in todo:
            record = run_one(spec, key, out)
            f.write(json.dumps(record) + "\n")
            f.flush()
            bar.advance(task)
    return len(todo)
