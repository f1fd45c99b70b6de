"""``liverank experiment run``: run an experiment grid, one record per run in ``results.jsonl``.

For each :class:`~liverank.experiments.spec.RunKey` of the grid whose hash is not yet in
``OUT/results.jsonl``:

1. the world (preset, seed, variant overrides) is simulated once into ``CACHE/worlds/``, named
   by the hash of its configuration, and reused by every run and every experiment on it
   (``CACHE`` defaults to ``OUT/../cache``, shared by the experiments under one folder);
2. its samples are built once into ``CACHE/samples/``: the offline samples (with the long
   histories a config asks for) or the rows a stream mode emits, plus the ``exit`` rows every
   stream arm is scored on;
3. the arm runs with the run's model seed:

   * ``offline``: ``liverank train``'s code (epochs over the training days, early stopping on
     the validation day, test on the last day); the record has the test metrics and the
     per-epoch history;
   * a stream mode (``exit`` / ``fast_slow`` / ``moment``): the interleaved prequential run of
     :mod:`liverank.train.stream_eval` over the whole period in ``stream.slice_ms`` slices (every
     impression scored at its time before any of its labels is trained on); the metrics are
     those of the impressions after ``stream.warmup_hours``, plus the Moment slices of
     :mod:`liverank.eval.moment_metrics` (inside / outside highlight windows, within-room AUC)
     when the world has highlight ground truth;

4. one JSON line is appended: the run's key and hash, the code version, the metrics by slice /
   task / metric, the epochs used, training samples/s, seconds, peak RSS and device.

Runs go ``jobs`` at a time in worker processes (each with ``threads`` torch threads); the parent
alone writes ``results.jsonl``, one flushed line per finished run, so a killed grid resumes
where it stopped (a torn last line is dropped and that run repeated).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import resource
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from liverank.config import ExperimentConfig, load_config
from liverank.errors import ConfigError
from liverank.experiments.spec import ExperimentSpec, RunKey

log = logging.getLogger(__name__)
RESULTS = "results.jsonl"
HOUR_MS = 3_600_000


def code_version() -> str:
    """``git describe`` of the package's checkout ("unknown" outside a git checkout);
    ``LIVERANK_CODE_VERSION`` overrides it (a copy of a checkout without its ``.git``)."""
    if os.environ.get("LIVERANK_CODE_VERSION"):
        return os.environ["LIVERANK_CODE_VERSION"]
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
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


# ---------------------------------------------------------------------------------- caches
def world_dir(spec: ExperimentSpec, key: RunKey, cache: Path) -> Path:
    """The cached dataset of ``key``'s world, simulated on first use."""
    from liverank.data.sim import SimConfig
    from liverank.data.sim.simulate import generate

    overrides = spec.grid.variants[key.variant]
    cfg = SimConfig.preset(key.preset, seed=key.world_seed, **overrides)  # type: ignore[arg-type]
    digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
    path = cache / "worlds" / f"{key.preset}-s{key.world_seed}-{digest}"
    if not (path / "meta.json").exists():
        log.info("simulating world %s (%s)", path.name, key.variant)
        generate(cfg, path, progress=False)
    return path


def samples_dir(
    world: Path,
    cache: Path,
    seq_len: int = 50,
    long_len: int = 0,
    shopping: bool = False,
    segments: int = 0,
    graph_k: int = 0,
    room_stats: int = 0,
    room_products: int = 0,
) -> Path:
    """The cached offline samples of ``world`` (with ``long_len`` long histories, with the
    shopping columns, with MMBee's ``segments`` / ``graph_k`` columns, with LiveForesighter's
    ``room_stats`` / ``room_products`` columns), built on first use."""
    from liverank.data.samples import build_samples

    suffix = (f"-K{long_len}" if long_len else "") + ("-shop" if shopping else "")
    suffix += (f"-S{segments}" if segments else "") + (f"-G{graph_k}" if graph_k else "")
    suffix += (f"-RS{room_stats}" if room_stats else "") + (
        f"-RP{room_products}" if room_products else ""
    )
    path = cache / "samples" / f"{world.name}-offline-L{seq_len}{suffix}"
    if not (path / "feature_map.json").exists():
        log.info("building samples %s", path.name)
        build_samples(
            world,
            path,
            seq_len=seq_len,
            progress=False,
            long_len=long_len,
            shopping=shopping,
            segments=segments,
            graph_k=graph_k,
            room_stats=room_stats,
            room_products=room_products,
        )
    return path


