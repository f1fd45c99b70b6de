"""Hot reload from the model registry: atomic swaps, rejected versions keep the old model."""

from __future__ import annotations

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
