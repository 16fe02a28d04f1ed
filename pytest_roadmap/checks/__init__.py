"""Checks: what a good answer is.

A task file says, per task, what its answer must do (`[[tasks.checks]]`); each kind of
check is one module behind the small `Check` protocol (base.py), found by its key in
`KINDS`. The runner judges every answer with every check of its task, after the request,
holding no concurrency slot; the verdict travels to the reports as plain data
(verdict.py). Nothing here knows pytest. Code the model wrote is only run by the
`command` check, as untrusted input (execution.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_roadmap.checks.base import PARTS, Answer, Check, Context, Where
from pytest_roadmap.checks.command import Command
from pytest_roadmap.checks.function import Function
from pytest_roadmap.checks.rubric import Rubric
from pytest_roadmap.checks.structure import JsonSchema, Parses
from pytest_roadmap.checks.text import Contains, NotContains, Regex
from pytest_roadmap.checks.verdict import ERROR, CheckResult, Verdict
from pytest_roadmap.errors import TaskFileError, shown

__all__ = [
    "KINDS",
    "Answer",
    "Check",
    "CheckResult",
    "Context",
    "Verdict",
    "check_retries",
    "judge",
    "most_seconds",
    "read_checks",
]

# A table's kind key -> its check; `icontains` is `contains` ignoring case.
KINDS: dict[str, Any] = {
    "contains": Contains,
    "icontains": Contains,
    "not_contains": NotContains,
    "regex": Regex,
    "parses": Parses,
    "json_schema": JsonSchema,
    "command": Command,
    "function": Function,
    "rubric": Rubric,
}
# Keys a table may have besides its kind.
COMMON = ("part",)
EXTRA: dict[str, tuple[str, ...]] = {"command": ("code_file", "files", "timeout")}


def read_checks(raw: object, where: str, folder: Path) -> tuple[Check, ...]:
    """The `checks` of one task entry (an array of tables), each checked now: a check that
    cannot run (a bad pattern, a missing file or function, a command not on PATH) is a
    TaskFileError naming the task file, the task and the check."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise TaskFileError(
            f"{where}: 'checks' must be an array of tables ([[tasks.checks]]), got {shown(raw)}"
        )
    return tuple(
        _read_one(table, Where(f"{where}: check {i + 1}", folder)) for i, table in enumerate(raw)
    )


def _read_one(table: Mapping[str, Any], where: Where) -> Check:
    kinds = [key for key in table if key in KINDS]
    if len(kinds) != 1:
        said = f"has {', '.join(kinds)}" if kinds else "has none"
        raise where.error(f"a check has exactly one of {', '.join(KINDS)}; this one {said}")
    kind = kinds[0]
    allowed = {kind, *COMMON, *EXTRA.get(kind, ())}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise where.error(
            f"unknown key {shown(unknown[0])} in a {kind} check "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    part = table.get("part")
    if part is not None and part not in PARTS:
        raise where.error(f"'part' must be one of {', '.join(PARTS)}, got {shown(part)}")
    check: Check = KINDS[kind].read(table, where, part)
    return check


def judge(checks: Sequence[Check], answer: Mapping[str, Any] | None, context: Context) -> Verdict:
    """Every check of one answer, each on its own: one that breaks is an error of that
    check, and the others still judge."""
    shown_answer = Answer.of(answer)
    results: list[CheckResult] = []
    for check in checks:
        try:
            results.append(check.judge(shown_answer, context))
        except Exception as exc:  # a bug of ours must not pass the answer or lose the rest
            results.append(
                CheckResult(check.kind, check.label, ERROR, f"{type(exc).__name__}: {exc}")
            )
    return Verdict(tuple(results))


def most_seconds(checks: Sequence[Check], command_timeout: float, request_timeout: float) -> float:
    """The longest the checks of one answer may take: each command's timeout (its own, or
    `command_timeout`), and a request's for each grading."""
    total = 0.0
    for check in checks:
        if isinstance(check, Command):
            total += check.timeout if check.timeout is not None else command_timeout
        elif isinstance(check, Rubric):
            total += request_timeout
    return total


def check_retries(checks: Sequence[Check], own: int | None, run: int) -> int:
    """New answers a task may ask for when one fails its checks: its own `check_retries`,
    else the run's; none without checks."""
    if not checks:
        return 0
    return own if own is not None else run
