"""The checks' core without a run: which part of an answer a check reads, the grader's
verdict read strictly, and one broken check costing none of the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_roadmap.checks import Answer, Context, judge, read_checks
from pytest_roadmap.checks.rubric import grading_prompt, parse_verdict
from pytest_roadmap.checks.verdict import CheckResult, Verdict, excerpt
from pytest_roadmap.errors import TaskFileError
from pytest_roadmap.sandbox.answers import grade, rule_text


def test_parts_of_an_answer() -> None:
    beast = Answer(code="x = 1\n", message="Here.")
    assert beast.part("code") == "x = 1\n" and beast.part("message") == "Here."
    assert beast.part("both") == "Here.\n\nx = 1\n"
    # The OpenAI protocol's message holds the code it was cut from: both is the message.
    openai = Answer(code="x = 1\n", message="Here.\n\n```python\nx = 1\n```\n")
    assert openai.part("both") == openai.message
    assert Answer.of({"code": None, "message": 3}) == Answer("", "")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("PASS: it evicts the oldest entry.", (True, "it evicts the oldest entry.")),
        ("\n  FAIL - no eviction at all\nmore", (False, "no eviction at all")),
        ("PASS", (True, "")),
        ("pass: lower case is no verdict", None),
        ("I think it PASSes", None),
        ("PASSED: a longer word is no verdict", None),
        ("**PASS**", None),
        ("", None),
    ],
)
def test_the_graders_verdict_is_read_strictly(reply: str, verdict: tuple[bool, str] | None) -> None:
    assert parse_verdict(reply) == verdict


def test_the_sandbox_grader_and_its_rules_see_the_requirement_only() -> None:
    prompt = grading_prompt("write a cache", "Evicts the `least recently used` entry.", "LRU")
    assert grade(prompt).startswith("FAIL: the answer never mentions least recently used")
    assert grade(prompt.replace("LRU", "the least recently used goes")).startswith("PASS")
    assert rule_text(prompt) == (
        "Grade an answer against one requirement.\n"
        "Requirement: Evicts the `least recently used` entry."
    )
    assert rule_text("write a cache") == "write a cache"


def test_a_check_that_breaks_is_an_error_and_the_others_still_judge(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def check(code):\n    return 1 / 0\n")
    checks = read_checks(
        [{"function": "mine:check"}, {"contains": "x"}], "tasks.toml (id 'a')", tmp_path
    )
    verdict = judge(checks, {"code": "x", "message": ""}, Context())
    assert [r.status for r in verdict.results] == ["error", "passed"]
    assert verdict.errored and not verdict.passed
    assert verdict.results[0].detail.startswith("ZeroDivisionError: division by zero at mine.py")


def test_checks_are_read_with_the_task_file(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match=r"^f.toml \(id 'a'\): 'checks' must be an array"):
        read_checks({"contains": "x"}, "f.toml (id 'a')", tmp_path)
    with pytest.raises(TaskFileError, match=r"check 1: 'command' 'a \"b' cannot be split"):
        read_checks([{"command": 'a "b'}], "f.toml (id 'a')", tmp_path)
    with pytest.raises(TaskFileError, match=r"check 1: 'code_file' must be a plain file name"):
        read_checks([{"command": "python x", "code_file": "../x.py"}], "f", tmp_path)
    with pytest.raises(TaskFileError, match=r"check 1: 'timeout' must be a number of seconds"):
        read_checks([{"command": "python x", "timeout": 0}], "f", tmp_path)


def test_verdict_round_trip_and_excerpt() -> None:
    verdict = Verdict((CheckResult("regex", "regex 'a'", "failed", "no match", 0.25),))
    assert Verdict.from_list(verdict.to_list()) == verdict
    assert verdict.paragraph() == "check regex 'a' failed: no match"
    text = "\n".join(f"line {i} " + "x" * 200 for i in range(10))
    shown = excerpt(text)
    assert shown.count("\n") == 5 and shown.endswith(" ...")
    assert all(len(line) <= 4 + 160 + 4 for line in shown.splitlines())  # indent, cut, " ..."


def test_the_plan_counts_a_rubrics_grading_requests(tmp_path: Path) -> None:
    from pytest_roadmap.plan import make_plan
    from pytest_roadmap.settings import Sources, resolve_settings
    from pytest_roadmap.tasks import task_from_entry

    entry = {"id": "a", "title": "A", "prompt": "p", "month": 1, "week": 1}
    graded = {**entry, "id": "b", "checks": [{"rubric": "Is good."}, {"rubric": "Is short."}]}
    tasks = [task_from_entry(e, "f.toml", "f.toml", tmp_path) for e in (entry, graded)]
    assert [t.gradings for t in tasks] == [0, 2]
    settings = resolve_settings(Sources({}, {}, {}, tmp_path, tmp_path), 2)
    plan = make_plan(tasks, settings, workers=2, distributed=True)
    assert plan.rows[0].requests == 1 + 3  # a's answer; b's answer and its two gradings
