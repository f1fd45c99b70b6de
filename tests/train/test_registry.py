import json
from pathlib import Path

import pytest

from liverank.errors import UnknownIdError
from liverank.train.registry import ModelRegistry


def test_publish_versions_and_latest(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "registry")
    f = tmp_path / "m.pt"
    f.write_bytes(b"weights-1")
    v1 = reg.publish("ple", f, {"auc": 0.7})
    f.write_bytes(b"weights-2")
    v2 = reg.publish("ple", f)
    assert (v1.version, v2.version) == ("v0001", "v0002")
    latest = reg.get("ple")
    assert latest.version == "v0002"
    assert latest.model_path.read_bytes() == b"weights-2"
    assert reg.get("ple", "v0001").manifest["auc"] == 0.7
    assert json.loads((v2.path / "manifest.json").read_text())["sha256"]
    assert reg.names() == ["ple"] and reg.versions("ple") == ["v0001", "v0002"]
    # no temporary directories left behind
    assert not [p for p in (tmp_path / "registry" / "ple").iterdir() if p.name.startswith(".")]


def test_unknown_names_and_versions(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(UnknownIdError, match="no model named 'x'"):
        reg.get("x")
    f = tmp_path / "m.pt"
    f.write_bytes(b"w")
    reg.publish("a", f)
    with pytest.raises(UnknownIdError, match="no version 'v0009'"):
        reg.get("a", "v0009")
