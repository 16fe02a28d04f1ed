"""The controller's account of a run, built from what workers report after each attempt.

Workers send plain dicts (they cross the xdist wire); this module turns them into the
`RunRecord` the reports and the tracker read. It is thread-safe because the monitor thread
reads it while the controller's main loop adds to it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from dataclasses import asdict
from typing import Any

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


def task_to_wire(task: Task) -> dict[str, Any]:
    data = asdict(task)
    data["depends_on"] = list(task.depends_on)
    return data


def task_from_wire(data: dict[str, Any]) -> Task:
    fields = dict(data)
    fields["depends_on"] = tuple(fields.get("depends_on", ()))
    return Task(**fields)


class RunRecorder:
    """Collects attempts per task and hands out the ones that ended since the last look."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self._lock = threading.Lock()
        self._by_node: dict[str, TaskResult] = {}
        self._fresh: list[Attempt] = []
        self._ended: set[str] = set()

    def task_seen(self, nodeid: str, task: dict[str, Any], batch: str | None = None) -> TaskResult:
        with self._lock:
            result = self._result(nodeid, task)
            result.batch = batch or result.batch
            return result

    def _result(self, nodeid: str, task: dict[str, Any] | None) -> TaskResult:
        result = self._by_node.get(nodeid)
        if result is None:
            if task is None:
                raise KeyError(nodeid)
            result = TaskResult(task=task_from_wire(task))
            self._by_node[nodeid] = result
            self.record.results.append(result)
        return result

    def attempt(self, nodeid: str, info: dict[str, Any], outcome: str) -> TaskResult:
        """One attempt ended on a worker with `outcome` (passed, failed, rerun, skipped);
        returns the task's result so far."""
        with self._lock:
            result = self._result(nodeid, info.get("task"))
            result.batch = info.get("batch") or result.batch
            self.record.requests.extend(info.get("requests") or ())
            attempt = Attempt(
                number=int(info.get("attempt") or len(result.attempts) + 1),
                outcome=outcome,
                started=float(info.get("started") or 0.0),
                finished=float(info.get("finished") or 0.0),
                worker=str(info.get("worker") or "main"),
                error=info.get("error"),
                overload=bool(info.get("overload")),
                refused=bool(info.get("refused")),
                usage=Usage.from_dict(info.get("usage")),
            )
            if outcome != SKIPPED:
                result.attempts.append(attempt)
                self._fresh.append(attempt)
            if outcome != RERUN:
                self._ended.add(nodeid)
                result.outcome = outcome
                result.error = attempt.error if outcome in (FAILED, SKIPPED) else None
                if outcome == PASSED:
                    result.answer = info.get("answer")
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

    def settle(
        self, missing: Iterable[tuple[str, dict[str, Any]]], running: Collection[str] = ()
    ) -> None:
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
