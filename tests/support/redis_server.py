"""A real Redis for the store tests: the one ROADMAP_TEST_REDIS names, or a private one.

`shared_redis_url` starts at most one private `redis-server` per test process (on a
free port of 127.0.0.1, no persistence, in a temporary folder) and stops it when the
session ends; the `redis_url` fixture (tests/conftest.py) hands it to tests. Without the
redis client, or without both the variable and a `redis-server` binary, the Redis tests
are skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from pytest_roadmap.store.redis import with_params

ENV = "ROADMAP_TEST_REDIS"

# How long a starting server may take to answer; it needs a few milliseconds.
START_PATIENCE = 10.0

_shared: RedisServer | None = None


def server_binary() -> str | None:
    """The `redis-server` to start, if there is one."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on, right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def need_client() -> None:
    """Skip the calling test unless the redis client is installed."""
    pytest.importorskip("redis", reason="the redis client is not installed (pytest-roadmap[redis])")


class RedisServer:
    """A `redis-server` on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, folder: Path, binary: str) -> None:
        self.folder = folder
        self.binary = binary
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it answers."""
        import redis

        log = self.folder / "redis.log"
        with log.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.folder),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=1.0)
        deadline = time.monotonic() + START_PATIENCE
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not start:\n"
                            + log.read_text(errors="replace")
                        ) from None
                    time.sleep(0.01)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server; its data goes with it."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(START_PATIENCE)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def restart(self) -> None:
        """Stop the server and start a fresh, empty one on the same port."""
        self.stop()
        self.start()


def private_server(folder: Path) -> RedisServer:
    """A started private server in `folder`; skips the test if there is no binary."""
    need_client()
    binary = server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(folder, binary)
    server.start()
    return server


def shared_redis_url(config: pytest.Config) -> str:
    """The base URL of the session's Redis (no run id); skips the test if there is none."""
    global _shared
    need_client()
    named = os.environ.get(ENV)
    if named:
        return named
    if _shared is None:
        if server_binary() is None:
            pytest.skip(f"no redis-server installed and {ENV} is not set")
        folder = Path(tempfile.mkdtemp(prefix="roadmap-redis-"))
        server = private_server(folder)

        def stop() -> None:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)

        config.add_cleanup(stop)
        _shared = server
    return _shared.url


def run_url(base: str, **params: object) -> str:
    """A store URL on `base` for a fresh run (unless `run` is given), with `params`."""
    params.setdefault("run", f"test-{uuid.uuid4().hex[:12]}")
    # Test runs on a long-lived server tidy themselves up within the hour.
    params.setdefault("ttl", 3600)
    return with_params(base, [(name, str(value)) for name, value in params.items()])
