"""The controller's account of a run, built from what workers report after each attempt.

Workers send `wire.AttemptEnded` messages (plain dicts on the xdist wire); this module
turns them into the `RunRecord` the reports and the tracker read. It is thread-safe because
the monitor thread reads it while the controller's main loop adds to it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable

from pytest_roadmap.checks.verdict import Verdict
from pytest_roadmap.protocol import Usage
from pytest_roadmap.results import (
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    PASSED,
    RERUN,
    SKIPPED,
    Attempt,
    RunRecord,
    TaskResult,
)
from pytest_roadmap.tasks import Task
from pytest_roadmap.wire import AttemptEnded


class RunRecorder:
    """Collects attempts per task and hands out the ones that ended since the last look."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self._lock = threading.Lock()
        self._by_node: dict[str, TaskResult] = {}
        self._fresh: list[Attempt] = []
        self._ended: set[str] = set()

    def task_seen(self, nodeid: str, task: Task, batch: str | None = None) -> TaskResult:
        with self._lock:
            result = self._result(nodeid, task)
            result.batch = batch or result.batch
            return result

    def _result(self, nodeid: str, task: Task | None) -> TaskResult:
        result = self._by_node.get(nodeid)
        if result is None:
            if task is None:
                raise KeyError(nodeid)
            result = TaskResult(task=task)
            self._by_node[nodeid] = result
            self.record.results.append(result)
        return result

    def attempt(self, nodeid: str, ended: AttemptEnded, outcome: str) -> TaskResult:
        """One attempt ended on a worker with `outcome` (passed, failed, rerun, skipped);
        returns the task's result so far."""
        with self._lock:
            result = self._result(nodeid, ended.task)
            result.batch = ended.batch or result.batch
            self.record.requests.extend(ended.requests)
            attempt = Attempt(
                number=ended.attempt or len(result.attempts) + 1,
                outcome=outcome,
                started=ended.started,
                finished=ended.finished,
                worker=ended.worker or "main",
                error=ended.error,
                overload=ended.overload,
                refused=ended.refused,
                usage=Usage.from_dict(ended.usage),
                checks=None if ended.checks is None else Verdict.from_list(ended.checks),
            )
            if outcome != SKIPPED:
                result.attempts.append(attempt)
                self._fresh.append(attempt)
            if outcome != RERUN:
                self._ended.add(nodeid)
                result.outcome = outcome
                result.error = attempt.error if outcome in (FAILED, SKIPPED) else None
            if ended.answer is not None:
                result.answer = ended.answer
            return result

    def crashed(self, nodeid: str, worker: str, error: str, at: float) -> None:
        """A worker died while running this task: it failed, and the run goes on."""
        with self._lock:
            result = self._by_node.get(nodeid)
            if result is None:
                return
            started = result.finished or at
            attempt = Attempt(len(result.attempts) + 1, FAILED, started, at, worker, error, True)
            result.attempts.append(attempt)
            self._fresh.append(attempt)
            self._ended.add(nodeid)
            result.outcome, result.error = FAILED, error

    def seen(self, nodeid: str) -> bool:
        """Whether any report of this task reached the controller."""
        with self._lock:
            return nodeid in self._by_node

    def settle(self, missing: Iterable[tuple[str, Task]], running: Collection[str] = ()) -> None:
        """At the end of the run, give every task an outcome. A task that started but never
        ended was cut off (INTERRUPTED); so was one of `missing` (`(nodeid, task)` of the
        selected tasks never reported) that was `running`, while the others did not run
        (NOT_RUN). pytest-rerunfailures reports an attempt only once it has ended, so a
        task in its first attempt is known to have started from `running` alone."""
        why = self.record.interrupted
        ended_by = f"the run was interrupted ({why})" if why else "the run ended"
        with self._lock:
            for nodeid, result in self._by_node.items():
                if nodeid not in self._ended:
                    result.outcome = INTERRUPTED
                    result.error = f"{ended_by} during attempt {len(result.attempts) + 1}"
            for nodeid, task in missing:
                if nodeid in self._by_node:
                    continue
                result = self._result(nodeid, task)
                if nodeid in running:
                    result.outcome = INTERRUPTED
                    result.error = f"{ended_by} during attempt 1"
                else:
                    result.outcome = NOT_RUN
                    result.error = f"{ended_by} before this task started"

    def take_ended(self) -> list[Attempt]:
        """Attempts that ended since the last call (for the adaptive limit)."""
        with self._lock:
            fresh, self._fresh = self._fresh, []
            return fresh

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
            for nodeid in self._ended:
                outcome = self._by_node[nodeid].outcome
                counts[outcome] = counts.get(outcome, 0) + 1
            return counts
