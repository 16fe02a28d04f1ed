"""Batch mode and depends_on, judged by the order and pace the sandbox saw."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_roadmap.sandbox import max_in_flight, max_in_window
from tests.support.project import Roadmap, task_toml

ORIGINAL_BATCHES = Path(__file__).parents[1] / "corpus" / "original" / "BATCH_CONFIG.json"


def write_batches(roadmap: Roadmap, batches: list[dict[str, Any]], **delays: int) -> str:
    path = roadmap.pytester.path / "BATCH_CONFIG.json"
    path.write_text(json.dumps({"batches": batches, "delays": delays}))
    return str(path)


def first_chats(roadmap: Roadmap, tasks: list[str]) -> list[dict[str, Any]]:
    return [e for e in roadmap.chats() if e["task"] in tasks and e["attempt"] == "1"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2", "4"])
def test_batches_run_in_order_with_a_pause_between(roadmap: Roadmap, workers: str) -> None:
    roadmap.tasks("month1", *(task_toml(t) for t in ["a1", "a2", "a3", "b1", "b2", "c1"]))
    roadmap.sandbox.configure(latency=0.15)
    config = write_batches(
        roadmap,
        [
            {"name": "Week 1", "tasks": ["a1", "a2", "a3"]},
            {"name": "Week 2", "tasks": ["b1", "b2"]},
            {"name": "Week 3", "tasks": ["c1"]},
        ],
        betweenBatches=400,
    )
    result = roadmap.run("-n", workers, "--roadmap-batches", config)
    result.assert_outcomes(passed=6)
    week1 = [e for e in roadmap.chats() if e["task"] in ("a1", "a2", "a3")]
    week2 = [e for e in roadmap.chats() if e["task"] in ("b1", "b2")]
    week3 = [e for e in roadmap.chats() if e["task"] == "c1"]
    assert min(e["arrived"] for e in week2) >= max(e["answered"] for e in week1) + 0.4
    assert min(e["arrived"] for e in week3) >= max(e["answered"] for e in week2) + 0.4


@pytest.mark.slow
def test_limits_inside_a_batch(roadmap: Roadmap) -> None:
    names = [f"t{i}" for i in range(8)]
    roadmap.tasks("month1", *(task_toml(t) for t in names))
    roadmap.sandbox.configure(latency=0.8)
    config = write_batches(
        roadmap,
        [{"name": "slow", "tasks": names, "maxConcurrency": 2, "rateLimit": 4}],
        betweenTasks=300,
    )
    result = roadmap.run("-n", "4", "--roadmap-batches", config, "--no-roadmap-adaptive")
    result.assert_outcomes(passed=8)
    entries = roadmap.sandbox.log()
    assert max_in_flight(entries) <= 2
    assert max_in_flight(entries) == 2  # the limit was reached, so it was the limit that held
    arrivals = sorted((round(e["arrived"] % 100, 3), e["path"][-6:], e["worker"]) for e in entries)
    assert max_in_window(entries, 1.0) <= 4, arrivals
    starts = sorted(e["arrived"] for e in first_chats(roadmap, names))
    gaps = [round(b - a, 4) for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.3, gaps


@pytest.mark.slow
def test_batch_limits_never_exceed_the_runs(roadmap: Roadmap) -> None:
    names = [f"t{i}" for i in range(10)]
    roadmap.tasks("month1", *(task_toml(t) for t in names))
    config = write_batches(roadmap, [{"name": "greedy", "tasks": names, "rateLimit": 1000}])
    result = roadmap.run("-n", "2", "--roadmap-batches", config, "--roadmap-rate-limit", "8")
    result.assert_outcomes(passed=10)
    assert max_in_window(roadmap.sandbox.log(), 1.0) <= 8


def test_only_named_batches_and_left_out_tasks(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(t) for t in ["a", "b", "c", "loose"]))
    config = write_batches(
        roadmap,
        [{"name": "one", "tasks": ["a"]}, {"name": "two", "tasks": ["b", "c"]}],
    )
    result = roadmap.run("--roadmap-batches", config, "--roadmap-batch", "two", "-k", "not c")
    result.assert_outcomes(passed=1)
    assert [e["task"] for e in roadmap.chats()] == ["b"]
    result.stdout.fnmatch_lines(["*batch 'two': 1 passed, 0 failed, 0 skipped*"])


def test_batch_file_from_ini(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"), task_toml("b"))
    write_batches(roadmap, [{"name": "only", "tasks": ["b"]}])
    roadmap.pytester.makeini("[pytest]\nroadmap_batches = BATCH_CONFIG.json\n")
    result = roadmap.run()
    result.assert_outcomes(passed=1)
    assert [e["task"] for e in roadmap.chats()] == ["b"]
    result.stdout.fnmatch_lines(["*1 task in no batch left out*"])


def test_failed_batch_does_not_stop_later_ones_unless_asked(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("bad"), task_toml("later"))
    roadmap.sandbox.configure(rules=[{"match": "do bad", "status": 400}])
    config = write_batches(
        roadmap, [{"name": "first", "tasks": ["bad"]}, {"name": "second", "tasks": ["later"]}]
    )
    roadmap.run("--roadmap-batches", config).assert_outcomes(passed=1, failed=1)
    roadmap.sandbox.reset()
    result = roadmap.run("--roadmap-batches", config, "--roadmap-stop-on-failure", "-rs")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*batch 'first' had a failure and --roadmap-stop-on-failure*"])
    assert [e["task"] for e in roadmap.chats()] == ["bad"]


def test_dependency_chain_across_batches_and_workers(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        task_toml("c", depends_on=["b"]),
        task_toml("b", depends_on=["a"]),
        task_toml("a"),
        task_toml("free"),
    )
    roadmap.sandbox.configure(latency=0.2)
    config = write_batches(
        roadmap, [{"name": "one", "tasks": ["a", "b", "free"]}, {"name": "two", "tasks": ["c"]}]
    )
    result = roadmap.run("-n", "3", "--roadmap-batches", config)
    result.assert_outcomes(passed=4)
    at = {e["task"]: e for e in roadmap.chats()}
    assert at["b"]["arrived"] >= at["a"]["answered"]
    assert at["c"]["arrived"] >= at["b"]["answered"]


def test_dependencies_without_batches(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        task_toml("report", depends_on=["collect", "clean"]),
        task_toml("collect"),
        task_toml("clean", depends_on=["collect"]),
    )
    roadmap.sandbox.configure(latency=0.1)
    result = roadmap.run("-n", "3")
    result.assert_outcomes(passed=3)
    at = {e["task"]: e for e in roadmap.chats()}
    assert at["clean"]["arrived"] >= at["collect"]["answered"]
    assert at["report"]["arrived"] >= at["clean"]["answered"]


def test_failed_dependency_skips_its_dependants(roadmap: Roadmap) -> None:
    roadmap.tasks(
        "month1",
        task_toml("base"),
        task_toml("mid", depends_on=["base"]),
        task_toml("top", depends_on=["mid"]),
    )
    roadmap.sandbox.configure(rules=[{"match": "do base", "status": 400}])
    result = roadmap.run("-n", "2", "-rs")
    result.assert_outcomes(failed=1, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1] roadmap_tasks/month1.toml:1: dependency 'base' failed*",
            "SKIPPED [[]1] roadmap_tasks/month1.toml:1: dependency 'mid' was skipped*",
        ],
        consecutive=False,
    )
    assert "attempt.py" not in result.stdout.str()  # the task's place, not the plugin's
    assert [e["task"] for e in roadmap.chats()] == ["base"]


def test_unselected_dependency_is_skipped_not_waited_for(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("base"), task_toml("mid", depends_on=["base"]))
    result = roadmap.run("-k", "mid", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*dependency 'base' was not selected in this run and ROADMAP_PROGRESS.json does not "
            'mark it complete: select it too (e.g. -k "mid or base"), or run it first*'
        ]
    )
    assert roadmap.chats() == []


@pytest.mark.parametrize("workers", ["0", "2"])
def test_unselected_dependency_the_tracker_marks_complete_is_met(
    roadmap: Roadmap, workers: str
) -> None:
    roadmap.tasks(
        "month1",
        task_toml("base", title="Base work"),
        task_toml("mid", depends_on=["base"]),
        task_toml("top", depends_on=["mid"]),
    )
    tracker = roadmap.pytester.path / "ROADMAP_PROGRESS.json"
    tracker.write_text(
        json.dumps({"tasks": {"month1_week1_Base work": {"name": "Base work", "completed": True}}})
    )
    result = roadmap.run("-n", workers, "-k", "mid or top", "-rs")
    result.assert_outcomes(passed=2)
    assert [e["task"] for e in roadmap.chats()] == ["mid", "top"]


def test_unselected_dependency_skips_at_once_not_after_earlier_batches(tmp_path: Path) -> None:
    """A dependency that no run selected and the tracker does not mark complete would never
    come: its dependant is skipped before any wait (here, for a batch that never ends)."""
    from pytest_roadmap.batches import Batch, BatchPlan
    from pytest_roadmap.sequencing import Sequencer
    from pytest_roadmap.store import open_store
    from pytest_roadmap.tasks import Task

    plan = BatchPlan("b.json", (Batch(0, "one", ("slow",)), Batch(1, "two", ("late",))))
    late = Task(id="late", title="Late", prompt="p", month=1, week=1, depends_on=("gone",))

    def no_waiting(seconds: float) -> None:
        raise AssertionError("waited for the earlier batch")

    with open_store(f"sqlite://{(tmp_path / 's.db').as_posix()}", create=True) as store:
        sequencer = Sequencer(store, plan, sleep=no_waiting, outside={"gone": "add it"})
        sequencer.register(["slow", "late"], shard="x")  # "slow" is selected, never ends
        assert sequencer.wait_turn(late) == "add it"
        done = Sequencer(store, plan, sleep=no_waiting, complete={"gone"})
        with pytest.raises(AssertionError, match="waited for the earlier batch"):
            done.wait_turn(late)  # met by the tracker: now it waits its turn


@pytest.mark.slow
def test_the_original_batch_file_loads_as_it_is(roadmap: Roadmap) -> None:
    shutil.copy(ORIGINAL_BATCHES, roadmap.pytester.path / "BATCH_CONFIG.json")
    roadmap.tasks(
        "month1",
        task_toml("monitoring"),
        task_toml("dashboard"),
        task_toml("cache", week=2),
        task_toml("other", week=3),
    )
    # The file's safeguards cap the run's own settings: 500/s becomes its maxRateLimit of 10.
    result = roadmap.run("-n", "2", "--roadmap-batches", "BATCH_CONFIG.json")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "roadmap: api=* rate=10/s *",
            "roadmap: safeguards of BATCH_CONFIG.json: rate 10/s (not 500)",
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert {e["task"] for e in roadmap.chats()} == {"monitoring", "dashboard", "cache"}
    assert max_in_window(roadmap.sandbox.log(), path=None) <= 10


def write_plan(roadmap: Roadmap, tasks: list[str], **blocks: Any) -> str:
    path = roadmap.pytester.path / "plan.json"
    path.write_text(json.dumps({"batches": [{"name": "all", "tasks": tasks}], **blocks}))
    return str(path)


@pytest.mark.slow
def test_safeguards_cap_concurrency_and_rate(roadmap: Roadmap) -> None:
    names = [f"t{i}" for i in range(6)]
    roadmap.tasks("month1", *(task_toml(t) for t in names))
    roadmap.sandbox.configure(latency=0.3)
    plan = write_plan(roadmap, names, safeguards={"maxTotalConcurrency": 1, "maxRateLimit": 4})
    result = roadmap.run("-n", "3", "--roadmap-batches", plan)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "roadmap: safeguards of plan.json: at most 1 tasks at once (3 workers), "
            "rate 4/s (not 500)"
        ]
    )
    assert max_in_flight(roadmap.sandbox.log()) == 1
    assert max_in_window(roadmap.sandbox.log(), path=None) <= 4


@pytest.mark.slow
@pytest.mark.parametrize("reduce", [True, False])
def test_safeguards_decide_whether_failures_lower_concurrency(
    roadmap: Roadmap, reduce: bool
) -> None:
    names = [f"t{i}" for i in range(4)]
    roadmap.tasks("month1", *(task_toml(t, retries=0) for t in names))
    roadmap.sandbox.configure(latency=0.2, rules=[{"match": "do t", "status": 503}])
    plan = write_plan(roadmap, names, safeguards={"autoReduceOnFailure": reduce})
    # A 503 is a refusal for load, waited out without spending a retry up to the longest
    # wait: 1 s here, then the tasks fail.
    result = roadmap.run(
        "-n",
        "2",
        "--roadmap-batches",
        plan,
        "--roadmap-health-interval",
        "0.2",
        "--roadmap-max-wait",
        "1",
    )
    result.assert_outcomes(failed=4)
    lowered = any(line.startswith("concurrency 2 -> 1") for line in result.stdout.lines)
    assert lowered is reduce, result.stdout.str()


def test_monitoring_alerts_print_and_go_into_the_report(roadmap: Roadmap) -> None:
    names = ["a1", "a2", "a3", "b1", "b2"]
    roadmap.tasks("month1", *(task_toml(t) for t in names))
    roadmap.sandbox.configure(rules=[{"match": "do b", "status": 400}])
    plan = write_plan(
        roadmap,
        names,
        monitoring={"trackMetrics": False, "alertOnFailureRate": 0.2, "alertOnQueueSize": 2},
    )
    result = roadmap.run("--roadmap-batches", plan, "--roadmap-health-interval", "0.1")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(
        [
            "roadmap: ALERT: 4 tasks queued, above alertOnQueueSize 2 (plan.json)",
            "roadmap: ALERT: failure rate 25% (1 of 4 tasks failed) is above alertOnFailureRate"
            " 0.2 (plan.json)",
        ]
    )
    assert "roadmap: running" not in result.stdout.str()  # trackMetrics: false
    report = json.loads((roadmap.pytester.path / "roadmap-report" / "report.json").read_text())
    assert [a["kind"] for a in report["run"]["alerts"]] == ["queue_size", "failure_rate"]
    assert report["run"]["alerts"][1]["message"].startswith("roadmap: ALERT: failure rate 25%")


@pytest.mark.parametrize(
    ("tables", "line"),
    [
        (
            [task_toml("a", depends_on=["ghost"])],
            "roadmap_tasks/month1.toml: task 'a': depends_on names unknown task 'ghost'",
        ),
        (
            [task_toml("a", depends_on=["b"]), task_toml("b", depends_on=["a"])],
            "roadmap_tasks/month1.toml: depends_on forms a cycle: a -> b -> a",
        ),
        (
            [task_toml("a", depends_on=["a"])],
            "roadmap_tasks/month1.toml: depends_on forms a cycle: a -> a",
        ),
    ],
    ids=["unknown", "cycle", "self"],
)
def test_dependency_problems_are_collection_errors(
    roadmap: Roadmap, tables: list[str], line: str
) -> None:
    roadmap.tasks("month1", *tables)
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([line])
    assert "Traceback" not in result.stdout.str()
    assert roadmap.chats() == []


def test_dependency_on_a_later_batch_is_a_collection_error(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a", depends_on=["b"]), task_toml("b"))
    config = write_batches(
        roadmap, [{"name": "one", "tasks": ["a"]}, {"name": "two", "tasks": ["b"]}]
    )
    result = roadmap.run("--roadmap-batches", config)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*task 'a' (batch 'one') depends on 'b', which runs in the later batch 'two'"]
    )


BAD_CONFIGS = [
    ("{not json", "malformed JSON at line 1 column 2*"),
    ("[]", "must be a JSON object with a 'batches' list"),
    ('{"batches": []}', "field 'batches' must be a non-empty list of batches"),
    ('{"batches": [{"tasks": ["a"]}]}', "batch 1: field 'name' must be a non-empty string"),
    ('{"batches": [{"name": "x", "tasks": []}]}', "batch 'x': field 'tasks' must be a non-empty*"),
    (
        '{"batches": [{"name": "x", "tasks": ["nope"]}]}',
        "batch 'x': field 'tasks' names unknown task 'nope'",
    ),
    (
        '{"batches": [{"name": "x", "tasks": ["a"]}, {"name": "y", "tasks": ["a"]}]}',
        "batch 'y': field 'tasks': task 'a' is already in batch 'x'*",
    ),
    (
        '{"batches": [{"name": "x", "tasks": ["a"], "maxConcurrency": 0}]}',
        "batch 'x': field 'maxConcurrency' must be a whole number from 1 to 1000, got 0",
    ),
    (
        '{"batches": [{"name": "x", "tasks": ["a"], "rateLimit": -1}]}',
        "batch 'x': field 'rateLimit' must be a number from 0.01 to 1000000, got -1",
    ),
    (
        '{"batches": [{"name": "x", "tasks": ["a"], "rateLimit": "5"}]}',
        "batch 'x': field 'rateLimit' must be a number from 0.01 to 1000000, got '5'",
    ),
    (
        '{"batches": [{"name": "x", "tasks": ["a"]}], "delays": {"betweenBatches": -5}}',
        "delays: field 'betweenBatches' must be a number from 0 to 3600000, got -5",
    ),
    (
        '{"batches": [{"name": "x", "tasks": ["a"]}, {"name": "x", "tasks": ["b"]}]}',
        "batch 'x': field 'name' is used by two batches",
    ),
]


@pytest.mark.parametrize(
    ("text", "line"), BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))]
)
def test_malformed_batch_file_is_a_usage_error(roadmap: Roadmap, text: str, line: str) -> None:
    roadmap.tasks("month1", task_toml("a"), task_toml("b"))
    (roadmap.pytester.path / "BATCH_CONFIG.json").write_text(text)
    result = roadmap.run("--roadmap-batches", "BATCH_CONFIG.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-roadmap: BATCH_CONFIG.json: {line}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert roadmap.sandbox.log() == []


def test_unknown_batch_name_and_missing_file(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("a"))
    config = write_batches(roadmap, [{"name": "one", "tasks": ["a"]}])
    result = roadmap.run("--roadmap-batches", config, "--roadmap-batch", "three")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--roadmap-batch 'three': no such batch in *(batches: 'one')"])
    result = roadmap.run("--roadmap-batches", "missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*missing.json: batch file not found*"])


def _worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().split(") ")[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # execnet starts each xdist worker as `python -c "import sys;exec(eval(...))"`
        if int(stat[1]) == os.getpid() and b"sys.stdin.readline" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_worker_killed_mid_batch_and_the_run_still_finishes(roadmap: Roadmap) -> None:
    names = ["a1", "a2", "a3", "a4", "b1", "b2"]
    roadmap.tasks("month1", *(task_toml(t) for t in names))
    roadmap.sandbox.configure(latency=0.3)
    config = write_batches(
        roadmap,
        [{"name": "one", "tasks": names[:4]}, {"name": "two", "tasks": names[4:]}],
    )
    killed: list[float] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = [e for e in roadmap.chats() if e["answered"] is None]
            pids = _worker_pids()
            if busy and len(pids) >= 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(time.time())
                return
            time.sleep(0.01)

    thread = threading.Thread(target=kill_one)
    thread.start()
    result = roadmap.run("-n", "2", "--roadmap-batches", config)
    thread.join()
    assert killed, "no worker was killed"
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 6
    one = [e for e in roadmap.chats() if e["task"] in names[:4] and e["answered"]]
    two = [e for e in roadmap.chats() if e["task"] in names[4:]]
    assert two and min(e["arrived"] for e in two) >= max(e["answered"] for e in one)


# --- the batch file's safeguards and alerts, as rules ----------------------------------


def test_one_way_limit_moves_only_where_the_file_allows() -> None:
    from pytest_roadmap.caps import OneWayLimit

    never_lower = OneWayLimit(3, interval=1.0, lower=False)
    assert never_lower.observe(10, 5) is None and never_lower.value == 3
    never_higher = OneWayLimit(3, interval=1.0, higher=False)
    change = never_higher.observe(10, 5)
    assert change is not None and (change.old, change.new) == (3, 2)
    assert never_higher.observe(10, 0) is None and never_higher.value == 2


def test_capped_settings_only_lower() -> None:
    from dataclasses import replace

    from pytest_roadmap.batches import SafeguardCaps
    from pytest_roadmap.caps import capped_settings, concurrency_ceiling
    from pytest_roadmap.settings import Sources, resolve_settings

    settings = resolve_settings(Sources({}, {}, {}, Path.cwd(), Path.cwd()), 4)
    settings = replace(settings, rate_limit=10.0, health_interval=5.0)
    capped = capped_settings(
        settings,
        SafeguardCaps(max_rate_limit=20.0, health_check_interval=2.0, auto_reduce_on_failure=False),
    )
    assert (capped.rate_limit, capped.health_interval, capped.adaptive) == (10.0, 2.0, "aimd")
    off = SafeguardCaps(auto_reduce_on_failure=False, auto_increase_on_success=False)
    assert capped_settings(settings, off).adaptive == "off"
    assert concurrency_ceiling(4, SafeguardCaps(max_total_concurrency=8)) == 4
    assert concurrency_ceiling(4, SafeguardCaps(max_total_concurrency=2)) == 2


def test_alerts_fire_once_per_crossing() -> None:
    from pytest_roadmap.alerts import RunAlerts
    from pytest_roadmap.batches import MonitoringRules

    alerts = RunAlerts(MonitoringRules(alert_on_failure_rate=0.5, alert_on_queue_size=3), "f.json")
    assert alerts.queue(3) is None
    first = alerts.queue(4)
    assert first is not None and first.kind == "queue_size"
    assert alerts.queue(5) is None  # still above: said once
    assert alerts.queue(2) is None and alerts.queue(4) is not None  # back under, then above
    assert alerts.task_ended("passed") is None
    assert alerts.task_ended("skipped") is None  # only passed and failed count
    assert alerts.task_ended("failed") is None  # 50% is not above 50%
    crossed = alerts.task_ended("failed")
    assert crossed is not None and "67% (2 of 3 tasks failed)" in crossed.message
    assert alerts.task_ended("failed") is None
