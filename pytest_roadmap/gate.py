"""Concurrency slots shared by all workers, and the rule that sizes them.

`ConcurrencyGate` hands out at most `limit` slots at once across every process that
shares the store, first come first served. A slot is a ticket with a lease: a daemon
heartbeat renews the leases of the slots this process holds, so a live worker keeps
its slots however long its task runs, while a killed one loses them when the lease
runs out (or sooner, when the controller reclaims them). `AdaptiveLimit` is the
controller's rule for moving that limit; it does no I/O.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from pytest_roadmap.store.base import Store, StoreError, TicketLost

log = logging.getLogger(__name__)


class GateTimeout(TimeoutError):
    """No slot came free within the time allowed."""


class Slot:
    """One held slot of a `ConcurrencyGate`; release it, or use it as a context manager."""

    def __init__(self, gate: ConcurrencyGate, ticket: int) -> None:
        self.gate = gate
        self.ticket = ticket
        self._released = False
        self._lost = False

    @property
    def held(self) -> bool:
        """True until the slot is released or lost."""
        return not (self._released or self._lost)

    @property
    def lost(self) -> bool:
        """True if the store dropped the slot while it was held (lease ran out, reclaim)."""
        return self._lost

    def release(self) -> None:
        """Give the slot back; calling it again, or after the slot was lost, does nothing."""
        self.gate._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "lost" if self._lost else "released" if self._released else "held"
        return f"<Slot {self.gate.key}#{self.ticket} {state}>"


class ConcurrencyGate:
    """At most `limit` slots at once across all processes sharing `store`, in FIFO order.

    `holder` names this process (an xdist worker id such as "gw0"), so that the
    controller can reclaim every ticket of a worker that died. Waiters poll every
    `poll` seconds; each poll also keeps the waiting ticket alive. Held slots are
    renewed every `lease / 3` seconds by one daemon thread per gate.
    """

    def __init__(
        self,
        store: Store,
        holder: str,
        key: str = "gate",
        lease: float = 15.0,
        poll: float = 0.01,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be positive, not {lease}")
        if not 0 < poll < lease:
            raise ValueError(f"poll must be positive and shorter than the lease, not {poll}")
        self.store = store
        self.holder = holder
        self.key = key
        self.lease = lease
        self.poll = poll
        self._held: dict[int, Slot] = {}
        self._lock = threading.Lock()
        # One waiting ticket per process, its threads in line behind it: a ticket is served
        # only once every earlier one has been, so threads that queued together but try in
        # turns of `poll` would be served one per poll (--roadmap-inflight: 32 slots took
        # 0.3 s with room for all), and each would poll the store.
        self._line = _Line()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- the controller's side -------------------------------------------------------

    @property
    def limit(self) -> int:
        """How many slots may be held at once across all processes."""
        return self.store.gate_limit(self.key)

    def set_limit(self, limit: int) -> None:
        """Change the limit; holders above a lowered limit keep their slots until release."""
        self.store.gate_set_limit(self.key, limit)

    def state(self) -> tuple[int, int]:
        """How many slots are (holding, waiting) across all processes."""
        return self.store.gate_state(self.key)

    def reclaim(self, holder: str) -> int:
        """Free every slot and waiting ticket of a dead worker; return how many."""
        return self.store.gate_reclaim(self.key, holder)

    # -- the worker's side -----------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a slot, first come first served; raise `GateTimeout` after `timeout` s."""
        if self._stop.is_set():
            raise RuntimeError(f"gate {self.key!r} is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._line.enter(timeout):
            raise GateTimeout(f"no slot of gate {self.key!r} came free within {timeout} s")
        try:
            slot = self._acquire(deadline, timeout)
        finally:
            self._line.leave()
        with self._lock:
            self._held[slot.ticket] = slot
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._beat, name=f"roadmap-gate-{self.key}", daemon=True
                )
                self._heartbeat.start()
        return slot

    @property
    def queued(self) -> int:
        """This process's threads waiting for a slot (one of them with a ticket in line)."""
        return self._line.length

    def _acquire(self, deadline: float | None, timeout: float | None) -> Slot:
        """Queue one ticket in the store and poll until it holds a slot (by `deadline`)."""
        ticket = self.store.gate_enqueue(self.key, self.holder, self.lease)
        try:
            while True:
                try:
                    if self.store.gate_try_acquire(self.key, ticket, self.lease):
                        break
                except TicketLost:
                    # This process stalled for longer than a lease, or the controller
                    # took it for dead: queue again, at the back.
                    log.warning(
                        "gate %r: waiting ticket %d was dropped; queueing again", self.key, ticket
                    )
                    ticket = self.store.gate_enqueue(self.key, self.holder, self.lease)
                    continue
                if deadline is None:
                    time.sleep(self.poll)
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise GateTimeout(
                            f"no slot of gate {self.key!r} came free within {timeout} s"
                        )
                    time.sleep(min(self.poll, remaining))
        except BaseException:
            # Never leave a waiting ticket behind to block the queue until it expires.
            with contextlib.suppress(StoreError):
                self.store.gate_release(self.key, ticket)
            raise
        return Slot(self, ticket)

    def close(self) -> None:
        """Stop the heartbeat and release every slot this gate still holds."""
        self._stop.set()
        with self._lock:
            slots = list(self._held.values())
        for slot in slots:
            slot.release()
        if self._heartbeat is not None:
            self._heartbeat.join()

    def __enter__(self) -> ConcurrencyGate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if slot._released:
                return
            slot._released = True
            mine = self._held.pop(slot.ticket, None) is not None
        if mine:
            try:
                self.store.gate_release(self.key, slot.ticket)
            except StoreError as exc:
                # Not worth failing a finished task for: with no heartbeat behind it,
                # the slot frees itself when its lease runs out.
                log.warning("gate %r: could not release slot %d: %s", self.key, slot.ticket, exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            with self._lock:
                slots = list(self._held.values())
            for slot in slots:
                try:
                    alive = self.store.gate_renew(self.key, slot.ticket, self.lease)
                except StoreError as exc:
                    # Two more beats remain before the lease runs out.
                    log.warning("gate %r: could not renew slot %d: %s", self.key, slot.ticket, exc)
                    continue
                if not alive:
                    with self._lock:
                        # A slot released meanwhile is not lost, just gone.
                        if self._held.pop(slot.ticket, None) is not None:
                            slot._lost = True
                            log.warning("gate %r: slot %d was reclaimed", self.key, slot.ticket)


class _Line:
    """One process's threads in the order they came, first come first served."""

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._waiting: deque[object] = deque()

    @property
    def length(self) -> int:
        with self._turn:
            return len(self._waiting)

    def enter(self, timeout: float | None) -> bool:
        """Wait to be first in line; False (and out of line) after `timeout` seconds."""
        me = object()
        with self._turn:
            self._waiting.append(me)
            try:
                if self._turn.wait_for(lambda: self._waiting[0] is me, timeout):
                    return True
            except BaseException:
                self._waiting.remove(me)
                self._turn.notify_all()
                raise
            self._waiting.remove(me)
            self._turn.notify_all()
            return False

    def leave(self) -> None:
        """The first in line is done: the next one's turn."""
        with self._turn:
            self._waiting.popleft()
            self._turn.notify_all()


@dataclass(frozen=True)
class Change:
    """A move of the concurrency limit, with the sentence that explains it."""

    old: int
    new: int
    reason: str


class AdaptiveLimit:
    """The controller's rule for the concurrency limit, evaluated once per interval.

    Over the attempts that ended in the interval: more than 10% failed -> one lower
    (never below 1); fewer than 5% failed -> one higher (never above `maximum`);
    otherwise, or if no attempt ended, no change. It starts at `maximum` unless told.
    `interval` (seconds) only words the reason; the caller owns the timer.
    """

    LOWER_ABOVE = 0.10
    RAISE_BELOW = 0.05

    def __init__(self, maximum: int, start: int | None = None, interval: float = 5.0) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be at least 1, not {maximum}")
        start = maximum if start is None else start
        if not 1 <= start <= maximum:
            raise ValueError(f"start must be between 1 and {maximum}, not {start}")
        self.maximum = maximum
        self.value = start
        self.interval = interval

    def observe(self, ended: int, failed: int) -> Change | None:
        """Take one interval's counts; return the change made, or None."""
        if not 0 <= failed <= ended:
            raise ValueError(f"need 0 <= failed <= ended, got failed={failed}, ended={ended}")
        if ended == 0:
            return None
        share = failed / ended
        if share > self.LOWER_ABOVE:
            new, bound = max(self.value - 1, 1), f"> {self.LOWER_ABOVE:.0%}"
        elif share < self.RAISE_BELOW:
            new, bound = min(self.value + 1, self.maximum), f"< {self.RAISE_BELOW:.0%}"
        else:
            return None
        if new == self.value:
            return None
        attempts = "attempt" if ended == 1 else "attempts"
        reason = (
            f"{_percent(share)} of {ended} {attempts} failed"
            f" in the last {self.interval:g} s ({bound})"
        )
        change = Change(self.value, new, reason)
        self.value = new
        return change

    def __repr__(self) -> str:
        return f"AdaptiveLimit(value={self.value}, maximum={self.maximum})"


def _percent(share: float) -> str:
    # Whole percents read best, but 10.4% must not print as "10%" next to "(> 10%)".
    whole = round(share * 100)
    return f"{whole}%" if abs(share * 100 - whole) < 1e-9 else f"{share * 100:.1f}%"
