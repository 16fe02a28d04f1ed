"""One process's part of a roadmap run, without pytest.

A process has one `Role`, decided once when pytest configures it. The processes that run
tasks (an xdist worker, or the only process) have a `TaskRunner`: the store, the safeguards
(limiter, gate, health, client), the batch and dependency `Sequencer` and each item's
attempt state. The process that controls the run (the xdist controller, or the only
process) has a `Controller`: it creates the store, starts the sandbox, keeps the record and
the progress, runs the monitor and writes the task outputs and the reports. The pytest layer
turns hooks into calls on these two and nothing else.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_roadmap.batches import BatchPlan
from pytest_roadmap.budgets import BudgetSpent, Spend
from pytest_roadmap.caps import adaptive_limit
from pytest_roadmap.checks.verdict import ChecksErrored, ChecksFailed, Verdict
from pytest_roadmap.deadline import Deadline, deadline_info, info_key, process_age
from pytest_roadmap.display import Secrets, escape_controls, shown_url
from pytest_roadmap.errors import RoadmapError
from pytest_roadmap.health import PROBES_KEY
from pytest_roadmap.inflight import AheadPool, Prefetch
from pytest_roadmap.interrupt import StopCheck
from pytest_roadmap.monitor import Monitor
from pytest_roadmap.pacing import REFUSED_KEY, Pacer, QuotaExhausted
from pytest_roadmap.plan import History, Plan, collection_order, plan_run
from pytest_roadmap.progress import ProgressKeeper, tasks_from_task_files
from pytest_roadmap.protocol import PROTOCOLS, Usage
from pytest_roadmap.recorder import RunRecorder
from pytest_roadmap.results import FAILED, INTERRUPTED, NOT_RUN, PASSED, RERUN, SKIPPED, RunRecord
from pytest_roadmap.retry import TaskFailure, make_final
from pytest_roadmap.safeguards import (
    GATE_KEY,
    REQUESTS_KEY,
    Safeguards,
    Slots,
    batch_gate_key,
    budgets_of,
    pacer_of,
    store_failures_are_transient,
)
from pytest_roadmap.sequencing import Sequencer, ShardsMissing
from pytest_roadmap.settings import Settings
from pytest_roadmap.store import open_store
from pytest_roadmap.store.base import Store, StoreError
from pytest_roadmap.tasks import Task
from pytest_roadmap.tokens import Reservation
from pytest_roadmap.wire import AttemptEnded, Coordinates, TaskStarting

if TYPE_CHECKING:
    from pytest_roadmap.checks.replay import SavedAnswers
    from pytest_roadmap.report import OutputWriter

# From this many tasks on, a process that may outlive the session freezes its heap for
# the exit-time garbage collections (see the pytest layer's collection hooks).
FREEZE_FROM = 1000
STATUS = "roadmap: running "  # how the monitor's live status line starts
REPLAY_FOLDER = "replay"
GRADING_REFUSALS = 5  # a grading request refused for load is asked again this many times
# What a command check's environment never holds, whatever their values: the token's
# variables, and the API URL (it may carry credentials).
CREDENTIAL_VARIABLES = ("BEAST_MODE_TOKEN", "OPENAI_API_KEY", "BEAST_MODE_API")


class Role(enum.Enum):
    """What one process does in a run."""

    ALONE = "alone"  # no workers: this process controls the run and runs its tasks
    CONTROLLER = "controller"  # xdist's controller: its workers run the tasks
    WORKER = "worker"  # an xdist worker
    LISTING = "listing"  # --collect-only: orders and lists the tasks, sends nothing


@dataclass(frozen=True)
class RunConfig:
    """What a process knows of the run from configure time on, whatever its role."""

    role: Role
    settings: Settings  # with the batch file's safeguards applied
    plan: BatchPlan | None = None
    concurrency: int = 1  # tasks doing API work at once, at most (the batch file may cap it)
    completed: frozenset[str] = frozenset()  # tracker keys marked complete at the start
    cap_lines: tuple[str, ...] = ()  # header lines: what the batch file's safeguards lowered
    left_out: int = 0  # tasks in no batch, in batch mode (known to the controller)
    resume: bool = False  # --roadmap-resume: the tasks `completed` marks are not sent
    replay: bool = False  # --roadmap-replay: saved answers judged again, nothing sent

    @property
    def replay_dir(self) -> Path:
        """Where a replay writes its reports: beside the run's, never over them."""
        return self.settings.report_dir / REPLAY_FOLDER

    def pacer(self, store: Store) -> Pacer:
        """The learned pace of the run, bounded by the batch file's safeguards if any."""
        caps = self.plan.safeguards if self.plan is not None else None
        return pacer_of(
            self.settings,
            store,
            maximum=self.concurrency,
            lower=caps is None or caps.auto_reduce_on_failure,
            higher=caps is None or caps.auto_increase_on_success,
        )

    def run_plan(
        self, tasks: Iterable[Task], *, workers: int, distributed: bool, history: History | None
    ) -> Plan:
        """The plan of these selected tasks, as --roadmap-plan prints it and report.json
        records it."""
        return plan_run(
            collection_order(tasks),
            self.settings,
            workers=workers,
            distributed=distributed,
            batches=self.plan,
            history=history,
            completed=self.completed if self.resume else None,
        )

    @cached_property
    def secrets(self) -> Secrets:
        return Secrets(self.settings.token, self.settings.api)

    def redact(self, text: str) -> str:
        """`text` as shown or saved: secrets masked, control characters escaped."""
        return escape_controls(self.secrets.mask(text))

    def redact_lines(self, text: str) -> str:
        """`redact`, keeping the line breaks of a paragraph."""
        return escape_controls(self.secrets.mask(text), keep="\n")


