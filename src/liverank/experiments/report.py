"""``liverank experiment report``: an experiment's ``results.jsonl`` as paired deltas and verdicts.

Every number comes from the run records (one JSON line per run, written by
:mod:`liverank.experiments.runner`); every interval and verdict from
:func:`liverank.experiments.intervals.paired_delta` with the experiment file's margin and
confidence. A **unit** is one (world seed, model seed) pair: a candidate and the baseline trained
with the same model seed on the same world form one paired difference.

The analysis (:func:`analyse`) holds:

* the design: configs and their modes, seeds x worlds, variants, runs recorded vs expected
  (missing runs listed), "underpowered" below the project's minimum design, code versions seen;
* per variant and metric (the verdict metric, then ``secondary``): each config against the
  baseline: both means, the paired delta with its interval, n units and the verdict; the headline
  row marked, configurations added after results labelled;
* phenomenon off: for each ``off_variants`` entry, the headline effect in the base variant (the
  first of the grid) and in the off variant, and the change (off - base) paired by unit;
* per activity group and per test hour (base variant): the headline effect in each
  ``activity=...`` / ``hour=H`` slice, and one interval pooled over (world, seed, hour) units;
* means of the learning curves (``history``), of the per-hour metric and of the stream arms
  label latency (``label_latency``), per config.

:func:`load_analysis` reads ``OUT/results.jsonl`` into an :class:`Analysis`;
:func:`write_report` renders it into ``OUT/summary.md`` and ``OUT/report.html`` (plots embedded,
also saved under ``OUT/plots/``; see :mod:`~liverank.experiments.report_page` and
:mod:`~liverank.experiments.report_plots`).

Example::

    >>> spec = ExperimentSpec.load("experiments/farm.yaml")  # doctest: +SKIP
    >>> analysis = load_analysis(spec, "runs/experiments/farm")  # doctest: +SKIP
    >>> summary_md, report_html = write_report(analysis, "runs/experiments/farm")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverank.errors import ConfigError
from liverank.eval.result import ACTIVITY_NAMES, ACTIVITY_PREFIX, HOUR_PREFIX
from liverank.experiments.intervals import PairedDelta, paired_delta
from liverank.experiments.runner import RESULTS, read_results
from liverank.experiments.spec import (
    MIN_MODEL_SEEDS,
    MIN_WORLDS,
    ExperimentSpec,
    MetricSpec,
    RunKey,
)

#: what one paired difference is taken over (the unit of every interval but the pooled hour one)
UNIT = "(world seed, model seed)"
HEADLINE = "headline"
LABELLED = "labelled variant (added after results)"

Unit = tuple[int, int]  # (world seed, model seed)
Cell = tuple[str, str, int, int]  # (config, variant, world seed, model seed)


def metric_label(metric: MetricSpec) -> str:
    """E.g. ``CTR GAUC (hour-avg)``."""
    return f"{metric.task.upper()} {metric.name.upper()} ({metric.slice})"


class RunIndex:
    """The records of one experiment, matched to the cells of its grid.

    A record belongs to a cell when its config, variant, world seed, model seed, stream mode and
    preset match. Where a cell has several records (a config file changed and the cell was run
    again), the one whose hash is the cell's current hash is used, else the last one; cells whose
    record has another hash than the current file's are listed in ``changed``.
    """

    def __init__(self, spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> None:
        self.spec = spec
        self.records = list(records)
        grid = spec.grid
        self.units: list[Unit] = [(w, s) for w in grid.world.seeds for s in grid.model_seeds]
        self.variants: list[str] = list(grid.variants)
        self.base_variant: str = self.variants[0]
        self.expected: list[RunKey] = spec.runs()
        by_cell: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in self.records:
            by_cell.setdefault(self._record_cell(r), []).append(r)
        self.runs: dict[Cell, dict[str, Any]] = {}
        self.missing: list[RunKey] = []
        self.changed: list[RunKey] = []
        for key in self.expected:
            found = by_cell.pop(self._key_cell(key), [])
            if not found:
                self.missing.append(key)
                continue
            current = key.hash(spec)
            same = [r for r in found if r.get("hash") == current]
            record = (same or found)[-1]
            if not same:
                self.changed.append(key)
            self.runs[(key.config, key.variant, key.world_seed, key.model_seed)] = record
        #: records of no cell of the current grid (another config, seed, preset or mode)
        self.unmatched: int = sum(len(v) for v in by_cell.values())
        self.codes: Counter[str] = Counter(str(r.get("code", "unknown")) for r in self.records)

    @staticmethod
    def _record_cell(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r.get("config"),
            r.get("variant"),
            r.get("world_seed"),
            r.get("model_seed"),
            r.get("stream_mode", "offline"),
            r.get("preset"),
        )

    @staticmethod
    def _key_cell(k: RunKey) -> tuple[Any, ...]:
        return (k.config, k.variant, k.world_seed, k.model_seed, k.stream_mode, k.preset)

    @property
    def underpowered(self) -> bool:
        """Fewer model seeds or worlds than a claim needs (spec.MIN_MODEL_SEEDS x MIN_WORLDS)."""
        g = self.spec.grid
        return len(g.model_seeds) < MIN_MODEL_SEEDS or len(g.world.seeds) < MIN_WORLDS

    def record(self, config: str, variant: str, unit: Unit) -> dict[str, Any] | None:
        return self.runs.get((config, variant, *unit))

    def value(
        self, config: str, variant: str, unit: Unit, metric: MetricSpec, slice: str | None = None
    ) -> float:
        """One run's metric (NaN when the run, the slice or the value is missing)."""
        r = self.record(config, variant, unit)
        if r is None:
            return math.nan
        v = r.get("metrics", {}).get(slice or metric.slice, {}).get(metric.task, {})
        v = v.get(metric.name)
        return math.nan if v is None else float(v)

    def values(
        self, config: str, variant: str, metric: MetricSpec, slice: str | None = None
    ) -> np.ndarray:
        """The metric of ``config`` on every unit, in unit order (NaN where missing). [U]"""
        return np.array([self.value(config, variant, u, metric, slice) for u in self.units])

    def slices(self, configs: Sequence[str], variant: str, prefix: str) -> list[str]:
        """Slice names starting with ``prefix`` in any record of ``configs`` on ``variant``."""
        names = {
            s
            for (c, v, *_), r in self.runs.items()
            if c in configs and v == variant
            for s in r.get("metrics", {})
            if s.startswith(prefix)
        }
        return sorted(names)


