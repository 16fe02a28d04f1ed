"""Fixtures for driving real pytest sessions against a real sandbox on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import requests  # noqa: F401 - see below

from pytest_roadmap.sandbox import SandboxSubprocess

# requests is imported here, by this process, on purpose: the plugin imports it only once
# a task runs, and pytester's in-process sessions unload every module first imported inside
# them, so the next import would build a second http.cookiejar whose classes the first
# requests no longer recognises ("You can only merge into CookieJar").

# The original system's variables, which would leak into the sessions under test.
ENV_SETTINGS = (
    "MAX_CONCURRENCY",
    "RATE_LIMIT",
    "TASK_TIMEOUT",
    "BEAST_MODE_API",
    "CUSTOM_MODEL",
    "BEAST_MODE_TOKEN",
    "GITHUB_STEP_SUMMARY",
    "ROADMAP_STORE",
    "ROADMAP_RUN_ID",
    "ROADMAP_PROTOCOL",
    "OPENAI_API_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)


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
        "quota": None,
        "quota_retry_after": 3600,
        "token_limit": None,
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


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[SandboxProcess]:
    holder = SandboxProcess()
    yield holder
    holder.server.stop()


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> RemoteSandbox:
    return sandbox_process.fresh()


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

    def __init__(self, pytester: pytest.Pytester, sandbox: RemoteSandbox) -> None:
        self.pytester = pytester
        self.sandbox = sandbox
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
        base = ["-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest"]
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
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:benchmark",
                "-p",
                "no:hypothesispytest",
                *args,
            ],
            cwd=self.pytester.path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def run_subprocess(self, *args: str, timeout: float = 120) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(*self.args(*args), timeout=timeout)

    def chats(self, task: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.sandbox.log()
            if e["path"] == "/api/codebase/chat" and (task is None or e["task"] == task)
        ]


@pytest.fixture
def roadmap(pytester: pytest.Pytester, sandbox: RemoteSandbox) -> Roadmap:
    return Roadmap(pytester, sandbox)
