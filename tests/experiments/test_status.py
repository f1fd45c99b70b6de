"""``liverank experiment status``: runs recorded vs planned, per arm, from the result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

# the experiment file of the spec tests (the same grid: 5 seeds x 2 worlds, base + periodic_off)
from test_spec import _raw

from liverank.cli import build_parser
from liverank.experiments.spec import ExperimentSpec
from liverank.experiments.status import grid_status, markdown


def _spec(tmp_path: Path, name: str) -> Path:
    """test_spec's FARM file without its labelled variant: ple and farm, two variants."""
    raw = _raw(name=name)
    raw["configs"] = {k: v for k, v in raw["configs"].items() if k != "farm_din"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _record(spec: ExperimentSpec, key, seconds: float) -> str:
    return json.dumps({"hash": key.hash(spec), "config": key.config, "seconds": seconds})


def test_counts_own_and_sibling_records_by_hash(tmp_path: Path) -> None:
    spec = ExperimentSpec.load(_spec(tmp_path, "farm"))
    runs = spec.runs()
    ple_base = [k for k in runs if (k.config, k.variant) == ("ple", "base")]
    farm_off = [k for k in runs if (k.config, k.variant) == ("farm", "periodic_off")]
    results = tmp_path / "results"
    (results / "farm").mkdir(parents=True)
    (results / "other").mkdir()
    # 4 ple/base runs here (600 s each), 2 farm/periodic_off runs in a sibling (1200 s), and a
    # record of another grid whose hash is not in this one
    (results / "farm" / "results.jsonl").write_text(
        "\n".join(_record(spec, k, 600.0) for k in ple_base[:4]) + "\n"
    )
    (results / "other" / "results.jsonl").write_text(
        "\n".join([*(_record(spec, k, 1200.0) for k in farm_off[:2]), '{"hash": "x"}']) + "\n"
    )
    arms = {(a.config, a.variant): a for a in grid_status(spec, results)}
    assert set(arms) == {(c, v) for c in ("ple", "farm") for v in ("base", "periodic_off")}
    assert all(a.planned == 10 for a in arms.values())
    assert arms[("ple", "base")].done == 4 and arms[("farm", "periodic_off")].done == 2
    assert arms[("ple", "periodic_off")].done == 0 and arms[("farm", "base")].done == 0
    # hours left from the config's recorded mean (any variant): 6 x 600 s = 1 h; 8 x 1200 s
    assert arms[("ple", "base")].remaining_hours == pytest.approx(1.0)
    assert arms[("ple", "periodic_off")].remaining_hours == pytest.approx(10 * 600 / 3600)
    assert arms[("farm", "base")].remaining_hours == pytest.approx(10 * 1200 / 3600)
    table = markdown({"experiments/farm.yaml": list(arms.values())})
    assert "| `experiments/farm.yaml` | 6 / 40 |" in table
    assert "ple/base 4/10" in table and "farm/periodic_off 2/10" in table


def test_unknown_cost_and_complete_grid(tmp_path: Path) -> None:
    spec = ExperimentSpec.load(_spec(tmp_path, "farm"))
    empty = grid_status(spec, tmp_path / "nothing")
    assert all(a.done == 0 and a.remaining_hours is None for a in empty)
    assert "? (no run of these configs yet)" in markdown({"f.yaml": empty})
    results = tmp_path / "results" / "farm"
    results.mkdir(parents=True)
    (results / "results.jsonl").write_text(
        "\n".join(_record(spec, k, 60.0) for k in spec.runs()) + "\n"
    )
    full = grid_status(spec, tmp_path / "results")
    assert all(a.done == a.planned and a.remaining_hours == 0 for a in full)
    assert "| 40 / 40 |" in markdown({"f.yaml": full}) and "| 0.0 h |" in markdown({"f.yaml": full})


def test_cli_pastes_the_table_between_markers(tmp_path: Path, capsys) -> None:
    path = _spec(tmp_path, "farm")
    doc = tmp_path / "results.md"
    doc.write_text("before\n<!-- grid:status:start -->\nold\n<!-- grid:status:end -->\nafter\n")
    args = build_parser().parse_args(
        ["experiment", "status", str(path), "--results", str(tmp_path / "r"), "--into", str(doc)]
    )
    assert args.func(args) == 0
    text = doc.read_text()
    assert "old" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert f"| `{path.as_posix()}` | 0 / 40 |" in text
    assert "farm" in capsys.readouterr().out
