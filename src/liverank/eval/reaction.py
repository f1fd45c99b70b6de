"""How fast a streaming model reacts to a highlight onset (Moment&Cross section 3.1).

Moment&Cross (``moment_cross.md`` 3.1) argues that 30 s first-only reporting lets a room's
predicted CTR follow a highlight within about a minute, through fast gradient updates (its ID
embedding), where 5-minute or exit-time reporting lags. This module measures that lag.

**Onsets** (ground truth, simulator only): :func:`find_onsets` reads the room excitement of
``sim_truth/room_ticks.parquet`` (30 s grid) and calls tick ``k`` of a room an onset when the
excitement crosses ``high`` upward (``e[k-1] < high <= e[k]``) after a calm period (mean
excitement of the ``baseline_ms`` before it below ``low``; the room must have been on air for
the whole period).

**Probe** (:class:`ReactionProbe`, a slice hook of :mod:`liverank.train.stream_eval`). For each
onset a fixed input batch is built once: ``n_users`` probe users (random, fixed seed), each with
their most recent eval row before the baseline period (their first row if none), in which the
candidate-side fields (:data:`CANDIDATE_FIELDS`) are replaced by those of the room's most recent
eval impression before the onset. Everything is frozen, so only the model's parameters change
between two scorings: the probe measures what the model *learned*, not a change of audience
(the room's own impressions would mix the two, since a highlight also changes who is shown the
room, and are too sparse: about 2 per room-minute on ``small``). At every slice start within
``[onset - baseline_ms, onset + censor_ms]`` the probe is scored; the room's predicted CTR is
the mean ``p_ctr`` over the probe users.

**Control.** Online training also moves every room alike (the CTR bias follows the time of day,
shared layers drift), which on its own crosses a +10 % threshold about as often as a highlight
does. So the same users are also scored, at the same times, against ``n_control_rooms`` random
rooms (fixed candidate fields, as above), and the series used for the delays is the room's
predicted CTR *divided by* the control's: a reaction is a rise of this room relative to the
others. The raw series is kept (``raw``) for comparison.

**Delay** (:func:`reaction_delays`): baseline = mean of the values at times in
``[onset - baseline_ms, onset)``; the delay is the first time ``t >= onset`` with value
``> baseline * (1 + margin)``, minus the onset; no such ``t`` up to ``onset + censor_ms``:
censored (did not react). The resolution is the slice length.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import torch

from liverank.data.loader import SampleSet
from liverank.errors import ConfigError, DataValidationError
from liverank.models.ranker import Ranker
from liverank.train.stream_eval import gather

log = logging.getLogger(__name__)

TICK_MS = 30_000
#: sample fields that describe the candidate room (replaced in the probe rows)
CANDIDATE_FIELDS: tuple[str, ...] = (
    "live_id",
    "author_id",
    "author_type",
    "author_fans",
    "room_category",
    "room_age_bucket",
)
TRUTH_FILE = Path("sim_truth") / "room_ticks.parquet"


def find_onsets(
    room_ticks: pl.DataFrame,
    high: float = 1.0,
    low: float = 0.6,
    baseline_ms: int = 5 * 60_000,
    tick_ms: int = TICK_MS,
) -> pl.DataFrame:
    """Highlight onsets ``live_id, onset_ts, excitement`` (sorted by ``onset_ts``).

    Args:
        room_ticks: ``live_id, ts, excitement`` on a ``tick_ms`` grid per room.
        high: excitement level whose upward crossing is an onset.
        low: the mean excitement over the ``baseline_ms`` before must be below this.
    """
    if not low <= high:
        raise ConfigError(f"need low <= high, got low={low}, high={high}")
    n_base = max(1, baseline_ms // tick_ms)
    e = pl.col("excitement")
    return (
        room_ticks.select("live_id", "ts", "excitement")
        .sort("live_id", "ts")
        .with_columns(
            e.shift(1).over("live_id").alias("_prev"),
            e.rolling_mean(n_base).shift(1).over("live_id").alias("_base"),
        )
        .filter((e >= high) & (pl.col("_prev") < high) & (pl.col("_base") < low))
        .select("live_id", pl.col("ts").alias("onset_ts"), "excitement")
        .sort("onset_ts", "live_id")
    )


def load_room_ticks(dataset_dir: str | Path) -> pl.DataFrame:
    """``live_id, ts, excitement`` of a simulated dataset's ``sim_truth/room_ticks.parquet``
    (the highlight ground truth); :class:`DataValidationError` for a dataset without it."""
    path = Path(dataset_dir) / TRUTH_FILE
    if not path.exists():
        raise DataValidationError(
            "no highlight ground truth: only datasets written by `liverank simulate` have it",
            file=str(path),
        )
    return pl.read_parquet(path, columns=["live_id", "ts", "excitement"])


def load_onsets(dataset_dir: str | Path, **rule: float) -> pl.DataFrame:
    """:func:`find_onsets` on a simulated dataset's ``sim_truth/room_ticks.parquet``."""
    return find_onsets(load_room_ticks(dataset_dir), **rule)  # type: ignore[arg-type]


