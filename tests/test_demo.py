"""``liverank demo`` end to end on a tiny platform: its report is readable (issue #12 item 10)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from liverank.demo import run_demo


@pytest.mark.slow
def test_demo_report_has_calibration_and_task_tables(tmp_path: Path) -> None:
    results = run_demo(tmp_path, size="tiny", seed=1, models=["mlp"], epochs=1)
    assert set(results) == {"popularity", "mlp"}
    page = (tmp_path / "report" / "report.html").read_text()
    # no markdown pipe tables anywhere on the page: calibration is an HTML table
    assert not re.search(r"\|\s*-{3}", page) and "| metric |" not in page
    calib = page[page.index('id="calibration"') : page.index('id="timings"')]
    assert "<table>" in calib and "measured" in calib
    assert calib.count("<tr>") > 10
    # the short summary opens the page; the tables come after the results
    notes = page[page.index('<div class="notes">') : page.index("<nav>")]
    assert "calibration targets" in notes and "<table>" not in notes
    assert page.index('id="main"') < page.index('id="calibration"') < page.index('id="models"')
    for task in ("ctr", "evtr", "lvtr", "ltr", "cmtr", "gtr"):
        assert f"<td>{task}</td>" in page[page.index('id="tasks"') :]
    assert "<td>total</td>" in page[page.index('id="timings"') :]
