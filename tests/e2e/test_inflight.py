"""Several requests in flight per worker (--roadmap-inflight), judged by what the sandbox saw:
the limits hold as they do for one request per worker, and so do retries, timeouts, a killed
worker and an interruption."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_roadmap.sandbox import OPENAI_CHAT, max_in_flight, max_in_window
from tests.support.project import Roadmap, task_toml
from tests.support.waiting import wait_for

WAIT = 90.0  # safety net for every wait below; each ends on a condition long before


def _report(roadmap: Roadmap) -> dict[str, Any]:
    path = roadmap.pytester.path / "roadmap-report" / "report.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _tasks(roadmap: Roadmap, count: int, prefix: str = "t", **extra: Any) -> list[str]:
    names = [f"{prefix}{n:02d}" for n in range(count)]
    roadmap.tasks("month1", *(task_toml(n, **extra) for n in names))
    return names


def _at(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "inflight"), [("0", "3"), ("2", "4")])
def test_each_worker_keeps_k_requests_in_flight_and_no_more(
    roadmap: Roadmap, workers: str, inflight: str
) -> None:
    names = _tasks(roadmap, 20)
    roadmap.sandbox.configure(latency=0.4)
    result = roadmap.run("-n", workers, "--roadmap-inflight", inflight, "--no-roadmap-adaptive")
    result.assert_outcomes(passed=20)
    limit = max(1, int(workers)) * int(inflight)
    # The gate's limit is workers x K, and the run uses all of it.
    assert max_in_flight(roadmap.sandbox.log()) == limit
    assert sorted(e["task"] for e in roadmap.chats()) == names  # each task sent once
    shown = f"workers={workers} inflight={inflight}" if workers != "0" else "inflight=3"
    result.stdout.fnmatch_lines([f"roadmap: *{shown}*"])
    report = _report(roadmap)
    assert report["run"]["inflight"] == int(inflight)
    # The timeline shows each task while its request was in flight, not while its item
    # waited for the main thread.
    chats = {e["task"]: e for e in roadmap.chats()}
    for task in report["tasks"]:
        sent = chats[task["id"]]
        assert task["attempts"] == 1
        assert _at(task["started"]) <= sent["arrived"] + 0.05
        assert _at(task["finished"]) >= sent["answered"] - 0.05
        assert task["duration_s"] < 0.4 + 0.5


@pytest.mark.redis
def test_k_in_flight_on_a_redis_store(roadmap: Roadmap, redis_url: str) -> None:
    """The threads of a worker share its Redis client, as they share an SQLite store."""
    _tasks(roadmap, 16)
    roadmap.sandbox.configure(latency=0.3)
    run_id = f"inflight-{uuid.uuid4().hex[:8]}"
    store = ("--roadmap-store", redis_url, "--roadmap-run-id", run_id)
    result = roadmap.run("-n", "2", "--roadmap-inflight", "4", "--no-roadmap-adaptive", *store)
    result.assert_outcomes(passed=16)
    assert max_in_flight(roadmap.sandbox.log()) == 8
    assert len(roadmap.chats()) == 16


@pytest.mark.slow
def test_the_concurrency_gate_is_never_exceeded(roadmap: Roadmap) -> None:
    """A batch file caps the run at 5 tasks at once, below the 2 x 8 the workers could send."""
    names = _tasks(roadmap, 24)
    roadmap.sandbox.configure(latency=0.3)
    plan = roadmap.pytester.path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "batches": [{"name": "all", "tasks": names}],
                "safeguards": {"maxTotalConcurrency": 5},
            }
        )
    )
    result = roadmap.run("-n", "2", "--roadmap-inflight", "8", "--roadmap-batches", str(plan))
    result.assert_outcomes(passed=24)
    result.stdout.fnmatch_lines(
        ["roadmap: safeguards of plan.json: at most 5 tasks at once (2 workers x 8 in flight)"]
    )
    assert max_in_flight(roadmap.sandbox.log()) == 5


@pytest.mark.slow
def test_the_learned_limit_moves_down_and_up_with_k_in_flight(roadmap: Roadmap) -> None:
    names = _tasks(roadmap, 120)
    # From now on (the run's first request comes a second or two later): capacity 8, then
    # 2, then 8 again.
    roadmap.sandbox.configure(
        latency=0.4, capacity_schedule=[[0, 8], [3, 2], [6, 8]], capacity_retry_after=False
    )
    result = roadmap.run(
        "-n", "2", "--roadmap-inflight", "4", "--reruns", "0", "--roadmap-max-queue", "0"
    )
    result.assert_outcomes(passed=len(names))
    chats = roadmap.chats()
    refused = [e for e in chats if e["status"] == 503]
    assert refused, "the dip refused nothing: this run proves nothing"
    assert len(refused) <= 0.25 * len(chats)
    changes = _report(roadmap)["run"]["concurrency_changes"]
    downs = [c for c in changes if c["to"] < c["from"]]
    ups = [c for c in changes if c["to"] > c["from"]]
    assert downs and downs[0]["from"] == 8, changes
    assert ups and _at(ups[-1]["at"]) > _at(downs[0]["at"])
    # Once the limit came down, the server saw no more in flight than the limit allowed.
    cut = _at(downs[0]["at"])
    lowest = min(c["to"] for c in downs)
    settled = [e for e in chats if cut + 1.0 < e["arrived"] < cut + 2.0]
    assert settled and max(e["in_flight"] for e in settled) <= max(lowest, 2) + 1
    # After the dip the server saw several in flight again, more than one worker's one.
    dip_over = min(
        e["arrived"]
        for e in chats
        if e["capacity"] == 8 and e["arrived"] > min(r["arrived"] for r in refused)
    )
    assert max(e["in_flight"] for e in chats if e["arrived"] > dip_over) >= 3


@pytest.mark.slow
def test_the_rate_limit_holds_for_every_thread_of_every_worker(roadmap: Roadmap) -> None:
    _tasks(roadmap, 36)
    result = roadmap.run("-n", "2", "--roadmap-inflight", "8", "--roadmap-rate-limit", "15")
    result.assert_outcomes(passed=36)
    # every request counts, health probes included
    assert max_in_window(roadmap.sandbox.log(), 1.0) <= 15
    assert len(roadmap.chats()) == 36


@pytest.mark.slow
def test_the_token_limit_holds_with_k_in_flight(roadmap: Roadmap) -> None:
    """As tests/e2e/test_openai.py's: 400 tokens/min, tasks of 50 tokens; eight go at once
    and the ninth waits for the first to leave the minute, however many are in flight."""
    prompt = "p" * 140
    roadmap.tasks(
        "month1", *[task_toml(f"t{n:02d}", prompt=prompt, max_tokens=8) for n in range(12)]
    )
    args = ["--roadmap-protocol", "openai", "--roadmap-api", roadmap.sandbox.url + "/v1"]
    args += ["--roadmap-token-rate", "400", "-n", "2", "--roadmap-inflight", "4"]

    def entries() -> list[dict[str, Any]]:
        return [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]

    with roadmap.running(*args):
        wait_for(lambda: len(entries()) >= 8, timeout=60.0, every=0.1)
        time.sleep(3.0)
        sent = entries()
    assert len(sent) == 8 and sum(e["usage"]["total"] for e in sent) == 400


@pytest.mark.slow
def test_the_token_budget_is_never_passed_with_k_in_flight(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        *(task_toml(f"t{n}", prompt=f"task {n} " + "x" * 200, max_tokens=40) for n in range(10)),
    )
    result = roadmap.run(
        "--roadmap-protocol",
        "openai",
        "--roadmap-api",
        roadmap.sandbox.url + "/v1",
        "--roadmap-max-tokens",
        "400",
        "-n",
        "2",
        "--roadmap-inflight",
        "4",
    )
    chats = [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]
    used = sum(e["usage"]["total"] for e in chats if e["usage"])
    assert 0 < len(chats) < 10
    assert used <= 400
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == len(chats) and outcomes["skipped"] == 10 - len(chats)


@pytest.mark.slow
def test_a_batchs_own_limits_hold_for_every_thread(roadmap: Roadmap) -> None:
    """A batch's concurrency, rate and start spacing (betweenTasks), as
    tests/e2e/test_batches.py checks them for one request per worker."""
    names = _tasks(roadmap, 8)
    roadmap.sandbox.configure(latency=0.8)
    plan = roadmap.pytester.path / "plan.json"
    batch = {"name": "slow", "tasks": names, "maxConcurrency": 3, "rateLimit": 4}
    plan.write_text(json.dumps({"batches": [batch], "delays": {"betweenTasks": 300}}))
    batches = ("--roadmap-batches", str(plan), "--no-roadmap-adaptive")
    result = roadmap.run("-n", "2", "--roadmap-inflight", "4", *batches)
    result.assert_outcomes(passed=8)
    entries = roadmap.sandbox.log()
    assert max_in_flight(entries) == 3
    assert max_in_window(entries, 1.0) <= 4
    starts = sorted(e["arrived"] for e in roadmap.chats())
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.3


def test_batches_and_dependencies_keep_their_order(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        task_toml("a1"),
        task_toml("a2"),
        task_toml("a3", depends_on=["a1"]),
        task_toml("b1"),
        task_toml("b2", depends_on=["b1"]),
        task_toml("b3"),
    )
    roadmap.sandbox.configure(latency=0.2)
    plan = roadmap.pytester.path / "plan.json"
    batches = [
        {"name": "one", "tasks": ["a1", "a2", "a3"]},
        {"name": "two", "tasks": ["b1", "b2", "b3"]},
    ]
    plan.write_text(json.dumps({"batches": batches}))
    result = roadmap.run("-n", "2", "--roadmap-inflight", "4", "--roadmap-batches", str(plan))
    result.assert_outcomes(passed=6)
    at = {e["task"]: e for e in roadmap.chats()}
    assert at["a3"]["arrived"] >= at["a1"]["answered"]
    assert at["b2"]["arrived"] >= at["b1"]["answered"]
    first_of_two = min(at[t]["arrived"] for t in ("b1", "b2", "b3"))
    assert first_of_two >= max(at[t]["answered"] for t in ("a1", "a2", "a3"))


def test_each_task_is_one_item_with_its_report_checks_and_junit(roadmap: Roadmap) -> None:
    """pytest keeps the items: -k selects, a failed check fails its task, JUnit has one case
    per task with its properties, whatever order the answers came in."""
    roadmap.tasks(
        "month1",
        *(task_toml(f"t{n}") for n in range(6)),
        task_toml("wrong") + '[[tasks.checks]]\ncontains = "no such words"\n',
        task_toml("left"),
    )
    roadmap.sandbox.configure(rules=[{"match": "do t0 ", "delay": 0.6}])
    result = roadmap.run(
        "-n", "2", "--roadmap-inflight", "4", "-k", "not left", "--junitxml", "junit.xml", "-v"
    )
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*FAILED*::wrong*", "*the answer failed its checks*"])
    assert sorted(e["task"] for e in roadmap.chats()) == [*(f"t{n}" for n in range(6)), "wrong"]
    cases = ET.parse(roadmap.pytester.path / "junit.xml").getroot().iter("testcase")
    names = sorted(case.get("name") or "" for case in cases)
    assert names == sorted([*(f"t{n}" for n in range(6)), "wrong"])


@pytest.mark.slow
def test_a_retry_goes_through_its_item_while_others_are_in_flight(roadmap: Roadmap) -> None:
    names = _tasks(roadmap, 10)
    roadmap.sandbox.configure(latency=0.3, rules=[{"match": "do t00 ", "status": 500, "times": 2}])
    result = roadmap.run("-n", "2", "--roadmap-inflight", "3", "--roadmap-retry-delay", "200")
    assert result.parseoutcomes() == {"passed": 10, "rerun": 2}
    flaky = roadmap.chats("t00")
    assert [e["status"] for e in flaky] == [500, 500, 200]
    assert [e["attempt"] for e in flaky] == ["1", "2", "3"]
    assert flaky[1]["arrived"] - flaky[0]["answered"] >= 0.2  # the backoff, in its setup
    assert sorted(e["task"] for e in roadmap.chats() if e["status"] == 200) == names
    (task,) = [t for t in _report(roadmap)["tasks"] if t["id"] == "t00"]
    assert (task["attempts"], task["outcome"]) == (3, "passed")


@pytest.mark.slow
def test_a_timeout_of_one_in_flight_request_ends_it_alone(roadmap: Roadmap) -> None:
    """The task's own timeout (1 s) ends its request sent ahead, which pytest-timeout cannot
    (it times the main thread); the others in flight beside it answer."""
    roadmap.tasks("month1", task_toml("slow", timeout=1), *(task_toml(f"t{n}") for n in range(5)))
    roadmap.sandbox.configure(latency=0.5, rules=[{"match": "do slow ", "delay": 4, "times": 1}])
    result = roadmap.run("-n", "2", "--roadmap-inflight", "3", "--roadmap-retry-delay", "50")
    assert result.parseoutcomes() == {"passed": 6, "rerun": 1}
    (task,) = [t for t in _report(roadmap)["tasks"] if t["id"] == "slow"]
    assert (task["attempts"], task["outcome"]) == (2, "passed")
    retries = (roadmap.pytester.path / "roadmap-report" / "report.md").read_text()
    assert "no answer within 1 s" in retries
    cut, again = roadmap.chats("slow")
    others = [e for e in roadmap.chats() if e["task"] != "slow"]
    beside = [e for e in others if e["arrived"] < cut["arrived"] + 1.0]
    assert beside and all(e["status"] == 200 for e in others)
    # Its slot came back: its retry went out long before the cut request would have ended.
    assert again["arrived"] < cut["arrived"] + 3.0


# --- a killed worker and an interruption with K requests in flight --------------------


def _wait(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the run ended before {what}:\n{out}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


PID_CONFTEST = """
import os, pathlib

