"""Forecasting a room's 30 s statistic sequences (LiveForesighter section 2.2, Eq. 2-3).

Examples. For a room and an *anchor* window ``k`` (the last complete window at the time
``(k + 1) * 30 s``) the input is the room's ``T`` windows ``k - T + 1 .. k`` of every statistic
(:data:`liverank.stream.room_stats.ROOM_STATS`, ``N = 12``) and the target the next ``h``
windows ``k + 1 .. k + h``, both read from a :class:`~liverank.features.store.RoomStatsStore`,
so an input holds only events before the anchor time (windows before the room went on air are
zeros). Anchors are the room's on-air windows whose ``h`` targets are on air too, every
``stride``-th one; an example's day is the day of its anchor time, and the days split into
train / validation / test like the ranker's samples (the last ``test_days``, the
``val_days`` before them).

Loss. Eq. 2 is an MSE between forecast and truth in the statistics' own units; the twelve
statistics have units from counts to money, so a raw MSE is the MSE of ``gmv``. We divide each
statistic by its standard deviation over the training targets (one number per statistic,
fitted on the training days) and take the MSE of that: every statistic weighs the same. The
same standardised MSE is the reported metric, overall, per statistic family (the paper's four:
out-room, convert, interaction, in-room) and per step ahead; the baselines are the last value
repeated and the mean of the input window (the paper's Table 5).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field

from liverank.data.io import read_meta, read_table
from liverank.errors import DataValidationError, UnknownIdError
from liverank.features.encoders import MS_PER_DAY
from liverank.features.store import RoomStatsSource, RoomStatsStore
from liverank.models.layers.forecast import StatisticTransformer
from liverank.stream.room_stats import FAMILIES, ROOM_STATS, WINDOW_MS, on_air_windows

log = logging.getLogger(__name__)

FORECASTER_FILE = "forecaster.pt"
CONFIG_FILE = "forecaster.json"


class TrainSplit(BaseModel):
    """What every forecaster config shares: the day split, the learning rate and the seed."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0)
    val_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)
    seed: int = 0


class ForecastConfig(TrainSplit):
    """Settings of the statistic forecaster (validated)."""

    target: Literal["statistics"] = "statistics"
    window: int = Field(60, ge=2, description="T: input windows of 30 s")
    horizon: int = Field(3, ge=1, description="k: windows forecast (3 as deployed)")
    stride: int = Field(2, ge=1, description="every stride-th on-air window is an anchor")
    dim: int = Field(32, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    patience: int = Field(2, ge=1)
    #: what an experiment arm forecasts with: the trained model or a baseline (Table 5)
    method: Literal["foresighter", "last_value", "mean_value"] = "foresighter"


@dataclass(frozen=True)
class Examples:
    """Per-example arrays of one length ``M``: every forecaster's ``live_id``, time ``ts``
    (ms) and ``day``, plus what a subclass adds."""

    live_id: np.ndarray
    ts: np.ndarray
    day: np.ndarray

    def __len__(self) -> int:
        return int(self.day.shape[0])

    def take(self, rows: np.ndarray) -> Self:
        """The examples ``rows`` of every array."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)}
        )

    def split(self, val_days: int, test_days: int) -> tuple[Self, Self, Self]:
        """``(train, val, test)`` by :func:`split_days`."""
        masks = split_days(self.day, val_days, test_days)
        train, val, test = (self.take(np.flatnonzero(m)) for m in masks)
        return train, val, test


@dataclass(frozen=True)
class StatExamples(Examples):
    """``x [M, N, T]`` inputs, ``y [M, N, h]`` targets (float32); ``ts`` is the anchor time."""

    x: np.ndarray
    y: np.ndarray


def anchors(rooms: pl.DataFrame, horizon: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """``(live_id [M], anchor window k [M])``: on-air windows whose next ``horizon`` windows
    are on air too, every ``stride``-th from the room's first window."""
    grid = on_air_windows(rooms)
    first, n = grid["first_window"].to_numpy(), grid["n_windows"].to_numpy()
    count = np.maximum(n - horizon, 0)  # anchors first .. first + n - 1 - horizon
    count = (count + stride - 1) // stride  # [R] every stride-th
    room = np.repeat(np.arange(len(first)), count)
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return grid["live_id"].to_numpy()[room], first[room] + offset * stride


def dataset_examples(data: str | Path, cfg: ForecastConfig) -> StatExamples:
    """:func:`build_examples` over every room of the dataset ``data`` (a clear error when no
    room is on air long enough for one example)."""
    start_ts = read_meta(data).start_ts  # first: a directory without meta.json says so
    store = RoomStatsStore.from_dataset(data)
    examples = build_examples(store, read_table(data, "rooms"), cfg, start_ts)
    if len(examples) == 0:
        raise DataValidationError(
            f"no room is on air for more than horizon = {cfg.horizon} windows", file=str(data)
        )
    return examples


def build_examples(
    store: RoomStatsStore, rooms: pl.DataFrame, cfg: ForecastConfig, start_ts: int
) -> StatExamples:
    """The examples of every room of ``rooms`` (module doc), read from ``store``."""
    live, k = anchors(rooms, cfg.horizon, cfg.stride)
    as_of = (k + 1) * WINDOW_MS  # [M] the anchor time: window k is complete
    x, _ = store.history_batch(live, as_of, cfg.window)  # [M, T, N]
    y, _ = store.history_batch(live, as_of + cfg.horizon * WINDOW_MS, cfg.horizon)  # [M, h, N]
    return StatExamples(
        x=np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32),
        y=np.ascontiguousarray(y.transpose(0, 2, 1), dtype=np.float32),
        live_id=live,
        ts=as_of,
        day=(as_of - start_ts) // MS_PER_DAY,
    )


