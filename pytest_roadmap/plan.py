"""The run plan: what a selection of tasks will cost before it runs, and how that compared.

A run's wall time is bounded below by `max(M/R, M·L/N)`: M requests at R per second, and
M requests of L seconds each on N workers. The plan adds the start-up (interpreter, xdist
workers, collection) and the end (workers shutting down, reports), both as the last report
measured them, and sums the bound over the batches, which run one after another. L and the
retry rate come from the last report.json for these tasks (its `tasks[].duration_s` over
`attempts`), or from `--roadmap-expected-latency`. Nothing here sends a request or knows
pytest: the plugin hands in the selected tasks, the settings and the last report.

The progress tracker is not a source: it keeps which tasks completed and the product's own
metrics (its `latency` is the roadmap's target figure, set by hand), never how long a
request took.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_roadmap.batches import BatchPlan, run_order
from pytest_roadmap.caps import concurrency_ceiling
from pytest_roadmap.display import counted
from pytest_roadmap.protocol import OPENAI, PROTOCOLS, Usage
from pytest_roadmap.results import FAILED, PASSED, Attempt, RunRecord
from pytest_roadmap.settings import Settings
from pytest_roadmap.store.base import window_place
from pytest_roadmap.tasks import Task
from pytest_roadmap.tokens import DEFAULT_COMPLETION, logged_window
from pytest_roadmap.usage import cost, priced, shown_cost

# Start-up and end without a report that measured them: the controller's configure to the
# first task's call, and the last task's end to the reports. Measured against the sandbox
# on a loaded 2-core machine (docs/benchmarks.md, "The plan's start-up"): 0.13 s in one
# process; with xdist, which starts its workers one after another, 1.1 s at -n 1, 2.5 s
# at -n 3, 3.6 s at -n 6.
STARTUP_IN_PROCESS_S = 0.15
STARTUP_BASE_S = 0.6
STARTUP_PER_WORKER_S = 0.5
FINISH_S = 0.05


def shown_seconds(seconds: float) -> str:
    """A duration for people: "850 ms", "8.2 s", "12 min 5 s", "1 h 30 min"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True)
class TaskHistory:
    """What the last report measured for one task."""

    latency: float  # seconds per attempt, as its worker timed the call
    attempts: float  # attempts it took (1: no retry)
    usage: Usage | None = None  # tokens its answers used


@dataclass(frozen=True)
class History:
    """The last report's measurements, by task id and for the run."""

    tasks: Mapping[str, TaskHistory]
    startup_s: float | None = None  # configure to the first task's start
    finish_s: float | None = None  # the last task's end to the reports
    overhead_s: float | None = None  # per task: worker time beyond its attempts
    workers: int | None = None
    probes_per_s: float | None = None  # health probes per second of the run

    @property
    def mean_latency(self) -> float | None:
        known = [t.latency for t in self.tasks.values()]
        return sum(known) / len(known) if known else None

    @property
    def retry_rate(self) -> float:
        """Attempts beyond the first, per task."""
        known = [t.attempts - 1 for t in self.tasks.values()]
        return sum(known) / len(known) if known else 0.0

    @property
    def mean_completion(self) -> int | None:
        done = [t.usage.completion for t in self.tasks.values() if t.usage is not None]
        return round(sum(done) / len(done)) if done else None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def history_from_report(data: object) -> History | None:
    """The measurements of a report.json document; None if it holds none. Fields of the
    wrong type are passed over: a report from another version must not stop a plan."""
    if not isinstance(data, dict):
        return None
    tasks: dict[str, TaskHistory] = {}
    for entry in data.get("tasks") or ():
        if not isinstance(entry, dict) or entry.get("outcome") not in (PASSED, FAILED):
            continue
        attempts, seconds = _number(entry.get("attempts")), _number(entry.get("duration_s"))
        if not isinstance(entry.get("id"), str) or not attempts or seconds is None:
            continue
        tasks[entry["id"]] = TaskHistory(
            seconds / attempts, attempts, Usage.from_dict(entry.get("usage"))
        )
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    assert isinstance(run, dict)
    plan = data.get("plan") if isinstance(data.get("plan"), dict) else {}
    assert isinstance(plan, dict)
    actual = plan.get("actual") if isinstance(plan.get("actual"), dict) else {}
    assert isinstance(actual, dict)
    health = run.get("health") if isinstance(run.get("health"), dict) else {}
    assert isinstance(health, dict)
    duration, probes = _number(run.get("duration_s")), _number(health.get("probes"))
    workers = run.get("workers")
    if not tasks:
        return None
    return History(
        tasks=tasks,
        startup_s=_number(actual.get("startup_s")),
        finish_s=_number(actual.get("finish_s")),
        overhead_s=_number(actual.get("overhead_s")),
        workers=workers if isinstance(workers, int) and workers > 0 else None,
        probes_per_s=probes / duration if probes is not None and duration else None,
    )


