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
