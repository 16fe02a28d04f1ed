"""The progress tracker: the original file format, run recording, validation and locking."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Any

import filelock
import pytest

from pytest_roadmap.errors import TrackerError
from pytest_roadmap.results import Attempt, RunRecord, TaskResult, iso_utc
from pytest_roadmap.tasks import Task
from pytest_roadmap.tracker import METRICS, ProgressTracker, TrackerWriter, default_document

T0 = 1_736_510_400.0  # 2025-01-10T12:00:00Z
JS_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# A file as the Node tracker wrote it, plus keys this tracker does not know.
ORIGINAL: dict[str, Any] = {
    "currentMonth": 1,
    "currentWeek": 2,
    "tasks": {
        "month1_week1_Fix failed request tracking": {
            "name": "Fix failed request tracking",
            "month": 1,
            "week": 1,
            "completed": True,
            "completedAt": "2025-01-10T12:00:00.000Z",
            "notes": ["looked fine"],
            "owner": {"team": "core", "tags": ["a", 1, None]},
        },
        "month1_week2_Add caching": {
            "name": "Add caching",
            "month": 1,
            "week": 2,
            "completed": False,
            "completedAt": None,
            "notes": [],
        },
    },
    "metrics": {
        "cacheHitRate": 0.42,
        "latency": 120,
        "selectionAccuracy": 0,
        "costSavings": 0,
        "errorRate": 0.015,
    },
    "dogFooding": {
        "improvementsGenerated": 3,
        "testsGenerated": 0,
        "optimizationsGenerated": 1,
        "docsGenerated": 0,
    },
    "lastUpdated": "2025-01-10T12:00:00.000Z",
    "customTop": {"nested": [1, 2.5, "x"], "unicode": "café ✓"},
    "schemaNote": None,
}


def write_original(path: Path, doc: dict[str, Any] | None = None) -> None:
    # JSON.stringify(doc, null, 2): two spaces, ", " and ": " separators, no ASCII escaping.
    path.write_text(json.dumps(doc or ORIGINAL, indent=2, ensure_ascii=False), encoding="utf-8")


def task(
    title: str, month: int = 1, week: int = 1, dogfooding: str | None = None, tid: str = ""
) -> Task:
    return Task(
        id=tid or re.sub(r"[^a-z0-9]+", "-", title.lower()),
        title=title,
        prompt="p",
        month=month,
        week=week,
        dogfooding=dogfooding,
    )


def result(t: Task, outcome: str, finished: float, error: str | None = None) -> TaskResult:
    attempts = [Attempt(1, outcome, finished - 1, finished, "gw0", error)] if outcome else []
    return TaskResult(task=t, attempts=attempts, outcome=outcome or "skipped", error=error)


def record(*results: TaskResult, finished: float = T0 + 60) -> RunRecord:
    return RunRecord(
        api="sandbox",
        sandbox=True,
        model="m",
        workers=1,
        rate_limit=1.0,
        started=T0,
        finished=finished,
        results=list(results),
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ROADMAP_PROGRESS.json"


# --- the original format ---------------------------------------------------------------


def test_round_trip_keeps_unknown_keys(path: Path) -> None:
    write_original(path)
    tracker = ProgressTracker(path)
    assert tracker.read() == ORIGINAL
    tracker.update(lambda doc: None)
    assert json.loads(path.read_text(encoding="utf-8")) == ORIGINAL
    # Same text as the Node tool wrote, apart from a final newline; key order kept.
    assert (
        path.read_text(encoding="utf-8")
        == json.dumps(ORIGINAL, indent=2, ensure_ascii=False) + "\n"
    )


def test_update_after_change_keeps_unknown_keys(path: Path) -> None:
    write_original(path)
    ProgressTracker(path).complete(1, 2, "Add caching")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["customTop"] == ORIGINAL["customTop"]
    assert doc["schemaNote"] is None
    entry = doc["tasks"]["month1_week1_Fix failed request tracking"]
    assert entry == ORIGINAL["tasks"]["month1_week1_Fix failed request tracking"]
    assert doc["tasks"]["month1_week2_Add caching"]["completed"] is True
    assert list(doc) == list(ORIGINAL)


def test_missing_file_reads_as_default(path: Path) -> None:
    tracker = ProgressTracker(path)
    doc = tracker.read()
    assert doc["tasks"] == {}
    # The original tracker's baseline: where the roadmap started.
    assert doc["metrics"] == {
        "cacheHitRate": 15,
        "latency": 500,
        "selectionAccuracy": 85,
        "costSavings": 97,
        "errorRate": 5,
    }
    assert list(doc["metrics"]) == list(METRICS)
    assert doc["dogFooding"] == {
        "improvementsGenerated": 0,
        "testsGenerated": 0,
        "optimizationsGenerated": 0,
        "docsGenerated": 0,
    }
    assert (doc["currentMonth"], doc["currentWeek"]) == (1, 1)
    assert JS_ISO.fullmatch(doc["lastUpdated"])
    assert tracker.completed_keys() == set()
    assert not path.exists()


def test_completed_keys(path: Path) -> None:
    write_original(path)
    assert ProgressTracker(path).completed_keys() == {"month1_week1_Fix failed request tracking"}


def test_iso_like_javascript() -> None:
    assert iso_utc(T0) == "2025-01-10T12:00:00.000Z"
    assert iso_utc(T0 + 0.1234) == "2025-01-10T12:00:00.123Z"
    assert default_document(T0)["lastUpdated"] == "2025-01-10T12:00:00.000Z"


# --- invalid files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "invalid JSON at line 1 column 2"),
        (b"", "invalid JSON at line 1 column 1"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8 at byte 0"),
        (b"[1, 2]", "the top level must be an object, got an array"),
        (b'{"tasks": []}', "'tasks' must be an object, got an array"),
        (b'{"tasks": {"k": 1}}', "task 'k' must be an object, got a number"),
        (b'{"tasks": {"k": {"completed": "yes"}}}', "field 'completed' must be true or false"),
        (b'{"tasks": {"k": {"notes": "x"}}}', "field 'notes' must be an array, got a string"),
        (b'{"tasks": {"k": {"month": "1"}}}', "field 'month' must be an integer, got a string"),
        (b'{"metrics": {"latency": "fast"}}', "'metrics.latency' must be a number, got a string"),
        (b'{"metrics": []}', "'metrics' must be an object, got an array"),
        (b'{"dogFooding": {"testsGenerated": true}}', "must be a number, got a boolean"),
        (b'{"currentMonth": "1"}', "'currentMonth' must be an integer, got a string"),
        (b'{"lastUpdated": 5}', "'lastUpdated' must be a string, got a number"),
    ],
)
def test_invalid_file_is_tracker_error(path: Path, content: bytes, problem: str) -> None:
    path.write_bytes(content)
    with pytest.raises(TrackerError) as caught:
        ProgressTracker(path).read()
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message
    assert caught.value.__cause__ is None
    assert path.read_bytes() == content


def test_invalid_file_is_not_overwritten_by_update(path: Path) -> None:
    path.write_text("[]")
    with pytest.raises(TrackerError):
        ProgressTracker(path).complete(1, 1, "x")
    assert path.read_text() == "[]"


def test_unreadable_path_is_tracker_error(tmp_path: Path) -> None:
    with pytest.raises(TrackerError, match="cannot read: Is a directory"):
        ProgressTracker(tmp_path).read()


def test_failed_write_keeps_old_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_original(path)
    before = path.read_bytes()

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(TrackerError, match="cannot write: No space left on device"):
        ProgressTracker(path).dogfood("test")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{path.name}.lock"]


def test_lock_timeout_is_tracker_error(path: Path) -> None:
    holder = filelock.FileLock(f"{path}.lock")
    with holder, pytest.raises(TrackerError, match=r"another process has held .*\.lock"):
        ProgressTracker(path, lock_timeout=0.05).dogfood("doc")
    assert not path.exists()


# --- record_run ------------------------------------------------------------------------


def test_record_run(path: Path) -> None:
    write_original(path)
    passed = task("Add caching", 1, 2, "optimization")
    new = task("Write docs", 2, 1, "doc")
    failed = task("Speed up", 2, 2, "test")
    skipped = task("Later", 3, 1, "improvement")
    ProgressTracker(path).record_run(
        record(
            result(passed, "passed", T0 + 10),
            result(new, "passed", T0 + 20),
            result(failed, "failed", T0 + 30, "HTTP 500:\nserver broke"),
            result(skipped, "", 0),
        )
    )
    doc = json.loads(path.read_text(encoding="utf-8"))
    caching = doc["tasks"]["month1_week2_Add caching"]
    assert caching["completed"] is True
    assert caching["completedAt"] == "2025-01-10T12:00:10.000Z"
    assert doc["tasks"]["month2_week1_Write docs"] == {
        "name": "Write docs",
        "month": 2,
        "week": 1,
        "completed": True,
        "completedAt": "2025-01-10T12:00:20.000Z",
        "notes": [],
    }
    speed = doc["tasks"]["month2_week2_Speed up"]
    assert speed["completed"] is False
    assert speed["notes"] == ["2025-01-10: failed: HTTP 500: server broke"]
    assert "month3_week1_Later" not in doc["tasks"]
    assert doc["dogFooding"] == {
        "improvementsGenerated": 3,
        "testsGenerated": 0,  # the test task failed
        "optimizationsGenerated": 2,
        "docsGenerated": 1,
    }
    assert doc["lastUpdated"] == "2025-01-10T12:01:00.000Z"
    assert doc["customTop"] == ORIGINAL["customTop"]


def test_record_run_twice(path: Path) -> None:
    write_original(path)
    tracker = ProgressTracker(path)
    done = task("Fix failed request tracking", 1, 1, "improvement")
    flaky = task("Add caching", 1, 2)
    tracker.record_run(
        record(result(done, "passed", T0 + 99), result(flaky, "failed", T0 + 5, "a"))
    )
    tracker.record_run(record(result(flaky, "failed", T0 + 86400, "b"), finished=T0 + 86400 + 60))
    doc = tracker.read()
    # An already completed task keeps the date it was first completed.
    entry = doc["tasks"]["month1_week1_Fix failed request tracking"]
    assert entry["completedAt"] == "2025-01-10T12:00:00.000Z"
    assert entry["notes"] == ["looked fine"]
    assert doc["dogFooding"]["improvementsGenerated"] == 4
    assert doc["tasks"]["month1_week2_Add caching"]["notes"] == [
        "2025-01-10: failed: a",
        "2025-01-11: failed: b",
    ]


def test_record_run_skips_what_the_writer_recorded(path: Path) -> None:
    write_original(path)
    early = task("Early", 1, 3, "improvement", tid="early")
    late = task("Late", 1, 3, "improvement", tid="late")
    tracker = ProgressTracker(path)
    writer = TrackerWriter(tracker, wait=0.0)
    writer.add(result(early, "passed", T0 + 10))
    assert writer.close() == {"early"}
    assert tracker.read()["dogFooding"]["improvementsGenerated"] == 4
    tracker.record_run(
        record(result(early, "passed", T0 + 10), result(late, "passed", T0 + 20)),
        written={"early"},
    )
    doc = tracker.read()
    assert doc["dogFooding"]["improvementsGenerated"] == 5  # early counted once
    assert doc["tasks"]["month1_week3_Early"]["completedAt"] == "2025-01-10T12:00:10.000Z"
    assert doc["tasks"]["month1_week3_Late"]["completed"] is True


# --- the writer during a run -----------------------------------------------------------


def test_writer_records_each_pass_within_its_wait(path: Path) -> None:
    write_original(path)
    tracker = ProgressTracker(path)
    writer = TrackerWriter(tracker, wait=0.05)
    try:
        writer.add(result(task("First", 1, 3, "test", tid="first"), "passed", T0 + 1))
        deadline = time.monotonic() + 30
        while "month1_week3_First" not in tracker.read()["tasks"]:
            assert time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.01)
        doc = tracker.read()
        assert doc["tasks"]["month1_week3_First"]["completed"] is True
        assert doc["dogFooding"]["testsGenerated"] == 1
        assert doc["customTop"] == ORIGINAL["customTop"]  # the file's own keys are kept
        writer.add(result(task("Broken", 1, 3, tid="broken"), "failed", T0 + 2, "x"))
    finally:
        written = writer.close()
    assert written == {"first", "broken"}
    assert tracker.read()["tasks"]["month1_week3_Broken"]["notes"] == ["2025-01-10: failed: x"]


def test_writer_batches_passes_into_one_update(path: Path) -> None:
    tracker = ProgressTracker(path)
    updates = []
    original = tracker.update

    def counting(change: Any) -> Any:
        updates.append(1)
        return original(change)

    tracker.update = counting  # type: ignore[method-assign]
    writer = TrackerWriter(tracker, wait=30.0)  # close() ends the wait
    # The first outcome after a quiet spell is written at once...
    writer.add(result(task("T0", tid="t0"), "passed", T0))
    deadline = time.monotonic() + 30
    while not tracker.completed_keys():
        assert time.monotonic() < deadline, "the first outcome was not written at once"
        time.sleep(0.01)
    # ... and the ones within the wait after it go together in the next update.
    for n in range(1, 50):
        writer.add(result(task(f"T{n}", tid=f"t{n}"), "passed", T0 + n))
    assert len(writer.close()) == 50
    assert len(updates) == 2
    assert len(tracker.completed_keys()) == 50


def test_writer_stops_at_an_error_and_says_why(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    writer = TrackerWriter(ProgressTracker(blocked / "p.json"), wait=0.0)
    writer.add(result(task("A", tid="a"), "passed", T0))
    writer.add(result(task("B", tid="b"), "passed", T0))
    assert writer.close() == set()
    assert writer.error is not None and "blocked" in writer.error


# --- CLI helpers -----------------------------------------------------------------------


def test_complete_metric_dogfood(path: Path) -> None:
    tracker = ProgressTracker(path)
    assert tracker.complete(3, 4, "Ship it") == "month3_week4_Ship it"
    tracker.set_metric("latency", 87.5)
    tracker.set_metric("errorRate", 0)
    assert tracker.dogfood("test") == 1
    assert tracker.dogfood("test") == 2
    doc = tracker.read()
    assert doc["tasks"]["month3_week4_Ship it"]["completed"] is True
    assert JS_ISO.fullmatch(doc["tasks"]["month3_week4_Ship it"]["completedAt"])
    assert doc["metrics"]["latency"] == 87.5
    assert doc["dogFooding"]["testsGenerated"] == 2


def test_unknown_metric_lists_known_ones(path: Path) -> None:
    with pytest.raises(TrackerError) as caught:
        ProgressTracker(path).set_metric("speed", 1)
    assert "unknown metric 'speed'" in str(caught.value)
    assert ", ".join(METRICS) in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_metric_must_be_finite_number(path: Path, value: float) -> None:
    with pytest.raises(TrackerError, match="must be a finite number"):
        ProgressTracker(path).set_metric("latency", value)


def test_unknown_dogfood_kind(path: Path) -> None:
    with pytest.raises(TrackerError, match="known types: improvement, test, optimization, doc"):
        ProgressTracker(path).dogfood("refactor")


def test_empty_name_refused(path: Path) -> None:
    with pytest.raises(TrackerError, match="must not be empty"):
        ProgressTracker(path).complete(1, 1, "  ")


def test_status_lines(path: Path) -> None:
    write_original(path)
    tasks = [
        task("Fix failed request tracking", 1, 1, tid="fix"),
        task("Add caching", 1, 2, tid="cache"),
        task("Write docs", 2, 1, tid="docs"),
    ]
    lines = ProgressTracker(path).status_lines(tasks)
    text = "\n".join(lines)
    assert lines[0] == f"Roadmap progress ({path}, last updated 2025-01-10T12:00:00.000Z)"
    assert "Current: month 1, week 2" in lines
    assert "Completed: 1 of 3 tasks (33 %)" in lines
    assert "Month 1: 1/2 (50 %)" in lines
    assert "  Week 1: 1/1" in lines
    assert "  Week 2: 0/1" in lines
    assert "Month 2: 0/1 (0 %)" in lines
    assert "  latency: 120" in lines
    assert "  improvementsGenerated: 3" in lines
    # Names, as the original printed them, not the file's keys.
    assert "  2025-01-10T12:00:00.000Z  Fix failed request tracking (month 1, week 1)" in lines
    assert not any("month1_week1_" in line for line in lines)
    pending = text.split("Pending tasks:")[1].splitlines()[1:]
    assert pending == [
        "  month 1 week 2: [cache] Add caching",
        "  month 2 week 1: [docs] Write docs",
    ]


def test_status_lines_without_task_files_lists_the_files_open_entries(path: Path) -> None:
    doc = json.loads(json.dumps(ORIGINAL))
    doc["tasks"]["month2_week3_Nameless"] = {"completed": False}
    write_original(path, doc)
    lines = ProgressTracker(path).status_lines()
    pending = lines[lines.index("Pending tasks:") + 1 :]
    assert pending == ["  Add caching (month 1, week 2)", "  Nameless (month 2, week 3)"]


def test_file_without_metrics_starts_from_the_baseline(path: Path) -> None:
    path.write_text('{"tasks": {}}', encoding="utf-8")
    assert ProgressTracker(path).read()["metrics"]["latency"] == 500


def test_status_lines_without_tasks_or_file(path: Path) -> None:
    lines = ProgressTracker(path).status_lines()
    assert lines[0] == f"Roadmap progress ({path}, last updated never)"
    assert "Completed: 0 of 0 tasks" in lines
    assert "Recent completions: none" in lines
    assert not any(line.startswith("Pending") for line in lines)


# --- two processes at once -------------------------------------------------------------

UPDATES = 60


def _hammer(path: str, name: str, start: Any) -> None:
    tracker = ProgressTracker(path)
    start.wait()
    for i in range(UPDATES):
        tracker.dogfood("test")
        tracker.complete(1, 1, f"{name}-{i}")


@pytest.mark.slow
def test_two_processes_lose_no_update(path: Path) -> None:
    write_original(path)
    # fork: the child needs no importable test module, and Linux is where this runs.
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    workers = [ctx.Process(target=_hammer, args=(str(path), n, start)) for n in ("a", "b")]
    for w in workers:
        w.start()
    start.set()  # both begin together, so their updates interleave
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    doc = ProgressTracker(path).read()
    assert doc["dogFooding"]["testsGenerated"] == 2 * UPDATES
    names = {e["name"] for e in doc["tasks"].values()}
    assert {f"{n}-{i}" for n in "ab" for i in range(UPDATES)} <= names
    assert doc["customTop"] == ORIGINAL["customTop"]
    assert not list(path.parent.glob("*.tmp"))
