"""What the processes of a run tell each other, as typed messages over plain dicts.

xdist carries data between the controller and its workers as plain values (execnet
serialises dicts, lists, strings and numbers, nothing else), so each message here is a
dataclass with `to_dict` and `from_dict`:

- down, controller -> worker (`node.workerinput`): `Coordinates`, where the run is;
- up, worker -> controller (`report.roadmap` on a test report): `TaskStarting`, sent with a
  task's passed setup before its call runs, and `AttemptEnded`, sent with the report that
  ends an attempt. The `kind` key tells them apart.

Without xdist the same dicts go from the process's own hooks to its own controller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pytest_roadmap.tasks import Task

STARTING = "starting"
ENDED = "ended"


# A task's checks stay in the process that read its file (each worker reads the task
# files itself); the controller needs only their verdicts, which travel on their own.
_TASK_FIELDS = tuple(f.name for f in fields(Task) if f.name != "checks")


def task_to_wire(task: Task) -> dict[str, Any]:
    # Field by field: asdict() deep-copies, and this runs for every report of every task.
    data = {name: getattr(task, name) for name in _TASK_FIELDS}
    data["depends_on"] = list(task.depends_on)
    return data


def task_from_wire(data: Mapping[str, Any]) -> Task:
    values = dict(data)
    values["depends_on"] = tuple(values.get("depends_on", ()))
    return Task(**values)


def python_task(name: str, source: str) -> Task:
    """A Python task (a test function using `roadmap_client`), with neutral roadmap fields."""
    return Task(id=name, title=name, prompt="", month=1, week=1, source=source)


@dataclass(frozen=True)
class Coordinates:
    """Where the run is: what the controller hands each worker through `workerinput`."""

    api_url: str
    store_url: str
    run_id: str
    instance: str  # unique per controller: names this run's gate holders in the store
    workers: int  # a worker's own options say "no workers"; the pace is bounded by the run's
    completed: frozenset[str] = frozenset()  # tracker keys complete at the start

    def to_dict(self) -> dict[str, Any]:
        return {
            "roadmap_api": self.api_url,
            "roadmap_store": self.store_url,
            "roadmap_run": self.run_id,
            "roadmap_instance": self.instance,
            "roadmap_workers": self.workers,
            # Read once by the controller, so every worker judges resumes and dependencies
            # alike.
            "roadmap_completed": sorted(self.completed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coordinates:
        return cls(
            api_url=data["roadmap_api"],
            store_url=data["roadmap_store"],
            run_id=data["roadmap_run"],
            instance=data["roadmap_instance"],
            workers=int(data["roadmap_workers"]),
            completed=frozenset(data.get("roadmap_completed", ())),
        )


@dataclass(frozen=True)
class TaskStarting:
    """A task passed its setup and its call is about to run."""

    task: Task
    batch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": STARTING, "task": task_to_wire(self.task), "batch": self.batch}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskStarting:
        return cls(task=task_from_wire(data["task"]), batch=data.get("batch"))


@dataclass(frozen=True)
class AttemptEnded:
    """One attempt of a task ended (in its setup or its call), with what it got."""

    task: Task
    attempt: int = 1  # pytest-rerunfailures' count, a refusal for load taken back
    phase: str = "call"  # "setup" or "call"
    worker: str = "main"
    started: float = 0.0
    finished: float = 0.0
    batch: str | None = None
    error: str | None = None  # one line, secrets masked
    overload: bool = False  # tells the adaptive limit to back off
    refused: bool = False  # refused for load: the task did not run
    answer: dict[str, Any] | None = None  # the attempt's answer, if one came, secrets masked
    usage: dict[str, Any] | None = None
    checks: list[dict[str, Any]] | None = None  # the answer's checks (verdict.py), if any
    # The requests this process sent since its last report: the run's own log, for the
    # report's compliance section (compliance.py's entries).
    requests: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not asdict(): that would deep-copy the answer of every task.
        return {
            "kind": ENDED,
            "task": task_to_wire(self.task),
            "attempt": self.attempt,
            "phase": self.phase,
            "worker": self.worker,
            "started": self.started,
            "finished": self.finished,
            "batch": self.batch,
            "error": self.error,
            "overload": self.overload,
            "refused": self.refused,
            "answer": self.answer,
            "usage": self.usage,
            "checks": self.checks,
            "requests": self.requests,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttemptEnded:
        values = {k: v for k, v in data.items() if k != "kind"}
        values["task"] = task_from_wire(data["task"])
        return cls(**values)


def from_wire(data: Mapping[str, Any] | None) -> TaskStarting | AttemptEnded | None:
    """The message a report carries, or None for a report without one."""
    if data is None:
        return None
    kind = data.get("kind")
    if kind == ENDED:
        return AttemptEnded.from_dict(data)
    if kind == STARTING:
        return TaskStarting.from_dict(data)
    return None


def ended_task(data: Mapping[str, Any] | None) -> str | None:
    """The task id of an `AttemptEnded` message, read without decoding the message: the
    process that runs a task reads it from every report of its own."""
    if data is None or data.get("kind") != ENDED:
        return None
    task_id: str = data["task"]["id"]
    return task_id


def refused_for_load(data: Mapping[str, Any] | None) -> bool:
    """Whether an `AttemptEnded` message tells of an attempt refused for load (a 429 or 503,
    or held back because the run was paused), read without decoding the message: the
    terminal asks it of every report it shows."""
    return data is not None and data.get("kind") == ENDED and bool(data.get("refused"))
