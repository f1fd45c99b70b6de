"""``run_stream_training``: the library entry point of ``liverank train-stream``.

Loads a stream-mode samples directory (``liverank build-samples --mode exit|fast_slow|moment``)
as the training stream and an evaluation stream, builds a model, runs the interleaved
prequential protocol of :mod:`liverank.train.stream_eval` and writes to ``out``:

* ``predictions.parquet`` - every eval impression with its labels and predicted probabilities;
* ``hourly.csv`` - AUC / GAUC per hour (of the impression ``ts``) and task;
* ``summary.json`` - the post-warm-up summary, the run's settings and timings.

The evaluation stream is ``eval_dir`` when given: the ``exit`` directory (one row per
impression, every label final) or the offline samples directory. Without it, it is derived
from the training rows by :func:`final_labels`: one row per impression, labels = every positive
the mode ever reported. That is exact for ``exit`` and ``moment`` (every task of every
impression is labelled once) and misses the behaviours later than 1 h in ``fast_slow``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from liverank.data.loader import SampleSet
from liverank.errors import ConfigError, DataValidationError
from liverank.models.ranker import Ranker, RankerConfig
from liverank.models.zoo import get_config
from liverank.train import distributed as ddp
from liverank.train.device import resolve_device
from liverank.train.optim import build_optimizers
from liverank.train.registry import ModelRegistry
from liverank.train.stream_eval import (
    DAY_MS,
    InterleavedResult,
    InterleavedTrainer,
    SliceHook,
    stream_metrics,
)
from liverank.train.streaming import PrequentialTrainer

log = logging.getLogger(__name__)

#: reporting mode (or loss kind) -> loss kind of :func:`liverank.train.losses.stream_loss`
LOSS_OF_MODE: dict[str, str] = {
    "exit": "bce",
    "bce": "bce",
    "fast_slow": "fast_slow",
    "moment": "moment",
}


@dataclass
class StreamRun:
    result: InterleavedResult
    hourly: pl.DataFrame
    summary: dict[str, Any]
    model: Ranker


def final_labels(rows: SampleSet) -> SampleSet:
    """One row per impression ``(request_id, position)``: its features and final labels.

    A task's label is 1 if any row reported it positive (label 1 with mask 1); its mask is 1 if
    any row reported it. Features are those of the impression's first row (identical on every
    row of an impression: they are taken as of the impression).
    """
    tasks = [t for t in (rows.feature_map.tasks if rows.feature_map else []) if t in rows.columns]
    frame = pl.DataFrame(
        {
            "request_id": rows["request_id"],
            "position": rows["position"],
            "_row": np.arange(len(rows), dtype=np.int64),
            **{f"_y_{t}": rows[t] * rows[f"mask_{t}"] for t in tasks},
            **{f"_m_{t}": rows[f"mask_{t}"] for t in tasks},
        }
    )
    agg = (
        frame.group_by("request_id", "position")
        .agg(
            pl.col("_row").min(),
            *(pl.col(f"_y_{t}").max() for t in tasks),
            *(pl.col(f"_m_{t}").max() for t in tasks),
        )
        .sort("_row")
    )
    out = rows.subset(agg["_row"].to_numpy())
    for t in tasks:
        out.arrays[t] = agg[f"_y_{t}"].to_numpy().astype(np.float32)
        out.arrays[f"mask_{t}"] = agg[f"_m_{t}"].to_numpy().astype(np.float32)
    for c in ("emit_ts", "part", "slow"):
        out.arrays.pop(c, None)
    return out


def run_stream_training(
    samples_dir: str | Path,
    model: str | RankerConfig,
    loss: str,
    out: str | Path | None,
    *,
    eval_dir: str | Path | None = None,
    slice_ms: int = 60_000,
    batch_size: int = 1024,
    lr_sparse: float = 0.02,
    lr_dense: float = 0.002,
    seed: int = 0,
    warmup_ms: int = DAY_MS,
    checkpoint_every_ms: int = 10 * 60_000,
    registry: str | Path | None = None,
    model_name: str | None = None,
    threads: int = 2,
    hooks: Sequence[SliceHook] = (),
    evaluation: SampleSet | None = None,
    device: str = "cpu",
) -> StreamRun:
    """Interleaved prequential training of ``model`` on the stream of ``samples_dir``.

    Args:
        samples_dir: stream-mode samples directory (needs ``emit_ts``), the training stream.
        model: a zoo name (``mlp``, ``ple``, ...) or a :class:`RankerConfig`.
        loss: ``exit`` (masked BCE), ``fast_slow`` (fast BCE + PU slow correction) or
            ``moment`` (L_moment); ``bce`` is accepted as a synonym of ``exit``.
        out: output directory (``None``: write nothing).
        eval_dir: samples directory of the evaluation stream (see the module docstring).
        slice_ms: event-time slice of the interleaving (ms).
        batch_size: maximum training mini-batch inside a slice.
        lr_sparse, lr_dense: learning rates of the sparse (embeddings) / dense optimisers.
        seed: torch seed of the model initialisation.
        warmup_ms: event time (from the first day's midnight) excluded from the summary.
        checkpoint_every_ms: checkpoint cadence in event time (published when ``registry``).
        registry: model registry directory; checkpoints go there under ``model_name``.
        model_name: registry name (default ``stream-<loss>``).
        threads: torch threads.
        hooks: slice hooks (e.g. a :class:`liverank.eval.reaction.ReactionProbe`).
        evaluation: an already loaded eval SampleSet (overrides ``eval_dir``; saves a reload
            when several modes share it).
        device: ``cpu``, ``cuda`` or ``auto`` (:mod:`liverank.train.device`).
    """
    if loss not in LOSS_OF_MODE:
        raise ConfigError(f"unknown stream mode '{loss}'; known: {', '.join(LOSS_OF_MODE)}")
    if warmup_ms < 0:
        raise ConfigError(f"warmup_ms must be >= 0, got {warmup_ms}")
    dist = ddp.init_from_env(resolve_device(device))  # launched by torchrun: one rank of N
    # ranks on one machine share its cores
    torch.set_num_threads(threads if dist is None else max(1, threads // ddp.local_world()))
    if dist is not None and evaluation is not None:
        raise ConfigError("a distributed stream run loads its own partition of the eval rows")
    partition = None if dist is None else (dist.rank, dist.world)
    train = SampleSet.load(samples_dir, partition=partition)
    if "emit_ts" not in train.columns:
        raise DataValidationError(
            "not a stream-mode samples directory (no 'emit_ts'); build it with "
            "`liverank build-samples --mode exit|fast_slow|moment`",
            file=str(samples_dir),
            column="emit_ts",
        )
    if train.feature_map is None:
        raise DataValidationError(
            "samples directory has no feature_map.json", file=str(samples_dir)
        )
    if evaluation is None and eval_dir is not None:
        same = Path(eval_dir).resolve() == Path(samples_dir).resolve()
        # the exit arm trains and is scored on the same rows: one copy in memory, not two
        evaluation = train if same else SampleSet.load(eval_dir, partition=partition)
    elif evaluation is None:
        evaluation = final_labels(train)
    torch.manual_seed(seed)
    config = get_config(model) if isinstance(model, str) else model
    ranker = Ranker(train.feature_map, config)
    ranker.attach_long_history(train.long_history, train.long_len)
    ranker.to(ddp.local_device(resolve_device(device)))  # before the optimisers take them
    reg = ModelRegistry(registry) if registry is not None else None
    kind = LOSS_OF_MODE[loss]
    trainer = PrequentialTrainer(
        ranker,
        build_optimizers(ranker, lr_sparse=lr_sparse, lr_dense=lr_dense),
        kind,
        registry=reg,
        checkpoint_every_ms=checkpoint_every_ms,
        model_name=model_name or f"stream-{loss}",
    )
    if dist is not None:
        trainer.distribute(dist)
    runner = InterleavedTrainer(trainer, slice_ms=slice_ms, batch_size=batch_size, hooks=hooks)
    result = runner.run(train, evaluation)
    train_rows, eval_rows = len(train), len(evaluation)
    if dist is not None:  # rank 0 gathers every rank's scored impressions and reports
        train_rows = sum(ddp.all_gather_ints(train_rows))
        eval_rows = sum(ddp.all_gather_ints(eval_rows))
        frames = ddp.gather_to_main(result.predictions)
        if frames is None:
            hourly, summary = ddp.broadcast_object(None)
            return StreamRun(result, hourly, summary, ranker)
        whole = pl.concat(frames)
        result.predictions = whole.sort("sample_id") if "sample_id" in whole.columns else whole
    warmup_hours = math.ceil(warmup_ms / 3_600_000)
    hourly, per_task = stream_metrics(result.predictions, ranker.tasks, warmup_hours)
    summary: dict[str, Any] = {
        "mode": loss,
        "loss_kind": kind,
        "model": config.name,
        "samples_dir": str(samples_dir),
        "eval_dir": None if eval_dir is None else str(eval_dir),
        "train_rows": train_rows,
        "eval_rows": eval_rows,
        "world_size": 1 if dist is None else dist.world,
        "train_steps": len(result.losses),
        "slice_ms": slice_ms,
        "batch_size": batch_size,
        "lr_sparse": lr_sparse,
        "lr_dense": lr_dense,
        "seed": seed,
        "warmup_hours": warmup_hours,
        "checkpoints": len(result.checkpoints),
        "evicted_rows": result.evictions,
        "seconds": round(result.seconds, 2),
        "tasks": per_task,
    }
    if out is not None:
        _write(Path(out), result, hourly, summary)
    if dist is not None:
        ddp.broadcast_object((hourly, summary))
    return StreamRun(result, hourly, summary, ranker)


def _write(out: Path, result: InterleavedResult, hourly: pl.DataFrame, summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.predictions.write_parquet(out / "predictions.parquet")
    hourly.write_csv(out / "hourly.csv")
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2))
    log.info("stream run written to %s", out)


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
