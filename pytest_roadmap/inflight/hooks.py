"""The pytest side of requests sent ahead: which items this process holds, and in which
order its main thread runs them. Registered with --roadmap-inflight K > 1 in a process that
runs tasks.

A process holds K items: an xdist worker those its controller sent it (the scheduler in
distributed.py lets it hold K), the only process the first K of the session's items it has
not run yet. The pool sends each one's first attempt ahead. The main thread then runs, of
the items it holds, the first whose attempt has ended, in run order among those: an item
waits for its own answer only when no other one is ready. In run order alone, one slow
answer at the head held back every answer behind it, and with them the items that would
take their threads (measured: 2.7 times the bound against 1.8 with twice the hold, and
answers that came stayed unreported for as long, lost to an interruption).

pytest runs the items: the worker's loop is xdist's own, with its `run_one_test` (one
item's protocol, and the event that tells the controller) choosing the item; without xdist
the loop is pytest's, kept here with the same choice. An item's `nextitem` is the item run
after it, as pytest's teardown needs; when none is ready yet it is None, and the next item
sets its collectors up again (a task file's cost nothing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import pytest

from pytest_roadmap.collect import TaskItem
from pytest_roadmap.inflight.pool import REFILL_EVERY, AheadPool
from pytest_roadmap.tasks import Task


def sendable(item: pytest.Item) -> bool:
    """An item whose first attempt may go ahead: a task file's, not skipped by a mark (a
    Python test's requests are its own code's)."""
    return isinstance(item, TaskItem) and not (
        item.get_closest_marker("skip") or item.get_closest_marker("skipif")
    )


def xdist_worker_loop(config: pytest.Config) -> Any | None:
    """xdist's `WorkerInteractor` of this worker process, if it has the shape it had when
    this was written (`run_one_test`, `item_index`, `nextitem_index`, `torun.lock()`,
    `sendevent`); None otherwise, and the worker runs its items in xdist's order."""
    for plugin in config.pluginmanager.get_plugins():
        torun = getattr(plugin, "torun", None)
        if (
            hasattr(plugin, "nextitem_index")
            and callable(getattr(plugin, "run_one_test", None))
            and callable(getattr(plugin, "sendevent", None))
            and callable(getattr(torun, "lock", None))
            and callable(getattr(torun, "get", None))
        ):
            return plugin
    return None


class InflightHooks:
    """Sends the held items' first attempts ahead, and runs the items as they are ready."""

    def __init__(self, pool: AheadPool, *, worker: bool) -> None:
        self.pool = pool
        self.worker = worker  # an xdist worker (else the only process)
        self.items: Sequence[pytest.Item] = ()
        self.interactor: Any | None = None
        self._lock = threading.Lock()
        self._held: list[int] = []  # indices into `items`, in run order: not run yet
        self._next: int | None = None  # the item promised to pytest as the next one
        self._left: list[int] = []  # without xdist: the items not run yet
        self._sendable: dict[int, bool] = {}  # asked of every held item many times
        self.stopping = False
        pool.upcoming = self.upcoming

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = session.items
        self._left = list(range(len(session.items)))
        if self.worker:
            self.interactor = xdist_worker_loop(session.config)
            if self.interactor is not None:
                self.interactor.run_one_test = self._run_one_test

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if self.worker:
            return None  # xdist's loop, choosing through `_run_one_test`
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            s = "s" if session.testsfailed != 1 else ""
            raise session.Interrupted(f"{session.testsfailed} error{s} during collection")
        if session.config.option.collectonly:
            return True
        while self._left:
            with self._lock:
                self._held = self._left[: self.pool.size]
            index, nextitem = self._choose()
            self._left.remove(index)
            self._run(self.items[index], nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        return True

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        self.pool.refill()
        try:
            return (yield)
        finally:
            self.pool.finish(item.nodeid)
            session = item.session
            self.stopping = bool(session.shouldfail or session.shouldstop)

    def pytest_sessionfinish(self) -> None:
        # Whatever is still out was sent for items that will not run (an interruption, -x).
        self.stopping = True
        self.pool.close()

    def upcoming(self) -> Iterable[tuple[str, Task]]:
        """The held items whose first attempt may go ahead, in run order."""
        if self.stopping:
            return []
        with self._lock:
            held = list(self._held)
        found = []
        for index in held:
            item = self.items[index]
            if self._can_send(index) and isinstance(item, TaskItem):
                found.append((item.nodeid, item.task))
        return found

    # -- the order of the main thread ------------------------------------------------

    def _run_one_test(self) -> None:
        """xdist's `WorkerInteractor.run_one_test`, choosing the item: called while xdist's
        `nextitem_index` is an item this worker holds; leaves there another one it holds,
        or what comes next from the controller (an item, or the end)."""
        interactor = self.interactor
        assert interactor is not None
        first, interactor.nextitem_index = interactor.nextitem_index, None
        self._take_arrivals(first)
        index, nextitem = self._choose()
        with self._lock:
            self._held.remove(index)
        interactor.item_index = index
        start = time.perf_counter()
        self._run(self.items[index], nextitem)
        duration = time.perf_counter() - start
        interactor.sendevent("runtest_protocol_complete", item_index=index, duration=duration)
        self._take_arrivals()
        with self._lock:
            held = list(self._held)
        interactor.nextitem_index = held[0] if held else interactor.torun.get()

    def _take_arrivals(self, first: object = None) -> None:
        """The items xdist received since the last look (and `first`, the one its loop
        took) join those held, in run order."""
        interactor = self.interactor
        assert interactor is not None
        with interactor.torun.lock() as queued:
            arrived = [n for n in queued if isinstance(n, int)]
            rest = [n for n in queued if not isinstance(n, int)]  # the end, if it came
            queued.clear()
            queued.extend(rest)
        with self._lock:
            for index in [first, *arrived]:
                if isinstance(index, int) and index not in self._held:
                    self._held.append(index)
            self._held.sort()
        self.pool.refill()

    def _choose(self) -> tuple[int, pytest.Item | None]:
        """The held item to run now, and the one promised to run after it (None when no
        other is ready): the first in run order whose outcome is known, waiting for one."""
        promised, self._next = self._next, None
        index = promised if promised is not None else self._wait_for(self._ready)
        with self._lock:
            others = [n for n in self._held if n != index]
        after = next((n for n in others if self._ready(n)), None)
        self._next = after
        return index, (self.items[after] if after is not None else None)

    def _wait_for(self, ready: Callable[[int], bool]) -> int:
        while True:
            self.pool.refill()
            with self._lock:
                held = list(self._held)
            found = next((n for n in held if ready(n)), None)
            if found is not None:
                return found
            if self.pool.running == 0 and held:
                return held[0]  # nothing out to wait for: the item makes its own attempt
            self.pool.wait(REFILL_EVERY)
            if self.interactor is not None:
                self._take_arrivals()

    def _ready(self, index: int) -> bool:
        """An item the main thread can run without waiting for an answer: its attempt
        sent ahead has ended, or it sends none ahead."""
        if not self._can_send(index):
            return True
        return bool(self.pool.ended(self.items[index].nodeid))

    def _can_send(self, index: int) -> bool:
        known = self._sendable.get(index)
        if known is None:
            known = self._sendable[index] = sendable(self.items[index])
        return known

    def _run(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