def split_days(days: np.ndarray, val_days: int, test_days: int) -> tuple[np.ndarray, ...]:
    """Row masks ``(train, val, test)``: the last ``test_days`` days, the ``val_days`` before."""
    present = np.unique(days)
    if present.size < val_days + test_days + 1:
        raise DataValidationError(
            f"forecasting needs more than val_days + test_days = {val_days + test_days} days "
            f"of examples; the data has {present.size}"
        )
    test = present[-test_days:]
    val = present[-(test_days + val_days) : -test_days]
    return ~np.isin(days, np.r_[val, test]), np.isin(days, val), np.isin(days, test)


def last_value(x: np.ndarray, horizon: int) -> np.ndarray:
    """``[M, N, h]``: the last input window repeated."""
    return np.repeat(x[:, :, -1:], horizon, axis=2)


def mean_value(x: np.ndarray, horizon: int) -> np.ndarray:
    """``[M, N, h]``: the mean of the input window repeated."""
    return np.repeat(x.mean(axis=2, keepdims=True), horizon, axis=2)


def target_scale(y: np.ndarray) -> np.ndarray:
    """``[N]`` float32: each statistic's standard deviation over the targets ``y [M, N, h]``
    (1 where it is 0): the divisor of the standardised MSE."""
    scale = y.transpose(1, 0, 2).reshape(y.shape[1], -1).std(axis=1)
    return np.where(scale > 0, scale, 1.0).astype(np.float32)


def standardised_errors(pred: np.ndarray, y: np.ndarray, scale: np.ndarray) -> dict[str, Any]:
    """Standardised MSE overall, per family, per statistic and per step ahead."""
    sq = ((pred - y) / scale[None, :, None]) ** 2  # [M, N, h]
    index = {name: i for i, name in enumerate(ROOM_STATS)}
    return {
        "mse": float(sq.mean()),
        "families": {f: float(sq[:, [index[s] for s in ss]].mean()) for f, ss in FAMILIES.items()},
        "statistics": {s: float(sq[:, i].mean()) for s, i in index.items()},
        "steps": [float(sq[:, :, j].mean()) for j in range(sq.shape[2])],
    }


class StatisticForecaster:
    """A trained :class:`StatisticTransformer` with its scale (module doc); save / load."""

    def __init__(self, model: StatisticTransformer, scale: np.ndarray, cfg: ForecastConfig) -> None:
        self.model, self.scale, self.cfg = model, scale.astype(np.float32), cfg

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """``x [M, N, T]`` -> ``(forecast [M, N, h], encodings [M, N, D])`` (eval mode)."""
        self.model.eval()
        preds, encs = [], []
        for s in range(0, len(x), batch_size):
            p, e = self.model(torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size])))
            preds.append(p.numpy())
            encs.append(e.numpy())
        if not preds:
            n, h, d = self.model.n_variates, self.model.horizon, self.model.dim
            return np.zeros((0, n, h), np.float32), np.zeros((0, n, d), np.float32)
        return np.concatenate(preds), np.concatenate(encs)

    def save(self, out: str | Path) -> None:
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), root / FORECASTER_FILE)
        meta = {"config": self.cfg.model_dump(), "scale": self.scale.tolist(), "stats": ROOM_STATS}
        (root / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, out: str | Path) -> StatisticForecaster:
        root = Path(out)
        try:
            meta = json.loads((root / CONFIG_FILE).read_text())
            cfg = ForecastConfig(**meta["config"])
            scale = np.asarray(meta["scale"], np.float32)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataValidationError(
                f"not a forecaster directory ({exc!r}); train one with `liverank foresight train`",
                file=str(root / CONFIG_FILE),
            ) from exc
        if list(meta.get("stats", [])) != list(ROOM_STATS):
            raise DataValidationError(
                "the forecaster was trained on other statistics", file=str(root / CONFIG_FILE)
            )
        model = _model(cfg)
        try:
            model.load_state_dict(torch.load(root / FORECASTER_FILE, weights_only=True))
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataValidationError(
                f"cannot load the forecaster weights: {exc}", file=str(root / FORECASTER_FILE)
            ) from exc
        return cls(model, scale, cfg)


