"""End to end on a tiny simulated platform: simulate → samples → train → evaluate → registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from liverank.cli import main
from liverank.config import DataConfig, ExperimentConfig, TrainConfig
from liverank.data.samples import build_samples
from liverank.data.sim import SimConfig, simulate
from liverank.eval.summary import evaluate_checkpoint
from liverank.train.experiment import load_splits, run_experiment, run_popularity
from liverank.train.registry import ModelRegistry


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    simulate(SimConfig.preset("tiny", seed=3, n_days=3), root / "dataset", progress=False)
    build_samples(root / "dataset", root / "samples", seq_len=20, progress=False)
    return root / "samples"


def _cfg(samples: Path, out: Path, model: str = "mlp", seed: int = 0) -> ExperimentConfig:
    return ExperimentConfig(
        name=model,
        data=DataConfig(samples=samples),
        model=model,
        train=TrainConfig(epochs=2, batch_size=256, seed=seed, progress=False),
        out=out,
        registry=out.parent / "registry",
    )


def test_train_evaluate_publish(samples: Path, tmp_path: Path) -> None:
    cfg = _cfg(samples, tmp_path / "mlp")
    res = run_experiment(cfg)
    for f in (
        "predictions.parquet",
        "metrics.json",
        "history.json",
        "config.yaml",
        "checkpoints/best.pt",
    ):
        assert (res.out_dir / f).exists(), f
    assert 1 <= res.fit.best_epoch <= 2
    # the test split is exactly the last day, and every test sample is predicted once
    pred = pl.read_parquet(res.out_dir / "predictions.parquet")
    _, _, _, test = load_splits(cfg)
    assert pred.height == len(test)
    assert pred["sample_id"].n_unique() == pred.height
    p = pred["p_ctr"].to_numpy()
    assert np.all((p > 0) & (p < 1))
    # published, and the registry copy evaluates to the same numbers
    version = ModelRegistry(cfg.registry).get("mlp")
    assert version.version == res.registry_version == "v0001"
    again = evaluate_checkpoint(version.path, samples)
    assert again.value("ctr", "auc") == pytest.approx(res.test.value("ctr", "auc"), abs=1e-6)


def test_training_is_deterministic_for_a_seed(samples: Path, tmp_path: Path) -> None:
    a = run_experiment(_cfg(samples, tmp_path / "a"))
    b = run_experiment(_cfg(samples, tmp_path / "b"))
    pa = pl.read_parquet(a.out_dir / "predictions.parquet")["p_ctr"].to_numpy()
    pb = pl.read_parquet(b.out_dir / "predictions.parquet")["p_ctr"].to_numpy()
    np.testing.assert_array_equal(pa, pb)


def test_popularity_baseline_runs_on_the_same_split(samples: Path, tmp_path: Path) -> None:
    res = run_popularity(_cfg(samples, tmp_path / "pop"))
    assert 0.4 < res.test.value("ctr", "auc") < 1.0


def test_cli_turns_bad_input_into_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["build-samples", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "s")])
        == 2
    )
    assert "meta.json" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: nope\n")
    assert main(["train", "--config", str(bad), "--samples", str(tmp_path)]) == 2
