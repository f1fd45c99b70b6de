from pathlib import Path

import pytest

from liverank.config import load_config
from liverank.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["mlp", "din", "mmoe", "ple"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name and cfg.model == name


def test_overrides_apply(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "mlp.yaml", {"train.epochs": 7, "out": str(tmp_path)})
    assert cfg.train.epochs == 7 and cfg.out == tmp_path


def test_unknown_field_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrain:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'train.learning_rate'"):
        load_config(p)


def test_invalid_value_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrain:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"field 'train.epochs'"):
        load_config(p)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(p)


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml")), ids=str
)
def test_every_committed_config_names_a_model_that_parses(path: Path) -> None:
    from liverank.foresight.arms import load_arm_config
    from liverank.train.experiment import ranker_config

    if path.parts[1] == "foresight":  # forecaster configs (LiveForesighter), not rankers
        assert load_arm_config(ROOT / path).method == "foresighter"
        return
    cfg = load_config(ROOT / path)
    assert ranker_config(cfg).modules


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_committed_experiment_loads_with_a_full_grid(path: Path) -> None:
    from liverank.experiments.spec import ExperimentSpec
    from liverank.train.experiment import ranker_config

    spec = ExperimentSpec.load(path)
    assert len(spec.grid.model_seeds) >= 5 and len(spec.grid.world.seeds) >= 2
    for key in {k.config: k for k in spec.runs()}.values():
        entry = spec.configs[key.config]
        if entry.mode == "forecast":
            from liverank.foresight.arms import load_arm_config

            assert load_arm_config(ROOT / entry.config, entry.overrides).method
            continue
        cfg = load_config(ROOT / entry.config, entry.overrides)
        assert ranker_config(cfg).modules


def test_moment_rows_refuse_samples_of_another_mode(tmp_path: Path) -> None:
    from liverank.train.experiment import check_rows

    samples = tmp_path / "s"
    samples.mkdir()
    (samples / "stats.json").write_text('{"mode": "exit"}')
    cfg = load_config(ROOT / "configs" / "sim.yaml", {"data.samples": str(samples)})
    with pytest.raises(ConfigError, match="holds exit rows"):
        check_rows(cfg)
    (samples / "stats.json").write_text('{"mode": "moment"}')
    with pytest.raises(ConfigError, match="no start_ts"):
        check_rows(cfg)
    (samples / "stats.json").write_text('{"mode": "moment", "start_ts": 5}')
    assert check_rows(cfg) == 5
