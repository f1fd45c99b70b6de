"""``liverank demo``: the whole chain on a small simulated platform, with embedded defaults.

simulate → build samples → popularity baseline + train each model → evaluate on the test day →
comparison table on the terminal + an HTML report. Everything lands under ``out``::

    out/dataset/    canonical tables + calibration.md/json
    out/samples/    Parquet sample shards + feature_map.json
    out/runs/<m>/   per-model run directory (config, checkpoints, predictions, metrics)
    out/registry/   model registry with versioned checkpoints
    out/report/     report.html (plots embedded) + results/<model>.json
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from liverank.config import DataConfig, ExperimentConfig, TrainConfig
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.eval.report import write_report
from liverank.eval.summary import print_comparison
from liverank.train.experiment import ExperimentResult, load_splits, run_experiment, run_popularity

log = logging.getLogger(__name__)

DEMO_EPOCHS = {"tiny": 2, "small": 3, "medium": 2}
#: train / validation / test need at least three simulated days
MIN_DAYS = 3


def run_demo(
    out: Path,
    size: str = "small",
    seed: int = 0,
    models: Sequence[str] = ("mlp", "ple"),
    epochs: int | None = None,
) -> dict[str, ExperimentResult]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    dataset = out / "dataset"
    log.info("simulating a '%s' platform (seed %d) into %s", size, seed, dataset)
    sim = SimConfig.preset(size, seed=seed)
    if sim.n_days < MIN_DAYS:
        sim = SimConfig.preset(size, seed=seed, n_days=MIN_DAYS)
    simulate(sim, dataset)
    timings["simulate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    samples = out / "samples"
    log.info("building samples into %s", samples)
    build_samples(dataset, samples)
    timings["build-samples"] = time.perf_counter() - t0

    base = ExperimentConfig(
        name="popularity",
        data=DataConfig(samples=samples),
        train=TrainConfig(epochs=epochs or DEMO_EPOCHS.get(size, 3), seed=seed),
        out=out / "runs" / "popularity",
        registry=out / "registry",
    )
    splits = load_splits(base)
    results: dict[str, ExperimentResult] = {}
    t0 = time.perf_counter()
    results["popularity"] = run_popularity(base, splits)
    timings["popularity"] = time.perf_counter() - t0
    for name in models:
        cfg = base.model_copy(update={"name": name, "model": name, "out": out / "runs" / name})
        log.info("training '%s'", name)
        t0 = time.perf_counter()
        results[name] = run_experiment(cfg, splits)
        timings[f"train {name}"] = time.perf_counter() - t0

    evals = {name: r.test for name, r in results.items()}
    print_comparison(evals)
    notes = "\n".join(f"{step}: {sec:.1f} s" for step, sec in timings.items())
    calibration = dataset / "calibration.md"
    report = write_report(
        evals,
        out / "report",
        title=f"liverank demo — simulated '{size}' platform, seed {seed}",
        notes=(calibration.read_text() if calibration.exists() else "") + "\n\nTimings\n" + notes,
    )
    log.info("report: %s", report)
    return results
