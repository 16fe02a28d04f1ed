"""What a run did, as plain data: filled by the controller, read by reports and the tracker."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pytest_roadmap.checks.verdict import CheckResult, Verdict
from pytest_roadmap.protocol import Usage
from pytest_roadmap.tasks import Task
from pytest_roadmap.usage import cost

# Outcomes of a whole task (its last attempt decides) and of one attempt.
PASSED, FAILED, SKIPPED, RERUN = "passed", "failed", "skipped", "rerun"
# Outcomes of a task that an interrupted run never finished: cut off during an attempt, or
# never started.
INTERRUPTED, NOT_RUN = "interrupted", "not_run"

# Dogfooding category -> the counter name the original tracker (and report.json) uses.
DOGFOODING_COUNTERS = {
    "improvement": "improvementsGenerated",
    "test": "testsGenerated",
    "optimization": "optimizationsGenerated",
    "doc": "docsGenerated",
}


def iso_utc(epoch: float) -> str:
    """Epoch seconds as JavaScript's toISOString does it: UTC, milliseconds, `Z`."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Attempt:
    """One try of one task, as its worker reported it."""

    number: int  # 1 for the first attempt
    outcome: str  # passed | failed | rerun | skipped
    started: float  # epoch seconds
    finished: float
    worker: str  # "gw0", ... or "main" without xdist
    error: str | None = None  # one-line reason, token-free
    overload: bool = False  # 429, 503, timeout or connection error
    refused: bool = False  # the API refused it for load (429, 503) or the run was paused
    usage: Usage | None = None  # tokens its answer used, as the API counted them
    checks: Verdict | None = None  # its answer's checks, if the task has checks and got one

    @property
    def duration_s(self) -> float:
        return max(0.0, self.finished - self.started)


@dataclass
class TaskResult:
    """Everything the run knows about one selected task."""

    task: Task
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = SKIPPED
    error: str | None = None
    answer: dict[str, Any] | None = None  # the API's last answer (passed or not its checks)
    output: str | None = None  # path of the saved answer, relative to the report folder
    batch: str | None = None

    @property
    def started(self) -> float | None:
        return self.attempts[0].started if self.attempts else None

    @property
    def finished(self) -> float | None:
        return self.attempts[-1].finished if self.attempts else None

    @property
    def duration_s(self) -> float:
        return sum(a.duration_s for a in self.attempts)

    @property
    def worker(self) -> str | None:
        return self.attempts[-1].worker if self.attempts else None

    @property
    def refusals(self) -> int:
        """Attempts the API refused for load: they did not run the task."""
        return sum(1 for a in self.attempts if a.refused)

    @property
    def usage(self) -> Usage | None:
        """Tokens its answers used, over all attempts; None if no answer said."""
        return _sum_usage(a.usage for a in self.attempts)

    @property
    def verdict(self) -> Verdict | None:
        """The checks of its last judged answer; None if none was judged."""
        return next((a.checks for a in reversed(self.attempts) if a.checks is not None), None)

    @property
    def answers(self) -> int:
        """Answers its checks judged: more than one when a wrong answer was asked again."""
        return sum(1 for a in self.attempts if a.checks is not None)

    @property
    def check_failed(self) -> bool:
        """It failed because its answer failed its checks (not because the API did)."""
        verdict = self.verdict
        return self.outcome == FAILED and verdict is not None and not verdict.passed


def _sum_usage(usages: Iterable[Usage | None]) -> Usage | None:
    found = [u for u in usages if u is not None]
    return sum(found[1:], found[0]) if found else None


@dataclass(frozen=True)
class CheckTotals:
    """What the checks made of a run's answers, as the reports and the summary tell it."""

    tasks: int  # tasks whose answers were judged
    answers: int  # answers judged (a task asked again counts each)
    passed: int  # tasks whose last answer passed its checks
    failed: int  # tasks failed by a wrong answer
    errors: int  # tasks failed because a check could not judge the answer
    seconds: float  # time the checks took

    @classmethod
    def of(cls, results: Iterable[TaskResult]) -> CheckTotals:
        checked = [r for r in results if r.verdict is not None]
        wrong = [r for r in checked if r.check_failed]
        errors = sum(1 for r in wrong if r.verdict is not None and r.verdict.errored)
        return cls(
            tasks=len(checked),
            answers=sum(r.answers for r in checked),
            passed=sum(1 for r in checked if r.verdict is not None and r.verdict.passed),
            failed=len(wrong) - errors,
            errors=errors,
            seconds=sum(a.checks.seconds for r in checked for a in r.attempts if a.checks),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks_checked": self.tasks,
            "answers_checked": self.answers,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
        }

    def words(self) -> str:
        """ "5 answers checked: 3 passed their checks, 1 failed them, 1 check error (0.4 s)"."""
        parts = [f"{self.passed} passed their checks", f"{self.failed} failed them"]
        if self.errors:
            parts.append(f"{self.errors} check error{'s' if self.errors != 1 else ''}")
        answers = f"{self.answers} answer{'s' if self.answers != 1 else ''} checked"
        return f"{answers}: {', '.join(parts)} ({self.seconds:.1f} s)"


