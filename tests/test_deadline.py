"""The deadline's judge over a real SQLite store, on a clock the test moves."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_roadmap.deadline import (
    BUSY_KEY,
    DONE_KEY,
    Deadline,
    DeadlineInfo,
    deadline_info,
    end_reserve,
    info_key,
    process_age,
    run_started,
    startable,
)
from pytest_roadmap.plan import History, TaskHistory
from pytest_roadmap.store import open_store
from pytest_roadmap.store.base import Store
from pytest_roadmap.tasks import Task


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite://{(tmp_path / 'store.db').as_posix()}", create=True) as opened:
        yield opened


def task(task_id: str, priority: int, week: int = 1) -> Task:
    return Task(task_id, task_id, f"do {task_id}", 1, week, priority)


def judge(store: Store, clock: Clock, tasks: list[Task], seconds: float, **kw: float) -> Deadline:
    info = DeadlineInfo(seconds, clock.now + seconds, kw.pop("expected", None))
    return Deadline(store, info, tasks, workers=int(kw.pop("workers", 3)), rate=100.0, clock=clock)


def test_startable_counts_whole_tasks_before_the_cut() -> None:
    assert startable(0.0, 3.0, 1.0, 1) == 3
    # Three workers, the other two on average a third and two thirds through a task.
    assert startable(0.0, 3.0, 1.0, 3) == 3 + 2 + 2
    assert startable(0.0, 0.5, 1.0, 3) == 0


def test_end_reserve_grows_with_tasks_and_a_measured_end() -> None:
    assert end_reserve(0) < end_reserve(1000)
    assert end_reserve(10, measured=5.0) == 7.5


def test_before_any_measure_a_task_starts_unless_time_is_gone(store: Store) -> None:
    clock = Clock()
    tasks = [task("a", 1), task("b", 1)]
    deadline = judge(store, clock, tasks, 10.0)
    assert deadline.check(tasks[0]) is None
    clock.now = deadline.cut
    why = deadline.check(tasks[1])
    assert why is not None and "deadline 10.0 s (--roadmap-deadline" in why
    assert "no task has ended yet" in why


def test_a_task_that_cannot_finish_is_not_started(store: Store) -> None:
    clock = Clock()
    tasks = [task("a", 1), task("b", 1)]
    deadline = judge(store, clock, tasks, 10.0, expected=2.0)
    clock.now = deadline.cut - 1.5
    why = deadline.check(tasks[0])
    assert why is not None and "it would not finish before the reports" in why
    assert "forecast: 2.0 s a task on 3 workers" in why


def test_lower_priority_waits_for_room_for_the_higher_ones_after_it(store: Store) -> None:
    clock = Clock()
    # Week 1 holds a priority-3 task; weeks 2 and 3 hold six priority-1 tasks.
    low = task("low", 3, week=1)
    high = [task(f"h{i}", 1, week=2 + i // 3) for i in range(6)]
    deadline = judge(store, clock, [low, *high], 3.0 + end_reserve(7), expected=1.0, workers=2)
    # Room for 3 + 2 tasks on two workers in 3 s: the six priority-1 tasks do not all fit.
    why = deadline.check(low)
    assert why is not None and "6 of higher priority are still to run" in why
    # Once a priority-3 task was left out, no lower priority starts; higher ones do.
    assert deadline.check(high[0]) is None


def test_the_floor_is_shared_and_only_goes_up_in_importance(store: Store) -> None:
    clock = Clock()
    tasks = [task("a", 2), task("b", 3), task("c", 1)]
    one = judge(store, clock, tasks, 10.0)
    other = judge(store, clock, tasks, 10.0)
    clock.now = one.cut  # time is out: "a" (priority 2) is left out
    assert one.check(tasks[0]) is not None
    clock.now -= 5.0  # another worker, earlier in its view: still no priority 3
    why = other.check(tasks[1])
    assert why is not None and "a priority-2 task was left out" in why
    assert "--roadmap-deadline" in why
    assert other.check(tasks[2]) is None  # priority 1 may still run


def test_measured_task_time_is_shared_through_the_store(store: Store) -> None:
    clock = Clock()
    tasks = [task("a", 1), task("b", 1), task("c", 1)]
    one = judge(store, clock, tasks, 60.0, expected=9.0)
    other = judge(store, clock, tasks, 60.0, expected=9.0)
    assert other.per_task() == 9.0  # nothing measured yet: the expected time
    assert one.check(tasks[0]) is None
    clock.now += 2.0
    one.ended("a")
    one.ended("never-started")  # not timed: not counted
    assert store.incr(DONE_KEY, 0) == 1 and store.incr(BUSY_KEY, 0) == 2000
    assert other.per_task() == 2.0


def test_a_retry_that_would_end_too_late_is_refused(store: Store) -> None:
    clock = Clock()
    tasks = [task("a", 1)]
    deadline = judge(store, clock, tasks, 20.0, expected=1.0)
    assert deadline.check_retry(tasks[0], delay=2.0) is None
    clock.now = deadline.cut - 2.5
    why = deadline.check_retry(tasks[0], delay=2.0)
    assert why is not None and "a retry after 2.0 s would end too late" in why


def test_from_store_reads_the_controllers_deadline(store: Store) -> None:
    tasks = [task("a", 1)]
    assert Deadline.from_store(store, "ctl", tasks, workers=1, rate=1.0) is None
    info = DeadlineInfo(8.0, 1234.5, 1.0, 0.2)
    store.put(info_key("ctl"), info.dumps())
    found = Deadline.from_store(store, "ctl", tasks, workers=1, rate=1.0)
    assert found is not None and found.info == info


def test_deadline_info_counts_from_a_recent_process_start() -> None:
    recorded = History({"a": TaskHistory(2.0, 2.0)}, overhead_s=0.1, finish_s=0.3)
    info = deadline_info(8.0, now=100.0, age=1.5, history=recorded)
    assert info.ends_at == 100.0 - 1.5 + 8.0
    assert info.expected_task_s == pytest.approx(2.0 * 2.0 + 0.1)  # attempts x latency
    assert info.measured_end_s == 0.3
    assert deadline_info(8.0, now=100.0, age=None, expected_latency=0.5).expected_task_s == 0.5
    # A process older than any start-up (pytester, a wrapper) counts from now.
    assert run_started(100.0, 3600.0) == 100.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_age_reads_proc(tmp_path: Path) -> None:
    age = process_age()
    assert age is not None and age >= 0.0
    (tmp_path / "self").mkdir()
    assert process_age(str(tmp_path)) is None  # no stat file: unknown, not a crash
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "self" / "stat").write_text(f"1 (a) b) S {' '.join(['0'] * 18)} {ticks * 5}\n")
    (tmp_path / "uptime").write_text("12.5 3.0\n")
    assert process_age(str(tmp_path)) == pytest.approx(7.5)
