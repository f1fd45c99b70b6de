"""Forecast arms (``mode: forecast``): the runner trains / applies a room-statistics forecaster
on the world and records its standardised MSE on all, highlight and other test examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from liverank.errors import ConfigError
from liverank.experiments.runner import read_results, run_grid
from liverank.experiments.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs/foresight/statistics.yaml")


def _spec(tmp_path: Path, foresighter: dict) -> ExperimentSpec:
    raw = {
        "name": "tiny_forecast",
        "claim": "smoke test of forecast arms",
        "baseline": "last_value",
        "headline": "foresighter",
        "configs": {
            "last_value": {
                "config": CFG,
                "mode": "forecast",
                "overrides": {"method": "last_value", "window": 10},
            },
            "foresighter": {"config": CFG, "mode": "forecast", "overrides": foresighter},
        },
        "metric": {"name": "mse", "task": "forecast", "slice": "all"},
        "grid": {
            "model_seeds": [0],
            "world": {"preset": "tiny", "seeds": [0]},
            "variants": {"base": {"n_days": 4}},
        },
        "underpowered_ok": True,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return ExperimentSpec.load(path)


def test_forecast_arms_record_mse_by_slice_and_baselines_need_no_training(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"epochs": 1, "window": 10})
    assert run_grid(spec, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False) == 2
    records = {r["config"]: r for r in read_results(tmp_path / "out")}
    for name, rec in records.items():
        assert rec["stream_mode"] == "forecast"
        slices = rec["metrics"]
        assert {"all", "highlight", "outside-highlight"} <= set(slices), name
        m = slices["all"]["forecast"]
        assert np.isfinite(m["mse"]) and m["mse"] > 0
        assert {"mse_out_room", "mse_convert", "mse_interaction", "mse_in_room"} <= set(m)
        # every test example is in exactly one of the two highlight slices
        parts = (
            slices["highlight"]["forecast"]["count"]
            + slices["outside-highlight"]["forecast"]["count"]
        )
        assert parts == m["count"]
    assert records["last_value"]["history"] == [] and records["last_value"]["epochs_run"] is None
    assert records["foresighter"]["epochs_run"] == 1
    # same test examples, same scale: the two arms are scored on the same rows
    assert (
        records["foresighter"]["metrics"]["all"]["forecast"]["count"]
        == (records["last_value"]["metrics"]["all"]["forecast"]["count"])
    )


def test_a_bad_forecast_config_is_refused_before_any_run(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"horizon": 0})
    with pytest.raises(ConfigError, match="horizon"):
        run_grid(spec, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert read_results(tmp_path / "out") == []


@pytest.mark.slow
def test_a_foresighter_ranker_trains_offline_on_room_sequence_samples(tmp_path: Path) -> None:
    quick = {"train.epochs": 1, "train.max_batches_per_epoch": 5, "train.batch_size": 256}
    room = {"data.room_stats": 10, "data.room_products": 4}
    raw = {
        "name": "tiny_foresight_rank",
        "claim": "smoke test of a foresighter ranker arm",
        "baseline": "mmoe",
        "headline": "foresighter",
        "configs": {
            "mmoe": {"config": str(ROOT / "configs/mmoe.yaml"), "overrides": quick | room},
            "foresighter": {
                "config": str(ROOT / "configs/foresighter.yaml"),
                "overrides": quick | room,
            },
        },
        "grid": {
            "model_seeds": [0],
            "world": {"preset": "tiny", "seeds": [0]},
            "variants": {"base": {"n_days": 3}},
        },
        "underpowered_ok": True,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = ExperimentSpec.load(path)
    assert run_grid(spec, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False) == 2
    records = {r["config"]: r for r in read_results(tmp_path / "out")}
    for rec in records.values():
        assert 0 < rec["metrics"]["all"]["ctr"]["gauc"] < 1
    samples = list((tmp_path / "cache" / "samples").glob("*-RS10-RP4"))
    assert len(samples) == 1  # both arms read one samples directory
