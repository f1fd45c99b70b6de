"""Render an experiment :class:`~liverank.experiments.report.Analysis` as ``summary.md`` (compact,
pasted into docs/results.md) and ``report.html`` (every table, the plots embedded).

Both say what a unit is and what the verdict rule is; every number is formatted from the
analysis, none is typed here. The page reuses the evaluation report's template and table helper
(:mod:`liverank.eval.report`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import Any

import numpy as np

import liverank
from liverank.eval.report import ReportSection, _img, html_table
from liverank.experiments.intervals import PairedDelta
from liverank.experiments.report import UNIT, Analysis, Comparison, metric_label
from liverank.experiments.report_plots import Plot
from liverank.experiments.spec import MIN_MODEL_SEEDS, MIN_WORLDS, MetricSpec

#: missing runs named one by one in the warning (the rest are counted)
MISSING_LISTED = 12


# ----------------------------------------------------------------------------------- numbers
def _v(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.4f}"


def _d(x: float) -> str:
    """A signed difference; one that rounds to zero is shown without a sign."""
    if x is None or not math.isfinite(x):
        return "–"
    text = f"{x:+.4f}"
    return text[1:] if text[1:] == f"{0:.4f}" else text


def _ci(d: PairedDelta) -> str:
    return "–" if not math.isfinite(d.ci_low) else f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]"


def _n(d: PairedDelta) -> str:
    return f"{d.n} ({d.n_missing} without a value)" if d.n_missing else str(d.n)


def _verdict(d: PairedDelta) -> str:
    """The verdict; an effect whose whole interval lies inside ±margin is marked so: real, but
    smaller than the difference registered as mattering (the verdict rule is unchanged)."""
    if not d.direction:
        return d.verdict
    small = -d.margin <= d.ci_low and d.ci_high <= d.margin
    return (
        f"{d.verdict} ({d.direction}, inside ±{d.margin:g})"
        if small
        else f"{d.verdict} ({d.direction})"
    )


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g} %"


# ------------------------------------------------------------------------------ shared text
def rule_text(metric: MetricSpec) -> str:
    """What a delta, its interval and its verdict are."""
    return (
        f"Each Δ is candidate − baseline, paired over {UNIT} units (the two means are over "
        f"the units both have); the interval is the {_pct(metric.confidence)} Student-t interval "
        "of the mean Δ. Verdict, fixed before the runs: 'effect' when the interval excludes 0, "
        f"'no effect' when it lies inside ±margin ({metric.margin:g} for "
        f"{metric_label(metric)}), else 'inconclusive'. An effect whose interval also lies "
        "inside ±margin is marked 'inside ±margin': detectable, but below what was registered "
        "as mattering."
    )


def _variant_text(name: str, overrides: dict[str, Any], base: str, off: set[str]) -> str:
    """E.g. ``periodic_interests=False, phenomenon off``."""
    parts = [f"{k}={v}" for k, v in overrides.items()] or ["the preset as is"]
    if name == base:
        parts.append("base world")
    elif name in off:
        parts.append("phenomenon off")
    return ", ".join(parts)


def design_lines(a: Analysis) -> list[str]:
    """The design in sentences (plain text, markdown-safe)."""
    spec, ix = a.spec, a.index
    g = spec.grid
    configs = ", ".join(
        f"{name} ({getattr(e, 'mode', 'offline')}"
        + (", added after results)" if e.added_after_results else ")")
        for name, e in spec.configs.items()
    )
    off = set(getattr(spec, "off_variants", []))
    variants = "; ".join(
        f"{v} ({_variant_text(v, o, ix.base_variant, off)})" for v, o in g.variants.items()
    )
    codes = ", ".join(f"{c} ({n} runs)" for c, n in ix.codes.most_common())
    return [
        f"Baseline: {spec.baseline}; headline: {spec.headline}; verdict metric: "
        f"{metric_label(spec.metric)}.",
        f"Configs (mode): {configs}.",
        f"Grid: {len(g.model_seeds)} model seeds {list(g.model_seeds)} × {len(g.world.seeds)} "
        f"worlds of preset {g.world.preset} (seeds {list(g.world.seeds)}); variants: {variants}.",
        f"Runs: {len(ix.runs)} of {len(ix.expected)} expected runs recorded; code versions: "
        f"{codes}.",
    ]


def warning_lines(a: Analysis) -> list[str]:
    """Loud flags: missing runs, changed configs, foreign records, underpowered design."""
    ix, g, out = a.index, a.spec.grid, []
    if ix.missing:
        cells = [
            f"{k.config}/{k.variant} world {k.world_seed} seed {k.model_seed}" for k in ix.missing
        ]
        more = len(cells) - MISSING_LISTED
        listed = "; ".join(cells[:MISSING_LISTED]) + (f"; and {more} more" if more > 0 else "")
        out.append(
            f"MISSING RUNS: {len(ix.missing)} of {len(ix.expected)} have no record ({listed})."
        )
    if ix.changed:
        out.append(
            f"CHANGED: {len(ix.changed)} runs were recorded under another hash than the current "
            "experiment file gives (a config file or override changed since; or the report runs "
            "from another directory than the runs did)."
        )
    if ix.unmatched:
        out.append(f"IGNORED: {ix.unmatched} records match no cell of the current grid.")
    if ix.underpowered:
        out.append(
            f"UNDERPOWERED: {len(g.model_seeds)} model seeds × {len(g.world.seeds)} worlds; a "
            f"claim needs at least {MIN_MODEL_SEEDS} × {MIN_WORLDS}."
        )
    if len(ix.codes) > 1:
        out.append(f"MIXED CODE: the runs come from {len(ix.codes)} code versions.")
    return out


def _main_rows(a: Analysis, label: str) -> list[list[str]]:
    return [
        [
            r.variant,
            r.label,
            ", ".join(r.notes),
            _v(r.candidate_mean),
            _v(r.reference_mean),
            _d(r.delta.mean),
            _ci(r.delta),
            _n(r.delta),
            _verdict(r.delta),
        ]
        for r in a.main[label]
    ]


def _main_columns(a: Analysis, conf: str) -> list[str]:
    baseline = a.spec.baseline
    return [
        "variant", "config", "note", "config mean", f"{baseline} mean", "Δ",
        f"{conf} interval", "n", "verdict",
    ]  # fmt: skip


def _pair_rows(a: Analysis) -> list[list[str]]:
    return [
        [r.variant, r.label, _v(r.candidate_mean), _v(r.reference_mean), _d(r.delta.mean),
         _ci(r.delta), _n(r.delta), _verdict(r.delta)]
        for r in a.pairs
    ]  # fmt: skip


def _pair_columns(conf: str) -> list[str]:
    return [
        "variant", "pair", "candidate mean", "reference mean", "Δ", f"{conf} interval", "n",
        "verdict",
    ]  # fmt: skip


def _off_rows(a: Analysis) -> list[list[str]]:
    return [
        [r.label, _d(r.reference_mean), _d(r.candidate_mean), _d(r.delta.mean), _ci(r.delta),
         _n(r.delta), _verdict(r.delta)]
        for r in a.off
    ]  # fmt: skip


def _off_columns(conf: str) -> list[str]:
    return [
        "off variant", "effect, base world", "effect, phenomenon off", "change (off − base)",
        f"{conf} interval", "n", "verdict",
    ]  # fmt: skip


def _slice_rows(rows: Sequence[Comparison]) -> list[list[str]]:
    return [
        [r.label, _v(r.candidate_mean), _v(r.reference_mean), _d(r.delta.mean), _ci(r.delta),
         _n(r.delta), _verdict(r.delta)]
        for r in rows
    ]  # fmt: skip


def _slice_columns(a: Analysis, key: str, conf: str) -> list[str]:
    s = a.spec
    return [key, f"{s.headline} mean", f"{s.baseline} mean", "Δ", f"{conf} interval", "n",
            "verdict"]  # fmt: skip


def _slice_note(a: Analysis, what: str) -> str:
    """Which metric a per-group / per-hour row holds, and over what it is paired."""
    m, spec = a.spec.metric, a.spec
    return (
        f"{spec.headline} − {spec.baseline} on {m.task.upper()} {m.name.upper()} over all test "
        f"rows of each {what} ({a.index.base_variant} variant), paired by {UNIT}."
    )


#: column headers of the label-latency statistics the runner records (others keep their name)
LATENCY_HEADERS = {
    "positives": "positives",
    "median_s": "median s",
    "p90_s": "p90 s",
    "within_60s": "share within 60 s",
}


def _latency_table(
    a: Analysis, tasks: Sequence[str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the label-latency table (``tasks``: only those; None: all)."""
    names: list[str] = []
    for stats in a.latency.values():
        names += [n for n in stats if n not in names]
    rows = [
        [config, task, *(_stat(n, stats.get(n, math.nan)) for n in names)]
        for (config, task), stats in a.latency.items()
        if tasks is None or task in tasks
    ]
    return ["config", "task", *(LATENCY_HEADERS.get(n, n) for n in names)], rows


