"""Export a trained :class:`~liverank.models.ranker.Ranker` to TorchScript for serving.

ARCHITECTURE section 7. The exported program maps a batch (a ``Dict[str, Tensor]`` holding the
fields the model's modules read, see ``features/spec.py``) to per-task probabilities ``[B, T]``;
the task order, the fields (dtype and rank), the feature map and the config live in a JSON
document that is written next to the archive (``<path>.json``, for people and registries) and
embedded in it (``extra/liverank_export.json``), so an archive that travelled alone still loads.

How (and why tracing, not scripting): the Ranker's Python (pydantic configs, dataclass outputs,
module registries) is not TorchScript-compatible, but its forward pass in eval mode is a fixed
graph of tensor ops, so :func:`torch.jit.trace` records it once, under ``no_grad`` (the fused
embedding gathers then take their plain ``F.embedding`` / ``embedding_bag`` path; the
deduplicating training path is never traced). The batch size is not baked in (traced ``size``
ops; the parity tests run batches of 1, 7 and 200). A small *scripted* guard wraps the trace:
it checks that every field is present with the right rank and dtype and raises an error naming
the field, so a non-Python consumer of the archive gets the same clear message.

Which modules can be exported: a FeatureModule is traceable when its eval-mode forward has no
data-dependent Python control flow (``int(t.max())``, ``if t.any()``) and no op TorchScript
cannot represent. The baseline modules are listed in :data:`TRACEABLE_MODULES`; a later paper
module opts in by setting a class attribute ``exportable = True`` once a parity test in
``tests/serve/test_export.py`` covers it, or states why not in :data:`NOT_EXPORTABLE`.

TorchScript: torch 2.13 marks ``torch.jit.trace`` / ``script`` / ``save`` / ``load`` /
``freeze`` deprecated (in favour of ``torch.export``) but they work; every call here runs inside
:func:`quiet_torchscript`, which silences exactly those deprecation warnings (a user of
``liverank serve`` cannot act on them; the move to ``torch.export`` is a later issue), and the
test suite turns any that escape into an error (``filterwarnings`` in ``pyproject.toml``). The baseline
models also export with ``torch.export`` (same outputs, see ``benchmarks/export_latency.py``),
whose Python runner is slower than TorchScript today; that is the path if TorchScript goes.

Example::

    path = export_torchscript(model, batch, "registry/v3/ranker.ts")
    exported = load_exported(path)
    proba = exported(batch)                 # [B, T] in exported.tasks order
    by_task = exported.predict_proba(batch)  # {task: [B]}
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, List  # noqa: UP035 (TorchScript needs typing.List)

import torch
from torch import nn

import liverank
from liverank.errors import ConfigError, DataValidationError
from liverank.models.base import Batch
from liverank.models.fusion import ranking_score
from liverank.models.layers import dedup
from liverank.models.ranker import Ranker

log = logging.getLogger(__name__)

#: the messages of torch 2.13's TorchScript deprecation warnings ("`torch.jit.save` is ...")
TORCHSCRIPT_DEPRECATION = r"`?torch\.jit\.\w+`? is deprecated"


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's deprecation warnings of ``torch.jit`` inside the block (module doc);
    every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", TORCHSCRIPT_DEPRECATION, DeprecationWarning)
        yield


EXPORT_FORMAT = "liverank.export.torchscript"
EXPORT_VERSION = 1
#: name of the metadata document inside the TorchScript archive
META_NAME = "liverank_export.json"

#: FeatureModules whose eval-mode forward traces to a batch-size-independent graph (tested)
TRACEABLE_MODULES: frozenset[str] = frozenset({"sparse_features", "seq_pool", "din"})
#: modules known not to trace correctly, and why
NOT_EXPORTABLE: dict[str, str] = {}


class RankerProbabilities(nn.Module):
    """``batch -> sigmoid(logits)`` stacked to ``[B, T]`` in ``model.tasks`` order (traced)."""

    def __init__(self, model: Ranker) -> None:
        super().__init__()
        self.model = model
        self.tasks = list(model.tasks)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(batch)
        logits = torch.stack([out.logits[t] for t in self.tasks], dim=1)  # [B, T]
        return torch.sigmoid(logits)


class _FieldGuard(nn.Module):
    """Scripted front of the archive: checks field presence, rank and dtype, then runs the trace.

    Lists are parallel: ``fields[i]`` must have ``ranks[i]`` dimensions and the dtype of the
    empty tensor ``protos[i]`` (named ``dtype_names[i]``), and every field the same leading
    size ``B``. (A TorchScript attribute cannot hold a list of dtypes, hence the prototypes.)
    """

    #: a real type for TorchScript, which cannot infer the type of an empty list attribute and
    #: cannot resolve the string annotations of ``from __future__ import annotations``
    __annotations__ = {"shared": List[str]}  # noqa: RUF012, UP006

    def __init__(
        self, core: nn.Module, example: dict[str, torch.Tensor], shared: list[str] | None = None
    ) -> None:
        super().__init__()
        self.core = core
        #: fields that must be equal in every row (a trace recorded for one request)
        self.shared = list(shared or [])
        self.fields = list(example)
        self.ranks = [t.dim() for t in example.values()]
        self.protos = [torch.empty(0, dtype=t.dtype) for t in example.values()]
        self.dtype_names = [str(t.dtype) for t in example.values()]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        size = -1
        inputs: dict[str, torch.Tensor] = {}
        for i in range(len(self.fields)):
            name = self.fields[i]
            if name not in batch:
                raise RuntimeError(
                    "exported ranker: the batch has no field '"
                    + name
                    + "'; required fields: "
                    + ", ".join(self.fields)
                )
            value = batch[name]
            if value.dim() != self.ranks[i]:
                raise RuntimeError(
                    "exported ranker: field '"
                    + name
                    + "' must have "
                    + str(self.ranks[i])
                    + " dimensions, got "
                    + str(value.dim())
                )
            if value.dtype != self.protos[i].dtype:
                raise RuntimeError(
                    "exported ranker: field '" + name + "' must be " + self.dtype_names[i]
                )
            if size < 0:
                size = value.shape[0]
            elif value.shape[0] != size:
                raise RuntimeError(
                    "exported ranker: field '" + name + "' has a different batch size"
                )
            inputs[name] = value
        for name in self.shared:
            value = inputs[name]
            if value.shape[0] > 1 and value.stride(0) != 0 and not bool((value == value[:1]).all()):
                raise RuntimeError(
                    "exported ranker: field '"
                    + name
                    + "' differs between rows, but this program was exported for one request "
                    + "per batch"
                )
        return self.core(inputs)


def export_blockers(model: Ranker) -> dict[str, str]:
    """Module key -> why that module cannot be exported (empty: the model can be exported)."""
    blockers: dict[str, str] = {}
    for key, module in model.feature_modules.items():
        name = getattr(module, "name", type(module).__name__)
        if getattr(type(module), "exportable", False) or name in TRACEABLE_MODULES:
            hook = getattr(module, "export_blocker", None)  # an instance's own state
            if callable(hook) and (why := hook()):
                blockers[key] = why
            continue
        blockers[key] = NOT_EXPORTABLE.get(
            name,
            f"module '{name}' has not been checked for tracing; set `exportable = True` on "
            f"its class once a parity test in tests/serve/test_export.py covers it",
        )
    return blockers


def check_exportable(model: Ranker) -> None:
    """Raise :class:`ConfigError` naming every module that cannot be exported, and why."""
    blockers = export_blockers(model)
    if blockers:
        why = "; ".join(f"'{k}': {reason}" for k, reason in blockers.items())
        raise ConfigError(f"model '{model.config.name}' is not exportable yet: {why}")


def required_fields(model: Ranker) -> list[str]:
    """Sorted batch fields the model's modules read (the inputs of the exported program)."""
    return sorted({f for fields in model.required_fields.values() for f in fields})


