"""Fixtures for driving real pytest sessions against a real sandbox on 127.0.0.1."""

from __future__ import annotations

import pytest
import requests  # noqa: F401 - see below

from tests.support.project import RemoteSandbox, Roadmap, SandboxProcess, quiet_plugins

# requests is imported here, by this process, on purpose: the plugin imports it only once
# a task runs, and pytester's in-process sessions unload every module first imported inside
# them, so the next import would build a second http.cookiejar whose classes the first
# requests no longer recognises ("You can only merge into CookieJar").


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> RemoteSandbox:
    return sandbox_process.fresh()


@pytest.fixture(scope="session")
def plugin_flags(pytestconfig: pytest.Config) -> list[str]:
    """The `-p` flags for every pytest session a test starts."""
    return quiet_plugins(pytestconfig)


@pytest.fixture
def roadmap(pytester: pytest.Pytester, sandbox: RemoteSandbox, plugin_flags: list[str]) -> Roadmap:
    return Roadmap(pytester, sandbox, plugin_flags)
