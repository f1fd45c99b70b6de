"""Offline multi-task trainer: chronological split, sparse + dense optimisers, early stopping.

One epoch = one shuffled pass over the training days. After each epoch the model is scored on
the validation day(s); the best epoch by ``train.monitor`` is kept (early stopping with
``train.patience``), checkpointed, and finally evaluated once on the test day(s).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from liverank.config import ExperimentConfig
from liverank.data.batch_order import GROUP_COLUMN
from liverank.data.loader import SampleSet
from liverank.data.parquet_stream import ParquetSampleStream
from liverank.errors import ConfigError
from liverank.eval.metrics import auc, grouped_auc
from liverank.features.spec import FeatureMap
from liverank.models.base import Batch
from liverank.models.ranker import Ranker, RankerOutput
from liverank.train import distributed as ddp
from liverank.train.device import batch_to, model_device, resolve_device
from liverank.train.optim import build_optimizers

log = logging.getLogger(__name__)

#: what the trainer reads: rows in memory, or a Parquet stream (``data.loader``)
Samples = SampleSet | ParquetSampleStream

#: sample columns carried into a prediction frame (the evaluator's group keys)
PREDICTION_KEYS = (
    "sample_id",
    "request_id",
    "user_id",
    "live_id",
    "author_id",
    "position",
    "hour",
    "day",
    "user_activity",
)


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.set_num_threads(threads)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_metric: float
    seconds: float
    samples_per_s: float
    #: the epoch's mean of each loss part (``task/T``, ``aux/NAME`` as weighted in the total,
    #: ``weight/T`` of a task weighting and ``weight_cos/T`` of an adaptive one, ``total``)
    #: and of each scalar module diagnostic (``diag/MODULE/NAME``: gate means, regulariser
    #: terms ...), weighted by batch rows over the batches that had it (under DDP: rank 0's)
    parts: dict[str, float] = field(default_factory=dict)


class LossPartMeans:
    """Row-weighted running means of the steps' scalar loss parts and module diagnostics
    (:attr:`EpochRecord.parts`; also read from a checkpoint by ``benchmarks/loss_parts.py``)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.rows: dict[str, int] = {}

    def add_step(self, batch: Batch, out: RankerOutput, parts: dict[str, torch.Tensor]) -> None:
        """One step's ``parts`` (from :meth:`Ranker.loss`) and ``out``'s diagnostics."""
        rows = len(batch["user_id"])
        self._add(parts, rows)
        self._add(out.diagnostics, rows, prefix="diag/")

    def _add(self, values: dict[str, torch.Tensor | float], rows: int, prefix: str = "") -> None:
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue  # only scalars are averaged
                value = value.item()
            key = prefix + name
            self.sums[key] = self.sums.get(key, 0.0) + float(value) * rows
            self.rows[key] = self.rows.get(key, 0) + rows

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.rows[k] for k in sorted(self.sums)}


@dataclass
class FitResult:
    best_epoch: int
    best_metric: float
    checkpoint: Path
    history: list[EpochRecord] = field(default_factory=list)


def monitor_value(frame: pl.DataFrame, monitor: str, tasks: list[str]) -> float:
    """Compute the early-stopping metric on a prediction frame (higher is better)."""
    if monitor == "mean_auc":
        vals = [_task_auc(frame, t, "auc") for t in tasks]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")
    task, _, kind = monitor.rpartition("_")
    if task not in tasks or kind not in ("auc", "gauc", "uauc"):
        raise ConfigError(
            f"train.monitor '{monitor}' must be 'mean_auc' or '<task>_<auc|gauc|uauc>' with task in {tasks}"
        )
    return _task_auc(frame, task, kind)


def _task_auc(frame: pl.DataFrame, task: str, kind: str) -> float:
    observed = frame[f"mask_{task}"].to_numpy() > 0
    y = frame[task].to_numpy()[observed]
    p = frame[f"p_{task}"].to_numpy()[observed]
    if kind == "auc":
        return float(auc(y, p))
    uauc, gauc, _ = grouped_auc(y, p, frame["user_id"].to_numpy()[observed])
    return float(gauc if kind == "gauc" else uauc)


def _cycle(
    data: ParquetSampleStream, batch_size: int, seed: int, rank: int, group_by: str | None
) -> Iterator[Batch]:
    """Shuffled passes over a stream, one after another (a new seed each pass)."""
    for k in itertools.count():
        pass_seed = seed * 7919 + rank * 131 + k
        yield from data.iter_batches(batch_size, shuffle=True, seed=pass_seed, group_by=group_by)


