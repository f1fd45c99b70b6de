"""The serving model and its hot reload from a model registry directory (issue #4).

:class:`ModelHolder` keeps the model that answers requests and swaps it when the registry's
``LATEST`` points at a new version (:mod:`liverank.train.registry` writes versions atomically).

* **Atomic swap.** The current model is one immutable :class:`ServedModel` held in one attribute;
  a request takes a reference once (:meth:`ModelHolder.current`) and uses it to the end, so a
  swap in the middle of a request never mixes two models: in-flight requests finish on the old
  one, new requests see the new one.
* **Rejection keeps the old model.** A new version is loaded and checked *before* the swap: its
  manifest must name this model, its ``model.pt`` must match the manifest's sha256 (a
  half-copied or corrupted file), load as a liverank checkpoint, and - when the service was
  given the feature map its features are built with - be compatible with it (same tasks, table
  sizes). Any failure is logged once with a one-line reason, remembered in
  :attr:`ModelHolder.rejected` (so a bad version is not retried on every poll) and the old
  model keeps serving.
* **Fallback.** When ``LATEST`` cannot be served (a rejected version; an empty, malformed or
  dangling ``LATEST``; a version without a manifest) the holder serves the newest servable
  version older than the one ``LATEST`` names (any version when it names none), so a restart
  after a bad publish is not an outage. :attr:`ModelHolder.problem` says why the service is not
  on ``LATEST`` (``/health`` reports it as ``degraded``); it is logged once per change, not on
  every poll. Registry errors are re-checked on every poll (a version being copied in may
  complete); rejections are not.
* **Runtime.** Each version gets its :class:`~liverank.serve.runtime.ModelRunner` (eager or a
  TorchScript trace, :mod:`liverank.serve.runtime`) from ``make_runner`` while it is loaded, so
  a trace or its parity check failing rejects the version like a corrupt file.
* **Watching.** :meth:`ModelHolder.refresh` checks once; :meth:`ModelHolder.start` polls in a
  daemon thread every ``interval_s`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverank.errors import ConfigError, LiverankError
from liverank.features.spec import FeatureMap
from liverank.models.ranker import Ranker
from liverank.serve.runtime import EagerRunner, ModelRunner
from liverank.train.registry import LATEST_FILE, ModelRegistry, ModelVersion, version_key

log = logging.getLogger(__name__)

#: longest rejection / problem text kept (one line; ``/health`` lists them)
MAX_REASON_CHARS = 300


def one_line(exc: BaseException | str) -> str:
    """``exc``'s message on one line, at most :data:`MAX_REASON_CHARS` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


@dataclass(frozen=True)
class ServedModel:
    """One loaded version: the model in eval mode, what runs it, and where it came from."""

    model: Ranker
    name: str
    version: str
    loaded_at: float
    manifest: dict = field(default_factory=dict)
    runner: ModelRunner | None = None  # None: EagerRunner(model)

    @property
    def run(self) -> ModelRunner:
        """The runner of the forward pass (eager when none was made)."""
        return self.runner if self.runner is not None else EagerRunner(self.model)

    @property
    def runtime(self) -> str:
        return self.run.runtime


