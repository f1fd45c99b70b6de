"""``liverank foresight trace`` (Figure 5, ours): the per-room traces, the numbers that read
them, room selection and errors, and the command end to end on a tiny world."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from liverank.errors import ConfigError, UnknownIdError
from liverank.foresight.trace import MINUTE_MS, trace_frame

HOUR = 60 * MINUTE_MS


def _pred(seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Room 7 doubles its CTR in its second hour (a highlight); room 8 is steady and busier
    but has no highlight. ``p_with`` follows room 7's step, ``p_without`` does not."""
    rng = np.random.default_rng(seed)
    rows = []
    for live, n, steady in ((7, 4000, False), (8, 6000, True)):
        ts = np.sort(rng.integers(0, 2 * HOUR, n))
        rate = np.where(steady | (ts < HOUR), 0.1, 0.3)
        click = (rng.random(n) < rate).astype(np.float32)
        rows.append(
            pl.DataFrame(
                {
                    "live_id": np.full(n, live),
                    "ts": ts,
                    "ctr": click,
                    "p_with": rate + rng.normal(0, 0.01, n),
                    "p_without": np.full(n, 0.2) + rng.normal(0, 0.01, n),
                }
            )
        )
    ticks = pl.DataFrame({"live_id": [7, 7, 8], "ts": [0, HOUR, 0], "excitement": [0.2, 1.5, 0.2]})
    windows = pl.DataFrame({"live_id": [7], "start_ts": [HOUR], "end_ts": [2 * HOUR]})
    return pl.concat(rows), ticks, windows


def test_a_model_that_follows_the_room_reads_better() -> None:
    pred, ticks, windows = _pred()
    traces = trace_frame(pred, ticks, windows, n_rooms=1, bin_ms=10 * MINUTE_MS)
    (room,) = traces.summary["rooms"]
    assert room["live_id"] == 7  # the busiest room with a highlight, not the busiest room
    assert room["bins"] == 12 and room["impressions"] == 4000
    assert room["room_auc_with"] > 0.6 > room["room_auc_without"] > 0.4
    assert room["bin_corr_with"] > 0.8 and abs(room["bin_corr_without"]) < 0.8
    b = traces.bins
    assert (
        b["impressions"].sum() == 4000
        and b["clicks"].sum() == pred.filter(pl.col("live_id") == 7)["ctr"].sum()
    )
    late = b.filter(pl.col("bin_ts") >= HOUR)
    assert late["ctr"].mean() == pytest.approx(0.3, abs=0.05)
    assert traces.windows.height == 1 and traces.ticks["live_id"].unique().to_list() == [7]
    png = io.BytesIO()
    traces.figure().savefig(png, format="png")
    assert png.getvalue()[:4] == b"\x89PNG"


def test_rooms_by_id_and_errors() -> None:
    pred, ticks, windows = _pred()
    traces = trace_frame(pred, ticks, windows, rooms=[8, 7])
    assert [r["live_id"] for r in traces.summary["rooms"]] == [8, 7]
    with pytest.raises(UnknownIdError, match=r"\[99\]"):
        trace_frame(pred, ticks, windows, rooms=[99])
    with pytest.raises(ConfigError, match="lacks"):
        trace_frame(pred.drop("p_with"), ticks, windows)
    with pytest.raises(ConfigError, match="bin_ms"):
        trace_frame(pred, ticks, windows, bin_ms=0)


def test_masked_rows_are_not_traced() -> None:
    pred, ticks, windows = _pred()
    masked = pred.with_columns(
        pl.when(pl.col("ts") < HOUR).then(0.0).otherwise(1.0).alias("mask_ctr")
    )
    traces = trace_frame(masked, ticks, windows, rooms=[7], bin_ms=10 * MINUTE_MS)
    assert traces.bins["bin_ts"].min() >= HOUR


def test_the_command_end_to_end(tmp_path: Path) -> None:
    """Two untrained rankers (one with the module, one without) on a tiny world's samples:
    the command writes the figure, the bins and the summary for the busiest lit rooms."""
    from liverank.cli import main
    from liverank.data.loader import SampleSet
    from liverank.data.samples import build_samples
    from liverank.data.sim import SimConfig, simulate
    from liverank.models.ranker import Ranker
    from liverank.models.zoo import get_config

    simulate(SimConfig.preset("tiny", seed=1), tmp_path / "w", progress=False)
    build_samples(
        tmp_path / "w", tmp_path / "s", seq_len=5, progress=False, room_stats=8, room_products=3
    )
    fm = SampleSet.load(tmp_path / "s").feature_map
    torch.manual_seed(0)
    with_cfg = get_config("foresighter")
    with_cfg.modules[-1].params = {"dim": 8, "layers": 1, "product_dim": 8, "ranker_dim": 4}
    Ranker(fm, with_cfg).save(tmp_path / "with.pt")
    Ranker(fm, get_config("mmoe")).save(tmp_path / "without.pt")
    out = tmp_path / "trace"
    code = main(
        ["foresight", "trace", "--with", str(tmp_path / "with.pt"),
         "--without", str(tmp_path / "without.pt"), "--samples", str(tmp_path / "s"),
         "--data", str(tmp_path / "w"), "--out", str(out), "--rooms", "2"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rooms"]) == 2 and summary["all_rooms"]["impressions"] > 0
    assert (out / "trace.png").stat().st_size > 10_000
    bins = pl.read_parquet(out / "trace.parquet")
    assert set(bins["live_id"].to_list()) == {r["live_id"] for r in summary["rooms"]}
    assert main(
        ["foresight", "trace", "--with", str(tmp_path / "with.pt"),
         "--without", str(tmp_path / "without.pt"), "--samples", str(tmp_path / "s"),
         "--data", str(tmp_path / "w"), "--out", str(out), "--live-id", "999999"]
    ) != 0  # fmt: skip