def stream_samples_dir(
    world: Path,
    cache: Path,
    mode: str,
    seq_len: int = 50,
    long_len: int = 0,
    segments: int = 0,
    graph_k: int = 0,
) -> Path:
    """The cached rows stream ``mode`` emits from ``world`` (with ``long_len`` long
    histories, MMBee's ``segments`` / ``graph_k`` columns), built on first use, with the label
    latency of its positive rows in ``label_latency.json`` beside them."""
    from liverank.stream.samples import build_stream_samples

    suffix = f"-K{long_len}" if long_len else ""
    suffix += (f"-S{segments}" if segments else "") + (f"-G{graph_k}" if graph_k else "")
    path = cache / "samples" / f"{world.name}-{mode}-L{seq_len}{suffix}"
    if not (path / "stats.json").exists():
        log.info("building %s stream samples %s", mode, path.name)
        build_stream_samples(
            world,
            path,
            mode,
            seq_len=seq_len,
            progress=False,
            long_len=long_len,
            segments=segments,
            graph_k=graph_k,
        )
    if not (path / "label_latency.json").exists():
        (path / "label_latency.json").write_text(json.dumps(label_latency(path), indent=2))
    return path


def label_latency(stream_dir: Path) -> dict[str, dict[str, float]]:
    """Per task: how long after the impression a positive label reaches training in this
    stream (``emit_ts - ts`` of the rows reporting it positive): median, p90, share within 60 s,
    and the positives it reports."""
    import numpy as np

    from liverank.data.loader import SampleSet
    from liverank.features.spec import FeatureMap

    fmap = FeatureMap.load(stream_dir / "feature_map.json")
    tasks = list(fmap.tasks)
    # only the columns it reads: the whole stream is several GB of features
    rows = SampleSet.load(
        stream_dir, columns=["emit_ts", "ts", *tasks, *(f"mask_{t}" for t in tasks)]
    )
    delay = (rows["emit_ts"].astype(np.int64) - rows["ts"].astype(np.int64)) / 1000.0  # [M] s
    out: dict[str, dict[str, float]] = {}
    for t in tasks:
        if t not in rows.columns:
            continue
        pos = (rows[t] > 0) & (rows[f"mask_{t}"] > 0)
        d = delay[pos]
        out[t] = {
            "positives": int(pos.sum()),
            "median_s": float(np.median(d)) if d.size else float("nan"),
            "p90_s": float(np.quantile(d, 0.9)) if d.size else float("nan"),
            "within_60s": float((d <= 60).mean()) if d.size else float("nan"),
        }
    return out


