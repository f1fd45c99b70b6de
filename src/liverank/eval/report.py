"""A self-contained HTML report comparing models' :class:`EvalResult`s.

The page (one file, inline CSS, plots embedded as base64 PNG) holds: the main metrics per task
(hour-avg and pooled), what each task name means, a GAUC bar chart per task per model, a
per-hour AUC line plot of the primary task, the top-K ranking metrics, a per-activity-group
table, optional extra plots, the caller's extra sections (e.g. the demo's calibration and
timings, built with :func:`html_table`) and the models' metadata. Each model's result is also
saved as JSON in ``results/`` beside it.

Example:
    >>> path = write_report({"mlp": r1, "farm": r2}, "runs/report", "FARM vs MLP")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template

from matplotlib.figure import Figure

import liverank
from liverank.data.schema import CLICK_WINDOW_MS, DEFAULT_LONG_VIEW_MS, EFFECTIVE_VIEW_MS
from liverank.errors import ConfigError
from liverank.eval.plots import figure_png, hourly_line_plot, metric_bar_chart
from liverank.eval.result import ACTIVITY_PREFIX, ALL, HOUR_AVG, EvalResult, format_value

log = logging.getLogger(__name__)

#: metrics where higher is better / lower is better (others are not highlighted)
_HIGHER = re.compile(r"^(auc|uauc|gauc|prec@\d+|recall@\d+|ndcg@\d+|hit@\d+)$")
_LOWER = frozenset({"logloss", "mse"})
_LABELS = {"auc": "AUC", "uauc": "UAUC", "gauc": "GAUC", "logloss": "LogLoss", "mse": "MSE"}
_LABELS |= {"count": "labelled", "pos_rate": "pos. rate", "n_users": "users (U/GAUC)"}
_LABELS |= {"n_requests": "requests w/ pos."}
MAIN_COLUMNS: tuple[str, ...] = ("auc", "uauc", "gauc", "logloss", "count", "pos_rate", "n_users")

PlotLike = Figure | bytes | str | Path

#: what each task predicts, for the report's "Tasks" section (labels: data/visits.py)
TASK_DESCRIPTIONS: dict[str, str] = {
    "ctr": f"click-through: the user enters the room within {CLICK_WINDOW_MS // 1000} s of the "
    "impression (before the room is shown to them again)",
    "evtr": f"effective view: the visit lasts at least {EFFECTIVE_VIEW_MS // 1000} s",
    "lvtr": f"long view: the visit lasts at least the dataset's long-view time "
    f"({DEFAULT_LONG_VIEW_MS // 1000} s unless its meta.json says otherwise)",
    "ltr": "like: the user likes the room during the visit",
    "cmtr": "comment: the user comments during the visit",
    "gtr": "gift: the user sends a gift during the visit",
    "stay_ms": "watch time of the visit in milliseconds (regression)",
}


@dataclass(frozen=True)
class ReportSection:
    """A caller's section of the page: ``anchor`` (HTML id), ``heading`` and ``html`` (trusted
    markup, e.g. from :func:`html_table`)."""

    anchor: str
    heading: str
    html: str


def html_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    numeric: Sequence[str] = (),
    caption: str = "",
) -> str:
    """An escaped HTML table; ``numeric`` columns are right-aligned."""
    right = {i for i, c in enumerate(columns) if c in set(numeric)}
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_esc(v)}</td>' if i in right else f"<td>{_esc(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    text = f'<p class="caption">{_esc(caption)}</p>' if caption else ""
    return (
        f'{text}<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _label(metric: str) -> str:
    if metric in _LABELS:
        return _LABELS[metric]
    name, _, k = metric.partition("@")
    pretty = {"prec": "Prec", "recall": "Recall", "ndcg": "NDCG", "hit": "HitRate"}
    return f"{pretty.get(name, name)}@{k}" if k else metric


def _get(result: EvalResult, slice: str, task: str, metric: str) -> float:
    return result.slices.get(slice, {}).get(task, {}).get(metric, math.nan)


def _best(metric: str, values: Sequence[float]) -> set[int]:
    """Indices of the best value of a column (none if fewer than two finite values)."""
    finite = [(v, i) for i, v in enumerate(values) if not math.isnan(v)]
    if len(finite) < 2:
        return set()
    if metric in _LOWER:
        target = min(finite)[0]
    elif _HIGHER.match(metric):
        target = max(finite)[0]
    else:
        return set()
    return {i for v, i in finite if v == target}


def _esc(text: object) -> str:
    return html.escape(str(text))


def _comparison_table(
    results: Mapping[str, EvalResult],
    rows: Sequence[tuple[str, str, str]],
    columns: Sequence[tuple[str, str, str]],
    key_header: str,
) -> str:
    """A table with one block of rows per ``(label, slice, task)`` and one row per model.

    ``columns`` are ``(header, metric, task)``; an empty task means the block's task. The best
    model of each block and column is highlighted.
    """
    models = list(results)
    head = "".join(f"<th>{_esc(h)}</th>" for h in [key_header, "model", *(c[0] for c in columns)])
    body: list[str] = []
    for label, slice, task in rows:
        grid = [
            [_get(results[m], slice, col_task or task, metric) for _, metric, col_task in columns]
            for m in models
        ]  # [models][columns]
        best = [_best(metric, [row[j] for row in grid]) for j, (_, metric, _) in enumerate(columns)]
        for i, model in enumerate(models):
            cells = "".join(
                f'<td class="num{" best" if i in best[j] else ""}">'
                f"{_esc(format_value(metric, grid[i][j]))}</td>"
                for j, (_, metric, _) in enumerate(columns)
            )
            key = f'<td rowspan="{len(models)}">{_esc(label)}</td>' if i == 0 else ""
            css = ' class="first"' if i == 0 else ""
            body.append(f"<tr{css}>{key}<td>{_esc(model)}</td>{cells}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _plot_png(plot: PlotLike, name: str) -> bytes:
    if isinstance(plot, Figure):
        return figure_png(plot)
    if isinstance(plot, bytes):
        return plot
    path = Path(plot)
    if not path.is_file():
        raise ConfigError(f"extra plot '{name}': no file {path}")
    return path.read_bytes()


def _union(lists: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = []
    for items in lists:
        out += [x for x in items if x not in out]
    return out


@dataclass(frozen=True)
class _Scope:
    """What the sections show: the union of the models' tasks and Ks, the main slice."""

    results: Mapping[str, EvalResult]
    tasks: list[str]
    regression: list[str]
    ks: list[int]
    main: str  # hour-avg when every model has hour slices, else all
    primary: str  # task of the per-hour plot and the activity table

    @classmethod
    def of(cls, results: Mapping[str, EvalResult], primary_task: str | None) -> _Scope:
        rs = list(results.values())
        tasks = _union([r.tasks for r in rs])
        return cls(
            results=results,
            tasks=tasks,
            regression=_union([r.regression for r in rs]),
            ks=sorted({k for r in rs for k in r.ks}),
            main=HOUR_AVG if all(r.main_slice() == HOUR_AVG for r in rs) else ALL,
            primary=primary_task if primary_task in tasks else tasks[0],
        )


