"""Task files as pytest collectors and tasks as pytest items.

An item runs its task by calling this process's `TaskRunner` (run.py) directly; the
per-attempt hooks around it (setup, report, teardown) are in attempt.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_roadmap.checks.replay import NoSavedAnswer
from pytest_roadmap.checks.verdict import ChecksErrored, ChecksFailed, Verdict
from pytest_roadmap.display import escape_controls
from pytest_roadmap.errors import RoadmapError, TaskFileError
from pytest_roadmap.pacing import QuotaExhausted
from pytest_roadmap.protocol import BEAST, PROTOCOLS, Protocol
from pytest_roadmap.retry import TaskFailure
from pytest_roadmap.tasks import Task, check_protocol, load_task_file

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from pytest_roadmap.run import TaskRunner

# The fixture that makes a Python test function a roadmap task.
CLIENT_FIXTURE = "roadmap_client"
# This process's task runner (set at configure time in the processes that run tasks).
RUNNER: pytest.StashKey[TaskRunner] = pytest.StashKey()

# Claimed ids per session, so a duplicate in a later file is that file's collection error.
SEEN_IDS = pytest.StashKey[dict[str, str]]()
# The run's protocol: a task field it cannot send is its file's collection error.
RUN_PROTOCOL = pytest.StashKey[Protocol]()


class TaskFile(pytest.File):
    """One TOML task file; its items come out in a stable roadmap order."""

    def collect(self) -> Iterator[TaskItem]:
        display = self.nodeid or self.path.name
        tasks = load_task_file(self.path, display)
        check_protocol(tasks, self.config.stash.get(RUN_PROTOCOL, PROTOCOLS[BEAST]))
        seen = self.session.stash.setdefault(SEEN_IDS, {})
        for task in tasks:
            if task.id in seen and seen[task.id] != display:
                raise TaskFileError(
                    f"{display}: duplicate task id {task.id!r}, also in {seen[task.id]}; "
                    "task ids must be unique across all task files"
                )
            seen[task.id] = display
        for task in sorted(tasks, key=lambda t: (t.month, t.week, t.priority, t.id)):
            yield TaskItem.from_parent(self, name=task.id, task=task)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, RoadmapError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def odd_task_files(folder: pytest.Directory) -> list[TaskFile]:
    """The `*.toml` entries of `folder` that pytest's folders pass over without a word
    (they collect only regular files): FIFOs, devices, sockets and broken links. As
    `TaskFile`s, each fails its collection saying what it is."""
    with os.scandir(folder.path) as entries:
        odd = sorted(
            Path(e.path)
            for e in entries
            if e.name.endswith(".toml") and not e.is_dir() and not e.is_file()
        )
    ihook, config = folder.ihook, folder.config
    return [
        TaskFile.from_parent(folder, path=path)
        for path in odd
        if not ihook.pytest_ignore_collect(collection_path=path, config=config)
    ]


class TaskItem(pytest.Item):
    """One roadmap task: passes when the API answered and the answer passed its checks."""

    def __init__(self, *, task: Task, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.extra_keyword_matches.update(task.keywords)
        self.add_marker("roadmap")
        self.answer: dict[str, Any] | None = None  # this attempt's answer, if one came
        self.verdict: Verdict | None = None  # its checks' results, if it has checks

    def runtest(self) -> None:
        runner = self.config.stash.get(RUNNER, None)
        if runner is None:  # pragma: no cover - items run only where a runner is
            raise pytest.UsageError("roadmap tasks run only with --roadmap")
        attempt = int(getattr(self, "execution_count", 1))
        self.answer = self.verdict = None
        try:
            self.answer = runner.call(self.nodeid, self.task, attempt)
        except (QuotaExhausted, NoSavedAnswer) as stopped:
            pytest.skip(str(stopped))
        try:
            self.verdict = runner.judge(self.nodeid, self.task, self.answer, attempt)
        except (ChecksFailed, ChecksErrored) as rejected:
            self.verdict = rejected.verdict
            raise

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        error = excinfo.value
        if isinstance(error, TaskFailure):
            return f"roadmap task {self.task.id!r} failed: {error.reason}"
        if isinstance(error, ChecksFailed):
            return f"roadmap task {self.task.id!r}: the answer failed its checks\n{error.paragraph}"
        if isinstance(error, ChecksErrored):
            return (
                f"roadmap task {self.task.id!r}: a check could not judge the answer (an error "
                f"of the check, not of the answer)\n{error.paragraph}"
            )
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"roadmap task {self.task.id}: {escape_controls(self.task.title)}"


def is_roadmap_item(item: pytest.Item) -> bool:
    """A task file's item, or a Python test function that asks for the API client."""
    return isinstance(item, TaskItem) or CLIENT_FIXTURE in getattr(item, "fixturenames", ())
