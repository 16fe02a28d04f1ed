"""The deadline's judge over a real store (each backend), on a clock the test moves."""

from __future__ import annotations

from collections.abc import Callable

from pytest_roadmap.deadline import (
    BUSY_KEY,
    DONE_KEY,
    RUNNING_KEY,
    Deadline,
    DeadlineInfo,
    end_reserve,
    info_key,
)
from pytest_roadmap.store.base import Store
from pytest_roadmap.tasks import Task


class Clock:
    """The judge's clock; its sleeps move it, and `then` runs at each (another worker)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.then: Callable[[], None] = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.then()


def task(task_id: str, priority: int, week: int = 1) -> Task:
    return Task(task_id, task_id, f"do {task_id}", 1, week, priority)


def judge(store: Store, clock: Clock, tasks: list[Task], seconds: float, **kw: float) -> Deadline:
    info = DeadlineInfo(seconds, clock.now + seconds, kw.pop("expected", None))
    return Deadline(
        store,
        info,
        tasks,
        workers=int(kw.pop("workers", 3)),
        rate=100.0,
        timeout=kw.pop("timeout", 30.0),
        clock=clock,
        sleep=clock.sleep,
    )


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
    assert "forecast: 2.0 s a task, 3 at a time" in why


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


def test_with_no_task_time_known_a_lower_priority_waits_for_the_first_to_end(
    store: Store,
) -> None:
    clock = Clock()
    # Run order: a priority-1 task, then a priority-3 one, then six priority-1 tasks.
    first, low = task("first", 1), task("low", 3)
    high = [task(f"h{i}", 1, week=2) for i in range(6)]
    tasks = [first, low, *high]
    one = judge(store, clock, tasks, 6.0 + end_reserve(8), workers=2)
    other = judge(store, clock, tasks, 6.0 + end_reserve(8), workers=2)
    assert one.check(first) is None  # nothing more important after it: it starts at once

    def first_ends() -> None:  # on the other worker, after 2 s
        if clock.now >= 1002.0 and store.incr(DONE_KEY, 0) == 0:
            one.ended("first")

    clock.then = first_ends
    why = other.check(low)
    # It waited for the measurement, 2 s a task: room for two or three more in the 4 s left
    # on two workers, and six of priority 1 are still to run.
    assert clock.now >= 1002.0
    assert why is not None and "forecast: 2.0 s a task, 2 at a time" in why
    assert "more tasks, and 6 of higher priority are still to run" in why
    assert store.incr(RUNNING_KEY, 0) == 0


def test_with_nothing_running_to_measure_the_task_timeout_is_the_forecast(
    store: Store,
) -> None:
    clock = Clock()
    low, high = task("low", 2), task("high", 1, week=2)
    tight = judge(store, clock, [low, high], 10.0 + end_reserve(2), timeout=30.0)
    why = tight.check(low)
    assert why is not None and "30.0 s a task (the task timeout: none has ended yet" in why
    assert clock.now == 1000.0  # no wait: nothing runs that could end
    assert tight.check(high) is None  # priority 1 still starts


def test_with_time_for_the_task_timeout_a_lower_priority_starts_at_once(store: Store) -> None:
    clock = Clock()
    low, high = task("low", 2), task("high", 1, week=2)
    ample = judge(store, clock, [low, high], 600.0, timeout=30.0)
    assert ample.check(low) is None and clock.now == 1000.0
    assert store.incr(RUNNING_KEY, 0) == 1


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
    assert Deadline.from_store(store, "ctl", tasks, workers=1, rate=1.0, timeout=30.0) is None
    info = DeadlineInfo(8.0, 1234.5, 1.0, 0.2)
    store.put(info_key("ctl"), info.dumps())
    found = Deadline.from_store(store, "ctl", tasks, workers=1, rate=1.0, timeout=30.0)
    assert found is not None and found.info == info