def reaction_delays(
    series: pl.DataFrame,
    onsets: pl.DataFrame,
    margin: float = 0.10,
    baseline_ms: int = 5 * 60_000,
    censor_ms: int = 15 * 60_000,
) -> pl.DataFrame:
    """Reaction delay of every onset from a predicted-CTR series.

    Args:
        series: ``onset_id, ts, value``: the room's predicted CTR at times ``ts``.
        onsets: ``onset_id, onset_ts`` (other columns are kept).
        margin: relative rise over the baseline that counts as a reaction.

    Returns:
        ``onsets`` plus ``baseline`` (null without a pre-onset value), ``delay_ms`` (null when
        censored or without baseline) and ``reacted`` (bool).
    """
    if margin < 0 or baseline_ms <= 0 or censor_ms < 0:
        raise ConfigError(
            f"need margin >= 0, baseline_ms > 0, censor_ms >= 0; got {margin}, {baseline_ms}, "
            f"{censor_ms}"
        )
    s = series.join(onsets.select("onset_id", "onset_ts"), on="onset_id", how="inner")
    rel = pl.col("ts") - pl.col("onset_ts")
    base = _baselines(s, baseline_ms)
    first = (
        s.join(base, on="onset_id", how="inner")
        .filter(
            (rel >= 0) & (rel <= censor_ms) & (pl.col("value") > pl.col("baseline") * (1 + margin))
        )
        .group_by("onset_id")
        .agg(rel.min().alias("delay_ms"))
    )
    return (
        onsets.join(base, on="onset_id", how="left")
        .join(first, on="onset_id", how="left")
        .with_columns(pl.col("delay_ms").is_not_null().alias("reacted"))
        .sort("onset_id")
    )


def _baselines(s: pl.DataFrame, baseline_ms: int) -> pl.DataFrame:
    """``onset_id, baseline``: mean value over ``[onset_ts - baseline_ms, onset_ts)``."""
    rel = pl.col("ts") - pl.col("onset_ts")
    return (
        s.filter((rel >= -baseline_ms) & (rel < 0))
        .group_by("onset_id")
        .agg(pl.col("value").mean().alias("baseline"))
    )


def rise_curve(
    series: pl.DataFrame,
    onsets: pl.DataFrame,
    offsets_ms: tuple[int, ...] = (0, 60_000, 120_000, 300_000, 600_000, 900_000),
    baseline_ms: int = 5 * 60_000,
) -> pl.DataFrame:
    """Relative rise of the predicted CTR over the baseline, ``offset`` after the onset.

    For every onset with a baseline and every offset, the first value at or after
    ``onset_ts + offset`` (within one minute) divided by the baseline, minus 1. Returns
    ``offset_min, mean_rise, median_rise, n`` (threshold-free: complements the delays).
    """
    s = series.join(onsets.select("onset_id", "onset_ts"), on="onset_id", how="inner")
    base = _baselines(s, baseline_ms)
    targets = (
        onsets.select("onset_id", "onset_ts")
        .join(pl.DataFrame({"offset": list(offsets_ms)}, schema={"offset": pl.Int64}), how="cross")
        .with_columns((pl.col("onset_ts") + pl.col("offset")).alias("_t"))
        .sort("_t")
    )
    at = targets.join_asof(
        s.select("onset_id", "ts", "value").sort("ts"),
        left_on="_t",
        right_on="ts",
        by="onset_id",
        strategy="forward",
        tolerance=60_000,
        check_sortedness=False,
    ).join(base, on="onset_id", how="inner")
    rise = (pl.col("value") / pl.col("baseline") - 1).alias("rise")
    return (
        at.filter(pl.col("value").is_not_null())
        .with_columns(rise)
        .group_by("offset")
        .agg(
            pl.col("rise").mean().alias("mean_rise"),
            pl.col("rise").median().alias("median_rise"),
            pl.len().alias("n"),
        )
        .with_columns((pl.col("offset") / 60_000).alias("offset_min"))
        .sort("offset")
        .select("offset_min", "mean_rise", "median_rise", "n")
    )


