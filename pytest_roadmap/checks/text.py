"""Text checks: the answer contains strings, contains none of others, matches a pattern."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_roadmap.checks.base import BOTH, Answer, Context, Where, one_line, shown_part
from pytest_roadmap.checks.verdict import FAILED, PASSED, CheckResult, excerpt
from pytest_roadmap.errors import shown


def _strings(value: object, key: str, where: Where) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise where.error(f"'{key}' must be a non-empty string or list of them, got {shown(value)}")
    return tuple(value)


@dataclass(frozen=True)
class Contains:
    """Each string appears in the answer (`icontains`: whatever the case)."""

    kind: ClassVar[str] = "contains"
    strings: tuple[str, ...]
    part: str = BOTH
    ignore_case: bool = False

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> Contains:
        key = "icontains" if "icontains" in table else "contains"
        strings = _strings(table[key], key, where)
        return cls(strings, part or BOTH, ignore_case=key == "icontains")

    @property
    def label(self) -> str:
        key = "icontains" if self.ignore_case else "contains"
        return f"{key} {', '.join(one_line(s, 40) for s in self.strings)}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        started = time.perf_counter()
        text = answer.part(self.part)
        hay = text.casefold() if self.ignore_case else text
        missing = [s for s in self.strings if (s.casefold() if self.ignore_case else s) not in hay]
        seconds = time.perf_counter() - started
        if not missing:
            return CheckResult(self.kind, self.label, PASSED, seconds=seconds)
        wanted = ", ".join(one_line(s, 60) for s in missing)
        detail = f"{shown_part(self.part)} lacks {wanted}; it begins:\n{excerpt(text)}"
        return CheckResult(self.kind, self.label, FAILED, detail, seconds)


@dataclass(frozen=True)
class NotContains:
    """None of the strings appears in the answer."""

    kind: ClassVar[str] = "not_contains"
    strings: tuple[str, ...]
    part: str = BOTH

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> NotContains:
        return cls(_strings(table["not_contains"], "not_contains", where), part or BOTH)

    @property
    def label(self) -> str:
        return f"not_contains {', '.join(one_line(s, 40) for s in self.strings)}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        started = time.perf_counter()
        text = answer.part(self.part)
        found = [s for s in self.strings if s in text]
        seconds = time.perf_counter() - started
        if not found:
            return CheckResult(self.kind, self.label, PASSED, seconds=seconds)
        first = text.index(found[0])
        line = text.count("\n", 0, first) + 1
        context_line = text.splitlines()[line - 1] if text.splitlines() else text
        detail = (
            f"{shown_part(self.part)} has {', '.join(one_line(s, 60) for s in found)} "
            f"(line {line}):\n{excerpt(context_line, 1)}"
        )
        return CheckResult(self.kind, self.label, FAILED, detail, seconds)


@dataclass(frozen=True)
class Regex:
    """A Python regular expression is found in the answer (`re.search`)."""

    kind: ClassVar[str] = "regex"
    pattern: str
    part: str = BOTH

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> Regex:
        pattern = table["regex"]
        if not isinstance(pattern, str) or not pattern:
            raise where.error(f"'regex' must be a non-empty string, got {shown(pattern)}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise where.error(f"'regex' {shown(pattern)} is not a valid pattern: {exc}") from None
        return cls(pattern, part or BOTH)

    @property
    def label(self) -> str:
        return f"regex {one_line(self.pattern, 60)}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        started = time.perf_counter()
        text = answer.part(self.part)
        found = re.search(self.pattern, text) is not None
        seconds = time.perf_counter() - started
        if found:
            return CheckResult(self.kind, self.label, PASSED, seconds=seconds)
        detail = f"no match in {shown_part(self.part)}; it begins:\n{excerpt(text)}"
        return CheckResult(self.kind, self.label, FAILED, detail, seconds)
