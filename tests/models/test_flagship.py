"""The flagship ``liverank`` config: every paper module composed on PLE, the ones the samples
cannot feed switched off (logged, recorded), conformance with all of them on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conformance import check_ranker

from liverank.errors import ConfigError
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config

PAPER_MODULES = ["farm", "moment_cross", "eliverec", "mmbee_mfq", "mmbee_gie", "foresighter"]


def _rooms(fm: FeatureMap) -> FeatureMap:  # synthetic live ids are author_id * 1000 + 0..4
    return fm.model_copy(update={"tables": {**fm.tables, "room": 200_000}})


FULL = _rooms(
    synthetic_feature_map(
        n_users=200, n_authors=40, n_categories=6, long_len=30, shopping=True, mmbee=True,
        foresight=True,
    )
)  # fmt: skip


def test_every_module_on_with_samples_that_feed_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Ranker(FULL, get_config("liverank"))
    assert model.switched_off == {}
    assert list(model.feature_modules) == ["sparse_features", "din", *PAPER_MODULES]
    check_ranker(
        get_config("liverank"), FULL, tmp_path=tmp_path, train_samples=16_384, lr_dense=0.003
    )


def test_modules_the_samples_cannot_feed_are_switched_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fm = _rooms(synthetic_feature_map(n_users=200, n_authors=40))
    no_video = fm.model_copy(update={"tables": {**fm.tables, "video_tag": 1}})
    with caplog.at_level(logging.WARNING, logger="liverank.models.ranker"):
        torch.manual_seed(0)
        model = Ranker(no_video, get_config("liverank"))
    assert list(model.feature_modules) == ["sparse_features", "din"]
    assert set(model.switched_off) == set(PAPER_MODULES)
    assert "short-video" in model.switched_off["farm"]
    assert "--long-len" in model.switched_off["moment_cross"]
    assert "module 'mmbee_gie' switched off" in caplog.text
    # saved and loaded with the same samples: the same modules, the same predictions
    batch = synthetic_batches(no_video, 1, 32, seed=3)[0]
    model.save(tmp_path / "m.pt")
    loaded = Ranker.load(tmp_path / "m.pt")
    assert loaded.switched_off == model.switched_off
    model.eval()
    torch.testing.assert_close(
        loaded.predict_proba(batch)["ctr"], model.predict_proba(batch)["ctr"]
    )


def test_a_module_not_marked_optional_still_fails() -> None:
    fm = _rooms(synthetic_feature_map(n_users=200, n_authors=40))
    with pytest.raises(ConfigError, match="--room-stats"):
        Ranker(fm, get_config("foresighter"))