def _model(cfg: ForecastConfig) -> StatisticTransformer:
    return StatisticTransformer(
        len(ROOM_STATS), cfg.window, cfg.horizon, dim=cfg.dim, layers=cfg.layers, heads=cfg.heads
    )


def fit(
    train: StatExamples, val: StatExamples, cfg: ForecastConfig, progress: bool = True
) -> tuple[StatisticForecaster, list[dict[str, float]]]:
    """Train with the standardised MSE (module doc), early stopping on the validation MSE;
    returns the best epoch's forecaster and the per-epoch history."""
    if len(train) == 0 or len(val) == 0:
        raise DataValidationError("no training or validation examples (rooms too short?)")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    scale = target_scale(train.y)
    model = _model(cfg)
    forecaster = StatisticForecaster(model, scale, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    w = torch.from_numpy(1.0 / scale)[None, :, None]  # [1, N, 1]
    history: list[dict[str, float]] = []
    best, best_state, since = math.inf, None, 0
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        model.train()
        order = rng.permutation(len(train))
        total, steps = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            rows = order[s : s + cfg.batch_size]
            pred, _ = model(torch.from_numpy(train.x[rows]))
            loss = (((pred - torch.from_numpy(train.y[rows])) * w) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        val_mse = standardised_errors(forecaster.predict(val.x)[0], val.y, scale)["mse"]
        seconds = time.perf_counter() - start
        history.append(
            {
                "epoch": epoch,
                "train_mse": total / max(steps, 1),
                "val_mse": val_mse,
                "seconds": seconds,
            }
        )
        if progress:
            log.info(
                "forecaster epoch %d: train %.4f, val %.4f (%.1f s)",
                epoch,
                total / max(steps, 1),
                val_mse,
                seconds,
            )
        if val_mse < best:
            best, since = val_mse, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return forecaster, history


def train_and_evaluate(
    data: str | Path, out: str | Path | None, cfg: ForecastConfig, progress: bool = True
) -> dict[str, Any]:
    """Build the examples of ``data``, train, and compare with the last-value and mean-value
    forecasts on the test days; writes the forecaster and ``report.json`` to ``out``."""
    started = time.perf_counter()
    train, val, test = dataset_examples(data, cfg).split(cfg.val_days, cfg.test_days)
    built = time.perf_counter() - started
    log.info(
        "forecast examples: %d train, %d val, %d test (%.1f s)",
        len(train),
        len(val),
        len(test),
        built,
    )
    forecaster, history = fit(train, val, cfg, progress)
    pred, _ = forecaster.predict(test.x)
    report = {
        "data": str(data),
        "config": cfg.model_dump(),
        "examples": {"train": len(train), "val": len(val), "test": len(test)},
        "test_days": sorted(int(d) for d in np.unique(test.day)),
        "scale": dict(zip(ROOM_STATS, forecaster.scale.tolist(), strict=True)),
        "history": history,
        "seconds_examples": built,
        "test": {
            "foresighter": standardised_errors(pred, test.y, forecaster.scale),
            "last_value": standardised_errors(
                last_value(test.x, cfg.horizon), test.y, forecaster.scale
            ),
            "mean_value": standardised_errors(
                mean_value(test.x, cfg.horizon), test.y, forecaster.scale
            ),
        },
    }
    if out is not None:
        forecaster.save(out)
        (Path(out) / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _slice_metrics(pred: np.ndarray, y: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """Flat ``{mse, mse_<family>, mse_step<j>}`` of one slice (the experiment record's form)."""
    err = standardised_errors(pred, y, scale)
    out = {"mse": err["mse"], "count": float(len(y))}
    out |= {f"mse_{f}": v for f, v in err["families"].items()}
    out |= {f"mse_step{j + 1}": v for j, v in enumerate(err["steps"])}
    return out


def run_arm(
    world: str | Path, cfg: ForecastConfig, windows_world: str | Path | None
) -> dict[str, Any]:
    """One experiment arm: examples of ``world``, the forecast of ``cfg.method`` on the test
    days, and its metrics on all test examples and on those whose forecast period meets a
    highlight window of ``windows_world`` (the base world of the same seed: on a
    highlights-off world the same windows are a placebo) and those outside."""
    train, val, test = dataset_examples(world, cfg).split(cfg.val_days, cfg.test_days)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    if cfg.method == "foresighter":
        forecaster, history = fit(train, val, cfg, progress=False)
        pred, scale = forecaster.predict(test.x)[0], forecaster.scale
    else:
        scale = target_scale(train.y)
        baseline = last_value if cfg.method == "last_value" else mean_value
        pred = baseline(test.x, cfg.horizon)
    seconds = time.perf_counter() - started
    metrics = {"all": {"forecast": _slice_metrics(pred, test.y, scale)}}
    if windows_world is not None:
        from liverank.eval.moment_metrics import highlight_windows, in_windows

        windows = highlight_windows(windows_world)
        mid = test.ts[:, None] + (np.arange(cfg.horizon)[None, :] + 0.5) * WINDOW_MS  # [M, h]
        hit = np.zeros(len(test), dtype=bool)
        for j in range(cfg.horizon):
            hit |= in_windows(test.live_id, mid[:, j].astype(np.int64), windows)
        for name, rows in (("highlight", hit), ("outside-highlight", ~hit)):
            if rows.any():
                metrics[name] = {"forecast": _slice_metrics(pred[rows], test.y[rows], scale)}
    trained = sum(h.get("seconds", 0.0) for h in history)
    return {
        "metrics": metrics,
        "history": history,
        "epochs_run": len(history) or None,
        "best_epoch": int(np.argmin([h["val_mse"] for h in history])) if history else None,
        "train_samples_per_s": len(train) * len(history) / trained if trained else None,
        "examples": {"train": len(train), "val": len(val), "test": len(test)},
        "method_seconds": round(seconds, 2),
    }


def forecast_room(
    forecaster: StatisticForecaster, store: RoomStatsSource, live_id: int, as_of_ts: int
) -> dict[str, Any]:
    """A room's last ``T`` windows of every statistic as of ``as_of_ts`` (point in time) and
    the forecast of the next ``K``: ``{as_of_ts, windows, forecast_windows, history: {stat:
    [T]}, forecast: {stat: [K]}, known}`` (``known`` False: an unknown room, all zeros)."""
    cfg = forecaster.cfg
    hist, known = store.history_batch(np.array([live_id]), np.array([as_of_ts]), cfg.window)
    x = np.ascontiguousarray(hist.transpose(0, 2, 1), dtype=np.float32)  # [1, N, T]
    pred = forecaster.predict(x)[0][0]  # [N, K]
    last = as_of_ts // WINDOW_MS - 1  # the last complete window
    return {
        "live_id": int(live_id),
        "as_of_ts": int(as_of_ts),
        "known": bool(known[0]),
        "windows": list(range(last - cfg.window + 1, last + 1)),
        "forecast_windows": list(range(last + 1, last + 1 + cfg.horizon)),
        "history": {s: x[0, i].tolist() for i, s in enumerate(ROOM_STATS)},
        "forecast": {s: pred[i].tolist() for i, s in enumerate(ROOM_STATS)},
    }


def room_forecast(
    forecaster: StatisticForecaster, data: str | Path, live_id: int, as_of_ts: int | None = None
) -> dict[str, Any]:
    """:func:`forecast_room` on a dataset (``as_of_ts`` default: the middle of the room's
    show); :class:`UnknownIdError` for a room the dataset does not have."""
    rooms = read_table(data, "rooms")
    row = rooms.filter(pl.col("live_id") == live_id)
    if row.height == 0:
        raise UnknownIdError(f"room {live_id} is not in {data}")
    if as_of_ts is None:
        as_of_ts = (int(row["start_ts"][0]) + int(row["end_ts"][0])) // 2
    return forecast_room(forecaster, RoomStatsStore.from_dataset(data), live_id, as_of_ts)
