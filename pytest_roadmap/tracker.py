"""The progress file (ROADMAP_PROGRESS.json) that the original Node tracker kept.

Existing users have one, so the format is kept as it was: keys the tracker does not
know (top level and inside task entries) pass through untouched, and timestamps look
like JavaScript's toISOString. Every change is lock + read + change + atomic write,
so two processes updating at once lose nothing.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import filelock

from pytest_roadmap.atomic import write_atomic
from pytest_roadmap.errors import TrackerError
from pytest_roadmap.results import (
    DOGFOODING_COUNTERS,
    FAILED,
    PASSED,
    RunRecord,
    iso_utc,
)
from pytest_roadmap.tasks import Task

DEFAULT_PATH = Path("ROADMAP_PROGRESS.json")
METRICS = ("cacheHitRate", "latency", "selectionAccuracy", "costSavings", "errorRate")
# Long enough for any real update (they take milliseconds), short enough that a
# stuck process is reported instead of hanging a CI job.
LOCK_TIMEOUT_S = 30.0
RECENT = 5  # completions shown by status_lines
PENDING = 20  # pending tasks shown by status_lines
_KEY = re.compile(r"month(\d+)_week(\d+)_")

Document = dict[str, Any]


def default_document(now: float | None = None) -> Document:
    """What a missing file reads as: the original tracker's starting state."""
    return {
        "currentMonth": 1,
        "currentWeek": 1,
        "tasks": {},
        "metrics": dict.fromkeys(METRICS, 0),
        "dogFooding": dict.fromkeys(DOGFOODING_COUNTERS.values(), 0),
        "lastUpdated": iso_utc(time.time() if now is None else now),
    }


def tracker_key(month: int, week: int, name: str) -> str:
    """The key of one task, as the original tracker (and Task.tracker_key) builds it."""
    return f"month{month}_week{week}_{name}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if _is_int(value) or isinstance(value, float):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity; JSON (and the Node tracker) does not.
    raise ValueError(f"{name} is not valid JSON")


def _check(path: Path, doc: object) -> Document:
    """Check the types of the keys the tracker uses; fill the ones a file may lack."""
    if not isinstance(doc, dict):
        raise TrackerError(f"{path}: the top level must be an object, got {_type_name(doc)}")

    def bad(where: str, expected: str, value: object) -> TrackerError:
        return TrackerError(f"{path}: {where} must be {expected}, got {_type_name(value)}")

    for name in ("currentMonth", "currentWeek"):
        if name in doc and not _is_int(doc[name]):
            raise bad(f"'{name}'", "an integer", doc[name])
    if "lastUpdated" in doc and not isinstance(doc["lastUpdated"], str | None):
        raise bad("'lastUpdated'", "a string", doc["lastUpdated"])
    for name, names in (("metrics", METRICS), ("dogFooding", DOGFOODING_COUNTERS.values())):
        table = doc.setdefault(name, dict.fromkeys(names, 0))
        if not isinstance(table, dict):
            raise bad(f"'{name}'", "an object", table)
        for key, value in table.items():
            if not _is_number(value):
                raise bad(f"'{name}.{key}'", "a number", value)
    tasks = doc.setdefault("tasks", {})
    if not isinstance(tasks, dict):
        raise bad("'tasks'", "an object", tasks)
    for key, entry in tasks.items():
        where = f"task {key!r}"
        if not isinstance(entry, dict):
            raise bad(where, "an object", entry)
        for field, expected, ok in (
            ("name", "a string", lambda v: isinstance(v, str)),
            ("month", "an integer", _is_int),
            ("week", "an integer", _is_int),
            ("completed", "true or false", lambda v: isinstance(v, bool)),
            ("completedAt", "a string or null", lambda v: v is None or isinstance(v, str)),
            ("notes", "an array", lambda v: isinstance(v, list)),
        ):
            if field in entry and not ok(entry[field]):
                raise bad(f"{where} field '{field}'", expected, entry[field])
    return doc


def _entry_place(key: str, entry: dict[str, Any]) -> tuple[int, int] | None:
    """(month, week) of an entry, from its fields or else from its key."""
    if _is_int(entry.get("month")) and _is_int(entry.get("week")):
        return entry["month"], entry["week"]
    match = _KEY.match(key)
    return (int(match[1]), int(match[2])) if match else None


