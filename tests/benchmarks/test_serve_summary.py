"""The serving figures table in docs/serving.md is the one benchmarks/serve_summary.py
generates from the result files it names (never typed by hand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "serve_summary.py"


@pytest.fixture(scope="module")
def summary():
    spec = importlib.util.spec_from_file_location("serve_summary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_docs_table_is_generated_from_the_records(summary) -> None:
    doc = (ROOT / "docs" / "serving.md").read_text()
    inside = doc.split(summary.START, 1)[1].split(summary.END, 1)[0].strip()
    assert inside == summary.table(ROOT / "benchmarks" / "results")


def test_a_changed_record_changes_the_table(summary, tmp_path: Path) -> None:
    for name in set(summary.SOURCES.values()):
        payload = json.loads((ROOT / "benchmarks" / "results" / name).read_text())
        for r in payload["results"]:
            r["p99_ms"] = 1234.5
        (tmp_path / name).write_text(json.dumps(payload))
    assert "1234.5 ms" in summary.table(tmp_path)
