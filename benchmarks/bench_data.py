"""Shared benchmark helper: a simulated dataset and its samples directory, built once and reused.

``ensure_samples`` simulates ``SimConfig`` into ``<root>/dataset`` unless ``meta.json`` is there,
builds ``<samples>`` unless ``feature_map.json`` is there, and returns what it cost (read back
from ``calibration.json`` / ``stats.json`` when the work was done by an earlier run).

    info = ensure_samples(SimConfig.preset("small", seed=0), Path("/tmp/x/dataset"),
                          Path("/tmp/x/samples"))
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from liverank.data.io import read_meta
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.errors import ConfigError

log = logging.getLogger(__name__)

#: calibration metrics worth carrying into a benchmark's JSON (behaviour sparsity, domains)
CALIBRATION_KEYS = (
    "ctr",
    "evtr_given_click",
    "lvtr_given_click",
    "ltr_given_click",
    "cmtr_given_click",
    "gtr_given_click",
    "users_without_gift",
    "cross_domain_gap",
)


def ensure_samples(
    sim: SimConfig, dataset: Path, samples: Path, long_len: int = 0, progress: bool = False
) -> dict[str, Any]:
    """Simulate and build samples where missing; return timings, row counts, calibration.

    Returns ``{"simulate_s"`` (generation, from the calibration report), ``"build_samples_s",
    "samples", "positives", "calibration", "reused"}`` plus ``simulate_wall_s`` /
    ``build_samples_wall_s`` for the steps done now; ``reused`` lists the steps skipped because
    their output already existed.
    """
    reused: list[str] = []
    wall: dict[str, float] = {}
    if (dataset / "meta.json").exists():
        _check_same(sim, dataset)
        reused.append("simulate")
    else:
        start = time.perf_counter()
        simulate(sim, dataset, progress=progress)
        wall["simulate_wall_s"] = round(time.perf_counter() - start, 1)  # + calibration
        log.info("simulated %s in %.0f s -> %s", sim.size, wall["simulate_wall_s"], dataset)
    if (samples / "feature_map.json").exists():
        reused.append("build_samples")
    else:
        start = time.perf_counter()
        build_samples(dataset, samples, long_len=long_len, progress=progress)
        wall["build_samples_wall_s"] = round(time.perf_counter() - start, 1)
        log.info("built samples in %.0f s -> %s", wall["build_samples_wall_s"], samples)
    calib = json.loads((dataset / "calibration.json").read_text())
    stats = json.loads((samples / "stats.json").read_text())
    values = {m["name"]: m["value"] for m in calib["metrics"]}
    return {
        "simulate_s": round(float(calib["seconds"]), 1),
        "calibration_passed": calib["passed"],
        "build_samples_s": round(float(stats["seconds"]), 1),
        "samples": int(stats["rows"]),
        "positives": stats["positives"],
        "calibration": {k: values.get(k) for k in CALIBRATION_KEYS},
        "reused": reused,
        **wall,
    }


def _check_same(sim: SimConfig, dataset: Path) -> None:
    """Refuse to reuse a dataset simulated with another configuration."""
    saved = read_meta(dataset).extra.get("config")
    if saved is None:
        return
    wanted = json.loads(sim.model_dump_json())
    diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if diff:
        raise ConfigError(
            f"{dataset} was simulated with another configuration (differs in {diff}); "
            "delete it or use another work directory"
        )