def _stat(name: str, value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:,.0f}" if name == "positives" else f"{value:.3g}"


def _latency_caption(a: Analysis) -> str:
    return (
        "How long after the impression a positive label reaches training in each arm's stream "
        f"(emit time − impression time of its positive rows), mean over the "
        f"{a.index.base_variant} variant's runs."
    )


def _hour_count(a: Analysis) -> str:
    """How many hours show which verdict (a one-line digest of the per-hour table)."""
    verdicts = [r.delta.verdict for r in a.hourly]
    positive = sum(1 for r in a.hourly if math.isfinite(r.delta.mean) and r.delta.mean > 0)
    parts = ", ".join(f"{v}: {verdicts.count(v)}" for v in dict.fromkeys(verdicts))
    return f"{len(a.hourly)} test hours; Δ > 0 in {positive}; verdicts per hour: {parts}."


# --------------------------------------------------------------------------------- markdown
def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(columns), line(["---"] * len(columns)), *map(line, rows)])


def render_markdown(a: Analysis) -> str:
    """``summary.md``: design, rule, the tables (per-hour as one pooled row and a digest)."""
    spec, m = a.spec, a.spec.metric
    conf = _pct(m.confidence)
    parts = [f"## Experiment `{spec.name}`: {spec.claim}"]
    if spec.paper_figure:
        parts.append(f"Paper: {spec.paper_figure.strip().rstrip('.')}.")
    if getattr(spec, "description", ""):
        parts.append(spec.description.strip())
    parts.append("\n".join(f"- {line}" for line in design_lines(a)))
    warnings = warning_lines(a)
    if warnings:
        parts.append("\n".join(f"> **{w}**" for w in warnings))
    parts.append(rule_text(m))
    label = metric_label(m)
    parts.append(f"### {label}, margin {m.margin:g} (verdict metric)")
    parts.append(_md_table(_main_columns(a, conf), _main_rows(a, label)))
    if len(a.metrics) > 1:
        parts.append("### Secondary metrics")
        rows = [
            [f"{metric_label(sm)} ±{sm.margin:g}", *row[:3], *row[5:]]
            for sm in a.metrics[1:]
            for row in _main_rows(a, metric_label(sm))
        ]
        columns = ["metric ±margin", *_main_columns(a, conf)[:3], *_main_columns(a, conf)[5:]]
        parts.append(_md_table(columns, rows))
    if a.pairs:
        parts.append(f"### Pre-registered pairs ({label})")
        parts.append(f"Paired by {UNIT}; the same rule and margin as the verdict metric.")
        parts.append(_md_table(_pair_columns(conf), _pair_rows(a)))
    if a.off:
        parts.append(f"### Phenomenon off: {spec.headline} − {spec.baseline} effect")
        parts.append(
            f"The effect on the base variant ({a.index.base_variant}) and on each off variant, "
            f"and the change (off − base) paired by {UNIT}."
        )
        parts.append(_md_table(_off_columns(conf), _off_rows(a)))
    if a.activity:
        parts.append(f"### Per activity group ({a.index.base_variant})")
        parts.append(_slice_note(a, "user-activity group"))
        parts.append(_md_table(_slice_columns(a, "group", conf), _slice_rows(a.activity)))
    if a.hour_pooled is not None:
        parts.append(f"### Per test hour ({a.index.base_variant})")
        parts.append(
            f"{_slice_note(a, 'test hour')} Pooled over (world seed, model seed, hour) units "
            f"(hours of one run are not independent, so this interval is optimistic). "
            f"{_hour_count(a)}"
        )
        parts.append(_md_table(_slice_columns(a, "hours", conf), _slice_rows([a.hour_pooled])))
    if a.latency:
        parts.append(f"### Label latency ({m.task})")
        parts.append(_latency_caption(a))
        parts.append(_md_table(*_latency_table(a, [m.task])))
    if a.farm:
        parts.append("### FARM's mechanism")
        parts.append(FARM_CAPTION)
        parts.append(_md_table(*_farm_table(a)))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------- html
