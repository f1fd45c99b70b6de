"""Inference latency of exported Rankers vs eager PyTorch: 200 candidates, 1 and 2 threads.

One ranking request scores its candidate rooms in one batch, so a batch of 200 synthetic
samples (``liverank.models.synthetic``, untrained weights: latency does not depend on them) is
scored repeatedly; the per-call wall time gives p50 / p99. Variants, all measured in the same
run under ``torch.no_grad``:

* ``eager``: ``Ranker(batch)`` + sigmoid, the training code path in eval mode (the peer);
* ``torchscript``: :func:`liverank.serve.export.load_exported` (Python field checks + the
  scripted guard + the traced graph, frozen: weights inlined as constants), what a service
  would call;
* ``torchscript_unfrozen``: the same with ``load_exported(..., freeze=False)``;
* ``torch_export``: ``torch.export.export`` with a dynamic batch dimension, run through
  ``ExportedProgram.module()`` (a peer only; the library exports TorchScript);
* ``aoti``: the same ``torch.export`` program compiled ahead of time by AOTInductor
  (``torch._inductor.aoti_compile_and_package``: C++ kernels built with the machine's compiler,
  minutes per model) and loaded with ``aoti_load_package``; ``--no-aoti`` skips it;
* ``onnxruntime``: :func:`liverank.serve.export_onnx.load_onnx` (Python field checks + an
  onnxruntime session with ``intra_op_num_threads`` = the thread count of the row, inter-op 1,
  all graph optimisations); skipped with a log line if onnxruntime is not installed.

With ``--request`` the batch is one ranking request (:func:`liverank.models.synthetic.as_request`:
the user's fields equal in every row, as the service sends them) and two more variants are
timed: ``torchscript_request`` and ``aoti_request``, the programs recorded for one request per
batch (``one_request=True``: the user's sequences encoded once, from row 0, inside the compiled
graph). ``eager`` then takes its per-request dedup path (DIN, FARM).

Variants are interleaved in rounds (``--rounds``) so that drift of a shared CPU hits them alike.
Multi-threaded numbers on a shared box are noisy; ``OMP_WAIT_POLICY`` is recorded in the JSON.

Usage::

    python benchmarks/export_latency.py                 # ple and mlp, 1 and 2 threads
    python benchmarks/export_latency.py --configs ple --runs 50
    python benchmarks/export_latency.py --configs ple farm --threads 1 --request \
        --out benchmarks/results/export_latency_request.json
    python benchmarks/export_latency.py --configs moment_cross --long-len 1000 --threads 1 \
        --request --out benchmarks/results/export_latency_moment_cross.json

Writes JSON (``--out``, default ``benchmarks/results/export_latency.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from liverank.errors import ConfigError
from liverank.models.ranker import Ranker
from liverank.models.synthetic import as_request, synthetic_batches, synthetic_feature_map
from liverank.models.zoo import get_config
from liverank.serve.export import (
    export_torchscript,
    load_exported,
    required_fields,
)
from liverank.serve.export_aoti import capture

log = logging.getLogger("export_latency")
#: variants called with the required fields only (the exported program's exact inputs)
ON_FIELDS = ("torch_export", "aoti", "aoti_request")
Batch = dict[str, torch.Tensor]


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # not installed
        return None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["ple", "mlp"], help="zoo names")
    p.add_argument("--candidates", type=int, default=200, help="batch size of one request")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--runs", type=int, default=200, help="timed calls per variant")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds the runs split into")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--no-aoti", action="store_true", help="skip the AOTInductor variant")
    p.add_argument(
        "--long-len",
        type=int,
        default=0,
        help="long histories of the synthetic batches (moment_cross needs them, e.g. 1000)",
    )
    p.add_argument(
        "--request",
        action="store_true",
        help="score one request per batch and time the one-request programs too",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/export_latency.json"))
    return p.parse_args()


def _aoti(program: torch.export.ExportedProgram, path: Path) -> Callable[[Batch], torch.Tensor]:
    start = time.perf_counter()
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    log.info("AOTInductor compiled %s in %.0f s", path.name, time.perf_counter() - start)
    return torch._inductor.aoti_load_package(package)


def build_variants(
    name: str,
    candidates: int,
    workdir: Path,
    threads: list[int],
    aoti: bool = True,
    request: bool = False,
    long_len: int = 0,
) -> tuple[dict, Batch, Batch]:
    """Callables of every variant, the full batch and its required-field subset.

    ``onnxruntime`` sessions fix their thread count at creation, so there is one per entry of
    ``threads`` (``onnxruntime@<n>``); :func:`measure` times the one matching the row.
    """
    fm = synthetic_feature_map(long_len=long_len)
    torch.manual_seed(0)
    model = Ranker(fm, get_config(name)).eval()
    batch = synthetic_batches(fm, 1, candidates, seed=1)[0]
    if request:
        batch = as_request(batch)
        # long-history windows as the service gives them: one row broadcast to the candidates
        batch = {k: v[:1].expand_as(v) if k.startswith("long_") else v for k, v in batch.items()}
    fields = {k: batch[k] for k in required_fields(model)}
    path = export_torchscript(model, batch, workdir / f"{name}.ts")
    program = capture(model, fields)  # silences torch.export's own warnings

    def eager(b: Batch) -> torch.Tensor:
        out = model(b)
        return torch.sigmoid(torch.stack([out.logits[t] for t in model.tasks], dim=1))

    variants: dict[str, Callable[[Batch], torch.Tensor]] = {
        "eager": eager,
        "torchscript": load_exported(path),
        "torchscript_unfrozen": load_exported(path, freeze=False),
        "torch_export": program.module(),
    }
    if aoti:
        variants["aoti"] = _aoti(program, workdir / f"{name}.pt2")
    if request:
        one = export_torchscript(model, batch, workdir / f"{name}-request.ts", one_request=True)
        variants["torchscript_request"] = load_exported(one)
        if aoti:
            program_one = capture(model, fields, one_request=True)
            variants["aoti_request"] = _aoti(program_one, workdir / f"{name}-request.pt2")
    try:
        from liverank.serve.export_onnx import export_onnx, load_onnx
    except ImportError as exc:  # pragma: no cover - the 'serve' extra is not installed
        log.info("onnxruntime variant skipped: %s", exc)
    else:
        try:
            onnx_path = export_onnx(model, batch, workdir / f"{name}.onnx")
        except ConfigError as exc:  # e.g. moment_cross: no frexp in the ONNX converter
            log.info("onnxruntime variant skipped: %s", exc)
            threads = []
        for n in threads:
            # load_onnx runs graphs with a scatter-add on one thread whatever is asked (an
            # onnxruntime race, see its docstring): the "2 threads" row is that fallback
            variants[f"onnxruntime@{n}"] = load_onnx(onnx_path, threads=n)
    with torch.no_grad():  # every variant must agree with eager before it is timed
        reference = eager(batch)
        for key, fn in variants.items():
            diff = (fn(batch if key not in ON_FIELDS else fields) - reference).abs()
            if float(diff.max()) > 1e-5:
                raise RuntimeError(f"{name}/{key}: max |diff| {float(diff.max())} vs eager")
    return variants, batch, fields


def measure(
    variants: dict, batch: Batch, fields: Batch, args: argparse.Namespace, threads: int
) -> dict:
    """Per variant: p50 / p99 / mean milliseconds over ``args.runs`` calls at ``threads``."""
    variants = {
        k.split("@")[0]: fn
        for k, fn in variants.items()
        if "@" not in k or k == f"onnxruntime@{threads}"
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    per_round = max(1, args.runs // args.rounds)
    with torch.no_grad():
        for key, fn in variants.items():
            arg = batch if key not in ON_FIELDS else fields
            for _ in range(args.warmup):
                fn(arg)
        for _ in range(args.rounds):
            for key, fn in variants.items():
                arg = batch if key not in ON_FIELDS else fields
                for _ in range(per_round):
                    start = time.perf_counter()
                    fn(arg)
                    times[key].append((time.perf_counter() - start) * 1e3)
    return {
        k: {
            "p50_ms": float(np.percentile(v, 50)),
            "p99_ms": float(np.percentile(v, 99)),
            "mean_ms": float(np.mean(v)),
            "runs": len(v),
        }
        for k, v in times.items()
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            variants, batch, fields = build_variants(
                name,
                args.candidates,
                Path(tmp),
                args.threads,
                aoti=not args.no_aoti,
                request=args.request,
                long_len=args.long_len,
            )
            for threads in args.threads:
                torch.set_num_threads(threads)
                stats = measure(variants, batch, fields, args, threads)
                for variant, s in stats.items():
                    results.append({"model": name, "threads": threads, "variant": variant, **s})
                log.info("%s, %d thread(s): done", name, threads)

    table = Table(title=f"inference latency, {args.candidates} candidates (ms)")
    for col in ("model", "threads", "variant", "p50", "p99", "p50 vs eager"):
        table.add_column(col, justify="right" if col not in ("model", "variant") else "left")
    for r in results:
        base = next(
            x
            for x in results
            if x["model"] == r["model"] and x["threads"] == r["threads"] and x["variant"] == "eager"
        )
        table.add_row(
            r["model"],
            str(r["threads"]),
            r["variant"],
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{base['p50_ms'] / r['p50_ms']:.2f}x",
        )
    Console().print(table)

    payload = {
        "benchmark": "export_latency",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "onnxruntime": _version("onnxruntime"),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
