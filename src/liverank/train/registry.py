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

Versions order by their number (``v9999`` < ``v10000``). Reading a registry someone edited by
hand fails with a one-line typed error, never an ``OSError`` or a ``JSONDecodeError``: an empty
or dangling ``LATEST`` and a missing version are :class:`UnknownIdError`; a version without a
readable ``manifest.json`` is :class:`ConfigError`.
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

from liverank.errors import ConfigError, UnknownIdError

MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "LATEST"
#: the registry's AOTInductor compile cache (``liverank train --compile-aoti`` fills it, the
#: service with ``--runtime aoti`` reads and fills it); hidden, so not a model name
AOTI_CACHE = ".aoti"


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


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key of a version name: numbered versions (``v0012``) by number, after any others."""
    digits = version[1:]
    return (1, int(digits), version) if digits.isdigit() else (0, 0, version)


def _plain_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and "/" not in text and "\\" not in text


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        # hidden directories are caches (the service's compiled packages in .aoti), not models
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.exists():
            return []
        found = [p.name for p in d.iterdir() if p.is_dir() and p.name.startswith("v")]
        return sorted(found, key=version_key)

    def publish(
        self, name: str, model_file: str | Path, metadata: dict[str, Any] | None = None
    ) -> ModelVersion:
        """Copy ``model_file`` into a new version of ``name`` and point LATEST at it."""
        src = Path(model_file)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions(name)
        numbers = [int(v[1:]) for v in existing if v[1:].isdigit()]
        number = max(numbers) + 1 if numbers else 1
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

    def latest_version(self, name: str) -> str:
        """The version ``LATEST`` of ``name`` names (it may not exist: see :meth:`get`).

        Raises:
            UnknownIdError: no model ``name``, no ``LATEST``, or an empty or malformed one.
        """
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise UnknownIdError(
                f"registry {self.root}: no model named '{name}' (known: {self.names()})"
            )
        latest = model_dir / LATEST_FILE
        try:
            text = latest.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            raise UnknownIdError(
                f"registry {self.root}: model '{name}' has no published version (no {LATEST_FILE})"
            ) from None
        except OSError as exc:
            raise UnknownIdError(f"{latest}: unreadable ({exc.strerror or exc})") from None
        if not text:
            raise UnknownIdError(f"{latest} is empty: it names no version")
        if not _plain_name(text) or len(text) > 64:
            raise UnknownIdError(f"{latest} does not hold a version name: {text[:64]!r}")
        return text

    def get(self, name: str, version: str = "latest") -> ModelVersion:
        """Version ``version`` of ``name`` (``"latest"``: the one ``LATEST`` names).

        Raises:
            UnknownIdError: no such model, ``LATEST`` missing / empty, no such version
                (a dangling ``LATEST``).
            ConfigError: the version has no readable ``manifest.json``.
        """
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise UnknownIdError(
                f"registry {self.root}: no model named '{name}' (known: {self.names()})"
            )
        pointer = ""
        if version == "latest":
            version = self.latest_version(name)
            pointer = f" ({LATEST_FILE} names it)"
        path = model_dir / version
        if not _plain_name(version) or not path.is_dir():
            raise UnknownIdError(
                f"registry {self.root}: model '{name}' has no version '{version}'{pointer} "
                f"(known: {self.versions(name)})"
            )
        manifest_path = path / MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{manifest_path}: missing (an incomplete version?)") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{manifest_path}: not readable JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise ConfigError(f"{manifest_path}: not a JSON object")
        return ModelVersion(name, version, path, manifest)
