"""Store backends, chosen by URL: `sqlite:///abs/path.db` or `redis://host:port/db?run=<id>`."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from pytest_roadmap.errors import SettingError
from pytest_roadmap.store.base import Spacing, Store, StoreError, TicketLost

__all__ = ["SCHEMES", "Spacing", "Store", "StoreError", "TicketLost", "open_store"]

Opener = Callable[[str, bool], Store]


def _open_sqlite(url: str, create: bool) -> Store:
    from pytest_roadmap.store.sqlite import SQLiteStore

    return SQLiteStore.from_url(url, create=create)


def _open_redis(url: str, create: bool) -> Store:
    # store/redis.py imports the redis client only when a store is opened, and says
    # what to install when it is missing.
    from pytest_roadmap.store.redis import RedisStore

    return RedisStore.from_url(url, create=create)


# scheme -> opener(url, create); backends import lazily so optional clients stay optional.
_OPENERS: dict[str, Opener] = {
    "sqlite": _open_sqlite,
    "redis": _open_redis,
    "rediss": _open_redis,
}

SCHEMES: tuple[str, ...] = tuple(_OPENERS)


def open_store(url: str, *, create: bool = False) -> Store:
    """Open the store at `url`; `create=True` (the controller) also initialises it.

    Raises `SettingError` for a URL no backend accepts and `StoreError` for a store
    that cannot be reached.
    """
    scheme = urlsplit(url).scheme.lower()
    opener = _OPENERS.get(scheme)
    if opener is None:
        allowed = ", ".join(f"{name}://" for name in _OPENERS)
        raise SettingError(f"unknown store URL {url!r}: the scheme must be one of {allowed}")
    return opener(url, create)
