"""Fixtures of the serving tests: a real uvicorn server on a free loopback port, and a model
with a module nobody has checked for tracing (what the compiled runtimes must refuse)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import uvicorn
from fastapi import FastAPI

from liverank.models.modules.seq_pool import SeqPool
from liverank.models.ranker import ModuleSpec, RankerConfig
from liverank.models.registry import register_module
from liverank.models.zoo import get_config


@register_module
class UncheckedPool(SeqPool):
    """``seq_pool`` under another name, without ``exportable``: a module not yet checked for
    tracing (every real module is, since issue #20), which export and the runtimes refuse."""

    name = "unchecked_pool"


@pytest.fixture
def unchecked_config() -> RankerConfig:
    """``mlp`` plus an :class:`UncheckedPool`: a model that cannot be exported."""
    base = get_config("mlp")
    spec = ModuleSpec(name="unchecked_pool", key="unchecked")
    return base.model_copy(update={"name": "unchecked", "modules": [*base.modules, spec]})


@contextmanager
def _live(app: FastAPI) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        assert thread.is_alive(), "uvicorn stopped before it started"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture()
def live_server() -> Callable[[FastAPI], AbstractContextManager[str]]:
    """``with live_server(app) as url:`` serves ``app`` with uvicorn in a thread on a free
    loopback port (``url`` = ``http://127.0.0.1:PORT``) and stops it on exit."""
    return _live
