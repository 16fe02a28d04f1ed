"""The collection hooks: which task files are collected, which tasks run, in what order,
with which markers.

Registered with `--roadmap` in every process that collects (a worker, the only process, a
`--collect-only` run); an xdist controller collects nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Generator, Mapping
from pathlib import Path

import pytest

from pytest_roadmap.attempt import retryable
from pytest_roadmap.batches import BatchPlan, dependency_problems, run_order
from pytest_roadmap.budgets import unbounded_tasks
from pytest_roadmap.checks import check_retries, most_seconds
from pytest_roadmap.collect import TaskFile, TaskItem, is_roadmap_item, odd_task_files
from pytest_roadmap.run import FREEZE_FROM, Controller, Role, RunConfig, TaskRunner
from pytest_roadmap.settings import Settings
from pytest_roadmap.tasks import Task
from pytest_roadmap.wire import python_task

# Extra seconds pytest-timeout allows beyond the HTTP read timeout, so a slow API is
# reported by the client's clear words; pytest-timeout catches whatever else hangs.
TIMEOUT_GRACE = 2.0


class SelectionHooks:
    """Task files into items; after -k and -m, the run order, the markers and the queue."""

    def __init__(
        self, run: RunConfig, runner: TaskRunner | None, controller: Controller | None
    ) -> None:
        self.run = run
        self.runner = runner  # where tasks run: their turns are registered in the store
        self.controller = controller  # without workers: it accounts for the selection
        self.every: dict[str, Task] = {}  # every collected task by id, before -k and -m

    def _holds_tasks(self, path: Path, config: pytest.Config) -> bool:
        """`path` is in the tasks folder or was named on the command line (it or a folder
        above it below the rootdir)."""
        if path.is_relative_to(self.run.settings.tasks_dir):
            return True
        return config.args_source == pytest.Config.ArgsSource.ARGS and any(
            path == Path(arg.split("::")[0]).resolve()
            or (
                Path(arg.split("::")[0]).resolve().is_dir()
                and path.is_relative_to(Path(arg.split("::")[0]).resolve())
                and not config.rootpath.is_relative_to(Path(arg.split("::")[0]).resolve())
            )
            for arg in config.args
        )

    def pytest_ignore_collect(self, collection_path: Path, config: pytest.Config) -> bool | None:
        # A `checks/` folder of the tasks folder holds what checks run (test files for
        # command checks, modules of check functions), not tests of this run.
        tasks_dir = self.run.settings.tasks_dir
        if collection_path.name == "checks" and collection_path.parent.is_relative_to(tasks_dir):
            return True
        return None

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> TaskFile | None:
        if file_path.suffix == ".toml" and self._holds_tasks(file_path, parent.config):
            return TaskFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        # pytest's folders skip a FIFO or a device named *.toml without a word; adding it
        # as a task file makes its loading fail with a line that names it.
        report = yield
        if (
            isinstance(collector, pytest.Directory)
            and report.passed
            and self._holds_tasks(collector.path, collector.config)
        ):
            report.result.extend(odd_task_files(collector))
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None, None, None]:
        self._check_dependencies(config, items)
        yield  # -k and -m deselect here
        self._order_and_mark(config, items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Collected items live until the session ends, yet every full garbage collection
        # walks them again: at 10,000 tasks pytest's five gc.collect() calls at exit alone
        # took 0.7 s of a 3.2 s `--co` (docs/benchmarks.md). gc.freeze() takes them out of
        # the collector's walks; nothing of theirs would be collected before exit anyway. An
        # xdist worker is a process of the run's own, so it always freezes: at -n 8 on 2
        # cores the workers took 1.9 s to exit, garbage-collecting at once, and 0.1 s
        # frozen. Elsewhere the process may outlive the session (pytester runs sessions
        # in-process), so only large runs freeze.
        if self.run.role is Role.WORKER or len(session.items) >= FREEZE_FROM:
            gc.freeze()

    def _check_dependencies(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Dependency problems are collection errors, judged over every collected task."""
        tasks = [item.task for item in items if isinstance(item, TaskItem)]
        # Before -k and -m: a dependency left out of the selection is still known by its id.
        self.every = {task.id: task for task in tasks}
        for problem in dependency_problems(tasks, self.run.plan):
            report = pytest.CollectReport(
                nodeid=problem.split(":")[0], outcome="failed", longrepr=problem, result=[]
            )
            config.hook.pytest_collectreport(report=report)

    def _order_and_mark(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """After -k and -m: batch mode's selection, the run order, markers and the queue."""
        settings = self.run.settings
        plan = self.run.plan
        if plan is not None:
            outside = [i for i in items if is_roadmap_item(i) and not _in_plan(i, plan)]
            if outside:
                config.hook.pytest_deselected(items=outside)
                items[:] = [i for i in items if i not in outside]
        task_items = {i.task.id: i for i in items if isinstance(i, TaskItem)}
        bounds = (
            (i.nodeid.split("::")[0], i.task.id, i.task.max_tokens) for i in task_items.values()
        )
        for where, line in unbounded_tasks(bounds, settings.max_tokens, settings.max_cost):
            failed = pytest.CollectReport(where, "failed", line, [])
            config.hook.pytest_collectreport(report=failed)
        ordered = run_order([i.task for i in task_items.values()], plan)
        # Task items take the run order among the places task items held; others stay put.
        places = [n for n, i in enumerate(items) if isinstance(i, TaskItem)]
        for place, in_order in zip(places, ordered, strict=True):
            items[place] = task_items[in_order.id]
        completed = self.run.completed if config.option.roadmap_resume else frozenset()
        resumed: list[str] = []
        marks = _Marks(settings)
        queued = 0
        for item in items:
            if not is_roadmap_item(item):
                continue
            if isinstance(item, TaskItem) and item.task.tracker_key in completed:
                resumed.append(item.task.id)
                item.add_marker(marks.resumed)
                continue
            task = item.task if isinstance(item, TaskItem) else None
            if item.get_closest_marker("flaky") is None:
                reruns = task.retries if task and task.retries is not None else settings.reruns
                # New answers for a wrong one are reruns too; the runner keeps each kind
                # to its own count (TaskRunner.call, TaskRunner.judge).
                more = (
                    check_retries(task.checks, task.check_retries, settings.check_retries)
                    if task is not None
                    else 0
                )
                item.add_marker(marks.flaky(reruns + more))
            if item.get_closest_marker("timeout") is None:
                seconds = task.timeout if task and task.timeout else settings.timeout
                grace = 0.0
                if task is not None:
                    checking = most_seconds(task.checks, settings.check_timeout, settings.timeout)
                    grace = TIMEOUT_GRACE + checking
                item.add_marker(marks.timeout(seconds + grace))
            queued += 1
            if settings.max_queue and queued > settings.max_queue:
                item.add_marker(marks.queue_full)
        if self.controller is not None:
            self.controller.selected = {
                item.nodeid: item.task
                if isinstance(item, TaskItem)
                else python_task(item.name, item.path.name)
                for item in items
                if is_roadmap_item(item)
            }
            self.controller.expected = len(self.controller.selected)
        if self.runner is not None:
            complete, unmet = self._outside_dependencies(task_items)
            self.runner.sequence(
                {task_id: item.task for task_id, item in task_items.items()},
                stop_on_failure=config.option.roadmap_stop_on_failure,
                complete=complete,
                outside=unmet,
                resumed=resumed,
            )
            # The deadline judges only the tasks this process may send, in run order.
            self.runner.keep_deadline(
                [t for t in ordered if not task_items[t.id].get_closest_marker("skip")]
            )

    def _outside_dependencies(
        self, selected: Mapping[str, TaskItem]
    ) -> tuple[set[str], dict[str, str]]:
        """Dependencies of selected tasks that this run did not select: those the tracker
        marks complete (met), and for the others, why their dependants are skipped and how
        to run them. Another shard may still select them; the sequencer asks the store
        first."""
        complete: set[str] = set()
        outside: dict[str, str] = {}
        tracker = self.run.settings.tracker.name
        plan = self.run.plan
        for item in selected.values():
            for dep in item.task.depends_on:
                if dep in selected or dep in complete or dep in outside or dep not in self.every:
                    continue
                task = self.every[dep]
                if task.tracker_key in self.run.completed:
                    complete.add(dep)
                    continue
                if plan is not None and plan.batch_of(dep) is None:
                    how = f"add it to a batch of {plan.source}"
                else:
                    how = f'select it too (e.g. -k "{item.task.id} or {dep}")'
                outside[dep] = (
                    f"dependency {dep!r} was not selected in this run and {tracker} does not "
                    f"mark it complete: {how}, or run it first"
                )
        return complete, outside


class _Marks:
    """The markers the plugin puts on task items, each made once: with 10,000 tasks,
    building a marker per item was a third of the collection time."""

    def __init__(self, settings: Settings) -> None:
        self.resumed = pytest.mark.skip(
            reason=f"already complete in {settings.tracker.name} (--roadmap-resume)"
        )
        self.queue_full = pytest.mark.skip(
            reason=f"queue full (max {settings.max_queue}): raise --roadmap-max-queue "
            "or select fewer tasks with -k"
        )
        self._flaky: dict[int, pytest.MarkDecorator] = {}
        self._timeout: dict[float, pytest.MarkDecorator] = {}

    def flaky(self, reruns: int) -> pytest.MarkDecorator:
        if reruns not in self._flaky:
            self._flaky[reruns] = pytest.mark.flaky(reruns=reruns, condition=retryable)
        return self._flaky[reruns]

    def timeout(self, seconds: float) -> pytest.MarkDecorator:
        if seconds not in self._timeout:
            self._timeout[seconds] = pytest.mark.timeout(seconds, func_only=True)
        return self._timeout[seconds]


def _in_plan(item: pytest.Item, plan: BatchPlan) -> bool:
    return isinstance(item, TaskItem) and plan.batch_of(item.task.id) is not None
