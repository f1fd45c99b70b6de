"""What runs a served model's forward pass: eager PyTorch or its TorchScript trace (issue #4).

A :class:`ModelRunner` turns a request batch into per-task probabilities and the fused ranking
score. The service holds one per loaded version (:class:`~liverank.serve.model_holder.ServedModel`)
and is built by :func:`make_runner` when the version is loaded, *before* it is swapped in, so a
request never pays for a trace.

Runtimes (``liverank serve --runtime``):

* ``eager``: the :class:`~liverank.models.ranker.Ranker` itself in eval mode.
* ``torchscript``: the model traced in memory with the code of the export
  (:func:`liverank.serve.export.trace_ranker`) and frozen. ``benchmarks/export_latency.py``
  measures it faster than eager on the baselines (PLE, 200 candidates, one thread); a model
  with a module that cannot be traced (none of liverank's since issue #20; a module not marked
  ``exportable``, or ``moment_cross`` with a long-history store attached) is rejected with the
  reason.
* ``aoti``: the model captured with ``torch.export`` and compiled ahead of time by AOTInductor
  (:mod:`liverank.serve.export_aoti`): the fastest runtime measured on one thread (PLE, 200
  candidates, quiet 2-core machine: p50 3.6 ms vs 6.1 ms TorchScript; in the service, at equal
  threads, 1.2x on the model and no gain at saturation, docs/serving.md), at the cost of a
  compilation when a version is loaded (tens of seconds on 2 cores, off the request path) and
  a C++ compiler on the machine. Packages are cached by content (:func:`~liverank.serve.
  export_aoti.package_key`) in ``aoti_cache`` (the service uses ``<registry>/.aoti``), so a
  restart or a re-published identical version does not compile again. Opt-in: ``auto`` stays
  on TorchScript, which needs no compiler and starts at once.
* ``auto`` (default): ``torchscript`` when every module of the model can be exported, else
  ``eager``, logged.

The compiled runtimes record their program for one request per batch, as the service calls
them (``one_request=True``, :func:`liverank.models.layers.dedup.one_request`): the user's
behaviour sequences are encoded once, from row 0, instead of once per candidate (synthetic
200-candidate request, one thread, quiet machine, ``benchmarks/export_latency.py --request``:
FARM eager 8.8 ms, TorchScript 10.2 -> 5.0 ms, AOTInductor 6.4 -> 2.6 ms; PLE TorchScript 5.7 ->
4.7 ms, AOTInductor 3.8 -> 2.2 ms). A batch whose user fields differ between rows is refused
with the field's name (:func:`~liverank.serve.export.check_one_request`), never scored with
row 0's sequences.

Parity gate: a traced program is compared with eager on an example request batch before it is
accepted; a maximum absolute difference above :data:`PARITY_ATOL` rejects it (``torchscript``:
the version is rejected and the old one keeps serving; ``auto``: the version is served eagerly
and a warning says why). The export's own parity tests are in ``tests/serve/test_export.py``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal, Protocol

import torch

from liverank.errors import ConfigError
from liverank.models.base import Batch
from liverank.models.fusion import ranking_score
from liverank.models.ranker import Ranker
from liverank.serve.export import (
    check_one_request,
    export_blockers,
    quiet_torchscript,
    required_fields,
    shared_fields,
    trace_ranker,
)

log = logging.getLogger(__name__)

Runtime = Literal["auto", "eager", "torchscript", "aoti"]
RUNTIMES: tuple[str, ...] = ("auto", "eager", "torchscript", "aoti")
#: how errors and logs name the compiled runtimes
_DISPLAY = {"torchscript": "TorchScript", "aoti": "AOTInductor"}
#: largest |p_traced - p_eager| accepted by the load-time parity gate
PARITY_ATOL = 1e-5


class ModelRunner(Protocol):
    """The forward pass of one served version."""

    runtime: str

    def predict_proba(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{task: [B]}`` probabilities."""
        ...

    def score_from_proba(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fused ranking score ``[B]`` (Moment&Cross eq. 4) from :meth:`predict_proba`."""
        ...


class EagerRunner:
    """The Ranker in eval mode."""

    runtime = "eager"

    def __init__(self, model: Ranker) -> None:
        self.model = model.eval()

    def predict_proba(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.model.predict_proba(batch)

    def score_from_proba(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.score_from_proba(probs)


class TorchScriptRunner:
    """The Ranker's frozen TorchScript trace; outputs in ``tasks`` order."""

    runtime = "torchscript"

    def __init__(self, model: Ranker, example: Batch) -> None:
        fields = required_fields(model)
        model.check_batch(example)
        # recorded for one request per call, as the service calls it: the user's sequences
        # are encoded once per request (the guard refuses a batch of several users)
        program = trace_ranker(model, {f: example[f] for f in fields}, one_request=True)
        with quiet_torchscript():
            self.program = torch.jit.freeze(program.eval())
        self.fields = fields
        self.shared = shared_fields(model)
        self.tasks = list(model.tasks)
        self.exponents = dict(model.config.score_exponents or {"ctr": 1.0})

    def predict_proba(self, batch: Batch) -> dict[str, torch.Tensor]:
        check_one_request(self.shared, batch)  # the clear error before the guard's
        with torch.no_grad():
            proba = self.program({f: batch[f] for f in self.fields})  # [B, T]
        return {t: proba[:, i] for i, t in enumerate(self.tasks)}

    def score_from_proba(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        return ranking_score(probs, self.exponents)


class AotiRunner:
    """The Ranker compiled by AOTInductor (:mod:`liverank.serve.export_aoti`), cached by content."""

    runtime = "aoti"

    def __init__(self, model: Ranker, example: Batch, cache: Path | None = None) -> None:
        from liverank.serve.export_aoti import cached_package, load_aoti

        model.check_batch(example)
        sample = {f: example[f] for f in required_fields(model)}
        self._tmp = None
        if cache is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="liverank-aoti-")
            cache = Path(self._tmp.name)
        # one request per call (the service's batches): user sequences encoded once
        self.program = load_aoti(cached_package(model, sample, cache, one_request=True))
        self.exponents = dict(model.config.score_exponents or {"ctr": 1.0})

    def predict_proba(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.program.predict_proba(batch)

    def score_from_proba(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        return ranking_score(probs, self.exponents)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over the tasks of two :meth:`predict_proba` outputs."""
    return max(float((a[t] - b[t]).abs().max()) for t in a)


def make_runner(
    model: Ranker, runtime: str, example: Batch | None, aoti_cache: Path | None = None
) -> ModelRunner:
    """The runner of ``model`` for ``runtime`` (module doc), checked on ``example``.

    Args:
        model: a loaded Ranker (put in eval mode).
        runtime: ``auto``, ``eager``, ``torchscript`` or ``aoti``.
        example: a request batch with every field the model reads (any number of rows);
            needed for the trace and the parity gate (None: only ``eager`` can be built,
            ``auto`` falls back to it).
        aoti_cache: where ``aoti`` keeps compiled packages (None: a temporary directory).

    Raises:
        ConfigError: unknown runtime; ``torchscript`` / ``aoti`` asked for a model that cannot
            be exported, without an example, whose compilation fails or whose program fails
            the parity gate.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{runtime}'; choose one of {list(RUNTIMES)}")
    model.eval()
    eager = EagerRunner(model)
    if runtime == "eager":
        return eager
    name = model.config.name
    blockers = export_blockers(model)
    if blockers or example is None:
        why = (
            "; ".join(f"'{k}': {r}" for k, r in blockers.items())
            if blockers
            else "no example batch to trace with"
        )
        if runtime in ("torchscript", "aoti"):
            raise ConfigError(f"model '{name}' cannot run on {_DISPLAY[runtime]}: {why}")
        log.info("model '%s' runs eagerly (not traceable: %s)", name, why)
        return eager
    traced: ModelRunner = (
        AotiRunner(model, example, aoti_cache)
        if runtime == "aoti"
        else TorchScriptRunner(model, example)
    )
    with torch.inference_mode():
        diff = max_abs_diff(traced.predict_proba(example), eager.predict_proba(example))
    if diff > PARITY_ATOL:
        msg = (
            f"model '{name}': the {_DISPLAY[traced.runtime]} program differs from eager by "
            f"{diff:.2e} "
            f"(> {PARITY_ATOL:g}) on the example batch"
        )
        if runtime != "auto":
            raise ConfigError(msg)
        log.warning("%s; serving it eagerly", msg)
        return eager
    log.info(
        "model '%s' runs on %s (parity %.1e on the example batch)",
        name,
        _DISPLAY[traced.runtime],
        diff,
    )
    return traced
