"""The progress file (ROADMAP_PROGRESS.json) that the original Node tracker kept.

Existing users have one, so the format is kept as it was: keys the tracker does not
know (top level and inside task entries) pass through untouched, and timestamps look
like JavaScript's toISOString. Every change is lock + read + change + atomic write,
so two processes updating at once lose nothing.
"""

from __future__ import annotations

import json
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from decimal import ROUND_HALF_UP, Decimal
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
    TaskResult,
    iso_utc,
)
from pytest_roadmap.tasks import Task

DEFAULT_PATH = Path("ROADMAP_PROGRESS.json")
METRICS = ("cacheHitRate", "latency", "selectionAccuracy", "costSavings", "errorRate")
# Where the original tracker started a new file: the measured state before the roadmap.
BASELINE: dict[str, float] = {
    "cacheHitRate": 15,
    "latency": 500,
    "selectionAccuracy": 85,
    "costSavings": 97,
    "errorRate": 5,
}
# The original `report` command's targets, by milestone month.
TARGETS: dict[str, dict[str, float]] = {
    "month1": {"cacheHitRate": 40, "latency": 200, "selectionAccuracy": 95, "errorRate": 2},
    "month3": {"cacheHitRate": 60, "latency": 200, "selectionAccuracy": 95, "errorRate": 2},
    "month6": {"cacheHitRate": 80, "latency": 150, "selectionAccuracy": 98, "errorRate": 1},
    "month12": {"cacheHitRate": 99, "latency": 100, "selectionAccuracy": 99.5, "errorRate": 0.1},
}
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
        "metrics": dict(BASELINE),
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
    for name, start in (
        ("metrics", BASELINE),
        ("dogFooding", dict.fromkeys(DOGFOODING_COUNTERS.values(), 0)),
    ):
        table = doc.setdefault(name, dict(start))
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


def _entry_label(key: str, entry: dict[str, Any]) -> str:
    """`name (month 1, week 1)` of an entry, as the original status printed it; the key
    stands in for a name the entry lacks."""
    name = entry.get("name") if isinstance(entry.get("name"), str) else None
    if name is None:
        match = _KEY.match(key)
        name = key[match.end() :] if match else key
    place = _entry_place(key, entry)
    return f"{name} (month {place[0]}, week {place[1]})" if place else name


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

    def record_run(self, record: RunRecord, written: Collection[str] = ()) -> None:
        """Mark passed tasks completed, note failures, count dogfooding, stamp lastUpdated.

        `written`: ids of the tasks a `TrackerWriter` recorded during the run; they are not
        recorded again."""
        now = record.finished or time.time()
        results = [r for r in record.results if r.task.id not in written]

        def apply(doc: Document) -> None:
            _record(doc, results, now)
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

    def report(self, now: float | None = None) -> Document:
        """What the original `report` command printed: a summary of the file, its metrics
        and dogfooding counters, and the roadmap's targets."""
        doc = self.read()
        entries = doc["tasks"].values()
        completed = sum(1 for e in entries if e.get("completed") is True)
        total = len(doc["tasks"])
        return {
            "generatedAt": iso_utc(time.time() if now is None else now),
            "summary": {
                "currentMonth": doc.get("currentMonth", 1),
                "currentWeek": doc.get("currentWeek", 1),
                "progress": f"{_to_fixed(100 * completed / total) if total else 0}%",
                "tasksCompleted": completed,
                "tasksTotal": total,
            },
            "metrics": doc["metrics"],
            "dogFooding": doc["dogFooding"],
            "targets": TARGETS,
        }

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
        lines.extend(
            f"  {at or '(no date)'}  {_entry_label(key, entries[key])}"
            for at, key in reversed(recent)
        )
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
        else:  # no task files: the file's own unfinished entries, as the original listed them
            open_keys = [k for k in entries if k not in done]
            if open_keys:
                lines.append("Pending tasks:")
                lines.extend(f"  {_entry_label(k, entries[k])}" for k in open_keys[:PENDING])
                if len(open_keys) > PENDING:
                    lines.append(f"  ... and {len(open_keys) - PENDING} more")
        return lines


def _record(doc: Document, results: Iterable[TaskResult], now: float) -> None:
    """Passed tasks completed (and their dogfooding counted), failed ones noted."""
    tasks: dict[str, Any] = doc["tasks"]
    counters: dict[str, Any] = doc["dogFooding"]
    for result in results:
        if result.outcome not in (PASSED, FAILED):
            continue
        task = result.task
        entry = tasks.setdefault(task.tracker_key, _new_entry(task.month, task.week, task.title))
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


# The writer starts at most one update (lock, read, change, write) per this many seconds...
BATCH_WAIT = 1.0
# ... or per ten times as long as the last update took, so that on a large tracker (0.1 s
# per update at 10,000 entries) the writer never takes more than a tenth of the controller.
SHARE = 10.0


class TrackerWriter:
    """Records tasks' final outcomes in the tracker while the run goes on, from a thread.

    The original tracker saved after every completion, so a run that was killed kept what it
    had done; a tracker written only at the end lost it all. Each update is the tracker's
    usual lock + read + change + atomic write (passed tasks completed, failed ones noted):
    an outcome after a quiet second is written at once, and the outcomes that come while an
    update is due go together in the next, at most one update a second.
    On the first error it stops: the end-of-run `record_run` writes whatever is missing (or
    meets the same error and says so). `close()` returns the ids it recorded.
    """

    def __init__(self, tracker: ProgressTracker, wait: float = BATCH_WAIT) -> None:
        self._tracker = tracker
        self._wait = wait
        self._queue: queue.SimpleQueue[TaskResult | None] = queue.SimpleQueue()
        self._written: set[str] = set()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="roadmap-tracker", daemon=True)
        self._thread.start()

    def add(self, result: TaskResult) -> None:
        """A task ended (passed or failed): record it soon."""
        self._queue.put(result)

    def close(self) -> set[str]:
        """Write what is queued, stop, and return the ids of the tasks recorded."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._written

    def _batches(self) -> Iterator[list[TaskResult]]:
        """Outcomes as they come, at most one batch per wait: an outcome after a quiet spell
        is written at once, the ones that follow it within the wait go together."""
        next_at = 0.0  # monotonic time the next update may start
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while (left := next_at - time.monotonic()) > 0:
                try:
                    more = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:
                    yield batch
                    return
                batch.append(more)
            while True:  # whatever else is queued already goes along
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    yield batch
                    return
                batch.append(more)
            started = time.monotonic()
            yield batch
            ended = time.monotonic()
            next_at = started + max(self._wait, SHARE * (ended - started))

    def _run(self) -> None:
        batches = self._batches()
        for batch in batches:

            def apply(doc: Document, batch: list[TaskResult] = batch) -> None:
                now = time.time()
                _record(doc, batch, now)
                doc["lastUpdated"] = iso_utc(now)

            try:
                self._tracker.update(apply)
            except (TrackerError, OSError) as exc:
                self.error = str(exc)
                for _ in batches:  # take what comes until close(), without writing it
                    pass
                return
            self._written.update(result.task.id for result in batch)


def _bump(doc: Document, counter: str) -> None:
    doc["dogFooding"][counter] = doc["dogFooding"].get(counter, 0) + 1
    doc["lastUpdated"] = iso_utc(time.time())


def _to_fixed(value: float) -> str:
    """JavaScript's value.toFixed(1): the exact value rounded half up (6.25 -> "6.3")."""
    return str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


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
