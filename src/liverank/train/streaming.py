"""Prequential (test-then-train) training over a sample stream in emission order.

Streaming evaluation as in Sliver (``sliding_window.md`` section 4: evaluate an hour, add it to
training, evaluate the next) taken to batch granularity: every batch is first *predicted* with
the current parameters, recorded, and only then *trained* on. Metrics are grouped by hour of
event time, ``hour = (emit_ts - first emit_ts) // 3_600_000``; checkpoints are taken every
``checkpoint_every_ms`` of event time and published to a :class:`ModelRegistry`.

Evaluation uses the fast rows only: ``fast_slow`` slow rows (``slow`` = 1) carry only missed
positives, so they are trained on but not scored (they would bias AUC towards positives).

Example::

    trainer = PrequentialTrainer(model, build_optimizers(model), "moment", registry=reg)
    result = trainer.run(samples.iter_batches(1024, shuffle=False))
    result.hourly   # hour, task, n, auc, gauc
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from liverank.errors import ConfigError, DataValidationError
from liverank.eval.metrics import auc, grouped_auc
from liverank.models.base import Batch
from liverank.models.ranker import Ranker
from liverank.train import distributed as ddp
from liverank.train.device import model_device
from liverank.train.losses import LOSS_KINDS, stream_loss
from liverank.train.optim import Optimizers
from liverank.train.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
_KEYS = ("sample_id", "request_id", "user_id", "live_id", "emit_ts", "slow")


@dataclass
class Checkpoint:
    event_ts: int  # the event-time boundary it was taken at
    last_emit_ts: int  # newest emit_ts trained on
    batches: int  # batches trained on
    version: ModelVersion | None  # registry version (None without a registry)


@dataclass
class StreamResult:
    predictions: pl.DataFrame  # keys, batch, hour, <task>, mask_<task>, p_<task>
    hourly: pl.DataFrame  # hour, task, n, auc, gauc
    checkpoints: list[Checkpoint] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # training loss of every batch


class PrequentialTrainer:
    """Test-then-train over batches in emission order (each batch needs ``emit_ts``)."""

    def __init__(
        self,
        model: Ranker,
        optimizers: Optimizers,
        loss_kind: str,
        registry: ModelRegistry | None = None,
        checkpoint_every_ms: int = 10 * 60_000,
        model_name: str = "stream",
    ) -> None:
        if loss_kind not in LOSS_KINDS:
            raise ConfigError(f"unknown loss kind '{loss_kind}'; known: {', '.join(LOSS_KINDS)}")
        if checkpoint_every_ms <= 0:
            raise ConfigError(f"checkpoint_every_ms must be > 0, got {checkpoint_every_ms}")
        self.model = model
        self.optimizers = optimizers
        self.loss_kind = loss_kind
        self.registry = registry
        self.checkpoint_every_ms = checkpoint_every_ms
        self.model_name = model_name
        #: under data parallelism: this rank, the DDP wrapper and the tables synced by hand
        self.dist: ddp.DistContext | None = None
        self.net: torch.nn.Module = model
        self.sparse_params: list[torch.nn.Parameter] = []

    def distribute(self, dist: ddp.DistContext) -> None:
        """Train data-parallel from now on: dense weights through DDP, sparse tables by
        :func:`~liverank.train.distributed.sync_sparse_grads`; only rank 0 publishes."""
        self.dist = dist
        self.sparse_params = [p for p in self.model.parameter_groups()[0] if p.requires_grad]
        self.net = ddp.wrap_ddp(self.model, self.sparse_params, model_device(self.model))

    def run(self, batches: Iterable[Batch]) -> StreamResult:
        tasks = list(self.model.tasks)
        records: list[dict[str, np.ndarray]] = []
        losses: list[float] = []
        checkpoints: list[Checkpoint] = []
        first_ts: int | None = None
        next_ckpt = 0
        last_ts = -(2**62)
        with tempfile.TemporaryDirectory(prefix="liverank-stream-") as tmp:
            for i, batch in enumerate(batches):
                emit = _emit_ts(batch, i)  # [B]
                if emit.size == 0:
                    continue
                if emit[0] < last_ts or np.any(np.diff(emit) < 0):
                    raise DataValidationError(
                        f"batch {i}: emit_ts goes backwards; the stream must be sorted by emit_ts",
                        column="emit_ts",
                    )
                last_ts = int(emit[-1])
                if first_ts is None:
                    first_ts = int(emit[0])
                    next_ckpt = first_ts + self.checkpoint_every_ms
                records.append(self._test(batch, tasks, i, emit, first_ts))
                losses.append(self.train_step(batch, i))
                if last_ts >= next_ckpt:
                    checkpoints.append(self.checkpoint(Path(tmp), next_ckpt, last_ts, i + 1))
                    periods = (last_ts - first_ts) // self.checkpoint_every_ms + 1
                    next_ckpt = first_ts + periods * self.checkpoint_every_ms
        predictions = pl.concat([pl.DataFrame(r) for r in records]) if records else pl.DataFrame()
        hourly = hourly_metrics(predictions, tasks)
        log.info("prequential run: %d batches, %d checkpoints", len(losses), len(checkpoints))
        return StreamResult(predictions, hourly, checkpoints, losses)

    # -- steps ----------------------------------------------------------------------------------
    def _test(
        self, batch: Batch, tasks: list[str], index: int, emit: np.ndarray, first_ts: int
    ) -> dict[str, np.ndarray]:
        """Predict ``batch`` with the current parameters (before it is trained on)."""
        probs = self.model.predict_proba(batch)  # {task: [B]}
        n = emit.shape[0]
        rec: dict[str, np.ndarray] = {k: batch[k].numpy() for k in _KEYS if k in batch}
        rec["slow"] = batch["slow"].numpy() if "slow" in batch else np.zeros(n, dtype=np.int64)
        rec["batch"] = np.full(n, index, dtype=np.int64)
        rec["hour"] = (emit - first_ts) // HOUR_MS
        for t in tasks:
            rec[t] = batch[t].numpy().astype(np.float32)
            mask = batch.get(f"mask_{t}")
            rec[f"mask_{t}"] = (
                mask.numpy().astype(np.float32) if mask is not None else np.ones(n, np.float32)
            )
            rec[f"p_{t}"] = probs[t].numpy().astype(np.float32)
        return rec

    def train_step(self, batch: Batch, index: int, weight: float = 1.0) -> float:
        """One optimiser step on ``batch`` with the trainer's stream loss; returns the loss.

        ``weight`` scales this rank's gradient under data parallelism (its share of the step's
        rows across ranks, times the world size; 0 for a rank with no rows in the step, which
        still joins the step's all-reduce with a placeholder batch and contributes nothing).
        """
        if not self.model.training:  # a walk over every submodule: only when it changes
            self.model.train()
        self.optimizers.zero_grad()
        out = self.net(batch)
        loss, _ = stream_loss(self.model, batch, out, self.loss_kind)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite {self.loss_kind} loss at stream batch {index}")
        (loss if weight == 1.0 else loss * weight).backward()
        if self.dist is not None:
            if weight == 0.0:  # the placeholder's rows must not reach SparseAdam's moments
                for p in self.sparse_params:
                    p.grad = None
            ddp.sync_sparse_grads(self.sparse_params)
        self.optimizers.step()
        return float(loss.item())

    def checkpoint(self, tmp: Path, event_ts: int, last_ts: int, batches: int) -> Checkpoint:
        """Publish the current weights to the registry (if any) as of event time ``event_ts``.

        ``tmp`` is a scratch directory for the file handed to the registry.
        """
        version = None
        if self.registry is not None and (self.dist is None or self.dist.is_main):
            path = tmp / "model.pt"
            self.model.save(path)
            meta = {"event_ts": event_ts, "last_emit_ts": last_ts, "batches": batches}
            version = self.registry.publish(self.model_name, path, meta)
        log.debug("checkpoint at event time %d (trained through %d)", event_ts, last_ts)
        return Checkpoint(event_ts, last_ts, batches, version)


def _emit_ts(batch: Batch, index: int) -> np.ndarray:
    if "emit_ts" not in batch:
        raise DataValidationError(
            f"stream batch {index} has no 'emit_ts' column (fields: {', '.join(sorted(batch))})",
            column="emit_ts",
        )
    return batch["emit_ts"].cpu().numpy().astype(np.int64)  # [B]


def hourly_metrics(predictions: pl.DataFrame, tasks: list[str]) -> pl.DataFrame:
    """AUC and GAUC (grouped by ``user_id``) per hour and task over fast rows with mask 1."""
    rows: list[dict[str, float | int | str]] = []
    if predictions.height == 0:
        return pl.DataFrame(schema={"hour": pl.Int64, "task": pl.Utf8, "n": pl.Int64})
    fast = predictions.filter(pl.col("slow") == 0)
    for (hour,), part in fast.group_by(["hour"], maintain_order=True):
        for t in tasks:
            y, p, m = part[t].to_numpy(), part[f"p_{t}"].to_numpy(), part[f"mask_{t}"].to_numpy()
            gauc = float("nan")
            if "user_id" in part.columns:
                _, gauc, _ = grouped_auc(y, p, part["user_id"].to_numpy(), m)
            rows.append(
                {
                    "hour": int(hour),
                    "task": t,
                    "n": int((m > 0).sum()),
                    "auc": auc(y, p, m),
                    "gauc": gauc,
                }
            )
    return pl.DataFrame(rows).sort("hour", "task")
