"""The experiment file: what it must name before any run, and its grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from liverank.errors import ConfigError
from liverank.experiments.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[2]


def _raw(**over) -> dict:
    raw = {
        "name": "farm",
        "claim": "FARM beats PLE on GAUC",
        "baseline": "ple",
        "headline": "farm",
        "configs": {
            "ple": {"config": str(ROOT / "configs/ple.yaml")},
            "farm": {"config": str(ROOT / "configs/farm.yaml")},
            "farm_din": {
                "config": str(ROOT / "configs/farm_din.yaml"),
                "added_after_results": True,
            },
        },
        "grid": {
            "model_seeds": [0, 1, 2, 3, 4],
            "world": {"preset": "evidence", "seeds": [0, 1]},
            "variants": {"base": {}, "periodic_off": {"periodic_interests": False}},
        },
    }
    raw.update(over)
    return raw


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_grid_expands_every_cell_once_with_stable_hashes(tmp_path):
    spec = ExperimentSpec.load(_write(tmp_path, _raw()))
    runs = spec.runs()
    assert len(runs) == 3 * 5 * 2 * 2  # configs x model seeds x worlds x variants
    hashes = [r.hash(spec) for r in runs]
    assert len(set(hashes)) == len(runs)
    renamed = ExperimentSpec.load(_write(tmp_path, _raw(name="farm_again")))
    assert [r.hash(renamed) for r in renamed.runs()] == hashes  # content, not the name


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"headline": "nosuch"}, "headline 'nosuch' is not one of configs"),
        ({"headline": "farm_din"}, "added_after_results"),
        ({"baseline": "farm"}, "must differ"),
        ({"grid": {"model_seeds": [0, 1, 2]}}, ">= 5 model seeds x 2 worlds"),
        ({"grid": {"variants": {"x": {"no_such_switch": False}}}}, "unknown simulator options"),
        (
            {
                "configs": {
                    "ple": {"config": "configs/ple.yaml", "mode": "hourly"},
                    "farm": {"config": "configs/farm.yaml"},
                }
            },
            "unknown mode 'hourly'",
        ),
        ({"off_variants": ["nosuch"]}, "off_variants"),
        ({"grid": {"world": {"preset": "huge"}}}, "world preset 'huge'"),
    ],
)
def test_an_experiment_must_name_its_design_before_running(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentSpec.load(_write(tmp_path, _raw(**over)))


def test_underpowered_smoke_tests_must_say_so(tmp_path):
    raw = _raw(grid={"model_seeds": [0], "world": {"preset": "tiny", "seeds": [0]}})
    with pytest.raises(ConfigError, match="underpowered_ok"):
        ExperimentSpec.load(_write(tmp_path, raw))
    spec = ExperimentSpec.load(_write(tmp_path, raw | {"underpowered_ok": True}))
    assert len(spec.runs()) == 3


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="experiment file not found"):
        ExperimentSpec.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ExperimentSpec.load(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        ExperimentSpec.load(bad)
