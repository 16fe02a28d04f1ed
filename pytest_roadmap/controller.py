"""The controller's session hooks: they turn pytest's session events into calls on the
run's `Controller` (run.py).

Registered with `--roadmap` in the process that controls the run: the xdist controller, or
the only process. It hears every report, from its workers or its own items.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_roadmap.interrupt import interruption
from pytest_roadmap.progress import tasks_from_task_files
from pytest_roadmap.results import FAILED, RERUN
from pytest_roadmap.run import Controller
from pytest_roadmap.tasks import Task
from pytest_roadmap.terminal import REFUSED_STATUS, summary_lines
from pytest_roadmap.wire import TaskStarting, from_wire, refused_for_load


class ControllerHooks:
    """Monitor, record, settle, write: the run's life as its controller sees it."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.describe: Callable[[str], Task | None] | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # The task of a node id, for a crash report of a task that never reported: read
        # from the task files only then (an xdist controller collects nothing).
        tasks_dir = self.controller.run.settings.tasks_dir
        self.describe = tasks_from_task_files(tasks_dir, session.config.rootpath)
        terminal = session.config.pluginmanager.get_plugin("terminalreporter")
        say = (lambda line: _status(terminal, line)) if terminal else (lambda line: None)
        self.controller.start_monitor(say)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        message = from_wire(getattr(report, "roadmap", None))
        if message is None:
            if report.when not in ("setup", "call", "teardown") and report.outcome in (
                FAILED,
                RERUN,
            ):
                # xdist's report for a task whose worker crashed mid-attempt.
                node = getattr(report, "node", None)
                worker = node.gateway.id if node is not None else "?"
                self.controller.worker_crashed(report.nodeid, worker, report.outcome, self.describe)
        elif isinstance(message, TaskStarting):
            self.controller.task_starting(report.nodeid, message)
        else:
            self.controller.attempt_ended(report.nodeid, message, report.outcome)

    @pytest.hookimpl(tryfirst=True)  # before pytest-rerunfailures' own: "rerun", R
    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[Any, ...] | None:
        # An attempt refused for load is rerun by pytest-rerunfailures, but it is no rerun
        # of a failure: it gets its own letter, word and count (report.json and JUnit
        # already count it apart, as refusals).
        if report.outcome == RERUN and refused_for_load(getattr(report, "roadmap", None)):
            return REFUSED_STATUS
        return None

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        # Ctrl-C, SIGTERM, or xdist stopping (-x, a worker interrupted): before the reports
        # are written, the workers are told to send nothing more.
        self.controller.interrupted(interruption(excinfo.value))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        controller = self.controller
        if controller.finish(controller.run.settings.tasks_dir, session.config.rootpath):
            # Tasks were skipped because the API's quota is gone: the run did not do its work.
            session.exitstatus = pytest.ExitCode.INTERRUPTED

    def pytest_terminal_summary(
        self, terminalreporter: Any, exitstatus: int, config: pytest.Config
    ) -> None:
        controller = self.controller
        record = controller.recorder.record
        if not record.results:
            return
        terminalreporter.write_sep("=", "roadmap summary")
        run = controller.run
        names = [b.name for b in run.plan.batches] if run.plan else []
        for line in summary_lines(record, names, run.left_out):
            terminalreporter.write_line(run.redact(line))
        for line in controller.end_lines:
            terminalreporter.write_line(run.redact(line))


def _status(terminal: Any, line: str) -> None:
    # xdist's progress letters leave the cursor mid-line; a status line gets its own line.
    writer = getattr(terminal, "_tw", None)
    if writer is not None and int(getattr(writer, "width_of_current_line", 0)):
        terminal.write("\n")
    terminal.write_line(line)