def _main_section(sc: _Scope) -> str:
    cols = [(_label(m), m, "") for m in MAIN_COLUMNS]
    scopes = [(sc.main, "averaged over test hours"), (ALL, "all test rows pooled")]
    text = ""
    for slice, what in scopes if sc.main != ALL else scopes[1:]:
        text += f"<h3>{_esc(slice)}: {what}</h3>"
        text += _comparison_table(sc.results, [(t, slice, t) for t in sc.tasks], cols, "task")
    if sc.regression:
        reg_cols = [("MSE", "mse", ""), ("labelled", "count", "")]
        rows = [(t, sc.main, t) for t in sc.regression]
        text += "<h3>Regression targets</h3>"
        text += _comparison_table(sc.results, rows, reg_cols, "target")
    return text


def _ranking_section(sc: _Scope) -> str:
    names = ("prec", "ndcg", "recall", "hit")
    cols = [(_label(f"{m}@{k}"), f"{m}@{k}", "") for m in names for k in sc.ks]
    cols.append((_label("n_requests"), "n_requests", ""))
    ordered = [sc.primary, *(t for t in sc.tasks if t != sc.primary)]
    text = (
        '<p class="caption">Per request (slate), averaged over requests with at least one '
        f"positive; {_esc(sc.main)}.</p>"
    )
    return text + _comparison_table(sc.results, [(t, sc.main, t) for t in ordered], cols, "task")


def _activity_section(sc: _Scope, groups: list[str]) -> str:
    cols = [(f"{t} {_label(m)}", m, t) for t in sc.tasks for m in ("auc", "gauc")]
    cols.append((f"{sc.primary} labelled", "count", sc.primary))
    rows = [(g.removeprefix(ACTIVITY_PREFIX), g, sc.primary) for g in groups]
    text = '<p class="caption">All test rows of users in each activity group.</p>'
    return text + _comparison_table(sc.results, rows, cols, "group")


def _tasks_section(sc: _Scope) -> str:
    rows = [(t, TASK_DESCRIPTIONS.get(t, "-")) for t in [*sc.tasks, *sc.regression]]
    caption = (
        "Each task is a binary label of one live impression; probabilities are predicted per "
        "task (rates: positives over impressions)."
    )
    return html_table(["task", "what it predicts"], rows, caption=caption)


