"""Run one experiment end to end: load samples, split by day, train, test, save, publish."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from liverank.config import ExperimentConfig
from liverank.data.loader import SampleSet, shard_paths, split_by_day, split_days
from liverank.data.parquet_stream import ParquetSampleStream
from liverank.errors import ConfigError
from liverank.eval.evaluate import EvalResult, evaluate
from liverank.features import encoders as enc
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.zoo import get_config
from liverank.train import distributed as ddp
from liverank.train.device import resolve_device
from liverank.train.popularity import PopularityBaseline
from liverank.train.registry import AOTI_CACHE, ModelRegistry
from liverank.train.trainer import (
    REGRESSION_FRAME_NAMES,
    FitResult,
    Trainer,
    prediction_frame,
    seed_everything,
)

#: top-K cut-offs of the test metrics (10: eLiveRec's Prec@10 / NDCG@10 per request)
EVAL_KS = (1, 3, 5, 10)

log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    name: str
    test: EvalResult
    out_dir: Path
    fit: FitResult | None = None
    seconds: float = 0.0
    registry_version: str | None = None


def ranker_config(cfg: ExperimentConfig) -> RankerConfig:
    if isinstance(cfg.model, str):
        base = get_config(cfg.model)
        if not cfg.model_overrides:
            return base
        return RankerConfig.parse({**base.model_dump(), **cfg.model_overrides}, "model_overrides")
    if cfg.model_overrides:
        raise ConfigError(
            "model_overrides only apply to a named model; edit the model mapping instead"
        )
    return RankerConfig.parse(cfg.model, "model")


def check_rows(cfg: ExperimentConfig) -> int | None:
    """``data.rows: moment`` needs samples of the moment stream (``stats.json`` says which
    mode built them): :class:`ConfigError` naming the samples directory otherwise. Returns the
    dataset's ``start_ts`` for moment rows (``None`` for impression rows)."""
    if cfg.data.rows != "moment":
        return None
    path = Path(cfg.data.samples) / "stats.json"
    stats = json.loads(path.read_text()) if path.exists() else {}
    mode = stats.get("mode")
    if mode != "moment":
        raise ConfigError(
            f"data.rows is 'moment' but {cfg.data.samples} holds "
            f"{'offline' if mode is None else mode} rows; build them with "
            "`liverank build-samples --mode moment`"
        )
    if "start_ts" not in stats:
        raise ConfigError(f"{path}: no start_ts (built by an older liverank); rebuild the samples")
    return int(stats["start_ts"])


