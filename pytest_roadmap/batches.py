"""Batch files (the original system's BATCH_CONFIG.json) and the order tasks run in.

A batch file lists batches in the order they run, each with its tasks and optional limits,
and may carry the original's `safeguards` (caps on the run's own settings) and `monitoring`
(alert thresholds) blocks:

    {"batches": [{"name": "Month 1 - Week 1", "description": "...", "priority": 1,
                  "tasks": ["monitoring", "dashboard"], "maxConcurrency": 2, "rateLimit": 5}],
     "delays": {"betweenBatches": 5000, "betweenTasks": 1000},
     "safeguards": {"maxTotalConcurrency": 3, "maxRateLimit": 10, "healthCheckInterval": 5000,
                    "autoReduceOnFailure": true, "autoIncreaseOnSuccess": true},
     "monitoring": {"trackMetrics": true, "alertOnFailureRate": 0.2, "alertOnQueueSize": 50}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_roadmap.errors import SettingError, shown
from pytest_roadmap.settings import MAX_RATE, MIN_RATE
from pytest_roadmap.tasks import Task
from pytest_roadmap.validation import Range


@dataclass(frozen=True)
class Batch:
    """One batch: its place in the order, its tasks and its own limits (None: the run's)."""

    index: int
    name: str
    tasks: tuple[str, ...]
    max_concurrency: int | None = None
    rate_limit: float | None = None
    description: str | None = None  # for the reader; shown nowhere else
    priority: int | None = None  # kept as written: batches run in file order, as they did


@dataclass(frozen=True)
class SafeguardCaps:
    """The file's `safeguards` block: caps on the run's own settings (None: no cap)."""

    max_total_concurrency: int | None = None
    max_rate_limit: float | None = None
    health_check_interval: float | None = None  # seconds (the file says milliseconds)
    auto_reduce_on_failure: bool = True
    auto_increase_on_success: bool = True


@dataclass(frozen=True)
class MonitoringRules:
    """The file's `monitoring` block: the live status line and two alert thresholds."""

    track_metrics: bool = True
    alert_on_failure_rate: float | None = None  # a share, 0..1
    alert_on_queue_size: int | None = None


@dataclass(frozen=True)
class BatchPlan:
    """The batches in file order, the delays between them (seconds), the safeguards and
    the monitoring settings."""

    source: str
    batches: tuple[Batch, ...]
    between_batches: float = 0.0
    between_tasks: float = 0.0
    safeguards: SafeguardCaps = SafeguardCaps()
    monitoring: MonitoringRules = MonitoringRules()

    def batch_of(self, task_id: str) -> Batch | None:
        for batch in self.batches:
            if task_id in batch.tasks:
                return batch
        return None

    def named(self, names: Sequence[str]) -> BatchPlan:
        """Only the named batches (in file order); an unknown name is a SettingError."""
        known = {b.name for b in self.batches}
        for name in names:
            if name not in known:
                raise SettingError(
                    f"--roadmap-batch {name!r}: no such batch in {self.source} "
                    f"(batches: {', '.join(repr(b.name) for b in self.batches)})"
                )
        kept = tuple(b for b in self.batches if b.name in names)
        return replace(self, batches=kept)

    def check_tasks(self, known: Iterable[str]) -> None:
        """Every task a batch names exists."""
        ids = set(known)
        for batch in self.batches:
            for task_id in batch.tasks:
                if task_id not in ids:
                    raise SettingError(
                        f"{self.source}: batch {batch.name!r}: field 'tasks' names unknown "
                        f"task {task_id!r}"
                    )


# The ranges of the numbers a batch file may hold besides the rate limit, whose range is
# the run's own: a delay of more than an hour between tasks or batches is a typo.
MAX_CONCURRENCY = 1000
MAX_DELAY_MS = 3_600_000
FAILURE_RATE = Range(0, 1, noun="a share", note="0.2 is 20%")


def _in_range(
    where: str, field: str, value: object, low: float, high: float, *, integer: bool
) -> float:
    """`value` as a float if it is a JSON number (a whole one if `integer`) from `low` to
    `high`; NaN, Infinity, true and strings are not."""
    allowed = Range(low, high, whole=integer)
    return float(allowed.check(value, f"{where}: field {field!r}", SettingError))


def _unknown(where: str, block: Mapping[str, Any], allowed: Sequence[str], what: str) -> None:
    extra = sorted(set(block) - set(allowed))
    if extra:
        raise SettingError(
            f"{where}: unknown {what} {shown(extra[0])} (allowed: {', '.join(allowed)})"
        )


def _boolean(where: str, field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SettingError(f"{where}: field {field!r} must be true or false, got {value!r}")
    return value


def _block(
    source: str, data: Mapping[str, Any], name: str, allowed: Sequence[str]
) -> Mapping[str, Any]:
    block = data.get(name, {})
    if not isinstance(block, Mapping):
        raise SettingError(f"{source}: field {name!r} must be an object")
    _unknown(f"{source}: {name}", block, allowed, "field")
    return block


ABSENT: Any = object()  # a field left out (null is a value, and a wrong one)
SAFEGUARDS = (
    "maxTotalConcurrency",
    "maxRateLimit",
    "healthCheckInterval",
    "autoReduceOnFailure",
    "autoIncreaseOnSuccess",
)
MONITORING = ("trackMetrics", "alertOnFailureRate", "alertOnQueueSize")


def _safeguards(source: str, data: Mapping[str, Any]) -> SafeguardCaps:
    block = _block(source, data, "safeguards", SAFEGUARDS)
    where = f"{source}: safeguards"
    concurrency = block.get("maxTotalConcurrency", ABSENT)
    rate = block.get("maxRateLimit", ABSENT)
    interval = block.get("healthCheckInterval", ABSENT)
    return SafeguardCaps(
        max_total_concurrency=None
        if concurrency is ABSENT
        else int(
            _in_range(where, "maxTotalConcurrency", concurrency, 1, MAX_CONCURRENCY, integer=True)
        ),
        max_rate_limit=None
        if rate is ABSENT
        else _in_range(where, "maxRateLimit", rate, MIN_RATE, MAX_RATE, integer=False),
        health_check_interval=None
        if interval is ABSENT
        else _in_range(where, "healthCheckInterval", interval, 100, MAX_DELAY_MS, integer=False)
        / 1000.0,
        auto_reduce_on_failure=_boolean(
            where, "autoReduceOnFailure", block.get("autoReduceOnFailure", True)
        ),
        auto_increase_on_success=_boolean(
            where, "autoIncreaseOnSuccess", block.get("autoIncreaseOnSuccess", True)
        ),
    )


def _monitoring(source: str, data: Mapping[str, Any]) -> MonitoringRules:
    block = _block(source, data, "monitoring", MONITORING)
    where = f"{source}: monitoring"
    rate = block.get("alertOnFailureRate", ABSENT)
    if rate is not ABSENT:
        FAILURE_RATE.check(rate, f"{where}: field 'alertOnFailureRate'", SettingError)
    size = block.get("alertOnQueueSize", ABSENT)
    return MonitoringRules(
        track_metrics=_boolean(where, "trackMetrics", block.get("trackMetrics", True)),
        alert_on_failure_rate=None if rate is ABSENT else float(rate),
        alert_on_queue_size=None
        if size is ABSENT
        else int(_in_range(where, "alertOnQueueSize", size, 0, 10_000_000, integer=True)),
    )


BATCH_FIELDS = ("name", "description", "tasks", "maxConcurrency", "rateLimit", "priority")


def parse_batches(data: Any, source: str) -> BatchPlan:
    """Validate a decoded batch file; every problem names the batch and the field."""
    if not isinstance(data, Mapping):
        raise SettingError(f"{source}: must be a JSON object with a 'batches' list")
    _unknown(source, data, ("batches", "delays", "safeguards", "monitoring"), "key")
    raw_batches = data.get("batches")
    if not isinstance(raw_batches, list) or not raw_batches:
        raise SettingError(f"{source}: field 'batches' must be a non-empty list of batches")
    batches: list[Batch] = []
    owner: dict[str, str] = {}
    for index, raw in enumerate(raw_batches):
        where = f"{source}: batch {index + 1}"
        if not isinstance(raw, Mapping):
            raise SettingError(f"{where}: must be an object with 'name' and 'tasks'")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SettingError(f"{where}: field 'name' must be a non-empty string")
        where = f"{source}: batch {name!r}"
        if any(b.name == name for b in batches):
            raise SettingError(f"{where}: field 'name' is used by two batches")
        _unknown(where, raw, BATCH_FIELDS, "field")
        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            raise SettingError(f"{where}: field 'description' must be a string")
        priority = None
        if "priority" in raw:
            priority = int(_in_range(where, "priority", raw["priority"], 1, 1000, integer=True))
        tasks = raw.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
            raise SettingError(f"{where}: field 'tasks' must be a non-empty list of task ids")
        for task_id in tasks:
            if task_id in owner:
                raise SettingError(
                    f"{where}: field 'tasks': task {task_id!r} is already in batch "
                    f"{owner[task_id]!r}; a task belongs to one batch"
                )
            owner[task_id] = name
        concurrency = None
        if "maxConcurrency" in raw:
            concurrency = int(
                _in_range(
                    where, "maxConcurrency", raw["maxConcurrency"], 1, MAX_CONCURRENCY, integer=True
                )
            )
        rate = None
        if "rateLimit" in raw:
            rate = _in_range(
                where, "rateLimit", raw["rateLimit"], MIN_RATE, MAX_RATE, integer=False
            )
        batches.append(Batch(index, name, tuple(tasks), concurrency, rate, description, priority))
    delays = data.get("delays", {})
    if not isinstance(delays, Mapping):
        raise SettingError(f"{source}: field 'delays' must be an object")
    _unknown(f"{source}: delays", delays, ("betweenBatches", "betweenTasks"), "field")
    between: dict[str, float] = {}
    for field in ("betweenBatches", "betweenTasks"):
        value = delays.get(field, 0)
        between[field] = _in_range(
            f"{source}: delays", field, value, 0, MAX_DELAY_MS, integer=False
        )
    return BatchPlan(
        source,
        tuple(batches),
        between["betweenBatches"] / 1000.0,
        between["betweenTasks"] / 1000.0,
        _safeguards(source, data),
        _monitoring(source, data),
    )


def load_batches(path: Path, display: str | None = None) -> BatchPlan:
    """Read a batch file; every problem is a SettingError naming the file."""
    source = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingError(f"{source}: batch file not found (--roadmap-batches)") from None
    except UnicodeDecodeError:
        raise SettingError(f"{source}: not valid UTF-8; batch files are UTF-8 JSON") from None
    except OSError as exc:
        raise SettingError(f"{source}: cannot read batch file: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingError(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise SettingError(f"{source}: malformed JSON: a number is too long") from None
    except RecursionError:
        raise SettingError(f"{source}: malformed JSON: values nested too deeply") from None
    return parse_batches(data, source)


def dependency_problems(tasks: Sequence[Task], plan: BatchPlan | None) -> list[str]:
    """Unknown ids, cycles and backwards batch dependencies, one sentence each."""
    by_id = {t.id: t for t in tasks}
    problems: list[str] = []
    for task in tasks:
        for dep in task.depends_on:
            if dep not in by_id:
                problems.append(
                    f"{task.source}: task {task.id!r}: depends_on names unknown task {dep!r}"
                )
            elif plan is not None:
                mine, theirs = plan.batch_of(task.id), plan.batch_of(dep)
                if mine is not None and theirs is not None and theirs.index > mine.index:
                    problems.append(
                        f"{task.source}: task {task.id!r} (batch {mine.name!r}) depends on "
                        f"{dep!r}, which runs in the later batch {theirs.name!r}"
                    )
    # Cycles: depth-first search with colours; report each cycle once, by its members.
    state: dict[str, int] = {}
    stack: list[str] = []
    seen_cycles: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in by_id[node].depends_on:
            if dep not in by_id:
                continue
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    problems.append(
                        f"{by_id[dep].source}: depends_on forms a cycle: {' -> '.join(cycle)}"
                    )
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for task in tasks:
        if task.id not in state:
            visit(task.id)
    return problems


def run_order(tasks: Sequence[Task], plan: BatchPlan | None) -> list[Task]:
    """Tasks sorted so every batch precedes the next and every dependency its dependants.

    Within those constraints the given order is kept. This order is what makes waiting in a
    worker safe: a task only ever waits for tasks that come before it.
    """
    position = {t.id: i for i, t in enumerate(tasks)}

    def batch_index(task: Task) -> int:
        batch = plan.batch_of(task.id) if plan else None
        return batch.index if batch else len(plan.batches) if plan else 0

    remaining = sorted(tasks, key=lambda t: (batch_index(t), position[t.id]))
    ordered: list[Task] = []
    placed: set[str] = set()
    ids = {t.id for t in tasks}
    while remaining:
        for i, task in enumerate(remaining):
            if all(d in placed or d not in ids for d in task.depends_on):
                ordered.append(task)
                placed.add(task.id)
                del remaining[i]
                break
        else:  # a cycle: reported as a collection error before this is used
            ordered.extend(remaining)
            break
    return ordered