def read_history(path: Path) -> History | None:
    """The last report's measurements, or None if there is no readable report."""
    try:
        return history_from_report(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return None


@dataclass
class Row:
    """One batch of the plan (or the run, without batches)."""

    name: str
    tasks: int
    requests: float  # chat requests, expected retries included
    probes: float  # health probes
    seconds: float | None  # None: no latency known
    bound: str  # what decides the time: latency, rate, tokens, spacing
    tokens: Usage | None = None
    cost: float | None = None

    @property
    def total_requests(self) -> int:
        return math.ceil(self.requests + self.probes)


@dataclass
class Plan:
    """What a run of the selected tasks is expected to take."""

    rows: list[Row]
    workers: int  # tasks at once: workers x requests in flight, as the batch file allows
    startup_s: float
    finish_s: float
    between_batches_s: float
    latency_from: str  # where L came from, for people
    retry_rate: float
    unknown: int = 0  # tasks whose latency nothing recorded
    protocol: str = "beast"
    skipped: int = 0  # selected, but not to be sent (--roadmap-resume, the queue limit)
    notes: list[str] = field(default_factory=list)
    processes: int | None = None  # worker processes, when not one per task at once
    inflight: int = 1  # requests each keeps in flight (--roadmap-inflight)

    @property
    def tasks(self) -> int:
        return sum(r.tasks for r in self.rows)

    @property
    def requests(self) -> int:
        return sum(r.total_requests for r in self.rows)

    @property
    def work_s(self) -> float | None:
        if any(r.seconds is None for r in self.rows):
            return None
        gaps = self.between_batches_s * max(0, len(self.rows) - 1)
        return sum(r.seconds or 0.0 for r in self.rows) + gaps

    @property
    def seconds(self) -> float | None:
        work = self.work_s
        return None if work is None else self.startup_s + work + self.finish_s

    @property
    def tokens(self) -> Usage | None:
        found = [r.tokens for r in self.rows if r.tokens is not None]
        return sum(found[1:], found[0]) if found else None

    @property
    def cost(self) -> float | None:
        found = [r.cost for r in self.rows if r.cost is not None]
        return sum(found) if found else None

    def lines(self) -> list[str]:
        """The plan as the terminal shows it: one line per batch, then the total."""
        where = counted(self.workers, "worker")
        if self.inflight > 1:
            processes = self.processes or self.workers
            where = (
                f"{self.workers} at once ({counted(processes, 'worker')} x {self.inflight} "
                "in flight)"
            )
        out = [
            f"roadmap plan: {counted(self.tasks, 'task')} on {where}; "
            "latency "
            f"{self.latency_from}, {self.retry_rate:.2f} retries a task; nothing was sent"
        ]
        if len(self.rows) > 1 or (self.rows and self.rows[0].name):
            out += [f"  {_row_line(row, self.protocol)}" for row in self.rows]
        total = self.seconds
        time = (
            "unknown (no earlier report for these tasks: give --roadmap-expected-latency)"
            if total is None
            else f"{shown_seconds(total)} (start-up {shown_seconds(self.startup_s)}, "
            f"tasks {shown_seconds(self.work_s or 0.0)}{self._bound()}, "
            f"end {shown_seconds(self.finish_s)})"
        )
        out.append(
            f"  total: {counted(self.tasks, 'task')}, {counted(self.requests, 'request')} "
            f"({counted(sum(math.ceil(r.probes) for r in self.rows), 'health probe')}), {time}"
            f"{_tokens_words(self.tokens, self.cost, self.protocol)}"
        )
        if self.unknown and total is not None:
            out.append(
                f"  {counted(self.unknown, 'task')} had no recorded latency: the mean was used"
            )
        if self.skipped:
            out.append(
                f"  {counted(self.skipped, 'selected task')} will not be sent (resumed or queue "
                "full)"
            )
        out += [f"  {note}" for note in self.notes]
        return out

    def _bound(self) -> str:
        bounds = {r.bound for r in self.rows}
        return f" {bounds.pop()}-bound" if len(bounds) == 1 else ""

    def to_dict(self) -> dict[str, Any]:
        """The prediction as report.json holds it."""
        return {
            "tasks": self.tasks,
            "requests": self.requests,
            "wall_s": _rounded(self.seconds),
            "startup_s": _rounded(self.startup_s),
            "work_s": _rounded(self.work_s),
            "finish_s": _rounded(self.finish_s),
            "latency_from": self.latency_from,
            "retry_rate": round(self.retry_rate, 4),
            "tokens": self.tokens.to_dict() if self.tokens is not None else None,
            "cost": None if self.cost is None else round(self.cost, 6),
            "batches": [
                {
                    "name": r.name or None,
                    "tasks": r.tasks,
                    "requests": r.total_requests,
                    "wall_s": _rounded(r.seconds),
                    "bound": r.bound,
                }
                for r in self.rows
            ],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _tokens_words(tokens: Usage | None, value: float | None, protocol: str) -> str:
    if protocol != OPENAI or tokens is None:
        return ""
    money = f", {shown_cost(value)}" if value is not None else ""
    return f", {tokens.total:,} tokens{money}"


def _row_line(row: Row, protocol: str) -> str:
    time = "?" if row.seconds is None else f"{shown_seconds(row.seconds)} ({row.bound}-bound)"
    return (
        f"{row.name or '(no batch)'}: {counted(row.tasks, 'task')}, "
        f"{counted(row.total_requests, 'request')}, "
        f"{time}{_tokens_words(row.tokens, row.cost, protocol)}"
    )


def _startup(history: History | None, workers: int, distributed: bool) -> float:
    if history is not None and history.startup_s is not None:
        # xdist starts its workers one after another: scale by the worker count.
        if distributed and history.workers and history.workers != workers:
            return history.startup_s * workers / history.workers
        return history.startup_s
    if not distributed:
        return STARTUP_IN_PROCESS_S
    return STARTUP_BASE_S + STARTUP_PER_WORKER_S * workers


def token_wait(amounts: Sequence[int], per_minute: float) -> float:
    """When the last of requests of `amounts` tokens may go under the token limit, each
    as early as the sliding minute (and its margin, tokens.py) allows: a minute's worth
    at once, then the rest as the oldest leave the window."""
    window = logged_window()
    placed: list[tuple[float, int]] = []
    last = 0.0
    for amount in amounts:
        # Only the window before the last placement counts: times never go back, so what
        # left it stays out (and the plan stays linear at 10,000 tasks).
        placed = [entry for entry in placed if entry[0] > last - window]
        last = window_place(last, placed, amount, window, per_minute)
        placed.append((last, amount))
    return last


def _expected_tokens(task: Task, history: History | None) -> Usage:
    """Tokens one attempt of `task` is expected to use: as recorded, else the estimate the
    token limit reserves (prompt by the rule of thumb, `max_tokens` or the mean completion)."""
    known = history.tasks.get(task.id) if history is not None else None
    if known is not None and known.usage is not None:
        per = 1.0 / max(known.attempts, 1.0)
        return Usage(round(known.usage.prompt * per), round(known.usage.completion * per))
    prompt = PROTOCOLS[OPENAI].estimate(task.prompt, task.system) if task.prompt else 0
    completion = task.max_tokens
    if completion is None:
        completion = (history.mean_completion if history else None) or DEFAULT_COMPLETION
    return Usage(prompt, completion if task.prompt else 0)


def make_plan(
    tasks: Sequence[Task],
    settings: Settings,
    *,
    workers: int,
    distributed: bool,
    batches: BatchPlan | None = None,
    history: History | None = None,
    skipped: int = 0,
    processes: int | None = None,
) -> Plan:
    """The plan for `tasks` (the ones to be sent, in run order) with `workers` of them at
    once; start-up is that of `processes` workers (default: `workers`)."""
    if settings.expected_latency is not None:
        fallback, latency_from = (
            settings.expected_latency,
            (f"{shown_seconds(settings.expected_latency)} (--roadmap-expected-latency)"),
        )
    elif history is not None and history.mean_latency is not None:
        fallback = history.mean_latency
        latency_from = "as the last report measured"
    else:
        fallback, latency_from = None, "unknown"
    retry_rate = min(history.retry_rate if history else 0.0, float(settings.reruns))
    overhead = history.overhead_s if history and history.overhead_s is not None else 0.0
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        batch = batches.batch_of(task.id) if batches is not None else None
        groups.setdefault(batch.name if batch else "", []).append(task)
    if batches is not None:  # rows in the batches' order, tasks in none last
        index = {b.name: b.index for b in batches.batches}
        groups = dict(sorted(groups.items(), key=lambda kv: index.get(kv[0], len(index))))
    rows: list[Row] = []
    unknown = 0
    for name, group in groups.items():
        batch = next((b for b in batches.batches if b.name == name), None) if batches else None
        n, rate = max(1, workers), settings.rate_limit
        if batch is not None and batch.max_concurrency is not None:
            n = max(1, min(n, batch.max_concurrency))
        if batch is not None and batch.rate_limit is not None:
            rate = min(rate, batch.rate_limit)
        busy = 0.0  # worker-seconds
        longest = 0.0
        usage: Usage | None = None
        amounts: list[int] = []  # each task's expected tokens, for the token limit
        known = True
        for task in group:
            recorded = history.tasks.get(task.id) if history is not None else None
            if settings.expected_latency is not None or recorded is None:
                latency = fallback
                unknown += recorded is None and settings.expected_latency is None
            else:
                latency = recorded.latency
            attempts = 1.0 + retry_rate
            if latency is None:
                known = False
                continue
            # A retry waits the first retry delay first, on its worker.
            busy += attempts * latency + retry_rate * settings.retry_delay + overhead
            longest = max(longest, attempts * latency)
            if settings.protocol == OPENAI:
                one = _expected_tokens(task, history)
                scaled = Usage(round(one.prompt * attempts), round(one.completion * attempts))
                usage = scaled if usage is None else usage + scaled
                amounts.append(scaled.total)
        # Each answer is one request, and one more for each rubric check that grades it.
        requests = sum(1 + task.gradings for task in group) * (1.0 + retry_rate)
        seconds: float | None = None
        bound = "latency"
        probes = 0.0
        if known:
            spacing = (batches.between_tasks if batches else 0.0) * (len(group) - 1)
            # Probes depend on the time and count against the rate: one round suffices.
            for _ in range(2):
                probes = _probes(seconds or busy / n, settings, history, first=not rows)
                bounds = {
                    "latency": max(busy / n, longest),
                    "rate": (requests + probes) / rate,
                    "spacing": spacing,
                }
                if settings.token_rate is not None and usage is not None:
                    bounds["tokens"] = token_wait(amounts, settings.token_rate)
                bound = max(bounds, key=lambda k: bounds[k])
                seconds = bounds[bound]
        value = cost(usage, settings.price_in, settings.price_out) if usage else None
        rows.append(Row(name, len(group), requests, probes, seconds, bound, usage, value))
    plan = Plan(
        rows=rows or [Row("", 0, 0.0, 0.0, 0.0, "latency")],
        workers=workers,
        startup_s=_startup(history, processes or workers, distributed),
        finish_s=history.finish_s if history and history.finish_s is not None else FINISH_S,
        between_batches_s=batches.between_batches if batches else 0.0,
        latency_from=latency_from,
        retry_rate=retry_rate,
        unknown=unknown if fallback is not None else 0,
        protocol=settings.protocol,
        skipped=skipped,
        processes=processes,
        inflight=settings.inflight,
    )
    if settings.protocol == OPENAI and not priced(settings.price_in, settings.price_out):
        plan.notes.append("no cost: give --roadmap-price-in and --roadmap-price-out")
    return plan


def _probes(seconds: float, settings: Settings, history: History | None, first: bool) -> float:
    """Health probes over `seconds` of work: a healthy answer is shared for the health
    interval, so about one per interval (as the last run measured them, if it did)."""
    if history is not None and history.probes_per_s is not None:
        return history.probes_per_s * seconds
    return seconds / settings.health_interval + (1.0 if first else 0.0)


# -- how the prediction compared -----------------------------------------------------------


def actual_of(record: RunRecord) -> dict[str, Any]:
    """What the run measured, in the prediction's terms: wall time (configure to the
    reports), requests (health probes included), start-up, work and end, and the time each
    task's worker spent beyond its attempts."""
    attempts = [a for r in record.results for a in r.attempts]
    ran = [r for r in record.results if r.attempts]
    data: dict[str, Any] = {
        "wall_s": round(record.duration_s, 3),
        "requests": record.requests_sent,
        "tasks": len(ran),
    }
    if attempts:
        first = min(a.started for a in attempts)
        last = max(a.finished for a in attempts)
        workers = max(1, len({a.worker for a in attempts}))
        data["startup_s"] = round(max(0.0, first - record.started), 3)
        data["work_s"] = round(max(0.0, last - first), 3)
        data["finish_s"] = round(max(0.0, record.finished - last), 3)
        data["workers"] = workers
        data["overhead_s"] = _overhead(attempts)
    return data


def _overhead(attempts: Sequence[Attempt]) -> float | None:
    """A worker's time between one attempt's end and its next one's start (health probes,
    the gate, xdist's round trips): the median over every worker's gaps. Gaps, not the
    span, so that xdist starting its workers one after another does not count."""
    gaps: list[float] = []
    by_worker: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_worker.setdefault(attempt.worker, []).append(attempt)
    for mine in by_worker.values():
        mine.sort(key=lambda a: a.started)
        gaps += [max(0.0, b.started - a.finished) for a, b in itertools.pairwise(mine)]
    return round(statistics.median(gaps), 4) if gaps else None


def judged(predicted: Mapping[str, Any], actual: Mapping[str, Any]) -> float | None:
    """The prediction's error on wall time, as a fraction of the actual (+0.1: 10% over)."""
    wall, guess = actual.get("wall_s"), predicted.get("wall_s")
    if not isinstance(wall, int | float) or not isinstance(guess, int | float) or wall <= 0:
        return None
    return round((guess - wall) / wall, 4)


def plan_section(record: RunRecord) -> dict[str, Any] | None:
    """report.json's `plan`: the prediction made before the run, what happened, the error."""
    if record.prediction is None:
        return None
    actual = actual_of(record)
    return {
        "predicted": dict(record.prediction),
        "actual": actual,
        "error": judged(record.prediction, actual),
    }


def planned_tasks(
    tasks: Iterable[Task], completed: frozenset[str] | None, max_queue: int
) -> tuple[list[Task], int]:
    """The tasks a run will send, in order, and how many selected ones it will not: those
    `--roadmap-resume` skips (`completed` tracker keys) and those past the queue limit."""
    kept: list[Task] = []
    left = 0
    for task in tasks:
        resumed = completed is not None and task.tracker_key in completed
        if resumed or (max_queue and len(kept) >= max_queue):
            left += 1
        else:
            kept.append(task)
    return kept, left


def collection_order(tasks: Iterable[Task]) -> list[Task]:
    """Tasks in the order collection yields them: by file, then month, week, priority, id."""
    return sorted(tasks, key=lambda t: (t.source, t.month, t.week, t.priority, t.id))


def plan_run(
    tasks: Iterable[Task],
    settings: Settings,
    *,
    workers: int,
    distributed: bool,
    batches: BatchPlan | None,
    history: History | None,
    completed: frozenset[str] | None,
) -> Plan:
    """The plan of a run's selection (in collection order): put in run order, without the
    tasks it will not send, on the workers (each with its requests in flight) the batch file
    allows."""
    given = list(tasks)
    # Python tasks (a prompt-less Task) send what their test sends: nothing to plan.
    python = sum(1 for t in given if not t.prompt)
    ordered = run_order([t for t in given if t.prompt], batches)
    kept, left = planned_tasks(ordered, completed, settings.max_queue)
    slots = max(1, workers) * settings.inflight
    ceiling = concurrency_ceiling(slots, batches.safeguards if batches else None)
    plan = make_plan(
        kept,
        settings,
        workers=ceiling,
        processes=max(1, workers),
        distributed=distributed,
        batches=batches,
        history=history,
        skipped=left,
    )
    if python:
        plan.notes.append(
            f"{counted(python, 'Python task')} not planned (a Python task sends what its test "
            "sends)"
        )
    return plan
