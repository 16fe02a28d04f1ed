"""The model-graded check: a second request asks a model whether the answer meets one
sentence, and its reply is read strictly.

The grading request is a request like any other: the runner sends it through the run's
health check, budgets, concurrency gate, rate and token limits (`Context.grade`). A reply
whose first line does not start with PASS or FAIL is no verdict: the check errors, it does
not guess.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pytest_roadmap.checks.base import BOTH, Answer, Context, Where, one_line, shown_part
from pytest_roadmap.checks.verdict import ERROR, FAILED, PASSED, CheckResult, excerpt
from pytest_roadmap.errors import shown

# The grading prompt's first line; the sandbox knows a grading request by it.
GRADER_INTRO = "Grade an answer against one requirement."
ANSWER_START, ANSWER_END = "<<<ANSWER", "ANSWER>>>"
REQUIREMENT = "Requirement: "
# The answer as the grader sees it: long enough for any sensible unit of code, bounded so
# that a runaway answer cannot make the grading request enormous.
MAX_GRADED_CHARS = 60_000
GRADER_MAX_TOKENS = 100  # the reply is one line (the OpenAI protocol asks for no more)
_VERDICT = re.compile(r"(PASS|FAIL)\b[\s:.\-]*(.*)")


def grading_prompt(task_prompt: str, requirement: str, answer: str) -> str:
    shown_answer = answer[:MAX_GRADED_CHARS]
    if len(answer) > MAX_GRADED_CHARS:
        shown_answer += f"\n[... {len(answer) - MAX_GRADED_CHARS} more characters not shown]"
    return "\n".join(
        [
            GRADER_INTRO,
            "",
            "The task was:",
            task_prompt.strip(),
            "",
            f"{REQUIREMENT}{requirement}",
            "",
            "The answer:",
            ANSWER_START,
            shown_answer,
            ANSWER_END,
            "",
            "Reply with one line: PASS or FAIL, a colon, and one sentence saying why.",
        ]
    )


def parse_verdict(reply: str) -> tuple[bool, str] | None:
    """(passed, why) from a grader's reply, or None when its first line gives no verdict."""
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    if not lines:
        return None
    found = _VERDICT.fullmatch(lines[0])
    if found is None:
        return None
    return found.group(1) == "PASS", found.group(2).strip()


@dataclass(frozen=True)
class Rubric:
    """A requirement in one sentence, judged by a model (`--roadmap-grader-model`)."""

    kind: ClassVar[str] = "rubric"
    requirement: str
    part: str = BOTH

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> Rubric:
        requirement = table["rubric"]
        if not isinstance(requirement, str) or not requirement.strip():
            raise where.error(f"'rubric' must be a non-empty sentence, got {shown(requirement)}")
        return cls(" ".join(requirement.split()), part or BOTH)

    @property
    def label(self) -> str:
        return f"rubric {one_line(self.requirement, 60)}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        started = time.perf_counter()
        if context.grade is None:
            earlier = context.earlier.get(self.label)
            if earlier is not None and earlier.kind == self.kind:
                # A replay: the grade the run got for this answer and requirement.
                return CheckResult(self.kind, self.label, earlier.status, earlier.detail, 0.0)
            return CheckResult(
                self.kind,
                self.label,
                ERROR,
                "not graded: a replay sends nothing, and the run it replays did not grade "
                "this requirement",
            )
        text = answer.part(self.part)
        try:
            reply = context.grade(grading_prompt(context.prompt, self.requirement, text))
        except Exception as exc:  # the grader's request failed: no verdict
            return CheckResult(
                self.kind,
                self.label,
                ERROR,
                f"the grading request failed: {exc}",
                time.perf_counter() - started,
            )
        seconds = time.perf_counter() - started
        verdict = parse_verdict(reply)
        if verdict is None:
            detail = (
                "the grader gave no verdict (a first line of PASS or FAIL); it said:\n"
                + excerpt(reply, 3)
            )
            return CheckResult(self.kind, self.label, ERROR, detail, seconds)
        passed, why = verdict
        if passed:
            return CheckResult(self.kind, self.label, PASSED, why, seconds)
        said = why or "(no reason given)"
        detail = f"the grader says: {said}; {shown_part(self.part)} begins:\n{excerpt(text)}"
        return CheckResult(self.kind, self.label, FAILED, detail, seconds)
