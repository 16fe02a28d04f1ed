"""Safeguards that hold across all workers, judged by what the sandbox saw."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable

import pytest

from pytest_roadmap.retry import parse_retry_after
from pytest_roadmap.sandbox import Rule, max_in_window
from tests.support.project import Roadmap, task_toml
from tests.support.waiting import wait_for


def _read_log_until(condition: Callable[[], bool]) -> None:
    wait_for(condition, timeout=60.0, every=0.02)  # each poll reads the sandbox's log


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2", "4"])
def test_one_rate_limit_for_all_workers(roadmap: Roadmap, workers: str) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i:02d}") for i in range(36)))
    result = roadmap.run("-n", workers, "--roadmap-rate-limit", "15")
    result.assert_outcomes(passed=36)
    entries = roadmap.sandbox.log()
    # every request counts, health probes included
    assert max_in_window(entries, 1.0) <= 15
    assert len(roadmap.chats()) == 36


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2", "4"])
def test_backoff_between_attempts(roadmap: Roadmap, workers: str) -> None:
    roadmap.tasks("month1", task_toml("flaky"))
    roadmap.sandbox.configure(rules=[{"match": "do flaky", "status": 500, "times": 2}])
    result = roadmap.run("-n", workers, "--roadmap-retry-delay", "300", "--roadmap-backoff", "2")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 2}
    chats = roadmap.chats("flaky")
    assert [e["status"] for e in chats] == [500, 500, 200]
    gaps = [b["arrived"] - a["answered"] for a, b in itertools.pairwise(chats)]
    assert gaps[0] >= 0.3
    assert gaps[1] >= 0.6
    assert max(gaps) < 10  # safety net only


def test_backoff_is_capped(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("flaky"))
    roadmap.sandbox.configure(rules=[{"match": "do flaky", "status": 500, "times": 3}])
    result = roadmap.run(
        "--reruns",
        "3",
        "--roadmap-retry-delay",
        "200",
        "--roadmap-backoff",
        "10",
        "--roadmap-max-delay",
        "300",
    )
    assert result.parseoutcomes() == {"passed": 1, "rerun": 3}
    chats = roadmap.chats("flaky")
    gaps = [b["arrived"] - a["answered"] for a, b in itertools.pairwise(chats)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.3 and gaps[2] >= 0.3
    assert gaps[2] < 1.5  # 200 ms * 10**2 would be 20 s without the cap


@pytest.mark.slow
def test_retry_after_is_honoured(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("busy"))
    roadmap.sandbox.configure(
        rules=[{"match": "do busy", "status": 429, "times": 1, "retry_after": 1}]
    )
    result = roadmap.run("--roadmap-retry-delay", "10", "-v")
    assert result.parseoutcomes() == {"passed": 1, "refused": 1}
    result.stdout.fnmatch_lines(["*month1.toml::busy REFUSED*", "*month1.toml::busy PASSED*"])
    first, second = roadmap.chats("busy")
    assert second["arrived"] - first["answered"] >= 1.0


@pytest.mark.slow
def test_retry_after_as_an_http_date_is_honoured(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("busy"))
    roadmap.sandbox.configure(
        rules=[
            {
                "match": "do busy",
                "status": 503,
                "times": 1,
                "retry_after": 3,
                "retry_after_date": True,
            }
        ]
    )
    result = roadmap.run("--roadmap-retry-delay", "10")
    assert result.parseoutcomes() == {"passed": 1, "refused": 1}
    first, second = roadmap.chats("busy")
    # The date has whole seconds: "3 s from now" is 2 to 3 s after the answer.
    assert second["arrived"] - first["answered"] >= 2.0


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2", "4"])
def test_api_down_at_start_then_up(roadmap: Roadmap, workers: str) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(4)))
    roadmap.sandbox.configure(down=True)
    came_up: list[float] = []

    def bring_up() -> None:
        # a few unhealthy probes must have been seen before the API comes back
        _read_log_until(lambda: sum(e["status"] == 503 for e in roadmap.sandbox.log()) >= 3)
        came_up.append(time.time())
        roadmap.sandbox.configure(down=False)

    thread = threading.Thread(target=bring_up)
    thread.start()
    result = roadmap.run("-n", workers, "--roadmap-health-wait", "60")
    thread.join()
    result.assert_outcomes(passed=4)
    chats = roadmap.chats()
    assert len(chats) == 4  # no task went ahead while the API was down
    assert all(e["arrived"] >= came_up[0] and e["status"] == 200 for e in chats)


@pytest.mark.slow
def test_api_down_mid_run_every_task_still_passes(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(10)))
    roadmap.sandbox.configure(latency=0.1)
    window: list[float] = []

    def outage() -> None:
        _read_log_until(lambda: sum(e["status"] == 200 for e in roadmap.chats()) >= 3)
        roadmap.sandbox.configure(down=True)
        window.append(time.time())  # from here on the server answers 503
        _read_log_until(
            lambda: (
                sum(
                    e["status"] == 503 and e["path"] == "/api/health" for e in roadmap.sandbox.log()
                )
                >= 2
            )
        )
        window.append(time.time())
        roadmap.sandbox.configure(down=False)

    thread = threading.Thread(target=outage)
    thread.start()
    result = roadmap.run("-n", "2", "--reruns", "5", "--roadmap-retry-delay", "100")
    thread.join()
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 10 and "failed" not in outcomes
    down, up = window
    passed_chats = [e for e in roadmap.chats() if e["status"] == 200]
    assert len({e["task"] for e in passed_chats}) == 10
    assert not [e for e in passed_chats if down < e["arrived"] < up]


@pytest.mark.slow
def test_an_outage_gets_at_most_one_task_request_from_each_worker(roadmap: Roadmap) -> None:
    # The shared "healthy" answer would hold for 5 s: only the outage rule keeps the tasks
    # from going out again and again while it does.
    roadmap.tasks("month1", *(task_toml(f"t{i:02d}") for i in range(30)))
    roadmap.sandbox.configure(latency=0.2)
    began: list[float] = []  # before the sandbox was told to go down, and once it had

    def outage() -> None:
        _read_log_until(lambda: sum(e["status"] == 200 for e in roadmap.chats()) >= 3)
        began.append(time.time())
        roadmap.sandbox.configure(down=True)  # 503 to everything, health included
        began.append(time.time())
        # Over once the workers have probed and been told "down" three times.
        _read_log_until(
            lambda: (
                sum(
                    e["path"] == "/api/health" and e["status"] == 503 and e["arrived"] > began[0]
                    for e in roadmap.sandbox.log()
                )
                >= 3
            )
        )
        roadmap.sandbox.configure(down=False)

    thread = threading.Thread(target=outage)
    thread.start()
    result = roadmap.run("-n", "3", "--roadmap-health-interval", "5")
    thread.join()
    result.assert_outcomes(passed=30)
    log = roadmap.sandbox.log()
    back = min(
        e["arrived"]
        for e in log
        if e["path"] == "/api/health" and e["status"] == 200 and e["arrived"] > began[1]
    )
    # Every task request from the outage's start until a probe said the API was back. One
    # that arrived while the change was on its way may still have been answered 200.
    met = [e for e in roadmap.chats() if began[0] <= e["arrived"] < back]
    refused = [e for e in met if e["status"] == 503]
    assert refused, "no task met the outage: this run proves nothing"
    assert all(e["status"] == 503 for e in met if e["arrived"] >= began[1])
    workers = [e["worker"] for e in refused]
    assert len(workers) == len(set(workers)) <= 3, workers


@pytest.mark.slow
def test_a_503_for_capacity_costs_one_probe_and_the_run_goes_on(roadmap: Roadmap) -> None:
    # 503 past two in flight while the health endpoint answers 200: no outage.
    roadmap.tasks("month1", *(task_toml(f"t{i:02d}") for i in range(24)))
    roadmap.sandbox.configure(latency=0.25, capacity=2)
    result = roadmap.run("-n", "4", "--reruns", "0", "--roadmap-health-interval", "60")
    result.assert_outcomes(passed=24)
    refused = [e for e in roadmap.chats() if e["status"] == 503]
    assert refused, "the server never refused: this run proves nothing"
    probes = [e for e in roadmap.sandbox.log() if e["path"] == "/api/health"]
    assert all(e["status"] == 200 for e in probes)
    # The first probe, then one for each 503 (two workers may race for one).
    assert len(probes) <= 1 + 2 * len(refused)
    # No request was held back on the way out: each refusal is one the server made.
    report = json.loads((roadmap.pytester.path / "roadmap-report/report.json").read_text())
    assert sum(t["refusals"] for t in report["tasks"]) == len(refused)


def test_a_request_that_waited_for_a_probe_keeps_the_rate_after_it(roadmap: Roadmap) -> None:
    # After a 503 every task waits for the probe that judges it; the probe takes the next
    # send slot. A task that had its slot before went out right behind the probe (10 ms
    # after it, where the rate asks 250): a server spacing requests (nginx's limit_req)
    # refused each of them, and a sliding second could hold one request over the limit.
    roadmap.tasks("month1", *(task_toml(f"t{i:02d}") for i in range(12)))
    roadmap.sandbox.configure(
        latency=0.25,
        rules=[Rule(match=f"do t{i:02d}", status=503, times=1) for i in (1, 5, 9)],
    )
    result = roadmap.run("-n", "3", "--reruns", "0", "--roadmap-rate-limit", "4")
    result.assert_outcomes(passed=12)
    log = roadmap.sandbox.log()
    assert [e for e in log if e["status"] == 503], "nothing refused: this run proves nothing"
    arrived = sorted(e["arrived"] for e in log)
    assert max_in_window(log, 1.0) <= 4, arrived
    # Sends go out a few ms after their slots: a gap well under 250 ms is a send that
    # skipped its slot.
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    assert min(gaps) >= 0.2, [round(g, 3) for g in gaps]


def test_unhealthy_too_long_fails_with_the_reason(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    roadmap.sandbox.configure(down=True)
    result = roadmap.run("--roadmap-health-wait", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED a: API unhealthy for 1 s: GET http://127.0.0.1:*/api/health -> 503"]
    )
    assert roadmap.chats() == []


@pytest.mark.parametrize("workers", ["1", "2", "4"])
def test_queue_limit_skips_the_rest_with_a_hint(roadmap: Roadmap, workers: str) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(5)))
    result = roadmap.run("-n", workers, "--roadmap-max-queue", "3", "-rs")
    result.assert_outcomes(passed=3, skipped=2)
    result.stdout.fnmatch_lines(
        ["SKIPPED 2: queue full (max 3): raise --roadmap-max-queue or select fewer tasks with -k"]
    )
    assert sorted(e["task"] for e in roadmap.chats()) == ["t0", "t1", "t2"]


def test_live_status_line(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i}") for i in range(6)))
    roadmap.sandbox.configure(latency=0.25)
    result = roadmap.run("--roadmap-health-interval", "0.2")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "roadmap: running *, queued *, completed *, failed 0, success *, limit 1, "
            "* req/s (rate 500/s of 500/s, 0 refused), health ok"
        ]
    )


@pytest.mark.slow
def test_seed_rule_backs_off_under_overload(roadmap: Roadmap) -> None:
    # The original system's rule, kept as --roadmap-adaptive seed: one step per interval.
    roadmap.tasks("month1", *(task_toml(f"t{i:02d}") for i in range(6)))
    roadmap.sandbox.configure(latency=0.3, capacity=1)
    result = roadmap.run(
        "--roadmap-adaptive",
        "seed",
        "-n",
        "3",
        "--reruns",
        "10",
        "--roadmap-retry-delay",
        "100",
        "--roadmap-health-interval",
        "0.5",
    )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        ["roadmap: concurrency 3 -> 2: *% of * attempt* failed in the last 0.5 s (> 10%)"]
    )


@pytest.mark.slow
def test_a_task_refused_twice_in_a_row_goes_again_at_once_then_backs_off(
    roadmap: Roadmap,
) -> None:
    """The second refusal of a task in a row is most often of the first one's burst: its
    slot was reserved before the learned pace moved. Backing off from it left the last task
    of a run 2 s late. From the third refusal in a row the task backs off as failures do."""
    roadmap.tasks("month1", task_toml("t1"))
    roadmap.sandbox.configure(rules=[{"match": "do t1 ", "status": 429, "times": 3}])
    # The learned pace off: no pause of the run's own between the attempts, only the task's.
    result = roadmap.run("--roadmap-retry-delay", "1500", "--no-roadmap-adaptive")
    result.assert_outcomes(passed=1)
    sent = [e["arrived"] for e in roadmap.chats("t1")]
    assert [e["status"] for e in roadmap.chats("t1")] == [429, 429, 429, 200]
    gaps = [later - sooner for sooner, later in itertools.pairwise(sent)]
    assert gaps[0] < 1.0 and gaps[1] < 1.0, gaps  # before: 1.5 s or more before the third
    assert gaps[2] >= 1.5, gaps


@pytest.mark.slow
def test_fixed_concurrency_never_changes(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{i:02d}") for i in range(5)))
    roadmap.sandbox.configure(latency=0.2, capacity=1)
    result = roadmap.run(
        "-n",
        "2",
        "--reruns",
        "10",
        "--roadmap-retry-delay",
        "50",
        "--roadmap-health-interval",
        "0.3",
        "--no-roadmap-adaptive",
    )
    result.assert_outcomes(passed=5)
    assert "roadmap: concurrency" not in result.stdout.str()


@pytest.mark.slow
def test_killed_worker_gives_its_slot_back(roadmap: Roadmap) -> None:
    # "work.toml" sorts after "test_crash.py", so the crash comes first
    roadmap.tasks("work", *(task_toml(f"t{i}") for i in range(6)))
    (roadmap.pytester.path / "roadmap_tasks" / "test_crash.py").write_text(
        "import os, pathlib, signal, time\n"
        "def test_crash(roadmap_client):\n"
        "    marker = pathlib.Path('crashed')\n"
        "    if not marker.exists():\n"
        "        marker.write_text(str(time.time()))\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    roadmap_client.chat('after the crash')\n"
    )
    roadmap.sandbox.configure(latency=0.4)
    result = roadmap.run("-n", "2", "--no-roadmap-adaptive")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 7
    assert outcomes.get("passed", 0) >= 6
    crashed_at = float((roadmap.pytester.path / "crashed").read_text())
    chats = [e for e in roadmap.chats() if e["arrived"] > crashed_at]
    # Two requests in flight together soon after the crash: the dead worker's slot came back
    # long before its lease (10 s) would have run out.
    overlaps = [
        (a, b)
        for a in chats
        for b in chats
        if a is not b
        and a["arrived"] <= b["arrived"] < a["answered"]
        and b["arrived"] < crashed_at + 8
    ]
    assert overlaps


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),  # 100 s after the epoch, "now" is 60
        ("Thu, 01 Jan 1970 00:00:30 GMT", 0.0),  # already past: go now
        ("99999", 3600.0),  # capped at an hour
        ("-1", None),
        ("soon", None),
        ("Thu, 01 Jan 1970 00:01:40 -0000", None),  # not GMT: not an HTTP date
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=lambda: 60.0) == seconds
