"""The deadline: which tasks still fit before the run must end, decided as each one starts.

`--roadmap-deadline 45m` gives the run until its start plus 45 minutes, less the time its
end takes (the workers stopping, the reports and the tracker). Each task is judged by the
worker about to start it, with the throughput measured so far: every task's worker time
(from its start to its final outcome) is added to two counters in the store, so every
worker and every CI shard sharing the run forecasts from the same figure. A task starts
only if it can finish before the cut and if, after it, there is still room for every task
of higher priority (a lower priority number) that comes later in the run order; otherwise
it is skipped with the forecast in its reason. Once a task of priority p has been left out,
no task of a lower priority starts any more (a shared floor in the store), so the tasks that
ran are the highest-priority ones that fit. Batches and dependencies keep their order: a
skipped task counts as done for its batch, and its dependants are skipped as after any skip.

Before any task time is known (no task has ended, no earlier report, no
`--roadmap-expected-latency`), the room for the tasks after it cannot be judged, so a task
that has a higher-priority task later in the run order does not start on a guess: it waits
(in its setup, holding no slot) until the first task ends, and is judged with that time.
While no task of the run is running, none will end to be measured: such a task is then
judged as if a task took the task timeout, the longest an attempt may take. A task with no
higher-priority task after it starts as before, unless no time is left.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pytest_roadmap.plan import History, shown_seconds
from pytest_roadmap.store.base import Store
from pytest_roadmap.tasks import Task

DONE_KEY = "deadline:done"  # tasks that reached their final outcome
BUSY_KEY = "deadline:busy_ms"  # their worker time, in milliseconds
FLOOR_KEY = "deadline:floor"  # the most important priority left out for time
RUNNING_KEY = "deadline:running"  # tasks started and not yet at their final outcome
POLL_S = 0.05  # seconds between looks at the store while waiting for the first measurement
# The end of a run: the reports, the tracker, the workers stopping, the exit. Measured
# from the record's end to the process's exit against the sandbox on a loaded 2-core machine
# (docs/benchmarks.md, "The plan's start-up"): 0.2 to 0.3 s for 6 tasks, 0.8 s for 600.
# Kept about twice that, since a loaded machine is slower still.
END_BASE_S = 1.0
END_PER_TASK_S = 0.002
# A process that began this long before the plugin configured is not a plain `pytest`
# command (pytester, a long-lived wrapper): its age says nothing about this run.
MAX_STARTUP_S = 10.0


def info_key(instance: str) -> str:
    return f"deadline:{instance}"


def end_reserve(tasks: int, measured: float | None = None) -> float:
    """Seconds kept at the end for stopping and writing, for a run of `tasks` tasks."""
    estimate = END_BASE_S + END_PER_TASK_S * tasks
    return max(estimate, 1.5 * measured) if measured is not None else estimate


def process_age(proc: str = "/proc") -> float | None:
    """Seconds since this process began (Linux), or None where that is not known."""
    try:
        with open(f"{proc}/self/stat", encoding="ascii") as stat:
            # The command name may hold spaces and parentheses: fields follow the last ")".
            fields = stat.read().rsplit(")", 1)[1].split()
        with open(f"{proc}/uptime", encoding="ascii") as uptime:
            up = float(uptime.read().split()[0])
        return max(0.0, up - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def run_started(now: float, age: float | None) -> float:
    """When the run began: the process's start when it was recent, else `now`."""
    return now - age if age is not None and age <= MAX_STARTUP_S else now