@dataclass
class AttemptState:
    """Per-item state across one attempt's setup, call and teardown."""

    unhealthy: str | None = None
    slot: Slots | None = None
    last_error: BaseException | None = None
    refusals: int = 0  # attempts refused for load in a row (the task did not run)
    refused_since: float | None = None  # when that run of refusals began
    reserved: Reservation | None = None  # its place in the run's token budget, until sent
    spend: Spend | None = None  # its worst case, held in the run's token and cost budgets
    answers: int = 0  # answers the task got, across its attempts (each one judged)
    failures: int = 0  # attempts the API failed (a task with checks counts them)
    ahead: Prefetch | None = None  # this attempt, sent ahead of the item (--roadmap-inflight)


class TaskRunner:
    """The running of tasks in one process: an xdist worker, or the only process."""

    def __init__(
        self,
        run: RunConfig,
        where: Coordinates,
        worker: str,
        *,
        parent: int | None = None,
        store: Store | None = None,
    ) -> None:
        self.run = run
        self.where = where
        self.worker = worker
        self.parent = parent  # a worker: its controller's pid (gone: send nothing more)
        self._store = store  # the controller's, when this is the only process
        self._owns_store = store is None
        self._safeguards: Safeguards | None = None
        self.sequencer: Sequencer | None = None
        self.deadline: Deadline | None = None  # with --roadmap-deadline, once tasks are selected
        self.current: str | None = None  # the node id whose attempt started last
        self._states: dict[str, AttemptState] = {}
        # With --roadmap-inflight K > 1: the next items' first attempts, sent ahead.
        self.ahead: AheadPool | None = None

    @cached_property
    def saved(self) -> SavedAnswers:
        """The last run's answers and verdicts, for --roadmap-replay."""
        from pytest_roadmap.checks.replay import SavedAnswers

        return SavedAnswers(self.run.settings.report_dir)

    @property
    def store(self) -> Store:
        # A worker opens the store at its first task, so `--co` costs nothing.
        if self._store is None:
            self._store = open_store(self.where.store_url)
        return self._store

    def safeguards(self) -> Safeguards:
        if self._safeguards is None:
            store = self.store
            self._safeguards = Safeguards(
                self.run.settings,
                self.where.api_url,
                store,
                self.worker,
                self.where.run_id,
                holder=f"{self.where.instance}:{self.worker}",
                # Only workers can outlive their run's end; one process stops with it.
                stop=StopCheck(store, self.where.instance, self.parent)
                if self.parent is not None
                else None,
                pacer=self.run.pacer(store),
            )
        return self._safeguards

    def sequence(
        self,
        tasks: Mapping[str, Task],
        *,
        stop_on_failure: bool,
        complete: set[str],
        outside: dict[str, str],
        resumed: Collection[str],
    ) -> None:
        """Batch barriers and dependency waits for the selected `tasks`; `resumed` ones are
        done already (an earlier run), so their dependants may go ahead."""
        settings = self.run.settings
        self.sequencer = Sequencer(
            self.safeguards().store,
            self.run.plan,
            stop_on_failure=stop_on_failure,
            shards=settings.shards,
            shard_wait=settings.shard_wait,
            complete=complete,
            outside=outside,
        )
        self.sequencer.register(tasks, shard=self.where.instance)
        for task_id in resumed:
            self.sequencer.mark_done(task_id, PASSED)

    def keep_deadline(self, sent: Sequence[Task]) -> None:
        """With --roadmap-deadline: the judge of which of `sent` (the tasks this process may
        send, in run order) still start; the controller put the deadline in the store."""
        if self.run.settings.deadline is None:
            return
        settings = self.run.settings
        self.deadline = Deadline.from_store(
            self.safeguards().store,
            self.where.instance,
            sent,
            workers=self.run.concurrency,
            rate=settings.rate_limit,
            timeout=settings.timeout,
            shards=settings.shards,
        )

    def state(self, nodeid: str) -> AttemptState:
        return self._states.setdefault(nodeid, AttemptState())

    def prepare(self, task: Task | None, state: AttemptState, failed_before: int) -> str | None:
        """An attempt's setup: the task's turn (batch barriers, dependencies), the deadline,
        the backoff after `failed_before` failed attempts, a pause of the run, a healthy
        API, room in the budgets, a concurrency slot and the token budget, in that order.
        `task` is None for a Python test that asks for the client. Returns why the attempt
        is skipped, or None; then `state.unhealthy` says why it fails in its call, if it
        does, and `state` holds what it took (`release_state` gives it back)."""
        guards = self.safeguards()
        batch = None
        if task is not None and self.sequencer is not None:
            batch = self.sequencer.batch_of(task.id)
            if failed_before == 0:
                # Batch barriers and dependencies: wait here, where no slot is held yet.
                try:
                    with store_failures_are_transient():
                        reason = self.sequencer.wait_turn(task)
                except ShardsMissing as exc:
                    # Fails in the call phase, like an unhealthy API: one line, no traceback.
                    state.unhealthy = str(exc)
                    return None
                if reason is not None:
                    return reason
        deadline = self.deadline
        if deadline is not None and task is not None:
            if failed_before == 0 and (why := deadline.check(task)) is not None:
                return why
            delay = guards.backoff.wait(failed_before) if failed_before else 0.0
            if failed_before and (why := deadline.check_retry(task, delay)) is not None:
                state.unhealthy = f"not retried: {why}"  # fails in the call, as unhealthy does
                return None
        guards.enter_batch(batch)
        try:
            state.unhealthy = guards.before_attempt(failed_before, state.last_error, state.refusals)
        except QuotaExhausted as stopped:
            return str(stopped)
        if state.unhealthy is not None:
            return None
        if task is not None:
            try:  # before the slot: waiting for room in the budgets blocks no one
                state.spend = guards.admit_spend(task)
            except BudgetSpent as spent:
                return str(spent)
        between = self.run.plan.between_tasks if self.run.plan else 0.0
        state.slot = guards.acquire_slot(batch, between)
        if task is not None:
            # Here rather than in the call: a long wait for the token budget must not count
            # against the attempt's timeout.
            state.reserved = guards.reserve_tokens(task)
        return None

    def call(self, nodeid: str, task: Task, attempt: int) -> dict[str, Any]:
        """The call phase of a task file's item: one chat request under the safeguards, or
        the answer of the one sent ahead for it. Raises `TaskFailure`, or `QuotaExhausted`
        once the API's quota is gone."""
        if self.run.replay:
            return self.saved.answer(task.id)
        state = self.state(nodeid)
        if state.unhealthy is not None:
            # Health already had its full wait; another attempt would only wait again.
            raise TaskFailure(state.unhealthy, transient=False)
        try:
            if state.ahead is not None and self.ahead is not None:
                return state.ahead.result(self.ahead.refill)
            return self.send(task, attempt, state)
        except TaskFailure as failure:
            if failure.transient and not failure.refused:
                self.api_failed(nodeid, task, failure)
            raise

    def send(
        self, task: Task, attempt: int, state: AttemptState, timeout: float | None = None
    ) -> dict[str, Any]:
        """One chat request under the safeguards, with what `prepare` took in `state`; the
        slot goes back as soon as the answer is in. `timeout`: its deadline, if not the
        run's task timeout."""
        try:
            spend, state.spend = state.spend, None
            # The request settles its tokens (or gives them back if it never goes).
            reserved, state.reserved = state.reserved, None
            guards = self.safeguards()
            return guards.chat(task, attempt, reserved, spend, timeout=timeout)
        finally:
            self.release_state(state)

    def send_ahead(self, ahead: Prefetch) -> None:
        """A task's first attempt, on a thread of the `AheadPool`: its setup's gates, then its
        request (`prepare`, `send`), with an `AttemptState` of its own that it gives back
        itself. Its item takes the outcome in its setup and call."""
        from pytest_roadmap.client import Abort, abortable  # a process that runs tasks

        abort = Abort()
        ahead.on_abandon(abort.fire)
        state = AttemptState()
        try:
            ahead.skip = self.prepare(ahead.task, state, 0)
            ahead.unhealthy = state.unhealthy
            if ahead.skip is not None or state.unhealthy is not None or ahead.abandoned:
                self.release_state(state)
        except BaseException:
            self.release_state(state)
            raise
        ahead.prepared.set()
        if ahead.skip is not None or state.unhealthy is not None or ahead.abandoned:
            return
        ahead.started = time.time()
        try:
            with abortable(abort):
                # Its item's own timeout: pytest-timeout times only the main thread, and the
                # item waits for nothing once the answer is in.
                ahead.answer = self.send(ahead.task, 1, state, timeout=ahead.task.timeout)
        except BaseException as exc:
            ahead.error = exc
        finally:
            ahead.finished = time.time()

    def running(self) -> set[str]:
        """Node ids mid-attempt in this process (without xdist): the item whose attempt
        started last, and those whose attempt went ahead and has not been reported."""
        running = {self.current} if self.current else set()
        return running | (self.ahead.held() if self.ahead is not None else set())

    def attempt_times(self, nodeid: str) -> tuple[float, float] | None:
        """The start and end of an attempt sent ahead, as the timeline shows it: from its
        request's start to its answer, plus the time its item took to judge it; None for an
        attempt the item made itself. Asked once, by the attempt's report."""
        state = self._states.get(nodeid)
        ahead = state.ahead if state is not None else None
        if state is None or ahead is None:
            return None
        state.ahead = None
        if ahead.started is None or ahead.finished is None:
            return None
        judged = max(0.0, time.time() - (ahead.delivered or time.time()))
        return ahead.started, ahead.finished + judged

    def api_failed(self, nodeid: str, task: Task, error: BaseException) -> None:
        """An attempt the API failed (or that timed out). A task with checks has reruns for
        its new answers too: its API failures keep to the task's own retries."""
        if not task.checks:
            return
        state = self.state(nodeid)
        state.failures += 1
        retries = task.retries if task.retries is not None else self.run.settings.reruns
        if state.failures > retries:
            make_final(error)

    def judge(
        self, nodeid: str, task: Task, answer: dict[str, Any], attempt: int
    ) -> Verdict | None:
        """Judge an answer with its task's checks, holding no concurrency slot (the call
        gave it back); None for a task without checks. Raises `ChecksFailed` for a wrong
        answer (`retry` while the task's check retries last) and `ChecksErrored` when a
        check could not judge it. A rubric's grading goes through the safeguards."""
        if not task.checks:
            return None
        from pytest_roadmap.checks import Context, check_retries, judge

        state = self.state(nodeid)
        state.answers += 1
        settings = self.run.settings
        graded: list[Usage] = []
        context = Context(
            prompt=task.prompt,
            timeout=settings.check_timeout,
            secrets=self.run.secrets.values,
            drop_env=CREDENTIAL_VARIABLES,
            # A replay sends nothing: a rubric's grade is the one the run got.
            grade=None
            if self.run.replay
            else lambda prompt: self._grade(task, attempt, prompt, graded),
            earlier=self.saved.verdicts(task.id) if self.run.replay else {},
        )
        verdict = judge(task.checks, answer, context)
        if graded:  # the grading's tokens are the task's too
            total = sum(graded[1:], graded[0])
            own = Usage.from_dict(answer.get("usage"))
            answer["usage"] = (total if own is None else own + total).to_dict()
        if verdict.passed:
            return verdict
        paragraph = self.run.redact_lines(verdict.paragraph())
        if verdict.errored:
            raise ChecksErrored(verdict, paragraph)
        retries = check_retries(task.checks, task.check_retries, settings.check_retries)
        raise ChecksFailed(verdict, paragraph, retry=state.answers <= retries)

    def _grade(self, task: Task, attempt: int, prompt: str, usages: list[Usage]) -> str:
        """One grading request for a rubric check, through every safeguard a task's request
        passes: health, the run's budgets, a concurrency slot, the rate and token limits."""
        from pytest_roadmap.checks.rubric import GRADER_MAX_TOKENS

        guards = self.safeguards()
        sends = PROTOCOLS[self.run.settings.protocol].fields
        grading = Task(
            id=task.id,
            title=task.title,
            prompt=prompt,
            month=task.month,
            week=task.week,
            max_tokens=GRADER_MAX_TOKENS if "max_tokens" in sends else None,
            temperature=0.0 if "temperature" in sends else None,
        )
        last: TaskFailure | None = None
        for refusals in range(GRADING_REFUSALS + 1):
            # A refusal for load (or a pause of the run) is no answer: wait as a task's
            # attempt would, and ask again.
            unhealthy = guards.before_attempt(0, last, refusals)
            if unhealthy is not None:
                raise TaskFailure(unhealthy, transient=False)
            spend = guards.admit_spend(grading)
            slot = guards.acquire_slot()
            try:
                reserved = guards.reserve_tokens(grading)
                reply = guards.chat(
                    grading,
                    attempt,
                    reserved,
                    spend,
                    model=self.run.settings.grader_model,
                    check="rubric",
                )
                break
            except TaskFailure as failure:
                if not failure.refused or refusals == GRADING_REFUSALS:
                    raise
                last = failure
            finally:
                slot.release()
        usage = Usage.from_dict(reply.get("usage"))
        if usage is not None:
            usages.append(usage)
        message, code = reply.get("message"), reply.get("code")
        return message if isinstance(message, str) and message.strip() else str(code or "")

    def take_requests(self) -> list[list[Any]]:
        """The requests this process sent since the last call (none before its first task)."""
        return self._safeguards.take_requests() if self._safeguards is not None else []

    def release(self, nodeid: str) -> None:
        """The attempt's concurrency slot back, if it holds one; and what it held in the
        run's budgets and token limit, if its call never took it (a setup that failed after
        the hold, such as a project's own setup hook): nothing was sent, so nothing is
        counted."""
        state = self._states.get(nodeid)
        if state is not None:
            self.release_state(state)

    def release_state(self, state: AttemptState) -> None:
        """What one attempt's `state` holds, given back (see `release`)."""
        if state.slot is not None:
            state.slot.release()
            state.slot = None
        if state.spend is not None:
            spend, state.spend = state.spend, None
            # A teardown does not fail over the store: the hold then stays, as a killed
            # worker's does, until the budgets' patience (--roadmap-max-wait) is over.
            with contextlib.suppress(StoreError):
                self.safeguards().budgets.settle(spend, None)
        if state.reserved is not None:
            # Reserved in the setup, never sent (abandoned ahead, or the call never came).
            reserved, state.reserved = state.reserved, None
            self.safeguards().give_back_tokens(reserved)

    def ended(self, task_id: str, outcome: str) -> None:
        """A task's final outcome releases its dependants and, last of all, its batch; its
        worker time joins the deadline's measurement."""
        if self.sequencer is not None:
            self.sequencer.mark_done(task_id, outcome)
        if self.deadline is not None:
            self.deadline.ended(task_id)

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.close()
        if self._safeguards is not None:
            self._safeguards.close()
        if self._owns_store and self._store is not None:
            self._store.close()


