"""Event-time interleaved prequential runs: one training stream per mode, one shared eval stream.

Why. :class:`liverank.train.streaming.PrequentialTrainer` scores each mode on its *own* rows at
*their* emission times, so ``exit``, ``fast_slow`` and ``moment`` are scored on different sets
(``moment`` rows are mostly early positives) and their metrics cannot be compared. Here every
mode is scored on the same **evaluation stream** - every impression once, at its impression
time ``ts``, with its final labels - while it trains on its own **training stream** (the rows
its reporting mode emits, at their ``emit_ts``). This is Sliver's incremental evaluation
(``sliding_window.md`` section 4: evaluate the next period, then add it to training) and the
test-then-train protocol of Moment&Cross (``moment_cross.md`` section 3), on a fine time grid.

Protocol. Event time advances in slices ``[t0, t0 + slice_ms)`` aligned to the Unix epoch. In
each slice, in this order:

1. the slice hooks run with the model as of ``t0`` (e.g. the highlight-reaction probe of
   :mod:`liverank.eval.reaction`);
2. a checkpoint is published if a ``checkpoint_every_ms`` boundary of event time has passed;
3. the eval impressions with ``ts`` in the slice are scored (no gradient);
4. the training rows with ``emit_ts`` in the slice are trained on, in ``emit_ts`` order, in
   mini-batches of at most ``batch_size`` rows.

So a mode only learns from what it would have received by ``t0 + slice_ms``, and an impression
is always scored before any row of its own visit is trained on (every row has
``emit_ts >= ts``; rows of the same slice are trained after the scoring).

Example::

    run = InterleavedTrainer(PrequentialTrainer(model, build_optimizers(model), "moment"))
    result = run.run(train=SampleSet.load(moment_dir), evaluation=SampleSet.load(exit_dir))
    hourly, summary = stream_metrics(result.predictions, model.tasks, warmup_hours=24)
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from liverank.data.loader import COMPACT_ID_DTYPES, SampleSet
from liverank.errors import ConfigError, DataValidationError
from liverank.eval.metrics import auc, grouped_auc
from liverank.models.base import Batch
from liverank.models.ranker import Ranker
from liverank.train import distributed as ddp
from liverank.train.device import batch_to, model_device
from liverank.train.streaming import HOUR_MS, Checkpoint, PrequentialTrainer, hourly_metrics

log = logging.getLogger(__name__)

DAY_MS = 24 * HOUR_MS
#: a slice hook: called with (slice start in event ms, model) before the slice is scored
SliceHook = Callable[[int, Ranker], None]
#: eval-stream columns carried into the prediction frame
_EVAL_KEYS = ("sample_id", "request_id", "position", "user_id", "live_id", "ts", "user_activity")


@dataclass(frozen=True)
class SliceSchedule:
    """Which eval / train rows fall in each slice (positions into the time-sorted orders)."""

    starts: np.ndarray  # [S] slice start, event ms
    eval_bounds: np.ndarray  # [S + 1]: slice k scores eval_order[eval_bounds[k]:eval_bounds[k+1]]
    train_bounds: np.ndarray  # [S + 1]: slice k trains train_order[train_bounds[k]:...[k+1]]


def slice_schedule(
    eval_ts: np.ndarray,
    train_emit_ts: np.ndarray,
    slice_ms: int,
    span: tuple[int, int] | None = None,
) -> SliceSchedule:
    """Slices of ``slice_ms`` (epoch-aligned) covering both sorted time arrays.

    Args:
        eval_ts: ``[N]`` impression times of the eval stream, ascending.
        train_emit_ts: ``[M]`` emission times of the training stream, ascending.
        slice_ms: slice length in ms (> 0).
        span: ``(first, last)`` event time to cover instead of the arrays' own (data-parallel
            ranks pass the whole stream's, so that their slices line up).
    """
    if slice_ms <= 0:
        raise ConfigError(f"slice_ms must be > 0, got {slice_ms}")
    for name, a in (("eval ts", eval_ts), ("train emit_ts", train_emit_ts)):
        if a.size and np.any(np.diff(a) < 0):
            raise DataValidationError(f"{name} must be sorted ascending")
    ends = [a[i] for a in (eval_ts, train_emit_ts) for i in (0, -1) if a.size]
    if span is not None:
        ends = list(span)
    if not ends:
        empty = np.zeros(1, dtype=np.int64)
        return SliceSchedule(np.zeros(0, dtype=np.int64), empty, empty)
    origin = int(min(ends)) // slice_ms * slice_ms
    n = (int(max(ends)) - origin) // slice_ms + 1
    edges = origin + np.arange(n + 1, dtype=np.int64) * slice_ms  # [S + 1]
    return SliceSchedule(
        starts=edges[:-1],
        eval_bounds=np.searchsorted(eval_ts, edges, side="left"),
        train_bounds=np.searchsorted(train_emit_ts, edges, side="left"),
    )


@dataclass
class InterleavedResult:
    predictions: pl.DataFrame  # eval keys, hour, scored_at, steps_before, <task>, mask_, p_
    train_slice: np.ndarray  # [M] slice start at which each training row was trained
    train_step: np.ndarray  # [M] index of the optimiser step that used each training row
    checkpoints: list[Checkpoint] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    #: rows reset by eviction, per table (models with id policies)
    evictions: dict[str, int] = field(default_factory=dict)


def gather(arrays: dict[str, np.ndarray], idx: np.ndarray) -> Batch:
    """A batch of rows ``idx`` of a SampleSet's arrays (ids int64, labels float32)."""
    out: Batch = {}
    for k, v in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(v[idx]))
        out[k] = t.long() if t.dtype in COMPACT_ID_DTYPES else t
    return out