def summarize_reactions(delays: pl.DataFrame) -> dict[str, float]:
    """``n_onsets`` (with a baseline), ``share_reacting``, ``median_delay_s`` (censored onsets
    count as never reacting: NaN unless more than half react) and ``median_delay_reacting_s``
    (over the onsets that react)."""
    d = delays.filter(pl.col("baseline").is_not_null())
    n = d.height
    if n == 0:
        nan = float("nan")
        return {
            "n_onsets": 0.0,
            "share_reacting": nan,
            "median_delay_s": nan,
            "median_delay_reacting_s": nan,
        }
    delay = d["delay_ms"].fill_null(np.inf).cast(pl.Float64).to_numpy() / 1000.0  # [n]
    med = float(np.median(delay))
    reacting = delay[np.isfinite(delay)]
    return {
        "n_onsets": float(n),
        "share_reacting": float(reacting.size / n),
        "median_delay_s": med if np.isfinite(med) else float("nan"),
        "median_delay_reacting_s": float(np.median(reacting)) if reacting.size else float("nan"),
    }


class ReactionProbe:
    """Slice hook recording each onset room's predicted CTR on a frozen probe batch.

    Build it with :meth:`build`; pass it in ``hooks`` of the interleaved run; then read
    :meth:`series` or :meth:`delays`.
    """

    def __init__(
        self,
        probe: SampleSet,
        onsets: pl.DataFrame,
        n_users: int,
        baseline_ms: int = 5 * 60_000,
        censor_ms: int = 15 * 60_000,
        task: str = "ctr",
        control: SampleSet | None = None,
    ) -> None:
        if len(probe) != onsets.height * n_users:
            raise ValueError(f"probe has {len(probe)} rows, expected {onsets.height} x {n_users}")
        self.probe = probe
        self.control = control
        self.onsets = onsets.with_row_index("onset_id").with_columns(
            pl.col("onset_id").cast(pl.Int64)
        )
        self.n_users = n_users
        self.baseline_ms = baseline_ms
        self.censor_ms = censor_ms
        self.task = task
        self._onset_ts = self.onsets["onset_ts"].to_numpy()  # [O] ascending
        self._records: list[tuple[np.ndarray, int, np.ndarray, float]] = []

    @classmethod
    def build(
        cls,
        evaluation: SampleSet,
        onsets: pl.DataFrame,
        n_users: int = 64,
        seed: int = 0,
        max_onsets: int | None = 500,
        after_ts: int | None = None,
        baseline_ms: int = 5 * 60_000,
        censor_ms: int = 15 * 60_000,
        n_control_rooms: int = 8,
    ) -> ReactionProbe:
        """Probe batch of ``n_users`` users per onset (see the module docstring).

        Onsets before ``after_ts`` (e.g. the warm-up) are dropped, then at most ``max_onsets``
        are kept at random (``seed``); onsets of rooms without any eval impression are dropped.
        ``n_control_rooms`` random eval impressions (after ``after_ts``) give the candidate side
        of the control batch (the same users, their rows as of ``after_ts``); 0: no control.
        """
        rng = np.random.default_rng(seed)
        o = onsets.select("live_id", "onset_ts")
        if after_ts is not None:
            o = o.filter(pl.col("onset_ts") >= after_ts)
        rows = pl.DataFrame(
            {
                "_row": np.arange(len(evaluation), dtype=np.int64),
                "user_id": evaluation["user_id"].astype(np.int64),
                "live_id": evaluation["live_id"].astype(np.int64),
                "ts": evaluation["ts"].astype(np.int64),
            }
        ).sort("ts")
        o = o.filter(pl.col("live_id").is_in(rows["live_id"].unique().implode()))
        if max_onsets is not None and o.height > max_onsets:
            o = o[np.sort(rng.choice(o.height, max_onsets, replace=False))]
        o = o.sort("onset_ts", "live_id")
        room_row = _asof_row(o, rows, "live_id", "onset_ts")  # [O]
        users = np.unique(evaluation["user_id"])
        users = np.sort(rng.choice(users, min(n_users, users.size), replace=False))  # [P]
        pairs = (
            o.with_row_index("_o")
            .join(pl.DataFrame({"user_id": users}), how="cross")
            .with_columns((pl.col("onset_ts") - baseline_ms).alias("_at"))
            .sort("_at")
        )
        user_row = _asof_row(pairs, rows, "user_id", "_at")
        order = np.lexsort((pairs["user_id"].to_numpy(), pairs["_o"].to_numpy()))
        user_row = user_row[order]  # [O * P], onset-major
        probe = evaluation.subset(user_row)
        room = np.repeat(room_row, users.size)  # [O * P]
        for f in CANDIDATE_FIELDS:
            if f in evaluation.columns:
                probe.arrays[f] = evaluation[f][room]
        control = None
        if n_control_rooms > 0:
            start = int(rows["ts"].min()) if after_ts is None else after_ts
            late = rows.filter(pl.col("ts") >= start)["_row"].to_numpy()
            rooms = rng.choice(late, min(n_control_rooms, late.size), replace=False)  # [K]
            at = pl.DataFrame({"user_id": users, "_at": np.full(users.size, start)})
            mine = _asof_row(at, rows, "user_id", "_at")  # [P]
            control = evaluation.subset(np.repeat(mine, rooms.size))  # [P * K], user-major
            for f in CANDIDATE_FIELDS:
                if f in evaluation.columns:
                    control.arrays[f] = evaluation[f][np.tile(rooms, users.size)]
        log.info("reaction probe: %d onsets x %d users", o.height, users.size)
        return cls(probe, o, int(users.size), baseline_ms, censor_ms, control=control)

    @torch.no_grad()
    def __call__(self, t0: int, model: Ranker) -> None:
        lo = int(np.searchsorted(self._onset_ts, t0 - self.censor_ms, side="left"))
        hi = int(np.searchsorted(self._onset_ts, t0 + self.baseline_ms, side="right"))
        if hi <= lo:
            return
        idx = np.arange(lo * self.n_users, hi * self.n_users)  # [A * P]
        p = model.predict_proba(gather(self.probe.arrays, idx))[self.task].numpy()  # [A * P]
        value = p.reshape(hi - lo, self.n_users).mean(1)  # [A]
        ref = float("nan")
        if self.control is not None:
            every = np.arange(len(self.control))
            c = model.predict_proba(gather(self.control.arrays, every))[self.task].numpy()
            ref = float(c.mean())
        self._records.append((np.arange(lo, hi), t0, value, ref))

    def series(self, normalised: bool = True) -> pl.DataFrame:
        """``onset_id, ts, value, raw, control``: every recorded scoring.

        ``raw`` is the room's mean predicted CTR over the probe users, ``control`` the mean over
        the control batch at the same time, and ``value`` = ``raw / control`` when
        ``normalised`` and a control exists (this removes model-wide drifts, e.g. of the CTR
        bias over the day, that move every room alike), else ``raw``.
        """
        if not self._records:
            schema = {"onset_id": pl.Int64, "ts": pl.Int64, "value": pl.Float64}
            return pl.DataFrame(schema=schema | {"raw": pl.Float64, "control": pl.Float64})
        ids = np.concatenate([r[0] for r in self._records])
        ts = np.concatenate([np.full(r[0].size, r[1], dtype=np.int64) for r in self._records])
        raw = np.concatenate([r[2] for r in self._records]).astype(np.float64)
        ref = np.concatenate([np.full(r[0].size, r[3]) for r in self._records])
        value = raw / ref if normalised and self.control is not None else raw
        return pl.DataFrame(
            {"onset_id": ids.astype(np.int64), "ts": ts, "value": value, "raw": raw, "control": ref}
        )

    def delays(self, margin: float = 0.10, normalised: bool = True) -> pl.DataFrame:
        """:func:`reaction_delays` of the recorded series."""
        return reaction_delays(
            self.series(normalised), self.onsets, margin, self.baseline_ms, self.censor_ms
        )


def _asof_row(left: pl.DataFrame, rows: pl.DataFrame, by: str, on: str) -> np.ndarray:
    """``_row`` of the last ``rows`` entry of the same ``by`` with ``ts <= left[on]`` (the first
    one of that ``by`` when there is none). ``left`` must be sorted by ``on``."""
    back = left.join_asof(
        rows.select(by, "ts", "_row"), left_on=on, right_on="ts", by=by, check_sortedness=False
    )  # the callers sort both sides by time
    first = rows.group_by(by).agg(pl.col("_row").first().alias("_first"))
    out = back.join(first, on=by, how="left", maintain_order="left")
    return out.select(pl.coalesce("_row", "_first")).to_series().to_numpy().astype(np.int64)
