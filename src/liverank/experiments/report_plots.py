"""The figures of ``liverank experiment report`` (matplotlib, Agg canvas, no pyplot state).

* a forest plot per metric: every comparison of every variant, its paired delta and interval,
  the zero line and the ``±margin`` band of "no effect";
* the mechanism plot: the headline effect per variant, off variants set apart;
* per-hour curves: the metric per test hour per config, and the headline delta per hour with
  its interval band;
* learning curves: the validation metric per epoch per config (runs with a ``history``).

:func:`make_plots` draws those the analysis has data for and saves each as ``PLOTS/NAME.png``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from liverank.eval.plots import COLORS, figure_png
from liverank.experiments.report import HEADLINE, LABELLED, Analysis, Comparison, metric_label

#: marker colour per verdict (Okabe–Ito: blue effect, green no effect, grey inconclusive)
VERDICT_COLORS = {"effect": COLORS[0], "no effect": COLORS[2], "inconclusive": "#888888"}


@dataclass(frozen=True)
class Plot:
    """One figure of the report: its file name (without .png), caption and PNG bytes."""

    name: str
    caption: str
    png: bytes


def _errors(rows: Sequence[Comparison]) -> np.ndarray:
    """Asymmetric error bars of the rows' intervals (0 where undefined). [2, R]"""
    mean = np.array([r.delta.mean for r in rows])
    low = np.array([r.delta.ci_low for r in rows])
    high = np.array([r.delta.ci_high for r in rows])
    return np.nan_to_num(np.stack([mean - low, high - mean]), nan=0.0)


def _margin_band(ax, margin: float, vertical: bool) -> None:
    span = ax.axvspan if vertical else ax.axhspan
    line = ax.axvline if vertical else ax.axhline
    if margin > 0:
        span(
            -margin, margin, color="#dddddd", alpha=0.6, lw=0, zorder=0,
            label=f"±margin ({margin:g})",
        )  # fmt: skip
    line(0.0, color="black", lw=0.8, zorder=1)