def prepare(spec: ExperimentSpec, key: RunKey, cache: Path) -> dict[str, Path]:
    """Simulate / build everything ``key`` reads (in the parent, before the runs start)."""
    world = world_dir(spec, key, cache)
    if key.stream_mode == "forecast":  # no samples: the arm reads the world's room statistics
        _forecast_config(spec, key)  # a bad config fails here, before any run
        base = dataclasses.replace(key, variant=next(iter(spec.grid.variants)))
        return {"world": world, "windows": world_dir(spec, base, cache)}
    cfg = _config(spec, key, Path("unused"), device="cpu", threads=1)
    if key.stream_mode == "offline":
        data = cfg.data
        if data.rows == "moment":  # offline protocol (day split) on the moment stream's rows
            if data.shopping or data.room_stats or data.room_products:
                raise ConfigError(
                    f"config '{key.config}': data.shopping / room_stats / room_products are "
                    "built for impression rows only"
                )
            samples = stream_samples_dir(
                world,
                cache,
                "moment",
                long_len=data.long_len,
                segments=data.segments,
                graph_k=data.graph_k,
            )
            return {"world": world, "samples": samples}
        samples = samples_dir(
            world,
            cache,
            long_len=data.long_len,
            shopping=data.shopping,
            segments=data.segments,
            graph_k=data.graph_k,
            room_stats=data.room_stats,
            room_products=data.room_products,
        )
        return {"world": world, "samples": samples}
    d = cfg.data
    if (
        d.shopping
        or d.segments
        or d.graph_k
        or d.room_stats
        or d.room_products
        or (d.rows != "impression")
    ):
        raise ConfigError(
            f"config '{key.config}': data.shopping / segments / graph_k / room_stats / room_products / rows samples are built "
            "for offline arms only (a stream arm's rows are its stream mode's)"
        )
    long_len = cfg.data.long_len
    train_dir = stream_samples_dir(world, cache, key.stream_mode, long_len=long_len)
    eval_dir = stream_samples_dir(world, cache, "exit", long_len=long_len)
    if long_len and _store_digest(train_dir) != _store_digest(eval_dir):
        # the model reads the training set's store with the eval rows' row ranges
        raise ConfigError(
            f"{train_dir.name} and {eval_dir.name}: different long-history stores; the eval "
            "rows' history ranges would point into the wrong rows"
        )
    # highlight windows come from the base world of the same seed: where a variant switches
    # highlights off, the same (room, time) windows are a placebo (the schedules are equal)
    base = dataclasses.replace(key, variant=next(iter(spec.grid.variants)))
    return {
        "world": world,
        "samples": train_dir,
        "eval": eval_dir,
        "windows": world_dir(spec, base, cache),
    }


def _store_digest(samples: Path) -> str:
    """Content hash of a samples directory's long-history store (its files, in name order)."""
    digest = hashlib.sha256()
    for f in sorted((samples / "long_history").rglob("*")):
        if f.is_file():
            digest.update(f.relative_to(samples).as_posix().encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _config(spec: ExperimentSpec, key: RunKey, out: Path, device: str, threads: int):
    entry = spec.configs[key.config]
    overrides = {
        **entry.overrides,
        "out": str(out),
        "train.seed": key.model_seed,
        "train.progress": False,
        "train.threads": threads,
        "train.device": device,
        "registry": None,
    }
    return load_config(entry.config, overrides)


def _forecast_config(spec: ExperimentSpec, key: RunKey):
    from liverank.foresight.arms import load_arm_config

    entry = spec.configs[key.config]
    return load_arm_config(entry.config, {**entry.overrides, "seed": key.model_seed})


# ---------------------------------------------------------------------------------- one run
def run_one(
    spec: ExperimentSpec,
    key: RunKey,
    out: Path,
    paths: dict[str, Path],
    *,
    device: str = "cpu",
    threads: int = 2,
) -> dict[str, Any]:
    """Train and test one cell of the grid; returns its record (not written)."""
    run_hash = key.hash(spec)
    peak_reset = _reset_peak_rss()
    started = time.perf_counter()
    if key.stream_mode == "forecast":
        import torch

        from liverank.foresight.arms import run_forecast_arm

        torch.set_num_threads(threads)
        body = run_forecast_arm(paths["world"], _forecast_config(spec, key), paths["windows"])
    elif key.stream_mode == "offline":
        cfg = _config(spec, key, out / "runs" / run_hash, device, threads)
        body = _run_offline(cfg, paths)
    else:
        cfg = _config(spec, key, out / "runs" / run_hash, device, threads)
        body = _run_stream(spec, key, cfg, paths, threads, device)
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
        **body,
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_gb": _peak_rss_gb(peak_reset),
        "device": device,
        "threads": threads,
    }


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS counter (Linux ``clear_refs``), so that the record's
    ``peak_rss_gb`` is this run's and not the largest of every run the process made."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_gb(was_reset: bool) -> float:
    """Peak resident memory (GB) since :func:`_reset_peak_rss`, else of the process's life."""
    if was_reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024**2, 2)  # kB -> GB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def _run_offline(cfg: ExperimentConfig, paths: dict[str, Path]) -> dict[str, Any]:
    from liverank.train.experiment import load_splits, run_experiment

    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"samples": paths["samples"]})})
    splits = load_splits(cfg)
    result = run_experiment(cfg, splits)
    history = result.fit.history if result.fit else []
    metrics = result.test.to_dict()["slices"]
    metrics.update(_ranking_slice(result.out_dir / "predictions.parquet"))
    diagnostics = _farm_diagnostics(result.fit.checkpoint, splits[3]) if result.fit else None
    return {
        **({"diagnostics": {"farm": diagnostics}} if diagnostics else {}),
        "metrics": metrics,
        "history": [
            {
                "epoch": h.epoch,
                "loss": h.train_loss,
                "val_metric": h.val_metric,
                "seconds": h.seconds,
                "samples_per_s": h.samples_per_s,
                "parts": h.parts,
            }
            for h in history
        ],
        "epochs_run": len(history),
        "best_epoch": result.fit.best_epoch if result.fit else None,
        "train_samples_per_s": (
            sum(h.samples_per_s for h in history) / len(history) if history else None
        ),
    }


