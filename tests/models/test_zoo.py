"""One conformance test per named configuration, plus the zoo's lookup behaviour."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conformance import check_ranker

from liverank.errors import ConfigError
from liverank.models.zoo import get_config, list_configs

log = logging.getLogger(__name__)


def _check(name: str, tmp_path: Path) -> None:
    report = check_ranker(get_config(name), tmp_path=tmp_path)
    log.info("%s: %s", name, report)


def test_mlp_conforms(tmp_path: Path) -> None:
    _check("mlp", tmp_path)


def test_din_conforms(tmp_path: Path) -> None:
    _check("din", tmp_path)


def test_mmoe_conforms(tmp_path: Path) -> None:
    _check("mmoe", tmp_path)


def test_ple_conforms(tmp_path: Path) -> None:
    _check("ple", tmp_path)


def test_list_configs_names_every_baseline() -> None:
    assert set(list_configs()) >= {"mlp", "din", "mmoe", "ple"}
    for name in list_configs():
        assert get_config(name).name == name


def test_get_config_returns_a_fresh_copy() -> None:
    a = get_config("mlp")
    a.embedding_dim = 99
    assert get_config("mlp").embedding_dim == 16


def test_unknown_config_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'.*mlp.*din.*mmoe.*ple"):
        get_config("nope")


def test_ple_has_two_levels_and_mmoe_a_few_experts() -> None:
    ple, mmoe = get_config("ple"), get_config("mmoe")
    assert ple.backbone.type == "ple" and ple.backbone.levels == 2
    assert mmoe.backbone.type == "mmoe" and 2 <= mmoe.backbone.n_experts <= 8
