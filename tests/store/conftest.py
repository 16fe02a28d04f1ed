"""The `store` fixture: every test that takes it runs once per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_roadmap.store import Store
from tests.support.stores import BACKENDS, make_store


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each backend in turn."""
    created = make_store(request.param, tmp_path, request.config)
    yield created
    created.close()
