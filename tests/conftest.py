"""Fixtures for every kind of test: a clean environment, the session's sandbox process and
Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.project import SandboxProcess
from tests.support.redis_server import shared_redis_url

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
    "ROADMAP_DEADLINE",
    "ROADMAP_EXPECTED_LATENCY",
)

# Set when the suite itself runs under xdist (-n 2): a session under test would take
# itself for a worker and skip what only a controller does.
XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_SETTINGS + XDIST_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[SandboxProcess]:
    holder = SandboxProcess()
    yield holder
    holder.server.stop()


@pytest.fixture(scope="session")
def redis_url(pytestconfig: pytest.Config) -> str:
    """The base URL of a Redis for tests (no run id)."""
    return shared_redis_url(pytestconfig)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep `-m "not redis"` true: a test that takes the Redis fixture must carry the mark."""
    for item in items:
        if "redis_url" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "redis"
        ):
            raise pytest.UsageError(f"{item.nodeid} uses redis_url: mark it @pytest.mark.redis")
