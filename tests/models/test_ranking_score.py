"""The Ranker's ranking score: Moment&Cross eq. 4 with the config's exponents."""

from __future__ import annotations

import pytest
import torch

from liverank.errors import ConfigError
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config


def test_ranking_score_is_the_product_of_one_plus_probability_powers() -> None:
    fm = synthetic_feature_map()
    cfg = get_config("mlp")
    cfg.score_exponents = {"ctr": 1.0, "lvtr": 0.5, "gtr": 2.0}
    model = Ranker(fm, cfg)
    batch = synthetic_batches(fm, 1, 64)[0]
    p = model.predict_proba(batch)
    want = (1 + p["ctr"]) * (1 + p["lvtr"]) ** 0.5 * (1 + p["gtr"]) ** 2.0
    torch.testing.assert_close(model.ranking_score(batch), want, rtol=1e-5, atol=1e-6)


def test_without_exponents_it_ranks_by_ctr() -> None:
    fm = synthetic_feature_map()
    model = Ranker(fm, get_config("mlp"))
    batch = synthetic_batches(fm, 1, 64)[0]
    score = model.ranking_score(batch)
    assert torch.equal(score.argsort(), model.predict_proba(batch)["ctr"].argsort())


def test_exponent_for_a_task_without_a_head_is_a_config_error() -> None:
    cfg = get_config("mlp")
    cfg.tasks = ["ctr", "lvtr"]
    cfg.score_exponents = {"ctr": 1.0, "gtr": 1.0}
    with pytest.raises(ConfigError, match="gtr"):
        Ranker(synthetic_feature_map(), cfg)


def test_moment_cross_zoo_config_sets_eq4_exponents() -> None:
    assert get_config("moment_cross").score_exponents["ctr"] == 1.0