class Trainer:
    """Offline training of one model; with ``dist`` (a ``torchrun`` rank) data-parallel:
    ``data`` is then this rank's partition, ``train.batch_size`` the global batch, and
    validation / test predictions are gathered on rank 0, which alone writes checkpoints."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        feature_map: FeatureMap,
        model: Ranker,
        dist: ddp.DistContext | None = None,
    ) -> None:
        self.cfg = cfg
        self.feature_map = feature_map
        self.last_epoch_parts: dict[str, float] = {}
        self.model = model
        self.tasks = list(model.tasks)
        self.dist = dist
        t = cfg.train
        self.device = ddp.local_device(resolve_device(t.device))
        self.model.to(self.device)  # before the optimisers take the parameters
        self.optim = build_optimizers(
            model, lr_sparse=t.lr_sparse, lr_dense=t.lr_dense, weight_decay=t.weight_decay
        )
        self.sparse_params = [p for p in model.parameter_groups()[0] if p.requires_grad]
        #: what the training forward pass calls: the model, or its DDP wrapper
        self.net: torch.nn.Module = model
        self.local_batch = t.batch_size
        if dist is not None:
            self.local_batch = ddp.per_rank_batch(t.batch_size, dist.world)
            self.net = ddp.wrap_ddp(model, self.sparse_params, self.device)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    def _epoch_batches(self, data: Samples, epoch: int) -> tuple[int, Iterator[Batch]]:
        """(number of steps, batches) of one epoch on this rank."""
        t = self.cfg.train
        bs, seed = self.local_batch, t.seed * 1000 + epoch
        group_by = GROUP_COLUMN.get(self.cfg.data.batch_order)
        if self.dist is None:
            n_rows = len(data)
            batches = data.iter_batches(bs, shuffle=True, seed=seed, group_by=group_by)
        elif isinstance(data, SampleSet):  # every rank takes the longest rank's steps
            n_rows = ddp.all_max(len(data))
            groups = data.group_keys(group_by)
            order = ddp.rank_order(len(data), n_rows, seed, self.dist.rank, groups)
            batches = (data.batch(np.sort(order[lo : lo + bs])) for lo in range(0, n_rows, bs))
        else:  # a stream: a shorter rank starts another shuffled pass over its rows
            n_rows = ddp.all_max(len(data))
            batches = _cycle(data, bs, seed, self.dist.rank, group_by)
        n_batches = math.ceil(n_rows / bs)
        if t.max_batches_per_epoch:
            n_batches = min(n_batches, t.max_batches_per_epoch)
        return n_batches, batches

    # -- training ---------------------------------------------------------------------------
    def train_epoch(self, data: Samples, epoch: int) -> tuple[float, float]:
        """One pass over ``data``; returns (mean loss, samples per second). The epoch's mean
        loss parts and scalar diagnostics are left in :attr:`last_epoch_parts`."""
        t = self.cfg.train
        self.model.train()
        n_batches, batches = self._epoch_batches(data, epoch)
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {epoch}",
            # None: hide when stderr is not a terminal
            disable=None if t.progress and self.is_main else True,
            leave=False,
            unit="batch",
        )
        total, seen, start = 0.0, 0, time.perf_counter()
        parts_mean = LossPartMeans()
        for i, batch in enumerate(batches):
            if i >= n_batches:
                break
            self.optim.zero_grad()
            batch = batch_to(batch, self.device)
            out = self.net(batch)
            loss, parts = self.model.loss(batch, out)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}, batch {i}")
            loss.backward()  # under DDP: dense gradients averaged over the ranks here
            if self.dist is not None:
                ddp.sync_sparse_grads(self.sparse_params)
            self.optim.step()
            bs = len(batch["user_id"])
            total += loss.item() * bs
            seen += bs
            parts_mean.add_step(batch, out, parts)
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{total / seen:.4f}")
        bar.close()
        self.last_epoch_parts = parts_mean.means()
        elapsed = time.perf_counter() - start
        loss, sps = total / max(seen, 1), seen / max(elapsed, 1e-9)
        if self.dist is not None and len(self.model.embeddings.policies):
            self.model.embeddings.sync_policies()  # every rank admits the same ids from here
        if self.dist is not None:  # the group's mean loss and total samples per second
            loss, sps = ddp.all_mean(loss), ddp.all_mean(sps) * self.dist.world
        return loss, sps

    def predict(self, data: Samples) -> pl.DataFrame | None:
        """Prediction frame of ``data``; under DDP every rank predicts its partition and
        rank 0 gets all of them (sorted by ``sample_id``), the other ranks ``None``."""
        frame = predict_frame(self.model, data, self.cfg.train.eval_batch_size)
        if self.dist is None:
            return frame
        frames = ddp.gather_to_main(frame)
        if frames is None:
            return None
        whole = pl.concat([f for f in frames if f.height])
        return whole.sort("sample_id") if "sample_id" in whole.columns else whole

    def fit(self, train: Samples, val: Samples, out_dir: Path) -> FitResult:
        t = self.cfg.train
        ckpt_dir = out_dir / "checkpoints"
        if self.is_main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        best_metric, best_epoch, since_best = -math.inf, 0, 0
        history: list[EpochRecord] = []
        best_path = ckpt_dir / "best.pt"
        for epoch in range(1, t.epochs + 1):
            start = time.perf_counter()
            loss, sps = self.train_epoch(train, epoch)
            frame = self.predict(val)
            # under DDP rank 0 holds the frame and tells the others the metric
            metric = monitor_value(frame, t.monitor, self.tasks) if frame is not None else 0.0
            if self.dist is not None:
                metric = float(ddp.broadcast_object(metric))
            rec = EpochRecord(
                epoch, loss, metric, time.perf_counter() - start, sps, self.last_epoch_parts
            )
            history.append(rec)
            log.info(
                "epoch %d: train loss %.4f, val %s %.4f (%.0f samples/s)",
                epoch,
                loss,
                t.monitor,
                metric,
                sps,
            )
            if self.is_main:  # one copy, written by rank 0
                self.model.save(ckpt_dir / f"epoch-{epoch:03d}.pt")
            if metric > best_metric:
                best_metric, best_epoch, since_best = metric, epoch, 0
                if self.is_main:
                    self.model.save(best_path)
            else:
                since_best += 1
                if since_best > t.patience:
                    log.info("early stop after epoch %d (best epoch %d)", epoch, best_epoch)
                    break
        # restore the best weights (rank 0 reads them and sends them: no shared disk needed)
        if self.is_main:
            best = Ranker.load(best_path)
            self.model.load_state_dict(best.state_dict())
        if self.dist is not None:
            ddp.broadcast_state(self.model)
        return FitResult(best_epoch, best_metric, best_path, history)


#: the prediction-frame name of the stay-time regression: label and prediction are both
#: ``log(1 + stay seconds)``, the space the head regresses in (``Ranker.loss``)
REGRESSION_FRAME_NAMES = {"stay_ms": "log_stay_s"}


@torch.no_grad()
def predict_frame(model: Ranker, data: Samples, batch_size: int = 8192) -> pl.DataFrame:
    """Prediction frame: group keys, labels, masks and ``p_<task>`` for every sample of
    ``data``; with regression heads also ``log_stay_s`` / ``p_log_stay_s``."""
    model.eval()
    if data.long_history is not None:  # the rows the Cross GSUs read (idempotent, no copy)
        model.attach_long_history(data.long_history, data.long_len)
    tasks, regression = list(model.tasks), list(model.regression)
    probs: dict[str, list[np.ndarray]] = {t: [] for t in [*tasks, *regression]}
    device = model_device(model)
    for batch in data.iter_batches(batch_size, shuffle=False, seed=0):
        out = model(batch_to(batch, device))
        for t in tasks:
            probs[t].append(torch.sigmoid(out.logits[t]).cpu().numpy())
        for t in regression:
            probs[t].append(out.regression[t].cpu().numpy())
    arrays = {t: np.concatenate(v) if v else np.zeros(0) for t, v in probs.items()}
    frame = prediction_frame(data, tasks, arrays)
    for t in regression:
        name = REGRESSION_FRAME_NAMES[t]
        target = np.log1p(np.clip(data[t].astype(np.float64), 0, None) / 1000.0)
        frame = frame.with_columns(
            pl.Series(name, target.astype(np.float32)),
            pl.Series(f"p_{name}", arrays[t].astype(np.float32)),
        )
    return frame


def prediction_frame(data: Samples, tasks: list[str], probs: dict[str, np.ndarray]) -> pl.DataFrame:
    cols: dict[str, np.ndarray] = {}
    for k in PREDICTION_KEYS:
        if k in data.columns:
            cols[k] = data[k]
    for t in tasks:
        cols[t] = data[t].astype(np.float32)
        cols[f"mask_{t}"] = data[f"mask_{t}"].astype(np.float32)
        cols[f"p_{t}"] = probs[t].astype(np.float32)
    return pl.DataFrame(cols)
