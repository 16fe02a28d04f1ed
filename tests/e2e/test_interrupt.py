"""Interrupted runs, as CI interrupts them: SIGTERM, SIGKILL and SIGINT to the controller alone.

Each run talks to the sandbox as if it were a real API (`--roadmap-api URL`), so the tracker
is written; what the sandbox saw is the judge of what the tracker and report.json claim, and
of what a following `--roadmap-resume` sends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.project import Roadmap, task_toml

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

FAST = [f"t{n:02d}" for n in range(15)]
# Every later task hangs: each of the two workers gets stuck on the first it sends, and the
# other three are never sent (which ones depends on how xdist handed them out).
HUNG = [f"t{n:02d}" for n in range(15, 20)]
ALL = FAST + HUNG
WAIT = 90.0  # safety net for every wait below; each ends on a condition long before


def _wait(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the run ended before {what}:\n{out}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def _start(roadmap: Roadmap, *extra: str) -> subprocess.Popen[bytes]:
    roadmap.tasks("month1", *(task_toml(t, title=f"Work {t}") for t in ALL))
    roadmap.sandbox.configure(rules=[{"match": f"do {t} ", "hang": True} for t in HUNG])
    return roadmap.spawn_run(*extra)


def _stuck(roadmap: Roadmap) -> bool:
    """Every fast task answered, and both workers waiting at the server."""
    chats = roadmap.chats()
    answered = {e["task"] for e in chats if e["status"] == 200}
    return answered == set(FAST) and len(_waiting(roadmap)) == 2


def _waiting(roadmap: Roadmap) -> set[str]:
    return {e["task"] for e in roadmap.chats() if e["answered"] is None}


def _tracker(roadmap: Roadmap) -> dict[str, Any]:
    path = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    return json.loads(path.read_text()) if path.exists() else {"tasks": {}}


def _completed(roadmap: Roadmap) -> set[str]:
    tasks = _tracker(roadmap)["tasks"]
    return {k.removeprefix("month1_week1_Work ") for k, e in tasks.items() if e["completed"]}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture
def workers() -> Iterator[list[int]]:
    """Worker processes a test saw, ended at the end if a killed controller left them."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _resume(roadmap: Roadmap, after: float) -> list[str]:
    """A following `--roadmap-resume` on a healthy server; the tasks it sent, in order."""
    roadmap.sandbox.configure(rules=[])
    result = roadmap.run("-n", "2", "--roadmap-resume")
    assert result.ret == 0, result.stdout.str()
    return [e["task"] for e in roadmap.chats() if e["arrived"] > after]


@pytest.mark.slow
def test_sigterm_writes_the_reports_and_tracker_and_resume_pays_only_the_rest(
    roadmap: Roadmap,
) -> None:
    proc = _start(roadmap)
    _wait(lambda: _stuck(roadmap), "the fast tasks passed and both workers waited", proc)
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=WAIT)[0].decode()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "Terminated: SIGTERM" in out and "Traceback" not in out

    report = json.loads((roadmap.pytester.path / "roadmap-report" / "report.json").read_text())
    assert report["schema_version"] == 2
    assert report["run"]["interrupted"] == "SIGTERM"
    totals = report["totals"]
    assert (totals["total"], totals["passed"], totals["failed"]) == (20, 15, 0)
    assert (totals["interrupted"], totals["not_run"], totals["skipped"]) == (2, 3, 0)
    outcome = {t["id"]: t["outcome"] for t in report["tasks"]}
    waiting = _waiting(roadmap)
    assert {t for t, o in outcome.items() if o == "passed"} == set(FAST)
    assert {t for t, o in outcome.items() if o == "interrupted"} == waiting
    assert {t for t, o in outcome.items() if o == "not_run"} == set(HUNG) - waiting
    errors = {t["id"]: t["error"] for t in report["tasks"]}
    for task in HUNG:
        assert errors[task] == (
            "the run was interrupted (SIGTERM) during attempt 1"
            if task in waiting
            else "the run was interrupted (SIGTERM) before this task started"
        )
    assert "roadmap: 20 tasks: 15 completed, 0 failed, 0 skipped, 2 interrupted, 3 not run" in out

    # The tracker holds exactly what the server answered; nothing was sent after the signal.
    assert _completed(roadmap) == set(FAST)
    assert not [e for e in roadmap.chats() if e["arrived"] > signalled]
    assert Counter(_resume(roadmap, signalled)) == Counter(HUNG)


