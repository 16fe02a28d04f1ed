"""The health probe: one answer shared by every worker, and waiting out an unhealthy API.

The shared answer is "ok" for one health interval, renewed by a probe or by a task's own 2xx
answer (fresh proof of health: while tasks succeed no probe is sent, so probes do not eat a
rate limit the user set to the server's); "down" once a probe failed or a task met an
outage answer (a 503, or no answer at all), and it stays "down" until a probe says the
API is back. Every task request checks it right before it is sent, so no worker sends a task
into an outage another worker has already met. A probe answered in a way no wait changes
(no such path, the credentials refused) is "wrong" for the rest of the run: every task fails
at once with its words.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

HEALTH_KEY = "health"
PROBES_KEY = "health_probes"
# Who probes next: PROBING and the end of its lease while one worker's probe is out (the
# others wait for its answer instead of probing too), FAILED for a moment after a probe
# failed (the others wait instead of hammering a sick server); unset, the next to ask.
PROBE_KEY = "health_probe"
PROBING = "probing"
FAILED = "failed"
POLL = 0.02  # seconds between looks at the store while another worker's probe is out
OK = "ok"
DOWN = "down"
# The API answered the probe in a way no wait will change (no such path, credentials
# refused): every task fails at once with the probe's words instead of after `wait` seconds.
WRONG = "wrong"
UNUSABLE = "API not usable as configured: "
SUSPECT = "a task saw the API fail"


class Probed(enum.Enum):
    """What one probe found: the API up, down for now, or not usable as configured."""

    OK = "ok"
    DOWN = "down"
    WRONG = "wrong"


def probed_down(shared: str | None) -> bool:
    """Whether the shared answer is a failed probe's (a task's doubt that no probe has judged
    yet is no ill health: after a 503 for capacity the probe says "ok")."""
    if shared is None or shared == f"{DOWN}: {SUSPECT}":
        return False
    return shared.startswith((DOWN + ": ", WRONG + ": "))


class SharedValues(Protocol):
    """The part of the store the probe needs."""

    def put(self, key: str, value: str, ttl: float | None) -> None: ...

    def get(self, key: str) -> str | None: ...

    def incr(self, key: str, amount: int = 1) -> int: ...

    def swap(self, key: str, expected: str | None, value: str) -> bool: ...

    def clock(self) -> float: ...


class Prober(Protocol):
    def probe(self, path: str, timeout: float) -> tuple[Probed, str]: ...


class HealthProbe:
    """Checks the API before a task, sharing each answer through the store.

    A healthy answer is trusted by every worker for `share` seconds, so probes do not double
    the request count; an unhealthy one until a probe says otherwise, probed again by one
    worker at a time while the others wait instead of all of them hammering a sick server.
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
        # One look (and probe) at a time per process: with --roadmap-inflight many threads
        # of one worker ask at once, and would all find nobody probing and probe.
        self._probing = threading.Lock()
        self._confirmed = -math.inf

    def confirm(self) -> None:
        """A task got a 2xx answer: the API is up, as a probe would have found.

        Renews a shared "ok" (or sets one where none is), at most once per half interval per
        process, so a busy run adds few store writes; never over a "down": only a probe
        judges a doubt a task raised (a 503 another worker met may be an outage this answer,
        sent before it, knows nothing of)."""
        now = self._clock()
        if now < self._confirmed + self._share / 2:
            return
        if self._store.get(HEALTH_KEY) not in (None, OK):
            return
        self._store.put(HEALTH_KEY, OK, ttl=self._share)
        self._confirmed = now

    def invalidate(self) -> None:
        """A task met an outage answer: no task goes out until a probe says the API is up."""
        self._store.put(HEALTH_KEY, f"{DOWN}: {SUSPECT}", ttl=None)

    def judge(self, patience: float = 0.0) -> tuple[str | None, bool]:
        """Why no task may be sent now (the shared answer says "down"), or None; and
        whether it waited for a probe's verdict: the probe then took a send slot after the
        caller's, so a request judged fit to go must take a new one.

        A doubt no probe has judged yet (a task saw the API fail; the setups of the next
        attempts probe at once) is waited on for up to `patience` seconds: after a 503 for
        capacity the probe says "ok" in a moment, and the request need not end unsent.
        """
        end = self._clock() + patience
        waited = False
        while True:
            shared = self._store.get(HEALTH_KEY)
            if shared is None or not shared.startswith(DOWN + ": "):
                return None, waited
            words = shared[len(DOWN) + 2 :]
            if words != SUSPECT or self._clock() >= end:
                return words, waited
            self._sleep(POLL)
            waited = True

    def _take_turn(self) -> str | None:
        """Claim the next probe, atomically across processes: None when this process
        probes now, else who holds the turn (PROBING: another probe is out; FAILED: one
        failed a moment ago). A read then a write let every worker that looked at once
        probe at once (four probes in the same millisecond after a pause); the claim is a
        compare-and-set, its lease written in the value since a swap sets no expiry."""
        turn = self._store.get(PROBE_KEY)
        now = self._store.clock()
        if turn is not None and turn.startswith(PROBING):
            _, _, until = turn.partition(" ")
            if not until or now < float(until):
                return PROBING
        elif turn == FAILED:
            return FAILED
        lease = f"{PROBING} {now + self._timeout + 1.0:.3f}"
        return None if self._store.swap(PROBE_KEY, turn, lease) else PROBING

    def wait_healthy(self) -> str | None:
        """Block until the API is healthy; None then, or the failure after `wait` seconds."""
        started = self._clock()
        pause = 0.2
        detail = ""
        while True:
            with self._probing:
                shared = self._store.get(HEALTH_KEY)
                if shared == OK:
                    return None
                if shared is not None and shared.startswith(WRONG + ": "):
                    return UNUSABLE + shared[len(WRONG) + 2 :]
                if shared is not None and shared.startswith(DOWN + ": "):
                    detail = shared[len(DOWN) + 2 :]
                turn = self._take_turn()
                if turn == PROBING:
                    wait = POLL  # another worker's answer is shared in a moment
                elif turn == FAILED:
                    wait, pause = pause, min(pause * 1.5, 2.0)
                else:
                    found, detail = self._prober.probe(self._path, self._timeout)
                    self._store.incr(PROBES_KEY)
                    if found is Probed.WRONG:
                        self._store.put(HEALTH_KEY, f"{WRONG}: {detail}", ttl=None)
                        self._store.put(PROBE_KEY, OK, ttl=0.001)
                        return UNUSABLE + detail
                    if found is Probed.OK:
                        self._store.put(HEALTH_KEY, OK, ttl=self._share)
                        self._store.put(PROBE_KEY, OK, ttl=0.001)  # anyone may probe next
                        return None
                    self._store.put(PROBE_KEY, FAILED, ttl=min(pause, 1.0))
                    self._store.put(HEALTH_KEY, f"{DOWN}: {detail}", ttl=None)
                    wait, pause = pause, min(pause * 1.5, 2.0)
            waited = self._clock() - started
            if waited >= self._wait:
                return f"API unhealthy for {self._wait:g} s: {detail}"
            self._sleep(min(wait, self._wait - waited))
