"""Tasks that test their answers: every kind of check against the sandbox, passing and
failing, in both protocols; checks that cannot run; new answers for wrong ones; the
execution check's safety (timeout, environment, scratch folder); checks hold no slot;
and --roadmap-replay, which sends nothing."""

from __future__ import annotations

import json
import os
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_roadmap.sandbox import OPENAI_CHAT
from tests.support.project import Roadmap
from tests.support.waiting import wait_for

GOOD_CODE = textwrap.dedent(
    '''
    class LRUCache:
        """Evicts the least recently used entry when full."""

        def __init__(self, capacity: int) -> None:
            self.capacity = capacity
            self.items: dict[int, int] = {}

        def get(self, key: int) -> int:
            if key not in self.items:
                return -1
            value = self.items.pop(key)
            self.items[key] = value
            return value

        def put(self, key: int, value: int) -> None:
            self.items.pop(key, None)
            self.items[key] = value
            if len(self.items) > self.capacity:
                del self.items[next(iter(self.items))]
    '''
).lstrip()
# The sandbox's own stub for a prompt, as the issue found it passing: it is no LRU cache.
BAD_CODE = "def solve_add_a_cache_that() -> str:\n    return 'Add a cache that'\n"
CHECK_TEST = textwrap.dedent(
    """
    from lru import LRUCache


    def test_evicts_the_least_recently_used():
        cache = LRUCache(2)
        cache.put(1, 1)
        cache.put(2, 2)
        assert cache.get(1) == 1
        cache.put(3, 3)
        assert cache.get(2) == -1
    """
).lstrip()
CHECK_FUNCTIONS = textwrap.dedent(
    """
    def has_get_and_put(code):
        assert "def get" in code and "def put" in code, "no get() and put() methods"


    def broken(code):
        raise ValueError("this check has a bug")
    """
).lstrip()
SCHEMA = {
    "type": "object",
    "required": ["name", "size"],
    "properties": {"name": {"type": "string"}, "size": {"type": "integer", "minimum": 1}},
}

# One task per kind of check, the check and the prompt word that picks the answer.
KINDS: dict[str, str] = {
    "contains": 'contains = ["class LRUCache", "def get"]\npart = "code"',
    "icontains": 'icontains = ["lrucache"]\npart = "code"',
    "not_contains": 'not_contains = ["solve_"]',
    "regex": "regex = 'def put\\(self, key'",
    "parses": 'parses = "python"',
    "schema": 'json_schema = "checks/thing.schema.json"',
    "function": 'function = "cachecheck:has_get_and_put"',
    "command": (
        'command = "python -m pytest -q -p no:cacheprovider check_lru.py"\n'
        'code_file = "lru.py"\nfiles = ["checks/check_lru.py"]'
    ),
    "rubric": 'rubric = "Evicts the `least recently used` entry."',
}
# What each failing answer's paragraph must say.
FAILURES: dict[str, list[str]] = {
    "contains": ["*check contains 'class LRUCache', 'def get' failed: the code lacks*"],
    "icontains": ["*check icontains 'lrucache' failed: the code lacks 'lrucache'*"],
    "not_contains": ["*check not_contains 'solve_' failed: the answer has 'solve_' (line *"],
    "regex": ["*check regex 'def put\\(self, key' failed: no match in the *"],
    "parses": ["*check parses as python failed: * (line 1*"],
    "schema": ["*check json_schema checks/thing.schema.json failed: at size: *"],
    "function": ["*check function cachecheck:has_get_and_put failed: no get() and put() methods*"],
    "command": ["*check command 'python -m pytest * check_lru.py' failed: exited 2*"],
    "rubric": ["*check rubric * failed: the grader says: the answer never mentions least*"],
}


