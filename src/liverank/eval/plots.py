"""Report figures (matplotlib, Agg canvas; no pyplot global state): GAUC bars, per-hour lines."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from liverank.eval.result import EvalResult

#: colour cycle that stays readable in print and for colour-blind readers (Okabe–Ito)
COLORS: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def _value(result: EvalResult, task: str, metric: str, slice: str) -> float:
    return result.slices.get(slice, {}).get(task, {}).get(metric, math.nan)


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes with the Agg canvas."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def metric_bar_chart(
    results: Mapping[str, EvalResult],
    tasks: Sequence[str],
    metric: str = "gauc",
    slice: str = "hour-avg",
) -> Figure:
    """Grouped bars: one group per task, one bar per model; y zoomed to the range of values."""
    fig = Figure(figsize=(max(6.0, 1.1 * len(tasks) + 2.5), 3.6))
    ax = fig.add_subplot()
    n_models = max(1, len(results))
    width = 0.8 / n_models
    x = np.arange(len(tasks))  # [T]
    finite: list[float] = []
    for i, (name, result) in enumerate(results.items()):
        values = np.array([_value(result, t, metric, slice) for t in tasks])  # [T]
        finite += [v for v in values if np.isfinite(v)]
        bars = ax.bar(
            x - 0.4 + width * (i + 0.5),
            np.nan_to_num(values, nan=0.0),
            width,
            label=name,
            color=COLORS[i % len(COLORS)],
        )
        if n_models <= 4:
            ax.bar_label(
                bars, labels=[f"{v:.3f}" if np.isfinite(v) else "" for v in values], fontsize=7
            )
    if finite:
        lo, hi = min(finite), max(finite)
        pad = max(0.01, 0.2 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad) if hi <= 1 else hi + pad)
    ax.set_xticks(x, list(tasks))
    ax.set_ylabel(f"{metric.upper()} ({slice})")
    ax.set_title(f"{metric.upper()} per task")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def hourly_line_plot(
    results: Mapping[str, EvalResult], task: str = "ctr", metric: str = "auc"
) -> Figure:
    """One line per model: ``metric`` of ``task`` in every test hour."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    for i, (name, result) in enumerate(results.items()):
        hours = result.hours()
        values = [_value(result, task, metric, f"hour={h}") for h in hours]
        ax.plot(hours, values, marker="o", ms=3, label=name, color=COLORS[i % len(COLORS)])
    ax.set_xlabel("test hour (hours since dataset start)")
    ax.set_ylabel(f"{task.upper()} {metric.upper()}")
    ax.set_title(f"{task.upper()} {metric.upper()} per test hour")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig
