"""``liverank serve``: the ranking service (issue #4). Registered in :mod:`liverank.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the FastAPI ranking service")
    p.add_argument("--registry", type=Path, required=True, help="model registry directory")
    p.add_argument("--model", default="ple", help="model name in the registry")
    p.add_argument(
        "--data", type=Path, required=True, help="dataset whose events fill the feature store"
    )
    p.add_argument("--as-of", type=int, default=None, help="replay events before this epoch ms")
    p.add_argument(
        "--store",
        default="memory",
        help="feature store: memory (replay --data) or redis://host:port/DB/PREFIX "
        "(written by liverank stream --store)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="threads per forward pass (1: measured fastest on 2 cores, see docs/serving.md)",
    )
    p.add_argument(
        "--runtime",
        choices=["auto", "eager", "torchscript", "aoti"],
        default="auto",
        help="forward pass: TorchScript trace (auto: when the model can be traced), eager, or "
        "aoti (torch.export + AOTInductor: fastest measured, compiles each version once, "
        "cached in REGISTRY/.aoti; needs g++)",
    )
    p.add_argument(
        "--graph",
        type=Path,
        default=None,
        help="neighbour store (liverank graph build --out DIR) for models that read MMBee's "
        "metapath neighbours; reloaded when a new build is published there",
    )
    p.add_argument(
        "--forecaster",
        type=Path,
        default=None,
        help="LiveForesighter statistic forecaster (liverank foresight train --out DIR): "
        "GET /rooms/{id}/forecast and the web page then show the forecast",
    )
    p.add_argument(
        "--product-forecaster",
        type=Path,
        default=None,
        help="LiveForesighter next-product model (liverank foresight train --config "
        "configs/foresight/products.yaml --out DIR): the forecast endpoint and the web page "
        "then show a room's most likely next product categories",
    )
    p.add_argument(
        "--watch-interval",
        type=float,
        default=2.0,
        help="registry and graph store poll, seconds",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="larger request bodies get HTTP 413 (default: enough for the largest valid "
        "request, see docs/serving.md)",
    )
    p.set_defaults(func=cmd_serve)


#: modules of the ``serve`` extra that ``liverank serve`` imports (pyproject.toml)
SERVE_MODULES: tuple[str, ...] = ("uvicorn", "fastapi", "prometheus_client")


def require_serve_extra() -> None:
    """Raise a one-line :class:`~liverank.errors.ConfigError` naming the missing module and the
    install command when the ``serve`` extra is not installed (instead of a raw
    ``ModuleNotFoundError`` traceback)."""
    import importlib

    from liverank.errors import ConfigError

    for name in SERVE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"liverank serve needs the 'serve' extra (module '{exc.name or name}' is not "
                "installed): pip install 'liverank[serve]' (from a checkout: "
                "pip install -e '.[serve]')"
            ) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    from liverank.errors import ConfigError

    if args.torch_threads < 1:
        raise ConfigError(f"--torch-threads must be >= 1, got {args.torch_threads}")
    if args.max_body_bytes is not None and args.max_body_bytes < 1_024:
        raise ConfigError(f"--max-body-bytes must be >= 1024, got {args.max_body_bytes}")
    if args.watch_interval <= 0:
        raise ConfigError(f"--watch-interval must be > 0 seconds, got {args.watch_interval}")
    require_serve_extra()

    import torch
    import uvicorn

    from liverank.serve.service import build_service

    torch.set_num_threads(args.torch_threads)

    app = build_service(
        args.registry,
        args.model,
        args.data,
        as_of_ts=args.as_of,
        watch_interval_s=args.watch_interval,
        store=args.store,
        runtime=args.runtime,
        graph=args.graph,
        forecaster=args.forecaster,
        product_forecaster=args.product_forecaster,
        **({} if args.max_body_bytes is None else {"max_body_bytes": args.max_body_bytes}),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