def checks_project(roadmap: Roadmap, kinds: list[str]) -> None:
    """A task per kind that gets a good answer, and one that gets a bad one."""
    folder = roadmap.pytester.path / "roadmap_tasks"
    (folder / "checks").mkdir(exist_ok=True)
    (folder / "checks" / "check_lru.py").write_text(CHECK_TEST)
    (folder / "checks" / "cachecheck.py").write_text(CHECK_FUNCTIONS)
    (folder / "checks" / "thing.schema.json").write_text(json.dumps(SCHEMA))
    tables = []
    for kind in kinds:
        for quality in ("good", "bad"):
            tables.append(
                f'[[tasks]]\nid = "{quality}-{kind}"\ntitle = "{quality} {kind}"\n'
                f'prompt = "write {quality} {kind}"\nmonth = 1\nweek = 1\n\n'
                f"[[tasks.checks]]\n{KINDS[kind]}\n"
            )
    roadmap.raw("month1.toml", "\n".join(tables))
    good_json = json.dumps({"name": "cache", "size": 3})
    bad_json = json.dumps({"name": "cache", "size": "three"})
    rules: list[dict[str, Any]] = []
    for kind in kinds:
        good, bad = (good_json, bad_json) if kind == "schema" else (GOOD_CODE, BAD_CODE)
        if kind == "parses":
            bad = "def broken(:\n"
        rules.append({"match": f"write good {kind}", "code": good, "message": "Here it is."})
        rules.append({"match": f"write bad {kind}", "code": bad, "message": "Done."})
    roadmap.sandbox.configure(rules=rules)


def chat_entries(roadmap: Roadmap, protocol: str) -> list[dict[str, Any]]:
    path = OPENAI_CHAT if protocol == "openai" else "/api/codebase/chat"
    return [e for e in roadmap.sandbox.log() if e["path"] == path]


def protocol_args(roadmap: Roadmap, protocol: str) -> list[str]:
    if protocol == "beast":
        return []
    return ["--roadmap-protocol", "openai", "--roadmap-api", roadmap.sandbox.url + "/v1"]


def report(roadmap: Roadmap, folder: str = "roadmap-report") -> dict[str, Any]:
    path = roadmap.pytester.path / folder / "report.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("protocol", ["beast", "openai"])
def test_every_kind_of_check_passes_good_answers_and_fails_bad_ones(
    roadmap: Roadmap, protocol: str
) -> None:
    kinds = list(KINDS)
    checks_project(roadmap, kinds)
    result = roadmap.run(*protocol_args(roadmap, protocol), "-n", "2", "--junitxml=junit.xml")
    result.assert_outcomes(passed=len(kinds), failed=len(kinds))
    for kind in kinds:
        assert f"roadmap task 'bad-{kind}': the answer failed its checks" in result.stdout.str()
        result.stdout.fnmatch_lines(FAILURES[kind])
    # A wrong answer is the model's failure, not the API's: asked once, not retried.
    sent = chat_entries(roadmap, protocol)
    tasks = [e["task"] for e in sent if e["check"] is None]
    assert sorted(tasks) == sorted(f"{q}-{k}" for k in kinds for q in ("good", "bad"))
    graded = [e for e in sent if e["check"] == "rubric"]
    assert sorted(e["task"] for e in graded) == ["bad-rubric", "good-rubric"]
    # The summary tells wrong answers from API failures.
    result.stdout.fnmatch_lines(
        [
            f"*{2 * len(kinds)} tasks: {len(kinds)} completed, {len(kinds)} failed "
            f"({len(kinds)} wrong answers, 0 API failures)*",
            f"checks: {2 * len(kinds)} answers checked: {len(kinds)} passed their checks, "
            f"{len(kinds)} failed them (*",
        ]
    )
    data = report(roadmap)
    assert data["checks"]["tasks_checked"] == data["checks"]["answers_checked"] == 2 * len(kinds)
    assert (data["checks"]["passed"], data["checks"]["failed"]) == (len(kinds), len(kinds))
    tasks_by_id = {t["id"]: t for t in data["tasks"]}
    for kind in kinds:
        assert [c["status"] for c in tasks_by_id[f"good-{kind}"]["checks"]] == ["passed"]
        assert [c["status"] for c in tasks_by_id[f"bad-{kind}"]["checks"]] == ["failed"]
        assert tasks_by_id[f"bad-{kind}"]["outcome"] == "failed"
        assert tasks_by_id[f"bad-{kind}"]["error"].startswith("answer failed its checks: ")
    # The wrong answers are kept for a replay; the tracker completes only right ones.
    outputs = roadmap.pytester.path / "roadmap-report" / "outputs"
    assert (outputs / "bad-regex.json").is_file()
    tracker = json.loads((roadmap.pytester.path / "ROADMAP_PROGRESS.json").read_text())
    done = {e["name"] for e in tracker["tasks"].values() if e["completed"]}
    assert done == {f"good {kind}" for kind in kinds}
    markdown = (roadmap.pytester.path / "roadmap-report" / "report.md").read_text()
    assert "## Checks" in markdown and "| `bad-regex` | regex" in markdown
    html = (roadmap.pytester.path / "roadmap-report" / "report.html").read_text()
    assert "<h2>Checks</h2>" in html and '<span class="badge failed">failed</span>' in html
    junit = ET.parse(roadmap.pytester.path / "junit.xml")
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in junit.iter("testcase")
        for p in case.iter("property")
    }
    assert props[("good-regex", "check: regex 'def put\\(self, key'")] == "passed"
    assert props[("bad-parses", "check: parses as python")] == "failed"
    assert props[("bad-parses", "answers")] == "1"


