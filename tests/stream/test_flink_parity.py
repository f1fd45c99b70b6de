"""The Apache Flink job (stream/flink_job.py) emits the local engine's rows, row for row.

The job runs on a local Flink mini-cluster in its own environment (``make flink`` creates
``.venv-flink``: PyFlink pins numpy / pyarrow versions older than liverank's; ``make test``
creates it first, so this runs in CI) with Java from the OS. On a slice of the tiny simulated
world (every 12th user, whole (user, room) pairs): ``moment`` with the rows arriving out of order
within the allowed lateness, and ``exit`` in order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.data.io import read_meta, read_table
from liverank.data.sim import SimConfig, simulate
from liverank.stream.engine import StreamEngine, read_stream

ROOT = Path(__file__).resolve().parents[2]
LATENESS_MS = 30_000
FLINK_PYTHON = Path(
    os.environ.get("LIVERANK_FLINK_PYTHON", ROOT / ".venv-flink" / "bin" / "python")
)

pytestmark = pytest.mark.slow


def _disordered(stream: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The same rows in an arrival order shuffled within half the lateness (none late)."""
    rng = np.random.default_rng(seed)
    jitter = rng.integers(0, LATENESS_MS // 2, len(stream))
    return (
        stream.with_columns(pl.Series("_arrival", stream["ts"].to_numpy() + jitter))
        .sort("_arrival", maintain_order=True)
        .drop("_arrival")
    )


def test_flink_job_emits_the_engines_rows(tmp_path: Path) -> None:
    if not FLINK_PYTHON.exists():
        pytest.skip(f"no PyFlink environment at {FLINK_PYTHON}: run `make flink`")
    if shutil.which("java") is None:
        pytest.skip("no java binary: Flink needs Java 17 (apt-get install openjdk-17-jre-headless)")
    data = tmp_path / "data"
    simulate(SimConfig.preset("tiny", seed=0), data, progress=False)
    stream = read_stream(data).filter(pl.col("user_id") % 12 == 0)
    arrivals = {"moment": _disordered(stream, seed=0), "exit": stream}
    assert not arrivals["moment"]["ts"].is_sorted()  # the disorder is real
    out = tmp_path / "flink"
    for mode, rows in arrivals.items():
        rows.write_parquet(tmp_path / f"{mode}_stream.parquet")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run(
            [str(FLINK_PYTHON), "-m", "liverank.stream.flink_job", "--data", str(data),
             "--mode", mode, "--stream", str(tmp_path / f"{mode}_stream.parquet"),
             "--out", str(out), "--lateness-ms", str(LATENESS_MS)],
            env=env, capture_output=True, text=True, timeout=1_200,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    rooms, long_view = read_table(data, "rooms"), read_meta(data).long_view_ms
    for mode, rows in arrivals.items():
        engine = StreamEngine(rooms, long_view, mode, allowed_lateness_ms=LATENESS_MS)
        local = pl.concat([engine.push(c) for c in rows.iter_slices(300)] + [engine.flush()])
        local = local.sort("emit_ts", "request_id", "position", "part")
        flink = pl.read_parquet(out / f"{mode}.parquet")
        assert engine.stats.late == 0 and pl.read_parquet(out / f"{mode}_late.parquet").is_empty()
        assert len(local) > 200, "too few rows for the comparison to mean anything"
        assert flink.columns == local.columns
        assert flink.equals(local), mode
