"""Run-wide budgets and the report's compliance section, end to end against the sandbox.

The sandbox's request log is the judge: what it saw is compared with what the budgets
allowed and with what the compliance section says the run did.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from pytest_roadmap.sandbox import OPENAI_CHAT, max_in_window
from tests.support.project import Roadmap, task_toml


def report(roadmap: Roadmap) -> dict[str, Any]:
    path = roadmap.pytester.path / "roadmap-report" / "report.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def openai_args(roadmap: Roadmap, *args: str) -> list[str]:
    return ["--roadmap-protocol", "openai", "--roadmap-api", roadmap.sandbox.url + "/v1", *args]


# -- --roadmap-max-retries ------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["0", "2"])
def test_retry_budget_is_shared_and_then_failures_are_final(roadmap: Roadmap, workers: str) -> None:
    roadmap.tasks("month1", *(task_toml(f"broken{n}") for n in range(3)))
    roadmap.sandbox.configure(rules=[{"match": "do broken", "status": 500}])
    result = roadmap.run("--reruns", "2", "--roadmap-max-retries", "2", "-n", workers)
    assert result.parseoutcomes() == {"failed": 3, "rerun": 2}
    # Without the budget the server would have seen 3 x 3 attempts; with it, 3 + 2.
    assert len(roadmap.chats()) == 5
    result.stdout.fnmatch_lines(
        [
            "FAILED broken*: *answered 500*; not retried: run-wide retry budget "
            "--roadmap-max-retries=2 spent"
        ]
    )
    data = report(roadmap)
    assert data["run"]["budgets"] == {"retries": {"limit": 2, "used": 2}, "stopped": None}
    final = [t for t in data["tasks"] if "--roadmap-max-retries=2 spent" in (t["error"] or "")]
    assert len(final) == 3 - sum(1 for t in data["tasks"] if t["attempts"] == 3)
    assert result.ret == 1


def _shards(roadmap: Roadmap, redis_url: str, *extra: str) -> list[subprocess.Popen[bytes]]:
    """Two CI shards (-n 2 each) sharing one run id on Redis, started together."""
    run_id = f"budget-{uuid.uuid4().hex[:8]}"
    return [
        roadmap.spawn(
            *roadmap.args("-n", "2", "-k", f"s{s}", "--roadmap-report", f"report-s{s}"),
            "--roadmap-store",
            redis_url,
            "--roadmap-run-id",
            run_id,
            *extra,
        )
        for s in range(2)
    ]


def _finish(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    return [proc.communicate(timeout=180)[0].decode() for proc in procs]


@pytest.mark.redis
@pytest.mark.slow
def test_retry_budget_is_shared_by_shards_on_redis(roadmap: Roadmap, redis_url: str) -> None:
    roadmap.tasks("month1", *(task_toml(f"s{s}broken{n}") for s in range(2) for n in range(2)))
    roadmap.sandbox.configure(rules=[{"match": "broken", "status": 500}])
    outputs = _finish(_shards(roadmap, redis_url, "--reruns", "2", "--roadmap-max-retries", "3"))
    # Four tasks of up to three attempts each: 4 first attempts, and 3 retries in all.
    assert len(roadmap.chats()) == 4 + 3, outputs
    assert sum(out.count("not retried: run-wide retry budget") for out in outputs) >= 1


@pytest.mark.redis
@pytest.mark.slow
def test_token_budget_is_shared_by_shards_on_redis(roadmap: Roadmap, redis_url: str) -> None:
    roadmap.tasks(
        "month1", *(task_toml(f"s{s}t{n}", max_tokens=40) for s in range(2) for n in range(5))
    )
    procs = _shards(roadmap, redis_url, *openai_args(roadmap, "--roadmap-max-tokens", "300"))
    outputs = _finish(procs)
    chats = [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]
    assert 0 < len(chats) < 10, outputs
    assert sum(e["usage"]["total"] for e in chats if e["usage"]) <= 300
    # A shard may have run all its tasks before the budget ran out; the other names it.
    reports = [
        json.loads((roadmap.pytester.path / f"report-s{s}/report.json").read_text())
        for s in range(2)
    ]
    assert sum(r["totals"]["skipped"] for r in reports) == 10 - len(chats)
    assert sum(r["totals"]["passed"] for r in reports) == len(chats)
    assert any("--roadmap-max-tokens=300 spent" in out for out in outputs)


def test_refusals_for_load_spend_no_run_retry(roadmap: Roadmap) -> None:
    # A 503 with Retry-After did not run the task: with no retry to spend it still passes.
    roadmap.tasks("month1", task_toml("busy"))
    rule = {"match": "do busy", "status": 503, "times": 1, "retry_after": 1}
    roadmap.sandbox.configure(rules=[rule])
    result = roadmap.run("--roadmap-max-retries", "0")
    result.assert_outcomes(passed=1)
    assert [e["status"] for e in roadmap.chats("busy")] == [503, 200]
    assert report(roadmap)["run"]["budgets"]["retries"] == {"limit": 0, "used": 0}


def test_a_bad_retry_budget_is_one_usage_line(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("alpha"))
    result = roadmap.run("--roadmap-max-retries", "many")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-roadmap: invalid retry budget 'many' from option "
            "--roadmap-max-retries: must be an integer from 0 to 10000000"
        ]
    )
    assert roadmap.sandbox.log() == []


# -- --roadmap-max-tokens and --roadmap-max-cost -----------------------------------------------


def _prompted(n: int) -> str:
    return task_toml(f"t{n}", max_tokens=40, prompt=f"do t{n} " + "x" * 200)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_setup_that_fails_after_the_hold_gives_the_budget_back(
    roadmap: Roadmap, workers: str
) -> None:
    # The project's own setup hook runs after the plugin's, which has held the task's worst
    # case in the token budget: t0 never sends, and what it held must come back, or t2 finds
    # the budget full of a request that never was (and is skipped once --roadmap-max-wait is
    # over). The budget holds two worst cases (about 100 tokens each), not three.
    roadmap.tasks("month1", *(_prompted(n) for n in range(3)))
    roadmap.pytester.makeconftest(
        """
        import pytest

        def pytest_runtest_setup(item):
            if item.name == "t0":
                raise RuntimeError("the project's own setup failed")
        """
    )
    args = openai_args(roadmap, "--roadmap-max-tokens", "210", "--roadmap-max-wait", "1")
    result = roadmap.run(*args, "-n", workers)
    result.assert_outcomes(passed=2, errors=1)
    chats = [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]
    assert sorted(e["task"] for e in chats) == ["t1", "t2"]
    data = report(roadmap)
    assert data["run"]["budgets"]["stopped"] is None


def test_token_budget_is_never_passed_and_the_rest_are_skipped(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(_prompted(n) for n in range(8)))
    # Each task may use its prompt (~60 tokens by the rule of four characters) plus 40:
    # 400 tokens hold a few of them, not eight.
    result = roadmap.run(*openai_args(roadmap, "--roadmap-max-tokens", "400"), "-n", "2")
    chats = [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]
    used = sum(e["usage"]["total"] for e in chats if e["usage"])
    assert 0 < len(chats) < 8
    assert used <= 400  # the server counted no more than the budget
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == len(chats) and outcomes["skipped"] == 8 - len(chats)
    result.stdout.fnmatch_lines(["*run-wide token budget --roadmap-max-tokens=400 spent*"])
    data = report(roadmap)
    assert data["run"]["budgets"]["tokens"] == {"limit": 400, "used": used}
    assert "--roadmap-max-tokens=400 spent" in data["run"]["stopped"]
    skipped = [t for t in data["tasks"] if t["outcome"] == "skipped"]
    assert all("--roadmap-max-tokens=400 spent" in t["error"] for t in skipped)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # the run did not do all its work


def test_cost_budget_is_never_passed(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(_prompted(n) for n in range(6)))
    prices = ("--roadmap-price-in", "3", "--roadmap-price-out", "15")
    # One task may cost 60 x $3 + 40 x $15 per million: about $0.0008.
    result = roadmap.run(*openai_args(roadmap, *prices, "--roadmap-max-cost", "0.002"))
    chats = [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]
    spent = sum((e["usage"]["prompt"] * 3 + e["usage"]["completion"] * 15) / 1e6 for e in chats)
    assert 0 < len(chats) < 6 and spent <= 0.002
    result.stdout.fnmatch_lines(["*run-wide cost budget --roadmap-max-cost=0.002 spent*"])
    assert report(roadmap)["run"]["budgets"]["cost"]["used"] == pytest.approx(spent, abs=1e-8)
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_a_budget_that_holds_every_task_changes_nothing(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(_prompted(n) for n in range(3)))
    result = roadmap.run(*openai_args(roadmap, "--roadmap-max-tokens", "100000"))
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    assert report(roadmap)["run"]["stopped"] is None


def test_token_budget_needs_the_openai_protocol(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("alpha"))
    result = roadmap.run("--roadmap-max-tokens", "1000")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: pytest-roadmap: --roadmap-max-tokens needs --roadmap-protocol openai: *"]
    )
    assert roadmap.sandbox.log() == []


def test_a_budgeted_task_without_max_tokens_is_a_collection_error(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", task_toml("bounded", max_tokens=10), task_toml("open"))
    result = roadmap.run(*openai_args(roadmap, "--roadmap-max-tokens", "1000"))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*roadmap_tasks/month1.toml (id 'open'): 'max_tokens' is required with "
            "--roadmap-max-tokens*"
        ]
    )
    assert not [e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]
    # Deselected, it is no longer in the way.
    roadmap.run(*openai_args(roadmap, "--roadmap-max-tokens", "1000"), "-k", "bounded")
    assert len([e for e in roadmap.sandbox.log() if e["path"] == OPENAI_CHAT]) == 1


# -- the compliance section --------------------------------------------------------------------


def _judged(roadmap: Roadmap, section: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare the section with the sandbox's own log: every request it saw, by status."""
    log = roadmap.sandbox.log()
    assert section["requests"] == len(log)
    seen: dict[int, int] = {}
    for entry in log:
        seen[entry["status"]] = seen.get(entry["status"], 0) + 1
    assert {s["status"]: s["count"] for s in section["statuses"]} == seen
    assert section["no_answer"] == 0
    refused = {s: n for s, n in seen.items() if s in (429, 503)}
    assert {r["status"]: r["count"] for r in section["refusals"]["by_status"]} == refused
    # Sends and arrivals differ by the loopback's latency: a window may gain or lose one.
    assert abs(section["max_per_second"] - max_in_window(log)) <= 1
    return log