BAD_CHECKS = [
    ("regex = '(unclosed'", "check 1: 'regex' '(unclosed' is not a valid pattern"),
    ('contains = ["x"]\nregex = "y"', "check 1: a check has exactly one of contains, "),
    ('contains = ["x"]\nspeed = 3', "check 1: unknown key 'speed' in a contains check"),
    ('json_schema = "nowhere.json"', "check 1: 'json_schema': nowhere.json not found"),
    ("json_schema = {type = 12}", "check 1: 'json_schema' (inline) is not a valid schema"),
    ('function = "nomodule:f"', "check 1: 'function' nomodule:f: no module 'nomodule'"),
    ('function = "cachecheck:missing"', "check 1: 'function' cachecheck:missing: cachecheck has"),
    ('command = "pytest x.py"\nfiles = ["gone.py"]', "check 1: 'files': gone.py not found"),
    ('command = "no-such-program-xyz a"', "check 1: 'command': 'no-such-program-xyz' not found"),
    ('parses = "rust"', "check 1: 'parses' must be one of python, json, toml, got 'rust'"),
    ('contains = ["x"]\npart = "all"', "check 1: 'part' must be one of code, message, both"),
]


@pytest.mark.parametrize(("check", "words"), BAD_CHECKS, ids=[w[10:30] for _, w in BAD_CHECKS])
def test_a_check_that_cannot_run_is_one_collection_error(
    roadmap: Roadmap, check: str, words: str
) -> None:
    (roadmap.pytester.path / "roadmap_tasks" / "checks").mkdir()
    (roadmap.pytester.path / "roadmap_tasks" / "checks" / "cachecheck.py").write_text(
        CHECK_FUNCTIONS
    )
    roadmap.raw(
        "month1.toml",
        f'[[tasks]]\nid = "a"\ntitle = "A"\nprompt = "p"\nmonth = 1\nweek = 1\n\n'
        f"[[tasks.checks]]\n{check}\n",
    )
    result = roadmap.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"roadmap_tasks/month1.toml: task 1 (id 'a'): {words}*"])
    assert "Traceback" not in result.stdout.str()
    assert roadmap.sandbox.log() == []  # nothing was sent