def _esc(text: object) -> str:
    return html.escape(str(text))


def _p(text: str) -> str:
    return f"<p>{_esc(text)}</p>"


def _figure(plots: dict[str, Plot], key: str) -> str:
    plot = plots.get(key)
    return _img(plot.png, plot.caption) if plot else ""


def _runs_table(a: Analysis) -> str:
    """Cost per config and variant: mean epochs, best epoch, samples/s, seconds, peak RSS."""
    fields = [
        ("epochs run", "epochs_run"),
        ("best epoch", "best_epoch"),
        ("train samples/s", "train_samples_per_s"),
        ("seconds", "seconds"),
        ("peak RSS GB", "peak_rss_gb"),
    ]
    rows = []
    for variant in a.index.variants:
        for config in a.spec.configs:
            recs = [r for (c, v, *_), r in a.index.runs.items() if c == config and v == variant]
            if not recs:
                continue
            means = [_mean([r.get(key) for r in recs]) for _, key in fields]
            devices = sorted({str(r.get("device", "-")) for r in recs})
            rows.append([variant, config, len(recs), *means, ", ".join(devices)])
    columns = ["variant", "config", "runs", *(f for f, _ in fields), "device"]
    return html_table(columns, rows, numeric=columns[2:-1], caption="Means over the recorded runs.")


