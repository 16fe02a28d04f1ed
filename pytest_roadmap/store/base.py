"""The store interface: the one place where workers share state.

Every operation is atomic on its own (one SQLite transaction, one Redis Lua script)
and reads time from the store's own clock, so that processes with slightly different
views of time still agree on who goes next. Callers never hold a lock across calls:
anything that waits (sleeping until a send time, polling for a slot) happens outside.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

_S = TypeVar("_S", bound="Store")


class StoreError(Exception):
    """The store could not be reached or did not answer (not a user error)."""


class TicketLost(StoreError):
    """A gate ticket is gone: released, reclaimed, or its lease expired."""


class Store(abc.ABC):
    """Shared state for one run: GCRA reservations, gates with leases, small values.

    Gate semantics, shared by every backend: a ticket is a waiter until it acquires,
    then a holder until it is released, reclaimed or its lease expires. A ticket whose
    lease has expired counts as gone everywhere, at once, whether or not it has been
    cleaned up yet. Tickets are granted in FIFO order: a waiter acquires only when
    fewer than `limit` tickets hold and no earlier live ticket is still waiting.
    """

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """A URL that another process can pass to `open_store` to reach this store."""

    @abc.abstractmethod
    def clock(self) -> float:
        """The store's clock, in seconds since the epoch.

        Callers read it around every sleep, so it must be cheap: a networked backend
        keeps an offset to its server's clock rather than asking every time.
        """

    # -- rate limiting -------------------------------------------------------------

    def reserve(self, key: str, interval: float, burst: int) -> float:
        """Reserve the next send slot of GCRA `key`; return the absolute send time.

        `interval` is the emission interval (1/rate) and `burst` how many sends may go
        back to back after an idle spell. Slots are handed out in reservation order;
        the time is on the store's clock, so the caller sleeps until `clock()` reaches
        it (outside any lock) and then sends.
        """
        return self.reserve_all([(key, interval, burst)])

    @abc.abstractmethod
    def reserve_all(self, limits: Sequence[tuple[str, float, int]]) -> float:
        """Reserve one send that must respect several GCRA keys at once, atomically.

        Each entry is `(key, interval, burst)`. The send time is the earliest that every
        key allows, and every key's schedule moves past it, in one transaction: a task's
        first request in a spaced batch is both a request (the rate limits) and a start
        (the spacing), and reserving those apart would let queues compress one of them.
        """

    # -- concurrency gate ----------------------------------------------------------

    @abc.abstractmethod
    def gate_set_limit(self, key: str, limit: int) -> None:
        """Set how many tickets of gate `key` may hold at once (at least 1)."""

    @abc.abstractmethod
    def gate_limit(self, key: str) -> int:
        """The limit of gate `key`; 1 (the safe side) if it was never set."""

    @abc.abstractmethod
    def gate_enqueue(self, key: str, holder: str, lease: float) -> int:
        """Queue a waiting ticket for `holder` (a worker id) and return it.

        The ticket lives for `lease` seconds unless refreshed by `gate_try_acquire`
        or `gate_renew`.
        """

    @abc.abstractmethod
    def gate_try_acquire(self, key: str, ticket: int, lease: float) -> bool:
        """Turn `ticket` into a holder if it is its turn and there is room.

        Returns True if the ticket holds (now or already), False if it must keep
        waiting; either way its lease is refreshed to `lease` seconds from now.
        Raises `TicketLost` if the ticket is gone.
        """

    @abc.abstractmethod
    def gate_renew(self, key: str, ticket: int, lease: float) -> bool:
        """Extend the lease of a live ticket; False if the ticket is gone."""

    @abc.abstractmethod
    def gate_release(self, key: str, ticket: int) -> None:
        """Drop `ticket`, holding or waiting; a ticket already gone is fine."""

    @abc.abstractmethod
    def gate_reclaim(self, key: str, holder: str) -> int:
        """Drop every live ticket of `holder` (a dead worker); return how many."""

    @abc.abstractmethod
    def gate_state(self, key: str) -> tuple[int, int]:
        """How many live tickets of gate `key` are (holding, waiting)."""

    # -- small shared values -------------------------------------------------------

    @abc.abstractmethod
    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        """Set `key` to `value`, expiring after `ttl` seconds (never if None)."""

    @abc.abstractmethod
    def get(self, key: str) -> str | None:
        """The value of `key`, or None if it is unset or expired."""

    @abc.abstractmethod
    def incr(self, key: str, amount: int = 1) -> int:
        """Add `amount` to the integer at `key` (0 if unset) and return the result.

        An existing expiry is kept, as Redis INCR does.
        """

    @abc.abstractmethod
    def swap(self, key: str, expected: str | None, value: str) -> bool:
        """Set `key` to `value` (no expiry) if it holds `expected` (None: unset or expired).

        True if it was set. The compare-and-set by which processes change one shared
        document (the learned pace) without a lock: read, compute, swap, and on False
        read again.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; the shared state stays for the other processes."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
