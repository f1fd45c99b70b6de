"""Export a trained :class:`~liverank.models.ranker.Ranker` to ONNX and run it with onnxruntime.

ARCHITECTURE section 7; the ONNX sibling of :mod:`liverank.serve.export` (TorchScript), with the
same contract: the graph maps the fields of :func:`~liverank.serve.export.required_fields`
(ONNX inputs of the same names, each with a dynamic leading axis ``B``) to one output
``proba`` ``[B, T]``, columns in ``model.tasks`` order. The metadata document is the
TorchScript one (:func:`~liverank.serve.export.export_metadata`, ``format`` =
:data:`ONNX_FORMAT`): stored in the model's ``metadata_props`` under
:data:`~liverank.serve.export.META_NAME`, so a file that travelled alone still loads, and
written to ``<path>.json`` for people and registries. Which modules can be exported is decided
by the same :func:`~liverank.serve.export.export_blockers`, plus :data:`ONNX_BLOCKERS` (modules
that TorchScript and AOTInductor take but the ONNX converter cannot: ``moment_cross``).

Which exporter, and why: torch 2.13's ``torch.onnx.export(dynamo=False)`` (the legacy
TorchScript-based exporter, ``dynamic_axes``) has no ONNX symbolic for ``embedding_bag`` with
``padding_idx`` and fails on our lookups. ``dynamo=True`` (the default) translates a
``torch.export`` program, batch axis declared in ``dynamic_shapes`` (a ``torch.export.Dim``);
we capture that program ourselves (non-strict, as ``benchmarks/export_latency.py``) to swap
``embedding_bag``, which the exporter turns into a per-bag ONNX ``Loop`` (~150x slower in
onnxruntime), for a vectorised gather + scatter-add. The dict-taking Ranker sits behind a
positional wrapper (a dict argument would be read as keyword arguments) whose inputs are named
after the fields. The exporter's log records, warnings and prints go to ``logging.debug``.

Example::

    path = export_onnx(model, batch, "registry/v3/ranker.onnx")
    ranker = load_onnx(path, threads=1)
    proba = ranker(batch)                    # [B, T] torch.Tensor in ranker.tasks order
    score = ranker.ranking_score(batch)      # [B]
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from liverank.errors import ConfigError
from liverank.models.base import Batch
from liverank.models.ranker import Ranker
from liverank.serve.export import (
    META_NAME,
    ExportedModel,
    RankerProbabilities,
    check_exportable,
    export_metadata,
    parse_export_metadata,
    required_fields,
)

log = logging.getLogger(__name__)

ONNX_FORMAT = "liverank.export.onnx"
#: name of the single output of the graph
OUTPUT_NAME = "proba"


class _PositionalRanker(nn.Module):
    """``(*fields) -> [B, T]`` probabilities: the dict-taking Ranker behind positional inputs."""

    def __init__(self, model: Ranker, fields: list[str]) -> None:
        super().__init__()
        self.core = RankerProbabilities(model)
        self.fields = list(fields)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.core(dict(zip(self.fields, tensors, strict=True)))  # [B, T]


def _embedding_bag_as_scatter(
    weight: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    scale_grad_by_freq: bool = False,
    mode: int = 0,
    sparse: bool = False,
    per_sample_weights: torch.Tensor | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``aten.embedding_bag`` (sum / mean) as gather + ``index_add`` (no ONNX ``Loop``).

    Only the first output (the pooled bags) is used by the models; the others are placeholders.
    """
    if mode not in (0, 1):
        raise NotImplementedError("embedding_bag mode 'max' has no ONNX decomposition here")
    n_bags = offsets.shape[0] - 1 if include_last_offset else offsets.shape[0]
    rows = weight.index_select(0, indices)  # [N, D]
    keep = torch.ones_like(indices, dtype=weight.dtype)  # [N]
    if padding_idx is not None and padding_idx >= 0:
        keep = (indices != padding_idx).to(weight.dtype)
    scale = keep if per_sample_weights is None else keep * per_sample_weights
    # bag of each index: number of bag starts at or before it, minus one (empty bags skip ids)
    starts = offsets[1:n_bags]
    bag_of = torch.zeros_like(indices).index_add(0, starts, torch.ones_like(starts)).cumsum(0)
    out = weight.new_zeros(n_bags, weight.shape[1]).index_add(
        0, bag_of, rows * scale.unsqueeze(1)
    )  # [n_bags, D]
    count = weight.new_zeros(n_bags).index_add(0, bag_of, keep)  # [n_bags]
    if mode == 1:
        out = out / count.clamp(min=1.0).unsqueeze(1)
    placeholder = torch.zeros_like(offsets[:n_bags])
    return out, bag_of, placeholder, placeholder


