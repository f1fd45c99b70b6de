"""Export a trained :class:`~liverank.models.ranker.Ranker` with ``torch.export`` and compile it
ahead of time with AOTInductor (issue #20): the serving runtime that replaces TorchScript.

Same contract as the TorchScript and ONNX exports (:mod:`liverank.serve.export`,
:mod:`liverank.serve.export_onnx`): the program maps the fields of
:func:`~liverank.serve.export.required_fields` (dynamic leading axis ``B``) to probabilities
``[B, T]`` in ``model.tasks`` order, and which modules can be exported is decided by the same
:func:`~liverank.serve.export.export_blockers`.

How: ``torch.export.export`` captures :class:`~liverank.serve.export.RankerProbabilities`
(non-strict, batch axis declared with a ``torch.export.Dim``); ``torch._inductor.
aoti_compile_and_package`` turns the program into C++ kernels built with the machine's C++
compiler (tens of seconds per model on 2 cores) and packs them with the weights in one ``.pt2``
file; ``aoti_load_package`` runs it with no Python in the forward pass. The metadata document
(:func:`~liverank.serve.export.export_metadata`, ``format`` = :data:`AOTI_FORMAT`) is written
next to the package as ``<path>.json`` and is required to load it.

Why this runtime: ``benchmarks/export_latency.py`` (200 candidates, quiet 2-core machine)
measured it the fastest of eager, TorchScript, ``torch.export``'s Python runner and onnxruntime
(docs/serving.md); ``torch.jit`` is deprecated upstream.

Example::

    path = export_aoti(model, batch, "registry/v3/ranker.pt2")
    ranker = load_aoti(path)
    proba = ranker(batch)                    # [B, T] in ranker.tasks order
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from liverank.errors import ConfigError
from liverank.models.base import Batch
from liverank.models.layers import dedup
from liverank.models.ranker import Ranker
from liverank.serve.export import (
    ExportedModel,
    RankerProbabilities,
    check_exportable,
    export_metadata,
    parse_export_metadata,
    required_fields,
)

log = logging.getLogger(__name__)

#: ``format`` of the metadata document of an AOTInductor export
AOTI_FORMAT = "liverank.export.aoti"


def capture(
    model: Ranker, example: dict[str, torch.Tensor], one_request: bool = False
) -> torch.export.ExportedProgram:
    """``torch.export`` program of ``model``'s probabilities over the fields of ``example``,
    with a dynamic batch axis (eval mode, no grad; the model's train/eval mode is restored);
    ``one_request``: recorded for batches that are each one request (the user's sequences,
    :func:`~liverank.serve.export.shared_fields`, encoded once per batch from row 0).

    Raises:
        ConfigError: ``torch.export`` failed (its last message line is in the error).
    """
    from torch.export import Dim

    batch_dim = Dim("B", min=1, max=1 << 20)
    shapes = ({name: {0: batch_dim} for name in example},)
    was_training = model.training
    model.eval()
    try:
        scope = dedup.one_request() if one_request else contextlib.nullcontext()
        with torch.no_grad(), warnings.catch_warnings(), scope:
            warnings.simplefilter("ignore")  # torch.export's FutureWarnings on its own internals
            return torch.export.export(
                RankerProbabilities(model), (example,), dynamic_shapes=shapes, strict=False
            )
    except Exception as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise ConfigError(
            f"model '{model.config.name}': torch.export failed ({type(exc).__name__}: {last})"
        ) from exc
    finally:
        model.train(was_training)


def export_aoti(
    model: Ranker, example_batch: Batch, path: str | Path, one_request: bool = False
) -> Path:
    """Compile ``model`` to an AOTInductor package at ``path`` (a ``.pt2`` file).

    Args:
        model: a trained Ranker whose modules are all exportable.
        example_batch: a batch with every field of ``required_fields(model)``; its dtypes and
            ranks become the contract, its batch size does not matter.
        path: the package to write (atomically; must end in ``.pt2``); the metadata goes to
            ``<path>.json``.
        one_request: compile for batches that are each one request (the service's case:
            the user's sequences are encoded once per batch, docs/serving.md); the loaded
            package then refuses a batch whose :func:`~liverank.serve.export.shared_fields`
            differ between rows.

    Raises:
        ConfigError: a module cannot be exported, the example lacks a field, the path does not
            end in ``.pt2``, or the capture / compilation failed.
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ConfigError(f"{path}: an AOTInductor package must be named *.pt2")
    check_exportable(model)
    model.check_batch(example_batch)
    example = {f: example_batch[f] for f in required_fields(model)}
    meta = export_metadata(model, example, fmt=AOTI_FORMAT, one_request=one_request)
    program = capture(model, example, one_request=one_request)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
    except Exception as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise ConfigError(
            f"model '{model.config.name}': AOTInductor compilation failed "
            f"({type(exc).__name__}: {last}); it needs a C++ compiler (g++)"
        ) from exc
    tmp.replace(path)  # atomic: a registry watcher never sees half a package
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    log.info(
        "compiled %s with AOTInductor in %.0f s at %s",
        model.config.name,
        time.perf_counter() - start,
        path,
    )
    return path


class AotiRanker(ExportedModel):
    """A loaded AOTInductor package: validates batches in Python, then runs the compiled code.

    Same API as :class:`~liverank.serve.export.ExportedRanker`.
    """

    def __init__(self, runner: Any, meta: dict[str, Any]) -> None:
        super().__init__(meta)
        self.runner = runner

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        """Probabilities ``[B, T]`` (columns in :attr:`tasks` order)."""
        self.check_batch(batch)
        return self.runner({name: batch[name] for name in self.fields})


def load_aoti(path: str | Path) -> AotiRanker:
    """Load a package written by :func:`export_aoti` (no liverank model code runs).

    Raises:
        ConfigError: no such file, no metadata next to it, not a liverank export of a supported
            version, or a file AOTInductor cannot load.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.exists():
        raise ConfigError(f"{path}: no such exported model")
    if not sidecar.exists():
        raise ConfigError(f"{path}: its metadata {sidecar.name} is missing (export it again)")
    meta = parse_export_metadata(path, sidecar.read_text(), AOTI_FORMAT, "an AOTInductor package")
    try:
        runner = torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        raise ConfigError(f"{path}: not a loadable AOTInductor package ({exc})") from exc
    return AotiRanker(runner, meta)


def package_path(
    model: Ranker, example: Batch, cache: str | Path, one_request: bool = False
) -> Path:
    """Where the compile cache ``cache`` keeps ``model``'s package for batches shaped like
    ``example`` (the fields of :func:`required_fields` are read), compiled for one request per
    batch or not: ``<name>-<package_key>.pt2``."""
    fields = {f: example[f] for f in required_fields(model)}
    key = package_key(model, fields, one_request)
    return Path(cache) / f"{model.config.name}-{key}.pt2"


def precompile(model: Ranker, cache: str | Path) -> Path:
    """Compile ``model``'s package into the compile cache ``cache`` now, off the serving cores
    (``liverank train --registry R --compile-aoti`` does it into ``R/.aoti`` before the version is
    published). The example is a synthetic batch of the model's feature map: the service's
    request batches have the same field dtypes and ranks, so its
    :class:`~liverank.serve.runtime.AotiRunner` finds the package under the same key and loads
    it instead of compiling (``tests/serve/test_aoti_publish.py``). Compiled for one request
    per batch, as the service runs it (:func:`export_aoti`). Returns the package path; an
    existing package is kept.

    Raises:
        ConfigError: the model cannot be exported or the compilation failed.
    """
    from liverank.models.synthetic import synthetic_batches

    check_exportable(model)
    model.eval()
    example = synthetic_batches(model.feature_map, 1, 8, seed=0)[0]
    return cached_package(model, example, cache, one_request=True)


def cached_package(
    model: Ranker, example: Batch, cache: str | Path, one_request: bool = False
) -> Path:
    """``model``'s package in the compile cache ``cache`` (:func:`package_path`), compiled by
    :func:`export_aoti` only when the cache does not hold it (package and metadata) yet."""
    path = package_path(model, example, cache, one_request)
    if path.exists() and path.with_name(path.name + ".json").exists():
        log.info("model '%s': AOTInductor package from the cache %s", model.config.name, path)
        return path
    return export_aoti(model, example, path, one_request=one_request)


def package_key(model: Ranker, example: dict[str, torch.Tensor], one_request: bool = False) -> str:
    """Content hash (16 hex digits) of what a compiled package depends on: torch's version, the
    model's configuration, its weights, the example's field dtypes and ranks, and whether it
    is compiled for one request per batch. Two models with the same key compile to
    interchangeable packages (the service's compile cache)."""
    digest = hashlib.sha256()
    meta = export_metadata(model, example, fmt=AOTI_FORMAT, one_request=one_request)
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
