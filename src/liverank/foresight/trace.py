"""LiveForesighter's Figure 5, ours: a few rooms over a test day, their true state and the CTR
two rankers predict for them, one with the ``foresighter`` module and one without.

The paper's Figure 5 plots two shopping rooms' empirical CVR and the exposure the system gave
them every 3 minutes, with and without LiveForesighter: with it, exposure follows the room's
good moments. Offline we cannot change exposure (the world's impressions are fixed), so we
plot what a ranker would act on: per room and time bin, the empirical CTR of its impressions,
the mean predicted CTR of each model, and the simulator's ground truth (the room's excitement
and its highlight windows). A model that follows a room's moments moves with the empirical CTR
inside the room; a room-level prior stays flat.

The figure comes with numbers that read it: per room and over all test rooms, the within-room
temporal AUC (:func:`liverank.eval.moment_metrics.room_auc`: how well a model ranks a room's
good moments above its dull ones) and the correlation across bins between the empirical and
the mean predicted CTR.

Example::

    traces = trace_rooms(with_model, without_model, samples, dataset, n_rooms=3)
    traces.figure().savefig("trace.png")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from liverank.errors import ConfigError, UnknownIdError
from liverank.eval.moment_metrics import highlight_windows, room_auc
from liverank.eval.reaction import load_room_ticks

MINUTE_MS = 60_000
MODELS = ("with", "without")


@dataclass
class RoomTraces:
    """Per room and time bin: ``live_id, bin_ts, impressions, clicks, ctr, p_with,
    p_without`` (``bins``); the rooms' ground-truth ``live_id, ts, excitement`` (``ticks``) and
    highlight windows (``windows``); the reading numbers (``summary``)."""

    bins: pl.DataFrame
    ticks: pl.DataFrame
    windows: pl.DataFrame
    summary: dict[str, Any]
    labels: tuple[str, str]

    def figure(self) -> Figure:
        """One panel per room: empirical CTR (dots), predicted CTR with / without the module
        (lines), excitement on a second axis, highlight windows shaded."""
        rooms = self.summary["rooms"]
        fig = Figure(figsize=(10, 2.8 * len(rooms)), constrained_layout=True)
        axes = fig.subplots(len(rooms), 1, squeeze=False)[:, 0]
        t0 = int(self.bins["bin_ts"].min()) if self.bins.height else 0
        for ax, room in zip(axes, rooms, strict=True):
            live = room["live_id"]
            b = self.bins.filter(pl.col("live_id") == live)
            hours = (b["bin_ts"].to_numpy() - t0) / 3_600_000
            ax.plot(hours, b["ctr"].to_numpy(), "o", ms=3, color="0.35", label="empirical CTR")
            ax.plot(hours, b["p_with"].to_numpy(), "-", color="C0", label=self.labels[0])
            ax.plot(hours, b["p_without"].to_numpy(), "--", color="C3", label=self.labels[1])
            for start, end in (
                self.windows.filter(pl.col("live_id") == live)
                .select("start_ts", "end_ts")
                .iter_rows()
            ):
                ax.axvspan((start - t0) / 3_600_000, (end - t0) / 3_600_000, color="C1", alpha=0.15)
            ax.set_ylabel("CTR")
            ax.set_title(
                f"room {live}: within-room AUC {room['room_auc_with']:.3f} ({self.labels[0]}) / "
                f"{room['room_auc_without']:.3f} ({self.labels[1]}); "
                f"{room['impressions']:,} impressions",
                fontsize=9,
            )
            t = self.ticks.filter(pl.col("live_id") == live)
            if t.height:
                twin = ax.twinx()
                twin.plot(
                    (t["ts"].to_numpy() - t0) / 3_600_000,
                    t["excitement"].to_numpy(),
                    color="C1",
                    lw=0.8,
                    alpha=0.7,
                )
                twin.set_ylabel("excitement (truth)", color="C1")
        axes[0].legend(loc="upper left", fontsize=8)
        axes[-1].set_xlabel("hours into the test period (highlight windows shaded)")
        return fig


def _bins(pred: pl.DataFrame, bin_ms: int) -> pl.DataFrame:
    return (
        pred.with_columns((pl.col("ts") // bin_ms * bin_ms).alias("bin_ts"))
        .group_by("live_id", "bin_ts")
        .agg(
            pl.len().alias("impressions"),
            pl.col("ctr").sum().alias("clicks"),
            pl.col("ctr").mean().alias("ctr"),
            pl.col("p_with").mean(),
            pl.col("p_without").mean(),
        )
        .sort("live_id", "bin_ts")
    )


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def trace_frame(
    pred: pl.DataFrame,
    ticks: pl.DataFrame,
    windows: pl.DataFrame,
    rooms: list[int] | None = None,
    n_rooms: int = 3,
    bin_ms: int = 3 * MINUTE_MS,
    labels: tuple[str, str] = ("with foresighter", "without"),
) -> RoomTraces:
    """The traces of ``pred`` (``live_id, ts, ctr, p_with, p_without``, one row per scored
    impression; ``mask_ctr`` optional).

    Rooms: ``rooms`` if given (each must have impressions), else the ``n_rooms`` rooms with
    the most impressions among those with a highlight window (all rooms if none has one).
    """
    need = ["live_id", "ts", "ctr", "p_with", "p_without"]
    missing = [c for c in need if c not in pred.columns]
    if missing:
        raise ConfigError(f"trace: the prediction frame lacks {missing}")
    if bin_ms <= 0 or n_rooms < 1:
        raise ConfigError(f"trace: need bin_ms > 0 and n_rooms >= 1, got {bin_ms}, {n_rooms}")
    if "mask_ctr" in pred.columns:
        pred = pred.filter(pl.col("mask_ctr") > 0)
    counts = pred.group_by("live_id").len().sort(["len", "live_id"], descending=[True, False])
    if rooms:
        unknown = sorted(set(rooms) - set(counts["live_id"].to_list()))
        if unknown:
            raise UnknownIdError(f"trace: no scored test impressions of room(s) {unknown}")
        chosen = list(dict.fromkeys(rooms))
    else:
        lit = set(windows["live_id"].to_list())
        ranked = [r for r in counts["live_id"].to_list() if r in lit] or counts["live_id"].to_list()
        chosen = ranked[:n_rooms]
    if not chosen:
        raise ConfigError("trace: no scored impressions")
    bins = _bins(pred.filter(pl.col("live_id").is_in(chosen)), bin_ms)
    y, room = pred["ctr"].to_numpy(), pred["live_id"].to_numpy()
    summary: dict[str, Any] = {
        "bin_minutes": bin_ms / MINUTE_MS,
        "all_rooms": {
            "impressions": pred.height,
            **{f"room_auc_{m}": room_auc(y, pred[f"p_{m}"].to_numpy(), room) for m in MODELS},
        },
        "rooms": [],
    }
    for live in chosen:
        r = pred.filter(pl.col("live_id") == live)
        b = bins.filter(pl.col("live_id") == live)
        ry, rid = r["ctr"].to_numpy(), r["live_id"].to_numpy()
        summary["rooms"].append(
            {
                "live_id": int(live),
                "impressions": r.height,
                "bins": b.height,
                **{f"room_auc_{m}": room_auc(ry, r[f"p_{m}"].to_numpy(), rid) for m in MODELS},
                **{
                    f"bin_corr_{m}": _corr(b["ctr"].to_numpy(), b[f"p_{m}"].to_numpy())
                    for m in MODELS
                },
            }
        )
    t_lo, t_hi = int(pred["ts"].min()), int(pred["ts"].max())
    in_time = pl.col("live_id").is_in(chosen) & pl.col("ts").is_between(t_lo, t_hi)
    return RoomTraces(
        bins=bins,
        ticks=ticks.filter(in_time),
        windows=windows.filter(
            pl.col("live_id").is_in(chosen)
            & (pl.col("end_ts") > t_lo)
            & (pl.col("start_ts") < t_hi)
        ),
        summary=summary,
        labels=labels,
    )


def score_test_days(
    model_with: Path, model_without: Path, samples: Path, test_days: int = 1
) -> pl.DataFrame:
    """``live_id, ts, ctr, mask_ctr, p_with, p_without`` of both saved rankers on the last
    ``test_days`` days of ``samples`` (each a file or a registry version directory)."""
    import torch

    from liverank.data.loader import SampleSet
    from liverank.models.ranker import Ranker
    from liverank.train.registry import MODEL_FILE
    from liverank.train.trainer import predict_frame

    data = SampleSet.load(samples)
    days = sorted(data.days())
    if not 1 <= test_days <= len(days):
        raise ConfigError(f"trace: test_days must be in [1, {len(days)}], got {test_days}")
    test = data.subset(data["day"] >= days[-test_days])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    probs: dict[str, np.ndarray] = {}
    for name, path in zip(MODELS, (model_with, model_without), strict=True):
        model = Ranker.load(path / MODEL_FILE if path.is_dir() else path)
        if "ctr" not in model.tasks:
            raise ConfigError(f"trace: the model in {path} has no ctr head")
        probs[name] = predict_frame(model, test)["p_ctr"].to_numpy()
    return pl.DataFrame(
        {
            "live_id": test["live_id"].astype(np.int64),
            "ts": test["ts"].astype(np.int64),
            "ctr": test["ctr"].astype(np.float32),
            "mask_ctr": test["mask_ctr"].astype(np.float32),
            "p_with": probs["with"],
            "p_without": probs["without"],
        }
    )


def trace_rooms(
    model_with: Path,
    model_without: Path,
    samples: Path,
    dataset: Path,
    rooms: list[int] | None = None,
    n_rooms: int = 3,
    bin_ms: int = 3 * MINUTE_MS,
    test_days: int = 1,
) -> RoomTraces:
    """:func:`score_test_days` then :func:`trace_frame` with the simulated dataset's truth."""
    pred = score_test_days(model_with, model_without, samples, test_days)
    return trace_frame(
        pred, load_room_ticks(dataset), highlight_windows(dataset), rooms, n_rooms, bin_ms
    )