def shared_fields(model: Ranker) -> list[str]:
    """Sorted fields that ``model``'s modules encode once per request (their ``shared_fields``:
    the user's behaviour sequences, equal in every row of one request). A program recorded for
    one request (``one_request=True`` in the exports, :func:`liverank.models.layers.dedup.
    one_request`) is valid only on batches where each of them is equal in every row."""
    return sorted(
        {f for m in model.feature_modules.values() for f in getattr(m, "shared_fields", ())}
    )


def check_one_request(fields: Sequence[str], batch: Batch) -> None:
    """Raise :class:`DataValidationError` naming the first of ``fields`` whose rows differ: a
    program recorded for one request would score such a batch with row 0's sequences."""
    for name in fields:
        value = batch[name]
        if value.shape[0] < 2 or value.stride(0) == 0:  # one row, or one row broadcast
            continue
        if not bool((value == value[:1]).all()):
            raise DataValidationError(
                "differs between the rows of the batch, but this program was exported for one "
                "request per batch (one user: its sequences are encoded once, from row 0); "
                "score each request in its own call, or export without one_request",
                column=name,
            )


def export_metadata(
    model: Ranker,
    example: dict[str, torch.Tensor],
    fmt: str = EXPORT_FORMAT,
    one_request: bool = False,
) -> dict[str, Any]:
    """The metadata document of an export (``fmt`` names the container: TorchScript, ONNX;
    ``one_request``: the program was recorded for one request per batch, and
    ``one_request_fields`` lists the fields its batches must hold equal in every row)."""
    return {
        "format": fmt,
        "version": EXPORT_VERSION,
        "liverank_version": liverank.__version__,
        "torch_version": torch.__version__,
        "model_name": model.config.name,
        "tasks": list(model.tasks),
        "output": "probabilities [B, T], columns in 'tasks' order",
        "score_exponents": dict(model.config.score_exponents or {"ctr": 1.0}),
        "fields": {
            name: {"dtype": str(t.dtype), "shape": ["B", *t.shape[1:]]}
            for name, t in example.items()
        },
        "config": model.config.model_dump(mode="json"),
        "feature_map": model.feature_map.model_dump(mode="json"),
        "one_request_fields": shared_fields(model) if one_request else [],
    }


