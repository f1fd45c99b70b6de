"""The evaluator on a small synthetic frame: slices, hour averaging, masks, errors, round trips."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from rich.console import Console

from liverank.errors import ConfigError, DataValidationError, UnknownIdError
from liverank.eval import EvalResult, evaluate, required_columns
from liverank.eval.metrics import auc, grouped_auc, logloss, ranking_at_k


def direct(frame: pl.DataFrame, task: str) -> dict[str, float]:
    """Metrics of one task computed straight from the metric functions."""
    y = frame[task].to_numpy()
    p = frame[f"p_{task}"].to_numpy()
    m = frame[f"mask_{task}"].to_numpy()
    uauc, gauc, n_users = grouped_auc(y, p, frame["user_id"].to_numpy(), mask=m)
    out = {"auc": auc(y, p, mask=m), "uauc": uauc, "gauc": gauc, "n_users": n_users}
    out["logloss"] = logloss(y, p, mask=m)
    out |= ranking_at_k(y, p, frame["request_id"].to_numpy(), (1, 3), mask=m)
    return out


def test_slices_match_the_metric_functions(pred_factory) -> None:
    frame = pred_factory()
    result = evaluate(frame, ["ctr", "gtr"], ks=(1, 3), name="mlp")
    assert result.meta["name"] == "mlp" and result.hours() == [100, 101, 102]
    assert list(result.slices)[:3] == ["all", "hour-avg", "hour=100"]
    assert result.activity_slices() == [
        "activity=low",
        "activity=mid",
        "activity=high",
        "activity=unknown",
    ]
    slices = [
        ("all", frame),
        ("hour=101", frame.filter(pl.col("hour") == 101)),
        ("activity=mid", frame.filter(pl.col("user_activity") == 2)),
        ("activity=unknown", frame.filter(pl.col("user_activity") == 0)),
    ]
    for name, part in slices:
        for task in ("ctr", "gtr"):
            expected = direct(part, task)
            for metric, value in expected.items():
                assert result.value(task, metric, name) == pytest.approx(value, nan_ok=True), (
                    name,
                    task,
                    metric,
                )
            assert result.value(task, "count", name) == part.height
            assert result.value(task, "pos_rate", name) == pytest.approx(part[task].mean())
    # planted signal
    assert 0.65 < result.value("ctr", "auc") < 0.95
    assert result.value("ctr", "ndcg@3") > 0.5


def test_hour_average_is_the_unweighted_mean_over_hours(pred_factory) -> None:
    # hour 102 holds few rows: a weighted average would differ from the unweighted one
    frame = pred_factory(hours=(100, 101, 101, 101, 102))
    result = evaluate(frame, ["ctr", "gtr"], ks=(3,))
    for metric in ("auc", "gauc", "uauc", "logloss", "ndcg@3", "prec@3"):
        hours, values = result.hourly("ctr", metric)
        assert hours == [100, 101, 102]
        assert result.value("ctr", metric, "hour-avg") == pytest.approx(np.mean(values))
    assert result.value("ctr", "count", "hour-avg") == frame.height  # counts are summed
    assert result.value("ctr", "auc", "hour-avg") != pytest.approx(
        result.value("ctr", "auc", "all"), abs=1e-6
    )


def test_hour_average_skips_hours_where_a_metric_is_undefined(pred_factory) -> None:
    frame = pred_factory(hours=(100, 101))
    # no gift at all in hour 101: its gtr AUC is undefined and must not count as 0 or 0.5
    frame = frame.with_columns(
        pl.when(pl.col("hour") == 101).then(0.0).otherwise(pl.col("gtr")).alias("gtr")
    )
    result = evaluate(frame, ["gtr"], ks=(1,), by_activity=False)
    assert math.isnan(result.value("gtr", "auc", "hour=101"))
    assert result.value("gtr", "auc", "hour-avg") == pytest.approx(
        result.value("gtr", "auc", "hour=100")
    )
    assert "activity=low" not in result.slices


def test_masked_rows_are_ignored_even_with_garbage(pred_factory) -> None:
    frame = pred_factory(tasks=("ctr",))
    rng = np.random.default_rng(3)
    masked = rng.random(frame.height) < 0.3
    garbage = frame.with_columns(
        pl.Series("mask_ctr", (~masked).astype(np.float32)),
        pl.when(pl.Series(masked)).then(None).otherwise(pl.col("p_ctr")).alias("p_ctr"),
        pl.when(pl.Series(masked)).then(7.0).otherwise(pl.col("ctr")).alias("ctr"),
    )
    result = evaluate(garbage, ["ctr"], ks=(3,))
    clean = evaluate(frame.filter(pl.Series(~masked)), ["ctr"], ks=(3,))
    for metric in ("auc", "gauc", "logloss", "ndcg@3", "count"):
        for name in ("all", "hour-avg", "activity=high"):
            assert result.value("ctr", metric, name) == pytest.approx(
                clean.value("ctr", metric, name)
            )


def test_regression_target_mse(pred_factory) -> None:
    frame = pred_factory(tasks=("ctr",)).with_columns(
        pl.lit(2.0).alias("stay_ms"), pl.lit(1.0).alias("p_stay_ms")
    )
    result = evaluate(frame, ["ctr"], regression=["stay_ms"])
    assert result.value("stay_ms", "mse") == 1.0
    assert result.value("stay_ms", "mse", "hour-avg") == 1.0
    assert result.regression == ["stay_ms"]


def test_bad_frames_are_rejected_with_the_column_named(pred_factory) -> None:
    frame = pred_factory(tasks=("ctr",))
    with pytest.raises(DataValidationError, match="p_ctr"):
        evaluate(frame.drop("p_ctr"), ["ctr"])
    with pytest.raises(DataValidationError, match=r"column 'p_ctr'.*\[0, 1\]"):
        evaluate(frame.with_columns(pl.col("p_ctr") * 3), ["ctr"])
    with pytest.raises(DataValidationError, match="column 'ctr'.*0 or 1"):
        evaluate(frame.with_columns(pl.lit(0.5).alias("ctr")), ["ctr"])
    with pytest.raises(DataValidationError, match="column 'hour'.*integer"):
        evaluate(frame.with_columns(pl.col("hour").cast(pl.Float64)), ["ctr"])
    with pytest.raises(ConfigError):
        evaluate(frame, [])
    with pytest.raises(ConfigError, match="ks"):
        evaluate(frame, ["ctr"], ks=(0, 3))
    # hour / user_activity are only needed for their slices
    bare = evaluate(frame.drop("hour", "user_activity"), ["ctr"], by_hour=False, by_activity=False)
    assert list(bare.slices) == ["all"] and bare.main_slice() == "all"
    assert required_columns(["ctr"]) == [
        "user_id",
        "request_id",
        "hour",
        "user_activity",
        "ctr",
        "p_ctr",
    ]


def test_json_round_trip_frame_and_table(pred_factory, tmp_path) -> None:
    frame = pred_factory()
    result = evaluate(frame, ["ctr", "gtr"], ks=(1, 3), name="farm")
    # force an undefined value to check NaN survives strict JSON
    result.slices["all"]["gtr"]["uauc"] = math.nan
    path = result.save(tmp_path / "r.json")
    assert "NaN" not in path.read_text()
    back = EvalResult.load(path)
    assert back.tasks == result.tasks and back.ks == [1, 3] and back.meta == result.meta
    assert math.isnan(back.value("gtr", "uauc"))
    assert back.to_frame().fill_nan(None).equals(result.to_frame().fill_nan(None))

    long = result.to_frame()
    assert long.columns == ["slice", "task", "metric", "value"]
    wide = result.wide("hour-avg")
    assert wide["task"].to_list() == ["ctr", "gtr"]
    assert wide.filter(pl.col("task") == "ctr")["gauc"].item() == pytest.approx(
        result.value("ctr", "gauc", "hour-avg")
    )

    console = Console(record=True, width=200)
    console.print(result.to_table())
    text = console.export_text()
    assert "hour-avg" in text and "gauc" in text and "ndcg@3" in text
    assert f"{result.value('ctr', 'auc', 'hour-avg'):.4f}" in text

    with pytest.raises(UnknownIdError, match="no metric 'foo'"):
        result.value("ctr", "foo")
    with pytest.raises(ConfigError, match="format version"):
        EvalResult.from_json('{"version": 99}')
    with pytest.raises(ConfigError, match="no evaluation result"):
        EvalResult.load(tmp_path / "missing.json")
