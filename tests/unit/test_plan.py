"""The run plan's arithmetic, the report it learns from, and the duration settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_roadmap.batches import Batch, BatchPlan
from pytest_roadmap.errors import SettingError
from pytest_roadmap.plan import (
    History,
    TaskHistory,
    actual_of,
    history_from_report,
    judged,
    make_plan,
    plan_run,
    planned_tasks,
    read_history,
    shown_seconds,
    token_wait,
)
from pytest_roadmap.protocol import Usage
from pytest_roadmap.results import PASSED, Attempt, RunRecord, TaskResult
from pytest_roadmap.settings import Settings, Sources, resolve_settings
from pytest_roadmap.tasks import Task


def settings(**changes: Any) -> Settings:
    env = dict(changes.pop("env", {}))
    sources = Sources({}, env, {}, Path("."), Path("."))
    base = resolve_settings(sources, 3)
    from dataclasses import replace

    return replace(base, **changes)


def tasks(count: int, **fields: Any) -> list[Task]:
    return [
        Task(id=f"t{i:02d}", title=f"T{i}", prompt=f"do t{i:02d}", month=1, week=1, **fields)
        for i in range(count)
    ]


def history(latency: float, ids: list[str], attempts: float = 1.0, **run: Any) -> History:
    return History({i: TaskHistory(latency * attempts, attempts) for i in ids}, **run)


def test_shown_seconds() -> None:
    assert shown_seconds(0.25) == "250 ms"
    assert shown_seconds(8) == "8.0 s"
    assert shown_seconds(125) == "2 min 5 s"
    assert shown_seconds(5400) == "1 h 30 min"


def test_latency_bound_is_tasks_times_latency_over_workers() -> None:
    chosen = tasks(12)
    known = history(1.0, [t.id for t in chosen], startup_s=2.0, finish_s=0.5)
    plan = make_plan(chosen, settings(rate_limit=100.0), workers=3, distributed=True, history=known)
    assert plan.rows[0].bound == "latency"
    assert plan.work_s == pytest.approx(4.0)
    assert plan.seconds == pytest.approx(2.0 + 4.0 + 0.5)
    assert plan.requests == 12 + 1 + 1  # tasks, a probe at the start, one per 5 s interval


def test_the_plan_counts_one_of_a_kind_in_the_singular() -> None:
    one = tasks(1)
    known = history(0.5, [one[0].id], probes_per_s=1.0)  # half a probe in half a second
    plan = make_plan(one, settings(), workers=1, distributed=True, history=known)
    first, total = plan.lines()
    assert first.startswith("roadmap plan: 1 task on 1 worker; ")
    assert total.startswith("  total: 1 task, 2 requests (1 health probe), ")


def test_rate_bound_counts_probes_and_retries() -> None:
    chosen = tasks(10)
    # Each task took 2 attempts last time: 1 expected retry per task.
    known = history(0.1, [t.id for t in chosen], attempts=2.0)
    plan = make_plan(
        chosen,
        settings(rate_limit=1.0, health_interval=5.0, retry_delay=0.0),
        workers=4,
        distributed=True,
        history=known,
    )
    row = plan.rows[0]
    assert row.bound == "rate"
    assert row.requests == 20
    assert row.seconds == pytest.approx(20 + row.probes)
    assert row.probes > 4  # one every 5 s of a ~25 s batch


def test_expected_latency_overrides_and_unknown_latency_says_so() -> None:
    chosen = tasks(6)
    unknown = make_plan(chosen, settings(), workers=3, distributed=True)
    assert unknown.seconds is None
    assert "--roadmap-expected-latency" in "\n".join(unknown.lines())
    given = make_plan(
        chosen,
        settings(expected_latency=2.0),
        workers=3,
        distributed=True,
        history=history(9.0, [t.id for t in chosen]),
    )
    assert given.work_s == pytest.approx(4.0)
    assert "(--roadmap-expected-latency)" in given.lines()[0]


def test_tasks_without_history_take_the_mean_of_those_with() -> None:
    chosen = tasks(4)
    known = History({"t00": TaskHistory(1.0, 1.0), "t01": TaskHistory(3.0, 1.0)})
    plan = make_plan(chosen, settings(), workers=1, distributed=False, history=known)
    assert plan.work_s == pytest.approx(1.0 + 3.0 + 2.0 + 2.0)
    assert plan.unknown == 2


def test_batches_are_rows_in_file_order_with_their_own_limits() -> None:
    chosen = tasks(6)
    plan_file = BatchPlan(
        "b.json",
        (
            Batch(0, "first", ("t03", "t04", "t05"), max_concurrency=1),
            Batch(1, "second", ("t00", "t01", "t02"), rate_limit=0.5),
        ),
        between_batches=1.0,
    )
    plan = make_plan(
        chosen,
        settings(expected_latency=1.0),
        workers=3,
        distributed=True,
        batches=plan_file,
    )
    assert [r.name for r in plan.rows] == ["first", "second"]
    assert plan.rows[0].seconds == pytest.approx(3.0)  # one at a time
    assert plan.rows[1].bound == "rate"
    assert plan.work_s == pytest.approx(sum(r.seconds or 0 for r in plan.rows) + 1.0)


def test_openai_tokens_and_cost() -> None:
    chosen = tasks(2, max_tokens=100)
    plan = make_plan(
        chosen,
        settings(protocol="openai", expected_latency=1.0, price_in=1.0, price_out=10.0),
        workers=2,
        distributed=True,
    )
    tokens = plan.tokens
    assert tokens is not None and tokens.completion == 200
    assert plan.cost == pytest.approx((tokens.prompt * 1.0 + 200 * 10.0) / 1e6)
    assert "tokens, $" in plan.lines()[-1]
    # A recorded usage wins over the estimate.
    known = History({"t00": TaskHistory(1.0, 1.0, Usage(50, 7))})
    plan = make_plan(
        chosen[:1], settings(protocol="openai"), workers=1, distributed=False, history=known
    )
    assert plan.tokens == Usage(50, 7)


def test_planned_tasks_leave_out_resumed_and_queue_full() -> None:
    chosen = tasks(5)
    kept, left = planned_tasks(chosen, frozenset({chosen[0].tracker_key}), max_queue=3)
    assert [t.id for t in kept] == ["t01", "t02", "t03"]
    assert left == 2


def test_plan_run_leaves_python_tasks_out_with_a_note() -> None:
    python = Task(id="test_x", title="test_x", prompt="", month=1, week=1, source="t.py")
    plan = plan_run(
        [*tasks(3), python],
        settings(expected_latency=1.0),
        workers=3,
        distributed=True,
        batches=None,
        history=None,
        completed=None,
    )
    assert plan.tasks == 3
    assert any("1 Python task not planned" in line for line in plan.lines())


def report(tasks_: list[dict[str, Any]], **plan: Any) -> dict[str, Any]:
    return {
        "run": {"duration_s": 10.0, "workers": 3, "health": {"probes": 5}},
        "tasks": tasks_,
        "plan": {"actual": plan},
    }


def test_history_from_report_reads_ran_tasks_only() -> None:
    data = report(
        [
            {"id": "a", "outcome": "passed", "attempts": 2, "duration_s": 3.0, "usage": None},
            {"id": "b", "outcome": "skipped", "attempts": 0, "duration_s": 0.0},
            {"id": "c", "outcome": "failed", "attempts": "x", "duration_s": 1.0},
            "not a task",
        ],
        startup_s=1.5,
        finish_s=0.2,
        overhead_s=0.01,
    )
    found = history_from_report(data)
    assert found is not None
    assert set(found.tasks) == {"a"}
    assert found.tasks["a"].latency == pytest.approx(1.5)
    assert found.retry_rate == pytest.approx(1.0)
    assert (found.startup_s, found.finish_s, found.workers) == (1.5, 0.2, 3)
    assert found.probes_per_s == pytest.approx(0.5)
    assert history_from_report({"tasks": []}) is None
    assert history_from_report([1, 2]) is None


def test_read_history_of_a_missing_or_broken_file_is_none(tmp_path: Path) -> None:
    assert read_history(tmp_path / "report.json") is None
    (tmp_path / "report.json").write_text("{not json", encoding="utf-8")
    assert read_history(tmp_path / "report.json") is None
    (tmp_path / "report.json").write_text(
        json.dumps(report([{"id": "a", "outcome": "passed", "attempts": 1, "duration_s": 2}])),
        encoding="utf-8",
    )
    found = read_history(tmp_path / "report.json")
    assert found is not None and found.mean_latency == 2.0


def test_actual_measures_startup_work_end_and_gaps() -> None:
    record = RunRecord("x", True, "m", 2, 10.0, started=100.0, finished=110.0, requests_sent=7)
    for i, (worker, start) in enumerate([("gw0", 102.0), ("gw0", 104.0), ("gw1", 103.0)]):
        task = tasks(3)[i]
        attempt = Attempt(1, PASSED, start, start + 1.5, worker)
        record.results.append(TaskResult(task, [attempt], PASSED))
    actual = actual_of(record)
    assert actual["startup_s"] == 2.0
    assert actual["work_s"] == 3.5
    assert actual["finish_s"] == 4.5
    assert actual["overhead_s"] == 0.5  # gw0's gap from 103.5 to 104
    assert actual["requests"] == 7
    assert judged({"wall_s": 12.0}, actual) == pytest.approx(0.2)
    assert judged({"wall_s": None}, actual) is None


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ({"ROADMAP_DEADLINE": "45m"}, 2700.0),
        ({"ROADMAP_DEADLINE": "1h30m"}, 5400.0),
        ({"ROADMAP_DEADLINE": "90"}, 90.0),
    ],
)
def test_deadline_durations(env: dict[str, str], value: float) -> None:
    assert settings(env=env).deadline == value


@pytest.mark.parametrize("raw", ["soon", "8 s", "-5", "0.5s", "200h", "1e3"])
def test_bad_deadline_is_one_line_naming_the_setting(raw: str) -> None:
    with pytest.raises(SettingError) as caught:
        settings(env={"ROADMAP_DEADLINE": raw})
    message = str(caught.value)
    assert message.startswith(f"invalid deadline {raw!r} from environment variable ROADMAP")
    assert "\n" not in message


def test_expected_latency_takes_milliseconds() -> None:
    assert settings(env={"ROADMAP_EXPECTED_LATENCY": "800ms"}).expected_latency == 0.8
    with pytest.raises(SettingError, match="expected latency"):
        settings(env={"ROADMAP_EXPECTED_LATENCY": "0s"})


def test_the_token_bound_is_the_sliding_minutes() -> None:
    # A minute's worth goes at once, the rest as the oldest leave the minute and its margin.
    assert token_wait([50] * 12, 6000.0) == 0.0
    assert token_wait([300] * 20, 3000.0) == pytest.approx(61.2)
    assert token_wait([338] * 20, 3000.0) == pytest.approx(122.4)  # 8 fit a minute, not 9
    assert token_wait([], 3000.0) == 0.0