class ModelHolder:
    """The current :class:`ServedModel` of registry model ``name``, hot-reloaded (module doc)."""

    def __init__(
        self,
        registry: str | Path,
        name: str,
        feature_map: FeatureMap | None = None,
        *,
        interval_s: float = 2.0,
        on_load: Callable[[Ranker], None] | None = None,
        make_runner: Callable[[Ranker], ModelRunner] | None = None,
    ) -> None:
        self.registry = ModelRegistry(registry)
        self.name = name
        self.feature_map = feature_map
        self.interval_s = interval_s
        #: called with every newly loaded model before it is swapped in (e.g. to attach data)
        self.on_load = on_load
        #: builds each loaded version's runner (None: eager); may raise to reject the version
        self.make_runner = make_runner
        self.rejected: dict[str, str] = {}  # version -> one-line reason
        #: the version ``LATEST`` named at the last refresh (None: it names none)
        self.latest: str | None = None
        #: why the service is not serving ``LATEST`` (None: it is); one line
        self.problem: str | None = None
        self.swaps = 0
        self._current: ServedModel | None = None
        self._lock = threading.Lock()  # one loader at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ reading
    def current(self) -> ServedModel:
        """The model to use for one request (take it once per request)."""
        served = self._current
        if served is None:
            raise ConfigError(
                f"no servable version of model '{self.name}' in registry {self.registry.root}"
                + (f": {self.problem}" if self.problem else "")
            )
        return served

    @property
    def version(self) -> str | None:
        return None if self._current is None else self._current.version

    @property
    def status(self) -> str:
        """``ok`` (serving ``LATEST``), ``degraded`` (serving another version: see
        :attr:`problem`) or ``no_model``."""
        if self._current is None:
            return "no_model"
        return "degraded" if self.problem is not None else "ok"

    def health(self) -> dict[str, Any]:
        """The model part of ``GET /health``."""
        served = self._current
        return {
            "status": self.status,
            "model": self.name,
            "model_version": None if served is None else served.version,
            "runtime": None if served is None else served.runtime,
            "registry_latest": self.latest,
            "degraded_reason": self.problem,
            "rejected_versions": dict(self.rejected),
        }

    # ------------------------------------------------------------------------------ loading
    def refresh(self) -> bool:
        """Serve ``LATEST`` if it is new and valid, else the newest servable version before it
        (module doc); return True when the model was swapped."""
        with self._lock:
            try:
                latest: str | None = self.registry.latest_version(self.name)
                why = None
            except LiverankError as exc:
                latest, why = None, one_line(exc)
            self.latest = latest
            if latest is not None:
                if latest == self.version:
                    self._set_problem(None)
                    return False
                why = self._try(latest)
                if why is None:
                    self._set_problem(None)
                    return True
                why = f"{LATEST_FILE} names {latest}, which {why}"
            swapped = self._fall_back(latest)
            if self.version is None:
                self._set_problem(f"{why}; no other servable version")
            else:
                self._set_problem(f"{why}; serving {self.version} instead")
            return swapped

    def _try(self, version: str) -> str | None:
        """Load and swap in ``version``; None on success, else why not (one line)."""
        if version in self.rejected:
            return f"was rejected: {self.rejected[version]}"
        try:
            found = self.registry.get(self.name, version)
        except LiverankError as exc:  # not remembered: a version being copied in may complete
            return f"cannot be read: {one_line(exc)}"
        try:
            served = self._load(found)
        except Exception as exc:  # any failure to load rejects the version, never the service
            reason = one_line(exc)
            self.rejected[version] = reason
            still = f", still serving {self.version}" if self.version is not None else ""
            log.error("rejected %s/%s%s: %s", self.name, version, still, reason)
            return f"was rejected: {reason}"
        self._current = served  # the atomic swap: one reference assignment
        self.swaps += 1
        log.info("serving %s/%s", self.name, served.version)
        return None

    def _fall_back(self, latest: str | None) -> bool:
        """Swap in the newest servable version older than ``latest`` (None: any), unless the
        one serving is it; True when swapped."""
        versions = self.registry.versions(self.name)
        if latest is not None:
            versions = [v for v in versions if version_key(v) < version_key(latest)]
        for version in reversed(versions):
            if version == self.version:
                return False
            if version not in self.rejected and self._try(version) is None:
                return True
        return False

    def _set_problem(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        if problem is not None:
            log.warning("model '%s': %s", self.name, problem)
        elif self.problem is not None:
            log.info("model '%s': serving %s, as %s names", self.name, self.version, LATEST_FILE)
        self.problem = problem

    def _load(self, version: ModelVersion) -> ServedModel:
        path = version.model_path
        named = version.manifest.get("name")
        if named is not None and named != self.name:
            raise ConfigError(
                f"{version.path}: its manifest names model '{named}', not '{self.name}' "
                "(a version copied from another model?)"
            )
        want = version.manifest.get("sha256")
        if want is not None:
            got = hashlib.sha256(path.read_bytes()).hexdigest()
            if got != want:
                raise ConfigError(
                    f"{path}: sha256 {got[:12]}... does not match the manifest's {want[:12]}... "
                    "(corrupt or half-written checkpoint)"
                )
        model = Ranker.load(path, feature_map=self.feature_map)
        model.eval()
        return self._serve(model, version.version, dict(version.manifest))

    def _serve(self, model: Ranker, version: str, manifest: dict) -> ServedModel:
        if self.on_load is not None:
            self.on_load(model)
        runner = self.make_runner(model) if self.make_runner is not None else EagerRunner(model)
        return ServedModel(model, self.name, version, time.time(), manifest, runner)

    def prepare(
        self,
        on_load: Callable[[Ranker], None] | None,
        make_runner: Callable[[Ranker], ModelRunner] | None,
    ) -> None:
        """Set the load hooks and apply them to the version already serving (which is
        swapped for the prepared one). Raises what the hooks raise for that version."""
        with self._lock:
            self.on_load, self.make_runner = on_load, make_runner
            cur = self._current
            if cur is not None:
                self._current = self._serve(cur.model, cur.version, cur.manifest)

    # ------------------------------------------------------------------------------ watching
    def start(self) -> None:
        """Load now, then poll the registry in a daemon thread."""
        self.refresh()
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any one bad version
                log.exception("model registry watch failed; retrying")
