"""--roadmap-plan and --roadmap-deadline in real sessions, judged by the sandbox's log."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.support.project import Roadmap, task_toml


def read_report(roadmap: Roadmap, folder: str = "roadmap-report") -> dict[str, Any]:
    path = roadmap.pytester.path / folder / "report.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def planned_seconds(output: str) -> float:
    match = re.search(r"requests \((\d+) health probes?\), ([0-9.]+) s \(start-up", output)
    assert match is not None, output
    return float(match.group(2))


def test_plan_sends_nothing_and_honours_the_selection(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i}", week=1 + i % 2) for i in range(6)))
    result = roadmap.run(
        "--roadmap-plan", "-n", "3", "-k", "week1", "--roadmap-expected-latency", "2s"
    )
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert "roadmap plan: 3 tasks on 3 workers; latency 2.0 s (--roadmap-expected-latency)" in out
    # Three tasks of 2 s on three workers, plus start-up and end.
    assert re.search(r"total: 3 tasks, \d+ requests \(\d+ health probes?\), [0-9.]+ s", out)
    assert "tasks 2.0 s latency-bound" in out
    assert roadmap.sandbox.log() == []  # not a task, not a health probe
    assert not (roadmap.pytester.path / "roadmap-report").exists()


def test_plan_without_a_latency_says_how_to_give_one(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    result = roadmap.run("--roadmap-plan")
    out = result.stdout.str()
    assert "unknown (no earlier report for these tasks: give --roadmap-expected-latency)" in out
    assert roadmap.sandbox.log() == []


def test_bad_expected_latency_is_a_usage_error(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    result = roadmap.run("--roadmap-plan", "--roadmap-expected-latency", "fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if "pytest-roadmap" in line]
    assert lines == [
        "ERROR: pytest-roadmap: invalid expected latency 'fast' from option "
        "--roadmap-expected-latency: must be a duration from 1ms to 24h, such as 800ms, 2s or "
        "1.5 (seconds)"
    ]


def test_bad_deadline_from_the_environment_is_a_usage_error(
    roadmap: Roadmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    roadmap.tasks("month1", task_toml("a"))
    monkeypatch.setenv("ROADMAP_DEADLINE", "tomorrow")
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid deadline 'tomorrow' from environment variable ROADMAP_DEADLINE" in (
        result.stderr.str()
    )
    assert roadmap.sandbox.log() == []


@pytest.mark.slow
def test_plan_after_one_run_is_within_a_quarter_of_the_next_run(roadmap: Roadmap) -> None:
    """A steady server: the plan made from one run's report predicts the next run's wall
    time within 25%, and the run's report.json records the prediction and the actual."""
    roadmap.tasks("month1", *(task_toml(f"t{i:02d}") for i in range(18)))
    roadmap.sandbox.configure(latency=1.0)
    common = ("-n", "3", "--roadmap-rate-limit", "50")
    first = roadmap.run_subprocess(*common, timeout=300)
    first.assert_outcomes(passed=18)
    log_size = len(roadmap.sandbox.log())
    plan = roadmap.run_subprocess("--roadmap-plan", *common, timeout=300)
    assert len(roadmap.sandbox.log()) == log_size  # the plan sent nothing
    predicted = planned_seconds(plan.stdout.str())
    assert "latency as the last report measured" in plan.stdout.str()
    second = roadmap.run_subprocess(*common, timeout=300)
    second.assert_outcomes(passed=18)
    recorded = read_report(roadmap)["plan"]
    actual = recorded["actual"]["wall_s"]
    assert abs(predicted - actual) <= 0.25 * actual, (predicted, recorded)
    assert recorded["predicted"]["wall_s"] == pytest.approx(predicted, abs=0.06)
    error = (recorded["predicted"]["wall_s"] - actual) / actual
    assert recorded["error"] == pytest.approx(error, abs=1e-4)
    # The requests the client counted are the ones the server saw.
    assert recorded["actual"]["requests"] == len(roadmap.sandbox.log()) - log_size
    assert recorded["predicted"]["requests"] >= 18


@pytest.mark.slow
def test_deadline_keeps_the_most_important_tasks(roadmap: Roadmap) -> None:
    """60 tasks of 1 s at -n 3 (20 s of work), priorities 1-3, a deadline of 8 s."""
    # Three weeks, each with priorities 1 to 3: the run order (week, priority) interleaves
    # priorities, so keeping the important ones takes the forecast, not just the order.
    roadmap.tasks(
        "month1",
        *(task_toml(f"t{i:02d}", week=1 + i // 20, priority=1 + i % 3) for i in range(60)),
    )
    roadmap.sandbox.configure(latency=1.0)
    began = time.time()
    proc = roadmap.spawn(*roadmap.args("-n", "3", "--roadmap-deadline", "8s", "-rs"))
    out, _ = proc.communicate(timeout=120)
    ended = time.time()
    text = out.decode()
    assert proc.returncode == 0, text
    report = read_report(roadmap)
    ran = [t for t in report["tasks"] if t["outcome"] != "skipped"]
    skipped = [t for t in report["tasks"] if t["outcome"] == "skipped"]
    assert ran and skipped, text
    assert max(t["priority"] for t in ran) <= min(t["priority"] for t in skipped)
    for entry in skipped:
        assert entry["error"].startswith("not started: deadline 8.0 s (--roadmap-deadline"), entry
        assert "forecast: " in entry["error"]
    # The server is the judge: it saw the ran tasks only, all answered before the deadline.
    chats = roadmap.chats()
    assert sorted({e["task"] for e in chats}) == sorted(t["id"] for t in ran)
    assert max(e["answered"] for e in chats) <= began + 8.0
    # The end (reports, workers stopping) fits in the time kept for it, with room for load.
    assert ended - began <= 8.0 + 4.0, text


@pytest.mark.slow
def test_deadline_with_no_task_time_known_keeps_the_most_important_from_the_first(
    roadmap: Roadmap,
) -> None:
    """48 tasks of 1 s over three months at -n 3, priorities 1-3, a deadline of 7 s, and no
    task time known (no earlier report, no --roadmap-expected-latency)."""
    # Four tasks a week, task i of priority 3 - i % 3: every week mixes the priorities.
    roadmap.tasks(
        "roadmap",
        *(
            task_toml(f"t{i:02d}", month=1 + i // 16, week=1 + (i // 4) % 4, priority=3 - i % 3)
            for i in range(48)
        ),
    )
    roadmap.sandbox.configure(latency=1.0)
    proc = roadmap.spawn(*roadmap.args("-n", "3", "--roadmap-deadline", "7s", "-rs"))
    out, _ = proc.communicate(timeout=120)
    text = out.decode()
    assert proc.returncode == 0, text
    report = read_report(roadmap)
    priority = {t["id"]: t["priority"] for t in report["tasks"]}
    skipped = [t for t in report["tasks"] if t["outcome"] == "skipped"]
    for entry in skipped:
        assert entry["error"].startswith("not started: deadline 7.0 s (--roadmap-deadline"), entry
    # The server is the judge of what started: no task of a lower priority than one left out.
    sent = {e["task"] for e in roadmap.chats()}
    assert sent and skipped, text
    lowest_sent = max(priority[task_id] for task_id in sent)
    assert lowest_sent <= min(t["priority"] for t in skipped), sorted(
        (priority[task_id], task_id) for task_id in sent
    )
