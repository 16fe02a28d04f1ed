"""Faults of the API: what the user sees, one outcome per task, no pass without an answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.project import Roadmap, task_toml

NAMES = ["t0", "t1", "t2", "t3"]


def check_run(roadmap: Roadmap, selected: list[str]) -> dict[str, dict[str, Any]]:
    """Every selected task has exactly one outcome; every pass had a 200 from the server."""
    report = json.loads((roadmap.pytester.path / "roadmap-report" / "report.json").read_text())
    ids = [t["id"] for t in report["tasks"]]
    assert sorted(ids) == sorted(selected)
    answered = {e["task"] for e in roadmap.chats() if e["status"] == 200 and e["answered"]}
    tasks = {t["id"]: t for t in report["tasks"]}
    for task_id, task in tasks.items():
        assert task["outcome"] in ("passed", "failed", "skipped")
        if task["outcome"] == "passed":
            assert task_id in answered, f"{task_id} passed without the API answering it"
    return tasks


@pytest.mark.slow
def test_api_down_for_the_whole_run(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(n) for n in NAMES))
    roadmap.sandbox.configure(down=True)
    result = roadmap.run("-n", "2", "--roadmap-health-wait", "1")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(["FAILED t0: API unhealthy for 1 s: GET *api/health -> 503"])
    tasks = check_run(roadmap, NAMES)
    assert all(t["outcome"] == "failed" for t in tasks.values())
    assert roadmap.chats() == []


def test_server_error_twice_then_success(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(n) for n in NAMES))
    roadmap.sandbox.configure(rules=[{"match": "do t1", "status": 500, "times": 2}])
    result = roadmap.run("-n", "2")
    assert result.parseoutcomes() == {"passed": 4, "rerun": 2}
    tasks = check_run(roadmap, NAMES)
    assert tasks["t1"]["attempts"] == 3
    assert [e["status"] for e in roadmap.chats("t1")] == [500, 500, 200]


@pytest.mark.slow
def test_one_task_hangs_forever(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(n) for n in NAMES))
    roadmap.sandbox.configure(rules=[{"match": "do t2", "hang": True}])
    result = roadmap.run("-n", "2", "--roadmap-timeout", "1", "--reruns", "1")
    assert result.parseoutcomes() == {"passed": 3, "failed": 1, "rerun": 1}
    result.stdout.fnmatch_lines(["FAILED t2: no answer within 1 s from POST *"])
    tasks = check_run(roadmap, NAMES)
    assert tasks["t2"]["outcome"] == "failed" and tasks["t2"]["attempts"] == 2


def test_python_task_that_hangs_is_ended_by_pytest_timeout(roadmap: Roadmap) -> None:
    (roadmap.pytester.path / "roadmap_tasks" / "test_stuck.py").write_text(
        "import time\ndef test_stuck(roadmap_client):\n    time.sleep(60)\n"
    )
    result = roadmap.run("--roadmap-timeout", "1", "--reruns", "0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Timeout*"])


@pytest.mark.slow
def test_rate_limited_with_retry_after(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(n) for n in NAMES))
    roadmap.sandbox.configure(
        rules=[{"match": "do t3", "status": 429, "times": 1, "retry_after": 1}]
    )
    result = roadmap.run("-n", "2")
    # A 429 is a refusal for load, not a failure: its attempt is no rerun.
    assert result.parseoutcomes() == {"passed": 4, "refused": 1}
    check_run(roadmap, NAMES)
    first, second = roadmap.chats("t3")
    assert second["arrived"] - first["answered"] >= 1.0


def test_connection_closed_mid_answer_then_fine(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(n) for n in NAMES))
    roadmap.sandbox.configure(rules=[{"match": "do t0", "close": True, "times": 1}])
    result = roadmap.run()
    assert result.parseoutcomes() == {"passed": 4, "rerun": 1}
    tasks = check_run(roadmap, NAMES)
    assert tasks["t0"]["attempts"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("failure_rate", [0.3])
def test_random_failures_every_task_ends_once(roadmap: Roadmap, failure_rate: float) -> None:
    names = [f"r{i:02d}" for i in range(20)]
    roadmap.tasks("month1", *(task_toml(n) for n in names))
    roadmap.sandbox.configure(failure_rate=failure_rate, seed=7)
    result = roadmap.run("-n", "3", "--reruns", "1")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 20
    check_run(roadmap, names)
