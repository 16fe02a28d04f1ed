"""The health probe: one answer shared by every worker, and waiting out an unhealthy API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

HEALTH_KEY = "health"
PROBES_KEY = "health_probes"
OK = "ok"
DOWN = "down"


class SharedValues(Protocol):
    """The part of the store the probe needs."""

    def put(self, key: str, value: str, ttl: float | None) -> None: ...

    def get(self, key: str) -> str | None: ...

    def incr(self, key: str, amount: int = 1) -> int: ...


class Prober(Protocol):
    def probe(self, path: str, timeout: float) -> tuple[bool, str]: ...


class HealthProbe:
    """Checks the API before a task, sharing each answer through the store.

    A healthy answer is trusted by every worker for `share` seconds, so probes do not double
    the request count; an unhealthy one for a moment only, so one worker probes while the
    others wait instead of all of them hammering a sick server.
    """

    def __init__(
        self,
        prober: Prober,
        store: SharedValues,
        path: str,
        *,
        wait: float,
        share: float,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prober = prober
        self._store = store
        self._path = path
        self._wait = wait
        self._share = share
        self._timeout = min(timeout, 10.0)
        self._sleep = sleep
        self._clock = clock

    def invalidate(self) -> None:
        """Forget a shared healthy answer: a task just saw the API struggle."""
        self._store.put(HEALTH_KEY, DOWN + " (a task saw the API fail)", ttl=0.001)

    def wait_healthy(self) -> str | None:
        """Block until the API is healthy; None then, or the failure after `wait` seconds."""
        started = self._clock()
        pause = 0.2
        detail = ""
        while True:
            shared = self._store.get(HEALTH_KEY)
            if shared == OK:
                return None
            if shared is None or not shared.startswith(DOWN + ":"):
                healthy, detail = self._prober.probe(self._path, self._timeout)
                self._store.incr(PROBES_KEY)
                if healthy:
                    self._store.put(HEALTH_KEY, OK, ttl=self._share)
                    return None
                self._store.put(HEALTH_KEY, f"{DOWN}: {detail}", ttl=min(pause, 1.0))
            else:
                detail = shared[len(DOWN) + 2 :]
            waited = self._clock() - started
            if waited >= self._wait:
                return f"API unhealthy for {self._wait:g} s: {detail}"
            self._sleep(min(pause, self._wait - waited))
            pause = min(pause * 1.5, 2.0)
