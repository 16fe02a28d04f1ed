"""Stores for the tests: a fresh one of each backend, and processes that share one."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from urllib.parse import quote

import pytest

from pytest_roadmap.store import Store, open_store
from tests.support.redis_server import run_url, shared_redis_url
from tests.support.waiting import wait_for

# Every backend the store fixture runs each test against; Redis tests carry the mark.
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]

spawn = multiprocessing.get_context("spawn")


def make_store(backend: str, tmp_path: Path, config: pytest.Config) -> Store:
    """A fresh, initialised store of `backend`, as the controller would create it."""
    if backend == "sqlite":
        return open_store(f"sqlite://{quote((tmp_path / 'store.db').as_posix())}", create=True)
    if backend == "redis":
        # A fresh run id each time: runs never see each other's keys.
        return open_store(run_url(shared_redis_url(config)), create=True)
    raise AssertionError(f"no such backend {backend!r}")


def wait_past(store: Store, moment: float) -> None:
    """Return once the store's clock has passed `moment`."""
    wait_for(lambda: store.clock() > moment)