#: ATen ops replaced before the ONNX translation (see :func:`_embedding_bag_as_scatter`)
_DECOMPOSITIONS = {
    torch.ops.aten.embedding_bag.default: _embedding_bag_as_scatter,
    torch.ops.aten.embedding_bag.padding_idx: _embedding_bag_as_scatter,
}


#: loggers of the exporter stack whose records are relayed to ``log.debug`` during an export
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnx_ir", "onnxscript")


class _Relay(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("onnx export: %s: %s", record.name, record.getMessage())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[io.StringIO]:
    """Route the exporter's log records (to ``log.debug``), warnings and prints away."""
    relay = _Relay()
    saved = []
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers, logger.propagate = [relay], False
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(chatter):
            warnings.simplefilter("always")
            yield chatter
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
        for line in chatter.getvalue().splitlines():
            log.debug("onnx export: %s", line)
        for w in caught:
            log.debug("onnx export: %s", w.message)


def _to_onnx(model: Ranker, example: dict[str, torch.Tensor]) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (eval mode, no grad; train/eval mode restored)."""
    from torch.export import Dim

    fields = list(example)
    batch_dim = Dim("B", min=1, max=1 << 20)
    dynamic_shapes = {"tensors": tuple({0: batch_dim} for _ in fields)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet_exporter():
            captured = torch.export.export(
                _PositionalRanker(model, fields),
                tuple(example.values()),
                dynamic_shapes=dynamic_shapes,
                strict=False,
            ).run_decompositions(_DECOMPOSITIONS)
            program = torch.onnx.export(
                captured,
                input_names=fields,
                output_names=[OUTPUT_NAME],
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise ConfigError(
            f"model '{model.config.name}': ONNX export failed ({type(exc).__name__}: {last})"
        ) from exc
    finally:
        model.train(was_training)
    return program.model_proto


#: modules that export to TorchScript and AOTInductor but not to ONNX, and why
ONNX_BLOCKERS: dict[str, str] = {
    "moment_cross": (
        "its GSU's top-k breaks ties on the scores' float32 bit order, computed in a recorded "
        "graph with torch.frexp, which the ONNX converter of torch 2.13 cannot translate; serve "
        "it with --runtime torchscript or aoti"
    ),
}


def export_onnx(model: Ranker, example_batch: Batch, path: str | Path) -> Path:
    """Export ``model`` (eval mode, no grad) to an ONNX file at ``path``.

    Args:
        model: a trained Ranker whose modules are all exportable
            (:func:`~liverank.serve.export.export_blockers`).
        example_batch: a batch with every field of ``required_fields(model)`` (other fields are
            ignored); its batch size does not matter, its dtypes and ranks become the contract.
        path: the file to write (atomically); the metadata goes to ``<path>.json`` too.

    Returns:
        ``path``. The model's train/eval mode is restored.

    Raises:
        ConfigError: a module cannot be exported (which and why), the example batch lacks a
            field, or the exporter failed.
    """
    import onnx

    check_exportable(model)
    for key, module in model.feature_modules.items():
        if (why := ONNX_BLOCKERS.get(getattr(module, "name", ""))) is not None:
            raise ConfigError(
                f"model '{model.config.name}' cannot be exported to ONNX: '{key}': {why}"
            )
    fields = required_fields(model)
    model.check_batch(example_batch)
    example = {f: example_batch[f] for f in fields}
    meta = export_metadata(model, example, fmt=ONNX_FORMAT)
    meta["onnx_version"] = onnx.__version__
    proto = _to_onnx(model, example)
    text = json.dumps(meta, indent=2, sort_keys=True)
    del proto.metadata_props[:]
    proto.metadata_props.add(key=META_NAME, value=text)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(proto, str(tmp))
    tmp.replace(path)  # atomic: a registry watcher never sees half a model
    path.with_name(path.name + ".json").write_text(text + "\n")
    log.info("exported %s to ONNX (tasks %s) at %s", model.config.name, model.tasks, path)
    return path


class OnnxRanker(ExportedModel):
    """A loaded ONNX export: validates batches in Python, then runs the onnxruntime session.

    Same API as :class:`~liverank.serve.export.ExportedRanker`.

    Attributes:
        tasks: column order of the ``[B, T]`` output.
        fields: field -> ``{"dtype": ..., "shape": ["B", ...]}``.
        meta: the whole metadata document (config, feature map, versions).
        session: the ``onnxruntime.InferenceSession``.
    """

    def __init__(self, session: Any, meta: dict[str, Any]) -> None:
        super().__init__(meta)
        self.session = session

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Probabilities ``[B, T]`` (columns in :attr:`tasks` order), a CPU float tensor."""
        self.check_batch(batch)
        feeds = {
            name: np.ascontiguousarray(batch[name].detach().cpu().numpy()) for name in self.fields
        }
        (proba,) = self.session.run([OUTPUT_NAME], feeds)  # [B, T] float32
        return torch.from_numpy(proba)


def _has_scatter_reduction(path: Path) -> bool:
    """Whether the graph has a ScatterND / ScatterElements with a reduction (unreadable: no)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # reported by the session load that follows
        return False
    for node in graph.node:
        if node.op_type in ("ScatterND", "ScatterElements"):
            for attr in node.attribute:
                if attr.name == "reduction" and attr.s not in (b"", b"none"):
                    return True
    return False


def load_onnx(path: str | Path, threads: int = 1) -> OnnxRanker:
    """Load a file written by :func:`export_onnx` into an onnxruntime session (CPU).

    Args:
        path: the ``.onnx`` file (the metadata is read from inside it, not the sidecar).
        threads: ``intra_op_num_threads`` of the session (``inter_op`` is 1: the graph is one
            chain of small ops); graph optimisations are all enabled. A graph with a
            scatter-add (the decomposed ``embedding_bag``) runs on **one** thread whatever is
            asked: onnxruntime's multi-threaded ``ScatterND(reduction="add")`` races on
            duplicate indices (onnxruntime issues #18048, #23396); we measured outputs off by up
            to 1.8e-4 in 1 of a few hundred runs of the mlp at 2 threads.

    Raises:
        ConfigError: no such file, not an ONNX model onnxruntime can load, or not a liverank
            ranker export of a supported version.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such exported model")
    if threads > 1 and _has_scatter_reduction(path):
        log.warning(
            "%s: running on 1 thread, not %d: multi-threaded ScatterND(add) in onnxruntime "
            "is nondeterministic on duplicate indices",
            path,
            threads,
        )
        threads = 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; they are raised below anyway
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # any load failure means "not a model we can run"
        raise ConfigError(f"{path}: not a readable ONNX model ({exc})") from exc
    text = session.get_modelmeta().custom_metadata_map.get(META_NAME, "")
    meta = parse_export_metadata(path, text, ONNX_FORMAT, "an ONNX model")
    inputs = {i.name for i in session.get_inputs()}
    if inputs != set(meta["fields"]):
        raise ConfigError(
            f"{path}: graph inputs {sorted(inputs)} do not match the metadata fields "
            f"{sorted(meta['fields'])}"
        )
    return OnnxRanker(session, dict(meta))
