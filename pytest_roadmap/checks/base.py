"""The shape every check has: the answer it reads, what it may use, and how it is read
from a task file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pytest_roadmap.checks.verdict import CheckResult
from pytest_roadmap.errors import TaskFileError, shown

CODE, MESSAGE, BOTH = "code", "message", "both"
PARTS = (CODE, MESSAGE, BOTH)


@dataclass(frozen=True)
class Answer:
    """What the API returned for a task, as the protocols give it: `code` and `message`."""

    code: str = ""
    message: str = ""

    @classmethod
    def of(cls, answer: Mapping[str, Any] | None) -> Answer:
        answer = answer or {}
        code, message = answer.get("code"), answer.get("message")
        return cls(
            code=code if isinstance(code, str) else "",
            message=message if isinstance(message, str) else "",
        )

    def part(self, which: str) -> str:
        """The text a check reads. `both` is the message and the code, the code once: the
        OpenAI protocol's message already holds the code it was cut from."""
        if which == CODE:
            return self.code
        if which == MESSAGE:
            return self.message
        if not self.code or self.code in self.message:
            return self.message
        if not self.message:
            return self.code
        return f"{self.message}\n\n{self.code}"


@dataclass(frozen=True)
class Context:
    """What checks may use besides the answer."""

    prompt: str = ""  # the task's prompt, for a grader
    timeout: float = 60.0  # an execution check's timeout unless it sets its own
    secrets: tuple[str, ...] = ()  # never in a command's environment
    drop_env: tuple[str, ...] = ()  # environment variables a command never gets
    # Sends a grading prompt through the run's safeguards and returns the reply's text;
    # None where nothing may be sent (a replay).
    grade: Callable[[str], str] | None = None
    # A replay's earlier results by label: a rubric is not graded again, its verdict read.
    earlier: Mapping[str, CheckResult] = field(default_factory=dict)


class Check(Protocol):
    """One kind of check. `kind` is its key in a task file's `[[tasks.checks]]` table."""

    kind: ClassVar[str]
    part: str

    @property
    def label(self) -> str:
        """What it wants, in one short line."""
        ...

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        """Judge one answer; never raises for anything the answer does."""
        ...


@dataclass(frozen=True)
class Where:
    """Where a check is defined: for error lines, and to find the files it names."""

    label: str  # "roadmap_tasks/month1.toml (id 'cache'): check 2"
    folder: Path  # the task file's folder

    def error(self, words: str) -> TaskFileError:
        return TaskFileError(f"{self.label}: {words}")

    def file(self, name: object, key: str) -> Path:
        """A file named by the check, relative to the task file's folder; it must exist."""
        if not isinstance(name, str) or not name.strip():
            raise self.error(f"'{key}' must name a file beside the task file, got {shown(name)}")
        path = (self.folder / name).resolve()
        if not path.is_file():
            raise self.error(f"'{key}': {name} not found (looked for {path})")
        return path

    def text(self, path: Path, key: str) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise self.error(f"'{key}': cannot read {path.name}: {exc}") from None


def shown_part(part: str) -> str:
    """A part as failure words name it: "the code", "the message", "the answer"."""
    return "the answer" if part == BOTH else f"the {part}"


def one_line(text: str, limit: int = 80) -> str:
    """A value shown inside a label: one line, cut at `limit`."""
    flat = " ".join(text.split())
    # Quoted as written, not repr(): a pattern's backslashes are shown once.
    return "'" + (flat if len(flat) <= limit else flat[: limit - 3] + "...") + "'"
