"""The task model and the loading and validation of task files (TOML)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# tomli rather than the standard library's tomllib (its pure-Python twin): tomli ships
# compiled wheels that parse task files 3.7x faster (0.12 s against 0.45 s for 50 files of
# 200 tasks, measured here), which is most of the collection time of a large roadmap.
import tomli as tomllib

from pytest_roadmap.errors import TaskFileError, shown
from pytest_roadmap.protocol import MAX_TOKENS_RANGE, TEMPERATURE_RANGE, Protocol
from pytest_roadmap.settings import TIMEOUT_SECONDS
from pytest_roadmap.validation import Range

if TYPE_CHECKING:
    from pytest_roadmap.checks import Check

ID_PATTERN = re.compile(r"[a-z0-9_-]+")
# An id names its output files (outputs/<id>.json and the temporary file beside it), and
# most file systems allow 255 bytes per name: 128 leaves room and is more than any id needs.
MAX_ID_CHARS = 128
CATEGORIES = ("improvement", "test", "optimization", "doc")
# Far above any real prompt, low enough that a runaway file cannot eat the controller.
MAX_PROMPT_CHARS = 1_000_000
MAX_FILE_BYTES = 16 * 1024 * 1024
# Optional fields that only some protocols can send (checked against the run's protocol).
PROTOCOL_FIELDS = ("system", "max_tokens", "temperature")


@dataclass(frozen=True)
class Task:
    """One roadmap task: a prompt for the code-generation API."""

    id: str
    title: str
    prompt: str
    month: int
    week: int
    priority: int = 3
    dogfooding: str | None = None
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int | None = None
    system: str | None = None  # a system message (OpenAI protocol only)
    max_tokens: int | None = None  # OpenAI protocol only
    temperature: float | None = None  # OpenAI protocol only
    source: str = field(default="", compare=False)
    # What a good answer is (checks/): read with the file, they stay in the process that
    # read it (the wire carries no checks: every worker reads the task files itself).
    checks: tuple[Check, ...] = field(default=(), compare=False, repr=False)
    check_retries: int | None = None  # new answers asked for when one fails its checks
    # Grading requests each answer takes (its rubric checks): the plan counts them, and
    # unlike the checks they travel on the wire to the controller.
    gradings: int = 0

    @property
    def keywords(self) -> tuple[str, ...]:
        """Words that `-k` can match besides the id."""
        words = [f"month{self.month}", f"week{self.week}", f"p{self.priority}"]
        if self.dogfooding:
            words.append(self.dogfooding)
        return tuple(words)

    @property
    def tracker_key(self) -> str:
        """The key the original progress tracker used for this task."""
        return f"month{self.month}_week{self.week}_{self.title}"


def _bad_id(value: object) -> str | None:
    """Why `value` is not a task id, or None if it is one."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        return f"must match [a-z0-9_-]+, got {shown(value)}"
    if len(value) > MAX_ID_CHARS:
        return f"must be at most {MAX_ID_CHARS} characters, got {len(value)}"
    return None


def _int_field(
    where: str, entry: Mapping[str, Any], name: str, low: int, high: int | None = None
) -> int | None:
    if name not in entry:
        return None
    allowed = Range(low, high, integer=True)
    return int(allowed.check(entry[name], f"{where}: '{name}'", TaskFileError))


_FIELDS = {
    "id",
    "title",
    "prompt",
    "month",
    "week",
    "priority",
    "dogfooding",
    "depends_on",
    "timeout",
    "retries",
    "checks",
    "check_retries",
    *PROTOCOL_FIELDS,
}