@dataclass(frozen=True)
class Comparison:
    """``candidate - reference`` paired over units: both means over the units used, the delta."""

    label: str  # what the row is: a config, an activity group, an hour, a variant
    variant: str
    candidate_mean: float
    reference_mean: float
    delta: PairedDelta
    notes: tuple[str, ...] = ()


def compare(
    label: str, variant: str, candidate: np.ndarray, reference: np.ndarray, metric: MetricSpec,
    notes: Sequence[str] = (),
) -> Comparison:  # fmt: skip
    """The paired delta of two aligned arrays, with their means over the pairs used."""
    d = paired_delta(candidate, reference, margin=metric.margin, confidence=metric.confidence)
    ok = np.isfinite(candidate) & np.isfinite(reference)
    c_mean = float(candidate[ok].mean()) if ok.any() else math.nan
    r_mean = float(reference[ok].mean()) if ok.any() else math.nan
    return Comparison(label, variant, c_mean, r_mean, d, tuple(notes))


@dataclass
class Analysis:
    """Everything the report shows, computed from the records (module doc)."""

    spec: ExperimentSpec
    index: RunIndex
    metrics: list[MetricSpec]  # the verdict metric first, then the secondary ones
    #: metric label -> one comparison per (variant, config other than the baseline)
    main: dict[str, list[Comparison]] = field(default_factory=dict)
    #: per off variant: headline effect on the base variant vs there (label = off variant)
    off: list[Comparison] = field(default_factory=list)
    #: the headline rows of ``main`` for the verdict metric: its effect in each variant
    effects: list[Comparison] = field(default_factory=list)
    activity: list[Comparison] = field(default_factory=list)
    hours: list[int] = field(default_factory=list)
    hourly: list[Comparison] = field(default_factory=list)  # label = hour
    hour_pooled: Comparison | None = None
    #: config -> mean metric per hour (base variant), aligned with ``hours``
    hourly_means: dict[str, list[float]] = field(default_factory=dict)
    #: config -> (epochs, mean val_metric over the runs that reached the epoch), base variant
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    #: (config, task) -> mean of each label-latency statistic (stream arms, base variant)
    latency: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    #: variant -> config -> FARM's mechanism over its runs (:func:`_farm_mechanism`)
    farm: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: the spec's extra ``comparisons`` on the verdict metric (label = "candidate − reference")
    pairs: list[Comparison] = field(default_factory=list)


def _notes(spec: ExperimentSpec, config: str) -> list[str]:
    notes = [HEADLINE] if config == spec.headline else []
    return notes + ([LABELLED] if spec.configs[config].added_after_results else [])