def test_a_check_that_breaks_after_the_answer_is_an_error_not_retried(roadmap: Roadmap) -> None:
    checks_project(roadmap, [])
    roadmap.raw(
        "month1.toml",
        """
        [[tasks]]
        id = "buggy"
        title = "A check with a bug"
        prompt = "write good function"
        month = 1
        week = 1
        check_retries = 2

        [[tasks.checks]]
        function = "cachecheck:broken"

        [[tasks]]
        id = "ungraded"
        title = "A grader without a verdict"
        prompt = "write good rubric"
        month = 1
        week = 1

        [[tasks.checks]]
        rubric = "Is good."
        """,
    )
    roadmap.sandbox.configure(
        rules=[{"match": "Grade an answer", "code": "", "message": "Looks fine to me!"}]
    )
    result = roadmap.run()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*roadmap task 'buggy': a check could not judge the answer (an error of the check*",
            "*check function cachecheck:broken could not run: ValueError: this check has a bug*",
            "*check rubric 'Is good.' could not run: the grader gave no verdict*",
            "*Looks fine to me!*",
        ]
    )
    asked = [e["task"] for e in roadmap.chats() if e["check"] is None]
    assert sorted(asked) == ["buggy", "ungraded"]  # an error is not retried
    data = report(roadmap)
    assert (data["checks"]["errors"], data["checks"]["failed"]) == (2, 0)
    statuses = {t["id"]: [c["status"] for c in t["checks"]] for t in data["tasks"]}
    assert statuses == {"buggy": ["error"], "ungraded": ["error"]}


@pytest.mark.parametrize(("retries", "source"), [(1, "task"), (1, "option"), (0, "default")])
def test_check_retries_ask_again_for_a_new_answer(
    roadmap: Roadmap, retries: int, source: str
) -> None:
    checks_project(roadmap, [])
    extra = "check_retries = 1\n" if source == "task" else ""
    roadmap.raw(
        "month1.toml",
        f'[[tasks]]\nid = "flaky"\ntitle = "T"\nprompt = "write lru"\nmonth = 1\nweek = 1\n'
        f'{extra}\n[[tasks.checks]]\ncontains = ["class LRUCache"]\n',
    )
    # The model is wrong the first time and right the second.
    roadmap.sandbox.configure(
        rules=[
            {"match": "write lru", "code": BAD_CODE, "message": "m", "times": 1},
            {"match": "write lru", "code": GOOD_CODE, "message": "m"},
        ]
    )
    args = ["--roadmap-check-retries", "1"] if source == "option" else []
    result = roadmap.run(*args, "--junitxml=junit.xml")
    asked = roadmap.chats("flaky")
    if retries:
        result.assert_outcomes(passed=1)
        assert result.parseoutcomes()["rerun"] == 1
        assert len(asked) == 2
        assert report(roadmap)["tasks"][0]["answers"] == 2
        props = [
            p.get("value")
            for p in ET.parse(roadmap.pytester.path / "junit.xml").iter("property")
            if p.get("name") == "answers"
        ]
        assert props[-1] == "2"  # the rerun's own entry says 1
    else:
        result.assert_outcomes(failed=1)
        assert len(asked) == 1
        assert report(roadmap)["tasks"][0]["answers"] == 1


def test_check_retries_leave_the_apis_retries_alone(roadmap: Roadmap) -> None:
    """A task's reruns hold both its retries and its new answers; each kind keeps to its own
    count: 500s are retried `--reruns` times, not more."""
    checks_project(roadmap, [])
    roadmap.raw(
        "month1.toml",
        '[[tasks]]\nid = "down"\ntitle = "T"\nprompt = "write x"\nmonth = 1\nweek = 1\n'
        'check_retries = 3\n\n[[tasks.checks]]\ncontains = ["x"]\n',
    )
    roadmap.sandbox.configure(rules=[{"match": "write x", "status": 500}])
    result = roadmap.run("--reruns", "1")
    result.assert_outcomes(failed=1)
    assert result.parseoutcomes()["rerun"] == 1
    assert len(roadmap.chats("down")) == 2


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"pytest" not in cmdline:
            found.append(int(pid))
    return found


