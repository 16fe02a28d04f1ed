"""`SandboxServer`: the sandbox API on a background thread of this process."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_roadmap.sandbox.config import SandboxConfig
from pytest_roadmap.sandbox.handler import SandboxHTTPServer
from pytest_roadmap.sandbox.state import SandboxState

# How long stop() waits for requests to notice it (they all wait on the stop event).
STOP_GRACE = 2.0


class SandboxServer:
    """The sandbox API on a background thread: `with SandboxServer(config) as server: ...`."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self._state = SandboxState(config or SandboxConfig(), log_path)
        self._address = (host, port)
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; returns self. OSError if the port is taken."""
        if self._httpd is not None or self._stopped:
            raise RuntimeError("a SandboxServer can be started only once")
        httpd = SandboxHTTPServer(self._address, self._state)
        try:
            self._state.open_log()
        except OSError:
            httpd.server_close()
            raise
        self._httpd = httpd
        # A short poll interval keeps stop() prompt.
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"roadmap-sandbox:{httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging and sleeping requests, close the log file."""
        httpd = self._httpd
        if httpd is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        self._state.stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        self._state.wait_idle(STOP_GRACE)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(STOP_GRACE)
        self._state.close_log()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._bound()[0]

    @property
    def port(self) -> int:
        return self._bound()[1]

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:54321 (known once started)."""
        host, port = self._bound()
        return f"http://{host}:{port}"

    @property
    def config(self) -> SandboxConfig:
        return self._state.config

    def log(self) -> list[dict[str, Any]]:
        """A copy of the request log, one entry per /api/ request in arrival order.

        Keys: seq, method, path, arrived, answered (null while open, or after hang/close),
        status, in_flight, capacity (for chat requests, the capacity in force when it
        arrived; null when there is none), message (first 80 chars), model, auth (sha256
        of the Authorization value), host (the Host header: which name a redirect went to),
        worker, task, attempt, run (the X-Roadmap-* headers), usage (an OpenAI chat
        answer's tokens: prompt, completion, total; null otherwise).
        """
        return self._state.log()

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change settings while serving; SettingError for unknown or bad values."""
        return self._state.configure(changes)

    def reset(self) -> None:
        """Clear the log, rule counters, rate window and quota, reseed the failure draw,
        and start the capacity schedule again."""
        self._state.reset()

    def _bound(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the sandbox has no address until start()")
        return self._httpd.server_name, self._httpd.server_port