def _main(index: RunIndex, metric: MetricSpec) -> list[Comparison]:
    spec, rows = index.spec, []
    for variant in index.variants:
        base = index.values(spec.baseline, variant, metric)
        for config in spec.configs:
            if config != spec.baseline:
                cand = index.values(config, variant, metric)
                rows.append(compare(config, variant, cand, base, metric, _notes(spec, config)))
    return rows


def _effect(index: RunIndex, variant: str, metric: MetricSpec, slice: str | None = None):
    """Headline - baseline on every unit of ``variant``. [U]"""
    head = index.values(index.spec.headline, variant, metric, slice)
    return head - index.values(index.spec.baseline, variant, metric, slice)


def _off(index: RunIndex, metric: MetricSpec) -> list[Comparison]:
    on = _effect(index, index.base_variant, metric)
    off_variants = getattr(index.spec, "off_variants", [])
    return [compare(v, v, _effect(index, v, metric), on, metric) for v in off_variants]


def _activity_order(slices: list[str]) -> list[str]:
    known = [f"{ACTIVITY_PREFIX}{name}" for _, name in sorted(ACTIVITY_NAMES.items())]
    order = [s for s in known[1:] + known[:1] if s in slices]  # low, mid, high, unknown
    return order + [s for s in slices if s not in order]


def _slice_rows(index: RunIndex, metric: MetricSpec, slices: Sequence[str], prefix: str):
    spec, variant = index.spec, index.base_variant
    return [
        compare(
            s.removeprefix(prefix),
            variant,
            index.values(spec.headline, variant, metric, s),
            index.values(spec.baseline, variant, metric, s),
            metric,
        )
        for s in slices
    ]


def _hour_slices(index: RunIndex) -> list[int]:
    pair = [index.spec.headline, index.spec.baseline]
    found = index.slices(pair, index.base_variant, HOUR_PREFIX)
    return sorted(int(s.removeprefix(HOUR_PREFIX)) for s in found)


