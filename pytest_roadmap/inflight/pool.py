"""A worker's attempts sent ahead of pytest: up to K at once, each on a thread of its own.

pytest runs a worker's items one after another on its main thread. The slow part of an item
is its API request, so the `AheadPool` starts the first attempt of each of the next items
the worker holds (`upcoming`) on one of K threads, and the item's setup and call then wait
for that attempt instead of making it: the setup for its gates (turn, deadline, health,
budgets, slot, tokens), the call for its answer. Everything else about the item (its
report, its retries, its checks) stays pytest's, in pytest's order.

This module knows nothing of pytest or of the run: what an attempt does is the `work` it is
given, and which items come next is the `upcoming` function's to say.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pytest_roadmap.tasks import Task

# How often a main thread waiting for an attempt looks for newly arrived items to start:
# xdist hands a worker its next item only after it reported one, while it may be waiting.
REFILL_EVERY = 0.02
JOIN_PATIENCE = 2.0  # seconds close() waits for the threads; they are daemons anyway


class Prefetch:
    """One task's first attempt, sent ahead of its item.

    Its `work` fills it in: `prepared` once the attempt's gates are passed (`skip` and
    `unhealthy` then say whether it goes on, `setup_error` what broke its setup), `done`
    once it has ended (`answer` or `error`, and when the request went out and ended).
    """

    def __init__(self, key: str, task: Task) -> None:
        self.key = key  # the item's node id
        self.task = task
        self.prepared = threading.Event()
        self.done = threading.Event()
        self.skip: str | None = None
        self.unhealthy: str | None = None
        self.setup_error: BaseException | None = None
        self.answer: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.started: float | None = None  # when its gates were passed: the request's start
        self.finished: float | None = None  # when the answer (or failure) came
        self.claimed = False  # its item took it as its first attempt
        self.delivered: float | None = None  # when the item had its outcome
        self.abandoned = False
        self._lock = threading.Lock()
        self._on_abandon: list[Callable[[], None]] = []

    @property
    def sent(self) -> bool:
        """Whether its request went out (or was about to)."""
        return self.started is not None

    def on_abandon(self, call: Callable[[], None]) -> None:
        """`call` when the item gives the attempt up (at once if it has already)."""
        with self._lock:
            if not self.abandoned:
                self._on_abandon.append(call)
                return
        call()

    def abandon(self) -> None:
        """Nobody waits for this attempt any more: its request is ended, its answer unused."""
        with self._lock:
            if self.abandoned:
                return
            self.abandoned = True
            calls, self._on_abandon = self._on_abandon, []
        for call in calls:
            call()

    def wait_prepared(self, meanwhile: Callable[[], None]) -> None:
        """Block until the attempt's gates are passed (or its setup broke), calling
        `meanwhile` every REFILL_EVERY; an interruption (Ctrl-C, a timeout's signal)
        abandons the attempt."""
        self._wait(self.prepared, meanwhile)
        if self.setup_error is not None:
            raise self.setup_error

    def result(self, meanwhile: Callable[[], None]) -> dict[str, Any]:
        """The answer, waiting for it as `wait_prepared` does; raises what the attempt
        raised."""
        self._wait(self.done, meanwhile)
        self.delivered = time.time()
        if self.error is not None:
            raise self.error
        if self.answer is None:  # pragma: no cover - work always sets one or the other
            raise RuntimeError(f"attempt of {self.key} ended without an answer or an error")
        return self.answer

    def _wait(self, event: threading.Event, meanwhile: Callable[[], None]) -> None:
        try:
            while not event.wait(REFILL_EVERY):
                meanwhile()
        except BaseException:
            self.abandon()
            raise

    def __repr__(self) -> str:
        state = "done" if self.done.is_set() else "prepared" if self.prepared.is_set() else "new"
        return f"<Prefetch {self.key} {state}{' abandoned' if self.abandoned else ''}>"


class AheadPool:
    """Up to `size` attempts in flight at once, for the items `upcoming` names, in order.

    `upcoming()` lists (node id, task) of the next items this process holds that may be
    sent ahead, in the order it will run them; `refill` starts the first ones not started
    yet while fewer than `size` run. Each item is sent ahead once: a retry is the item's
    own. An attempt runs `work(prefetch)` on one of the pool's threads.
    """

    def __init__(
        self,
        size: int,
        work: Callable[[Prefetch], None],
        upcoming: Callable[[], Iterable[tuple[str, Task]]] = tuple,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self.size = size
        self.upcoming = upcoming
        self._work = work
        self._lock = threading.Lock()
        self._held: dict[str, Prefetch] = {}  # started, and not yet finished by its item
        self._seen: set[str] = set()  # every key ever started: each once
        self._running = 0
        self._closed = False
        self._jobs: queue.SimpleQueue[Prefetch | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._ended = threading.Condition()  # notified as each attempt ends

    @property
    def running(self) -> int:
        """Attempts started and not ended."""
        with self._lock:
            return self._running

    def held(self) -> set[str]:
        """Keys of the attempts started whose item has not finished."""
        with self._lock:
            return set(self._held)

    def refill(self) -> None:
        """Start the next upcoming attempts, while fewer than `size` run."""
        with self._lock:
            if self._closed or self._running >= self.size:
                return
            for key, task in self.upcoming():
                if key in self._seen:
                    continue
                prefetch = Prefetch(key, task)
                self._seen.add(key)
                self._held[key] = prefetch
                self._running += 1
                if len(self._threads) < self._running:
                    self._start_thread()
                self._jobs.put(prefetch)
                if self._running >= self.size:
                    return

    def ended(self, key: str) -> bool | None:
        """Whether the attempt sent ahead for this item has ended (its outcome is known:
        an answer, a failure, or a setup that skips it); None if none was sent."""
        with self._lock:
            prefetch = self._held.get(key)
        return None if prefetch is None else prefetch.done.is_set()

    def wait(self, timeout: float) -> None:
        """Block until an attempt ends, or `timeout` seconds."""
        with self._ended:
            self._ended.wait(timeout)

    def claim(self, key: str) -> Prefetch | None:
        """The attempt started ahead for this item, if there is one left to take: the item's
        first attempt is then this one. None: the item makes its attempt itself."""
        self.refill()  # the head of the queue first of all, if it was not started yet
        with self._lock:
            prefetch = self._held.get(key)
            if prefetch is None or prefetch.claimed or prefetch.abandoned:
                return None
            prefetch.claimed = True
            return prefetch

    def finish(self, key: str) -> None:
        """The item is over (reported, or ended however it did): its attempt, if it never
        took it or has not seen it end, is given up."""
        with self._lock:
            prefetch = self._held.pop(key, None)
        if prefetch is not None and not prefetch.done.is_set():
            prefetch.abandon()

    def close(self) -> None:
        """Give up every attempt still held and stop the threads."""
        with self._lock:
            self._closed = True
            held, self._held = list(self._held.values()), {}
            threads = list(self._threads)
        for prefetch in held:
            prefetch.abandon()
        for _ in threads:
            self._jobs.put(None)
        end = time.monotonic() + JOIN_PATIENCE
        for thread in threads:
            # A thread still in a long wait (a dependency's turn) is a daemon: it ends with
            # the process, or when the store it waits on is closed.
            thread.join(max(0.0, end - time.monotonic()))

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"roadmap-ahead-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while (prefetch := self._jobs.get()) is not None:
            try:
                if not prefetch.abandoned:
                    self._work(prefetch)
            except BaseException as exc:  # the item's to report, on its own thread
                if not prefetch.prepared.is_set():
                    prefetch.setup_error = exc
                elif prefetch.error is None:
                    prefetch.error = exc
            finally:
                if not prefetch.prepared.is_set() and prefetch.setup_error is None:
                    prefetch.setup_error = _gone(prefetch)  # given up before it began
                prefetch.prepared.set()
                prefetch.done.set()
                with self._lock:
                    self._running -= 1
                with self._ended:
                    self._ended.notify_all()
            with contextlib.suppress(Exception):
                self.refill()  # a thread came free: the next item may start


def _gone(prefetch: Prefetch) -> BaseException:
    return RuntimeError(f"the attempt of {prefetch.key} was given up before its setup ended")