def task_from_entry(entry: object, where: str, source: str, folder: Path | None = None) -> Task:
    """Validate one `[[tasks]]` table; `where` names the file and entry in errors; `folder`
    (the task file's) is where its checks find the files they name."""
    if not isinstance(entry, dict):
        raise TaskFileError(f"{where}: each [[tasks]] entry must be a table")
    task_id = entry.get("id")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        named = f" (id {shown(task_id)})" if isinstance(task_id, str) else ""
        raise TaskFileError(
            f"{where}{named}: unknown field {shown(unknown[0])} "
            f"(allowed: {', '.join(sorted(_FIELDS))})"
        )
    problem = _bad_id(task_id)
    if problem is not None or not isinstance(task_id, str):
        raise TaskFileError(f"{where}: 'id' is required and {problem}")
    where = f"{where} (id {task_id!r})"
    for name in ("title", "prompt"):
        value = entry.get(name)
        if not isinstance(value, str) or not value.strip():
            raise TaskFileError(f"{where}: '{name}' is required and must be a non-empty string")
    if len(entry["prompt"]) > MAX_PROMPT_CHARS:
        raise TaskFileError(
            f"{where}: 'prompt' is {len(entry['prompt'])} characters; at most "
            f"{MAX_PROMPT_CHARS} are allowed"
        )
    for name in ("month", "week"):
        if name not in entry:
            raise TaskFileError(f"{where}: '{name}' is required")
    month = _int_field(where, entry, "month", 1, 1200)
    week = _int_field(where, entry, "week", 1, 5)
    priority = _int_field(where, entry, "priority", 1, 1000)
    retries = _int_field(where, entry, "retries", 0, 100)
    check_retries = _int_field(where, entry, "check_retries", 0, 100)
    dogfooding = entry.get("dogfooding")
    if dogfooding is not None and dogfooding not in CATEGORIES:
        raise TaskFileError(
            f"{where}: 'dogfooding' must be one of {', '.join(CATEGORIES)}, got {shown(dogfooding)}"
        )
    depends_on = entry.get("depends_on", [])
    if not isinstance(depends_on, list) or any(_bad_id(d) for d in depends_on):
        raise TaskFileError(f"{where}: 'depends_on' must be a list of task ids")
    timeout = entry.get("timeout")
    if timeout is not None:
        TIMEOUT_SECONDS.check(timeout, f"{where}: 'timeout'", TaskFileError)
    system = entry.get("system")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise TaskFileError(f"{where}: 'system' must be a non-empty string, got {shown(system)}")
    if system is not None and len(system) > MAX_PROMPT_CHARS:
        raise TaskFileError(
            f"{where}: 'system' is {len(system)} characters; at most {MAX_PROMPT_CHARS} are allowed"
        )
    max_tokens = _int_field(where, entry, "max_tokens", *MAX_TOKENS_RANGE)
    temperature = entry.get("temperature")
    if temperature is not None:
        Range(*TEMPERATURE_RANGE).check(temperature, f"{where}: 'temperature'", TaskFileError)
    assert month is not None and week is not None
    checks: tuple[Check, ...] = ()
    if "checks" in entry:
        # Imported only for a file that has checks: most runs pay nothing for them.
        from pytest_roadmap.checks import read_checks

        checks = read_checks(entry["checks"], where, folder or Path("."))
    return Task(
        id=task_id,
        title=entry["title"],
        prompt=entry["prompt"],
        month=month,
        week=week,
        priority=3 if priority is None else priority,
        dogfooding=dogfooding,
        depends_on=tuple(depends_on),
        timeout=None if timeout is None else float(timeout),
        retries=retries,
        system=system,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        source=source,
        checks=checks,
        check_retries=check_retries,
        gradings=sum(1 for check in checks if check.kind == "rubric"),
    )


def check_protocol(tasks: Iterable[Task], protocol: Protocol) -> None:
    """Tasks may set only the fields their protocol can send: one error naming the first
    task that sets another."""
    for task in tasks:
        for name in PROTOCOL_FIELDS:
            if getattr(task, name) is not None and name not in protocol.fields:
                raise TaskFileError(
                    f"{task.source} (id {task.id!r}): '{name}' is sent only with "
                    f"--roadmap-protocol openai; the {protocol.name} protocol sends the prompt "
                    "alone (remove it or set ROADMAP_PROTOCOL=openai)"
                )


