"""The per-attempt hooks of a process that runs tasks (an xdist worker, or the only process).

Setup waits for the task's turn (batch barriers, dependencies), the backoff, a healthy API,
a concurrency slot and the token budget; the call is the item's own (`TaskItem.runtest`
calls the `TaskRunner`); teardown gives the slot back. Each attempt's report carries a
`wire` message to the controller, and the item's JUnit properties.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from pytest_roadmap.budgets import retry_spent_words
from pytest_roadmap.checks.verdict import ChecksErrored, ChecksFailed
from pytest_roadmap.collect import TaskItem, is_roadmap_item
from pytest_roadmap.results import FAILED, PASSED, SKIPPED
from pytest_roadmap.retry import FINAL, TaskFailure, make_final
from pytest_roadmap.run import AttemptState, RunConfig, TaskRunner
from pytest_roadmap.usage import USAGE_PROPERTIES, usage_of, usage_properties
from pytest_roadmap.wire import AttemptEnded, TaskStarting, ended_task, python_task

JUNIT_PROPERTIES = frozenset(
    {
        "attempts",
        "refusals",
        "worker",
        "dogfooding",
        "month",
        "week",
        "batch",
        "answers",
        *USAGE_PROPERTIES,
    }
)
CHECK_PROPERTY = "check: "  # one JUnit property per check of the last judged answer
ANSWERS = pytest.StashKey[int]()  # a task's judged answers so far, across its attempts
REFUSALS = pytest.StashKey[int]()  # a task's refusals for load so far, across its attempts


def timed_out(error: BaseException) -> bool:
    """Whether pytest-timeout ended the attempt.

    pytest-timeout's signal method (the default where SIGALRM exists) ends an overrunning
    test with `pytest.fail("Timeout (>{seconds}s) from pytest-timeout.")`: a plain
    `pytest.fail.Exception`, told apart from any other `pytest.fail` only by its text, so
    the text is checked too. Its thread method ends the whole process instead, and no
    attempt sees an error.
    """
    return isinstance(error, pytest.fail.Exception) and str(error).startswith("Timeout")


def retryable(error: BaseException | None) -> bool:
    """The rerun condition: transient API failures and attempt timeouts are retried, and an
    answer that failed its checks while the task's check retries last, unless the run's
    retry budget made the failure final."""
    if getattr(error, FINAL, False):
        return False
    if isinstance(error, TaskFailure):
        return error.transient
    if isinstance(error, ChecksFailed):
        return error.retry
    return error is not None and timed_out(error)


def failure_line(error: BaseException) -> tuple[str, bool]:
    """What failed an attempt, in one line (before redaction), and whether it tells the
    adaptive limit to back off (an overload: 429, 503, a timeout, a lost connection)."""
    if isinstance(error, TaskFailure):
        return error.reason, error.overload
    if isinstance(error, ChecksFailed | ChecksErrored):
        # The API did its part: nothing here tells the pace to back off.
        what = "failed its checks" if isinstance(error, ChecksFailed) else "check error"
        problems = error.verdict.problems()
        return f"answer {what}: {'; '.join(p.label for p in problems)}", False
    if timed_out(error):
        return f"attempt timed out ({str(error).splitlines()[0].strip()})", True
    first = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {first[0]}" if first else type(error).__name__
    return text, bool(getattr(error, "overload", False))


class AttemptHooks:
    """Each attempt's setup, report and teardown, around `TaskItem.runtest`."""

    def __init__(self, run: RunConfig, runner: TaskRunner) -> None:
        self.run = run
        self.runner = runner

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if not is_roadmap_item(item) or item.get_closest_marker("skip"):
            return
        if self.run.replay:
            if not isinstance(item, TaskItem):
                pytest.skip("a replay judges saved answers of task files; this test sends")
            return  # nothing is sent: no turn, health, slot or budget to wait for
        runner = self.runner
        runner.current = item.nodeid
        state = runner.state(item.nodeid)
        failed_before = max(0, int(getattr(item, "execution_count", 1)) - 1)
        task = item.task if isinstance(item, TaskItem) else None
        state.ahead = None
        if task is not None and failed_before == 0 and runner.ahead is not None:
            ahead = runner.ahead.claim(item.nodeid)
            if ahead is not None:
                # Its first attempt went ahead on one of the worker's threads, through the
                # very gates below: its outcome is this setup's.
                state.ahead = ahead
                ahead.wait_prepared(runner.ahead.refill)
                batch = runner.sequencer.batch_of(task.id) if runner.sequencer else None
                runner.safeguards().enter_batch(batch)  # for a rubric's grading, if any
                state.unhealthy = ahead.unhealthy
                if ahead.skip is not None:
                    pytest.skip(ahead.skip)
                return
        reason = runner.prepare(task, state, failed_before)
        if reason is not None:
            pytest.skip(reason)
        if state.unhealthy is not None and task is None:
            raise TaskFailure(state.unhealthy, transient=False)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        self.runner.release(item.nodeid)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if not is_roadmap_item(item):
            return report
        if report.skipped and isinstance(report.longrepr, tuple):
            report.longrepr = at_item(item, report.longrepr)
        run = self.run
        batch = run.plan.batch_of(item.name) if run.plan and isinstance(item, TaskItem) else None
        batch_name = batch.name if batch else None
        task = item.task if isinstance(item, TaskItem) else python_task(item.name, item.path.name)
        if call.when == "teardown" or (call.when == "setup" and report.passed):
            if call.when == "setup":  # tell the controller about the task before it runs
                report.roadmap = TaskStarting(task, batch_name).to_dict()  # type: ignore[attr-defined]
            return report
        state = self.runner.state(item.nodeid)
        attempt = int(getattr(item, "execution_count", 1))
        error: str | None = None
        overload = refused = False
        if report.skipped and isinstance(report.longrepr, tuple):
            error = run.redact(str(report.longrepr[2]).removeprefix("Skipped: "))
        elif call.excinfo is not None and report.failed:
            failure = call.excinfo.value
            state.last_error = failure
            if timed_out(failure) and isinstance(item, TaskItem):
                self.runner.api_failed(item.nodeid, item.task, failure)
            line, overload = failure_line(failure)
            error = run.redact(" ".join(line.split()))
            if isinstance(failure, TaskFailure) and failure.refused:
                refused = True
                error = self._refused(item, state, call.stop, error)
        if report.failed and call.excinfo is not None and error is not None:
            error = self._spend_retry(item, call.excinfo.value, attempt, report, error)
        if not refused:
            state.refusals, state.refused_since = 0, None
        answer = usage = checks = None
        if call.when == "call" and isinstance(item, TaskItem) and item.answer is not None:
            # Saved in outputs/ (a wrong one too, for --roadmap-replay): an answer that
            # quotes the token must not carry it there.
            answer = run.secrets.mask_all(item.answer)
            usage = usage_of(item.answer)
            if item.verdict is not None:
                checks = run.secrets.mask_all(item.verdict.to_list())
        started, finished = call.start, call.stop
        if call.when == "call" and (ahead := self.runner.attempt_times(item.nodeid)):
            started, finished = ahead  # sent ahead: the request's own times
        report.roadmap = AttemptEnded(  # type: ignore[attr-defined]
            task=task,
            attempt=attempt,
            phase=call.when,
            worker=self.runner.worker,
            started=started,
            finished=finished,
            batch=batch_name,
            error=error,
            overload=overload,
            refused=refused,
            answer=answer,
            usage=usage,
            checks=checks,
            # The requests sent since the last report: the run's own log, for compliance.
            requests=self.runner.take_requests(),
        ).to_dict()
        # junitxml reads the teardown report's properties, which come from the item.
        refusals = _refusal_count(item, refused)
        source = item.task if isinstance(item, TaskItem) else None
        item.user_properties[:] = [
            *[
                (k, v)
                for k, v in item.user_properties
                if k not in JUNIT_PROPERTIES and not k.startswith(CHECK_PROPERTY)
            ],
            ("attempts", attempt + refusals - refused),  # every try, as report.json counts
            ("refusals", refusals),
            ("worker", self.runner.worker),
            ("dogfooding", (source.dogfooding if source else None) or ""),
            ("month", source.month if source else ""),
            ("week", source.week if source else ""),
            ("batch", batch_name or ""),
            *usage_properties(usage, run.settings.price_in, run.settings.price_out),
            *(_check_properties(item) if call.when == "call" else []),
        ]
        report.user_properties = list(item.user_properties)
        return report

    def _refused(self, item: pytest.Item, state: AttemptState, at: float, error: str) -> str:
        """The API refused this attempt for load: it did not run the task, so it spends none
        of the task's retries, unless the API has been refusing it for longer than the
        longest wait. Returns the attempt's error line.

        pytest-rerunfailures counts attempts in `item.execution_count` and decides whether
        to run again from it once this attempt's reports are made; taking this one back
        keeps the count of real attempts.
        """
        state.refusals += 1
        if state.refused_since is None:
            state.refused_since = at
        waited = at - state.refused_since
        limit = self.run.settings.max_wait
        if waited <= limit:
            item.execution_count = max(0, int(getattr(item, "execution_count", 1)) - 1)  # type: ignore[attr-defined]
            return error
        return (
            f"the API kept refusing for load for {waited:.0f} s (more than --roadmap-max-wait "
            f"{limit:g} s): {error}"
        )

    def _spend_retry(
        self,
        item: pytest.Item,
        error: BaseException,
        attempt: int,
        report: pytest.TestReport,
        line: str,
    ) -> str:
        """A failed attempt that pytest-rerunfailures would run again first takes a retry
        from the run's budget (--roadmap-max-retries); once that is spent the failure is
        final, and its failure line says why. A refusal for load spends none (see
        `_refused`). Returns the attempt's error line."""
        limit = self.run.settings.max_retries
        if limit is None or not retryable(error):
            return line
        if int(getattr(item, "execution_count", 1)) < attempt:  # a refusal, taken back
            return line
        mark = item.get_closest_marker("flaky")
        if attempt > int(mark.kwargs.get("reruns", 0) if mark else 0):
            return line  # the task's own retries are spent: final anyway
        if self.runner.safeguards().take_retry():
            return line
        make_final(error)
        words = f"not retried: {retry_spent_words(limit)}"
        if isinstance(report.longrepr, str):
            report.longrepr += f"\n{words}"
        elif callable(addsection := getattr(report.longrepr, "addsection", None)):
            addsection("roadmap", words)
        return f"{line}; {words}"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # A task's final outcome releases its dependants and, last of all, its batch.
        if self.runner.sequencer is None:
            return
        task_id = ended_task(getattr(report, "roadmap", None))
        if task_id is None:
            return
        final = (report.when == "call" and report.outcome in (PASSED, FAILED, SKIPPED)) or (
            report.when == "setup" and report.outcome in (FAILED, SKIPPED)
        )
        if final:
            self.runner.ended(task_id, report.outcome)