def pytest_configure(config):
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        pathlib.Path(f"pid-{worker}-{os.getpid()}").write_text(str(os.getpid()))
"""


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Processes a test saw, ended at the end if a run left them behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _spawn(roadmap: Roadmap, *extra: str) -> subprocess.Popen[bytes]:
    return roadmap.spawn_run(*extra)


@pytest.mark.slow
def test_a_killed_worker_with_k_requests_in_flight_gives_its_slots_back(
    roadmap: Roadmap, leftovers: list[int]
) -> None:
    names = _tasks(roadmap, 16)
    (roadmap.pytester.path / "conftest.py").write_text(PID_CONFTEST)
    roadmap.sandbox.configure(latency=2.0)
    proc = _spawn(roadmap, "--roadmap-inflight", "3", "--no-roadmap-adaptive")

    def gw0_has_three_out() -> bool:
        out = [e for e in roadmap.chats() if e["answered"] is None and e["worker"] == "gw0"]
        return len(out) == 3

    _wait(gw0_has_three_out, "gw0 had its three requests in flight", proc)
    (pidfile,) = roadmap.pytester.path.glob("pid-gw0-*")
    pid = int(pidfile.read_text())
    leftovers.append(pid)
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    out = proc.communicate(timeout=WAIT)[0].decode()
    assert "worker 'gw0' crashed" in out or "gw0" in out
    report = _report(roadmap)
    outcome = Counter(t["outcome"] for t in report["tasks"])
    # One task (the dead worker's first) fails as crashed; the others ran on other workers.
    assert outcome == {"passed": 15, "failed": 1}, out
    (crashed,) = [t for t in report["tasks"] if t["outcome"] == "failed"]
    assert "crashed" in crashed["error"]
    assert {e["task"] for e in roadmap.chats() if e["status"] == 200} >= set(names) - {
        crashed["id"]
    }
    # The dead worker's three slots came back at once, not after their 10 s lease: soon after
    # the crash the server saw the full limit, two workers x 3, in flight again.
    after = [e for e in roadmap.chats() if killed < e["arrived"] < killed + 8]
    assert max_in_flight(after) == 6


@pytest.mark.slow
def test_sigterm_with_k_requests_in_flight(roadmap: Roadmap) -> None:
    fast = [f"t{n:02d}" for n in range(12)]
    hung = [f"t{n:02d}" for n in range(12, 20)]  # 2 workers x 3: six hang, two never go
    roadmap.tasks("month1", *(task_toml(t, title=f"Work {t}") for t in fast + hung))
    roadmap.sandbox.configure(rules=[{"match": f"do {t} ", "hang": True} for t in hung])
    proc = _spawn(roadmap, "--roadmap-inflight", "3")

    def stuck() -> bool:
        answered = {e["task"] for e in roadmap.chats() if e["status"] == 200}
        waiting = [e for e in roadmap.chats() if e["answered"] is None]
        return answered == set(fast) and len(waiting) == 6

    _wait(stuck, "the fast tasks passed and six requests hung", proc)
    waiting = {e["task"] for e in roadmap.chats() if e["answered"] is None}
    # Within the tracker's second: every answered task is recorded before the signal.
    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    _wait(
        lambda: (
            tracker.exists()
            and sum(e["completed"] for e in json.loads(tracker.read_text())["tasks"].values())
            == len(fast)
        ),
        "the tracker held every passed task",
        proc,
    )
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=WAIT)[0].decode()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "Terminated: SIGTERM" in out and "Traceback" not in out
    report = _report(roadmap)
    outcome = {t["id"]: t["outcome"] for t in report["tasks"]}
    assert {t for t, o in outcome.items() if o == "passed"} == set(fast)
    assert {t for t, o in outcome.items() if o == "interrupted"} == waiting
    assert {t for t, o in outcome.items() if o == "not_run"} == set(hung) - waiting
    assert not [e for e in roadmap.chats() if e["arrived"] > signalled]
    # --roadmap-resume pays only for what was not answered.
    roadmap.sandbox.configure(rules=[])
    result = roadmap.run("-n", "2", "--roadmap-inflight", "3", "--roadmap-resume")
    assert result.ret == 0, result.stdout.str()
    resent = [e["task"] for e in roadmap.chats() if e["arrived"] > signalled]
    assert Counter(resent) == Counter(hung)


def test_the_plan_counts_workers_times_k(roadmap: Roadmap) -> None:
    _tasks(roadmap, 8)
    result = roadmap.run(
        "-n", "2", "--roadmap-inflight", "8", "--roadmap-plan", "--roadmap-expected-latency", "2"
    )
    result.stdout.fnmatch_lines(
        ["roadmap plan: 8 tasks on 16 at once (2 workers x 8 in flight); latency 2.0 s*"]
    )


def test_the_setting_is_checked(roadmap: Roadmap) -> None:
    _tasks(roadmap, 1)
    result = roadmap.run("--roadmap-inflight", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*invalid requests in flight per worker '0' from option --roadmap-inflight: must be*"]
    )
    assert Path(roadmap.pytester.path).is_dir()


# --- pytest's everyday options with K requests in flight ------------------------------


def _with_cache(args: list[str]) -> list[str]:
    """`args` without the suite's `-p no:cacheprovider`: `--lf` needs pytest's cache."""
    kept: list[str] = []
    for arg in args:
        if arg == "no:cacheprovider" and kept and kept[-1] == "-p":
            kept.pop()
            continue
        kept.append(arg)
    return kept


@pytest.mark.slow
def test_last_failed_sends_only_the_failed_tasks_again(roadmap: Roadmap) -> None:
    names = _tasks(roadmap, 12)
    # Two tasks fail every attempt of the first run (3 each), then answer.
    roadmap.sandbox.configure(
        latency=0.1,
        rules=[
            {"match": "do t03 ", "status": 500, "times": 3},
            {"match": "do t08 ", "status": 500, "times": 3},
        ],
    )
    inflight = ("-n", "2", "--roadmap-inflight", "4", "--roadmap-retry-delay", "20")
    first = roadmap.pytester.runpytest(*_with_cache(roadmap.args(*inflight)))
    assert first.parseoutcomes() == {"passed": 10, "failed": 2, "rerun": 4}
    assert sorted({e["task"] for e in roadmap.chats()}) == names
    seen = len(roadmap.sandbox.log())

    again = roadmap.pytester.runpytest(*_with_cache(roadmap.args(*inflight, "--lf")))
    assert again.parseoutcomes() == {"passed": 2}
    later = [e for e in roadmap.sandbox.log()[seen:] if e["path"] == "/api/codebase/chat"]
    assert sorted(e["task"] for e in later) == ["t03", "t08"]
    assert all(e["status"] == 200 for e in later)
    # The tracker keeps the first run's ten and adds the two.
    progress = json.loads((roadmap.pytester.path / "ROADMAP_PROGRESS.json").read_text())
    done = sorted(t["name"] for t in progress["tasks"].values() if t["completed"])
    assert done == [f"Task {n}" for n in names]


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["loadfile", "loadscope", "worksteal", "loadgroup"])
def test_other_xdist_modes_keep_k_requests_in_flight(roadmap: Roadmap, dist: str) -> None:
    """xdist's other schedulers hand a worker its tasks their own way (a whole file, stolen
    work); each worker still keeps K requests in flight, never more, each task sent once."""
    first = [task_toml(f"a{n:02d}") for n in range(8)]
    second = [task_toml(f"b{n:02d}", month=2) for n in range(8)]
    roadmap.tasks("month1", *first)
    roadmap.tasks("month2", *second)
    roadmap.sandbox.configure(latency=0.4)
    result = roadmap.run(
        "-n", "2", "--dist", dist, "--roadmap-inflight", "3", "--no-roadmap-adaptive"
    )
    result.assert_outcomes(passed=16)
    chats = roadmap.chats()
    assert sorted(e["task"] for e in chats) == sorted(
        [*(f"a{n:02d}" for n in range(8)), *(f"b{n:02d}" for n in range(8))]
    )
    # More than one request per worker went at once, and never more than workers x K.
    assert 2 < max_in_flight(roadmap.sandbox.log()) <= 6


@pytest.mark.slow
def test_exitfirst_stops_sending_after_the_first_failure(roadmap: Roadmap) -> None:
    """-x: the run stops at the first failed task; what was already in flight ends, nothing
    more is sent, and no task is reported that did not run."""
    roadmap.tasks(
        "month1",
        task_toml("bad") + '[[tasks.checks]]\ncontains = "no such words"\n',
        *(task_toml(f"t{n:02d}") for n in range(30)),
    )
    roadmap.sandbox.configure(latency=0.3)
    result = roadmap.run("-n", "0", "--roadmap-inflight", "3", "-x")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1
    assert outcomes.get("passed", 0) < 30
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # At most the K requests in flight when it stopped, and those the pool had refilled
    # before the main thread saw the failure, beyond the items that ran.
    ran = 1 + outcomes.get("passed", 0)
    assert len(roadmap.chats()) <= ran + 3