def fold_spillover(data: SampleSet, start_ts: int) -> None:
    """Stream rows are dated by emission: the visits still open at the data's end emit after
    its last impression day, a sliver of a day that a day split would take for the test day.
    Those rows join the last impression day (in place; the order stays sorted)."""
    last = int((int(data["ts"].max()) - start_ts) // enc.MS_PER_DAY)
    np.minimum(data["day"], last, out=data["day"])


def load_splits(
    cfg: ExperimentConfig, partition: tuple[int, int] | None = None
) -> tuple[FeatureMap, SampleSet, SampleSet, SampleSet]:
    """Feature map and the train / validation / test days of ``cfg.data.samples``; with
    ``partition = (rank, world)`` only the rows of that rank's users."""
    start_ts = check_rows(cfg)
    feature_map = FeatureMap.load(cfg.data.samples)
    if cfg.data.loader == "stream":
        return (feature_map, *stream_splits(cfg, partition))
    data = SampleSet.load(cfg.data.samples, long_len=cfg.data.long_len, partition=partition)
    if start_ts is not None:
        fold_spillover(data, start_ts)
    d = cfg.data
    train, val, test = split_by_day(data, d.val_days, d.test_days, d.train_days)
    log.info("samples: train %d, validation %d, test %d", len(train), len(val), len(test))
    return feature_map, train, val, test


def stream_splits(
    cfg: ExperimentConfig, partition: tuple[int, int] | None = None
) -> tuple[ParquetSampleStream, ParquetSampleStream, ParquetSampleStream]:
    """Train / validation / test days as :class:`ParquetSampleStream` (``data.loader:
    stream``): nothing but the ``day`` column is read here."""
    if cfg.data.rows == "moment":
        raise ConfigError(
            "data.loader 'stream' reads impression rows; moment rows need the in-memory loader "
            "(their last emission day is folded into the last day in memory)"
        )
    days = pl.scan_parquet(shard_paths(cfg.data.samples)).select(pl.col("day").unique()).collect()
    train_d, val_d, test_d = split_days(
        days["day"].to_list(), cfg.data.val_days, cfg.data.test_days, cfg.data.train_days
    )
    d = cfg.data
    kw = {"long_len": d.long_len, "partition": partition, "chunk_rows": d.chunk_rows}
    train = ParquetSampleStream(d.samples, train_d, buffer_rows=d.buffer_rows, **kw)
    # validation and test share the training stream's side tables (one long-history store)
    val, test = (ParquetSampleStream(d.samples, x, side=train.side, **kw) for x in (val_d, test_d))
    return train, val, test


def run_experiment(
    cfg: ExperimentConfig, splits: tuple[FeatureMap, SampleSet, SampleSet, SampleSet] | None = None
) -> ExperimentResult:
    """Train ``cfg``'s model, test it and save the run. Launched by ``torchrun`` (``liverank
    train --nproc N``) every rank trains on its users' rows with DDP; rank 0 writes the run
    directory and every rank returns the same result."""
    start = time.perf_counter()
    dist = ddp.init_from_env(resolve_device(cfg.train.device))
    if dist is not None and splits is not None:
        raise ConfigError("a distributed run loads its own partition; do not pass splits")
    main = dist is None or dist.is_main
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(
            yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
        )
    partition = None if dist is None else (dist.rank, dist.world)
    feature_map, train, val, test = splits or load_splits(cfg, partition)
    # ranks on one machine share its cores: train.threads is the machine's budget
    threads = cfg.train.threads if dist is None else max(1, cfg.train.threads // ddp.local_world())
    seed_everything(cfg.train.seed, threads)
    model = Ranker(feature_map, ranker_config(cfg))
    model.attach_long_history(train.long_history, train.long_len)  # the Cross GSUs' store
    heldout = val if len(val) else test
    # pre-training on data of the training days only (MMBee's GraphCL: gifts before the first
    # held-out day)
    model.pretrain(cfg.data.samples, as_of_day=min(heldout.days()), seed=cfg.train.seed)
    trainer = Trainer(cfg, feature_map, model, dist)
    fit = trainer.fit(train, val, out)
    pred = trainer.predict(test)
    if pred is None:  # a rank other than 0: rank 0 evaluates, saves and publishes
        result, version = ddp.broadcast_object(None)
        return ExperimentResult(cfg.name, result, out, fit, time.perf_counter() - start, version)
    regression = [REGRESSION_FRAME_NAMES[t] for t in model.regression]
    result = evaluate(pred, list(model.tasks), EVAL_KS, regression=regression)
    extra: dict[str, Any] = {"fit": [asdict(r) for r in fit.history], "best_epoch": fit.best_epoch}
    if dist is not None:
        extra["world_size"] = dist.world
    _save_outputs(out, pred, result, extra=extra)
    version = None
    if cfg.registry is not None:
        if cfg.registry_aoti:  # compiled before the version is visible to a watching server
            _precompile(fit.checkpoint, Path(cfg.registry))
        mv = ModelRegistry(cfg.registry).publish(
            cfg.name,
            fit.checkpoint,
            {
                "best_epoch": fit.best_epoch,
                "val_" + cfg.train.monitor: fit.best_metric,
                "run_dir": str(out),
            },
        )
        version = mv.version
        log.info("published %s %s to %s", cfg.name, version, cfg.registry)
    if dist is not None:
        ddp.broadcast_object((result, version))
    return ExperimentResult(cfg.name, result, out, fit, time.perf_counter() - start, version)


def _precompile(checkpoint: Path, registry: Path) -> None:
    """AOTInductor package of ``checkpoint`` in the registry's compile cache (``.aoti``)."""
    from liverank.serve.export_aoti import precompile

    started = time.perf_counter()
    path = precompile(Ranker.load(checkpoint), registry / AOTI_CACHE)
    log.info("AOTInductor package for serving in %.0f s: %s", time.perf_counter() - started, path)


def run_popularity(
    cfg: ExperimentConfig, splits: tuple[FeatureMap, SampleSet, SampleSet, SampleSet] | None = None
) -> ExperimentResult:
    """The popularity baseline on the same split (train + validation days to fit)."""
    start = time.perf_counter()
    feature_map, train, val, test = splits or load_splits(cfg)
    tasks = list(feature_map.tasks)
    fit_cols: dict[str, Any] = {}
    for name in ["author_id", *tasks, *(f"mask_{t}" for t in tasks)]:
        fit_cols[name] = np.concatenate([train[name], val[name]])
    model = PopularityBaseline(tasks).fit(fit_cols)
    pred = prediction_frame(test, tasks, model.predict_proba({"author_id": test["author_id"]}))
    result = evaluate(pred, tasks)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _save_outputs(out, pred, result, extra={})
    return ExperimentResult(cfg.name, result, out, None, time.perf_counter() - start)


def _save_outputs(out: Path, pred: pl.DataFrame, result: EvalResult, extra: dict[str, Any]) -> None:
    pred.write_parquet(out / "predictions.parquet")
    (out / "metrics.json").write_text(result.to_json())
    if extra:
        (out / "history.json").write_text(json.dumps(extra, indent=2, default=str))
