"""A sandbox in another process, reached over HTTP: its log, settings and reset, and
`SandboxSubprocess`, which starts one.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from types import TracebackType
from typing import Any, TypeVar, cast

from pytest_roadmap.errors import SettingError
from pytest_roadmap.sandbox.config import Rule
from pytest_roadmap.sandbox.paths import CONFIG_PATH, LOG_PATH, RESET_PATH

REMOTE_TIMEOUT = 10.0


def fetch_log(url: str) -> list[dict[str, Any]]:
    """The request log of a sandbox at `url` (in this or another process)."""
    import requests  # only the helpers need it; the server stays stdlib-only

    response = requests.get(url.rstrip("/") + LOG_PATH, timeout=REMOTE_TIMEOUT)
    response.raise_for_status()
    return cast(list[dict[str, Any]], response.json())


def configure_remote(url: str, **changes: Any) -> dict[str, Any]:
    """Change settings of a sandbox at `url`; returns its new config as JSON data."""
    import requests

    if "rules" in changes:
        changes["rules"] = [
            dataclasses.asdict(rule) if isinstance(rule, Rule) else rule
            for rule in changes["rules"]
        ]
    response = requests.post(url.rstrip("/") + CONFIG_PATH, json=changes, timeout=REMOTE_TIMEOUT)
    if response.status_code == 400:
        raise SettingError(response.json().get("error", response.text))
    response.raise_for_status()
    return cast(dict[str, Any], response.json())


def reset_remote(url: str) -> None:
    """Clear the log and rule counters of a sandbox at `url`."""
    import requests

    response = requests.post(url.rstrip("/") + RESET_PATH, timeout=REMOTE_TIMEOUT)
    response.raise_for_status()


class SandboxSubprocess:
    """`python -m pytest_roadmap.sandbox` in a process of its own, for tests and benchmarks:
    its clock is then not held up by the GIL of the process that drives the run.

    `args` are the command line's knobs (`--latency-ms 50`, ...); it listens on
    127.0.0.1 on a free port, given in `url` once it is up.
    """

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-u", "-m", "pytest_roadmap.sandbox"]
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "roadmap-sandbox listening on URL"
        if "listening on " not in line:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def log(self) -> list[dict[str, Any]]:
        return fetch_log(self.url)

    def configure(self, **changes: Any) -> None:
        configure_remote(self.url, **changes)

    def reset(self) -> None:
        reset_remote(self.url)

    def stop(self, timeout: float = 30.0) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self: _SelfSandbox) -> _SelfSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_SelfSandbox = TypeVar("_SelfSandbox", bound=SandboxSubprocess)
