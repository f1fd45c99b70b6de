"""Hot reload from the model registry: atomic swaps, rejected versions keep the old model."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import torch

from liverank.errors import ConfigError
from liverank.models.ranker import Ranker
from liverank.models.synthetic import synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.model_holder import ModelHolder
from liverank.train.registry import ModelRegistry

FM = synthetic_feature_map()


def _checkpoint(tmp: Path, seed: int, fm=FM) -> Path:
    torch.manual_seed(seed)
    path = tmp / f"model-{seed}-{fm.table_size('user')}.pt"
    Ranker(fm, get_config("mlp")).save(path)
    return path


def test_loads_latest_and_swaps_on_a_new_version(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    holder = ModelHolder(reg.root, "ple", FM)
    assert holder.refresh() and holder.version == "v0001"
    assert not holder.refresh()  # nothing new
    batch = synthetic_batches(FM, 1, 32)[0]
    old = holder.current()  # an in-flight request holds this reference
    before = old.model.predict_proba(batch)["ctr"]
    reg.publish("ple", _checkpoint(tmp_path, 1))
    assert holder.refresh() and holder.version == "v0002" and holder.swaps == 2
    # the in-flight request still computes with the old model, new requests get the new one
    assert torch.equal(old.model.predict_proba(batch)["ctr"], before)
    assert not torch.equal(holder.current().model.predict_proba(batch)["ctr"], before)


def test_corrupt_checkpoint_is_rejected_and_the_old_model_keeps_serving(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    holder = ModelHolder(reg.root, "ple", FM)
    holder.refresh()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    reg.publish("ple", garbage)
    assert not holder.refresh()
    assert holder.version == "v0001"
    assert "not a readable liverank checkpoint" in holder.rejected["v0002"]
    assert not holder.refresh()  # not retried on every poll


def test_checkpoint_changed_after_publishing_fails_its_checksum(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    holder = ModelHolder(reg.root, "ple", FM)
    holder.refresh()
    v2 = reg.publish("ple", _checkpoint(tmp_path, 1))
    with v2.model_path.open("r+b") as f:  # a half-copied / bit-flipped file
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    assert not holder.refresh()
    assert "sha256" in holder.rejected["v0002"] and holder.version == "v0001"


def test_incompatible_feature_map_is_rejected(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    holder = ModelHolder(reg.root, "ple", FM)
    holder.refresh()
    other = synthetic_feature_map(n_users=FM.table_size("user") + 7)
    reg.publish("ple", _checkpoint(tmp_path, 1, fm=other))
    assert not holder.refresh()
    assert holder.version == "v0001" and "v0002" in holder.rejected


def test_no_version_is_a_clear_error(tmp_path: Path) -> None:
    holder = ModelHolder(tmp_path / "empty", "ple")
    assert not holder.refresh()
    with pytest.raises(ConfigError, match="no servable version of model 'ple'"):
        holder.current()


def test_watch_thread_picks_up_new_versions(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    holder = ModelHolder(reg.root, "ple", FM, interval_s=0.05)
    holder.start()
    try:
        assert holder.version == "v0001"
        reg.publish("ple", _checkpoint(tmp_path, 1))
        deadline = time.time() + 10
        while holder.version != "v0002" and time.time() < deadline:
            time.sleep(0.02)
        assert holder.version == "v0002"
    finally:
        holder.stop()


# ------------------------------------------------------------- a registry edited badly (#12)
def _garbage(tmp: Path) -> Path:
    path = tmp / "garbage.pt"
    path.write_bytes(b"not a checkpoint at all")
    return path


def test_restart_with_a_corrupt_latest_falls_back_to_the_previous_version(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    reg.publish("ple", _checkpoint(tmp_path, 1))
    reg.publish("ple", _garbage(tmp_path))  # v0003, LATEST
    holder = ModelHolder(reg.root, "ple", FM)  # a restarted service
    assert holder.refresh() and holder.version == "v0002"
    assert holder.status == "degraded" and holder.latest == "v0003"
    assert "LATEST names v0003" in holder.problem and "serving v0002" in holder.problem
    reason = holder.rejected["v0003"]
    assert "not a readable liverank checkpoint" in reason
    assert "weights_only" not in reason and "\n" not in reason and len(reason) <= 300
    health = holder.health()
    assert health["status"] == "degraded" and health["registry_latest"] == "v0003"
    assert health["model_version"] == "v0002" and "v0003" in health["degraded_reason"]
    assert not holder.refresh() and holder.version == "v0002"  # stays, nothing reloaded
    reg.publish("ple", _checkpoint(tmp_path, 2))  # the fix is published: back to ok
    assert holder.refresh() and holder.version == "v0004" and holder.status == "ok"
    assert holder.problem is None


def test_a_serving_holder_also_moves_to_the_newest_servable_version(tmp_path: Path) -> None:
    """v0002 (good) and v0003 (corrupt) land between two polls: v0002 is served."""
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    holder = ModelHolder(reg.root, "ple", FM)
    holder.refresh()
    reg.publish("ple", _checkpoint(tmp_path, 1))
    reg.publish("ple", _garbage(tmp_path))
    assert holder.refresh() and holder.version == "v0002" and holder.status == "degraded"


@pytest.mark.parametrize("latest", ["", "   \n", "v0009", "../other", "v0002"])
def test_an_empty_or_dangling_latest_is_reported_once_not_raised(
    tmp_path: Path, latest: str, caplog: pytest.LogCaptureFixture
) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    if latest == "v0002":  # a version directory without its manifest (a copy in progress)
        (reg.root / "ple" / "v0002").mkdir()
    (reg.root / "ple" / "LATEST").write_text(latest)
    holder = ModelHolder(reg.root, "ple", FM)
    with caplog.at_level(logging.INFO, logger="liverank.serve.model_holder"):
        for _ in range(5):  # five polls
            holder.refresh()
    assert holder.version == "v0001" and holder.status == "degraded"
    assert "serving v0001 instead" in holder.problem
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None, caplog.text
    assert "v0002" not in holder.rejected  # re-read on every poll: the copy may complete


def test_the_watch_thread_logs_a_broken_latest_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    holder = ModelHolder(reg.root, "ple", FM, interval_s=0.02)
    holder.start()
    try:
        with caplog.at_level(logging.INFO, logger="liverank.serve.model_holder"):
            (reg.root / "ple" / "LATEST").write_text("")
            time.sleep(0.5)  # ~25 polls
    finally:
        holder.stop()
    assert holder.version == "v0001" and "is empty" in holder.problem
    assert not [r for r in caplog.records if r.exc_info is not None], caplog.text
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_a_version_whose_manifest_names_another_model_is_rejected(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _checkpoint(tmp_path, 0))
    other = reg.publish("din", _checkpoint(tmp_path, 1))
    shutil.copytree(other.path, reg.root / "ple" / "v0002")  # copied into the wrong model
    (reg.root / "ple" / "LATEST").write_text("v0002")
    holder = ModelHolder(reg.root, "ple", FM)
    holder.refresh()
    assert holder.version == "v0001" and holder.status == "degraded"
    assert "names model 'din', not 'ple'" in holder.rejected["v0002"]


def test_no_servable_version_at_all_says_why(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish("ple", _garbage(tmp_path))
    holder = ModelHolder(reg.root, "ple", FM)
    assert not holder.refresh() and holder.status == "no_model"
    with pytest.raises(ConfigError, match="v0001, which was rejected: .*no other servable"):
        holder.current()