#: bins of the per-user cosine of the two domains' preferences (FARM Figure 3)
COS_BINS = [round(-1.0 + 0.05 * i, 2) for i in range(41)]


def _farm_diagnostics(checkpoint: Path, test: Any, rows: int = 20_000) -> dict[str, Any] | None:
    """FARM's mechanism on the first ``rows`` test impressions, when the model has a FARM
    module: the histogram of the cosine between the video and live preferences (rows with both
    sequences; the paper's Figure 3) and the mean low- / high-pass gates per domain (its
    Table 3). ``None`` for other models."""
    import numpy as np
    import torch

    from liverank.models.ranker import Ranker

    model = Ranker.load(checkpoint)
    farm = dict(model.feature_modules.items()).get("farm")
    if farm is None or not hasattr(farm, "diagnostics"):
        return None
    model.attach_long_history(test.long_history, test.long_len)
    parts: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for lo in range(0, min(rows, len(test)), 4096):
            batch = test.batch(slice(lo, min(lo + 4096, rows, len(test))))
            for k, v in farm.diagnostics(batch, model.embeddings).items():
                if v.dim() == 1:
                    parts.setdefault(k, []).append(v.float().numpy())
    d = {k: np.concatenate(v) for k, v in parts.items()}
    both = d["video_nonempty"].astype(bool) & d["live_nonempty"].astype(bool)
    counts, _ = np.histogram(d["cos_video_live"][both], bins=np.array(COS_BINS))
    gates = {g: float(d[g].mean()) for g in ("alpha", "beta", "gamma", "delta") if g in d}
    return {
        "rows": int(both.sum()),
        "cos_bins": COS_BINS,
        "cos_counts": counts.tolist(),
        "cos_mean": float(d["cos_video_live"][both].mean()) if both.any() else None,
        "gates": gates,
    }


def _ranking_slice(predictions: Path) -> dict[str, Any]:
    """The ``ranking`` slice: NDCG@K of the fused relevance when each test request is ranked by
    ``p_ctr`` (task ``p_ctr``) and by the eq. 4 fusion with the a priori exponents (task
    ``fused``) and their within-run difference (task ``fused_minus_p_ctr``), from
    :mod:`liverank.eval.fusion_eval`; empty when a relevance task is missing."""
    import polars as pl

    from liverank.eval.fusion_eval import A_PRIORI_EXPONENTS, fusion_ranking_metrics

    pred = pl.read_parquet(predictions)
    if not all(f"p_{t}" in pred.columns for t in A_PRIORI_EXPONENTS):
        return {}
    ks = (1, 3, 5)
    m = fusion_ranking_metrics(pred, A_PRIORI_EXPONENTS, ks=ks)
    return {
        "ranking": {
            by: {f"ndcg@{k}": m[f"ndcg@{k}_{tag}"] for k in ks}
            for by, tag in (("p_ctr", "ctr"), ("fused", "fused"), ("fused_minus_p_ctr", "delta"))
        }
    }