@pytest.mark.slow
def test_sigkill_keeps_what_passed_and_resume_pays_only_the_rest(
    roadmap: Roadmap, workers: list[int]
) -> None:
    proc = _start(roadmap)
    _wait(lambda: _stuck(roadmap), "the fast tasks passed and both workers waited", proc)
    # Killed outright, nothing of the controller's end runs: what the tracker holds was
    # written while the run went on, within a second of each answer.
    _wait(lambda: _completed(roadmap) == set(FAST), "the tracker held every passed task", proc)
    workers += _children(proc.pid)
    killed = time.time()
    proc.kill()
    proc.communicate(timeout=WAIT)
    assert not (roadmap.pytester.path / "roadmap-report" / "report.json").exists()
    tracker = _tracker(roadmap)
    answered = {e["task"] for e in roadmap.chats() if e["status"] == 200}
    assert _completed(roadmap) == answered == set(FAST)
    assert all(e["completedAt"].endswith("Z") for e in tracker["tasks"].values())
    for pid in workers:  # orphaned workers still wait on the hung requests: end them here
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert Counter(_resume(roadmap, killed)) == Counter(HUNG)


@pytest.mark.slow
def test_sigint_to_the_controller_alone_stops_every_send(roadmap: Roadmap) -> None:
    """Workers run on for a moment after their controller is interrupted; they must not
    start another request, whose answer nobody would record."""
    names = [f"s{n:02d}" for n in range(12)]
    roadmap.tasks("month1", *(task_toml(t) for t in names))
    roadmap.sandbox.configure(latency=1.0)
    proc = roadmap.spawn(
        "--roadmap", "-n", "2", "--roadmap-api", roadmap.sandbox.url, "--roadmap-rate-limit", "500"
    )

    def both_just_sent() -> bool:
        # Both workers mid-request with most of the second still to go, so each sends its
        # next request well after the controller has had the signal.
        now = time.time()
        waiting = [e for e in roadmap.chats() if e["answered"] is None]
        done = [e for e in roadmap.chats() if e["answered"] is not None]
        return (
            len(done) >= 2 and len(waiting) == 2 and all(now - e["arrived"] < 0.4 for e in waiting)
        )

    _wait(both_just_sent, "both workers were mid-request", proc)
    signalled = time.time()
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=WAIT)[0].decode()  # xdist has ended its workers by then
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    late = [e["task"] for e in roadmap.chats() if e["arrived"] > signalled]
    assert late == [], f"sent after the interruption: {late}"
    report = roadmap.pytester.path / "roadmap-report" / "report.json"
    written = report.stat().st_mtime
    assert all(e["arrived"] < written for e in roadmap.chats())
    doc = json.loads(report.read_text())
    assert doc["totals"]["total"] == 12
    assert doc["run"]["interrupted"] == "Ctrl-C or SIGINT"
    assert (
        sum(doc["totals"][k] for k in ("passed", "failed", "skipped", "interrupted", "not_run"))
        == 12
    )


def test_sigterm_without_workers(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("aquick"), task_toml("bstuck"), task_toml("cafter"))
    roadmap.sandbox.configure(rules=[{"match": "do bstuck", "hang": True}])
    proc = roadmap.spawn("--roadmap", "-n", "0", "--roadmap-api", roadmap.sandbox.url)
    _wait(lambda: any(e["task"] == "bstuck" for e in roadmap.chats()), "bstuck was sent", proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=WAIT)[0].decode()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    doc = json.loads((roadmap.pytester.path / "roadmap-report" / "report.json").read_text())
    assert {t["id"]: t["outcome"] for t in doc["tasks"]} == {
        "aquick": "passed",
        "bstuck": "interrupted",
        "cafter": "not_run",
    }
    tasks = _tracker(roadmap)["tasks"]
    assert tasks["month1_week1_Task aquick"]["completed"] is True
    assert "month1_week1_Task bstuck" not in tasks