def test_a_command_that_never_ends_is_killed_with_its_children(roadmap: Roadmap) -> None:
    marker = f"roadmap-hang-{os.getpid()}-{id(roadmap)}"
    spawn = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}']); "
        "time.sleep(600)"
    )
    roadmap.raw(
        "month1.toml",
        f'[[tasks]]\nid = "hang"\ntitle = "T"\nprompt = "p"\nmonth = 1\nweek = 1\n\n'
        f"[[tasks.checks]]\ncommand = {json.dumps(['python', '-c', spawn, marker])}\n"
        "timeout = 1\n",
    )
    result = roadmap.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failed: killed at its timeout of 1 s*"])
    # The whole process group went: the command and the child it started.
    wait_for(lambda: _processes_with(marker) == [], timeout=10, every=0.05)


def test_a_command_gets_no_secrets_and_a_scratch_folder_of_its_own(
    roadmap: Roadmap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-" + "s3cr3t" * 4
    monkeypatch.setenv("BEAST_MODE_TOKEN", token)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other-key-123456")
    monkeypatch.setenv("UNRELATED_BUT_HOLDS_IT", f"x{token}x")
    seen = tmp_path / "seen.json"
    dump = (
        "import json, os; "
        f"open({str(seen)!r}, 'w').write(json.dumps({{'env': dict(os.environ), "
        "'cwd': os.getcwd(), 'files': sorted(os.listdir('.'))}))"
    )
    roadmap.raw(
        "month1.toml",
        f'[[tasks]]\nid = "env"\ntitle = "T"\nprompt = "p"\nmonth = 1\nweek = 1\n\n'
        f"[[tasks.checks]]\ncommand = {json.dumps(['python', '-c', dump])}\n"
        'code_file = "solution.py"\n',
    )
    api = roadmap.sandbox.url.replace("http://", "http://user:pa55word-long@")
    result = roadmap.run("--roadmap-api", api)
    result.assert_outcomes(passed=1)
    data = json.loads(seen.read_text())
    everything = json.dumps(data["env"])
    assert token not in everything and "sk-other-key-123456" not in everything
    assert "pa55word-long" not in everything
    for name in ("BEAST_MODE_TOKEN", "OPENAI_API_KEY", "BEAST_MODE_API", "UNRELATED_BUT_HOLDS_IT"):
        assert name not in data["env"]
    assert not any(name.startswith("PYTEST_") for name in data["env"])
    assert "PATH" in data["env"]
    scratch = Path(data["cwd"])
    assert data["files"] == ["solution.py"]
    assert not scratch.is_relative_to(roadmap.pytester.path)
    assert not scratch.exists()  # removed after the check


@pytest.mark.slow
def test_checks_hold_no_concurrency_slot(roadmap: Roadmap) -> None:
    """Four workers, two slots (a batch's maxConcurrency), answers of 1 s, checks of 1 s:
    while two workers check their answers, the other two use both slots."""
    names = [f"t{i}" for i in range(8)]
    roadmap.raw(
        "month1.toml",
        "\n".join(
            f'[[tasks]]\nid = "{name}"\ntitle = "T"\nprompt = "do {name}"\nmonth = 1\nweek = 1\n'
            "\n[[tasks.checks]]\ncommand = \"python -c 'import time; time.sleep(1)'\"\n"
            for name in names
        ),
    )
    batches = roadmap.pytester.path / "BATCH_CONFIG.json"
    batches.write_text(
        json.dumps({"batches": [{"name": "all", "tasks": names, "maxConcurrency": 2}]})
    )
    roadmap.sandbox.configure(latency=1.0)
    result = roadmap.run("-n", "4", "--roadmap-batches", str(batches), "--roadmap-adaptive", "off")
    result.assert_outcomes(passed=8)
    entries = [e for e in roadmap.chats() if e["answered"] is not None]
    busy = sum(e["answered"] - e["arrived"] for e in entries)
    span = max(e["answered"] for e in entries) - min(e["arrived"] for e in entries)
    # Two requests in flight nearly all along: 8 s of requests in about 4 s. A slot held
    # through each 1 s check would leave one in flight on average (8 s of requests in 8 s).
    assert busy / span >= 1.6, (busy, span)


def test_replay_sends_nothing_and_gives_the_same_verdicts(roadmap: Roadmap) -> None:
    kinds = ["contains", "regex", "function", "command", "rubric", "schema"]
    checks_project(roadmap, kinds)
    first = roadmap.run("-n", "2")
    first.assert_outcomes(passed=len(kinds), failed=len(kinds))
    before = report(roadmap)
    roadmap.sandbox.reset()
    replay = roadmap.run("--roadmap-replay", "-n", "2")
    replay.assert_outcomes(passed=len(kinds), failed=len(kinds))
    assert roadmap.sandbox.log() == []  # no task, no grading, no health probe
    replay.stdout.fnmatch_lines(
        ["roadmap: replay: the checks judge the answers saved in *; nothing is sent*"]
    )
    after = report(roadmap, "roadmap-report/replay")
    assert after["run"]["replay"] is not None and before["run"]["replay"] is None

    def verdicts(data: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
        return {t["id"]: [(c["label"], c["status"]) for c in t["checks"]] for t in data["tasks"]}

    assert verdicts(after) == verdicts(before)
    assert report(roadmap) == before  # the run's own report is left as it was


def test_replay_skips_a_task_without_a_saved_answer(roadmap: Roadmap) -> None:
    roadmap.raw(
        "month1.toml",
        '[[tasks]]\nid = "new"\ntitle = "T"\nprompt = "p"\nmonth = 1\nweek = 1\n\n'
        '[[tasks.checks]]\ncontains = ["x"]\n',
    )
    result = roadmap.run("--roadmap-replay")
    result.assert_outcomes(skipped=1)
    assert roadmap.sandbox.log() == []
    data = report(roadmap, "roadmap-report/replay")
    assert data["tasks"][0]["error"].startswith("no saved answer to replay: ")


def test_a_grading_request_goes_through_the_safeguards(roadmap: Roadmap) -> None:
    """The grader's request waits for health and is asked again after a refusal for load;
    the budgets count it (openai: a token budget needs every request's worst case)."""
    roadmap.raw(
        "month1.toml",
        '[[tasks]]\nid = "graded"\ntitle = "T"\nprompt = "write lru"\nmonth = 1\nweek = 1\n'
        "max_tokens = 200\n\n"
        '[[tasks.checks]]\nrubric = "Mentions `LRUCache`."\n',
    )
    roadmap.sandbox.configure(
        rules=[
            {"match": "write lru", "code": GOOD_CODE, "message": "m"},
            {"match": "Grade an answer", "status": 429, "retry_after": 0, "times": 1},
        ]
    )
    args = protocol_args(roadmap, "openai")
    result = roadmap.run(*args, "--roadmap-max-tokens", "100000", "--roadmap-grader-model", "judge")
    result.assert_outcomes(passed=1)
    graded = [e for e in chat_entries(roadmap, "openai") if e["check"] == "rubric"]
    assert [e["status"] for e in graded] == [429, 200]
    assert graded[-1]["model"] == "judge"
    budgets = report(roadmap)["run"]["budgets"]
    task_usage = report(roadmap)["tasks"][0]["usage"]["total"]
    counted = sum(e["usage"]["total"] for e in chat_entries(roadmap, "openai") if e["usage"])
    assert budgets["tokens"]["used"] == counted == task_usage  # the grading's tokens too
