"""Suite-wide settings and shared fixtures."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

# see liverank.cli: OpenMP spin-waiting slows torch badly on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# `make test` runs two pytest-xdist workers (a 2-core machine): one intra-op thread each, so
# that the workers share the cores instead of oversubscribing them (and the subprocesses they
# start inherit it). Tests that need more threads set them themselves.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port, one per test module (no persistence).

    Skips, saying why, only when redis-py or the ``redis-server`` binary is missing.
    """
    redis = pytest.importorskip(
        "redis", reason="redis-py is not installed (pip install 'redis>=5')"
    )
    if shutil.which("redis-server") is None:
        pytest.skip("the redis-server binary is not installed")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server did not answer PING on port {port}")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def headless_chromium():
    """The function :func:`_headless_chromium` (tests that render a page in a real browser)."""
    return _headless_chromium


def _headless_chromium(
    url: str, tmp_path, size: str = "1200,1600", timeout: int = 120, extra: tuple = ()
) -> tuple[str, bytes]:
    """Render ``url`` in a real headless Chromium: ``(DOM after scripts ran, PNG screenshot)``.

    Skips, saying why, when no ``chromium`` binary is on PATH (``.ci/run`` installs it); a
    failed render fails the test with Chromium's stderr.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    shot = tmp_path / "page.png"
    cmd = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={size}",
        *extra,
        f"--screenshot={shot}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, shot.read_bytes()


@pytest.fixture(scope="module")
def redis_client(redis_server_url: str) -> Iterator[Any]:
    """A redis-py client of :func:`redis_server_url` (one per test module)."""
    import redis

    c = redis.Redis.from_url(redis_server_url)
    yield c
    c.close()