def _curves(index: RunIndex) -> dict[str, tuple[list[int], list[float]]]:
    """Mean ``val_metric`` per epoch and config on the base variant (runs with a history)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for config in index.spec.configs:
        per_epoch: dict[int, list[float]] = {}
        for unit in index.units:
            r = index.record(config, index.base_variant, unit) or {}
            for h in r.get("history") or []:
                v = h.get("val_metric")
                if v is not None and h.get("epoch") is not None and math.isfinite(v):
                    per_epoch.setdefault(int(h["epoch"]), []).append(float(v))
        if per_epoch:
            epochs = sorted(per_epoch)
            curves[config] = (epochs, [float(np.mean(per_epoch[e])) for e in epochs])
    return curves


def _latency(index: RunIndex) -> dict[tuple[str, str], dict[str, float]]:
    """Mean of each ``label_latency`` statistic per config and task over the base variant's
    runs (stream arms record how long after the impression a positive label reaches training)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for config in index.spec.configs:
        per_task: dict[str, dict[str, list[float]]] = {}
        for unit in index.units:
            r = index.record(config, index.base_variant, unit) or {}
            for task, stats in (r.get("label_latency") or {}).items():
                for name, v in stats.items():
                    if v is not None and math.isfinite(v):
                        per_task.setdefault(task, {}).setdefault(name, []).append(float(v))
        for task, stats in per_task.items():
            out[(config, task)] = {name: float(np.mean(v)) for name, v in stats.items()}
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def analyse(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> Analysis:
    """Match ``records`` to the grid of ``spec`` and compute every comparison (module doc).

    Raises:
        ConfigError: no record, or no run of the baseline.
    """
    if not records:
        raise ConfigError(f"experiment '{spec.name}': the results hold no runs")
    index = RunIndex(spec, records)
    if not any(c == spec.baseline for c, *_ in index.runs):
        seen = sorted({str(r.get("config")) for r in records})
        raise ConfigError(
            f"experiment '{spec.name}': no run of the baseline '{spec.baseline}' matches the "
            f"grid (records hold configs {seen}); run `liverank experiment run` first"
        )
    metric = spec.metric
    out = Analysis(spec, index, [metric, *getattr(spec, "secondary", [])])
    for m in out.metrics:
        out.main.setdefault(metric_label(m), _main(index, m))
    out.off = _off(index, metric)
    out.effects = [c for c in out.main[metric_label(metric)] if c.label == spec.headline]
    pair = [spec.headline, spec.baseline]
    groups = _activity_order(index.slices(pair, index.base_variant, ACTIVITY_PREFIX))
    out.activity = _slice_rows(index, metric, groups, ACTIVITY_PREFIX)
    out.hours = _hour_slices(index)
    hour_names = [f"{HOUR_PREFIX}{h}" for h in out.hours]
    out.hourly = _slice_rows(index, metric, hour_names, HOUR_PREFIX)
    if out.hours:
        stacks = {
            c: np.stack([index.values(c, index.base_variant, metric, s) for s in hour_names])
            for c in pair
        }  # config -> [H, U]
        out.hour_pooled = compare(
            "all hours", index.base_variant,
            stacks[spec.headline].ravel(), stacks[spec.baseline].ravel(), metric,
        )  # fmt: skip
        out.hourly_means = {
            c: [_nanmean(index.values(c, index.base_variant, metric, s)) for s in hour_names]
            for c in spec.configs
        }
    out.curves = _curves(index)
    out.latency = _latency(index)
    out.farm = _farm_mechanism(index)
    out.pairs = [
        compare(
            f"{cand} − {ref}",
            variant,
            index.values(cand, variant, metric),
            index.values(ref, variant, metric),
            metric,
        )  # fmt: skip
        for cand, ref in getattr(spec, "comparisons", [])
        for variant in index.variants
    ]
    return out


def _farm_mechanism(index: RunIndex) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant and config with FARM diagnostics in its records: the share of rows per bin
    of the video / live preference cosine, averaged over runs (FARM Figure 3), the mean cosine
    and the mean gates (FARM Table 3), and how many runs they come from."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (config, variant, *_), r in index.runs.items():
        d = r.get("diagnostics", {}).get("farm")
        if not d or not d.get("rows"):
            continue
        slot = out.setdefault(variant, {}).setdefault(
            config, {"bins": d["cos_bins"], "shares": [], "cos": [], "gates": {}}
        )
        counts = np.asarray(d["cos_counts"], dtype=float)
        slot["shares"].append(counts / counts.sum())
        slot["cos"].append(d.get("cos_mean") or math.nan)
        for g, v in d.get("gates", {}).items():
            slot["gates"].setdefault(g, []).append(v)
    for configs in out.values():
        for slot in configs.values():
            slot["runs"] = len(slot["shares"])
            slot["shares"] = np.mean(slot["shares"], axis=0).tolist()
            slot["cos"] = _nanmean(np.asarray(slot["cos"]))
            slot["gates"] = {g: float(np.mean(v)) for g, v in slot["gates"].items()}
    return out


def load_analysis(spec: ExperimentSpec, out_dir: str | Path) -> Analysis:
    """:func:`analyse` the records of ``OUT/results.jsonl``.

    Raises:
        ConfigError: the results file is missing or empty, or holds no run of the baseline.
    """
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        raise ConfigError(
            f"{path}: no results file; run `liverank experiment run` first (or give --out, the "
            "directory the runs were written to)"
        )
    records = read_results(out_dir)
    if not records:
        raise ConfigError(f"{path} holds no runs; run `liverank experiment run` first")
    return analyse(spec, records)


def write_report(analysis: Analysis, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/summary.md``, ``OUT/report.html`` and ``OUT/plots/*.png``; returns the paths
    of the summary and the page."""
    from liverank.experiments.report_page import claim_row, render_html, render_markdown
    from liverank.experiments.report_plots import make_plots

    out = Path(out_dir)
    plots = make_plots(analysis, out / "plots")
    summary = out / "summary.md"
    summary.write_text(render_markdown(analysis), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(analysis, plots), encoding="utf-8")
    (out / "claim.md").write_text(claim_row(analysis) + "\n", encoding="utf-8")
    return summary, page


def splice_summary(doc: str | Path, name: str, summary: str, kind: str = "experiment") -> Path:
    """Replace the text between ``<!-- KIND:NAME:start -->`` and ``<!-- KIND:NAME:end -->`` in
    ``doc`` by ``summary`` (a table in the docs generated from the results, never typed):
    ``experiment`` markers take ``summary.md``, ``claim`` markers the README row ``claim.md``.
    :class:`ConfigError` when the file or a marker is missing."""
    path = Path(doc)
    if not path.is_file():
        raise ConfigError(f"{path}: document not found")
    start, end = f"<!-- {kind}:{name}:start -->", f"<!-- {kind}:{name}:end -->"
    text = path.read_text()
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ConfigError(f"{path}: needs one '{start}' line followed by one '{end}' line")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{summary.strip()}\n{end}{tail}")
    return path
