import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from liverank.errors import DataValidationError
from liverank.eval.metrics import auc
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.train.optim import build_optimizers
from liverank.train.registry import ModelRegistry
from liverank.train.streaming import PrequentialTrainer

BATCH = 256  # synthetic ts step is 1 s, so one batch spans 256 s of event time


def _model(seed: int = 0) -> Ranker:
    torch.manual_seed(seed)
    fm = synthetic_feature_map()
    return Ranker(fm, get_config("mlp"))


def _stream(n_batches: int, slow_every: int = 0) -> list[dict[str, torch.Tensor]]:
    batches = synthetic_batches(synthetic_feature_map(), n_batches, BATCH, seed=1)
    for b in batches:
        b["emit_ts"] = b["ts"].clone()
        slow = torch.zeros(BATCH, dtype=torch.long)
        if slow_every:
            # every k-th row becomes a slow row: only its positive 'gtr' label is reported
            idx = torch.arange(0, BATCH, slow_every)
            slow[idx] = 1
            for key in [k for k in b if k.startswith("mask_")]:
                b[key][idx] = 0.0
            b["gtr"][idx] = 1.0
            b["mask_gtr"][idx] = 1.0
        b["slow"] = slow
    return batches


def test_predicts_each_batch_before_training_on_it() -> None:
    stream = _stream(4)
    model = _model()
    before = copy.deepcopy(model)
    events: list[str] = []
    opt = build_optimizers(model)
    real_step, real_predict = opt.step, model.predict_proba

    def step() -> None:
        events.append("train")
        real_step()

    def predict(batch):  # type: ignore[no-untyped-def]
        events.append("test")
        return real_predict(batch)

    opt.step = step  # type: ignore[method-assign]
    model.predict_proba = predict  # type: ignore[method-assign]
    result = PrequentialTrainer(model, opt, "bce").run(stream)
    assert events == ["test", "train"] * 4
    # batch 0 is scored by the untouched initial parameters
    p0 = result.predictions.filter(result.predictions["batch"] == 0)["p_ctr"].to_numpy()
    np.testing.assert_allclose(p0, before.predict_proba(stream[0])["ctr"].numpy(), rtol=1e-5)
    # batch 1 is scored by the parameters after exactly one update (on batch 0)
    after_one = copy.deepcopy(before)
    PrequentialTrainer(after_one, build_optimizers(after_one), "bce").run(stream[:1])
    p1 = result.predictions.filter(result.predictions["batch"] == 1)["p_ctr"].to_numpy()
    np.testing.assert_allclose(p1, after_one.predict_proba(stream[1])["ctr"].numpy(), rtol=1e-4)
    assert not np.allclose(p1, before.predict_proba(stream[1])["ctr"].numpy(), rtol=1e-4)


def test_checkpoints_follow_event_time(tmp_path: Path) -> None:
    stream = _stream(8)  # 2048 s of event time
    model = _model()
    reg = ModelRegistry(tmp_path / "reg")
    result = PrequentialTrainer(
        model, build_optimizers(model), "moment", registry=reg, checkpoint_every_ms=600_000
    ).run(stream)
    first = int(stream[0]["emit_ts"][0])
    last = int(stream[-1]["emit_ts"][-1])
    assert len(result.checkpoints) == (last - first) // 600_000  # 10, 20 and 30 minutes
    assert [c.event_ts - first for c in result.checkpoints] == [600_000, 1_200_000, 1_800_000]
    for c in result.checkpoints:
        assert c.last_emit_ts >= c.event_ts  # taken once event time has passed the boundary
        assert c.last_emit_ts - c.event_ts < BATCH * 1_000  # ... within one batch of it
    assert reg.versions("stream") == ["v0001", "v0002", "v0003"]
    assert reg.get("stream").manifest["event_ts"] == result.checkpoints[-1].event_ts
    Ranker.load(reg.get("stream").model_path)  # a loadable model


def test_fast_slow_loss_runs_and_slow_rows_are_not_scored() -> None:
    model = _model()
    result = PrequentialTrainer(model, build_optimizers(model), "fast_slow").run(
        _stream(3, slow_every=5)
    )
    assert all(np.isfinite(result.losses))
    n_fast = int((result.predictions["slow"] == 0).sum())
    hour0 = result.hourly.filter(result.hourly["task"] == "ctr")
    assert hour0["n"].to_list() == [n_fast]


def test_rejects_unsorted_or_missing_emit_ts() -> None:
    stream = _stream(2)
    stream[1]["emit_ts"] = stream[1]["emit_ts"] - 10**9
    model = _model()
    with pytest.raises(DataValidationError, match="backwards"):
        PrequentialTrainer(model, build_optimizers(model), "bce").run(stream)
    del stream[0]["emit_ts"]
    with pytest.raises(DataValidationError, match="no 'emit_ts'"):
        PrequentialTrainer(model, build_optimizers(model), "bce").run(stream)


def test_hourly_metrics_per_task() -> None:
    stream = _stream(16)  # 4,096 s: hours 0 and 1
    model = _model()
    result = PrequentialTrainer(model, build_optimizers(model), "bce").run(stream)
    hourly = result.hourly
    assert hourly.columns == ["hour", "task", "n", "auc", "gauc"]
    assert sorted(set(hourly["hour"].to_list())) == [0, 1]
    assert set(hourly["task"].to_list()) == set(model.tasks)
    ctr = {r["hour"]: r for r in hourly.filter(hourly["task"] == "ctr").iter_rows(named=True)}
    assert (ctr[0]["n"], ctr[1]["n"]) == (3600, 16 * BATCH - 3600)
    preds = result.predictions.filter(result.predictions["hour"] == 1)
    assert ctr[1]["auc"] == pytest.approx(auc(preds["ctr"], preds["p_ctr"]))


def test_learns_the_planted_signal() -> None:
    torch.manual_seed(0)
    fm = synthetic_feature_map(tasks=["ctr"])
    stream = synthetic_batches(fm, 86, 128, seed=1)  # 11,008 s: hours 0-3
    for b in stream:
        b["emit_ts"] = b["ts"].clone()
    model = Ranker(fm, get_config("mlp"))
    opt = build_optimizers(model, lr_sparse=0.1, lr_dense=0.01)
    hourly = PrequentialTrainer(model, opt, "moment").run(stream).hourly
    by_hour = dict(zip(hourly["hour"].to_list(), hourly["auc"].to_list(), strict=True))
    assert by_hour[2] > by_hour[0] + 0.1