def load_task_file(path: Path, display: str | None = None) -> list[Task]:
    """Read one task file; every problem is a TaskFileError naming the file."""
    name = display or str(path)
    try:
        raw = _read_regular(path, name)
    except OSError as exc:
        raise TaskFileError(f"{name}: cannot read task file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileError(
            f"{name}: not valid UTF-8 at byte {exc.start}; task files must be UTF-8 TOML"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaskFileError(f"{name}: invalid TOML: {exc}") from None
    except RecursionError as exc:  # tomli's own limit on nesting, or the interpreter's
        raise TaskFileError(f"{name}: invalid TOML: values nested too deeply ({exc})") from None
    unknown = sorted(set(data) - {"tasks"})
    if unknown:
        raise TaskFileError(
            f"{name}: unknown top-level key {shown(unknown[0])}; a task file holds only [[tasks]]"
        )
    entries = data.get("tasks", [])
    if not isinstance(entries, list):
        raise TaskFileError(f"{name}: 'tasks' must be an array of tables ([[tasks]])")
    folder = path.parent
    tasks = [
        task_from_entry(e, f"{name}: task {i + 1}", name, folder) for i, e in enumerate(entries)
    ]
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task.id in seen:
            raise TaskFileError(
                f"{name}: duplicate task id {task.id!r} (tasks {seen[task.id] + 1} and {i + 1})"
            )
        seen[task.id] = i
    return tasks


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def _not_regular(mode: int) -> str | None:
    """What a file of `mode` is when it is not a regular file ("a FIFO"), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _read_regular(path: Path, name: str) -> bytes:
    """The bytes of `path`, which must be a regular file of at most MAX_FILE_BYTES.

    Checked before opening, as opening a FIFO waits for a writer and opening some devices
    acts on them, and again on the open file (O_NONBLOCK: a FIFO swapped in meanwhile
    cannot block), so a file replaced between the two checks is caught too.
    """
    try:
        kind = _not_regular(os.stat(path).st_mode)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        raise TaskFileError(
            f"{name}: is a link to {os.readlink(path)}, which does not exist"
        ) from None
    if kind is None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            kind = _not_regular(info.st_mode)
            if kind is None:
                if info.st_size > MAX_FILE_BYTES:
                    raise TaskFileError(
                        f"{name}: file is {info.st_size} bytes; task files may be at most "
                        f"{MAX_FILE_BYTES}"
                    )
                data = handle.read(MAX_FILE_BYTES + 1)  # a file growing meanwhile stays bounded
                if len(data) > MAX_FILE_BYTES:
                    raise TaskFileError(
                        f"{name}: file is over {MAX_FILE_BYTES} bytes; task files may be at "
                        f"most {MAX_FILE_BYTES}"
                    )
                return data
    target = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise TaskFileError(f"{name}: is {kind}{target}; a task file must be a regular file")


def task_files(directory: Path) -> list[Path]:
    """Every `*.toml` entry under `directory` that is not a folder, in a stable order.

    A FIFO, a device or a broken link named `*.toml` is listed too: loading it is then an
    error that names it, where skipping it would drop its tasks without a word.
    """
    return sorted(p for p in directory.rglob("*.toml") if not p.is_dir())


def check_unique(tasks: Iterable[Task]) -> None:
    """Task ids are unique across all files."""
    seen: dict[str, Task] = {}
    for task in tasks:
        if task.id in seen:
            raise TaskFileError(
                f"{task.source}: duplicate task id {task.id!r}, also in {seen[task.id].source}"
            )
        seen[task.id] = task


def load_tasks(directory: Path, root: Path | None = None) -> list[Task]:
    """Load every task under `directory`, checking ids are unique across files."""
    tasks: list[Task] = []
    for path in task_files(directory):
        display = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
        tasks.extend(load_task_file(path, display))
    check_unique(tasks)
    return tasks
