"""A project under pytester, its task files, and the sandbox it runs against on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from pytest_roadmap.sandbox import SandboxSubprocess


class RemoteSandbox(SandboxSubprocess):
    """The sandbox in a process of its own, so its clock is not held up by the session
    under test, which shares this process and its GIL when pytester runs it in-process."""

    OFF: dict[str, Any] = {  # noqa: RUF012 - every knob back to "off"
        "latency": 0.0,
        "capacity": None,
        "rate_limit": None,
        "failure_rate": 0.0,
        "seed": 0,
        "down": False,
        "rules": [],
        "capacity_schedule": None,
        "capacity_retry_after": True,
        "rate_limit_retry_after": True,
        "rate_limit_headers": "",
        "rate_limit_spacing": False,
        "rate_limit_status": 429,
        "quota": None,
        "quota_retry_after": 3600,
        "token_limit": None,
        "rpm": None,
        "rpm_window": 60.0,
        "rpm_queue": False,
        "gateway_headers": False,
    }

    def restore(self) -> None:
        self.configure(**self.OFF)
        self.reset()

    def busy(self) -> bool:
        """Requests still in flight: a test left one hanging, and it would count against the
        capacity of the next test's sandbox."""
        return any(e["answered"] is None for e in self.log())


class SandboxProcess:
    """The session's sandbox; a new one replaces it when a test left requests hanging."""

    def __init__(self) -> None:
        self.server = RemoteSandbox()

    def fresh(self) -> RemoteSandbox:
        if self.server.busy():
            self.server.stop()
            self.server = RemoteSandbox()
        self.server.restore()
        return self.server


# Plugins the sessions under test need, whatever the suite's own session left out.
NEEDED_PLUGINS = frozenset({"roadmap", "xdist", "xdist.plugin", "timeout", "rerunfailures"})


def quiet_plugins(config: pytest.Config) -> list[str]:
    """`-p` flags for the sessions a test starts: no cache folder in the project, and every
    plugin the suite's own session was told to leave out (`-p no:NAME` on its command line
    or in PYTEST_ADDOPTS, which pytester hides from them) left out of them too, so a plugin
    that is slow on one machine is turned off there and not in this file."""
    flags = ["-p", "no:cacheprovider"]
    for name in config.option.plugins or []:
        if name.startswith("no:") and name[3:] not in NEEDED_PLUGINS | {"cacheprovider"}:
            flags += ["-p", name]
    return flags


def task_toml(task_id: str, month: int = 1, week: int = 1, **extra: Any) -> str:
    """One [[tasks]] table; the prompt names the id so sandbox rules can target it."""
    fields = {
        "id": task_id,
        "title": extra.pop("title", f"Task {task_id}"),
        "prompt": extra.pop("prompt", f"do {task_id} now"),
        "month": month,
        "week": week,
        **extra,
    }
    lines = ["[[tasks]]"]
    for key, value in fields.items():
        if isinstance(value, str):
            lines.append(f"{key} = {value!r}".replace("'", '"'))
        elif isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


class Roadmap:
    """A project under pytester: task files in roadmap_tasks/, runs against the sandbox."""

    def __init__(
        self, pytester: pytest.Pytester, sandbox: RemoteSandbox, plugins: Sequence[str]
    ) -> None:
        self.pytester = pytester
        self.sandbox = sandbox
        self.plugins = list(plugins)  # from quiet_plugins
        (pytester.path / "roadmap_tasks").mkdir(exist_ok=True)
        pytester.makeini("[pytest]\n")

    def tasks(self, name: str = "month1", *tables: str) -> None:
        path = self.pytester.path / "roadmap_tasks" / f"{name}.toml"
        path.write_text("\n".join(tables), encoding="utf-8")

    def raw(self, name: str, text: str) -> None:
        path = self.pytester.path / "roadmap_tasks" / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")

    def args(self, *args: str) -> list[str]:
        given = list(args)
        base = list(self.plugins)
        # The outer session imported the plugin already, so the inner one cannot rewrite it.
        base += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
        base.append("--roadmap")
        if not any(a.startswith("--roadmap-api") for a in given):
            base += ["--roadmap-api", self.sandbox.url]
        if not any(a == "-n" or a.startswith("-n") or a == "-p" for a in given):
            base += ["-n", "0"]
        defaults = {
            "--roadmap-rate-limit": "500",
            "--roadmap-retry-delay": "50",
            "--roadmap-health-interval": "0.5",
        }
        for option, value in defaults.items():
            if not any(a.startswith(option) for a in given):
                base += [option, value]
        return base + given

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest(*self.args(*args))

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        """`pytest *args` in its own process in the project, output captured: for runs that
        must overlap or be sent a signal."""
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", *self.plugins, *args],
            cwd=self.pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def spawn_run(self, *extra: str) -> subprocess.Popen[bytes]:
        """`spawn` of a two-worker roadmap run against the sandbox, paced as `args` paces
        in-process runs."""
        return self.spawn(
            "--roadmap",
            "-n",
            "2",
            "--roadmap-api",
            self.sandbox.url,
            "--roadmap-rate-limit",
            "500",
            "--roadmap-health-interval",
            "0.5",
            *extra,
        )

    @contextlib.contextmanager
    def running(self, *args: str) -> Iterator[subprocess.Popen[bytes]]:
        """A roadmap run (`args` as `run` takes them) in a session of its own while the
        block lasts, then killed with every process it started: for a run that must be
        watched while it waits (its output goes to run.log in the project)."""
        with open(self.pytester.path / "run.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", *self.args(*args)],
                cwd=self.pytester.path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def run_subprocess(self, *args: str, timeout: float = 120) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(*self.args(*args), timeout=timeout)

    def chats(self, task: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.sandbox.log()
            if e["path"] == "/api/codebase/chat" and (task is None or e["task"] == task)
        ]