def _mean(values: Sequence[Any]) -> str:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return f"{np.mean(finite):,.2f}" if finite else "–"


def _section_bodies(a: Analysis, plots: dict[str, Plot]) -> list[ReportSection]:
    """The page's sections, in order."""
    spec, conf = a.spec, _pct(a.spec.metric.confidence)
    numeric = ["config mean", f"{spec.baseline} mean", "Δ", f"{conf} interval", "n"]
    warn = "".join(
        f'<p style="color:#b00020;font-weight:600">{_esc(w)}</p>' for w in warning_lines(a)
    )
    design = f"<p><b>Claim:</b> {_esc(spec.claim)}</p>"
    if spec.paper_figure:
        design += f"<p><b>Paper:</b> {_esc(spec.paper_figure)}</p>"
    design += "<ul>" + "".join(f"<li>{_esc(x)}</li>" for x in design_lines(a)) + "</ul>" + warn
    sections = [ReportSection("design", "Design", design)]
    for i, metric in enumerate(a.metrics):
        label = metric_label(metric)
        heading = f"{label}{' (verdict metric)' if i == 0 else ' (secondary)'}"
        body = _p(rule_text(metric)) if i == 0 else ""
        body += html_table(
            _main_columns(a, _pct(metric.confidence)), _main_rows(a, label), numeric=numeric
        )
        body += _figure(plots, f"forest:{label}")
        sections.append(ReportSection(f"metric-{i}", heading, body))
    if a.pairs:
        body = _p(f"Pre-registered pairs on the verdict metric, paired by {UNIT}.")
        body += html_table(_pair_columns(conf), _pair_rows(a), numeric=_pair_columns(conf)[2:-1])
        sections.append(ReportSection("pairs", "Pre-registered pairs", body))
    if a.off or len(a.effects) > 1:
        body = _p(
            f"The {spec.headline} − {spec.baseline} effect on the base variant "
            f"({a.index.base_variant}) and where the phenomenon is switched off; the change "
            f"(off − base) is paired by {UNIT}."
        )
        if a.off:
            off_numeric = [c for c in _off_columns(conf) if c not in ("off variant", "verdict")]
            body += html_table(_off_columns(conf), _off_rows(a), numeric=off_numeric)
        body += _figure(plots, "mechanism")
        sections.append(ReportSection("off", "Phenomenon on / off", body))
    slice_numeric = ["Δ", f"{conf} interval", "n", f"{spec.headline} mean", f"{spec.baseline} mean"]
    if a.activity:
        body = _p(_slice_note(a, "user-activity group"))
        body += html_table(
            _slice_columns(a, "group", conf), _slice_rows(a.activity), numeric=slice_numeric
        )
        sections.append(ReportSection("activity", "Per activity group", body))
    if a.hour_pooled is not None:
        body = _p(
            f"{_slice_note(a, 'test hour')} The last row pools (world seed, model seed, hour) "
            "units (hours of one run are not independent, so that interval is optimistic). "
            f"{_hour_count(a)}"
        )
        body += html_table(
            _slice_columns(a, "hour", conf),
            _slice_rows([*a.hourly, a.hour_pooled]),
            numeric=slice_numeric,
        )
        body += _figure(plots, "hourly") + _figure(plots, "hourly-delta")
        sections.append(ReportSection("hours", "Per test hour", body))
    if "curves" in plots:
        sections.append(ReportSection("curves", "Learning curves", _figure(plots, "curves")))
    if a.latency:
        columns, rows = _latency_table(a)
        table = html_table(columns, rows, numeric=columns[2:], caption=_latency_caption(a))
        sections.append(ReportSection("latency", "Label latency", table))
    if a.farm:
        columns, rows = _farm_table(a)
        body = html_table(columns, rows, numeric=columns[2:], caption=FARM_CAPTION)
        body += "".join(_figure(plots, f"farm-cosine:{v}") for v in a.farm)
        sections.append(ReportSection("farm", "FARM's mechanism", body))
    sections.append(ReportSection("runs", "Runs", _runs_table(a)))
    return sections


