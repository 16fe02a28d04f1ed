"""Fixtures for driving real pytest sessions against a real sandbox on 127.0.0.1."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

import pytest
import requests  # noqa: F401 - see below

import pytest_roadmap
from tests.support.project import RemoteSandbox, Roadmap, SandboxProcess, quiet_plugins

# requests is imported here, by this process, on purpose: the plugin imports it only once
# a task runs, and pytester's in-process sessions unload every module first imported inside
# them, so the next import would build a second http.cookiejar whose classes the first
# requests no longer recognises ("You can only merge into CookieJar").
#
# The same unloading would make every in-process session import the plugin's core again:
# the entry point imports only the options, the rest comes with --roadmap. Importing it here,
# once, saves about 0.15 s of CPU per session (18 s over three e2e files, measured).
for _module in pkgutil.walk_packages(pytest_roadmap.__path__, "pytest_roadmap."):
    if not _module.name.endswith("__main__"):
        with contextlib.suppress(ImportError):  # the redis store without the redis client
            importlib.import_module(_module.name)


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
