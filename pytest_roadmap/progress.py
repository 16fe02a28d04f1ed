"""The controller's keeping of a run's progress while it goes on, so that an interruption
loses as little as possible.

Each task's final outcome reaches the tracker within about a second (`TrackerWriter`), the
batch file's alerts are judged as tasks start and end, and when the run is interrupted the
workers are told to send nothing more before anything else happens. At the end, every
selected task is accounted for, those that never ran included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_roadmap.alerts import RunAlerts
from pytest_roadmap.batches import MonitoringRules
from pytest_roadmap.errors import RoadmapError
from pytest_roadmap.interrupt import stop_run
from pytest_roadmap.recorder import RunRecorder
from pytest_roadmap.results import FAILED, PASSED, Alert, TaskResult
from pytest_roadmap.store.base import Store, StoreError
from pytest_roadmap.tasks import Task, load_tasks
from pytest_roadmap.wire import python_task

if TYPE_CHECKING:
    from pytest_roadmap.tracker import TrackerWriter


class ProgressKeeper:
    """One run's tracker writer, alerts and stop flag, on the controller."""

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        tracker: Path | None,
        store: Store | None,
        instance: str,
        monitoring: MonitoringRules | None = None,
        source: str = "",
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._recorder = recorder
        self._tracker = tracker  # None: leave it alone (a run on the sandbox)
        self._store = store
        self._instance = instance
        self._alerts = RunAlerts(monitoring, source) if monitoring else None
        self.say = say
        self._writer: TrackerWriter | None = None

    def started(self, queued: int) -> None:
        """A task started; `queued` are still waiting to."""
        if self._alerts is not None:
            self._alert(self._alerts.queue(queued))

    def ended(self, result: TaskResult) -> None:
        """A task has its final outcome."""
        if result.outcome in (PASSED, FAILED) and self._tracker is not None:
            if self._writer is None:
                # Imported with the first outcome: only the controller of a real run needs it.
                from pytest_roadmap.tracker import ProgressTracker, TrackerWriter

                self._writer = TrackerWriter(ProgressTracker(self._tracker))
            self._writer.add(result)
        if self._alerts is not None:
            self._alert(self._alerts.task_ended(result.outcome))

    def _alert(self, alert: Alert | None) -> None:
        if alert is not None:
            self._recorder.record.alerts.append(alert)
            self.say(alert.message)

    def interrupted(self, why: str) -> None:
        """The run is ending early: first of all, no worker may send another request."""
        self._recorder.record.interrupted = why
        if self._store is not None:
            # Best effort: a store that is gone cannot carry the flag, and the workers it
            # coordinated cannot pass their rate limit without it either.
            with contextlib.suppress(StoreError):
                stop_run(self._store, self._instance)

    def close_tracker(self) -> tuple[set[str], str | None]:
        """Stop the tracker writer: the ids it recorded, and the error that stopped it."""
        if self._writer is None:
            return set(), None
        written = self._writer.close()
        return written, self._writer.error

    def settle(
        self,
        nodeids: Iterable[str],
        describe: Callable[[str], Task | None],
        running: Collection[str] = (),
    ) -> None:
        """Account for every selected task (`nodeids`): one never reported gets its task
        from `describe` (None: not a roadmap task) and the outcome INTERRUPTED if it was
        `running`, NOT_RUN otherwise."""
        missing = []
        for nodeid in nodeids:
            if not self._recorder.seen(nodeid):
                task = describe(nodeid)
                if task is not None:
                    missing.append((nodeid, task))
        self._recorder.settle(missing, running)


def tasks_from_task_files(folder: Path, rootdir: Path) -> Callable[[str], Task | None]:
    """The task of each node id an xdist controller was told of (it collects nothing itself).

    Task files are read once, and only if some selected task never reported: that is, only
    after an interruption. A Python task gets neutral roadmap fields; a node id of neither
    kind, or a task file that no longer reads, gives None.
    """
    cache: dict[str, Task] | None = None

    def describe(nodeid: str) -> Task | None:
        nonlocal cache
        path, _, name = nodeid.rpartition("::")
        if path.endswith(".toml"):
            if cache is None:
                try:
                    cache = {t.id: t for t in load_tasks(folder, rootdir)}
                except RoadmapError:
                    cache = {}
            return cache.get(name)
        if path.endswith(".py") and name:
            return python_task(name, Path(path).name)
        return None

    return describe