def _run_stream(
    spec: ExperimentSpec,
    key: RunKey,
    cfg: ExperimentConfig,
    paths: dict[str, Path],
    threads: int,
    device: str,
) -> dict[str, Any]:
    import polars as pl

    from liverank.eval.evaluate import evaluate
    from liverank.train.experiment import ranker_config
    from liverank.train.stream_run import run_stream_training

    warmup = spec.stream.warmup_hours
    run = run_stream_training(
        paths["samples"],
        ranker_config(cfg),
        key.stream_mode,
        cfg.out,
        eval_dir=paths["eval"],
        slice_ms=spec.stream.slice_ms,
        batch_size=cfg.train.batch_size,
        lr_sparse=cfg.train.lr_sparse,
        lr_dense=cfg.train.lr_dense,
        seed=key.model_seed,
        warmup_ms=warmup * HOUR_MS,
        threads=threads,
        device=device,
    )
    tasks = list(run.model.tasks)
    pred = run.result.predictions.filter(pl.col("hour") >= warmup)
    by_activity = "user_activity" in pred.columns
    metrics = evaluate(pred, tasks, by_activity=by_activity).to_dict()["slices"]
    metrics.update(_moment_slices(pred, tasks, paths["windows"], metrics))
    latency = json.loads((Path(paths["samples"]) / "label_latency.json").read_text())
    seconds = run.result.seconds
    return {
        "metrics": metrics,
        "history": [],
        "epochs_run": 1,
        "best_epoch": None,
        "train_samples_per_s": run.summary["train_rows"] / seconds if seconds else None,
        "train_steps": run.summary["train_steps"],
        "label_latency": latency,
    }


def _moment_slices(pred, tasks, world: Path, metrics: dict) -> dict[str, Any]:
    """The highlight-window slices and within-room AUC (when the module and the world's
    highlight ground truth are there)."""
    try:
        from liverank.eval.moment_metrics import highlight_windows, moment_slices
    except ImportError:  # pragma: no cover - until the module lands
        return {}
    windows = highlight_windows(world)
    slices = moment_slices(pred, tasks, windows)
    merged = dict(slices)
    if "all" in slices:  # add room_auc to the evaluator's "all" slice instead of replacing it
        merged["all"] = {
            t: {**metrics.get("all", {}).get(t, {}), **v} for t, v in slices["all"].items()
        }
    return merged


def _worker(
    spec: ExperimentSpec, key: RunKey, out: Path, paths: dict[str, Path], device: str, threads: int
) -> dict[str, Any]:
    """Process-pool entry point: logging set up in the child, one run."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run_one(spec, key, out, paths, device=device, threads=threads)


# ---------------------------------------------------------------------------------- the grid
def run_grid(
    spec: ExperimentSpec,
    out_dir: str | Path,
    progress: bool = True,
    *,
    jobs: int = 1,
    device: str = "cpu",
    cpu_budget: int | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    configs: list[str] | None = None,
) -> int:
    """Run every cell of ``spec`` without a record in ``OUT/results.jsonl``; returns how many
    ran. ``jobs`` runs at a time, each with ``cpu_budget // jobs`` torch threads (``cpu_budget``
    defaults to the machine's cores; ``threads`` sets it directly, e.g. two runners of one
    thread each, split with ``configs``, on a 2-core machine); ``limit`` stops after that many runs (the rest stay for a
    later call); ``configs`` runs only those arms (a grid split across machines). Records are
    appended and flushed one at a time (module doc)."""
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    from liverank.train.device import resolve_device

    resolve_device(device)  # a clear error now rather than in every worker
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out.parent / "cache"
    budget = cpu_budget or os.cpu_count() or 1
    threads = threads or max(1, budget // jobs)
    _drop_torn_tail(out / RESULTS)
    reused = reuse_records(spec, out)
    if reused:
        log.info("%s: %d runs reused from other experiments (same content hash)", spec.name, reused)
    done = {r["hash"] for r in read_results(out)}
    unknown = sorted(set(configs or []) - set(spec.configs))
    if unknown:
        raise ConfigError(f"configs {unknown} are not in the experiment's {list(spec.configs)}")
    todo = [
        k
        for k in spec.runs()
        if k.hash(spec) not in done and (configs is None or k.config in configs)
    ]
    if limit is not None:
        todo = todo[:limit]
    check_configs(spec, todo)
    log.info("%s: %d runs, %d done, %d to run", spec.name, len(spec.runs()), len(done), len(todo))
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"experiment {spec.name} ({jobs} jobs)", total=len(todo))

        def write(record: dict[str, Any]) -> None:
            append_record(out, record)
            bar.advance(task)

        _run_todo(spec, todo, out, cache, write, jobs, device, threads)
    return len(todo)


def check_configs(spec: ExperimentSpec, keys: list[RunKey]) -> None:
    """Load the config of every arm among ``keys`` once, so that a bad one fails before any run."""
    for key in {k.config: k for k in keys}.values():
        if key.stream_mode == "forecast":
            _forecast_config(spec, key)
        else:
            _config(spec, key, Path("unused"), device="cpu", threads=1)


def append_record(out: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to ``OUT/results.jsonl`` with one ``os.write`` on an O_APPEND
    descriptor: a line lands whole, also when two runners (a grid split with ``--configs``, a
    queue) append to the same results directory."""
    line = (json.dumps(_json_safe(record)) + "\n").encode()
    fd = os.open(out / RESULTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, line) != len(line):  # pragma: no cover - a full disk
            raise OSError(f"short write to {out / RESULTS}")
    finally:
        os.close(fd)


