"""The execution check: a command run with the answer's code written to a named file in a
fresh scratch folder, beside the files the task gives; it passes when the command exits 0.

The code is the model's, so it is run as untrusted input (execution.py): its own scratch
folder, no secrets in its environment, a timeout that kills its whole process group.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from pytest_roadmap.checks.base import CODE, Answer, Context, Where, one_line
from pytest_roadmap.checks.verdict import ERROR, FAILED, PASSED, CheckResult, tail
from pytest_roadmap.errors import TaskFileError, shown
from pytest_roadmap.validation import Range

DEFAULT_CODE_FILE = "answer.py"
TIMEOUT = Range(0, 3600, low_open=True, unit="seconds")
PYTHONS = ("python", "python3")  # run by the Python that runs pytest (execution.py)


def _plain_name(value: object, key: str, where: Where) -> str:
    """A file name inside the scratch folder: relative, no `..`, no folder of its own."""
    if not isinstance(value, str) or not value or value != PurePosixPath(value).name:
        raise where.error(
            f"'{key}' must be a plain file name such as 'cache.py', got {shown(value)}"
        )
    return value


@dataclass(frozen=True)
class Command:
    """`command` (split as a shell would, never run by one), with the code in `code_file`
    and each of `files` (beside the task file) copied in by its name."""

    kind: ClassVar[str] = "command"
    argv: tuple[str, ...]
    code_file: str
    files: Mapping[str, str] = field(hash=False)  # name in the scratch folder -> its text
    timeout: float | None = None  # None: the run's --roadmap-check-timeout
    part: str = CODE

    @classmethod
    def read(cls, table: Mapping[str, Any], where: Where, part: str | None) -> Command:
        raw = table["command"]
        try:
            argv = shlex.split(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise where.error(f"'command' {shown(raw)} cannot be split: {exc}") from None
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise where.error(
                f"'command' must be a command line or a list of words, got {shown(raw)}"
            )
        if argv[0] not in PYTHONS and shutil.which(argv[0]) is None:
            raise where.error(f"'command': {argv[0]!r} not found on PATH")
        code_file = _plain_name(table.get("code_file", DEFAULT_CODE_FILE), "code_file", where)
        names = table.get("files", [])
        if not isinstance(names, list):
            raise where.error(
                f"'files' must be a list of files beside the task file, got {shown(names)}"
            )
        files: dict[str, str] = {}
        for name in names:
            path = where.file(name, "files")
            if path.name in files or path.name == code_file:
                raise where.error(
                    f"'files': two files would be {path.name!r} in the scratch folder"
                )
            files[path.name] = where.text(path, "files")
        timeout = table.get("timeout")
        if timeout is not None:
            TIMEOUT.check(timeout, f"{where.label}: 'timeout'", TaskFileError)
        return cls(
            tuple(argv),
            code_file,
            files,
            None if timeout is None else float(timeout),
            part or CODE,
        )

    @property
    def label(self) -> str:
        return f"command {one_line(shlex.join(self.argv), 60)}"

    def judge(self, answer: Answer, context: Context) -> CheckResult:
        from pytest_roadmap.checks.execution import CommandNotFound, run_untrusted

        started = time.perf_counter()
        timeout = self.timeout if self.timeout is not None else context.timeout
        try:
            done = run_untrusted(
                self.argv,
                {**self.files, self.code_file: answer.part(self.part)},
                timeout=timeout,
                secrets=context.secrets,
                drop=context.drop_env,
            )
        except (CommandNotFound, OSError) as exc:
            return CheckResult(
                self.kind, self.label, ERROR, f"cannot run it: {exc}", time.perf_counter() - started
            )
        seconds = time.perf_counter() - started
        if done.timed_out:
            detail = (
                f"killed at its timeout of {timeout:g} s; its output ended:\n{tail(done.output)}"
            )
            return CheckResult(self.kind, self.label, FAILED, detail, seconds)
        if done.exit_code == 0:
            return CheckResult(self.kind, self.label, PASSED, seconds=seconds)
        cut = " (output cut)" if done.truncated else ""
        detail = f"exited {done.exit_code}{cut}; its output ended:\n{tail(done.output)}"
        return CheckResult(self.kind, self.label, FAILED, detail, seconds)
