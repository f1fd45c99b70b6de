"""The HTML report: written, self-contained, with the expected sections and values."""

from __future__ import annotations

import base64
import re

import polars as pl
import pytest
from matplotlib.figure import Figure

from liverank.errors import ConfigError
from liverank.eval import EvalResult, evaluate
from liverank.eval.plots import figure_png
from liverank.eval.report import TASK_DESCRIPTIONS, ReportSection, html_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def two_models(pred_factory) -> dict[str, EvalResult]:
    frame = pred_factory(tasks=("ctr", "evtr", "gtr"))
    weak = frame.with_columns(
        [(pl.col(f"p_{t}") * 0.2 + 0.4).alias(f"p_{t}") for t in ("ctr", "evtr", "gtr")]
    ).with_columns((pl.col("p_ctr") + (pl.col("request_id") % 7) * 0.01).alias("p_ctr"))
    return {
        "strong <b>": evaluate(frame, ["ctr", "evtr", "gtr"], name="strong"),
        "weak": evaluate(weak, ["ctr", "evtr", "gtr"], name="weak"),
    }


def test_report_has_every_section(two_models, tmp_path) -> None:
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    path = write_report(
        two_models,
        tmp_path / "report",
        title="Strong vs weak <ablation>",
        notes="First paragraph & more.\n\nSecond paragraph.",
        extra_plots={"a figure": fig, "raw png": figure_png(fig)},
    )
    assert path == tmp_path / "report" / "report.html"
    page = path.read_text()
    for anchor in ("main", "tasks", "gauc", "hourly", "ranking", "activity", "extra", "models"):
        assert f'id="{anchor}"' in page
    assert "Strong vs weak &lt;ablation&gt;" in page and "<ablation>" not in page
    assert "strong &lt;b&gt;" in page and "<p>First paragraph &amp; more.</p>" in page
    assert "CTR AUC per test hour" in page and "NDCG@5" in page and "GAUC" in page
    for group in ("low", "mid", "high", "unknown"):
        assert f">{group}</td>" in page
    # the best GAUC of ctr (hour-avg) is highlighted and printed with 4 decimals
    strong = two_models["strong <b>"].value("ctr", "gauc", "hour-avg")
    assert f'<td class="num best">{strong:.4f}</td>' in page
    # self-contained: 4 embedded PNGs (bars, hourly line, 2 extra), no external resources
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    # results saved beside the report and loadable
    saved = sorted(p.name for p in (tmp_path / "report" / "results").iterdir())
    assert saved == ["strong_b.json", "weak.json"]
    back = EvalResult.load(tmp_path / "report" / "results" / "weak.json")
    assert back.value("gtr", "auc") == pytest.approx(two_models["weak"].value("gtr", "auc"))


def test_report_without_hours_or_activity(pred_factory, tmp_path) -> None:
    result = evaluate(pred_factory(), ["ctr", "gtr"], by_hour=False, by_activity=False)
    page = write_report({"only": result}, tmp_path, title="one model").read_text()
    assert 'id="main"' in page and 'id="gauc"' in page
    assert 'id="hourly"' not in page and 'id="activity"' not in page and 'id="extra"' not in page
    assert "all: all test rows pooled" in page


def test_report_errors(two_models, tmp_path) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        write_report({}, tmp_path, title="x")
    with pytest.raises(ConfigError, match="no file"):
        write_report(two_models, tmp_path, title="x", extra_plots={"p": tmp_path / "nope.png"})


def test_report_explains_every_task_name(two_models, tmp_path) -> None:
    page = write_report(two_models, tmp_path, title="x").read_text()
    tasks = page[page.index('id="tasks"') : page.index('id="gauc"')]
    for task in ("ctr", "evtr", "gtr"):
        assert f"<td>{task}</td><td>{TASK_DESCRIPTIONS[task]}</td>" in tasks
    assert "click-through" in tasks and "gift" in tasks


def test_caller_sections_are_tables_below_the_results(two_models, tmp_path) -> None:
    table = html_table(
        ["metric", "measured"], [("clicks | per <min>", "1,234")], numeric=["measured"]
    )
    page = write_report(
        two_models,
        tmp_path,
        title="x",
        notes="short note",
        sections=[ReportSection("calibration", "Calibration", table)],
    ).read_text()
    assert '<td>clicks | per &lt;min&gt;</td><td class="num">1,234</td>' in page
    # after the results, before the models' metadata; listed in the navigation
    assert page.index('id="main"') < page.index('id="calibration"') < page.index('id="models"')
    assert '<a href="#calibration">Calibration</a>' in page
    with pytest.raises(ConfigError, match="used twice"):
        write_report(two_models, tmp_path, title="x", sections=[ReportSection("main", "again", "")])
