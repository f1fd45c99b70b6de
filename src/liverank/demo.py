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
from liverank.data.sim.calibration import CalibrationReport, format_metric_value
from liverank.eval.report import ReportSection, html_table, write_report
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
    calibration = simulate(sim, dataset)
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
    report = write_report(
        evals,
        out / "report",
        title=f"liverank demo — simulated '{size}' platform, seed {seed}",
        notes=_summary(size, seed, calibration, timings),
        sections=[_calibration_section(calibration), _timings_section(timings)],
    )
    log.info("report: %s", report)
    return results


def _summary(
    size: str, seed: int, calibration: CalibrationReport, timings: dict[str, float]
) -> str:
    """The report's opening note: what was run, in one paragraph each."""
    checked = [m for m in calibration.metrics if m.passed is not None]
    verdict = (
        f"all {len(checked)} calibration targets met"
        if calibration.passed
        else f"{len(calibration.failures)} of {len(checked)} calibration targets missed"
    )
    return (
        f"Simulated '{size}' platform (seed {seed}): {verdict} (see Calibration). Trained on "
        "the first days, early-stopped on the next, tested on the last; every metric below is "
        "on the test day.\n\n"
        f"Whole run: {sum(timings.values()):.0f} s (see Timings)."
    )


def _calibration_section(report: CalibrationReport) -> ReportSection:
    ok = {True: "yes", False: "NO", None: ""}
    rows = [
        (m.name, format_metric_value(m.value), m.target, ok[m.passed], m.note)
        for m in report.metrics
    ]
    off = [k for k, on in report.switches.items() if not on]
    caption = (
        f"The simulated dataset measured against its targets (generated in "
        f"{report.seconds:.1f} s; phenomena off: {', '.join(off) or 'none'}). "
        "The same table is in dataset/calibration.md; docs/simulator.md explains each metric."
    )
    metrics = html_table(
        ["metric", "measured", "target", "ok", "what is measured"],
        rows,
        numeric=["measured"],
        caption=caption,
    )
    tables = html_table(
        ["table", "rows"], [(t, f"{n:,}") for t, n in report.rows.items()], numeric=["rows"]
    )
    return ReportSection("calibration", "Calibration of the simulated data", metrics + tables)


def _timings_section(timings: dict[str, float]) -> ReportSection:
    rows = [(step, f"{sec:.1f}") for step, sec in timings.items()]
    rows.append(("total", f"{sum(timings.values()):.1f}"))
    return ReportSection(
        "timings", "Timings", html_table(["step", "seconds"], rows, numeric=["seconds"])
    )
