"""SimConfig: presets, overrides and errors that name the bad field."""

from __future__ import annotations

import pytest

from liverank.data.sim import PRESETS, SWITCHES, SimConfig
from liverank.errors import ConfigError


@pytest.mark.parametrize("size", list(PRESETS))
def test_presets_are_valid(size):
    cfg = SimConfig.preset(size, seed=7)
    assert cfg.size == size and cfg.seed == 7
    assert all(cfg.switches.values())


def test_preset_sizes_meet_the_brief():
    tiny, small, medium = (SimConfig.preset(s) for s in ("tiny", "small", "medium"))
    assert (tiny.n_users, tiny.n_authors, tiny.n_days) == (200, 40, 1)
    assert (small.n_users, small.n_authors, small.n_days) == (5_000, 400, 5)
    assert medium.n_users >= 50_000 and medium.n_days >= 7


def test_period_starts_at_midnight_utc():
    cfg = SimConfig.preset("small")
    assert cfg.start_ts == 1_746_403_200_000  # 2025-05-05 00:00 UTC
    assert cfg.end_ts - cfg.start_ts == 5 * 86_400_000


def test_switch_overrides():
    cfg = SimConfig.preset("tiny", highlights=False, on_air_schedule=False)
    assert not cfg.highlights and not cfg.on_air_schedule
    assert set(cfg.switches) == set(SWITCHES)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"hihglights": False}, "hihglights"),
        ({"n_users": -5}, "n_users"),
        ({"slate_min": 9, "slate_max": 4}, "slate_min"),
        ({"activity_shares": (0.5, 0.5, 0.5)}, "activity_shares"),
        ({"author_type_shares": {"karaoke": 1.0}}, "author_type_shares"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_field(overrides, words):
    with pytest.raises(ConfigError, match=words):
        SimConfig.preset("tiny", **overrides)


def test_unknown_size():
    with pytest.raises(ConfigError, match="huge"):
        SimConfig.preset("huge")  # type: ignore[arg-type]


def test_config_is_frozen():
    cfg = SimConfig.preset("tiny")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        cfg.n_users = 3  # type: ignore[misc]
