"""One process's view of the run's shared safeguards: rate limit, concurrency gate, health.

Every worker builds one of these over the shared store; the limits they enforce are the
run's, not the worker's, because all their state lives in the store.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pytest_roadmap.batches import Batch
from pytest_roadmap.budgets import RunBudgets, Spend
from pytest_roadmap.compliance import Entry, RequestLog
from pytest_roadmap.gate import ConcurrencyGate, Slot
from pytest_roadmap.health import HealthProbe
from pytest_roadmap.pacing import Pace, Pacer, Paused, QuotaExhausted, Ticket
from pytest_roadmap.protocol import (
    ATTEMPT_HEADER,
    CHECK_HEADER,
    PROTOCOLS,
    RUN_HEADER,
    TASK_HEADER,
    WORKER_HEADER,
    Usage,
)
from pytest_roadmap.ratelimit import RateLimiter, acquire_together
from pytest_roadmap.retry import Backoff, TaskFailure
from pytest_roadmap.settings import Settings
from pytest_roadmap.store.base import Store, StoreError
from pytest_roadmap.tasks import Task
from pytest_roadmap.tokens import Reservation, TokenBudget

if TYPE_CHECKING:
    from pytest_roadmap.client import RoadmapClient

GATE_KEY = "gate"
REQUESTS_KEY = "requests"
# A slot's lease is renewed by a heartbeat while its worker lives; a killed worker's slot
# comes back after this long at the latest (sooner through pytest_testnodedown).
GATE_LEASE = 10.0
START_CUSHION = 0.02  # seconds added to a batch's betweenTasks
# Seconds a request ready to go waits for the probe that judges another task's 503 or lost
# connection (a 503 for capacity is judged "ok" in milliseconds) before it ends unsent.
DOUBT_PATIENCE = 1.0
# Refusals of one task in a row that are retried at once; later ones back off. The second is
# most often of the same burst as the first: its slot was reserved before the learned pace
# moved (behind nginx at 4 r/s, a CUBIC probe's refusal near the end of a run, then its
# retry 0.25 s after the last send, and the run's last task 2 s late).
REFUSALS_AT_ONCE = 2


def batch_gate_key(batch: Batch) -> str:
    return f"{GATE_KEY}:batch{batch.index}"


def pacer_of(
    settings: Settings,
    store: Store,
    *,
    maximum: int | None = None,
    lower: bool = True,
    higher: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Pacer:
    """The run's learned pace over `store`, as these settings bound it: the concurrency
    limit at most `maximum` (the worker count, or a batch file's cap), moving only the
    ways a batch file's safeguards allow."""
    return Pacer(
        store,
        gate_key=GATE_KEY,
        maximum=maximum or settings.workers,
        lower=lower,
        higher=higher,
        ceiling=settings.rate_limit,
        max_wait=settings.max_wait,
        mode=settings.adaptive,
        sleep=sleep,
    )


def budgets_of(
    settings: Settings, store: Store, *, sleep: Callable[[float], None] = time.sleep
) -> RunBudgets:
    """The run's retry, token and cost budgets over `store`, as the settings give them."""
    return RunBudgets(
        store,
        max_retries=settings.max_retries,
        max_tokens=settings.max_tokens,
        max_cost=settings.max_cost,
        price_in=settings.price_in,
        price_out=settings.price_out,
        patience=settings.max_wait,
        sleep=sleep,
    )


class _Throttles:
    """Every request: the learned pace, the run's rate limit and the current batch's
    (batches never overlap); every answer teaches the pace.

    A task's first request in a batch with `betweenTasks` is also a start, so it reserves
    the start spacing in the same atomic reservation (see `Store.reserve_all`). `doubt`
    says why the API looks down (`HealthProbe.judge`); only health probes go out then.

    The batch and the start are the sending thread's own: with --roadmap-inflight a worker
    sends its tasks' requests from several threads, each for its own task.
    """

    def __init__(
        self, run: RateLimiter, pacer: Pacer, stop: Callable[[], None] | None = None
    ) -> None:
        self.run = run
        self.pacer = pacer
        self._local = threading.local()
        self.stop = stop
        self.doubt: Callable[[float], tuple[str | None, bool]] | None = None
        self.log = RequestLog()  # what was sent and answered, for the compliance section

    @property
    def batch(self) -> RateLimiter | None:
        """The rate limit of the batch this thread's task is in, if it has one."""
        limiter: RateLimiter | None = getattr(self._local, "batch", None)
        return limiter

    @batch.setter
    def batch(self, limiter: RateLimiter | None) -> None:
        self._local.batch = limiter

    @property
    def start(self) -> RateLimiter | None:
        """The start spacing, armed for this thread's next request only."""
        limiter: RateLimiter | None = getattr(self._local, "start", None)
        return limiter

    @start.setter
    def start(self, limiter: RateLimiter | None) -> None:
        self._local.start = limiter

    def acquire(self, *, probe: bool = False, admit: Callable[[], None] | None = None) -> Ticket:
        with store_failures_are_transient():
            while True:
                pace = self._reserve()
                if self.stop is not None:
                    # After the wait, which can be long: an interrupted run sends nothing more.
                    self.stop()
                if probe or self.doubt is None:
                    break
                down, waited = self.doubt(DOUBT_PATIENCE)
                if down:
                    # Another worker met an outage while this one waited: sending would only
                    # meet it too. Nothing was sent; the next setup waits for a healthy probe.
                    raise TaskFailure(
                        f"not sent: the API looks down ({down}); every worker waits for a "
                        "health probe to say it is back",
                        transient=True,
                        refused=True,
                    )
                if not waited:
                    break
                # It waited for a probe's verdict, and the probe took the slot after this
                # one's: sent now, the request would follow the probe closer than the rate
                # allows (nginx's limit_req refused every such one). It takes a new slot.
            if admit is not None:
                # Last, after every wait: the request's own word on going now (the token
                # limit's, for a send held up past its tokens' time).
                admit()
            ticket = Ticket(self.pacer.store.clock(), pace.epoch, pace.limit, pace.ramp)
            self.log.sent(ticket, ticket.sent_at)
            return ticket

    def _reserve(self) -> Pace:
        """Wait for this request's send time under every rate that applies; the pace then.
        Raises `TaskFailure` (unsent) when the run is paused for longer than a request waits."""
        try:
            pace, rate = self.pacer.before_send()
            self.run.set_rate(rate, self.pacer.rising(pace))
            limiters = [self.run]
            if self.batch is not None:
                limiters.append(self.batch)
            if self.start is not None:
                limiters.append(self.start)
                self.start = None
            if acquire_together(limiters) > 0:
                # Another worker may have been told to pause while this one slept: its
                # slot came before the pause, so it goes back in line after it.
                pace = self.pacer.check()
                if pace.until > self.pacer.store.clock():
                    raise Paused(pace.until, pace.until_reason)
        except Paused as paused:
            # Nothing was sent, so nothing ran: the attempt waits in its next setup.
            raise TaskFailure(
                f"not sent: every worker waits ({paused.reason})",
                transient=True,
                refused=True,
            ) from None
        return pace

    def settle(
        self,
        ticket: Any,
        status: int | None,
        headers: Mapping[str, str],
        *,
        overload: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        if isinstance(ticket, Ticket):
            with store_failures_are_transient():
                at = self.pacer.store.clock()
                own_wait = None
                try:
                    if status is None and overload is None:
                        return  # no answer, and nothing that says why: nothing to learn
                    own_wait = self.pacer.answered(
                        ticket, status, headers, overload=overload, retry_after=retry_after
                    )
                finally:
                    self.log.answered(ticket, status, headers, retry_after, at, own_wait)


class Slots:
    """The concurrency slots one attempt holds: its batch's, then the run's."""

    def __init__(self, slots: list[Slot]) -> None:
        self._slots = slots

    def release(self) -> None:
        for slot in reversed(self._slots):
            slot.release()


@contextlib.contextmanager
def store_failures_are_transient() -> Iterator[None]:
    """A store that stops answering makes the attempt fail and retry, never run unlimited."""
    try:
        yield
    except StoreError as exc:
        raise TaskFailure(
            f"coordination store unavailable: {exc}", transient=True, overload=True
        ) from None


class Safeguards:
    """The limiter, gate, health probe and client of one process, over the shared store."""

    def __init__(
        self,
        settings: Settings,
        api_url: str,
        store: Store,
        worker: str,
        run_id: str,
        holder: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stop: Callable[[], None] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        # Gate tickets are held per worker process; the holder name must be unique across
        # every run sharing the store ("gw0" of one CI shard is not "gw0" of another).
        self.holder = holder or worker
        self._sleep = sleep
        self.limiter = RateLimiter(store, settings.rate_limit, settings.burst)
        self.pacer = pacer or pacer_of(settings, store, sleep=sleep)
        # `stop` raises (interrupt.RunStopped) once the run has stopped: checked before
        # every send.
        self._throttles = _Throttles(self.limiter, self.pacer, stop)
        self.gate = ConcurrencyGate(store, holder=self.holder, key=GATE_KEY, lease=GATE_LEASE)
        self._batch_gates: dict[int, ConcurrencyGate] = {}
        self._batch_limiters: dict[int, RateLimiter] = {}
        self._batch_starts: dict[int, RateLimiter] = {}
        # Imported here: requests is a third of the plugin's import time, and only a
        # process that runs tasks needs it (not the xdist controller, not a run without
        # --roadmap).
        from pytest_roadmap.client import RoadmapClient

        self.protocol = PROTOCOLS[settings.protocol]
        self.tokens = (
            TokenBudget(store, settings.token_rate, sleep=sleep) if settings.token_rate else None
        )
        self.client: RoadmapClient = RoadmapClient(
            api_url,
            model=settings.model,
            token=settings.token,
            timeout=settings.timeout,
            throttle=self._throttles,
            headers={WORKER_HEADER: worker, RUN_HEADER: run_id},
            ca_bundle=settings.ca_bundle,
            on_request=self._count_request,
            max_body=settings.max_body,
            redirect_hosts=settings.redirect_hosts,
            protocol=self.protocol,
            tokens=self.tokens,
        )
        self.health = HealthProbe(
            self.client,
            store,
            settings.health_path,
            wait=settings.health_wait,
            share=settings.health_interval,
            timeout=settings.timeout,
        )
        self._throttles.doubt = self.health.judge
        self.backoff = Backoff(settings.retry_delay, settings.backoff, settings.max_delay)
        self.budgets = budgets_of(settings, store, sleep=sleep)

    def take_requests(self) -> list[Entry]:
        """The requests this process sent since the last call, for the controller's log."""
        return self._throttles.log.take()

    def take_retry(self) -> bool:
        """One retry from the run's budget; False once it is spent (the failure is final),
        and while the store cannot say: the run never retries more than the budget."""
        try:
            return self.budgets.take_retry()
        except StoreError:
            return False

    def admit_spend(self, task: Task) -> Spend | None:
        """Hold what the task may use at most in the run's token and cost budgets (in the
        attempt's setup, before its slot); None without such a budget. Raises BudgetSpent
        once they cannot take it."""
        if not self.budgets.spends or task.max_tokens is None:
            return None
        prompt = self.protocol.estimate(task.prompt, task.system)
        spend = self.budgets.worst_case(prompt, task.max_tokens)
        with store_failures_are_transient():
            self.budgets.admit(spend)
        return spend

    def _count_request(self) -> None:
        self.store.incr(REQUESTS_KEY)

    def before_attempt(
        self, failed_attempts: int, last: BaseException | None, refusals: int = 0
    ) -> str | None:
        """Wait out the backoff after a failed attempt, a pause of the whole run, then for a
        healthy API.

        After `refusals` refusals in a row (the API refused for load; the task did not
        run), the first `REFUSALS_AT_ONCE` are retried at once (the learned pace has
        already moved) and later ones back off as failures do, spending no retry. Returns
        None when the attempt may go ahead, or why the API is not usable; raises
        `QuotaExhausted` once the quota is gone.
        The caller holds no concurrency slot yet, so sleeping here blocks no one.
        """
        refused = isinstance(last, TaskFailure) and last.refused
        if refused and refusals > REFUSALS_AT_ONCE:
            self._sleep(self.backoff.wait(refusals - REFUSALS_AT_ONCE))
        elif failed_attempts and not refused:
            retry_after = last.retry_after if isinstance(last, TaskFailure) else None
            self._sleep(self.backoff.wait(failed_attempts, retry_after))
        with store_failures_are_transient():
            if refused:
                # Only a refused attempt waits here; any other sees a pause (or a spent
                # quota) where every request does, before it is sent, and ends unsent.
                self.pacer.wait_pause()
            return self.health.wait_healthy()

    def enter_batch(self, batch: Batch | None) -> None:
        """Requests from now on also pass `batch`'s own rate limit, if it has one."""
        limiter = None
        if batch is not None and batch.rate_limit is not None:
            limiter = self._batch_limiters.get(batch.index)
            if limiter is None:
                rate = min(batch.rate_limit, self.settings.rate_limit)
                key = f"rate:batch{batch.index}"
                limiter = RateLimiter(self.store, rate, self.settings.burst, key=key)
                self._batch_limiters[batch.index] = limiter
        self._throttles.batch = limiter

    def acquire_slot(self, batch: Batch | None = None, between_tasks: float = 0.0) -> Slots:
        """The slots for one attempt; in a batch, starts are also spaced `between_tasks`."""
        with store_failures_are_transient():
            return self._acquire_slots(batch, between_tasks)

    def _acquire_slots(self, batch: Batch | None, between_tasks: float) -> Slots:
        slots: list[Slot] = []
        if batch is not None and batch.max_concurrency is not None:
            gate = self._batch_gates.get(batch.index)
            if gate is None:
                made = ConcurrencyGate(
                    self.store, holder=self.holder, key=batch_gate_key(batch), lease=GATE_LEASE
                )
                # One gate per batch in a process, whichever of its threads made it first:
                # its threads queue behind one ticket of it (gate.py).
                gate = self._batch_gates.setdefault(batch.index, made)
            slots.append(gate.acquire())
        slots.append(self.gate.acquire())
        if batch is not None and between_tasks > 0:
            spacing = self._batch_starts.get(batch.index)
            if spacing is None:
                key = f"start:batch{batch.index}"
                # A small cushion: a send can go out a few ms after its reserved time,
                # which must never bring two starts closer than asked.
                interval = between_tasks + START_CUSHION
                spacing = RateLimiter(self.store, 1.0 / interval, key=key)
                self._batch_starts[batch.index] = spacing
            self._throttles.start = spacing
        return Slots(slots)

    def reserve_tokens(self, task: Task) -> Reservation | None:
        """Wait until the task's estimated tokens fit in the run's token budget (in the
        attempt's setup, so the wait counts against no timeout); the reservation, which
        `chat` settles (or `give_back_tokens` if the attempt never sends), or None without
        a budget."""
        if self.tokens is None:
            return None
        with store_failures_are_transient():
            prompt = self.protocol.estimate(task.prompt, task.system)
            return self.tokens.reserve(self.tokens.estimate(prompt, task.max_tokens))

    def give_back_tokens(self, reserved: Reservation | None) -> None:
        """The tokens of an attempt that ended before its request, free for the next one;
        a store that cannot say keeps them (the safe side)."""
        if self.tokens is not None and reserved is not None:
            with contextlib.suppress(StoreError):
                self.tokens.give_back(reserved)

    def chat(
        self,
        task: Task,
        attempt: int,
        reserved: Reservation | None = None,
        spend: Spend | None = None,
        *,
        model: str | None = None,
        check: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one task's prompt (its tokens already `reserved` in the budget, if any, and
        its worst case held in the run's budgets as `spend`); a failure that smells of
        overload re-arms the probe. `model` asks another model than the run's; `check`
        names the check a request is for (a rubric's grading), in its trace header;
        `timeout` is the request's deadline, if not the run's task timeout."""
        with self._settled(spend) as settle:
            answer = self._chat(task, attempt, reserved, model, check, timeout)
            settle(Usage.from_dict(answer.get("usage")))
            return answer

    @contextlib.contextmanager
    def _settled(self, spend: Spend | None) -> Iterator[Callable[[Usage | None], None]]:
        """Settles `spend` in the run's budgets however the attempt ends: by the answer's
        usage, by nothing for an error answer, by its worst case when no answer came."""
        done = False

        def settle(usage: Usage | None) -> None:
            nonlocal done
            if spend is not None and not done:
                with store_failures_are_transient():
                    self.budgets.settle(spend, usage)
            done = True

        try:
            yield settle
        except QuotaExhausted:  # nothing was sent
            settle(None)
            raise
        except TaskFailure as failure:
            if not (failure.overload and not failure.refused):  # the API answered
                settle(None)
            raise
        finally:
            if spend is not None and not done:
                with contextlib.suppress(StoreError):
                    self.budgets.keep(spend)

    def _chat(
        self,
        task: Task,
        attempt: int,
        reserved: Reservation | None,
        model: str | None = None,
        check: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        headers = {TASK_HEADER: task.id, ATTEMPT_HEADER: str(attempt)}
        if check is not None:
            headers[CHECK_HEADER] = check
        extra = {"model": model} if model is not None else {}
        try:
            with store_failures_are_transient():
                answer = self.client.chat(
                    task.prompt,
                    headers=headers,
                    system=task.system,
                    max_tokens=task.max_tokens,
                    temperature=task.temperature,
                    reserved=reserved,
                    timeout=timeout,
                    **extra,
                )
                self.health.confirm()
                return answer
        except TaskFailure as failure:
            # A 503 or no answer may be an outage: no task goes out before a probe says
            # the API is up (a 503 for capacity costs that probe). A 429 is an answer: the
            # API is up, only busy; the pace deals with it.
            if failure.outage:
                self.health.invalidate()
            raise

    def close(self) -> None:
        self.client.close()
        for gate in [self.gate, *self._batch_gates.values()]:
            gate.close()
