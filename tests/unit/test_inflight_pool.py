"""The pool of attempts sent ahead (pytest_roadmap/inflight/pool.py), with work that waits on
events the test sets: no pytest session, no store, no network."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_roadmap.inflight import AheadPool, Prefetch
from pytest_roadmap.tasks import Task
from tests.support.waiting import wait_for


def _task(task_id: str) -> Task:
    return Task(id=task_id, title=task_id, prompt=f"do {task_id}", month=1, week=1)


class Work:
    """Each attempt passes its gates at once and answers when the test says."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def __call__(self, prefetch: Prefetch) -> None:
        with self.lock:
            self.started.append(prefetch.key)
            gate = self.release.setdefault(prefetch.key, threading.Event())
        prefetch.on_abandon(gate.set)  # as the client's Abort cuts a request
        prefetch.prepared.set()
        prefetch.started = 1.0
        gate.wait(10)
        if prefetch.abandoned:
            prefetch.error = RuntimeError("abandoned")
            return
        prefetch.answer = {"code": prefetch.key}
        prefetch.finished = 2.0

    def answer(self, key: str) -> None:
        with self.lock:
            self.release.setdefault(key, threading.Event()).set()


@pytest.fixture
def work() -> Iterator[Work]:
    found = Work()
    yield found
    for event in found.release.values():
        event.set()


def _pool(work: Work, keys: list[str], size: int = 2) -> AheadPool:
    held = [(k, _task(k)) for k in keys]
    return AheadPool(size, work, upcoming=lambda: list(held))


def test_at_most_size_attempts_run_in_the_order_of_the_items(work: Work) -> None:
    pool = _pool(work, ["a", "b", "c", "d"])
    pool.refill()
    wait_for(lambda: sorted(work.started) == ["a", "b"])
    assert pool.running == 2
    work.answer("b")
    # A thread came free: the next item's attempt starts, not one of an item already sent.
    wait_for(lambda: sorted(work.started) == ["a", "b", "c"])
    wait_for(lambda: pool.ended("b") is True)
    assert pool.ended("a") is False and pool.ended("d") is None
    pool.close()


def test_an_item_takes_its_attempt_once_and_gets_its_answer(work: Work) -> None:
    pool = _pool(work, ["a"])
    pool.refill()
    claimed = pool.claim("a")
    assert claimed is not None and pool.claim("a") is None  # a retry makes its own
    claimed.wait_prepared(lambda: None)
    work.answer("a")
    assert claimed.result(lambda: None) == {"code": "a"}
    assert claimed.delivered is not None
    pool.finish("a")
    assert pool.held() == set()
    pool.close()


def test_an_attempt_nobody_took_is_given_up_when_its_item_ends(work: Work) -> None:
    pool = _pool(work, ["a"])
    pool.refill()
    wait_for(lambda: work.started == ["a"])
    given_up: list[str] = []
    claimed = pool.claim("a")
    assert claimed is not None
    claimed.on_abandon(lambda: given_up.append("a"))
    pool.finish("a")  # the item ended without waiting for it (its setup failed, -x)
    assert given_up == ["a"] and claimed.abandoned
    # Given up already: a late listener is called at once.
    claimed.on_abandon(lambda: given_up.append("late"))
    assert given_up == ["a", "late"]
    pool.close()


def test_an_interrupted_wait_gives_the_attempt_up(work: Work) -> None:
    pool = _pool(work, ["a"])
    pool.refill()
    claimed = pool.claim("a")
    assert claimed is not None

    def interrupted() -> None:
        raise KeyboardInterrupt  # as Ctrl-C or a timeout's signal would, while it waits

    with pytest.raises(KeyboardInterrupt):
        claimed.result(interrupted)
    assert claimed.abandoned
    pool.close()


def test_what_the_attempt_raised_is_raised_to_its_item() -> None:
    def broken_setup(prefetch: Prefetch) -> None:
        raise OSError("the store went away")

    pool = AheadPool(1, broken_setup, upcoming=lambda: [("a", _task("a"))])
    pool.refill()
    claimed = pool.claim("a")
    assert claimed is not None
    with pytest.raises(OSError, match="store went away"):
        claimed.wait_prepared(lambda: None)
    pool.close()


def test_each_item_goes_ahead_once_and_closing_stops_everything(work: Work) -> None:
    keys = ["a", "b"]
    pool = _pool(work, keys, size=4)
    pool.refill()
    pool.refill()
    wait_for(lambda: sorted(work.started) == keys)
    assert pool.held() == set(keys)
    work.answer("a")
    wait_for(lambda: pool.ended("a") is True)
    pool.finish("a")
    pool.refill()  # "a" is still listed by a slow upcoming(): it does not go again
    assert sorted(work.started) == keys
    pool.close()
    assert pool.held() == set()
    pool.refill()
    assert sorted(work.started) == keys


def test_a_pool_needs_a_thread() -> None:
    def nothing(prefetch: Any) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        AheadPool(0, nothing)