@dataclass(frozen=True)
class DeadlineInfo:
    """What the controller decides at its start and every worker reads from the store."""

    seconds: float  # the deadline as given
    ends_at: float  # epoch seconds
    expected_task_s: float | None = None  # a task's worker time before any was measured
    measured_end_s: float | None = None  # the end of the last run, as its report measured

    def dumps(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def loads(cls, text: str) -> DeadlineInfo:
        return cls(**json.loads(text))


def deadline_info(
    seconds: float,
    *,
    now: float,
    age: float | None,
    history: History | None = None,
    expected_latency: float | None = None,
) -> DeadlineInfo:
    """The deadline of a run configured at `now` by a process `age` seconds old."""
    expected = expected_latency
    if expected is None and history is not None and history.mean_latency is not None:
        overhead = history.overhead_s or 0.0
        expected = history.mean_latency * (1.0 + history.retry_rate) + overhead
    return DeadlineInfo(
        seconds=seconds,
        ends_at=run_started(now, age) + seconds,
        expected_task_s=expected,
        measured_end_s=history.finish_s if history is not None else None,
    )


def startable(now: float, cut: float, per_task: float, workers: int) -> int:
    """How many tasks of `per_task` seconds can still start and end by `cut` on `workers`
    workers: this one is free now, the others are on average spread over one task."""
    if per_task <= 0:
        return 1 << 30
    count = 0
    for j in range(max(1, workers)):
        free = now + per_task * j / max(1, workers)
        count += max(0, math.floor((cut - free) / per_task + 1e-9))
    return count


class Deadline:
    """One process's judge of whether a task may start before the deadline."""

    def __init__(
        self,
        store: Store,
        info: DeadlineInfo,
        tasks: Sequence[Task],
        *,
        workers: int,
        rate: float,
        timeout: float,
        shards: int = 1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.info = info
        self.workers = max(1, workers)
        self.timeout = timeout  # an attempt's longest: the forecast when nothing can be measured
        self.rate = rate / max(1, shards)  # the shards share the rate limit
        self.reserve = end_reserve(len(tasks), info.measured_end_s)
        self.cut = info.ends_at - self.reserve
        self._clock = clock
        self._sleep = sleep
        self._started: dict[str, float] = {}
        # For each task: the tasks of higher priority after it in the run order.
        self._more_important: dict[str, int] = {}
        later: dict[int, int] = {}
        for task in reversed(tasks):
            self._more_important[task.id] = sum(n for p, n in later.items() if p < task.priority)
            later[task.priority] = later.get(task.priority, 0) + 1

    @classmethod
    def from_store(
        cls, store: Store, instance: str, tasks: Sequence[Task], **limits: Any
    ) -> Deadline | None:
        """The judge for the run whose controller is `instance`, if it has a deadline."""
        text = store.get(info_key(instance))
        return cls(store, DeadlineInfo.loads(text), tasks, **limits) if text else None

    def per_task(self) -> float | None:
        """A task's worker time so far in the run (every worker and shard), or the expected
        one before any ended."""
        done = self.store.incr(DONE_KEY, 0)
        if done:
            return self.store.incr(BUSY_KEY, 0) / 1000.0 / done
        return self.info.expected_task_s

    def check(self, task: Task) -> str | None:
        """None if `task` may start now (its start is timed), else why it is skipped."""
        floor = self._floor()
        if floor is not None and task.priority > floor:
            why = f"a priority-{floor} task was left out, and this one is priority {task.priority}"
            return self._left_out(task, self._words(self._clock(), self.per_task(), why))
        ahead = self._more_important.get(task.id, 0)
        per = self.per_task()
        guessed = False
        if per is None and ahead:
            # Starting it on no forecast could leave a more important task out.
            per = self._first_measure()
            if per is None:
                per, guessed = self.timeout, True
        now = self._clock()
        if now >= self.cut:
            return self._left_out(
                task, self._words(now, per, "no time is left to start it", guessed)
            )
        if per is not None:
            if now + per > self.cut:
                return self._left_out(
                    task,
                    self._words(now, per, "it would not finish before the reports", guessed),
                )
            room = min(
                startable(now, self.cut, per, self.workers),
                math.floor((self.cut - now) * self.rate),
            )
            if ahead + 1 > room:
                return self._left_out(
                    task,
                    self._words(
                        now,
                        per,
                        f"room for {room} more tasks, and {ahead} of higher priority are "
                        "still to run",
                        guessed,
                    ),
                )
        self._started[task.id] = now
        self.store.incr(RUNNING_KEY)
        return None

    def _first_measure(self) -> float | None:
        """Wait for the first task time while some task runs; None if none runs (or the
        cut came first)."""
        while True:
            per = self.per_task()
            if per is not None:
                return per
            if self.store.incr(RUNNING_KEY, 0) <= 0 or self._clock() >= self.cut:
                return None
            self._sleep(POLL_S)

    def check_retry(self, task: Task, delay: float) -> str | None:
        """None if a retry of `task` after `delay` seconds can still end before the cut."""
        now = self._clock()
        per = self.per_task() or 0.0
        if now + delay + per <= self.cut:
            return None
        return self._words(now, per, f"a retry after {shown_seconds(delay)} would end too late")

    def ended(self, task_id: str) -> None:
        """`task_id` reached its final outcome: its worker time joins the measurement."""
        started = self._started.pop(task_id, None)
        if started is None:
            return
        self.store.incr(RUNNING_KEY, -1)
        self.store.incr(DONE_KEY)
        self.store.incr(BUSY_KEY, max(1, round((self._clock() - started) * 1000)))

    def _floor(self) -> int | None:
        text = self.store.get(FLOOR_KEY)
        return int(text) if text is not None and text.isdigit() else None

    def _left_out(self, task: Task, why: str) -> str:
        for _ in range(20):  # compare-and-set: other workers may be lowering it too
            text = self.store.get(FLOOR_KEY)
            if text is not None and text.isdigit() and int(text) <= task.priority:
                break
            if self.store.swap(FLOOR_KEY, text, str(task.priority)):
                break
        return f"not started: {why}"

    def _words(self, now: float, per: float | None, why: str, guessed: bool = False) -> str:
        ends = datetime.fromtimestamp(self.info.ends_at).strftime("%H:%M:%S")
        if per is None:
            pace = "no task has ended yet"
        elif guessed:
            pace = (
                f"{shown_seconds(per)} a task (the task timeout: none has ended yet, none "
                f"is running), {self.workers} at a time"
            )
        else:
            pace = f"{shown_seconds(per)} a task, {self.workers} at a time"
        left = max(0.0, self.cut - now)
        return (
            f"deadline {shown_seconds(self.info.seconds)} (--roadmap-deadline, ends {ends}); "
            f"forecast: {pace}, {shown_seconds(left)} left before the "
            f"{shown_seconds(self.reserve)} kept for the reports; {why}"
        )