def _models_section(sc: _Scope) -> str:
    rows = "".join(
        f'<tr><td>{_esc(name)}</td><td class="num">{_esc(r.meta.get("n_rows", "-"))}</td>'
        f"<td>{_esc(', '.join(r.tasks))}</td><td>{_esc(_hours_text(r))}</td>"
        f'<td class="num">{_esc(r.meta.get("seconds", "-"))}</td></tr>'
        for name, r in sc.results.items()
    )
    return (
        "<table><thead><tr><th>model</th><th>test rows</th><th>tasks</th><th>test hours</th>"
        f"<th>eval seconds</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _sections(
    results: Mapping[str, EvalResult],
    primary_task: str | None,
    extra: Mapping[str, PlotLike],
    appendix: Sequence[ReportSection] = (),
) -> list[tuple[str, str, str]]:
    """``(anchor, heading, html)`` of every section, in page order."""
    sc = _Scope.of(results, primary_task)
    sections = [("main", "Main metrics", _main_section(sc))]
    sections.append(("tasks", "Tasks", _tasks_section(sc)))
    bars = figure_png(metric_bar_chart(results, sc.tasks, "gauc", sc.main))
    sections.append(("gauc", "GAUC per task", _img(bars, f"GAUC per task and model ({sc.main})")))
    if any(r.hours() for r in results.values()):
        line = figure_png(hourly_line_plot(results, sc.primary, "auc"))
        title = f"{sc.primary.upper()} AUC per test hour"
        sections.append(("hourly", title, _img(line, f"{title}, one line per model")))
    sections.append(("ranking", "Ranking metrics per request", _ranking_section(sc)))
    groups = _union([r.activity_slices() for r in results.values()])
    if groups:
        sections.append(("activity", "Per user-activity group", _activity_section(sc, groups)))
    if extra:
        body = "".join(_img(_plot_png(plot, name), name) for name, plot in extra.items())
        sections.append(("extra", "Additional plots", body))
    taken = {anchor for anchor, _, _ in sections} | {"models"}
    for sec in appendix:
        if sec.anchor in taken:
            raise ConfigError(f"report section anchor '{sec.anchor}' is used twice")
        taken.add(sec.anchor)
        sections.append((sec.anchor, sec.heading, sec.html))
    sections.append(("models", "Models", _models_section(sc)))
    return sections


def _hours_text(result: EvalResult) -> str:
    hours = result.hours()
    if not hours:
        return "-"
    return f"{hours[0]}–{hours[-1]} ({len(hours)})"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def write_report(
    results: Mapping[str, EvalResult],
    out_dir: str | Path,
    title: str,
    notes: str = "",
    extra_plots: Mapping[str, PlotLike] | None = None,
    *,
    primary_task: str | None = "ctr",
    sections: Sequence[ReportSection] = (),
) -> Path:
    """Write ``out_dir/report.html`` comparing ``results`` (model name -> result).

    Args:
        results: at least one model; order = order of rows, bars and lines.
        out_dir: created if missing; also receives ``results/<model>.json``.
        title: page title.
        notes: free text shown under the title (blank lines separate paragraphs).
        extra_plots: caption -> matplotlib Figure, PNG bytes or PNG file path.
        primary_task: task of the per-hour plot and activity table (default ctr, else the
            first task).
        sections: the caller's sections, shown after the plots and before "Models" (their
            anchors must be unique).

    Returns:
        The path of the HTML file.
    """
    if not results:
        raise ConfigError("write_report() needs at least one evaluation result")
    out = Path(out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        result.save(out / "results" / f"{_safe_name(name)}.json")

    page_sections = _sections(results, primary_task, extra_plots or {}, sections)
    body = "".join(
        f'<h2 id="{anchor}">{_esc(heading)}</h2>{content}'
        for anchor, heading, content in page_sections
    )
    nav = "".join(
        f'<a href="#{anchor}">{_esc(heading)}</a>' for anchor, heading, _ in page_sections
    )
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", notes) if p.strip()]
    notes_html = (
        '<div class="notes">' + "".join(f"<p>{_esc(p)}</p>" for p in paragraphs) + "</div>"
        if paragraphs
        else ""
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{len(results)} model(s): {', '.join(results)} · generated {stamp}"
    template = Template(
        resources.files("liverank.eval").joinpath("templates/report.html").read_text("utf-8")
    )
    page = template.substitute(
        title=_esc(title),
        subtitle=_esc(subtitle),
        version=_esc(liverank.__version__),
        notes=notes_html,
        nav=nav,
        body=body,
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    log.info("wrote report %s (%d models, %.0f kB)", path, len(results), len(page) / 1024)
    return path
