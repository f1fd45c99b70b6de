"""A model registry directory: versioned checkpoints with their config, feature map and metrics.

Layout::

    registry/
      <model name>/
        v0001/
          model.pt           # Ranker.save(): config + feature map + weights
          manifest.json      # version, created_at, metrics, source run, sha256 of model.pt
        v0002/ ...
        LATEST               # text file holding the newest complete version ("v0002")

A version directory is written under a temporary name and renamed into place, and ``LATEST`` is
replaced atomically, so a reader (the serving process) never sees a half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverank.errors import UnknownIdError

MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "LATEST"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path  # the version directory
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name.startswith("v"))

    def publish(
        self, name: str, model_file: str | Path, metadata: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Copy ``model_file`` into a new version of ``name`` and point LATEST at it."""
        src = Path(model_file)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions(name)
        number = int(existing[-1][1:]) + 1 if existing else 1
        version = f"v{number:04d}"
        tmp = model_dir / f".tmp-{version}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        shutil.copy2(src, tmp / MODEL_FILE)
        manifest = {
            "name": name,
            "version": version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sha256": _sha256(tmp / MODEL_FILE),
            **(metadata or {}),
        }
        (tmp / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True, default=str)
        )
        final = model_dir / version
        tmp.rename(final)
        latest_tmp = model_dir / f".{LATEST_FILE}.tmp"
        latest_tmp.write_text(version)
        latest_tmp.replace(model_dir / LATEST_FILE)
        return ModelVersion(name, version, final, manifest)

    def get(self, name: str, version: str = "latest") -> ModelVersion:
        model_dir = self.root / name
        if not model_dir.exists():
            raise UnknownIdError(
                f"registry {self.root}: no model named '{name}' (known: {self.names()})"
            )
        if version == "latest":
            latest = model_dir / LATEST_FILE
            if not latest.exists():
                raise UnknownIdError(
                    f"registry {self.root}: model '{name}' has no published version"
                )
            version = latest.read_text().strip()
        path = model_dir / version
        if not path.exists():
            raise UnknownIdError(
                f"registry {self.root}: model '{name}' has no version '{version}' "
                f"(known: {self.versions(name)})"
            )
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        return ModelVersion(name, version, path, manifest)
