"""The interleaved prequential protocol: slice schedule, ordering, shared eval set, entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverank.data.loader import SampleSet
from liverank.errors import ConfigError, DataValidationError
from liverank.features.spec import TASKS
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.optim import build_optimizers
from liverank.train.registry import ModelRegistry
from liverank.train.stream_eval import InterleavedTrainer, slice_schedule, stream_metrics
from liverank.train.stream_run import final_labels, run_stream_training
from liverank.train.streaming import PrequentialTrainer

SLICE = 60_000
N = 600  # impressions, one per second: 10 minutes of event time


def _impressions(n: int = N, seed: int = 1) -> SampleSet:
    fm = synthetic_feature_map()
    (batch,) = synthetic_batches(fm, 1, n, seed=seed)
    arrays = {k: v.numpy() for k, v in batch.items()}
    arrays["position"] = arrays["sample_id"] % 8 + 1  # (request_id, position) is unique
    return SampleSet(arrays, fm)


def _exit_rows(imp: SampleSet, seed: int = 2) -> SampleSet:
    """One row per impression, emitted 1 s to 3 min after it (unsorted on purpose)."""
    rng = np.random.default_rng(seed)
    rows = imp.subset(np.arange(len(imp)))
    rows.arrays["emit_ts"] = imp["ts"] + rng.integers(1_000, 180_000, len(imp))
    rows.arrays["slow"] = np.zeros(len(imp), dtype=np.int64)
    rows.arrays["part"] = np.zeros(len(imp), dtype=np.int64)
    return rows


def _moment_rows(imp: SampleSet, seed: int = 3) -> SampleSet:
    """Clicked impressions: an early click-only positive row, then the other tasks at exit."""
    rng = np.random.default_rng(seed)
    clicked = np.flatnonzero(imp["ctr"] > 0)
    idx = np.concatenate([np.arange(len(imp)), clicked])  # exit rows, then early rows
    rows = imp.subset(idx)
    n_exit = len(imp)
    early = np.arange(n_exit, len(idx))
    emit = imp["ts"][idx] + rng.integers(60_000, 300_000, len(idx))
    emit[early] = imp["ts"][clicked] + rng.integers(1_000, 30_000, clicked.size)
    rows.arrays["emit_ts"] = emit
    rows.arrays["part"] = np.r_[np.ones(n_exit, np.int64), np.zeros(clicked.size, np.int64)]
    rows.arrays["slow"] = np.zeros(len(idx), dtype=np.int64)
    rows.arrays["sample_id"] = rows["sample_id"] * 2 + (np.arange(len(idx)) >= n_exit)
    for t in TASKS:
        m = np.ones(len(idx), np.float32)
        if t == "ctr":
            m[clicked] = 0.0  # ctr of a clicked impression is reported by its early row
        m[early] = 1.0 if t == "ctr" else 0.0
        rows.arrays[f"mask_{t}"] = m
    return rows


def _trainer(kind: str = "bce", registry: ModelRegistry | None = None) -> PrequentialTrainer:
    torch.manual_seed(0)
    model = Ranker(synthetic_feature_map(), get_config("mlp"))
    return PrequentialTrainer(
        model, build_optimizers(model), kind, registry=registry, checkpoint_every_ms=120_000
    )


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), max_size=30),
    st.lists(st.integers(0, 10_000), max_size=30),
    st.integers(1, 3_000),
)
def test_slice_schedule_matches_brute_force(a: list[int], b: list[int], slice_ms: int) -> None:
    ev, tr = np.sort(np.array(a, np.int64)), np.sort(np.array(b, np.int64))
    s = slice_schedule(ev, tr, slice_ms)
    assert np.all(s.starts % slice_ms == 0)
    for k, t0 in enumerate(s.starts):
        want_ev = np.flatnonzero((ev >= t0) & (ev < t0 + slice_ms))
        want_tr = np.flatnonzero((tr >= t0) & (tr < t0 + slice_ms))
        np.testing.assert_array_equal(np.arange(s.eval_bounds[k], s.eval_bounds[k + 1]), want_ev)
        np.testing.assert_array_equal(np.arange(s.train_bounds[k], s.train_bounds[k + 1]), want_tr)
    assert s.eval_bounds[-1] == ev.size and s.train_bounds[-1] == tr.size  # nothing left out


def test_slice_schedule_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        slice_schedule(np.zeros(1, np.int64), np.zeros(1, np.int64), 0)
    with pytest.raises(DataValidationError, match="sorted"):
        slice_schedule(np.array([2, 1]), np.zeros(1, np.int64), 10)


def test_interleaving_order_in_event_time() -> None:
    """Scored before trained; trained only once emitted, and everything emitted is trained."""
    imp = _impressions()
    train = _moment_rows(imp)
    trainer = _trainer("moment")
    calls: list[tuple[str, np.ndarray]] = []
    real_step, real_predict = trainer.train_step, trainer.model.predict_proba

    def step(batch, index):  # type: ignore[no-untyped-def]
        calls.append(("train", batch["emit_ts"].numpy().copy()))
        return real_step(batch, index)

    def predict(batch):  # type: ignore[no-untyped-def]
        calls.append(("eval", batch["ts"].numpy().copy()))
        return real_predict(batch)

    trainer.train_step = step  # type: ignore[method-assign]
    trainer.model.predict_proba = predict  # type: ignore[method-assign]
    result = InterleavedTrainer(trainer, slice_ms=SLICE, batch_size=64).run(train, imp)

    trained = np.zeros(0, np.int64)
    for kind, times in calls:
        if kind == "train":
            trained = np.r_[trained, times]
            continue
        t0 = times.min() // SLICE * SLICE  # the slice being scored
        assert times.max() < t0 + SLICE
        assert np.all(trained < t0 + SLICE)  # nothing from the future ...
        # ... and everything emitted before the slice was trained on
        assert trained.size == int((train["emit_ts"] < t0).sum())
    assert trained.size == len(train)
    # per row: trained in the slice of its emit_ts, never before
    emit = train["emit_ts"]
    assert np.all((result.train_slice <= emit) & (emit < result.train_slice + SLICE))
    # an impression is scored before any of its own rows is trained on (emit_ts > ts)
    pred = result.predictions
    first_step = (
        pl.DataFrame(
            {
                "request_id": train["request_id"],
                "position": train["position"],
                "step": result.train_step,
            }
        )
        .group_by("request_id", "position")
        .agg(pl.col("step").min())
    )
    joined = pred.join(first_step, on=["request_id", "position"])
    assert joined.height == len(imp)
    assert (joined["steps_before"] <= joined["step"]).all()
    assert np.all(np.diff(result.train_step[np.argsort(emit, kind="stable")]) >= 0)


def test_every_mode_is_scored_on_the_same_eval_set() -> None:
    imp = _impressions()
    frames = []
    for rows, kind in ((_exit_rows(imp), "bce"), (_moment_rows(imp), "moment")):
        result = InterleavedTrainer(_trainer(kind), slice_ms=SLICE).run(rows, imp)
        frames.append(result.predictions)
    keys = ["sample_id", "ts", "user_id", *TASKS, *(f"mask_{t}" for t in TASKS)]
    assert frames[0].select(keys).equals(frames[1].select(keys))
    assert frames[0].height == len(imp)
    assert not np.allclose(frames[0]["p_ctr"].to_numpy(), frames[1]["p_ctr"].to_numpy())


def test_final_labels_of_moment_rows_equal_the_impression_labels() -> None:
    imp = _impressions()
    final = final_labels(_moment_rows(imp))
    order = np.argsort(final["sample_id"] // 2)
    np.testing.assert_array_equal(final["sample_id"][order] // 2, imp["sample_id"])
    for t in TASKS:
        np.testing.assert_array_equal(final[t][order], imp[t])
        assert np.all(final[f"mask_{t}"] == 1)
    assert "emit_ts" not in final.columns


def test_checkpoints_every_n_minutes_of_event_time(tmp_path: Path) -> None:
    imp = _impressions()
    reg = ModelRegistry(tmp_path / "reg")
    result = InterleavedTrainer(_trainer(registry=reg), slice_ms=SLICE).run(_exit_rows(imp), imp)
    first = int(min(imp["ts"].min(), 0 + _exit_rows(imp)["emit_ts"].min())) // SLICE * SLICE
    assert [c.event_ts - first for c in result.checkpoints][:3] == [120_000, 240_000, 360_000]
    assert len(reg.versions("stream")) == len(result.checkpoints)


def test_stream_metrics_skip_the_warm_up() -> None:
    imp = _impressions(N * 12)  # 2 hours
    result = InterleavedTrainer(_trainer(), slice_ms=SLICE).run(_exit_rows(imp), imp)
    hourly, summary = stream_metrics(result.predictions, TASKS, warmup_hours=1)
    h1 = hourly.filter((pl.col("hour") >= 1) & (pl.col("task") == "ctr"))
    assert summary["ctr"]["auc"] == pytest.approx(h1["auc"].mean())
    assert summary["ctr"]["n"] == float(h1["n"].sum())
    assert 0.5 < summary["ctr"]["auc_pooled"] <= 1.0  # the planted signal is learned online


def _write_samples(root: Path, rows: SampleSet) -> Path:
    root.mkdir(parents=True)
    pl.DataFrame({k: v for k, v in rows.arrays.items()}).write_parquet(root / "part-00000.parquet")
    assert rows.feature_map is not None
    rows.feature_map.save(root / "feature_map.json")
    return root


def test_run_stream_training_end_to_end(tmp_path: Path) -> None:
    imp = _impressions()
    moment = _write_samples(tmp_path / "moment", _moment_rows(imp))
    exit_dir = _write_samples(tmp_path / "exit", _exit_rows(imp))
    run = run_stream_training(
        moment,
        "mlp",
        "moment",
        tmp_path / "out",
        eval_dir=exit_dir,
        warmup_ms=0,
        registry=tmp_path / "reg",
        checkpoint_every_ms=300_000,
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["eval_rows"] == len(imp) and summary["loss_kind"] == "moment"
    assert set(summary["tasks"]) == set(TASKS)
    assert pl.read_parquet(tmp_path / "out" / "predictions.parquet").height == len(imp)
    assert ModelRegistry(tmp_path / "reg").versions("stream-moment") != []
    # without an eval dir the eval set is derived from the rows: the same impressions
    derived = run_stream_training(moment, "mlp", "moment", None, warmup_ms=0)
    a = run.result.predictions.sort("sample_id")
    b = derived.result.predictions.sort("ts", "request_id", "position")
    assert a.height == b.height
    for t in TASKS:
        assert a.sort("ts", "request_id", "position")[t].equals(b[t])
    with pytest.raises(ConfigError, match="unknown stream mode"):
        run_stream_training(moment, "mlp", "hourly", None)