@pytest.mark.slow
def test_compliance_section_matches_the_server_log_at_the_rate_limit(roadmap: Roadmap) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{n}") for n in range(12)))
    result = roadmap.run("--roadmap-rate-limit", "5", "-n", "2")
    result.assert_outcomes(passed=12)
    section = report(roadmap)["compliance"]
    log = _judged(roadmap, section)
    assert max_in_window(log) <= 5  # the server saw the limit hold
    assert section["allowed_per_second"] == 5 and section["max_per_second"] <= 5
    assert section["held"] is True
    assert section["paused_s"] == 0 and section["sent_while_paused"] == 0
    markdown = (roadmap.pytester.path / "roadmap-report/report.md").read_text()
    assert "## Compliance" in markdown and "against at most 5 at 5 requests/s: held" in markdown


@pytest.mark.slow
def test_compliance_section_shows_refusals_and_the_pauses_the_server_asked(
    roadmap: Roadmap,
) -> None:
    roadmap.tasks("month1", *(task_toml(f"t{n}") for n in range(6)))
    roadmap.sandbox.configure(
        rules=[
            {"match": "do t1 ", "status": 429, "times": 1, "retry_after": 2},
            {"match": "do t3 ", "status": 503, "times": 1, "retry_after": 1},
        ]
    )
    result = roadmap.run("-n", "2")
    result.assert_outcomes(passed=6)
    section = report(roadmap)["compliance"]
    log = _judged(roadmap, section)
    assert section["refusals"] == {
        "total": 2,
        "by_status": [{"status": 429, "count": 1}, {"status": 503, "count": 1}],
    }
    # The server's side: each refusal asked for a pause from its answer; nothing arrived in
    # one (a request already past the point of sending is the one exception allowed).
    asked = {429: 2.0, 503: 1.0}
    windows = [
        (e["answered"], e["answered"] + asked[e["status"]]) for e in log if e["status"] in asked
    ]
    inside = [e for e in log if any(a < e["arrived"] < b for a, b in windows)]
    # The client's pause starts when its answer arrived, the server's when it answered: a
    # send in the milliseconds between counts on one side only.
    assert len(inside) <= 1 and section["sent_while_paused"] <= 1
    reasons = {p["reason"] for p in section["pauses"]}
    assert reasons <= {"Retry-After 2 s on a 429", "Retry-After 1 s on a 503"}
    # The union of the asked windows, as the server answered them; the client's answer times
    # are a few milliseconds later than the server's.
    windows.sort()
    union, end = 0.0, 0.0
    for a, b in windows:
        union += max(0.0, b - max(a, end))
        end = max(end, b)
    assert section["paused_s"] == pytest.approx(union, abs=0.2)
