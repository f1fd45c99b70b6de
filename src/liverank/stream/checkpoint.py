"""Checkpoint / restore of a :class:`~liverank.stream.engine.StreamEngine` with its source offset.

Layout of a checkpoint directory (``checkpoint_dir``)::

    ckpt-000000000123/          one complete checkpoint (the number is a sequence, not an offset)
        manifest.json           format, source offset, wall time, the engine's scalars
                                (the watermark state, ``emitted_below``, counters)
        impressions.parquet     every DataFrame of StreamEngine.state_dict(), one file each
        events.parquet
        dead_letters.parquet
        rooms.parquet
        users.parquet           only when the engine checks users

A checkpoint is written into ``.tmp-ckpt-...`` and renamed to ``ckpt-...`` only when complete
(``rename`` is atomic on one filesystem), so a crash while checkpointing leaves the previous one
intact; :func:`latest_checkpoint` ignores temporary directories. The newest ``keep`` checkpoints
are kept.

**Restart guarantee** (ARCHITECTURE section 4): the runner writes a checkpoint only after the
sink has flushed every row emitted so far. Restoring the engine and seeking the source to the
checkpoint's offset replays the rows after it; the engine's output union does not depend on
chunking, and sample ids are deterministic, so the rows emitted between the checkpoint and the
crash come again with the same ids (the sink drops them) and the final sample set equals that of
an uninterrupted run (``tests/stream/test_restart.py``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from liverank.errors import ConfigError, DataValidationError
from liverank.stream.engine import StreamEngine

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_PREFIX = "ckpt-"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk: where it is, the source offset and its sequence number."""

    path: Path
    offset: int
    seq: int


def save_checkpoint(
    checkpoint_dir: str | Path, engine: StreamEngine, offset: int, *, keep: int = 2
) -> Checkpoint:
    """Atomically write ``engine.state_dict()`` and the source ``offset``; prune old ones."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(root)
    seq = 0 if last is None else last.seq + 1
    final = root / f"{_PREFIX}{seq:012d}"
    tmp = root / f".tmp-{_PREFIX}{seq:012d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    scalars: dict[str, object] = {}
    frames: list[str] = []
    for name, value in engine.state_dict().items():
        if isinstance(value, pl.DataFrame):
            value.write_parquet(tmp / f"{name}.parquet")
            frames.append(name)
        else:
            scalars[name] = value
    manifest = {
        "format_version": FORMAT_VERSION,
        "offset": int(offset),
        "seq": seq,
        "written_unix_s": time.time(),
        "frames": frames,
        "state": scalars,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # keeps dict order
    tmp.rename(final)
    for old in sorted(root.glob(f"{_PREFIX}*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    log.debug("checkpoint %s at source offset %d", final, offset)
    return Checkpoint(final, int(offset), seq)


def latest_checkpoint(checkpoint_dir: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint in ``checkpoint_dir`` (None when there is none)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob(f"{_PREFIX}*") if (p / MANIFEST).exists())
    if not done:
        return None
    manifest = _read_manifest(done[-1])
    return Checkpoint(done[-1], int(manifest["offset"]), int(manifest["seq"]))


def load_state(path: str | Path) -> tuple[dict[str, object], int]:
    """The engine state dict and source offset stored in one checkpoint directory."""
    p = Path(path)
    manifest = _read_manifest(p)
    state: dict[str, object] = dict(manifest["state"])
    for name in manifest["frames"]:
        state[name] = pl.read_parquet(p / f"{name}.parquet")
    return state, int(manifest["offset"])


def restore_engine(checkpoint_dir: str | Path) -> tuple[StreamEngine, int]:
    """A new engine continuing from the newest checkpoint, and the source offset to seek to.

    The engine is built from the saved configuration and rooms table. Raises
    :class:`ConfigError` when ``checkpoint_dir`` holds no complete checkpoint.
    """
    last = latest_checkpoint(checkpoint_dir)
    if last is None:
        raise ConfigError(
            f"no checkpoint in {checkpoint_dir} (expected {_PREFIX}*/{MANIFEST}); "
            "start without --resume"
        )
    state, offset = load_state(last.path)
    config = dict(state["config"])  # type: ignore[call-overload]
    rooms = state["rooms"]
    if not isinstance(rooms, pl.DataFrame):
        raise DataValidationError("checkpoint has no rooms table", file=str(last.path))
    engine = StreamEngine(
        rooms,
        int(config["long_view_ms"]),
        str(config["mode"]),
        allowed_lateness_ms=int(config["allowed_lateness_ms"]),
        behaviours=dict(config["behaviours"]),
        window_ms=int(config["window_ms"]),
        users=state.get("users"),  # type: ignore[arg-type]
    )
    engine.load_state_dict(state)
    log.info("restored %s engine from %s (source offset %d)", engine.mode, last.path, offset)
    return engine, offset


def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataValidationError(f"unreadable checkpoint manifest: {exc}", file=str(file)) from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataValidationError(
            f"checkpoint format {manifest.get('format_version')} is not {FORMAT_VERSION}",
            file=str(file),
        )
    return manifest