class InterleavedTrainer:
    """Scores a shared eval stream while training on a mode's stream, slice by slice.

    Args:
        trainer: supplies the model, optimisers, loss kind, registry and checkpoint cadence.
        slice_ms: event-time slice length (ms).
        batch_size: maximum training mini-batch inside one slice.
        hooks: called at every slice start with the model as of that time.
        eval_batch_size: maximum rows scored at once.
    """

    def __init__(
        self,
        trainer: PrequentialTrainer,
        *,
        slice_ms: int = 60_000,
        batch_size: int = 1024,
        hooks: Sequence[SliceHook] = (),
        eval_batch_size: int = 8192,
    ) -> None:
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {batch_size}, {eval_batch_size}")
        if slice_ms <= 0:
            raise ConfigError(f"slice_ms must be > 0, got {slice_ms}")
        self.trainer = trainer
        self.slice_ms = slice_ms
        self.batch_size = batch_size
        self.hooks = list(hooks)
        self.eval_batch_size = eval_batch_size

    def run(self, train: SampleSet, evaluation: SampleSet) -> InterleavedResult:
        """Run the whole stream; see the module docstring for the order inside a slice."""
        started = time.perf_counter()
        model, tasks = self.trainer.model, list(self.trainer.model.tasks)
        device = model_device(model)
        for name, s, col in (("training", train, "emit_ts"), ("evaluation", evaluation, "ts")):
            if col not in s.columns:
                raise DataValidationError(f"the {name} stream has no '{col}' column", column=col)
        emit = train["emit_ts"].astype(np.int64)  # [M]
        ts = evaluation["ts"].astype(np.int64)  # [N]
        # rows of one emission time (moment: a whole 30 s window) in sample-id order, a hash:
        # file order is impression order, which puts a window's old negatives before its fresh
        # positives and would sort the mini-batches of a busy slice by label
        train_order = np.lexsort((train["sample_id"], emit))  # [M]
        eval_order = np.argsort(ts, kind="stable")  # [N]
        dist = self.trainer.dist
        span = None
        if dist is not None:  # every rank walks the same slices: the whole stream's span
            if len(train) == 0:
                raise DataValidationError(
                    f"rank {dist.rank} has no training rows (too few users for {dist.world} ranks?)"
                )
            lo = min([int(a.min()) for a in (emit, ts) if a.size])
            hi = max([int(a.max()) for a in (emit, ts) if a.size])
            span = (-ddp.all_max(-lo), ddp.all_max(hi))
        sched = slice_schedule(ts[eval_order], emit[train_order], self.slice_ms, span)
        batch_size = (
            self.batch_size if dist is None else ddp.per_rank_batch(self.batch_size, dist.world)
        )

        probs = np.full((len(evaluation), len(tasks)), np.nan, dtype=np.float32)  # [N, T]
        scored_at = np.zeros(len(evaluation), dtype=np.int64)  # [N]
        steps_before = np.zeros(len(evaluation), dtype=np.int64)  # [N]
        train_slice = np.zeros(len(train), dtype=np.int64)  # [M]
        train_step = np.full(len(train), -1, dtype=np.int64)  # [M]
        losses: list[float] = []
        checkpoints: list[Checkpoint] = []
        emb = getattr(model, "embeddings", None)
        policies = emb is not None and len(emb.policies) > 0
        evictions: dict[str, int] = {}
        every = self.trainer.checkpoint_every_ms
        next_ckpt = int(sched.starts[0]) + every if sched.starts.size else 0
        last_trained = -1
        with tempfile.TemporaryDirectory(prefix="liverank-interleaved-") as tmp:
            n_slices = int(sched.starts.size)
            tenth = max(1, n_slices // 10)
            for k, t0 in enumerate(sched.starts.tolist()):
                if k and k % tenth == 0:  # progress of a run that can take an hour
                    spent = time.perf_counter() - started
                    log.info(
                        "interleaved run: slice %d / %d, %d train steps, %.0f s, ~%.0f s left",
                        k, n_slices, len(losses), spent, spent * (n_slices - k) / k,
                    )  # fmt: skip
                for hook in self.hooks if dist is None or dist.is_main else ():
                    hook(t0, model)
                if t0 >= next_ckpt:
                    checkpoints.append(
                        self.trainer.checkpoint(Path(tmp), next_ckpt, last_trained, len(losses))
                    )
                    next_ckpt += (t0 - next_ckpt) // every * every + every
                if policies and emb is not None:  # id admission / eviction as of the slice start
                    if dist is not None:
                        emb.sync_policies()
                    for t, n in emb.evict(t0, self.trainer.optimizers.sparse).items():
                        evictions[t] = evictions.get(t, 0) + n
                    emb.set_clock(t0)
                rows = eval_order[sched.eval_bounds[k] : sched.eval_bounds[k + 1]]  # [n_k]
                if len(rows) and model.training:
                    model.eval()  # once per slice, not once per scored batch
                for lo in range(0, len(rows), self.eval_batch_size):
                    part = rows[lo : lo + self.eval_batch_size]
                    p = model.predict_proba(batch_to(gather(evaluation.arrays, part), device))
                    probs[part] = torch.stack([p[t] for t in tasks], 1).cpu().numpy()
                scored_at[rows] = t0
                steps_before[rows] = len(losses)
                rows = train_order[sched.train_bounds[k] : sched.train_bounds[k + 1]]  # [m_k]
                # under DDP every rank takes the steps of the rank with the most rows
                counts = [len(rows)] if dist is None else ddp.all_gather_ints(len(rows))
                for lo in range(0, max(counts), batch_size):
                    part = rows[lo : lo + batch_size]
                    weight = 1.0
                    if dist is not None:  # this rank's share of the step's rows, x world
                        step_rows = sum(min(max(c - lo, 0), batch_size) for c in counts)
                        weight = dist.world * len(part) / step_rows
                    if len(part) == 0:  # joins the all-reduce, contributes nothing
                        batch = batch_to(gather(train.arrays, train_order[:1]), device)
                        self.trainer.train_step(batch, len(losses), weight=0.0)
                        losses.append(float("nan"))
                        continue
                    train_slice[part] = t0
                    train_step[part] = len(losses)
                    batch = batch_to(gather(train.arrays, part), device)
                    if dist is None:
                        losses.append(self.trainer.train_step(batch, len(losses)))
                    else:
                        losses.append(self.trainer.train_step(batch, len(losses), weight))
                    last_trained = int(emit[part[-1]])
        first = None if span is None else span[0]  # ranks count hours from the same midnight
        predictions = _prediction_frame(evaluation, tasks, probs, scored_at, steps_before, first)
        seconds = time.perf_counter() - started
        log.info(
            "interleaved run: %d slices, %d eval rows, %d train steps in %.1f s",
            sched.starts.size,
            len(evaluation),
            len(losses),
            seconds,
        )
        if policies and emb is not None and dist is not None:
            emb.sync_policies()  # the replicas end with the same counts
        if evictions:
            log.info("evicted rows (ids unseen for their time to live): %s", evictions)
        return InterleavedResult(
            predictions, train_slice, train_step, checkpoints, losses, seconds, evictions
        )


def _prediction_frame(
    evaluation: SampleSet,
    tasks: list[str],
    probs: np.ndarray,
    scored_at: np.ndarray,
    steps_before: np.ndarray,
    first_ts: int | None = None,
) -> pl.DataFrame:
    ts = evaluation["ts"].astype(np.int64)
    if first_ts is None:
        first_ts = int(ts.min()) if ts.size else 0
    origin = first_ts // DAY_MS * DAY_MS  # UTC midnight of the first day
    cols: dict[str, Any] = {k: evaluation[k] for k in _EVAL_KEYS if k in evaluation.columns}
    cols["hour"] = (ts - origin) // HOUR_MS
    cols["slow"] = np.zeros(len(ts), dtype=np.int64)
    cols["scored_at"] = scored_at
    cols["steps_before"] = steps_before
    for i, t in enumerate(tasks):
        cols[t] = evaluation[t].astype(np.float32)
        mask = f"mask_{t}"
        cols[mask] = (
            evaluation[mask] if mask in evaluation.columns else np.ones(len(ts), np.float32)
        )
        cols[f"p_{t}"] = probs[:, i]
    return pl.DataFrame(cols)


def stream_metrics(
    predictions: pl.DataFrame, tasks: Sequence[str], warmup_hours: int = 24
) -> tuple[pl.DataFrame, dict[str, dict[str, float]]]:
    """Hourly AUC / GAUC and a summary over the hours ``>= warmup_hours``.

    Returns:
        ``(hourly, summary)``: ``hourly`` has ``hour, task, n, auc, gauc`` for every hour;
        ``summary[task]`` has ``auc`` / ``gauc`` (mean over the post-warm-up hours where
        defined), ``auc_pooled`` / ``gauc_pooled`` (over all post-warm-up rows at once;
        GAUC groups by user) and ``n`` (labelled post-warm-up rows).
    """
    hourly = hourly_metrics(predictions, list(tasks))
    after = hourly.filter(pl.col("hour") >= warmup_hours) if hourly.height else hourly
    rows = predictions.filter(pl.col("hour") >= warmup_hours)
    summary: dict[str, dict[str, float]] = {}
    for t in tasks:
        h = after.filter(pl.col("task") == t) if after.height else after
        y, p = rows[t].to_numpy(), rows[f"p_{t}"].to_numpy()
        m = rows[f"mask_{t}"].to_numpy()
        _, gauc_pooled, _ = grouped_auc(y, p, rows["user_id"].to_numpy(), m)
        summary[t] = {
            "auc": _nanmean(h["auc"].to_numpy() if h.height else np.zeros(0)),
            "gauc": _nanmean(h["gauc"].to_numpy() if h.height else np.zeros(0)),
            "auc_pooled": auc(y, p, m),
            "gauc_pooled": gauc_pooled,
            "n": float((m > 0).sum()),
        }
    return hourly, summary


def _nanmean(values: np.ndarray) -> float:
    v = values[~np.isnan(values)]
    return float(v.mean()) if v.size else float("nan")