def _new_entry(month: int, week: int, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "month": month,
        "week": week,
        "completed": False,
        "completedAt": None,
        "notes": [],
    }


def _complete(entry: dict[str, Any], at: float) -> None:
    # The first completion is the milestone; passing again later does not move it.
    if not (entry.get("completed") is True and entry.get("completedAt")):
        entry["completedAt"] = iso_utc(at)
    entry["completed"] = True


class ProgressTracker:
    """The progress file at `path`; every change goes through `update`."""

    def __init__(self, path: Path | str = DEFAULT_PATH, lock_timeout: float = LOCK_TIMEOUT_S):
        self.path = Path(path)
        self.lock_path = Path(f"{self.path}.lock")
        self.lock_timeout = lock_timeout

    def read(self) -> Document:
        """The document; a missing file reads as a fresh default document."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return default_document()
        except OSError as exc:
            raise TrackerError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            raise TrackerError(f"{self.path}: not valid UTF-8 at byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise TrackerError(
                f"{self.path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise TrackerError(f"{self.path}: invalid JSON: {exc}") from None
        return _check(self.path, doc)

    def render(self, doc: Document) -> str:
        """The document as the Node tracker wrote it (JSON.stringify with 2 spaces)."""
        return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    def completed_keys(self) -> set[str]:
        """Keys of the tasks marked completed."""
        tasks = self.read()["tasks"]
        return {key for key, entry in tasks.items() if entry.get("completed") is True}

    def update(self, change: Callable[[Document], None]) -> Document:
        """Under the lock: read, let `change` edit the document, write it back atomically."""
        lock = filelock.FileLock(self.lock_path, timeout=self.lock_timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise TrackerError(
                f"{self.path}: another process has held {self.lock_path} for more than "
                f"{self.lock_timeout:g} s; if none is running, delete the lock file"
            ) from None
        except OSError as exc:
            raise TrackerError(
                f"{self.path}: cannot create lock file {self.lock_path}: {exc.strerror or exc}"
            ) from None
        try:
            doc = self.read()
            change(doc)
            text = self.render(doc)
            try:
                write_atomic(self.path, text)
            except OSError as exc:
                raise TrackerError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        finally:
            lock.release()
        return doc

    def record_run(self, record: RunRecord) -> None:
        """Mark passed tasks completed, note failures, count dogfooding, stamp lastUpdated."""
        now = record.finished or time.time()

        def apply(doc: Document) -> None:
            tasks: dict[str, Any] = doc["tasks"]
            counters: dict[str, Any] = doc["dogFooding"]
            for result in record.results:
                if result.outcome not in (PASSED, FAILED):
                    continue
                task = result.task
                entry = tasks.setdefault(
                    task.tracker_key, _new_entry(task.month, task.week, task.title)
                )
                at = result.finished or now
                if result.outcome == PASSED:
                    _complete(entry, at)
                    counter = DOGFOODING_COUNTERS.get(task.dogfooding or "")
                    if counter:
                        counters[counter] = counters.get(counter, 0) + 1
                else:
                    reason = " ".join((result.error or "no reason given").split())
                    day = iso_utc(at)[:10]
                    entry.setdefault("notes", []).append(f"{day}: failed: {reason}")
            doc["lastUpdated"] = iso_utc(now)

        self.update(apply)

    def complete(self, month: int, week: int, name: str) -> str:
        """Mark one task completed (creating its entry if needed); returns its key."""
        if not name.strip():
            raise TrackerError(f"{self.path}: a task name must not be empty")
        key = tracker_key(month, week, name)
        now = time.time()

        def apply(doc: Document) -> None:
            entry = doc["tasks"].setdefault(key, _new_entry(month, week, name))
            _complete(entry, now)
            doc["lastUpdated"] = iso_utc(now)

        self.update(apply)
        return key

    def set_metric(self, name: str, value: float) -> None:
        """Set one of the known metrics (METRICS) to a finite number."""
        if name not in METRICS:
            raise TrackerError(
                f"{self.path}: unknown metric {name!r}; known metrics: {', '.join(METRICS)}"
            )
        if isinstance(value, bool) or not _is_number(value):
            raise TrackerError(f"{self.path}: metric {name} must be a finite number, got {value!r}")

        def apply(doc: Document) -> None:
            doc["metrics"][name] = value
            doc["lastUpdated"] = iso_utc(time.time())

        self.update(apply)

    def dogfood(self, kind: str) -> int:
        """Count one dogfooding item of `kind` (improvement|test|optimization|doc)."""
        counter = DOGFOODING_COUNTERS.get(kind)
        if counter is None:
            raise TrackerError(
                f"{self.path}: unknown dogfooding type {kind!r}; "
                f"known types: {', '.join(DOGFOODING_COUNTERS)}"
            )
        doc = self.update(lambda d: _bump(d, counter))
        return int(doc["dogFooding"][counter])

    def status_lines(self, tasks: list[Task] | None = None) -> list[str]:
        """A readable status: progress by month and week, metrics, dogfooding, recent and
        pending tasks. With `tasks` (from the task files), progress counts those tasks."""
        doc = self.read()
        entries: dict[str, dict[str, Any]] = doc["tasks"]
        done = {k for k, e in entries.items() if e.get("completed") is True}
        places: dict[str, tuple[int, int]] = {}
        for key, entry in entries.items():
            place = _entry_place(key, entry)
            if place:
                places[key] = place
        for task in tasks or ():
            places[task.tracker_key] = (task.month, task.week)
        updated = doc.get("lastUpdated") if self.path.exists() else None
        lines = [
            f"Roadmap progress ({self.path}, last updated {updated or 'never'})",
            f"Current: month {doc.get('currentMonth', 1)}, week {doc.get('currentWeek', 1)}",
        ]
        completed = len(done & places.keys())
        lines.append(f"Completed: {completed} of {len(places)} tasks{_pct(completed, len(places))}")
        lines.extend(_progress_lines(places, done))
        lines.append("Metrics:")
        lines.extend(f"  {k}: {v}" for k, v in doc["metrics"].items())
        lines.append("Dogfooding:")
        lines.extend(f"  {k}: {v}" for k, v in doc["dogFooding"].items())
        recent = sorted((e.get("completedAt") or "", k) for k, e in entries.items() if k in done)[
            -RECENT:
        ]
        lines.append("Recent completions:" if recent else "Recent completions: none")
        lines.extend(f"  {at or '(no date)'}  {key}" for at, key in reversed(recent))
        pending = sorted(
            (t for t in tasks or () if t.tracker_key not in done),
            key=lambda t: (t.month, t.week, t.priority, t.id),
        )
        if tasks is not None:
            lines.append("Pending tasks:" if pending else "Pending tasks: none")
            lines.extend(
                f"  month {t.month} week {t.week}: [{t.id}] {t.title}" for t in pending[:PENDING]
            )
            if len(pending) > PENDING:
                lines.append(f"  ... and {len(pending) - PENDING} more")
        return lines


def _bump(doc: Document, counter: str) -> None:
    doc["dogFooding"][counter] = doc["dogFooding"].get(counter, 0) + 1
    doc["lastUpdated"] = iso_utc(time.time())


def _pct(part: int, whole: int) -> str:
    return f" ({100 * part / whole:.0f} %)" if whole else ""


def _progress_lines(places: dict[str, tuple[int, int]], done: Iterable[str]) -> list[str]:
    finished = set(done)
    by_week: dict[tuple[int, int], list[bool]] = {}
    for key, place in places.items():
        by_week.setdefault(place, []).append(key in finished)
    lines: list[str] = []
    for month in sorted({m for m, _ in by_week}):
        weeks = sorted(w for m, w in by_week if m == month)
        flags = [f for w in weeks for f in by_week[(month, w)]]
        lines.append(f"Month {month}: {sum(flags)}/{len(flags)}{_pct(sum(flags), len(flags))}")
        for week in weeks:
            flags = by_week[(month, week)]
            lines.append(f"  Week {week}: {sum(flags)}/{len(flags)}")
    return lines