def open_run_store(settings: Settings, run_dir: Path, run_id: str) -> Store:
    """The run's coordination store, created here before any worker opens it.

    The default is an SQLite file private to the run (concurrent first opens of a WAL
    database fail with "database is locked", so the controller makes it first). A Redis
    URL is shared by every run given the same run id: CI shards, remote workers.
    """
    url = settings.store or f"sqlite://{(run_dir / 'store.db').as_posix()}"
    if url.startswith(("redis://", "rediss://")):
        from pytest_roadmap.store.redis import with_run_id

        url = with_run_id(url, run_id)
    return open_store(url, create=True)


@dataclass
class Controller:
    """The life cycle of the run's controller: the xdist controller, or the only process."""

    run: RunConfig
    where: Coordinates
    store: Store
    run_dir: Path
    recorder: RunRecorder
    keeper: ProgressKeeper  # the tracker during the run, alerts, the stop flag
    sandbox: Any = None  # the embedded sandbox server, when no API is configured
    # With workers, only for tasks whose worker died: their final outcome is known here alone.
    sequencer: Sequencer | None = None
    monitor: Monitor | None = None
    outputs: OutputWriter | None = None  # writes passed tasks' outputs during the run
    end_lines: list[str] = field(default_factory=list)  # what writing the reports said
    expected: int = 0  # tasks selected
    # Without workers: the selected tasks by node id. With them: the workers' node ids, the
    # tasks then read from the task files only if some never reported.
    selected: dict[str, Task] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)
    running: Callable[[], Collection[str]] = lambda: ()  # node ids mid-attempt
    history: History | None = None  # the last report's measurements, for the plan

    @classmethod
    def start(cls, run: RunConfig, history: History | None = None) -> Controller:
        """Create the store, set the concurrency limits, start the sandbox if no API is
        configured, put the deadline in the store for the workers. Raises RoadmapError or
        StoreError when the store cannot be opened."""
        settings, plan = run.settings, run.plan
        run_dir = Path(tempfile.mkdtemp(prefix="pytest-roadmap-"))
        run_id = settings.run_id or uuid.uuid4().hex[:12]
        try:
            store = open_run_store(settings, run_dir, run_id)
        except (RoadmapError, StoreError):
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        store.gate_set_limit(GATE_KEY, run.concurrency)
        for batch in plan.batches if plan else ():
            if batch.max_concurrency is not None:
                store.gate_set_limit(
                    batch_gate_key(batch), min(batch.max_concurrency, run.concurrency)
                )
        sandbox = None
        api_url = settings.api
        if settings.sandbox and not run.replay:
            from pytest_roadmap.sandbox import SandboxServer

            sandbox = SandboxServer().start()
            api_url = sandbox.url + PROTOCOLS[settings.protocol].sandbox_base
        where = Coordinates(
            api_url=api_url,
            store_url=store.url,
            run_id=run_id,
            instance=uuid.uuid4().hex[:12],
            workers=settings.workers,
            completed=run.completed,
        )
        recorder = RunRecorder(
            RunRecord(
                api=shown_url(api_url),
                sandbox=settings.sandbox,
                model=settings.model,
                workers=settings.workers,
                inflight=settings.inflight,
                rate_limit=settings.rate_limit,
                started=time.time(),
                run_id=run_id,
                protocol=settings.protocol,
                token_rate=settings.token_rate,
                price_in=settings.price_in,
                price_out=settings.price_out,
                burst=settings.burst,
                replay=str(settings.report_dir) if run.replay else None,
            )
        )
        keeper = ProgressKeeper(
            recorder,
            tracker=None if settings.sandbox or run.replay else settings.tracker,
            store=store,
            instance=where.instance,
            monitoring=plan.monitoring if plan else None,
            source=plan.source if plan else "",
        )
        sequencer = Sequencer(store, plan) if run.role is Role.CONTROLLER else None
        if settings.deadline is not None:
            info = deadline_info(
                settings.deadline,
                now=recorder.record.started,
                age=process_age(),
                history=history,
                expected_latency=settings.expected_latency,
            )
            store.put(info_key(where.instance), info.dumps())
        return cls(
            run=run,
            where=where,
            store=store,
            run_dir=run_dir,
            recorder=recorder,
            keeper=keeper,
            sandbox=sandbox,
            sequencer=sequencer,
            history=history,
        )

    def start_monitor(self, say: Callable[[str], None]) -> None:
        """Print the pace's changes and the status line (and, in seed mode, move the
        limit) from a thread of the controller's."""
        settings, plan = self.run.settings, self.run.plan
        caps = plan.safeguards if plan else None
        track = plan.monitoring.track_metrics if plan else True
        self.keeper.say = say
        self.monitor = Monitor(
            store=self.store,
            recorder=self.recorder,
            interval=settings.health_interval,
            adaptive=(
                adaptive_limit(self.run.concurrency, settings.health_interval, caps)
                if settings.adaptive == "seed"
                else None
            ),
            pacer=self.run.pacer(self.store),
            expected=lambda: self.expected,
            write=say if track else _without_status(say),
            holder=f"{self.where.instance}:monitor",
        )
        self.monitor.start()

    def task_starting(self, nodeid: str, message: TaskStarting) -> None:
        self.recorder.task_seen(nodeid, message.task, message.batch)
        self.keeper.started(max(0, self.expected - len(self.recorder.record.results)))

    def attempt_ended(self, nodeid: str, message: AttemptEnded, outcome: str) -> None:
        if outcome not in (PASSED, FAILED, RERUN, SKIPPED):
            return
        result = self.recorder.attempt(nodeid, message, outcome)
        if outcome in (PASSED, FAILED) and result.answer is not None and not self.run.replay:
            # A wrong answer is kept too: --roadmap-replay judges it again.
            if self.outputs is None:
                from pytest_roadmap.report import OutputWriter

                self.outputs = OutputWriter(self.run.settings.report_dir)
            self.outputs.add(result)
        if outcome != RERUN:
            self.keeper.ended(result)

    def worker_crashed(
        self,
        nodeid: str,
        worker: str,
        outcome: str,
        describe: Callable[[str], Task | None] | None = None,
    ) -> None:
        """xdist's report for a task whose worker crashed mid-attempt. One whose setup was
        never reported (its worker died before it, or with --roadmap-inflight before its
        answer came) gets its task from `describe`."""
        if describe is not None and not self.recorder.seen(nodeid):
            task = describe(nodeid)
            if task is not None:
                self.recorder.task_seen(nodeid, task)
        self.recorder.crashed(nodeid, worker, f"worker {worker} crashed", time.time())
        task_id = nodeid.rsplit("::", 1)[-1]
        if self.sequencer is not None and outcome == FAILED:
            self.sequencer.mark_done(task_id, FAILED)

    def interrupted(self, why: str) -> None:
        """Before the reports are written, the workers are told to send nothing more."""
        self.keeper.interrupted(why)

    def finish(self, tasks_dir: Path, rootdir: Path) -> bool:
        """The end of the session: every selected task accounted for, the reports and the
        tracker written. Returns whether the run stopped because the API's quota is gone
        (its tasks were skipped: the run did not do its work)."""
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        record = self.recorder.record
        record.finished = time.time()
        with contextlib.suppress(StoreError):  # a store gone mid-run must not cost the reports
            record.health_probes = self.store.incr(PROBES_KEY, 0)
            record.requests_sent = self.store.incr(REQUESTS_KEY, 0)
            for status in (429, 503):
                count = self.store.incr(f"{REFUSED_KEY}:{status}", 0)
                if count:
                    record.refusals[status] = count
            record.stopped = record.stopped or self.run.pacer(self.store).read().stop or None
            budgets = budgets_of(self.run.settings, self.store)
            record.budgets = budgets.summary()
            record.stopped = record.stopped or budgets.stopped()
        if self.collected:  # with workers: this process collected nothing
            describe = tasks_from_task_files(tasks_dir, rootdir)
            self.keeper.settle(self.collected, describe, set(self.running()))
        else:
            self.keeper.settle(list(self.selected), self.selected.get, set(self.running()))
        record.prediction = self.run.run_plan(
            [r.task for r in record.results],
            workers=self.run.settings.workers,
            distributed=self.run.role is Role.CONTROLLER,
            history=self.history,
        ).to_dict()
        # Written here, before xdist tears its workers down (up to 10 s for a hung one after
        # an interruption, when CI may be about to kill the job); the summary prints what it
        # said.
        if record.results:
            self.end_lines = self.write_outputs()
        if len(record.results) >= FREEZE_FROM:
            # An xdist controller collects no items, so it freezes here, once the run's
            # results are in, for pytest's exit-time collections.
            gc.freeze()
        return bool(record.stopped)

    def write_outputs(self) -> list[str]:
        """Write the report folder and (never on the sandbox) the tracker; say what happened."""
        # Imported here, at the end of the run, and only by the process that writes them.
        from pytest_roadmap import report
        from pytest_roadmap.tracker import ProgressTracker

        record = self.recorder.record
        settings = self.run.settings
        # Each output on its own: one that fails (a full disk, an outputs/ link out of the
        # folder, a broken tracker) is one line here and costs none of the others.
        lines: list[str] = []
        written = self.outputs.close() if self.outputs is not None else None
        self.outputs = None
        folder = self.run.replay_dir if self.run.replay else settings.report_dir
        recorded, writer_error = self.keeper.close_tracker()
        try:
            done = report.write_reports(record, folder, written)
        except Exception as exc:  # no traceback at the end of a run, whatever went wrong
            lines.append(f"roadmap: report not written: {_error_words(exc)}")
        else:
            if done.files:
                more = f" (+{len(done.outputs)} task outputs)" if done.outputs else ""
                names = ", ".join(done.reports) or "no report"
                lines.append(f"report: {names} in {folder}{more}")
            lines += [f"roadmap: {problem}" for problem in done.problems]
        if record.replay:
            lines.append("tracker: not updated (a replay judges saved answers)")
            return lines
        if record.sandbox:
            lines.append("tracker: not updated (results came from the sandbox)")
            return lines
        try:
            # What the writer recorded during the run is not recorded twice.
            ProgressTracker(settings.tracker).record_run(record, recorded)
            lines.append(f"tracker: updated {settings.tracker}")
        except Exception as exc:
            lines.append(f"roadmap: tracker not updated: {_error_words(exc)}")
        if writer_error is not None and lines[-1].startswith("tracker: updated"):
            lines.append(f"roadmap: the tracker was not updated during the run: {writer_error}")
        if record.interrupted and recorded is not None:
            left = record.count(INTERRUPTED) + record.count(NOT_RUN)
            if left:
                lines.append(
                    f"roadmap: run interrupted ({record.interrupted}): {left} tasks left; "
                    "--roadmap-resume runs only those the tracker does not mark complete"
                )
        return lines

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.outputs is not None:
            self.outputs.close()
        self.keeper.close_tracker()
        self.store.close()
        if self.sandbox is not None:
            self.sandbox.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _without_status(say: Callable[[str], None]) -> Callable[[str], None]:
    """The batch file's `trackMetrics: false`: no live status line; changes still print."""

    def write(line: str) -> None:
        if not line.startswith(STATUS):
            say(line)

    return write


def _error_words(exc: Exception) -> str:
    """A user error's own line; anything else with its kind, as it is not expected."""
    if isinstance(exc, RoadmapError | OSError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
