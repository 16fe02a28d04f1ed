"""report.json: the machine-readable record of a run.

Each section is one table of (field name, function); adding a field is one line
there and one row in the table of docs/report-json.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pytest_roadmap.compliance import of_record
from pytest_roadmap.plan import plan_section
from pytest_roadmap.protocol import Usage
from pytest_roadmap.results import (
    DOGFOODING_COUNTERS,
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    PASSED,
    SKIPPED,
    Alert,
    ConcurrencyChange,
    PaceChange,
    RunRecord,
    TaskResult,
    iso_utc,
)

# Bump when a field is renamed, removed or changes meaning; adding one is compatible.
# 2: `tasks[].outcome` may also be "interrupted" or "not_run", and `totals.total` counts
# them, so it is no longer passed + failed + skipped.
SCHEMA_VERSION = 2

T = TypeVar("T")
Fields = Sequence[tuple[str, Callable[[T], Any]]]


def one_line(text: str | None) -> str | None:
    """Collapse newlines and runs of blanks so a reason fits one line."""
    return None if text is None else " ".join(text.split())


def _number(value: float, digits: int = 3) -> float | None:
    # JSON has no NaN or infinity; null is the honest "no value".
    return round(value, digits) if math.isfinite(value) else None


def _iso(epoch: float | None) -> str | None:
    # 0.0 is the RunRecord default for "not finished yet", never a real moment.
    return iso_utc(epoch) if epoch else None


def _generated(counter: str) -> Callable[[RunRecord], int]:
    return lambda r: r.dogfooding_generated[counter]


def section(fields: Fields[T], source: T) -> dict[str, Any]:
    """One JSON object from one table of fields."""
    return {name: get(source) for name, get in fields}


CHANGE_FIELDS: Fields[ConcurrencyChange] = (
    ("at", lambda c: _iso(c.at)),
    ("from", lambda c: c.old),
    ("to", lambda c: c.new),
    ("reason", lambda c: one_line(c.reason)),
)

RATE_FIELDS: Fields[PaceChange] = (
    ("at", lambda c: _iso(c.at)),
    ("from", lambda c: _number(c.old)),
    ("to", lambda c: _number(c.new)),
    ("reason", lambda c: one_line(c.reason)),
)

PAUSE_FIELDS: Fields[PaceChange] = (
    ("at", lambda c: _iso(c.at)),
    ("seconds", lambda c: _number(c.new)),
    ("reason", lambda c: one_line(c.reason)),
)

REFUSAL_FIELDS: Fields[RunRecord] = (
    ("total", lambda r: sum(r.refusals.values())),
    ("by_status", lambda r: [{"status": k, "count": v} for k, v in sorted(r.refusals.items())]),
)

ALERT_FIELDS: Fields[Alert] = (
    ("at", lambda a: _iso(a.at)),
    ("kind", lambda a: a.kind),
    ("message", lambda a: one_line(a.message)),
)


def _usage(usage: Usage | None) -> dict[str, int] | None:
    return usage.to_dict() if usage is not None else None


def _cost(value: float | None) -> float | None:
    return None if value is None else _number(value, 6)


HEALTH_FIELDS: Fields[RunRecord] = (
    ("probes", lambda r: r.health_probes),
    ("unhealthy_s", lambda r: _number(r.unhealthy_s)),
)

RUN_FIELDS: Fields[RunRecord] = (
    ("api", lambda r: r.api),
    ("sandbox", lambda r: r.sandbox),
    ("model", lambda r: r.model),
    ("run_id", lambda r: r.run_id),
    ("started", lambda r: _iso(r.started)),
    ("finished", lambda r: _iso(r.finished)),
    ("duration_s", lambda r: _number(r.duration_s)),
    ("workers", lambda r: r.workers),
    ("inflight", lambda r: r.inflight),
    ("rate_limit", lambda r: _number(r.rate_limit)),
    ("concurrency_changes", lambda r: [section(CHANGE_FIELDS, c) for c in r.concurrency_changes]),
    ("rate_changes", lambda r: [section(RATE_FIELDS, c) for c in r.rate_changes]),
    ("pauses", lambda r: [section(PAUSE_FIELDS, c) for c in r.pauses]),
    ("refusals", lambda r: section(REFUSAL_FIELDS, r)),
    ("stopped", lambda r: one_line(r.stopped)),
    ("health", lambda r: section(HEALTH_FIELDS, r)),
    ("interrupted", lambda r: r.interrupted),
    ("alerts", lambda r: [section(ALERT_FIELDS, a) for a in r.alerts]),
    ("protocol", lambda r: r.protocol),
    ("token_rate", lambda r: None if r.token_rate is None else _number(r.token_rate)),
    ("price_in", lambda r: r.price_in),
    ("price_out", lambda r: r.price_out),
    ("usage", lambda r: _usage(r.usage)),
    ("cost", lambda r: _cost(r.cost_of(r.usage))),
    ("budgets", lambda r: r.budgets),
    ("replay", lambda r: r.replay),
)

TOTALS_FIELDS: Fields[RunRecord] = (
    ("total", lambda r: len(r.results)),
    ("passed", lambda r: r.count(PASSED)),
    ("failed", lambda r: r.count(FAILED)),
    ("skipped", lambda r: r.count(SKIPPED)),
    ("interrupted", lambda r: r.count(INTERRUPTED)),
    ("not_run", lambda r: r.count(NOT_RUN)),
    ("rerun", lambda r: r.reruns),
    ("success_rate", lambda r: _number(r.success_rate, 4)),
)

TASK_FIELDS: Fields[TaskResult] = (
    ("id", lambda t: t.task.id),
    ("title", lambda t: t.task.title),
    ("month", lambda t: t.task.month),
    ("week", lambda t: t.task.week),
    ("priority", lambda t: t.task.priority),
    ("dogfooding", lambda t: t.task.dogfooding),
    ("batch", lambda t: t.batch),
    ("outcome", lambda t: t.outcome),
    ("attempts", lambda t: len(t.attempts)),
    ("refusals", lambda t: t.refusals),
    ("duration_s", lambda t: _number(t.duration_s)),
    ("started", lambda t: _iso(t.started)),
    ("finished", lambda t: _iso(t.finished)),
    ("worker", lambda t: t.worker),
    ("error", lambda t: one_line(t.error)),
    ("output", lambda t: t.output),
    ("usage", lambda t: _usage(t.usage)),
    ("answers", lambda t: t.answers),
    ("checks", lambda t: None if t.verdict is None else t.verdict.to_list()),
)


# Counted from passed tasks only, under the original tracker's counter names.
DOGFOODING_FIELDS: Fields[RunRecord] = tuple(
    (counter, _generated(counter)) for counter in DOGFOODING_COUNTERS.values()
)


def _task(record: RunRecord, result: TaskResult) -> dict[str, Any]:
    data = section(TASK_FIELDS, result)
    data["cost"] = _cost(record.cost_of(result.usage))  # at the run's prices
    return data


def build_json(record: RunRecord) -> dict[str, Any]:
    """The whole report.json document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run": section(RUN_FIELDS, record),
        "totals": section(TOTALS_FIELDS, record),
        "checks": record.checks.to_dict(),
        "tasks": [_task(record, t) for t in record.results],
        "dogfooding": section(DOGFOODING_FIELDS, record),
        "compliance": of_record(record).to_dict(),
        "plan": plan_section(record),
    }


def render_json(record: RunRecord) -> str:
    """report.json as text; a value JSON cannot hold raises instead of writing bad JSON.

    Indented, except that each task is one line: json's indenting encoder is pure Python
    and took 2 s of a 10,000-task report, the compact one is C (benchmarks/report_bench.py).
    """
    parts = []
    for key, value in build_json(record).items():
        if key == "tasks" and value:
            lines = ",\n    ".join(dumps(task) for task in value)
            text = f"[\n    {lines}\n  ]"
        else:
            # JSON strings hold no raw line breaks, so every break is indentation.
            text = dumps(value, 2).replace("\n", "\n  ")
        parts.append(f"  {dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


# Characters json.dumps(ensure_ascii=False) writes raw that terminals and editors act on.
_RAW_CONTROL = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON as every report file writes it: UTF-8 as is, and no NaN or Infinity.

    json escapes C0 controls itself; the others that a terminal or an editor acts on
    (DEL, C1, line separators, bidirectional overrides) become \\u escapes too. They
    can only stand inside strings, where the escape means the same character.
    """
    text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False)
    if _RAW_CONTROL.search(text) is None:
        return text
    return _RAW_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