def reuse_records(spec: ExperimentSpec, out: Path) -> int:
    """Copy into ``OUT/results.jsonl`` the records of this grid's runs that sibling experiments
    (``OUT/../*/results.jsonl``) already made; returns how many.

    A run's hash covers everything that determines its result (the config file's text, the
    overrides, the world, the stream settings, the model seed; not the experiment's name), so
    the same run in two experiment files (e.g. the exit / moment arms of ``moment`` and
    ``moment_stay``) is trained once. A copied record gets this grid's names (``experiment``,
    ``config``, ``variant``) and ``reused_from`` = the directory it came from.
    """
    keys = {k.hash(spec): k for k in spec.runs()}
    have = {r["hash"] for r in read_results(out)}
    copies = []
    for other in sorted(out.parent.glob(f"*/{RESULTS}")):
        if other.parent.resolve() == out.resolve():
            continue
        for record in read_results(other.parent):
            key = keys.get(record.get("hash", ""))
            if key is None or record["hash"] in have:
                continue
            have.add(record["hash"])
            copies.append(
                {
                    **record,
                    "experiment": spec.name,
                    "config": key.config,
                    "variant": key.variant,
                    "reused_from": other.parent.name,
                }
            )
    for record in copies:
        append_record(out, record)
    return len(copies)


#: how often a worker process checks that the process that started it is alive (seconds)
ORPHAN_CHECK_S = 2.0


def exit_with_parent(parent: int, interval_s: float = ORPHAN_CHECK_S) -> None:
    """Worker-pool initializer: end this process when ``parent`` (the pid of the process that
    made the pool) is no longer its parent.

    A runner killed from outside (``kill``, a lost terminal) cannot shut its pool down, and
    its workers would train on for an hour each with nobody to record their results (records
    are written by the parent). A daemon thread polls the parent pid and exits this process when
    the parent is gone (the worker is re-parented: its parent pid changes). The pid is passed
    in rather than read here: a parent killed while the worker was still starting would
    otherwise be missed.
    """

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(3)

    if os.getppid() != parent:  # already gone while this process started
        os._exit(3)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(jobs: int, **kwargs: Any) -> ProcessPoolExecutor:
    """A pool of spawned worker processes (polars / torch thread pools do not survive a fork)
    that end with the process that made it (:func:`exit_with_parent`)."""
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=ctx,
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
        **kwargs,
    )


def _run_todo(spec, todo, out, cache, write, jobs: int, device: str, threads: int) -> None:
    """Run ``todo`` (``jobs`` at a time), passing each record to ``write`` as it finishes.
    Worlds and samples are prepared in the parent just before a run needs them (a grid cut
    short has not simulated the worlds of runs it never reached)."""
    if jobs == 1:
        for key in todo:
            paths = prepare(spec, key, cache)
            write(run_one(spec, key, out, paths, device=device, threads=threads))
        return
    with worker_pool(jobs) as pool:
        pending: set[Future] = set()
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < jobs:
                key = queue.pop(0)
                paths = prepare(spec, key, cache)
                pending.add(pool.submit(_worker, spec, key, out, paths, device, threads))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                write(fut.result())


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