_metadata = export_metadata  # the pre-ONNX private name


def trace_ranker(
    model: Ranker, example: dict[str, torch.Tensor], one_request: bool = False
) -> torch.jit.ScriptModule:
    """The scripted program ``batch -> [B, T]`` probabilities of ``model`` (not written anywhere).

    ``example`` holds exactly the fields of :func:`required_fields` (checked by the caller);
    the result is what :func:`export_torchscript` saves, and what the service runs in memory
    with ``--runtime torchscript`` (:mod:`liverank.serve.runtime`). The model's train/eval
    mode is restored. ``one_request``: record it for batches that are each one request (the
    sequences of :func:`shared_fields` are encoded once per batch, from row 0; the caller
    checks batches with :func:`check_one_request`).

    Raises:
        ConfigError: a module cannot be exported (:func:`check_exportable`).
    """
    check_exportable(model)
    was_training = model.training
    model.eval()
    scope = dedup.one_request() if one_request else contextlib.nullcontext()
    try:
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught, scope:
            warnings.simplefilter("always")
            # check_trace=False: the built-in re-trace check reports the embedding lookups'
            # cached per-table constants (created on the first trace, reused on the second)
            # as "differing"; parity against eager on fresh batches is checked by the tests.
            core = torch.jit.trace(
                RankerProbabilities(model), (example,), strict=False, check_trace=False
            )
    finally:
        model.train(was_training)
    for w in caught:
        # TracerWarnings name Python values frozen into the graph (e.g. a width check); the
        # parity tests are what proves the trace is independent of them.
        log.debug("trace of %s: %s", model.config.name, w.message)
    with quiet_torchscript():  # deprecated in torch 2.13 but working (module doc)
        return torch.jit.script(
            _FieldGuard(core, example, shared_fields(model) if one_request else None)
        )