@dataclass(frozen=True)
class ConcurrencyChange:
    """One adjustment of the shared concurrency limit."""

    at: float
    old: int
    new: int
    reason: str


@dataclass(frozen=True)
class PaceChange:
    """One change of the learned send rate (requests/s), or a pause of the whole run
    (`kind` "pause": `new` is its length in seconds), or the stop of an exhausted quota."""

    at: float
    kind: str  # rate | pause | stop
    old: float
    new: float
    reason: str


@dataclass(frozen=True)
class Sample:
    """One point of the report's charts (the monitor takes one at the run's start, at each
    change of the pace, every interval and at the end): the limit in force, and the request
    rate since the point before (0 at the first)."""

    at: float
    limit: int
    requests_per_s: float
    running: int
    healthy: bool


@dataclass(frozen=True)
class Alert:
    """A monitoring threshold of the batch file that the run passed."""

    at: float
    kind: str  # "failure_rate" or "queue_size"
    message: str


@dataclass
class RunRecord:
    """A whole run: settings in force, every task's result, and what the controller saw."""

    api: str
    sandbox: bool
    model: str
    workers: int
    rate_limit: float
    started: float
    finished: float = 0.0
    results: list[TaskResult] = field(default_factory=list)
    concurrency_changes: list[ConcurrencyChange] = field(default_factory=list)
    pace_changes: list[PaceChange] = field(default_factory=list)
    refusals: dict[int, int] = field(default_factory=dict)  # status -> requests refused
    stopped: str | None = None  # why the run stopped starting tasks (quota exhausted)
    samples: list[Sample] = field(default_factory=list)
    health_probes: int = 0
    unhealthy_s: float = 0.0
    run_id: str | None = None
    interrupted: str | None = None  # why the run ended early (SIGTERM, Ctrl-C, ...), if it did
    alerts: list[Alert] = field(default_factory=list)
    protocol: str = "beast"
    token_rate: float | None = None  # tokens per minute, all workers
    price_in: float | None = None  # per million prompt tokens
    price_out: float | None = None  # per million completion tokens
    burst: int = 1
    # Every request any process sent: the client's own log (compliance.py's entries).
    requests: list[list[Any]] = field(default_factory=list)
    budgets: dict[str, Any] | None = None  # the run-wide budgets and their use (budgets.py)
    requests_sent: int = 0  # requests the run sent, health probes included, as the store counted
    prediction: dict[str, Any] | None = None  # what the plan expected (plan.py)
    replay: str | None = None  # --roadmap-replay: the report whose answers were judged again
    inflight: int = 1  # task requests each worker kept in flight (--roadmap-inflight)

    @property
    def usage(self) -> Usage | None:
        """Tokens the run's answers used; None if no answer said."""
        return _sum_usage(r.usage for r in self.results)

    def cost_of(self, usage: Usage | None) -> float | None:
        """What `usage` cost at the run's prices; None without usage or a price."""
        return cost(usage, self.price_in, self.price_out)

    @property
    def duration_s(self) -> float:
        return max(0.0, self.finished - self.started)

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def rate_changes(self) -> list[PaceChange]:
        return [c for c in self.pace_changes if c.kind == "rate"]

    @property
    def pauses(self) -> list[PaceChange]:
        return [c for c in self.pace_changes if c.kind == "pause"]

    @property
    def reruns(self) -> int:
        return sum(max(0, len(r.attempts) - 1) for r in self.results)

    @property
    def dogfooding_generated(self) -> dict[str, int]:
        """Passed tasks per dogfooding counter, every counter present."""
        counts = dict.fromkeys(DOGFOODING_COUNTERS.values(), 0)
        for r in self.results:
            if r.outcome == PASSED and r.task.dogfooding in DOGFOODING_COUNTERS:
                counts[DOGFOODING_COUNTERS[r.task.dogfooding]] += 1
        return counts

    @property
    def checks(self) -> CheckTotals:
        return CheckTotals.of(self.results)

    def judged(self) -> Iterator[tuple[TaskResult, CheckResult]]:
        """Each check of each judged task's last answer, with its task, in run order."""
        for result in self.results:
            verdict = result.verdict
            for check in verdict.results if verdict is not None else ():
                yield result, check

    @property
    def success_rate(self) -> float:
        """Passed over tasks that ran (passed + failed); 0.0 when none ran."""
        ran = self.count(PASSED) + self.count(FAILED)
        return self.count(PASSED) / ran if ran else 0.0