def _check_properties(item: pytest.Item) -> list[tuple[str, object]]:
    """The last judged answer's checks as JUnit properties: `check: <label>` = status, and
    how many answers the task took."""
    verdict = item.verdict if isinstance(item, TaskItem) else None
    if verdict is None:
        return []
    answers = item.stash.get(ANSWERS, 0) + 1
    item.stash[ANSWERS] = answers
    return [("answers", answers), *((CHECK_PROPERTY + r.label, r.status) for r in verdict.results)]


def _refusal_count(item: pytest.Item, refused: bool) -> int:
    """The task's refusals so far, kept on the item across its attempts."""
    count = item.stash.get(REFUSALS, 0) + (1 if refused else 0)
    item.stash[REFUSALS] = count
    return count


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def at_item(item: pytest.Item, longrepr: tuple[str, int, str]) -> tuple[str, int, Any]:
    """A skip the plugin raised (a dependency, the deadline, a budget, the quota) shown at
    the task, as pytest shows a skip mark's, not at the plugin's line that raised it; a skip
    a Python task raised itself keeps its own place."""
    path, _, message = longrepr
    if not os.path.abspath(str(path)).startswith(_PACKAGE):
        return longrepr
    where, line = item.reportinfo()[:2]
    return os.fspath(where), (line or 0) + 1, message