def export_torchscript(
    model: Ranker, example_batch: Batch, path: str | Path, one_request: bool = False
) -> Path:
    """Trace ``model`` (eval mode, no grad) into a TorchScript archive at ``path``.

    Args:
        model: a trained Ranker whose modules are all exportable (:func:`export_blockers`).
        example_batch: a batch with every field of :func:`required_fields` (other fields are
            ignored); its batch size does not matter (a few rows suffice) but its dtypes and
            ranks become the contract of the archive.
        path: the archive to write; the metadata goes to ``<path>.json`` too.
        one_request: record the program for batches that are each one request (faster: the
            user's sequences are encoded once per batch); the loaded archive then refuses a
            batch whose :func:`shared_fields` differ between rows.

    Returns:
        ``path``. The model's train/eval mode is restored.

    Raises:
        ConfigError: a module cannot be exported (the message says which and why), or the
            example batch lacks a field.
    """
    check_exportable(model)
    fields = required_fields(model)
    model.check_batch(example_batch)
    example = {f: example_batch[f] for f in fields}
    meta = export_metadata(model, example, one_request=one_request)
    program = trace_ranker(model, example, one_request=one_request)

    text = json.dumps(meta, indent=2, sort_keys=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with quiet_torchscript():
        torch.jit.save(program, str(tmp), _extra_files={META_NAME: text})
    tmp.replace(path)  # atomic, as Ranker.save: a registry watcher never sees half an archive
    path.with_name(path.name + ".json").write_text(text + "\n")
    log.info(
        "exported %s (%d fields, tasks %s) to %s", model.config.name, len(fields), model.tasks, path
    )
    return path


def check_batch_fields(fields: Mapping[str, Mapping[str, Any]], batch: Batch) -> None:
    """Raise :class:`DataValidationError` naming the first missing or malformed field.

    ``fields`` is the ``"fields"`` entry of an export's metadata (field -> ``{"dtype": ...,
    "shape": ["B", ...]}``); every field must be a tensor of that dtype and rank, all with the
    same number of rows. Shared by every exported runtime (TorchScript, ONNX).
    """
    size: int | None = None
    for name, spec in fields.items():
        if name not in batch:
            raise DataValidationError(
                f"the exported model needs batch field '{name}', which the batch does not "
                f"have (required: {', '.join(fields)})",
                column=name,
            )
        value = batch[name]
        if not isinstance(value, torch.Tensor):
            raise DataValidationError(
                f"must be a torch.Tensor, got {type(value).__name__}", column=name
            )
        if value.dim() != len(spec["shape"]) or str(value.dtype) != spec["dtype"]:
            raise DataValidationError(
                f"expected {spec['dtype']} of shape {spec['shape']}, got {value.dtype} of "
                f"shape {list(value.shape)}",
                column=name,
            )
        if size is None:
            size = value.shape[0]
        elif value.shape[0] != size:
            raise DataValidationError(
                f"has {value.shape[0]} rows but the other fields have {size}", column=name
            )


class ExportedModel:
    """What every loaded export offers (TorchScript here, ONNX in ``export_onnx.py``): the
    metadata, batch checks, ``{task: [B]}`` probabilities and the fused score; subclasses run
    the program in :meth:`__call__`.

    Attributes:
        tasks: column order of the ``[B, T]`` output.
        fields: field -> ``{"dtype": ..., "shape": ["B", ...]}``.
        meta: the whole metadata document (config, feature map, versions).
    """

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.tasks: list[str] = list(meta["tasks"])
        self.fields: dict[str, dict[str, Any]] = dict(meta["fields"])
        self.score_exponents: dict[str, float] = dict(meta["score_exponents"])
        #: fields every batch must hold equal in all rows (a program exported for one request;
        #: empty otherwise, and in exports written before the option)
        self.one_request_fields: list[str] = list(meta.get("one_request_fields", []))

    def check_batch(self, batch: Batch) -> None:
        """Raise :class:`DataValidationError` naming the first missing or malformed field (or,
        for a program exported for one request, the first shared field whose rows differ)."""
        check_batch_fields(self.fields, batch)
        check_one_request(self.one_request_fields, batch)

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Probabilities ``[B, T]`` (columns in :attr:`tasks` order)."""
        raise NotImplementedError

    def predict_proba(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{task: [B]}``, as :meth:`Ranker.predict_proba`."""
        proba = self(batch)  # [B, T]
        return {t: proba[:, i] for i, t in enumerate(self.tasks)}

    def ranking_score(self, batch: Batch) -> torch.Tensor:
        """The fused score ``[B]`` with the exponents recorded at export (``models/fusion.py``)."""
        return ranking_score(self.predict_proba(batch), self.score_exponents)


class ExportedRanker(ExportedModel):
    """A loaded TorchScript export: validates batches in Python, then runs the program."""

    def __init__(self, program: torch.jit.ScriptModule, meta: dict[str, Any]) -> None:
        super().__init__(meta)
        self.program = program

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        """Probabilities ``[B, T]`` (columns in :attr:`tasks` order)."""
        self.check_batch(batch)
        return self.program({name: batch[name] for name in self.fields})


def parse_export_metadata(path: Path, text: str, fmt: str, container: str) -> dict[str, Any]:
    """The metadata document ``text`` read from the export at ``path``, checked to be a liverank
    ranker export of format ``fmt`` and a supported version (``container`` names the file kind
    in the error: "a TorchScript archive", "an ONNX model").

    Raises:
        ConfigError: not JSON, not a liverank export of ``fmt``, or an unsupported version.
    """
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, Mapping) or meta.get("format") != fmt:
        raise ConfigError(f"{path}: {container}, but not a liverank ranker export")
    if meta.get("version") != EXPORT_VERSION:
        raise ConfigError(
            f"{path}: export version {meta.get('version')} is not supported "
            f"(this liverank reads version {EXPORT_VERSION}); export the checkpoint again"
        )
    return dict(meta)


def load_exported(
    path: str | Path, map_location: str = "cpu", freeze: bool = True
) -> ExportedRanker:
    """Load an archive written by :func:`export_torchscript` (no liverank model code runs).

    ``freeze`` runs ``torch.jit.freeze`` on the program (weights become constants the graph
    optimiser can fold): a few percent lower latency at 200 candidates (within noise) in
    ``benchmarks/export_latency.py``, same outputs.

    Raises:
        ConfigError: no such file, not a TorchScript archive, or not a liverank export of a
            supported version.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such exported model")
    extra = {META_NAME: ""}
    try:
        with quiet_torchscript():
            program = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    except Exception as exc:  # any load failure means "not an archive we can run"
        raise ConfigError(f"{path}: not a readable TorchScript archive ({exc})") from exc
    meta = parse_export_metadata(path, extra[META_NAME], EXPORT_FORMAT, "a TorchScript archive")
    program.eval()
    if freeze:
        with quiet_torchscript():
            program = torch.jit.freeze(program)
    return ExportedRanker(program, meta)