FARM_CAPTION = (
    "Mean over runs of the cosine between each test row's video and live preferences (rows "
    "with both sequences; FARM Eq. 13, Figure 3) and of the low- / high-pass gates (alpha, "
    "beta: video; gamma, delta: live; FARM Table 3 reads high > low as perceiving sparse, "
    "valuable behaviours)."
)


def _farm_table(a: Analysis) -> tuple[list[str], list[list[str]]]:
    gates = sorted({g for c in a.farm.values() for s in c.values() for g in s["gates"]})
    columns = ["variant", "config", "runs", "mean cosine", *gates]
    rows = [
        [v, c, str(s["runs"]), _v(s["cos"]), *(_v(s["gates"].get(g, math.nan)) for g in gates)]
        for v, configs in a.farm.items()
        for c, s in configs.items()
    ]
    return columns, rows


def render_html(a: Analysis, plots: dict[str, Plot]) -> str:
    """``report.html``: one page, inline CSS, plots embedded as base64 PNG."""
    sections = _section_bodies(a, plots)
    body = "".join(f'<h2 id="{s.anchor}">{_esc(s.heading)}</h2>{s.html}' for s in sections)
    nav = "".join(f'<a href="#{s.anchor}">{_esc(s.heading)}</a>' for s in sections)
    description = getattr(a.spec, "description", "").strip()
    notes = f'<div class="notes"><p>{_esc(description)}</p></div>' if description else ""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{len(a.index.records)} records · generated {stamp}"
    template = Template(
        resources.files("liverank.eval").joinpath("templates/report.html").read_text("utf-8")
    )
    return template.substitute(
        title=_esc(f"Experiment {a.spec.name}"),
        subtitle=_esc(subtitle),
        version=_esc(liverank.__version__),
        notes=notes,
        nav=nav,
        body=body,
    )


# ------------------------------------------------------------------------------ claim row
CLAIM_COLUMNS = ("claim", "paper", "ours: headline − baseline", "phenomenon off", "runs")


def claim_row(a: Analysis) -> str:
    """One markdown table row for the README: the headline's paired delta on the base world
    with its interval and verdict, the same with each off variant, and the runs recorded."""
    spec = a.spec
    label = metric_label(spec.metric)
    head = [c for c in a.main.get(label, []) if c.label == spec.headline]
    base = [c for c in head if c.variant == a.index.base_variant]
    ours = "no runs"
    if base:
        d = base[0].delta
        ours = (
            f"{spec.headline} − {spec.baseline}, {label}: {_d(d.mean)} {_ci(d)}, "
            f"n={_n(d)}, **{_verdict(d)}**"
        )
        if d.n < len(a.index.units):  # a grid cut short: the design's pairs are not all there
            ours += f" (partial: {d.n} of {len(a.index.units)} pairs, not yet a verdict)"
    off = []
    for c in head:
        if c.variant != a.index.base_variant and c.variant in getattr(spec, "off_variants", []):
            off.append(f"{c.variant}: {_d(c.delta.mean)} {_ci(c.delta)}, {_verdict(c.delta)}")
    recorded = f"{len(a.index.runs)} of {len(a.index.expected)}"
    paper = spec.paper_figure.split(";")[0]
    cells = [f"`{spec.name}`", paper, ours, "; ".join(off) or "–", recorded]
    return "| " + " | ".join(cell.replace("|", "/").replace("\n", " ") for cell in cells) + " |"