def forest_plot(rows: Sequence[Comparison], title: str, margin: float) -> Figure:
    """One row per comparison (variant · config): paired delta and its interval; the headline
    drawn as a diamond, colours by verdict."""
    fig = Figure(figsize=(7.5, 1.2 + 0.38 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]  # first row on top
    _margin_band(ax, margin, vertical=True)
    means = np.array([r.delta.mean for r in rows])
    err = _errors(rows)
    for i, r in enumerate(rows):
        color = VERDICT_COLORS.get(r.delta.verdict, "#888888")
        marker = "D" if HEADLINE in r.notes else "o"
        ax.errorbar(means[i], y[i], xerr=err[:, i : i + 1], fmt=marker, color=color, capsize=3)
    tags = {HEADLINE: " (headline)", LABELLED: " (added after results)"}
    labels = [f"{r.variant} · {r.label}" + "".join(tags[n] for n in r.notes) for r in rows]
    ax.set_yticks(y, labels)
    ax.set_xlabel("paired delta, config − baseline (interval over world × model seed)")
    ax.set_title(title)
    handles = [
        ax.plot([], [], "o", color=c, label=v)[0] for v, c in VERDICT_COLORS.items()
    ]  # legend entries for the verdict colours
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return fig


def mechanism_plot(effects: Sequence[Comparison], off: Sequence[str], margin: float) -> Figure:
    """Bars: the headline effect per variant with its interval; off variants hatched."""
    fig = Figure(figsize=(max(5.0, 1.3 * len(effects) + 2.0), 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(effects))
    means = np.nan_to_num(np.array([r.delta.mean for r in effects]), nan=0.0)
    colors = [COLORS[3] if r.variant in off else COLORS[0] for r in effects]
    bars = ax.bar(x, means, 0.6, yerr=_errors(effects), capsize=4, color=colors, zorder=2)
    for bar, r in zip(bars, effects, strict=True):
        if r.variant in off:
            bar.set_hatch("//")
    _margin_band(ax, margin, vertical=False)
    ax.set_xticks(x, [f"{r.variant}\n({'off' if r.variant in off else 'on'})" for r in effects])
    ax.set_ylabel("headline − baseline")
    ax.set_title("Headline effect per variant (phenomenon on / off)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def hourly_plot(hours: Sequence[int], means: dict[str, list[float]], ylabel: str) -> Figure:
    """One line per config: the metric per test hour (mean over units)."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    for i, (config, values) in enumerate(means.items()):
        ax.plot(hours, values, marker="o", ms=3, label=config, color=COLORS[i % len(COLORS)])
    ax.set_xlabel("test hour (hours since the world's start)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} per test hour (mean over world × model seed)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def hourly_delta_plot(rows: Sequence[Comparison], margin: float, ylabel: str) -> Figure:
    """The paired delta per hour with its interval as a band."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    hours = [int(r.label) for r in rows]
    ax.fill_between(
        hours,
        [r.delta.ci_low for r in rows],
        [r.delta.ci_high for r in rows],
        color=COLORS[0],
        alpha=0.25,
        lw=0,
        label="interval",
    )
    ax.plot(hours, [r.delta.mean for r in rows], marker="o", ms=3, color=COLORS[0], label="delta")
    _margin_band(ax, margin, vertical=False)
    ax.set_xlabel("test hour (hours since the world's start)")
    ax.set_ylabel(f"Δ {ylabel}")
    ax.set_title("Headline − baseline per test hour")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def learning_curves(curves: dict[str, tuple[list[int], list[float]]]) -> Figure:
    """One line per config: mean validation metric per epoch."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    for i, (config, (epochs, values)) in enumerate(curves.items()):
        ax.plot(epochs, values, marker="o", ms=3, label=config, color=COLORS[i % len(COLORS)])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation metric")
    ax.set_title("Learning curves (mean over the runs that reached the epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def farm_cosine_plot(farm: dict[str, dict[str, Any]], variant: str) -> Figure:
    """FARM Figure 3 analogue: share of users per cosine of their video and live preferences,
    one line per config with a FARM module (mean over its runs)."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    for i, (config, slot) in enumerate(farm.items()):
        bins = np.asarray(slot["bins"])
        centres = (bins[:-1] + bins[1:]) / 2
        label = f"{config} ({slot['runs']} runs)"
        ax.plot(
            centres, slot["shares"], marker="o", ms=3, label=label, color=COLORS[i % len(COLORS)]
        )
    ax.set_xlabel("cosine of the video and live preferences (FARM Eq. 13)")
    ax.set_ylabel("share of test rows")
    ax.set_title(f"FARM's cross-domain alignment ({variant})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._").lower()


def _finite(rows: Sequence[Comparison]) -> bool:
    return any(math.isfinite(r.delta.mean) for r in rows)


def make_plots(analysis: Analysis, plot_dir: str | Path) -> dict[str, Plot]:
    """Draw the figures the analysis has data for; save each as ``plot_dir/NAME.png``.

    Returns:
        key -> plot, keys ``forest:<metric label>``, ``mechanism``, ``hourly``,
        ``hourly-delta``, ``curves`` (only those drawn).
    """
    spec, primary = analysis.spec, analysis.metrics[0]
    figures: dict[str, tuple[str, Figure]] = {}
    for label, rows in analysis.main.items():
        if rows and _finite(rows):
            margin = next(m.margin for m in analysis.metrics if metric_label(m) == label)
            caption = f"Paired deltas against {spec.baseline}: {label}"
            figures[f"forest:{label}"] = (caption, forest_plot(rows, label, margin))
    if analysis.effects and _finite(analysis.effects):
        off = getattr(spec, "off_variants", [])
        caption = f"{spec.headline} − {spec.baseline} on {metric_label(primary)} per variant"
        figures["mechanism"] = (caption, mechanism_plot(analysis.effects, off, primary.margin))
    if analysis.hours:
        label = f"{primary.task.upper()} {primary.name.upper()}"
        caption = f"{label} per test hour and config ({analysis.index.base_variant})"
        fig = hourly_plot(analysis.hours, analysis.hourly_means, label)
        figures["hourly"] = (caption, fig)
        caption = f"{spec.headline} − {spec.baseline} per test hour, with its interval"
        figures["hourly-delta"] = (
            caption,
            hourly_delta_plot(analysis.hourly, primary.margin, label),
        )
    if analysis.curves:
        caption = f"Validation metric per epoch ({analysis.index.base_variant})"
        figures["curves"] = (caption, learning_curves(analysis.curves))
    for variant, farm in analysis.farm.items():
        caption = f"FARM's cross-domain alignment on {variant} (the paper's Figure 3)"
        figures[f"farm-cosine:{variant}"] = (caption, farm_cosine_plot(farm, variant))
    out = Path(plot_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Plot] = {}
    for key, (caption, fig) in figures.items():
        name = _file_name(key)
        png = figure_png(fig)
        (out / f"{name}.png").write_bytes(png)
        plots[key] = Plot(name, caption, png)
    return plots
