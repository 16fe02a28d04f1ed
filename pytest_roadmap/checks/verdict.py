"""What checking one answer found, as plain data that crosses the xdist wire and reaches
the reports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PASSED, FAILED, ERROR = "passed", "failed", "error"
STATUSES = (PASSED, FAILED, ERROR)


@dataclass(frozen=True)
class CheckResult:
    """One check of one answer: `passed`, `failed` (the answer is wrong) or `error` (the
    check could not judge it: a function that raised something else, a grader without a
    verdict, a command that could not start)."""

    kind: str  # "contains", "command", ...
    label: str  # what it wanted, in one line: "contains 'class LRUCache'"
    status: str
    detail: str = ""  # why it failed or errored: what the answer had
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 6),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            kind=str(data["kind"]),
            label=str(data["label"]),
            status=str(data["status"]),
            detail=str(data.get("detail") or ""),
            seconds=float(data.get("seconds") or 0.0),
        )


@dataclass(frozen=True)
class Verdict:
    """Every check of one answer, in the task file's order."""

    results: tuple[CheckResult, ...] = ()

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def errored(self) -> bool:
        """Some check could not judge the answer: an error of the task, not of the answer."""
        return any(r.status == ERROR for r in self.results)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def problems(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def paragraph(self) -> str:
        """The failure text: one paragraph per check that did not pass."""
        parts = []
        for result in self.problems():
            head = "could not run" if result.status == ERROR else "failed"
            parts.append(f"check {result.label} {head}: {result.detail}".rstrip())
        return "\n".join(parts)

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]

    @classmethod
    def from_list(cls, data: Iterable[Mapping[str, Any]] | None) -> Verdict:
        return cls(tuple(CheckResult.from_dict(d) for d in data or ()))


def excerpt(text: str, lines: int = 6, width: int = 160) -> str:
    """The first lines of `text`, each cut at `width`, as a failure quotes an answer."""
    shown = text.splitlines()[:lines]
    cut = [line if len(line) <= width else line[: width - 3] + "..." for line in shown]
    more = " ..." if len(text.splitlines()) > lines else ""
    return ("\n".join(f"    {line}" for line in cut) + more) if cut else "    (empty)"


def tail(text: str, lines: int = 15) -> str:
    """The last lines of a command's output: where test runners put their summary."""
    shown = text.rstrip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in shown) if shown else "    (no output)"


def counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Checks by status over some verdicts."""
    found = dict.fromkeys(STATUSES, 0)
    for verdict in verdicts:
        for result in verdict.results:
            found[result.status] = found.get(result.status, 0) + 1
    return found


class ChecksFailed(AssertionError):
    """An answer failed its checks: the task fails (the answer is wrong). `retry`: a new
    answer may be asked for (the task's check retries are not spent)."""

    def __init__(self, verdict: Verdict, paragraph: str, *, retry: bool = False) -> None:
        super().__init__(paragraph)
        self.verdict = verdict
        self.paragraph = paragraph
        self.retry = retry


class ChecksErrored(Exception):
    """A check could not judge the answer (known only once it came): an error of the task,
    not a failure of the answer; never retried."""

    def __init__(self, verdict: Verdict, paragraph: str) -> None:
        super().__init__(paragraph)
        self.verdict = verdict
        self.paragraph = paragraph
