"""The store interface: the one place where workers share state.

Every operation is atomic on its own (one SQLite transaction, one Redis Lua script)
and reads time from the store's own clock, so that processes with slightly different
views of time still agree on who goes next. Callers never hold a lock across calls:
anything that waits (sleeping until a send time, polling for a slot) happens outside.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple, TypeVar

from pytest_roadmap.errors import shown
from pytest_roadmap.validation import Range

_S = TypeVar("_S", bound="Store")

# What the operations take; a wrong argument is a bug in the caller: ValueError or TypeError.
# An interval of 0 moves no schedule: a look at when a send could go.
INTERVAL = Range(0, unit="seconds")
BURST = Range(1, integer=True)
GATE_LIMIT = Range(1, integer=True)
LEASE = Range(0, low_open=True, unit="seconds")
TICKET = Range(integer=True)
TTL = Range(0, low_open=True, unit="seconds")
AMOUNT = Range(integer=True)
WINDOW = Range(0, low_open=True, unit="seconds")
WINDOW_LIMIT = Range(0, low_open=True)
WINDOW_AMOUNT = Range(0, integer=True)
ENTRY = Range(integer=True)
CLOCK = Range(unit="seconds")


class Spacing(NamedTuple):
    """One GCRA key of a reservation (`Store.reserve_all`).

    `interval` is the emission interval (1/rate) and `burst` how many sends may go back to
    back after an idle spell. `later` holds `(from, interval)` steps, in time order, for a
    rate that rises with time: a send that falls at or after a step's time moves the
    schedule by that step's interval instead (each step is the rate at its start, so never
    more than the rate in force).
    """

    key: str
    interval: float
    burst: int = 1
    later: tuple[tuple[float, float], ...] = ()


class StoreError(Exception):
    """The store could not be reached or did not answer (not a user error)."""


class TicketLost(StoreError):
    """A gate ticket is gone: released, reclaimed, or its lease expired."""


class Store(abc.ABC):
    """Shared state for one run: GCRA reservations, sliding windows, gates with leases,
    small values.

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

    # Every public operation checks its arguments here, once, and then calls the backend's
    # protected method of the same name: backends cannot drift on what they accept (a NaN
    # ttl was refused by one and stored by the other, where the value never showed up).

    # -- rate limiting -------------------------------------------------------------

    def reserve(self, key: str, interval: float, burst: int) -> float:
        """Reserve the next send slot of GCRA `key`; return the absolute send time.

        `interval` is the emission interval (1/rate) and `burst` how many sends may go
        back to back after an idle spell. Slots are handed out in reservation order;
        the time is on the store's clock, so the caller sleeps until `clock()` reaches
        it (outside any lock) and then sends.
        """
        return self.reserve_all([(key, interval, burst)])

    def reserve_all(self, limits: Sequence[tuple[str, float, int] | Spacing]) -> float:
        """Reserve one send that must respect several GCRA keys at once, atomically.

        Each entry is a `Spacing` or its first three fields. The send time is the earliest
        that every key allows, and every key's schedule moves past it, in one transaction:
        a task's first request in a spaced batch is both a request (the rate limits) and a
        start (the spacing), and reserving those apart would let queues compress one of
        them.
        """
        checked = [Spacing(*limit) for limit in limits]
        for key, interval, burst, later in checked:
            _text(key, "key")
            INTERVAL.check(interval, f"interval of {key!r}")
            BURST.check(burst, f"burst of {key!r}")
            previous = -math.inf
            for at, step in later:
                CLOCK.check(at, f"step time of {key!r}")
                INTERVAL.check(step, f"step interval of {key!r}")
                if at < previous:
                    raise ValueError(f"the steps of {key!r} are not in time order")
                previous = at
        return self._reserve_all(checked)

    @abc.abstractmethod
    def _reserve_all(self, limits: Sequence[Spacing]) -> float:
        """`reserve_all`, its arguments checked."""

    # -- sliding windows -------------------------------------------------------------

    def window_reserve(
        self, key: str, amount: int, window: float, limit: float
    ) -> tuple[int, float]:
        """Place `amount` in the sliding log `key`; return the entry's id and send time.

        The send time is the earliest t, no earlier than now nor than the log's latest
        entry, at which the entries in (t - `window`, t] and `amount` add up to at most
        `limit`; an amount over the limit goes once the window is empty. The entry is
        recorded at t and entries older than the window are dropped, in one atomic step.
        Times never go back, so the window ending at t is the only one to check: every
        later window holds a part of it until a later entry checks its own. A key is used
        with one window; the time is on the store's clock, slept to as `reserve`'s.
        """
        _text(key, "key")
        WINDOW_AMOUNT.check(amount, f"amount of {key!r}")
        WINDOW.check(window, f"window of {key!r}")
        WINDOW_LIMIT.check(limit, f"limit of {key!r}")
        return self._window_reserve(key, amount, window, limit)

    def window_settle(self, key: str, entry: int, amount: int) -> bool:
        """Set the amount of `entry` in the sliding log `key` (an answer's real usage).

        Lowering it gives back room at once (a smaller entry never brings a window over);
        raising it charges more, which the placements from then on see. False if the
        entry has left the window already (nothing to correct).
        """
        _text(key, "key")
        ENTRY.check(entry, f"entry of {key!r}")
        WINDOW_AMOUNT.check(amount, f"amount of {key!r}")
        return self._window_settle(key, entry, amount)

    def window_move(self, key: str, entry: int, window: float, limit: float) -> bool:
        """Move `entry` of the sliding log `key` to now, if no window then holds more than
        `limit`; True if it moved (or was no earlier than now already).

        For a send that goes out later than its reserved time: at its real time, the windows
        after it count it where a server does. The windows that would newly hold it are
        those ending up to `window` after now, among them any entry already placed there;
        if one of them has no room, the entry stays and the caller must not send.
        """
        _text(key, "key")
        ENTRY.check(entry, f"entry of {key!r}")
        WINDOW.check(window, f"window of {key!r}")
        WINDOW_LIMIT.check(limit, f"limit of {key!r}")
        return self._window_move(key, entry, window, limit)

    @abc.abstractmethod
    def _window_reserve(
        self, key: str, amount: int, window: float, limit: float
    ) -> tuple[int, float]: ...

    @abc.abstractmethod
    def _window_settle(self, key: str, entry: int, amount: int) -> bool: ...

    @abc.abstractmethod
    def _window_move(self, key: str, entry: int, window: float, limit: float) -> bool: ...

    # -- concurrency gate ----------------------------------------------------------

    def gate_set_limit(self, key: str, limit: int) -> None:
        """Set how many tickets of gate `key` may hold at once (at least 1)."""
        _text(key, "gate key")
        GATE_LIMIT.check(limit, "gate limit")
        self._gate_set_limit(key, limit)

    def gate_limit(self, key: str) -> int:
        """The limit of gate `key`; 1 (the safe side) if it was never set."""
        _text(key, "gate key")
        return self._gate_limit(key)

    def gate_enqueue(self, key: str, holder: str, lease: float) -> int:
        """Queue a waiting ticket for `holder` (a worker id) and return it.

        The ticket lives for `lease` seconds unless refreshed by `gate_try_acquire`
        or `gate_renew`.
        """
        _text(key, "gate key")
        _text(holder, "holder")
        LEASE.check(lease, "lease")
        return self._gate_enqueue(key, holder, lease)

    def gate_try_acquire(self, key: str, ticket: int, lease: float) -> bool:
        """Turn `ticket` into a holder if it is its turn and there is room.

        Returns True if the ticket holds (now or already), False if it must keep
        waiting; either way its lease is refreshed to `lease` seconds from now.
        Raises `TicketLost` if the ticket is gone.
        """
        _text(key, "gate key")
        TICKET.check(ticket, "ticket")
        LEASE.check(lease, "lease")
        return self._gate_try_acquire(key, ticket, lease)

    def gate_renew(self, key: str, ticket: int, lease: float) -> bool:
        """Extend the lease of a live ticket; False if the ticket is gone."""
        _text(key, "gate key")
        TICKET.check(ticket, "ticket")
        LEASE.check(lease, "lease")
        return self._gate_renew(key, ticket, lease)

    def gate_release(self, key: str, ticket: int) -> None:
        """Drop `ticket`, holding or waiting; a ticket already gone is fine."""
        _text(key, "gate key")
        TICKET.check(ticket, "ticket")
        self._gate_release(key, ticket)

    def gate_reclaim(self, key: str, holder: str) -> int:
        """Drop every live ticket of `holder` (a dead worker); return how many."""
        _text(key, "gate key")
        _text(holder, "holder")
        return self._gate_reclaim(key, holder)

    def gate_state(self, key: str) -> tuple[int, int]:
        """How many live tickets of gate `key` are (holding, waiting)."""
        _text(key, "gate key")
        return self._gate_state(key)

    @abc.abstractmethod
    def _gate_set_limit(self, key: str, limit: int) -> None: ...

    @abc.abstractmethod
    def _gate_limit(self, key: str) -> int: ...

    @abc.abstractmethod
    def _gate_enqueue(self, key: str, holder: str, lease: float) -> int: ...

    @abc.abstractmethod
    def _gate_try_acquire(self, key: str, ticket: int, lease: float) -> bool: ...

    @abc.abstractmethod
    def _gate_renew(self, key: str, ticket: int, lease: float) -> bool: ...

    @abc.abstractmethod
    def _gate_release(self, key: str, ticket: int) -> None: ...

    @abc.abstractmethod
    def _gate_reclaim(self, key: str, holder: str) -> int: ...

    @abc.abstractmethod
    def _gate_state(self, key: str) -> tuple[int, int]: ...

    # -- small shared values -------------------------------------------------------

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        """Set `key` to `value`, expiring after `ttl` seconds (never if None or infinite)."""
        _text(key, "key")
        _text(value, f"value of {key!r}")
        if ttl == math.inf:
            ttl = None
        if ttl is not None:
            TTL.check(ttl, "ttl")
        self._put(key, value, ttl)

    def get(self, key: str) -> str | None:
        """The value of `key`, or None if it is unset or expired."""
        _text(key, "key")
        return self._get(key)

    def incr(self, key: str, amount: int = 1) -> int:
        """Add `amount` to the integer at `key` (0 if unset) and return the result.

        An existing expiry is kept, as Redis INCR does. A value that is not an integer
        (optional blanks and sign, then ASCII digits) raises ValueError.
        """
        _text(key, "key")
        AMOUNT.check(amount, "amount")
        return self._incr(key, amount)

    def swap(self, key: str, expected: str | None, value: str) -> bool:
        """Set `key` to `value` (no expiry) if it holds `expected` (None: unset or expired).

        True if it was set. The compare-and-set by which processes change one shared
        document (the learned pace) without a lock: read, compute, swap, and on False
        read again.
        """
        _text(key, "key")
        if expected is not None:
            _text(expected, f"expected value of {key!r}")
        _text(value, f"value of {key!r}")
        return self._swap(key, expected, value)

    @abc.abstractmethod
    def _put(self, key: str, value: str, ttl: float | None) -> None: ...

    @abc.abstractmethod
    def _get(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def _incr(self, key: str, amount: int) -> int: ...

    @abc.abstractmethod
    def _swap(self, key: str, expected: str | None, value: str) -> bool: ...

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


def window_place(
    now: float, entries: Sequence[tuple[float, int]], amount: int, window: float, limit: float
) -> float:
    """Where `window_reserve` places `amount` in a log of (time, amount) `entries` sorted
    by time, none older than the window at `now`. store/lua/window_reserve.lua does the
    same, step for step."""
    send = max(now, entries[-1][0]) if entries else now
    first = 0
    while first < len(entries) and entries[first][0] <= send - window:
        first += 1  # out of the window ending at `send`, though not yet at `now`
    held = sum(taken for _, taken in entries[first:])
    # Too full: wait for the oldest entries to leave, one after another. An amount over
    # the limit waits for all of them.
    for at, taken in entries[first:]:
        if held + amount <= limit:
            break
        send = max(send, at + window)
        held -= taken
    return send


def window_fits(
    entries: Sequence[tuple[float, int]], at: float, amount: int, window: float, limit: float
) -> bool:
    """Whether `amount` at time `at` keeps every window that holds it within `limit`, with
    the log's other `entries` (sorted by time, later ones included): the windows ending at
    `at` and at each entry up to `window` after it, where the sums change.
    store/lua/window_move.lua does the same, step for step."""
    for end in [at, *(t for t, _ in entries if at < t < at + window)]:
        held = sum(taken for t, taken in entries if end - window < t <= end)
        if held + amount > limit:
            return False
    return True


def _text(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {shown(value)}")
